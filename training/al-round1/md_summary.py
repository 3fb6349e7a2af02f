"""Summarise mlff-ins md trajectories for the round-1 evaluation (evaluate.sh): length, closest
Si-Si pair over the run (where the interim model let atoms collapse), temperature, and the
ensemble's largest per-atom force spread per frame (NaN or 0 for a single-member model).

    python training/al-round1/md_summary.py A.h5md [B.h5md ...]
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
from ase.neighborlist import neighbor_list

from mlff_ins.data.h5md import complete_frames, frame_count, read_frame


def summary(path: str) -> str:
    n = frame_count(path)
    closest = []
    for i in range(n):
        atoms = read_frame(path, i)
        d = neighbor_list("d", atoms, 3.0)
        closest.append(float(d.min()) if len(d) else np.inf)
    with h5py.File(path, "r") as f:
        m = complete_frames(f)
        time_ps = f["particles/trajectory/position/time"][:m] / 1000.0
        temp = f["observables/temperature/value"][:m]
        std = f["observables/max_force_std/value"][:m]
    worst = int(np.argmin(closest))
    line = (f"{path}: {n} frames, {time_ps[-1]:.2f} ps; closest pair {closest[worst]:.2f} Å "
            f"(frame {worst}, {time_ps[worst]:.2f} ps, {temp[worst]:.0f} K)")
    if np.isfinite(std).any() and np.nanmax(std) > 0:   # one member: NaN or 0
        line += (f"; largest per-atom ensemble force spread per frame: median "
                 f"{1000 * np.nanmedian(std):.0f}, max {1000 * np.nanmax(std):.0f} meV/Å "
                 f"(frame {int(np.nanargmax(std))})")
    else:
        line += "; no ensemble spread (single member)"
    return line


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summary(p), flush=True)
