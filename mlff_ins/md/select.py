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
                     config_type: str | None = None) -> list[int]:
    """Write the ``top`` frames of largest ensemble force spread to ``output``; return their
    indices in the trajectory. ``stage``: only the frames of that protocol stage are candidates;
    ``config_type``: written into each frame's info (the kind of structure, which the error
    tables of ``bench train`` group by)."""
    from ase.io import write

    from mlff_ins.data.h5md import GROUP, complete_frames, open_h5md, read_frame, stage_frames

    trajectory = Path(trajectory)
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    lo, hi = stage_frames(trajectory, stage) if stage else (0, None)
    with open_h5md(trajectory) as f:
        if "observables/max_force_std" not in f or GROUP not in f:
            raise InputError(f"{trajectory}: no per-frame max_force_std; run `mlff-ins md` with an "
                             f"ensemble model bundle (--ensemble K >= 2 when training)")
        std = f["observables/max_force_std/value"][()]
        n = complete_frames(f) or len(std)
        std = std[:n].astype(float)
        std[:lo] = np.nan                      # outside the stage asked for: not candidates
        if hi is not None:
            std[hi:] = np.nan
        if not np.any(np.isfinite(std)):
            raise InputError(f"{trajectory}: max_force_std is NaN in every frame (a single-model "
                             f"bundle has no spread); train with --ensemble 2 or more")
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
        if config_type:
            a.info["config_type"] = config_type
        frames.append(a)
    with atomic_path(output) as tmp:
        write(tmp, frames, format="extxyz")
    return chosen
