"""Per-frame loss weights (``training.frame_weights``: config_type pattern -> weight).

Every term of the training loss (energy per atom, forces, stress) is a mean squared error over
the batch; a frame of weight w has its errors multiplied by √w before squaring, so its squared
errors count w times against those of the other frames of its batch (the mean still divides by
the batch's own number of values). Oversampling (``training.oversample``) repeats a frame
instead, at the cost of a longer epoch; weights cost nothing, so a weight of 30 on the
frozen-phonon frames of a crystal, whose forces of ~30 meV/Å are lost beside the ~1 eV/Å of a
liquid in an unweighted loss, is affordable.

The weight travels as the graph field ``frame_weight`` in the member's training file and the
run's validation file (``atoms.info``); a frame without one counts once
(:class:`DefaultFrameWeight`). The monitored validation loss (best epoch, learning-rate
plateau, early stop) is the mean of the MAEs of the √w-weighted errors, so it follows the
objective the members train on; the plain MAEs are logged beside it, and the test frames, which
the reports score, carry no weights. Importing this module registers the field with nequip: the
nequip config names :class:`DefaultFrameWeight` among the data transforms, so the training
process imports it before any data is read.
"""

from __future__ import annotations

import torch
from nequip.data import AtomicDataDict, register_fields
from nequip.data.modifier import BaseModifier

FIELD = "frame_weight"
register_fields(graph_fields=[FIELD])


class DefaultFrameWeight:
    """Data transform: a frame without a ``frame_weight`` gets weight 1."""

    def __call__(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if FIELD not in data:
            pos = data[AtomicDataDict.POSITIONS_KEY]
            data[FIELD] = torch.ones((AtomicDataDict.num_frames(data), 1), dtype=pos.dtype,
                                     device=pos.device)
        return data


class FrameWeighted(BaseModifier):
    """A loss field multiplied by √w of its frame (of the reference batch, which carries the
    weights; the model's output does not), per atom for node fields; ``per_atom`` divides a
    graph field by the frame's number of atoms first (the per-atom energy)."""

    def __init__(self, field: str, per_atom: bool = False) -> None:
        super().__init__(field)
        self.per_atom = per_atom

    def __call__(self, data1: AtomicDataDict.Type, data2: AtomicDataDict.Type | None = None):
        ref = data2 if data2 is not None and FIELD in data2 else data1
        root = torch.sqrt(ref[FIELD].reshape(-1))                       # (frames,)
        node = AtomicDataDict.BATCH_KEY in ref and self.type == "node"
        scale = root[ref[AtomicDataDict.BATCH_KEY]] if node else root
        n_atoms = ref[AtomicDataDict.NUM_NODES_KEY].reshape(-1)

        def one(data):
            x = data[self.field]
            if self.per_atom:
                x = x / n_atoms.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)
            return x * scale.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.dtype)

        return one(data1) if data2 is None else (one(data1), one(data2))

    def __str__(self) -> str:
        return f"weighted_{super().__str__()}"
