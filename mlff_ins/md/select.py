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
                     min_gap: int | None = None) -> list[int]:
    from ase.io import write

    from mlff_ins.data.h5md import GROUP, complete_frames, open_h5md, read_frame

    trajectory = Path(trajectory)
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    with open_h5md(trajectory) as f:
        if "observables/max_force_std" not in f or GROUP not in f:
            raise InputError(f"{trajectory}: no per-frame max_force_std; run `mlff-ins md` with an "
                             f"ensemble model bundle (--ensemble K >= 2 when training)")
        std = f["observables/max_force_std/value"][()]
        n = complete_frames(f) or len(std)
        std = std[:n]
        if not np.any(np.isfinite(std)):
            raise InputError(f"{trajectory}: max_force_std is NaN in every frame (a single-model "
                             f"bundle has no spread); train with --ensemble 2 or more")
        gap = max(1, n // (4 * top)) if min_gap is None else int(min_gap)
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
        frames.append(a)
    with atomic_path(output) as tmp:
        write(tmp, frames, format="extxyz")
    return chosen
