"""Signed per-atom energy error of a model, frame kind by frame kind: mean and spread over the
frames of each config_type (meV/atom, model minus label). A mean far from zero with a small
spread is a systematic offset between phases, not noise; round 3's ensemble put every
disordered frame 5-35 meV/atom below its CP2K label, training frames included (README.md).

    python training/al-round4/energy_bias.py MODEL FRAMES.xyz [FRAMES.xyz ...]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
from ase.io import read

from mlff_ins.model.calculator import load_calculator


def main(model: str, files: list[str]) -> None:
    calc = load_calculator(model, device="cpu")
    for path in files:
        errors = defaultdict(list)
        for atoms in read(path, ":"):
            label = atoms.get_potential_energy() / len(atoms)
            probe = atoms.copy()
            probe.calc = calc
            errors[atoms.info.get("config_type", "?")].append(
                1000 * (probe.get_potential_energy() / len(atoms) - label))
        print(f"{path} ({model}): model minus label, meV/atom")
        for kind, v in sorted(errors.items()):
            v = np.asarray(v)
            print(f"  {kind:28s} {len(v):3d} frames  mean {v.mean():+7.2f}  std {v.std():5.2f}")
        every = np.concatenate([np.asarray(v) for v in errors.values()])
        print(f"  {'all':28s} {len(every):3d} frames  mean {every.mean():+7.2f}  "
              f"RMS {np.sqrt(np.mean(every ** 2)):5.2f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
