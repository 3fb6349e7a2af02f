"""Phonopy folders in every layout phonopy.load takes, and calculators that work in bohr.

Our reader must give phonopy's own frequencies on the same files, and always a phonopy object
in phonopy's default units (cell in Å, force constants in eV/Å², frequencies in THz), which is
what the INS code assumes. The bohr case is checked three ways: against phonopy itself, against
the same force set written in Å, and against Euphonic reading the ABACUS example of phonopy.
"""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from mlff_ins.cli import main
from mlff_ins.errors import InputError
from mlff_ins.phonons.finite_displacement import phonons_from_force_sets

DATA = Path(__file__).parent / "data" / "phonopy"
AL = DATA / "Al-ABACUS"
warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")

# general q-points (fractional, primitive reciprocal cell), one near Γ where the Born charges
# matter, none at Γ itself (acoustic frequencies there are square roots of round-off)
Q = [[0.1, 0.2, 0.3], [0.5, 0.0, 0.5], [0.25, 0.25, 0.0], [0.02, 0.0, 0.0]]
# the same files through the same phonopy code: equal up to summation order
TOL_THZ = 1e-8


def _freqs(ph, q=Q):
    ph.run_qpoints(q)
    return np.array(ph.qpoints.frequencies)


def _load(*args, **kwargs):
    import phonopy

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        return phonopy.load(*args, **kwargs)


def _write_layouts(material: str, tmp: Path) -> dict:
    """The original force set of ``material`` rewritten in each layout phonopy.load takes.

    Returns (phonopy.load of the original, {layout: (folder, extra arguments for ours,
    phonopy.load of the same files)})."""
    from phonopy.file_IO import write_FORCE_CONSTANTS, write_FORCE_SETS
    from phonopy.structure.dataset import get_displacements_and_forces

    src = DATA / material
    born = src / "BORN" if (src / "BORN").exists() else None
    orig = _load(src / "phonopy_disp.yaml", force_sets_filename=src / "FORCE_SETS",
                 born_filename=born)
    smat = orig.supercell_matrix
    out = {}

    # POSCAR-unitcell + type-1 FORCE_SETS (+ BORN), the supercell from the user
    d = tmp / "classic"
    d.mkdir()
    shutil.copy(src / "POSCAR-unitcell", d)
    shutil.copy(src / "FORCE_SETS", d)
    if born:
        shutil.copy(born, d)
    out["classic"] = (d, {"supercell": np.diag(smat)}, _load(
        unitcell_filename=d / "POSCAR-unitcell", supercell_matrix=smat,
        force_sets_filename=d / "FORCE_SETS", born_filename=born and d / "BORN",
        is_nac=born is not None))

    # type-2 FORCE_SETS: every atom's displacement and force on each line (not for Al2O3:
    # symfc takes seconds on its 120-atom supercell, twice, and MgO and NaCl cover type 2)
    if material != "Al2O3":
        d = tmp / "type2"
        d.mkdir()
        shutil.copy(src / "POSCAR-unitcell", d)
        disps, forces = get_displacements_and_forces(orig.dataset)
        write_FORCE_SETS({"displacements": disps, "forces": forces}, d / "FORCE_SETS")
        out["type2"] = (d, {"supercell": np.diag(smat)}, _load(
            unitcell_filename=d / "POSCAR-unitcell", supercell_matrix=smat,
            force_sets_filename=d / "FORCE_SETS", is_nac=False))

    # phonopy.yaml (cells, Born charges) + FORCE_CONSTANTS, and + force_constants.hdf5
    for name, fc_name in (("yaml_fc", "FORCE_CONSTANTS"), ("yaml_hdf5", "force_constants.hdf5")):
        d = tmp / name
        d.mkdir()
        orig.save(d / "phonopy.yaml", settings={"force_sets": False, "displacements": False})
        if fc_name == "FORCE_CONSTANTS":
            write_FORCE_CONSTANTS(orig.force_constants, d / fc_name,
                                  p2s_map=orig.primitive.p2s_map)
        else:
            from phonopy.file_IO import write_force_constants_to_hdf5

            write_force_constants_to_hdf5(orig.force_constants, str(d / fc_name),
                                          p2s_map=orig.primitive.p2s_map,
                                          physical_unit="eV/angstrom^2")
        out[name] = (d, {}, _load(d / "phonopy.yaml", force_constants_filename=d / fc_name))

    # phonopy_params.yaml: cells, forces and Born charges in one file
    d = tmp / "params"
    d.mkdir()
    orig.save(d / "phonopy_params.yaml")
    out["params"] = (d, {}, _load(d / "phonopy_params.yaml"))
    return orig, out


@pytest.mark.parametrize("material", ["MgO", "NaCl", "Al2O3"])
def test_every_layout_gives_phonopys_frequencies(material, tmp_path):
    """Each layout read by us equals phonopy.load on the same files; the layouts written from
    the original phonopy object (the yaml ones) also equal the original. The POSCAR-unitcell
    layouts do not hold quite the same data: phonopy_disp.yaml rounds the masses (NaCl, Al2O3:
    ~3e-7 amu), type 2 is fitted by symfc, and Al2O3's Born charges live only in its yaml."""
    orig, layouts = _write_layouts(material, tmp_path)
    f_orig = _freqs(orig)
    for name, (d, kwargs, peer) in layouts.items():
        ours = phonons_from_force_sets(d, **kwargs).members[0]
        f = _freqs(ours)
        assert np.abs(f - _freqs(peer)).max() <= TOL_THZ, name
        np.testing.assert_allclose(ours.primitive.cell, peer.primitive.cell, atol=1e-12)
        assert (ours.nac_params is None) == (peer.nac_params is None), name
        if name not in ("classic", "type2"):
            assert np.abs(f - f_orig).max() <= TOL_THZ, name


def test_classic_folder_errors_name_the_option_and_the_counts(tmp_path):
    shutil.copy(DATA / "MgO" / "POSCAR-unitcell", tmp_path)
    shutil.copy(DATA / "MgO" / "FORCE_SETS", tmp_path)
    with pytest.raises(InputError, match="needs --supercell"):
        phonons_from_force_sets(tmp_path)
    # 3x3x3 of the 8-atom cell is 216 atoms; the force set is of the 2x2x2 (64)
    with pytest.raises(InputError, match=r"FORCE_SETS: forces on 64 atoms.*has 216 atoms"):
        phonons_from_force_sets(tmp_path, supercell=[3, 3, 3])
    # type 2: 2 supercells x 64 lines cannot be cut into supercells of 1x1x3 cells (24 atoms)
    from phonopy.file_IO import write_FORCE_SETS
    from phonopy.structure.dataset import get_displacements_and_forces

    orig = _load(DATA / "MgO" / "phonopy_disp.yaml",
                 force_sets_filename=DATA / "MgO" / "FORCE_SETS")
    disps, forces = get_displacements_and_forces(orig.dataset)
    write_FORCE_SETS({"displacements": disps, "forces": forces}, tmp_path / "FORCE_SETS")
    with pytest.raises(InputError, match=r"128 lines .* supercells of 24 atoms"):
        phonons_from_force_sets(tmp_path, supercell=[1, 1, 3])
    with pytest.raises(InputError, match="--supercell 3 3 3: .*phonopy_disp.yaml has"):
        phonons_from_force_sets(DATA / "MgO", supercell=[3, 3, 3])
    with pytest.raises(InputError, match="--calculator: unknown calculator 'nonsense'"):
        phonons_from_force_sets(DATA / "MgO", calculator="nonsense")


def test_default_solver_failing_falls_back_to_traditional(monkeypatch):
    """phonopy's default (symfc projector) fails on some force sets — phonopy's own ABACUS Al
    example — so a failure there must give the traditional solver's force constants and a
    one-line warning, not an error. The failure is forced here, so the test does not depend
    on whether symfc still fails on that example."""
    from phonopy import Phonopy

    real = Phonopy.symmetrize_force_constants

    def failing(self, *args, use_symfc_projector=False, **kwargs):
        if use_symfc_projector:
            raise IndexError("shape mismatch:\nindexing arrays could not be broadcast")
        return real(self, *args, use_symfc_projector=use_symfc_projector, **kwargs)

    monkeypatch.setattr(Phonopy, "symmetrize_force_constants", failing)
    with pytest.warns(UserWarning, match=r"default force-constant solver failed \(shape "
                                         r"mismatch: indexing.*--fc-calculator traditional"
                      ) as rec:
        ours = phonons_from_force_sets(DATA / "MgO")
    assert all("\n" not in str(w.message) for w in rec)
    assert ours.provenance["force_constants_from"] == "traditional"
    ref = _load(DATA / "MgO" / "phonopy_disp.yaml",
                force_sets_filename=DATA / "MgO" / "FORCE_SETS", fc_calculator="traditional")
    assert np.abs(_freqs(ours.members[0]) - _freqs(ref)).max() <= TOL_THZ
    # asked for by name, a failing solver is an error, not a fallback
    def broken(self, *args, **kwargs):
        raise ValueError("symfc broke")

    monkeypatch.setattr(Phonopy, "produce_force_constants", broken)
    with pytest.raises(InputError, match=r"could not make force constants with symfc \(symfc"):
        phonons_from_force_sets(DATA / "MgO", fc_calculator="symfc")


def _qe_twins(tmp: Path):
    """NaCl (with Born charges) written twice from the same numbers: as Quantum ESPRESSO would
    (calculator qe: bohr, Ry/bohr) and in VASP units (Å, eV/Å), each as a phonopy_params.yaml
    written by phonopy. The NAC factor is left to each calculator's default (2 Ry·bohr for qe,
    14.4 eV·Å for VASP): phonopy writes a given factor with 6 decimals only."""
    from phonopy import Phonopy
    from phonopy.physical_units import get_calculator_physical_units, get_physical_units

    src = _load(DATA / "NaCl" / "phonopy_disp.yaml",
                force_sets_filename=DATA / "NaCl" / "FORCE_SETS",
                born_filename=DATA / "NaCl" / "BORN")
    qe = get_calculator_physical_units("qe")
    bohr = get_physical_units().Bohr
    assert qe.distance_to_A == bohr and qe.length_unit == "au"
    # the numbers in bohr and Ry/bohr; the Å twin is converted back from these
    cell_bohr = np.array(src.unitcell.cell) / bohr
    sets_bohr = [(a["number"], np.asarray(a["displacement"]) / bohr,
                  np.asarray(a["forces"]) / qe.force_to_eVperA)
                 for a in src.dataset["first_atoms"]]
    out = {}
    for name, length, force, calc in (("bohr", 1.0, 1.0, "qe"),
                                      ("angstrom", bohr, qe.force_to_eVperA, None)):
        cell = src.unitcell.copy()
        cell.cell = cell_bohr * length
        ph = Phonopy(cell, supercell_matrix=src.supercell_matrix,
                     primitive_matrix=src.primitive_matrix, calculator=calc)
        ph.dataset = {"natom": src.dataset["natom"],
                      "first_atoms": [{"number": n, "displacement": u * length,
                                       "forces": f * force} for n, u, f in sets_bohr]}
        ph.nac_params = {"born": src.nac_params["born"],
                         "dielectric": src.nac_params["dielectric"]}
        out[name] = tmp / name
        out[name].mkdir()
        ph.save(out[name] / "phonopy_params.yaml")
    return src, out


def test_bohr_force_set_equals_the_same_in_angstrom(tmp_path):
    """A force set in bohr units (calculator qe) and the same numbers in Å give the same cell
    in Å, the same force constants in eV/Å², the same frequencies, and phonopy's own
    frequencies for the bohr files; the Born-charge term (NAC factor in Ry·bohr for qe) too."""
    from phonopy.physical_units import get_calculator_physical_units, get_physical_units

    src, dirs = _qe_twins(tmp_path)
    bohr_files = _load(dirs["bohr"] / "phonopy_params.yaml")
    assert bohr_files.calculator == "qe"
    np.testing.assert_allclose(bohr_files.unitcell.cell[0, 0], 10.753, atol=1e-3)
    ours_bohr = phonons_from_force_sets(dirs["bohr"]).members[0]
    ours_a = phonons_from_force_sets(dirs["angstrom"]).members[0]
    # the cell: phonopy's bohr numbers times phonopy's Bohr, equal to the Å twin's
    np.testing.assert_allclose(ours_bohr.unitcell.cell,
                               np.array(bohr_files.unitcell.cell) * get_physical_units().Bohr,
                               atol=1e-12)
    np.testing.assert_allclose(ours_bohr.unitcell.cell, ours_a.unitcell.cell, atol=1e-12)
    np.testing.assert_allclose(ours_bohr.unitcell.cell, src.unitcell.cell, atol=1e-9)
    assert ours_bohr.calculator in (None, "vasp") and ours_bohr.nac_params is not None
    assert ours_bohr.nac_params["factor"] == pytest.approx(
        get_calculator_physical_units(None).nac_factor, rel=1e-12)
    fc_a = ours_a.force_constants
    assert np.abs(ours_bohr.force_constants - fc_a).max() <= 1e-10 * np.abs(fc_a).max()
    f = _freqs(ours_bohr)
    assert np.abs(f - _freqs(ours_a)).max() <= TOL_THZ
    assert np.abs(f - _freqs(bohr_files)).max() <= TOL_THZ


def test_phonopy_unit_table_is_consistent_with_our_conversion():
    """For every calculator phonopy knows, force constants × force/length (to eV/Å²) keep its
    own frequency factor (THz = factor √(fc/m)) and NAC factor × force × length² = VASP's."""
    from phonopy.interface.calculator import calculator_info
    from phonopy.physical_units import get_calculator_physical_units

    vasp = get_calculator_physical_units(None)
    for name in calculator_info:
        u = get_calculator_physical_units(name)
        ratio = u.force_to_eVperA / u.distance_to_A
        assert u.factor == pytest.approx(vasp.factor * np.sqrt(ratio), rel=1e-12), name
        assert u.nac_factor * u.force_to_eVperA * u.distance_to_A ** 2 == pytest.approx(
            vasp.nac_factor, rel=1e-12), name


def test_abacus_example_in_angstrom_with_phonopys_frequencies():
    """phonopy's ABACUS aluminium (lengths in bohr): fcc Al with a = 7.642687 bohr in the files,
    i.e. 4.0443 Å (measured: 4.05 Å); phonopy's frequencies for the same files and solver."""
    from phonopy.physical_units import get_physical_units

    pset = phonons_from_force_sets(AL, fc_calculator="traditional")
    ph = pset.members[0]
    a = 7.642687397478 * get_physical_units().Bohr
    np.testing.assert_allclose(ph.unitcell.cell, np.eye(3) * a, atol=1e-9)
    assert 4.0 < a < 4.1
    assert len(ph.primitive) == 1 and ph.primitive.volume == pytest.approx(a ** 3 / 4)
    assert pset.provenance["converted_to_angstrom_eV"]["length"] == "au"
    ref = _load(AL / "phonopy_disp.yaml", force_sets_filename=AL / "FORCE_SETS",
                fc_calculator="traditional")
    assert np.abs(_freqs(ph) - _freqs(ref)).max() <= TOL_THZ
    # the same folder as a bare ABACUS unit cell + FORCE_SETS (STRU's Al mass has 7 decimals,
    # the yaml's 6, so the peer here is phonopy on STRU)
    classic = phonons_from_force_sets(AL, unitcell=AL / "STRU", calculator="abacus",
                                      supercell=[2, 2, 2], fc_calculator="traditional")
    np.testing.assert_allclose(classic.members[0].unitcell.cell, ph.unitcell.cell, atol=1e-9)
    ref = _load(unitcell_filename=AL / "STRU", calculator="abacus", supercell_matrix=[2, 2, 2],
                force_sets_filename=AL / "FORCE_SETS", fc_calculator="traditional")
    assert np.abs(_freqs(classic.members[0]) - _freqs(ref)).max() <= TOL_THZ


@pytest.fixture(scope="module")
def al_euphonic(tmp_path_factory):
    """The ABACUS example as Euphonic reads it (phonopy.yaml + FORCE_CONSTANTS, in bohr and
    eV/(Å·bohr); Euphonic cannot read force sets, so phonopy's traditional solver makes the
    force constants from the example's FORCE_SETS), and the same folder read by us."""
    from euphonic import ForceConstants
    from phonopy.file_IO import write_FORCE_CONSTANTS

    d = tmp_path_factory.mktemp("al_fc")
    shutil.copy(AL / "phonopy.yaml", d)
    native = _load(AL / "phonopy_disp.yaml", force_sets_filename=AL / "FORCE_SETS",
                   fc_calculator="traditional", is_compact_fc=False)
    write_FORCE_CONSTANTS(native.force_constants, d / "FORCE_CONSTANTS")
    eu = ForceConstants.from_phonopy(path=str(d), summary_name="phonopy.yaml",
                                     fc_name="FORCE_CONSTANTS")
    return eu, phonons_from_force_sets(d).members[0]


def test_abacus_example_agrees_with_euphonic(al_euphonic):
    eu, ours = al_euphonic
    # Euphonic's bohr (CODATA via pint) and phonopy's differ by 7e-9 relative
    np.testing.assert_allclose(eu.crystal.cell_vectors.to("angstrom").magnitude,
                               ours.primitive.cell, atol=1e-6)
    q = np.array(Q)
    f_eu = eu.calculate_qpoint_phonon_modes(q).frequencies.to("THz").magnitude
    f = _freqs(ours, q)
    # as in test_phonons: Euphonic's and phonopy's unit constants differ at ~1e-7
    f2, f2_eu = np.sign(f) * f ** 2, np.sign(f_eu) * f_eu ** 2
    assert np.abs(f2 - f2_eu).max() <= 1e-6 * np.abs(f2_eu).max()


def test_abacus_powder_coherent_sqe_agrees_with_euphonic(al_euphonic):
    """Coherent one-phonon powder S(Q,E) of Al at |Q| = 2.5–6 1/Å from our INS code against
    Euphonic's (both: directions on a golden-angle sphere, Debye–Waller on an 8x8x8 mesh).

    - the mean energy ⟨E⟩(|Q|) = ∫E S dE / ∫S dE of each shell further than 0.15 1/Å from a
      Bragg radius (where single soft directions dominate ∫S dE) within 5 % of Euphonic's. This
      is what a cell left in bohr breaks: Q·r then runs 1.89 times too fast and ⟨E⟩ moves by up
      to 25 % (measured while writing this test; ours is within ~1 %);
    - the peak energy of S summed over the shells (1 meV FWHM Gaussian on both) within 0.5 meV
      (two bins) of Euphonic's and inside 17.5–22 meV, where Euphonic's TA/LA peaks were
      reported on the tracker (aluminium measured: TA 18.4 meV). This sum is dominated by the
      density of states and hardly notices the bohr bug (17.6 meV with it).
    """
    import euphonic
    from euphonic.powder import sample_sphere_structure_factor

    from mlff_ins.ins.modes import ModeSet, coherent_powder_sqe
    from mlff_ins.neutron.scattering_lengths import b_coh_fm

    eu, ours = al_euphonic
    temperature_K, n_dir = 5.0, 300
    q = np.arange(2.5, 6.0 + 1e-9, 0.1)
    step = 0.25
    edges = np.arange(0.0, 50.0 + step / 2, step)
    centres = 0.5 * (edges[1:] + edges[:-1])
    modes = ModeSet(ours, [8, 8, 8], temperature_K)
    s_ours = coherent_powder_sqe(modes, q, centres, [b_coh_fm("Al")], n_dir, seed=0)

    ureg = euphonic.ureg
    dw = eu.calculate_qpoint_phonon_modes(
        euphonic.util.mp_grid([8, 8, 8])).calculate_debye_waller(temperature_K * ureg("K"))
    s_eu = np.array([sample_sphere_structure_factor(
        eu, qa * ureg("1/angstrom"), dw=dw, temperature=temperature_K * ureg("K"), npts=n_dir,
        energy_bins=edges * ureg("meV")).y_data.magnitude for qa in q])

    recip = 2 * np.pi * np.linalg.inv(ours.primitive.cell).T          # rows: b_i, 1/Å
    hkl = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 3), -1).reshape(-1, 3)
    bragg = np.linalg.norm(hkl @ recip, axis=1)
    away = np.abs(q[:, None] - bragg[None, :]).min(axis=1) > 0.15
    assert away.sum() >= 15

    def mean_energy(s):
        return (s * centres).sum(axis=1) / s.sum(axis=1)

    rel = mean_energy(s_ours[away]) / mean_energy(s_eu[away]) - 1
    assert np.abs(rel).max() <= 0.05, rel

    x = np.arange(-8, 9) * step
    kernel = np.exp(-4 * np.log(2) * x ** 2 / 1.0 ** 2)

    def peak(s):
        return centres[np.argmax(np.convolve(s.sum(axis=0), kernel, mode="same"))]

    e_ours, e_eu = peak(s_ours), peak(s_eu)
    assert abs(e_ours - e_eu) <= 0.5, (e_ours, e_eu)
    assert 17.5 <= e_ours <= 22.0, e_ours


def test_cli_classic_folder_and_bohr_folder(tmp_path, capsys):
    import h5py
    import phonopy

    from mlff_ins.phonons.io import params_path

    d = tmp_path / "mgo"
    d.mkdir()
    shutil.copy(DATA / "MgO" / "POSCAR-unitcell", d)
    shutil.copy(DATA / "MgO" / "FORCE_SETS", d)
    out = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(d), "--supercell", "2", "2", "2",
                 "--mesh", "4", "4", "4", "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert "read POSCAR-unitcell + FORCE_SETS (vasp)" in said
    ref = _load(DATA / "MgO" / "phonopy_disp.yaml",
                force_sets_filename=DATA / "MgO" / "FORCE_SETS")
    ref.run_mesh([4, 4, 4], is_mesh_symmetry=False, is_gamma_center=True)
    with h5py.File(out) as f:
        ours = f["mesh/frequency_THz"][0]
    f2, f2_ref = np.sign(ours) * ours ** 2, np.sign(ref.mesh.frequencies) * ref.mesh.frequencies ** 2
    assert np.abs(f2 - f2_ref).max() <= 1e-8 * np.abs(f2_ref).max()

    # no --supercell: one line naming the option, nothing written
    bad = tmp_path / "bad.h5"
    assert main(["phonons", "--force-sets", str(d), "-o", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--supercell" in err and "\n" not in err and not bad.exists()
    assert main(["phonons", "--force-sets", str(d), "--supercell", "3", "3", "3",
                 "-o", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "FORCE_SETS" in err and "64" in err and "216" in err and "\n" not in err

    # the ABACUS folder: the file we write is in Å and eV/Å², and phonopy agrees with it
    out = tmp_path / "al.h5"
    assert main(["phonons", "--force-sets", str(AL), "--fc-calculator", "traditional",
                 "--mesh", "4", "4", "4", "-o", str(out)]) == 0
    assert "lengths in au" in capsys.readouterr().out
    with h5py.File(out) as f:
        lattice = f["structure/lattice"][()]
    assert lattice[0, 0] == pytest.approx(4.0443, abs=1e-4)
    again = phonopy.load(params_path(out))
    assert again.calculator in (None, "vasp")
    ref = _load(AL / "phonopy_disp.yaml", force_sets_filename=AL / "FORCE_SETS",
                fc_calculator="traditional")
    assert np.abs(_freqs(again) - _freqs(ref)).max() <= TOL_THZ


def test_a_phonopy_file_given_to_ins_says_how_to_make_a_phonons_file(tmp_path, capsys):
    """`mlff-ins ins phonopy_disp.yaml` (or FORCE_SETS): one line naming the file and the
    `phonons --force-sets` command that makes what `ins` reads; another non-HDF5 file stays
    'not an HDF5 file'. Nothing is written."""
    for name in ("phonopy_disp.yaml", "FORCE_SETS"):
        assert main(["ins", str(DATA / "MgO" / name), "-o", str(tmp_path / "s.h5")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(DATA / "MgO" / name) in err
        assert f"mlff-ins phonons --force-sets {DATA / 'MgO'} -o phonons.h5" in err
    assert main(["ins", str(DATA / "README.md"), "-o", str(tmp_path / "s.h5")]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
