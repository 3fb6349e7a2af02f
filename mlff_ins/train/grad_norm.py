"""The size of a member's gradients and of its learning rate, logged every epoch, and where the
gradients are clipped.

Training from scratch at the reference model's learning rates showed loss spikes: the validation
force error of a member jumped (for example from 114 to 306 meV/Å within three epochs) and stayed
more than 15 meV/Å above its best for 17 epochs (training/width-check). Whether one batch's
gradient caused them is a question the logs could not answer, so every member logs the global L2
norm of its gradients, before any clipping, as ``train_grad_norm_epoch/mean`` and
``train_grad_norm_epoch/max`` over each epoch's optimizer steps (in metrics.csv beside the
losses). ``training.grad_clip`` (null: none) clips that norm at a value read off those logs
(Lightning's ``gradient_clip_val``; nequip's ``EMALightningModule`` optimizes automatically, so
the trainer clips). Beside them ``lr`` is the learning rate the epoch trained with, where the
plateau scheduler (:mod:`mlff_ins.train.schedule`) has brought it.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch.callbacks import Callback

#: the columns this callback adds to a member's metrics.csv
MEAN, MAX = "train_grad_norm_epoch/mean", "train_grad_norm_epoch/max"
#: the learning rate of the epoch's optimizer steps (the scheduler steps after the epoch)
LR = "lr"


class GradNormLog(Callback):
    """Log the mean and the largest global gradient norm of each training epoch (before the
    trainer clips it), and the learning rate the epoch trained with."""

    def __init__(self) -> None:
        self._sum, self._max, self._n = 0.0, 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sum, self._max, self._n = 0.0, 0.0, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.detach().norm(2) for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.linalg.vector_norm(torch.stack(grads), 2))
        if math.isfinite(norm):
            self._sum += norm
            self._max = max(self._max, norm)
            self._n += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._n:
            pl_module.log(MEAN, self._sum / self._n, on_step=False, on_epoch=True)
            pl_module.log(MAX, self._max, on_step=False, on_epoch=True)
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log(LR, lr, on_step=False, on_epoch=True)
