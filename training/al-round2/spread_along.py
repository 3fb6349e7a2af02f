"""The ensemble force spread along an MD trajectory, for several models on the same frames (issue
19, part 3: "the ensemble spread along the MD before/after"): every --every-th stored frame is
rescored by each model's members, and the largest per-atom force spread (eV/Å; the calculator's
``forces_std``, as `mlff-ins md` stores it in observables/max_force_std) is summarised per
protocol stage: median and maximum, in meV/Å. Each row is written to OUT (TSV) as it is
computed; a rerun skips the rows already there (the frames are read back, not recomputed).

    python training/al-round2/spread_along.py TRAJ.h5md MODEL [MODEL ...] -o spread.tsv [--every 5]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from mlff_ins.data.h5md import SETTINGS, complete_frames, open_h5md, parse_settings, read_frame
from mlff_ins.model.calculator import load_calculator


def stages(path) -> list[str]:
    with open_h5md(path) as f:
        n = complete_frames(f) or 0
        raw = f[SETTINGS]["value"][:n] if SETTINGS in f else []
    names = [parse_settings((r.decode() if isinstance(r, bytes) else str(r)).rstrip("\x00"))
             .get("stage", "") for r in raw]
    return (names or [""] * n)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trajectory")
    ap.add_argument("models", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args()
    names = stages(args.trajectory)
    out = Path(args.output)
    done = set()
    if out.exists():
        with out.open() as fh:
            done = {(r["model"], int(r["frame"])) for r in csv.DictReader(fh, delimiter="\t")}
    new = not out.exists()
    with out.open("a", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        if new:
            w.writerow(["model", "frame", "stage", "max_force_std_meV_A"])
        for model in args.models:
            calc = None
            for i in range(0, len(names), args.every):
                if (model, i) in done:
                    continue
                calc = calc or load_calculator(model)
                atoms = read_frame(args.trajectory, i)
                atoms.calc = calc
                atoms.get_forces()
                std = 1000 * float(np.max(calc.results["forces_std"]))
                w.writerow([model, i, names[i], f"{std:.2f}"])
                fh.flush()
    rows = defaultdict(list)
    with out.open() as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            rows[(r["model"], r["stage"])].append(float(r["max_force_std_meV_A"]))
    print(f"{args.trajectory}: largest per-atom force spread per frame (meV/Å), every "
          f"{args.every}th frame")
    print("| model | stage | frames | median | max |\n|---|---|---|---|---|")
    for (model, stage), v in rows.items():
        print(f"| {model} | {stage or '-'} | {len(v)} | {np.median(v):.0f} | {np.max(v):.0f} |")


if __name__ == "__main__":
    main()
