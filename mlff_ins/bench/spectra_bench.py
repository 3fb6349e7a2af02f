"""Spectra benchmark: coherent + incoherent F(Q,t) -> S(Q,E) against dynasor on the same input.

One synthetic trajectory (3 species of free Langevin particles, default 4000 atoms x 2000 frames)
and one set of Q-vectors on spherical shells are given to dynasor 2.5 (numba backend, window_step
1, the same all-origins estimator) and to mlff-ins; the runs alternate ``--repeats`` times. Both
read the frames from memory, so file parsing is not timed. Prints both times, their ratio and the
largest relative difference of the results, then how mlff-ins' time grows with atoms, frames and
Q-vectors (each doubled from a smaller base case). dynasor's incoherent part costs O(window) per
frame and ours O(log window), so the speed-up grows with the correlation window; both windows are
reported.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mlff_ins.analysis.dynamics import correlate
from mlff_ins.analysis.qpoints import spherical_shells
from mlff_ins.analysis.synthetic import langevin_particles
from mlff_ins.analysis.trajectory import ArrayTrajectory

SPECIES = (("Si", 28.085, 0.25), ("O", 15.999, 0.5), ("Na", 22.990, 0.25))
TARGET_SPEEDUP = 5.0


def make_trajectory(n_atoms: int, n_frames: int, seed: int = 0):
    """Three species of free Langevin particles at liquid density (0.07 atoms/Å³), dt 5 fs."""
    box = (n_atoms / 0.07) ** (1 / 3)
    pos, vel, symbols = [], [], []
    for k, (element, mass, fraction) in enumerate(SPECIES):
        n = int(round(fraction * n_atoms)) if k < len(SPECIES) - 1 else n_atoms - len(symbols)
        p, v, _, _ = langevin_particles(n=n, frames=n_frames, every=5, mass=mass, box=box,
                                        gamma=0.01, seed=seed + k)
        pos.append(p)
        vel.append(v)
        symbols += [element] * n
    return ArrayTrajectory(symbols, np.concatenate(pos, axis=1), np.eye(3) * box, 5.0,
                           velocities=np.concatenate(vel, axis=1))


def run_mlff_ins(traj, shells, max_lag, device="cpu"):
    t0 = time.perf_counter()
    r = correlate(traj, max_lag, vacf=False, shells=shells, coherent=True, incoherent=True,
                  device=device)
    return time.perf_counter() - t0, r


def run_dynasor(traj, q_vectors, max_lag, scratch):
    """dynasor on frames served from memory (its Trajectory needs a file to start from)."""
    import ase.io
    from ase import Atoms
    import dynasor
    from dynasor.trajectory.trajectory_frame import ReaderFrame

    seed = scratch / "two_frames.extxyz"
    cell = traj.cells[0]
    ase.io.write(seed, [Atoms(traj.symbols, positions=traj.positions[i], cell=cell, pbc=True)
                        for i in range(2)])
    dtraj = dynasor.Trajectory(str(seed), trajectory_format="extxyz",
                               atomic_indices="read_from_trajectory")
    dtraj._reader_iter = (ReaderFrame(frame_index=i, cell=cell, n_atoms=traj.n_atoms,
                                      positions=traj.positions[i])
                          for i in range(traj.n_frames))
    t0 = time.perf_counter()
    sample = dynasor.compute_dynamic_structure_factors(dtraj, q_vectors, dt=traj.dt_fs,
                                                       window_size=max_lag,
                                                       calculate_incoherent=True,
                                                       logging_interval=0)
    return time.perf_counter() - t0, sample


def max_relative_difference(ours, sample) -> float:
    worst = 0.0
    for (a, b), f in ours.fqt_coh.items():
        ref = sample[f"Fqt_coh_{a}_{b}"]
        worst = max(worst, np.abs(f - ref).max() / np.abs(ref).max())
    for a, f in ours.fqt_inc.items():
        ref = sample[f"Fqt_incoh_{a}"]
        worst = max(worst, np.abs(f - ref).max() / np.abs(ref).max())
    return float(worst)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlff_ins.bench spectra", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--atoms", type=int, default=4000)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--windows", default="50,200",
                   help="correlation windows to compare at, frames, comma-separated (default "
                        "50,200: 0.25 and 1 ps, i.e. about 16 and 4 meV resolution)")
    p.add_argument("--q-per-shell", type=int, default=20)
    p.add_argument("--q-max", type=float, default=2.0, help="1/Å; shells of 0.5 from 0.5")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling table")
    args = p.parse_args(argv)

    import tempfile
    from pathlib import Path

    import dynasor
    import torch

    dynasor.logging_tools.set_logging_level("WARNING")
    print(f"torch threads {torch.get_num_threads()}, device {args.device}")
    t0 = time.perf_counter()
    traj = make_trajectory(args.atoms, args.frames)
    shells = spherical_shells(traj.cells[0], q_max=args.q_max, q_min=0.5, width=0.5,
                              per_shell=args.q_per_shell, seed=0)
    q = shells.vectors(traj.cells[0])
    windows = [int(w) for w in args.windows.split(",")]
    print(f"trajectory: {traj.n_atoms} atoms ({', '.join(s for s, _, _ in SPECIES)}), "
          f"{traj.n_frames} frames of {traj.dt_fs:g} fs, {len(q)} Q-vectors in {shells.n_shells} "
          f"shells (built in {time.perf_counter() - t0:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        # compile dynasor's numba kernels (and warm torch) untimed, on the first frames
        head = ArrayTrajectory(traj.symbols, traj.positions[:12], traj.cells[0], traj.dt_fs)
        for _ in range(2):
            run_dynasor(head, q, 5, Path(tmp))
        run_mlff_ins(head, shells, 5, args.device)
        for window in windows:
            ours_t, dyn_t = [], []
            print(f"window {window} frames ({window * traj.dt_fs:g} fs):")
            for _ in range(args.repeats):
                t, ours = run_mlff_ins(traj, shells, window, args.device)
                ours_t.append(t)
                print(f"  mlff-ins {t:8.2f} s", flush=True)
                t, sample = run_dynasor(traj, q, window, Path(tmp))
                dyn_t.append(t)
                print(f"  dynasor  {t:8.2f} s", flush=True)
            diff = max_relative_difference(ours, sample)
            speedup = min(dyn_t) / min(ours_t)
            print(f"  best of {args.repeats}: mlff-ins {min(ours_t):.2f} s, dynasor "
                  f"{min(dyn_t):.2f} s, speed-up {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x), "
                  f"max relative difference {diff:.1e} (coherent and incoherent F(Q,t))",
                  flush=True)
        args.window = windows[-1]
    if not args.no_scaling:
        scaling(args)
    return 0


def scaling(args) -> None:
    """mlff-ins time at a base case and with atoms, frames or Q-vectors doubled."""
    base = dict(atoms=max(args.atoms // 4, 100), frames=max(args.frames // 4, 200),
                q=max(args.q_per_shell // 2, 2))
    print(f"scaling of mlff-ins (base: {base['atoms']} atoms, {base['frames']} frames, "
          f"{base['q']} Q per shell; time relative to base, ideal: 2.0 for atoms and Q, "
          f"slightly above 2.0 for frames)")
    cases = [("base", base), ("2x atoms", dict(base, atoms=2 * base["atoms"])),
             ("2x frames", dict(base, frames=2 * base["frames"])),
             ("2x Q-vectors", dict(base, q=2 * base["q"]))]
    t_base = None
    for label, c in cases:
        traj = make_trajectory(c["atoms"], c["frames"])
        shells = spherical_shells(traj.cells[0], q_max=args.q_max, q_min=0.5, width=0.5,
                                  per_shell=c["q"], seed=0)
        t = min(run_mlff_ins(traj, shells, args.window, args.device)[0] for _ in range(2))
        t_base = t_base or t
        print(f"  {label:13s} {t:7.2f} s  ratio {t / t_base:4.2f}  ({len(shells.miller)} Q)")
