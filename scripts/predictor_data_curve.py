"""How the direct predictor's error falls with the number of training crystals (issue 18: how
large a database the goals need). One S(E) member per point, trained as `mlff-ins predictor
train` trains each member (same split, hyper-parameters, epochs, residual on the mean spectrum
of its own training subset), on nested random subsets of the training split; scored like the
shipped predictor's test set (median MSE of max-normalised VISION+TOSCA S(E)) on the validation
crystals (which also pick each member's best epoch: optimistic), on the test crystals and, with
--force-sets, on DFT phonopy force sets (max-normalised VISION S(E) against the DFT's, as
`python -m mlff_ins.bench predictor --force-sets` scores the shipped predictor).

Usage: python scripts/predictor_data_curve.py DB.h5 [--fractions 0.25 0.5 1] [--seeds 0 1]
       [--force-sets ../shared/data/phonopy-examples/*]
--show KEY... records the MSE of named database entries (e.g. bulk:Si) in each row.
--hyper '{"cutoff_A": 6}' overrides network hyper-parameters (network.default_hyper), to put a
variant on the same footing; --train '{"weight_decay": 0.05}' overrides the training settings
(weight_decay, lr, batch_size) that `predictor train` uses, or repeats each elemental crystal
(one element) of the training subset N times in every epoch ({"repeat_elemental": N}).
Appends one JSON line per (fraction, seed, hyper, training settings) to --out (default
runs/predictor_data_curve.jsonl) and skips those already there. --cache FILE.pkl keeps the
examples read from DB in a small pickle, for a sweep on another machine without the database.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mlff_ins.predict import predictor as P
from mlff_ins.predict.network import SpectrumNetwork, collate, default_hyper, graph


def predictions(model, examples) -> np.ndarray:
    """(crystals, targets, bins): the member's max-normalised spectra."""
    out = []
    model.eval()
    with torch.no_grad():
        for g, y in examples:
            per_atom = model.atom_outputs(collate([g], torch.float32))
            total = per_atom.reshape(len(g["z"]), y.shape[0], -1).mean(0).numpy()
            out.append(total / np.maximum(total.max(axis=-1, keepdims=True), 1e-300))
    return np.array(out)


def scores(model, examples, blocks, saved=None, name=""):
    """MSE per crystal over the target ``blocks``; the predictions go to ``saved[name]``."""
    pred = predictions(model, examples)
    if saved is not None:
        saved[name] = pred
    return [float(np.mean((p[blocks] - y[blocks]) ** 2)) for p, (_, y) in zip(pred, examples)]


def dft_examples(directories, temperature_K, targets, cutoff) -> dict:
    """{material: (graph, targets)}: the DFT force set's VISION S(E) on the predictor's grid
    (the other target blocks zero: only VISION is scored)."""
    import warnings

    from mlff_ins.bench.predictor_bench import _atoms, _vision_on_grid
    from mlff_ins.phonons.finite_displacement import phonons_from_force_sets

    grid = P.Predictor(P.shipped_predictor())           # its energy grid
    out = {}
    for d in directories:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ph = phonons_from_force_sets(d, nac=False).members[0]
            y = np.zeros((len(targets), len(P.GRID_EDGES_INVCM) - 1))
            y[targets.index("vision")] = _vision_on_grid(ph, grid, temperature_K)
        out[Path(d).name] = (graph(_atoms(ph.unitcell), cutoff), y)
    return out


def load(db, targets, cache=None):
    """``predictor.load_examples`` of ``db``, or of its pickled copy ``cache`` (written there
    first if missing: the examples without the S(Q,E) maps, a few MB where the database is
    160 MB, for a sweep on another machine). The cache is a pickle: load only your own."""
    import pickle

    if cache is not None and Path(cache).exists():
        with open(cache, "rb") as f:
            return pickle.load(f)
    structures, ys, formulas, facts = P.load_examples(db, targets)
    facts.pop("maps", None)
    if cache is not None:
        from mlff_ins.atomic_io import atomic_path
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            pickle.dump((structures, ys, formulas, facts), f)
    return structures, ys, formulas, facts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("db")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", default="runs/predictor_data_curve.jsonl")
    ap.add_argument("--force-sets", nargs="*", default=[], metavar="DIR")
    ap.add_argument("--hyper", type=json.loads, default={}, metavar="JSON")
    ap.add_argument("--device", default="cpu", help="where the member trains (cpu, cuda)")
    ap.add_argument("--cache", type=Path, metavar="FILE.pkl",
                    help="read the examples from this pickle (made from DB on first use; DB is "
                         "then not needed)")
    ap.add_argument("--train", type=json.loads, default={}, metavar="JSON",
                    help="training settings to override: weight_decay, lr, batch_size, "
                         "repeat_elemental")
    ap.add_argument("--show", nargs="*", default=[], metavar="KEY",
                    help="database keys (e.g. bulk:Si) whose MSE each row also records, "
                         "whatever their split")
    ap.add_argument("--save", type=Path, metavar="DIR",
                    help="also keep each member's predictions (and the targets) as DIR/*.npz, "
                         "to score ensembles of the members afterwards")
    args = ap.parse_args()
    torch.set_num_threads(1)
    targets = P.TARGETS
    structures, ys, formulas, facts = load(args.db, targets, args.cache)
    split = P.composition_split(formulas, [P.structure_family(k) for k in facts["keys"]])
    hyper = {**default_hyper(len(P.GRID_EDGES_INVCM) - 1), **args.hyper, "n_blocks": len(targets)}
    hyper["n_out"] = hyper["n_blocks"] * (len(P.GRID_EDGES_INVCM) - 1)
    graphs = [graph(a, hyper["cutoff_A"]) for a in structures]
    dft = dft_examples(args.force_sets, facts["temperature_K"], targets, hyper["cutoff_A"])
    idx = {s: [i for i, x in enumerate(split) if x == s] for s in ("train", "valid", "test")}
    data = [({**g, "elem_slot": slot, "partial": part}, y.reshape(len(targets), -1))
            for g, y, (slot, part) in zip(graphs, ys, facts["partials"])]
    blocks = P.scored_blocks(targets)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"weight_decay": P.WEIGHT_DECAY, "lr": 5e-3, "batch_size": 16,
                "repeat_elemental": 1}
    unknown = set(args.train) - set(settings)
    if unknown:
        ap.error(f"--train: unknown setting(s) {', '.join(sorted(unknown))}; known: "
                 + ", ".join(settings))
    settings.update(args.train)
    repeat = int(settings.pop("repeat_elemental"))
    if args.epochs != 100:          # part of the variant, as the settings are
        args.train = {**args.train, "epochs": args.epochs}
    # a row is keyed by the whole network it trained and its training settings, so that a
    # change of network.default_hyper cannot make an old row stand for a new network (rows
    # without "network" were trained with the defaults of 2026-12-04: 5 Å, 10 radial basis
    # functions)
    defaults = default_hyper(len(P.GRID_EDGES_INVCM) - 1)
    legacy = {**defaults, "cutoff_A": 5.0, "number_of_basis": 10}

    def variant_key(network: dict, train: dict) -> str:
        return json.dumps({**network, **({"train": train} if train else {})}, sort_keys=True)

    done = {(r["fraction"], r["seed"],
             variant_key(r.get("network", {**legacy, **r.get("hyper", {})}), r.get("train", {})))
            for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    network = {**defaults, **args.hyper}
    variant = variant_key(network, args.train)
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(idx["train"])
        for frac in args.fractions:
            if (frac, seed, variant) in done:
                continue
            train = sorted(order[:max(2, round(frac * len(order)))].tolist())
            h = dict(hyper)
            h["num_neighbors"] = float(np.mean([len(graphs[i]["src"]) / len(graphs[i]["z"])
                                                for i in train]))
            base = P.mean_training_spectrum([ys[i] for i in train], len(targets))
            h["baseline"] = base.ravel().round(6).tolist()
            torch.manual_seed(seed)
            model = SpectrumNetwork(h)
            t0 = time.perf_counter()
            seen = [i for i in train
                    for _ in range(repeat if len(set(structures[i].numbers)) == 1 else 1)]
            P.train_member(model, [data[i] for i in seen], [data[i] for i in idx["valid"]],
                           epochs=args.epochs, seed=seed, device=args.device, **settings)
            model.cpu()                     # scored on the CPU, as a predictor folder is
            row = {"fraction": frac, "seed": seed, "hyper": args.hyper, "network": network,
                   "train": args.train,
                   "n_train": len(train), "device": args.device,
                   "seconds": round(time.perf_counter() - t0, 1)}
            saved = {} if args.save else None
            for part in ("valid", "test"):
                ex = [(graphs[i], data[i][1]) for i in idx[part]]
                row[f"{part}_median_mse"] = float(np.median(scores(model, ex, blocks, saved,
                                                                   part)))
                if saved is not None:
                    saved[f"{part}_target"] = np.array([y for _, y in ex])
                row[f"{part}_baseline_mse"] = P.mean_spectrum_baseline(
                    [ys[i] for i in train], [ys[i] for i in idx[part]], targets)
            # how well the member fits its own training crystals, and the named ones
            row["train_median_mse"] = float(np.median(scores(
                model, [(graphs[i], data[i][1]) for i in train], blocks)))
            keys = list(facts["keys"])
            row["shown_mse"] = {key: scores(model, [(graphs[keys.index(key)],
                                                     data[keys.index(key)][1])], blocks)[0]
                                for key in args.show if key in keys}
            if dft:
                k = [targets.index("vision")]
                row["dft_mse"] = dict(zip(dft, scores(model, list(dft.values()), k, saved,
                                                      "dft")))
                if saved is not None:
                    saved["dft_target"] = np.array([y for _, y in dft.values()])
                row["dft_median_mse"] = float(np.median(list(row["dft_mse"].values())))
                row["dft_baseline_mse"] = float(np.median(
                    [np.mean((base[k] - y[k]) ** 2) for _, y in dft.values()]))
            if saved is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                tag = f"f{frac}_s{seed}_" + "".join(c for c in variant if c.isalnum())[:60]
                np.savez_compressed(args.save / f"{tag}.npz", **saved)
                row["saved"] = str(args.save / f"{tag}.npz")
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
