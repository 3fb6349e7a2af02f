"""``mlff-ins demo``: the pipeline on the embedded CP2K silicon data, in minutes on 2 CPU cores.

Steps: check the embedded labels (validation, and that forces sum to zero in every frame as they
must for a translation-invariant DFT energy), train a tiny NequIP model on them, and score it on
held-out frames. Later releases extend the demo to MD, phonons and spectra.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from mlff_ins.errors import InputError

RESOURCES = Path(__file__).resolve().parent / "resources"
SI_DATA = RESOURCES / "si" / "si_cp2k_pbe.xyz"


def check_labels(path: Path = SI_DATA) -> dict:
    """Validate the embedded data and measure the force sum of every frame.

    Returns counts per ``config_type`` and the largest |sum of forces| (eV/Angstrom).
    """
    from mlff_ins.data.ingest import read_frames, split_isolated_atoms
    from mlff_ins.data.validate import validate

    frames, e0s = split_isolated_atoms(read_frames(path))
    validate(frames, e0s=e0s)
    counts = dict(Counter(a.info.get("config_type", "?") for a in frames))
    max_sum = max(float(np.linalg.norm(a.get_forces().sum(axis=0))) for a in frames)
    return {"n_frames": len(frames), "counts": counts, "e0s": e0s, "max_force_sum": max_sum}


def run_demo(output: str | Path = "mlff-ins-demo", *, epochs: int | None = None) -> Path:
    """Run the demo into ``output`` and return the trained bundle's folder."""
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    if not SI_DATA.exists():
        raise InputError(f"{SI_DATA}: embedded data missing (broken install?)")
    output = Path(output)
    info = check_labels()
    print(f"embedded data {SI_DATA.name}: {info['n_frames']} CP2K PBE frames of Si "
          f"({', '.join(f'{k} {v}' for k, v in sorted(info['counts'].items()))}); "
          f"isolated-atom energy {', '.join(f'{k} {v:.3f} eV' for k, v in info['e0s'].items())}; "
          f"largest |sum of forces| "
          f"{info['max_force_sum']:.1e} eV/Å: labels OK")
    cfg = load_train_config(preset="tiny", overrides={"data": str(SI_DATA),
                                                      "training.max_epochs": epochs})
    bundle = output / "models" / "si_tiny"
    resume = bundle.exists() and not (bundle / "bundle.json").exists()
    if (bundle / "bundle.json").exists():
        print(f"{bundle}: already trained (delete it to train again)")
        return bundle
    print(f"training a tiny NequIP model into {bundle} ...")
    return train_bundle(cfg, bundle, resume=resume)
