"""How many members? Scores ensembles of k of the saved single members (scripts/
predictor_data_curve.py --save DIR, one file per seed at the full training set), combined bin by
bin by their median or mean and max-normalised per target as `mlff-ins predict` does, averaged
over every choice of k members. Usage: python ensembles.py DIR"""
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

files = sorted(Path(sys.argv[1]).glob("f1.0_s*_.npz"))
data = [np.load(f) for f in files]
blocks = {"valid": [0, 1], "test": [0, 1], "dft": [0]}    # VISION+TOSCA; VISION for DFT
print(f"{len(files)} members")
print("k  rule    " + "  ".join(f"{p:>16}" for p in blocks))
for k in range(1, len(data) + 1):
    for rule in ("median", "mean") if k > 2 else ("mean",):
        row = []
        for part, b in blocks.items():
            target = data[0][f"{part}_target"][:, b]
            scores = []
            for combo in combinations(range(len(data)), k):
                stack = np.array([data[i][part][:, b] for i in combo])
                centre = np.median(stack, 0) if rule == "median" else stack.mean(0)
                centre = centre / np.maximum(centre.max(-1, keepdims=True), 1e-300)
                scores.append(np.median(np.mean((centre - target) ** 2, axis=(1, 2))))
            row.append(f"{np.mean(scores):.4f} ± {np.std(scores):.4f}")
        print(f"{k}  {rule:6}  " + "  ".join(f"{x:>16}" for x in row))
