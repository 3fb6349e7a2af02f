"""Read labelled DFT frames from the files users bring, as ``ase.Atoms`` with energies and forces.

Anything ``ase.io.read`` reads with energies and forces works: extxyz, VASP OUTCAR and
vasprun.xml, Quantum ESPRESSO output (``espresso-out``), and more. CP2K trajectories
(``PROJECT-pos-1.xyz`` with its ``-frc-1.xyz`` and ``-1.cell`` siblings, energies in Hartree and
forces in Hartree/Bohr) have no reader in ase.io and are read here.
Isolated-atom frames (``config_type=IsolatedAtom``) carry the reference energies E0 that the
model uses as per-type energy shifts; :func:`split_isolated_atoms` takes them out of the data.

:func:`read_structure` reads the one structure a command works on (md, phonons, build): any
``ase.io`` format, one frame of it, with the checks a simulation needs (CIF sites fully occupied,
elements of LAMMPS atom types known).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from mlff_ins.errors import InputError

ISOLATED_ATOM = "IsolatedAtom"
#: a CIF site counts as fully occupied within this much of 1 (CIFs round occupancies)
OCCUPANCY_TOLERANCE = 0.005
_LAMMPS_SNIFF_BYTES = 65536


def read_structure(path: str | os.PathLike, *, index: int | None = None,
                   types: list[str] | None = None, format: str | None = None) -> Atoms:
    """One structure from any file ``ase.io.read`` reads, checked for simulation.

    Parameters
    ----------
    path : CIF, POSCAR, extxyz, ASE trajectory, LAMMPS data or dump, ... (format from the name,
        LAMMPS files from their content), or an H5MD trajectory of ``mlff-ins md``
        (``.h5md``, or ``.h5``/``.hdf5`` holding an /h5md group).
    index : frame of a multi-frame file, 0-based, negative from the end; default -1, the last
        frame (``ase.io.read``'s default: for an MD trajectory, its final frame).
    types : elements of LAMMPS atom types 1, 2, ... (LAMMPS data and dump files only). Without
        it, elements come from the file's element column or type labels, else are guessed from
        its Masses section (with a warning), else the file is refused.
    format : the ``ase.io`` format to read it as, whatever its content looks like (the web
        page reads an upload as its name says); default: from the name and content.

    Returns
    -------
    Atoms, positions in Å. A CIF whose sites are not each one element at occupancy 1 (within
    ``OCCUPANCY_TOLERANCE``) is refused naming the site; warnings of ASE's readers are passed
    on as one-line warnings naming the file.

    Raises
    ------
    InputError : one line naming the file (and frame, site, type or option) at fault.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such structure file")
    if path.is_dir():
        raise InputError(f"{path}: a folder, not a structure file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, no structure in it")
    if path.suffix.lower() in (".h5", ".hdf5") and not _is_h5md(path):
        raise InputError(f"{path}: an HDF5 file that is not an H5MD trajectory; a structure "
                         f"is read from CIF, POSCAR, extxyz, LAMMPS data, ... or a trajectory "
                         f"of `mlff-ins md`")
    if path.suffix.lower() in (".h5md", ".h5", ".hdf5"):     # a trajectory of `mlff-ins md`
        if types is not None:
            raise InputError(f"--types: {path} is an H5MD trajectory, which names its elements")
        from mlff_ins.data.h5md import read_frame
        return read_frame(path, -1 if index is None else index)
    fmt = format or _lammps_format(path)
    kwargs: dict = {}
    if types is not None:
        for el in types:
            if el not in atomic_numbers:
                raise InputError(f"--types {','.join(types)}: {el!r} is not an element symbol")
        if fmt is None:
            raise InputError(f"--types: {path} is not a LAMMPS data or dump file (other formats "
                             f"name their elements)")
        if fmt == "lammps-data":
            kwargs["Z_of_type"] = {t + 1: atomic_numbers[el] for t, el in enumerate(types)}
        else:
            kwargs["specorder"] = list(types)
    elif fmt == "lammps-dump-text":
        columns = _lammps_dump_columns(path)
        if "element" not in columns and "mass" not in columns:
            raise InputError(f"{path}: a LAMMPS dump without element or mass columns; give "
                             f"--types EL,EL,... (elements of atom types 1, 2, ...)")
    if fmt is None:
        try:
            fmt = ase.io.formats.filetype(str(path), read=True)
        except Exception:  # noqa: BLE001 - ase.io.read below gives the user its own message
            fmt = None
    if fmt == "cif":
        kwargs["store_tags"] = True        # the site labels, to name a partly occupied site
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            atoms = ase.io.read(path, index=-1 if index is None else index, format=fmt,
                                **kwargs)
        except KeyError as err:
            if types is not None and err.args and isinstance(err.args[0], (int, np.integer)):
                raise InputError(f"--types {','.join(types)}: {path} has atom type "
                                 f"{err.args[0]}, which --types gives no element") from None
            raise InputError(f"{path}: cannot read a structure ({_first_line(err)})") from None
        except Exception as err:  # noqa: BLE001 - ase.io raises many types for unreadable files
            if index not in (None, 0, -1):
                n = _count_frames(path, fmt, kwargs)
                if n is not None and not -n <= index < n:
                    raise InputError(f"--index {index}: {path} has {n} frame"
                                     f"{'s' if n != 1 else ''} (0..{n - 1})") from None
            raise InputError(f"{path}: cannot read a structure"
                             + (f" as {fmt}" if fmt else "")
                             + f" ({_first_line(err)})") from None
    if isinstance(atoms, list):     # a format whose reader returns a list for one index
        atoms = atoms[-1]
    if len(atoms) == 0:
        raise InputError(f"{path}: the structure has no atoms")
    if fmt == "cif":
        _check_occupancy(atoms, path)
        for key in [k for k in atoms.info if k.startswith("_")]:  # store_tags' CIF tags
            del atoms.info[key]
    if fmt == "lammps-data" and types is None:
        _check_lammps_data_elements(atoms, path)
    elif fmt == "lammps-data":
        _check_type_masses(atoms, path, types)
    elif fmt == "lammps-dump-text" and types is None and "element" not in columns:
        warnings.warn(f"{path}: elements guessed from the atomic masses "
                      f"({_type_elements(atoms)}); give --types to set them", stacklevel=2)
    for message in dict.fromkeys(str(w.message).splitlines()[0] for w in caught
                                 if str(w.message)):
        warnings.warn(f"{path}: {message}", stacklevel=2)
    return atoms


def _check_type_masses(atoms, path: Path, types) -> None:
    """--types names the elements; a Masses section that fits neither the element nor one of
    its isotopes (a Si mass on a type named C) is refused rather than carried into the dynamics.
    A deuterated type named H (2.014 amu) is kept as written."""
    import periodictable

    masses = atoms.get_masses()
    for t, el in enumerate(types, start=1):
        sel = atoms.numbers == atomic_numbers[el]
        if not sel.any():
            continue
        m = float(masses[sel][0])
        element = periodictable.elements.symbol(el)
        known = [float(element.mass)] + [float(element[a].mass) for a in element.isotopes]
        if min(abs(m - k) for k in known) > 0.05:
            raise InputError(f"--types {','.join(types)}: {path} gives atom type {t} the mass "
                             f"{m:.3f} amu, which is neither {el}'s {float(element.mass):.3f} "
                             f"nor one of its isotopes")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _lammps_format(path: Path) -> str | None:
    """``lammps-data`` or ``lammps-dump-text`` when the file starts like one (ase.io guesses
    neither from the content, and takes ``.data`` for RuNNer's format), else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_LAMMPS_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError as err:
        raise InputError(f"{path}: cannot read ({_first_line(err)})") from None
    lines = head.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.startswith("ITEM: TIMESTEP"):
        return "lammps-dump-text"
    # a data file's header: the first line is a comment, then counts and box bounds
    if any(re.match(r"^\s*\S+\s+\S+\s+xlo\s+xhi\b", ln) for ln in lines[1:200]):
        return "lammps-data"
    return None


def _lammps_dump_columns(path: Path) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.read(_LAMMPS_SNIFF_BYTES).decode("utf-8", errors="replace")
    for line in head.splitlines():
        if line.startswith("ITEM: ATOMS"):
            return line.split()[2:]
    return []


def _type_elements(atoms: Atoms) -> str:
    types = atoms.arrays.get("type")
    symbols = atoms.get_chemical_symbols()
    if types is None:
        return ", ".join(sorted(set(symbols)))
    first = {}
    for t, s in zip(types, symbols):
        first.setdefault(int(t), s)
    return ", ".join(f"type {t} = {s}" for t, s in sorted(first.items()))


def _check_lammps_data_elements(atoms: Atoms, path: Path) -> None:
    """Without --types, ASE takes elements from type labels, else guesses them from the Masses
    section, else makes type 1 hydrogen, type 2 helium, ...: refuse that, warn on a guess."""
    if atoms.has("masses"):
        warnings.warn(f"{path}: elements guessed from the Masses section "
                      f"({_type_elements(atoms)}); give --types to set them", stacklevel=3)
    elif np.array_equal(atoms.numbers, atoms.arrays.get("type")):
        raise InputError(f"{path}: a LAMMPS data file names no elements (no Masses or type "
                         f"labels); give --types EL,EL,... (elements of atom types 1, 2, ...)")


def _count_frames(path: Path, fmt: str | None, kwargs: dict) -> int | None:
    try:
        frames = ase.io.read(path, index=":", format=fmt, **kwargs)
    except Exception:  # noqa: BLE001 - only used to word an error message
        return None
    return len(frames) if isinstance(frames, list) else 1


def _check_occupancy(atoms: Atoms, path: Path) -> None:
    """Refuse a CIF with partly occupied or mixed sites. ASE (3.2x) reads occupancies into
    ``atoms.info["occupancy"]``: {site kind (str): {element: occupancy}}, the kind being the
    row of the CIF's atom_site loop (``atoms.arrays["spacegroup_kinds"]`` per atom), with the
    element of largest occupancy as the atom's symbol."""
    occupancy = atoms.info.get("occupancy") or {}
    labels = atoms.info.get("_atom_site_label")
    kinds = atoms.arrays.get("spacegroup_kinds")
    for kind in sorted(occupancy, key=lambda k: int(k)):
        shares = occupancy[kind]
        if len(shares) == 1 and abs(next(iter(shares.values())) - 1.0) <= OCCUPANCY_TOLERANCE:
            continue
        k = int(kind)
        name = str(labels[k]) if labels is not None and k < len(labels) else f"#{k + 1}"
        where = ""
        if kinds is not None and np.any(kinds == k):
            frac = atoms.get_scaled_positions()[int(np.flatnonzero(kinds == k)[0])]
            where = " at " + " ".join(f"{x:.4g}" for x in frac)
        content = " + ".join(f"{el} {occ:g}" for el, occ in shares.items())
        raise InputError(f"{path}: site {name} ({content}{where}) is not one element at "
                         f"occupancy 1; a simulation needs an ordered cell: choose the "
                         f"occupants (e.g. an ordered supercell from pymatgen or `supercell`)")


def _is_h5md(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file with an /h5md group."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "h5md" in f
    except OSError:
        return False


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
    adopted = set()
    for i, atoms in enumerate(frames):  # where each frame was read from, for error messages
        adopted.update(_adopt_labels(atoms, path, i))
        atoms.info["read_from"] = path.name
        atoms.info["read_index"] = i
    if adopted:
        warnings.warn(f"{path}: DFT labels taken from the keys {', '.join(sorted(adopted))} "
                      "(as MACE and other codes write them)", stacklevel=2)
    return frames


#: prefixes of the extxyz keys under which other codes keep DFT labels (MACE's REF_energy,
#: REF_forces, REF_stress; DFT_/dft_ in older data sets); ASE's own keys (energy, forces,
#: stress) become the frame's calculator when ase.io reads the file
LABEL_PREFIXES = ("REF_", "DFT_", "dft_")


def _voigt(value, what: str, path: Path, index: int) -> np.ndarray:
    """A 3x3 tensor given as 9 or 3x3 numbers (or already 6 in Voigt order) in ASE's Voigt
    order xx, yy, zz, yz, xz, xy."""
    t = np.asarray(value, dtype=float)
    if t.shape == (9,):
        t = t.reshape(3, 3)
    if t.shape == (3, 3):
        return t[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
    if t.shape == (6,):
        return t
    raise InputError(f"{path}: frame {index}: {what} has {t.size} numbers; expected 9 (3x3) "
                     f"or 6 (Voigt)")


#: keys of the virial (eV) other codes store instead of the stress (GAP, NEP, MACE data sets)
VIRIAL_KEYS = ("virial", "virials")


def _stress_from_virial(atoms: Atoms, key: str, path: Path, index: int) -> np.ndarray:
    """The stress (eV/Å³, ASE sign: positive under tension) of a virial W (eV): -W / V."""
    if not atoms.pbc.all() or atoms.get_volume() <= 0:
        raise InputError(f"{path}: frame {index}: a virial ({key}) on a cell that is not "
                         f"periodic in 3D has no stress")
    return -_voigt(atoms.info.pop(key), key, path, index) / atoms.get_volume()


def _adopt_labels(atoms: Atoms, path: Path, index: int) -> list[str]:
    """Give a frame without an energy the labels stored under a :data:`LABEL_PREFIXES` key, and
    a frame whose stress is stored as a virial (:data:`VIRIAL_KEYS`, with or without a prefix)
    that stress.

    Only a frame with no labels of ASE's own is given prefixed labels, and only one prefix may
    be used per frame (two would be two different labellings); a virial next to a stress must
    agree with it. Returns the keys adopted."""
    own = atoms.calc is not None and "energy" in getattr(atoms.calc, "results", {})
    if own:
        keys = []
        virial = [k for k in VIRIAL_KEYS if k in atoms.info]
        if virial:
            stress = _stress_from_virial(atoms, virial[0], path, index)
            stored = atoms.calc.results.get("stress")
            if stored is not None and not np.allclose(stored, stress, rtol=1e-6, atol=1e-8):
                raise InputError(f"{path}: frame {index}: its stress and its {virial[0]} "
                                 f"(-virial/volume) disagree; keep one")
            atoms.calc.results["stress"] = stress
            keys.append(virial[0])
        return keys
    found = [p for p in LABEL_PREFIXES
             if f"{p}energy" in atoms.info or f"{p}forces" in atoms.arrays]
    if not found:
        return []
    if len(found) > 1:
        raise InputError(f"{path}: frame {index} has labels under {' and '.join(found)} keys; "
                         "keep one set (which DFT should the model learn?)")
    p = found[0]
    results, keys = {}, []
    if f"{p}energy" in atoms.info:
        results["energy"] = float(atoms.info.pop(f"{p}energy"))
        keys.append(f"{p}energy")
    if f"{p}forces" in atoms.arrays:
        results["forces"] = np.array(atoms.arrays.pop(f"{p}forces"), dtype=float)
        keys.append(f"{p}forces")
    if f"{p}stress" in atoms.info:
        results["stress"] = _voigt(atoms.info.pop(f"{p}stress"), f"{p}stress", path, index)
        keys.append(f"{p}stress")
    virial = [f"{p}{k}" for k in VIRIAL_KEYS if f"{p}{k}" in atoms.info]
    if virial:
        stress = _stress_from_virial(atoms, virial[0], path, index)
        if "stress" in results and not np.allclose(results["stress"], stress, rtol=1e-6,
                                                   atol=1e-8):
            raise InputError(f"{path}: frame {index}: its {p}stress and its {virial[0]} "
                             f"(-virial/volume) disagree; keep one")
        results["stress"] = stress
        keys.append(virial[0])
    atoms.calc = SinglePointCalculator(atoms, **results)
    return keys


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
            where = f"{atoms.info.get('read_from', '?')} frame {atoms.info.get('read_index', '?')}"
            results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
            if "energy" not in results:
                raise InputError(f"{where}: an {ISOLATED_ATOM} frame without an energy")
            symbol, energy = atoms.get_chemical_symbols()[0], float(results["energy"])
            if symbol in e0s and abs(e0s[symbol][0] - energy) > 1e-6:
                raise InputError(f"{where}: {ISOLATED_ATOM} {symbol} at {energy:.6f} eV, but "
                                 f"{e0s[symbol][1]} has it at {e0s[symbol][0]:.6f} eV (two "
                                 f"calculations; keep the one the other frames were labelled "
                                 f"with)")
            e0s.setdefault(symbol, (energy, where))
        else:
            rest.append(atoms)
    return rest, {symbol: energy for symbol, (energy, _) in e0s.items()}
