"""E0s (per-element reference energies): fitted by least squares when the data has no
isolated-atom frames, from isolated atoms or the config when given; a CuAu set trains without
isolated atoms."""

import json

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mlff_ins.cli import main
from mlff_ins.errors import InputError
from mlff_ins.data.e0s import CONFIG, FITTED, ISOLATED_ATOMS, choose_e0s, fit_e0s

E0_TRUE = {"Cu": -3.7312, "Au": -2.1845, "Ag": -0.9977}  # eV, arbitrary constants


def _frame(symbols, energy):
    a = Atoms(symbols, positions=np.arange(3 * len(symbols)).reshape(-1, 3), cell=[20] * 3)
    a.calc = SinglePointCalculator(a, energy=energy, forces=np.zeros((len(a), 3)))
    return a


def _additive(symbols):
    return _frame(symbols, sum(E0_TRUE[s] for s in symbols))


def test_fit_reproduces_known_constants_for_additive_energies():
    """E = sum_i e0[Z_i] exactly, compositions and sizes varying: the fit returns the e0s."""
    rng = np.random.default_rng(0)
    frames = [_additive(list(rng.choice(["Cu", "Au", "Ag"], size=int(rng.integers(2, 30)))))
              for _ in range(25)]
    e0s, info = fit_e0s(frames, ["Ag", "Au", "Cu"])
    assert e0s == pytest.approx(E0_TRUE, abs=1e-10)
    assert info["rank"] == 3 and info["rms_residual_meV_per_atom"] < 1e-8
    assert not info["fixed_composition"] and info["absent"] == []
    # an element of the model in no frame gets the mean energy per atom; the rest stay exact
    e0s, info = fit_e0s(frames, ["Ag", "Au", "Cu", "Ni"])
    assert info["absent"] == ["Ni"] and e0s["Ni"] == pytest.approx(
        info["mean_energy_per_atom_eV"])
    assert {k: e0s[k] for k in E0_TRUE} == pytest.approx(E0_TRUE, abs=1e-10)


def test_fixed_composition_splits_the_energy_per_atom_evenly():
    """All frames Cu3Au (4, 8 and 12 atoms): rank-deficient; each element gets the mean energy
    per atom, which still reproduces the energy of that composition exactly."""
    frames = [_additive(["Cu", "Cu", "Cu", "Au"] * n) for n in (1, 2, 3)]
    e0s, info = fit_e0s(frames, ["Au", "Cu"])
    per_atom = (3 * E0_TRUE["Cu"] + E0_TRUE["Au"]) / 4
    assert info["rank"] == 1 and info["fixed_composition"]
    assert e0s == pytest.approx({"Au": per_atom, "Cu": per_atom}, abs=1e-12)
    choice = choose_e0s("auto", {}, ["Au", "Cu"], frames, source="cu3au.xyz")
    assert choice.method == FITTED and "same composition" in choice.message
    assert f"Au {per_atom:.4f}, Cu {per_atom:.4f}" in choice.message
    # one element: never rank-deficient, its E0 is the mean energy per atom
    e0s, info = fit_e0s([_additive(["Cu"] * n) for n in (2, 5)], ["Cu"])
    assert e0s == pytest.approx({"Cu": E0_TRUE["Cu"]}) and info["rank"] == 1


def test_isolated_atoms_and_config_are_preferred_and_never_mixed_with_a_fit():
    frames = [_additive(["Cu", "Au", "Au"]), _additive(["Cu", "Cu", "Au"])]
    iso = {"Cu": -0.2, "Au": -0.1}
    c = choose_e0s("auto", iso, ["Au", "Cu"], frames, source="d.xyz")
    assert (c.method, c.values, c.fit) == (ISOLATED_ATOMS, {"Au": -0.1, "Cu": -0.2}, None)
    c = choose_e0s({"Cu": -1.0, "Au": -2.0, "Ni": 0.0}, iso, ["Au", "Cu"], frames, source="d")
    assert (c.method, c.values) == (CONFIG, {"Au": -2.0, "Cu": -1.0})
    with pytest.raises(InputError, match="e0s: no energy for element Au"):
        choose_e0s({"Cu": -1.0}, iso, ["Au", "Cu"], frames, source="d.xyz")
    # isolated atoms for Cu only: every E0 is fitted, and the message says why
    c = choose_e0s("auto", {"Cu": -0.2}, ["Au", "Cu"], frames, source="d.xyz")
    assert c.method == FITTED and "not for Au" in c.message
    assert c.values == pytest.approx({"Au": E0_TRUE["Au"], "Cu": E0_TRUE["Cu"]})
    # e0s: fit fits even when isolated atoms are there
    assert choose_e0s("fit", iso, ["Au", "Cu"], frames, source="d.xyz").method == FITTED


def test_e0s_setting_in_the_config(tmp_path):
    from mlff_ins.train.config import load_train_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ne0s: fit\n")
    assert load_train_config(cfg_file)["e0s"] == "fit"
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ne0s: {Cu: -3.7, Au: -3.2}\n")
    assert load_train_config(cfg_file)["e0s"] == {"Cu": -3.7, "Au": -3.2}
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ne0s: {Cu: lots}\n")
    with pytest.raises(InputError, match="e0s: Cu needs a finite energy in eV"):
        load_train_config(cfg_file)
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ne0s: average\n")
    with pytest.raises(InputError, match="e0s: `auto`"):
        load_train_config(cfg_file)


def _cuau_emt(path, n=40):
    """Rattled 8-atom fcc CuAu cells of random composition (Vegard lattice constant), EMT."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(1)
    frames = []
    for k in range(n):
        x_au = rng.uniform(0, 1)
        atoms = bulk("Cu", "fcc", a=3.61 + 0.47 * x_au, cubic=True).repeat((2, 1, 1))
        atoms.set_chemical_symbols(list(np.where(rng.random(8) < x_au, "Au", "Cu")))
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    write(path, frames)
    return frames


def test_cuau_without_isolated_atoms_trains_with_fitted_e0s(tmp_path, capsys):
    from mlff_ins.model.calculator import load_calculator

    data = tmp_path / "cuau.xyz"
    frames = _cuau_emt(data)
    assert len({a.get_chemical_formula() for a in frames}) > 3
    # check: a note, not a problem
    assert main(["check", str(data)]) == 0
    out = capsys.readouterr().out
    assert "note: no isolated-atom frames" in out and "will fit the E0s of Au, Cu" in out
    assert "has no isolated-atom energy" not in out

    bundle = tmp_path / "cuau_tiny"
    # one member, one epoch: what is tested is how the E0s are fitted and handed to the model
    # (decided once per run, before every member's nequip config is written: train/driver.py)
    assert main(["train", "--data", str(data), "--preset", "tiny", "--ensemble", "1",
                 "--epochs", "1", "-o", str(bundle)]) == 0
    out = capsys.readouterr().out
    meta = json.loads((bundle / "bundle.json").read_text())
    e0s = meta["e0s_eV"]
    print(out.splitlines()[0])  # shown with pytest -s
    assert meta["e0s_method"] == "fitted" and meta["e0s_fit"]["rank"] == 2
    assert f"Au {e0s['Au']:.4f}, Cu {e0s['Cu']:.4f}" in out.splitlines()[0]
    assert "E0s fitted (no isolated-atom frames in" in out
    # fitted to the training pool only: the same numbers from data/train_pool.xyz, not from all
    pool, _ = fit_e0s(read(bundle / "data" / "train_pool.xyz", ":"), ["Au", "Cu"])
    every, _ = fit_e0s(frames, ["Au", "Cu"])
    assert e0s == pytest.approx(pool, abs=1e-9) and e0s != pytest.approx(every, abs=1e-6)
    # the model's fixed per-type energy shifts are the bundle's E0s
    for member in ("member_0",):
        ncfg = yaml.safe_load((bundle / "members" / member / "nequip.yaml").read_text())
        assert ncfg["training_module"]["model"]["per_type_energy_shifts"] == e0s
    assert "fitted by least squares" in (bundle / "report.md").read_text()

    calc = load_calculator(bundle)
    atoms = frames[0].copy()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    atoms = frames[0].copy()
    atoms[3].symbol = "Ag"
    atoms.calc = calc
    with pytest.raises(InputError) as err:
        atoms.get_potential_energy()
    assert str(err.value).startswith("element Ag is not known to the model")
    assert "\n" not in str(err.value)
