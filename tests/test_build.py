"""`mlff-ins build`: supercells, vacancies, substitutions, interstitials, seeded."""

import numpy as np
from ase.build import bulk
from ase.geometry import get_distances
from ase.io import read, write

from mlff_ins.cli import main
from mlff_ins.md.build import build_cell


def test_defected_silicon_supercell(tmp_path, capsys):
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    write(tmp_path / "si.cif", si)
    out = tmp_path / "si216.xyz"
    assert main(["build", str(tmp_path / "si.cif"), "--supercell", "3", "3", "3", "--vacancies",
                 "1", "--substitute", "Si:Ge:0.1", "--interstitial", "Li:1", "-o", str(out)]) == 0
    atoms = read(out)
    symbols = atoms.get_chemical_symbols()
    assert len(atoms) == 216 and symbols.count("Ge") == 22 and symbols.count("Li") == 1
    li = symbols.index("Li")
    _, d = get_distances(atoms.positions[li], atoms.positions, cell=atoms.cell, pbc=True)
    assert np.sort(d[0])[1] > 2.0   # the interstitial sits in an empty site, not on an atom
    again = build_cell(si, (3, 3, 3), 1, None, ["Si:Ge:0.1"], ["Li:1"], seed=0)
    np.testing.assert_allclose(again.positions, atoms.positions, atol=1e-6)  # seeded
    assert main(["build", str(tmp_path / "si.cif"), "--substitute", "Si:Ge:99",
                 "-o", str(tmp_path / "x.xyz")]) == 2
    assert "only 8 Si atoms" in capsys.readouterr().err
    assert not (tmp_path / "x.xyz").exists()


def test_substituted_atoms_take_the_new_elements_mass():
    """A structure read with explicit masses (an H5MD frame, LAMMPS data, extxyz with masses):
    the atoms --substitute changes get the new element's mass, the others keep theirs (here a
    deuterated-like custom Si mass)."""
    from ase.data import atomic_masses, atomic_numbers

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_masses(np.full(len(atoms), 29.0))
    out = build_cell(atoms, substitutions=["Si:Ge:2"], seed=1)
    ge = np.array(out.get_chemical_symbols()) == "Ge"
    assert ge.sum() == 2
    np.testing.assert_allclose(out.get_masses()[ge], atomic_masses[atomic_numbers["Ge"]])
    np.testing.assert_allclose(out.get_masses()[~ge], 29.0)


def test_a_supercell_matrix_may_have_negative_entries():
    """The fcc primitive cell times [[-1,1,1],[1,-1,1],[1,1,-1]] is the conventional cubic cell
    (4 atoms, a = 3.61 Å); zero or negative repetitions and a left-handed matrix are refused."""
    import pytest

    from mlff_ins.errors import InputError

    cubic = build_cell(bulk("Cu", "fcc", a=3.61), supercell=[[-1, 1, 1], [1, -1, 1], [1, 1, -1]])
    assert len(cubic) == 4
    np.testing.assert_allclose(np.abs(cubic.cell.array), np.eye(3) * 3.61, atol=1e-12)
    for bad in ([2, 0, 2], [2, -1, 2], [[0, 1, 0], [1, 0, 0], [0, 0, 1]]):
        with pytest.raises(InputError, match="--supercell"):
            build_cell(bulk("Cu", "fcc", a=3.61), supercell=bad)
