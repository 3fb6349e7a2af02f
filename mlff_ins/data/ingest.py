"""Read labelled DFT frames from the files users bring, as ``ase.Atoms`` with energies and forces.

Anything ``ase.io.read`` reads with energies and forces works: extxyz, VASP OUTCAR and
vasprun.xml, Quantum ESPRESSO output (``espresso-out``), CP2K through ASE's formats, and more.
Isolated-atom frames (``config_type=IsolatedAtom``) carry the reference energies E0 that the
model uses as per-type energy shifts; :func:`split_isolated_atoms` takes them out of the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
from ase import Atoms

from mlff_ins.errors import InputError

ISOLATED_ATOM = "IsolatedAtom"


def read_frames(path: str | os.PathLike, *, format: str | None = None) -> list[Atoms]:
    """Read every frame of ``path`` (any format ``ase.io`` knows; guessed from the name).

    Returns a list of ``Atoms`` whose ``calc`` holds the stored energy (eV), forces (eV/Angstrom)
    and stress (eV/Angstrom^3, ASE sign) where the file has them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        frames = ase.io.read(path, index=":", format=format)
    except Exception as err:  # ase.io raises many types for unreadable files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: cannot read structures ({msg})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise InputError(f"{path}: no frames")
    for i, atoms in enumerate(frames):
        atoms.info.setdefault("source_file", path.name)
        atoms.info.setdefault("source_index", i)
    return frames


def is_isolated_atom(atoms: Atoms) -> bool:
    """True for a frame marked ``config_type=IsolatedAtom`` (one atom in a box)."""
    return atoms.info.get("config_type") == ISOLATED_ATOM


def split_isolated_atoms(frames: list[Atoms]) -> tuple[list[Atoms], dict[str, float]]:
    """Separate isolated-atom frames from the rest.

    Returns
    -------
    frames : the frames that are not isolated atoms, in their order.
    e0s : element symbol -> isolated-atom energy in eV.
    """
    rest, e0s = [], {}
    for atoms in frames:
        if is_isolated_atom(atoms):
            if len(atoms) != 1:
                raise InputError(f"{atoms.info.get('source_file', '?')}: frame "
                                 f"{atoms.info.get('source_index', '?')} is marked "
                                 f"{ISOLATED_ATOM} but has {len(atoms)} atoms")
            e0s[atoms.get_chemical_symbols()[0]] = float(atoms.get_potential_energy())
        else:
            rest.append(atoms)
    return rest, e0s
