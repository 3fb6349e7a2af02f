"""``mlff-ins demo``: the mission in small, on the embedded CP2K silicon data, in minutes on 2 CPU
cores.

Steps: check the embedded labels (validation, and that forces sum to zero in every frame as they
must for a translation-invariant DFT energy), train a tiny NequIP model on them and score it on
held-out frames (to show training); then, with the shipped silicon reference model, diamond Si
through the phonon route (cell relaxed, 2x2x2 conventional supercell, VISION S(E) at 300 K) and
a 64-atom amorphous cell through the MD route (300 K, VDOS and VISION S(E) from the trajectory),
laid over each other by ``compare``; report.md in the output folder says what came out. Every
step after training is a CLI command, printed as it runs, so the demo doubles as a walk-through."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from mlff_ins.errors import InputError

RESOURCES = Path(__file__).resolve().parent / "resources"
SI_DATA = RESOURCES / "si" / "si_cp2k_pbe.xyz"


def check_labels(path: Path = SI_DATA) -> dict:
    """Validate the embedded data and measure the force sum of every frame.

    Returns counts per ``config_type`` and the largest |sum of forces| (eV/Angstrom).
    """
    from mlff_ins.data.ingest import read_frames, split_isolated_atoms
    from mlff_ins.data.validate import validate

    frames, e0s = split_isolated_atoms(read_frames(path))
    validate(frames, e0s=e0s)
    counts = dict(Counter(a.info.get("config_type", "?") for a in frames))
    max_sum = max(float(np.linalg.norm(a.get_forces().sum(axis=0))) for a in frames)
    return {"n_frames": len(frames), "counts": counts, "e0s": e0s, "max_force_sum": max_sum}


def run_demo(output: str | Path = "mlff-ins-demo", *, epochs: int | None = None,
             device: str | None = None) -> Path:
    """Train the demo's tiny model into ``output`` (on ``device``, default the preset's cpu)
    and return the bundle's folder."""
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    if not SI_DATA.exists():
        raise InputError(f"{SI_DATA}: embedded data missing (broken install?)")
    output = Path(output)
    info = check_labels()
    print(f"embedded data {SI_DATA.name}: {info['n_frames']} CP2K PBE frames of Si "
          f"({', '.join(f'{k} {v}' for k, v in sorted(info['counts'].items()))}); "
          f"isolated-atom energy {', '.join(f'{k} {v:.3f} eV' for k, v in info['e0s'].items())}; "
          f"largest |sum of forces| "
          f"{info['max_force_sum']:.1e} eV/Å: labels OK")
    cfg = load_train_config(preset="tiny", overrides={"data": str(SI_DATA),
                                                      "training.max_epochs": epochs,
                                                      "device": device})
    bundle = output / "models" / "si_tiny"
    resume = bundle.exists() and not (bundle / "bundle.json").exists()
    if (bundle / "bundle.json").exists():
        print(f"{bundle}: already trained (delete it to train again)")
        return bundle
    print(f"training a tiny NequIP model into {bundle} ...")
    return train_bundle(cfg, bundle, resume=resume)


#: Si phonon frequencies from experiment (THz), for the demo's printout
SI_EXPERIMENT_THZ = {"Γ TO": 15.53, "X TA": 4.49, "X LA": 12.32, "X TO": 13.90, "L TA": 3.43,
                     "L LA": 11.35, "L LO": 12.60, "L TO": 14.68}


#: the demo's amorphous cell (64 atoms; its origin in mlff_ins/resources/si/README.md)
DEMO_AMORPHOUS = RESOURCES / "si" / "a-si_64_demo.xyz"
BOND_CUTOFF_A = 2.85     # Si-Si bonds for the coordination number (first minimum of a-Si's g(r))


def _cli(argv: list[str], log=print) -> None:
    """Run one mlff-ins command in-process, echoed as the user would type it."""
    from mlff_ins.cli import run_echoed

    rc = run_echoed(argv, log)
    if rc != 0:
        raise InputError(f"demo step `mlff-ins {argv[0]}` failed (exit status {rc})")


def run_mission_demo(output: str | Path, model: str | Path, *, md_steps: int = 1000,
                     device: str | None = None, log=print) -> dict:
    """The mission in small with ``model`` (the shipped reference model): diamond Si through the
    phonon route, a 64-atom a-Si cell through the MD route, both to VISION S(E) at 300 K, laid
    over each other by ``compare``; every step a CLI command, printed as it runs (with
    ``--device`` when ``device`` is given: phonons, md and spectra run there). Returns the
    output paths, the crystal's Γ/X/L frequencies (THz) and the compare metrics."""
    import json

    from ase.build import bulk
    from ase.io import read, write

    from mlff_ins.analysis.structure import coordination as structure_coordination
    from mlff_ins.phonons.io import read_phonons
    from mlff_ins.phonons.properties import diamond_special_frequencies

    out = Path(output)
    (out / "structures").mkdir(parents=True, exist_ok=True)
    crystal = out / "structures" / "si_conventional.xyz"
    write(crystal, bulk("Si", "diamond", a=5.43, cubic=True))
    amorphous = out / "structures" / "a-si_64.xyz"
    frame = read(DEMO_AMORPHOUS)
    write(amorphous, frame)
    coordination = float(structure_coordination(frame, BOND_CUTOFF_A).mean())
    p = {"phonons": out / "c-si" / "phonons.h5", "ins": out / "c-si" / "ins_phonons.h5",
         "md": out / "a-si" / "md.h5md", "spectra": out / "a-si" / "ins_md.h5",
         "compare": out / "compare"}
    dev = ["--device", device] if device else []
    if p["md"].exists():                 # a rerun starts the demo's MD afresh
        p["md"].unlink()
    log("c-Si, phonon route: relax, finite displacements in a 2x2x2 conventional supercell, "
        "VISION S(E) at 300 K")
    _cli(["phonons", str(crystal), "--model", str(model), "--relax", "--supercell", "2", "2",
          "2", *dev, "-o", str(p["phonons"]), "--plot"], log)
    _cli(["ins", str(p["phonons"]), "--instrument", "vision", "-T", "300", "--e-max", "100",
          "-o", str(p["ins"]), "--plot"], log)
    # an ensemble's MD costs one model call per member and step: the demo's runs on member 0
    # (the shipped reference model has three), which keeps the demo within its 5 minutes
    bundle = Path(model) / "bundle.json"
    members = (["--members", "0"] if bundle.is_file()
               and len(json.loads(bundle.read_text())["members"]) > 1 else [])
    log(f"a-Si, MD route: {len(frame)} atoms, {md_steps} steps of 2 fs at 300 K"
        + (" with member 0 of the ensemble" if members else "")
        + ", VDOS and VISION S(E) from the trajectory")
    _cli(["md", str(amorphous), "--model", str(model), *members, "-T", "300",
          "--steps", str(md_steps), "--dt", "2", "--every", "5", "--thermostat", "bussi",
          "--seed", "1", *dev, "-o", str(p["md"])], log)
    _cli(["spectra", str(p["md"]), "--vdos", "--instrument", "vision", "-T", "300",
          "--skip-ps", f"{min(0.4, md_steps * 0.002 / 4):g}", "--e-max", "100", *dev,
          "-o", str(p["spectra"]), "--plot"], log)
    log("the two routes on one plot")
    _cli(["compare", str(p["ins"]), str(p["spectra"]), "--kind", "s_e",
          "--label", "c-Si phonons", "--label", "a-Si MD", "-o", str(p["compare"])], log)
    ph = read_phonons(p["phonons"]).mean
    freqs = {f"{'Γ' if point == 'G' else point} {branch}": f
             for point, branches in diamond_special_frequencies(ph).items()
             for branch, f in branches.items()}
    metrics = json.loads((p["compare"] / "metrics.json").read_text())
    lattice = float(np.linalg.norm(ph.unitcell.cell[0]))
    return {"paths": p, "frequencies_THz": freqs, "lattice_A": lattice, "compare": metrics,
            "coordination": coordination}


def matched_peaks(pair: dict) -> str:
    """The peaks ``compare`` matched between the two spectra of ``pair``, in words."""
    matched = (pair.get("peaks") or {}).get("matched") or []
    if not matched:
        return "no peaks matched within 5 meV"
    return "peaks matched (c-Si, a-Si): " + ", ".join(f"{a:.1f} and {b:.1f} meV"
                                                      for a, b in matched)


def write_demo_report(output: Path, tiny_bundle: Path, model: str, res: dict) -> Path:
    """report.md of the demo: what ran, the numbers it printed, the plots."""
    import json

    from mlff_ins.atomic_io import write_text_atomic

    output = Path(output)
    m = json.loads((tiny_bundle / "metrics.json").read_text())["ensemble_mean"]
    meta = Path(model) / "bundle.json"
    about = ""
    if meta.is_file():
        ref = json.loads(meta.read_text())
        about = (f" (held-out force RMSE {ref['metrics']['forces_meV_per_A']['rmse']:.0f} meV/Å"
                 + (", a partial export of its training run" if ref.get("partial") else "")
                 + ")")
    pair = res["compare"]["pairs"][0]
    rel = lambda path: Path(path).relative_to(output).as_posix()   # noqa: E731
    lines = [
        "# mlff-ins demo", "",
        f"1. Training: a tiny NequIP model on the embedded CP2K silicon frames "
        f"([report]({rel(tiny_bundle / 'report.md')})): held-out force RMSE "
        f"{m['forces_meV_per_A']['rmse']:.0f} meV/Å, energy RMSE "
        f"{m['energy_meV_per_atom']['rmse']:.1f} meV/atom. It shows the training; the spectra "
        f"below use {model}{about}.",
        f"2. c-Si, phonon route: relaxed lattice constant {res['lattice_A']:.4f} Å "
        f"(experiment 5.431 Å); phonons in a 2x2x2 conventional supercell "
        f"([bands]({rel(res['paths']['phonons'].with_suffix('.png'))})), VISION S(E) at 300 K "
        f"([plot]({rel(res['paths']['ins'].with_suffix('.png'))})).", "",
        "   | mode | model (THz) | experiment (THz) |", "   |---|---|---|",
        *[f"   | {k} | {v:.2f} | {SI_EXPERIMENT_THZ[k]:.2f} |"
          for k, v in res["frequencies_THz"].items()], "",
        f"3. a-Si, MD route: a 64-atom amorphous cell at 300 K, VDOS and VISION S(E) from the "
        f"trajectory ([plot]({rel(res['paths']['spectra'].with_suffix('.png'))})). The cell is "
        f"a Stillinger-Weber quench annealed with the reference model (mean coordination "
        f"{res['coordination']:.2f} within {BOND_CUTOFF_A} Å; real a-Si has about 3.9).",
        f"4. `compare`: c-Si (phonons) against a-Si (MD), "
        f"[overlay]({rel(res['paths']['compare'] / 'compare.png')}): cosine similarity "
        f"{pair['cosine']:.3f}, MSE {pair['mse']:.4f} on max-normalised S(E); "
        f"{matched_peaks(pair)}. Amorphous order broadens the crystal's sharp TA and TO "
        f"peaks into bands.", "",
        "The full study (512-atom cells, 20 ps, three routes, a vacancy): "
        "`mlff-ins demo --full` (hours; README, section Case study).", ""]
    path = output / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path
