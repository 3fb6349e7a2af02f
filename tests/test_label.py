"""Labelling: results equal the calculator's, resume after a kill, SCF refusal, CP2K settings."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write
from ase import units

from mlff_ins.data.label import (CP2KConvergence, build_calculator, label_frames,
                                 read_calculator_spec)
from mlff_ins.errors import InputError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _frames(n):
    out = []
    for i in range(n):
        a = bulk("Cu", "fcc", 3.61, cubic=True) * (2, 2, 1)
        a.rattle(0.05, seed=i)
        out.append(a)
    return out


def _slow_yaml(tmp_path, delay):
    p = tmp_path / "slow.yaml"
    p.write_text(f"calculator: slow_emt:SlowEMT\nparameters: {{delay_s: {delay}}}\n")
    return p


def test_label_matches_calculator(tmp_path):
    frames = _frames(4)
    write(tmp_path / "in.xyz", frames)
    report = label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml",
                          tmp_path / "out.xyz", progress=False)
    assert report.labelled == [0, 1, 2, 3]
    out = read(tmp_path / "out.xyz", ":")
    for a, ref in zip(out, read(tmp_path / "in.xyz", ":")):
        ref = ref.copy()
        ref.calc = EMT()
        # extxyz stores 8 decimals: agreement to that precision
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-8)
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-7)
        np.testing.assert_allclose(a.get_stress(), ref.get_stress(), atol=1e-7)
    # a second run has nothing to do
    again = label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml",
                         tmp_path / "out.xyz", progress=False)
    assert again.labelled == [] and again.skipped_done == 4
    # EMT writes no files: no OUTPUT.work folder is left behind (CP2K keeps its restart files)
    assert not (tmp_path / "out.xyz.work").exists()


def test_label_keeps_spin_and_charge_inputs_and_drops_a_stress_not_computed(tmp_path):
    """The frame's initial magnetic moments and charges reach the calculator (a spin-polarised
    DFT code reads them); a stress the calculator did not compute (CP2K's stress_tensor: false
    answers zeros through ASE) is not written as a label."""
    frames = _frames(2)
    for a in frames:
        a.set_initial_magnetic_moments(np.full(len(a), 2.2))
        a.set_initial_charges(np.full(len(a), 0.5))
    write(tmp_path / "in.xyz", frames)
    for flag, has_stress in (("true", True), ("false", False)):
        spec = tmp_path / f"probe_{flag}.yaml"
        spec.write_text(f"calculator: probe_calc:ProbeEMT\nparameters: {{stress_tensor: {flag}}}\n")
        out = tmp_path / f"out_{flag}.xyz"
        label_frames(tmp_path / "in.xyz", spec, out, progress=False)
        for a, ref in zip(read(out, ":"), frames):
            plain = ref.copy()
            plain.calc = EMT()
            # 16 atoms x (2.2 + 10 x 0.5) = 115.2 eV on top of EMT's energy
            assert a.get_potential_energy() == pytest.approx(
                plain.get_potential_energy() + 115.2, abs=1e-6)
            assert ("stress" in a.calc.results) == has_stress


def test_label_resumes_after_kill(tmp_path):
    n = 12
    write(tmp_path / "in.xyz", _frames(n))
    out = tmp_path / "out.xyz"
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "mlff_ins.cli", "label", str(tmp_path / "in.xyz"),
           "--calculator", str(_slow_yaml(tmp_path, 0.4)), "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.read_text().count("Lattice=") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = out.read_text().count("Lattice=")
    assert 3 <= n_before < n, "the kill must land mid-run"
    # simulate the worst case too: a kill in the middle of writing a frame
    with open(out, "a") as fh:
        fh.write("16\nLattice=\"7.2 0 0 0 7.2 0 0 0 3.6\" Properties=species:S:1:pos:R:3 pbc=\"T T T\"\n"
                 "Cu 0.0 0.0 0.0\nCu 1.8 1.8")
    res = subprocess.run([*cmd[:-2], "-o", str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    done = read(out, ":")
    idx = [a.info["source_index"] for a in done]
    assert sorted(idx) == list(range(n)), idx  # nothing lost, nothing duplicated
    ref = read(tmp_path / "in.xyz", ":")
    for a in done:
        r = ref[a.info["source_index"]]
        r.calc = EMT()
        np.testing.assert_allclose(a.positions, r.positions, atol=1e-8)
        assert a.get_potential_energy() == pytest.approx(r.get_potential_energy(), abs=1e-9)


def test_a_killed_label_run_closes_its_calculator(tmp_path):
    """`kill PID` (SIGTERM) stops a labelling run as Ctrl-C does: the calculator is closed (CP2K's
    MPI ranks had outlived a killed run and slowed the next one), the message is one line, the
    frames done are kept and a rerun labels the rest."""
    n = 12
    write(tmp_path / "in.xyz", _frames(n))
    out, marker = tmp_path / "out.xyz", tmp_path / "closed"
    yaml = tmp_path / "slow.yaml"
    yaml.write_text("calculator: slow_emt:SlowEMT\n"
                    f"parameters: {{delay_s: 0.4, closed_marker: '{marker}'}}\n")
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [sys.executable, "-m", "mlff_ins.cli", "label", str(tmp_path / "in.xyz"),
           "--calculator", str(yaml), "-o", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists()
                                          and out.read_text().count("Lattice=") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].strip()
    assert proc.returncode == 130, err
    assert marker.read_text() == "closed\n"
    # the progress bar's lines, then one line of message, no traceback
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err, err
    kept = out.read_text().count("Lattice=")
    assert 2 <= kept < n
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted(a.info["source_index"] for a in read(out, ":")) == list(range(n))


def test_label_refuses_changed_input(tmp_path):
    write(tmp_path / "in.xyz", _frames(2))
    label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml", tmp_path / "out.xyz",
                 progress=False)
    write(tmp_path / "in.xyz", _frames(3)[1:])
    with pytest.raises(InputError, match="frame 0 does not match frame 0"):
        label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml",
                     tmp_path / "out.xyz", progress=False)


@pytest.mark.parametrize("kind", ["poscar", "foreign_extxyz"])
def test_label_refuses_an_output_it_did_not_write(tmp_path, capsys, kind):
    """An existing -o that is not a log of `label` (a POSCAR, an extxyz of another tool) is
    refused with one line naming it, and left byte for byte as it was."""
    from mlff_ins.cli import main

    write(tmp_path / "in.xyz", _frames(2))
    out = tmp_path / ("POSCAR" if kind == "poscar" else "data.xyz")
    write(out, _frames(1)[0], format="vasp" if kind == "poscar" else "extxyz")
    before = out.read_bytes()
    code = main(["label", str(tmp_path / "in.xyz"), "--calculator",
                 str(REPO / "configs/label/emt.yaml"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and str(out) in err and "not written by `mlff-ins label`" in err
    assert len(err.splitlines()) == 1
    assert out.read_bytes() == before


def test_label_resume_refuses_another_calculator_config(tmp_path, capsys):
    """Resuming with an edited calculator YAML would mix levels of theory: refused, naming both
    hashes, unless --allow-config-change."""
    from mlff_ins.cli import main

    write(tmp_path / "in.xyz", _frames(3))
    cfg = tmp_path / "emt.yaml"
    cfg.write_text("calculator: emt\n")
    out = tmp_path / "out.xyz"
    assert main(["label", str(tmp_path / "in.xyz"), "--calculator", str(cfg), "-o", str(out),
                 "--max-frames", "1"]) == 0
    old = read_calculator_spec(cfg).sha256[:16]
    cfg.write_text("calculator: emt\nparameters: {asap_cutoff: true}\n")
    new = read_calculator_spec(cfg).sha256[:16]
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["label", str(tmp_path / "in.xyz"), "--calculator", str(cfg), "-o",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert old in err and new in err and "--allow-config-change" in err
    assert out.read_bytes() == before
    assert main(["label", str(tmp_path / "in.xyz"), "--calculator", str(cfg), "-o", str(out),
                 "--allow-config-change"]) == 0
    hashes = [a.info["label_config_sha256"] for a in read(out, ":")]
    assert hashes == [old, new, new]


def test_label_config_identity_is_the_calculation_not_the_text(tmp_path):
    """Comments and the launch command (MPI ranks on another machine) do not change what a
    calculator YAML computes: same identity; a changed parameter does. Labels recorded before
    (the YAML text's hash) still resume with the same file."""
    base = ("calculator: cp2k\nparameters:\n  command: mpirun -np 2 cp2k_shell.psmp\n"
            "  xc: PBE\n  cutoff_Ry: 400\n")
    variants = {
        "same": base,
        "comment": "# 16 cores now\n" + base.replace("-np 2", "-np 16"),
        "physics": base.replace("cutoff_Ry: 400", "cutoff_Ry: 600"),
    }
    specs = {}
    for name, text in variants.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        specs[name] = read_calculator_spec(tmp_path / f"{name}.yaml")
    assert specs["comment"].sha256 == specs["same"].sha256
    assert specs["physics"].sha256 != specs["same"].sha256
    assert specs["comment"].matches(specs["same"].sha256[:16])
    assert not specs["physics"].matches(specs["same"].sha256[:16])
    # an older label log recorded the text's hash: the unchanged file still matches it
    assert specs["same"].matches(specs["same"].text_sha256[:16])
    assert not specs["comment"].matches(specs["same"].text_sha256[:16])


def test_cp2k_cutoff_is_converted_and_checked(tmp_path):
    spec = read_calculator_spec(REPO / "configs/label/cp2k_si.yaml")
    calc = build_calculator(spec, tmp_path / "w")
    assert calc.parameters["cutoff"] == pytest.approx(400 * units.Rydberg)
    bad = tmp_path / "bad.yaml"
    bad.write_text("calculator: cp2k\nparameters: {cutoff: 300}\n")
    with pytest.raises(InputError, match="cutoff 300 eV"):
        build_calculator(read_calculator_spec(bad), tmp_path / "w2")
    bad.write_text("calculator: cp2k\nparameters: {cutoff: 400 Ry}\n")
    with pytest.raises(InputError, match="bad.yaml: CP2K cutoff '400 Ry' is not a number"):
        build_calculator(read_calculator_spec(bad), tmp_path / "w3")


def test_cp2k_convergence_verdict(tmp_path):
    class Fake:
        label = str(tmp_path / "cp2k")
    check = CP2KConvergence(Fake())
    out = tmp_path / "cp2k.out"
    out.write_text("  *** SCF run converged in    12 steps ***\n")
    check.before()
    with open(out, "a") as fh:
        fh.write("  Leaving inner SCF loop after reaching     3 steps.\n"
                 "  *** SCF run NOT converged ***\n")
    assert check.after() == (False, None)
    check.before()
    with open(out, "a") as fh:
        fh.write("  *** SCF run converged in    17 steps ***\n")
    assert check.after() == (True, 17)


@pytest.mark.skipif(shutil.which("cp2k_shell.psmp") is None,
                    reason="CP2K not installed (apt-get install cp2k cp2k-data)")
def test_cp2k_unconverged_frame_is_refused(tmp_path):
    """A real CP2K run whose SCF is cut off after 2 steps must be refused with its frame number."""
    from ase import Atoms
    spec = (REPO / "configs/label/cp2k_si.yaml").read_text()
    spec = spec.replace("MAX_SCF 200", "MAX_SCF 2").replace("cutoff_Ry: 400", "cutoff_Ry: 150")
    (tmp_path / "cp2k2.yaml").write_text(spec)
    atoms = Atoms("Si2", positions=[[0, 0, 0], [1.36, 1.36, 1.36]],
                  cell=[[0, 2.73, 2.73], [2.73, 0, 2.73], [2.73, 2.73, 0]], pbc=True)
    write(tmp_path / "in.xyz", [atoms])
    report = label_frames(tmp_path / "in.xyz", tmp_path / "cp2k2.yaml", tmp_path / "out.xyz",
                          progress=False)
    assert report.labelled == []
    assert 0 in report.rejected and "SCF" in report.rejected[0]
    assert not (tmp_path / "out.xyz").exists() or (tmp_path / "out.xyz").read_text() == ""
    rec = [json.loads(line) for line in (tmp_path / "out.xyz.rejected.jsonl").read_text().splitlines()]
    assert rec[0]["frame"] == 0


@pytest.mark.skipif(shutil.which("cp2k_shell.psmp") is None,
                    reason="CP2K not installed (apt-get install cp2k cp2k-data)")
def test_shipped_cp2k_config_labels_a_cell(tmp_path):
    """The embedded data set's CP2K settings, unchanged, on a rattled 8-atom cell (~30 s), written
    into a folder whose path is longer than the 80 characters CP2K reads in its input."""
    atoms = bulk("Si", "diamond", 5.466, cubic=True)
    atoms.rattle(0.03, seed=1)
    write(tmp_path / "si8.xyz", atoms)
    deep = tmp_path / ("a_folder_with_a_long_name_" * 3)
    deep.mkdir()
    assert len(str(deep / "out.xyz.work" / "cp2k")) > 80
    report = label_frames(tmp_path / "si8.xyz", REPO / "configs/label/cp2k_si.yaml",
                          deep / "out.xyz", progress=False)
    assert report.labelled == [0] and not report.rejected, report.rejected
    assert (deep / "out.xyz.work" / "cp2k.out").exists()
    out = read(deep / "out.xyz")
    assert out.info["scf_converged"] and out.info["scf_steps"] < 60
    # a translation-invariant energy: forces sum to zero (eV/A)
    assert np.abs(out.get_forces().sum(axis=0)).max() < 1e-3
    assert np.abs(out.get_forces()).max() > 0.05  # the rattle produces real forces
    assert out.get_stress().shape == (6,)
    # the 4-valence-electron GTH Si: about -105.8 eV per atom in the crystal at this cutoff
    assert -108 < out.get_potential_energy() / len(out) < -103


def _descendants(pid: int) -> set[int]:
    """PIDs of every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie no container init reaps does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("cp2k_shell.psmp") is None or not Path("/proc").exists(),
                    reason="CP2K not installed (apt-get install cp2k cp2k-data)")
def test_a_killed_cp2k_labelling_leaves_no_cp2k_running(tmp_path):
    """`kill` of a CP2K labelling in the middle of an SCF: the run stops within seconds and takes
    mpirun and CP2K's ranks with it (they had outlived it: ASE terminated only the /bin/sh
    between them, then waited for the SCF to end)."""
    frames = []
    for k in range(3):
        atoms = bulk("Si", "diamond", 5.466, cubic=True) * (2, 2, 1)   # 32 atoms
        atoms.rattle(0.05, seed=k)
        frames.append(atoms)
    write(tmp_path / "si32.xyz", frames)
    out = tmp_path / "out.xyz"
    proc = subprocess.Popen([sys.executable, "-m", "mlff_ins.cli", "label",
                             str(tmp_path / "si32.xyz"), "--calculator",
                             str(REPO / "configs/label/cp2k_si.yaml"), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "out.xyz.work" / "cp2k.out"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "Diag." in log.read_text()):
        time.sleep(0.2)
    below = _descendants(proc.pid)
    assert any("cp2k_shell" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
               for p in below if Path(f"/proc/{p}/cmdline").exists()), "CP2K did not start"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    # an SCF of this cell takes ~20 steps of ~1 s here: stopping it, not waiting for it
    assert time.time() - t0 < 10, "waited for the SCF instead of stopping it"
    time.sleep(1)
    alive = [p for p in below if _running(p)]
    assert not alive, [Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in alive]


def test_a_second_labelling_run_on_the_same_output_is_refused(tmp_path, capsys):
    """While one `mlff-ins label` run holds OUTPUT, a second one is refused at once (it would
    label the same frames again); once the first is gone, labelling resumes."""
    from mlff_ins.atomic_io import exclusive_lock
    from mlff_ins.cli import main

    write(tmp_path / "in.xyz", [bulk("Cu", "fcc", 3.6), bulk("Cu", "fcc", 3.7)])
    out = tmp_path / "out.xyz"
    argv = ["label", str(tmp_path / "in.xyz"), "--calculator",
            str(REPO / "configs/label/emt.yaml"), "-o", str(out)]
    (tmp_path / "out.xyz.work").mkdir()
    with exclusive_lock(tmp_path / "out.xyz.work" / "label.lock", "held by the test"):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"{out}: another `mlff-ins label` run is writing it; wait for it "
                            f"to finish or stop it") and len(err.splitlines()) == 1
        assert not out.exists()
    assert main(argv) == 0
    assert len(read(out, ":")) == 2


def test_a_log_with_a_foreign_line_is_not_cut_and_a_cut_frame_is(tmp_path):
    """The labelled log is cut back only over an unfinished last frame (what a kill leaves); a
    whole line that starts no frame (a hand edit, two logs joined) is an error naming the line,
    and the frames after it are kept (before, they were silently cut off with it)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from mlff_ins.data.extxyz_log import append_frame, truncate_incomplete_tail

    frames = _frames(4)
    for a in frames:
        a.calc = SinglePointCalculator(a, energy=1.0, forces=np.zeros((len(a), 3)))
    log = tmp_path / "log.xyz"
    for a in frames[:2]:
        append_frame(log, a)
    good = log.read_bytes()
    with open(log, "ab") as fh:
        fh.write(b"# joined here\n")
    for a in frames[2:]:
        append_frame(log, a)
    before = log.read_bytes()
    line = good.count(b"\n") + 1
    with pytest.raises(InputError, match=f"{log}: line {line} is not"):
        truncate_incomplete_tail(log)
    assert log.read_bytes() == before
    # a frame cut mid-way (a kill while appending) is removed, the complete ones kept
    log.write_bytes(good + before[len(good) + 14:][:300])
    assert truncate_incomplete_tail(log) == 300 and log.read_bytes() == good


def test_a_rejection_cut_by_a_kill_does_not_swallow_the_next(tmp_path):
    """A kill while appending to .rejected.jsonl leaves a line without its newline; the next
    rejection starts a new line, so both later ones are read back (the cut one is lost)."""
    from mlff_ins.data.label import _reject, read_rejected

    path = tmp_path / "out.rejected.jsonl"
    path.write_text('{"frame": 0, "reason": "scf"}\n{"frame": 1, "rea')
    _reject(path, 2, "unconverged", {})
    _reject(path, 3, "too far", {})
    assert read_rejected(path) == {0: "scf", 2: "unconverged", 3: "too far"}


def test_a_frame_labelled_after_its_refusal_is_not_reported_refused(tmp_path):
    """A frame refused by one run and labelled by a later --retry-rejected run is done: later
    runs do not report it as refused (they once did, and exited 1)."""
    write(tmp_path / "in.xyz", _frames(3))
    out = tmp_path / "out.xyz"
    label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml", out, progress=False)
    (tmp_path / "out.xyz.rejected.jsonl").write_text(
        json.dumps({"frame": 1, "reason": "SCF did not converge"}) + "\n")
    again = label_frames(tmp_path / "in.xyz", REPO / "configs/label/emt.yaml", out,
                         progress=False)
    assert again.rejected == {} and again.skipped_done == 3
