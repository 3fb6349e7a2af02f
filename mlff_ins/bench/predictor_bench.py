"""Predictor benchmark: speed on CPU, the test-set error, and the error against real DFT.

- Speed: structures per second of ``Predictor.predict`` for cells of about 10, 200 and 5000 atoms
  (diamond Si, or the first element of the predictor's training set with an ASE bulk crystal),
  median of ``--repeats``; beside it, in the same run, the seconds of the phonon route with the
  database's teacher (relax + finite displacements + INS) for the small cell: the ratio is the
  speed-up the predictor buys.
- Test set: median and quartiles of the MSE on max-normalised S(E) stored by ``predictor train``
  (split by structure family and formula, targets from the teacher).
- Real DFT: for each phonopy DFT force set (``--force-sets``; default MgO, NaCl, Al2O3 of
  tests/data/phonopy; the issue asks for the nine of ../shared/data/phonopy-examples), the
  package's own phonon + INS path fed by the DFT forces gives the reference VISION S(E) (at the
  database temperature, on the predictor's grid, max-normalised); the predictor on the DFT
  unit cell and the teacher's phonon route at the DFT geometry are compared with it (MSE).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from mlff_ins.bench.teachers_bench import DEFAULT_SETS, _atoms


def _crystal(predictor, n_atoms: int):
    from ase.build import bulk

    elements = predictor.meta["elements"]
    el = "Si" if "Si" in elements else elements[0]
    try:
        unit = bulk(el, cubic=True)
    except (ValueError, KeyError, RuntimeError):
        unit = bulk(el)
    reps = max(1, round((n_atoms / len(unit)) ** (1 / 3)))
    atoms = unit.repeat((reps, reps, reps))
    atoms.rattle(0.02, seed=0)
    return atoms


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _vision_on_grid(ph, predictor, temperature_K: float, key: str = "vision") -> np.ndarray:
    """The VISION S(E) (or, ``key="dos"``, the phonon DOS) of phonons ``ph`` through the
    database's INS path, on the predictor's grid, max-normalised."""
    from mlff_ins.predict.database import SpectraOptions, entry_spectra
    from mlff_ins.predict.predictor import grid_edges_meV, rebin

    opts = SpectraOptions(temperature_K=temperature_K, q_max=1.0, q_step=0.5,
                          e_max_2d_meV=3.0, e_step_2d_meV=1.5, n_directions=1)
    arrays = entry_spectra(ph, opts)
    y = rebin(opts.energy(), arrays[key], grid_edges_meV(predictor.meta["grid_edges_invcm"]))
    return y / y.max()


def real_dft(predictor, directories, teacher: str | None) -> list[dict]:
    from mlff_ins.phonons.finite_displacement import phonons_from_force_sets, phonons_from_model
    from mlff_ins.predict.database import _forces_interface, load_teacher

    calc = None
    if teacher:
        try:
            calc, _ = load_teacher(teacher)
        except Exception as exc:  # noqa: BLE001 - the teacher is optional here
            print(f"teacher {teacher}: skipped ({exc})")
    from mlff_ins.compare.metrics import wasserstein_meV
    from mlff_ins.predict.predictor import grid_edges_meV

    t_db = float(predictor.meta["database_temperature_K"])
    k = predictor.meta["targets"].index("vision")
    edges = grid_edges_meV(predictor.meta["grid_edges_invcm"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    rows = []
    for d in directories:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dft = phonons_from_force_sets(d, nac=False).members[0]
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                print(f"{d}: skipped ({' '.join(str(exc).split())[:100]})")
                continue
            ref = _vision_on_grid(dft, predictor, t_db)
            unit = _atoms(dft.unitcell)
            mean, _, _ = predictor.predict_arrays(unit)
            y = mean[k] / max(float(mean[k].max()), 1e-300)   # max-normalised, as predict()
            row = {"material": Path(d).name,
                   "predictor_mse": float(np.mean((y - ref) ** 2)),
                   "predictor_w1_meV": wasserstein_meV(centres, y, ref),
                   "warnings": predictor.familiarity(unit)}
            if "dos" in predictor.meta["targets"]:              # the DOS learned beside it
                kd = predictor.meta["targets"].index("dos")
                ref_dos = _vision_on_grid(dft, predictor, t_db, "dos")
                row["predictor_dos_mse"] = float(np.mean(
                    (mean[kd] / max(float(mean[kd].max()), 1e-300) - ref_dos) ** 2))
            if "mean_training_spectrum" in predictor.meta:      # one spectrum for all
                base = np.asarray(predictor.meta["mean_training_spectrum"])[k]
                row["mean_spectrum_mse"] = float(np.mean((base - ref) ** 2))
                row["mean_spectrum_w1_meV"] = wasserstein_meV(centres, base, ref)
            if calc is not None:
                model = phonons_from_model(unit, _forces_interface(calc),
                                           np.array(dft.supercell_matrix).reshape(-1).tolist(),
                                           primitive=dft.primitive_matrix).members[0]
                taught = _vision_on_grid(model, predictor, t_db)
                row["teacher_mse"] = float(np.mean((taught - ref) ** 2))
                row["teacher_w1_meV"] = wasserstein_meV(centres, taught, ref)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    from mlff_ins.predict.predictor import Predictor, shipped_predictor

    p = argparse.ArgumentParser(prog="python -m mlff_ins.bench predictor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictor", type=Path, help="predictor folder (default: the shipped one)")
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 200, 5000], metavar="N")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--force-sets", nargs="*", type=Path, default=DEFAULT_SETS, metavar="DIR")
    p.add_argument("--teacher", default="database",
                   help="teacher for the phonon route ('database': the one that built the "
                        "predictor's database; 'none' to skip)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    predictor = Predictor(args.predictor or shipped_predictor())
    meta = predictor.meta
    teacher = None if args.teacher == "none" else args.teacher
    if teacher == "database":
        teacher = meta.get("teacher")
    out = {"predictor": str(predictor.directory), "speed": [], "test": meta.get("test", {})}
    print(f"predictor {predictor.directory}: {len(predictor.models)} members, "
          f"split {meta['split_sizes']}\n")
    print("| atoms | seconds per structure | structures per second |")
    print("|---|---|---|")
    small = None
    for n in args.sizes:
        atoms = _crystal(predictor, n)
        small = small or atoms
        predictor.predict_arrays(atoms)                       # warm-up
        s = _timed(lambda a=atoms: predictor.predict(a, "vision"), args.repeats)
        out["speed"].append({"atoms": len(atoms), "seconds": s})
        print(f"| {len(atoms)} | {s:.3f} | {1 / s:.2f} |", flush=True)
    if teacher and small is not None:
        from mlff_ins.phonons.finite_displacement import phonons_from_model, relax
        from mlff_ins.predict.database import _forces_interface, entry_spectra, load_teacher
        from mlff_ins.predict.database import SpectraOptions, supercell_for

        try:
            calc, desc = load_teacher(teacher)
            unit = small.copy()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                relaxed = relax(unit, calc, fmax=5e-3, steps=300)
                ph = phonons_from_model(relaxed, _forces_interface(calc),
                                        supercell_for(relaxed, 9.0, 256), primitive="P")
                entry_spectra(ph.members[0], SpectraOptions())
            route = time.perf_counter() - t0
            ratio = route / out["speed"][0]["seconds"]
            out["phonon_route"] = {"teacher": desc, "atoms": len(unit), "seconds": route,
                                   "ratio": ratio}
            print(f"\nphonon route with {desc} on the {len(unit)}-atom cell: {route:.1f} s, "
                  f"{ratio:.0f}x the predictor")
        except Exception as exc:  # noqa: BLE001 - the peer is optional
            print(f"\nphonon route with {teacher}: skipped ({exc})")
    t = meta.get("test", {})
    if t.get("n"):
        print(f"\ntest set ({t['n']} structures, family and formula split): median MSE "
              f"{t['median_mse']:.4f}, quartiles {t['quartiles_mse'][0]:.4f} / "
              f"{t['quartiles_mse'][1]:.4f} (goal: median <= 0.02)"
              + (f"; the mean training spectrum for all: {t['baseline_median_mse']:.4f}"
                 if "baseline_median_mse" in t else ""))
        if t.get("per_target"):
            print("  per target: " + ", ".join(f"{k} {v:.4f}" for k, v in t["per_target"].items()))
        if t.get("per_target_w1_meV"):
            base_w1 = t.get("baseline_per_target_w1_meV") or {}
            print("  median W1 (meV), predictor / one spectrum for all: " + ", ".join(
                f"{k} {v:.1f}" + (f" / {base_w1[k]:.1f}" if k in base_w1 else "")
                for k, v in t["per_target_w1_meV"].items()))
    if args.force_sets:
        rows = real_dft(predictor, args.force_sets, teacher)
        out["real_dft"] = rows
        print("\n| DFT force set | predictor MSE | teacher MSE | mean training spectrum MSE "
              "| W1 (meV) predictor / teacher / mean | warnings |")
        print("|---|---|---|---|---|---|")
        nan = float("nan")
        for r in rows:
            print(f"| {r['material']} | {r['predictor_mse']:.4f} | "
                  f"{r.get('teacher_mse', nan):.4f} | {r.get('mean_spectrum_mse', nan):.4f} | "
                  f"{r['predictor_w1_meV']:.1f} / {r.get('teacher_w1_meV', nan):.1f} / "
                  f"{r.get('mean_spectrum_w1_meV', nan):.1f} | "
                  f"{'; '.join(r['warnings'])[:60]} |")

        def median(key, fmt=".4f"):
            vals = [r[key] for r in rows if key in r]
            return f"{np.median(vals):{fmt}}" if vals else "—"

        print(f"| **median** | {median('predictor_mse')} | {median('teacher_mse')} | "
              f"{median('mean_spectrum_mse')} | {median('predictor_w1_meV', '.1f')} / "
              f"{median('teacher_w1_meV', '.1f')} / {median('mean_spectrum_w1_meV', '.1f')} "
              f"| (goal: predictor median MSE <= 0.05) |")
        if any("predictor_dos_mse" in r for r in rows):
            print("\npredicted phonon DOS against the DFT's (max-normalised): "
                  + ", ".join(f"{r['material']} {r['predictor_dos_mse']:.4f}" for r in rows
                              if "predictor_dos_mse" in r)
                  + f"; median {median('predictor_dos_mse')}")
    if args.json:
        from mlff_ins.atomic_io import write_text_atomic

        write_text_atomic(args.json, json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
