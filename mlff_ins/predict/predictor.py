"""Train the direct predictor on a database, save it, load it and predict spectra from a structure.

Targets (``targets``): the database's VISION and/or TOSCA S(E) at its temperature and its phonon
DOS (``dos``), each averaged into the 120 bins of 10–1200 cm⁻¹ of Cheng et al. 2023 and divided by
its maximum. The headline test MSE is that of the S(E) targets (the DOS's is reported beside
it). The split is by composition (reduced formula, hashed): no formula is in two of train /
validation / test. An ensemble of ``members`` networks (different seeds) gives
``intensity_std``.

A predictor folder holds ``predictor.json`` (every hyper-parameter, the grid, targets, database
temperature, the elements and neighbour statistics it was trained on, split sizes, metrics) and one
``member_K.pt`` per network: a plain state dict, loaded with ``torch.load(weights_only=True)``, so
opening a predictor runs no code from the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import (atomic_dir, atomic_path, file_sha256, write_json_atomic,
                               write_text_atomic)
from mlff_ins.errors import InputError
from mlff_ins.neutron.plot import spread_band

TARGETS = ("vision", "tosca", "dos")
#: how a new predictor's members combine (predictor.json ``ensemble_aggregate``)
ENSEMBLE_AGGREGATE = "median"
#: the targets that are instrument S(E) (``predict --instrument``); the others (the DOS) are
#: predicted beside whichever is chosen
INSTRUMENT_TARGETS = ("vision", "tosca")
#: AdamW weight decay of the networks: on the 409-entry database 0.5 gave a lower validation
#: MSE than 0.05; 2 lower still, but by hedging towards the mean spectrum (its spectral weight
#: lands farther from the teacher's: W1 14.7 against 9.2 meV on the test crystals with the
#: Gaussian basis at 0.5; docs/benchmarks.md)
WEIGHT_DECAY = 0.5
#: the S(E) grid of Cheng et al. 2023: 120 bins over 10-1200 cm^-1 (edges, cm^-1)
GRID_EDGES_INVCM = np.linspace(10.0, 1200.0, 121)


def _mev_per_invcm() -> float:
    from mlff_ins.neutron.resolution import MEV_PER_INVCM

    return MEV_PER_INVCM


def grid_edges_meV(edges_invcm=GRID_EDGES_INVCM) -> np.ndarray:
    return np.asarray(edges_invcm) * _mev_per_invcm()


def rebin(energy_meV, values, edges_meV) -> np.ndarray:
    """Mean of the piecewise-linear ``values`` over each bin [edges[k], edges[k+1]] (meV)."""
    e = np.asarray(energy_meV, dtype=float)
    y = np.asarray(values, dtype=float)
    running = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(e))])
    at = np.interp(edges_meV, e, running)
    return np.diff(at) / np.diff(edges_meV)


def _normalised(y):
    m = np.max(y)
    return y / m if m > 0 else y


def shipped_predictor() -> Path:
    """The predictor folder shipped inside the package."""
    path = Path(__file__).resolve().parents[1] / "resources" / "predictor"
    if not (path / "predictor.json").is_file():
        raise InputError("no predictor is shipped with this installation; train one with "
                         "`mlff-ins predictor train DB -o DIR` and pass --predictor DIR")
    return path


def structure_family(key: str) -> str:
    """The family of a database entry: the AFLOW prototype label for ``aflow:LABEL`` and its
    substitutions ``sub:LABEL:...``, the key itself otherwise."""
    parts = str(key).split(":")
    return parts[1] if parts[0] in ("aflow", "sub") and len(parts) > 1 else str(key)


def composition_split(formulas, families=None, fractions=(0.8, 0.1)) -> list[str]:
    """'train', 'valid', 'test' or 'excluded' for each entry, by structure family and formula.

    Whole families (:func:`structure_family`; each formula its own family when ``families`` is
    None) go to one split: the families in the order of their SHA-256 (the same on every
    machine) fill the test set up to ``1 - sum(fractions)`` of the entries, then validation
    up to ``fractions[1]`` (a family that would overfill a set by half its target passes on),
    the rest train. Then no formula is in two splits: a validation or test entry whose formula
    is in training, or a test entry whose formula is in validation, is ``excluded`` (used
    nowhere). So the test holds neither a composition nor an AFLOW prototype seen in training:
    the 40 substitutions of one prototype are not spread over the splits. Elemental structures
    from ASE's bulk set and the dcdft set are their own families (keyed by name, not matched to
    a prototype), so hcp Ho can be tested while the hcp prototype of Mg was trained on."""
    families = list(formulas) if families is None else list(families)
    if len(families) != len(formulas):
        raise ValueError("one family per formula")
    size = {}
    for fam in families:
        size[fam] = size.get(fam, 0) + 1
    order = sorted(size, key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    n = len(formulas)
    target = {"test": max(1, round((1 - sum(fractions)) * n)) if len(order) >= 3 else 0,
              "valid": max(1, round(fractions[1] * n)) if len(order) >= 2 else 0}
    count = {"test": 0, "valid": 0}
    label = {}
    for fam in order:
        label[fam] = "train"
        for split in ("test", "valid"):
            if count[split] < target[split] and count[split] + size[fam] <= 1.5 * target[split]:
                label[fam], count[split] = split, count[split] + size[fam]
                break
    for split in ("test", "valid"):    # every family too big: the smallest training one
        if target[split] and not count[split]:
            rest = [f for f in order if label[f] == "train"]
            if len(rest) > 1:
                label[min(rest, key=lambda f: size[f])] = split
    out = [label[fam] for fam in families]
    seen = {s: {f for f, x in zip(formulas, out) if x == s} for s in ("train", "valid")}
    for i, (f, x) in enumerate(zip(formulas, out)):
        if (x in ("valid", "test") and f in seen["train"]) or (x == "test" and f in seen["valid"]):
            out[i] = "excluded"
    return out


def _atoms(entry):
    from ase import Atoms

    return Atoms(numbers=entry["numbers"], cell=entry["cell"], positions=entry["positions"],
                 pbc=True)


def _span(lo, hi, fmt: str) -> str:
    """'lo-hi', or one value when both are the same in ``fmt``."""
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}-{b}"


def neighbour_stats(atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Per atom: nearest-neighbour distance (Å) and number of neighbours within ``cutoff``."""
    from ase.neighborlist import neighbor_list

    i, d = neighbor_list("id", atoms, cutoff)
    nn = np.full(len(atoms), np.inf)
    np.minimum.at(nn, i, d)
    return nn, np.bincount(i, minlength=len(atoms))


def pair_shortest(atoms, cutoff: float) -> dict[str, float]:
    """The shortest distance (Å) between the atoms of each element pair closer than ``cutoff``,
    keyed ``"A-B"`` (symbols in alphabetical order)."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, cutoff)
    if not len(d):
        return {}
    symbols = np.array(atoms.get_chemical_symbols())
    names = sorted(set(symbols))
    code = np.searchsorted(names, symbols)
    a, b = np.minimum(code[i], code[j]), np.maximum(code[i], code[j])
    pair = a * len(names) + b
    out = {}
    for p in np.unique(pair):
        out[f"{names[p // len(names)]}-{names[p % len(names)]}"] = float(d[pair == p].min())
    return out


def load_examples(db, targets=TARGETS, limit: int | None = None):
    """(structures, target arrays (n, n_targets, 120), formulas, database facts: temperature,
    teacher) of every ``ok`` entry of a database."""
    from mlff_ins.predict.database import read_database

    grids, entries = read_database(db)
    if not entries:
        raise InputError(f"{db}: no entries with status ok to train on")
    entries = entries[:limit] if limit else entries
    edges = grid_edges_meV()
    e = grids["energy_meV"]
    ys = np.array([[_normalised(rebin(e, entry[t], edges)) for t in targets] for entry in entries])
    options = json.loads(grids.get("spectra_options", "{}"))
    formulas = [_atoms(x).get_chemical_formula(empirical=True) for x in entries]
    facts = {"keys": [str(x.get("key", x["name"])) for x in entries],
             "temperature_K": float(options.get("temperature_K", 10.0)),
             "teacher": grids.get("teacher", ""), "q_invA": grids["q_invA"],
             "energy_2d_meV": grids["energy_2d_meV"],
             "maps": np.array([x["sqe"] for x in entries], dtype=np.float32)}
    structures = [_atoms(x) for x in entries]
    facts["partials"] = [partial_targets(x, a, targets, edges, e)
                         for x, a in zip(entries, structures)]
    return structures, ys, formulas, facts


def _loss(model, batch, target, partials: bool = True):
    """(loss to minimise, MSE of the max-normalised crystal spectra): the loss is that MSE,
    plus, with element-partial targets in the batch (and ``partials``), the MSE of the
    partials on the same scale, so each element's share of the spectrum is learned, not left
    to chance (any split of a total fits it equally)."""
    import torch

    if partials and "partial" in batch:
        pred, parts = model.forward_with_partials(batch)
        known = torch.isfinite(batch["partial"])
        mse = torch.mean((pred - target) ** 2)
        if bool(known.any()):
            return mse + torch.mean((parts[known] - batch["partial"][known]) ** 2), mse
        return mse, mse
    mse = torch.mean((model(batch) - target) ** 2)
    return mse, mse


def partial_targets(entry: dict, atoms, targets, edges, energy) -> tuple[np.ndarray, np.ndarray]:
    """(each atom's element index, element partials (elements, targets, bins)) of a database
    entry, rebinned like the totals and divided by each total's maximum, so they sum to the
    max-normalised total; NaN for a target stored without partials."""
    symbols = atoms.get_chemical_symbols()
    elements = [str(e) for e in entry["elements"]]
    slot = np.array([elements.index(s) for s in symbols], dtype=np.int64)
    out = np.full((len(elements), len(targets), len(edges) - 1), np.nan)
    for k, t in enumerate(targets):
        if f"{t}_partial" not in entry:
            continue
        top = np.max(rebin(energy, entry[t], edges))
        for j in range(len(elements)):
            out[j, k] = rebin(energy, entry[f"{t}_partial"][j], edges) / (top if top > 0 else 1)
    return slot, out


def train_member(model, train, valid, *, epochs: int, batch_size: int, lr: float,
                 weight_decay: float, seed: int, progress=None, device="cpu") -> dict:
    """AdamW with exponential decay (Chen 2021), best validation state kept. The model is
    moved to ``device`` and trained there; it is left there, with the best state loaded."""
    import copy

    import torch

    from mlff_ins.predict.network import collate

    model.to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.96)
    dtype = next(model.parameters()).dtype
    vbatch = [(collate([g for g, _ in valid[k:k + 64]], dtype, device),
               torch.as_tensor(np.array([y for _, y in valid[k:k + 64]]), dtype=dtype,
                               device=device))
              for k in range(0, len(valid), 64)]

    def valid_mse():       # the monitored figure: the crystal spectra alone
        model.eval()
        with torch.no_grad():
            return sum(float(_loss(model, b, t, partials=False)[1]) * len(t)
                       for b, t in vbatch) / max(len(valid), 1)

    # the untrained state competes too: a residual network (hyper "baseline") starts as the
    # mean training spectrum, and training that only makes it worse keeps that
    best = valid_mse()
    best_state, history = copy.deepcopy(model.state_dict()), [{"epoch": 0, "valid_mse": best}]
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            batch = collate([train[i][0] for i in idx], dtype, device)
            target = torch.as_tensor(np.array([train[i][1] for i in idx]), dtype=dtype,
                                     device=device)
            opt.zero_grad()
            loss, mse = _loss(model, batch, target)
            loss.backward()
            opt.step()
            total += mse.item() * len(idx)
        sched.step()
        vloss = valid_mse()
        history.append({"epoch": epoch + 1, "train_mse": total / len(train), "valid_mse": vloss})
        if vloss < best:
            best, best_state = vloss, copy.deepcopy(model.state_dict())
        if progress is not None:
            progress(epoch + 1, total / len(train), vloss)
    model.load_state_dict(best_state)
    return {"best_valid_mse": best, "history": history}


class _FinishedStages:
    """The finished stages of one `predictor train` (S(E) members, autoencoder, latent
    members), kept in ``OUTPUT.partial/`` so that a killed run goes on from them: weights
    ``NAME.pt`` and what the report needs of the stage ``NAME.json``, used only under a
    ``key.json`` of the same database contents and settings. Each stage reseeds torch and numpy
    from the run's seed, so a stage taken from here equals the one an uninterrupted run trains.
    The folder goes once the predictor is written."""

    def __init__(self, final: Path, key: str, log=print):
        self.folder = Path(f"{final}.partial")
        self.key = key
        self.log = log
        record = self.folder / "key.json"
        try:
            saved = json.loads(record.read_text()).get("key") if record.exists() else key
        except (OSError, ValueError):
            saved = None
        if saved != key:
            own = self._own()
            if own:
                log(f"note: {self.folder}: stages of a training on another database or with "
                    f"other settings; its {len(own)} file(s) removed and trained again")
            for p in own:
                p.unlink()

    def _own(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir()
                if p.name == "key.json" or p.suffix in (".pt", ".json")]

    def load(self, name: str):
        """(state dict, info) of a finished stage, or None."""
        import torch

        pt, info = self.folder / f"{name}.pt", self.folder / f"{name}.json"
        if not (pt.exists() and info.exists()):
            return None
        try:
            return torch.load(pt, map_location="cpu", weights_only=True), \
                json.loads(info.read_text())
        except (OSError, ValueError, RuntimeError):
            return None

    def save(self, name: str, state: dict, info: dict) -> None:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / "key.json", {"key": self.key})
        with atomic_path(self.folder / f"{name}.pt") as tmp:
            torch.save(state, tmp)
        write_json_atomic(self.folder / f"{name}.json", info)

    def remove(self) -> None:
        for p in self._own():
            p.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def train_predictor(db, out_dir, *, targets=TARGETS, members: int = 3, epochs: int = 60,
                    batch_size: int = 16, lr: float = 5e-3, weight_decay: float = WEIGHT_DECAY,
                    seed: int = 0, hyper: dict | None = None, limit: int | None = None,
                    two_d: bool = True, ae_epochs: int | None = None,
                    progress: bool = True, device="cpu", log=print) -> dict:
    """Train ``members`` networks on database ``db`` (and, with ``two_d``, the S(Q,E)
    autoencoder and ``members`` latent networks) on ``device`` and write the predictor folder
    ``out_dir`` with its report; returns the metadata written to ``predictor.json``. The
    weights are saved as CPU tensors and evaluated on the CPU, whatever ``device``. A run
    stopped part-way keeps its finished networks in ``out_dir.partial/`` and the same call
    goes on from them (:class:`_FinishedStages`)."""
    import torch

    from mlff_ins.predict.network import SpectrumNetwork, default_hyper, graph

    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise InputError(f"--targets {','.join(unknown)}: choose from {', '.join(TARGETS)}")
    if not set(targets) & set(INSTRUMENT_TARGETS):
        raise InputError(f"--targets {','.join(targets)}: add vision or tosca (the DOS is "
                         "predicted beside an instrument's S(E))")
    structures, ys, formulas, facts = load_examples(db, targets, limit)
    hyper = {**default_hyper(len(GRID_EDGES_INVCM) - 1), **(hyper or {}),
             "n_blocks": len(targets)}
    hyper["n_out"] = hyper["n_blocks"] * (len(GRID_EDGES_INVCM) - 1)
    split = composition_split(formulas, [structure_family(k) for k in facts["keys"]])
    graphs = [graph(a, hyper["cutoff_A"]) for a in structures]
    idx = {s: [i for i, x in enumerate(split) if x == s]
           for s in ("train", "valid", "test", "excluded")}
    if len(idx["train"]) < 2 or not idx["valid"]:
        raise InputError(f"{db}: {len(structures)} usable entries are too few to split by "
                         "composition (need several formulas in train and validation)")
    train_idx = idx["train"]
    hyper["num_neighbors"] = float(np.mean([len(graphs[i]["src"]) / len(graphs[i]["z"])
                                            for i in train_idx]))
    baseline = mean_training_spectrum([ys[i] for i in train_idx], len(targets))
    if hyper.get("baseline", True) is not None:
        # learn the residual from the mean training spectrum (SpectrumNetwork);
        # hyper={"baseline": None} trains the plain network
        hyper["baseline"] = baseline.ravel().round(6).tolist()
    data = [({**g, "elem_slot": slot, "partial": part}, y.reshape(len(targets), -1))
            for g, y, (slot, part) in zip(graphs, ys, facts["partials"])]
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise InputError(f"-o {final}: exists and is not a folder")
    # everything is written into a new folder that replaces out_dir at the end: a failure or a
    # kill leaves the old predictor whole (new weights beside an old predictor.json could load
    # and predict garbage when only a setting such as the cutoff changed)
    # a killed run goes on from its finished stages (another database or setting: afresh)
    stages = _FinishedStages(final, hashlib.sha256(json.dumps(
        {"database_sha256": file_sha256(db), "targets": list(targets), "hyper": hyper,
         "members": members, "epochs": epochs, "ae_epochs": ae_epochs, "two_d": two_d,
         "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
         "limit": limit}, sort_keys=True, default=str).encode()).hexdigest(), log=log)
    with atomic_dir(final) as out_dir:
        member_files, fits = [], []
        t0 = time.perf_counter()
        for k in range(members):
            name = f"member_{k}"
            done = stages.load(name)
            if done is not None:
                state, fit = done
                log(f"member {k + 1}/{members}: trained by an earlier run ({stages.folder})")
            else:
                torch.manual_seed(seed + k)
                model = SpectrumNetwork(hyper)
                bar, tick = _epoch_bar(f"member {k + 1}/{members}", epochs, progress)
                fit = train_member(model, [data[i] for i in train_idx],
                                   [data[i] for i in idx["valid"]], epochs=epochs,
                                   batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   seed=seed + k, progress=tick, device=device)
                bar.close()
                state = _cpu_state(model)
                stages.save(name, state, fit)
            with atomic_path(out_dir / f"{name}.pt") as tmp:
                torch.save(state, tmp)
            member_files.append(f"{name}.pt")
            fits.append(fit)
        two_d_meta = None
        if two_d:
            two_d_meta = _train_two_d(out_dir, graphs, facts, idx, hyper, members=members,
                                      epochs=epochs, ae_epochs=ae_epochs or epochs,
                                      batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                      seed=seed, progress=progress, device=device,
                                      stages=stages, log=log)
        stats = _training_stats(structures, train_idx, hyper["cutoff_A"])
        meta = {"code_version": __version__, "kind": "mlff-ins predictor", "targets": list(targets),
                "grid_edges_invcm": GRID_EDGES_INVCM.tolist(), "hyper": hyper,
                "database": str(db), "database_temperature_K": facts["temperature_K"],
                "teacher": facts["teacher"],
                "split_sizes": {s: len(v) for s, v in idx.items()},
                "members": member_files, "training": {"epochs": epochs, "batch_size": batch_size,
                                                      "lr": lr, "weight_decay": weight_decay,
                                                      "seed": seed, "device": str(device),
                                                      "seconds": time.perf_counter() - t0},
                "best_valid_mse": [f["best_valid_mse"] for f in fits],
                # the members' spectra combine bin by bin by their median: on the shipped
                # predictor's validation crystals it beat the mean (docs/benchmarks.md)
                "ensemble_aggregate": ENSEMBLE_AGGREGATE,
                "learning_curves": [[{k: v if isinstance(v, int) else round(float(v), 6)
                                      for k, v in h.items()}
                                     for h in f["history"]] for f in fits], **stats,
                # the baseline a useful predictor must beat, kept for scoring it elsewhere
                # (python -m mlff_ins.bench predictor: against DFT)
                "mean_training_spectrum": baseline.round(6).tolist(),
                "two_d": two_d_meta}
        write_json_atomic(out_dir / "predictor.json", meta)
        predictor = Predictor(out_dir)
        test = [(structures[i], ys[i], formulas[i]) for i in idx["test"]]
        meta["test"] = evaluate(predictor, test)
        if meta["test"]["n"]:
            base = mean_spectrum_baseline([ys[i] for i in train_idx],
                                          [ys[i] for i in idx["test"]], targets)
            meta["test"]["baseline_median_mse"] = base
            meta["test"]["baseline_per_target_w1_meV"] = mean_spectrum_w1(
                [ys[i] for i in train_idx], [ys[i] for i in idx["test"]], targets)
            if meta["test"]["median_mse"] > BASELINE_FRACTION * base:
                meta["status"] = baseline_warning(meta["test"]["n"], meta["test"]["median_mse"],
                                                  base, len(train_idx))
            meta["test"].update(evaluate_partials(
                predictor, [(structures[i], facts["partials"][i]) for i in idx["test"]]))
        if two_d:
            meta["two_d"]["test"] = evaluate_two_d(predictor, [structures[i] for i in idx["test"]],
                                                   facts["maps"][idx["test"]])
        write_json_atomic(out_dir / "predictor.json", meta)
        write_report(out_dir, meta, test, predictor, fits)
    stages.remove()
    return meta


def _epoch_bar(desc: str, epochs: int, progress: bool):
    """(tqdm bar, train_member progress callback showing the training and validation MSE)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not progress, leave=False)

    def tick(epoch, train_mse, valid_mse):
        bar.set_postfix_str(f"train {train_mse:.4f} valid {valid_mse:.4f}", refresh=False)
        bar.update(1)

    return bar, tick


#: a latent member whose best validation MSE is not below this fraction of its untrained
#: start's has collapsed onto the mean code; it is trained again from another seed, at most
#: LATENT_ATTEMPTS tries in all (the last try is kept whatever it scores)
LATENT_COLLAPSE = 0.95
LATENT_ATTEMPTS = 3


def _cpu_state(model) -> dict:
    """A model's state dict as CPU tensors (what a predictor folder holds)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _train_two_d(out_dir, graphs, facts, idx, hyper, *, members, epochs, ae_epochs, batch_size,
                 lr, weight_decay, seed, progress, device="cpu", stages=None,
                 log=print) -> dict:
    """The autoencoder on the training maps, then ``members`` latent networks on their codes
    (each taken from ``stages`` when an earlier run finished it)."""
    import torch
    from tqdm.auto import tqdm

    from mlff_ins.predict.autoencoder import MapAutoencoder, default_ae_hyper, prepare
    from mlff_ins.predict.network import SpectrumNetwork

    maps = prepare(facts["maps"])
    ae_hyper = default_ae_hyper(maps.shape[1:])
    torch.manual_seed(seed)
    ae = MapAutoencoder(ae_hyper)
    done = stages.load("autoencoder") if stages is not None else None
    if done is not None:
        state, ae_fit = done
        ae.load_state_dict(state)
        log(f"autoencoder: trained by an earlier run ({stages.folder})")
    else:
        bar = tqdm(total=ae_epochs, desc="autoencoder", unit="epoch", disable=not progress,
                   leave=False)
        from mlff_ins.predict.autoencoder import train_autoencoder

        ae_fit = train_autoencoder(ae, maps[idx["train"]], maps[idx["valid"]], epochs=ae_epochs,
                                   batch_size=batch_size, seed=seed,
                                   progress=lambda *_: bar.update(1), device=device)
        bar.close()
        state = _cpu_state(ae)
        if stages is not None:
            stages.save("autoencoder", state, {"best_valid_mse": ae_fit["best_valid_mse"]})
    with atomic_path(out_dir / "autoencoder.pt") as tmp:
        torch.save(state, tmp)
    ae.cpu().eval()
    with torch.no_grad():
        codes = ae.encode(torch.as_tensor(maps)).numpy()
        recon = ae(torch.as_tensor(maps[idx["test"]])).numpy() if idx["test"] else None
    latent_hyper = {**hyper, "head": "latent", "n_out": ae_hyper["latent_dim"], "n_blocks": 1,
                    "basis": None, "baseline": None, "rezero": True}
    # the networks learn standardised codes (each component: training mean 0, std 1)
    mu = codes[idx["train"]].mean(axis=0)
    sd = codes[idx["train"]].std(axis=0) + 1e-6
    data = [(g, (c - mu) / sd) for g, c in zip(graphs, codes)]
    files, fits, restarts = [], [], []
    for k in range(members):
        name = f"latent_{k}"
        done = stages.load(name) if stages is not None else None
        if done is not None:
            state, info = done
            log(f"S(Q,E) member {k + 1}/{members}: trained by an earlier run ({stages.folder})")
            restarts.append(info["restarts"])
            with atomic_path(out_dir / f"{name}.pt") as tmp:
                torch.save(state, tmp)
            files.append(f"{name}.pt")
            fits.append(info["best_valid_mse"])
            continue
        # a latent network sometimes collapses onto the mean code in its first steps and never
        # leaves it (one of three on the 702-entry database, with the gain): such a
        # member, no better on validation than its untrained start, is trained again from
        # another seed, up to LATENT_ATTEMPTS times (validation alone decides)
        for attempt in range(LATENT_ATTEMPTS):
            member_seed = seed + 100 + k + 1000 * attempt
            torch.manual_seed(member_seed)
            model = SpectrumNetwork(latent_hyper)
            label = f"S(Q,E) member {k + 1}/{members}" + (f", try {attempt + 1}" if attempt else "")
            bar, tick = _epoch_bar(label, epochs, progress)
            fit = train_member(model, [data[i] for i in idx["train"]],
                               [data[i] for i in idx["valid"]], epochs=epochs,
                               batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                               seed=member_seed, progress=tick, device=device)
            bar.close()
            if fit["best_valid_mse"] < LATENT_COLLAPSE * fit["history"][0]["valid_mse"]:
                break
        restarts.append(attempt)
        state = _cpu_state(model)
        if stages is not None:
            stages.save(name, state, {"best_valid_mse": fit["best_valid_mse"],
                                      "restarts": attempt})
        with atomic_path(out_dir / f"{name}.pt") as tmp:
            torch.save(state, tmp)
        files.append(f"{name}.pt")
        fits.append(fit["best_valid_mse"])
    return {"autoencoder": "autoencoder.pt", "autoencoder_hyper": ae_hyper,
            "latent_hyper": latent_hyper, "members": files,
            "code_mean": mu.tolist(), "code_std": sd.tolist(),
            "q_invA": np.asarray(facts["q_invA"]).tolist(),
            "energy_meV": np.asarray(facts["energy_2d_meV"]).tolist(),
            "transform": "max-normalised, brightened g(x) = 1 - (1 - x)^3",
            "autoencoder_best_valid_mse": ae_fit["best_valid_mse"],
            "latent_best_valid_mse": fits,
            # per member: how many collapsed tries were discarded before it
            "latent_restarts": restarts,
            "reconstruction_test_mse": (float(np.mean((recon - maps[idx["test"]]) ** 2))
                                        if recon is not None else None)}


def evaluate_two_d(predictor, structures, raw_maps) -> dict:
    """End-to-end MSE (brightened, max-normalised maps, as the autoencoder sees them) of the
    predicted maps against the teacher's, with the autoencoder's own reconstruction beside it.
    The decoded mean is max-normalised first, as `predict` returns it (a decoded map's maximum
    is not 1: 0.28 for NaCl, Si and MgO with the shipped weights)."""
    from mlff_ins.predict.autoencoder import brighten, prepare

    if not structures:
        return {"n": 0}
    targets = prepare(raw_maps)
    mses = []
    for atoms, target in zip(structures, targets):
        mean, _ = predictor.predict_map_arrays(atoms)
        mean = mean / max(float(np.max(mean)), 1e-300)
        mses.append(float(np.mean((brighten(mean) - target) ** 2)))
    return {"n": len(mses), "mse": mses, "median_mse": float(np.median(mses))}


def _training_stats(structures, train_idx, cutoff) -> dict:
    """Elements of the training structures and, overall and per element, the range of
    nearest-neighbour distances (atoms with a neighbour within the cutoff) and of neighbour
    counts within the cutoff; ``isolated`` counts atoms with none."""
    rows, pairs = {}, {}
    for i in train_idx:
        for pair, d in pair_shortest(structures[i], cutoff).items():
            pairs[pair] = min(d, pairs.get(pair, np.inf))
        nn, coord = neighbour_stats(structures[i], cutoff)
        for el, d, c in zip(structures[i].get_chemical_symbols(), nn, coord):
            rows.setdefault(el, []).append((d, c))
    per_element = {}
    for el, r in sorted(rows.items()):
        d, c = np.array([x for x, _ in r]), np.array([y for _, y in r])
        fin = d[np.isfinite(d)]
        per_element[el] = {"nearest_neighbour_A": ([float(fin.min()), float(fin.max())]
                                                   if len(fin) else None),
                           "neighbours_within_cutoff": [int(c.min()), int(c.max())],
                           "isolated": int(np.sum(~np.isfinite(d)))}
    ranges = [v["nearest_neighbour_A"] for v in per_element.values() if v["nearest_neighbour_A"]]
    counts = [v["neighbours_within_cutoff"] for v in per_element.values()]
    return {"elements": sorted(rows),
            "nearest_neighbour_A": [min(r[0] for r in ranges), max(r[1] for r in ranges)],
            "neighbours_within_cutoff": [min(r[0] for r in counts), max(r[1] for r in counts)],
            "per_element": per_element, "pair_shortest_A": dict(sorted(pairs.items()))}


#: a predictor whose test median MSE is above this fraction of the mean-spectrum baseline's is
#: flagged as not telling structures apart: a useful one at least halves the error of knowing
#: nothing about the structure
BASELINE_FRACTION = 0.5


_BASELINE_WARNING_START = "this predictor does not yet halve the error"


def baseline_warning(n_test: int, median_mse: float, baseline_mse: float, n_train: int) -> str:
    """The ``status`` of a predictor that does not halve the mean-spectrum baseline's error."""
    return (f"{_BASELINE_WARNING_START} of one spectrum for all (the average "
            f"training spectrum): on its {n_test} test crystals, of compositions and AFLOW "
            f"prototypes it never saw, its median MSE is {median_mse:.3g} against "
            f"{baseline_mse:.3g} for that "
            f"average (trained on {n_train} crystals); take its spectra as a rough guide and "
            f"the phonon or MD route for anything quantitative")


def current_status(meta: dict) -> str | None:
    """The warning a predictor carries. The one training writes (``baseline_warning``) is worded
    again by this version of the code from the figures stored beside it, so that a folder trained
    by an older version does not repeat a claim the code no longer makes; a status written by
    hand is kept as it is."""
    status = meta.get("status")
    test, sizes = meta.get("test") or {}, meta.get("split_sizes") or {}
    if (status and status.startswith(_BASELINE_WARNING_START) and test.get("n")
            and test.get("baseline_median_mse") and sizes.get("train")):
        return baseline_warning(test["n"], test["median_mse"], test["baseline_median_mse"],
                                sizes["train"])
    return status


def mean_training_spectrum(train_targets, n_blocks: int) -> np.ndarray:
    """One spectrum for all: the mean of the (max-normalised) training targets, max-normalised
    again per target block; (n_blocks, bins)."""
    mean = np.mean([np.reshape(y, (n_blocks, -1)) for y in train_targets], axis=0)
    peak = mean.max(axis=1, keepdims=True)
    return mean / np.where(peak > 0, peak, 1.0)


def scored_blocks(targets) -> list[int]:
    """The target blocks the headline MSE is taken over: the instrument S(E) (a DOS learned
    beside them is reported apart), or every block of a predictor without S(E)."""
    blocks = [k for k, t in enumerate(targets) if t in INSTRUMENT_TARGETS]
    return blocks or list(range(len(targets)))


def mean_spectrum_baseline(train_targets, test_targets, targets) -> float:
    """Median test MSE of one spectrum for all (:func:`mean_training_spectrum`), as
    :func:`evaluate` scores a prediction (over :func:`scored_blocks`)."""
    mean = mean_training_spectrum(train_targets, len(targets))
    k = scored_blocks(targets)
    return float(np.median([np.mean((mean[k] - np.reshape(y, mean.shape)[k]) ** 2)
                            for y in test_targets]))


def mean_spectrum_w1(train_targets, test_targets, targets) -> dict:
    """Median W1 (meV) per target of one spectrum for all against the test targets, as
    :func:`evaluate` scores a prediction."""
    from mlff_ins.compare.metrics import wasserstein_meV

    mean = mean_training_spectrum(train_targets, len(targets))
    edges = grid_edges_meV()
    centres = 0.5 * (edges[1:] + edges[:-1])
    w1 = np.array([[wasserstein_meV(centres, m, t) for m, t in zip(mean, np.reshape(y, mean.shape))]
                   for y in test_targets])
    return {t: float(np.nanmedian(w1[:, k])) for k, t in enumerate(targets)}


def evaluate(predictor, examples) -> dict:
    """MSE of the max-normalised ensemble prediction against each test target: ``mse`` per crystal
    over the S(E) targets (:func:`scored_blocks`), their median and quartiles, and
    ``per_target`` medians; beside them ``per_target_w1_meV``, the median Wasserstein-1
    distance of each target (``mlff-ins compare``'s W1: how far in energy the intensity sits
    from where it should, which a prediction cannot lower by hedging towards an average
    spectrum the way it can lower an MSE)."""
    from mlff_ins.compare.metrics import wasserstein_meV

    if not examples:
        return {"n": 0}
    targets = predictor.meta["targets"]
    edges = grid_edges_meV(predictor.meta["grid_edges_invcm"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    per_block, w1 = [], []
    for atoms, y, _ in examples:
        mean, _, _ = predictor.predict_arrays(atoms)
        # each target max-normalised, as predict() returns it and the baseline is scored
        mean = mean / np.maximum(mean.max(axis=-1, keepdims=True), 1e-300)
        y = y.reshape(mean.shape)
        per_block.append(np.mean((mean - y) ** 2, axis=-1))
        w1.append([wasserstein_meV(centres, m, t) for m, t in zip(mean, y)])
    per_block, w1 = np.array(per_block), np.array(w1)
    mses = per_block[:, scored_blocks(targets)].mean(axis=1).tolist()
    q = np.percentile(mses, [25, 50, 75])
    return {"n": len(mses), "mse": mses, "median_mse": float(q[1]),
            "quartiles_mse": [float(q[0]), float(q[2])], "mean_mse": float(np.mean(mses)),
            "per_target": {t: float(np.median(per_block[:, k])) for k, t in enumerate(targets)},
            "per_target_w1_meV": {t: float(np.nanmedian(w1[:, k]))
                                  for k, t in enumerate(targets)}}


def evaluate_partials(predictor, examples) -> dict:
    """Median MSE of the predicted element partials (on the max-normalised total's scale)
    against the database's, over the test crystals of two or more elements, per target with
    partials; ``partials_n`` crystals."""
    mses = []
    for atoms, (slot, target) in examples:
        if target.shape[0] < 2:
            continue
        _, _, parts = predictor.predict_arrays(atoms)
        symbols = atoms.get_chemical_symbols()
        order = [symbols[int(np.flatnonzero(slot == j)[0])] for j in range(target.shape[0])]
        pred = np.array([parts[el] for el in order])
        known = np.isfinite(target)
        mses.append(float(np.mean((pred[known] - target[known]) ** 2)))
    return {"partials_n": len(mses),
            "partials_median_mse": float(np.median(mses)) if mses else None}


class Predictor:
    """A trained predictor folder: ``predict_arrays`` (ensemble mean, std, per-element partials on
    the target grid) and ``predict`` (Spectrum1D objects, warnings for unfamiliar inputs)."""

    def __init__(self, directory, device: str = "cpu"):
        self.directory = Path(directory)
        meta_path = self.directory / "predictor.json"
        if not meta_path.is_file():
            raise InputError(f"{self.directory}: not a predictor folder (no predictor.json)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("status"):
            self.meta["status"] = current_status(self.meta)
        self.device = device
        self._templates = {}        # one built network per set of hyper-parameters
        self.models = [self._network(self.meta["hyper"], name) for name in self.meta["members"]]
        edges = grid_edges_meV(self.meta["grid_edges_invcm"])
        self.energy_meV = 0.5 * (edges[1:] + edges[:-1])
        self._two_d = None          # the S(Q,E) part, built on first use (--2d)

    def _network(self, hyper: dict, name: str):
        """One member: the network of ``hyper`` with the weights of file ``name``. Built without
        e3nn's einsum optimisation, which made up half of a predictor's load time (8.5 against
        4.8 s for the shipped one, 2 cores; predictions equal to 1.4e-6 of the maximum, 0.16
        against 0.20 s for 216 atoms). Members of one set of hyper-parameters are copies of
        the first one built, their own weights loaded into each: building an e3nn network
        (its activations' normalisation constants are sampled on a million points) took 0.7 s
        a member."""
        import copy

        import e3nn

        from mlff_ins.predict.network import SpectrumNetwork

        key = json.dumps(hyper, sort_keys=True)
        if key not in self._templates:
            before = e3nn.get_optimization_defaults()
            e3nn.set_optimization_defaults(optimize_einsums=False)
            try:
                self._templates[key] = SpectrumNetwork(hyper).to(self.device)
            finally:
                e3nn.set_optimization_defaults(**before)
        model = copy.deepcopy(self._templates[key])
        model.load_state_dict(self._state(name))
        return model.eval()

    @property
    def has_two_d(self) -> bool:
        return bool(self.meta.get("two_d"))

    def load_two_d(self):
        """(autoencoder, latent members) of the S(Q,E) part, loaded on first use."""
        if self._two_d is None:
            from mlff_ins.predict.autoencoder import MapAutoencoder

            two = self.meta["two_d"]
            auto = MapAutoencoder(two["autoencoder_hyper"]).to(self.device)
            auto.load_state_dict(self._state(two["autoencoder"]))
            self._two_d = (auto.eval(),
                           [self._network(two["latent_hyper"], name) for name in two["members"]])
        return self._two_d

    def _state(self, name: str):
        """A state dict of a file inside the predictor folder, loaded as plain tensors."""
        import torch

        path = (self.directory / name).resolve()
        if self.directory.resolve() not in path.parents:
            raise InputError(f"{self.directory / 'predictor.json'}: member {name} lies outside "
                             "the predictor folder")
        return torch.load(path, map_location=self.device, weights_only=True)

    def predict_map_arrays(self, atoms):
        """(mean, std) of the members' decoded S(Q,E) maps (brightening undone; each member's
        decoded map is on the max-normalised scale it was trained on, but its maximum is not
        renormalised to 1 here: `predict` does that), shape (nQ, nE); std None for one member."""
        import torch

        from mlff_ins.predict.autoencoder import darken
        from mlff_ins.predict.network import collate, graph

        if not self.has_two_d:
            raise InputError(f"--2d: the predictor {self.directory} has no S(Q,E) part; train "
                             "one with `mlff-ins predictor train` (2D is on by default)")
        two = self.meta["two_d"]
        autoencoder, latent_models = self.load_two_d()
        h = two["latent_hyper"]
        data = collate([graph(atoms, h["cutoff_A"])], torch.float32, self.device)
        mu = torch.as_tensor(two["code_mean"], dtype=torch.float32, device=self.device)
        sd = torch.as_tensor(two["code_std"], dtype=torch.float32, device=self.device)
        with torch.no_grad():
            maps = [darken(autoencoder.decode(m(data) * sd + mu).cpu().numpy()[0])
                    for m in latent_models]
        stack = np.array(maps)
        return stack.mean(axis=0), stack.std(axis=0) if len(stack) > 1 else None

    def predict_arrays(self, atoms):
        """(prediction, std, partials) with shapes (targets, bins), (targets, bins) and
        {element: (targets, bins)}: the members' max-normalised totals combined by
        :attr:`aggregate` (median or mean) with their standard deviation; partials on the same
        scale, summing to the prediction."""
        import torch

        from mlff_ins.predict.network import collate, graph

        h = self.meta["hyper"]
        nb = int(h["n_blocks"])
        data = collate([graph(atoms, h["cutoff_A"])], torch.float32, self.device)
        symbols = np.array(atoms.get_chemical_symbols())
        totals, parts = [], []
        with torch.no_grad():
            for model in self.models:
                per_atom = model.atom_outputs(data).reshape(len(atoms), nb, -1).cpu().numpy()
                total = per_atom.mean(axis=0)
                scale = total.max(axis=1, keepdims=True)
                scale[scale <= 0] = 1.0
                totals.append(total / scale)
                parts.append({str(el): per_atom[symbols == el].sum(axis=0) / len(atoms) / scale
                              for el in dict.fromkeys(symbols)})
        stack = np.array(totals)
        mean = stack.mean(axis=0)
        centre = np.median(stack, axis=0) if self.aggregate == "median" else mean
        # partials: the members' mean split of each bin, on the centre's scale (they sum to it)
        ratio = np.divide(centre, mean, out=np.zeros_like(mean), where=mean > 0)
        partials = {el: np.mean([p[el] for p in parts], axis=0) * ratio for el in parts[0]}
        return centre, stack.std(axis=0) if len(stack) > 1 else None, partials

    @property
    def aggregate(self) -> str:
        """How the members' 1D spectra make the prediction: ``median`` (bin by bin; a member far
        from the others moves it little) or ``mean`` (predictors trained before the choice
        was stored in predictor.json). The S(Q,E) maps of the latent members are averaged: on
        the shipped predictor their bin-by-bin median scored the same (median end-to-end MSE
        0.01384 for both on the 17 validation crystals, 0.01272 against 0.01273 on the 11 test
        ones; decoding the members' mean latent code also 0.01384 and 0.01272)."""
        how = self.meta.get("ensemble_aggregate", "mean")
        if how not in ("mean", "median"):
            raise InputError(f"{self.directory}/predictor.json: ensemble_aggregate {how!r} "
                             "is not mean or median")
        return how

    def familiarity(self, atoms) -> list[str]:
        """Warnings for elements the predictor never saw and neighbour distances or counts
        outside those of its training structures."""
        out = []
        unseen = sorted(set(atoms.get_chemical_symbols()) - set(self.meta["elements"]))
        if unseen:
            out.append(f"element(s) {', '.join(unseen)} were not in the predictor's training "
                       "data: its spectrum is extrapolated and may be wrong")
        cutoff = self.meta["hyper"]["cutoff_A"]
        nn, coord = neighbour_stats(atoms, cutoff)
        symbols = np.array(atoms.get_chemical_symbols())
        per = self.meta.get("per_element")
        if per is None:   # predictors saved before per-element ranges: one range for all atoms
            per = {el: {"nearest_neighbour_A": self.meta["nearest_neighbour_A"],
                        "neighbours_within_cutoff": self.meta["neighbours_within_cutoff"],
                        "isolated": 0} for el in set(symbols)}
        for el in sorted(set(symbols) & set(per)):
            ref = per[el]
            d, c = nn[symbols == el], coord[symbols == el]
            fin = d[np.isfinite(d)]
            if len(fin) < len(d) and not ref.get("isolated"):
                out.append(f"{el}: {len(d) - len(fin)} atom(s) without a neighbour within "
                           f"{cutoff:g} Å, unlike every {el} in training: the network sees "
                           f"them as free atoms")
            lo_hi = ref["nearest_neighbour_A"]
            if len(fin) and lo_hi and (fin.min() < 0.9 * lo_hi[0] or fin.max() > 1.1 * lo_hi[1]):
                out.append(f"{el}: nearest-neighbour distance(s) "
                           f"{_span(fin.min(), fin.max(), '.2f')} Å lie outside those of {el} "
                           f"in training, {_span(lo_hi[0], lo_hi[1], '.2f')} Å")
            clo, chi = ref["neighbours_within_cutoff"]
            if c.min() < clo or c.max() > chi:
                out.append(f"{el}: {_span(c.min(), c.max(), 'd')} neighbours within "
                           f"{cutoff:g} Å, {_span(clo, chi, 'd')} for {el} in training")
        seen = self.meta.get("pair_shortest_A")    # predictors trained before: not checked
        if seen is not None:
            known = set(self.meta["elements"])
            for pair, d in pair_shortest(atoms, cutoff).items():
                if not set(pair.split("-")) <= known:
                    continue                        # an unseen element: said above
                if pair not in seen:
                    out.append(f"{pair}: atoms {d:.2f} Å apart, a pair never within {cutoff:g} "
                               f"Å of each other in training")
                elif d < 0.9 * seen[pair]:
                    out.append(f"{pair}: shortest distance {d:.2f} Å, below the {seen[pair]:.2f}"
                               f" Å of any {pair} pair in training")
        return out

    def predict(self, atoms, instrument: str = "vision", temperature_K: float | None = None,
                source_name: str = "", two_d: bool = False) -> tuple[dict, list[str]]:
        """{name: spectrum} (s_e and element partials; ``vdos`` and its partials when the
        predictor learned the DOS; with ``two_d`` the powder S(Q,E) map ``sqe``) and the
        familiarity warnings."""
        from mlff_ins.ins.modes import _bose  # noqa: PLC2701 - the one Bose factor
        from mlff_ins.neutron.spectrum import Spectrum1D

        targets = self.meta["targets"]
        if instrument not in self.instruments:
            raise InputError(f"--instrument {instrument}: this predictor was trained for "
                             f"{', '.join(self.instruments)}")
        k = targets.index(instrument)
        mean, std, partials = self.predict_arrays(atoms)
        # float64 from here on: the network's float32 times a float64 reciprocal can leave the
        # maximum at 0.99999994; dividing by the float64 maximum leaves it at exactly 1
        y = np.asarray(mean[k], dtype=np.float64)
        s = None if std is None else np.asarray(std[k], dtype=np.float64)
        parts = {el: np.asarray(p[k], dtype=np.float64) for el, p in partials.items()}
        t_db = float(self.meta["database_temperature_K"])
        factor = np.ones_like(y)
        if temperature_K is not None and temperature_K != t_db:
            e = self.energy_meV
            factor = (1 + _bose(e, temperature_K)) / (1 + _bose(e, t_db))
        top = max(float(np.max(y * factor)), 1e-300)
        warnings = self.familiarity(atoms)
        if self.meta.get("status"):       # a predictor that says it is not to be trusted
            warnings.insert(0, self.meta["status"])
        prov = {"predictor": str(self.directory), "predictor_version": self.meta["code_version"],
                "predictor_teacher": self.meta.get("teacher", ""),
                "predictor_database": self.meta.get("database", ""),
                "structure": source_name, "formula": atoms.get_chemical_formula(),
                "n_members": len(self.models), "warnings": warnings,
                "database_temperature_K": t_db,
                "temperature_note": "predicted at the database temperature; other temperatures "
                                    "by the one-phonon Bose factor (n(E,T)+1)/(n(E,T_db)+1)",
                "normalisation": "max-normalised"}
        prov["ensemble"] = f"{self.aggregate} of the {len(self.models)} predictors' spectra"
        if s is not None:
            prov["intensity_std"] = (f"standard deviation of the {len(self.models)} predictors' "
                                     f"spectra")
        common = dict(kind="s_e", x=self.energy_meV, units="max-normalised", source="predictor",
                      instrument=instrument,
                      temperature_K=t_db if temperature_K is None else temperature_K,
                      provenance=prov)
        out = {"s_e": Spectrum1D(intensity=y * factor / top,
                                 intensity_std=None if s is None else s * factor / top,
                                 **common)}
        if len(parts) > 1:
            for el, p in parts.items():
                out[f"s_e_{el}"] = Spectrum1D(intensity=p * factor / top, element=el, **common)
        if "dos" in targets:
            out.update(self._dos(mean, std, partials, targets.index("dos"), prov))
        if two_d:
            out["sqe"] = self._map(atoms, temperature_K, t_db, prov)
        return out, warnings

    @property
    def instruments(self) -> list[str]:
        """The instruments whose S(E) this predictor learned (``predict``'s choices)."""
        return [t for t in self.meta["targets"] if t in INSTRUMENT_TARGETS]

    def _dos(self, mean, std, partials, k, prov) -> dict:
        """The predicted phonon DOS (``vdos``, independent of temperature) normalised as the
        phonon route's, to 3 modes per atom over the predictor's grid (so ``mlff-ins thermo``
        takes it), and its element partials on the same scale (summing to it)."""
        from mlff_ins.neutron.spectrum import Spectrum1D

        e = self.energy_meV
        y = np.asarray(mean[k], dtype=np.float64)
        scale = 3.0 / max(float(np.sum(y) * (e[1] - e[0])), 1e-300)
        common = dict(kind="vdos", x=e, units="1/meV", source="predictor", instrument="direct",
                      provenance={**prov, "normalisation": "3 modes per atom over "
                                  f"{e[0] - (e[1] - e[0]) / 2:.2f}-{e[-1] + (e[1] - e[0]) / 2:.1f}"
                                  " meV", "quantity": "phonon DOS (unweighted), as the "
                                  "database's teacher phonons give it"})
        out = {"vdos": Spectrum1D(intensity=y * scale,
                                  intensity_std=(None if std is None else
                                                 np.asarray(std[k], dtype=np.float64) * scale),
                                  **common)}
        if len(partials) > 1:
            for el, p in partials.items():
                out[f"vdos_{el}"] = Spectrum1D(intensity=np.asarray(p[k], dtype=np.float64)
                                               * scale, element=el, **common)
        return out

    def _map(self, atoms, temperature_K, t_db, prov):
        from mlff_ins.ins.modes import _bose  # noqa: PLC2701 - the one Bose factor
        from mlff_ins.neutron.spectrum import Spectrum2D

        two = self.meta["two_d"]
        mean, std = self.predict_map_arrays(atoms)
        mean = np.asarray(mean, dtype=np.float64)
        std = None if std is None else np.asarray(std, dtype=np.float64)
        e = np.asarray(two["energy_meV"], dtype=np.float64)
        factor = np.ones_like(e)
        if temperature_K is not None and temperature_K != t_db:
            ok = e > 0
            factor[ok] = (1 + _bose(e[ok], temperature_K)) / (1 + _bose(e[ok], t_db))
            # E -> 0: n + 1 -> kT/E, so the ratio tends to T/T_db (1 left the elastic column,
            # which holds the lowest acoustic modes, 20-30x too weak at 300 K from 10 K)
            if t_db > 0:
                factor[e == 0] = temperature_K / t_db
        top = max(float(np.max(mean * factor)), 1e-300)
        return Spectrum2D(kind="sqe", q=two["q_invA"], y=e, intensity=mean * factor / top,
                          intensity_std=None if std is None else std * factor / top,
                          units="max-normalised", source="predictor", instrument="direct",
                          temperature_K=t_db if temperature_K is None else temperature_K,
                          provenance={**prov, "map": "powder S(Q,E), coherent + incoherent, "
                                      "unbroadened, decoded from the predicted latent code",
                                      "ensemble": f"mean of the {len(two['members'])} "
                                                  "latent predictors' decoded maps",
                                      "transform": two["transform"]})


def write_report(out_dir: Path, meta: dict, test, predictor, fits) -> None:
    """report.md and report.png: learning curves, test-MSE distribution with quartiles, one
    example overlay per quartile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = meta["test"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    ax = axes[0, 0]
    for k, f in enumerate(fits):
        ax.semilogy([h["epoch"] for h in f["history"]], [h["valid_mse"] for h in f["history"]],
                    label=f"member {k} validation")
        done = [h for h in f["history"] if "train_mse" in h]     # epoch 0 was not trained
        ax.semilogy([h["epoch"] for h in done], [h["train_mse"] for h in done], ls=":",
                    color=ax.lines[-1].get_color(), label=f"member {k} training")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    lines = ["# Predictor report", "",
             f"Database {meta['database']} (spectra at {meta['database_temperature_K']:g} K), "
             f"targets {', '.join(meta['targets'])} on 120 bins of 10-1200 cm⁻¹, max-normalised.",
             f"Split by structure family (AFLOW prototype and its substitutions) and formula: "
             f"{meta['split_sizes']} (excluded: validation or test entries whose formula is in "
             f"an earlier split; the test shares neither a formula nor a prototype with "
             f"training).",
             f"Elements in training ({len(meta['elements'])}): {' '.join(meta['elements'])}.",
             f"{len(meta['members'])} members, combined by their "
             f"{meta.get('ensemble_aggregate', 'mean')}; best validation MSE "
             f"{', '.join(f'{v:.4f}' for v in meta['best_valid_mse'])}.", ""]
    if t["n"]:
        mses = np.array(t["mse"])
        ax.hist(mses, bins=30, color="0.6")
        for v in (t["quartiles_mse"][0], t["median_mse"], t["quartiles_mse"][1]):
            ax.axvline(v, color="k", ls="--", lw=0.8)
        ax.set_xlabel("test MSE (max-normalised)")
        ax.set_title(f"test: median {t['median_mse']:.4f}, n={t['n']}", fontsize=9)
        lines.append(f"Test set ({t['n']} structures): median MSE {t['median_mse']:.4f}, "
                     f"quartiles {t['quartiles_mse'][0]:.4f} / {t['quartiles_mse'][1]:.4f}, "
                     f"mean {t['mean_mse']:.4f}"
                     + (f"; one spectrum for all (the mean training spectrum): median "
                        f"{t['baseline_median_mse']:.4f}" if "baseline_median_mse" in t else "")
                     + (f"; element partials of the {t['partials_n']} compounds among them: "
                        f"median MSE {t['partials_median_mse']:.4f} (on the total's scale)"
                        if t.get("partials_median_mse") is not None else "")
                     + ".")
        if t.get("per_target_w1_meV"):
            base_w1 = t.get("baseline_per_target_w1_meV") or {}
            lines.append("Median W1 (Wasserstein-1, meV: how far the intensity sits from the "
                         "teacher's in energy), predictor / one spectrum for all: "
                         + ", ".join(f"{k} {v:.1f}"
                                     + (f" / {base_w1[k]:.1f}" if k in base_w1 else "")
                                     for k, v in t["per_target_w1_meV"].items()) + ".")
        if meta.get("status"):
            lines += ["", f"**Warning**: {meta['status']}."]
        order = np.argsort(mses)
        picks = list(dict.fromkeys(order[int(q * (len(order) - 1))]
                                   for q in (0.125, 0.375, 0.625, 0.875)))   # one per quartile
        for ax in list(axes.flat[2 + len(picks):]):
            ax.axis("off")
        for ax, i in zip(list(axes.flat[2:]), picks):
            atoms, y, formula = test[i]
            mean, std, _ = predictor.predict_arrays(atoms)
            e = predictor.energy_meV
            ax.plot(e, y.reshape(mean.shape)[0], color="k", label="teacher (phonons)")
            ax.plot(e, mean[0], color="C1", label="predictor")
            if std is not None:
                ax.fill_between(e, *spread_band(mean[0], std[0]), color="C1", alpha=0.3)
            ax.set_title(f"{formula}: MSE {mses[i]:.4f}", fontsize=9)
            ax.set_xlabel(f"energy (meV), {meta['targets'][0]}")
        axes.flat[2].legend(fontsize=7)
    else:
        lines.append("No test structures (too few formulas).")
    two = meta.get("two_d")
    if two:
        rec, e2e = two.get("reconstruction_test_mse"), (two.get("test") or {}).get("median_mse")
        lines.append("")
        lines.append(f"S(Q,E) ({len(two['q_invA'])} |Q| x {len(two['energy_meV'])} E, "
                     f"{two['transform']}): autoencoder reconstruction test MSE "
                     f"{rec if rec is None else format(rec, '.4f')}, end to end (predicted "
                     f"code, decoded) median test MSE "
                     f"{e2e if e2e is None else format(e2e, '.4f')}; latent dimension "
                     f"{two['autoencoder_hyper']['latent_dim']}.")
    fig.tight_layout()
    with atomic_path(out_dir / "report.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    lines += ["", "![report](report.png)", ""]
    write_text_atomic(out_dir / "report.md", "\n".join(lines))


__all__ = ["Predictor", "TARGETS", "composition_split", "evaluate", "rebin", "train_predictor"]
