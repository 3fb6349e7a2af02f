"""Make the unlabelled silicon geometries of the embedded data set (reproducible, seeded).

Geometries come from molecular dynamics with matscipy's Stillinger-Weber potential, which is cheap
and gives the diversity a force field needs; their energies and forces are then computed with CP2K
by ``mlff-ins label`` (see scripts/label_si.sh). Categories, all 64-atom cells of the 2x2x2
conventional diamond cell at the PBE lattice constant unless noted:

- diamond at 300, 600, 900 and 1200 K;
- diamond at 600 K under random strains of up to -2 % and up to +2 %;
- liquid Si (Stillinger-Weber at 3000 K, 5 % denser than the crystal, like real l-Si);
- amorphous Si (melt-quench with Stillinger-Weber, snapshots at 300-600 K);
- a vacancy (63 atoms) at 300, 600 and 900 K;
- one isolated atom in a 12 Angstrom box, for the isolated-atom energy E0;
- the perfect crystal with every atom displaced at random (Gaussian, 0.015, 0.03 and 0.045
  Angstrom per Cartesian component, 4 frames each): the harmonic regime that phonon calculations
  probe (finite displacements are 0.01 Angstrom), which 300 K snapshots (about 0.075 Angstrom)
  sample only loosely. These come last, from their own random stream, so the frames before them
  are unchanged from the first version of this data set.
- finite displacements (appended after the rattled frames, no randomness): one atom of the
  perfect crystal moved 0.02 Angstrom, at lattice strains of -1 to +1 % (never 0: the phonons
  benchmark tests the unstrained lattice).
- frozen transverse-acoustic phonons (appended last, no randomness; ``--append-modes`` adds them
  to an existing file): the TA modes at X and L, the branches the models found hardest, with the
  largest atomic displacement 0.03 or 0.06 Angstrom, at lattice strains of -0.5 and +0.5 %.

The 64-atom frames are interleaved across categories so that any prefix of the labelling run is
already a diverse data set (labelling takes hours and is resumed across sessions).

Usage: python scripts/make_si_frames.py -o si_frames.xyz
"""

from __future__ import annotations

import argparse

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from matscipy.calculators.manybody import Manybody
from matscipy.calculators.manybody.explicit_forms import StillingerWeber
from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
    Stillinger_Weber_PRB_31_5262_Si,
)

A0_PBE = 5.466  # Angstrom, the lattice constant of shared/data/phonopy-examples/Si-CP2K/Si.inp


def sw_calc():
    return Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))


def diamond64() -> Atoms:
    return bulk("Si", "diamond", a=A0_PBE, cubic=True) * (2, 2, 2)


def run_md(atoms: Atoms, temperature_K: float, steps: int, rng, dt_fs: float = 1.0) -> None:
    atoms.calc = sw_calc()
    if not np.any(atoms.get_momenta()):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dyn = Langevin(atoms, dt_fs * units.fs, temperature_K=temperature_K, friction=0.02, rng=rng)
    dyn.run(steps)


def snapshots(atoms: Atoms, temperature_K: float, n: int, rng, *, equil: int = 1000,
              every: int = 300, tag: str) -> list[Atoms]:
    atoms = atoms.copy()
    run_md(atoms, temperature_K, equil, rng)
    frames = []
    for _ in range(n):
        run_md(atoms, temperature_K, every, rng)
        snap = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
        snap.wrap()
        snap.info["config_type"] = tag
        snap.info["md_temperature_K"] = float(temperature_K)
        frames.append(snap)
    return frames


def strained(atoms: Atoms, sign: float, rng) -> Atoms:
    """Random symmetric strain with diagonal components of sign*(1..2) %, shear up to 1 %."""
    eps = np.diag(sign * rng.uniform(0.01, 0.02, 3))
    shear = rng.uniform(-0.01, 0.01, 3)
    eps[0, 1] = eps[1, 0] = shear[0]
    eps[0, 2] = eps[2, 0] = shear[1]
    eps[1, 2] = eps[2, 1] = shear[2]
    out = atoms.copy()
    out.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
    return out


def rattled(seed: int) -> list[Atoms]:
    """The perfect 64-atom crystal with independent Gaussian displacements of every atom."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(4):
        for sigma in (0.015, 0.03, 0.045):
            atoms = diamond64()
            atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
            atoms.wrap()
            atoms.info["config_type"] = "diamond_rattled"
            atoms.info["rattle_sigma_A"] = sigma
            frames.append(atoms)
    return frames


def displaced() -> list[Atoms]:
    """Finite displacements as phonopy makes them: the perfect 64-atom crystal, uniformly
    strained by -1, -0.5, +0.5 and +1 %, with atom 0 moved 0.02 Angstrom along x; and at -1 and
    +1 % along [111]. A single displaced atom isolates the force constants from it to every
    other atom, the long-range ones included (the TA branches of Si hinge on those at 7.7
    Angstrom), which in rattled frames are buried under the forces of all the other
    displacements. The unstrained lattice is left out on purpose: the phonons benchmark
    checks the model there, against CP2K on phonopy's own displaced supercell."""
    frames = []
    moves = [(eps, (1.0, 0.0, 0.0)) for eps in (-0.01, -0.005, 0.005, 0.01)]
    moves += [(eps, (1.0, 1.0, 1.0)) for eps in (-0.01, 0.01)]
    for eps, direction in moves:
        atoms = diamond64()
        atoms.set_cell(atoms.cell * (1.0 + eps), scale_atoms=True)
        step = np.asarray(direction) / np.linalg.norm(direction)
        atoms.positions[0] += 0.02 * step
        atoms.info["config_type"] = "diamond_displaced"
        atoms.info["lattice_strain"] = eps
        atoms.info["displacement_A"] = 0.02
        frames.append(atoms)
    return frames


def modes() -> list[Atoms]:
    """Frozen TA phonons at X = (1/2, 0, 1/2) and L = (1/2, 1/2, 1/2) (primitive reciprocal
    coordinates) in the 64-atom cell, both commensurate with it. The polarisation of these modes
    is fixed by the diamond structure's symmetry, so Stillinger-Weber force constants give the
    same pattern as DFT; each pattern is checked to be an eigenvector of them (residual < 1e-8),
    then scaled so the largest atomic displacement is 0.03 or 0.06 Angstrom, at lattice strains
    of -0.5 and +0.5 % (the unstrained lattice stays the phonons benchmark's). A frame's forces
    then carry the TA restoring force itself (some 70-140 meV/Angstrom per atom for the DFT
    TA(X), about 4.5 THz), which in thermal snapshots is a small part of much larger forces."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    prim = bulk("Si", "diamond", a=A0_PBE)
    unit = PhonopyAtoms(symbols=["Si"] * 2, cell=prim.cell[:],
                        scaled_positions=prim.get_scaled_positions())
    to_cubic_2x2x2 = [[-2, 2, 2], [2, -2, 2], [2, 2, -2]]   # primitive -> 2x2x2 conventional
    ph = Phonopy(unit, supercell_matrix=to_cubic_2x2x2)
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = sw_calc()
        forces.append(atoms.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ref = ph.supercell
    frames = []
    for name, q in (("X", [0.5, 0.0, 0.5]), ("L", [0.5, 0.5, 0.5])):
        mod = ph.run_modulations(to_cubic_2x2x2, [[q, 0, 1.0, 0.0]])   # band 0: a TA mode
        frac = mod.modulated_supercells[0].scaled_positions - ref.scaled_positions
        pattern = (frac - np.round(frac)) @ ref.cell
        restoring = -np.einsum("ijab,jb->ia", ph.force_constants, pattern)
        k = (restoring * pattern).sum() / (pattern * pattern).sum()
        resid = np.linalg.norm(restoring - k * pattern) / np.linalg.norm(restoring)
        assert resid < 1e-8, f"TA({name}) pattern is not an eigenvector ({resid:.1e})"
        pattern /= np.linalg.norm(pattern, axis=1).max()
        for amplitude in (0.03, 0.06):
            for eps in (-0.005, 0.005):
                atoms = Atoms(ref.symbols, cell=ref.cell,
                              positions=ref.positions + amplitude * pattern, pbc=True)
                atoms.set_cell(atoms.cell * (1.0 + eps), scale_atoms=True)
                atoms.info["config_type"] = "diamond_mode"
                atoms.info["mode"] = f"TA({name})"
                atoms.info["lattice_strain"] = eps
                atoms.info["displacement_A"] = amplitude
                frames.append(atoms)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="si_frames.xyz")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--append-modes", metavar="FILE",
                        help="only append the frozen-phonon frames to FILE, an earlier output of "
                             "this script without them (the MD frames are not recomputed)")
    args = parser.parse_args()
    if args.append_modes:
        from ase.io import read

        old = read(args.append_modes, ":")
        if any(a.info.get("config_type") == "diamond_mode" for a in old):
            raise SystemExit(f"{args.append_modes}: already has the frozen-phonon frames")
        new = modes()
        write(args.append_modes, new, format="extxyz", append=True)
        print(f"appended {len(new)} frames to {args.append_modes}")
        return
    rng = np.random.default_rng(args.seed)

    groups: list[list[Atoms]] = []
    for T in (300, 600, 900, 1200):
        groups.append(snapshots(diamond64(), T, 10, rng, tag=f"diamond_{T}K"))
    for sign, name in ((-1.0, "compressed"), (1.0, "stretched")):
        frames = []
        for _ in range(8):
            frames += snapshots(strained(diamond64(), sign, rng), 600, 1, rng, equil=500,
                                tag=f"diamond_strained_{name}")
        groups.append(frames)

    liquid = diamond64()
    liquid.set_cell(liquid.cell * 0.95 ** (1 / 3), scale_atoms=True)
    groups.append(snapshots(liquid, 3000, 14, rng, equil=3000, every=400, tag="liquid"))

    # melt-quench: melt at 3000 K, then cool in steps to 300 K, then sample at 300-600 K
    glass = liquid.copy()
    run_md(glass, 3000, 3000, rng)
    for T in np.linspace(2700, 300, 10):
        run_md(glass, float(T), 500, rng)
    amorphous = []
    for i in range(14):
        amorphous += snapshots(glass, 300 + 300 * (i % 2), 1, rng, equil=200, every=200,
                               tag="amorphous")
    groups.append(amorphous)

    vacancy = diamond64()
    del vacancy[0]
    vac_frames = []
    for T in (300, 600, 900):
        vac_frames += snapshots(vacancy, T, 6 if T == 300 else 5, rng, tag="vacancy")

    atom = Atoms("Si", positions=[[6.0, 6.0, 6.0]], cell=[12.0] * 3, pbc=True)
    atom.info["config_type"] = "IsolatedAtom"

    # round-robin over the 64-atom categories
    interleaved = []
    longest = max(len(g) for g in groups)
    for i in range(longest):
        interleaved += [g[i] for g in groups if i < len(g)]
    half = len(interleaved) // 2
    frames = [atom] + interleaved[:half] + vac_frames + interleaved[half:]
    frames += rattled(args.seed + 1)
    frames += displaced()
    frames += modes()
    write(args.output, frames, format="extxyz")
    print(f"wrote {len(frames)} frames to {args.output}")


if __name__ == "__main__":
    main()
