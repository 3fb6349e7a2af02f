"""Training: resume after a kill, settings and options errors, the demo pieces."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime

import numpy as np
import pytest
from ase.io import read

from mlff_ins.cli import main
from mlff_ins.demo import check_labels
from mlff_ins.train.config import load_train_config
from mlff_ins.train.schedule import plateau_settings
from mlff_ins.errors import InputError


def test_train_resumes_after_kill(si_subset, tmp_path):
    """Two members side by side (--parallel-members 2): SIGKILL the run once both have a
    checkpoint; --resume continues each from its checkpoint, again side by side, after the run
    folder and the data file have moved (another checkout: the data is known by its hash).
    The members carry nequip's ZBL pair term (model.pair_potential), which must survive
    checkpointing, resuming and packaging."""
    out = tmp_path / "m"
    zbl = tmp_path / "zbl.yaml"
    zbl.write_text("model: {pair_potential: zbl}\n")
    cmd = [sys.executable, "-m", "mlff_ins.cli", "train", str(zbl), "--data", str(si_subset),
           "--preset", "tiny", "--epochs", "6", "--ensemble", "2", "--parallel-members", "2",
           "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    members = [out / "members" / f"member_{k}" for k in (0, 1)]
    deadline = time.time() + 300
    while time.time() < deadline and not all((m / "last.ckpt").exists() for m in members):
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its nequip-train children
    proc.wait()
    assert all((m / "last.ckpt").exists() for m in members), "no checkpoint before the kill"
    assert not (out / "bundle.json").exists()
    # without --resume the half-finished run is protected
    assert main(["train", str(zbl), "--data", str(si_subset), "--preset", "tiny", "--epochs",
                 "6", "--ensemble", "2", "-o", str(out)]) == 2
    # --resume may change the run length (here 2 epochs more), nothing else
    assert main(["train", str(zbl), "--data", str(si_subset), "--preset", "tiny", "--epochs", "6",
                 "--ensemble", "2", "--cutoff", "3.5", "-o", str(out), "--resume"]) == 2
    cmd[cmd.index("--epochs") + 1] = "8"
    moved, data = tmp_path / "elsewhere" / "m", tmp_path / "elsewhere" / "data.xyz"
    moved.parent.mkdir()
    shutil.copy(si_subset, data)
    shutil.move(out, moved)
    out, members = moved, [moved / "members" / f"member_{k}" for k in (0, 1)]
    cmd[cmd.index("--data") + 1], cmd[cmd.index("-o") + 1] = str(data), str(moved)
    # on another device too (here auto: cpu on a machine without a GPU; a run moved to a GPU
    # machine goes on there), and with a slower learning-rate decay (a patience of 40 epochs
    # cannot have lowered the rate in the epochs run so far)
    slower = tmp_path / "zbl_slower.yaml"
    slower.write_text("model: {pair_potential: zbl}\n"
                      "training: {lr_plateau: {patience: 40, threshold: 0.05}}\n")
    cmd[cmd.index(str(zbl))] = str(slower)
    res = subprocess.run(cmd + ["--resume", "--device", "auto"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "bundle.json").exists()
    change, = json.loads((out / "bundle.json").read_text())["lr_plateau_changes"]
    assert (change["from"]["patience"], change["to"]["patience"]) == (10, 40)
    assert sorted(change["members"]) == ["member_0", "member_1"]
    spans = []
    for m in members:
        logs = sorted((m / "logs").glob("version_*/metrics.csv"))
        assert len(logs) == 2
        col = _epoch_col(logs[1])
        rows = [line.split(",") for line in logs[1].read_text().splitlines()[1:]]
        epochs = [int(float(r[col])) for r in rows if r[col]]
        assert min(epochs) >= 1  # continued, not restarted from epoch 0
        assert max(epochs) == 7  # and went on to the new --epochs 8 (0-based epochs)
        spans.append(_last_train_span(m / "train.log"))
    # the two resumed members trained at the same time
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    launch = json.loads((out / "bundle.json").read_text())["launch_this_run"]
    assert launch["parallel_members"] == 2
    if "OMP_NUM_THREADS" not in os.environ:
        assert launch["torch_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
    assert "forces" in res.stdout and "meV/Å" in res.stdout
    from mlff_ins.model.calculator import _load_member, read_bundle

    for member in read_bundle(out)["members"]:
        model, _ = _load_member(out / member, "cpu")
        assert any(name.endswith("pair_potential") for name, _ in model.named_modules())


def _last_train_span(log):
    """(start, end) in seconds of the last nequip-train fit logged in ``log``."""
    stamps = {}
    for line in log.read_text().splitlines():
        for tag in ("TRAIN RUN START", "TRAIN RUN END"):
            if tag in line:
                stamps[tag] = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamps["TRAIN RUN START"], stamps["TRAIN RUN END"]


def _epoch_col(path):
    return path.read_text().splitlines()[0].split(",").index("epoch")


def test_config_overrides_and_errors(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ncutoff: 3.5\nmodel: {num_layers: 1}\n")
    cfg = load_train_config(cfg_file, overrides={"training.max_epochs": 3})
    assert cfg["cutoff"] == 3.5 and cfg["model"]["num_layers"] == 1
    assert cfg["model"]["num_features"] == 8 and cfg["training"]["max_epochs"] == 3
    assert cfg["data"] == str(tmp_path / "d.xyz")
    cfg_file.write_text("preset: tiny\ndata: d.xyz\nmodel: {num_layer: 1}\n")
    with pytest.raises(InputError, match="unknown option 'model.num_layer'"):
        load_train_config(cfg_file)
    # every ReduceLROnPlateau setting of the schedule, also one no preset sets (min_lr)
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ntraining: {lr_plateau: {min_lr: 1.0e-6}}\n")
    assert plateau_settings(load_train_config(cfg_file)["training"])["min_lr"] == 1e-6
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ntraining: {lr_plateau: {min_rate: 1}}\n")
    with pytest.raises(InputError, match="unknown option 'training.lr_plateau.min_rate' "
                                         r"\(known: factor, min_lr, patience, threshold\)"):
        load_train_config(cfg_file)
    with pytest.raises(InputError, match="--ensemble: must be at least 1"):
        load_train_config(preset="tiny", overrides={"data": "x.xyz", "ensemble": 0})
    with pytest.raises(InputError, match="no training data"):
        load_train_config(preset="tiny")
    # sizes nequip would fail on deep in its model builder (l_max -1: an IndexError inside a
    # hydra InstantiationException, checked by hand) are refused up front
    for key, bad in (("l_max", -1), ("num_layers", 0), ("num_features", 2.5),
                     ("num_bessels", True)):
        with pytest.raises(InputError, match=rf"model\.{key}: a whole number >= \d+ "
                                             rf"\(got {bad!r}\)"):
            load_train_config(preset="tiny", overrides={"data": "x.xyz", f"model.{key}": bad})
    # the learning-rate schedule reaches nequip's config as given
    from mlff_ins.train.nequip_config import nequip_config

    cfg_file.write_text("preset: small\ndata: d.xyz\ntraining: {lr_plateau: {patience: 7}}\n")
    cfg = load_train_config(cfg_file)
    nq = nequip_config(cfg, elements=["Si"], e0s={"Si": -1.0}, train_file=tmp_path / "a",
                       val_file=tmp_path / "b", test_file=tmp_path / "c", run_dir=tmp_path,
                       seed=0, has_stress=False)
    sched = nq["training_module"]["lr_scheduler"]["scheduler"]
    assert (sched["patience"], sched["threshold"], sched["factor"]) == (7, 0.001, 0.6)


def test_a_failed_trainer_is_reported_by_its_error_line_and_log_tail(tmp_path):
    """A nequip-train failure reaches the user as one headline naming the tool, the member and
    the log's last exception (with the cause hydra puts on the next line), then the log's last
    lines, indented; not as the package's own traceback."""
    from mlff_ins.errors import ToolFailed, last_error_line

    log = tmp_path / "train.log"
    lines = ["Epoch 0: 100%", "Traceback (most recent call last):",
             '  File "x.py", line 3, in build', "    raise IndexError('list index out of range')",
             "IndexError: list index out of range", "", "The above exception was the direct "
             "cause of the following exception:", "Traceback (most recent call last):",
             '  File "hydra/_internal/instantiate/_instantiate2.py", line 138, in _call_target',
             "hydra.errors.InstantiationException: Error in call to target "
             "'nequip.train.ema.EMALightningModule':", "IndexError('list index out of range')"]
    log.write_text("\n".join(lines) + "\n")
    assert last_error_line(lines) == (
        "hydra.errors.InstantiationException: Error in call to target "
        "'nequip.train.ema.EMALightningModule': IndexError('list index out of range')")
    assert last_error_line(lines[:5]) == "IndexError: list index out of range"
    assert last_error_line(["Epoch 3", "Killed"]) is None
    err = ToolFailed("nequip-train (exit 1)", tmp_path / "member_0", log, log.read_text(),
                     tail_lines=3)
    head, *rest = str(err).splitlines()
    assert head == (f"nequip-train (exit 1) failed for {tmp_path / 'member_0'}: "
                    f"{last_error_line(lines)}")
    assert rest == [f"last lines of {log}:", "  " + lines[-3], "  " + lines[-2],
                    "  " + lines[-1]]
    bare = ToolFailed("nequip-package (exit 9)", "m", log, "Killed\n")
    assert str(bare).splitlines()[0] == ("nequip-package (exit 9) failed for m: no error line "
                                         "in its log")


def test_a_second_training_in_one_run_folder_is_refused(tmp_path):
    """While one `mlff-ins train` holds a run folder, a second one (a --resume started beside
    it) stops before touching the folder, naming it."""
    from mlff_ins.atomic_io import exclusive_lock
    from mlff_ins.train.driver import train_bundle

    out = tmp_path / "run"
    cfg = load_train_config(preset="tiny", overrides={"data": str(tmp_path / "d.xyz")})
    with exclusive_lock(tmp_path / ".run.train.lock", "held by the test"):
        with pytest.raises(InputError, match="another `mlff-ins train` is running"):
            train_bundle(cfg, out, resume=True, progress=False)
    assert not out.exists()


def test_embedded_labels_are_physical():
    """The shipped CP2K labels: valid, and forces sum to ~0 in every frame (translation)."""
    info = check_labels()
    assert info["n_frames"] >= 20
    assert info["max_force_sum"] < 1e-2  # eV/A, over 64 atoms
    assert -110 < info["e0s"]["Si"] < -95  # eV, GTH-PBE Si atom (4 valence electrons)


def test_split_is_disjoint_and_spread_over_structure_kinds():
    from mlff_ins.train.driver import split_indices
    groups = ["crystal"] * 12 + ["liquid"] * 3 + ["vacancy"] * 3 + ["amorphous"] * 2
    s = split_indices(len(groups), val=0.1, test=0.1, seed=4, groups=groups)
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(len(groups)))
    assert len(s["test"]) == 2 and len(s["val"]) == 2
    # two test frames from two different kinds, and every kind keeps training frames
    assert len({groups[i] for i in s["test"]}) == 2
    assert {groups[i] for i in s["train"]} == set(groups)
    # without groups it is a plain random split of the same sizes, reproducible by seed
    a = split_indices(20, val=0.1, test=0.1, seed=4)
    assert a == split_indices(20, val=0.1, test=0.1, seed=4) and len(a["test"]) == 2


def test_oversample_repeats_matching_frames_and_names_bad_patterns(tmp_path):
    from ase import Atoms

    from mlff_ins.train.driver import check_oversample, oversample
    frames = [Atoms("Si", info={"config_type": k})
              for k in ("diamond_300K", "liquid", "diamond_strained", "amorphous")]
    out = oversample(frames, {"diamond*": 3, "diamond_strained": 2, "liquid": 1})
    # the largest count wins for a frame matched twice; order kept; others once
    assert [a.info["config_type"] for a in out] == (
        ["diamond_300K"] * 3 + ["liquid"] + ["diamond_strained"] * 3 + ["amorphous"])
    assert oversample(frames, {}) == frames
    with pytest.raises(InputError, match=r"'cristal\*' matches no config_type in d.xyz "
                                          r"\(it has: amorphous, diamond_300K"):
        check_oversample(frames, {"cristal*": 2}, source="d.xyz")
    # the option merges as a free mapping and refuses a non-integer count by pattern
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ntraining: {oversample: {'diamond*': 3}}\n")
    assert load_train_config(cfg_file)["training"]["oversample"] == {"diamond*": 3}
    cfg_file.write_text("preset: tiny\ndata: d.xyz\ntraining: {oversample: {liquid: 0.5}}\n")
    with pytest.raises(InputError, match="'liquid' needs a whole repeat count >= 1"):
        load_train_config(cfg_file)


def test_bench_per_kind_errors_pool_to_the_training_report(tiny_bundle, capsys):
    """`python -m mlff_ins.bench train --model DIR`: the per-kind table's pooled force and
    energy RMSE on the bundle's test split equal the ensemble-mean errors of the bundle's own
    metrics.json (two codes, one answer), and every frame lands in one kind."""
    from ase.io import read

    from mlff_ins.bench.train_bench import kind_of, main as bench_main, per_kind_errors

    frames = read(tiny_bundle / "data" / "test.xyz", ":")
    table = per_kind_errors(tiny_bundle, frames)
    report = json.loads((tiny_bundle / "metrics.json").read_text())["ensemble_mean"]
    assert table["all"]["force_rmse"] == pytest.approx(report["forces_meV_per_A"]["rmse"],
                                                       rel=1e-6)
    assert table["all"]["energy_rmse"] == pytest.approx(report["energy_meV_per_atom"]["rmse"],
                                                        rel=1e-6)
    assert sum(r["n_frames"] for k, r in table.items() if k != "all") == len(frames)
    assert table["all"]["spread_rms"] > 0            # two members disagree somewhere
    assert [kind_of(c) for c in ("diamond_300K", "diamond_rattled", "vacancy", "amorphous",
                                 "liquid", "IsolatedAtom")] == \
        ["crystal", "crystal", "vacancy", "amorphous", "liquid", "other"]
    assert bench_main(["--model", str(tiny_bundle)]) == 0
    assert "energy RMSE" in capsys.readouterr().out


def test_export_of_an_unfinished_run_is_a_loadable_partial_bundle(tiny_bundle, si_subset,
                                                                 tmp_path, capsys):
    """--export: member 1 made unfinished (its package removed, its checkpoints kept) is packaged
    from its best checkpoint, also where the run folder moved and lacks the member's train.xyz
    (a checkout); the exported bundle scores like the run's own members on the
    test split, loads, says it is partial, and the run folder is left as it was."""
    import numpy as np

    from mlff_ins.model.calculator import load_calculator

    from mlff_ins.train.driver import relocate_checkpoints

    # the run as trained in one folder, then moved (a checkout elsewhere): its checkpoints name
    # files of a folder that is gone, and the export reads the moved run's own
    trained, run = tmp_path / "trained", tmp_path / "run"
    shutil.copytree(tiny_bundle, trained)
    for member in (trained / "members").iterdir():
        relocate_checkpoints(member, trained)
    shutil.move(trained, run)
    (run / "bundle.json").unlink()
    (run / "members" / "member_1" / "model.nequip.zip").unlink()
    # as in a checkout of the run, which keeps no member's train.xyz (a resume writes it again):
    # nequip-package reads it, so the export writes it again, the same frames
    own = run / "members" / "member_1" / "train.xyz"
    kept = own.read_bytes()
    own.unlink()
    before = sorted(p.relative_to(run) for p in run.rglob("*") if p.name != "package.log")
    argv = ["train", "--data", str(si_subset), "--preset", "tiny", "--ensemble", "2",
            "--epochs", "12", "-o", str(run)]
    dest = tmp_path / "exported"
    assert main(argv + ["--export", str(dest)]) == 0
    assert "member 1: unfinished" in capsys.readouterr().out
    assert sorted(p.relative_to(run) for p in run.rglob("*")
                  if p.name != "package.log") == sorted(before + [own.relative_to(run)])
    assert own.read_bytes() == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "run"]  # no temp folder
    meta = json.loads((dest / "bundle.json").read_text())
    assert meta["members"] == ["members/member_0/model.nequip.zip",
                               "members/member_1/model.nequip.zip"]
    state = meta["partial"]["unfinished_members"]["1"]
    assert list(meta["partial"]["unfinished_members"]) == ["1"]
    assert 1 <= state["epochs"] <= 12 and state["max_epochs"] == 12
    assert not list(dest.rglob("*.ckpt"))
    # the exported members predict what the run's members predict (member 1 from its best
    # checkpoint, which is what the finished run had packaged)
    ref = json.loads((tiny_bundle / "metrics.json").read_text())
    got = json.loads((dest / "metrics.json").read_text())
    for a, b in zip(ref["members"], got["members"]):
        assert b["forces_meV_per_A"]["rmse"] == pytest.approx(a["forces_meV_per_A"]["rmse"],
                                                              rel=1e-6)
    atoms = read(dest / "data" / "test.xyz", index=0)
    atoms.calc = load_calculator(dest)
    assert np.isfinite(atoms.get_forces()).all()
    assert "partial export" in (dest / "report.md").read_text()
    assert "ensemble of 2 (each on its own bootstrap resample" in (dest / "report.md").read_text()
    # a second export into the same folder, --export with --resume, and other settings: refused
    assert main(argv + ["--export", str(dest)]) == 2
    assert "exists; --export writes a new folder" in capsys.readouterr().err
    assert main(argv + ["--export", str(tmp_path / "x"), "--resume"]) == 2
    assert main(argv[:-2] + ["--cutoff", "3.0", "-o", str(run), "--export",
                             str(tmp_path / "y")]) == 2
    assert "--export with different settings" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # the run as one killed between member 1's last epoch and its packaging: --resume trains no
    # epoch more, packages it (in the training's own process) and finishes the bundle, whose
    # member 1 is the packaged best checkpoint
    assert main(argv + ["--resume"]) == 0
    m1 = run / "members" / "member_1"
    epochs = [int(float(r.split(",")[_epoch_col(csv)]))
              for csv in (m1 / "logs").glob("version_*/metrics.csv")
              for r in csv.read_text().splitlines()[1:] if r.split(",")[_epoch_col(csv)]]
    assert max(epochs) == 11 and not (m1 / "tmp_model.nequip.zip").exists()
    resumed = json.loads((run / "metrics.json").read_text())["members"][1]
    assert resumed["forces_meV_per_A"]["rmse"] == pytest.approx(
        ref["members"][1]["forces_meV_per_A"]["rmse"], rel=1e-6)


def _zbl_analytic(r: float, cutoff: float, z: int) -> float:
    """Ziegler-Biersack-Littmark pair energy (eV; r in Angstrom) with the universal screening
    length and function (ZBL 1985), tapered by nequip's polynomial cutoff (p = 6)."""
    a = 0.46850 / (2 * z ** 0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    p, u = 6, r / cutoff
    taper = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u**(p + 1) - p * (p + 1) / 2 * u**(p + 2)
    return z * z * 14.399645 / r * phi * taper if u < 1 else 0.0


def test_zbl_pair_potential_adds_the_screened_nuclear_repulsion(tmp_path):
    """model.pair_potential: zbl puts the ZBL term under the network: two models of the same seed,
    with and without it, differ for a Si dimer by exactly the analytic ZBL energy (1e-9 eV)."""
    import ase
    from hydra.utils import instantiate
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.utils.global_state import set_global_state

    from mlff_ins.train.nequip_config import nequip_config

    with pytest.raises(InputError, match="model.pair_potential: null"):
        load_train_config(preset="tiny", overrides={"data": "x.xyz",
                                                    "model.pair_potential": "lj"})
    set_global_state()
    cfg = load_train_config(preset="tiny", overrides={"data": "x.xyz"})
    cutoff = float(cfg["cutoff"])

    def model(pair):
        cfg["model"]["pair_potential"] = pair
        nq = nequip_config(cfg, elements=["Si"], e0s={"Si": 0.0}, train_file=tmp_path / "a",
                           val_file=tmp_path / "b", test_file=tmp_path / "c", run_dir=tmp_path,
                           seed=3, has_stress=False)
        spec = dict(nq["training_module"]["model"])
        assert ("pair_potential" in spec) == (pair is not None)
        # the statistics nequip fills in from the training data, fixed here
        spec.update(avg_num_neighbors=4.0, per_type_energy_scales=1.0)
        return instantiate(spec, _recursive_=False, _convert_="all")

    plain, zbl = model(None), model("zbl")
    for r in (0.8, 1.5, 2.35, 0.9 * cutoff):
        data = from_ase(ase.Atoms("Si2", positions=[[0, 0, 0], [r, 0, 0]], cell=[20] * 3))
        data = ChemicalSpeciesToAtomTypeMapper(["Si"])(NeighborListTransform(r_max=cutoff)(data))
        e_plain, e_zbl = (float(m(dict(data))[AtomicDataDict.TOTAL_ENERGY_KEY].detach()) for m in (plain, zbl))
        assert e_zbl - e_plain == pytest.approx(_zbl_analytic(r, cutoff, 14), abs=1e-9, rel=1e-9)


def test_several_data_files_train_together(si_subset, tmp_path):
    """`--data A --data B` trains on A and B together: the split sees every frame of both, the
    run is tied to both files (and their order, which decides the split), and a bad file is
    named in the error."""
    from ase.io import write

    from mlff_ins.cli import build_parser, _data_option
    from mlff_ins.train.driver import _split_data, data_sha256

    frames = read(si_subset, ":")
    a, b = tmp_path / "a.xyz", tmp_path / "b.xyz"
    write(a, frames[:8])   # the isolated atom and 7 frames
    write(b, frames[8:])
    args = build_parser().parse_args(["train", "--data", str(a), "--data", str(b), "-o", "x"])
    both = load_train_config(preset="tiny", overrides={"data": _data_option(args.data)})
    assert both["data"] == [str(a), str(b)]
    whole, split, *_ = _split_data(both)
    assert len(whole) == len(frames) - 1   # all but the isolated atom
    assert sorted(i for part in split.values() for i in part) == list(range(len(whole)))
    one = load_train_config(preset="tiny", overrides={"data": str(si_subset)})
    assert len(_split_data(one)[0]) == len(whole)
    swapped = dict(both, data=[str(b), str(a)])
    assert len({data_sha256(both), data_sha256(swapped), data_sha256(one)}) == 3
    b.write_text("not a structure\n")
    with pytest.raises(InputError, match="b.xyz: cannot read structures"):
        _split_data(both)
    # a config file's list of files is read relative to the config file
    (tmp_path / "run.yaml").write_text("preset: tiny\ndata: [a.xyz, sub/c.xyz]\n")
    assert load_train_config(tmp_path / "run.yaml")["data"] == [str(a), str(tmp_path / "sub/c.xyz")]


def _plateau_checkpoint(member, losses, plateau, lr=0.01, versions=((0, None),), extra=0):
    """A member folder as Lightning leaves it: last.ckpt with the state of a real
    ReduceLROnPlateau stepped through ``losses``, and CSV logs holding them (``versions``: (log
    version, first epoch) pairs splitting the history, the later one re-logging its first epoch
    as a resumed run does). ``extra``: the checkpoint's epoch counter ahead of the steps (1: a
    checkpoint written between the validation and the scheduler's step)."""
    import torch

    from mlff_ins.train.schedule import MONITORED, replay

    sched, rates = replay(losses, lr, plateau)
    torch.save({"epoch": len(losses) + extra, "lr_schedulers": [sched.state_dict()],
                "optimizer_states": [{"param_groups": [{"lr": rates[-1]}]}]},
               member / "last.ckpt")
    bounds = [v[1] or 0 for v in versions] + [len(losses)]
    for i, (version, first) in enumerate(versions):
        log = member / "logs" / f"version_{version}" / "metrics.csv"
        log.parent.mkdir(parents=True)
        rows = [f"epoch,step,train_loss,{MONITORED}"]
        for e in range(first or 0, bounds[i + 1]):
            rows.append(f"{e},{10 * e},0.5,")                 # a training row, no validation
            rows.append(f"{e},{10 * e},,{losses[e]!r}")
        if i + 1 < len(versions):                              # killed after this validation:
            rows.append(f"{bounds[i + 1]},0,,{losses[-1] * 7!r}")  # relogged by the resume
        log.write_text("\n".join(rows) + "\n")


def test_a_resume_may_change_the_learning_rate_plateau_where_it_rewrites_no_history(tmp_path):
    """The new settings replace the checkpoint's scheduler state when the logged validation
    losses give the same learning rates so far under them; the resumed scheduler then decides
    exactly as one that ran with the new settings from the start. Losses: 10 epochs improving by
    1.5 % each, then 6 flat ones; the old settings (0.1 %, patience 15) never lower the rate."""
    from mlff_ins.train.schedule import replay, rescheduled_state

    losses = [0.1 * 0.985 ** e for e in range(10)] + [0.1 * 0.985 ** 9] * 6
    old = {"factor": 0.6, "patience": 15, "threshold": 0.001, "min_lr": 1e-5}
    new = {"factor": 0.5, "patience": 10, "threshold": 0.01, "min_lr": 1e-5}
    for extra in (0, 1):
        member = tmp_path / f"member_{extra}"
        member.mkdir()
        _plateau_checkpoint(member, losses, old, versions=((0, None), (1, 9)), extra=extra)
        ckpt, note = rescheduled_state(member, 0.01, old, new)
        state = ckpt["lr_schedulers"][0]
        assert (state["patience"], state["threshold"], state["factor"]) == (10, 0.01, 0.5)
        assert note["epochs_without_improvement"] == 6 and note["best"] == losses[9]
        # go on 6 more flat epochs: the same rates as the new settings from epoch 0 (the 1.5 %
        # steps count as improvements under 1 %, so the rate halves after 11 flat epochs)
        import torch
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
        resumed = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **new)
        resumed.load_state_dict(state)
        more = [losses[-1]] * 6
        rates = []
        for loss in more:
            resumed.step(loss)
            rates.append(opt.param_groups[0]["lr"])
        assert rates == replay(losses + more, 0.01, new)[1][-6:]
        assert rates == [0.01] * 4 + [0.005] * 2
    # a 2 % threshold with no patience lowers the rate at the first step of 1.5 %, after epoch 1,
    # which the run did not do
    with pytest.raises(InputError, match="after epoch 1,"):
        rescheduled_state(tmp_path / "member_0", 0.01, old,
                          {"factor": 0.6, "patience": 0, "threshold": 0.02, "min_lr": 1e-5})
    # a checkpoint its logs do not account for (the logs of a run with 10 % larger losses)
    other = tmp_path / "other"
    other.mkdir()
    _plateau_checkpoint(other, [x * 1.1 for x in losses], old)
    shutil.copy(tmp_path / "member_0" / "last.ckpt", other / "last.ckpt")
    with pytest.raises(InputError, match="does not follow"):
        rescheduled_state(other, 0.01, old, new)
    # and one whose logs lack epochs (the resumed run's log gone: epoch 9 is still in the
    # first log, as its killed run logged it)
    shutil.rmtree(tmp_path / "member_0" / "logs" / "version_1")
    with pytest.raises(InputError, match="lack the validation loss of epoch 10 "):
        rescheduled_state(tmp_path / "member_0", 0.01, old, new)


def test_progress_of_a_resumed_member_counts_only_this_runs_epochs(tmp_path):
    """A member resumed at epoch 43 of 250: its bar starts there, so the rate and the time left
    come from the epochs trained since (one, here), not from 44 epochs in a few seconds."""
    import io

    from tqdm import tqdm

    from mlff_ins.train.driver import _MemberRun

    csv = tmp_path / "metrics.csv"
    run = _MemberRun(tmp_path, [], csv=csv, label="member")
    run.bar, run.max_epochs = tqdm(total=250, file=io.StringIO()), 250
    run._update_bar()                       # no log yet: nothing shown
    assert run.bar.n == 0 and run.shown is None
    csv.write_text("epoch,step,val0_epoch/forces_mae\n43,100,\n43,120,0.078\n")
    run._update_bar()
    assert (run.bar.initial, run.bar.n) == (43, 44)
    fmt = run.bar.format_dict
    assert fmt["n"] - fmt["initial"] == 1
    fresh = _MemberRun(tmp_path, [], csv=tmp_path / "fresh.csv", label="member")
    fresh.bar, fresh.max_epochs = tqdm(total=250, file=io.StringIO()), 250
    (tmp_path / "fresh.csv").write_text("epoch,step,val0_epoch/forces_mae\n0,5,0.3\n1,10,0.2\n")
    fresh._update_bar()                     # a new run seen late: still counted from epoch 0
    assert (fresh.bar.initial, fresh.bar.n) == (0, 2)


def test_the_learning_curve_leaves_out_the_training_point_of_an_epoch_cut_short(tmp_path):
    """Epochs of 10 optimizer steps, logged over two runs of the member (a resume after epoch
    1); the last, stopped by max_minutes after 3 steps, logged a training MAE over those 3
    batches alone. Its training point is left out, its validation point (the weights it left)
    kept; every whole epoch keeps both."""
    from mlff_ins.train.report import _learning_curve

    rows = {0: ["epoch,step,train_metric_epoch/forces_mae,val0_epoch/forces_mae",
                "0,9,,0.30", "0,9,0.40,", "1,19,,0.20", "1,19,0.25,"],
            1: ["epoch,step,train_metric_epoch/forces_mae,val0_epoch/forces_mae",
                "2,29,,0.15", "2,29,0.18,", "3,32,,0.14", "3,32,0.30,"]}
    for version, lines in rows.items():
        log = tmp_path / "logs" / f"version_{version}" / "metrics.csv"
        log.parent.mkdir(parents=True)
        log.write_text("\n".join(lines) + "\n")
    train_f, val_f, _ = _learning_curve(tmp_path)
    assert train_f == {0: 0.40, 1: 0.25, 2: 0.18}
    assert val_f == {0: 0.30, 1: 0.20, 2: 0.15, 3: 0.14}


def test_early_stop_ends_a_member_where_its_validation_loss_stopped_falling(si_subset,
                                                                             tmp_path):
    """--early-stop 2: the member stops after two epochs without a lower validation loss and is
    packaged as finished. Checked against the run's own logged validation losses, replayed: the
    last epoch trained is the first with two epochs since the lowest loss (or the last of
    --epochs when that never happens), and the bundle is complete."""
    from mlff_ins.train.schedule import validation_history

    out = tmp_path / "m"
    assert main(["train", "--data", str(si_subset), "--preset", "tiny", "--epochs", "14",
                 "--early-stop", "2", "-o", str(out)]) == 0
    member = out / "members" / "member_0"
    epochs = [int(float(r.split(",")[_epoch_col(csv)]))
              for csv in (member / "logs").glob("version_*/metrics.csv")
              for r in csv.read_text().splitlines()[1:] if r.split(",")[_epoch_col(csv)]]
    last = max(epochs)
    losses = validation_history(member, last + 1)
    expected, best, wait = 13, float("inf"), 0
    for epoch, loss in enumerate(losses):
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        if wait >= 2:
            expected = epoch
            break
    # the stop fires in this run (seeded; by hand it ended after epoch 8 of 14), so the test
    # sees the callback at work and not only a run to --epochs
    assert expected < 13
    assert last == expected
    assert (out / "bundle.json").is_file() and (member / "model.nequip.zip").is_file()
    saved = json.loads((out / "train_settings.json").read_text())
    assert saved["settings"]["training"]["early_stop"] == 2
    with pytest.raises(InputError, match="training.early_stop"):
        load_train_config(preset="tiny", overrides={"data": str(si_subset),
                                                    "training.early_stop": 0})


def test_a_fine_tuning_stage_starts_from_the_runs_best_weights(tiny_bundle, tmp_path, capsys):
    """--init-from RUN: member k starts from member k's best checkpoint of RUN (its own copy).
    With the learning rate at 0 one epoch changes nothing, so each member scores on the test
    split exactly as RUN's own member did (to 1e-6): the weights, EMA ones included, were
    carried over. A stage started from that stage has a self-contained copy of its starting
    checkpoint: it exports with the first stage's copies and RUN gone. A stage on another split,
    or with more members than RUN has, is refused."""
    import torch

    data = tiny_bundle.parent / "si_subset.xyz"
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(f"preset: tiny\ndata: {data}\nensemble: 2\n"
                   f"training: {{lr: 0.0, max_epochs: 1, init_from: {tiny_bundle}}}\n")
    out = tmp_path / "stage"
    assert main(["train", str(cfg), "-o", str(out)]) == 0
    ref = json.loads((tiny_bundle / "metrics.json").read_text())["members"]
    got = json.loads((out / "metrics.json").read_text())["members"]
    for a, b in zip(ref, got):
        for key in ("forces_meV_per_A", "energy_meV_per_atom"):
            assert b[key]["rmse"] == pytest.approx(a[key]["rmse"], rel=1e-6)
    assert (out / "members" / "member_1" / "init_from.ckpt").is_file()
    saved = json.loads((out / "bundle.json").read_text())["settings"]["training"]
    assert saved["init_from"] == str(tiny_bundle)
    # a second stage from the first: its copy builds the model from settings, not from the
    # first stage's copy of RUN's checkpoint, so it outlives both; its weight average starts
    # warmed up (at decay 0.999 from its first step, where nequip's warm-up, (1+n)/(10+n), is
    # below 0.6 over the first dozen steps and follows the raw weights)
    from mlff_ins.train.ema import warm_updates

    second_cfg = tmp_path / "second.yaml"
    second_cfg.write_text(cfg.read_text().replace(str(tiny_bundle), str(out))
                          .replace("lr: 0.0,", "lr: 0.05,"))
    second = tmp_path / "second"
    assert main(["train", str(second_cfg), "-o", str(second)]) == 0
    init = torch.load(second / "members" / "member_1" / "init_from.ckpt", map_location="cpu",
                      weights_only=False)
    assert init["hyper_parameters"]["model"]["_target_"] == "nequip.model.NequIPGNNModel"
    last = torch.load(second / "members" / "member_1" / "best.ckpt", map_location="cpu",
                      weights_only=False)
    ema_state = last["state_dict"]["ema._extra_state"]
    assert ema_state["num_updates"] > warm_updates(ema_state["decay"])
    # and what that does: after s steps at decay 0.999 the average has moved about
    # 1 - 0.999**s (1-3 % for these 13-24 steps) of the way the raw weights went; nequip's
    # warm-up average followed them 0.85 of the way here (measured with the warm-up restored)
    from nequip.train import EMALightningModule
    from nequip.utils.global_state import global_state_initialized, set_global_state

    from mlff_ins.train.ema import ContinuedEMALightningModule

    if not global_state_initialized():
        set_global_state()

    def flat(ws):
        return torch.cat([w.detach().flatten() for w in ws])

    start = EMALightningModule.load_from_checkpoint(
        second / "members" / "member_1" / "init_from.ckpt", weights_only=False)
    stage = ContinuedEMALightningModule.load_from_checkpoint(
        second / "members" / "member_1" / "best.ckpt", weights_only=False)
    w0 = flat(start.ema.ema_weights)
    moved_raw = torch.linalg.norm(flat(stage.model.parameters()) - w0)
    moved_avg = torch.linalg.norm(flat(stage.ema.ema_weights) - w0)
    steps = ema_state["num_updates"] - warm_updates(ema_state["decay"])
    assert moved_raw > 0
    assert moved_avg / moved_raw < 0.1, (steps, float(moved_avg / moved_raw))
    for k in (0, 1):
        (out / "members" / f"member_{k}" / "init_from.ckpt").unlink()
    # member 1 unfinished: the export packages it from its checkpoint, which builds its model
    # through its own copy
    (second / "members" / "member_1" / "model.nequip.zip").unlink()
    assert main(["train", str(second_cfg), "-o", str(second), "--export",
                 str(tmp_path / "second_export")]) == 0
    got = json.loads((tmp_path / "second_export" / "metrics.json").read_text())["members"]
    assert len(got) == 2 and all(np.isfinite(m["forces_meV_per_A"]["rmse"]) for m in got)
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text() + "split: {val: 0.2, test: 0.1, seed: 0}\n")
    assert main(["train", str(other), "-o", str(tmp_path / "x")]) == 2
    assert "its split" in capsys.readouterr().err
    assert main(["train", str(cfg), "--ensemble", "3", "-o", str(tmp_path / "y")]) == 2
    assert "3 members asked for, that run has 2" in capsys.readouterr().err


def test_a_broken_chain_of_stage_checkpoints_is_named(tmp_path):
    """A stage's checkpoint whose model is built from a checkpoint that is gone (a copy git did
    not keep) is refused in one line naming the missing file; a loop is refused too; the chain
    is followed to the first run's model settings."""
    import torch

    from mlff_ins.train.driver import FROM_CHECKPOINT, self_contained_model

    def ckpt(path, model):
        torch.save({"hyper_parameters": {"model": model}}, path)
        return path

    base = {"_target_": "nequip.model.NequIPGNNModel", "num_layers": 3}
    first = ckpt(tmp_path / "first.ckpt", base)
    second = ckpt(tmp_path / "second.ckpt", {"_target_": FROM_CHECKPOINT,
                                              "checkpoint_path": str(first)})
    third = ckpt(tmp_path / "third.ckpt", {"_target_": FROM_CHECKPOINT,
                                            "checkpoint_path": str(second)})
    assert self_contained_model(third) == base
    first.unlink()
    with pytest.raises(InputError, match="first.ckpt, which is missing"):
        self_contained_model(third)
    ckpt(first, {"_target_": FROM_CHECKPOINT, "checkpoint_path": str(third)})
    with pytest.raises(InputError, match="loops"):
        self_contained_model(third)


def test_a_stage_on_the_same_data_keeps_the_runs_own_split(tiny_bundle, tmp_path):
    """A stage on RUN's data takes RUN's split as RUN recorded it, not the one the split
    settings would draw again: RUN's split may be inherited or seeded (round 4's is round 3's
    plus its own frames'), and drawing it again put one of round 4's test frames into a stage's
    validation set and others into its training pool."""
    from mlff_ins.train.driver import _split_data

    source = tmp_path / "source"
    shutil.copytree(tiny_bundle, source)
    split_path = source / "data" / "split.json"
    drawn = json.loads(split_path.read_text())
    # a split the settings would not draw: the first test frame swapped with a training frame
    own = {k: list(v) for k, v in drawn.items()}
    t, r = own["test"][0], own["train"][0]
    own["test"][0], own["train"][0] = r, t
    own = {k: sorted(v) for k, v in own.items()}
    split_path.write_text(json.dumps(own))
    data = tiny_bundle.parent / "si_subset.xyz"
    cfg = load_train_config(preset="tiny", overrides={
        "data": str(data), "ensemble": 2, "training.init_from": str(source)})
    _, split, pool, _, test_frames, _, _ = _split_data(cfg, tmp_path / "stage")
    assert {k: sorted(split[k]) for k in own} == own
    assert t in split["train"] and r in split["test"]
    assert len(test_frames) == len(own["test"])


def test_fine_tuning_on_appended_data_keeps_the_runs_split(tiny_bundle, tmp_path, capsys):
    """An active-learning round by fine-tuning: --init-from RUN with RUN's data file plus a file
    of new frames. RUN's frames keep RUN's split (its test and validation frames are not trained
    on now), the new frames are split among themselves with the same fractions, and the E0s are
    RUN's. The same files in another order are other data: refused."""
    from conftest import N_FRAMES, SI_DATA

    from ase.io import write

    data = tiny_bundle.parent / "si_subset.xyz"
    frames = [a for a in read(SI_DATA, ":") if a.info.get("config_type") != "IsolatedAtom"]
    added = tmp_path / "round.xyz"
    write(added, frames[N_FRAMES:N_FRAMES + 10])
    source = tmp_path / "source"          # a copy, removed below: the round keeps its split
    shutil.copytree(tiny_bundle, source)
    cfg = tmp_path / "round.yaml"
    cfg.write_text(f"preset: tiny\ndata: [{data}, {added}]\nensemble: 2\n"
                   f"training: {{lr: 0.0, max_epochs: 1, init_from: {source}}}\n")
    out = tmp_path / "round"
    assert main(["train", str(cfg), "-o", str(out)]) == 0
    assert "the 30 of the run it starts from keep its split" in capsys.readouterr().out
    old = json.loads((tiny_bundle / "data" / "split.json").read_text())
    new = json.loads((out / "data" / "split.json").read_text())
    n_old = sum(len(v) for v in old.values())
    assert n_old == N_FRAMES
    for k in ("test", "val", "train"):
        assert [i for i in new[k] if i < n_old] == old[k]
    added_split = {k: [i for i in new[k] if i >= n_old] for k in new}
    assert sorted(sum(added_split.values(), [])) == list(range(n_old, n_old + 10))
    assert len(added_split["test"]) >= 1 and len(added_split["val"]) >= 1
    test = read(out / "data" / "test.xyz", ":")
    assert len(test) == len(new["test"])
    bundle_old = json.loads((tiny_bundle / "bundle.json").read_text())
    bundle_new = json.loads((out / "bundle.json").read_text())
    assert bundle_new["e0s_eV"] == bundle_old["e0s_eV"]
    assert (out / "data" / "inherited_split.json").is_file()
    # an export (as a resume) splits from the round's own copy, the source run gone
    shutil.rmtree(source)
    assert main(["train", str(cfg), "-o", str(out), "--export", str(tmp_path / "export")]) == 0
    exported = json.loads((tmp_path / "export" / "bundle.json").read_text())
    assert exported["training_data"]["n_test"] == len(new["test"])
    assert bundle_new["training_data"]["n_test"] == len(new["test"])
    # the same test frames: the same members score the same
    rmse = lambda b: b["metrics"]["forces_meV_per_A"]["rmse"]  # noqa: E731
    assert rmse(exported) == pytest.approx(rmse(bundle_new), rel=1e-9)
    shutil.copytree(tiny_bundle, source)
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(cfg.read_text().replace(f"[{data}, {added}]", f"[{added}, {data}]"))
    assert main(["train", str(swapped), "-o", str(tmp_path / "x")]) == 2
    assert "that run trained on other data" in capsys.readouterr().err


def test_frame_weights_scale_each_frames_squared_errors():
    """training.frame_weights: in the loss, a frame of weight w has its squared errors of
    forces, per-atom energy and stress counted w times against those of its batch's other
    frames (here weight 4 on a 4-atom frame beside an unweighted 6-atom one, computed by hand)."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from nequip.data import AtomicDataDict, from_ase
    import torch

    from mlff_ins.train.frame_weights import DefaultFrameWeight, FrameWeighted

    rng = np.random.default_rng(0)
    frames = []
    for reps, w in ((2, 4.0), (3, None)):
        a = bulk("Si", "diamond", 5.43).repeat((1, 1, reps))
        a.calc = SinglePointCalculator(a, energy=-5.0 * len(a), forces=rng.normal(size=(len(a), 3)),
                                       stress=rng.normal(size=6))
        if w:
            a.info["frame_weight"] = w
        frames.append(a)
    ref = AtomicDataDict.batched_from_list(
        [DefaultFrameWeight()(from_ase(a, include_keys=["frame_weight"])) for a in frames])
    pred = {k: v.clone() for k, v in ref.items() if k != "frame_weight"}  # the model has none
    pred["forces"] = pred["forces"] + torch.as_tensor(rng.normal(size=(10, 3)))
    pred["total_energy"] = pred["total_energy"] + torch.tensor([[0.8], [0.6]], dtype=torch.float64)
    pred["stress"] = pred["stress"] + torch.as_tensor(rng.normal(size=(2, 3, 3)))
    w_atoms = torch.tensor([4.0] * 4 + [1.0] * 6)[:, None]
    cases = {
        "forces": (FrameWeighted("forces"),
                   (w_atoms * (pred["forces"] - ref["forces"]) ** 2).mean()),
        "energy": (FrameWeighted("total_energy", per_atom=True),
                   (4.0 * (0.8 / 4) ** 2 + (0.6 / 6) ** 2) / 2),
        "stress": (FrameWeighted("stress"),
                   ((torch.tensor([4.0, 1.0])[:, None, None]
                     * (pred["stress"] - ref["stress"]) ** 2).mean())),
    }
    for name, (field, expected) in cases.items():
        a, b = field(pred, ref)
        assert float(((a - b) ** 2).mean()) == pytest.approx(float(expected), rel=1e-12), name


def test_a_weighted_training_runs_and_writes_its_weights(si_subset, tmp_path, capsys):
    """A tiny member trained with frame weights: the weights are in its training and validation
    files (not the test file), the loss and the monitored validation metrics are the weighted
    ones (the plain ones logged beside them), and a pattern matching no frame is refused."""
    import yaml

    cfg = tmp_path / "w.yaml"
    cfg.write_text(f"preset: tiny\ndata: {si_subset}\n"
                   "training: {max_epochs: 2, frame_weights: {'diamond*': 30}}\n")
    out = tmp_path / "w"
    assert main(["train", str(cfg), "-o", str(out)]) == 0
    member = out / "members" / "member_0"
    train = read(member / "train.xyz", ":")
    kinds = [a.info.get("config_type", "") for a in train]
    assert {a.info.get("frame_weight") for a, k in zip(train, kinds) if k.startswith("diamond")} \
        == {30.0}
    assert all("frame_weight" not in a.info for a, k in zip(train, kinds)
               if not k.startswith("diamond"))
    for split, weighted in (("val", True), ("test", False)):
        for a in read(out / "data" / f"{split}.xyz", ":"):
            diamond = a.info.get("config_type", "").startswith("diamond")
            assert a.info.get("frame_weight") == (30.0 if diamond and weighted else None)
    ncfg = yaml.safe_load((member / "nequip.yaml").read_text())
    loss = ncfg["training_module"]["loss"]
    assert {m["field"]["_target_"] for m in loss["metrics"]} == {
        "mlff_ins.train.frame_weights.FrameWeighted"}
    # and nequip's own data module, as the training instantiated it, hands the weights over
    import hydra
    import torch

    data = {k: v for k, v in ncfg["data"].items() if k != "stats_manager"}
    dm = hydra.utils.instantiate(data, _recursive_=False)
    dm.prepare_data()
    dm.setup("fit")
    seen = torch.cat([b["frame_weight"].reshape(-1) for b in dm.train_dataloader()])
    assert sorted(seen.tolist()) == sorted(a.info.get("frame_weight", 1.0) for a in train)
    val = ncfg["training_module"]["val_metrics"]["metrics"]
    assert {m["name"] for m in val if m.get("coeff")} == {
        "weighted_per_atom_energy_mae", "weighted_forces_mae"}
    header = next((member / "logs").glob("version_*/metrics.csv")).read_text().splitlines()[0]
    assert "val0_epoch/forces_mae" in header and "val0_epoch/weighted_forces_mae" in header
    assert (out / "bundle.json").is_file()
    capsys.readouterr()
    cfg.write_text(cfg.read_text().replace("'diamond*'", "'glass*'"))
    assert main(["train", str(cfg), "-o", str(tmp_path / "x")]) == 2
    assert "training.frame_weights: 'glass*' matches no config_type" in capsys.readouterr().err


def test_a_resume_adds_members_that_take_the_frames_as_the_first_did(si_subset, tmp_path,
                                                                       capsys):
    """training.bootstrap: false trains every member on the whole training pool (seeds alone
    differ). A finished run gets more members with --resume and a larger --ensemble: the
    finished member is kept byte for byte, the new one trains from its own seed, and the
    bundle lists both; adding members that would resample where the first did not, or
    dropping members, is refused in one line naming the setting."""
    import hashlib

    out = tmp_path / "run"
    pool_cfg = tmp_path / "pool.yaml"
    pool_cfg.write_text("training: {bootstrap: false}\n")
    args = [str(pool_cfg), "--data", str(si_subset), "--preset", "tiny", "--epochs", "1",
            "-o", str(out)]
    assert main(["train", *args, "--ensemble", "1"]) == 0
    zip0 = out / "members" / "member_0" / "model.nequip.zip"
    digest = hashlib.sha256(zip0.read_bytes()).hexdigest()
    assert len(json.loads((out / "bundle.json").read_text())["members"]) == 1
    capsys.readouterr()
    # a finished bundle is protected without --resume
    assert main(["train", *args, "--ensemble", "2"]) == 2
    assert "--resume with a larger --ensemble adds members" in capsys.readouterr().err
    # bootstrap members beside one that trained on the whole pool: refused
    assert main(["train", "--data", str(si_subset), "--preset", "tiny", "--epochs", "1",
                 "-o", str(out), "--ensemble", "2", "--resume"]) == 2
    assert "training.bootstrap: false" in capsys.readouterr().err
    assert main(["train", *args, "--ensemble", "2", "--resume"]) == 0
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["members"] == [f"members/member_{k}/model.nequip.zip" for k in (0, 1)]
    assert hashlib.sha256(zip0.read_bytes()).hexdigest() == digest
    import yaml
    cfgs = [yaml.safe_load((out / "members" / f"member_{k}" / "nequip.yaml").read_text())
            for k in (0, 1)]
    train_files = {c["data"]["train_file_path"] for c in cfgs}
    assert train_files == {str((out / "data" / "train_pool.xyz").resolve())}
    assert cfgs[0]["data"]["seed"] != cfgs[1]["data"]["seed"]
    assert len(json.loads((out / "metrics.json").read_text())["members"]) == 2
    assert "ensemble of 2 (each on the whole training pool" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["train", *args, "--ensemble", "1", "--export", str(tmp_path / "one")]) == 2
    assert "members may be added, not dropped" in capsys.readouterr().err
    with pytest.raises(InputError, match="training.bootstrap: true or false"):
        load_train_config(preset="tiny", overrides={"data": str(si_subset),
                                                    "training.bootstrap": "no"})


def test_members_log_their_gradient_norms_and_clip_them_where_asked(si_subset, tmp_path):
    """Every member logs the mean and largest global gradient norm of each epoch (what a
    training.grad_clip value is read from) and its learning rate; training.grad_clip sets the
    trainer's norm clipping, and a bad value is refused naming the option."""
    import csv

    import yaml

    from mlff_ins.train.grad_norm import LR, MAX, MEAN

    out = tmp_path / "run"
    clip = tmp_path / "clip.yaml"
    clip.write_text("training: {grad_clip: 0.5}\n")
    assert main(["train", str(clip), "--data", str(si_subset), "--preset", "tiny",
                 "--epochs", "2", "-o", str(out)]) == 0
    member = out / "members" / "member_0"
    trainer = yaml.safe_load((member / "nequip.yaml").read_text())["trainer"]
    assert trainer["gradient_clip_val"] == 0.5
    assert trainer["gradient_clip_algorithm"] == "norm"
    rows = [r for log in member.glob("logs/version_*/metrics.csv")
            for r in csv.DictReader(open(log)) if r.get(MAX)]
    assert sorted(int(float(r["epoch"])) for r in rows) == [0, 1]
    for r in rows:   # the norms before clipping: the largest of an epoch bounds its mean
        assert 0 < float(r[MEAN]) <= float(r[MAX]) < float("inf")
    # the first epoch trains at the configured rate (the plateau scheduler cannot have cut it)
    configured = load_train_config(preset="tiny", overrides={"data": str(si_subset)})
    first = next(r for r in rows if int(float(r["epoch"])) == 0)
    assert float(first[LR]) == pytest.approx(float(configured["training"]["lr"]), rel=1e-6)
    for bad in (-1.0, 0, "x", True):
        with pytest.raises(InputError, match="training.grad_clip"):
            load_train_config(preset="tiny", overrides={"data": str(si_subset),
                                                        "training.grad_clip": bad})
