"""How a member's learning rate decays, and changing that in a run under way.

The members train with PyTorch's ``ReduceLROnPlateau`` on the validation loss (nequip's
``val0_epoch/weighted_sum``): the rate drops by ``factor`` when the loss has not improved by a
relative ``threshold`` for ``patience`` epochs. Settings that never fire leave the rate where it
started for the whole run (round 0 of the reference model trained 172 epochs at its first rate:
its validation loss crept down by more than the 0.1 % threshold every 15 epochs).

A ``--resume`` may change ``training.lr_plateau`` only where the change rewrites no history: the
validation losses the run has logged are replayed through the old and the new settings, and the
new ones are accepted when they give the same rate after every epoch so far (so the run is the
one a fresh start with the new settings would have trained, to the noise of the logs). The
checkpoint's scheduler state is then replaced by the replayed one (its best loss and count of
epochs without improvement under the new rule). Otherwise the resume is refused in one line.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from mlff_ins.errors import InputError

#: the validation loss the scheduler and the best checkpoint follow
MONITORED = "val0_epoch/weighted_sum"
#: ReduceLROnPlateau's settings when a config gives none
PLATEAU_DEFAULTS = {"factor": 0.6, "patience": 10, "threshold": 0.02, "min_lr": 1e-5}


def plateau_settings(training: dict) -> dict:
    """The scheduler's keyword arguments from a config's ``training`` section."""
    given = training.get("lr_plateau") or {}
    return {**PLATEAU_DEFAULTS,
            **{k: int(v) if k == "patience" else float(v) for k, v in given.items()}}


def validation_history(member_dir: Path, n_epochs: int) -> list[float]:
    """The monitored validation loss of epochs 0 .. n_epochs-1 from the member's CSV logs (a
    later log version wins for an epoch logged twice: the one a resumed scheduler saw)."""
    def version(p: Path) -> int:
        return int(re.sub(r"\D", "", p.parent.name) or 0)

    seen: dict[int, float] = {}
    for log in sorted(Path(member_dir).glob("logs/version_*/metrics.csv"), key=version):
        with open(log, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get(MONITORED) and row.get("epoch"):
                    seen[int(float(row["epoch"]))] = float(row[MONITORED])
    missing = [e for e in range(n_epochs) if e not in seen]
    if missing:
        raise InputError(f"{member_dir}: the logs lack the validation loss of epoch "
                         f"{missing[0]} (of {n_epochs} the checkpoint has seen); the learning-"
                         f"rate settings cannot be changed in this run")
    return [seen[e] for e in range(n_epochs)]


def replay(losses: list[float], lr: float, plateau: dict):
    """``ReduceLROnPlateau`` stepped through ``losses`` from rate ``lr``: (scheduler, the rate
    after each epoch)."""
    import torch

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **plateau)
    rates = []
    for loss in losses:
        sched.step(loss)
        rates.append(opt.param_groups[0]["lr"])
    return sched, rates


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def rescheduled_state(member_dir: Path, lr: float, old: dict, new: dict) -> tuple[dict, dict]:
    """The member's last checkpoint with its scheduler state replayed under ``new`` plateau
    settings (``old``: those it trained with; ``lr``: the starting rate). Returns (checkpoint,
    note). Raises InputError when the logs do not account for the checkpoint's state or when the
    new settings would have lowered the rate at another epoch than the run did."""
    import torch

    ckpt_path = Path(member_dir) / "last.ckpt"
    # the run's own checkpoint: loading it unpickles objects as Lightning's resume does
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    states = ckpt.get("lr_schedulers") or []
    if len(states) != 1 or "best" not in states[0]:
        raise InputError(f"{ckpt_path}: no plateau scheduler state to change")
    state = states[0]
    current = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    # the epochs the scheduler has stepped through: Lightning's epoch counter of the checkpoint,
    # or one fewer when the checkpoint was written between the validation and the scheduler's
    # step (the scheduler's own last_epoch falls one behind at every resume); the count whose
    # replay gives the checkpoint's state is the one
    losses, missing = None, None
    for n in (int(ckpt["epoch"]), int(ckpt["epoch"]) - 1):
        try:
            history = validation_history(member_dir, n)
        except InputError as err:   # the newest epoch may not have reached the log
            missing = err
            continue
        was, old_rates = replay(history, lr, old)
        if (_same(was.best, state["best"]) and was.num_bad_epochs == state["num_bad_epochs"]
                and _same(old_rates[-1] if old_rates else lr, current)):
            losses = history
            break
    if losses is None and missing is not None:
        raise missing
    if losses is None:
        raise InputError(f"{ckpt_path}: its learning-rate schedule does not follow from the "
                         f"logged validation losses; the settings cannot be changed in this run")
    sched, new_rates = replay(losses, lr, new)
    for epoch, (a, b) in enumerate(zip(old_rates, new_rates)):
        if not _same(a, b):
            raise InputError(
                f"{member_dir}: the new lr_plateau settings would have set the learning rate to "
                f"{b:.3g} after epoch {epoch}, where the run has {a:.3g}; start a new run (-o) "
                f"for them")
    replayed = sched.state_dict()
    replayed["last_epoch"] = state["last_epoch"]
    ckpt["lr_schedulers"] = [replayed]
    note = {"epoch": n, "lr": new_rates[-1] if new_rates else lr,
            "best": sched.best, "epochs_without_improvement": sched.num_bad_epochs}
    return ckpt, note
