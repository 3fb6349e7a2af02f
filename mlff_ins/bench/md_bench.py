"""MD benchmark: `mlff-ins md`'s driver against ASE's VelocityVerlet with nequip's own calculator.

The same packaged model (member 0 of a bundle; by default a tiny one trained here on the embedded
data, a few minutes) drives diamond Si cells of 64, 512 and 4096 atoms through (a) ASE
VelocityVerlet + ``nequip.integrations.ase.NequIPCalculator`` and (b) :func:`mlff_ins.md.run.run_md`
(NVE, writing H5MD), interleaved. Prints atom-steps per second, the ratio b/a (target >= 1), the
cost per atom-step from the middle to the largest size (target: within 20 %), and the process's
peak resident memory after each size.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _cell(n_rep: int, seed: int = 0):
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n_rep,) * 3)
    atoms.rattle(0.02, seed=seed)
    rng = np.random.default_rng(seed)
    from ase import units
    v = rng.normal(size=(len(atoms), 3)) * np.sqrt(300 * units.kB / atoms.get_masses()[:, None])
    atoms.set_velocities(v)
    Stationary(atoms)
    return atoms


def run_ase(atoms, model_zip: Path, steps: int, device: str) -> float:
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from nequip.integrations.ase import NequIPCalculator

    a = atoms.copy()
    a.calc = NequIPCalculator._from_saved_model(str(model_zip), device=device)
    dyn = VelocityVerlet(a, 1.0 * units.fs)
    dyn.run(2)  # warm-up
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps * len(a) / (time.perf_counter() - t0)


def run_ours(atoms, model_zip: Path, steps: int, device: str, scratch: Path) -> float:
    from mlff_ins.md.run import MDOptions, run_md
    from mlff_ins.model.calculator import BundleCalculator

    calc = BundleCalculator([model_zip], device=device, name="bench")
    out = scratch / f"md_{len(atoms)}_{time.time_ns()}.h5md"
    run_md(atoms, calc, MDOptions(ensemble="nve", steps=2, dt_fs=1.0, every=2), out,
           progress=False)  # warm-up
    out.unlink()
    s = run_md(atoms, calc, MDOptions(ensemble="nve", steps=steps, dt_fs=1.0, every=steps), out,
               progress=False)
    return s.atom_steps_per_s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlff_ins.bench md", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model bundle (default: train a tiny one on the embedded data)")
    p.add_argument("--reps", default="2,4,8", help="diamond cell repetitions (8 atoms each)")
    p.add_argument("--steps", type=int, default=10, help="MD steps per run, at least")
    p.add_argument("--atom-steps", type=int, default=20480,
                   help="small cells run more steps, up to this many atom-steps per run, so "
                        "that a run is long enough to time (default 20480: 320 steps at 64 "
                        "atoms)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2,
                   help="interleaved pairs of runs per size (order alternates: ab, ba, ...)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = Path(args.model) if args.model else _tiny_bundle(tmp)
        model_zip = sorted((bundle / "members").glob("member_*/model.nequip.zip"))[0]
        print(f"model {model_zip}, device {args.device}")
        per_atom_step = {}
        for rep in (int(r) for r in args.reps.split(",")):
            atoms = _cell(rep)
            steps = max(args.steps, round(args.atom_steps / len(atoms)))
            runs_a, runs_b = [], []
            for k in range(max(1, args.repeats)):
                pair = [lambda: runs_a.append(run_ase(atoms, model_zip, steps, args.device)),
                        lambda: runs_b.append(run_ours(atoms, model_zip, steps, args.device,
                                                       tmp))]
                for run in (pair if k % 2 == 0 else pair[::-1]):
                    run()
            a, b = max(runs_a), max(runs_b)
            paired = float(np.median(np.array(runs_b) / np.array(runs_a)))
            per_atom_step[len(atoms)] = 1.0 / b
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  {len(atoms):5d} atoms, {steps} steps per run: ASE+NequIPCalculator "
                  f"{a:9.1f} atom-steps/s, "
                  f"mlff-ins md {b:9.1f} atom-steps/s (best of {len(runs_a)}), ratio "
                  f"{b / a:.2f}, median of paired ratios {paired:.2f} (target >= 1); "
                  f"peak RSS so far {rss:.0f} MiB", flush=True)
        sizes = sorted(per_atom_step)
        if len(sizes) >= 2:
            r = per_atom_step[sizes[-1]] / per_atom_step[sizes[-2]]
            print(f"cost per atom-step, {sizes[-1]} vs {sizes[-2]} atoms: {r:.2f} "
                  f"(linear = 1.00, target within 20 %)")
    return 0


def _tiny_bundle(tmp: Path) -> Path:
    from mlff_ins.demo import SI_DATA
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    print("training a tiny model on the embedded data (a few minutes) ...")
    cfg = load_train_config(preset="tiny", overrides={"data": str(SI_DATA), "ensemble": 1})
    return train_bundle(cfg, tmp / "tiny", progress=False)
