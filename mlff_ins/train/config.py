"""Training settings: presets in configs/train/, a user's YAML on top, command-line flags on top.

A training config is a small YAML file (see configs/train/small.yaml): data path, elements,
cutoff, per-element reference energies (E0s, see :mod:`mlff_ins.data.e0s`), model size,
training length, split, ensemble size. It is translated into a full ``nequip-train`` config
by :mod:`mlff_ins.train.nequip_config`.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np
import yaml

from mlff_ins.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("tiny", "small", "medium", "reference")
# options whose value is a free mapping (their keys are the user's, not ours)
FREE_MAPPINGS = ("e0s", "oversample", "frame_weights")


def preset_path(name: str) -> Path:
    return CONFIG_DIR / "train" / f"{name}.yaml"


def _merge(base: dict, over: dict, where: str, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base:
            raise InputError(f"{where}: unknown option '{prefix}{key}' "
                             f"(known: {', '.join(sorted(base))})")
        if key == "lr_plateau" and isinstance(value, dict):
            # every ReduceLROnPlateau setting the schedule knows, not only those a preset sets
            from mlff_ins.train.schedule import PLATEAU_DEFAULTS

            _merge({**PLATEAU_DEFAULTS, **(base[key] or {})}, value, where,
                   prefix=f"{prefix}{key}.")            # checks the names
            out[key] = {**(base[key] or {}), **value}
        elif isinstance(base[key], dict) and isinstance(value, dict) and key not in FREE_MAPPINGS:
            out[key] = _merge(base[key], value, where, prefix=f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def load_preset(name: str) -> dict:
    if name not in PRESETS:
        raise InputError(f"--preset: unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return yaml.safe_load(preset_path(name).read_text())


def load_train_config(path: str | os.PathLike | None = None, *, preset: str | None = None,
                      overrides: dict | None = None) -> dict:
    """Build the training settings.

    Parameters
    ----------
    path : a user YAML; it may name ``preset:`` (default small) and override any of its keys.
    preset : preset name when no file is given (or to replace the file's).
    overrides : values from the command line (``None`` values are ignored), dotted keys allowed
        (``{"training.max_epochs": 10}``).
    """
    user: dict = {}
    where = "command line"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(user, dict):
            raise InputError(f"{path}: expected a mapping of options")
        if user.get("data"):   # one file or a list, relative to the config file
            files = [user["data"]] if isinstance(user["data"], str) else list(user["data"])
            files = [str((path.parent / f).resolve()) for f in files]
            user["data"] = files[0] if len(files) == 1 else files
        init = (user.get("training") or {}).get("init_from")
        if isinstance(init, str) and init:   # a run folder, relative to the config file too
            user["training"]["init_from"] = str((path.parent / init).resolve())
    name = preset or user.get("preset") or "small"
    cfg = _merge(load_preset(name), user, where)
    cfg["preset"] = name
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        if parts[-1] not in node:
            raise InputError(f"option '{key}' is not a training setting")
        node[parts[-1]] = value
    check_train_config(cfg)
    return cfg


def resamples(cfg: dict) -> bool:
    """Whether each member trains on a bootstrap resample of the training pool (K > 1 and
    ``training.bootstrap``, true in runs made before the setting)."""
    return int(cfg.get("ensemble", 1)) > 1 and bool(cfg["training"].get("bootstrap", True))


#: the model's whole-number sizes and their least values (nequip fails deep inside its model
#: builder, or silently builds a model without messages, below them)
MODEL_SIZES = {"num_layers": 1, "l_max": 0, "num_features": 1, "radial_mlp_depth": 1,
               "radial_mlp_width": 1, "num_bessels": 1}


def check_train_config(cfg: dict) -> None:
    """Raise :class:`InputError` naming the first bad option."""
    if not cfg.get("data"):
        raise InputError("no training data: give --data FILE or `data:` in the config")
    if not (isinstance(cfg["data"], str)
            or (isinstance(cfg["data"], list) and all(isinstance(f, str) for f in cfg["data"]))):
        raise InputError(f"data: a file or a list of files (got {cfg['data']!r})")
    if not float(cfg["cutoff"]) > 0:
        raise InputError(f"cutoff: must be positive (got {cfg['cutoff']})")
    if int(cfg["ensemble"]) < 1:
        raise InputError(f"--ensemble: must be at least 1 (got {cfg['ensemble']})")
    for key, least in MODEL_SIZES.items():
        value = cfg["model"].get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= least):
            raise InputError(f"model.{key}: a whole number >= {least} (got {value!r})")
    if cfg["model"]["dtype"] not in ("float32", "float64"):
        raise InputError(f"model.dtype: float32 or float64 (got {cfg['model']['dtype']})")
    if cfg["model"].get("pair_potential") not in (None, "zbl"):
        raise InputError(f"model.pair_potential: null (none) or zbl (got "
                         f"{cfg['model']['pair_potential']!r})")
    split = cfg["split"]
    if not (0 < split["test"] < 1 and 0 < split["val"] < 1 and split["val"] + split["test"] < 1):
        raise InputError("split: val and test must be fractions in (0, 1) with a sum below 1")
    e0s = cfg["e0s"]
    if not (e0s in ("auto", "fit") or isinstance(e0s, dict)):
        raise InputError("e0s: `auto` (isolated-atom frames, else fitted), `fit` (fitted to the "
                         "training energies) or a mapping element -> energy in eV")
    if isinstance(e0s, dict):
        for el, value in e0s.items():
            try:
                ok = np.isfinite(float(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"e0s: {el} needs a finite energy in eV (got {value!r})")
    if not isinstance(cfg["training"].get("bootstrap", True), bool):
        raise InputError(f"training.bootstrap: true or false (got "
                         f"{cfg['training']['bootstrap']!r})")
    clip = cfg["training"].get("grad_clip")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not (math.isfinite(clip) and clip > 0)):
        raise InputError(f"training.grad_clip: a positive gradient norm, or null (got {clip!r})")
    stop = cfg["training"].get("early_stop")
    if stop is not None and not (isinstance(stop, int) and not isinstance(stop, bool)
                                 and stop >= 1):
        raise InputError(f"training.early_stop: a whole number of epochs >= 1, or null "
                         f"(got {stop!r})")
    weights = cfg["training"].get("frame_weights") or {}
    if not isinstance(weights, dict):
        raise InputError("training.frame_weights: a mapping config_type pattern -> loss weight "
                         "(e.g. {'diamond_mode': 30})")
    for pattern, w in weights.items():
        try:
            ok = float(w) > 0 and np.isfinite(float(w)) and not isinstance(w, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"training.frame_weights: '{pattern}' needs a positive weight "
                             f"(got {w!r})")
    init = cfg["training"].get("init_from")
    if init is not None and not (isinstance(init, str) and init):
        raise InputError(f"training.init_from: a training run folder, or null (got {init!r})")
    over = cfg["training"].get("oversample") or {}
    if not isinstance(over, dict):
        raise InputError("training.oversample: a mapping config_type pattern -> repeat count "
                         "(e.g. {'diamond*': 3})")
    for pattern, count in over.items():
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
            raise InputError(f"training.oversample: '{pattern}' needs a whole repeat count "
                             f">= 1 (got {count!r})")
