"""The ``mlff-ins`` command: argparse sub-commands that parse options and call the public API.

Every sub-command's ``--help`` states units. A bad input ends the command with a one-line message
naming the file, frame, element or option (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlff_ins import __version__
from mlff_ins.errors import InputError


def _add_label(sub) -> None:
    p = sub.add_parser(
        "label", help="compute DFT energies, forces and stresses of frames (resumable)",
        description="Label every frame of FRAMES with the ASE calculator described in a YAML file "
                    "(CP2K by default: configs/label/cp2k_si.yaml). Finished frames are appended "
                    "to the output one at a time; rerunning the same command after a kill resumes "
                    "where it stopped. Frames whose SCF did not converge are refused and listed in "
                    "OUTPUT.rejected.jsonl. Output units: eV, eV/Å, eV/Å³.")
    p.add_argument("frames", help="structures to label (any ase.io-readable file, all frames)")
    p.add_argument("--calculator", required=True, metavar="YAML",
                   help="calculator description, e.g. configs/label/cp2k_si.yaml")
    p.add_argument("-o", "--output", required=True, help="labelled extxyz (appended, resumable)")
    p.add_argument("--retry-rejected", action="store_true",
                   help="try again frames refused by an earlier run")
    p.add_argument("--max-frames", type=int, default=None,
                   help="label at most this many new frames, then stop")
    p.set_defaults(func=_run_label)


def _run_label(args) -> int:
    from mlff_ins.data.label import label_frames

    report = label_frames(args.frames, args.calculator, args.output,
                          retry_rejected=args.retry_rejected, max_frames=args.max_frames)
    print(f"{args.output}: {len(report.labelled)} frames labelled now, "
          f"{report.skipped_done} were already done")
    if report.rejected:
        for i, reason in sorted(report.rejected.items()):
            print(f"{args.frames}: frame {i} refused: {reason}")
        return 1
    return 0


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check", help="validate a training set and list every problem",
        description="Check labelled frames before training: missing or non-finite energies and "
                    "forces, forces above --max-force (eV/Å), duplicate frames, atoms closer than "
                    "--min-distance (Å), elements without an isolated-atom energy.")
    p.add_argument("data", help="labelled frames (extxyz, OUTCAR, vasprun.xml, ...)")
    p.add_argument("--max-force", type=float, default=50.0, help="eV/Å (default 50)")
    p.add_argument("--min-distance", type=float, default=0.5, help="Å (default 0.5)")
    p.set_defaults(func=_run_check)


def _run_check(args) -> int:
    from mlff_ins.data.ingest import read_frames, split_isolated_atoms
    from mlff_ins.data.validate import find_problems

    frames, e0s = split_isolated_atoms(read_frames(args.data))
    problems = find_problems(frames, e0s=e0s, max_force=args.max_force,
                             min_distance=args.min_distance)
    for line in problems:
        print(line)
    n_atoms = sum(len(a) for a in frames)
    print(f"{args.data}: {len(frames)} frames, {n_atoms} atoms, isolated-atom energies for "
          f"{', '.join(sorted(e0s)) or 'no element'}: "
          + ("OK" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a NequIP model bundle (optionally an ensemble)",
        description="Train NequIP force fields with the nequip package and write a model bundle: "
                    "packaged members, bundle.json, metrics.json (test-split errors), "
                    "parity.png, learning_curve.png, report.md. Start from a YAML config "
                    "(see configs/train/) or from --data and --preset.")
    p.add_argument("config", nargs="?", help="training YAML (optional)")
    p.add_argument("--data", metavar="FILE", help="labelled frames with energy and forces (eV, eV/Å)")
    p.add_argument("--preset", choices=["tiny", "small", "medium"],
                   help="model size and training length (default small)")
    p.add_argument("--ensemble", type=int, metavar="K", help="number of members K (bootstrap + seeds)")
    p.add_argument("--elements", nargs="+", metavar="EL", help="element symbols (default: those in the data)")
    p.add_argument("--cutoff", type=float, metavar="ANGSTROM", help="radial cutoff in Å")
    p.add_argument("--epochs", type=int, metavar="N", help="maximum number of epochs")
    p.add_argument("--max-minutes", type=float, metavar="MIN", help="wall-time limit per member, minutes")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or auto")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="bundle folder, e.g. models/si")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --output")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    cfg = load_train_config(args.config, preset=args.preset, overrides={
        "data": str(Path(args.data).resolve()) if args.data else None,
        "ensemble": args.ensemble, "elements": args.elements, "cutoff": args.cutoff,
        "training.max_epochs": args.epochs, "training.max_minutes": args.max_minutes,
        "device": args.device})
    out = train_bundle(cfg, args.output, resume=args.resume)
    _print_metrics(out)
    return 0


def _print_metrics(out: Path) -> None:
    import json

    m = json.loads((Path(out) / "metrics.json").read_text())
    e = m["ensemble_mean"]
    print(f"{out}: test errors on {m['n_test']} held-out frames (ensemble mean of "
          f"{len(m['members'])}):")
    print(f"  energy  MAE {e['energy_meV_per_atom']['mae']:8.2f}  "
          f"RMSE {e['energy_meV_per_atom']['rmse']:8.2f}  meV/atom")
    print(f"  forces  MAE {e['forces_meV_per_A']['mae']:8.1f}  "
          f"RMSE {e['forces_meV_per_A']['rmse']:8.1f}  meV/Å")
    if "stress_meV_per_A3" in e:
        print(f"  stress  MAE {e['stress_meV_per_A3']['mae']:8.2f}  "
              f"RMSE {e['stress_meV_per_A3']['rmse']:8.2f}  meV/Å³")
    print(f"  report: {Path(out) / 'report.md'}")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on the embedded silicon DFT data (minutes on 2 cores)",
        description="Check the embedded CP2K silicon data set, train a tiny NequIP model on it, "
                    "print its errors on held-out frames and write the training report.")
    p.add_argument("-o", "--output", default="mlff-ins-demo", help="output folder")
    p.add_argument("--epochs", type=int, default=None, help="override the tiny preset's epochs")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from mlff_ins.demo import run_demo

    out = run_demo(args.output, epochs=args.epochs)
    _print_metrics(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlff-ins",
        description="From DFT snapshots to neutron spectra: label, train NequIP force fields, "
                    "and (in coming releases) MD, phonons and INS/QENS spectra.")
    parser.add_argument("--version", action="version", version=f"mlff-ins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_label(sub)
    _add_check(sub)
    _add_train(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"mlff-ins {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlff-ins {args.command}: interrupted; rerun the same command (with --resume "
              "for train) to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
