"""Pick the frames of active-learning round 1 from the reference model's own MD (see run.sh).

Frames are taken at fixed steps of each run, or where the run went wrong (no model output ranks
them: the interim model is a single member, so there is no ensemble spread to rank by), tagged
with a config_type whose kind the training benchmark recognises (liquid / amorphous / vacancy),
and written interleaved across kinds so that every prefix of the CP2K labelling is diverse.

Two batches, appended to one file in order (`mlff-ins label` resumes by frame index, so batch 2
is labelled after batch 1 without relabelling anything):

1. the 2500 K liquid where the model failed: two frames of the melt, and three frames of a rerun
   of that melt (onset.h5md) on the path along which two atoms collapse (closest pair 1.74,
   1.62 and 1.51 A; the training data has none below 2.02 A);
2. the 2000 K melt (which collapsed too, after 2.9 ps: two frames before), the embedded
   Stillinger-Weber a-Si cell run by the model at 300 K (2 fs steps) and 900 K, and the vacancy
   cell at 1200 K.

    python training/al-round1/pick_frames.py RUN_DIR --batch 1 -o training/al-round1/frames_unlabelled.xyz
"""

from __future__ import annotations

import argparse
from itertools import zip_longest
from pathlib import Path

import numpy as np
from ase.io import read, write

from mlff_ins.data.h5md import frame_count, read_frame

BATCH_SIZES = {1: 5, 2: 11}


def frame_at(path: Path, step: int, every: int = 50):
    return read_frame(path, step // every)   # frame k holds step k * every (frame 0: the start)


def closest_pair(atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def batch_1(run: Path) -> list[list]:
    melt = run / "asi64_2500K.h5md"   # the first melt-quench, stopped by the watchdog
    onset = run / "onset.h5md"        # its frame 52 rerun at 2500 K, every 5 steps
    liquid = [(frame_at(melt, s), "liquid_model", 2500) for s in (1500, 2500)]
    collapse = []
    for i in range(frame_count(onset)):
        atoms = read_frame(onset, i)
        r = closest_pair(atoms)
        if r < 1.4:
            break
        for target in (1.75, 1.62, 1.51):
            if abs(r - target) < 0.02 and not any(abs(c[2] - target) < 0.02 for c in collapse):
                collapse.append((atoms, "liquid_model_collapse", round(r, 3)))
    return [liquid, collapse]


def batch_2(run: Path) -> list[list]:
    melt = run / "asi64_2000K.h5md"   # the melt-quench of melt_quench_64.yaml, collapsed at 2.9 ps
    cold, hot, vac = (run / n for n in ("asi64_300K.h5md", "asi64_900K.h5md",
                                        "vac63_1200K.h5md"))
    return [[(frame_at(melt, s), "liquid_model_2000K", 2000) for s in (1500, 2800)],
            [(read_frame(cold, i), "amorphous_model_300K", 300) for i in (80, 120, 160)],
            [(read_frame(hot, i), "amorphous_model_900K", 900) for i in (20, 40, 60)],
            [(read_frame(vac, i), "vacancy_model_1200K", 1200) for i in (20, 40, 60)]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--batch", type=int, choices=(1, 2), required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    have = len(read(args.output, ":")) if args.output.exists() else 0
    expected = sum(n for b, n in BATCH_SIZES.items() if b < args.batch)
    if have != expected:
        raise SystemExit(f"{args.output}: holds {have} frames; batch {args.batch} goes after "
                         f"{expected}")
    groups = (batch_1 if args.batch == 1 else batch_2)(args.run_dir)
    frames = []
    for row in zip_longest(*groups):
        for item in row:
            if item is None:
                continue
            atoms, kind, value = item
            atoms.info = {"config_type": kind, "md_source": Path(atoms.info["source"]).name,
                          "md_frame": atoms.info["source_frame"], "md_step": atoms.info["step"],
                          **({"closest_pair_A": value} if "collapse" in kind
                             else {"md_temperature_K": value})}
            frames.append(atoms)
    if len(frames) != BATCH_SIZES[args.batch]:
        raise SystemExit(f"batch {args.batch}: found {len(frames)} frames, expected "
                         f"{BATCH_SIZES[args.batch]}")
    write(args.output, frames, append=have > 0)
    print(f"{args.output}: batch {args.batch}, {len(frames)} frames appended "
          f"({have + len(frames)} in all)")


if __name__ == "__main__":
    main()
