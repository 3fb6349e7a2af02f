"""The ``mlff-ins`` command: argparse sub-commands that parse options and call the public API.

Every sub-command's ``--help`` states units. A bad input ends the command with a one-line message
naming the file, frame, element or option (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.errors import InputError, ToolFailed, sigterm_as_interrupt
from mlff_ins.neutron.units import ENERGY_UNITS
from mlff_ins.train.config import PRESETS

_PACKAGE_DIR = Path(__file__).resolve().parent


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but prints an ``example:`` epilog line by line, and adds
    "(default X)" to an option's help that does not state its default itself."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (not action.option_strings or action.nargs == 0 or "default" in text.lower()
                or default is None or default is False or default is argparse.SUPPRESS
                or (isinstance(default, (list, tuple, str)) and not default)
                or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return text
        shown = (" ".join(map(str, default)) if isinstance(default, (list, tuple))
                 else f"{default:g}" if isinstance(default, float) else str(default))
        return f"{text} (default {shown.replace('%', '%%')})"

    def _fill_text(self, text, width, indent):
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_label(sub) -> None:
    p = sub.add_parser(
        "label", help="compute DFT energies, forces and stresses of frames (resumable)",
        description="Label every frame of FRAMES with the ASE calculator described in a YAML file "
                    "(e.g. CP2K: configs/label/cp2k_si.yaml). Finished frames are appended "
                    "to the output one at a time; rerunning the same command after a kill resumes "
                    "where it stopped. Frames whose SCF did not converge are refused and listed in "
                    "OUTPUT.rejected.jsonl. Frames are appended as they finish (frames of a "
                    "resumed or --retry-rejected run after those before them); each keeps its "
                    "input index as info['source_index']. Output units: eV, eV/Å, eV/Å³.",
        epilog="example: mlff-ins label frames.xyz --calculator configs/label/cp2k_si.yaml "
               "-o labelled.xyz",
        formatter_class=_HelpFormatter)
    p.add_argument("frames", help="structures to label (any ase.io-readable file, all frames)")
    p.add_argument("--calculator", required=True, metavar="YAML",
                   help="calculator description, e.g. configs/label/cp2k_si.yaml")
    p.add_argument("-o", "--output", required=True, help="labelled extxyz (appended, resumable)")
    p.add_argument("--retry-rejected", action="store_true",
                   help="try again frames refused by an earlier run")
    p.add_argument("--max-frames", type=int, default=None,
                   help="label at most this many new frames, then stop")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume an OUTPUT labelled with another calculation (refused by "
                        "default: it mixes levels of theory; comments and the launch `command` "
                        "may change without it)")
    p.set_defaults(func=_run_label)


def _run_label(args) -> int:
    from mlff_ins.data.label import label_frames

    report = label_frames(args.frames, args.calculator, args.output,
                          retry_rejected=args.retry_rejected, max_frames=args.max_frames,
                          allow_config_change=args.allow_config_change)
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
                    "--min-distance (Å). Elements without an isolated-atom frame are "
                    "not an error: a note says that training will fit their E0s (eV).",
        epilog="example: mlff-ins check labelled.xyz",
        formatter_class=_HelpFormatter)
    p.add_argument("data", help="labelled frames (extxyz, OUTCAR, vasprun.xml, ...)")
    p.add_argument("--max-force", type=float, default=50.0, help="eV/Å (default 50)")
    p.add_argument("--min-distance", type=float, default=0.5, help="Å (default 0.5)")
    p.set_defaults(func=_run_check)


def _run_check(args) -> int:
    from mlff_ins.data.ingest import read_frames, split_isolated_atoms
    from mlff_ins.data.validate import e0s_note, find_problems

    frames, e0s = split_isolated_atoms(read_frames(args.data))
    problems = find_problems(frames, max_force=args.max_force, min_distance=args.min_distance)
    for line in problems:
        print(line)
    note = e0s_note(frames, e0s)
    if note:
        print(note)
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
                    "(see configs/train/) or from --data and --preset. Per-element reference "
                    "energies (E0s, eV) come from e0s: in the config, else from isolated-atom "
                    "frames (config_type=IsolatedAtom) in the data, else they are fitted by "
                    "least squares to the training frames' energies (printed, and kept in "
                    "bundle.json). Several devices: --devices N trains each member with N "
                    "Lightning DDP processes (nequip's SimpleDDPStrategy; gloo on CPU, NCCL on "
                    "CUDA), which mlff-ins starts itself on one machine. On SLURM start one task "
                    "per device with srun: Lightning needs ntasks-per-node = --devices and "
                    "nodes = --num-nodes, and the output folder on a file system all nodes "
                    "share (rank 0 writes it). --resume continues on any device count. See "
                    "docs/training.md.",
        epilog="example: mlff-ins train --data labelled.xyz --preset small --ensemble 4 "
               "--parallel-members 2 -o models/si\n"
               "         mlff-ins train --data labelled.xyz --preset small --ensemble 4 "
               "-o models/si --export models/si-so-far\n"
               "         srun --nodes=2 --ntasks-per-node=4 --kill-on-bad-exit=1 mlff-ins train "
               "config.yaml --device cuda --devices 4 --num-nodes 2 -o models/si",
        formatter_class=_HelpFormatter)
    p.add_argument("config", nargs="?", help="training YAML (optional)")

    from mlff_ins.train.config import load_preset

    presets = {name: load_preset(name) for name in PRESETS}   # once per parser, not per option

    def preset_default(*keys: str) -> str:
        """'default per preset: tiny ..., small ..., ...' for a preset setting."""
        values = []
        for name, v in presets.items():
            for k in keys:
                v = v[k]
            values.append(f"{name} {v:g}" if isinstance(v, (int, float)) else f"{name} {v}")
        return "default per preset: " + ", ".join(values)

    p.add_argument("--data", metavar="FILE", action="append",
                   help="labelled frames with energy and forces (eV, eV/Å); repeat it to train "
                        "on several files together (a data set and its active-learning rounds)")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="model size and training length (default small)")
    p.add_argument("--ensemble", type=int, metavar="K",
                   help="number of members K, each with its own seed and bootstrap "
                        "resample of the training frames (training.bootstrap); with --resume "
                        f"a larger K adds members to a run ({preset_default('ensemble')})")
    p.add_argument("--elements", nargs="+", metavar="EL", help="element symbols (default: those in the data)")
    p.add_argument("--cutoff", type=float, metavar="ANGSTROM",
                   help=f"radial cutoff in Å ({preset_default('cutoff')})")
    p.add_argument("--epochs", type=int, metavar="N",
                   help="maximum number of epochs "
                        f"({preset_default('training', 'max_epochs')})")
    p.add_argument("--max-minutes", type=float, metavar="MIN",
                   help="wall-time limit per member, minutes: a member stops there, however "
                        f"far it got ({preset_default('training', 'max_minutes')})")
    p.add_argument("--early-stop", type=int, metavar="N",
                   help="stop a member after N epochs without a lower validation loss (it is "
                        "packaged from its best epoch either way; preset reference: 40, the "
                        "others none)")
    p.add_argument("--init-from", metavar="RUN",
                   help="a fine-tuning stage: start member k from member k's best checkpoint "
                        "of the training run in folder RUN (finished or not) instead of fresh "
                        "weights; same data, split, cutoff and model required, so its test "
                        "frames stay unseen, or RUN's data files followed by files of new "
                        "frames (an active-learning round: RUN's frames keep RUN's split, the "
                        "new ones are split among themselves); change the learning rate and "
                        "the weights of the frames (training.lr, training.frame_weights) in a "
                        "YAML config (docs/training.md)")
    p.add_argument("--device", metavar="DEV",
                   help=f"cpu, cuda, cuda:N (that GPU) or auto ({preset_default('device')})")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="bundle folder, e.g. models/si")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run in --output; with a larger --epochs or "
                        "--max-minutes, train longer; --early-stop and --device may change too "
                        "(a run started on a CPU goes on on a GPU), no other setting")
    p.add_argument("--export", metavar="DIR",
                   help="train nothing: write a self-contained model bundle DIR from the run in "
                        "--output, finished or not (an unfinished member's best checkpoint so "
                        "far, marked partial in bundle.json), scored on the run's test split; "
                        "give the run's own options, as for --resume")
    p.add_argument("--devices", type=int, default=1, metavar="N",
                   help="processes per node that train each member together (distributed data "
                        "parallel: GPUs with --device cuda, CPU processes on gloo with --device "
                        "cpu); the batch size stays that of one optimizer step, split over the "
                        "processes (default 1)")
    p.add_argument("--num-nodes", type=int, default=1, metavar="M",
                   help="nodes that train each member together; needs srun, see "
                        "docs/training.md (default 1)")
    p.add_argument("--parallel-members", type=int, default=1, metavar="K",
                   help="ensemble members trained at the same time, each a single process with "
                        "cores/K torch threads (default 1: one after another)")
    p.set_defaults(func=_run_train)


def _data_option(files: list[str] | None) -> str | list[str] | None:
    """--data as the training settings hold it: one absolute path, or a list of them."""
    if not files:
        return None
    paths = [str(Path(f).resolve()) for f in files]
    return paths[0] if len(paths) == 1 else paths


def _run_train(args) -> int:
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    cfg = load_train_config(args.config, preset=args.preset, overrides={
        "data": _data_option(args.data),
        "ensemble": args.ensemble, "elements": args.elements, "cutoff": args.cutoff,
        "training.max_epochs": args.epochs, "training.max_minutes": args.max_minutes,
        "training.early_stop": args.early_stop,
        "training.init_from": str(Path(args.init_from).resolve()) if args.init_from else None,
        "device": args.device})
    if args.export:
        from mlff_ins.train.driver import export_bundle

        if args.resume:
            raise InputError("--export and --resume: export writes a bundle and trains nothing; "
                             "give one of them")
        _print_metrics(export_bundle(cfg, args.output, args.export))
        return 0
    out = train_bundle(cfg, args.output, resume=args.resume, devices=args.devices,
                       num_nodes=args.num_nodes, parallel_members=args.parallel_members)
    if out is not None:  # None: a non-zero srun rank, whose rank 0 reports
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


def _add_md(sub) -> None:
    p = sub.add_parser(
        "md", help="molecular dynamics with a model bundle, written to an H5MD trajectory",
        description="Run MD on STRUCTURE (any ase.io-readable file; its last frame unless "
                    "--index) with a model bundle (--model) or any ASE calculator described in "
                    "YAML (--calculator). Frames (positions Å, velocities Å/fs, forces kJ/(mol Å), "
                    "i.e. eV/Å × 96.485, as MDAnalysis reads no eV-based force unit; cell Å, "
                    "energies eV, temperature K, pressure GPa, ensemble force spread eV/Å) go to "
                    "an H5MD file "
                    "(.h5md, the extension MDAnalysis recognises) every --every steps, flushed "
                    "at once; --resume continues a killed run from "
                    "its last complete frame. A watchdog stops the run cleanly on NaN, a force "
                    "above --max-force, a temperature blow-up, an ensemble force spread above "
                    "--max-force-std or (npt) a cell volume below half or above twice its "
                    "start, naming the step and atom.",
        epilog="example: mlff-ins md si_216.xyz --model models/si -T 300 --steps 20000 --every 10 -o si.h5md",
        formatter_class=_HelpFormatter)
    p.add_argument("structure", help="starting structure (extxyz, CIF, POSCAR, LAMMPS data, "
                                     "...)")
    _add_structure_options(p)
    src_ = p.add_mutually_exclusive_group(required=True)
    src_.add_argument("--model", metavar="DIR|NAME",
                      help="model bundle folder, e.g. models/si; si-reference, the silicon "
                           "reference ensemble shipped in the package; or a universal model "
                           "whose weights ship in its wheel: sevennet-0, sevennet-l3i5, "
                           "sevennet-mf-0, chgnet")
    src_.add_argument("--calculator", metavar="YAML", help="ASE calculator YAML instead of a model")
    _add_members_option(p)
    p.add_argument("-o", "--output", required=True,
                   help="trajectory file (H5MD), e.g. traj.h5md (another extension is written "
                        "but warned about: MDAnalysis picks its H5MD reader by .h5md)")
    # default None: with --protocol, an option the user gave is told apart from a default
    p.add_argument("-T", "--temperature", type=_temperature, metavar="K",
                   help="target (and initial) temperature, K (default 300)")
    p.add_argument("--steps", type=int, help="total MD steps (default 1000)")
    p.add_argument("--dt", type=float, metavar="FS", help="time step, fs (default 1)")
    p.add_argument("--ensemble", choices=["nve", "nvt", "npt"], help="default nvt")
    p.add_argument("--thermostat", choices=["langevin", "bussi", "nhc"], default="langevin",
                   help="nvt thermostat (default langevin; nhc = Nosé–Hoover chain)")
    p.add_argument("--friction", type=float, default=0.01, metavar="PER_FS",
                   help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--tdamp", type=float, default=100.0, metavar="FS",
                   help="Bussi / Nosé–Hoover time constant, fs (default 100)")
    p.add_argument("--barostat", choices=["iso", "aniso"], default="iso",
                   help="npt: isotropic or anisotropic MTK barostat (default iso)")
    p.add_argument("-P", "--pressure", type=float, default=0.0, metavar="GPA",
                   help="npt target pressure, GPa (default 0)")
    p.add_argument("--pdamp", type=float, default=1000.0, metavar="FS",
                   help="barostat time constant, fs (default 1000)")
    p.add_argument("--every", type=int, metavar="N",
                   help="write a frame every N steps (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed for velocities and thermostat noise")
    p.add_argument("--max-force", type=float, default=50.0, metavar="EV_PER_A",
                   help="watchdog: stop when any force exceeds this, eV/Å (default 50)")
    p.add_argument("--max-temperature", type=float, metavar="K",
                   help="watchdog: stop above this temperature (default 10 × T, at least 5000 K)")
    p.add_argument("--max-force-std", type=float, metavar="EV_PER_A",
                   help="watchdog: stop when the ensemble force spread on an atom exceeds "
                        "this, eV/Å (default: no limit)")
    p.add_argument("--device", default="cpu",
                   help="model device: cpu, cuda, cuda:N or auto (cuda if available, else cpu; "
                        "default cpu)")
    p.add_argument("--protocol", metavar="YAML",
                   help="run the stages of a protocol YAML, or a shipped one by name "
                        "(melt_quench, anneal); it sets T, steps and ensembles per stage, "
                        "and its dt_fs and every unless --dt or --every is given (-T and "
                        "--ensemble: for stages that set none; --steps: refused)")
    p.add_argument("--resume", action="store_true", help="continue OUTPUT from its last frame")
    p.set_defaults(func=_run_md)


def _plot_spectra_if_asked(args, spectra) -> None:
    """With --plot: OUTPUT.png of ``spectra`` (energies in --unit), and say where it is."""
    if args.plot:
        from mlff_ins.neutron.plot import plot_spectra

        png = Path(args.output).with_suffix(".png")
        plot_spectra(spectra, png, unit=args.unit)
        print(f"  plot: {png}")


def _read_structure(path: str, index: int | None = None, types: str | None = None):
    """One frame (default the last) of any ase.io-readable file, or a one-line InputError;
    ``types``: the --types text, elements of LAMMPS atom types 1, 2, ..."""
    from mlff_ins.data.ingest import read_structure

    return read_structure(path, index=index,
                          types=[t.strip() for t in types.split(",")] if types else None)


def _add_structure_options(p) -> None:
    """--index and --types, for the commands that read STRUCTURE with :func:`_read_structure`."""
    p.add_argument("--index", type=int, metavar="N",
                   help="frame of a multi-frame STRUCTURE file (extxyz, ASE .traj, LAMMPS "
                        "dump, an .h5md of mlff-ins md, ...), 0-based, negative from the end; "
                        "default -1: the last "
                        "frame, as ase.io.read (for an MD trajectory, its final frame)")
    p.add_argument("--types", metavar="EL,EL,...",
                   help="LAMMPS data or dump STRUCTURE: elements of atom types 1, 2, ... "
                        "(e.g. Si,O); without it, taken from type labels or guessed from masses")


def _watchdog_exit(stopped: str | None) -> int:
    if stopped:
        print(f"mlff-ins md: stopped by the watchdog at {stopped}; the trajectory up to the "
              f"last good frame is kept", file=sys.stderr)
        return 3
    return 0


def _add_members_option(p) -> None:
    p.add_argument("--members", type=int, nargs="+", metavar="K",
                   help="use only these members of the --model bundle (numbered from 0, as "
                        "deploy's): a K-member ensemble costs K model evaluations per force "
                        "call; the ensemble spread needs at least two (default all)")


def _run_md(args) -> int:
    from mlff_ins.md.run import MDOptions, check_trajectory_name, run_md

    check_trajectory_name(args.output)
    atoms = _read_structure(args.structure, args.index, args.types)
    if args.model:
        from mlff_ins.model.calculator import load_calculator
        calc = load_calculator(args.model, device=args.device, members=args.members)
        calc.check_elements(atoms, source=args.structure)
        from mlff_ins.model.shipped import bundle_digest
        universal = getattr(calc, "bundle", {}).get("universal")
        digest = bundle_digest(args.model)
        model_id = (f"universal {universal} {calc.bundle['package']} "
                    f"{calc.bundle['version']}" if universal else
                    f"bundle sha256:{digest}" if digest else f"model {args.model}")
        if args.members is not None:       # a resume must use the same members
            model_id += " members " + " ".join(map(str, args.members))
    else:
        from mlff_ins.data.label import build_calculator, read_calculator_spec
        spec = read_calculator_spec(args.calculator)
        calc = build_calculator(spec,
                                Path(args.output).parent / (Path(args.output).name + ".calc"))
        model_id = f"calculator sha256:{spec.sha256[:16]}"
        if args.members is not None:
            raise InputError("--members: only with --model (a bundle's members)")
    explicit = {"temperature_K": args.temperature, "steps": args.steps, "dt_fs": args.dt,
                "ensemble": args.ensemble, "every": args.every}
    given = frozenset(k for k, v in explicit.items() if v is not None)
    opts = MDOptions(model=model_id, **{k: explicit[k] for k in given},   # else MDOptions'
                     thermostat=args.thermostat,
                     barostat=args.barostat, pressure_GPa=args.pressure,
                     friction_per_fs=args.friction, tdamp_fs=args.tdamp, pdamp_fs=args.pdamp,
                     seed=args.seed, max_force=args.max_force,
                     max_temperature_K=args.max_temperature, max_force_std=args.max_force_std)
    if args.protocol:
        from mlff_ins.analysis.structure import MELT_MIN_DISPLACEMENT_A, stage_motion
        from mlff_ins.md.protocol import run_protocol

        with sigterm_as_interrupt():     # `kill PID`: stop as Ctrl-C does, file closed
            stages = run_protocol(atoms, calc, args.protocol, opts, args.output,
                                  resume=args.resume, given=given)
        moved = {m.stage: m for m in stage_motion(args.output)}
        for name, s in stages:
            m = moved.get(name)
            # a stage a resumed run found finished ran no step now: no temperature of this run
            ran = bool(s.atom_steps_per_s)
            print(f"  {name}: "
                  + (f"step {s.steps_done}, mean T {s.mean_temperature_K:.1f} K" if ran
                     else "finished in an earlier run")
                  + (f", mean P {s.mean_pressure_GPa:.3f} GPa"
                     if ran and np.isfinite(s.mean_pressure_GPa) else "")
                  + (f", atoms moved {m.median_A:.2f} Å (median; largest {m.max_A:.2f} Å)"
                     if m else ""))
            if m and "melt" in name.lower() and m.median_A < MELT_MIN_DISPLACEMENT_A:
                print(f"warning: stage {name} of {args.output}: the atoms moved "
                      f"{m.median_A:.2f} Å (median) over the stage: the cell did not melt (a "
                      f"superheated solid); melt hotter or longer before quenching",
                      file=sys.stderr)
        s = stages[-1][1]
        print(f"{args.output}: {s.frames} frames")
        return _watchdog_exit(s.stopped)
    with sigterm_as_interrupt():
        s = run_md(atoms, calc, opts, args.output, resume=args.resume)
    if args.resume and s.steps_done >= opts.steps and not s.atom_steps_per_s:  # was finished
        print(f"{args.output}: already finished ({s.frames} frames, step {s.steps_done} of "
              f"{opts.steps}); nothing run")
        return _watchdog_exit(s.stopped)
    print(f"{args.output}: {s.frames} frames, step {s.steps_done} of {opts.steps}, "
          f"{s.ns_per_day:.3g} ns/day, {s.atom_steps_per_s:.3g} atom-steps/s")
    line = f"  mean T {s.mean_temperature_K:.1f} K"
    if np.isfinite(s.mean_pressure_GPa):
        line += f", mean P {s.mean_pressure_GPa:.3f} GPa"
    if s.drift_meV_per_atom_per_ps is not None:
        line += f", energy drift {s.drift_meV_per_atom_per_ps:.3g} meV/atom/ps"
    print(line)
    return _watchdog_exit(s.stopped)


def _add_select(sub) -> None:
    p = sub.add_parser(
        "select", help="write the most uncertain MD frames for DFT relabelling",
        description="Rank the frames of an mlff-ins md trajectory by the ensemble's largest "
                    "per-atom force spread (eV/Å; the one the MD stored, or computed now by "
                    "--model) and write the top N as extxyz for `mlff-ins label`, skipping "
                    "frames within --min-gap of one already chosen so the selection covers "
                    "different events.",
        epilog="example: mlff-ins select si.h5md --top 20 -o uncertain.xyz",
        formatter_class=_HelpFormatter)
    p.add_argument("trajectory", help="H5MD trajectory written by mlff-ins md (.h5md)")
    p.add_argument("--top", type=int, required=True, metavar="N", help="number of frames")
    p.add_argument("--min-gap", type=int, metavar="FRAMES",
                   help="minimum distance between chosen frames (default: frames / 4N)")
    p.add_argument("--stage", metavar="NAME",
                   help="only frames of this stage of a `md --protocol` trajectory (e.g. melt)")
    p.add_argument("--config-type", metavar="NAME",
                   help="written as each frame's config_type (the kind of structure: names "
                        "with vacancy, amorphous or liquid are grouped so by `bench train`)")
    p.add_argument("--model", metavar="DIR|NAME",
                   help="score the frames now with this ensemble bundle instead of the spread "
                        "the MD stored: a run with one member (--members 0), with another "
                        "model, or scored again by a newer ensemble")
    p.add_argument("--members", type=int, nargs="+", metavar="K",
                   help="with --model: only these members (at least two)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="with --model: score every Nth candidate frame (default 1)")
    p.add_argument("--device", default="cpu", metavar="DEV",
                   help="with --model: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("-o", "--output", required=True, help="extxyz of the chosen frames")
    p.set_defaults(func=_run_select)


def _run_select(args) -> int:
    from mlff_ins.md.select import select_uncertain

    if args.model is None:
        for opt, value, default in (("--members", args.members, None), ("--every", args.every, 1),
                                    ("--device", args.device, "cpu")):
            if value != default:
                raise InputError(f"{opt} applies to scoring with --model")
    chosen = select_uncertain(args.trajectory, args.top, args.output, args.min_gap,
                              stage=args.stage, config_type=args.config_type, model=args.model,
                              members=args.members, device=args.device, every=args.every,
                              progress=True)
    print(f"{args.output}: {len(chosen)} frames (trajectory frames {', '.join(map(str, chosen))})")
    return 0


def _add_deploy(sub) -> None:
    p = sub.add_parser(
        "deploy", help="compile a model bundle for LAMMPS (pair_nequip, ML-IAP) or nequip's ASE",
        description="Write what LAMMPS loads: an AOT-compiled model for pair_style nequip "
                    "(nequip-compile, minutes per member on a CPU) and the ML-IAP file "
                    "(nequip-prepare-lmp-mliap), with structure.data, an in.lammps that runs it "
                    "(pair_style nequip, or mliap unified with --no-aot; units metal) and a "
                    "README on building LAMMPS with pair_nequip. --target ase writes the models "
                    "nequip's NequIPCalculator loads: compiled ahead of time (AOTInductor, "
                    "minutes per member) with torch >= 2.10, TorchScript before.",
        epilog="example: mlff-ins deploy models/si --target lammps -o lammps_si",
        formatter_class=_HelpFormatter)
    p.add_argument("bundle", help="model bundle folder, e.g. models/si, or si-reference (the "
                                  "silicon reference ensemble shipped in the package)")
    p.add_argument("--target", choices=["lammps", "ase"], default="lammps",
                   help="lammps (default): models for pair_style nequip / mliap, in.lammps and "
                        "structure.data; ase: nequip's compiled model for its ASE calculator")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--members", type=int, nargs="+", metavar="K",
                   help="ensemble members to deploy (default: 0)")
    p.add_argument("--device", default="cpu", help="device the compiled model runs on (cpu, cuda)")
    p.add_argument("--no-aot", action="store_true",
                   help="lammps: skip the slow pair_nequip compile, write only the ML-IAP file "
                        "(in.lammps then uses pair_style mliap unified)")
    p.add_argument("--structure", metavar="FILE",
                   help="lammps: structure in.lammps runs, written to structure.data (any "
                        "ase.io-readable file, its last frame; periodic; positions in Å); "
                        "default: the first periodic frame of the bundle's test data")
    p.set_defaults(func=_run_deploy)


def _run_deploy(args) -> int:
    from mlff_ins.md.deploy import deploy

    atoms = _read_structure(args.structure) if args.structure else None
    for path in deploy(args.bundle, args.target, args.output, args.members, args.device,
                       compile_aot=not args.no_aot, structure=atoms):
        print(path)
    return 0


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build", help="make supercells with vacancies, substitutions and interstitials",
        description="Build the cell to simulate from STRUCTURE: repeat it, substitute atoms, "
                    "remove atoms (vacancies), insert interstitials at the emptiest place. "
                    "Random choices use --seed.",
        epilog="example: mlff-ins build si.cif --supercell 3 3 3 --vacancies 1 -o si_vacancy.xyz",
        formatter_class=_HelpFormatter)
    p.add_argument("structure", help="input structure (CIF, POSCAR, extxyz, LAMMPS data, ...)")
    _add_structure_options(p)
    p.add_argument("--supercell", type=int, nargs=3, metavar=("NA", "NB", "NC"),
                   help="repetitions along the three cell vectors")
    p.add_argument("--vacancies", type=int, default=0, metavar="N", help="remove N atoms")
    p.add_argument("--vacancy-element", metavar="EL", help="remove atoms of this element only")
    p.add_argument("--substitute", action="append", default=[], metavar="OLD:NEW:N",
                   help="N atoms (or a fraction < 1) of OLD become NEW; repeatable")
    p.add_argument("--interstitial", action="append", default=[], metavar="EL:N",
                   help="insert N atoms of EL at the emptiest places; repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choices")
    p.add_argument("-o", "--output", required=True, help="output structure (extxyz, cif, ...)")
    p.set_defaults(func=_run_build)


def _run_build(args) -> int:
    import ase.io

    from mlff_ins.atomic_io import atomic_path
    from mlff_ins.md.build import build_cell

    atoms = _read_structure(args.structure, args.index, args.types)
    out = build_cell(atoms, args.supercell, args.vacancies, args.vacancy_element,
                     args.substitute, args.interstitial, args.seed)
    fmt = ase.io.formats.filetype(args.output, read=False)
    with atomic_path(args.output) as tmp:
        ase.io.write(tmp, out, format=fmt)
    print(f"{args.output}: {len(out)} atoms, {out.get_chemical_formula()}")
    return 0


INSTRUMENT_CHOICES = ["vision", "tosca", "direct", "mari", "maps", "merlin", "let", "sequoia",
                      "arcs", "cncs", "hyspec"]
INDIRECT = ("vision", "tosca")


def _temperature(text: str) -> float:
    """A temperature in K: 0 (the ground state) or above, and finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a temperature in K must be 0 or above, not {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _add_neutron_options(p, *, instrument_default: str, instrument_help: str,
                         directions_default: int, directions_help: str,
                         q_min_default: float, e_max_help: str, orders_help: str) -> None:
    """The options `spectra` and `ins` share: same names, meanings, units (and defaults where
    the physics is the same). Options that only apply in some modes default to None here and
    get their defaults in :func:`_neutron_defaults`, so an option given where it has no effect
    can be refused."""
    p.add_argument("--instrument", choices=INSTRUMENT_CHOICES, default=instrument_default,
                   help=instrument_help)
    p.add_argument("--e-max", type=_positive_float, metavar="meV", help=e_max_help)
    p.add_argument("--q-min", type=float, metavar="INV_A",
                   help=f"S(Q,E): lowest |Q|, 1/Å (default {q_min_default:g})")
    p.add_argument("--q-max", type=_positive_float, metavar="INV_A",
                   help="S(Q,E): highest |Q|, 1/Å (default 10)")
    p.add_argument("--q-step", "--q-width", dest="q_step", type=_positive_float,
                   metavar="INV_A", help="S(Q,E): width of a |Q| bin, 1/Å (default 0.1)")
    p.add_argument("--directions", "--q-per-shell", dest="directions", type=int, metavar="N",
                   help=directions_help + f" (default {directions_default})")
    p.add_argument("--phonon-orders", type=int, metavar="N", help=orders_help)
    p.add_argument("--ei", type=_positive_float, metavar="meV",
                   help="direct geometry: incident energy, meV; masks S(Q,E) to the (Q,E) region "
                        "the instrument reaches and applies its resolution")
    p.add_argument("--angles", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="direct geometry (with --ei): scattering angles 2θ covered, degrees "
                        "(default 3 135)")
    p.add_argument("--resolution", type=_positive_float, metavar="FRACTION",
                   help="direct geometry (with --ei): Gaussian energy resolution, FWHM as a "
                        "fraction of Ei (dimensionless; default none)")
    p.add_argument("--chopper-frequency", type=_positive_float, metavar="HZ",
                   help="chopper spectrometers (with --ei): frequency of the resolution-defining "
                        "chopper, Hz (default: ResINS' default for the instrument)")
    p.add_argument("--chopper-package", metavar="NAME",
                   help="chopper spectrometers (with --ei): chopper package, e.g. A for MARI, "
                        "High-Resolution for SEQUOIA (default: ResINS' default)")
    p.add_argument("--fwhm", type=_positive_float, metavar="meV",
                   help="S(Q,E) without --ei: constant Gaussian energy broadening, FWHM meV "
                        "(default none)")
    p.add_argument("--isotope", action="append", default=[], metavar="EL=A",
                   help="scatter as this isotope (cross sections and mass), e.g. H=2; repeatable")
    p.add_argument("--seed", type=int, metavar="N",
                   help="seed of the random Q-vector draw / Q-direction rotations (default 0)")
    p.add_argument("--max-memory", type=_positive_float, default=2.0, metavar="GB",
                   help="memory budget, GiB (default 2): work is split into pieces that fit; "
                        "results do not depend on it")
    p.add_argument("--plot", action="store_true", help="also write OUTPUT.png")
    p.add_argument("--unit", default="meV", choices=ENERGY_UNITS,
                   help="energy unit of the plot's axes (files stay in meV)")


_NEUTRON_DEFAULTS = {"e_max": 500.0, "q_max": 10.0, "q_step": 0.1, "phonon_orders": 10,
                     "angles": (3.0, 135.0), "resolution": 0.0, "fwhm": 0.0, "seed": 0,
                     "ei": None, "chopper_frequency": None, "chopper_package": None}


def _neutron_defaults(args, **more) -> set:
    """Fill the options left unset with their defaults; return the names the user gave."""
    defaults = {**_NEUTRON_DEFAULTS, **more}
    given = {k for k in defaults if getattr(args, k, None) not in (None, [], False)}
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return given


def _refuse(given: set, names, why: str) -> None:
    """One-line error for the first of ``names`` the user gave although it has no effect."""
    for name in names:
        if name in given:
            raise InputError(f"--{name.replace('_', '-')} {why}")


def _check_direct_geometry(args, given: set) -> None:
    if args.ei is None:
        _refuse(given, ["angles", "resolution", "chopper_frequency", "chopper_package"],
                "applies to direct geometry with --ei; give --ei MEV")
    else:
        _refuse(given, ["fwhm"], "broadens maps without --ei; with --ei the resolution is the "
                                 "instrument's (or --resolution FRACTION with --instrument direct)")
        lo, hi = args.angles
        if not (0 <= lo <= 180 and 0 <= hi <= 180):
            raise InputError(f"--angles {lo:g} {hi:g}: scattering angles 2θ lie from 0 to 180 "
                             f"degrees")
        if lo >= hi:
            raise InputError(f"--angles {lo:g} {hi:g}: give the smallest angle 2θ first, then a "
                             f"larger one")


def _add_spectra(sub) -> None:
    p = sub.add_parser(
        "spectra", help="VDOS, S(Q,E), QENS and VISION/TOSCA S(E) from an MD trajectory",
        description="Compute spectra from a trajectory (H5MD, extxyz or anything ase.io reads) in "
                    "one streamed pass: VDOS/GDOS (area 3 per atom), coherent and incoherent "
                    "F(Q,t) and S(Q,E) powder-averaged over Q shells commensurate with the cell, "
                    "QENS (MSD, EISF, diffusion from the MSD slope and from Lorentzian widths), "
                    "and with --instrument vision|tosca the indirect-geometry S(E) (the same INS "
                    "engine as `mlff-ins ins`). Energies in meV (positive = neutron energy loss), "
                    "Q in 1/Å including 2π, time in fs, intensities barn/(sr meV) per atom. "
                    "Output: NeXus NXdata groups in one HDF5 file.",
        epilog="example: mlff-ins spectra md/si.h5md --sqe --q-max 6 -T 300 -o si_sqe.h5 --plot",
        formatter_class=_HelpFormatter)
    p.add_argument("trajectory", help="trajectory file (.h5md H5MD, .extxyz, a LAMMPS dump, "
                                      "or with --topology anything MDAnalysis reads)")
    p.add_argument("-o", "--output", required=True, help="spectra HDF5 file, e.g. spectra.h5")
    p.add_argument("--vdos", action="store_true", help="VDOS and neutron-weighted GDOS (default "
                   "when nothing else is asked)")
    p.add_argument("--sqe", action="store_true", help="coherent + incoherent F(Q,t), S(Q,E)")
    p.add_argument("--qens", action="store_true", help="MSD, F_s(Q,t), S_inc(Q,E), EISF, D fits")
    p.add_argument("-T", "--temperature", type=_positive_float, metavar="K",
                   help="temperature for the quantum correction and Bose factors, K, above 0 "
                        "(classical MD has no 0 K spectrum; default: kinetic temperature of the "
                        "frames analysed)")
    frames = p.add_argument_group("frames analysed")
    frames.add_argument("--start", type=int, metavar="FRAME",
                        help="first frame (0-based; default 0)")
    frames.add_argument("--stop", type=int, metavar="FRAME",
                        help="frame to stop before (default: the end)")
    frames.add_argument("--step", "--stride", dest="stride", type=int, default=1, metavar="N",
                        help="use every N-th frame (default 1)")
    frames.add_argument("--skip-ps", type=float, metavar="PS",
                        help="skip this much simulated time at the start, ps (equilibration)")
    frames.add_argument("--stage", metavar="NAME",
                        help="only the frames of this stage of a `md --protocol` trajectory")
    frames.add_argument("--blocks", type=int, default=1, metavar="N",
                        help="also analyse N consecutive blocks of the frames alike and write "
                             "the standard error of the mean over them as intensity_std "
                             "(statistical uncertainty bands; about twice the work) and as the "
                             "uncertainty of the QENS diffusion coefficients. The "
                             "correlation window must fit in a block: its default becomes half "
                             "a block")
    p.add_argument("--dt", type=_positive_float, metavar="FS",
                   help="time between frames in fs, for files that do not store it (extxyz)")
    p.add_argument("--topology", metavar="FILE",
                   help="read TRAJECTORY with MDAnalysis (DCD, XTC, TRR, NetCDF, ...) using this "
                        "topology (PDB, PSF, GRO, LAMMPS data) for the elements")
    p.add_argument("--types", metavar="EL,EL,...",
                   help="LAMMPS dumps (text, or dump h5md): elements of atom types 1, 2, ... "
                        "(e.g. Si,O)")
    p.add_argument("--time-window", type=_positive_float, metavar="FS",
                   help="longest correlation time, fs (default: half the frames analysed, at "
                        "most 2000 frames); sets the energy resolution")
    p.add_argument("--window", choices=["gaussian", "hann", "none"], default="gaussian",
                   help="taper of the correlations before the Fourier transform (default "
                        "gaussian with σ = --time-window / 3)")
    p.add_argument("--quantum-correction", choices=["harmonic", "schofield", "none"],
                   help="S(Q,E): classical -> quantum (default harmonic)")
    p.add_argument("--weighting", choices=["neutron", "number"],
                   help="S(Q,E): totals weighted by b_coh and σ_inc (barn/sr per atom, default) "
                        "or unweighted")
    p.add_argument("--no-partials", action="store_true", help="S(Q,E): write totals only")
    p.add_argument("--remove-drift", action="store_true",
                   help="take the motion of the whole cell's centre of mass out of every frame "
                        "(velocities and positions) first, as for a sample at rest; its share "
                        "of the kinetic energy is always measured, written to the provenance "
                        "and warned about above 0.5 %%")
    p.add_argument("--debye-waller", choices=["msd", "vdos"],
                   help="VISION/TOSCA Debye-Waller factor: <u²> from the VDOS in the harmonic "
                        "quantum form (default; the same form as the phonon orders and the "
                        "phonon route) or from the MD mean-square displacement plateau, scaled "
                        "by the VDOS's quantum/classical ratio (keeps the anharmonic amplitude "
                        "the MD measured)")
    p.add_argument("--low-energy", choices=["debye", "as-is"],
                   help="VISION/TOSCA: the VDOS below the correlation window's energy resolution "
                        "(one FWHM), where it is not resolved and the 1/E and Bose factors of "
                        "S(E) turn the window's smearing into a rise towards E = 0: replaced by "
                        "the Debye law a·E² through its value there (default; a solid's acoustic "
                        "modes), or used as computed. A VDOS with more than 1 %% of its area at "
                        "E = 0 (diffusion) is always used as computed")
    _add_neutron_options(
        p, instrument_default="direct",
        instrument_help="direct (default): S(Q,E) as computed, or with --ei masked to the "
                        "reachable region; a chopper spectrometer (with --ei) adds its ResINS "
                        "resolution; vision or tosca adds the indirect-geometry S(E)",
        directions_default=50, q_min_default=0.2,
        directions_help="S(Q,E): at most N commensurate Q-vectors per |Q| bin, drawn at random",
        e_max_help="highest energy transfer written, meV, of every spectrum and map (default "
                   "500)",
        orders_help="with --instrument vision or tosca: phonon orders 1..N of the incoherent "
                    "approximation in S(E) (default 10)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--float32", action="store_true", help="single precision (default float64)")
    p.set_defaults(func=_run_spectra)


def _run_spectra(args) -> int:
    from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory
    from mlff_ins.neutron.scattering_lengths import parse_isotopes
    from mlff_ins.neutron.spectrum import write_spectra

    given = _neutron_defaults(args, q_min=0.2, directions=50, quantum_correction="harmonic",
                              weighting="neutron", debye_waller="vdos", low_energy="debye")
    maps = args.sqe or args.qens
    if not maps:
        _refuse(given, ["q_min", "q_max", "q_step", "directions", "seed", "quantum_correction",
                        "weighting", "fwhm"], "applies to S(Q,E); add --sqe or --qens")
        if args.no_partials:
            raise InputError("--no-partials applies to S(Q,E); add --sqe or --qens")
    if args.instrument not in INDIRECT:
        _refuse(given, ["debye_waller", "low_energy", "phonon_orders"],
                "applies to --instrument vision or tosca (the incoherent-approximation S(E))")
    _check_direct_geometry(args, given)
    start, stop = args.start or 0, args.stop
    if args.stage is not None:
        if args.start is not None or args.stop is not None or args.skip_ps is not None:
            raise InputError("--stage chooses the frames itself; drop --start/--stop/--skip-ps")
        from mlff_ins.data.h5md import stage_frames

        start, stop = stage_frames(args.trajectory, args.stage)
    elif args.skip_ps is not None:
        if args.start is not None:
            raise InputError("--skip-ps and --start both set the first frame; give one")
        start = None                              # resolved from the time step below
    opts = SpectraOptions(
        vdos=args.vdos or not (args.sqe or args.qens), sqe=args.sqe, qens=args.qens,
        temperature_K=args.temperature, time_window_fs=args.time_window, window=args.window,
        quantum_correction=args.quantum_correction, weighting=args.weighting,
        q_min=args.q_min, q_max=args.q_max, q_width=args.q_step, q_per_shell=args.directions,
        seed=args.seed, partials=not args.no_partials, instrument=args.instrument,
        ei_meV=args.ei, angles_deg=tuple(args.angles), resolution_fraction=args.resolution,
        chopper_frequency_hz=args.chopper_frequency, chopper_package=args.chopper_package,
        fwhm_meV=args.fwhm, e_max_meV=args.e_max,
        debye_waller=args.debye_waller, low_energy=args.low_energy, n_phonon=args.phonon_orders,
        isotopes=parse_isotopes(args.isotope), device=args.device, float32=args.float32,
        max_memory_gb=args.max_memory, blocks=args.blocks, remove_drift=args.remove_drift)
    types = [t.strip() for t in args.types.split(",")] if args.types else None
    spectra, summary = spectra_from_trajectory(args.trajectory, opts, dt_fs=args.dt,
                                               stride=args.stride, types=types,
                                               topology=args.topology, start=start, stop=stop,
                                               skip_fs=None if args.skip_ps is None
                                               else 1000.0 * args.skip_ps)
    write_spectra(args.output, spectra)
    print(f"{args.output}: {len(spectra)} spectra from {summary['n_frames']} frames "
          f"({summary['first_frame']}..{summary['last_frame']}) of {summary['n_atoms']} atoms, "
          f"dt {summary['dt_fs']:g} fs, correlation window {summary['time_window_fs']:g} fs, "
          f"T {summary['temperature_K']:.1f} K (kinetic {summary['kinetic_temperature_K']:.1f} K)")
    if "blocks" in summary:
        b = summary["blocks"]
        print(f"  intensity_std: standard error over {b['n']} blocks of {b['frames_each']} "
              f"frames, for {len(b['spectra'])} of the {len(spectra)} spectra")
    if "e_max" in given and args.e_max > summary["nyquist_meV"]:
        import warnings

        warnings.warn(f"{args.trajectory}: frames {summary['dt_fs']:g} fs apart resolve "
                      f"energies up to {summary['nyquist_meV']:.1f} meV only (--e-max "
                      f"{args.e_max:g}); vibrations faster than that fold back into lower "
                      f"energies: write frames more often (mlff-ins md --every)")
    for element, fits in summary.get("qens", {}).items():
        d, f = fits["D_msd_A2_per_ps"], fits["D_fickian_A2_per_ps"]
        print(f"  {element}: D from MSD {d['value']:.4g} ± {d['std']:.2g} Å²/ps; "
              f"from Lorentzian widths {f['value']:.4g} ± {f['std']:.2g} Å²/ps")
    if summary.get("qens") and "blocks" not in summary:
        print("  (± of D: the fits' own standard errors, which take correlated lags as "
              "independent and understate the uncertainty; --blocks N gives the spread over "
              "blocks)")
    _plot_spectra_if_asked(args, spectra)
    return 0


def _mesh_arg(values):
    """--mesh: one number (phonopy's length, Angstrom) or three integers."""
    try:
        nums = [float(v) for v in values]
    except ValueError:
        nums = []
    if len(nums) == 1 and nums[0] > 0:
        return nums[0]
    if len(nums) == 3 and all(v.is_integer() and v > 0 for v in nums):
        return [int(v) for v in nums]
    raise InputError(f"--mesh {' '.join(values)}: give one length (Angstrom) or three "
                     "positive integers")


def _add_phonons(sub) -> None:
    p = sub.add_parser(
        "phonons", help="harmonic phonons by finite displacements (phonopy, batched model calls)",
        description="Finite-displacement phonons of STRUCTURE with a model bundle: phonopy "
                    "generates the displaced supercells, the model evaluates them many per call "
                    "(every ensemble member), phonopy builds the force constants. Or from DFT "
                    "force sets with --force-sets DIR. Writes OUTPUT (HDF5: force constants per "
                    "member, mesh frequencies and eigenvectors, DOS and partial DOS, band "
                    "structure, imaginary modes) and, next to it, NAME_phonopy_params.yaml "
                    "(NAME = OUTPUT without .h5; mean force constants, for phonopy and "
                    "Euphonic). Frequencies in THz and meV; imaginary modes are negative and "
                    "reported. With --model a stopped run (Ctrl-C, kill) keeps its relaxation "
                    "and the forces done so far in OUTPUT.partial/: the same command run again "
                    "continues there (work of another structure or model in it is done again), "
                    "and the folder is removed once OUTPUT is written.",
        epilog="example: mlff-ins phonons si.cif --model models/si --supercell 3 3 3 -o si_phonons.h5 --plot\n         mlff-ins phonons --force-sets phonopy_dir --supercell 2 2 2 -o dft_phonons.h5",
        formatter_class=_HelpFormatter)
    p.add_argument("structure", nargs="?", help="unit cell (CIF, POSCAR, extxyz, LAMMPS data, "
                   "...); not with --force-sets")
    _add_structure_options(p)
    src_ = p.add_mutually_exclusive_group(required=True)
    src_.add_argument("--model", metavar="DIR|NAME",
                      help="model bundle folder, e.g. models/si; si-reference, the silicon "
                           "reference ensemble shipped in the package; or a universal model "
                           "whose weights ship in its wheel: sevennet-0, sevennet-l3i5, "
                           "sevennet-mf-0, chgnet")
    src_.add_argument("--force-sets", metavar="DIR",
                      help="phonopy folder, any layout phonopy.load takes: phonopy_params.yaml, "
                           "phonopy_disp.yaml or phonopy.yaml (with FORCE_SETS, FORCE_CONSTANTS "
                           "or force_constants.hdf5 when forces are not inside), or a unit cell "
                           "(POSCAR-unitcell, POSCAR, --unitcell) with FORCE_SETS (type 1 or 2) "
                           "and --supercell; bohr-based calculators (ABACUS, QE, ...) are "
                           "converted to Å")
    _add_members_option(p)
    p.add_argument("--supercell", type=int, nargs="+", default=None, metavar="N",
                   help="supercell: 1 integer (N N N), 3 (diagonal) or 9 (matrix); default "
                        "2 2 2 with --model; with --force-sets the supercell of the force set (as "
                        "phonopy --dim), needed for a bare unit cell + FORCE_SETS")
    p.add_argument("--unitcell", metavar="FILE",
                   help="--force-sets: the unit cell (any file ASE reads, or the --calculator's "
                        "own format), instead of POSCAR-unitcell/POSCAR or the yaml's")
    p.add_argument("--calculator", metavar="NAME",
                   help="--force-sets: the DFT code of a folder without a yaml, phonopy's name "
                        "(vasp, qe, abacus, abinit, cp2k, ...): its cell file and units (bohr "
                        "for qe, abacus, ...); default vasp (Å, eV/Å)")
    p.add_argument("--fc-calculator", choices=["traditional", "symfc", "alm"], default=None,
                   help="--force-sets: phonopy's force-constant solver (default: phonopy's; "
                        "traditional, with a warning, when that fails)")
    p.add_argument("--primitive", default="auto",
                   help="primitive cell: auto (default), P, F, I, A, C, R (phonopy's names)")
    p.add_argument("--relax", action="store_true",
                   help="relax positions and cell (symmetry kept) with the model first")
    p.add_argument("--fmax", type=float, default=1e-3, metavar="EV_PER_A",
                   help="--relax: force tolerance, eV/Å (default 1e-3)")
    p.add_argument("--relax-steps", type=int, default=500, metavar="N",
                   help="--relax: most optimiser steps before it is refused as not converged "
                        "(default 500; a disordered cell of hundreds of atoms needs thousands)")
    p.add_argument("--distance", type=float, default=0.01, metavar="A",
                   help="displacement, Å (default 0.01)")
    p.add_argument("--plusminus", choices=["auto", "yes"], default="auto",
                   help="displace both ways everywhere (yes) or only where symmetry does not "
                        "relate + and - (auto, phonopy's default)")
    p.add_argument("--mesh", nargs="+", default=["40"], metavar="N",
                   help="q-mesh: one length in Å (phonopy's rule, default 40) or three integers")
    p.add_argument("--t-max", type=_positive_float, default=1000.0, metavar="K",
                   help="thermal properties (C_V, S, F, zero-point energy; phonopy's) from 0 to "
                        "this temperature, K (default 1000)")
    p.add_argument("--batch-atoms", type=int, default=None, metavar="N",
                   help="atoms per batched model call (default 4096 on a GPU, 512 on a CPU)")
    p.add_argument("--no-symmetrize", action="store_true",
                   help="keep the raw force constants (default: symmetrized, sum rules imposed)")
    p.add_argument("--no-nac", action="store_true",
                   help="--force-sets: leave out the non-analytical correction (LO-TO splitting) "
                        "that a BORN file or nac_params in phonopy_params.yaml otherwise add")
    p.add_argument("--device", default="cpu",
                   help="model device: cpu, cuda, cuda:N or auto (cuda if available, else cpu; "
                        "default cpu)")
    p.add_argument("-o", "--output", required=True, help="phonons HDF5 file, e.g. si_phonons.h5")
    p.add_argument("--plot", action="store_true",
                   help="also write OUTPUT.png (bands + DOS) and NAME_heat_capacity.png")
    p.set_defaults(func=_run_phonons)


def _run_phonons(args) -> int:
    import time

    from tqdm import tqdm

    from mlff_ins.phonons.finite_displacement import (phonons_from_force_sets,
                                                      phonons_from_model, relax)
    from mlff_ins.phonons.io import write_phonons
    from mlff_ins.phonons.properties import compute_properties

    mesh = _mesh_arg(args.mesh)
    t0 = time.perf_counter()
    if args.force_sets:
        if args.structure:
            raise InputError("give either STRUCTURE with --model, or --force-sets DIR alone")
        for opt in ("index", "types"):
            if getattr(args, opt) is not None:
                raise InputError(f"--{opt}: only with STRUCTURE and --model (--force-sets "
                                 "reads its own cell; see --unitcell)")
        # options of the model route that a force set has no use for
        for opt, default in (("relax", False), ("fmax", 1e-3), ("distance", 0.01),
                             ("plusminus", "auto"), ("batch_atoms", None), ("device", "cpu"),
                             ("members", None)):
            if getattr(args, opt) != default:
                raise InputError(f"--{opt.replace('_', '-')}: only with --model (a force set "
                                 "carries its own displacements and forces)")
        pset = phonons_from_force_sets(args.force_sets, supercell=args.supercell,
                                       primitive=args.primitive, unitcell=args.unitcell,
                                       calculator=args.calculator,
                                       fc_calculator=args.fc_calculator,
                                       symmetrize=not args.no_symmetrize, nac=not args.no_nac)
        prov = pset.provenance
        conv = prov.get("converted_to_angstrom_eV")
        print(f"read {' + '.join(prov['files'])} ({prov['calculator']}"
              + (f"; lengths in {conv['length']}, force constants in {conv['force_constants']}"
                 " converted to Å and eV/Å²)" if conv else ")")
              + f"; force constants: {prov['force_constants_from']}")
        print("non-analytical correction: " + (
            "on (Born charges and dielectric tensor found)" if pset.provenance["nac"] else
            "off" + (" (--no-nac)" if args.no_nac else " (no BORN file or nac_params)")))
    else:
        if not args.structure:
            raise InputError("--model needs a STRUCTURE (the unit cell)")
        if args.no_nac:
            raise InputError("--no-nac: only with --force-sets (a model gives no Born charges, "
                             "so its phonons have no non-analytical correction)")
        for opt in ("unitcell", "calculator", "fc_calculator"):
            if getattr(args, opt):
                raise InputError(f"--{opt.replace('_', '-')}: only with --force-sets (with "
                                 "--model the structure is STRUCTURE)")
        if args.supercell is None:
            args.supercell = [2, 2, 2]
        from mlff_ins.model.calculator import load_calculator
        from mlff_ins.phonons.finite_displacement import supercell_matrix

        supercell_matrix(args.supercell)          # a bad --supercell fails before any work
        atoms = _read_structure(args.structure, args.index, args.types)
        calc = load_calculator(args.model, device=args.device, members=args.members)
        calc.check_elements(atoms, source=args.structure)
        # a killed run keeps its relaxation and forces in OUTPUT.partial/, which a rerun of
        # the same command continues (a model retrained in place is another model)
        from mlff_ins.model.shipped import bundle_digest, shown_name
        from mlff_ins.phonons.partial import PhononProgress

        # a bundle by its digest (whatever path names it), a universal model by its name
        digest = bundle_digest(args.model)
        keep = PhononProgress(args.output, {"members": args.members, **(
            {"bundle_sha256": digest} if digest else {"model": shown_name(str(args.model))})})
        with sigterm_as_interrupt():     # `kill PID`: stop as Ctrl-C does, the work kept
            if args.relax:
                if args.relax_steps < 1:
                    raise InputError(f"--relax-steps must be at least 1, not "
                                     f"{args.relax_steps}")
                atoms = relax(atoms, calc, fmax=args.fmax, steps=args.relax_steps, keep=keep)
                print(f"relaxed: cell lengths {np.round(atoms.cell.lengths(), 5).tolist()} Å")
            bar = tqdm(desc="displaced supercells", unit="cell", disable=None)
            pset = phonons_from_model(atoms, calc, args.supercell, distance=args.distance,
                                      plusminus=True if args.plusminus == "yes" else "auto",
                                      primitive=args.primitive,
                                      symmetrize=not args.no_symmetrize,
                                      max_batch_atoms=args.batch_atoms, progress=bar.update,
                                      keep=keep)
            bar.close()
        pset.provenance.update(model=str(args.model), structure=str(args.structure),
                               relaxed=bool(args.relax))
        if args.members is not None:
            pset.provenance["members"] = list(args.members)
    props = compute_properties(pset.members, mesh, t_max=args.t_max)
    paths = write_phonons(args.output, pset, props)
    if not args.force_sets:
        keep.remove()               # the output holds it all now
    f = props.frequencies_THz
    prov = pset.provenance
    print(f"{paths[0]}: {len(pset.members)} member(s), mesh {props.mesh.tolist()}, "
          f"{f.shape[-1]} branches, highest {f.max():.3f} THz ({f.max() * 4.135667696:.2f} meV)")
    if "n_displacements" in prov:
        print(f"  {prov['n_displacements']} displaced supercells of {prov['supercell_atoms']} "
              f"atoms; model calls {pset.timings_s['forces']:.1f} s, force constants "
              f"{pset.timings_s['force_constants']:.1f} s, total {time.perf_counter() - t0:.1f} s")
    print(f"  {paths[1]}")
    th = props.thermal
    if th is not None:
        fu = th["per_formula_unit"]
        line = f"  per formula unit {th['formula']}: zero-point energy " \
               f"{fu['zero_point_energy'].mean():.3f} kJ/mol"
        t = th["temperature_K"]
        if t[-1] >= 300:
            i = int(np.argmin(np.abs(t - 300)))
            line += (f", C_V({t[i]:g} K) {fu['heat_capacity'][:, i].mean():.2f} J/(K mol), "
                     f"S {fu['entropy'][:, i].mean():.2f} J/(K mol)")
        print(line + f" ({paths[0]}:/thermal)")
    if props.imaginary:
        worst = min(props.imaginary, key=lambda x: x[1])
        print(f"  imaginary modes at {len(props.imaginary)} q-points (listed in "
              f"{paths[0]}:/imaginary); lowest {worst[1]:.3f} THz at q = "
              f"({', '.join(f'{x:.3f}' for x in worst[0])}) ({worst[2]})", file=sys.stderr)
    if args.plot:
        from mlff_ins.phonons.plot import plot_phonons

        png = Path(args.output).with_suffix(".png")
        plot_phonons(props, png, title=Path(args.output).stem)
        print(f"  plot: {png}")
        if th is not None:
            from mlff_ins.phonons.plot import plot_heat_capacity

            png = Path(args.output).with_name(Path(args.output).stem + "_heat_capacity.png")
            plot_heat_capacity(th, png, title=Path(args.output).stem)
            print(f"  plot: {png}")
    return 0


def _add_ins(sub) -> None:
    p = sub.add_parser(
        "ins", help="INS spectra from a phonons file: VISION/TOSCA S(E), powder S(Q,E)",
        description="INS from harmonic phonons (the OCLIMAX/AbINS route, the same INS engine as "
                    "`mlff-ins spectra --instrument vision`). VISION/TOSCA: powder S(E) of both "
                    "banks (45°, 135°) in the incoherent approximation with a Debye-Waller "
                    "factor per atom, phonon orders 1..N by isotropic convolution, the "
                    "instrument's kinematics and resolution. --2d (or a direct-geometry "
                    "--instrument): powder S(Q,E) = coherent one-phonon (Q directions on spheres) "
                    "+ multiphonon and incoherent parts; --ei applies the kinematic mask and the "
                    "resolution. With an ensemble, every member is computed and intensity_std "
                    "written. Energies meV (neutron energy loss), Q 1/Å, intensities "
                    "barn/(sr meV) per atom.",
        epilog="example: mlff-ins ins si_phonons.h5 --instrument vision -T 10 -o si_vision.h5 "
               "--plot",
        formatter_class=_HelpFormatter)
    p.add_argument("phonons", help="phonons HDF5 file written by `mlff-ins phonons`")
    p.add_argument("-o", "--output", required=True, help="spectra HDF5 file, e.g. si_vision.h5")
    p.add_argument("-T", "--temperature", type=_temperature, default=10.0, metavar="K",
                   help="sample temperature, K (default 10): Bose factors and Debye-Waller")
    p.add_argument("--mesh", nargs="+", default=["80"], metavar="N",
                   help="q-mesh for DOS and Debye-Waller: a length in Å (default 80: Si's VISION "
                        "S(E) is then within MSE 0.0002 of a 120 Å mesh, at 40 Å 0.002) or 3 "
                        "integers, Γ-centred, along the reciprocal axes of the phonons' "
                        "primitive cell (the modes of an MD cell of N x N x M unit cells: "
                        "phonons with --primitive P on that unit cell, then --mesh N N M)")
    p.add_argument("--e-step", type=_positive_float, metavar="meV",
                   help="VISION/TOSCA S(E): energy bin, meV (default 0.1)")
    p.add_argument("--2d", dest="two_d", action="store_true", help="also powder S(Q,E)")
    p.add_argument("--e-max-2d", type=_positive_float, metavar="meV",
                   help="S(Q,E): highest energy, meV (default 150)")
    p.add_argument("--e-step-2d", type=_positive_float, metavar="meV",
                   help="S(Q,E): energy bin, meV (default 0.5)")
    _add_neutron_options(
        p, instrument_default="vision",
        instrument_help="vision (default) or tosca: S(E) of both banks; direct, or a chopper "
                        "spectrometer whose resolution ResINS models (with --ei): powder S(Q,E)",
        directions_default=200, q_min_default=0.0,
        directions_help="S(Q,E): Q directions per |Q| for the coherent powder average",
        e_max_help="highest energy transfer of the VISION/TOSCA S(E), meV (default 500); "
                   "that of S(Q,E) is --e-max-2d",
        orders_help="VISION/TOSCA S(E) and multiphonon maps: phonon orders 1..N of the "
                    "incoherent approximation (default 10)")
    p.set_defaults(func=_run_ins)


def _run_ins(args) -> int:
    from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
    from mlff_ins.neutron.scattering_lengths import parse_isotopes
    from mlff_ins.neutron.spectrum import write_spectra
    from mlff_ins.phonons.io import read_phonons

    given = _neutron_defaults(args, q_min=0.0, directions=200, e_step=0.1, e_max_2d=150.0,
                              e_step_2d=0.5)
    indirect = args.instrument in INDIRECT
    if not indirect:
        args.two_d = True
        _refuse(given, ["e_max", "e_step"], f"sets the VISION/TOSCA S(E); --instrument "
                                            f"{args.instrument} writes S(Q,E) (--e-max-2d)")
    elif not args.two_d:
        _refuse(given, ["q_min", "q_max", "q_step", "directions", "e_max_2d", "e_step_2d",
                        "fwhm", "seed", "ei", "angles", "resolution", "chopper_frequency",
                        "chopper_package"], "applies to S(Q,E); add --2d")
    _check_direct_geometry(args, given)
    if args.phonon_orders < 1 or args.directions < 1:
        raise InputError("--phonon-orders and --directions must be at least 1")
    if args.q_min < 0 or args.q_min >= args.q_max:
        raise InputError(f"--q-min {args.q_min} must be >= 0 and below --q-max {args.q_max}")
    pset = read_phonons(args.phonons)
    elements = set(pset.members[0].unitcell.symbols)
    isotopes = parse_isotopes(args.isotope)
    for el in isotopes:
        if el not in elements:
            raise InputError(f"--isotope {el}=...: {args.phonons} has no {el} "
                             f"(its elements: {', '.join(sorted(elements))})")
    opts = InsOptions(instrument=args.instrument, temperature_K=args.temperature,
                      n_phonon=args.phonon_orders, mesh=_mesh_arg(args.mesh),
                      e_max_meV=args.e_max, e_step_meV=args.e_step, two_d=args.two_d,
                      q_min=args.q_min, q_max=args.q_max, q_step=args.q_step,
                      e_max_2d_meV=args.e_max_2d, e_step_2d_meV=args.e_step_2d,
                      n_directions=args.directions, ei_meV=args.ei,
                      angles_deg=tuple(args.angles), resolution_fraction=args.resolution,
                      fwhm_2d_meV=args.fwhm, chopper_frequency_hz=args.chopper_frequency,
                      chopper_package=args.chopper_package, isotopes=isotopes, seed=args.seed,
                      max_memory_gb=args.max_memory)
    spectra = ins_from_phonons(pset, opts, {"phonons_file": str(args.phonons),
                                            "phonons_source": pset.source})
    write_spectra(args.output, spectra)
    print(f"{args.output}: {', '.join(spectra)} ({len(pset.members)} member(s), "
          f"T {args.temperature:g} K)")
    _plot_spectra_if_asked(args, spectra)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on the embedded silicon DFT data (minutes on 2 cores)",
        description="An end-to-end example (about 5 minutes on 2 CPU cores): check the embedded "
                    "CP2K silicon data set, train a tiny NequIP model on it and print its errors "
                    "on held-out frames (to show training); then, with the shipped silicon "
                    "reference model, diamond Si through the phonon route (relaxed cell, band "
                    "plot, Γ/X/L frequencies against experiment, VISION S(E) at 300 K) and a "
                    "64-atom amorphous cell through the MD route (300 K, VDOS and VISION S(E) "
                    "from the trajectory), laid over each other by `compare`. Each step is "
                    "printed as the mlff-ins command it runs; report.md in the output folder "
                    "links the plots.",
        epilog="example: mlff-ins demo -o demo\n"
               "         mlff-ins demo --full --model si-reference "
               "-o si-case-study",
        formatter_class=_HelpFormatter)
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default mlff-ins-demo; with --full si-case-study)")
    p.add_argument("--epochs", type=int, default=None, help="override the tiny preset's epochs")
    p.add_argument("--model", metavar="DIR|NAME",
                   help="force field of the spectra and of the case study (a model bundle or a "
                        "universal model name; default: the shipped silicon reference model)")
    p.add_argument("--md-steps", type=int, default=1000, metavar="N",
                   help="steps (2 fs) of the amorphous cell's MD (default 1000)")
    p.add_argument("--device", metavar="DEV",
                   help="where the models run (the tiny training, phonons, md, spectra; with "
                        "--full also predict): cpu (default), cuda, cuda:N or auto; a case study "
                        "may move between devices when resumed")
    full = p.add_argument_group(
        "the case study (--full)",
        "c-Si, a-Si (melt-quench) and a vacancy cell from a force field to VISION spectra by "
        "phonons, MD and the direct predictor, every pair compared; report.md and metrics.json "
        "in the output folder. Hours on 2 CPU cores at --size full (the default), minutes at "
        "--size quick. Rerun the same command to continue a killed study.")
    full.add_argument("--full", action="store_true", help="run the case study")
    full.add_argument("--size", choices=["full", "quick"], default="full",
                      help="cell sizes and run lengths (default full)")
    full.add_argument("--step", metavar="NAME",
                      help="run one of the steps that are not a CLI command (structures, "
                           "glass_check, vacancy_difference, report), as the shell script does")
    full.add_argument("--dry-run", action="store_true",
                      help="print the study as a shell script of mlff-ins commands, run nothing")
    full.add_argument("--no-predictor", action="store_true",
                      help="leave out the direct predictor's route")
    full.add_argument("--md-members", nargs="+", type=int, metavar="K",
                      help="the ensemble members that drive the MD runs (default: all; each "
                           "member is one model call per MD step, so --md-members 0 runs the "
                           "MD of a 3-member model in a third of the time); the phonon routes "
                           "use every member, for their bands")
    full.add_argument("--structures", nargs="+", metavar="NAME",
                      choices=["c-Si", "a-Si", "vacancy"],
                      help="run the shared steps and those of these structures only (c-Si, "
                           "a-Si, vacancy), to spread the study over several sittings; the "
                           "report waits for a run without this option")
    full.add_argument("--prune", action="store_true",
                      help="after the run, remove the large files (trajectories, force "
                           "constants of large cells) that no unfinished step reads; the steps "
                           "that made them stay done (done.json keeps what the report needs)")
    p.set_defaults(func=_run_demo)


def _run_case_study(args) -> int:
    from dataclasses import replace

    from mlff_ins.casestudy import SIZES, plan, prune, run_study, shell_script

    size = SIZES[args.size]
    if args.no_predictor:
        size = replace(size, predictor=False)
    study = plan(args.output or "si-case-study", args.model, size, device=args.device,
                 md_members=args.md_members)
    if args.dry_run:
        if args.prune or args.structures or args.step:
            raise InputError("--dry-run prints the whole study; --prune, --structures and "
                             "--step act on a run (drop them, or --dry-run)")
        print(shell_script(study))
        return 0
    if args.model:
        _check_model_option(args.model)
    # `kill PID` stops a study as Ctrl-C does: the running MD closes its trajectory and the
    # seconds it ran are kept in timings.json (the default SIGTERM ends the process at once)
    with sigterm_as_interrupt():
        run_study(study, only=args.step, structures=args.structures)
        if args.prune:
            freed = prune(study)
            print(f"pruned {freed / 2 ** 20:.0f} MiB from {study.out}")
    if args.step is None and args.structures is None:
        print(f"case study done: {study.out / 'report.md'} and {study.out / 'metrics.json'}")
    elif args.structures:
        print(f"done: the steps of {', '.join(args.structures)} in {study.out}; run without "
              f"--structures for the rest and the report")
    return 0


def _run_demo(args) -> int:
    if args.full:
        return _run_case_study(args)
    for name in ("step", "dry_run", "no_predictor", "md_members", "structures", "prune"):
        if getattr(args, name):
            raise InputError(f"--{name.replace('_', '-')} applies to the case study; add --full")
    if args.md_steps < 100:
        raise InputError(f"--md-steps: at least 100 (got {args.md_steps})")
    args.output = args.output or "mlff-ins-demo"
    from mlff_ins.casestudy import default_model
    from mlff_ins.demo import (SI_EXPERIMENT_THZ, matched_peaks, run_demo, run_mission_demo,
                               write_demo_report)

    model = args.model or default_model()
    _check_model_option(model)
    out = run_demo(args.output, epochs=args.epochs, device=args.device)
    _print_metrics(out)
    print(f"from structure to spectra by two routes with "
          f"{model if args.model else 'the shipped reference model'}:")
    res = run_mission_demo(args.output, model, md_steps=args.md_steps, device=args.device)
    print(f"c-Si: relaxed lattice constant {res['lattice_A']:.4f} Å (experiment 5.431 Å); "
          + ", ".join(f"{k} {v:.2f} (exp {SI_EXPERIMENT_THZ[k]:.2f})"
                      for k, v in res["frequencies_THz"].items()) + " THz")
    pair = res["compare"]["pairs"][0]
    print(f"c-Si phonons against a-Si MD: cosine {pair['cosine']:.3f}; {matched_peaks(pair)}")
    report = write_demo_report(Path(args.output), out, model, res)
    print(f"report: {report} (overlay: {res['paths']['compare'] / 'compare.png'})")
    return 0


def _check_model_option(model: str) -> None:
    if not Path(model).exists():
        from mlff_ins.model.universal import is_universal

        if not is_universal(model):
            raise InputError(f"--model {model}: no such model bundle folder or model name "
                             f"(si-reference, sevennet-0, sevennet-l3i5, sevennet-mf-0, chgnet)")


def _add_database(sub) -> None:
    p = sub.add_parser(
        "database", help="build the direct predictor's training database (relax, phonons, INS)",
        description="The training database of the direct predictor: every crystal of a "
                    "structure source relaxed with a teacher, its finite-displacement phonons "
                    "and INS spectra computed with the same code as `phonons` and `ins`.",
        epilog="example: mlff-ins database build --structures aflow,substitutions "
               "--teacher sevennet-0 -o db.h5 --workers 2",
        formatter_class=_HelpFormatter)
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = dsub.add_parser(
        "build", help="compute every structure not yet in the database (resumable)",
        description="Relax -> phonons -> INS for every structure of --structures not yet in "
                    "OUTPUT. Each finished entry is saved at once (OUTPUT.parts/, merged into "
                    "OUTPUT every --consolidate-every entries and at the end), so a killed "
                    "build loses only the entries in flight: rerun the same command to go on. "
                    "Entries with imaginary modes are kept and flagged; failures are kept with "
                    "their reason and not retried. With --records FILE the teacher's work "
                    "(relaxed cell, displacements, forces) of every entry is also added to FILE, "
                    "a compact file to keep, and entries recorded there but missing from OUTPUT "
                    "are rebuilt from it without the teacher.",
        epilog="example: mlff-ins database build --structures aflow,ase-bulk,dcdft,"
               "substitutions --teacher sevennet-0 -o db.h5",
        formatter_class=_HelpFormatter)
    b.add_argument("--structures", required=True, metavar="SOURCE",
                   help="comma-separated sources: aflow (pymatgen's 288 AFLOW prototypes), "
                        "ase-bulk, dcdft, substitutions (element substitutions on the "
                        "prototypes, the most probable by Hautier et al. 2011 first), or a "
                        "structure file or folder")
    b.add_argument("--teacher", default="sevennet-0", metavar="NAME|DIR|YAML",
                   help="universal model name (sevennet-0, sevennet-l3i5, sevennet-mf-0, "
                        "chgnet), a model bundle folder (or si-reference) or a calculator YAML "
                        "(default: sevennet-0; docs/benchmarks.md, 'Universal potentials against "
                        "DFT force sets', compares them)")
    b.add_argument("-o", "--output", required=True, help="database file (HDF5)")
    b.add_argument("--records", metavar="FILE",
                   help="teacher records file (HDF5, created if missing): every finished entry "
                        "is added to it, and its entries missing from OUTPUT are rebuilt from "
                        "it first, without the teacher")
    b.add_argument("--max-atoms", type=int, default=12, metavar="N",
                   help="skip structures whose primitive cell has more atoms")
    b.add_argument("--per-prototype", type=int, default=40, metavar="N",
                   help="substitutions: at most N per AFLOW prototype (default 40)")
    b.add_argument("--substitute", choices=("stable", "all"), default="stable",
                   help="substitutions: stable: only of the prototypes the teacher finds "
                        "stable (their own entries are built first, adding aflow to the "
                        "sources if need be; a prototype with imaginary modes gives unstable "
                        "substitutions more often); all: of every prototype")
    b.add_argument("--supercell-length", type=float, default=9.0, metavar="Å",
                   help="smallest width of the phonon supercell (Å)")
    b.add_argument("--max-supercell-atoms", type=int, default=256, metavar="N",
                   help="cap on the phonon supercell (atoms)")
    b.add_argument("--retry-supercell-length", type=float, default=13.5, metavar="Å",
                   help="smallest width (Å) of the wider supercell in which an entry "
                        "imaginary only between its supercell's q-points gets its phonons "
                        "again, within the cap (an interpolation artefact, or an instability "
                        "the first one could not hold; 0: no retry)")
    b.add_argument("--limit", type=int, metavar="N", help="compute at most N new entries")
    b.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local processes (torch threads are split between them)")
    b.add_argument("--dask", metavar="ADDRESS",
                   help="a running dask.distributed scheduler (e.g. tcp://host:8786) to hand "
                        "the entries to, instead of local processes; a worker process computes "
                        "one entry at a time (start workers with --nthreads 1)")
    b.add_argument("--consolidate-every", type=int, default=20, metavar="N",
                   help="merge finished entries into OUTPUT every N entries (or every "
                        "tenth of its size when that is more: a merge copies the file)")
    b.add_argument("-T", "--temperature", type=_temperature, default=10.0, metavar="K",
                   help="temperature of the spectra (K)")
    b.add_argument("--device", default="cpu", help="teacher device: cpu, cuda, cuda:N or auto")
    b.set_defaults(func=_run_database_build)
    r = dsub.add_parser(
        "respectra", help="recompute every spectrum from the stored force constants",
        description="A copy of DATABASE with every spectrum recomputed from the stored force "
                    "constants (no teacher needed) at another temperature or on other grids. "
                    "Every option left out keeps the database's own value.",
        epilog="example: mlff-ins database respectra db.h5 -T 300 -o db_300K.h5",
        formatter_class=_HelpFormatter)
    r.add_argument("database", help="database file written by `database build`")
    r.add_argument("-o", "--output", required=True, help="new database file")
    r.add_argument("-T", "--temperature", type=_temperature, metavar="K",
                   help="temperature (K)")
    for flag, unit, what in (("--e-max", "meV", "end of the 1D energy grid (meV)"),
                             ("--e-step", "meV", "step of the 1D energy grid (meV)"),
                             ("--q-max", "1/Å", "end of the S(Q,E) |Q| grid (1/Å)"),
                             ("--q-step", "1/Å", "step of the S(Q,E) |Q| grid (1/Å)"),
                             ("--e-max-2d", "meV", "end of the S(Q,E) energy grid (meV)"),
                             ("--e-step-2d", "meV", "step of the S(Q,E) energy grid (meV)")):
        r.add_argument(flag, type=float, metavar=unit, help=what)
    r.set_defaults(func=_run_database_respectra)
    x = dsub.add_parser(
        "records", help="export the teacher records of a database (for `build --records`)",
        description="Add the teacher record (relaxed cell, supercell, displacements and the "
                    "teacher's forces in float32) of every entry of DATABASE to OUTPUT, "
                    "created if missing; entries already there are kept as they are. "
                    "Databases written before teacher records existed hold no displacement "
                    "data and cannot be exported.",
        epilog="example: mlff-ins database records db.h5 -o records.h5",
        formatter_class=_HelpFormatter)
    x.add_argument("database", help="database file written by `database build`")
    x.add_argument("-o", "--output", required=True, help="teacher records file (HDF5)")
    x.set_defaults(func=_run_database_records)
    i = dsub.add_parser("info", help="count the entries, elements and flags of a database "
                                     "or of a teacher records file",
                        description="Print a few lines on a database (entries by status: ok, "
                                    "imaginary, failed; the teacher; the elements of the ok "
                                    "entries; seconds per entry; the first failures and why) "
                                    "or on a teacher records file. Reads only.",
                        epilog="example: mlff-ins database info db.h5",
                        formatter_class=_HelpFormatter)
    i.add_argument("database", help="database file, or teacher records file (--records)")
    i.set_defaults(func=_run_database_info)


def _run_database_build(args) -> int:
    from mlff_ins.predict.database import BuildOptions, SpectraOptions, build_database
    from mlff_ins.predict.sources import iter_structures

    for opt in ("max_atoms", "workers", "consolidate_every", "max_supercell_atoms"):
        if getattr(args, opt) < 1:
            raise InputError(f"--{opt.replace('_', '-')} must be at least 1")
    for opt in ("limit", "per_prototype"):
        if getattr(args, opt) is not None and getattr(args, opt) < 0:
            raise InputError(f"--{opt.replace('_', '-')} must be 0 or more, not "
                             f"{getattr(args, opt)}")
    if args.supercell_length <= 0 or (args.retry_supercell_length or 0) < 0:
        raise InputError("--supercell-length must be positive and --retry-supercell-length "
                         "0 (no retry) or positive")
    opts = BuildOptions(teacher=args.teacher, device=args.device,
                        spectra=SpectraOptions(temperature_K=args.temperature),
                        supercell_length_A=args.supercell_length,
                        max_supercell_atoms=args.max_supercell_atoms,
                        retry_supercell_length_A=args.retry_supercell_length or None)
    sources = [s.strip() for s in args.structures.split(",") if s.strip()]
    stable = args.substitute == "stable" and "substitutions" in sources
    if stable and "aflow" not in sources:
        # the prototypes' own entries decide which are substituted
        sources.insert(0, "aflow")
        print("--substitute stable: the AFLOW prototypes are built first", flush=True)
    spec = ",".join(sources)
    structures = iter_structures(spec, max_atoms=args.max_atoms,
                                 per_prototype=args.per_prototype)
    print(f"collecting the structures of {spec} ...", flush=True)
    summary = build_database(list(structures), args.output, opts, workers=args.workers,
                             dask=args.dask, limit=args.limit,
                             consolidate_every=args.consolidate_every, records=args.records,
                             stable_parents=stable)
    print(f"{args.output}: {summary['entries']} entries; this run added {summary['added']} "
          f"({summary['ok']} ok, {summary['imaginary']} with imaginary modes, "
          f"{summary['failed']} failed); {summary['skipped_done']} were done before"
          + (f"; {summary['skipped_parent']} substitutions left out (their prototype has "
             "imaginary modes or failed; --substitute all builds them)"
             if summary["skipped_parent"] else ""))
    if args.records:
        print(f"{args.records}: {summary['restored']} entries rebuilt from it without the "
              f"teacher, {summary['added'] - summary['restored']} added to it"
              + (f", {summary['records_exported']} earlier entries exported to it"
                 if summary["records_exported"] else "")
              + (f"; {summary['records_lacking']} entries of {args.output} hold no "
                 "displacement data and have no record" if summary["records_lacking"] else ""))
    return 0


def _run_database_records(args) -> int:
    from mlff_ins.predict.database import export_records

    counts = export_records(args.database, args.output)
    print(f"{args.output}: {counts['added']} records added, {counts['present']} were there"
          + (f"; {counts['lacking']} entries hold no displacement data and were left out"
             if counts["lacking"] else ""))
    return 0


def _run_database_respectra(args) -> int:
    from mlff_ins.predict.database import respectra, stored_spectra_options

    fields = {"temperature": "temperature_K", "e_max": "e_max_meV", "e_step": "e_step_meV",
              "q_max": "q_max", "q_step": "q_step", "e_max_2d": "e_max_2d_meV",
              "e_step_2d": "e_step_2d_meV"}
    changes = {field: getattr(args, opt) for opt, field in fields.items()
               if getattr(args, opt) is not None}
    for field, value in changes.items():
        if field != "temperature_K" and not value > 0:
            raise InputError(f"--{field.removesuffix('_meV').replace('_', '-')}: must be "
                             f"positive (got {value:g})")
    before = stored_spectra_options(args.database)
    n = respectra(args.database, args.output, **changes)
    changed = ", ".join(f"{k} {getattr(before, k):g} -> {v:g}" for k, v in changes.items()
                        if v != getattr(before, k)) or "nothing changed"
    print(f"{args.output}: {n} entries, spectra recomputed ({changed})")
    return 0


def _run_database_info(args) -> int:
    from mlff_ins.predict.database import database_summary

    print(database_summary(args.database))
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="lay spectra of any route and measured data over each other, with metrics",
        description="Put calculated spectra (files of phonons/ins, spectra, predict: FILE or "
                    "FILE:GROUP) and measured files (--measured) on one grid after one "
                    "resolution, compute every pair's agreement metrics (README: Comparing "
                    "with measurements) and write OUTPUT/compare.png, metrics.json and "
                    "report.md.",
        epilog="example: mlff-ins compare phonons_ins.h5 md_spectra.h5 --measured vision.txt "
               "--measured-unit cm-1 -o report/",
        formatter_class=_HelpFormatter)
    p.add_argument("files", nargs="*", metavar="FILE[:GROUP]",
                   help="spectra files of this package; :GROUP picks one group")
    p.add_argument("--measured", action="append", default=[], metavar="FILE",
                   help="measured data: Mantid SaveAscii v1/v2, ISIS/aCLIMAX .dat, NXSPE, "
                        "Mantid NeXus (SofQW, MDHisto); repeatable")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder")
    p.add_argument("--kind", default="s_e",
                   choices=["s_e", "vdos", "gdos", "sqe", "sqe_coh", "sqe_inc"],
                   help="which spectrum of each file")
    p.add_argument("--element", default="", metavar="EL",
                   help="compare this element's partial (default: totals)")
    p.add_argument("--label", action="append", default=[], metavar="TEXT",
                   help="legend label of each input, in order (files, then --measured)")
    p.add_argument("--background", default="none", choices=["none", "flat", "linear"],
                   help="background fitted with the scale factor against a measurement")
    p.add_argument("--e-range", nargs=2, type=float, metavar=("LO", "HI"),
                   help="compare and fit only between these energies (meV)")
    p.add_argument("--unit", default="meV", choices=ENERGY_UNITS,
                   help="energy unit of the plots and the report (metrics.json stays in meV)")
    p.add_argument("--instrument", choices=["vision", "tosca"],
                   help="resolution of the measured spectra (calculations are broadened to it)")
    p.add_argument("--bank", metavar="N|NAME",
                   help="which spectrum of a measured file with several (index, or backward, "
                        "forward, average for VISION)")
    p.add_argument("--measured-unit", choices=ENERGY_UNITS,
                   help="energy unit of a measured text file that does not name it (ueV: µeV)")
    p.add_argument("--measured-energy-gain", action="store_true",
                   help="the measured files count energy transfer positive for neutron energy "
                        "gain: negate their energy axis (this package counts energy loss "
                        "positive)")
    p.add_argument("--measured-x", choices=["edges", "centres"],
                   help="how to read the x column of a measured text file: bin edges (its last "
                        "row, y = e = 0 or x alone, is the closing edge) or centres (default: "
                        "edges where its last row holds x alone, else centres, as Mantid's "
                        "SaveAscii writes them)")
    p.add_argument("--q-bins", type=float, nargs=3, metavar=("QMIN", "QMAX", "DQ"),
                   help="|Q| bins (1/Å) for NXSPE measurements (default: 100 bins to the "
                        "largest |Q|)")
    p.add_argument("--residual", action="store_true",
                   help="2D: write measured − scaled calculated S(Q,E) (phonon-magnon "
                        "separation) to OUTPUT/residual.h5 and residual.png")
    p.add_argument("--residual-q-min", type=float, metavar="1/Å",
                   help="scale the calculation to the measurement at |Q| above this (1/Å; "
                        "default: upper half of the Q range)")
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    from mlff_ins.compare.report import CompareOptions, run_compare

    bank = args.bank
    if bank is not None and bank.lstrip("-").isdigit():
        bank = int(bank)
    q_edges = None
    if args.q_bins:
        lo, hi, dq = args.q_bins
        if not (hi > lo >= 0 and dq > 0):
            raise InputError("--q-bins: need 0 <= QMIN < QMAX and DQ > 0 (1/Å)")
        q_edges = np.arange(lo, hi + 0.5 * dq, dq)
    if args.e_range and not args.e_range[1] > args.e_range[0]:
        raise InputError("--e-range: HI must be above LO (meV)")
    opts = CompareOptions(kind=args.kind, element=args.element, background=args.background,
                          e_range=tuple(args.e_range) if args.e_range else None,
                          unit=args.unit, instrument=args.instrument, bank=bank,
                          q_edges=q_edges, measured_unit=args.measured_unit,
                          measured_x_edges=(None if args.measured_x is None
                                            else args.measured_x == "edges"),
                          measured_energy_gain=args.measured_energy_gain,
                          residual=args.residual, residual_q_min=args.residual_q_min,
                          labels=args.label)
    doc = run_compare(args.files, args.measured, args.output, opts)
    out = Path(args.output)
    for p in doc["pairs"]:
        def num(v, spec):
            return "—" if v is None else format(v, spec)

        line = f"{p['a']} vs {p['b']}: MSE {num(p['mse'], '.4g')}, cosine {num(p['cosine'], '.4f')}"
        if p.get("wasserstein_meV") is not None:
            line += f", W1 {p['wasserstein_meV']:.3f} meV"
        shifts = (p.get("peaks") or {}).get("shifts_meV") or []
        if shifts:
            line += f", peak shifts {', '.join(f'{s:+.2f}' for s in shifts)} meV"
        if p.get("fit"):
            fit = p["fit"]
            line += (f", χ²/N {num(fit['chi2_per_dof'], '.4g')}" if fit.get("weights") != "equal"
                     else ", equal weights (no error bars)") + f" (scale {fit['scale']:.4g})"
        print(line)
    print(f"{out / 'compare.png'}, {out / 'metrics.json'}, {out / 'report.md'}"
          + (f", {out / 'residual.h5'}" if args.residual else ""))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write spectra as CSV or Mantid ASCII for other tools",
        description="Write every spectrum of a spectra file as CSV (one file per spectrum, "
                    "units in the header; 2D as Q, E, I rows like OCLIMAX) and/or in Mantid's "
                    "SaveAscii v2 layout (LoadAscii reads it back).",
        epilog="example: mlff-ins export ins.h5 --csv csv/ --mantid-ascii mantid/ --unit cm-1",
        formatter_class=_HelpFormatter)
    p.add_argument("spectra", help="spectra file of this package")
    p.add_argument("--csv", metavar="DIR", help="folder for the CSV files")
    p.add_argument("--mantid-ascii", metavar="DIR", help="folder for the Mantid ASCII files")
    p.add_argument("--unit", default="meV", choices=ENERGY_UNITS,
                   help="energy unit of the written files")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from mlff_ins.compare.export import export_csv, export_mantid_ascii
    from mlff_ins.neutron.spectrum import read_spectra

    if not (args.csv or args.mantid_ascii):
        raise InputError("export: give --csv DIR and/or --mantid-ascii DIR")
    spectra = read_spectra(args.spectra)
    written = []
    if args.csv:
        written += export_csv(spectra, args.csv, unit=args.unit)
    if args.mantid_ascii:
        written += export_mantid_ascii(spectra, args.mantid_ascii, unit=args.unit)
    print(f"{len(written)} files: " + ", ".join(str(p) for p in written[:6])
          + (" ..." if len(written) > 6 else ""))
    return 0


def _add_predictor(sub) -> None:
    p = sub.add_parser(
        "predictor", help="train the direct structure-to-spectrum predictor on a database",
        description="Train an ensemble of e3nn networks (Chen et al. 2021) that map a crystal "
                    "structure to its max-normalised VISION/TOSCA S(E) on 120 bins of "
                    "10-1200 cm-1 (1.24-148.8 meV), and a convolutional autoencoder of the "
                    "powder S(Q,E) maps "
                    "with e3nn networks for its latent code (Cheng et al. 2023), on a database "
                    "written by `mlff-ins database build`; element partials are trained "
                    "too. Train/validation/test are split by structure family (an AFLOW "
                    "prototype with its substitutions) and by formula. Writes "
                    "OUTPUT/predictor.json, member_K.pt, autoencoder.pt, latent_K.pt, report.md "
                    "and report.png.",
        epilog="example: mlff-ins predictor train db.h5 -o predictor/ --members 3",
        formatter_class=_HelpFormatter)
    psub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = psub.add_parser("train", help="train a predictor ensemble on a database",
                        description="Train --members e3nn networks, each from its own seed, "
                                    "that map a structure to its VISION and TOSCA S(E), the "
                                    "phonon DOS and (unless --no-2d) its S(Q,E), on the "
                                    "database's ok entries, split into training, validation "
                                    "and test by structure family and formula (no formula in "
                                    "two parts); write the predictor folder, with report.md "
                                    "on the test errors, for `mlff-ins predict --predictor`. "
                                    "A stopped run keeps the networks it finished in "
                                    "OUTPUT.partial/; the same command run again goes on from "
                                    "them (another database or setting trains afresh).",
                        epilog="example: mlff-ins predictor train db.h5 -o predictor/",
                        formatter_class=_HelpFormatter)
    t.add_argument("database", help="database file (mlff-ins database build)")
    t.add_argument("-o", "--output", required=True, help="predictor folder")
    t.add_argument("--members", type=int, default=3, metavar="K", help="ensemble members")
    t.add_argument("--epochs", type=int, default=60, metavar="N", help="epochs per member")
    t.add_argument("--batch-size", type=int, default=16, metavar="N", help="structures per step")
    t.add_argument("--lr", type=float, default=5e-3, metavar="RATE",
                   help="AdamW learning rate (dimensionless), decayed by 0.96 per epoch")
    t.add_argument("--weight-decay", type=float, default=None, metavar="λ",
                   help="AdamW weight decay (dimensionless; default 0.5; docs/benchmarks.md "
                        "compares 0.05, 0.5 and 2)")
    t.add_argument("--cutoff", type=float, default=5.0, metavar="Å",
                   help="graph cutoff radius (Å)")
    t.add_argument("--targets", default="vision,tosca,dos",
                   help="comma-separated spectra to learn: vision, tosca (S(E)), dos (phonon "
                        "DOS, predicted beside the S(E))")
    t.add_argument("--seed", type=int, default=0, help="seed of the first member")
    t.add_argument("--no-2d", dest="two_d", action="store_false",
                   help="skip the S(Q,E) autoencoder and latent networks")
    t.add_argument("--ae-epochs", type=int, metavar="N",
                   help="autoencoder epochs (default: --epochs)")
    t.add_argument("--device", default="cpu",
                   help="where the networks train: cpu, cuda, cuda:N or auto (the weights are "
                        "saved for the CPU either way)")
    t.set_defaults(func=_run_predictor_train)


def _run_predictor_train(args) -> int:
    from mlff_ins.model.calculator import resolve_device
    from mlff_ins.predict.predictor import train_predictor

    for opt in ("members", "epochs", "batch_size"):
        if getattr(args, opt) < 1:
            raise InputError(f"--{opt.replace('_', '-')} must be at least 1")
    if args.weight_decay is not None and args.weight_decay < 0:
        raise InputError(f"--weight-decay {args.weight_decay:g}: must not be negative")
    decay = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    # `kill PID`: stop as Ctrl-C does (the finished networks are kept, the half-written folder
    # removed)
    with sigterm_as_interrupt():
        meta = train_predictor(
            args.database, args.output, members=args.members, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, **decay,
            targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
            hyper={"cutoff_A": args.cutoff}, two_d=args.two_d, ae_epochs=args.ae_epochs,
            device=resolve_device(args.device))
    t = meta["test"]
    print(f"{args.output}: {len(meta['members'])} members, split {meta['split_sizes']}, "
          + (f"test median MSE {t['median_mse']:.4f} (quartiles {t['quartiles_mse'][0]:.4f} / "
             f"{t['quartiles_mse'][1]:.4f})" if t["n"] else "no test structures"))
    print(f"  report: {Path(args.output) / 'report.md'}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="INS spectra straight from a structure (the direct predictor)",
        description="Predict the VISION or TOSCA S(E) of a structure with a trained predictor "
                    "(the one shipped in the package unless --predictor) on 1.24-148.8 meV "
                    "(10-1200 cm-1, the grid it learned): max-normalised, with "
                    "the ensemble spread as intensity_std and element partials; and, from a "
                    "predictor that learned it, the phonon DOS (vdos, 3 modes per atom as the "
                    "phonon route's, with its partials; `mlff-ins thermo` takes it). Structures unlike the training data get a warning.",
        epilog="example: mlff-ins predict si.cif --instrument vision -T 10 -o si_pred.h5 --plot",
        formatter_class=_HelpFormatter)
    p.add_argument("structure", help="structure file (CIF, POSCAR, extxyz, ...)")
    _add_structure_options(p)
    p.add_argument("--predictor", metavar="DIR",
                   help="predictor folder (default: the one shipped in the package)")
    p.add_argument("--instrument", default="vision", choices=["vision", "tosca"],
                   help="indirect-geometry instrument")
    p.add_argument("-T", "--temperature", type=_temperature, default=None, metavar="K",
                   help="temperature (K; default the database's, 10 K): the prediction is "
                        "made at the database's temperature and rescaled by the one-phonon "
                        "Bose factor only (Debye-Waller and multiphonon terms stay those of "
                        "10 K)")
    p.add_argument("--2d", dest="two_d", action="store_true",
                   help="also the powder S(Q,E) map (0-15 1/Å x 0-150 meV, unbroadened, "
                        "max-normalised), decoded from the predicted latent code")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("-o", "--output", required=True, help="spectra file (HDF5)")
    p.add_argument("--plot", action="store_true", help="also write OUTPUT.png")
    p.add_argument("--unit", default="meV", choices=ENERGY_UNITS,
                   help="energy unit of the plot's axes (files stay in meV)")
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from mlff_ins.model.calculator import resolve_device
    from mlff_ins.neutron.spectrum import write_spectra
    from mlff_ins.predict.predictor import Predictor, shipped_predictor

    atoms = _read_structure(args.structure, args.index, args.types)
    predictor = Predictor(args.predictor or shipped_predictor(), resolve_device(args.device))
    spectra, warnings_ = predictor.predict(atoms, args.instrument, args.temperature,
                                           source_name=str(args.structure), two_d=args.two_d)
    for w in warnings_:
        print(f"mlff-ins predict: warning: {w}", file=sys.stderr)
    write_spectra(args.output, spectra)
    print(f"{args.output}: {', '.join(spectra)} ({atoms.get_chemical_formula()}, "
          f"{len(predictor.models)} member(s), {args.instrument})")
    _plot_spectra_if_asked(args, spectra)
    return 0


def _add_thermo(sub) -> None:
    p = sub.add_parser(
        "thermo", help="harmonic C_V, S, F and zero-point energy from a VDOS in a spectra file",
        description="Harmonic thermodynamics from a phonon DOS alone (the MD VDOS of "
                    "`mlff-ins spectra --vdos`, or any vdos group of a spectra file), through "
                    "pymatgen's PhononDos: heat capacity C_V and entropy S (J/(K mol), and k_B "
                    "per atom), Helmholtz free energy F (kJ/mol) and zero-point energy, per mole "
                    "of atoms and per mole of formula units. The DOS must have an area of 3 per "
                    "atom (within 2 %); it is rescaled to exactly 3, and points at E <= 0 "
                    "(imaginary or diffusive modes) are left out and counted. Needs pymatgen "
                    "(pip install pymatgen).",
        epilog="example: mlff-ins thermo md_spectra.h5 --t-max 800 -o thermo.csv --plot",
        formatter_class=_HelpFormatter)
    p.add_argument("spectra", help="spectra file of this package holding a vdos group")
    p.add_argument("--group", metavar="NAME",
                   help="vdos group to use (default: the total, 'vdos'); an element's partial "
                        "(vdos_El) gives values per atom of that element")
    p.add_argument("--t-max", type=_positive_float, default=1000.0, metavar="K",
                   help="highest temperature, K (default 1000)")
    p.add_argument("--t-step", type=_positive_float, default=10.0, metavar="K",
                   help="temperature step from 0 K, K (default 10)")
    p.add_argument("--atoms-per-formula", type=int, default=1, metavar="N",
                   help="atoms in one formula unit, for the per-formula-unit columns "
                        "(default 1: per atom)")
    p.add_argument("-o", "--output", metavar="OUT.csv",
                   help="CSV of C_V, S, F against T, units in the header (default: "
                        "SPECTRA's name with _thermo.csv)")
    p.add_argument("--plot", action="store_true",
                   help="also write OUT_heat_capacity.png (C_V per atom with 3R)")
    p.set_defaults(func=_run_thermo)


def _run_thermo(args) -> int:
    from mlff_ins.atomic_io import write_text_atomic
    from mlff_ins.phonons.thermo_dos import thermal_csv, thermal_from_spectra_file

    if args.atoms_per_formula < 1:
        raise InputError(f"--atoms-per-formula: must be at least 1 (got {args.atoms_per_formula})")
    if args.t_step > args.t_max:
        raise InputError(f"--t-step {args.t_step:g} K is above --t-max {args.t_max:g} K")
    try:
        import pymatgen.phonon.dos  # noqa: F401
    except ImportError:
        raise InputError("thermo needs pymatgen: pip install pymatgen") from None
    out = Path(args.output) if args.output else \
        Path(args.spectra).with_name(Path(args.spectra).stem + "_thermo.csv")
    th = thermal_from_spectra_file(args.spectra, args.group, args.t_max, args.t_step,
                                   n_atoms_per_formula=args.atoms_per_formula)
    pa, pf = th["per_atom"], th["per_formula_unit"]
    t = th["temperature_K"]
    who = f"per atom of {th['element']}" if th["element"] else "per atom"
    print(f"{th['path']}:{th['group']}: DOS area {th['dos_area_per_atom']:.4f} (rescaled to 3), "
          f"{th['n_dropped']} points at E <= 0 left out "
          f"({th['dropped_modes_per_atom']:.3g} modes per atom)")
    print(f"  zero-point energy {pa['zero_point_energy_meV'][0]:.2f} meV "
          f"({pa['zero_point_energy'][0]:.4f} kJ/mol) {who}"
          + (f"; {pf['zero_point_energy'][0]:.4f} kJ/mol per formula unit of "
             f"{th['n_atoms_per_formula']} atoms" if th["n_atoms_per_formula"] > 1 else ""))
    print(f"  {'T (K)':>8} {'C_V (J/(K mol))':>16} {'C_V (k_B)':>10} {'S (J/(K mol))':>14} "
          f"{'F (kJ/mol)':>11}   {who}")
    shown = []
    for target in (100.0, 300.0, float(t[-1])):
        if target <= t[-1] + 1e-9:
            i = int(np.argmin(np.abs(t - target)))
            if i not in shown:
                shown.append(i)
    for i in shown:
        print(f"  {t[i]:8g} {pa['heat_capacity'][0, i]:16.3f} {pa['heat_capacity_kB'][0, i]:10.4f} "
              f"{pa['entropy'][0, i]:14.3f} {pa['free_energy'][0, i]:11.4f}")
    write_text_atomic(out, thermal_csv(th))
    print(f"  {out}")
    if args.plot:
        from mlff_ins.phonons.plot import plot_heat_capacity

        png = out.with_name(out.stem + "_heat_capacity.png")
        plot_heat_capacity(th, png, title=f"{out.stem} ({th['group']})")
        print(f"  plot: {png}")
    return 0


def _add_structure(sub) -> None:
    p = sub.add_parser(
        "structure", help="g(r), coordination and bond angles of a trajectory or structure",
        description="Structural checks of a model, usually an amorphous one: the radial "
                    "distribution function g(r) (total and element pairs), its first peak and "
                    "minimum, the coordination with the fractions of 3-, 4- and 5-fold atoms, "
                    "and the bond-angle distribution, averaged over the frames chosen. Bonds "
                    "end at the first minimum of g(r) unless --cutoff is given. For pure Si the "
                    "report and plot add the amorphous-Si literature values (Laaziri et al., "
                    "PRL 82, 3460, 1999). Writes OUTPUT.json and OUTPUT.png.",
        epilog="example: mlff-ins structure asi.h5md --stage production -o asi_structure",
        formatter_class=_HelpFormatter)
    p.add_argument("trajectory", help="H5MD trajectory of mlff-ins md, or any file ase.io "
                                      "reads (extxyz, CIF, POSCAR, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output name; OUTPUT.json and OUTPUT.png are written")
    p.add_argument("--stage", metavar="NAME",
                   help="only the frames of this stage of a `md --protocol` trajectory")
    p.add_argument("--start", type=int, metavar="FRAME", help="first frame (0-based; default 0)")
    p.add_argument("--stop", type=int, metavar="FRAME",
                   help="frame to stop before (default: the end)")
    p.add_argument("--step", "--stride", dest="stride", type=int, default=1, metavar="N",
                   help="use every N-th frame (default 1)")
    p.add_argument("--r-max", type=_positive_float, metavar="A",
                   help="g(r) range, Å (default 8, or half the cell width when that is less: "
                        "beyond it a periodic model shows its own images)")
    p.add_argument("--dr", type=_positive_float, default=0.02, metavar="A",
                   help="g(r) bin, Å (default 0.02)")
    p.add_argument("--cutoff", type=_positive_float, metavar="A",
                   help="bond length cutoff, Å (default: the first minimum of g(r))")
    p.set_defaults(func=_run_structure)


def _run_structure(args) -> int:
    from mlff_ins.analysis.structure import plot_structure, structure_report
    from mlff_ins.atomic_io import write_text_atomic

    path = Path(args.trajectory)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() == ".h5md":
        from mlff_ins.data.h5md import stage_frames
        from mlff_ins.data.h5md import frame_count, read_frame

        start, stop = args.start or 0, args.stop
        if args.stage is not None:
            if args.start is not None or args.stop is not None:
                raise InputError("--stage chooses the frames itself; drop --start/--stop")
            start, stop = stage_frames(path, args.stage)
        stop = frame_count(path) if stop is None else stop
        chosen = range(start, stop, max(1, args.stride))
        if not chosen:
            raise InputError(f"{path}: no frames in {start}..{stop - 1} (--start/--stop)")
        # frame by frame: structure needs no uniform time step (a protocol's stage ends need not
        # fall on the frame interval)
        frames = [read_frame(path, i) for i in chosen]
        chosen = f"frames {start}..{stop - 1} every {max(1, args.stride)}"
    else:
        if args.stage is not None:
            raise InputError(f"--stage: {path} is not an H5MD trajectory of `mlff-ins md`")
        from ase.io import read

        try:
            frames = read(path, index=slice(args.start, args.stop, args.stride))
        except Exception as err:  # noqa: BLE001 - ase.io raises many types
            raise InputError(f"{path}: cannot read structures ({str(err).splitlines()[0]})") \
                from None
        if not frames:
            raise InputError(f"{path}: no frames selected")
        chosen = f"{len(frames)} frame(s)"
    r_max = args.r_max
    capped = False
    if r_max is None:
        from mlff_ins.analysis.structure import half_cell_width

        cell = frames[0].cell.array
        r_max = min(8.0, float(np.floor(half_cell_width(cell) / args.dr) * args.dr))
        capped = r_max < 8.0
    try:
        rep = structure_report(frames, r_max=r_max, dr=args.dr, cutoff=args.cutoff)
    except InputError as err:
        text = str(err)
        if text.endswith("raise r_max"):
            # the range was the cell's own limit: a larger --r-max would be refused
            text = text[:-len("raise r_max")] + (
                f"that is as far as this {len(frames[0])}-atom cell shows (half its "
                f"width); make a supercell first (`mlff-ins build {path} --supercell 3 3 3 "
                f"-o big.xyz`) or give --cutoff" if capped else "raise --r-max")
        raise InputError(f"{path}: {text}") from None
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = Path(f"{out}.json"), Path(f"{out}.png")
    write_text_atomic(json_path, json.dumps(rep, indent=1) + "\n")
    plot_structure(rep, png_path)
    c, sh, ang = rep["coordination"], rep["first_shell"], rep["bond_angles"]
    print(f"{path}: {chosen}, {rep['n_atoms']} atoms, {rep['number_density_per_A3']:.4f} "
          f"atoms/Å³")
    print(f"  first peak of g(r) {sh['r_peak_A']:.3f} Å, bonds up to {rep['cutoff_A']:.2f} Å "
          f"({rep['cutoff_source']})")
    print(f"  coordination {c['mean_coordination']:.3f}: " + ", ".join(
        f"{n}-fold {100 * f:.1f} %" for n, f in sorted(c["distribution"].items(),
                                                      key=lambda kv: int(kv[0]))))
    print(f"  bond angles {ang['mean_deg']:.1f} ± {ang['std_deg']:.1f} deg")
    if rep.get("reference"):
        ref = rep["reference"]
        print(f"  a-Si ({ref['source']}): first peak {ref['first_peak_A']} Å, coordination "
              f"{ref['coordination']}, tetrahedral angle {ref['tetrahedral_angle_deg']} deg")
    print(f"  {json_path}, {png_path}")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="local web page: upload a structure, get spectra, overlay measurements",
        description="Start a web page on this machine: drop a structure file (CIF, POSCAR, "
                    "extxyz) to see its formula, space group and predicted VISION or TOSCA S(E) "
                    "with the ensemble spread and element partials; overlay a measured file with "
                    "the comparison metrics; with --model, compute phonons and the INS spectra "
                    "and powder S(Q,E) in the background. The same JSON API serves scripts "
                    "(/docs). Local only unless --host says otherwise; there is no "
                    "authentication. The page loads nothing from the internet (FastAPI's /docs "
                    "page fetches its Swagger UI from a CDN when opened).",
        epilog="example: mlff-ins serve --predictor predictor/ --model sevennet-0 --port 8000",
        formatter_class=_HelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 lets other machines connect (at your "
                        "own risk: no authentication)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--predictor", metavar="DIR",
                   help="predictor folder (default: the one shipped in the package, if any)")
    p.add_argument("--model", metavar="NAME|DIR",
                   help="universal model name (e.g. sevennet-0), model bundle folder (or "
                        "si-reference) or calculator YAML for the phonon route (runs code: trusted files only)")
    p.add_argument("--max-atoms", type=int, default=5000,
                   help="largest structure accepted (atoms)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=20.0, metavar="MB",
                   help="largest uploaded file (MiB = 2^20 bytes; 1024 MiB = 1 GiB)")
    p.add_argument("--max-queued", type=int, default=4,
                   help="most phonon calculations waiting or running at once; more are refused")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.set_defaults(func=_run_serve)


def _run_serve(args) -> int:
    import socket

    try:
        import uvicorn

        from mlff_ins.web.app import Settings, create_app
    except ImportError as err:
        raise InputError(f"serve needs the web extra ({err.name} is missing): pip install "
                         "'mlff-ins[web]'") from None
    try:
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as err:
        raise InputError(f"--host {args.host} --port {args.port}: cannot listen there "
                         f"({err.strerror or err}); choose another --port") from None
    settings = Settings(host=args.host, port=args.port, predictor=args.predictor,
                        model=args.model, max_atoms=args.max_atoms,
                        max_upload_mb=args.max_upload_mb, device=args.device,
                        max_queued=args.max_queued)
    app = create_app(settings)
    server = app.state.server
    shown = "localhost" if args.host in ("127.0.0.1", "::1") else args.host
    print(f"mlff-ins serve: open http://{shown}:{args.port}/ in a browser (API: /docs); "
          "Ctrl-C stops it and deletes its uploads and results")
    print(f"  predictor: {server.predictor.directory if server.predictor else 'none'}; "
          f"phonons with: {args.model or 'none (add --model NAME|DIR)'}")
    if args.host in ("127.0.0.1", "localhost", "::1"):
        print("  only this machine can connect; to expose it deliberately, rerun with --host "
              "0.0.0.0 (at your own risk: no authentication, anyone who reaches the port can "
              "upload files and use this machine's CPU)")
    else:
        print(f"  listening on {args.host}: anyone who reaches port {args.port} can use it "
              "(no authentication)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlff-ins",
        description="From DFT snapshots to neutron spectra: label DFT data, train NequIP force "
                    "fields, run MD with them (ASE or LAMMPS), and compute VDOS, S(Q,E), QENS "
                    "and VISION/TOSCA S(E) from the trajectories, or from harmonic phonons.")
    parser.add_argument("--version", action="version", version=f"mlff-ins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_label(sub)
    _add_check(sub)
    _add_train(sub)
    _add_build(sub)
    _add_md(sub)
    _add_select(sub)
    _add_deploy(sub)
    _add_spectra(sub)
    _add_phonons(sub)
    _add_ins(sub)
    _add_database(sub)
    _add_predictor(sub)
    _add_predict(sub)
    _add_compare(sub)
    _add_export(sub)
    _add_thermo(sub)
    _add_structure(sub)
    _add_serve(sub)
    return parser


def run_echoed(argv: list[str], log=print) -> int:
    """Run one mlff-ins command in-process, echoed as the user would type it (the demo and the
    case study show every step this way); returns its exit status, argparse's refusals included."""
    import shlex

    from mlff_ins.model.shipped import shown_name

    log("  $ mlff-ins " + shlex.join(shown_name(a) for a in argv))
    try:
        rc = main(argv)
    except SystemExit as exc:      # argparse refused the command line
        rc = exc.code
    return 0 if rc is None else int(rc)


def _refuse_output_over_input(args, positional: set[str]) -> None:
    """-o naming a file or folder that is also one of the command's inputs would replace or mix
    into what the user had (`select traj.h5md -o traj.h5md`, `ins ph.h5 -o ph.h5`): refuse it
    before any work, naming both options."""
    out = getattr(args, "output", None)
    if not out or not Path(out).exists():
        return
    for name, value in vars(args).items():
        if name in ("output", "func", "command"):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                continue
            try:
                same = os.path.samefile(v, out)
            except OSError:
                continue
            if same:
                opt = name.upper() if name in positional else "--" + name.replace("_", "-")
                raise InputError(f"-o {out} is also the input {opt} ({v}); choose another -o "
                                 f"(nothing was written)")


def _library_of(filename: str) -> str:
    """The top-level package a warning came from (site-packages/phonopy/... -> phonopy)."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return Path(filename).stem


def _positional_dests(parser) -> set[str]:
    """argparse dests of the positional arguments of ``parser`` and its subcommands."""
    out = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _positional_dests(sub)
        elif not action.option_strings:
            out.add(action.dest)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        # warnings are messages to the user, one line each: the package's own as they are,
        # a library's (phonopy, ASE, ...) named after it, without its source line
        text = " ".join(str(message).split())
        if issubclass(category, UserWarning) and filename.startswith(str(_PACKAGE_DIR)):
            print(f"mlff-ins {args.command}: warning: {text}", file=sys.stderr)
        elif issubclass(category, (UserWarning, RuntimeWarning)):
            origin = _library_of(filename)
            print(f"mlff-ins {args.command}: warning ({origin}): {text}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    default_show = warnings.showwarning
    warnings.showwarning = show
    from mlff_ins.model.shipped import resolve_model

    for name in ("model", "bundle", "teacher"):     # si-reference: the bundle in the package
        if getattr(args, name, None):
            setattr(args, name, resolve_model(getattr(args, name)))
    try:
        _refuse_output_over_input(args, _positional_dests(parser))
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"mlff-ins {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ToolFailed as err:   # its cause is in the tool's log, not in our traceback
        print(f"mlff-ins {args.command}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:   # output piped into `head` and the like: stop quietly (before
        devnull = os.open(os.devnull, os.O_WRONLY)   # OSError, of which it is a subclass)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as err:   # a folder that does not exist, no permission, a full disk, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"mlff-ins {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mlff-ins {args.command}: interrupted; rerun the same command (with --resume "
              "for train and md) to continue", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = default_show


if __name__ == "__main__":
    sys.exit(main())
