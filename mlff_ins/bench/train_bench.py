"""Training benchmark: the small preset on the embedded CP2K silicon data.

Prints the held-out force and energy errors and the wall time, against the targets of the
foundation issue (force RMSE <= 80 meV/A within 30 minutes on 2 CPU cores), and against a peer
measured on the same test frames in the same run: the Stillinger-Weber potential (matscipy), the
classical force field the geometries were sampled with. The ratio says how much closer to DFT the
trained model is than the classical potential.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.io import read

TARGET_FORCE_RMSE = 80.0  # meV/A
TARGET_MINUTES = 30.0


def stillinger_weber_force_rmse(test_file: Path) -> float | None:
    """Force RMSE (meV/A) of matscipy's Stillinger-Weber Si on the test frames, or None."""
    try:
        from matscipy.calculators.manybody import Manybody
        from matscipy.calculators.manybody.explicit_forms import StillingerWeber
        from matscipy.calculators.manybody.explicit_forms.stillinger_weber import (
            Stillinger_Weber_PRB_31_5262_Si)
    except ImportError:
        return None
    calc = Manybody(**StillingerWeber(Stillinger_Weber_PRB_31_5262_Si))
    diffs = []
    for a in read(test_file, ":"):
        ref = a.get_forces().copy()
        b = a.copy()
        b.calc = calc
        diffs.append((b.get_forces() - ref).ravel())
    d = np.concatenate(diffs)
    return float(1000 * np.sqrt(np.mean(d ** 2)))


def main(argv=None) -> int:
    from mlff_ins.demo import SI_DATA
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    p = argparse.ArgumentParser(prog="python -m mlff_ins.bench train")
    p.add_argument("--preset", default="small")
    p.add_argument("-o", "--output", default=None, help="keep the bundle here")
    p.add_argument("--max-minutes", type=float, default=None)
    args = p.parse_args(argv)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp()) / "bench_model"
    cfg = load_train_config(preset=args.preset, overrides={
        "data": str(SI_DATA), "training.max_minutes": args.max_minutes})
    t0 = time.time()
    train_bundle(cfg, out)
    minutes = (time.time() - t0) / 60
    m = json.loads((out / "metrics.json").read_text())["ensemble_mean"]
    f_rmse = m["forces_meV_per_A"]["rmse"]
    sw = stillinger_weber_force_rmse(out / "data" / "test.xyz")
    print(f"bench train ({args.preset} preset, {SI_DATA.name})")
    print(f"  force RMSE  {f_rmse:8.1f} meV/A   (target <= {TARGET_FORCE_RMSE:.0f})")
    print(f"  force MAE   {m['forces_meV_per_A']['mae']:8.1f} meV/A")
    print(f"  energy RMSE {m['energy_meV_per_atom']['rmse']:8.2f} meV/atom")
    if "stress_meV_per_A3" in m:
        print(f"  stress RMSE {m['stress_meV_per_A3']['rmse']:8.2f} meV/A^3")
    print(f"  wall time   {minutes:8.1f} min     (target <= {TARGET_MINUTES:.0f})")
    if sw is not None:
        print(f"  peer: Stillinger-Weber force RMSE on the same test frames {sw:.1f} meV/A; "
              f"ratio model/SW = {f_rmse / sw:.3f}")
    print(f"  bundle: {out}")
    return 0
