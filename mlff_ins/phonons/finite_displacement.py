"""Harmonic phonons by finite displacements: phonopy makes the displacements and the force
constants, the model evaluates every displaced supercell in batched calls.

One ``Phonopy`` object per ensemble member (they share the displacement data set; member k gets
member k's forces), so every downstream quantity (frequencies, DOS, INS) has a spread across
members. Force constants are linear in the forces, so the ensemble-mean force constants equal the
force constants of the mean forces. The same objects come from published DFT force sets through
:func:`phonons_from_force_sets`, in any folder layout phonopy.load takes and converted from the
calculator's units (bohr for ABACUS, QE, ...) to phonopy's default ones (Å, eV/Å², THz), which
the rest of the package assumes.
"""

from __future__ import annotations

import copy
import functools
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from mlff_ins.errors import InputError


def to_phonopy_atoms(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.array(atoms.cell),
                        scaled_positions=atoms.get_scaled_positions(wrap=False),
                        masses=atoms.get_masses())


def to_ase_atoms(patoms) -> Atoms:
    return Atoms(symbols=patoms.symbols, cell=patoms.cell, scaled_positions=patoms.scaled_positions,
                 masses=patoms.masses, pbc=True)


def supercell_matrix(values) -> np.ndarray:
    """``--supercell`` as 1 integer (N N N), 3 (diagonal) or 9 (a full matrix, row-wise)."""
    v = [int(x) for x in values]
    if len(v) == 1:
        m = np.diag(v * 3)
    elif len(v) == 3:
        m = np.diag(v)
    elif len(v) == 9:
        m = np.array(v).reshape(3, 3)
    else:
        raise InputError(f"--supercell takes 1, 3 or 9 integers, not {len(v)}")
    if round(abs(np.linalg.det(m))) < 1:
        raise InputError(f"--supercell {' '.join(map(str, v))} is singular")
    return m


def make_phonopy(atoms: Atoms, supercell, *, primitive="auto", distance: float = 0.01,
                 plusminus="auto", symprec: float = 1e-5):
    """Phonopy object with displacements generated (phonopy's defaults: 0.01 Angstrom,
    plus and minus where symmetry does not relate them)."""
    from phonopy import Phonopy

    with warnings.catch_warnings():
        # "auto" finding a smaller primitive cell is what we ask for, not news to the user
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        ph = Phonopy(to_phonopy_atoms(atoms),
                     supercell_matrix=supercell_matrix(np.ravel(supercell)),
                     primitive_matrix=primitive, symprec=symprec)
    ph.generate_displacements(distance=distance, is_plusminus=plusminus)
    return ph


def displaced_supercells(ph) -> list[Atoms]:
    """The displaced supercells of a phonopy object, as ASE atoms (phonopy's order)."""
    return [to_ase_atoms(s) for s in ph.supercells_with_displacements]


@dataclass
class PhononSet:
    """Phonopy objects with force constants: one per ensemble member (one for DFT force sets)."""

    members: list
    source: str                      # "model" or "force-sets"
    timings_s: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    @functools.cached_property
    def mean(self):
        """A phonopy object carrying the member-mean force constants."""
        return mean_phonopy(self.members)


def with_force_constants(ph, force_constants, forces=None):
    """A phonopy object on ``ph``'s cells carrying ``force_constants`` (and, when given, ``ph``'s
    displacements with these ``forces``), without redoing phonopy's symmetry analysis (which
    takes seconds for a 512-atom supercell). Cells and symmetry are shared with ``ph``."""
    m = copy.copy(ph)
    if forces is not None and ph.dataset is not None:
        m.dataset = copy.deepcopy(ph.dataset)
        m.forces = forces
    else:
        m._dataset = None          # noqa: SLF001 - no displacement data for derived objects
    m.force_constants = np.array(force_constants)
    return m


def mean_phonopy(members):
    """The first member itself, or one phonopy object with the members' mean force constants
    (force constants are linear in the forces, so these are also those of the mean forces)."""
    if len(members) == 1:
        return members[0]
    forces = None
    if all(m.dataset is not None and m.forces is not None for m in members):
        forces = np.mean([m.forces for m in members], axis=0)
    return with_force_constants(members[0], np.mean([m.force_constants for m in members], axis=0),
                                forces)


def _forces_to_members(ph, member_forces: np.ndarray, symmetrize: bool) -> list:
    """One phonopy object per member; compact force constants (the primitive atoms' rows, as
    phonopy-load makes them), so building them costs no more than the forces."""
    fcs = []
    for forces in member_forces:
        ph.forces = forces
        ph.produce_force_constants(calculate_full_force_constants=False, show_drift=False)
        if symmetrize:
            ph.symmetrize_force_constants(show_drift=False)
        fcs.append(np.array(ph.force_constants))
    return [with_force_constants(ph, fc, f) for fc, f in zip(fcs, member_forces)]


def phonons_from_model(atoms: Atoms, calc, supercell, *, distance: float = 0.01,
                       plusminus="auto", primitive="auto", symmetrize: bool = True,
                       max_batch_atoms: int | None = None, progress=None,
                       keep=None) -> PhononSet:
    """Finite-displacement phonons of ``atoms`` with a model bundle's calculator.

    Every displaced supercell is evaluated through
    :meth:`~mlff_ins.model.calculator.BundleCalculator.member_forces_batched` (many supercells
    per model call, every member on each batch; ``max_batch_atoms`` None: the device's
    default, :func:`~mlff_ins.model.calculator.default_batch_atoms`). ``keep``: a
    :class:`~mlff_ins.phonons.partial.PhononProgress` that saves the forces as they come and
    continues from those an earlier run of the same supercells and model saved.
    """
    t0 = time.perf_counter()
    ph = make_phonopy(atoms, supercell, primitive=primitive, distance=distance,
                      plusminus=plusminus)
    cells = displaced_supercells(ph)
    t1 = time.perf_counter()
    if keep is None:
        forces = calc.member_forces_batched(cells, max_batch_atoms=max_batch_atoms,
                                            progress=progress)
    else:
        forces = keep.forces(calc, cells, max_batch_atoms=max_batch_atoms, progress=progress)
    t2 = time.perf_counter()
    members = _forces_to_members(ph, forces, symmetrize)
    t3 = time.perf_counter()
    return PhononSet(members, "model",
                     timings_s={"displacements": t1 - t0, "forces": t2 - t1,
                                "force_constants": t3 - t2},
                     provenance={"n_displacements": len(cells),
                                 "supercell_atoms": len(cells[0]) if cells else 0,
                                 "distance_A": distance, "symmetrized": symmetrize})


#: force-constant solvers phonopy offers (``--fc-calculator``); None: phonopy's default
FC_CALCULATORS = ("traditional", "symfc", "alm")

# phonopy's file names, in the order they are looked for
_YAML_NAMES = ("phonopy_params.yaml", "phonopy_disp.yaml", "phonopy.yaml")
_FC_NAMES = ("FORCE_CONSTANTS", "force_constants.hdf5")


@dataclass
class _PhonopyInputs:
    """What a phonopy directory holds, in the units of the calculator that made it."""

    unitcell: object                 # PhonopyAtoms, calculator's length unit
    supercell_matrix: np.ndarray     # (3, 3) int
    primitive: object                # "auto", a letter or a (3, 3) matrix
    calculator: str | None           # phonopy's interface name; None: VASP units
    dataset: dict | None = None      # displacements and forces (type 1 or 2), calculator units
    force_constants: np.ndarray | None = None   # calculator units (or fc_factor to eV/Å²)
    fc_factor: float | None = None   # force_constants -> eV/Å² when the file states its unit
    nac_params: dict | None = None
    files: list = field(default_factory=list)   # what was read, for messages and provenance


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _matrix_text(m) -> str:
    """A supercell matrix as --supercell takes it: 3 integers when diagonal, else 9."""
    m = np.asarray(m)
    v = np.diag(m) if np.array_equal(m, np.diag(np.diag(m))) else m.ravel()
    return " ".join(str(int(x)) for x in v)


def _calculator_units(calculator: str | None, where: str):
    from phonopy.physical_units import get_calculator_physical_units

    try:
        return get_calculator_physical_units(calculator)
    except ValueError:
        from phonopy.interface.calculator import calculator_info

        raise InputError(f"{where}: unknown calculator {calculator!r} (phonopy knows "
                         f"{', '.join(sorted(calculator_info))})") from None


def _read_cell(path: Path, calculator: str | None, *, with_ase: bool):
    """A unit cell file: phonopy's reader for ``calculator`` (its own units), or ASE (Å)."""
    try:
        if with_ase:
            from phonopy.structure.atoms import PhonopyAtoms

            from mlff_ins.data.ingest import read_structure

            atoms = read_structure(path)   # partial occupancies refused, LAMMPS files sniffed
            # phonopy's own masses unless the file sets some (as `phonopy -c FILE` would)
            return PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=np.array(atoms.cell),
                                scaled_positions=atoms.get_scaled_positions(wrap=False),
                                masses=atoms.get_masses() if atoms.has("masses") else None)
        from phonopy.interface.calculator import read_crystal_structure

        cell, _ = read_crystal_structure(path, interface_mode=calculator)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        how = "ASE" if with_ase else f"phonopy ({calculator or 'vasp'} format)"
        raise InputError(f"{path}: {how} could not read a unit cell from it "
                         f"({_one_line(exc)})") from None
    if cell is None:
        raise InputError(f"{path}: no unit cell in it")
    return cell


def _read_force_sets(path: Path, n_supercell: int, where: str) -> dict:
    """FORCE_SETS of either type, checked against the supercell's atom count."""
    from phonopy.file_IO import get_FORCE_SETS_type, parse_FORCE_SETS

    try:
        kind = get_FORCE_SETS_type(path)
        dataset = parse_FORCE_SETS(path)
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        raise InputError(f"{path}: phonopy could not read it as FORCE_SETS "
                         f"({_one_line(exc)})") from None
    if kind == 1:
        if dataset["natom"] != n_supercell:
            raise InputError(f"{path}: forces on {dataset['natom']} atoms, but the supercell "
                             f"of {where} has {n_supercell} atoms (check --supercell)")
        return dataset
    # type 2: one line (displacement, force) per atom, supercell after supercell
    n_lines = len(dataset["displacements"])
    if n_lines % n_supercell:
        raise InputError(f"{path}: {n_lines} lines of displacements and forces are not whole "
                         f"supercells of {n_supercell} atoms (the supercell of {where}; "
                         "check --supercell)")
    shape = (-1, n_supercell, 3)
    return {"displacements": dataset["displacements"].reshape(shape),
            "forces": dataset["forces"].reshape(shape)}


def _read_force_constants_file(path: Path, ph, where: str):
    """FORCE_CONSTANTS or force_constants.hdf5 -> (array, factor to eV/Å² or None)."""
    from phonopy.file_IO import parse_FORCE_CONSTANTS, read_force_constants_hdf5

    n_s, n_p = len(ph.supercell), len(ph.primitive)
    try:
        if path.suffix == ".hdf5":
            import h5py

            with h5py.File(path, "r") as f:
                shape = f["force_constants"].shape
        else:
            with open(path) as f:
                header = [int(x) for x in f.readline().split()]
            if len(header) not in (1, 2):
                raise ValueError("its first line is not one or two atom counts")
            shape = header if len(header) == 2 else header * 2
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        raise InputError(f"{path}: not a phonopy force-constants file ({_one_line(exc)})") \
            from None
    if shape[1] != n_s or shape[0] not in (n_p, n_s):
        raise InputError(f"{path}: force constants of {shape[0]} x {shape[1]} atoms, but the "
                         f"supercell of {where} has {n_s} atoms ({n_p} in the primitive cell; "
                         "check --supercell)")
    try:
        if path.suffix == ".hdf5":
            from phonopy.interface.calculator import (
                get_force_constant_conversion_factor,
            )

            fc, unit = read_force_constants_hdf5(path, p2s_map=ph.primitive.p2s_map,
                                                 return_physical_unit=True)
            # a stated unit is converted straight to eV/Å² (None = VASP's units)
            factor = None if unit is None else get_force_constant_conversion_factor(unit, None)
        else:
            fc, factor = parse_FORCE_CONSTANTS(path, p2s_map=ph.primitive.p2s_map), None
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        raise InputError(f"{path}: phonopy could not read it ({_one_line(exc)})") from None
    if fc.shape[0] == fc.shape[1]:
        from phonopy.harmonic.force_constants import full_fc_to_compact_fc

        fc = full_fc_to_compact_fc(ph.primitive, fc)
    return fc, factor


def _locate_inputs(d: Path, supercell, primitive, unitcell, calculator, nac: bool):
    """Find and read the structure part of a phonopy directory (any layout phonopy.load takes).

    Returns (inputs without forces, yaml data or None, the files holding forces or force
    constants: (force_constants_file, force_sets_file))."""
    fc_file = next((d / n for n in _FC_NAMES if (d / n).exists()), None)
    fs_file = d / "FORCE_SETS" if (d / "FORCE_SETS").exists() else None
    yamls = [d / n for n in _YAML_NAMES if (d / n).exists()] if unitcell is None else []
    for yaml_path in yamls:
        y = _read_yaml(yaml_path)
        # the first yaml with forces or force constants, or the first beside such files
        if fc_file or fs_file or y.force_constants is not None or _has_forces(y.dataset):
            break
    else:
        if yamls:
            raise InputError(f"--force-sets {d}: {', '.join(p.name for p in yamls)} hold no "
                             "forces or force constants, and there is no FORCE_SETS, "
                             "FORCE_CONSTANTS or force_constants.hdf5 beside them")
    if yamls:
        calc = y.calculator
        if calculator is not None and calc not in (None, calculator):
            raise InputError(f"--calculator {calculator}: {yaml_path} was made with {calc}")
        calc = calc or calculator
        smat = y.supercell_matrix
        if supercell is not None and smat is not None and not np.array_equal(supercell, smat):
            raise InputError(f"--supercell {_matrix_text(supercell)}: {yaml_path} has the "
                             f"supercell {_matrix_text(smat)}")
        if smat is None:
            smat = supercell if supercell is not None else np.eye(3, dtype=int)
        # phonopy.load: a primitive matrix stored in the yaml wins over the default "auto"
        pmat = y.primitive_matrix if (isinstance(primitive, str) and primitive == "auto"
                                      and y.primitive_matrix is not None) else primitive
        inputs = _PhonopyInputs(y.unitcell, np.array(smat), pmat, calc,
                                nac_params=y.nac_params if nac else None,
                                files=[yaml_path.name])
        return inputs, y, (fc_file, fs_file)

    calc = None if calculator == "vasp" else calculator
    if unitcell is not None:
        path = Path(unitcell)
        if not path.exists() and (d / path).exists():
            path = d / path
        if not path.exists():
            raise InputError(f"--unitcell {unitcell}: no such file")
        # a calculator's own format through phonopy's reader, anything else through ASE
        cell = _read_cell(path, calc, with_ase=calculator is None)
    else:
        if calc is None:
            names = ("POSCAR-unitcell", "POSCAR")
        else:
            from phonopy.interface.calculator import get_default_cell_filename

            names = (get_default_cell_filename(calc),)
        path = next((d / n for n in names if (d / n).exists()), None)
        if path is None:
            raise InputError(f"--force-sets {d}: needs phonopy_params.yaml, phonopy_disp.yaml "
                             f"or phonopy.yaml, or a unit cell ({', '.join(names)} or "
                             "--unitcell FILE) with FORCE_SETS, FORCE_CONSTANTS or "
                             "force_constants.hdf5")
        cell = _read_cell(path, calc, with_ase=False)
    if not (fc_file or fs_file):
        raise InputError(f"--force-sets {d}: a unit cell ({path.name}) but no FORCE_SETS, "
                         "FORCE_CONSTANTS or force_constants.hdf5")
    if supercell is None:
        raise InputError(f"--force-sets {d}: {path.name} with "
                         f"{(fc_file or fs_file).name} needs --supercell (the supercell of the "
                         "force set: 3 integers or 9, as phonopy's --dim)")
    return _PhonopyInputs(cell, np.array(supercell), primitive, calc, files=[path.name]), \
        None, (fc_file, fs_file)


def _read_yaml(path: Path):
    from phonopy.interface.phonopy_yaml import PhonopyYaml

    y = PhonopyYaml()
    try:
        y.read(path)
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        raise InputError(f"{path}: phonopy could not read it ({_one_line(exc)})") from None
    if y.unitcell is None:
        raise InputError(f"{path}: no unit cell in it")
    return y


def _has_forces(dataset) -> bool:
    from phonopy.structure.dataset import forces_in_dataset

    return dataset is not None and bool(forces_in_dataset(dataset))


def _scaled_dataset(dataset: dict, length: float, force: float, energy: float) -> dict:
    """A displacement dataset (type 1 or 2) with lengths, forces and energies multiplied."""
    factors = {"displacement": length, "displacements": length, "forces": force,
               "supercell_energy": energy, "supercell_energies": energy}

    def scale(d):
        return {k: (np.asarray(v) * factors[k] if k in factors and v is not None else
                    [scale(x) for x in v] if k == "first_atoms" else copy.deepcopy(v))
                for k, v in d.items()}

    return scale(dataset)


def _check_displacements(fs_dataset, yaml_dataset, fs_path, yaml_name):
    """Warn (as phonopy does) when FORCE_SETS and the yaml displace differently."""
    if yaml_dataset is None:
        return
    from phonopy.structure.dataset import get_displacements_and_forces

    a = get_displacements_and_forces(fs_dataset)[0]
    b = get_displacements_and_forces(yaml_dataset)[0]
    if a.shape != b.shape or not np.allclose(a, b, atol=1e-6):
        warnings.warn(f"{fs_path}: its displacements are not those of {yaml_name}; "
                      "FORCE_SETS's are used", stacklevel=3)


def _make_force_constants(ph, fc_calculator, symmetrize: bool) -> str:
    """Force constants from ph.dataset as phonopy.load makes them; returns the solver used."""
    solver = fc_calculator
    if solver is None and "displacements" in ph.dataset:
        solver = "symfc"        # phonopy's choice: the traditional solver cannot do type 2
    ph.produce_force_constants(calculate_full_force_constants=False, fc_calculator=solver)
    if symmetrize and solver is None:
        ph.symmetrize_force_constants(show_drift=False, use_symfc_projector=True)
    elif symmetrize and solver == "traditional":
        ph.symmetrize_force_constants(show_drift=False)
    if solver is None:
        return "phonopy default (traditional" + (", symfc projector)" if symmetrize else ")")
    return solver


def phonons_from_force_sets(directory: str | os.PathLike, *, supercell=None,
                            primitive="auto", unitcell: str | os.PathLike | None = None,
                            calculator: str | None = None, fc_calculator: str | None = None,
                            symmetrize: bool = True, nac: bool = True,
                            symprec: float = 1e-5) -> PhononSet:
    """Phonons from existing DFT results in ``directory``, in any layout ``phonopy.load`` takes.

    Layouts, in the order they are looked for (``unitcell`` skips the yaml files):

    - ``phonopy_params.yaml``, ``phonopy_disp.yaml`` or ``phonopy.yaml`` (the first found) for
      the cells, with force constants or forces inside it, or ``FORCE_CONSTANTS``,
      ``force_constants.hdf5`` or ``FORCE_SETS`` beside it (force constants win over forces,
      as in phonopy.load);
    - a unit cell — ``unitcell`` (read by ASE, or by phonopy's reader for ``calculator``),
      ``POSCAR-unitcell``, ``POSCAR``, or ``calculator``'s default file (``STRU`` for abacus)
      — with ``FORCE_SETS`` (type 1: displaced atoms; type 2: all atoms displaced) or force
      constants, and ``supercell`` (as ``phonopy --dim``).

    Lengths come in the calculator's unit (the yaml's ``calculator``, or ``calculator``; bohr
    for ABACUS, QE, ...); the result is always in phonopy's default (VASP) units, what the
    rest of the package assumes: cells in Å, force constants in eV/Å², frequencies in THz.

    Force constants from forces: ``fc_calculator`` (``FC_CALCULATORS``) or, with None,
    phonopy's default; when that default fails, the traditional solver with a warning.
    With ``nac`` (the default, as in ``phonopy.load``), Born effective charges and the
    dielectric tensor — a ``BORN`` file in ``directory`` or ``nac_params`` in the yaml — add
    the non-analytical term (LO-TO splitting near Γ) to every frequency computed from the
    result. ``supercell`` as :func:`supercell_matrix` takes it (3 or 9 integers), or None.
    """
    from phonopy import Phonopy

    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--force-sets {d}: not a directory")
    if fc_calculator is not None and fc_calculator not in FC_CALCULATORS:
        raise InputError(f"--fc-calculator {fc_calculator}: one of {', '.join(FC_CALCULATORS)}")
    if calculator is not None:
        _calculator_units(calculator, "--calculator")
    smat = None if supercell is None else supercell_matrix(np.ravel(supercell))
    inputs, y, (fc_file, fs_file) = _locate_inputs(d, smat, primitive, unitcell, calculator,
                                                   nac)
    where = inputs.files[0]
    units = _calculator_units(inputs.calculator, f"--force-sets {d}")
    length, force = units.distance_to_A, units.force_to_eVperA

    # one phonopy object in Å (VASP units): the tolerance scales with the lengths, so the
    # symmetry, primitive cell and supercell are those phonopy finds in the native units
    cell = inputs.unitcell.copy()
    cell.cell = np.array(inputs.unitcell.cell) * length
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
            ph = Phonopy(cell, supercell_matrix=inputs.supercell_matrix,
                         primitive_matrix=inputs.primitive, symprec=symprec * length)
    except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
        raise InputError(f"--force-sets {d}: phonopy could not build the cells of {where} "
                         f"({_one_line(exc)})") from None
    n_s = len(ph.supercell)

    # force constants win over forces (phonopy.load's order): the yaml's, then the files
    fc_source = where
    if y is not None and y.force_constants is not None:
        inputs.force_constants = np.array(y.force_constants)
        if inputs.force_constants.shape[1] != n_s:
            raise InputError(f"{d / where}: force constants on {inputs.force_constants.shape[1]}"
                             f" atoms, but its supercell has {n_s}")
        if inputs.force_constants.shape[0] == inputs.force_constants.shape[1]:
            from phonopy.harmonic.force_constants import full_fc_to_compact_fc

            inputs.force_constants = full_fc_to_compact_fc(ph.primitive, inputs.force_constants)
    elif fc_file is not None:
        inputs.force_constants, inputs.fc_factor = _read_force_constants_file(fc_file, ph,
                                                                              where)
        inputs.files.append(fc_file.name)
        fc_source = fc_file.name
    if inputs.force_constants is None:
        if y is not None and _has_forces(y.dataset):
            inputs.dataset = y.dataset
        elif fs_file is not None:
            inputs.dataset = _read_force_sets(fs_file, n_s, where)
            inputs.files.append(fs_file.name)
            if y is not None:
                _check_displacements(inputs.dataset, y.dataset, fs_file, where)
        else:
            raise InputError(f"--force-sets {d}: no forces or force constants found")

    born = d / "BORN"
    if nac and born.exists():       # BORN wins over the yaml's nac_params, as in phonopy.load
        from phonopy.file_IO import parse_BORN

        try:
            inputs.nac_params = parse_BORN(ph.primitive, symprec=symprec * length,
                                           filename=born)
        except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
            raise InputError(f"{born}: phonopy could not read it ({_one_line(exc)})") from None
        inputs.files.append("BORN")
    if inputs.nac_params is not None:
        nac_params = dict(inputs.nac_params)
        # e²/4πε₀ in the calculator's force-constant unit × length³ -> eV·Å (VASP's value for
        # phonopy's default units); the Ewald parameters are inverse lengths
        factor = nac_params.get("factor")
        factor = units.nac_factor if factor is None else float(factor)
        nac_params["factor"] = factor * force * length ** 2
        for key in ("G_cutoff", "Lambda"):
            if key in nac_params:
                nac_params[key] = nac_params[key] / length
        ph.nac_params = nac_params

    if inputs.force_constants is not None:
        if fc_calculator is not None:
            raise InputError(f"--fc-calculator {fc_calculator}: {fc_source} holds force "
                             "constants already; it applies to forces (FORCE_SETS)")
        factor = inputs.fc_factor if inputs.fc_factor is not None else force / length
        ph.force_constants = inputs.force_constants * factor
        solver = f"read from {fc_source}"
    else:
        ph.dataset = _scaled_dataset(inputs.dataset, length, force, units.energy_to_eV)
        try:
            solver = _make_force_constants(ph, fc_calculator, symmetrize)
        except Exception as exc:  # noqa: BLE001 - phonopy raises many kinds
            if fc_calculator is not None or "displacements" in ph.dataset:
                raise InputError(f"--force-sets {d}: phonopy could not make force constants "
                                 f"with {fc_calculator or 'symfc'} ({_one_line(exc)})") from None
            warnings.warn(f"--force-sets {d}: phonopy's default force-constant solver failed "
                          f"({_one_line(exc)}); used --fc-calculator traditional instead",
                          stacklevel=2)
            try:
                solver = _make_force_constants(ph, "traditional", symmetrize)
            except Exception as exc2:  # noqa: BLE001 - phonopy raises many kinds
                raise InputError(f"--force-sets {d}: phonopy could not make force constants "
                                 f"({_one_line(exc2)})") from None
    prov = {"force_sets": str(d), "files": inputs.files, "nac": ph.nac_params is not None,
            "calculator": inputs.calculator or "vasp", "force_constants_from": solver}
    if length != 1.0 or force != 1.0:
        prov["converted_to_angstrom_eV"] = {"length": units.length_unit,
                                            "force": units.force_unit,
                                            "force_constants": units.force_constants_unit}
    return PhononSet([ph], "force-sets", provenance=prov)


def relax(atoms: Atoms, calc, *, fmax: float = 1e-3, cell: bool = True, steps: int = 500,
          log=None, max_volume_change: tuple[float, float] = (0.7, 1.4),
          keep=None) -> Atoms:
    """Relax positions (and the cell, keeping its symmetry) with the model; returns a copy.

    Raises :class:`InputError` when not converged in ``steps``, or when the volume leaves
    ``max_volume_change`` (ratios to the start) on the way. ``keep``: a
    :class:`~mlff_ins.phonons.partial.PhononProgress` that saves the relaxation as it goes and
    continues a saved one (``steps`` counts the steps of every run).
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from mlff_ins.phonons.partial import SAVE_EVERY_S

    start, before = atoms, 0
    if keep is not None:
        atoms, before, converged = keep.relax_start(atoms, fmax, cell)
        if converged:
            return atoms.copy()
    a = atoms.copy()
    a.calc = calc
    a.set_constraint(FixSymmetry(a))
    target = FrechetCellFilter(a) if cell else a
    opt = BFGS(target, logfile=log)
    v0 = start.get_volume()

    def runaway_guard():
        # A model without a sensible minimum near the structure lets the cell collapse or
        # explode; a collapsed cell makes the neighbour lists (and memory) blow up, so stop
        # early with a message instead.
        ratio = a.get_volume() / v0
        if not max_volume_change[0] < ratio < max_volume_change[1]:
            raise InputError(f"--relax: the cell volume ran away to {ratio:.2f} x its start "
                             f"after {opt.nsteps} steps; the model has no sensible minimum "
                             "near this structure (check the model, or skip --relax)")

    if cell:
        opt.attach(runaway_guard)
    saved = [time.monotonic()]

    def save(converged=False):
        keep.save_relax(start, fmax, cell, a, before + opt.nsteps, converged)
        saved[0] = time.monotonic()

    if keep is not None:
        opt.attach(lambda: time.monotonic() - saved[0] >= SAVE_EVERY_S and save())
    try:
        converged = before < steps and opt.run(fmax=fmax, steps=steps - before)
    except KeyboardInterrupt:
        if keep is not None:         # Ctrl-C or SIGTERM: the steps taken are kept
            save()
        raise
    if keep is not None:
        save(converged)
    if not converged:
        raise InputError(f"--relax: not converged to fmax {fmax} eV/A in {steps} steps "
                         f"(max force {np.abs(a.get_forces()).max():.2e} eV/A)")
    a.set_constraint()
    out = a.copy()
    out.calc = None
    return out
