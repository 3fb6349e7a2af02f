"""The k-point labels against the Gamma-only labels they replace, per kind of frame.

For every relabelled frame of mlff_ins/resources/si/si_cp2k_pbe_k222.xyz (2x2x2 k-points,
DZVP-MOLOPT-GTH) the Gamma-only label of the same geometry (DZVP-MOLOPT-SR-GTH; gamma_file and
the gamma_index of training/relabel-k222/frames.xyz) is read, and per config_type the medians of:
the RMS force difference, the RMS force of the Gamma label, the energy difference per atom (its
range beside it) and CP2K's wall time of the k-point label. Prints a Markdown table.
Usage (repository root): python training/relabel-k222/compare_gamma.py
"""

from collections import defaultdict

import numpy as np
from ase.io import read

SI = "mlff_ins/resources/si/"
labels = read(SI + "si_cp2k_pbe_k222.xyz", ":")
sources = read("training/relabel-k222/frames.xyz", ":")
gamma = {}
rows = defaultdict(list)
for a in labels:
    name = a.info["gamma_file"]
    if name not in gamma:
        gamma[name] = read(SI + name, ":")
    g = gamma[name][sources[a.info["source_index"]].info["gamma_index"]]
    if len(a) < 2:
        atom_shift = 1000 * (a.get_potential_energy() - g.get_potential_energy())
        continue
    assert np.allclose(g.positions, a.positions) and np.allclose(g.cell, a.cell)
    df = a.get_forces() - g.get_forces()
    rows[a.info["config_type"]].append((
        1000 * np.sqrt((df ** 2).mean()), 1000 * np.sqrt((g.get_forces() ** 2).mean()),
        1000 * (a.get_potential_energy() - g.get_potential_energy()) / len(a),
        a.info["label_wall_s"]))
print(f"{len(labels)} k-point labels ({sum(map(len, rows.values()))} frames of 64 atoms and "
      "the isolated atom)\n")
print("| kind | frames | RMS force difference (meV/Å) | RMS force, Gamma (meV/Å) | "
      "E(k222) - E(Gamma) (meV/atom): median (range) | CP2K wall time (s) |")
print("|---|---|---|---|---|---|")
for kind, values in sorted(rows.items()):
    v = np.array(values)
    print(f"| {kind} | {len(v)} | {np.median(v[:, 0]):.0f} | {np.median(v[:, 1]):.0f} | "
          f"{np.median(v[:, 2]):.1f} ({v[:, 2].min():.1f} to {v[:, 2].max():.1f}) | "
          f"{np.median(v[:, 3]):.0f} |")
print(f"\nThe isolated atom: E(k222) - E(Gamma) = {atom_shift:.1f} meV (the basis sets differ).")
