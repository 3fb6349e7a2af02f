"""curve.png: the single-member MSE against the number of training crystals (curve.jsonl,
written by scripts/predictor_data_curve.py), with power-law fits and the mean-spectrum baseline."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

here = Path(__file__).parent
rows = [json.loads(line) for line in (here / "curve.jsonl").read_text().splitlines()]
sizes = sorted({r["n_train"] for r in rows})
fig, ax = plt.subplots(figsize=(6, 4.2))
for key, label, colour in (("valid", "validation (17)", "C0"), ("test", "test (11)", "C1"),
                           ("dft", "DFT force sets (8), VISION", "C2")):
    y = [[r[f"{key}_median_mse"] for r in rows if r["n_train"] == n] for n in sizes]
    mean = np.array([np.mean(v) for v in y])
    sem = np.array([np.std(v, ddof=1) / np.sqrt(len(v)) for v in y])
    ax.errorbar(sizes, mean, sem, fmt="o", color=colour, capsize=3, label=f"{label}")
    slope, icpt = np.polyfit(np.log([r["n_train"] for r in rows]),
                             np.log([r[f"{key}_median_mse"] for r in rows]), 1)
    n = np.geomspace(30, 3000, 50)
    ax.plot(n, np.exp(icpt) * n ** slope, "-", color=colour, lw=1,
            label=f"fit: N^{slope:.2f}")
    base = [np.mean([r[f"{key}_baseline_mse"] for r in rows if r["n_train"] == m]) for m in sizes]
    ax.plot(sizes, base, ":", color=colour, lw=1)
ax.axhline(0.05, color="grey", lw=0.8, ls="--")
ax.axhline(0.02, color="grey", lw=0.8, ls="--")
ax.text(32, 0.051, "DFT goal 0.05", fontsize=8, color="grey")
ax.text(32, 0.0204, "test goal 0.02", fontsize=8, color="grey")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("training crystals (one member; 6 seeds: mean ± s.e.m.)")
ax.set_ylabel("median MSE, max-normalised S(E)")
ax.set_title("Direct predictor: error against training-set size\n"
             "(dotted: the mean training spectrum of the same subset)", fontsize=10)
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
fig.savefig(here / "curve.png", dpi=120)
