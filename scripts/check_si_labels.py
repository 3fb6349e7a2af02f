"""Verify CP2K labels: forces sum to zero, and one force equals a central finite difference of
the energy computed with the same settings.

Usage: python scripts/check_si_labels.py [--frame K] [--atom I] [--h 0.01]
Prints the largest |sum of forces| over all frames and, for frame K, the labelled force component
against -(E(x+h) - E(x-h)) / 2h from two more CP2K runs (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from ase.io import read

from mlff_ins.data.label import build_calculator, read_calculator_spec

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO / "mlff_ins/resources/si/si_cp2k_pbe.xyz"))
    p.add_argument("--calculator", default=str(REPO / "configs/label/cp2k_si.yaml"))
    p.add_argument("--frame", type=int, default=1)
    p.add_argument("--atom", type=int, default=5)
    p.add_argument("--component", type=int, default=0)
    p.add_argument("--h", type=float, default=0.01, help="displacement, Angstrom")
    args = p.parse_args()

    frames = read(args.data, ":")
    sums = [np.linalg.norm(a.get_forces().sum(axis=0)) for a in frames if len(a) > 1]
    print(f"{len(frames)} frames; largest |sum of forces| {max(sums):.2e} eV/A")

    atoms = frames[args.frame]
    f_label = atoms.get_forces()[args.atom, args.component]
    calc = build_calculator(read_calculator_spec(args.calculator), tempfile.mkdtemp())
    energies = []
    for sign in (1, -1):
        a = atoms.copy()
        a.positions[args.atom, args.component] += sign * args.h
        a.calc = calc
        energies.append(a.get_potential_energy())
    calc.close()
    f_fd = -(energies[0] - energies[1]) / (2 * args.h)
    print(f"frame {args.frame} ({atoms.info.get('config_type')}), atom {args.atom}, "
          f"component {args.component}: labelled force {f_label:.6f} eV/A, "
          f"central difference (h = {args.h} A) {f_fd:.6f} eV/A, "
          f"difference {abs(f_fd - f_label):.1e} eV/A")


if __name__ == "__main__":
    main()
