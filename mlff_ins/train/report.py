"""Score a trained bundle on its held-out test frames and write the training report.

Metrics (``metrics.json``) are computed by running each packaged member through the same calculator
users get, on the test split that no member trained or validated on: energy per atom (meV/atom),
force components (meV/Angstrom) and stress components (meV/Angstrom^3), each as MAE and RMSE, per
member and for the ensemble mean. The report is a parity plot, a learning curve from nequip's
CSV log, and report.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path, write_text_atomic


_E0_SOURCE = {"isolated_atoms": "isolated-atom frames", "config": "e0s: in the config",
              "fitted": "fitted by least squares to the training frames' energies"}


def _errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    d = np.asarray(pred, float) - np.asarray(ref, float)
    return {"mae": float(np.mean(np.abs(d))), "rmse": float(np.sqrt(np.mean(d ** 2)))}


def _collect(calc, frames) -> dict[str, np.ndarray]:
    e_pred, e_ref, f_pred, f_ref, s_pred, s_ref = [], [], [], [], [], []
    for atoms in frames:
        ref = atoms.calc.results
        a = atoms.copy()
        a.calc = calc
        e_pred.append(a.get_potential_energy() / len(a))
        e_ref.append(ref["energy"] / len(a))
        f_pred.append(a.get_forces().ravel())
        f_ref.append(np.asarray(ref["forces"]).ravel())
        if "stress" in ref and a.pbc.all():
            s_pred.append(a.get_stress())
            s_ref.append(np.asarray(ref["stress"]).ravel()[:6] if np.size(ref["stress"]) == 6
                         else _voigt(ref["stress"]))
    out = {"e_pred": np.array(e_pred), "e_ref": np.array(e_ref),
           "f_pred": np.concatenate(f_pred), "f_ref": np.concatenate(f_ref)}
    if s_pred:
        out["s_pred"], out["s_ref"] = np.array(s_pred).ravel(), np.array(s_ref).ravel()
    return out


def _voigt(stress) -> np.ndarray:
    from ase.stress import full_3x3_to_voigt_6_stress
    return full_3x3_to_voigt_6_stress(np.asarray(stress).reshape(3, 3))


def _score(col: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {"energy_meV_per_atom": {k: 1000 * v for k, v in
                                   _errors(col["e_pred"], col["e_ref"]).items()},
           "forces_meV_per_A": {k: 1000 * v for k, v in
                                _errors(col["f_pred"], col["f_ref"]).items()}}
    if "s_pred" in col:
        out["stress_meV_per_A3"] = {k: 1000 * v for k, v in
                                    _errors(col["s_pred"], col["s_ref"]).items()}
    return out


def evaluate_bundle_members(members: list[Path], test_frames, *, device: str = "cpu") -> dict:
    """Score every member and the ensemble mean on ``test_frames``.

    Returns
    -------
    metrics : ``members`` (list of scores), ``ensemble_mean`` (scores) and ``n_test``; a score
        maps quantity -> {"mae", "rmse"} in meV units (see module docstring).
    parity : the ensemble-mean predictions and references (eV/atom, eV/Angstrom) for plotting.
    """
    from mlff_ins.model.calculator import BundleCalculator
    from mlff_ins.train.driver import PACKAGE_NAME

    per_member = []
    cols = []
    for k in range(len(members)):
        calc = BundleCalculator([members[k] / PACKAGE_NAME], device=device, name=str(members[k]))
        col = _collect(calc, test_frames)
        cols.append(col)
        per_member.append(_score(col))
    mean_col = {key: (np.mean([c[key] for c in cols], axis=0) if key.endswith("pred")
                      else cols[0][key]) for key in cols[0]}
    metrics = {"n_test": len(test_frames), "members": per_member,
               "ensemble_mean": _score(mean_col)}
    return metrics, mean_col


def _read_csv_rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _learning_curve(member_dir: Path):
    """Per-epoch train and validation force MAE (eV/Angstrom) and learning rate (absent from
    logs written before it was logged) from all CSV logs of a member.

    An epoch cut short (``max_minutes`` stops a member between two batches) logs a training MAE
    over the batches it ran, not over the training set: its training point is left out, found
    by its count of optimizer steps, fewer than a whole epoch's (the most common count). Its
    validation point, of the weights it left, is kept."""
    from collections import Counter

    from mlff_ins.train.grad_norm import LR

    paths = sorted(member_dir.glob("logs/version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        return None
    train_f, val_f, lr, last_step = {}, {}, {}, {}
    for row in (r for p in paths for r in _read_csv_rows(p)):
        if not row.get("epoch"):
            continue
        ep = int(float(row["epoch"]))
        if row.get("train_metric_epoch/forces_mae"):
            train_f[ep] = float(row["train_metric_epoch/forces_mae"])
            if row.get("step"):
                last_step[ep] = int(float(row["step"]))
        if row.get("val0_epoch/forces_mae"):
            val_f[ep] = float(row["val0_epoch/forces_mae"])
        if row.get(LR):
            lr[ep] = float(row[LR])
    # the step logged with an epoch's training metrics is its last optimizer step (counted from 0)
    steps, before = {}, -1
    for ep in sorted(last_step):
        if ep - 1 in last_step or ep == 0:
            steps[ep] = last_step[ep] - before
        before = last_step[ep]
    if len(steps) > 1:
        whole = Counter(steps.values()).most_common(1)[0][0]
        for ep, n in steps.items():
            if n < whole:
                train_f.pop(ep, None)
    return train_f, val_f, lr


def _partial_note(bundle: dict) -> list[str]:
    partial = bundle.get("partial")
    if not partial:
        return []
    lines = [f"- **partial export** of an unfinished training run "
             f"({bundle['exported_from']['members_of_run']} members planned)"]
    for k, state in partial["unfinished_members"].items():
        lines.append(f"  - member {k}: its best checkpoint so far, after {state['epochs']} of "
                     f"{state['max_epochs']} epochs")
    if partial["members_without_checkpoint"]:
        lines.append(f"  - {partial['members_without_checkpoint']} member(s) not started: "
                     f"left out")
    return lines


def plot_learning_curve(members: list[Path], path: Path) -> None:
    """The members' training and validation force MAE per epoch, and their learning rate in a
    second panel where the logs have it, to the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [_learning_curve(m) for m in members]
    with_lr = any(c is not None and c[2] for c in curves)
    if with_lr:
        fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(5.5, 5.6), sharex=True,
                                        height_ratios=(3, 1.2))
    else:
        fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, c in enumerate(curves):
        if c is None:
            continue
        train_f, val_f, lr = c
        if lr:
            ax_lr.semilogy(list(lr), list(lr.values()), "-", lw=1.2, color=f"C{k}")
        if train_f:
            ax.semilogy(list(train_f), [1000 * v for v in train_f.values()], "-", lw=1,
                        color=f"C{k}", alpha=0.5, label=f"member {k} train")
        if val_f:
            ax.semilogy(list(val_f), [1000 * v for v in val_f.values()], "-", lw=1.5,
                        color=f"C{k}", label=f"member {k} validation")
    ax.set(xlabel="" if with_lr else "epoch", ylabel="force MAE (meV/Å)",
           title="learning curve")
    ax.legend(fontsize=7)
    if with_lr:
        ax_lr.set(xlabel="epoch", ylabel="learning rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(out: Path, metrics: dict, col: dict, members: list[Path], test_frames,
                 bundle: dict, name: str | None = None) -> None:
    """Write parity.png, learning_curve.png and report.md into the bundle folder ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    ax = axes[0]
    ax.plot(col["e_ref"], col["e_pred"], "o", ms=4)
    lo, hi = min(col["e_ref"].min(), col["e_pred"].min()), max(col["e_ref"].max(),
                                                                col["e_pred"].max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    em = metrics["ensemble_mean"]["energy_meV_per_atom"]
    ax.set(xlabel="DFT energy (eV/atom)", ylabel="model energy (eV/atom)",
           title=f"energy: RMSE {em['rmse']:.1f} meV/atom")
    ax.ticklabel_format(useOffset=False)
    ax = axes[1]
    ax.plot(col["f_ref"], col["f_pred"], ".", ms=2, alpha=0.5)
    lim = max(np.abs(col["f_ref"]).max(), np.abs(col["f_pred"]).max())
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
    fm = metrics["ensemble_mean"]["forces_meV_per_A"]
    ax.set(xlabel="DFT force component (eV/Å)", ylabel="model force component (eV/Å)",
           title=f"forces: RMSE {fm['rmse']:.0f} meV/Å")
    fig.suptitle(f"held-out test frames ({len(test_frames)}), ensemble of {len(members)}")
    fig.tight_layout()
    with atomic_path(out / "parity.png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    plot_learning_curve(members, out / "learning_curve.png")

    lines = [f"# Training report: {name or out.name}", "",
             f"- data: {bundle['training_data']['file']} "
             f"(sha256 {bundle['training_data']['sha256'][:12]}), "
             f"{bundle['training_data']['n_frames']} frames: "
             f"{bundle['training_data']['n_train_pool']} train, "
             f"{bundle['training_data']['n_val']} validation, "
             f"{bundle['training_data']['n_test']} test",
             f"- elements {', '.join(bundle['elements'])}; cutoff {bundle['cutoff_A']} Å; "
             f"E0s (eV, {_E0_SOURCE.get(bundle.get('e0s_method'), 'isolated-atom frames')}) "
             f"{bundle['e0s_eV']}",
             f"- preset {bundle['preset']}, {bundle['dtype']}, ensemble of {len(members)}"
             f"{_resampling(bundle, len(members))}",
             *_partial_note(bundle), "",
             "## Errors on the held-out test frames", "",
             "| model | energy MAE / RMSE (meV/atom) | force MAE / RMSE (meV/Å) "
             "| stress MAE / RMSE (meV/Å³) |", "|---|---|---|---|"]
    rows = [(f"member {k}", s) for k, s in enumerate(metrics["members"])]
    rows.append(("ensemble mean", metrics["ensemble_mean"]))
    for name, s in rows:
        st = s.get("stress_meV_per_A3")
        lines.append(f"| {name} | {s['energy_meV_per_atom']['mae']:.2f} / "
                     f"{s['energy_meV_per_atom']['rmse']:.2f} | "
                     f"{s['forces_meV_per_A']['mae']:.1f} / {s['forces_meV_per_A']['rmse']:.1f} | "
                     + (f"{st['mae']:.2f} / {st['rmse']:.2f} |" if st else "- |"))
    lines += ["", "![parity](parity.png)", "", "![learning curve](learning_curve.png)", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))


def _resampling(bundle: dict, n_members: int) -> str:
    """How the members took the training frames, for the report's settings line."""
    from mlff_ins.train.config import resamples

    settings = bundle.get("settings") or {}
    if n_members < 2 or "training" not in settings:
        return ""
    if resamples({**settings, "ensemble": n_members}):
        return " (each on its own bootstrap resample of the training pool)"
    return " (each on the whole training pool; the seeds differ)"
