"""`mlff-ins spectra` end to end: NXdata file layout, plot, H5MD input, one-line errors."""

from dataclasses import replace

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase import units
from ase.io import write

from mlff_ins.analysis.synthetic import langevin_particles
from mlff_ins.analysis.dynamics import correlate
from mlff_ins.analysis.trajectory import ArrayTrajectory, Trajectory
from mlff_ins.cli import main
from mlff_ins.neutron.spectrum import KINDS, Spectrum1D, read_spectra, write_spectra


@pytest.fixture(scope="module")
def small_traj(tmp_path_factory):
    pos, vel, cell, _ = langevin_particles(n=24, frames=80, every=5, mass=16.0, seed=11)
    symbols = ["O"] * 16 + ["Si"] * 8
    frames = []
    for p, v in zip(pos, vel):
        a = Atoms(symbols, positions=p, cell=cell, pbc=True)
        a.set_velocities(v / units.fs)  # Å/fs -> ASE velocity units
        frames.append(a)
    path = tmp_path_factory.mktemp("traj") / "liquid.extxyz"
    write(path, frames)
    return path, pos, vel, cell, symbols


def test_spectra_command_writes_nxdata_and_plot(small_traj, tmp_path, capsys):
    path = small_traj[0]
    out = tmp_path / "spectra.h5"
    rc = main(["spectra", str(path), "--dt", "25", "--vdos", "--sqe", "--qens", "-T", "300",
               "--q-max", "2.0", "--q-width", "0.5", "--q-per-shell", "8", "--plot", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "D from MSD" in text and "spectra from 80 frames" in text
    assert out.with_suffix(".png").stat().st_size > 10_000
    with h5py.File(out) as f:
        for name, g in f.items():
            assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "intensity"
            axes = list(g.attrs["axes"])
            assert g["intensity"].shape == tuple(len(g[a]) for a in axes)
            for a in axes:
                assert g[a].attrs["units"] in ("meV", "1/angstrom", "fs")
            assert g.attrs["kind"] in KINDS and g.attrs["source"] == "md"
        assert list(f["sqe"].attrs["axes"]) == ["q", "energy"]
        assert f["sqe"]["intensity"].attrs["units"] == "barn/sr/meV"
        assert f["vdos_Si"].attrs["element"] == "Si"
    spectra = read_spectra(out)
    assert spectra["vdos"].area() == pytest.approx(3.0, abs=1e-9)
    assert spectra["sqe"].temperature_K == 300.0
    assert spectra["eisf_O"].intensity_std is not None


def test_e_max_beyond_the_frames_nyquist_energy_is_warned(small_traj, tmp_path, capsys):
    """Frames 25 fs apart resolve E <= h / (2 * 25 fs) = 82.7 meV: asking for 100 meV warns
    (aliasing), 80 meV does not."""
    path = small_traj[0]
    for e_max, warned in ((100, True), (80, False)):
        assert main(["spectra", str(path), "--dt", "25", "--e-max", str(e_max),
                     "-o", str(tmp_path / f"v{e_max}.h5")]) == 0
        err = capsys.readouterr().err
        assert ("resolve energies up to 82.7 meV only" in err) == warned, err


def test_h5md_input_with_nm_and_ps_units_matches_extxyz(small_traj, tmp_path):
    path, pos, vel, cell, symbols = small_traj
    h5 = tmp_path / "liquid.h5"
    with h5py.File(h5, "w") as f:
        f.create_group("h5md").attrs["version"] = np.array([1, 1])
        g = f.create_group("particles/all")
        box = g.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        box.create_dataset("edges", data=np.diag(cell) / 10.0).attrs["unit"] = "nm"
        for name, data, unit in (("position", pos / 10.0, "nm"), ("velocity", vel * 100.0, "nm ps-1")):
            grp = g.create_group(name)
            grp.create_dataset("value", data=data).attrs["unit"] = unit
            grp.create_dataset("step", data=np.arange(len(pos)) * 5)
            grp.create_dataset("time", data=np.arange(len(pos)) * 0.025).attrs["unit"] = "ps"
        g.create_dataset("species", data=np.array([8] * 16 + [14] * 8))
    a = Trajectory(h5)
    assert a.dt_fs == pytest.approx(25.0) and a.symbols == symbols and a.has_velocities
    b = Trajectory(path, dt_fs=25.0)
    ra, rb = correlate(a, 20, msd=True), correlate(b, 20, msd=True)
    # extxyz stores 8 significant digits, so agreement is to that precision
    np.testing.assert_allclose(ra.vacf["Si"], rb.vacf["Si"], atol=1e-7 * rb.vacf["Si"][0])
    np.testing.assert_allclose(ra.msd["O"], rb.msd["O"], atol=1e-7 * rb.msd["O"].max())


@pytest.mark.parametrize("args,message", [
    (["--dt", "25", "--time-window", "10"], "--time-window 10 fs"),
    (["--dt", "25", "--blocks", "0"], "--blocks must be a positive integer, not 0"),
    (["--dt", "25", "--blocks", "40"], "--blocks 40: blocks of 2 frames are too short"),
    (["--dt", "25", "--blocks", "4", "--time-window", "500"],
     "it must span 3..19 frames of 25 fs (blocks of 20 frames: --blocks 4)"),
    ([], "give it with --dt"),
    (["--dt", "25", "--sqe", "--q-min", "0.01", "--q-max", "0.1"], "no Q-vector of this cell"),
    (["--dt", "25", "--sqe", "--q-max", "0.1"], "--q-min 0.2 must be >= 0 and below --q-max 0.1"),
    (["--dt", "25", "--instrument", "vision", "--ei", "100"], "--ei applies to direct geometry"),
    (["--dt", "25", "--sqe", "--ei", "80", "--angles", "100", "20"],
     "--angles 100 20: give the smallest angle"),
    (["--dt", "25", "--sqe", "--ei", "80", "--angles", "10", "200"],
     "--angles 10 200: scattering angles 2θ lie from 0 to 180"),
])
def test_bad_input_gives_one_line_and_keeps_old_output(small_traj, tmp_path, capsys, args, message):
    out = tmp_path / "old.h5"
    out.write_bytes(b"previous result")
    rc = main(["spectra", str(small_traj[0]), "-o", str(out)] + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert out.read_bytes() == b"previous result"


def test_blocks_write_a_standard_error_band(small_traj, tmp_path, capsys):
    """--blocks 4: every spectrum carries intensity_std (its provenance says what it is), the
    spectra themselves are those of the whole run with the same window."""
    out, plain = tmp_path / "b.h5", tmp_path / "p.h5"
    assert main(["spectra", str(small_traj[0]), "--dt", "25", "--blocks", "4", "-o", str(out)]) == 0
    assert "standard error over 4 blocks of 20 frames, for 4 of the 4 spectra" \
        in capsys.readouterr().out
    # the same window without blocks: half a block, 10 frames
    assert main(["spectra", str(small_traj[0]), "--dt", "25", "--time-window", "250",
                 "-o", str(plain)]) == 0
    with_band, without = read_spectra(out), read_spectra(plain)
    assert set(with_band) == set(without)
    for name, sp in with_band.items():
        assert sp.intensity_std is not None and np.all(sp.intensity_std >= 0)
        assert "blocks of 20 frames" in sp.provenance["intensity_std"]
        np.testing.assert_array_equal(sp.intensity, without[name].intensity)


def test_missing_file_and_bad_spectra_file(tmp_path, capsys):
    assert main(["spectra", str(tmp_path / "nope.xyz"), "-o", str(tmp_path / "s.h5")]) == 2
    assert "nope.xyz: no such trajectory file" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(Exception, match="bad.h5: not an HDF5 file"):
        read_spectra(bad)


def test_spectrum_round_trip(tmp_path):
    sp = Spectrum1D(kind="vdos", x=np.linspace(0, 10, 11), intensity=np.arange(11.0),
                    units="1/meV", element="Si", temperature_K=12.5,
                    provenance={"note": "round trip"})
    write_spectra(tmp_path / "a.h5", {"vdos_Si": sp})
    back = read_spectra(tmp_path / "a.h5")["vdos_Si"]
    np.testing.assert_array_equal(back.intensity, sp.intensity)
    assert (back.element, back.temperature_K, back.provenance["note"]) == ("Si", 12.5, "round trip")
    with pytest.raises(ValueError, match="intensity shape"):
        Spectrum1D(kind="vdos", x=np.arange(3.0), intensity=np.arange(4.0))


def test_unknown_element_is_named():
    with pytest.raises(Exception, match="unknown element 'Xx'"):
        correlate(ArrayTrajectory(["Xx", "H"], np.zeros((4, 2, 3)), np.eye(3) * 5, 1.0), 2)


def test_lammps_dump_with_types(small_traj, tmp_path, capsys):
    """A LAMMPS text dump (metal units, atoms listed out of order) gives the same VACF as the
    extxyz; without --types the command says what is missing."""
    path, pos, vel, cell, symbols = small_traj
    dump = tmp_path / "liquid.lammpstrj"
    lines = []
    order = np.random.default_rng(0).permutation(len(symbols))
    for step, (p, v) in enumerate(zip(pos, vel)):
        lines += ["ITEM: TIMESTEP", str(step * 25), "ITEM: NUMBER OF ATOMS", str(len(symbols)),
                  "ITEM: BOX BOUNDS pp pp pp"] + [f"0.0 {cell[k, k]:.10f}" for k in range(3)]
        lines.append("ITEM: ATOMS id type x y z vx vy vz")
        for i in order:  # velocities in Å/ps (metal units)
            t = 1 if symbols[i] == "O" else 2
            lines.append(f"{i + 1} {t} " + " ".join(f"{x:.10f}" for x in p[i]) + " "
                         + " ".join(f"{x * 1000:.10f}" for x in v[i]))
    dump.write_text("\n".join(lines) + "\n")
    a = Trajectory(dump, dt_fs=25.0, types=["O", "Si"])
    assert a.symbols == symbols and a.has_velocities
    ra = correlate(a, 10)
    rb = correlate(ArrayTrajectory(symbols, pos, cell, 25.0, velocities=vel), 10)
    np.testing.assert_allclose(ra.vacf["O"], rb.vacf["O"], rtol=1e-7)
    assert main(["spectra", str(dump), "--dt", "25", "-o", str(tmp_path / "s.h5")]) == 2
    assert "name them with --types" in capsys.readouterr().err
    assert main(["spectra", str(dump), "--dt", "25", "--types", "O",
                 "-o", str(tmp_path / "s.h5")]) == 2
    assert "atom type 2, but --types names only 1" in capsys.readouterr().err


def test_mdanalysis_dcd_with_pdb_topology(small_traj, tmp_path):
    """DCD (float32, written by MDAnalysis) + PDB topology through --topology."""
    mda = pytest.importorskip("MDAnalysis")
    path, pos, vel, cell, symbols = small_traj
    u = mda.Universe.empty(len(symbols), trajectory=True, n_residues=1,
                           atom_resindex=np.zeros(len(symbols), dtype=int))
    u.add_TopologyAttr("names", symbols)
    u.add_TopologyAttr("elements", symbols)
    u.add_TopologyAttr("resnames", ["LIQ"])
    box = [cell[0, 0], cell[1, 1], cell[2, 2], 90.0, 90.0, 90.0]
    u.atoms.positions, u.dimensions = pos[0], box
    u.atoms.write(tmp_path / "top.pdb")
    with mda.Writer(str(tmp_path / "liquid.dcd"), len(symbols), dt=0.025) as w:
        for p in pos:
            u.atoms.positions, u.dimensions = p, box
            w.write(u.atoms)
    out = tmp_path / "s.h5"
    assert main(["spectra", str(tmp_path / "liquid.dcd"), "--topology", str(tmp_path / "top.pdb"),
                 "--qens", "--q-max", "1.5", "--q-per-shell", "6", "-o", str(out)]) == 0
    ref = correlate(ArrayTrajectory(symbols, pos, cell, 25.0), 40, msd=True).msd["Si"]
    np.testing.assert_allclose(read_spectra(out)["msd_Si"].intensity, ref, rtol=1e-5, atol=1e-6)


def test_plot_maps_share_one_energy_range(tmp_path):
    from mlff_ins.neutron.plot import plot_spectra
    from mlff_ins.neutron.spectrum import Spectrum2D

    q, e = np.linspace(0.1, 5, 20), np.linspace(0, 200, 401)
    maps = {}
    for kind, e_max in (("sqe", 100.0), ("sqe_coh", 60.0), ("sqe_inc", 150.0)):
        intensity = np.where(e[None, :] < e_max, 1.0, 0.0) * np.ones((len(q), 1))
        maps[kind] = Spectrum2D(kind=kind, intensity=intensity, q=q, y=e, temperature_K=10.0,
                                source="phonons")
    fig = plot_spectra(maps, tmp_path / "maps.png")
    limits = [ax.get_ylim() for ax in fig.axes if ax.get_ylabel() == "energy transfer (meV)"]
    # the widest map sets the range: signal up to 149.5 meV, plus the 10 % margin
    assert len(limits) == 3
    for low, high in limits:
        assert low == 0.0 and high == pytest.approx(149.5 * 1.1, rel=1e-12)
    assert (tmp_path / "maps.png").stat().st_size > 10_000


def test_an_elastic_line_does_not_take_the_colour_scale_of_a_map(tmp_path):
    """A crystal's MD map: Bragg peaks at E = 0 ~1e4 times its phonons. The colour scale's top
    is the phonons' largest value (the elastic bins saturate in the top colour, the title says
    so); a map whose elastic line is within a decade of the rest keeps its own maximum."""
    from mlff_ins.neutron.plot import ELASTIC_DOMINANCE, plot_spectra
    from mlff_ins.neutron.spectrum import Spectrum2D

    q, e = np.linspace(0.1, 5, 20), np.linspace(-60, 60, 121)           # 1 meV bins
    phonons = np.where(np.abs(np.abs(e) - 30.0) < 5.0, 1e-3, 1e-6) * np.ones((len(q), 1))
    bragg = phonons.copy()
    bragg[5, 59:62] = 10.0                                              # E = -1, 0, 1 meV
    weak = phonons.copy()
    weak[5, 60] = 0.5 * ELASTIC_DOMINANCE * 1e-3
    maps = {"sqe_coh": Spectrum2D(kind="sqe_coh", intensity=bragg, q=q, y=e, temperature_K=300.0,
                                  source="md"),
            "sqe_inc": Spectrum2D(kind="sqe_inc", intensity=weak, q=q, y=e, temperature_K=300.0,
                                  source="md")}
    fig = plot_spectra(maps, tmp_path / "maps.png")
    meshes = {ax.get_title().split(" ")[0]: (ax, ax.collections[0]) for ax in fig.axes
              if ax.collections}
    ax, mesh = meshes["sqe_coh"]
    assert mesh.norm.vmax == pytest.approx(1e-3) and "elastic line above" in ax.get_title()
    ax, mesh = meshes["sqe_inc"]
    assert mesh.norm.vmax == pytest.approx(0.5 * ELASTIC_DOMINANCE * 1e-3)
    assert "elastic" not in ax.get_title()


def test_lines_keep_their_order_and_colour_whatever_the_order_given(tmp_path):
    """The MD route's S(E) in memory (banks in the engine's order) and read back from its file
    (HDF5's alphabetical order) draw the same legend with the same colours: the total, then the
    banks by angle."""
    from mlff_ins.neutron.plot import plot_spectra
    from mlff_ins.neutron.spectrum import Spectrum1D

    e = np.linspace(0, 100, 201)
    lines = {name: Spectrum1D(kind="s_e", x=e, intensity=np.exp(-(e - c) ** 2 / 50), units="1/meV",
                              instrument="vision", source="md")
             for name, c in (("s_e", 40.0), ("s_e_45", 30.0), ("s_e_135", 50.0))}
    drawn = []
    for order in (["s_e_45", "s_e_135", "s_e"], ["s_e", "s_e_135", "s_e_45"]):
        fig = plot_spectra({k: lines[k] for k in order}, tmp_path / "s.png")
        ax = fig.axes[0]
        drawn.append([(line.get_label(), line.get_color()) for line in ax.get_lines()])
    assert [label for label, _ in drawn[0]] == ["total", "45° bank", "135° bank"]
    assert drawn[0] == drawn[1]
    # an uncertainty band takes its line's colour
    from matplotlib.colors import to_rgb

    std = 0.1 * lines["s_e_45"].intensity
    banded = dict(lines, s_e_45=replace(lines["s_e_45"], intensity_std=std))
    ax = plot_spectra(banded, tmp_path / "s.png").axes[0]
    (band,) = ax.collections
    assert np.allclose(band.get_facecolor()[0][:3], to_rgb(dict(drawn[0])["45° bank"]))


def test_malformed_trajectories_are_one_line_errors(tmp_path, capsys):
    """An H5MD file without /box and an empty trajectory: exit 2, one line naming the file."""
    import h5py

    from mlff_ins.cli import main
    from mlff_ins.data.h5md import H5MDWriter

    nobox = tmp_path / "nobox.h5md"
    with h5py.File(nobox, "w") as f:
        g = f.create_group("particles/all")
        g.create_dataset("position/value", data=np.zeros((3, 2, 3)))
        g.create_dataset("species", data=np.array([14, 14]))
    empty = tmp_path / "empty.h5md"
    with H5MDWriter(empty, ["Si", "Si"], forces=False):
        pass
    for path, words in ((nobox, "has no box"), (empty, "0 frame(s)")):
        assert main(["spectra", str(path), "-o", str(tmp_path / "s.h5")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and words in err, err


def test_uncertainty_bands_of_non_negative_quantities_stop_at_zero():
    """A ±1σ band of an intensity or a DOS never reaches below zero (where the quantity cannot
    go); a band of a quantity that is negative somewhere (a frequency, a difference) is drawn
    as it is."""
    from mlff_ins.neutron.plot import spread_band

    low, high = spread_band([0.0, 0.1, 1.0], [0.2, 0.3, 0.1])
    np.testing.assert_allclose(low, [0.0, 0.0, 0.9])
    np.testing.assert_allclose(high, [0.2, 0.4, 1.1])
    low, _ = spread_band([-1.0, 0.1], [0.5, 0.3])
    np.testing.assert_allclose(low, [-1.5, -0.2])


def _lammps_h5md(path, n_frames=4, fixed_time=False):
    """The layout of LAMMPS' dump h5md (src/H5MD/dump_h5md.cpp, metal units): group
    particles/all, species = atom types 1, 2, box edges as a (T, 3) time series, time in ps and
    velocities in Å/ps, no unit attributes."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_group("h5md/creator").attrs["name"] = "lammps"
        g = f.create_group("particles/all")
        g["species"] = np.array([1, 2, 2, 1], dtype=np.int32)
        edges = g.create_group("box/edges")
        edges["value"] = np.full((n_frames, 3), 6.0)
        pos = g.create_group("position")
        pos["value"] = rng.uniform(0, 6, (n_frames, 4, 3))
        pos["step"] = np.arange(n_frames) * 10
        pos["time"] = 0.01 if fixed_time else np.arange(n_frames) * 0.01     # ps
        vel = g.create_group("velocity")
        vel["value"] = rng.normal(size=(n_frames, 4, 3))                     # Å/ps
    return path


def test_an_h5md_file_of_lammps_needs_its_types_and_says_what_it_guessed(tmp_path):
    """LAMMPS' dump h5md stores atom types as species and no units: without --types (types 1, 2
    could be H and He) it is one line asking for them; with them the elements are right, positions are read as Å with a
    warning, its unit-less times and velocities are not used (warnings), so --dt decides.
    A fixed interval (a scalar time, as H5MD allows) reads too. `md`/`phonons` refuse such a
    file as a starting structure rather than misread it."""
    from mlff_ins.data.h5md import read_frame

    path = _lammps_h5md(tmp_path / "lmp.h5")
    with pytest.raises(Exception, match="lmp.h5: its species are the numbers 1..2 without "
                                        "names: atom types .* --types"):
        Trajectory(path, dt_fs=10.0)
    with pytest.warns(UserWarning) as caught:
        traj = Trajectory(path, dt_fs=10.0, types=["Si", "O"])
    said = " ".join(str(w.message) for w in caught)
    assert "positions without a unit" in said and "read as Å" in said
    assert "velocities without a unit are not used" in said and "--dt" in said
    assert traj.symbols == ["Si", "O", "O", "Si"] and traj.dt_fs == 10.0
    assert not traj.has_velocities
    with pytest.warns(UserWarning), pytest.raises(Exception, match="give it with --dt"):
        Trajectory(path, types=["Si", "O"])
    with pytest.warns(UserWarning), pytest.raises(Exception, match="atom type 2 .* --types "
                                                                   "names only 1"):
        Trajectory(path, dt_fs=10.0, types=["Si"])
    fixed = _lammps_h5md(tmp_path / "fixed.h5", fixed_time=True)
    with pytest.warns(UserWarning):
        assert Trajectory(fixed, dt_fs=10.0, types=["Si", "O"]).n_frames == 4
    mda = tmp_path / "mda.h5md"
    with h5py.File(mda, "w") as f:
        f.create_group("h5md/creator").attrs["name"] = "MDAnalysis"
        f.create_group("particles/trajectory/position")["value"] = np.zeros((1, 2, 3))
    with pytest.raises(Exception, match="written by MDAnalysis, not mlff-ins"):
        read_frame(mda)
