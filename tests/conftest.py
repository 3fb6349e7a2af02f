"""Session fixtures: the embedded CP2K silicon data and one tiny trained ensemble (float64).

The suite runs in two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist loadfile``, one
test file per worker at a time), sized for a 2-core machine: each worker and the processes its
tests start use one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)) unless the caller set
OMP_NUM_THREADS, so two workers do not oversubscribe two cores; the models of the suite are too
small to gain from more threads. ``-n 0`` runs the suite in one process, as before.
"""

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import pytest
from ase.io import read, write

from mlff_ins.demo import SI_DATA

N_FRAMES = 30
EMT_YAML = Path(__file__).resolve().parent.parent / "mlff_ins" / "configs" / "label" / "emt.yaml"
EMT_METALS = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Ag": 4.09, "Au": 4.08, "Pd": 3.89,
              "Pt": 3.92}  # frames of the embedded set used for the test model (keeps the suite fast)


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


@pytest.fixture(scope="session")
def small_predictor(tmp_path_factory):
    """A database of 7 fcc metals and their L1_2 alloys taught by EMT, and a 2-member predictor
    trained on it for a few epochs (a smoke-sized model: the point is the machinery)."""
    from itertools import combinations

    from ase.build import bulk
    from ase.io import write

    from mlff_ins.predict.database import BuildOptions, SpectraOptions, build_database
    from mlff_ins.predict.predictor import train_predictor
    from mlff_ins.predict.sources import iter_structures

    tmp = tmp_path_factory.mktemp("pred")
    frames = [bulk(s, "fcc", a) for s, a in EMT_METALS.items()]
    for x, y in list(combinations(EMT_METALS, 2))[:10]:
        c = bulk(x, "fcc", 0.5 * (EMT_METALS[x] + EMT_METALS[y]), cubic=True)
        c[0].symbol = y
        frames.append(c)
    write(tmp / "crystals.xyz", frames)
    db = tmp / "db.h5"
    opts = BuildOptions(teacher=str(EMT_YAML), supercell_length_A=7.0, max_supercell_atoms=64,
                        spectra=SpectraOptions(mesh=12.0, q_max=3.0, q_step=0.5,
                                               e_max_2d_meV=30.0, e_step_2d_meV=3.0,
                                               n_directions=4))
    build_database(list(iter_structures(str(tmp / "crystals.xyz"), max_atoms=8)), db, opts,
                   progress=False)
    out = tmp / "predictor"
    meta = train_predictor(db, out, members=2, epochs=4, batch_size=4,
                           hyper={"cutoff_A": 4.0, "hidden": "8x0e+8x0o+4x1e+4x1o",
                                  "embed_dim": 8}, progress=False)
    return db, out, meta


#: the longest test files (minutes each on 2 cores) first, so that the two xdist workers do not
#: end with one of them alone on a long file (largest-first scheduling; with
#: --no-loadscope-reorder, --dist loadfile hands out files in collection order)
LONG_FILES = ("test_readme.py", "test_train.py", "test_casestudy.py", "test_lammps.py",
              "test_train_ddp.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable sort
