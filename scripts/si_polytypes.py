"""Tetrahedral silicon polytypes for the predictor's database (issue 18): the database held one
diamond Si crystal (as bulk:Si and dcdft:Si) beside two soft elemental Si prototypes (ST12 and
tI4), and the predictor fitted their average. These are the stiff, four-fold Si crystals that
differ from diamond (3C) only in the stacking of their bilayers, 2H (lonsdaleite), 4H and 6H,
and the metastable BC8 (Si-III, four-fold, distorted). Ideal geometry (a from diamond's
5.431 Å, c/a and u of the ideal tetrahedron; BC8 from Crain et al., Phys. Rev. B 50, 13043
(1994): a = 6.636 Å, x = 0.1003); the teacher relaxes them.

Usage: python scripts/si_polytypes.py OUT.xyz
"""
import sys

import numpy as np
from ase import Atoms
from ase.io import write
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

A_DIAMOND = 5.431                     # Å, Si at room temperature
A_HEX = A_DIAMOND / np.sqrt(2.0)      # the in-plane spacing of a (111) bilayer
LAYER = A_HEX * np.sqrt(2.0 / 3.0)    # the distance between bilayers along c
SITES = {"A": (0.0, 0.0), "B": (1 / 3, 2 / 3), "C": (2 / 3, 1 / 3)}


def stacked(sequence: str) -> Atoms:
    """Hexagonal Si polytype of the bilayer stacking ``sequence`` (e.g. "ABCB" for 4H): each
    bilayer two atoms on one site, the second a quarter of the layer spacing above the first
    along the bond (the ideal tetrahedron)."""
    n = len(sequence)
    frac = []
    for i, s in enumerate(sequence):
        x, y = SITES[s]
        frac += [(x, y, i / n), (x, y, (i + 0.75) / n)]
    cell = [[A_HEX, 0, 0], [-A_HEX / 2, A_HEX * np.sqrt(3) / 2, 0], [0, 0, n * LAYER]]
    atoms = Atoms("Si" * len(frac), scaled_positions=frac, cell=cell, pbc=True)
    atoms.info["name"] = {2: "2H", 4: "4H", 6: "6H"}[n] + "-Si"
    return atoms


def bc8() -> Atoms:
    atoms = crystal("Si", [(0.1003, 0.1003, 0.1003)], spacegroup=206,
                    cellpar=[6.636, 6.636, 6.636, 90, 90, 90])
    atoms.info["name"] = "BC8-Si"
    return atoms


if __name__ == "__main__":
    frames = [stacked("AB"), stacked("ABCB"), stacked("ABCACB"), bc8()]
    for a in frames:
        i, d = neighbor_list("id", a, 2.6)
        count = np.bincount(i, minlength=len(a))
        print(f"{a.info['name']}: {len(a)} atoms, {count.min()}-{count.max()} neighbours within "
              f"2.6 Å at {d.min():.3f}-{d.max():.3f} Å")
    write(sys.argv[1], frames, format="extxyz")
