"""Write the two supercells of phonopy's Si-CP2K example (the one displaced by 0.01 Å, then the
perfect one) for labelling with our own CP2K settings:

    python scripts/make_si_phonon_check.py /tmp/si_phonon_check.xyz
    mlff-ins label /tmp/si_phonon_check.xyz --calculator mlff_ins/configs/label/cp2k_si.yaml \\
        -o mlff_ins/resources/si/si_cp2k_pbe_phonon_check.xyz

The phonons benchmark turns these forces into Γ/X/L frequencies: the DFT that the embedded data
set was labelled with, on the reference's own supercell and displacement.
"""

import sys

import ase.io
from ase import Atoms

from mlff_ins.phonons.si_reference import dft_reference


def main(path: str) -> None:
    _, ph, _ = dft_reference()
    cells = list(ph.supercells_with_displacements) + [ph.supercell]
    ase.io.write(path, [Atoms(c.symbols, cell=c.cell, scaled_positions=c.scaled_positions,
                              pbc=True) for c in cells])


if __name__ == "__main__":
    main(sys.argv[1])
