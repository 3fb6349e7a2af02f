"""Session fixtures: the embedded CP2K silicon data and one tiny trained ensemble (float64)."""

from pathlib import Path

import pytest
from ase.io import read, write

from mlff_ins.demo import SI_DATA

N_FRAMES = 30  # frames of the embedded set used for the test model (keeps the suite fast)


@pytest.fixture(scope="session")
def si_subset(tmp_path_factory) -> Path:
    """The isolated atom plus the first N_FRAMES labelled Si frames, as an extxyz file."""
    frames = read(SI_DATA, ":")
    atom = [a for a in frames if a.info.get("config_type") == "IsolatedAtom"]
    rest = [a for a in frames if a.info.get("config_type") != "IsolatedAtom"][:N_FRAMES]
    path = tmp_path_factory.mktemp("data") / "si_subset.xyz"
    write(path, atom + rest)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(si_subset, tmp_path_factory) -> Path:
    """A 2-member tiny float64 NequIP ensemble trained on ``si_subset``."""
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    cfg = load_train_config(preset="tiny", overrides={
        "data": str(si_subset), "ensemble": 2, "training.max_epochs": 12})
    out = tmp_path_factory.mktemp("models") / "si_tiny"
    return train_bundle(cfg, out, progress=False)
