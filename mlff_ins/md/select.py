"""`mlff-ins select`: the most uncertain frames of a trajectory, for DFT relabelling.

Frames are ranked by the ensemble's largest per-atom force spread (``max_force_std``, eV/Å) and
taken greedily from the top, skipping frames closer than ``min_gap`` frames to one already taken,
so the selection spreads over different events instead of N neighbours in time. The frames are
written as extxyz (positions, cell, elements; ``info`` holds the source file, frame, step, time and
spread) ready for ``mlff-ins label``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path
from mlff_ins.errors import InputError


def select_uncertain(trajectory: str | Path, top: int, output: str | Path,
                     min_gap: int | None = None, stage: str | None = None,
                     config_type: str | None = None, model: str | None = None,
                     members=None, device: str = "cpu", every: int = 1,
                     progress: bool = False) -> list[int]:
    """Write the ``top`` frames of largest ensemble force spread to ``output``; return their
    indices in the trajectory. ``stage``: only the frames of that protocol stage are candidates;
    ``config_type``: written into each frame's info (the kind of structure, which the error
    tables of ``bench train`` group by).

    ``model``: an ensemble bundle that scores the candidate frames now (every ``every``-th of
    them), instead of the spread the MD stored: a trajectory run with one member (whose stored
    spread is NaN), with another model, or scored again by a newer ensemble."""
    from ase.io import write

    from mlff_ins.data.h5md import GROUP, complete_frames, open_h5md, read_frame, stage_frames

    trajectory = Path(trajectory)
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    if every < 1:
        raise InputError(f"--every must be at least 1, not {every}")
    lo, hi = stage_frames(trajectory, stage) if stage else (0, None)
    with open_h5md(trajectory) as f:
        if GROUP not in f:
            raise InputError(f"{trajectory}: no particles/{GROUP.split('/')[-1]} group; not a "
                             f"trajectory of `mlff-ins md`")
        if model is None and "observables/max_force_std" not in f:
            raise InputError(f"{trajectory}: no per-frame max_force_std; run `mlff-ins md` with an "
                             f"ensemble model bundle (--ensemble K >= 2 when training), or "
                             f"score the frames now with --model")
        n = complete_frames(f)
        if model is None:
            std = f["observables/max_force_std/value"][()]
            n = n or len(std)
            std = std[:n].astype(float)
    if model is not None:
        stop = n if hi is None else min(hi, n)
        std = np.full(n, np.nan)
        scored = list(range(lo, stop, every))
        std[scored] = ensemble_spread(trajectory, scored, model, members=members,
                                      device=device, progress=progress)
    std[:lo] = np.nan                      # outside the stage asked for: not candidates
    if hi is not None:
        std[hi:] = np.nan
    if model is None and np.all(np.nan_to_num(std[lo:hi]) == 0):
        std[:] = np.nan        # zeros: a one-member run of an earlier version (no spread)
    if not np.any(np.isfinite(std)):
        raise InputError(f"{trajectory}: max_force_std is NaN in every frame (a single-model "
                         f"bundle has no spread); train with --ensemble 2 or more, or score "
                         f"the frames now with --model ENSEMBLE")
    span = (n if hi is None else min(hi, n)) - lo   # the candidate frames
    gap = max(1, span // (4 * top)) if min_gap is None else int(min_gap)
    chosen: list[int] = []
    for i in np.argsort(np.nan_to_num(std, nan=-np.inf))[::-1]:
        if not np.isfinite(std[i]):
            break
        if all(abs(int(i) - j) >= gap for j in chosen):
            chosen.append(int(i))
        if len(chosen) == top:
            break
    frames = []
    for i in chosen:
        a = read_frame(trajectory, i)
        a.info["max_force_std"] = float(std[i])
        if model is not None:
            a.info["spread_model"] = str(model)
        if config_type:
            a.info["config_type"] = config_type
        frames.append(a)
    with atomic_path(output) as tmp:
        write(tmp, frames, format="extxyz")
    return chosen


def ensemble_spread(trajectory: str | Path, indices, model: str, members=None,
                    device: str = "cpu", progress: bool = False, chunk: int = 32) -> np.ndarray:
    """The largest per-atom force spread (eV/Å) of the ensemble ``model`` on the given frames of
    an mlff-ins H5MD trajectory: for each frame, max over atoms of sqrt(sum over x, y, z of the
    variance over members), the ``max_force_std`` `mlff-ins md` stores. The frames are read and
    evaluated ``chunk`` at a time (one batched model call per member)."""
    from mlff_ins.data.h5md import read_frame
    from mlff_ins.model.calculator import load_calculator

    calc = load_calculator(model, device=device, members=members)
    if len(getattr(calc, "models", [])) < 2:
        raise InputError(f"--model {model}: one model has no spread; give an ensemble bundle "
                         f"(two or more members)")
    indices = list(indices)
    out = np.empty(len(indices))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(indices), desc="spread", unit="frame")
    for start in range(0, len(indices), chunk):
        part = indices[start:start + chunk]
        frames = [read_frame(trajectory, i) for i in part]
        forces = calc.member_forces_batched(frames)              # (K, S, N, 3)
        spread = np.sqrt(forces.var(axis=0).sum(axis=-1))         # (S, N)
        out[start:start + len(part)] = spread.max(axis=1)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return out
