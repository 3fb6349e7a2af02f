"""Session fixtures: the embedded CP2K silicon data and one tiny trained ensemble (float64).

The suite runs in two pytest-xdist workers (pyproject's addopts: ``-n 2 --dist loadfile``, one
test file per worker at a time), sized for a 2-core machine: each worker and the processes its
tests start use one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)) unless the caller set
OMP_NUM_THREADS, so two workers do not oversubscribe two cores; the models of the suite are too
small to gain from more threads. ``-n 0`` runs the suite in one process, as before.
"""

import json
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


def _write_subset(path: Path) -> Path:
    """The isolated atom plus the first N_FRAMES labelled Si frames, as an extxyz file."""
    frames = read(SI_DATA, ":")
    atom = [a for a in frames if a.info.get("config_type") == "IsolatedAtom"]
    rest = [a for a in frames if a.info.get("config_type") != "IsolatedAtom"][:N_FRAMES]
    write(path, atom + rest)
    return path


@pytest.fixture(scope="session")
def si_subset(tmp_path_factory) -> Path:
    """The isolated atom plus the first N_FRAMES labelled Si frames, as an extxyz file."""
    return _write_subset(tmp_path_factory.mktemp("data") / "si_subset.xyz")


def _shared(tmp_path_factory, name: str, build) -> Path:
    """The folder ``build(folder)`` fills, built once per test run and shared by the xdist
    workers: the first to ask builds it under a file lock while the others wait (the fixtures
    made this way are only read by the tests)."""
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                   # the run's folder, above every worker's own
    folder = root / "shared" / name
    done = folder.parent / f"{name}.done"
    folder.parent.mkdir(exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            if folder.exists():              # a build that died half-way: start again
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.write_text("")
    return folder


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A 2-member tiny float64 NequIP ensemble trained on the isolated atom and the first
    N_FRAMES frames (one per test run, shared by the xdist workers)."""
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    def build(folder: Path) -> None:
        data = _write_subset(folder / "si_subset.xyz")
        cfg = load_train_config(preset="tiny", overrides={
            "data": str(data), "ensemble": 2, "training.max_epochs": 12})
        train_bundle(cfg, folder / "si_tiny", progress=False)

    return _shared(tmp_path_factory, "tiny_bundle", build) / "si_tiny"


@pytest.fixture(scope="session")
def small_predictor(tmp_path_factory):
    """A database of 7 fcc metals and their L1_2 alloys taught by EMT, and a 2-member predictor
    trained on it for a few epochs (a smoke-sized model: the point is the machinery; one per
    test run, shared by the xdist workers): (database, predictor folder, its predictor.json)."""
    from itertools import combinations

    from ase.build import bulk
    from ase.io import write

    from mlff_ins.predict.database import BuildOptions, SpectraOptions, build_database
    from mlff_ins.predict.predictor import train_predictor
    from mlff_ins.predict.sources import iter_structures

    def build(tmp: Path) -> None:
        frames = [bulk(s, "fcc", a) for s, a in EMT_METALS.items()]
        for x, y in list(combinations(EMT_METALS, 2))[:10]:
            c = bulk(x, "fcc", 0.5 * (EMT_METALS[x] + EMT_METALS[y]), cubic=True)
            c[0].symbol = y
            frames.append(c)
        write(tmp / "crystals.xyz", frames)
        opts = BuildOptions(teacher=str(EMT_YAML), supercell_length_A=7.0,
                            max_supercell_atoms=64,
                            spectra=SpectraOptions(mesh=12.0, q_max=3.0, q_step=0.5,
                                                   e_max_2d_meV=30.0, e_step_2d_meV=3.0,
                                                   n_directions=4))
        build_database(list(iter_structures(str(tmp / "crystals.xyz"), max_atoms=8)),
                       tmp / "db.h5", opts, progress=False)
        train_predictor(tmp / "db.h5", tmp / "predictor", members=2, epochs=4, batch_size=4,
                        hyper={"cutoff_A": 4.0, "hidden": "8x0e+8x0o+4x1e+4x1o",
                               "embed_dim": 8}, progress=False)

    tmp = _shared(tmp_path_factory, "small_predictor", build)
    out = tmp / "predictor"
    return tmp / "db.h5", out, json.loads((out / "predictor.json").read_text())


#: the test files of a minute or more on 2 cores, longest first (measured 2026-12-02: 262, 228,
#: 204, 149, 134, 104, 89, 88, 76, 71 s), so that the two xdist workers do not end with one of
#: them alone on a long file (largest-first scheduling; with --no-loadscope-reorder,
#: --dist loadfile hands out files in collection order)
LONG_FILES = ("test_readme.py", "test_md.py", "test_train.py", "test_train_ddp.py",
              "test_lammps.py", "test_casestudy.py", "test_label.py", "test_cli.py",
              "test_database.py", "test_web.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable sort
