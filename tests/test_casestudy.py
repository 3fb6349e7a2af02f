"""The silicon case study pipeline (`mlff-ins demo --full`): the shell script in examples/ is
the plan, and the whole plan runs end to end and resumes, on cells and runs small enough for a
test (the physics targets are checked by the real study, docs/case-study/)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlff_ins.casestudy import SIZES, plan, run_study, shell_script
from mlff_ins.cli import main

ROOT = Path(__file__).resolve().parent.parent

# 8-atom cells (7 with the vacancy) and runs of a hundred 4-fs steps: the machinery, not the
# physics; every stage a whole number of frame intervals (20 fs), as the spectra's time grid
# needs, and a production long enough (0.4 ps: 20 meV bins) for the spectra to share a few
# energy points below the 100 meV Nyquist energy of 20-fs frames
SMOKE = replace(SIZES["quick"], name="smoke", crystal_cells=1, phonon_cells=1, defect_cells=1,
                amorphous_cells=1, dt_fs=4.0, equilibrate_ps=0.04, production_ps=0.4,
                heat_K_per_ps=45000.0, melt_K=1200.0, melt_ps=0.02, quench_K_per_ps=45000.0,
                anneal_ps=0.02, bond_cutoff_A=2.85, quench_every=5)


def test_examples_script_is_the_plan(capsys):
    assert main(["demo", "--full", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert (ROOT / "examples" / "si_case_study.sh").read_text() == printed
    # every CLI step of the plan is in it, in order
    study = plan("si-case-study", None, SIZES["full"])
    assert shell_script(study) + "\n" == printed
    assert 'DEVICE=${DEVICE:-cpu}' in printed and '--device "$DEVICE"' in printed
    names = [line[2:].split(":")[0] for line in printed.splitlines()
             if line.startswith("# ") and not line.startswith("# The") and ":" in line]
    assert names[0] == "structures"
    # the script's `--model si-reference` and the default are one model to the study (its
    # record, and the report's choice of CP2K labels, read the folder)
    from mlff_ins.casestudy import default_model

    assert plan("x", "si-reference", SIZES["full"]).model == default_model()


def test_each_structure_is_compared_before_the_next_one_starts():
    # a study stopped in the vacancy's hours of MD has the c-Si and a-Si comparisons already
    for size in SIZES.values():
        order = [st.structure for st in plan("x", "si-reference", size).steps if st.structure]
        assert order == sorted(order, key=["c-Si", "a-Si", "vacancy"].index), size.name
        for name in ("c-Si", "a-Si", "vacancy"):
            own = [st.name for st in plan("x", "si-reference", size).steps
                   if st.structure == name]
            assert own[-1].startswith(f"{name}: compare vdos"), (size.name, own[-1])


def test_demo_full_options_are_refused_without_full(capsys, tmp_path):
    assert main(["demo", "--dry-run"]) == 2
    assert "--dry-run applies to the case study; add --full" in capsys.readouterr().err
    assert main(["demo", "--md-members", "0"]) == 2
    assert "--md-members applies to the case study; add --full" in capsys.readouterr().err
    assert main(["demo", "--prune"]) == 2
    assert "--prune applies to the case study; add --full" in capsys.readouterr().err
    assert main(["demo", "--full", "--dry-run", "--prune"]) == 2
    assert "--dry-run prints the whole study; --prune" in capsys.readouterr().err
    # a folder of the study's earlier version (no record of its runs): refused in one line
    old = tmp_path / "old"
    old.mkdir()
    (old / "study.json").write_text(json.dumps({"model": "m", "size": {"name": "full"}}))
    assert main(["demo", "--full", "--model", "sevennet-0", "-o", str(old)]) == 2
    assert "a study made by an earlier version of mlff-ins" in capsys.readouterr().err
    assert main(["demo", "--full", "--step", "nonsense", "--model", "sevennet-0",
                 "-o", str(tmp_path / "unused")]) == 2
    assert "--step nonsense: not a step of the study" in capsys.readouterr().err
    assert not (tmp_path / "unused").exists()


def test_study_runs_end_to_end_and_resumes(tmp_path):
    # the shipped silicon reference model (the study's default): a sensible Si minimum and
    # stable in short MD, which the suite's few-epoch test model is not
    study = plan(tmp_path / "study", None, SMOKE, device="cpu", md_members=[0])
    log = []
    timings = run_study(study, log=log.append)
    # --device reaches every command that evaluates the model or correlates a trajectory
    commands = [line.split("$ mlff-ins ")[1] for line in log if "$ mlff-ins " in line]
    assert commands and all(c.endswith("--device cpu") or " --device cpu " in c
                            for c in commands if c.split()[0] in ("md", "phonons", "spectra",
                                                                  "predict"))
    assert not any("--device" in c for c in commands if c.split()[0] in ("ins", "compare"))
    # --md-members reaches the MD runs only (the phonon routes use every member)
    assert all(" --members 0 " in c for c in commands if c.split()[0] == "md")
    assert not any("--members" in c for c in commands if c.split()[0] != "md")
    out = study.out
    for step in study.steps:
        for o in step.outputs:
            assert (out / o).exists(), f"{step.name}: {o} missing"
    # the starting cells: 8 atoms, and 7 with the vacancy
    from ase.io import read
    assert len(read(out / "structures" / "c-si_8.xyz")) == 8
    assert len(read(out / "structures" / "vacancy_7.xyz")) == 7
    # metrics.json: the records of the issue, one per pair of routes and kind, as compare wrote
    records = json.loads((out / "metrics.json").read_text())
    keys = {"structure", "a", "b", "kind", "mse", "cosine", "wasserstein_meV", "peak_shift_meV"}
    assert records and all(keys <= set(r) for r in records)
    assert {r["structure"] for r in records} == {"c-Si", "a-Si", "vacancy"}
    pairs = {(r["structure"], r["kind"], frozenset((r["a"], r["b"]))) for r in records}
    for s in ("c-Si", "a-Si", "vacancy"):
        assert (s, "s_e", frozenset(("md", "phonons"))) in pairs
        assert (s, "s_e", frozenset(("phonons", "predictor"))) in pairs
        assert (s, "vdos", frozenset(("md", "phonons"))) in pairs
        assert (s, "vdos", frozenset(("phonons", "predictor"))) in pairs
    # each record as its compare wrote it; the targets' records are those of the two-way
    # comparison on the MD cell's q-points (the one with the predictor takes its coarser grid)
    for folder in ("compare_s_e", "md_vs_phonons"):
        rec = next(r for r in records if r["structure"] == "c-Si" and r["kind"] == "s_e"
                   and r["comparison"] == folder and {r["a"], r["b"]} == {"md", "phonons"})
        compare = json.loads((out / "c-si" / folder / "metrics.json").read_text())
        pair = next(p for p in compare["pairs"] if {p["a"], p["b"]} == {"md", "phonons"})
        assert rec["mse"] == pair["mse"] and rec["cosine"] == pair["cosine"]
    # the vacancy difference is the vacancy's S(E) minus the perfect cell's, per atom
    from mlff_ins.neutron.spectrum import read_spectra
    diff = read_spectra(out / "vacancy" / "difference.h5")["difference_phonons"]
    vac = read_spectra(out / "vacancy" / "ins_phonons.h5")["s_e"]
    perfect = read_spectra(out / "vacancy" / "perfect_ins_phonons.h5")["s_e"]
    np.testing.assert_allclose(diff.intensity, vac.intensity
                               - np.interp(vac.x, perfect.x, perfect.intensity), atol=1e-12)
    assert all("peaks_unmatched_a" in r and "peaks_unmatched_b" in r for r in records)
    text = (out / "report.md").read_text()
    for heading in ("## Targets", "## Runs", "## c-Si", "## a-Si", "## Vacancy",
                    "Phonon frequencies", "## Code"):
        assert heading in text
    # the protocol as the size sets it (this size equilibrates with Langevin at 0.05/fs)
    assert "equilibration 0.04 ps (Langevin, friction 0.05/fs) then 0.4 ps NVE" in text
    # the MD runs' temperatures and drifts, the phonons' imaginary modes, as the report's
    # functions read them from the files
    from mlff_ins.casestudy_report import imaginary_summary, md_summary
    md = md_summary(out / "c-si" / "md.h5md")
    assert md["n_atoms"] == 8 and md["ps"] == pytest.approx(SMOKE.production_ps, abs=0.021)
    assert f"| c-Si | 8 | {md['ps']:.1f} | {md['T_mean_K']:.0f} ± {md['T_std_K']:.0f} |" in text
    ph = imaginary_summary(out / "a-si" / "phonons.h5")
    assert f"| a-Si | {ph['n_modes']} | {', '.join(map(str, ph['counts']))} |" in text
    assert "rms bond-angle deviation from tetrahedral" in text
    # the a-Si phonon route's relaxed cell, as its phonons file holds it, against the MD frame
    # it started from
    from ase.cell import Cell

    from mlff_ins.data.h5md import read_frame
    from mlff_ins.hdf5_files import open_self_contained
    with open_self_contained(out / "a-si" / "phonons.h5") as f:
        relaxed = Cell(f["structure/lattice"][()])
    a, b, c = relaxed.lengths()
    n_asi = len(read_frame(out / "a-si" / "md.h5md"))
    assert (f"the relaxed one has lengths {a:.2f}, {b:.2f}, {c:.2f} Å" in text
            and f"({relaxed.volume / n_asi:.2f} Å³ per atom; the MD's last frame, where it "
                f"started: {read_frame(out / 'a-si' / 'md.h5md').get_volume() / n_asi:.2f})"
            in text)
    assert "the MD runs driven by member(s) 0 of it" in text
    # the command that makes this study, with the options it was planned with
    assert ("this study is `mlff-ins demo --full --model si-reference --size smoke "
            "--md-members 0 -o study`") in text
    assert len(timings) == len(study.steps)
    # a second run finds every step done (MD runs too: recorded in done.json) and runs nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".h5", ".json")
              and p.name not in ("timings.json", "study.json", "done.json")}
    log2 = []
    timings2 = run_study(study, log=log2.append)
    # a finished MD run is not started again (not even to find it finished); its time stays
    assert not any("$ mlff-ins md " in m for m in log2)
    for step in (s for s in study.steps if s.resume):
        assert timings2[step.name] == timings[step.name]
    done = [m for m in log2 if m.endswith(": done")]
    assert len(done) == len([s for s in study.steps if s.outputs])
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before
    # study.json keeps the code of each run
    runs = json.loads((out / "study.json").read_text())["runs"]
    from mlff_ins import __version__
    assert len(runs) == 2 and all(r["mlff_ins"] == __version__ for r in runs)
    # and the device its models ran on (a study may move to a GPU when resumed)
    assert [r["device"] for r in runs] == ["cpu", "cpu"] and ", models on cpu" in text
    # and the digest of its sources, which names the code where a commit can mislead
    from mlff_ins.casestudy import source_digest
    assert {r["source_sha256"] for r in runs} == {source_digest()}
    assert f", sources {source_digest()}" in text
    # a comparison made again (removed, as to redo it with a new predictor) makes the report
    # again, and nothing else runs (but the glass check, which makes no file and always runs)
    (out / "vacancy" / "compare_s_e" / "metrics.json").unlink()
    report_before = (out / "report.md").stat().st_mtime_ns
    log3 = []
    run_study(study, log=log3.append)
    ran = [m for m in log3 if m.startswith("[") and not m.endswith(": done")]
    assert [m.split("] ")[1] for m in ran] == ["a-Si: check that the quench made a glass",
                                               "vacancy: compare s_e (compare_s_e)", "report"], ran
    assert (out / "report.md").stat().st_mtime_ns > report_before
    # the folder belongs to this model and size: another is refused before anything runs
    from mlff_ins.errors import InputError
    with pytest.raises(InputError, match="holds a study with another size \\(size smoke: "
                                         "production_ps = 0.4, here 0.8\\)"):
        run_study(plan(out, None, replace(SMOKE, production_ps=0.8), md_members=[0]),
                  log=log2.append)
    with pytest.raises(InputError, match="holds a study with another set of MD members"):
        run_study(plan(out, None, SMOKE), log=log2.append)
    # a study recorded before a size field existed: the field reads as its default, which is
    # the recording version's behaviour (md_blocks: default 1, as here); a field whose default
    # differs from this size's (equilibrate_thermostat: bussi, here langevin) is another size
    record = json.loads((out / "study.json").read_text())
    recorded = json.dumps(record)
    # the shipped bundle is recorded by its name, so the folder moves with the repository; the
    # absolute folder an earlier version recorded is the same model
    from mlff_ins.model.shipped import SHIPPED
    assert record["model"] == "si-reference"
    (out / "study.json").write_text(json.dumps({**record, "model": str(SHIPPED["si-reference"])}))
    run_study(study, log=[].append)
    assert SMOKE.md_blocks == 1 and SMOKE.equilibrate_thermostat == "langevin"
    del record["size"]["md_blocks"]
    (out / "study.json").write_text(json.dumps(record))
    log_old = []
    run_study(study, log=log_old.append)
    assert not any("$ mlff-ins " in m for m in log_old)
    del record["size"]["equilibrate_thermostat"]
    (out / "study.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match="another size \\(size smoke: equilibrate_thermostat = "
                                         "bussi, here langevin\\)"):
        run_study(study, log=log_old.append)
    (out / "study.json").write_text(recorded)
    # the model is recorded by its bundle's digest too: the same name with another bundle (a
    # newer shipped model) is another model; a study recorded before the digest was, is taken
    from mlff_ins.model.shipped import bundle_digest
    record = json.loads(recorded)
    assert record["model_sha256"] == bundle_digest("si-reference") is not None
    assert f"bundle sha256 {record['model_sha256']}" in (out / "report.md").read_text()
    (out / "study.json").write_text(json.dumps({**record, "model_sha256": "0" * 16}))
    with pytest.raises(InputError, match="another version of si-reference \\(bundle sha256 "
                                         f"0{{16}}, here {record['model_sha256']}\\)"):
        run_study(study, log=log_old.append)
    del record["model_sha256"]
    (out / "study.json").write_text(json.dumps(record))
    log_old = []
    run_study(study, log=log_old.append)
    assert any("does not record which version of si-reference" in m for m in log_old)
    assert not any("$ mlff-ins " in m for m in log_old)
    assert json.loads((out / "study.json").read_text())["model_sha256"] == bundle_digest(
        "si-reference")
    (out / "study.json").write_text(recorded)
    # a finished MD's trajectory lost (they are not kept in git): refused before anything runs,
    # since a new run would be another trajectory than its spectra and phonons were made from
    trajectory = (out / "a-si" / "md.h5md").read_bytes()
    (out / "a-si" / "md.h5md").unlink()
    log_lost = []
    with pytest.raises(InputError, match="a-si/md.h5md: the trajectory of the finished step "
                                         "'a-Si: MD at 300 K' is missing"):
        run_study(study, log=log_lost.append)
    assert not any("$ mlff-ins " in m for m in log_lost)
    (out / "a-si" / "md.h5md").write_bytes(trajectory)
    # --structures: the shared steps and the named structures' only; the report waits
    (out / "vacancy" / "difference.h5").unlink()
    (out / "report.md").unlink()
    log3 = []
    run_study(study, structures=["vacancy"], log=log3.append)
    assert (out / "vacancy" / "difference.h5").exists() and not (out / "report.md").exists()
    assert any(m.endswith("report: left for a run with every structure") for m in log3)
    with pytest.raises(InputError, match="--structures glass: not a structure of the study"):
        run_study(study, structures=["glass"], log=log3.append)
    with pytest.raises(InputError, match="--step and --structures: give one of them"):
        run_study(study, only="report", structures=["c-Si"], log=log3.append)
    # a step of the named structure that reads what another structure makes waits for it
    # (at this size the vacancy's perfect reference is the c-Si MD)
    (out / "c-si" / "ins_md.h5").unlink()
    (out / "vacancy" / "difference.h5").unlink()
    run_study(study, structures=["vacancy"], log=log3.append)
    assert any(m.endswith("vacancy: difference from the perfect crystal: left for a run with "
                          "c-Si") for m in log3)
    assert not (out / "vacancy" / "difference.h5").exists()
    run_study(study, log=log3.append)
    assert (out / "report.md").exists()
    # --prune: the trajectories and phonon files go (no unfinished step reads them), spectra
    # stay; the study stays done, and the report's MD and imaginary-mode rows come from the
    # summaries recorded in done.json
    from mlff_ins.casestudy import prune
    from mlff_ins.casestudy_report import _run_lines
    rows = _run_lines(out, SMOKE.temperature_K)
    spectra = {p: p.read_bytes() for p in out.rglob("ins_*.h5")}
    freed = prune(study, min_bytes=0, log=log3.append)
    assert freed > 0 and not list(out.rglob("*.h5md"))
    assert not list(out.rglob("phonons*.h5")) and not list(out.rglob("*_phonopy_params.yaml"))
    assert all(p.read_bytes() == b for p, b in spectra.items())
    assert _run_lines(out, SMOKE.temperature_K) == rows
    assert any(r.startswith("| c-Si | 8 |") for r in rows)
    log4 = []
    run_study(study, log=log4.append)
    assert len([m for m in log4 if m.endswith(": done")]) == len(
        [s for s in study.steps if s.outputs])
    # a step that needs a pruned file says so (here: the a-Si phonons' INS, made again)
    (out / "a-si" / "ins_phonons.h5").unlink()
    with pytest.raises(InputError, match="reads a-si/phonons.h5, removed by --prune"):
        run_study(study, log=log4.append)


def test_a_full_size_study_stops_when_its_quench_left_a_crystal(tmp_path):
    """The glass check after the a-Si MD: a full-size study whose cell is still a crystal
    (98 % 4-fold, angles spread < 6°) stops there with one line; the quick size goes on (its
    64-atom quench is known to stay crystalline; the report says so); a glass passes."""
    from mlff_ins.casestudy import glass_check
    from mlff_ins.errors import InputError

    crystal = {"coordination": {"fraction_4fold": 1.0}, "bond_angles": {"std_deg": 2.9}}
    glass = {"coordination": {"fraction_4fold": 0.9}, "bond_angles": {"std_deg": 10.5}}
    for size, structure, stops in (("full", crystal, True), ("quick", crystal, False),
                                   ("full", glass, False)):
        study = plan(tmp_path / size, None, SIZES[size])
        (study.out / "a-si").mkdir(parents=True, exist_ok=True)
        (study.out / "a-si" / "structure.json").write_text(json.dumps(structure))
        if stops:
            with pytest.raises(InputError, match="the melt-quench left a crystal \\(100 % "
                                                 "4-fold, bond angles spread 2.9°\\)"):
                glass_check(study)
        else:
            glass_check(study)


def test_the_vacancy_is_set_against_md_of_its_own_perfect_cell():
    """Where the c-Si MD cell is not the vacancy cell's perfect cell (full size: 512 vs 216
    atoms), the perfect 216-atom cell gets its own MD, under the crystal protocol and with the
    vacancy MD's blocks, and the difference uses it; c-Si's spectra then take the whole run's
    window. Where the cells are the same (quick size), the c-Si MD serves, with the blocks."""
    from mlff_ins.casestudy import perfect_md_spectra

    full = plan("out", "model", SIZES["full"])
    by_name = {st.name: st for st in full.steps}
    md = by_name["vacancy: MD of the perfect cell"].argv
    assert md[1] == "structures/c-si_216.xyz" and "protocols/production.yaml" in md
    spectra = by_name["vacancy: spectra from the perfect cell's MD"].argv
    blocks = ["--blocks", str(SIZES["full"].md_blocks)]
    assert " ".join(blocks) in " ".join(spectra)
    assert " ".join(blocks) in " ".join(by_name["vacancy: spectra from MD"].argv)
    assert "--blocks" not in by_name["c-Si: spectra from MD"].argv
    assert perfect_md_spectra(SIZES["full"]) == "vacancy/perfect_ins_md.h5"
    names = [st.name for st in full.steps]
    assert (names.index("vacancy: spectra from the perfect cell's MD")
            < names.index("vacancy: difference from the perfect crystal"))
    quick = plan("out", "model", SIZES["quick"])
    assert not any("perfect cell's MD" in st.name for st in quick.steps)
    assert perfect_md_spectra(SIZES["quick"]) == "c-si/ins_md.h5"


def test_imaginary_modes_leave_out_the_acoustic_modes_at_gamma(tmp_path):
    """Counts per member on a hand-made mesh: at Γ the three modes nearest zero are the
    acoustic ones, whatever their sign; elsewhere every mode below -0.05 THz counts, where the
    supercell holds several cells. A cell that is its own supercell has force constants for Γ
    alone: only Γ counts (the other points are an interpolation over one cell)."""
    import h5py

    from mlff_ins.casestudy_report import imaginary_summary

    def write(path, supercell):
        with h5py.File(path, "w") as f:
            f["structure/supercell_matrix"] = supercell
            f["structure/primitive_matrix"] = -np.eye(3)[[0, 2, 1]]   # same cell, permuted
            f["mesh/qpoints"] = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
            f["mesh/frequency_THz"] = np.array([
                [[-0.2, -0.01, 0.0, -1.5, 5.0, 5.0], [-0.3, 1.0, 2.0, 3.0, 4.0, 5.0]],
                [[0.0, 0.0, 0.0, 4.0, 5.0, 5.0], [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]]])
        return path

    r = imaginary_summary(write(tmp_path / "crystal.h5", 2 * np.eye(3, dtype=int)))
    # member 0: Γ's acoustic three are -0.2, -0.01, 0.0 (nearest zero), -1.5 counts; X: -0.3
    assert r == {"counts": [2, 0], "n_modes": 12, "lowest_THz": -1.5}
    r = imaginary_summary(write(tmp_path / "own.h5", np.eye(3, dtype=int)))
    assert r == {"counts": [1, 0], "n_modes": 6, "lowest_THz": -1.5}


def test_half_maximum_range_of_a_band_is_that_of_the_analytic_band():
    """A Gaussian TA band (20 meV, σ 3 meV) falls to half at 20 ∓ σ√(2 ln 2) (linear
    interpolation on a 0.1 meV grid: within 0.002 meV); a TO band whose low side stays above
    half in its window (an LO shoulder) has no low end there. On a flat-topped band (1 from 17
    to 21 meV, Gaussian flanks) a 1 % ripple puts the maximum at either end of the top, while
    the half-maximum range stays within 0.05 meV of its analytic 17 - 3.53 and 21 + 3.53."""
    from mlff_ins.casestudy_report import vdos_half_maximum, vdos_peaks

    e = np.arange(0.0, 100.0, 0.1)
    w = np.sqrt(2 * np.log(2))
    to = np.maximum(np.exp(-0.5 * ((e - 58.0) / 2.0) ** 2), 0.6 * (e > 40) * (e < 58))
    got = vdos_half_maximum(e, np.exp(-0.5 * ((e - 20.0) / 3.0) ** 2) + to)
    assert got["TA"] == pytest.approx((20.0 - 3 * w, 20.0 + 3 * w), abs=2e-3)
    assert got["TO"][0] is None and got["TO"][1] == pytest.approx(58.0 + 2 * w, abs=2e-3)
    flat = np.where(e < 17, np.exp(-0.5 * ((e - 17) / 3) ** 2),
                    np.where(e > 21, np.exp(-0.5 * ((e - 21) / 3) ** 2), 1.0))
    maxima = []
    for sign in (1, -1):
        rippled = flat * (1 + 0.01 * sign * (e - 19) / 2 * (abs(e - 19) <= 2))
        maxima.append(vdos_peaks(e, rippled)["TA"])
        assert vdos_half_maximum(e, rippled)["TA"] == pytest.approx((17 - 3 * w, 21 + 3 * w),
                                                                    abs=0.05)
    assert maxima == pytest.approx([21.0, 17.0], abs=0.051)


def test_a_peak_without_partner_fails_the_peak_target():
    from mlff_ins.casestudy_report import TARGET_COMPARISON, _target_lines

    rec = {"structure": "c-Si", "kind": "s_e", "comparison": TARGET_COMPARISON, "a": "md",
           "b": "phonons", "mse": 0.005, "peak_shift_meV": 0.4, "peaks_unmatched_a": [],
           "peaks_unmatched_b": [31.2]}
    line = next(x for x in _target_lines([rec]) if x.startswith("- c-Si"))
    assert "mse 0.005 (target ≤ 0.01: met)" in line
    assert "peak_shift_meV 0.4, and 1 peak(s) without a partner: md none, phonons 31.2 meV " \
           "(target ≤ 1: NOT met)" in line
    rec["peaks_unmatched_b"] = []
    line = next(x for x in _target_lines([rec]) if x.startswith("- c-Si"))
    assert "peak_shift_meV 0.4 (target ≤ 1: met)" in line


def _stages(tmp_path, size):
    import yaml

    from mlff_ins.casestudy import _protocols
    from mlff_ins.md.protocol import load_protocol
    from mlff_ins.md.run import MDOptions

    path = tmp_path / "production.yaml"
    path.write_text(yaml.safe_dump(_protocols(size)["production"]))
    return dict(load_protocol(path, MDOptions()))


@pytest.mark.parametrize("size", ["full", "quick"])
def test_equilibration_lasts_ten_thermostat_times(tmp_path, size):
    """A crystal started at rest positions must get back the kinetic energy it loses to the
    potential before NVE production: at 2 time constants the quick size's production ran at
    220 K for 300 K (see StudySize.equilibrate_tdamp_fs). Langevin's time constant is
    1/friction."""
    stages = _stages(tmp_path, SIZES[size])
    equilibrate = stages["equilibrate"]
    assert equilibrate.thermostat == "langevin" and stages["production"].ensemble == "nve"
    assert SIZES[size].equilibrate_ps * 1000.0 >= 10 / equilibrate.friction_per_fs


class _Einstein:
    """Each atom in its own isotropic harmonic well: 3N uncoupled modes, which exchange no
    energy among themselves (the extreme of a nearly harmonic crystal's slow modes)."""

    def __init__(self, atoms, energy_meV):
        from ase import units

        self.r0 = atoms.positions.copy()
        omega = energy_meV * 1e-3 * units._e / units._hbar * 1e-15 / units.fs  # rad / ASE time
        self.k = atoms.get_masses()[:, None] * omega ** 2                     # eV / Å²

    def get_forces(self, atoms):
        return -self.k * (atoms.positions - self.r0)

    def get_potential_energy(self, atoms, force_consistent=False):
        return float(0.5 * (self.k * (atoms.positions - self.r0) ** 2).sum())


@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_the_equilibration_gives_every_mode_its_share(tmp_path, thermostat):
    """The full size's equilibration (2 ps at 300 K) on 300 uncoupled 10 meV oscillators that
    start with all their kinetic energy in x: Langevin brings the y and z modes to kT/2 each (the
    time average over the last picosecond, within 25 %: its canonical spread is about 8 % per
    direction, sampled over ~10 independent times), where Bussi, one factor on all velocities,
    leaves them at rest. This is why the study equilibrates with Langevin."""
    from ase import Atoms, units

    from mlff_ins.md.run import make_dynamics

    opts = _stages(tmp_path, replace(SIZES["full"], equilibrate_thermostat=thermostat))[
        "equilibrate"]
    n = 300
    rng = np.random.default_rng(3)
    atoms = Atoms("Si" * n, positions=rng.uniform(0, 30, (n, 3)), cell=[30, 30, 30], pbc=True)
    atoms.calc = _Einstein(atoms, 10.0)
    v = np.zeros((n, 3))
    v[:, 0] = rng.normal(size=n)
    v[:, 0] -= v[:, 0].mean()
    atoms.set_velocities(v)
    # all of 3N kT/2 in x: three times x's share
    atoms.set_velocities(v * np.sqrt(3 * n * units.kB * 300.0 / (atoms.get_masses()[:, None]
                                                                   * v ** 2).sum()))
    dyn = make_dynamics(atoms, opts, 0)
    steps = opts.steps - opts.ramp_start_step
    kinetic = []
    dyn.attach(lambda: kinetic.append(0.5 * (atoms.get_masses()[:, None]
                                             * atoms.get_velocities() ** 2).sum(axis=0)))
    dyn.run(steps)
    share = np.mean(kinetic[len(kinetic) // 2:], axis=0) / (0.5 * n * units.kB * 300.0)
    if thermostat == "langevin":
        np.testing.assert_allclose(share, 1.0, rtol=0.25)
    else:
        assert share[1] == share[2] == 0.0 and share[0] > 2.0


@pytest.mark.parametrize("command,structure,name,output", [
    ("md", "a-Si", "a-Si: melt-quench MD", "a-si/quench.h5md"),
    ("phonons", "c-Si", "c-Si: phonons", "c-si/phonons.h5")])
def test_a_stopped_md_step_keeps_the_time_it_ran(tmp_path, monkeypatch, command, structure,
                                                 name, output):
    """An MD or model phonons step stopped mid-run (SIGTERM and Ctrl-C raise
    KeyboardInterrupt) records the seconds it ran in timings.json, and each later run of it
    adds its own (both commands continue a stopped run): the report's time of a study spread
    over sittings (or machines) is the sum, not the last sitting's."""
    import time

    import mlff_ins.cli as cli

    study = plan(tmp_path / "study", None, SMOKE, device="cpu", md_members=[0])
    real = cli.run_echoed
    ran = []

    def stopped(argv, log):
        if argv[0] != command:
            return real(argv, log)
        ran.append(argv)
        time.sleep(0.3)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_echoed", stopped)
    for sitting in (1, 2):
        with pytest.raises(KeyboardInterrupt):
            run_study(study, structures=[structure], log=lambda m: None)
        timings = json.loads((study.out / "timings.json").read_text())
        # the step is the first of its command in a sitting of that structure; 0.3 s per
        # sitting, plus the call's own overhead (well under a second)
        assert [a[a.index("-o") + 1] for a in ran] == [str(study.out / output)] * sitting
        assert 0.3 * sitting <= timings[name] < 0.3 * sitting + 1.0


def test_a_killed_study_stops_as_interrupted_and_keeps_its_md_time(tmp_path, monkeypatch,
                                                                    capsys):
    """`kill PID` (SIGTERM) of `mlff-ins demo --full` during an MD step: the real md stops as
    with Ctrl-C (its trajectory closed, resumable), the study reports an interruption (exit 130,
    not a failed step) and keeps the seconds the MD ran. Before, SIGTERM ended the process at
    once and the sitting's MD time was lost."""
    import os
    import signal

    import mlff_ins.casestudy as casestudy
    import mlff_ins.md.run as md_run

    real_make = md_run.make_dynamics

    def terminated_after_steps(atoms, opts, step):
        dyn = real_make(atoms, opts, step)
        calls = []

        def kill():
            calls.append(1)
            if len(calls) == 4:
                os.kill(os.getpid(), signal.SIGTERM)
        dyn.attach(kill, interval=1)
        return dyn

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the test: the study did not handle it")

    monkeypatch.setitem(casestudy.SIZES, "quick", SMOKE)
    monkeypatch.setattr(md_run, "make_dynamics", terminated_after_steps)
    old = signal.signal(signal.SIGTERM, unhandled)
    out = tmp_path / "study"
    try:
        rc = main(["demo", "--full", "--size", "quick", "--md-members", "0", "--structures",
                   "a-Si", "--device", "cpu", "-o", str(out)])
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "interrupted" in err and "failed" not in err
    timings = json.loads((out / "timings.json").read_text())
    assert timings["a-Si: melt-quench MD"] > 0.0
    assert (out / "a-si" / "quench.h5md").exists()
    assert "a-Si: melt-quench MD" not in json.loads((out / "done.json").read_text())["steps"]


def test_the_source_digest_follows_the_code_not_its_place(tmp_path):
    """source_digest: a copy of the package's Python files elsewhere has the digest of the
    package itself; a changed byte in one file, or a renamed file, changes it; files that are
    not Python (data, caches) do not count."""
    import shutil

    import mlff_ins
    from mlff_ins.casestudy import source_digest

    package = Path(mlff_ins.__file__).parent
    copy = tmp_path / "copy"
    for path in package.rglob("*.py"):
        target = copy / path.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert source_digest(copy) == source_digest()
    (copy / "resources").mkdir(exist_ok=True)
    (copy / "resources" / "weights.bin").write_bytes(b"\0" * 10)
    assert source_digest(copy) == source_digest()
    cli = copy / "cli.py"
    cli.write_bytes(cli.read_bytes() + b" ")
    changed = source_digest(copy)
    assert changed != source_digest()
    cli.rename(copy / "cli_renamed.py")
    assert source_digest(copy) not in (changed, source_digest())
