"""Read labelled DFT frames from the files users bring, as ``ase.Atoms`` with energies and forces.

Anything ``ase.io.read`` reads with energies and forces works: extxyz, VASP OUTCAR and
vasprun.xml, Quantum ESPRESSO output (``espresso-out``), and more. CP2K trajectories
(``PROJECT-pos-1.xyz`` with its ``-frc-1.xyz`` and ``-1.cell`` siblings, energies in Hartree and
forces in Hartree/Bohr) have no reader in ase.io and are read here.
Isolated-atom frames (``config_type=IsolatedAtom``) carry the reference energies E0 that the
model uses as per-type energy shifts; :func:`split_isolated_atoms` takes them out of the data.
"""

from __future__ import annotations

import os
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_ins.errors import InputError

ISOLATED_ATOM = "IsolatedAtom"


def read_frames(path: str | os.PathLike, *, format: str | None = None) -> list[Atoms]:
    """Read every frame of ``path`` (any format ``ase.io`` knows; guessed from the name).

    Each frame's ``info`` gets ``read_from`` (file name) and ``read_index`` (frame number), which
    error messages quote. Returns a list of ``Atoms`` whose ``calc`` holds the stored energy (eV), forces (eV/Angstrom)
    and stress (eV/Angstrom^3, ASE sign) where the file has them.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if format is None and path.name.endswith("-pos-1.xyz"):
            frames = read_cp2k_trajectory(path)
        else:
            frames = ase.io.read(path, index=":", format=format)
    except InputError:
        raise
    except Exception as err:  # ase.io raises many types for unreadable files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: cannot read structures ({msg})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise InputError(f"{path}: no frames")
    for i, atoms in enumerate(frames):  # where each frame was read from, for error messages
        atoms.info["read_from"] = path.name
        atoms.info["read_index"] = i
    return frames


def _xyz_blocks(path: Path):
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        comment = lines[i + 1]
        rows = [ln.split() for ln in lines[i + 2:i + 2 + n]]
        if len(rows) < n:
            break  # truncated last frame of a running job
        yield comment, [r[0] for r in rows], np.array([[float(x) for x in r[1:4]] for r in rows])
        i += 2 + n


def read_cp2k_trajectory(pos_path: Path) -> list[Atoms]:
    """Read a CP2K MD trajectory: positions (Angstrom) with E in the comment (Hartree), forces
    from the ``-frc-1.xyz`` sibling (Hartree/Bohr), cells from ``-1.cell`` (Angstrom)."""
    pos_path = Path(pos_path)
    stem = pos_path.name[: -len("-pos-1.xyz")]
    frc_path = pos_path.with_name(stem + "-frc-1.xyz")
    cell_path = pos_path.with_name(stem + "-1.cell")
    if not frc_path.exists():
        raise InputError(f"{pos_path}: no forces file {frc_path.name} beside it")
    if not cell_path.exists():
        raise InputError(f"{pos_path}: no cell file {cell_path.name} beside it")
    cells = {}
    for line in cell_path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            v = line.split()
            cells[int(v[0])] = np.array([float(x) for x in v[2:11]]).reshape(3, 3)
    forces = {}
    for comment, _, f in _xyz_blocks(frc_path):
        forces[_cp2k_step(comment)] = f * units.Hartree / units.Bohr
    frames = []
    for k, (comment, symbols, pos) in enumerate(_xyz_blocks(pos_path)):
        step = _cp2k_step(comment)
        if step not in forces or step not in cells:
            raise InputError(f"{pos_path}: frame {k} (step {step}) has no forces or cell")
        energy = float(comment.split("E =")[1].split()[0]) * units.Hartree
        atoms = Atoms(symbols, positions=pos, cell=cells[step], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces[step])
        frames.append(atoms)
    return frames


def _cp2k_step(comment: str) -> int:
    return int(comment.split("i =")[1].split(",")[0])


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
                raise InputError(f"{atoms.info.get('read_from', '?')}: frame "
                                 f"{atoms.info.get('read_index', '?')} is marked "
                                 f"{ISOLATED_ATOM} but has {len(atoms)} atoms")
            e0s[atoms.get_chemical_symbols()[0]] = float(atoms.get_potential_energy())
        else:
            rest.append(atoms)
    return rest, e0s
