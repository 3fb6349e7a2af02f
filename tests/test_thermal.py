"""Thermodynamics from phonons: phonopy's own thermal properties, per atom and per formula unit,
the Dulong–Petit limit, an Einstein solid's analytic C_V, and what `phonons` writes."""

from pathlib import Path

import h5py
import numpy as np
import phonopy
import pytest

from mlff_ins.cli import main
from mlff_ins.phonons.finite_displacement import phonons_from_force_sets
from mlff_ins.phonons.properties import thermal_properties

DATA = Path(__file__).parent / "data" / "phonopy"
R = 8.314462618  # J/(K mol)


@pytest.mark.parametrize("name, n_fu", [("MgO", 1), ("Al2O3", 2)])
def test_equal_to_phonopy_per_formula_unit(name, n_fu):
    """Per formula unit = phonopy's per-primitive-cell numbers / formula units in it (MgO: 1;
    Al2O3's 10-atom primitive cell: 2), on the same mesh, to 1e-10."""
    ours = thermal_properties(phonons_from_force_sets(DATA / name, nac=False).members,
                              [6, 6, 6], t_max=600, t_step=50)
    ref = phonopy.load(DATA / name / "phonopy_disp.yaml",
                       force_sets_filename=DATA / name / "FORCE_SETS", is_nac=False)
    ref.run_mesh([6, 6, 6], is_gamma_center=True)
    ref.run_thermal_properties(t_min=0, t_max=600, t_step=50, exclude_gamma_acoustic=True)
    tp = {k: getattr(ref.thermal_properties, k) for k in
          ("heat_capacity", "entropy", "free_energy")}   # J/(K mol), kJ/mol per cell
    assert ours["formula"] == name
    for key in ("heat_capacity", "entropy", "free_energy"):
        np.testing.assert_allclose(ours["per_formula_unit"][key][0], np.array(tp[key]) / n_fu,
                                   rtol=1e-10, atol=1e-10)
    atoms = len(ref.primitive.symbols)
    np.testing.assert_allclose(ours["per_atom"]["heat_capacity"][0],
                               np.array(tp["heat_capacity"]) / atoms, rtol=1e-10, atol=1e-12)
    assert ours["per_formula_unit"]["zero_point_energy"][0] == pytest.approx(
        tp["free_energy"][0] / n_fu, rel=1e-12)


def test_dulong_petit_limit():
    """MgO at 3000 K: C_V per atom within 1 % of 3R (the high-T correction is
    −3R⟨(ħω/kT)²⟩/12, ≈ 0.5 % for modes up to 74 meV at kT = 259 meV)."""
    th = thermal_properties(phonons_from_force_sets(DATA / "MgO", nac=False).members,
                            [6, 6, 6], t_max=3000, t_step=1000)
    assert th["per_atom"]["heat_capacity"][0, -1] == pytest.approx(3 * R, rel=0.01)
    assert th["per_atom"]["heat_capacity"][0, -1] < 3 * R


def test_einstein_solid_heat_capacity():
    """Independent oscillators of one frequency ν: C_V = 3R x² eˣ/(eˣ − 1)², x = hν/kT, per
    atom, at every temperature (no acoustic modes, so none is left out). h/k and R are taken
    from phonopy's own physical constants, so the comparison is exact up to round-off (1e-9)."""
    from ase.build import bulk
    from phonopy import Phonopy
    from phonopy.physical_units import get_physical_units

    from mlff_ins.phonons.finite_displacement import to_phonopy_atoms

    ph = Phonopy(to_phonopy_atoms(bulk("Cu", "sc", a=3.0)), supercell_matrix=np.eye(3, dtype=int))
    nu = 5.0                                                      # THz, about
    mass = float(ph.primitive.masses[0])
    ph.force_constants = mass * (nu / 15.633302) ** 2 * np.eye(3)[None, None]
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    nu = float(ph.qpoints.frequencies[0].mean())                  # phonopy's own conversion
    th = thermal_properties([ph], [4, 4, 4], t_max=400, t_step=50)
    t = th["temperature_K"][1:]
    u = get_physical_units()
    x = nu * u.THzToEv / (u.KB * t)
    r = u.KB * u.EvTokJmol * 1000                                 # R in J/(K mol), phonopy's
    exact = 3 * r * x ** 2 * np.exp(x) / np.expm1(x) ** 2
    np.testing.assert_allclose(th["per_atom"]["heat_capacity"][0, 1:], exact, rtol=1e-9)


def test_phonons_writes_thermal_properties(tmp_path, capsys):
    out = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(DATA / "MgO"), "--mesh", "6", "6", "6",
                 "--t-max", "500", "-o", str(out), "--plot"]) == 0
    assert "zero-point energy" in capsys.readouterr().out
    with h5py.File(out) as f:
        g = f["thermal"]
        assert g.attrs["formula_unit"] == "MgO"
        assert g["temperature_K"][-1] == 500
        assert g["per_atom/heat_capacity_mean"].attrs["units"] == "J/(K mol)"
        assert g["per_formula_unit/zero_point_energy_mean"].attrs["units"] == "kJ/mol"
    assert (tmp_path / "mgo_heat_capacity.png").stat().st_size > 0
