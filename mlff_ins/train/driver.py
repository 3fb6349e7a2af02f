"""Train a model bundle: validate data, split, train K NequIP members, package, evaluate, report.

Each ensemble member is one ``nequip-train`` run in its own folder (a subprocess, so that a kill of
any one of them loses at most the epochs since its last checkpoint), followed by ``nequip-package``
of its best checkpoint in the same process (:mod:`mlff_ins.train.member_process`; DDP members
package in a process of their own). Members differ in their seed
and, for K > 1, in a bootstrap resample of the training pool (unless ``training.bootstrap`` is
false); validation and test frames are the same for all members so the ensemble can be scored on
held-out data. ``resume=True`` continues a killed run: finished members are kept, an unfinished
one restarts from its ``last.ckpt``; it may also add members to a run, finished or not (a larger
``ensemble``), when the new members take the training frames the way the old ones did.

Members run one after another, or ``parallel_members`` at a time (each a single process with
cores/K torch threads; every file a member writes is in its own folder). One member can also be
trained by several processes (``devices`` per node times ``num_nodes``) with Lightning's
distributed data parallel through nequip's ``SimpleDDPStrategy``: on one machine Lightning starts
the extra processes itself; under ``srun`` every task runs the driver, rank 0 prepares the data,
packages and scores, and the other ranks only join each member's training (they wait for rank 0's
word in ``out/.ddp/JOB.STEP.REQUEUE/``). See docs/training.md.

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
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml

from mlff_ins import __version__
from mlff_ins.atomic_io import (atomic_dir, atomic_path, exclusive_lock, file_sha256,
                               write_json_atomic, write_text_atomic)
from mlff_ins.data.ingest import read_frames, split_isolated_atoms
from mlff_ins.data.validate import validate
from mlff_ins.errors import InputError, ToolFailed, sigterm_as_interrupt
from mlff_ins.data.e0s import choose_e0s
from mlff_ins.train.config import resamples
from mlff_ins.train.nequip_config import nequip_config

PACKAGE_NAME = "model.nequip.zip"


def data_files(cfg: dict) -> list[Path]:
    """The labelled-data files of ``cfg`` (``data`` is one path or a list of paths)."""
    data = cfg["data"]
    return [Path(f) for f in ([data] if isinstance(data, (str, os.PathLike)) else data)]


def data_label(cfg: dict) -> str:
    """The data files of ``cfg`` as one string for messages and reports (relative to the
    working directory where they lie below it, so a bundle made in a checkout does not carry
    that machine's paths)."""
    return " + ".join(_shown(f) for f in data_files(cfg))


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def data_sha256(cfg: dict) -> str:
    """The identity of the training data: one file's SHA-256, or for several files the SHA-256
    of their hashes in order (so the order is part of it: it decides the split)."""
    hashes = [file_sha256(f) for f in data_files(cfg)]
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("\n".join(hashes).encode()).hexdigest()


def prepare_data(cfg: dict):
    """Read and check the data of ``cfg``.

    Returns ``(frames, isolated, elements)``: the non-isolated frames, the energies of the
    data's isolated-atom frames (element -> eV; possibly empty) and the model's elements in
    order. The E0s are decided after the split (:func:`mlff_ins.data.e0s.choose_e0s`), since a
    fit may use the training frames only.
    """
    frames = [a for f in data_files(cfg) for a in read_frames(f)]
    frames, isolated = split_isolated_atoms(frames)
    if not frames:
        raise InputError(f"{data_label(cfg)}: no frames besides isolated atoms")
    data_elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    elements = list(cfg["elements"]) if cfg.get("elements") else data_elements
    extra = sorted(set(data_elements) - set(elements))
    if extra:
        raise InputError(f"{data_label(cfg)}: element {extra[0]} is in the data but not in "
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


def check_oversample(frames: list, patterns: dict, *, source: str,
                     option: str = "training.oversample") -> None:
    """Raise :class:`InputError` for a pattern of ``option`` (oversample, frame_weights) that
    matches no frame of ``source``."""
    kinds = sorted({str(a.info.get("config_type", "")) for a in frames})
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(k, pattern) for k in kinds):
            raise InputError(f"{option}: '{pattern}' matches no config_type in "
                             f"{source} (it has: {', '.join(kinds) or 'none'})")


def with_frame_weights(frames: list, patterns: dict) -> list:
    """Copies of the frames whose ``config_type`` matches a pattern, with that pattern's loss
    weight as ``info["frame_weight"]`` (the largest when several match; the others keep none,
    which counts 1: :mod:`mlff_ins.train.frame_weights`)."""
    out = []
    for atoms in frames:
        kind = str(atoms.info.get("config_type", ""))
        w = max([float(v) for p, v in patterns.items() if fnmatch.fnmatchcase(kind, p)],
                default=None)
        if w is not None:
            calc = atoms.calc
            atoms = atoms.copy()
            atoms.calc = calc
            atoms.info["frame_weight"] = w
        out.append(atoms)
    return out


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


def _read_csv_last_epoch(csv_path: Path) -> tuple[int, int, float | None] | None:
    """(first and last epoch logged, the last validation force MAE or None) of a member's CSV
    log (a resumed member's log starts at the epoch it resumed at); None while it has no rows."""
    if not csv_path.exists():
        return None
    lines = csv_path.read_text().splitlines()
    if len(lines) < 2:
        return None
    header = lines[0].split(",")
    epoch_col = header.index("epoch") if "epoch" in header else None
    f_col = next((i for i, h in enumerate(header) if h == "val0_epoch/forces_mae"), None)
    first, epoch, fmae = None, 0, None
    for line in lines[1:]:
        cols = line.split(",")
        if epoch_col is not None and len(cols) > epoch_col and cols[epoch_col]:
            e = int(float(cols[epoch_col]))
            first = e if first is None else min(first, e)
            epoch = max(epoch, e)
        if f_col is not None and len(cols) > f_col and cols[f_col]:
            fmae = float(cols[f_col])
    return first or 0, epoch, fmae


# --- launching nequip-train: several members at once, several processes per member -----------

POLL_S = 0.5
#: how long rank 0 of an srun launch waits for the other tasks to report (seconds)
RANK_WAIT_S = 300.0
DDP_STRATEGY = "nequip.train.SimpleDDPStrategy"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slurm_tasks(env) -> int:
    """Tasks of the SLURM job step as Lightning sees them (0: Lightning will not use SLURM).

    Lightning's ``SLURMEnvironment`` takes over when ``SLURM_NTASKS`` is set and the job is not
    named ``bash`` or ``interactive``; then every rank must be a task started by ``srun``.
    """
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return 0
    try:
        return int(env["SLURM_NTASKS"])
    except ValueError:
        return 0


def _int_env(env, name: str) -> int | None:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return None


def check_launch(cfg: dict, *, devices: int = 1, num_nodes: int = 1, parallel_members: int = 1,
                 env=None) -> dict:
    """Check how the members are to run and return the plan; raise :class:`InputError` naming
    the option at fault.

    ``devices`` processes per node times ``num_nodes`` nodes train each member together
    (Lightning distributed data parallel, nequip's ``SimpleDDPStrategy``; gloo on CPU, NCCL on
    CUDA); ``parallel_members`` single-process members train side by side. ``training.batch_size``
    stays the batch of one optimizer step: each of the ``devices * num_nodes`` processes takes
    ``batch_size / (devices * num_nodes)`` frames of it.

    Returns a dict: ``world_size``, ``rank`` and ``tasks`` (this driver among the tasks ``srun``
    started; 0 and 1 otherwise), ``threads`` (torch threads per process; None = leave torch's
    default), ``hide_slurm`` (Lightning is to start the local processes itself, so the SLURM
    variables of a single-task job must not reach it), ``gpus`` (visible CUDA devices when the
    members run on CUDA, else []), ``pinned`` (``--device cuda:N``: ``gpus`` is that one GPU,
    the only one the member processes see).
    """
    env = os.environ if env is None else env
    for opt, value in (("--devices", devices), ("--num-nodes", num_nodes),
                       ("--parallel-members", parallel_members)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{opt}: must be a whole number >= 1 (got {value!r})")
    world = devices * num_nodes
    if parallel_members > 1 and world > 1:
        raise InputError("--parallel-members: runs single-process members side by side and "
                         "cannot be combined with --devices or --num-nodes above 1 (there every "
                         "member already uses all the processes)")
    dev = cfg.get("device", "cpu")
    from mlff_ins.model.calculator import resolve_device

    resolve_device(dev)   # an unknown name, or cuda without a GPU, fails before any training
    gpus: list[str] = []
    pinned = str(dev).strip().lower().startswith("cuda:")
    if pinned:
        # one named GPU: every member process sees only it (Lightning's "auto" took GPU 0)
        if world > 1:
            raise InputError(f"--device {dev}: names one GPU; to train each member on several, "
                             f"give --device cuda --devices {world} (CUDA_VISIBLE_DEVICES picks "
                             "which)")
        index = int(str(dev).strip().split(":", 1)[1])
        listed = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        if listed and index >= len(listed):
            raise InputError(f"--device {dev}: CUDA_VISIBLE_DEVICES shows {len(listed)} GPU(s)")
        gpus = [listed[index] if listed else str(index)]
    elif dev in ("cuda", "auto"):
        import torch
        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev == "cuda" and n_gpu < devices) or (dev == "auto" and 0 < n_gpu < devices):
            opt = "--device cuda" if devices == 1 else f"--devices {devices}"
            raise InputError(f"{opt}: needs {devices} CUDA GPU{'s' if devices > 1 else ''} on "
                             f"this node, {n_gpu} visible"
                             + (" (give --device cpu to run the processes on CPU cores)"
                                if devices > 1 else ""))
        if n_gpu:
            listed = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
            gpus = listed[:n_gpu] if listed else [str(i) for i in range(n_gpu)]
    batch = int(cfg["training"]["batch_size"])
    if world > 1 and batch % world:
        raise InputError(f"--devices {devices}" + (f" --num-nodes {num_nodes}" if num_nodes > 1
                                                   else "")
                         + f": training.batch_size {batch} is the batch of one optimizer step, "
                         f"split over the {world} processes; make it a multiple of {world}")
    tasks = _slurm_tasks(env)
    rank, hide_slurm = 0, False
    if tasks > 1:
        per_node = _int_env(env, "SLURM_NTASKS_PER_NODE")
        nodes = _int_env(env, "SLURM_NNODES")
        if world == 1:
            raise InputError(f"--devices: this SLURM job step runs {tasks} copies of the command "
                             "(SLURM_NTASKS) but --devices 1 --num-nodes 1 trains on one process; "
                             "give --devices (tasks per node) and --num-nodes, or start one task")
        if per_node is None:
            raise InputError("--devices: start the tasks with srun --ntasks-per-node="
                             f"{devices} (Lightning places its ranks by tasks per node; "
                             "--ntasks alone is not enough)")
        if per_node != devices:
            raise InputError(f"--devices {devices}: SLURM starts {per_node} tasks per node; "
                             f"Lightning needs one task per device: srun --ntasks-per-node="
                             f"{devices}")
        if nodes is not None and nodes != num_nodes:
            raise InputError(f"--num-nodes {num_nodes}: the SLURM job step spans {nodes} nodes")
        if tasks != world:
            raise InputError(f"--devices {devices} --num-nodes {num_nodes}: {world} processes, "
                             f"but SLURM started {tasks} tasks")
        rank = _int_env(env, "SLURM_PROCID") or 0
    elif num_nodes > 1:
        raise InputError(f"--num-nodes {num_nodes}: several nodes need one process per device "
                         f"started by SLURM: srun --nodes={num_nodes} --ntasks-per-node="
                         f"{devices} mlff-ins train ... (see docs/training.md)")
    elif world > 1:
        hide_slurm = tasks == 1  # a one-task SLURM job: Lightning starts the processes itself
    threads = None
    if "OMP_NUM_THREADS" not in env:
        if tasks > 1:
            per_task = _int_env(env, "SLURM_CPUS_PER_TASK")
            threads = per_task or max(1, _cores() // devices)
        elif parallel_members > 1 or world > 1:
            side_by_side = min(parallel_members, int(cfg.get("ensemble", parallel_members)))
            threads = max(1, _cores() // max(side_by_side, devices))
    return {"world_size": world, "rank": rank, "tasks": max(tasks, 1), "threads": threads,
            "hide_slurm": hide_slurm, "gpus": gpus if dev != "cpu" else [], "pinned": pinned}


def _member_cmd(member_dir: Path, hydra_dir: Path, ckpt: str | None, *,
                inline_package: bool = False) -> list[str]:
    """nequip-train's command for the member; with ``inline_package`` the same process then
    packages it into ``tmp_model.nequip.zip`` (:mod:`mlff_ins.train.member_process`: one Python
    start instead of two; single-process members only)."""
    args = ["-cp", str(member_dir.resolve()), "-cn", "nequip",
            f"hydra.run.dir={hydra_dir.resolve()}"]
    if ckpt:
        args.append(f"++ckpt_path={ckpt}")
    if inline_package:
        tmp = member_dir.resolve() / f"tmp_{PACKAGE_NAME}"
        return [sys.executable, "-m", "mlff_ins.train.member_process", str(tmp), "--", *args]
    return [sys.executable, "-m", "nequip.scripts.train", *args]


class _MemberRun:
    """One member's nequip-train subprocess, then (optionally) its packaging: ``package=True``
    starts a nequip-package subprocess after the training, ``package="inline"`` takes the
    package the training process wrote itself (``_member_cmd(..., inline_package=True)``).

    Everything it writes is inside its member folder, so members can run side by side.
    """

    def __init__(self, member_dir: Path, cmd: list[str], *, log_name: str = "train.log",
                 csv: Path | None = None, label: str = "", package: bool = True):
        self.member_dir, self.cmd, self.log_name = member_dir, cmd, log_name
        self.csv, self.label, self.package = csv, label, package
        self.proc: subprocess.Popen | None = None
        self.env: dict | None = None
        self.stage, self.slot, self.bar, self.shown, self.log = "train", 0, None, None, None
        self.max_epochs = 0

    def start(self, env: dict, slot: int, progress: bool, max_epochs: int) -> None:
        self.slot, self.max_epochs = slot, max_epochs
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=max_epochs, desc=self.label, unit="epoch", position=slot,
                            leave=True)
        self.log = open(self.member_dir / self.log_name, "a")
        self.env = env
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.member_dir)

    def _update_bar(self) -> None:
        if self.bar is None or self.csv is None:
            return
        state = _read_csv_last_epoch(self.csv)
        if state is not None and state != self.shown:  # redraw only on news (short logs)
            first, epoch, fmae = state
            if self.shown is None:
                # a resumed member: its epochs before this run are not this run's pace (the
                # rate and the time left would count them as trained in the last minutes)
                self.bar.initial = first
            self.shown = state
            self.bar.n = min(epoch + 1, self.max_epochs)
            if fmae is not None:
                self.bar.set_postfix(val_force_mae=f"{1000 * fmae:.0f} meV/A")
            self.bar.refresh()

    def poll(self) -> bool:
        """Advance; True once the member is trained (and packaged). Raises on a failure."""
        if self.stage == "train":
            self._update_bar()
            rc = self.proc.poll()
            if rc is None:
                return False
            stopped_early = (rc == 0 and self.bar is not None and self.shown is not None
                             and self.shown[1] + 1 < self.max_epochs)
            self._close()
            if stopped_early:
                print(f"{self.label}: ended after epoch {self.shown[1] + 1} of "
                      f"{self.max_epochs} (--early-stop, or the --max-minutes cap)", flush=True)
            if rc != 0:
                log_path = self.member_dir / self.log_name
                raise ToolFailed(f"nequip-train (exit {rc})", self.member_dir, log_path,
                                 log_path.read_text())
            if not self.package:
                return True
            if self.package == "inline":
                tmp = self.member_dir.resolve() / f"tmp_{PACKAGE_NAME}"
                if not tmp.exists():
                    raise RuntimeError(f"{self.member_dir}: the training process ended without "
                                       f"writing its package {tmp.name}; see {self.log_name}")
                shutil.move(tmp, self.member_dir / PACKAGE_NAME)
                return True
            self.stage = "package"
            self.proc, self.tmp_pkg = _start_package(self.member_dir, self.env)
            return False
        rc = self.proc.poll()
        if rc is None:
            return False
        _finish_package(self.member_dir, self.proc, self.tmp_pkg)
        return True

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()


def member_env(plan: dict, parallel_members: int, slot: int, env: dict) -> dict:
    """The environment of the member process in ``slot``: side-by-side members on CUDA see one
    GPU each, round robin; ``--device cuda:N`` (``plan["pinned"]``) shows every member that GPU
    alone; otherwise ``env`` unchanged."""
    if not plan["gpus"] or (parallel_members == 1 and not plan["pinned"]):
        return env
    return {**env, "CUDA_VISIBLE_DEVICES": plan["gpus"][slot % len(plan["gpus"])]}


def _run_members(runs: list[_MemberRun], *, parallel: int, progress: bool, max_epochs: int,
                 env_for_slot, before_start=None, check=None) -> None:
    """Run ``runs`` with at most ``parallel`` at a time; on any failure (or Ctrl-C, or an
    exception from ``check()``, called every poll) stop the others (each keeps its last
    checkpoint for --resume) and raise."""
    pending, running = list(runs), []
    free = list(range(parallel))
    # `kill PID` (or SLURM's SIGTERM) must not orphan nequip-train children that would keep
    # writing into the bundle while a --resume starts new ones: stop them first
    with sigterm_as_interrupt():
        try:
            while pending or running:
                while pending and free:
                    run = pending.pop(0)
                    if before_start is not None:
                        before_start(run)
                    slot = free.pop(0)
                    run.start(env_for_slot(slot), slot, progress, max_epochs)
                    running.append(run)
                time.sleep(POLL_S)
                if check is not None:
                    check()
                for run in list(running):
                    if run.poll():
                        running.remove(run)
                        free.append(run.slot)
                        free.sort()
        except BaseException:
            for run in running:
                run.stop()
            raise


def _start_package(member_dir: Path, env: dict | None = None, tag: str = "",
                   ckpt: Path | None = None):
    """Start nequip-package on ``ckpt``, by default the member's best (else last) checkpoint.
    ``tag`` makes the temporary package and log names unique (an export beside a running
    training must not write the files the training's own packaging writes)."""
    member_dir = member_dir.resolve()
    if ckpt is None:
        ckpt = member_dir / "best.ckpt"
        if not ckpt.exists():
            ckpt = member_dir / "last.ckpt"
    tmp = member_dir / f"tmp{tag}_{PACKAGE_NAME}"
    log_path = member_dir / f"package{tag}.log"
    log = open(log_path, "w")
    try:   # the member's own environment: its threads and GPU, not the whole machine
        proc = subprocess.Popen([sys.executable, "-m", "nequip.scripts.package", "build",
                                 str(ckpt), str(tmp)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=member_dir, env=env)
    finally:
        log.close()  # the child holds its own descriptor
    proc.log_path = log_path
    return proc, tmp


def _finish_package(member_dir: Path, proc, tmp: Path, dest: Path | None = None) -> Path:
    """Wait for the packaging and move the package to ``dest`` (default: the member's
    model.nequip.zip, which marks the member finished)."""
    member_dir = member_dir.resolve()
    rc = proc.wait()
    log = getattr(proc, "log_path", member_dir / "package.log")
    if rc != 0:
        raise ToolFailed(f"nequip-package (exit {rc})", member_dir, log, Path(log).read_text())
    out = member_dir / PACKAGE_NAME if dest is None else dest
    shutil.move(tmp, out)     # a rename on one file system
    if Path(log).name != "package.log":       # an export's own log: not left in the run
        Path(log).unlink(missing_ok=True)
    return out


def _package(member_dir: Path) -> Path:
    """Package a member's best (else last) checkpoint as ``model.nequip.zip``."""
    proc, tmp = _start_package(member_dir)
    return _finish_package(member_dir, proc, tmp)


# --- srun: one copy of the driver per task; rank 0 prepares and packages, all ranks train --------

def _sync_dir(out: Path, env) -> Path:
    """Where the ranks of this srun step meet: one folder per job, step and requeue, so that no
    rank reads the files of an earlier step."""
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", "0"))
    restart = env.get("SLURM_RESTART_COUNT", "0")
    return out / ".ddp" / f"{env.get('SLURM_JOB_ID', '0')}.{step}.{restart}"


def _check_abort(sync: Path) -> None:
    if (sync / "abort").exists():
        raise InputError(f"rank 0 stopped: {(sync / 'abort').read_text().strip()}")


def _wait_for(sync: Path, name: str) -> dict:
    """Wait for rank 0's file ``name`` in ``sync``; raise if rank 0 gave up instead."""
    while True:
        _check_abort(sync)
        if (sync / name).exists():
            return json.loads((sync / name).read_text())
        time.sleep(POLL_S)


def _wait_for_ranks(sync: Path, tasks: int) -> None:
    deadline = time.time() + RANK_WAIT_S
    while True:
        ready = [r for r in range(1, tasks) if (sync / f"ready_{r}").exists()]
        if len(ready) == tasks - 1:
            return
        if time.time() > deadline:
            raise InputError(f"--devices: only {len(ready) + 1} of the {tasks} SLURM tasks "
                             f"started within {RANK_WAIT_S:.0f} s; start the command with srun "
                             "(one task per device), not as a plain line of the batch script")
        time.sleep(POLL_S)


def _follow_rank0(cfg: dict, out: Path, plan: dict, env: dict) -> None:
    """A non-zero srun task: run this rank of every member that rank 0 trains."""
    rank = plan["rank"]
    sync = _sync_dir(out, os.environ)
    sync.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sync / f"ready_{rank}", f"{os.getpid()}\n")
    for k in range(int(cfg["ensemble"])):
        step = _wait_for(sync, f"member_{k}.json")
        if not step["train"]:
            continue
        member_dir = out / "members" / f"member_{k}"
        cmd = _member_cmd(member_dir, member_dir / "hydra" / f"rank_{rank}", step["ckpt"])
        run = _MemberRun(member_dir, cmd, log_name=f"train.rank{rank}.log", package=False)
        _run_members([run], parallel=1, progress=False, max_epochs=0,
                     env_for_slot=lambda slot: env, check=lambda: _check_abort(sync))
    _wait_for(sync, "done")


def _replace_root(obj, old: str, new: str):
    if isinstance(obj, dict):      # keys too: ModelCheckpoint keeps {path: score}
        return {_replace_root(k, old, new): _replace_root(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace_root(v, old, new) for v in obj)
    if isinstance(obj, str) and (obj == old or obj.startswith(old + os.sep)):
        return new + obj[len(old):]
    return obj


def relocate_checkpoints(member_dir: Path, out: Path) -> int:
    """Point the checkpoints of a member at the run folder where it is now. A Lightning
    checkpoint of nequip records absolute paths (the split files nequip reloads on resume, the
    checkpoint and log folders), so a run folder that moved (another checkout, another machine)
    would not resume; its old root is read from the recorded validation file
    (``OLD/data/val.xyz``) and every path under it is rewritten, weights untouched. Returns the
    number of checkpoints rewritten. The checkpoints are this run's own files: loading them
    unpickles objects, as Lightning's own resume does (the trust boundary of README)."""
    import torch

    from mlff_ins.atomic_io import atomic_path

    new_root = str(Path(out).resolve())
    n = 0
    for ckpt in sorted(Path(member_dir).glob("*.ckpt")):
        if ckpt.name == INIT_NAME:   # another run's checkpoint, read for its weights only
            continue
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if not _relocate_state(state, new_root):
            continue
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)
        n += 1
    return n


def _relocate_state(state: dict, new_root: str) -> bool:
    """Rewrite the paths a loaded checkpoint records under its run folder to ``new_root``, in
    place (weights untouched); False where it records none or the root is already
    ``new_root``."""
    val = ((state.get("hyper_parameters") or {}).get("info_dict") or {}) \
        .get("data", {}).get("val_file_path")
    if not val:
        return False
    old_root = str(Path(val).parent.parent)
    if old_root == new_root:
        return False
    for key in [k for k in state if k not in ("state_dict", "optimizer_states")]:
        state[key] = _replace_root(state[key], old_root, new_root)
    return True


#: training settings a --resume may change: how long the run goes on, not what it learns
RUN_LENGTH = ("max_epochs", "max_minutes", "early_stop")
#: settings of where a run trains, not of what it trains: a resume may change them (a run started
#: on a CPU may go on on a GPU machine)
WHERE = ("device",)
#: how the learning rate decays: a resume may change it where the run's logged validation losses
#: give the same rates so far under the new settings (mlff_ins.train.schedule)
SCHEDULE = ("lr_plateau",)


#: a fine-tuning member's copy of the checkpoint it starts from (member_k/init_from.ckpt)
INIT_NAME = "init_from.ckpt"
#: settings a fine-tuning stage (training.init_from) must share with the run it starts from
INIT_SAME = ("split", "cutoff", "elements", "e0s", "model")


def init_sources(cfg: dict, ensemble: int) -> list[Path] | None:
    """The best checkpoints, member by member, of the run that ``training.init_from`` names, or
    None. That run must have trained on the same data with the same split, cutoff, elements,
    E0s and model, and have at least ``ensemble`` members with a best checkpoint (finished or
    not): a fine-tuning stage changes how the frames are weighted and how fast it learns, never
    which frames are held out, so its test errors stay honest."""
    src = cfg["training"].get("init_from")
    if not src:
        return None
    run = Path(src)
    state_path = run / "train_settings.json"
    if not state_path.is_file():
        raise InputError(f"--init-from {src}: not the folder of a training run (no "
                         f"train_settings.json there)")
    old = json.loads(state_path.read_text())
    before = old.get("settings") or {}
    if old.get("data_sha256") != data_sha256(cfg) \
            and _extension_prefix(cfg, old.get("data_sha256")) is None:
        raise InputError(f"--init-from {src}: that run trained on other data than "
                         f"{data_label(cfg)}; a fine-tuning stage keeps the data and the split "
                         f"(or appends data files to them), so that its test frames stay unseen")
    for key in INIT_SAME:
        a, b = before.get(key), cfg.get(key)
        if key == "model":   # settings added later, at their old behaviour
            a = {"pair_potential": None, **(a or {})}
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            raise InputError(f"--init-from {src}: its {key} ({a}) differs from this run's "
                             f"({b}); a fine-tuning stage keeps it")
    if ensemble > int(before.get("ensemble", 1)):
        raise InputError(f"--init-from {src}: {ensemble} members asked for, that run has "
                         f"{before.get('ensemble', 1)}")
    ckpts = [run / "members" / f"member_{k}" / "best.ckpt" for k in range(ensemble)]
    missing = [c for c in ckpts if not c.is_file()]
    if missing:
        raise InputError(f"--init-from {src}: {missing[0]} is missing (a member that has not "
                         f"finished an epoch)")
    return ckpts


def _extension_prefix(cfg: dict, old_sha256: str | None) -> int | None:
    """m when the first m (< all) data files of ``cfg`` are, in order, the data whose identity
    (:func:`data_sha256`) is ``old_sha256``: a run on them is extended by the files after them
    (an active-learning round's new frames); else None."""
    files = data_files(cfg)
    if not old_sha256 or len(files) < 2:
        return None
    hashes = [file_sha256(f) for f in files]
    for m in range(1, len(files)):
        h = hashes[0] if m == 1 else hashlib.sha256("\n".join(hashes[:m]).encode()).hexdigest()
        if h == old_sha256:
            return m
    return None


#: a run that extends the data of the run it fine-tunes: that run's split of its frames, kept
INHERITED_SPLIT = "inherited_split.json"


def inherited_split(cfg: dict, run: Path | None = None) -> dict | None:
    """The split a fine-tuning run keeps, or None for a run trained from fresh weights: the
    ``training.init_from`` run's split of its frames ({"n": its frame count, "files": how many
    of the data files hold them, "test": [...], "val": [...], "train": [...]}), read from
    ``run``'s own copy when it has one (so a resume or an export needs the source run no
    longer). On the same data as that run the stage takes its split whole: that run's split
    need not be the one the split settings would draw (it may keep a split of its own source,
    or have been seeded with one), and drawing it again would train on its test frames."""
    if run is not None and (run / "data" / INHERITED_SPLIT).is_file():
        return json.loads((run / "data" / INHERITED_SPLIT).read_text())
    src = cfg["training"].get("init_from")
    if not src or not (Path(src) / "train_settings.json").is_file():
        return None
    old = json.loads((Path(src) / "train_settings.json").read_text())
    if old.get("data_sha256") == data_sha256(cfg):
        m = len(data_files(cfg))        # the same data: all of it keeps that run's split
    else:
        m = _extension_prefix(cfg, old.get("data_sha256"))
        if m is None:
            return None                 # init_sources refuses it
    path = Path(src) / "data" / "split.json"
    if not path.is_file():
        raise InputError(f"--init-from {src}: {path} is missing; a fine-tuning stage keeps "
                         f"that run's split of its frames")
    split = json.loads(path.read_text())
    n = len(split["test"]) + len(split["val"]) + len(split["train"])
    return {"n": n, "files": m, **{k: split[k] for k in ("test", "val", "train")}}


#: nequip's model builder that reads another checkpoint (what a fine-tuning stage's model is)
FROM_CHECKPOINT = "nequip.model.ModelFromCheckpoint"


def self_contained_model(source: Path) -> dict:
    """The model settings that build checkpoint ``source``'s network without reading any other
    file. A fine-tuning stage's checkpoints build their model through nequip's
    ``ModelFromCheckpoint`` from the checkpoint the stage started from, which may itself be a
    stage's: the chain is followed to the settings of the run trained from fresh weights (the
    weights of every link are overwritten by the next one's, so only the architecture is read
    from them). Raises InputError naming the missing link."""
    import torch

    model, path, seen = None, Path(source), []
    while True:
        if not path.is_file():
            raise InputError(f"{source}: its model is built from {path}, which is missing "
                             f"(a fine-tuning stage's copy of the checkpoint it started from); "
                             f"restore that file (a copy of the best.ckpt of the run it "
                             f"started from)")
        state = torch.load(path, map_location="cpu", weights_only=False)
        model = (state.get("hyper_parameters") or {}).get("model") or {}
        if model.get("_target_") != FROM_CHECKPOINT:
            return model
        seen.append(path.resolve())
        path = Path(model["checkpoint_path"])
        if path.resolve() in seen:
            raise InputError(f"{source}: its chain of model checkpoints loops at {path}")


def member_seed(cfg: dict, k: int) -> int:
    """Member k's seed: its weights' and its bootstrap resample's (independent of K)."""
    return int(cfg["split"]["seed"]) * 1000 + k


def _member_train_file(cfg: dict, pool: list, member_dir: Path, k: int) -> Path:
    """The file member k trains on: the run's training pool, or, where the members resample,
    oversample or weight frames, the member's own train.xyz, written when missing (it is the
    same for the same run and k, so a resume, or an export of a run checked out without it,
    writes it again)."""
    over = cfg["training"].get("oversample") or {}
    weights = cfg["training"].get("frame_weights") or {}
    if not (resamples(cfg) or over or weights):
        return member_dir.parent.parent / "data" / "train_pool.xyz"
    train_frames = pool
    if resamples(cfg):  # bootstrap resample of the training pool, one per member
        idx = np.random.default_rng(member_seed(cfg, k) + 7919).integers(0, len(pool),
                                                                         len(pool))
        train_frames = [pool[i] for i in sorted(idx)]
    train_frames = with_frame_weights(oversample(train_frames, over), weights)
    train_file = member_dir / "train.xyz"
    if not train_file.exists():
        _write_xyz(train_file, train_frames)
    return train_file


def _copy_init(source: Path, member_dir: Path) -> Path:
    """The member's own copy of the checkpoint it starts from, made once (a resume keeps it,
    even if the source run has trained on since). The copy is self-contained: where the source
    is a fine-tuning stage's checkpoint, its model settings are those of the chain's first run
    (:func:`self_contained_model`), so that the stage never reads another run's files again (a
    round of fine-tuning from a round whose own starting checkpoint is gone still exports and
    resumes)."""
    import torch

    dest = member_dir / INIT_NAME
    if not dest.exists():
        state = torch.load(source, map_location="cpu", weights_only=False)
        hp = state.get("hyper_parameters") or {}
        if (hp.get("model") or {}).get("_target_") == FROM_CHECKPOINT:
            hp["model"] = self_contained_model(source)
        with atomic_path(dest) as tmp:
            torch.save(state, tmp)
    return dest


def _adds_members(cfg: dict, out: Path) -> bool:
    """Whether ``cfg`` asks the finished run in ``out`` for more members than its bundle has
    (the bundle.json of the members it had stays until the added ones are trained)."""
    try:
        members = json.loads((out / "bundle.json").read_text())["members"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return int(cfg["ensemble"]) > len(members)


def _check_members(cfg: dict, old: dict, out: Path, option: str) -> None:
    """A --resume may add members (member k's seed and resample do not depend on K), never
    drop any, and only where the new members take the training frames as the old ones did."""
    k_old, k_new = int(old.get("ensemble", 1)), int(cfg["ensemble"])
    if k_new < k_old:
        raise InputError(f"{out}: {option} with --ensemble {k_new}, the run there has {k_old} "
                         f"members (members may be added, not dropped)")
    if resamples(old) != resamples(cfg):
        how = {True: "each on its own bootstrap resample of the training pool",
               False: "on the whole training pool"}
        raise InputError(f"{out}: {option} would train the members {how[resamples(cfg)]}, the "
                         f"run's {k_old} member(s) trained {how[resamples(old)]} (set "
                         f"training.bootstrap: {str(resamples(old)).lower()})")


def _fixed_settings(cfg: dict) -> dict:
    """``cfg`` as plain JSON without the run-length settings of :data:`RUN_LENGTH`, the
    :data:`WHERE` settings, the data file's path (its content is checked by hash, so a moved
    checkout resumes) and the ensemble's size and resampling (:func:`_check_members`)."""
    plain = json.loads(json.dumps(cfg))
    plain.pop("ensemble", None)
    plain.get("training", {}).pop("bootstrap", None)
    for key in RUN_LENGTH + SCHEDULE:
        plain.get("training", {}).pop(key, None)
    plain.pop("data", None)
    for key in WHERE:
        plain.pop(key, None)
    # settings added later, at their old behaviour, so a run made before them still resumes
    plain.get("model", {}).setdefault("pair_potential", None)
    training = plain.get("training", {})
    training.setdefault("init_from", None)
    training.setdefault("frame_weights", {})
    training.setdefault("grad_clip", None)
    if training["init_from"]:   # where the source run is does not count, as for the data: its
        training["init_from"] = Path(training["init_from"]).name   # copies are in the members
    return plain


def train_bundle(cfg: dict, out: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True, devices: int = 1, num_nodes: int = 1,
                 parallel_members: int = 1) -> Path | None:
    """Train the model bundle described by ``cfg`` into the folder ``out``.

    Parameters
    ----------
    cfg : training settings from :func:`mlff_ins.train.config.load_train_config`.
    out : bundle folder. It must not hold a finished bundle; with ``resume`` an unfinished one
        is continued (same settings required).
    resume : continue a killed run in ``out``.
    devices, num_nodes : processes per node and nodes that train each member together
        (distributed data parallel through Lightning; see :func:`check_launch`). Under ``srun``
        every task runs this function: rank 0 prepares, packages and scores, the others only
        train.
    parallel_members : members trained at the same time (single-process members only).

    Returns
    -------
    Path of the bundle folder (holding bundle.json once finished); None on a non-zero srun rank.
    """
    plan = check_launch(cfg, devices=devices, num_nodes=num_nodes,
                        parallel_members=parallel_members)
    out = Path(out)
    env = dict(os.environ)
    if plan["threads"] is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(plan["threads"])
    if plan["hide_slurm"]:
        env.pop("SLURM_NTASKS", None)
    if plan["rank"] > 0:
        _follow_rank0(cfg, out, plan, env)
        return None
    # one training per run folder: a second (a rerun while the first still runs, say after a
    # kill of a wrapping script that left the trainer alive) would train the same members on
    # the same checkpoints. The lock is a hidden file beside the folder and goes with the process.
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.train.lock",
                        f"{out}: another `mlff-ins train` is running in this folder; wait for "
                        f"it or stop it (SIGTERM) first"):
        return _train_rank0(cfg, out, resume=resume, progress=progress, plan=plan, env=env,
                            devices=devices, num_nodes=num_nodes,
                            parallel_members=parallel_members)


def _train_rank0(cfg, out, *, resume, progress, plan, env, devices, num_nodes, parallel_members):
    if plan["tasks"] == 1:
        return _train_bundle(cfg, out, resume=resume, progress=progress, plan=plan, env=env,
                             devices=devices, num_nodes=num_nodes,
                             parallel_members=parallel_members)
    sync = _sync_dir(out, os.environ)
    try:
        result = _train_bundle(cfg, out, resume=resume, progress=progress, plan=plan, env=env,
                               devices=devices, num_nodes=num_nodes,
                               parallel_members=parallel_members, sync=sync)
    except BaseException as err:
        sync.mkdir(parents=True, exist_ok=True)
        write_text_atomic(sync / "abort", (str(err).splitlines() or [type(err).__name__])[0])
        raise
    write_json_atomic(sync / "done", {})
    return result


def _train_bundle(cfg: dict, out: Path, *, resume: bool, progress: bool, plan: dict, env: dict,
                  devices: int, num_nodes: int, parallel_members: int,
                  sync: Path | None = None) -> Path:
    from mlff_ins.train.report import evaluate_bundle_members, write_report

    state_path = out / "train_settings.json"
    if out.exists() and any(p.name != ".ddp" for p in out.iterdir()):
        if (out / "bundle.json").exists() and not (resume and _adds_members(cfg, out)):
            raise InputError(f"{out}: a finished model bundle is already there "
                             "(choose another -o or delete it; --resume with a larger "
                             "--ensemble adds members to it)")
        if not resume:
            raise InputError(f"{out}: folder exists with an unfinished training run; "
                             "add --resume to continue it, or choose another -o")
        if state_path.exists():
            _check_same_run(cfg, out, "--resume")
    changes = _reschedule(cfg, out) if resume and state_path.exists() else []
    frames, split, pool, val_frames, test_frames, elements, e0 = _split_data(cfg, out)
    kept = inherited_split(cfg, out)
    if kept is not None:
        n_new = len(frames) - kept["n"]
        # a run seeded with data/inherited_split.json and no init_from trains from fresh weights
        what, whose = (("fine-tuning", "the run it starts from") if cfg["training"].get("init_from")
                       else ("training from fresh weights", f"the split in {INHERITED_SPLIT}"))
        print(f"{what} on {len(frames)} frames: the {kept['n']} of {whose} "
              f"keep its split ({len(kept['test'])} test, {len(kept['val'])} validation)"
              + (f", the {n_new} added are split among themselves" if n_new else ""),
              flush=True)
    e0s = e0.values
    print(e0.message, flush=True)
    K = int(cfg["ensemble"])
    # a fine-tuning stage reads the run it starts from until every member has its copy
    inits = None
    if cfg["training"].get("init_from") and not all(
            (out / "members" / f"member_{k}" / INIT_NAME).exists() for k in range(K)):
        inits = init_sources(cfg, K)
    out.mkdir(parents=True, exist_ok=True)
    sha256 = data_sha256(cfg)
    write_json_atomic(state_path, {"settings": cfg, "data_sha256": sha256,
                                   **({"lr_plateau_changes": changes} if changes else {})})
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    write_json_atomic(data_dir / "split.json", split)
    if kept is not None and not (data_dir / INHERITED_SPLIT).exists():
        write_json_atomic(data_dir / INHERITED_SPLIT, kept)
    # the validation frames carry the loss weights too: the best epoch, the learning-rate plateau
    # and the early stop then follow the objective the members train on (test.xyz: unweighted)
    val_weighted = with_frame_weights(val_frames, cfg["training"].get("frame_weights") or {})
    for name, fr in (("train_pool", pool), ("val", val_weighted), ("test", test_frames)):
        _write_xyz(data_dir / f"{name}.xyz", fr)
    has_stress = all(a.calc is not None and "stress" in a.calc.results for a in frames)

    max_epochs = int(cfg["training"]["max_epochs"])
    members, runs = [], []
    t_start = time.time()
    for k in range(K):  # every member's files and decisions first, then the runs
        member_dir = out / "members" / f"member_{k}"
        member_dir.mkdir(parents=True, exist_ok=True)
        members.append(member_dir)
        if (member_dir / PACKAGE_NAME).exists():
            if sync is not None:
                write_json_atomic(sync / f"member_{k}.json", {"train": False})
            continue
        if not resume and (member_dir / "last.ckpt").exists():
            raise InputError(f"{member_dir}: an unfinished member is there; add --resume")
        seed = member_seed(cfg, k)
        train_file = _member_train_file(cfg, pool, member_dir, k)
        init = None
        if cfg["training"].get("init_from"):
            init = (member_dir / INIT_NAME if inits is None
                    else _copy_init(inits[k], member_dir)).resolve()
        ncfg = nequip_config(cfg, elements=elements, e0s=e0s, train_file=train_file.resolve(),
                             val_file=(data_dir / "val.xyz").resolve(),
                             test_file=(data_dir / "test.xyz").resolve(),
                             run_dir=member_dir.resolve(), seed=seed, has_stress=has_stress,
                             log_version=len(list(member_dir.glob("logs/version_*"))),
                             devices=devices, num_nodes=num_nodes, init_checkpoint=init)
        write_text_atomic(member_dir / "nequip.yaml", yaml.safe_dump(ncfg, sort_keys=False))
        last = member_dir / "last.ckpt"
        if resume:
            relocate_checkpoints(member_dir, out)
        ckpt = str(last.resolve()) if resume and last.exists() else None
        log_csv = (member_dir / "logs" / f"version_{ncfg['trainer']['logger']['version']}" /
                   "metrics.csv")
        one_process = devices * num_nodes == 1 and sync is None
        run = _MemberRun(member_dir, _member_cmd(member_dir, member_dir / "hydra", ckpt,
                                                 inline_package=one_process),
                         csv=log_csv, label=f"train member {k + 1}/{K}",
                         package="inline" if one_process else True)
        run.k, run.ckpt = k, ckpt
        runs.append(run)

    def env_for_slot(slot: int) -> dict:
        return member_env(plan, parallel_members, slot, env)

    def before_start(run) -> None:  # srun: tell the other ranks to start the same member
        write_json_atomic(sync / f"member_{run.k}.json", {"train": True, "ckpt": run.ckpt})

    if sync is not None:
        _wait_for_ranks(sync, plan["tasks"])
    _run_members(runs, parallel=parallel_members, progress=progress, max_epochs=max_epochs,
                 env_for_slot=env_for_slot, before_start=before_start if sync else None)
    train_minutes = (time.time() - t_start) / 60

    metrics, parity = evaluate_bundle_members(members, test_frames, device=_device(cfg))
    world = devices * num_nodes
    bundle = {
        **_bundle_meta(cfg, elements=elements, e0=e0, sha256=sha256,
                       members=[str(m.relative_to(out) / PACKAGE_NAME) for m in members],
                       counts=(len(frames), len(pool), len(val_frames), len(test_frames)),
                       metrics=metrics),
        **({"lr_plateau_changes": changes} if changes else {}),
        "train_minutes_this_run": round(train_minutes, 2),
        "launch_this_run": {
            "devices": devices, "num_nodes": num_nodes, "world_size": world,
            "strategy": DDP_STRATEGY if world > 1 else None,
            "process_group_backend": ("gloo" if _device(cfg) == "cpu" else "nccl")
            if world > 1 else None,
            "batch_size_per_process": int(cfg["training"]["batch_size"]) // world,
            "parallel_members": parallel_members, "torch_threads": plan["threads"],
            "srun_tasks": plan["tasks"]},
        "versions": _versions(),
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, metrics, parity, members, test_frames, bundle)
    write_json_atomic(out / "bundle.json", bundle)  # last: marks the bundle finished
    return out


def _reschedule(cfg: dict, out: Path) -> list[dict]:
    """The learning-rate plateau settings changed by a --resume: every unfinished member's last
    checkpoint gets the scheduler state the new settings give on its logged validation losses,
    or the resume is refused when they would have changed the rates so far (see
    :mod:`mlff_ins.train.schedule`; all members are checked before any is rewritten). Returns the
    run's record of such changes, this one appended."""
    import torch

    from mlff_ins.atomic_io import atomic_path
    from mlff_ins.train.schedule import plateau_settings, rescheduled_state

    old = json.loads((out / "train_settings.json").read_text())
    changes = list(old.get("lr_plateau_changes") or [])
    before = plateau_settings((old.get("settings") or {}).get("training") or {})
    after = plateau_settings(cfg["training"])
    if before == after:
        return changes
    lr = float(cfg["training"]["lr"])
    rewritten, notes = [], {}
    for member in sorted((out / "members").glob("member_*")):
        if (member / PACKAGE_NAME).exists() or not (member / "last.ckpt").exists():
            continue
        ckpt, notes[member.name] = rescheduled_state(member, lr, before, after)
        rewritten.append((member / "last.ckpt", ckpt))
    for path, ckpt in rewritten:
        with atomic_path(path) as tmp:
            torch.save(ckpt, tmp)
    print(f"learning-rate plateau settings changed from {before} to {after}; the same rates so "
          f"far on the logged validation losses of {len(notes)} unfinished member(s)", flush=True)
    return changes + [{"from": before, "to": after, "members": notes}]


def _check_same_run(cfg: dict, out: Path, option: str) -> None:
    """Refuse settings or data that differ from those the run in ``out`` started with (only the
    run length, --epochs, --max-minutes and --early-stop, the device and, under the condition of
    :func:`_reschedule`, the learning-rate plateau may change)."""
    state_path = out / "train_settings.json"
    old = json.loads(state_path.read_text())
    if _fixed_settings(old.get("settings") or {}) != _fixed_settings(cfg):
        raise InputError(f"{out}: {option} with different settings than the run there (see "
                         f"{state_path}; only the run length (--epochs, --max-minutes, "
                         f"--early-stop), --device, training.lr_plateau and a larger "
                         f"--ensemble may change)")
    _check_members(cfg, old.get("settings") or {}, out, option)
    if old.get("data_sha256") != data_sha256(cfg):
        raise InputError(f"{out}: {option} with changed data {data_label(cfg)} (it differs "
                         "from the data the run started with)")


def _split_data(cfg: dict, run: Path | None = None):
    """The data of ``cfg`` read, checked and split; the E0s from the config or isolated atoms,
    else fitted to the training pool (not val/test), shared by every member so the bundle has
    one energy baseline. Returns (frames, split, pool, val, test, elements, e0).

    A fine-tuning run whose data appends files to the data of the run it starts from
    (:func:`inherited_split`) keeps that run's split of the first frames, so none of its test
    frames is trained on now; the appended frames are split among themselves with the same
    fractions, and the E0s are decided on the first frames as that run decided them."""
    frames, isolated, elements = prepare_data(cfg)  # before anything is written
    check_oversample(frames, cfg["training"].get("oversample") or {}, source=data_label(cfg))
    check_oversample(frames, cfg["training"].get("frame_weights") or {}, source=data_label(cfg),
                     option="training.frame_weights")
    kept = inherited_split(cfg, run)
    groups = [str(a.info.get("config_type", "")) for a in frames]
    e0_source, e0_isolated = data_label(cfg), isolated
    if kept is None:
        split = split_indices(len(frames), val=cfg["split"]["val"], test=cfg["split"]["test"],
                              seed=int(cfg["split"]["seed"]), groups=groups)
    else:
        n_old = kept["n"]
        same = kept["files"] == len(data_files(cfg))    # no files appended
        first = {**cfg, "data": [str(f) for f in data_files(cfg)[:kept["files"]]]}
        old_frames, e0_isolated, _ = prepare_data(first)
        if len(old_frames) != n_old or (len(frames) <= n_old and not same):
            raise InputError(f"{data_label(cfg)}: the first {kept['files']} file(s) hold "
                             f"{len(old_frames)} frames where the run fine-tuned from split "
                             f"{n_old}, and the files after them must add frames")
        new = ({k: [] for k in ("test", "val", "train")} if same else
               split_indices(len(frames) - n_old, val=cfg["split"]["val"],
                             test=cfg["split"]["test"], seed=int(cfg["split"]["seed"]),
                             groups=groups[n_old:]))
        split = {k: sorted(list(kept[k]) + [n_old + i for i in new[k]])
                 for k in ("test", "val", "train")}
        e0_source = data_label(first)
    pool = [frames[i] for i in split["train"]]
    val_frames = [frames[i] for i in split["val"]]
    test_frames = [frames[i] for i in split["test"]]
    e0_pool = pool if kept is None else [frames[i] for i in kept["train"]]
    e0 = choose_e0s(cfg["e0s"], e0_isolated, elements, e0_pool, source=e0_source)
    return frames, split, pool, val_frames, test_frames, elements, e0


def _bundle_meta(cfg: dict, *, elements, e0, sha256: str, members: list[str],
                 counts: tuple[int, int, int, int], metrics: dict) -> dict:
    """The part of bundle.json every bundle has (a trained one and an export alike)."""
    n, n_pool, n_val, n_test = counts
    return {
        "format": "mlff-ins-bundle/1",
        "elements": elements,
        "cutoff_A": float(cfg["cutoff"]),
        "e0s_eV": {el: e0.values[el] for el in elements},
        "e0s_method": e0.method,
        "e0s_fit": e0.fit,
        "e0s_note": e0.message,
        "dtype": cfg["model"]["dtype"],
        "members": members,
        "training_data": {"file": data_label(cfg),
                          "files": [_shown(f) for f in data_files(cfg)], "sha256": sha256,
                          "n_frames": n, "n_train_pool": n_pool, "n_val": n_val,
                          "n_test": n_test},
        "metrics": metrics["ensemble_mean"],
        "preset": cfg["preset"],
        "settings": {**cfg, "data": [_shown(f) for f in data_files(cfg)]},
    }


def _checkpoint_epochs(ckpt: Path) -> int | None:
    """Epochs done when a Lightning checkpoint was saved (None if it cannot be read)."""
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception:   # noqa: BLE001 - a checkpoint torch cannot read: the epoch is unknown
        return None
    epoch = state.get("epoch") if isinstance(state, dict) else None
    return None if epoch is None else int(epoch) + 1   # Lightning counts from 0


def export_bundle(cfg: dict, run: str | os.PathLike, dest: str | os.PathLike, *,
                  progress: bool = True) -> Path:
    """Write a self-contained model bundle folder ``dest`` from the training run in ``run``,
    finished or not: every finished member, and every unfinished member's best checkpoint so
    far (packaged now), scored on the run's test split with the same report as a finished run.
    bundle.json says which members are unfinished and at which epoch (``partial``). The run
    folder is not changed (but for an unfinished member's train.xyz, written again where a
    checkout lacks it): its training continues with ``train --resume``. ``dest`` holds no
    checkpoints or logs (what a release ships); it must not exist yet.

    ``cfg`` is the run's configuration, as for a resume (only the run length may differ)."""
    run, dest = Path(run), Path(dest)
    if not (run / "train_settings.json").exists():
        raise InputError(f"{run}: not a training run folder (no train_settings.json)")
    if dest.exists():
        raise InputError(f"{dest}: exists; --export writes a new folder (delete it or choose "
                         f"another)")
    _check_same_run(cfg, run, "--export")
    frames, _, pool, val_frames, test_frames, elements, e0 = _split_data(cfg, run)
    with atomic_dir(dest) as tmp:    # a unique new folder, renamed to dest when complete
        _export_into(tmp, cfg, run, dest, frames, pool, val_frames, test_frames, elements, e0,
                     progress)
    return dest


def _relocated_copy(ckpt: Path, run: Path, tag: str) -> Path:
    """A temporary copy of checkpoint ``ckpt`` beside it (``tag`` in its name) whose recorded
    paths are under ``run`` where the run is now (the checkpoint itself is left as it is)."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    _relocate_state(state, str(run.resolve()))
    dest = ckpt.with_name(f"tmp{tag}_{ckpt.name}")
    with atomic_path(dest) as tmp:
        torch.save(state, tmp)
    return dest.resolve()


def _export_into(tmp: Path, cfg: dict, run: Path, dest: Path, frames, pool, val_frames,
                 test_frames, elements, e0, progress: bool) -> None:
    from mlff_ins.train.report import evaluate_bundle_members, write_report

    members, run_members, unfinished = [], [], {}
    for k in range(int(cfg["ensemble"])):
        member_dir = run / "members" / f"member_{k}"
        target = tmp / "members" / f"member_{k}"
        if (member_dir / PACKAGE_NAME).exists():
            target.mkdir(parents=True)
            shutil.copyfile(member_dir / PACKAGE_NAME, target / PACKAGE_NAME)
        elif (member_dir / "best.ckpt").exists():
            target.mkdir(parents=True)
            if progress:
                print(f"member {k}: unfinished; packaging its best checkpoint so far", flush=True)
            # nequip-package reads the data files the checkpoint names, by the absolute paths
            # of where the run trained: it packages a copy that names them where the run is
            # now (a run checked out elsewhere), and the member's own train.xyz, not kept in
            # git (a resume writes it again), is written here too
            _member_train_file(cfg, pool, member_dir, k)
            tag = f".export{os.getpid()}"
            ckpt = _relocated_copy(member_dir / "best.ckpt", run, tag)
            try:
                proc, ptmp = _start_package(member_dir, tag=tag, ckpt=ckpt)
                # straight into the export: a model.nequip.zip in the run would mark the
                # member finished for --resume
                _finish_package(member_dir, proc, ptmp, dest=target / PACKAGE_NAME)
            finally:
                ckpt.unlink(missing_ok=True)
            unfinished[str(k)] = {"epochs": _checkpoint_epochs(member_dir / "best.ckpt"),
                                  "max_epochs": int(cfg["training"]["max_epochs"])}
        else:
            continue
        members.append(target)
        run_members.append(member_dir)
    if not members:
        raise InputError(f"{run}: no member has a checkpoint yet; nothing to export")
    metrics, parity = evaluate_bundle_members(members, test_frames, device=_device(cfg))
    bundle = _bundle_meta(cfg, elements=elements, e0=e0,
                          sha256=data_sha256(cfg),
                          members=[str(m.relative_to(tmp) / PACKAGE_NAME) for m in members],
                          counts=(len(frames), len(pool), len(val_frames), len(test_frames)),
                          metrics=metrics)
    bundle["exported_from"] = {"run": str(run), "members_of_run": int(cfg["ensemble"])}
    if unfinished or len(members) < int(cfg["ensemble"]):
        bundle["partial"] = {"unfinished_members": unfinished,
                             "members_without_checkpoint": int(cfg["ensemble"]) - len(members)}
    bundle["versions"] = _versions()
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    for name in ("split.json", "test.xyz"):
        if (run / "data" / name).exists():
            shutil.copyfile(run / "data" / name, tmp / "data" / name)
    write_json_atomic(tmp / "metrics.json", metrics)
    write_report(tmp, metrics, parity, run_members, test_frames, bundle, name=dest.name)
    write_json_atomic(tmp / "bundle.json", bundle)


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
