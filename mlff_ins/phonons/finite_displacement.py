"""Harmonic phonons by finite displacements: phonopy makes the displacements and the force
constants, the model evaluates every displaced supercell in batched calls.

One ``Phonopy`` object per ensemble member (they share the displacement data set; member k gets
member k's forces), so every downstream quantity (frequencies, DOS, INS) has a spread across
members. Force constants are linear in the forces, so the ensemble-mean force constants equal the
force constants of the mean forces. The same objects come from published DFT force sets through
:func:`phonons_from_force_sets`.
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
    """``--supercell`` as 3 integers (diagonal) or 9 (a full matrix, row-wise)."""
    v = [int(x) for x in values]
    if len(v) == 3:
        m = np.diag(v)
    elif len(v) == 9:
        m = np.array(v).reshape(3, 3)
    else:
        raise InputError(f"--supercell takes 3 or 9 integers, not {len(v)}")
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
                       max_batch_atoms: int | None = None, progress=None) -> PhononSet:
    """Finite-displacement phonons of ``atoms`` with a model bundle's calculator.

    Every displaced supercell is evaluated through
    :meth:`~mlff_ins.model.calculator.BundleCalculator.member_forces_batched` (many supercells
    per model call, every member on each batch; ``max_batch_atoms`` None: the device's
    default, :func:`~mlff_ins.model.calculator.default_batch_atoms`).
    """
    t0 = time.perf_counter()
    ph = make_phonopy(atoms, supercell, primitive=primitive, distance=distance,
                      plusminus=plusminus)
    cells = displaced_supercells(ph)
    t1 = time.perf_counter()
    forces = calc.member_forces_batched(cells, max_batch_atoms=max_batch_atoms, progress=progress)
    t2 = time.perf_counter()
    members = _forces_to_members(ph, forces, symmetrize)
    t3 = time.perf_counter()
    return PhononSet(members, "model",
                     timings_s={"displacements": t1 - t0, "forces": t2 - t1,
                                "force_constants": t3 - t2},
                     provenance={"n_displacements": len(cells),
                                 "supercell_atoms": len(cells[0]) if cells else 0,
                                 "distance_A": distance, "symmetrized": symmetrize})


def phonons_from_force_sets(directory: str | os.PathLike, *, symmetrize: bool = True,
                            nac: bool = True) -> PhononSet:
    """Phonons from existing DFT results in ``directory``: ``phonopy_params.yaml`` (forces or
    force constants inside), or ``POSCAR-unitcell`` + ``phonopy_disp.yaml`` + ``FORCE_SETS``.

    With ``nac`` (the default, as in ``phonopy.load``), Born effective charges and the dielectric
    tensor — a ``BORN`` file in ``directory`` or ``nac_params`` inside phonopy_params.yaml — add
    the non-analytical term (LO-TO splitting near Γ) to every frequency computed from the result.
    Without them the phonons are those of the force constants alone.
    """
    import phonopy

    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--force-sets {d}: not a directory")
    params = d / "phonopy_params.yaml"
    disp = d / "phonopy_disp.yaml"
    born = d / "BORN"
    kwargs = {"is_nac": bool(nac), "symmetrize_fc": symmetrize}
    if nac and born.exists():
        kwargs["born_filename"] = born
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
            if params.exists():
                ph = phonopy.load(params, **kwargs)
            elif disp.exists() and (d / "FORCE_SETS").exists():
                ph = phonopy.load(disp, force_sets_filename=d / "FORCE_SETS", **kwargs)
            else:
                raise InputError(f"--force-sets {d}: needs phonopy_params.yaml, or "
                                 "phonopy_disp.yaml with FORCE_SETS")
    except InputError:
        raise
    except Exception as exc:  # phonopy raises many kinds on malformed files
        raise InputError(f"--force-sets {d}: phonopy could not read it ({exc})") from None
    if ph.force_constants is None:
        raise InputError(f"--force-sets {d}: no forces or force constants found")
    prov = {"force_sets": str(d), "nac": ph.nac_params is not None}
    return PhononSet([ph], "force-sets", provenance=prov)


def relax(atoms: Atoms, calc, *, fmax: float = 1e-3, cell: bool = True, steps: int = 500,
          log=None, max_volume_change: tuple[float, float] = (0.7, 1.4)) -> Atoms:
    """Relax positions (and the cell, keeping its symmetry) with the model; returns a copy.

    Raises :class:`InputError` when not converged in ``steps``, or when the volume leaves
    ``max_volume_change`` (ratios to the start) on the way.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = calc
    a.set_constraint(FixSymmetry(a))
    target = FrechetCellFilter(a) if cell else a
    opt = BFGS(target, logfile=log)
    v0 = a.get_volume()

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
    converged = opt.run(fmax=fmax, steps=steps)
    if not converged:
        raise InputError(f"--relax: not converged to fmax {fmax} eV/A in {steps} steps "
                         f"(max force {np.abs(a.get_forces()).max():.2e} eV/A)")
    a.set_constraint()
    out = a.copy()
    out.calc = None
    return out
