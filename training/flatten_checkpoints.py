"""Make fine-tuning checkpoints self-contained: python training/flatten_checkpoints.py CKPT ...

A fine-tuning stage's checkpoints build their model through nequip's ModelFromCheckpoint from
the stage's copy of the checkpoint it started from (member_k/init_from.ckpt), which, for a stage
started from another stage, builds its own from that stage's copy, and so on. Where such a copy
is not kept (the .gitignore leaves out round 3's and round 4's), the run can be neither
exported nor fine-tuned from on a fresh clone. This rewrites each CKPT in place with the model
settings of the chain's first run (mlff_ins.train.driver.self_contained_model; the chain must be
complete where it runs), weights and everything else untouched. Since 2026-12-05 a stage's own
copy is written self-contained, so new runs need none of this. Checkpoints are pickles: run it
on your own runs' files only (the trust boundary of README).
"""
import sys
from pathlib import Path

import torch

from mlff_ins.atomic_io import atomic_path
from mlff_ins.train.driver import FROM_CHECKPOINT, self_contained_model

for name in sys.argv[1:]:
    state = torch.load(name, map_location="cpu", weights_only=False)
    hp = state["hyper_parameters"]
    if hp["model"].get("_target_") != FROM_CHECKPOINT:
        print(f"{name}: self-contained already")
        continue
    was = hp["model"]["checkpoint_path"]
    hp["model"] = self_contained_model(Path(name))
    with atomic_path(Path(name)) as tmp:
        torch.save(state, tmp)
    print(f"{name}: model settings of the first run in place of ModelFromCheckpoint({was})")
