"""Phonons: the batched path equals plain phonopy + ASE, DFT force sets give phonopy's own
frequencies, the files round-trip and the CLI reports what a user needs."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from mlff_ins.cli import main
from mlff_ins.model.calculator import load_calculator
from mlff_ins.phonons.finite_displacement import (displaced_supercells, make_phonopy,
                                                  phonons_from_force_sets, phonons_from_model,
                                                  supercell_matrix)
from mlff_ins.phonons.io import params_path, read_phonons
from mlff_ins.phonons.properties import compute_properties

DATA = Path(__file__).parent / "data" / "phonopy"
warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")


def _assert_same_modes(f, f_ref, rel=1e-8):
    """Equal eigenvalues (signed f²) to ``rel`` of the largest: the acoustic frequencies at Γ are
    square roots of round-off (~1e-14) and differ at 1e-7 THz between summation orders."""
    f2, f2_ref = (np.sign(x) * np.asarray(x) ** 2 for x in (f, f_ref))
    assert np.abs(f2 - f2_ref).max() <= rel * np.abs(f2_ref).max()


def _plain_phonopy(atoms, calc, supercell, plusminus):
    """What a user does without mlff-ins: phonopy displacements, one ASE call per supercell."""
    ph = make_phonopy(atoms, supercell, plusminus=plusminus)
    forces = []
    for cell in displaced_supercells(ph):
        cell.calc = calc
        forces.append(cell.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    return ph


@pytest.mark.parametrize("case", ["si", "p1"])
def test_batched_force_constants_equal_plain_phonopy(tiny_bundle, case):
    calc = load_calculator(tiny_bundle)
    if case == "si":
        atoms, supercell, pm = bulk("Si", "diamond", 5.43), [2, 2, 2], True
    else:  # no symmetry at all: every atom displaced along x, y, z, both ways
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        atoms.rattle(0.05, seed=3)
        supercell, pm = [1, 1, 1], "auto"
    ours = phonons_from_model(atoms, calc, supercell, plusminus=pm, max_batch_atoms=200)
    plain = _plain_phonopy(atoms, calc, supercell, pm)
    if case == "p1":
        assert ours.provenance["n_displacements"] == 6 * len(atoms)
    # ours are compact (rows of the primitive atoms, as phonopy-load makes them); plain phonopy's
    # full force constants hold the same rows
    fc, ref = ours.mean.force_constants, plain.force_constants[plain.primitive.p2s_map]
    assert np.abs(fc - ref).max() <= 1e-8 * np.abs(ref).max()
    q = [[0, 0, 0], [0.5, 0, 0.5], [0.25, 0.1, 0.3]]
    ours.mean.run_qpoints(q)
    plain.run_qpoints(q)
    _assert_same_modes(ours.mean.qpoints.frequencies, plain.qpoints.frequencies)
    # members differ (bootstrap ensemble), and their mean force constants are the mean's
    assert len(ours.members) == 2
    assert not np.allclose(ours.members[0].force_constants, ours.members[1].force_constants)


@pytest.mark.parametrize("material", ["MgO", "NaCl", "Al2O3"])
def test_force_sets_frequencies_equal_phonopy(material, tmp_path):
    import phonopy

    out = tmp_path / f"{material}.h5"
    assert main(["phonons", "--force-sets", str(DATA / material), "--mesh", "4", "4", "4",
                 "-o", str(out)]) == 0
    # NaCl's BORN file and the Born charges inside Al2O3's phonopy_disp.yaml switch the
    # non-analytical correction on, in ours as in phonopy.load (MgO has none)
    born = DATA / material / "BORN"
    ref = phonopy.load(DATA / material / "phonopy_disp.yaml",
                       force_sets_filename=DATA / material / "FORCE_SETS",
                       born_filename=born if born.exists() else None)
    assert (ref.nac_params is not None) == (material != "MgO")
    ref.run_mesh([4, 4, 4], is_mesh_symmetry=False, is_gamma_center=True)
    import h5py

    with h5py.File(out) as f:
        ours = f["mesh/frequency_THz"][0]
        qpts = f["mesh/qpoints"][()]
        assert f["dos/total_mean"].shape == f["dos/frequency_THz"].shape
    np.testing.assert_allclose(qpts, ref.mesh.qpoints, atol=1e-12)
    _assert_same_modes(ours, ref.mesh.frequencies)
    # the phonopy_params.yaml we write gives the same frequencies to phonopy itself
    again = phonopy.load(params_path(out))
    again.run_mesh([4, 4, 4], is_mesh_symmetry=False, is_gamma_center=True)
    _assert_same_modes(again.mesh.frequencies, ref.mesh.frequencies)
    # and so do the force constants rebuilt from our HDF5
    back = read_phonons(out).members[0]
    back.run_mesh([4, 4, 4], is_mesh_symmetry=False, is_gamma_center=True)
    _assert_same_modes(back.mesh.frequencies, ref.mesh.frequencies)


def test_dos_area_and_partials():
    pset = phonons_from_force_sets(DATA / "MgO")
    props = compute_properties(pset.members, [8, 8, 8])
    df = props.dos_frequency_THz[1] - props.dos_frequency_THz[0]
    n_modes = props.frequencies_THz.shape[-1]
    assert props.dos_total[0].sum() * df == pytest.approx(n_modes, rel=1e-3)
    np.testing.assert_allclose(sum(v[0] for v in props.dos_partial.values()), props.dos_total[0],
                               rtol=1e-10, atol=1e-12)
    assert not props.imaginary          # a stable crystal: nothing below -0.05 THz


def test_phonon_files_are_replaced_as_a_pair(tmp_path, monkeypatch):
    """A failure while writing the HDF5 leaves the old .h5 and the old _phonopy_params.yaml
    both as they were: never a new force-constant yaml beside an old .h5, or the reverse."""
    import mlff_ins.phonons.io as pio

    pset = phonons_from_force_sets(DATA / "MgO")
    props = compute_properties(pset.members, [2, 2, 2], band_points=5, t_max=None)
    out = tmp_path / "mgo.h5"
    for path in (out, params_path(out)):
        path.write_text("the user's earlier file")

    def broken(f, *args):
        f.attrs["format"] = "half"
        raise OSError("disk full")

    monkeypatch.setattr(pio, "_write_h5", broken)
    with pytest.raises(OSError, match="disk full"):
        pio.write_phonons(out, pset, props)
    for path in (out, params_path(out)):
        assert path.read_text() == "the user's earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mgo.h5", "mgo_phonopy_params.yaml"]
    monkeypatch.undo()
    pio.write_phonons(out, pset, props)
    assert len(read_phonons(out).members) == 1 and "force_constants" in \
        params_path(out).read_text()


def test_imaginary_modes_are_reported(tmp_path, capsys):
    """Force constants of a dynamically unstable cell (negative on-site spring) are reported."""
    import phonopy

    ph = phonopy.load(DATA / "NaCl" / "phonopy_disp.yaml",
                      force_sets_filename=DATA / "NaCl" / "FORCE_SETS", is_nac=False)
    ph.force_constants = -ph.force_constants
    d = tmp_path / "unstable"
    d.mkdir()
    ph.save(d / "phonopy_params.yaml", settings={"force_constants": True})
    out = tmp_path / "unstable.h5"
    assert main(["phonons", "--force-sets", str(d), "--mesh", "4", "4", "4", "--no-symmetrize",
                 "-o", str(out), "--plot"]) == 0
    err = capsys.readouterr().err
    assert "imaginary modes at" in err and "THz at q = (" in err
    import h5py

    with h5py.File(out) as f:
        assert len(f["imaginary/frequency_THz"]) > 0
        assert (f["imaginary/frequency_THz"][()] < 0).all()
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_cli_phonons_with_model_and_errors(tiny_bundle, tmp_path, capsys):
    from ase.io import write

    cif = tmp_path / "si.cif"
    write(cif, bulk("Si", "diamond", 5.43))
    out = tmp_path / "si_phonons.h5"
    assert main(["phonons", str(cif), "--model", str(tiny_bundle), "--supercell", "2", "2", "2",
                 "--mesh", "6", "6", "6", "-o", str(out), "--plot"]) == 0
    text = capsys.readouterr().out
    assert "2 member(s)" in text and "displaced supercells of 16 atoms" in text
    assert params_path(out).exists() and out.with_suffix(".png").exists()
    import h5py

    with h5py.File(out) as f:
        assert f["force_constants"].shape[0] == 2
        assert f["band/frequency_THz"].shape[0] == 2
        assert (f["dos/total_std"][()] > 0).any()
    # bad input: one line naming the option, nothing written
    bad = tmp_path / "bad.h5"
    assert main(["phonons", str(cif), "--model", str(tiny_bundle), "--supercell", "2", "2",
                 "-o", str(bad)]) == 2
    assert "--supercell takes 1, 3 or 9 integers" in capsys.readouterr().err
    assert main(["phonons", "--force-sets", str(tmp_path), "-o", str(bad)]) == 2
    assert "needs phonopy_params.yaml" in capsys.readouterr().err
    assert main(["phonons", str(cif), "--model", str(tiny_bundle), "--mesh", "2", "x",
                 "-o", str(bad)]) == 2
    assert "--mesh" in capsys.readouterr().err
    assert not bad.exists()


def test_phonopy_params_yaml_loads_in_euphonic(tmp_path, capsys):
    """Euphonic users continue from our phonopy_params.yaml: same frequencies as phonopy."""
    import phonopy
    from euphonic import ForceConstants

    q = np.array([[0.1, 0.2, 0.3], [0.5, 0.0, 0.5], [0.25, 0.25, 0.0], [0.02, 0.0, 0.0]])
    for nac in (False, True):
        out = tmp_path / f"nacl_{nac}.h5"
        assert main(["phonons", "--force-sets", str(DATA / "NaCl"), "--mesh", "4", "4", "4",
                     "-o", str(out)] + ([] if nac else ["--no-nac"])) == 0
        said = capsys.readouterr().out
        assert ("non-analytical correction: on" in said) == nac
        assert ("non-analytical correction: off (--no-nac)" in said) == (not nac)
        fc = ForceConstants.from_phonopy(path=str(tmp_path), summary_name=params_path(out).name)
        eu = fc.calculate_qpoint_phonon_modes(q).frequencies.to("THz").magnitude
        ref = phonopy.load(params_path(out), is_nac=nac)
        ref.run_qpoints(q)
        # Euphonic and phonopy convert eV/Å²/amu to THz with constants that differ at ~1e-7;
        # with the Born charges they also sum the dipole term differently (~2e-5 relative)
        _assert_same_modes(eu, ref.qpoints.frequencies, rel=1e-4 if nac else 1e-6)
        # near Γ the LO mode of NaCl sits ~2.7 THz higher with the correction than without
        assert (eu[3, -1] > 7.0) == nac


def test_relax_finds_the_lattice_constant_and_stops_a_collapse():
    """EMT Cu relaxes to EMT's own fcc minimum (found by a scan of E(a)); a Lennard-Jones
    potential whose minimum lies at half the Cu spacing collapses the cell, and ``relax``
    stops it with a message instead of following it (a collapsed cell blows up memory)."""
    from ase.calculators.emt import EMT
    from ase.calculators.lj import LennardJones
    from mlff_ins.errors import InputError
    from mlff_ins.phonons.finite_displacement import relax

    scan = np.linspace(3.55, 3.65, 201)
    energies = []
    for a in scan:
        cu = bulk("Cu", "fcc", a=a, cubic=True)
        cu.calc = EMT()
        energies.append(cu.get_potential_energy())
    a_min = scan[int(np.argmin(energies))]
    out = relax(bulk("Cu", "fcc", a=3.50, cubic=True), EMT(), fmax=1e-4)
    assert out.cell.lengths() == pytest.approx([a_min] * 3, abs=1e-3)   # scan step 5e-4 Å
    assert out.calc is None
    with pytest.raises(InputError, match="volume ran away"):
        relax(bulk("Cu", "fcc", a=3.61, cubic=True), LennardJones(sigma=1.2, rc=6.0), fmax=1e-4)


def test_bands_with_nac_meet_gamma_at_the_lo_limit():
    """NaCl with Born charges: on the band path the LO branch at Γ is its long-wavelength limit
    (continuous with the next q-point), not the TO frequency of the bare force constants."""
    props = compute_properties(phonons_from_force_sets(DATA / "NaCl").members, [4, 4, 4])
    bare = compute_properties(phonons_from_force_sets(DATA / "NaCl", nac=False).members,
                              [4, 4, 4])
    f, f0 = props.band_frequencies_THz[0], bare.band_frequencies_THz[0]
    gamma = np.flatnonzero(np.abs(props.band_qpoints).max(axis=1) < 1e-12)
    assert len(gamma) >= 1
    for i in gamma:
        j = i + 1 if i + 1 < len(f) else i - 1
        assert f[i, -1] == pytest.approx(f[j, -1], rel=0.01)       # LO limit, ~7.3 THz
        assert f[i, -1] > f0[i, -1] + 2.0                            # bare: LO = TO at Γ


def test_si_dft_references_of_the_phonons_benchmark():
    """The two CP2K force sets the phonons benchmark compares with: phonopy's published Si-CP2K
    one, and ours (the labelling settings of the embedded data, on the same displaced
    supercell). Ours must be that supercell, with forces that sum to ~0 and a perfect cell that
    feels < 1 meV/Å. The two DFTs differ in basis, cutoff and SCF tolerance; the optical and
    longitudinal branches, set by the large near-neighbour forces, must agree within 1 %. The
    transverse acoustic ones hang on sub-meV/Å forces and are not compared here (the phonons
    benchmark prints them: X TA 4.05 vs 4.25 THz)."""
    import ase.io

    from mlff_ins.phonons.si_reference import LABELLED_CHECK, dft_reference, labelled_dft

    published, ph, _ = dft_reference()
    ours, forces = labelled_dft(ph)
    assert np.abs(forces.sum(axis=0)).max() < 1e-3                        # eV/Å
    assert np.abs(ase.io.read(LABELLED_CHECK, index=1).get_forces()).max() < 1e-3
    for point, branches in published.items():
        for branch, f in branches.items():
            if branch != "TA":
                assert ours[point][branch] == pytest.approx(f, rel=0.01), (point, branch)


def test_si_finite_displacement_training_frames_follow_the_reference_lattice_trend():
    """The embedded data's `diamond_displaced` frames (one atom of the perfect 64-atom crystal
    moved 0.02 Å along x, lattice strained by -1 to +1 %) turned into X TA by phonopy: X TA of Si
    rises with the lattice constant (negative Grüneisen parameter), so it must increase
    monotonically through the unstrained check frame of the phonons benchmark, which must sit
    within 2 % of the mean of its ±0.5 % neighbours (a frame with the wrong strain would be off
    by ~5 %). Each [100] frame must be phonopy's own displaced supercell for its lattice."""
    import ase.io
    from ase.build import bulk

    from mlff_ins.phonons.si_reference import (_frequencies_from_forces, dft_reference,
                                               labelled_dft)
    from mlff_ins.demo import SI_DATA
    from mlff_ins.phonons.finite_displacement import make_phonopy

    x_ta = {0.0: labelled_dft(dft_reference()[1])[0]["X"]["TA"]}
    for frame in ase.io.read(SI_DATA, ":"):
        if frame.info.get("config_type") != "diamond_displaced":
            continue
        eps = frame.info["lattice_strain"]
        unit = bulk("Si", "diamond", a=5.466 * (1 + eps), cubic=True)   # make_si_frames.A0_PBE
        perfect = unit * (2, 2, 2)
        move = frame.positions[0] - perfect.positions[0]
        assert np.linalg.norm(move) == pytest.approx(0.02, abs=1e-6)      # extxyz: 8 decimals
        assert np.abs(np.delete(frame.positions - perfect.positions, 0, axis=0)).max() < 1e-6
        assert np.abs(frame.get_forces().sum(axis=0)).max() < 1e-3                # eV/Å
        if abs(move[1]) > 1e-6:                  # the [111] frames: training data only
            continue
        ph = make_phonopy(unit, [2, 2, 2], distance=0.02)
        displaced = ph.supercells_with_displacements
        assert len(displaced) == 1
        frac = frame.get_scaled_positions()
        order = [int(np.argmin(np.linalg.norm((frac - p + 0.5) % 1.0 - 0.5, axis=1)))
                 for p in displaced[0].scaled_positions]
        assert sorted(order) == list(range(64))
        assert np.abs(frame.positions[order] - displaced[0].positions).max() < 1e-6
        x_ta[eps] = _frequencies_from_forces(ph, frame.get_forces()[order])["X"]["TA"]
    strains = sorted(x_ta)
    assert strains == pytest.approx([-0.01, -0.005, 0.0, 0.005, 0.01])
    values = [x_ta[s] for s in strains]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert x_ta[0.0] == pytest.approx((values[1] + values[3]) / 2, rel=0.02)


def test_the_phonons_benchmark_compares_a_model_with_the_dft_it_learned(tmp_path):
    """A model trained on the k-point data set (si_cp2k_pbe_k222.xyz) is compared with the phonon
    check labelled the same way, any other with the Gamma-only one; the k-point check, like the
    Gamma-only one, is the reference's displaced supercell with forces summing to ~0 and a
    perfect cell that feels < 1 meV/Å (equilibrium by symmetry, whatever the k-points)."""
    import json

    import ase.io

    from mlff_ins.casestudy import REFERENCE_MODEL
    from mlff_ins.errors import InputError
    from mlff_ins.phonons.si_reference import (LABELLED_CHECK, LABELLED_CHECK_K222,
                                               dft_reference, labelled_check_for, labelled_dft)

    assert labelled_check_for("sevennet-0") == LABELLED_CHECK      # a universal model
    # the shipped bundle by name (the case study's script passes --model si-reference) is its
    # folder, trained on the k-point set
    assert labelled_check_for("si-reference") == labelled_check_for(REFERENCE_MODEL) \
        == LABELLED_CHECK_K222
    meta = json.loads((REFERENCE_MODEL / "bundle.json").read_text())
    cases = [({"files": ["mlff_ins/resources/si/si_cp2k_pbe_k222.xyz"]}, LABELLED_CHECK_K222),
             ({"file": "/data/si_cp2k_pbe_k222.xyz"}, LABELLED_CHECK_K222),
             ({"files": ["mlff_ins/resources/si/si_cp2k_pbe.xyz",
                         "mlff_ins/resources/si/si_cp2k_pbe_al1.xyz"]}, LABELLED_CHECK),
             ({"files": ["runs_k222/si_cp2k_pbe.xyz"]}, LABELLED_CHECK)]
    for k, (data, expected) in enumerate(cases):
        bundle = tmp_path / f"bundle{k}"
        for member in meta["members"]:        # the check needs the files, not their contents
            (bundle / member).parent.mkdir(parents=True, exist_ok=True)
            (bundle / member).touch()
        (bundle / "bundle.json").write_text(json.dumps({**meta, "training_data": data}))
        assert labelled_check_for(bundle) == expected, data
    _, ph, _ = dft_reference()
    with pytest.raises(InputError, match="not labelled yet"):
        labelled_dft(ph, tmp_path / "si_cp2k_pbe_k222_phonon_check.xyz")
    _, forces = labelled_dft(ph, LABELLED_CHECK_K222)       # committed, labelled 2026-12-02
    assert np.abs(forces.sum(axis=0)).max() < 1e-3                        # eV/Å
    assert np.abs(ase.io.read(LABELLED_CHECK_K222, index=1).get_forces()).max() < 1e-3


def test_member_spread_of_the_phonons_benchmark(tiny_bundle):
    """The benchmark's ensemble spread at the CP2K geometry is the standard deviation of the
    frequencies each member gives alone (1e-9 THz); a one-member model has none."""
    from mlff_ins.phonons.si_reference import model_at_reference
    from mlff_ins.model.calculator import BundleCalculator, read_bundle

    members = [tiny_bundle / m for m in read_bundle(tiny_bundle)["members"]]
    assert len(members) == 2
    mean, spread = model_at_reference(load_calculator(tiny_bundle))
    alone = [model_at_reference(BundleCalculator([m]))[0] for m in members]
    assert model_at_reference(BundleCalculator([members[0]]))[1] == {}
    for point, branches in mean.items():
        for branch in branches:
            each = [f[point][branch] for f in alone]
            assert spread[point][branch] == pytest.approx(np.std(each), abs=1e-9)


def test_supercell_option_forms():
    """--supercell N is N N N; 3 integers the diagonal; 9 a row-wise matrix; a singular
    matrix is refused."""
    from mlff_ins.errors import InputError

    np.testing.assert_array_equal(supercell_matrix([3]), np.diag([3, 3, 3]))
    np.testing.assert_array_equal(supercell_matrix([1, 2, 3]), np.diag([1, 2, 3]))
    fcc_to_sc = [-1, 1, 1, 1, -1, 1, 1, 1, -1]
    np.testing.assert_array_equal(supercell_matrix(fcc_to_sc), np.reshape(fcc_to_sc, (3, 3)))
    with pytest.raises(InputError, match="singular"):
        supercell_matrix([1, 0, 0, 0, 1, 0, 0, 0, 0])


def test_a_mode_soft_in_one_member_is_not_averaged_away():
    """Two members: NaCl's force constants and the same times -0.1 (every mode imaginary, at
    about a third of the stable frequencies). The mean of their frequencies is positive
    everywhere, so only a per-member check finds the soft one; it is reported at every q-point
    (Γ's optical modes too), 1 of 2 members, with that member's lowest frequency."""
    import copy

    import phonopy

    ph = phonopy.load(DATA / "NaCl" / "phonopy_disp.yaml",
                      force_sets_filename=DATA / "NaCl" / "FORCE_SETS", is_nac=False)
    soft = copy.deepcopy(ph)
    soft.force_constants = -0.1 * ph.force_constants
    props = compute_properties([ph, soft], [2, 2, 2], band_points=5, t_max=None)
    assert props.frequencies_THz.mean(axis=0)[1:].min() > 0      # the mean hides it
    mesh = [x for x in props.imaginary if x[2].startswith("mesh")]
    assert len(mesh) == len(props.qpoints)
    assert all(x[2] == "mesh, 1 of 2 members" for x in mesh)
    lowest = props.frequencies_THz[1].min(axis=1)
    assert min(x[1] for x in mesh) == pytest.approx(lowest.min())


def test_band_plot_does_not_join_a_break_in_the_path(tmp_path, monkeypatch):
    """fcc's path G-X-W-K-G-L-U-W-L-K|U-X breaks between K and U (ASE repeats the distance there):
    no drawn line of the band plot crosses that break."""
    import matplotlib.axes

    from mlff_ins.phonons.plot import plot_phonons

    pset = phonons_from_force_sets(DATA / "MgO")
    props = compute_properties(pset.members, [2, 2, 2], band_points=60, t_max=None)
    x = props.band_distances
    breaks = x[1:][np.diff(x) <= 1e-12]
    assert len(breaks) == 1
    drawn = []
    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        if len(args) >= 2 and np.ndim(args[0]) == 1 and len(args[0]) > 1:
            drawn.append(np.asarray(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    plot_phonons(props, tmp_path / "mgo.png", title="MgO")
    assert drawn and not any(xs[0] < breaks[0] < xs[-1] or
                             (np.sum(np.isclose(xs, breaks[0])) > 1) for xs in drawn)


def test_the_band_plot_of_a_cell_of_hundreds_of_atoms_shows_the_dos_only(tmp_path, monkeypatch):
    """Above 300 branches (a glass or defect cell as its own supercell) the band panel draws no
    branch and says so; the DOS is drawn as for a small cell."""
    import matplotlib.pyplot as plt

    from mlff_ins.phonons.plot import MAX_DRAWN_BRANCHES, plot_phonons

    pset = phonons_from_force_sets(DATA / "MgO")
    props = compute_properties(pset.members, [4, 4, 4], band_points=5, t_max=None)
    figures = []
    original = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), original(fig)))
    plot_phonons(props, tmp_path / "small.png")
    n = props.band_frequencies_THz.shape[2]
    reps = MAX_DRAWN_BRANCHES // n + 1
    props.band_frequencies_THz = np.tile(props.band_frequencies_THz, (1, 1, reps))
    plot_phonons(props, tmp_path / "large.png")
    small, large = (f.axes[0] for f in figures[-2:])
    assert len(small.get_lines()) >= n and not small.texts
    assert not [ln for ln in large.get_lines() if len(ln.get_xdata()) > 2]
    assert [tx.get_text() for tx in large.texts] == [f"{n * reps} branches: not drawn\n"
                                                      "(see the DOS)"]
    assert len(figures[-1].axes[-1].get_lines()) == len(figures[-2].axes[-1].get_lines())


def test_elements_have_one_colour_in_band_and_spectra_plots(tmp_path, monkeypatch):
    """MgO: the band plot's partial DOS and a spectra plot's element lines give Mg and O the same
    colours (elements in alphabetical order in both), whatever order the file holds them in."""
    import matplotlib.pyplot as plt

    from mlff_ins.neutron.plot import plot_spectra
    from mlff_ins.neutron.spectrum import Spectrum1D
    from mlff_ins.phonons.plot import plot_phonons

    pset = phonons_from_force_sets(DATA / "MgO")
    props = compute_properties(pset.members, [4, 4, 4], band_points=5, t_max=None)
    props.dos_partial = dict(reversed(list(props.dos_partial.items())))
    closed = []
    original = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (closed.append(fig), original(fig)))
    plot_phonons(props, tmp_path / "mgo.png")
    dos_axis = closed[-1].axes[-1]
    band = {line.get_label(): line.get_color() for line in dos_axis.get_lines()}
    e = np.linspace(0, 100, 101)
    lines = {f"vdos_{el}": Spectrum1D(kind="vdos", x=e, intensity=np.ones_like(e), element=el,
                                      units="1/meV") for el in ("O", "Mg")}
    lines["vdos"] = Spectrum1D(kind="vdos", x=e, intensity=2 * np.ones_like(e), units="1/meV")
    fig = plot_spectra(lines, tmp_path / "s.png")
    spectra = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert set(band) == set(spectra) == {"total", "Mg", "O"}
    assert band == spectra


def test_a_gamma_in_the_middle_of_the_path_takes_each_segments_lo_limit():
    """Al2O3 (uniaxial, Born charges in its phonopy_disp.yaml): its path passes Γ between two
    segments, whose LO limits differ. Γ is doubled there, each copy at phonopy's frequencies with
    the non-analytical term along its own segment (1e-9 THz); the two copies differ, so one Γ
    for both segments would have drawn one of them wrong."""
    pset = phonons_from_force_sets(DATA / "Al2O3")
    assert pset.members[0].nac_params is not None
    props = compute_properties(pset.members, [2, 2, 2], band_points=40, t_max=None)
    q, x, f = props.band_qpoints, props.band_distances, props.band_frequencies_THz[0]
    gamma = np.flatnonzero(np.abs(q).max(axis=1) < 1e-12)
    pairs = [i for i in gamma if i + 1 < len(q) and i + 1 in gamma and x[i] == x[i + 1]]
    assert pairs
    ph = pset.members[0]
    i = pairs[0]
    for k, j in ((i, i - 1), (i + 1, i + 2)):
        ph.run_qpoints([[0, 0, 0]], nac_q_direction=q[j] - q[k])
        np.testing.assert_allclose(f[k], ph.qpoints.frequencies[0], atol=1e-9)
    assert np.abs(f[i] - f[i + 1]).max() > 0.05


def test_large_cells_get_fewer_band_points():
    """The band path of a cell above 64 atoms is thinned in proportion to its size (each point
    is a 3n x 3n diagonalisation per member; its folded bands mean little), never below 8
    (nor above the number asked for); a
    cell of 64 atoms or fewer keeps every point asked for."""
    from mlff_ins.phonons.properties import band_points_for

    assert band_points_for(2, 200) == band_points_for(64, 200) == 200
    assert band_points_for(215, 200) == 59        # the vacancy cell: 200 * 64 // 215
    assert band_points_for(512, 200) == 25
    assert band_points_for(5000, 200) == 8
    assert band_points_for(128, 5) == 5       # never more than asked for
