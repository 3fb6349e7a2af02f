"""Gamma-only against 2x2x2 k-point CP2K labels of the same 64-atom frames (README.md here).

Prints, per frame: the RMS force of the Gamma labels, the RMS difference between the two labels'
forces, and the shipped reference model's force RMSE against each. Usage, from the repository
root: python training/kpoint-check/compare.py [MODEL]
"""
import sys
from pathlib import Path

import numpy as np
from ase.io import read

from mlff_ins.model.calculator import load_calculator

HERE = Path(__file__).resolve().parent
gamma = read(HERE / "frames_gamma.xyz", ":")
kpts = read(HERE / "labelled_k222.xyz", ":")
model = sys.argv[1] if len(sys.argv) > 1 else "mlff_ins/resources/si/reference_model"
calc = load_calculator(model, device="cpu")


def rms(x):
    return float(np.sqrt(np.mean(np.square(x)))) * 1000.0


def model_forces(atoms):
    m = atoms.copy()
    m.calc = calc
    return m.get_forces()


def energy_difference(a, b):
    """E(a) - E(b) in meV/atom."""
    return (a.get_potential_energy() - b.get_potential_energy()) / len(a) * 1000.0


print("| frame | RMS force, Gamma (meV/Å) | RMS force difference k222 - Gamma (meV/Å) "
      "| E(k222) - E(Gamma) (meV/atom) | model vs Gamma (meV/Å) | model vs k222 (meV/Å) |")
print("|---|---|---|---|---|---|")
for g, k in zip(gamma, kpts):
    assert np.allclose(g.positions, k.positions), "frames differ"
    fg, fk, fm = g.get_forces(), k.get_forces(), model_forces(g)
    print(f"| {g.info.get('config_type')} | {rms(fg):.0f} | {rms(fk - fg):.0f} "
          f"| {energy_difference(k, g):.1f} "
          f"| {rms(fm - fg):.0f} | {rms(fm - fk):.0f} |")

k3_file = HERE / "labelled_k333.xyz"
if k3_file.exists():
    print()
    print("| frame | RMS force difference k333 - k222 (meV/Å) | k333 - Gamma (meV/Å) "
          "| E(k333) - E(k222) (meV/atom) | model vs k333 (meV/Å) |")
    print("|---|---|---|---|---|")
    for k3 in read(k3_file, ":"):
        g, k = next((g, k) for g, k in zip(gamma, kpts) if np.allclose(g.positions, k3.positions))
        f3 = k3.get_forces()
        print(f"| {g.info.get('config_type')} | {rms(f3 - k.get_forces()):.0f} "
              f"| {rms(f3 - g.get_forces()):.0f} | {energy_difference(k3, k):.1f} "
              f"| {rms(model_forces(g) - f3):.0f} |")
