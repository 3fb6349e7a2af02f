"""Label frames with energies, forces and stresses from any ASE calculator named in a YAML file.

The labelled output is an append-only extxyz log: each finished frame is appended durably, a
resumed run skips the frames already present (matched by their index in the input file and checked
to be the same geometry) and the frames refused before, and drops a truncated last frame left by a
kill. For CP2K the SCF convergence of every frame is read from CP2K's output; a frame whose SCF did
not converge is refused, recorded with its frame number in ``<output>.rejected.jsonl`` and never
written to the data set.

Order: frames are appended as they finish, in input order within one run; a resumed run and a
``--retry-rejected`` run append theirs after the frames already there, so the output is in input
order only when one run labelled everything. Each labelled frame carries ``source_index`` (its
0-based index in the input file) and ``source_file`` in its ``info``: sort by them to restore the
input order.

Calculator YAML::

    calculator: cp2k            # cp2k | emt | lj | any "package.module:ClassName"
    parameters: {...}           # keyword arguments of the calculator
                                # (CP2K: cutoff_Ry is converted to ASE's `cutoff` in eV)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_ins.atomic_io import append_durably, exclusive_lock
from mlff_ins.data.extxyz_log import append_frame, truncate_incomplete_tail
from mlff_ins.data.extxyz_log import read_frames as read_log
from mlff_ins.data.ingest import read_frames
from mlff_ins.errors import InputError, raise_if_terminated, sigterm_as_interrupt

_SHORT_NAMES = {
    "cp2k": "ase.calculators.cp2k:CP2K",
    "emt": "ase.calculators.emt:EMT",
    "lj": "ase.calculators.lj:LennardJones",
}


@dataclass
class CalculatorSpec:
    """A calculator described by a YAML file: what to build and how to check convergence."""

    name: str
    parameters: dict = field(default_factory=dict)
    source: str = "<dict>"
    sha256: str = ""          # of the calculation: calculator and parameters but LAUNCH_KEYS
    text_sha256: str = ""     # of the file's text (what labels before 2026-12-01 recorded)

    def matches(self, stored: str) -> bool:
        """Whether a frame's ``label_config_sha256`` is this calculation's."""
        return bool(stored) and stored in (self.sha256[:16], self.text_sha256[:16])

    @property
    def is_cp2k(self) -> bool:
        return self.name.lower() == "cp2k" or self.name.endswith(":CP2K")


#: calculator parameters that say how to run the calculation, not what it computes: a resumed
#: labelling may change them (another MPI rank count on another machine) without mixing levels
#: of theory
LAUNCH_KEYS = ("command",)


def read_calculator_spec(path: str | os.PathLike) -> CalculatorSpec:
    """Read and check a calculator YAML file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: calculator file not found")
    text = path.read_text()
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or "calculator" not in cfg:
        raise InputError(f"{path}: needs a 'calculator:' entry (cp2k, emt, lj or module:Class)")
    params = cfg.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"{path}: 'parameters' must be a mapping")
    calculation = {"calculator": str(cfg["calculator"]),
                   "parameters": {k: v for k, v in params.items() if k not in LAUNCH_KEYS}}
    return CalculatorSpec(str(cfg["calculator"]), dict(params), str(path),
                          hashlib.sha256(json.dumps(calculation, sort_keys=True,
                                                    default=str).encode()).hexdigest(),
                          hashlib.sha256(text.encode()).hexdigest())


#: per-atom inputs of a frame that a calculator reads (initial spin and charge, tags), kept
#: on the copy that is labelled
_CALCULATOR_INPUT_ARRAYS = ("initial_magmoms", "initial_charges", "tags")


def build_calculator(spec: CalculatorSpec, workdir: str | os.PathLike):
    """Instantiate the calculator of ``spec``; file-based calculators work inside ``workdir``."""
    target = _SHORT_NAMES.get(spec.name.lower(), spec.name)
    if ":" not in target:
        raise InputError(f"{spec.source}: unknown calculator '{spec.name}' "
                         f"(use one of {sorted(_SHORT_NAMES)} or 'package.module:ClassName')")
    module_name, cls_name = target.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise InputError(f"{spec.source}: cannot import calculator {target} ({err})") from None
    params = dict(spec.parameters)
    if spec.is_cp2k:
        for key in ("cutoff", "cutoff_Ry"):
            if key in params and (isinstance(params[key], bool)
                                  or not isinstance(params[key], (int, float))):
                raise InputError(f"{spec.source}: CP2K {key} {params[key]!r} is not a number "
                                 f"({'eV' if key == 'cutoff' else 'Ry'}, no unit in the value)")
        if "cutoff_Ry" in params:
            params["cutoff"] = float(params.pop("cutoff_Ry")) * units.Rydberg
        if "cutoff" in params and params["cutoff"] < 100 * units.Rydberg:
            # ASE's cutoff is in eV; a value in Ry by mistake gives forces wrong by eV/A.
            raise InputError(f"{spec.source}: CP2K cutoff {params['cutoff']:.0f} eV "
                             f"(= {params['cutoff'] / units.Rydberg:.0f} Ry) is far too low; "
                             "ASE's `cutoff` is in eV, or give `cutoff_Ry`")
        Path(workdir).mkdir(parents=True, exist_ok=True)
        params.setdefault("label", _cp2k_label(Path(workdir)))
        # ASE starts the command through /bin/sh and, stopped mid-calculation, terminates that
        # process: `exec` makes it the launcher itself (mpirun passes the signal on to its
        # ranks), where a plain sh died alone and left mpirun and CP2K running (measured)
        command = str(params.get("command", "")).strip()
        if command and not command.startswith("exec "):
            params["command"] = "exec " + command
    return cls(**params)


#: CP2K reads input strings of at most 80 characters; ASE writes the label (a path) as the
#: GLOBAL PROJECT name, and a longer one aborts CP2K ("has more than 80 characters")
CP2K_MAX_STRING = 80


def _cp2k_label(workdir: Path) -> str:
    """The label (path prefix of CP2K's files) for ``workdir``: ``workdir/cp2k``, or where that
    is longer than CP2K accepts, the same through a short symbolic link in the temporary folder
    (removed when the process exits)."""
    import atexit
    import shutil
    import tempfile

    label = str(workdir / "cp2k")
    if len(label) <= CP2K_MAX_STRING:
        return label
    link_dir = Path(tempfile.mkdtemp(prefix="mlffins-cp2k-"))
    atexit.register(shutil.rmtree, link_dir, ignore_errors=True)
    (link_dir / "w").symlink_to(workdir.resolve(), target_is_directory=True)
    label = str(link_dir / "w" / "cp2k")
    if len(label) > CP2K_MAX_STRING:
        raise InputError(f"CP2K accepts paths of at most {CP2K_MAX_STRING} characters and the "
                         f"temporary folder {link_dir.parent} is too deep; set TMPDIR to a "
                         f"shorter folder")
    return label


class CP2KConvergence:
    """Reads the verdict of CP2K's SCF for the frame just computed from its output file."""

    _verdict = re.compile(r"SCF run (NOT )?converged(?: in\s+(\d+) steps)?")

    def __init__(self, calc):
        self.out = Path(calc.label + ".out")
        self.offset = 0

    def before(self) -> None:
        self.offset = self.out.stat().st_size if self.out.exists() else 0

    def after(self) -> tuple[bool | None, int | None]:
        if not self.out.exists():
            return None, None
        with open(self.out, "rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode(errors="replace")
        # If the force environment was (re)loaded the file may have been rewritten from the start.
        if not self._verdict.search(text):
            text = self.out.read_text(errors="replace")
        matches = list(self._verdict.finditer(text))
        if not matches:
            return None, None
        last = matches[-1]
        steps = int(last.group(2)) if last.group(2) else None
        return last.group(1) is None, steps


class _NoConvergenceCheck:
    def before(self) -> None:
        pass

    def after(self) -> tuple[bool | None, int | None]:
        return None, None


def _frame_matches(done: Atoms, source: Atoms) -> bool:
    return (len(done) == len(source)
            and np.array_equal(done.numbers, source.numbers)
            and np.allclose(done.positions, source.positions, atol=1e-6)
            and np.allclose(done.cell.array, source.cell.array, atol=1e-6))


#: keys every frame written by :func:`label_frames` carries in its extxyz comment line
_OWN_KEYS = (b"source_index=", b"label_config_sha256=")


def is_label_log(path: Path) -> bool:
    """Whether ``path`` is empty or starts with a frame written by :func:`label_frames` (an
    atom-count line, then a comment line carrying its keys). Only such a file is ever appended
    to or has a torn last frame cut off."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if not head.strip():
        return True
    lines = head.split(b"\n", 2)
    if len(lines) < 2:
        return False
    try:
        int(lines[0].strip())
    except ValueError:
        return False
    return all(key in lines[1] for key in _OWN_KEYS)


def read_rejected(path: Path) -> dict[int, str]:
    """Frame index -> reason, from a ``.rejected.jsonl`` file."""
    out: dict[int, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a truncated last line from a kill
            out[int(rec["frame"])] = rec["reason"]
    return out


@dataclass
class LabelReport:
    """What a labelling run did."""

    labelled: list[int]
    skipped_done: int
    rejected: dict[int, str]
    output: Path


def label_frames(frames_path: str | os.PathLike, calculator_yaml: str | os.PathLike,
                 output: str | os.PathLike, *, retry_rejected: bool = False,
                 progress: bool = True, max_frames: int | None = None,
                 allow_config_change: bool = False) -> LabelReport:
    """Compute energy, forces and stress for every frame of ``frames_path``.

    Parameters
    ----------
    frames_path : structures readable by ``ase.io.read`` (all frames are used).
    calculator_yaml : calculator description (see module docstring).
    output : extxyz log the labelled frames are appended to; resumed if it exists.
    retry_rejected : try again the frames recorded as rejected by an earlier run.
    max_frames : label at most this many new frames (then stop; resume later).
    allow_config_change : resume an output labelled with another calculator YAML (by default
        refused: it would mix levels of theory in one data set).

    Returns
    -------
    LabelReport with the input frame numbers labelled in this run and those rejected (all runs).
    Units of the written data: eV, eV/Angstrom, eV/Angstrom^3 (ASE's sign convention).
    """
    frames_path, output = Path(frames_path), Path(output)
    frames = read_frames(frames_path)
    for atoms in frames:  # read_frames' location keys are for error messages, not for the data
        atoms.info.pop("read_from", None)
        atoms.info.pop("read_index", None)
    spec = read_calculator_spec(calculator_yaml)

    if output.exists() and not is_label_log(output):
        raise InputError(f"{output}: exists and was not written by `mlff-ins label` (its first "
                         f"frame lacks source_index/label_config_sha256); refusing to append to "
                         f"it; choose another -o")
    workdir = output.with_name(output.name + ".work")
    workdir.mkdir(parents=True, exist_ok=True)
    # one labelling run per output: a second would label the same frames again and could cut
    # the first one's frame in the middle of its append as an "incomplete tail"
    with exclusive_lock(workdir / "label.lock",
                        f"{output}: another `mlff-ins label` run is writing it; wait for it to "
                        f"finish or stop it"):
        # `kill PID` must close the calculator as Ctrl-C does: CP2K's MPI processes outlived a
        # killed run and slowed the rerun's own CP2K (measured: 2 orphaned ranks still running)
        with sigterm_as_interrupt():
            report = _label_locked(frames, frames_path, spec, output, workdir,
                                   retry_rejected=retry_rejected, progress=progress,
                                   max_frames=max_frames,
                                   allow_config_change=allow_config_change)
        # a calculator that writes no files (EMT, a Python potential) leaves nothing to keep
        # (a second run that started meanwhile may have put its own lock in: then the folder
        # stays, and this finished run must not fail over it)
        if [f.name for f in workdir.iterdir()] == ["label.lock"]:
            try:
                (workdir / "label.lock").unlink()
                workdir.rmdir()
            except OSError:
                pass
        return report


def _label_locked(frames, frames_path: Path, spec, output: Path, workdir: Path, *,
                  retry_rejected: bool, progress: bool, max_frames: int | None,
                  allow_config_change: bool) -> LabelReport:
    removed = truncate_incomplete_tail(output)
    if removed and progress:
        print(f"{output}: dropped an incomplete last frame ({removed} bytes) left by a kill")
    done = read_log(output)
    done_idx: set[int] = set()
    for k, atoms in enumerate(done):
        i = atoms.info.get("source_index")
        if i is None or not (0 <= int(i) < len(frames)):
            raise InputError(f"{output}: frame {k} has no valid 'source_index'; "
                             f"it was not written by labelling {frames_path}")
        if not _frame_matches(atoms, frames[int(i)]):
            raise InputError(f"{output}: frame {k} does not match frame {i} of {frames_path}; "
                             "the input changed since the last run (use a new output file)")
        stored = str(atoms.info.get("label_config_sha256", ""))
        if not spec.matches(stored) and not allow_config_change:
            raise InputError(f"{output}: frame {k} was labelled with calculator config "
                             f"sha256 {stored or '(none)'}, but {spec.source} has "
                             f"{spec.sha256[:16]}; resuming would mix levels of theory "
                             f"(pass --allow-config-change to do it anyway)")
        done_idx.add(int(i))

    rejected_path = output.with_name(output.name + ".rejected.jsonl")
    # a frame refused once and labelled by a later --retry-rejected is done, not refused
    rejected = {i: why for i, why in read_rejected(rejected_path).items() if i not in done_idx}
    todo = [i for i in range(len(frames))
            if i not in done_idx and (retry_rejected or i not in rejected)]
    if max_frames is not None:
        todo = todo[:max_frames]
    report = LabelReport([], len(done_idx), rejected, output)
    if not todo:
        return report

    calc = bar = None
    try:     # the calculator is closed however the run ends (CP2K's shell is a process)
        calc = build_calculator(spec, workdir)
        check = CP2KConvergence(calc) if spec.is_cp2k else _NoConvergenceCheck()
        # CP2K with stress_tensor: false still lists stress and answers zeros
        want_stress = ("stress" in calc.implemented_properties
                       and spec.parameters.get("stress_tensor", True) is not False)
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(frames), initial=len(frames) - len(todo), unit="frame",
                       desc=f"label {frames_path.name}")
        for i in todo:
            raise_if_terminated()       # a SIGTERM whose exception a finaliser swallowed
            source = frames[i]
            atoms = Atoms(source.numbers, source.positions, cell=source.cell, pbc=source.pbc)
            for name in _CALCULATOR_INPUT_ARRAYS:   # spin and charge guesses (VASP, GPAW, ...)
                if name in source.arrays:
                    atoms.set_array(name, source.arrays[name].copy())
            # one line per comment: a newline in a string would split the frame's header
            atoms.info.update({k: (" ".join(v.split()) if isinstance(v, str) else v)
                               for k, v in source.info.items()
                               if isinstance(v, (str, int, float, bool))})
            atoms.calc = calc
            check.before()
            t0 = time.time()
            try:
                energy = atoms.get_potential_energy()
                forces = atoms.get_forces()
                stress = (atoms.get_stress() if atoms.pbc.all() and want_stress else None)
                if stress is not None and not np.any(stress):
                    stress = None      # not computed: a DFT stress is never exactly zero
            except Exception as err:  # the calculator failed on this frame: refuse it, go on
                first_line = str(err).splitlines()[0] if str(err) else ""
                reason = f"calculator error: {type(err).__name__}: {first_line}"
                _reject(rejected_path, i, reason, rejected)
                if spec.is_cp2k:  # a dead cp2k_shell has to be restarted
                    try:
                        calc.close()
                    except Exception:  # the shell may already be gone
                        pass
                    calc = build_calculator(spec, workdir)
                    check = CP2KConvergence(calc)
                if bar:
                    bar.update(1)
                continue
            converged, steps = check.after()
            if converged is False:
                _reject(rejected_path, i, "SCF did not converge (CP2K: 'SCF run NOT converged')",
                        rejected)
                if bar:
                    bar.update(1)
                continue
            rejected.pop(i, None)
            results = {"energy": energy, "forces": forces}
            if stress is not None:
                results["stress"] = stress
            atoms.calc = SinglePointCalculator(atoms, **results)
            atoms.info["source_index"] = i
            atoms.info["source_file"] = frames_path.name
            atoms.info["label_config_sha256"] = spec.sha256[:16]
            atoms.info["label_wall_s"] = round(time.time() - t0, 1)
            if converged is not None:
                atoms.info["scf_converged"] = True
            if steps is not None:
                atoms.info["scf_steps"] = steps
            append_frame(output, atoms)
            report.labelled.append(i)
            if bar:
                bar.update(1)
                bar.set_postfix(last=f"{atoms.info['label_wall_s']:.0f}s")
    finally:
        if bar:
            bar.close()
        close = getattr(calc, "close", None)
        if close:
            close()
    return report


def _reject(path: Path, frame: int, reason: str, rejected: dict[int, str]) -> None:
    rejected[frame] = reason
    line = json.dumps({"frame": frame, "reason": reason}) + "\n"
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":          # a line cut by a kill: end it, keep this one whole
                line = "\n" + line
    append_durably(path, line)
