"""Memory benchmark: peak resident memory of `mlff-ins spectra --sqe` and `mlff-ins ins --2d`
against their `--max-memory` budget, each command run in its own process.

- spectra: a 4000-atom, 3-element trajectory (free Langevin particles, H5MD on disk) with
  ``--sqe`` at the default Q settings;
- ins: a 100-atom primitive cell (a 5 x 5 x 1 block of fcc Cu, EMT force constants) with
  ``--2d``, whose coherent powder average diagonalises a 300 x 300 dynamical matrix per Q-vector.

For each, the peak RSS of the child process (``wait4``'s ``ru_maxrss``) is printed beside the
budget and their ratio; a ratio below 1 is the target. The peer here is the budget itself: before
the budget existed these paths allocated n_fft x S x S x Q (MD) and 4096 x (3n)² (phonons) complex
numbers at once, estimated in the output for the same settings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _run(cmd: list[str]) -> tuple[float, float, int]:
    """(peak RSS GiB, wall s, exit status) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err.strip().splitlines()[-1] if err.strip() else f"exit {code}", file=sys.stderr)
    return usage.ru_maxrss / 1024 ** 2, wall, code           # ru_maxrss is KiB on Linux


def _trajectory(path: Path, n_atoms: int, n_frames: int) -> None:
    from mlff_ins.bench.spectra_bench import make_trajectory
    from mlff_ins.data.h5md import H5MDWriter

    traj = make_trajectory(n_atoms, n_frames)
    with H5MDWriter(path, traj.symbols, forces=False) as w:
        for i in range(n_frames):
            w.append(i, 5.0 * i, traj.positions[i], traj.cells[i],
                     velocities=traj.velocities[i])


def _phonons(path: Path) -> int:
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from phonopy import Phonopy

    from mlff_ins.phonons.finite_displacement import PhononSet, to_phonopy_atoms
    from mlff_ins.phonons.io import write_phonons
    from mlff_ins.phonons.properties import compute_properties

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((5, 5, 1))
    ph = Phonopy(to_phonopy_atoms(atoms), supercell_matrix=np.eye(3, dtype=int),
                 primitive_matrix=np.eye(3))
    ph.generate_displacements(distance=0.01)
    forces = []
    for cell in ph.supercells_with_displacements:
        from ase import Atoms

        a = Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        a.calc = EMT()
        forces.append(a.get_forces())
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    pset = PhononSet([ph], "model", provenance={"model": "EMT (benchmark)"})
    write_phonons(path, pset, compute_properties(pset.members, [2, 2, 2]))
    return len(atoms)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlff_ins.bench memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=4000, help="spectra: atoms (default 4000)")
    p.add_argument("--frames", type=int, default=400, help="spectra: frames (default 400)")
    p.add_argument("--budgets", type=float, nargs="+", default=[2.0, 0.5], metavar="GB",
                   help="--max-memory values to run (default 2 0.5)")
    p.add_argument("--only", choices=["spectra", "ins"], help="run one of the two")
    args = p.parse_args(argv)
    exe = [sys.executable, "-m", "mlff_ins.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "spectra"):
            traj = tmp / "traj.h5md"
            _trajectory(traj, args.atoms, args.frames)
            from mlff_ins.analysis.dynamics import _canonical
            from mlff_ins.analysis.qpoints import spherical_shells
            from mlff_ins.analysis.trajectory import Trajectory

            t = Trajectory(traj)
            shells = spherical_shells(t.first_cell(), q_max=5.0, q_min=0.2, width=0.1,
                                      per_shell=50)
            n_q = len(np.unique(_canonical(shells.miller), axis=0))
            m = min(args.frames // 2, 2000)
            from mlff_ins.analysis.correlation import fft_length

            old_block = max(2 * (m + 1), min(32 * (m + 1), 2 ** 25 // (3 * args.atoms)), 64)
            old = 16 * 3 * 3 * n_q * fft_length(old_block + m) / 1024 ** 3
            print(f"spectra --sqe: {args.atoms} atoms x {args.frames} frames, 3 elements, "
                  f"{n_q} Q-vectors (of each ±Q pair), window {m} frames; the unchunked "
                  f"coherent product alone was ~{old:.2f} GiB")
            for budget in args.budgets:
                rss, wall, code = _run(exe + ["spectra", str(traj), "--sqe", "-o",
                                              str(tmp / "s.h5"), "--max-memory", str(budget)])
                print(f"  --max-memory {budget:g}: peak RSS {rss:.2f} GiB, ratio to budget "
                      f"{rss / budget:.2f}, {wall:.0f} s" + ("" if code == 0 else
                                                             f" (exit {code})"))
        if args.only in (None, "ins"):
            ph5 = tmp / "cu100.h5"
            n = _phonons(ph5)
            old = 4096 * (3 * n) ** 2 * 16 / 1024 ** 3
            print(f"ins --2d: {n}-atom primitive cell; the unchunked eigenvectors alone were "
                  f"~{old:.1f} GiB per batch")
            for budget in args.budgets:
                rss, wall, code = _run(exe + ["ins", str(ph5), "--2d", "--mesh", "2", "2", "2",
                                              "--q-max", "5", "--directions", "50", "--e-max",
                                              "60", "-o", str(tmp / "i.h5"), "--max-memory",
                                              str(budget)])
                print(f"  --max-memory {budget:g}: peak RSS {rss:.2f} GiB, ratio to budget "
                      f"{rss / budget:.2f}, {wall:.0f} s" + ("" if code == 0 else
                                                             f" (exit {code})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
