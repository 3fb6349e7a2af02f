"""Translate mlff-ins training settings into one ``nequip-train`` config per ensemble member.

The generated config uses nequip's own pieces: ``ASEDataModule`` on the split files we write,
``NequIPGNNModel``, the EMA Lightning module, nequip's energy/force(/stress) loss and metrics, and
Lightning checkpoints (``last.ckpt`` for resuming, ``best.ckpt`` for the packaged model). The
E0s (isolated-atom energies, or fitted ones, see :mod:`mlff_ins.data.e0s`) become fixed
per-type energy shifts.
"""

from __future__ import annotations

from pathlib import Path

from mlff_ins.train.schedule import MONITORED, plateau_settings


def nequip_config(cfg: dict, *, elements: list[str], e0s: dict[str, float], train_file: Path,
                  val_file: Path, test_file: Path, run_dir: Path, seed: int,
                  has_stress: bool, log_version: int = 0, devices: int = 1,
                  num_nodes: int = 1, init_checkpoint: Path | None = None) -> dict:
    """Return a nequip-train config (a plain dict, written as YAML by the caller).

    Parameters
    ----------
    cfg : mlff-ins training settings (see configs/train/*.yaml).
    elements : chemical symbols, in the model's type order.
    e0s : element -> reference energy E0 in eV (per-type energy shifts).
    train_file, val_file, test_file : extxyz files of the splits.
    run_dir : where checkpoints and logs go.
    seed : model initialisation and data-loader seed of this member.
    has_stress : every training frame carries a stress, so a stress loss term is possible.
    log_version : CSV log folder number; a resumed run logs to a new one (Lightning's CSV logger
        would otherwise delete the earlier epochs).
    devices, num_nodes : processes per node and nodes that train this member together. Above
        one process in all, Lightning runs distributed data parallel with nequip's
        ``SimpleDDPStrategy`` (gloo on CPU), and ``training.batch_size`` stays the batch of one
        optimizer step: each process loads ``batch_size / (devices * num_nodes)`` frames, and
        the gradients are averaged over the processes, as one process with the whole batch would.
    init_checkpoint : a fine-tuning stage: the model is built from this nequip checkpoint, its
        evaluation (EMA) weights included (nequip's ``ModelFromCheckpoint``), instead of from
        ``cfg["model"]`` with fresh weights; the path must stay where it is while the run
        lives (``relocate_checkpoints`` rewrites it when the run folder moves).
    """
    m, t = cfg["model"], cfg["training"]
    loss_w = dict(t["loss"])
    use_stress = has_stress and float(loss_w.get("stress", 0.0)) > 0
    cutoff = float(cfg["cutoff"])
    weighted = bool(t.get("frame_weights"))
    # per-frame loss weights: the first transform's import registers the frame_weight field
    # before any data is read, and it gives unweighted frames (validation, test) weight 1
    transforms = ([{"_target_": "mlff_ins.train.frame_weights.DefaultFrameWeight"}]
                  if weighted else []) + [
        {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
         "model_type_names": list(elements)},
        {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": cutoff},
    ]
    world = int(devices) * int(num_nodes)
    batch = int(t["batch_size"])
    if world > 1 and batch % world:
        raise ValueError(f"batch_size {batch} is not a multiple of {world} processes")
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": batch // world,
              "num_workers": 0}
    if use_stress:
        loss = {"_target_": "nequip.train.EnergyForceStressLoss", "per_atom_energy": True,
                "coeffs": {"total_energy": float(loss_w["energy"]),
                           "forces": float(loss_w["forces"]),
                           "stress": float(loss_w["stress"])}}
        metrics = {"_target_": "nequip.train.EnergyForceStressMetrics",
                   "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0,
                              "stress_mae": 1.0}}
    else:
        loss = {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                "coeffs": {"total_energy": float(loss_w["energy"]),
                           "forces": float(loss_w["forces"])}}
        metrics = {"_target_": "nequip.train.EnergyForceMetrics",
                   "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0}}
    if weighted:
        loss = _weighted_loss(loss_w, use_stress)
    monitored = MONITORED
    # the learning rate drops by `factor` when the validation loss has not improved by a relative
    # `threshold` for `patience` epochs
    plateau = plateau_settings(t)
    max_minutes = float(t["max_minutes"])
    hours, minutes = divmod(int(max_minutes), 60)
    seconds = int(round((max_minutes - int(max_minutes)) * 60))
    parallel = {"devices": int(devices), "num_nodes": int(num_nodes)}
    if world > 1:
        strategy = {"_target_": "nequip.train.SimpleDDPStrategy"}
        if cfg.get("device") == "cpu":
            strategy["process_group_backend"] = "gloo"
        parallel["strategy"] = strategy
    return {
        "run": ["train"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": seed,
            "train_file_path": str(train_file),
            "val_file_path": str(val_file),
            "test_file_path": str(test_file),
            **({"include_keys": ["frame_weight"]} if weighted else {}),
            "transforms": transforms,
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": loader,
            "test_dataloader": loader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": list(elements),
                              "dataloader_kwargs": {"batch_size": 8}},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu" if cfg.get("device") == "cpu" else "auto",
            **parallel,
            "max_epochs": int(t["max_epochs"]),
            "max_time": f"00:{hours:02d}:{minutes:02d}:{seconds:02d}",
            "check_val_every_n_epoch": 1,
            # the per-epoch rows are what the progress bar and report read; a row per step
            # made a member's metrics.csv 3 MB in 172 epochs
            "log_every_n_steps": 50,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                       "save_dir": str(run_dir), "name": "logs", "version": int(log_version),
                       "flush_logs_every_n_steps": 10},
            "callbacks": [
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "monitor": monitored, "dirpath": str(run_dir), "filename": "best",
                 "save_top_k": 1, "save_last": False},
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "dirpath": str(run_dir), "filename": "latest", "save_top_k": 1,
                 "save_last": True},
                {"_target_": "mlff_ins.train.grad_norm.GradNormLog"},
            ] + _early_stop(t.get("early_stop"), monitored),
            **_grad_clip(t.get("grad_clip")),
        },
        "training_module": {
            # a fine-tuning stage continues the earlier run's weight average, warmed up
            # (mlff_ins/train/ema.py); a fresh run warms its own up, as nequip's does
            "_target_": ("mlff_ins.train.ema.ContinuedEMALightningModule"
                         if init_checkpoint is not None else "nequip.train.EMALightningModule"),
            "ema_decay": float(t["ema_decay"]),
            "loss": loss,
            "val_metrics": _weighted_metrics(use_stress) if weighted else metrics,
            "train_metrics": metrics,
            "test_metrics": metrics,
            "optimizer": {"_target_": "torch.optim.Adam", "lr": float(t["lr"])},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                              **plateau},
                "monitor": monitored, "interval": "epoch", "frequency": 1},
            "model": {
                "_target_": "nequip.model.ModelFromCheckpoint",
                "checkpoint_path": str(init_checkpoint),
            } if init_checkpoint is not None else {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": seed,
                "model_dtype": m["dtype"],
                "type_names": list(elements),
                "r_max": cutoff,
                "num_bessels": int(m["num_bessels"]),
                "bessel_trainable": False,
                "polynomial_cutoff_p": 6,
                "num_layers": int(m["num_layers"]),
                "l_max": int(m["l_max"]),
                "parity": bool(m["parity"]),
                "num_features": int(m["num_features"]),
                "radial_mlp_depth": int(m["radial_mlp_depth"]),
                "radial_mlp_width": int(m["radial_mlp_width"]),
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
                "per_type_energy_shifts": {el: float(e0s[el]) for el in elements},
                "per_type_energy_scales_trainable": False,
                "per_type_energy_shifts_trainable": False,
                **_pair_potential(m.get("pair_potential"), elements),
            },
        },
    }


def _weighted_loss(loss_w: dict, use_stress: bool) -> dict:
    """nequip's energy/forces(/stress) MSE loss with every frame's terms weighted by its
    ``frame_weight`` (:mod:`mlff_ins.train.frame_weights`); same names and coefficients."""
    def term(name, field, coeff, per_atom=False):
        return {"name": name, "coeff": float(coeff),
                "field": {"_target_": "mlff_ins.train.frame_weights.FrameWeighted",
                          "field": field, "per_atom": per_atom},
                "metric": {"_target_": "nequip.train.MeanSquaredError"}}

    metrics = [term("per_atom_energy_mse", "total_energy", loss_w["energy"], per_atom=True),
               term("forces_mse", "forces", loss_w["forces"])]
    if use_stress:
        metrics.append(term("stress_mse", "stress", loss_w["stress"]))
    return {"_target_": "nequip.train.MetricsManager", "metrics": metrics}


def _weighted_metrics(use_stress: bool) -> dict:
    """Validation metrics of a weighted run: the plain MAEs, logged under their usual names (the
    progress bar and the reports read them), and the MAEs of the √w-weighted errors, whose mean is
    the monitored ``weighted_sum`` (best epoch, learning-rate plateau, early stop)."""
    fields = [("per_atom_energy", "total_energy", True), ("forces", "forces", False)]
    if use_stress:
        fields.append(("stress", "stress", False))
    metrics = []
    for name, field, per_atom in fields:
        plain = ({"_target_": "nequip.data.modifier.PerAtomModifier", "field": field}
                 if per_atom else field)
        metrics.append({"name": f"{name}_mae", "field": plain,
                        "metric": {"_target_": "nequip.train.MeanAbsoluteError"}})
        metrics.append({"name": f"weighted_{name}_mae", "coeff": 1.0,
                        "field": {"_target_": "mlff_ins.train.frame_weights.FrameWeighted",
                                  "field": field, "per_atom": per_atom},
                        "metric": {"_target_": "nequip.train.MeanAbsoluteError"}})
    return {"_target_": "nequip.train.MetricsManager", "metrics": metrics}


def _early_stop(patience: int | None, monitored: str) -> list[dict]:
    """Lightning's EarlyStopping on the monitored validation loss: the member stops (and is
    packaged from its best epoch, as at max_epochs) after ``patience`` epochs without a lower
    value; none when ``patience`` is None. Its count is kept in the checkpoints, so a resumed
    member goes on counting."""
    if patience is None:
        return []
    return [{"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": monitored,
             "mode": "min", "patience": int(patience), "min_delta": 0.0}]


def _grad_clip(value: float | None) -> dict:
    """The trainer's clipping of the global gradient norm at ``value`` (none when None; see
    :mod:`mlff_ins.train.grad_norm`)."""
    if value is None:
        return {}
    return {"gradient_clip_val": float(value), "gradient_clip_algorithm": "norm"}


def _pair_potential(name: str | None, elements: list[str]) -> dict:
    """The model's fixed pair term: none, or ``zbl``, nequip's Ziegler-Biersack-Littmark
    screened nuclear repulsion (eV, Angstrom; tapered to zero at the cutoff by the same polynomial
    as the radial basis). The network learns the rest, so the energies it is trained on are
    unchanged; the term keeps atoms apart at distances no training frame reaches (in hot MD an
    unconstrained model can let two atoms fall onto each other)."""
    if not name:
        return {}
    return {"pair_potential": {"_target_": "nequip.nn.pair_potential.ZBL", "units": "metal",
                               "chemical_species": list(elements)}}
