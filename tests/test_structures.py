"""Structures from elsewhere: every structure-taking command (build, md, phonons) reads what
ase.io reads — CIF (partial occupancies refused, naming the site), POSCAR, extxyz (one frame of
many, --index), LAMMPS data and dumps (--types) — and bad files end in one line, exit status 2."""

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from mlff_ins.cli import main

CIF_MIXED = """data_mixed
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Fe1 Fe 0.0 0.0 0.0 1.0
{rows}"""


def _build(tmp_path, structure, *options):
    """Run `mlff-ins build STRUCTURE OPTIONS -o out.extxyz`; return (status, atoms or None)."""
    out = tmp_path / "out.extxyz"
    if out.exists():
        out.unlink()
    status = main(["build", str(structure), *options, "-o", str(out)])
    return status, (read(out) if status == 0 else None)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("rows,site", [
    ("Co2 Co 0.5 0.5 0.5 0.5\nNi2 Ni 0.5 0.5 0.5 0.5\n",
     "site Co2 (Co 0.5 + Ni 0.5 at 0.5 0.5 0.5)"),
    ("O3 O 0.5 0.0 0.0 0.8\n", "site O3 (O 0.8 at 0.5 0 0)"),
])
def test_cif_with_partial_occupancy_is_refused_naming_the_site(tmp_path, capsys, rows, site):
    cif = tmp_path / "mixed.cif"
    cif.write_text(CIF_MIXED.format(rows=rows))
    status, _ = _build(tmp_path, cif)
    assert status == 2
    err = _one_error_line(capsys)          # ASE's own warnings on the mixed site are not shown
    assert str(cif) in err and site in err and "occupancy 1" in err
    # the same file with every site full (occupancy 0.9999 is CIF rounding) is read
    cif.write_text(CIF_MIXED.format(rows="O3 O 0.5 0.0 0.0 0.9999\n"))
    status, atoms = _build(tmp_path, cif)
    assert status == 0 and atoms.get_chemical_formula() == "FeO"
    assert not [k for k in atoms.info if k.startswith("_")]   # no CIF tags carried along


def test_poscar(tmp_path):
    si = bulk("Si", "diamond", a=5.43)
    si.positions[1] += [0.01, 0.02, 0.03]
    poscar = tmp_path / "POSCAR"
    write(poscar, si, format="vasp", direct=True)
    status, atoms = _build(tmp_path, poscar, "--supercell", "1", "1", "2")
    assert status == 0 and len(atoms) == 4
    np.testing.assert_allclose(atoms.positions[:2], si.positions, atol=1e-6)
    np.testing.assert_allclose(atoms.cell[2], 2 * si.cell[2], atol=1e-6)


def test_extxyz_frames_default_to_the_last_and_index_chooses(tmp_path, capsys):
    frames = []
    for k in range(3):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.positions[0] += 0.1 * k
        frames.append(a)
    path = tmp_path / "traj.extxyz"
    write(path, frames)
    for options, k in [((), 2), (("--index", "0"), 0), (("--index", "-2"), 1)]:
        status, atoms = _build(tmp_path, path, *options)
        assert status == 0
        np.testing.assert_allclose(atoms.positions, frames[k].positions, atol=1e-9)
    status, _ = _build(tmp_path, path, "--index", "3")
    assert status == 2
    err = _one_error_line(capsys)
    assert "--index 3" in err and "3 frames" in err and str(path) in err


def _nacl():
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.positions += 0.05                          # no atom on a cell face: ids keep their order
    return a


def test_lammps_data_with_types(tmp_path, capsys):
    nacl = _nacl()
    data = tmp_path / "nacl.data"                # .data: ase.io would take it for RuNNer
    write(data, nacl, format="lammps-data", specorder=["Na", "Cl"], masses=False)
    status, atoms = _build(tmp_path, data, "--types", "Na,Cl")
    assert status == 0
    assert atoms.get_chemical_symbols() == nacl.get_chemical_symbols()
    np.testing.assert_allclose(atoms.positions, nacl.positions, atol=1e-6)
    # no element names and no masses in the file: refused, not read as H and He
    status, _ = _build(tmp_path, data)
    assert status == 2 and "give --types" in _one_error_line(capsys)
    status, _ = _build(tmp_path, data, "--types", "Na")
    err = _one_error_line(capsys)
    assert status == 2 and "atom type 2" in err and "--types Na" in err
    # with a Masses section the elements are guessed, with a one-line warning saying so
    with_masses = tmp_path / "nacl_masses.lmp"
    write(with_masses, nacl, format="lammps-data", specorder=["Na", "Cl"], masses=True)
    status, atoms = _build(tmp_path, with_masses)
    assert status == 0 and atoms.get_chemical_symbols() == nacl.get_chemical_symbols()
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert len(warned) == 1 and "type 1 = Na, type 2 = Cl" in warned[0]
    # --types whose elements contradict the file's Masses section: refused, not simulated with
    # a Na mass on K atoms; an isotope's mass is fine (a deuterated type named H)
    status, _ = _build(tmp_path, with_masses, "--types", "K,Cl")
    err = _one_error_line(capsys)
    assert status == 2 and "atom type 1 the mass 22.990" in err and "K's" in err
    heavy = nacl.copy()
    heavy.set_masses([36.97 if s == "Cl" else 22.99 for s in nacl.get_chemical_symbols()])
    cl37 = tmp_path / "nacl37.lmp"
    write(cl37, heavy, format="lammps-data", specorder=["Na", "Cl"], masses=True)
    status, atoms = _build(tmp_path, cl37, "--types", "Na,Cl")
    assert status == 0 and atoms.get_chemical_symbols() == nacl.get_chemical_symbols()
    # --types is for LAMMPS files only
    xyz = tmp_path / "nacl.xyz"
    write(xyz, nacl)
    status, _ = _build(tmp_path, xyz, "--types", "Na,Cl")
    assert status == 2 and "not a LAMMPS data or dump file" in _one_error_line(capsys)


def test_lammps_dump_with_types_and_index(tmp_path, capsys):
    nacl = _nacl()
    L = nacl.cell[0, 0]
    dump = tmp_path / "nacl.lammpstrj"
    with open(dump, "w") as fh:
        for step in (0, 10):
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{len(nacl)}\n"
                     f"ITEM: BOX BOUNDS pp pp pp\n0 {L}\n0 {L}\n0 {L}\n"
                     "ITEM: ATOMS id type x y z\n")
            for i, (s, p) in enumerate(zip(nacl.get_chemical_symbols(), nacl.positions)):
                x, y, z = p + 0.01 * step
                fh.write(f"{i + 1} {1 if s == 'Na' else 2} {x} {y} {z}\n")
    status, atoms = _build(tmp_path, dump, "--types", "Na,Cl", "--index", "0")
    assert status == 0 and atoms.get_chemical_symbols() == nacl.get_chemical_symbols()
    np.testing.assert_allclose(atoms.positions, nacl.positions, atol=1e-6)
    status, atoms = _build(tmp_path, dump, "--types", "Na,Cl")          # the last frame
    np.testing.assert_allclose(atoms.positions, nacl.positions + 0.1, atol=1e-6)
    status, _ = _build(tmp_path, dump)
    assert status == 2 and "give --types" in _one_error_line(capsys)


@pytest.mark.parametrize("content,needle", [("", "empty file"),
                                            ("3\nnot an xyz file\nSi 0 0\n", "cannot read"),
                                            (None, "no such structure file")])
@pytest.mark.parametrize("command", ["build", "md", "phonons"])
def test_empty_unreadable_or_missing_structure_is_one_line(request, tmp_path, capsys,
                                                          command, content, needle):
    path = tmp_path / "s.xyz"
    if content is not None:
        path.write_text(content)
    out = tmp_path / ("out.xyz" if command == "build" else "out.h5md")
    extra = [] if command == "build" else ["--model", str(request.getfixturevalue("tiny_bundle"))]
    assert main([command, str(path), *extra, "-o", str(out)]) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"mlff-ins {command}: error: {path}") and needle in err
    assert not out.exists()


def test_md_starts_from_the_chosen_frame(tmp_path):
    """md --index 0 on a multi-frame file: the trajectory's frame 0 is that frame."""
    import h5py

    frames = []
    for k in range(2):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        a.positions[0] += 0.05 * k
        frames.append(a)
    path = tmp_path / "cu.extxyz"
    write(path, frames)
    calc = tmp_path / "emt.yaml"
    calc.write_text("calculator: emt\n")
    for index, k in [("0", 0), ("-1", 1)]:
        out = tmp_path / f"cu{k}.h5md"
        assert main(["md", str(path), "--index", index, "--calculator", str(calc), "--steps",
                     "2", "--every", "2", "-o", str(out)]) == 0
        with h5py.File(out) as f:
            np.testing.assert_allclose(f["particles/trajectory/position/value"][0],
                                       frames[k].positions, atol=1e-12)


def test_a_trajectory_named_h5_is_a_structure_and_a_spectra_file_is_not(tmp_path):
    """`md ... -o traj.h5` (DESIGN's own example) writes H5MD: its last frame reads as a
    structure like a .h5md file's; an .h5 that is not H5MD (a spectra file) is one line."""
    from mlff_ins.data.ingest import read_structure
    from mlff_ins.errors import InputError
    from mlff_ins.neutron.spectrum import Spectrum1D, write_spectra

    path = tmp_path / "cu.extxyz"
    write(path, bulk("Cu", "fcc", a=3.61, cubic=True))
    calc = tmp_path / "emt.yaml"
    calc.write_text("calculator: emt\n")
    assert main(["md", str(path), "--calculator", str(calc), "--steps", "2", "--every", "2",
                 "-o", str(tmp_path / "traj.h5")]) == 0
    atoms = read_structure(tmp_path / "traj.h5")
    assert atoms.get_chemical_formula() == "Cu4" and atoms.info["source_frame"] == 1
    spectra = tmp_path / "s.h5"
    write_spectra(spectra, {"vdos": Spectrum1D(kind="vdos", x=np.arange(3.0),
                                               intensity=np.ones(3), units="1/meV")})
    with pytest.raises(InputError, match="s.h5: an HDF5 file that is not an H5MD trajectory"):
        read_structure(spectra)


def test_phonons_device_auto_and_an_element_the_model_lacks(tiny_bundle, tmp_path, capsys):
    """phonons --device auto runs (on the CPU here) from a POSCAR; a structure with an element
    the model was not trained on is refused in one line naming the file and the element."""
    poscar = tmp_path / "POSCAR"
    write(poscar, bulk("Si", "diamond", a=5.43), format="vasp")
    out = tmp_path / "si_phonons.h5"
    assert main(["phonons", str(poscar), "--model", str(tiny_bundle), "--device", "auto",
                 "--supercell", "1", "1", "1", "--mesh", "2", "2", "2", "-o", str(out)]) == 0
    assert out.exists()
    capsys.readouterr()
    ge = tmp_path / "ge.cif"
    write(ge, bulk("Ge", "diamond", a=5.66))
    bad = tmp_path / "ge_phonons.h5"
    assert main(["phonons", str(ge), "--model", str(tiny_bundle), "--device", "auto",
                 "-o", str(bad)]) == 2
    err = _one_error_line(capsys)
    assert str(ge) in err and "element Ge is not known to the model" in err
    assert not bad.exists()
    assert main(["phonons", "--force-sets", str(tmp_path), "--index", "0", "-o", str(bad)]) == 2
    assert "--index" in _one_error_line(capsys)
