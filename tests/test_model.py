"""A trained bundle as an ASE calculator: physics every NequIP model must obey, and the ensemble."""

import json

import numpy as np
import pytest
from ase.build import bulk
from scipy.spatial.transform import Rotation

from mlff_ins import load_calculator
from mlff_ins.errors import InputError


@pytest.fixture(scope="module")
def calc(tiny_bundle):
    return load_calculator(tiny_bundle, device="cpu")


def _rattled(seed=0, amp=0.08):
    a = bulk("Si", "diamond", 5.466, cubic=True) * (2, 2, 2)
    a.rattle(amp, seed=seed)
    return a


def test_bundle_contents(tiny_bundle):
    meta = json.loads((tiny_bundle / "bundle.json").read_text())
    assert meta["elements"] == ["Si"] and meta["dtype"] == "float64"
    assert len(meta["members"]) == 2 and meta["e0s_eV"]["Si"] < -100
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert metrics["n_test"] >= 1 and len(metrics["members"]) == 2
    for key in ("energy_meV_per_atom", "forces_meV_per_A", "stress_meV_per_A3"):
        assert metrics["ensemble_mean"][key]["rmse"] >= metrics["ensemble_mean"][key]["mae"] > 0
    for name in ("parity.png", "learning_curve.png", "report.md"):
        assert (tiny_bundle / name).stat().st_size > 0


def test_forces_are_minus_energy_gradient(calc):
    """Central finite differences of the float64 energy, h = 1e-4 A: agreement to 1e-6 eV/A."""
    atoms = _rattled()
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-4
    rng = np.random.default_rng(1)
    for i in rng.choice(len(atoms), 4, replace=False):
        for c in range(3):
            p = atoms.positions.copy()
            p[i, c] += h
            atoms.positions = p
            e_plus = atoms.get_potential_energy()
            p[i, c] -= 2 * h
            atoms.positions = p
            e_minus = atoms.get_potential_energy()
            p[i, c] += h
            atoms.positions = p
            assert -(e_plus - e_minus) / (2 * h) == pytest.approx(forces[i, c], abs=1e-6)


def test_stress_is_strain_derivative(calc):
    """sigma_xx = (1/V) dE/d(eps_xx), central difference with eps = 1e-5: to 1e-6 eV/A^3."""
    atoms = _rattled(seed=3)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    cell0, eps = atoms.cell.array.copy(), 1e-5
    energies = []
    for s in (eps, -eps):
        a = atoms.copy()
        a.calc = calc
        a.set_cell(cell0 @ np.diag([1 + s, 1, 1]), scale_atoms=True)
        energies.append(a.get_potential_energy())
    assert (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume() == pytest.approx(
        stress[0, 0], abs=1e-6)


def test_forces_without_stress_are_the_same(tiny_bundle):
    """compute_stress=False takes the position gradient alone: the same forces and energy
    (float64 model, to 1e-12 relative), no stress until one is asked for, and then the same
    stress as the default calculator gives."""
    full, lean = load_calculator(tiny_bundle), load_calculator(tiny_bundle)
    lean.compute_stress = False
    a, b = _rattled(seed=7), _rattled(seed=7)
    a.calc, b.calc = full, lean
    scale = np.abs(a.get_forces()).max()
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=0, atol=1e-12 * scale)
    assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=1e-12)
    assert "stress" in full.results and "stress" not in lean.results
    np.testing.assert_allclose(b.get_stress(), a.get_stress(), rtol=0, atol=1e-12)
    batched = lean.member_forces_batched([a.copy(), b.copy()])
    np.testing.assert_allclose(batched[:, 1], full.member_forces(a), rtol=0, atol=1e-12 * scale)


def test_rotation_and_translation(calc):
    atoms = _rattled(seed=5)
    atoms.calc = calc
    e0, f0 = atoms.get_potential_energy(), atoms.get_forces()
    R = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    rot = atoms.copy()
    rot.set_cell(atoms.cell.array @ R.T, scale_atoms=False)
    rot.positions = atoms.positions @ R.T
    rot.calc = calc
    assert rot.get_potential_energy() == pytest.approx(e0, abs=1e-9 * len(atoms))
    np.testing.assert_allclose(rot.get_forces(), f0 @ R.T, atol=1e-9)
    moved = atoms.copy()
    moved.positions += [1.234, -0.5, 7.1]
    moved.wrap()
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-9 * len(atoms))
    np.testing.assert_allclose(moved.get_forces(), f0, atol=1e-9)


def test_per_atom_energies_sum_to_total(calc):
    atoms = _rattled(seed=7)
    atoms.calc = calc
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(),
                                                                 abs=1e-9)


def test_ensemble_spread_grows_off_the_training_data(calc, si_subset):
    from ase.io import read
    frames = [a for a in read(si_subset, ":") if len(a) == 64][:5]
    near = []
    for a in frames:
        a.calc = calc
        a.get_potential_energy()
        near.append(calc.results["forces_std"].mean())
    far = []
    for seed in range(3):
        a = bulk("Si", "diamond", 5.466 * 0.85, cubic=True) * (2, 2, 2)
        a.rattle(0.35, seed=seed)
        a.calc = calc
        a.get_potential_energy()
        assert calc.results["forces_std"].shape == (64,)
        far.append(calc.results["forces_std"].mean())
    # compressed by 15 % and rattled by 0.35 A: far outside the data, members must disagree more
    assert np.mean(far) > 2 * np.mean(near), (far, near)
    assert calc.results["energy_std"] >= 0


def test_unknown_element_is_named(calc):
    a = bulk("Ge", "diamond", 5.66)
    a.calc = calc
    with pytest.raises(InputError, match=r"element Ge is not known to the model .*Si"):
        a.get_potential_energy()


def test_unfinished_bundle_is_refused(tmp_path):
    (tmp_path / "train_settings.json").write_text("{}")
    with pytest.raises(InputError, match="training has not finished"):
        load_calculator(tmp_path)


@pytest.mark.parametrize("member", ["/etc/passwd", "../elsewhere/model.nequip.zip",
                                    "sub/../../x.nequip.zip", "link/model.nequip.zip"])
def test_bundle_member_paths_must_stay_inside_the_bundle(tmp_path, member):
    """Loading a member runs code: a bundle.json pointing outside its folder (absolute, '..',
    a symlink out) is refused before anything is loaded."""
    from mlff_ins.model.calculator import read_bundle

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.nequip.zip").write_bytes(b"not loaded")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "link").symlink_to(outside)
    (bundle / "bundle.json").write_text(json.dumps({"members": [member]}))
    with pytest.raises(InputError, match="leaves the bundle folder"):
        read_bundle(bundle)


def test_smooth_at_the_cutoff(calc, tiny_bundle):
    """A dimer pulled through the cutoff: energy and force go continuously to their r > r_c values."""
    from ase import Atoms
    rc = json.loads((tiny_bundle / "bundle.json").read_text())["cutoff_A"]
    e_far, f_near = None, []
    for r in (rc - 0.02, rc - 0.01, rc - 0.001, rc + 0.001, rc + 0.5):
        a = Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]], cell=[20, 20, 20], pbc=False)
        a.calc = calc
        e = a.get_potential_energy()
        if r > rc:
            e_far = e if e_far is None else e_far
            assert e == pytest.approx(e_far, abs=1e-12)  # no interaction beyond r_c
            assert np.abs(a.get_forces()).max() < 1e-12
        else:
            f_near.append(abs(a.get_forces()[0, 0]))
            last_inside = e
    # polynomial envelope (p = 6): the force vanishes smoothly as r -> r_c
    assert f_near[0] > f_near[1] > f_near[2]
    assert f_near[2] < 1e-6
    assert last_inside == pytest.approx(e_far, abs=1e-6)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(tiny_bundle, calc):
    gpu = load_calculator(tiny_bundle, device="cuda")
    a = _rattled(seed=11)
    a.calc = calc
    f_cpu = a.get_forces()
    a.calc = gpu
    np.testing.assert_allclose(a.get_forces(), f_cpu, atol=1e-8)


def _edge_set(data):
    from nequip.data import AtomicDataDict as K
    ei = data[K.EDGE_INDEX_KEY].numpy()
    sh = np.rint(data[K.EDGE_CELL_SHIFT_KEY].numpy()).astype(int)
    return {(int(i), int(j), *map(int, s)) for i, j, s in zip(ei[0], ei[1], sh)}


def test_skin_neighbour_list_keeps_every_pair_and_the_forces_bit_for_bit(tiny_bundle, calc):
    """The reused Verlet list gives the edges of a fresh build after moves and cell strains, the
    same forces bit for bit as a fresh list at every call, also for a calculator that starts
    mid-run (a resumed MD run), and it is rebuilt only when the skin bound is used up."""
    from nequip.data import from_ase
    from nequip.data.transforms import NeighborListTransform

    from mlff_ins.model.calculator import _float64_default
    from mlff_ins.model.neighbours import SkinNeighbourList

    r_max = json.loads((tiny_bundle / "bundle.json").read_text())["cutoff_A"]
    skin = SkinNeighbourList(r_max, skin=0.8)
    fresh = NeighborListTransform(r_max=r_max)
    fresh_calc = load_calculator(tiny_bundle, skin=0.0)
    reused = load_calculator(tiny_bundle, skin=0.8)
    a = _rattled(seed=5)
    rng = np.random.default_rng(1)
    late = None
    for step in range(16):
        a.positions += rng.normal(0.0, 0.04, a.positions.shape)
        if step % 3 == 2:  # an NPT-like cell change, atoms following it
            a.set_cell(a.cell[:] @ (np.eye(3) + rng.normal(0.0, 0.003, (3, 3))),
                       scale_atoms=True)
        with _float64_default():
            data = calc.transforms[0](from_ase(a))
            assert _edge_set(skin(dict(data))) == _edge_set(fresh(dict(data)))
        f = reused.get_forces(a)
        assert np.array_equal(f, fresh_calc.get_forces(a))
        if step == 9:
            late = load_calculator(tiny_bundle, skin=0.8)
        if late is not None:
            assert np.array_equal(late.get_forces(a), f)
    assert 2 <= skin.n_builds < 12  # reused most of the time, rebuilt when atoms moved far
    assert fresh_calc._skin_nl.n_builds == 16
    # an isolated molecule (no periodicity) goes through the same path
    from ase import Atoms
    m = Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [0, 2.4, 0.3]], cell=[15] * 3)
    assert np.array_equal(reused.get_forces(m), fresh_calc.get_forces(m))


def test_the_shipped_reference_model_by_name(tmp_path, monkeypatch, capsys):
    """`--model si-reference` is the bundle inside the package, wherever pip put it: the
    calculator it loads is that bundle's (same energy), a command names its elements, and a
    folder of that name where the user works wins over the shipped one."""
    from ase.io import write

    from mlff_ins.cli import main
    from mlff_ins.model.shipped import SHIPPED, resolve_model

    folder = SHIPPED["si-reference"]
    assert (folder / "bundle.json").is_file()
    monkeypatch.chdir(tmp_path)
    si = bulk("Si", "diamond", a=5.43)
    si.calc = load_calculator("si-reference", members=[0])
    by_name = si.get_potential_energy()
    si.calc = load_calculator(folder, members=[0])
    assert by_name == si.get_potential_energy()
    write(tmp_path / "ge.cif", bulk("Ge", "diamond", a=5.66))
    assert main(["phonons", str(tmp_path / "ge.cif"), "--model", "si-reference",
                 "-o", str(tmp_path / "ge.h5")]) == 2
    err = capsys.readouterr().err
    assert "element Ge is not known to the model" in err and "reference_model" in err
    # the name and the folder are one model to a resumed MD run or study (their identity is
    # the bundle's digest); the user's own folder of that name is another
    from mlff_ins.model.shipped import bundle_digest
    assert bundle_digest("si-reference") == bundle_digest(folder) is not None
    (tmp_path / "si-reference").mkdir()
    assert resolve_model("si-reference") == "si-reference"
    assert bundle_digest("si-reference") is None
