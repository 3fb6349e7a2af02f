"""Every validation problem is reported on one line naming file and frame; nothing is written."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mlff_ins.cli import main
from mlff_ins.data.ingest import read_frames, split_isolated_atoms
from mlff_ins.data.validate import find_problems, validate
from mlff_ins.errors import InputError


def _frame(seed, energy=-10.0, forces=None, drop=()):
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.rattle(0.02, seed=seed)
    f = np.zeros((len(a), 3)) if forces is None else forces
    res = {"energy": energy, "forces": f}
    for k in drop:
        res.pop(k)
    a.calc = SinglePointCalculator(a, **res)
    a.info["read_from"] = "set.xyz"
    a.info["read_index"] = seed
    return a


def _atom():
    a = Atoms("Si", positions=[[5, 5, 5]], cell=[10] * 3, pbc=True)
    a.calc = SinglePointCalculator(a, energy=-101.6, forces=np.zeros((1, 3)))
    a.info["config_type"] = "IsolatedAtom"
    return a


def test_clean_set_has_no_problems():
    assert find_problems([_frame(0), _frame(1)], e0s={"Si": -101.6}) == []


@pytest.mark.parametrize("make, message", [
    (lambda: _frame(3, drop=("forces",)), "set.xyz: frame 3: no forces"),
    (lambda: _frame(3, drop=("energy",)), "set.xyz: frame 3: no energy"),
    (lambda: _frame(3, energy=float("nan")), "set.xyz: frame 3: energy is NaN"),
    (lambda: _frame(3, forces=np.where(np.eye(8, 3) > 0, np.nan, 0.0)),
     "set.xyz: frame 3: force on atom 0 is NaN"),
    (lambda: _frame(3, forces=np.vstack([np.zeros((7, 3)), [[0, 0, 80.0]]])),
     "set.xyz: frame 3: force on atom 7 is 80.0 eV/A"),
])
def test_each_problem_is_named(make, message):
    problems = find_problems([_frame(0), make()], e0s={"Si": -101.6})
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert "\n" not in problems[0]


def test_close_atoms_duplicates_and_missing_e0():
    close = _frame(4)
    close.positions[1] = close.positions[0] + [0.3, 0, 0]
    problems = find_problems([_frame(0), _frame(0), close], e0s={})
    assert any("frame 0: duplicates frame 0" in p for p in problems)
    assert any("frame 4: atoms 0 and 1 are 0.30 A apart" in p for p in problems)
    assert any(p.startswith("element Si has no isolated-atom energy") for p in problems)
    with pytest.raises(InputError, match="and 2 more"):
        validate([_frame(0), _frame(0), close], e0s={})


def test_isolated_atoms_become_e0s(tmp_path):
    write(tmp_path / "d.xyz", [_atom(), _frame(0), _frame(1)])
    frames, e0s = split_isolated_atoms(read_frames(tmp_path / "d.xyz"))
    assert e0s == {"Si": pytest.approx(-101.6)} and len(frames) == 2


def test_train_on_bad_data_writes_nothing(tmp_path, capsys):
    bad = _frame(2, forces=np.vstack([np.zeros((7, 3)), [[0, 0, 80.0]]]))
    write(tmp_path / "bad.xyz", [_atom(), _frame(0), _frame(1), bad, _frame(3)])
    rc = main(["train", "--data", str(tmp_path / "bad.xyz"), "--preset", "tiny",
               "-o", str(tmp_path / "model")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "bad.xyz: frame 3: force on atom 7 is 80.0 eV/A" in err
    assert "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_check_command_lists_problems(tmp_path, capsys):
    write(tmp_path / "d.xyz", [_frame(0), _frame(0)])
    assert main(["check", str(tmp_path / "d.xyz")]) == 1
    out = capsys.readouterr().out
    assert "d.xyz: frame 1: duplicates frame 0" in out
    # no isolated atom: a note that training fits the E0s, not a problem
    assert "note: no isolated-atom frames (config_type=IsolatedAtom): training will fit the " \
           "E0s of Si" in out
    assert "has no isolated-atom energy" not in out and out.rstrip().endswith(": 1 problems")
    write(tmp_path / "a.xyz", [_atom(), _frame(0), _frame(1)])
    assert main(["check", str(tmp_path / "a.xyz")]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "isolated-atom energies for Si: OK" in out


def test_check_notes_fixed_composition():
    from mlff_ins.data.validate import e0s_note

    frames = [_frame(0), _frame(1)]
    for a in frames:
        a.symbols[:4] = "C"  # every frame Si4C4
    note = e0s_note(frames, {})
    assert "all frames have the same composition" in note and "\n" not in note
    assert e0s_note(frames, {"Si": -1.0, "C": -2.0}) is None
    assert "isolated-atom energies for Si but not for C" in e0s_note(frames, {"Si": -1.0})


def test_missing_file_is_one_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("nope.xyz: file not found") and "\n" not in err


def test_cp2k_md_trajectory_is_read_with_units(tmp_path):
    """CP2K writes E in Hartree and forces in Hartree/Bohr; we must return eV and eV/A."""
    from ase import units
    pos, frc, cell = [], [], ["#   Step   Time [fs]       Ax [Angstrom] ..."]
    for step in (0, 5):
        pos += ["2", f" i =        {step}, time =        {step * 0.5:.3f}, E =      -7.8{step}",
                "Si 0.0 0.0 0.0", f"Si 1.36 1.36 {1.36 + 0.01 * step}"]
        frc += ["2", f" i =        {step}, time =        {step * 0.5:.3f}, E =      -7.8{step}",
                "Si 0.01 0.0 -0.002", "Si -0.01 0.0 0.002"]
        cell.append(f"{step} {step * 0.5} 5.43 0 0 0 5.43 0 0 0 5.43 160.1")
    (tmp_path / "si-pos-1.xyz").write_text("\n".join(pos) + "\n")
    (tmp_path / "si-frc-1.xyz").write_text("\n".join(frc) + "\n")
    (tmp_path / "si-1.cell").write_text("\n".join(cell) + "\n")
    frames = read_frames(tmp_path / "si-pos-1.xyz")
    assert len(frames) == 2
    assert frames[1].get_potential_energy() == pytest.approx(-7.85 * units.Hartree)
    assert frames[0].get_forces()[0, 0] == pytest.approx(0.01 * units.Hartree / units.Bohr)
    assert frames[1].positions[1, 2] == pytest.approx(1.41)
    assert frames[0].cell[2, 2] == pytest.approx(5.43)
    (tmp_path / "si-frc-1.xyz").unlink()
    with pytest.raises(InputError, match="no forces file si-frc-1.xyz"):
        read_frames(tmp_path / "si-pos-1.xyz")


def test_labels_under_mace_style_keys_are_read(tmp_path):
    """An extxyz labelled for MACE (REF_energy, REF_forces, REF_stress as a 3x3 matrix) reads as
    the same energies, forces and Voigt stress (xx yy zz yz xz xy) that ASE's own keys give,
    with a warning naming the keys; a frame labelled twice (REF_ and DFT_) is refused."""
    rng = np.random.default_rng(3)
    plain, mace = [], []
    for i in range(3):
        a = bulk("Si", "diamond", 5.43, cubic=True)
        a.rattle(0.03, seed=i)
        e, f = -40.0 - 0.1 * i, rng.normal(scale=0.2, size=(len(a), 3))
        s = rng.normal(scale=0.01, size=(3, 3))
        s = s + s.T
        voigt = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        b = a.copy()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=voigt)
        plain.append(a)
        b.info["REF_energy"] = e
        b.arrays["REF_forces"] = f
        b.info["REF_stress"] = s.ravel()
        mace.append(b)
    write(tmp_path / "ase.xyz", plain)
    write(tmp_path / "mace.xyz", mace)
    ref = read_frames(tmp_path / "ase.xyz")
    with pytest.warns(UserWarning, match="REF_energy, REF_forces, REF_stress"):
        got = read_frames(tmp_path / "mace.xyz")
    for a, b in zip(ref, got):
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-12)
        np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-12)
        assert "REF_energy" not in b.info and "REF_forces" not in b.arrays
    assert find_problems(got) == []
    mace[1].info["DFT_energy"] = -1.0
    write(tmp_path / "twice.xyz", mace)
    with pytest.raises(InputError, match="frame 1 has labels under REF_ and DFT_ keys"):
        read_frames(tmp_path / "twice.xyz")


def test_a_virial_reads_as_the_stress(tmp_path):
    """Data sets of GAP, NEP and MACE keep the virial W (eV) instead of the stress: read as the
    stress -W/V (ASE sign), under ASE's own keys or a label prefix; a virial that disagrees with
    a stress stored beside it is refused, naming the frame."""
    a = bulk("Cu", "fcc", 3.61, cubic=True)
    a.rattle(0.02, seed=1)
    from ase.calculators.emt import EMT

    a.calc = EMT()
    energy, forces, stress = a.get_potential_energy(), a.get_forces(), a.get_stress()
    full = a.get_stress(voigt=False)
    virial = -full * a.get_volume()
    plain, prefixed = a.copy(), a.copy()
    plain.calc = SinglePointCalculator(plain, energy=energy, forces=forces)
    plain.info["virial"] = virial.ravel()
    prefixed.info.update(dft_energy=energy, dft_virial=virial.ravel())
    prefixed.arrays["dft_forces"] = forces
    write(tmp_path / "plain.xyz", plain)
    write(tmp_path / "prefixed.xyz", prefixed)
    for name in ("plain.xyz", "prefixed.xyz"):
        with pytest.warns(UserWarning, match="virial"):
            (got,) = read_frames(tmp_path / name)
        np.testing.assert_allclose(got.get_stress(), stress, rtol=1e-7, atol=1e-10)
    both = a.copy()
    both.calc = SinglePointCalculator(both, energy=energy, forces=forces, stress=stress)
    both.info["virial"] = (2 * virial).ravel()
    write(tmp_path / "both.xyz", both)
    with pytest.raises(InputError, match="frame 0: its stress and its virial .* disagree"):
        read_frames(tmp_path / "both.xyz")


def test_isolated_atoms_of_two_calculations_are_refused(tmp_path):
    """Two IsolatedAtom frames of one element with different energies (two DFT settings merged)
    are refused, naming both; one without an energy is one line, not a traceback."""
    def atom(energy, index):
        x = Atoms("Cu", positions=[[5, 5, 5]], cell=[10, 10, 10], pbc=True)
        x.info.update(config_type="IsolatedAtom", read_from="set.xyz", read_index=index)
        if energy is not None:
            x.calc = SinglePointCalculator(x, energy=energy)
        return x

    rest, e0s = split_isolated_atoms([atom(-0.1, 0), _frame(1), atom(-0.1, 2)])
    assert e0s == {"Cu": -0.1} and len(rest) == 1
    with pytest.raises(InputError, match=r"set.xyz frame 2: IsolatedAtom Cu at -3.500000 eV, "
                                         r"but set.xyz frame 0 has it at -0.100000 eV"):
        split_isolated_atoms([atom(-0.1, 0), atom(-3.5, 2)])
    with pytest.raises(InputError, match="set.xyz frame 4: an IsolatedAtom frame without an "
                                         "energy"):
        split_isolated_atoms([atom(None, 4)])
