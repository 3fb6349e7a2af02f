"""The weight average a fine-tuning stage starts from.

nequip's ``EMALightningModule`` validates, tests and packages an exponential moving average
(EMA) of the weights, at decay ``min(ema_decay, (1 + n) / (10 + n))`` after n optimizer steps:
a fresh run's average follows its raw weights closely for its first few thousand steps (decay
0.93 after 120 steps, 0.99 after 900, 0.999 only after about 9000). A fine-tuning stage
(``training.init_from``) builds a fresh module around the earlier run's averaged weights, so
that warm-up started again: round 4's fine-tune (training/si-reference-k222-al4, about 120 steps
an epoch) saw member 0's validation energy MAE go from 2.8 to 70 meV/atom within two epochs
(epochs 7-8) through an average of a time constant of about one epoch. The average the stage
validates and ships should instead move away from the weights it starts from no faster than
the configured decay says (0.999: about 1000 steps), as the earlier run's would have:
:class:`ContinuedEMALightningModule` starts it warmed up. What it changes in a stage's
validation error has not been measured side by side.
"""

from __future__ import annotations

import math

from nequip.train import EMALightningModule


def warm_updates(decay: float) -> int:
    """The number of updates after which nequip's EMA uses ``decay`` itself, not its warm-up."""
    if decay >= 1.0:
        return 0
    return max(0, math.ceil((10 * decay - 1) / (1 - decay)))


class ContinuedEMALightningModule(EMALightningModule):
    """``EMALightningModule`` whose weight average starts warmed up (see the module's text); a
    resume then loads the average's own count of updates from the checkpoint, as for nequip's
    class."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ema.num_updates = max(self.ema.num_updates, warm_updates(self.ema.decay))
