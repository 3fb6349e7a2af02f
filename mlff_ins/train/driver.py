"""Train a model bundle: validate data, split, train K NequIP members, package, evaluate, report.

Each ensemble member is one ``nequip-train`` run in its own folder (a subprocess, so that a kill of
any one of them loses at most the epochs since its last checkpoint). Members differ in their seed
and, for K > 1, in a bootstrap resample of the training pool; validation and test frames are the
same for all members so the ensemble can be scored on held-out data. ``resume=True`` continues a
killed run: finished members are kept, an unfinished one restarts from its ``last.ckpt``.

Bundle layout (``out/``)::

    bundle.json          elements, cutoff, E0s (and their source: e0s_method), dtype, data hash,
                         metrics, versions, members
    metrics.json         MAE/RMSE of energy, forces, stress on the test split, per member + mean
    parity.png, learning_curve.png, report.md
    data/{train_pool,val,test}.xyz, split.json
    members/member_K/    model.nequip.zip (packaged), nequip.yaml, checkpoints, logs
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path, write_json_atomic, write_text_atomic
from mlff_ins.data.ingest import read_frames, split_isolated_atoms
from mlff_ins.data.validate import validate
from mlff_ins.errors import InputError
from mlff_ins.data.e0s import choose_e0s
from mlff_ins.train.nequip_config import nequip_config

PACKAGE_NAME = "model.nequip.zip"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare_data(cfg: dict):
    """Read and check the data of ``cfg``.

    Returns ``(frames, isolated, elements)``: the non-isolated frames, the energies of the
    data's isolated-atom frames (element -> eV; possibly empty) and the model's elements in
    order. The E0s are decided after the split (:func:`mlff_ins.data.e0s.choose_e0s`), since a
    fit may use the training frames only.
    """
    frames = read_frames(cfg["data"])
    frames, isolated = split_isolated_atoms(frames)
    if not frames:
        raise InputError(f"{cfg['data']}: no frames besides isolated atoms")
    data_elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    elements = list(cfg["elements"]) if cfg.get("elements") else data_elements
    extra = sorted(set(data_elements) - set(elements))
    if extra:
        raise InputError(f"{cfg['data']}: element {extra[0]} is in the data but not in "
                         f"elements: {elements}")
    validate(frames)
    return frames, isolated, elements


def split_indices(n: int, *, val: float, test: float, seed: int,
                  groups: list[str] | None = None) -> dict[str, list[int]]:
    """Random disjoint train/val/test indices (at least one frame in each).

    With ``groups`` (e.g. each frame's ``config_type``) the test and validation frames are drawn
    round-robin across the groups, so a small data set still tests every kind of structure it
    can; a group keeps at least one frame for training.
    """
    if n < 3:
        raise InputError(f"need at least 3 frames to split into train/val/test (have {n})")
    n_test = max(1, int(round(test * n)))
    n_val = max(1, int(round(val * n)))
    if n_test + n_val >= n:
        raise InputError(f"{n} frames are too few for the val/test fractions {val}/{test}")
    rng = np.random.default_rng(seed)
    groups = list(groups) if groups is not None else [""] * n
    names = sorted(set(groups))
    order = [names[i] for i in rng.permutation(len(names))]
    queues = {g: [int(i) for i in rng.permutation([k for k in range(n) if groups[k] == g])]
              for g in order}

    def take(count: int, keep: int) -> list[int]:
        out: list[int] = []
        while len(out) < count:
            progressed = False
            for g in order:
                if len(out) < count and len(queues[g]) > keep:
                    out.append(queues[g].pop())
                    progressed = True
            if not progressed:
                if keep == 0:
                    break
                keep = 0  # every group is down to its last frame: take those too
        return out

    test_idx = take(n_test, keep=1)
    val_idx = take(n_val, keep=1)
    train_idx = [i for q in queues.values() for i in q]
    return {"test": sorted(test_idx), "val": sorted(val_idx), "train": sorted(train_idx)}


def check_oversample(frames: list, patterns: dict, *, source: str) -> None:
    """Raise :class:`InputError` for an oversample pattern that matches no frame of ``source``."""
    kinds = sorted({str(a.info.get("config_type", "")) for a in frames})
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in kinds):
            raise InputError(f"training.oversample: '{pattern}' matches no config_type in "
                             f"{source} (it has: {', '.join(kinds) or 'none'})")


def oversample(frames: list, patterns: dict) -> list:
    """Repeat each frame whose ``config_type`` matches a pattern (shell-style, e.g. ``diamond*``)
    by that pattern's count (the largest count when several match); order is kept."""
    kinds = [str(a.info.get("config_type", "")) for a in frames]
    out = []
    for atoms, kind in zip(frames, kinds):
        reps = max([int(c) for p, c in patterns.items() if fnmatch.fnmatchcase(kind, p)],
                   default=1)
        out.extend([atoms] * reps)
    return out


def _write_xyz(path: Path, frames) -> None:
    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")


def _read_csv_last_epoch(csv_path: Path) -> tuple[int, float | None]:
    if not csv_path.exists():
        return 0, None
    lines = csv_path.read_text().splitlines()
    if len(lines) < 2:
        return 0, None
    header = lines[0].split(",")
    epoch_col = header.index("epoch") if "epoch" in header else None
    f_col = next((i for i, h in enumerate(header) if h == "val0_epoch/forces_mae"), None)
    epoch, fmae = 0, None
    for line in lines[1:]:
        cols = line.split(",")
        if epoch_col is not None and len(cols) > epoch_col and cols[epoch_col]:
            epoch = max(epoch, int(float(cols[epoch_col])))
        if f_col is not None and len(cols) > f_col and cols[f_col]:
            fmae = float(cols[f_col])
    return epoch, fmae


def _run_member(member_dir: Path, ncfg: dict, *, resume: bool, max_epochs: int,
                progress: bool, label: str) -> None:
    """Run nequip-train for one member (resuming from last.ckpt when asked and present)."""
    cfg_path = member_dir / "nequip.yaml"
    write_text_atomic(cfg_path, yaml.safe_dump(ncfg, sort_keys=False))
    cmd = [sys.executable, "-m", "nequip.scripts.train", "-cp", str(member_dir.resolve()),
           "-cn", "nequip", f"hydra.run.dir={member_dir.resolve() / 'hydra'}"]
    last = member_dir / "last.ckpt"
    if resume and last.exists():
        cmd.append(f"++ckpt_path={last.resolve()}")
    log_path = member_dir / "train.log"
    log_csv = (Path(ncfg["trainer"]["logger"]["save_dir"]) / "logs" /
               f"version_{ncfg['trainer']['logger']['version']}" / "metrics.csv")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=max_epochs, desc=label, unit="epoch")
    env = dict(os.environ)
    env.setdefault("TEST_VAL_TWO", "2")
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=member_dir)
        try:
            shown = None
            while proc.poll() is None:
                time.sleep(1.0)
                if bar is not None:
                    state = _read_csv_last_epoch(log_csv)
                    if state != shown:  # redraw only on news (keeps logs short)
                        shown = state
                        epoch, fmae = state
                        bar.n = min(epoch + 1, max_epochs)
                        if fmae is not None:
                            bar.set_postfix(val_force_mae=f"{1000 * fmae:.0f} meV/A")
                        bar.refresh()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            if bar is not None:
                bar.close()
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"nequip-train failed for {member_dir} (exit {proc.returncode}); "
                           f"last lines of {log_path}:\n{tail}")


def _package(member_dir: Path) -> Path:
    member_dir = member_dir.resolve()
    ckpt = member_dir / "best.ckpt"
    if not ckpt.exists():
        ckpt = member_dir / "last.ckpt"
    out = member_dir / PACKAGE_NAME
    tmp = member_dir / ("tmp_" + PACKAGE_NAME)
    res = subprocess.run([sys.executable, "-m", "nequip.scripts.package", "build", str(ckpt),
                          str(tmp)], capture_output=True, text=True, cwd=member_dir)
    if res.returncode != 0:
        raise RuntimeError(f"nequip-package failed for {ckpt}:\n{res.stderr[-3000:]}")
    os.replace(tmp, out)
    return out


def train_bundle(cfg: dict, out: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True) -> Path:
    """Train the model bundle described by ``cfg`` into the folder ``out``.

    Parameters
    ----------
    cfg : training settings from :func:`mlff_ins.train.config.load_train_config`.
    out : bundle folder. It must not hold a finished bundle; with ``resume`` an unfinished one
        is continued (same settings required).
    resume : continue a killed run in ``out``.

    Returns
    -------
    Path of the bundle folder (holding bundle.json once finished).
    """
    from mlff_ins.train.report import evaluate_bundle_members, write_report

    out = Path(out)
    state_path = out / "train_settings.json"
    if out.exists() and any(out.iterdir()):
        if (out / "bundle.json").exists():
            raise InputError(f"{out}: a finished model bundle is already there "
                             "(choose another -o or delete it)")
        if not resume:
            raise InputError(f"{out}: folder exists with an unfinished training run; "
                             "add --resume to continue it, or choose another -o")
        if state_path.exists():
            old = json.loads(state_path.read_text())
            if old.get("settings") != json.loads(json.dumps(cfg)):
                raise InputError(f"{out}: --resume with different settings than the "
                                 f"unfinished run (see {state_path})")
            if old.get("data_sha256") != _file_sha256(Path(cfg["data"])):
                raise InputError(f"{out}: --resume with a changed data file {cfg['data']} "
                                 "(it differs from the one the run started with)")
    frames, isolated, elements = prepare_data(cfg)  # before anything is written
    check_oversample(frames, cfg["training"].get("oversample") or {}, source=str(cfg["data"]))
    split = split_indices(len(frames), val=cfg["split"]["val"], test=cfg["split"]["test"],
                          seed=int(cfg["split"]["seed"]),
                          groups=[str(a.info.get("config_type", "")) for a in frames])
    pool = [frames[i] for i in split["train"]]
    val_frames = [frames[i] for i in split["val"]]
    test_frames = [frames[i] for i in split["test"]]
    # E0s from the config or isolated atoms, else fitted to the training pool (not val/test);
    # every member shares them, so the bundle has one energy baseline
    e0 = choose_e0s(cfg["e0s"], isolated, elements, pool, source=str(cfg["data"]))
    e0s = e0.values
    print(e0.message, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    data_sha256 = _file_sha256(Path(cfg["data"]))
    write_json_atomic(state_path, {"settings": cfg, "data_sha256": data_sha256})
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    write_json_atomic(data_dir / "split.json", split)
    for name, fr in (("train_pool", pool), ("val", val_frames), ("test", test_frames)):
        _write_xyz(data_dir / f"{name}.xyz", fr)
    has_stress = all(a.calc is not None and "stress" in a.calc.results for a in frames)

    K = int(cfg["ensemble"])
    members = []
    t_start = time.time()
    for k in range(K):
        member_dir = out / "members" / f"member_{k}"
        member_dir.mkdir(parents=True, exist_ok=True)
        members.append(member_dir)
        if (member_dir / PACKAGE_NAME).exists():
            continue
        seed = int(cfg["split"]["seed"]) * 1000 + k
        over = cfg["training"].get("oversample") or {}
        if K > 1 or over:
            train_frames = pool
            if K > 1:  # bootstrap resample of the training pool, one per member
                idx = np.random.default_rng(seed + 7919).integers(0, len(pool), len(pool))
                train_frames = [pool[i] for i in sorted(idx)]
            train_frames = oversample(train_frames, over)
            train_file = member_dir / "train.xyz"
            if not train_file.exists():
                _write_xyz(train_file, train_frames)
        else:
            train_file = data_dir / "train_pool.xyz"
        ncfg = nequip_config(cfg, elements=elements, e0s=e0s, train_file=train_file.resolve(),
                             val_file=(data_dir / "val.xyz").resolve(),
                             test_file=(data_dir / "test.xyz").resolve(),
                             run_dir=member_dir.resolve(), seed=seed, has_stress=has_stress,
                             log_version=len(list(member_dir.glob("logs/version_*"))))
        if not resume and (member_dir / "last.ckpt").exists():
            raise InputError(f"{member_dir}: an unfinished member is there; add --resume")
        _run_member(member_dir, ncfg, resume=resume, max_epochs=int(cfg["training"]["max_epochs"]),
                    progress=progress, label=f"train member {k + 1}/{K}")
        _package(member_dir)
    train_minutes = (time.time() - t_start) / 60

    metrics, parity = evaluate_bundle_members(members, test_frames, device=_device(cfg))
    bundle = {
        "format": "mlff-ins-bundle/1",
        "elements": elements,
        "cutoff_A": float(cfg["cutoff"]),
        "e0s_eV": {el: e0s[el] for el in elements},
        "e0s_method": e0.method,
        "e0s_fit": e0.fit,
        "e0s_note": e0.message,
        "dtype": cfg["model"]["dtype"],
        "members": [str(m.relative_to(out) / PACKAGE_NAME) for m in members],
        "training_data": {"file": str(cfg["data"]), "sha256": data_sha256,
                          "n_frames": len(frames), "n_train_pool": len(pool),
                          "n_val": len(val_frames), "n_test": len(test_frames)},
        "metrics": metrics["ensemble_mean"],
        "preset": cfg["preset"],
        "settings": cfg,
        "train_minutes_this_run": round(train_minutes, 2),
        "versions": _versions(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics, parity, members, test_frames, bundle)
    write_json_atomic(out / "bundle.json", bundle)  # last: marks the bundle finished
    return out


def _device(cfg: dict) -> str:
    dev = cfg.get("device", "cpu")
    if dev == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return dev


def _versions() -> dict:
    import ase
    import nequip
    import torch
    return {"mlff_ins": __version__, "nequip": nequip.__version__, "torch": torch.__version__,
            "ase": ase.__version__, "python": sys.version.split()[0]}
