"""Structure analysis: g(r), first shell, coordination and bond angles on systems whose answer
is known (perfect and rattled diamond Si, an ideal gas), against ASE's RDF and direct counts."""

import json
from pathlib import Path

import ase
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from mlff_ins.analysis.structure import (TETRAHEDRAL_ANGLE_DEG, bond_angles, coordination,
                                         coordination_from_rdf, coordination_summary, first_peak,
                                         plot_structure, radial_distribution, structure_report)
from mlff_ins.errors import InputError

A_SI = 5.431
BOND = np.sqrt(3) / 4 * A_SI          # 2.35167 Å, first shell of diamond
SECOND = A_SI / np.sqrt(2)            # 3.84029 Å, second shell


def diamond(n=3):
    return bulk("Si", "diamond", A_SI, cubic=True) * (n, n, n)


def rattled(seed, stdev=0.3, n=3):
    a = diamond(n)
    a.rattle(stdev, seed=seed)
    return a


def direct_coordination(atoms, cutoff):
    """Neighbour counts from all distances to the 27 nearest periodic images (cutoff << cell)."""
    cell = atoms.cell.array
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    p = atoms.positions
    d = np.linalg.norm(p[None, :, None, :] + (shifts @ cell)[None, None, :, :]
                       - p[:, None, None, :], axis=-1)
    return ((d < cutoff) & (d > 1e-8)).sum(axis=(1, 2))


# ------------------------------------------------------------------------ perfect crystal


def test_diamond_first_shell_coordination_and_angles():
    atoms = diamond()
    rdf = radial_distribution(atoms, r_max=8.0, dr=0.02)
    shell = first_peak(rdf["r_A"], rdf["g_total"])
    # a delta-like peak lands in the bin holding 2.3517 Å: within one bin width
    assert abs(shell.r_peak_A - BOND) <= rdf["dr_A"]
    # the minimum of the empty gap between the shells lies strictly between them
    assert BOND < shell.r_min_A < SECOND
    assert shell.g_min == 0.0
    # every atom has exactly four neighbours for any cutoff between the shells
    for cut in (shell.r_min_A, 2.6, 3.7):
        assert np.all(coordination(atoms, cut) == 4)
    s = coordination_summary(atoms, shell.r_min_A)
    assert s["mean_coordination"] == 4.0 and s["fraction_4fold"] == 1.0
    assert s["fraction_3fold"] == s["fraction_5fold"] == s["fraction_other"] == 0.0
    # all angles tetrahedral; float error of arccos near -1/3 is ~1e-12 deg
    ba = bond_angles(atoms, shell.r_min_A)
    assert ba["n_angles"] == 6 * len(atoms)
    assert abs(ba["mean_deg"] - TETRAHEDRAL_ANGLE_DEG) < 1e-6
    assert ba["std_deg"] < 1e-6
    assert np.sum(ba["density_per_deg"] * np.diff(ba["angle_edges_deg"])) == pytest.approx(1.0)
    # the shell counts of diamond: integral to the gap = 4 (to rounding)
    assert coordination_from_rdf(rdf, shell.r_min_A) == pytest.approx(4.0, abs=1e-9)


# ------------------------------------------------------------------------------ ideal gas


def test_ideal_gas_tends_to_one_within_counting_statistics():
    """2000 uniform random points at the density of Si. The unordered pair count U_k of a
    shell is a sum of pairwise independent indicators (for a periodic box, pairs sharing an atom
    are independent), so Var U_k = mu_k (1 - p_k) ~ mu_k, mu_k = N(N-1)/2 * v_k / V, and
    g_k = U_k / (N^2 / 2V * v_k) has mean (N-1)/N and sd ~ 1/sqrt(mu_k). Tolerances, set
    before looking: the pooled mean over 2-8 Å within 4 sd of (N-1)/N; the per-bin z-scores
    have rms within 1 +- 0.15 (sd of the rms for 300 bins ~ 0.04) and none beyond 5."""
    n, rho = 2000, 0.05
    length = (n / rho) ** (1 / 3)
    rng = np.random.default_rng(7)
    gas = Atoms("Si" * n, positions=rng.uniform(0, length, (n, 3)), cell=[length] * 3, pbc=True)
    rdf = radial_distribution(gas, r_max=8.0, dr=0.02)
    edges = rdf["r_edges_A"]
    vol = length ** 3
    shell = 4 / 3 * np.pi * np.diff(edges ** 3)
    mu = n * (n - 1) / 2 * shell / vol
    sel = edges[:-1] >= 2.0
    g, expect = rdf["g_total"][sel], (n - 1) / n
    pooled = np.sum(g * mu[sel]) / np.sum(mu[sel]) * n / (n - 1)   # = sum U / sum mu
    assert abs(pooled - 1.0) < 4 / np.sqrt(np.sum(mu[sel]))
    z = (g - expect) / (expect / np.sqrt(mu[sel]))
    assert 0.85 < np.sqrt(np.mean(z ** 2)) < 1.15
    assert np.max(np.abs(z)) < 5.0


# ----------------------------------------------------------------- against independent counts


def test_rdf_matches_ase_get_rdf_and_neighbor_list_counts():
    """Same pair counts and normalisation as ASE's get_rdf (total and a partial, whose
    convention since ASE 3.27 is ours), and the same histogram whether pairs are found by
    minimum image or by ASE's neighbor_list (beyond_half_cell=True): float-rounding agreement."""
    from ase.geometry.rdf import get_rdf

    atoms = rattled(1, stdev=0.1)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    ours = radial_distribution(atoms, r_max=8.0, dr=0.05)
    via_nl = radial_distribution(atoms, r_max=8.0, dr=0.05, beyond_half_cell=True)
    np.testing.assert_allclose(via_nl["g_total"], ours["g_total"], rtol=1e-12, atol=0)
    ase_total, r = get_rdf(atoms, 8.0, 160)
    np.testing.assert_allclose(ours["r_A"], r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["g_total"], ase_total, rtol=1e-10, atol=1e-12)
    # partials: c_a c_b weighted sum is the total (our definition), and ASE's partial agrees
    c = {"Ge": np.mean(symbols == "Ge"), "Si": np.mean(symbols == "Si")}
    total = sum((1 if a == b else 2) * c[a] * c[b] * g
                for (a, b), g in ((k.split("-"), v) for k, v in ours["partials"].items()))
    np.testing.assert_allclose(total, ours["g_total"], rtol=1e-12, atol=1e-12)
    if tuple(int(x) for x in ase.__version__.split(".")[:2]) >= (3, 27):
        ase_ge_si, _ = get_rdf(atoms, 8.0, 160, elements=("Ge", "Si"))
        np.testing.assert_allclose(ours["partials"]["Ge-Si"], ase_ge_si, rtol=1e-10,
                                   atol=1e-12)


def test_beyond_half_cell_counts_every_image():
    """An 8-atom cubic cell (half width 2.7 Å) with r_max 6 Å: refused unless asked for; then
    the 3x3x3 supercell (where 6 Å < half width 8.1 Å) must give the same g(r) exactly."""
    small = bulk("Si", "diamond", A_SI, cubic=True)
    small.rattle(0.05, seed=3)
    with pytest.raises(InputError, match="r_max"):
        radial_distribution(small, r_max=6.0)
    g_small = radial_distribution(small, r_max=6.0, dr=0.05, beyond_half_cell=True)
    g_big = radial_distribution(small * (3, 3, 3), r_max=6.0, dr=0.05)
    np.testing.assert_allclose(g_small["g_total"], g_big["g_total"], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- rattled crystal


def test_rattled_defect_fractions_match_direct_count():
    """Rattled diamond (0.3 Å per coordinate) has 3- and 5-fold atoms at a 2.75 Å cutoff; the
    pooled fractions over three frames must equal a brute-force count over the 27 nearest
    images exactly (integer counts of the same pairs)."""
    frames = [rattled(s) for s in range(3)]
    cut = 2.75
    s = coordination_summary(frames, cut)
    direct = np.concatenate([direct_coordination(a, cut) for a in frames])
    for per_atom, a in zip(np.split(direct, 3), frames):
        np.testing.assert_array_equal(coordination(a, cut), per_atom)
    assert s["fraction_3fold"] == np.mean(direct == 3) > 0
    assert s["fraction_5fold"] == np.mean(direct == 5) > 0
    assert s["fraction_4fold"] == np.mean(direct == 4)
    assert s["fraction_other"] == pytest.approx(np.mean((direct < 3) | (direct > 5)), abs=1e-15)
    assert s["mean_coordination"] == pytest.approx(direct.mean(), rel=1e-15)
    assert s["n_atom_frames"] == direct.size


def test_rdf_integral_equals_mean_coordination():
    """4 pi rho int_0^rc g r^2 dr counts the same pairs as the coordination: equal to rounding
    (1e-9) when rc is a bin edge (the one nearest the first minimum); at the first minimum itself
    the linear interpolation inside one bin errs by less than that bin's count per atom."""
    frames = [rattled(s, stdev=0.25) for s in range(4)]    # the gap between shells fills
    rdf = radial_distribution(frames, r_max=8.0, dr=0.02)
    shell = first_peak(rdf["r_A"], rdf["g_total"])
    assert 2.6 < shell.r_min_A < 3.6       # the rattled gap, between the shells
    edges = rdf["r_edges_A"]
    k = int(np.argmin(np.abs(edges - shell.r_min_A)))
    assert coordination_from_rdf(rdf, edges[k]) == pytest.approx(
        coordination_summary(frames, edges[k])["mean_coordination"], abs=1e-9)
    b = int(shell.r_min_A // rdf["dr_A"])
    one_bin = rdf["g_total"][b] * rdf["number_density_per_A3"] * 4 / 3 * np.pi * (
        edges[b + 1] ** 3 - edges[b] ** 3)
    assert shell.g_min > 0 and one_bin > 0          # the cutoff cuts through counted pairs
    assert abs(coordination_from_rdf(rdf, shell.r_min_A)
               - coordination_summary(frames, shell.r_min_A)["mean_coordination"]) \
        <= one_bin + 1e-9


# -------------------------------------------------------------------------- input forms


def test_single_atoms_list_trajectory_and_file_agree(tmp_path):
    from ase.io import write

    from mlff_ins.analysis.trajectory import ArrayTrajectory

    a = rattled(5, stdev=0.1)
    traj = ArrayTrajectory(a.get_chemical_symbols(), a.positions[None], a.cell.array, dt_fs=1.0)
    write(tmp_path / "one.extxyz", a)
    for other in ([a], traj, tmp_path / "one.extxyz", str(tmp_path / "one.extxyz")):
        for fn in (lambda f: radial_distribution(f)["g_total"],
                   lambda f: bond_angles(f, 2.9)["density_per_deg"]):
            np.testing.assert_allclose(fn(other), fn(a), rtol=1e-12, atol=1e-12)
        assert coordination_summary(other, 2.9) == coordination_summary(a, 2.9)


def test_bad_input_is_input_error():
    good = diamond()
    with pytest.raises(InputError, match="no atoms"):
        radial_distribution(Atoms(cell=[10, 10, 10], pbc=True))
    with pytest.raises(InputError, match="no frames"):
        radial_distribution([])
    with pytest.raises(InputError, match="r_max 9 Å is more than half"):
        radial_distribution(good, r_max=9.0)
    with pytest.raises(InputError, match="periodic cell"):
        radial_distribution(Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    with pytest.raises(InputError, match="pairs"):
        radial_distribution(good, pairs=["Si-O"])
    with pytest.raises(InputError, match="dr"):
        radial_distribution(good, dr=-0.1)
    with pytest.raises(InputError, match="no minimum|no maximum|zero"):
        first_peak(np.arange(10.0), np.ones(10))
    with pytest.raises(InputError, match="no atoms"):
        coordination(Atoms(), 3.0)
    with pytest.raises(InputError, match="no bond angles"):
        bond_angles(good, 1.0)
    with pytest.raises(InputError, match="frames must be"):
        coordination_summary(42, 3.0)


# ---------------------------------------------------------------------------- report, plot


def test_report_is_json_and_plots(tmp_path):
    """Weakly rattled diamond (0.05 Å): bonds spread by ~0.07 Å, which moves the peak of g(r)
    inwards by ~sigma^2/b = 0.002 Å; the peak must stay within one bin (0.02 Å) of 2.3517 Å."""
    frames = [rattled(s, stdev=0.05) for s in range(2)]
    rep = structure_report(frames)
    text = json.dumps(rep)                      # JSON-serialisable as is
    assert json.loads(text)["cutoff_source"] == "first minimum of g(r)"
    assert rep["cutoff_A"] == rep["first_shell"]["r_min_A"]
    assert rep["reference"]["coordination"] == 3.88
    assert abs(rep["first_shell"]["r_peak_A"] - BOND) < 0.02
    assert rep["coordination"]["mean_coordination"] == 4.0   # cutoff in the empty gap
    assert rep["coordination_from_rdf"] == pytest.approx(4.0, abs=1e-9)
    assert abs(rep["bond_angles"]["mean_deg"] - TETRAHEDRAL_ANGLE_DEG) < 0.5
    given = structure_report(frames, cutoff=2.9, species=["Si"])
    assert given["cutoff_A"] == 2.9 and given["cutoff_source"] == "given"
    png = tmp_path / "out" / "structure.png"
    plot_structure(rep, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))


def test_cli_structure_on_a_trajectory_stage_and_a_file(tmp_path, capsys):
    """`mlff-ins structure`: perfect diamond written as a two-frame extxyz gives coordination 4,
    the first peak at the bond length (within a 0.02 Å bin) and tetrahedral angles; the JSON is
    the report of structure_report; a 64-atom cell gets r_max = half its width by default."""
    from ase.io import write

    from mlff_ins.cli import main

    path = tmp_path / "si.xyz"
    write(path, [diamond(2), diamond(2)])
    assert main(["structure", str(path), "-o", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert (tmp_path / "rep.png").stat().st_size > 0
    assert rep["n_frames"] == 2 and rep["n_atoms"] == 64
    assert rep["coordination"]["mean_coordination"] == pytest.approx(4.0, abs=1e-12)
    assert abs(rep["first_shell"]["r_peak_A"] - BOND) <= 0.02
    assert rep["bond_angles"]["mean_deg"] == pytest.approx(TETRAHEDRAL_ANGLE_DEG, abs=0.5)
    assert rep["settings"]["r_max_A"] == pytest.approx(A_SI, abs=0.02)   # half of 2a
    assert "coordination 4.000: 4-fold 100.0 %" in printed
    assert main(["structure", str(path), "--stage", "production", "-o",
                 str(tmp_path / "x")]) == 2
    assert "--stage: " in capsys.readouterr().err


def test_cli_structure_on_a_cell_too_small_for_its_first_minimum(tmp_path, capsys):
    """The 8-atom diamond cell shows g(r) to 2.7 Å, before the first minimum: the error names
    the file and says a supercell is needed (a larger --r-max would be refused), and with
    --cutoff the same cell is analysed; an --r-max given too short asks for a larger one."""
    from ase.io import write

    from mlff_ins.cli import main

    path = tmp_path / "si8.xyz"
    write(path, diamond(1))
    assert main(["structure", str(path), "-o", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: g(r) has no minimum after its first peak" in err
    assert "--supercell 3 3 3" in err and "--cutoff" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rep.json").exists()
    assert main(["structure", str(path), "--cutoff", "2.5", "-o", str(tmp_path / "rep")]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["coordination"]["mean_coordination"] == pytest.approx(4.0, abs=1e-12)
    assert main(["structure", str(path), "--r-max", "2.6", "-o", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.rstrip().endswith("raise --r-max")


def test_case_study_report_tells_a_crystal_from_amorphous_si():
    """The case study flags an 'a-Si' cell that is still a crystal: diamond rattled as at 300 K
    (0.07 Å per component) is flagged; the embedded Stillinger-Weber a-Si frame (source frame 8 of
    the Si data set, the first 'amorphous' one) is not."""
    from ase.io import read

    from mlff_ins.casestudy_report import not_amorphous

    assert not_amorphous(structure_report([rattled(s, stdev=0.07) for s in range(2)]))
    sw = read(Path(__file__).parent / "data" / "structures" / "si64_sw_amorphous.xyz")
    assert not not_amorphous(structure_report([sw], r_max=5.0))
