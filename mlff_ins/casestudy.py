"""The silicon case study, ``mlff-ins demo --full``: crystalline, amorphous and vacancy silicon
from a force field to VISION spectra by three routes (phonons, MD, the direct predictor), every
pair of routes compared with ``mlff-ins compare``.

The pipeline is a list of :class:`Step` s. Almost every step is one command of this package's
CLI, run in-process exactly as a user would type it; ``mlff-ins demo --full --dry-run`` prints
them as a shell script (kept as ``examples/si_case_study.sh``, which a test keeps equal to it).
The few steps that are not a CLI command (relaxing the starting crystal and writing the MD
protocols, the vacancy's difference spectrum, the report) are functions of this module, reached
from the shell as ``mlff-ins demo --full --step NAME``.

Resuming: every output is written atomically by the command that makes it, so a step whose
outputs all exist is done and is skipped; an MD step runs with ``--resume`` once its trajectory
exists (a killed run goes on) until it is recorded as finished in ``done.json``. A killed study
therefore continues where it stopped when the same command is rerun.

Spreading a study over several sittings (hours each on 2 CPU cores): ``--structures`` runs the
shared steps and those of some structures only, and ``--prune`` then removes the large files
(trajectories, force constants of cells of hundreds of atoms) that no unfinished step reads;
``done.json`` keeps the steps done and the summaries the report needs (MD temperatures and
drifts, imaginary modes), so the remaining folder is small enough to carry to the next sitting.
The a-Si melt-quench writes its own file with a frame every ``quench_every`` steps, and the
300 K run starts from its last frame, so that the quench can be carried over too.

Physics choices, stated once:

* c-Si and the vacancy cell: MD equilibrated at 300 K under the Langevin thermostat (per-atom
  friction, so that every mode reaches its canonical share of the energy: Bussi's global
  rescaling cannot share it among the modes of a crystal), then NVE production (no thermostat
  acting on the dynamics whose spectrum is taken). The MD route's
  VISION S(E) comes from the classical VDOS through the same incoherent approximation as the
  phonon route (quantum Bose and Debye-Waller factors at 300 K: the harmonic quantum
  correction), and S(Q,E) with the harmonic correction (``spectra``'s default); compared with
  phonons at the same 300 K (``mlff-ins ins -T 300``).
* a-Si: melt-quench of the crystal with the model (heat, melt at 2500 K, quench at
  ``quench_K_per_ps``, NPT anneal at 0 GPa), then from its last frame (new velocities) the
  crystals' protocol, NVT equilibration and NVE production, and the same spectra from that
  production stage, and phonons of the final frame relaxed with the model (P1, the
  whole cell as its own supercell, so the Gamma point of the cell is the only commensurate one).
* vacancy: the 3x3x3 diamond supercell less one atom, phonons of the relaxed cell and of the
  perfect 216-atom cell on the same footing (each cell its own supercell), MD of both cells under
  the same protocol, and the difference per atom for each route: the defect's local modes.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import write_text_atomic
from mlff_ins.casestudy_report import DONE, TARGET_COMPARISON, read_done
from mlff_ins.errors import InputError
from mlff_ins.model.shipped import SHIPPED, bundle_digest, resolve_model, shown_name

STRUCTURES = ("c-Si", "a-Si", "vacancy")
REFERENCE_MODEL = SHIPPED["si-reference"]
SI_A0_GUESS = 5.43          # Å, starting lattice constant before relaxing with the model


@dataclass(frozen=True)
class StudySize:
    """Cell sizes and run lengths of one version of the study (``--size``)."""

    name: str
    crystal_cells: int         # c-Si MD cell: n x n x n conventional cells of 8 atoms
    phonon_cells: int          # c-Si phonons: n x n x n conventional supercell
    defect_cells: int          # vacancy cell (and its perfect reference): n^3 cells less one atom
    amorphous_cells: int       # a-Si: melt-quench of n^3 conventional cells
    dt_fs: float
    every: int                 # MD steps between stored frames
    equilibrate_ps: float
    production_ps: float
    heat_K_per_ps: float
    melt_ps: float
    quench_K_per_ps: float
    anneal_ps: float
    melt_K: float = 2500.0
    temperature_K: float = 300.0
    predictor: bool = True
    bond_cutoff_A: float | None = None   # a-Si bonds; None: the first minimum of g(r)
    # a-Si and vacancy MD spectra: the standard error over this many blocks of the production
    # as their band (`spectra --blocks`; the correlation window becomes half a block). c-Si
    # keeps the whole run's longer window: its sharp peaks are what its targets measure
    md_blocks: int = 1
    # steps between the melt-quench's frames (its ramps move their target temperature once per
    # frame interval): a file small enough to keep between sessions, where the 300 K run that
    # follows it writes every `every` steps for its spectra
    quench_every: int = 100
    # Bussi time constant of the equilibration (fs); None: `mlff-ins md`'s 100 fs. A crystal
    # started from its relaxed cell loses half its kinetic energy to the potential and the
    # thermostat must put it back: 0.2 ps at 100 fs left the quick size's NVE production at
    # 220 K (64-atom c-Si, one seed), 20 fs at 269 K (within the 7 % spread of a 64-atom cell's
    # canonical energy)
    equilibrate_tdamp_fs: float | None = None
    # the equilibration's thermostat. Bussi rescales all velocities by one factor: it sets the
    # total kinetic energy but cannot share it among the modes of a nearly harmonic crystal,
    # which keep through the NVE production the shares that the velocities drawn at the start
    # and the rescaling left. Langevin's friction and kicks act on each atom, so each mode
    # relaxes to its canonical share within a few 1/friction. Measured in the 512-atom c-Si run
    # (round-4 model, seed 1, 20 ps NVE): the 9.85 and 10.82 meV modes (1.57 % of the modes)
    # held 2.7-2.8 % of the VDOS in each quarter after 2 ps of Bussi, 1.45-1.57 % after 2 ps of
    # Langevin at 0.01/fs; MD against phonons S(E) MSE 0.0104 -> 0.0040. The default is the
    # behaviour of the versions before the field existed.
    # The quick size's 0.2 ps at 0.05/fs, 64-atom c-Si, seeds 1-3: NVE production at 295, 312
    # and 284 K (Bussi at 20 fs: 269, 316 and 286 K), within a 64-atom cell's canonical spread
    equilibrate_thermostat: str = "bussi"
    equilibrate_friction_per_fs: float | None = None   # Langevin; None: `mlff-ins md`'s 0.01

    @property
    def n_crystal(self) -> int:
        return 8 * self.crystal_cells ** 3


SIZES = {
    # the case study: 512-atom c-Si and a-Si, 215-atom vacancy cell, 20 ps production
    "full": StudySize("full", crystal_cells=4, phonon_cells=3, defect_cells=3, amorphous_cells=4,
                      dt_fs=2.0, every=5, equilibrate_ps=2.0, production_ps=20.0,
                      heat_K_per_ps=1000.0, melt_ps=5.0, quench_K_per_ps=100.0, anneal_ps=5.0,
                      md_blocks=4, equilibrate_thermostat="langevin",
                      equilibrate_friction_per_fs=0.01),
    # every step on 64-atom cells and picosecond runs: minutes, for tests and a first look
    "quick": StudySize("quick", crystal_cells=2, phonon_cells=2, defect_cells=2,
                       amorphous_cells=2, dt_fs=2.0, every=5, equilibrate_ps=0.2,
                       production_ps=1.0, heat_K_per_ps=20000.0, melt_ps=0.4,
                       quench_K_per_ps=5000.0, anneal_ps=0.2, quench_every=25,
                       equilibrate_thermostat="langevin", equilibrate_friction_per_fs=0.05),
}


@dataclass
class Step:
    """One step: a CLI command (``argv``) or a function of this module (``func``)."""

    name: str
    structure: str                  # c-Si, a-Si, vacancy or "" (shared)
    outputs: list[str]              # paths relative to the study folder
    argv: list[str] | None = None   # paths in it are relative to the study folder
    func: str | None = None
    resume: bool = False            # MD: add --resume once the trajectory exists
    note: str = ""
    inputs: list[str] | None = None   # the study files it reads; None: the paths of its argv

    @property
    def continues(self) -> bool:
        """Its command continues a stopped run (MD with --resume; model phonons by themselves,
        from OUTPUT.partial/): the seconds of a stopped run count towards the step's time."""
        return self.resume or bool(self.argv) and self.argv[0] == "phonons" \
            and "--model" in self.argv

    def reads(self) -> list[str]:
        if self.inputs is not None:
            return list(self.inputs)
        words = self.argv or []
        return [w for i, w in enumerate(words) if w.startswith(STUDY_FOLDERS)
                and not (i and words[i - 1] == "-o")]


@dataclass
class Study:
    out: Path
    model: str | None              # None: the shipped reference model
    size: StudySize
    steps: list[Step] = field(default_factory=list)
    device: str | None = None      # the model's device (md, phonons, spectra, predict); None: cpu
    md_members: list[int] | None = None   # the members that drive the MD; None: all


#: the study's own folders: a path of a step's command line in one of them is a study file
STUDY_FOLDERS = ("structures/", "protocols/", "c-si/", "a-si/", "vacancy/")
#: --prune removes files of at least this size that no unfinished step reads
PRUNE_MIN_BYTES = 5 * 2 ** 20

#: the commands of the study that take --device
DEVICE_COMMANDS = ("md", "phonons", "spectra", "predict")


def default_model() -> str:
    """The shipped silicon reference ensemble."""
    if not (REFERENCE_MODEL / "bundle.json").is_file():
        raise InputError(f"{REFERENCE_MODEL}: the shipped reference model is missing (it is "
                         f"made by scripts/train_si_reference.sh); give --model")
    return str(REFERENCE_MODEL)


# ------------------------------------------------------------------------------------ the plan

def _md(trajectory: str, structure: str, protocol: str, size: StudySize,
        members: list[int] | None = None, temperature: bool = True) -> list[str]:
    """``temperature``: pass -T (the production protocol's NVE stage takes it; the melt-quench
    sets every stage's own)."""
    argv = ["md", structure, "--model", "{model}", "--protocol", protocol,
            *(["-T", f"{size.temperature_K:g}"] if temperature else []),
            "--seed", "1", "-o", trajectory]
    if members:
        argv[4:4] = ["--members", *[str(k) for k in members]]
    return argv


def _spectra_md(trajectory: str, output: str, size: StudySize, sqe: bool = False,
                blocks: int = 1) -> list[str]:
    argv = ["spectra", trajectory, "--stage", "production", "--vdos", "--instrument", "vision",
            "-T", f"{size.temperature_K:g}", "--e-max", "100", "-o", output, "--plot"]
    if sqe:
        argv[4:4] = ["--sqe", "--q-max", "8"]
    if blocks > 1:
        argv[4:4] = ["--blocks", str(blocks)]
    return argv


def _ins(phonons: str, output: str, size: StudySize, two_d: bool = False,
         mesh: tuple[float, ...] | None = None) -> list[str]:
    """``mesh``: the q-points of the modes (an MD cell of N x N x M unit cells holds the
    Γ-centred N x N x M mesh of the unit cell's; a cell that is its own supercell, Γ alone), or
    a 1-tuple, the mesh length in Å; None: `mlff-ins ins`'s default."""
    argv = ["ins", phonons, "--instrument", "vision", "-T", f"{size.temperature_K:g}",
            "--e-max", "100", "-o", output, "--plot"]
    if two_d:
        argv[2:2] = ["--2d", "--q-max", "8"]
    if mesh is not None:
        argv[2:2] = ["--mesh", *[str(n) for n in mesh]]
    return argv


def _phonon_files(h5: str) -> list[str]:
    """What `mlff-ins phonons -o H5` writes: the HDF5 file and phonopy's parameters."""
    from mlff_ins.phonons.io import params_path

    return [h5, params_path(h5).as_posix()]


def perfect_md_spectra(size: StudySize) -> str:
    """The MD spectra of the perfect crystal that the vacancy cell's are set against: the c-Si
    MD's where its cell is the vacancy cell's perfect one, else the perfect cell's own MD."""
    return ("c-si/ins_md.h5" if size.defect_cells == size.crystal_cells
            else "vacancy/perfect_ins_md.h5")


def _compare(structure: str, d: str, inputs: list[str], kind: str,
             folder: str | None = None, labels: list[str] | None = None) -> Step:
    folder = folder or f"{d}/compare_{kind}"
    labels = labels or [s.split("/")[-1].split(".")[0].replace("ins_", "")
                        .replace("predict", "predictor") for s in inputs]
    return Step(f"{structure}: compare {kind} ({folder.split('/')[-1]})", structure,
                [f"{folder}/metrics.json"],
                ["compare", *inputs, "--kind", kind,
                 *[w for label in labels for w in ("--label", label)], "-o", folder])


def _routes_compared(name: str, d: str, struct: str, s: StudySize) -> list[Step]:
    """A structure's direct predictor and its comparisons, which run as soon as its routes are
    done (a study stopped in a later structure has this one's results)."""
    steps = []
    if s.predictor:
        steps.append(Step(f"{name}: direct predictor", name, [f"{d}/predict.h5"],
                          ["predict", struct, "--instrument", "vision",
                           "-T", f"{s.temperature_K:g}", "-o", f"{d}/predict.h5", "--plot"]))
    same_q = "c-si/ins_phonons_md_q.h5" if d == "c-si" else f"{d}/ins_phonons.h5"
    steps.append(_compare(name, d, [f"{d}/ins_md.h5", same_q], "s_e",
                          folder=f"{d}/{TARGET_COMPARISON}", labels=["md", "phonons"]))
    routes = [f"{d}/ins_md.h5", f"{d}/ins_phonons.h5"] + (
        [f"{d}/predict.h5"] if s.predictor else [])
    steps.append(_compare(name, d, routes, "s_e"))
    # the predictor's DOS too (the shipped predictor learned it beside the S(E))
    steps.append(_compare(name, d, routes, "vdos"))
    return steps


def plan(out: str | Path, model: str | None, size: StudySize,
         device: str | None = None, md_members: list[int] | None = None) -> Study:
    """Every step of the study, in order (``model`` None: the shipped reference model; ``device``
    for the commands that evaluate a model or correlate a trajectory, None: their default cpu;
    ``md_members``: the ensemble members that drive the MD runs, None: all; the phonon routes
    always use every member, for their band)."""
    s = size
    n_c, n_d, n_a = s.crystal_cells, s.defect_cells, s.amorphous_cells
    conv = "structures/si_conventional.xyz"
    crystal = f"structures/c-si_{8 * n_c ** 3}.xyz"
    perfect = f"structures/c-si_{8 * n_d ** 3}.xyz"
    vacancy = f"structures/vacancy_{8 * n_d ** 3 - 1}.xyz"
    amorphous_start = f"structures/c-si_{8 * n_a ** 3}.xyz"
    steps = [
        Step("structures", "", [conv, "protocols/production.yaml",
                                "protocols/melt_quench.yaml"], inputs=[],
             func="structures",
             note="relax the diamond cell with the model; write the MD protocols"),
    ]
    for n in sorted({n_c, n_d, n_a}):
        cell = f"structures/c-si_{8 * n ** 3}.xyz"
        steps.append(Step(f"build {8 * n ** 3}-atom crystal", "", [cell],
                          ["build", conv, "--supercell", str(n), str(n), str(n), "-o", cell]))
    steps.append(Step("build vacancy cell", "", [vacancy],
                      ["build", conv, "--supercell", str(n_d), str(n_d), str(n_d),
                       "--vacancies", "1", "--seed", "0", "-o", vacancy]))
    p = str(s.phonon_cells)
    # c-Si
    steps += [
        Step("c-Si: phonons", "c-Si", _phonon_files("c-si/phonons.h5"),
             ["phonons", conv, "--model", "{model}", "--supercell", p, p, p,
              "-o", "c-si/phonons.h5", "--plot"]),
        # an 80 Å mesh (24^3 for the 2-atom cell): on the same force constants `ins`'s default
        # 40 Å differed from 120 Å by MSE 0.0023 on VISION S(E) and 80 Å by 0.00014
        Step("c-Si: INS from phonons", "c-Si", ["c-si/ins_phonons.h5"],
             _ins("c-si/phonons.h5", "c-si/ins_phonons.h5", s, two_d=True, mesh=(80,))),
        # the modes the MD cell holds: phonons of the conventional cell as the unit cell, on the
        # Γ-centred n_c x n_c x n_c mesh (a 13^3 mesh of the primitive cell against the MD's
        # q-points alone moved peaks by up to 2.5 meV, MSE 0.014, measured by a review)
        Step("c-Si: phonons of the MD cell's unit cell", "c-Si",
             _phonon_files("c-si/phonons_conv.h5"),
             ["phonons", conv, "--model", "{model}", "--primitive", "P", "--supercell", p, p,
              p, "-o", "c-si/phonons_conv.h5"]),
        Step("c-Si: INS on the MD cell's q-points", "c-Si", ["c-si/ins_phonons_md_q.h5"],
             _ins("c-si/phonons_conv.h5", "c-si/ins_phonons_md_q.h5", s,
                  mesh=(n_c, n_c, n_c))),
        Step("c-Si: MD", "c-Si", ["c-si/md.h5md"],
             _md("c-si/md.h5md", crystal, "protocols/production.yaml", s, md_members),
             resume=True),
        # the whole run's window (its sharp peaks are what the c-Si targets measure), unless this
        # MD is also the vacancy's perfect reference: then the vacancy MD's blocks, so that the
        # difference is taken at one window
        Step("c-Si: spectra from MD", "c-Si", ["c-si/ins_md.h5"],
             _spectra_md("c-si/md.h5md", "c-si/ins_md.h5", s, sqe=True,
                         blocks=(s.md_blocks if perfect_md_spectra(s) == "c-si/ins_md.h5"
                                 else 1))),
    ]
    steps += _routes_compared("c-Si", "c-si", conv, s)
    # a-Si
    steps += [
        Step("a-Si: melt-quench MD", "a-Si", ["a-si/quench.h5md"],
             _md("a-si/quench.h5md", amorphous_start, "protocols/melt_quench.yaml", s,
                 md_members, temperature=False), resume=True),
        Step(f"a-Si: MD at {s.temperature_K:g} K", "a-Si", ["a-si/md.h5md"],
             _md("a-si/md.h5md", "a-si/quench.h5md", "protocols/production.yaml", s,
                 md_members), resume=True,
             note="from the last frame of the melt-quench, new velocities"),
        Step("a-Si: structure", "a-Si", ["a-si/structure.json"],
             ["structure", "a-si/md.h5md", "--stage", "production", "-o", "a-si/structure"]
             + (["--cutoff", f"{s.bond_cutoff_A:g}"] if s.bond_cutoff_A else [])),
        Step("a-Si: check that the quench made a glass", "a-Si", [], func="glass_check",
             inputs=["a-si/structure.json"],
             note="stop a full-size study whose melt-quench left a crystal"),
        Step("a-Si: spectra from MD", "a-Si", ["a-si/ins_md.h5"],
             _spectra_md("a-si/md.h5md", "a-si/ins_md.h5", s, blocks=s.md_blocks)),
        Step("a-Si: phonons of the quenched cell", "a-Si", _phonon_files("a-si/phonons.h5"),
             ["phonons", "a-si/md.h5md", "--model", "{model}", "--relax", "--relax-steps",
              "5000", "--supercell", "1", "1", "1", "-o", "a-si/phonons.h5", "--plot"]),
        # the cell is its own supercell: its modes, as the MD's, are those at Γ
        Step("a-Si: INS from phonons", "a-Si", ["a-si/ins_phonons.h5"],
             _ins("a-si/phonons.h5", "a-si/ins_phonons.h5", s, mesh=(1, 1, 1))),
    ]
    steps += _routes_compared("a-Si", "a-si", "a-si/md.h5md", s)
    # vacancy
    steps += [
        Step("vacancy: phonons", "vacancy", _phonon_files("vacancy/phonons.h5"),
             ["phonons", vacancy, "--model", "{model}", "--relax", "--relax-steps", "5000",
              "--supercell", "1", "1", "1", "-o", "vacancy/phonons.h5"]),
        Step("vacancy: INS from phonons", "vacancy", ["vacancy/ins_phonons.h5"],
             _ins("vacancy/phonons.h5", "vacancy/ins_phonons.h5", s, mesh=(1, 1, 1))),
        # the perfect cell on the same footing: the same cell (--primitive P, not reduced to
        # the 2-atom cell) at the same q-point, Γ
        Step("vacancy: phonons of the perfect cell", "vacancy",
             _phonon_files("vacancy/perfect_phonons.h5"),
             ["phonons", perfect, "--model", "{model}", "--primitive", "P", "--supercell",
              "1", "1", "1", "-o", "vacancy/perfect_phonons.h5"]),
        Step("vacancy: INS of the perfect cell", "vacancy", ["vacancy/perfect_ins_phonons.h5"],
             _ins("vacancy/perfect_phonons.h5", "vacancy/perfect_ins_phonons.h5", s,
                  mesh=(1, 1, 1))),
        Step("vacancy: MD", "vacancy", ["vacancy/md.h5md"],
             _md("vacancy/md.h5md", vacancy, "protocols/production.yaml", s, md_members),
             resume=True),
        Step("vacancy: spectra from MD", "vacancy", ["vacancy/ins_md.h5"],
             _spectra_md("vacancy/md.h5md", "vacancy/ins_md.h5", s, blocks=s.md_blocks)),
    ]
    if perfect_md_spectra(s) != "c-si/ins_md.h5":
        # the perfect cell's own MD: the same cell, q-points, protocol and blocks as the
        # vacancy's, so that their difference holds the defect's modes and nothing of a
        # larger cell's other q-points
        steps += [
            Step("vacancy: MD of the perfect cell", "vacancy", ["vacancy/perfect_md.h5md"],
                 _md("vacancy/perfect_md.h5md", perfect, "protocols/production.yaml", s,
                     md_members), resume=True),
            Step("vacancy: spectra from the perfect cell's MD", "vacancy",
                 ["vacancy/perfect_ins_md.h5"],
                 _spectra_md("vacancy/perfect_md.h5md", "vacancy/perfect_ins_md.h5", s,
                             blocks=s.md_blocks)),
        ]
    steps.append(Step("vacancy: difference from the perfect crystal", "vacancy",
                      ["vacancy/difference.h5"], func="vacancy_difference",
                      inputs=["vacancy/ins_phonons.h5", "vacancy/perfect_ins_phonons.h5",
                              "vacancy/ins_md.h5", perfect_md_spectra(s)]))
    steps += _routes_compared("vacancy", "vacancy", vacancy, s)
    steps.append(Step("report", "", ["report.md", "metrics.json"], func="report",
                      inputs=["c-si/phonons.h5", "a-si/structure.json", "a-si/ins_md.h5",
                              "a-si/ins_phonons.h5"]))
    # a shipped bundle by name is its folder: the study records, and compares, one spelling
    model = None if model is None else str(resolve_model(str(model)))
    return Study(Path(out), model, size, steps, device,
                 list(md_members) if md_members else None)


# ---------------------------------------------------------------------------- running the plan

def _argv(step: Step, study: Study) -> list[str]:
    """The command line with the study folder and model filled in."""
    out = []
    for a in step.argv:
        if a == "{model}":
            out.append(study.model)
        elif a.startswith(STUDY_FOLDERS):
            out.append(str(study.out / a))
        else:
            out.append(a)
    if study.device and step.argv[0] in DEVICE_COMMANDS:
        out += ["--device", study.device]
    return out


def run_study(study: Study, *, only: str | None = None, structures: list[str] | None = None,
              log=print) -> dict:
    """Run (or resume) the study; returns {step name: seconds} of the steps that ran.

    ``only``: run just the function step of that name (``mlff-ins demo --full --step NAME``).
    ``structures``: run the shared steps and those of these structures only (the report waits
    for a run of them all), to spread a study over several sittings.
    """
    from mlff_ins.cli import run_echoed

    if only is not None:
        names = [st.func for st in study.steps if st.func]
        if only not in names:
            raise InputError(f"--step {only}: not a step of the study (choose from "
                             f"{', '.join(names)})")
    if only is not None and structures:
        raise InputError("--step and --structures: give one of them (--step runs one step "
                         "whatever its structure)")
    for name in structures or []:
        if name not in STRUCTURES:
            raise InputError(f"--structures {name}: not a structure of the study (choose from "
                             f"{', '.join(STRUCTURES)})")
    if study.model is None:
        study.model = default_model()
    # a shipped bundle is recorded by its name, so the study folder moves with the repository
    this = {"model": shown_name(str(study.model)), "size": asdict(study.size)}
    # and by its digest: a shipped bundle replaced by a newer one (or a folder retrained in
    # place) keeps its name, and the steps done with the old one would be kept beside new ones
    digest = bundle_digest(study.model)
    if digest:
        this["model_sha256"] = digest
    if study.md_members:
        this["md_members"] = study.md_members
    recorded = study.out / "study.json"
    runs = []
    if recorded.exists():
        # the finished steps of another model or size would be skipped as done: refuse
        before = json.loads(recorded.read_text())
        if "runs" not in before:
            # its a-Si MD was one run of melt-quench and production, its protocols had other
            # names, and its steps are not recorded: its outputs cannot be taken as this plan's
            raise InputError(f"{study.out}: a study made by an earlier version of mlff-ins "
                             f"(before done.json, with the a-Si melt-quench and production in "
                             f"one run); choose another -o or delete it")
        runs = before.pop("runs")
        # an earlier version recorded a shipped bundle by its absolute folder
        if isinstance(before.get("model"), str):
            before["model"] = shown_name(before["model"])
        # a size field added by a later version reads as its default, which keeps the
        # behaviour of the version that recorded the study
        size_defaults = {f.name: f.default for f in fields(StudySize)
                         if f.default is not MISSING}
        if isinstance(before.get("size"), dict):
            before["size"] = {**json.loads(json.dumps(size_defaults)), **before["size"]}
        # a study recorded before the digest was: its model's version cannot be checked
        if digest and "model_sha256" not in before and before.get("model") == this["model"]:
            log(f"note: {recorded} does not record which version of {this['model']} made it "
                f"(an earlier mlff-ins); its steps are taken as made by this one (bundle "
                f"sha256 {digest})")
            before["model_sha256"] = digest
        if before != json.loads(json.dumps(this)):
            now = json.loads(json.dumps(this))
            if before.get("model") != this["model"]:
                what = f"model ({before.get('model')})"
            elif before.get("model_sha256") != this.get("model_sha256"):
                what = (f"version of {this['model']} (bundle sha256 "
                        f"{before.get('model_sha256')}, here {this.get('model_sha256')})")
            elif before.get("size") != now["size"]:
                old, new = before.get("size", {}), now["size"]
                key = next(k for k in sorted(set(old) | set(new))
                           if k not in old or k not in new or old[k] != new[k])
                what = (f"size (size {old.get('name')}: {key} = {old.get(key)}, here "
                        f"{new.get(key)})")
            else:
                what = f"set of MD members ({before.get('md_members', 'all')})"
            raise InputError(f"{study.out}: holds a study with another {what}; choose another "
                             f"-o or delete it")
    # the code of every run of the study: a step done by an earlier run keeps that run's code
    code = {**code_version(), "device": device_name(study.device)}
    if runs and {k: runs[-1].get(k) for k in code} != code:
        log(f"note: {study.out} was last run with mlff-ins {_code_text(runs[-1])}, this run uses "
            f"{_code_text(code)}; the steps already done keep their outputs (report.md lists "
            f"the runs)")
    # (a --step run, as the shell script makes one per function step, is listed only when its
    # code differs from the last run's)
    if only is None or not runs or {k: runs[-1].get(k) for k in code} != code:
        runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **code})
    study.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(recorded, json.dumps({**this, "runs": runs}, indent=1) + "\n")
    timings = _read_timings(study.out)
    done = read_done(study.out)
    maker = {o: st.structure for st in study.steps for o in st.outputs}
    made = False
    for i, step in enumerate(study.steps, 1):
        if only is not None and step.func != only:
            continue
        # the report tabulates what the other steps made: it is made again after any of them
        # ran (a comparison redone with a new predictor)
        if only is None and _done(step, study, done) and not (step.func == "report" and made):
            log(f"[{i}/{len(study.steps)}] {step.name}: done")
            continue
        missing = [r for r in step.reads() if not (study.out / r).exists()]
        if structures:
            # a step of another structure, or one that reads what another structure's steps
            # make and have not made yet (the quick size's vacancy reads the c-Si MD)
            waits = {maker.get(r) for r in missing if r not in done["pruned"]} - {"", None}
            if step.func == "report":
                waits = {"every structure"}
            elif step.structure not in ("", *structures):
                waits = {step.structure}
            if waits - set(structures):
                log(f"[{i}/{len(study.steps)}] {step.name}: left for a run with "
                    f"{', '.join(sorted(waits - set(structures)))}")
                continue
        lost = [o for o in step.outputs if step.resume and step.name in done["steps"]
                and not (study.out / o).exists() and o not in done["pruned"]]
        if lost:
            # an MD run again would be another trajectory than the one the steps after it
            # (spectra, structure, phonons of its last frame) were made from
            raise InputError(f"{study.out / lost[0]}: the trajectory of the finished step "
                             f"'{step.name}' is missing (trajectories are not kept in git); "
                             f"put it back, or remove '{step.name}' and the steps made from it "
                             f"from {study.out / DONE} (with their outputs) to run them again")
        log(f"[{i}/{len(study.steps)}] {step.name}")
        pruned = [r for r in missing if r in done["pruned"]]
        if pruned:
            raise InputError(f"step '{step.name}' reads {', '.join(pruned)}, removed by --prune; "
                             f"remove the steps that made it from {study.out / DONE} to make "
                             f"it again")
        t0 = time.perf_counter()
        try:
            if step.func:
                FUNCTIONS[step.func](study)
            else:
                argv = _argv(step, study)
                if step.resume and Path(argv[argv.index("-o") + 1]).exists():
                    argv.append("--resume")
                rc = run_echoed(argv, log)
                if rc == 130:
                    # the command was interrupted (Ctrl-C, or SIGTERM under `demo --full`) and
                    # said so: the study stops as interrupted, not as a failed step
                    raise KeyboardInterrupt(f"step '{step.name}' interrupted")
                if rc != 0:
                    raise InputError(f"step '{step.name}' failed (mlff-ins {argv[0]} exit "
                                     f"status {rc}); fix the cause and rerun to continue from "
                                     f"this step")
        except BaseException:
            # an MD or model phonons stopped (SIGTERM, Ctrl-C, a failure) keep the time they
            # ran, which their continuation adds to (a SIGKILL loses it)
            if step.continues:
                _add_time(study, timings, step, time.perf_counter() - t0)
            raise
        # a continued run adds its time to the runs before it (a rerun of a finished MD would
        # otherwise leave the seconds of its check as the step's time)
        if not step.continues:
            timings.pop(step.name, None)
        _add_time(study, timings, step, time.perf_counter() - t0)
        made = made or bool(step.outputs)
        _finished(step, study, done)
    return timings


def _add_time(study: Study, timings: dict, step: Step, seconds: float) -> None:
    timings[step.name] = timings.get(step.name, 0.0) + seconds
    write_text_atomic(study.out / "timings.json", json.dumps(timings, indent=1) + "\n")


# ------------------------------------------------------------- finished steps, summaries, prune

def _done(step: Step, study: Study, done: dict) -> bool:
    """Every output is there (an MD run's trajectory: and the run finished), or the step
    finished and its missing outputs were pruned."""
    if not step.outputs:
        return False
    missing = [o for o in step.outputs if not (study.out / o).exists()]
    if not missing:
        # commands write their outputs atomically, at their end; a trajectory grows during
        # the run, so an MD step is done once recorded (a run of the shell script, which
        # records nothing, has its finished MD resumed once, which returns at once)
        return not step.resume or step.name in done["steps"]
    return step.name in done["steps"] and all(o in done["pruned"] for o in missing)


def _finished(step: Step, study: Study, done: dict) -> None:
    """Record a finished step, with the summaries of its files that the report needs once the
    files themselves may be pruned: an MD run's temperature and drift, a phonon file's
    imaginary modes."""
    from mlff_ins.casestudy_report import imaginary_summary, md_summary

    done["steps"][step.name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if step.argv and step.argv[0] in ("md", "phonons"):
        rel = step.argv[step.argv.index("-o") + 1]
        if step.argv[0] == "phonons":
            done["summaries"][rel] = imaginary_summary(study.out / rel)
        else:
            try:
                done["summaries"][rel] = md_summary(study.out / rel)
            except InputError:           # no production stage (the melt-quench)
                pass
    for o in step.outputs:
        done["pruned"].pop(o, None)
    write_text_atomic(study.out / DONE, json.dumps(done, indent=1) + "\n")


def prune(study: Study, min_bytes: int = PRUNE_MIN_BYTES, log=print) -> int:
    """Remove the large files of finished MD and phonon steps (trajectories, the force constants
    of cells of hundreds of atoms; at least ``min_bytes``) that no unfinished step reads; their
    summaries stay in done.json and the steps stay done. Returns the bytes freed."""
    done = read_done(study.out)
    pending = [st for st in study.steps if not _done(st, study, done)]
    needed = {r for st in pending for r in st.reads()}
    freed = 0
    for step in study.steps:
        # the trajectories and phonon files; spectra, reports and structures are kept
        if not step.argv or step.argv[0] not in ("md", "phonons") or step in pending:
            continue
        if step.name not in done["steps"]:
            # done without a record (made by the shell script): record it, with its summary,
            # before its files go
            _finished(step, study, done)
        for o in step.outputs:
            path = study.out / o
            if o in needed or not path.is_file() or path.stat().st_size < min_bytes:
                continue
            size = path.stat().st_size
            done["pruned"][o] = size
            write_text_atomic(study.out / DONE, json.dumps(done, indent=1) + "\n")
            path.unlink()
            freed += size
            log(f"pruned {o} ({size / 2 ** 20:.0f} MiB; made by '{step.name}', read by no "
                f"unfinished step)")
    return freed


def source_digest(package: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the package's Python sources: their paths inside the
    package and their bytes, in path order. The same code gives the same digest on any machine,
    installed or checked out, whatever its git history (a copy of a working tree can carry a
    stale .git: a run on the lent GPU machine recorded a commit its code was not)."""
    import hashlib

    package = Path(package) if package else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_version() -> dict:
    """{"mlff_ins": version, "source_sha256": :func:`source_digest`} and, when the package runs
    from a git checkout, "git_commit" and "git_dirty" (uncommitted changes to the package's own
    files)."""
    from mlff_ins import __version__

    info = {"mlff_ins": __version__, "source_sha256": source_digest()}
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return info
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no", "--", "mlff_ins"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return info
    if head.returncode == 0 and dirty.returncode == 0:
        info["git_commit"] = head.stdout.strip()
        info["git_dirty"] = bool(dirty.stdout.strip())
    return info


def device_name(device: str | None) -> str:
    """The device a run's models ran on, as the study records it: "cpu", or "cuda:N (the
    GPU's name)"."""
    if not device or device == "cpu":
        return "cpu"
    import torch

    from mlff_ins.model.calculator import resolve_device

    d = resolve_device(device)
    if d.type != "cuda":
        return str(d)
    index = d.index if d.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _code_text(code: dict) -> str:
    text = str(code.get("mlff_ins"))
    if code.get("git_commit"):
        modified = ", modified" if code.get("git_dirty") else ""
        text += f" (commit {code['git_commit'][:10]}{modified})"
    if code.get("source_sha256"):
        text += f" [sources {code['source_sha256']}]"
    if code.get("device"):
        text += f" on {code['device']}"
    return text


def _read_timings(out: Path) -> dict:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def shell_script(study: Study) -> str:
    """The study as a shell script of mlff-ins commands (``--dry-run``)."""
    s = study.size
    members = (" --md-members " + " ".join(str(k) for k in study.md_members)
               if study.md_members else "")
    lines = [
        "#!/usr/bin/env bash",
        "# The silicon case study: c-Si, a-Si and a vacancy cell, from the reference force field",
        "# to VISION spectra by phonons, MD and the direct predictor, each pair compared.",
        f"# Written by `mlff-ins demo --full{'' if s.name == 'full' else ' --size ' + s.name}"
        f"{'' if s.predictor else ' --no-predictor'}{members} --dry-run`; "
        "`mlff-ins demo --full` runs the same steps",
        "# (and skips those already done). Run from anywhere; OUT, MODEL and DEVICE (cpu, cuda)",
        "# may be overridden.",
        "set -euo pipefail",
        f'OUT=${{OUT:-{study.out}}}',
        f'DEVICE=${{DEVICE:-{study.device or "cpu"}}}',
        # si-reference: the shipped reference bundle, by the name every command accepts
        'MODEL=${MODEL:-' + shlex.quote(shown_name(str(study.model)) if study.model
                                        else "si-reference") + '}',
        "",
    ]
    for step in study.steps:
        lines.append(f"# {step.name}" + (f": {step.note}" if step.note else ""))
        if step.func:
            lines.append(f'mlff-ins demo --full --size {s.name} --model "$MODEL" '
                         f'--device "$DEVICE"{members} --step {step.func} -o "$OUT"')
        else:
            words = []
            for a in step.argv:
                if a == "{model}":
                    words.append('"$MODEL"')
                elif a.startswith(STUDY_FOLDERS):
                    words.append(f'"$OUT/{a}"')
                else:
                    words.append(shlex.quote(a))
            if step.argv[0] in DEVICE_COMMANDS:
                words += ["--device", '"$DEVICE"']
            cmd = "mlff-ins " + " ".join(words)
            if step.resume:
                out = f'"$OUT/{step.argv[step.argv.index("-o") + 1]}"'
                cmd += f' $([ -e {out} ] && echo --resume)'
            lines.append(cmd)
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------- the function steps

def _protocols(size: StudySize) -> dict:
    s = size
    equilibrate = {"name": "equilibrate", "ensemble": "nvt",
                   "thermostat": s.equilibrate_thermostat, "T": s.temperature_K,
                   "ps": s.equilibrate_ps}
    if s.equilibrate_thermostat == "bussi" and s.equilibrate_tdamp_fs is not None:
        equilibrate["tdamp_fs"] = s.equilibrate_tdamp_fs
    if s.equilibrate_thermostat == "langevin" and s.equilibrate_friction_per_fs is not None:
        equilibrate["friction_per_fs"] = s.equilibrate_friction_per_fs
    production = {"name": "production", "ensemble": "nve", "ps": s.production_ps}
    # every MD run ends in these two stages: the crystals from their relaxed cells, a-Si from
    # the last frame of its melt-quench
    at_temperature = {"dt_fs": s.dt_fs, "every": s.every, "stages": [equilibrate, production]}
    melt = {"dt_fs": s.dt_fs, "every": s.quench_every, "stages": [
        {"name": "heat", "ensemble": "nvt", "T_start": s.temperature_K, "T_end": s.melt_K,
         "rate_K_per_ps": s.heat_K_per_ps},
        {"name": "melt", "ensemble": "nvt", "T": s.melt_K, "ps": s.melt_ps},
        {"name": "quench", "ensemble": "nvt", "T_start": s.melt_K, "T_end": s.temperature_K,
         "rate_K_per_ps": s.quench_K_per_ps},
        {"name": "anneal", "ensemble": "npt", "T": s.temperature_K, "P_GPa": 0.0,
         "ps": s.anneal_ps}]}
    return {"production": at_temperature, "melt_quench": melt}


def structures(study: Study) -> None:
    """Relax the 8-atom diamond cell with the model (cell and positions, symmetry kept) and write
    it with the MD protocols of this size."""
    import yaml
    from ase.build import bulk
    from ase.io import write

    from mlff_ins.atomic_io import atomic_path
    from mlff_ins.model.calculator import load_calculator
    from mlff_ins.phonons.finite_displacement import relax

    out = study.out
    (out / "structures").mkdir(parents=True, exist_ok=True)
    (out / "protocols").mkdir(parents=True, exist_ok=True)
    for name, proto in _protocols(study.size).items():
        header = (f"# {name} protocol of the case study (size {study.size.name}), written by "
                  f"mlff-ins demo --full\n")
        write_text_atomic(out / "protocols" / f"{name}.yaml",
                          header + yaml.safe_dump(proto, sort_keys=False))
    calc = load_calculator(study.model, device=study.device or "cpu")
    si = bulk("Si", "diamond", a=SI_A0_GUESS, cubic=True)
    si = relax(si, calc, fmax=1e-4)
    si.calc = None
    si.info["note"] = f"diamond Si relaxed with {study.model}"
    with atomic_path(out / "structures" / "si_conventional.xyz") as tmp:
        write(tmp, si, format="extxyz")
    print(f"  relaxed lattice constant {si.cell.lengths()[0]:.4f} Å (experiment 5.431 Å)")


def _s_e(path: Path):
    from mlff_ins.neutron.spectrum import read_spectra

    sp = read_spectra(path)
    if "s_e" not in sp:
        raise InputError(f"{path}: no s_e group")
    return sp["s_e"]


def vacancy_difference(study: Study) -> None:
    """S(E) of the vacancy cell minus that of the perfect crystal, per atom, for the phonon route
    (both cells as their own supercells) and the MD route (the vacancy cell's MD against that of
    the same cell without the vacancy, :func:`perfect_md_spectra`); written to
    vacancy/difference.h5 and .png."""
    from mlff_ins.neutron.spectrum import Spectrum1D, write_spectra

    out = study.out
    pairs = {"phonons": ("vacancy/ins_phonons.h5", "vacancy/perfect_ins_phonons.h5"),
             "md": ("vacancy/ins_md.h5", perfect_md_spectra(study.size))}
    result = {}
    for route, (defect, perfect) in pairs.items():
        a, b = _s_e(out / defect), _s_e(out / perfect)
        grid = a.x
        other = np.interp(grid, b.x, b.intensity, left=0.0, right=0.0)
        # S(E) files are per atom of the cell: the difference is per atom too
        result[f"difference_{route}"] = Spectrum1D(
            kind="s_e", x=grid, intensity=a.intensity - other, units=a.units,
            temperature_K=a.temperature_K, instrument=a.instrument, source=a.source,
            provenance={**a.provenance,
                        "note": f"vacancy minus perfect crystal ({route} route), per atom"})
    write_spectra(out / "vacancy" / "difference.h5", result)
    _plot_difference(out, pairs, result)


def _plot_difference(out: Path, pairs: dict, result: dict) -> None:
    from matplotlib.figure import Figure

    from mlff_ins.atomic_io import atomic_path

    fig = Figure(figsize=(8, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for k, (route, (defect, perfect)) in enumerate(pairs.items()):
        a, b = _s_e(out / defect), _s_e(out / perfect)
        top.plot(a.x, a.intensity, color=f"C{k}", lw=1, label=f"vacancy ({route})")
        top.plot(b.x, b.intensity, color=f"C{k}", lw=1, ls=":",
                 label=f"perfect ({route})")
        d = result[f"difference_{route}"]
        bottom.plot(d.x, d.intensity, color=f"C{k}", lw=1, label=route)
    bottom.axhline(0, color="0.6", lw=0.6)
    top.set_ylabel("VISION S(E), per atom")
    bottom.set_ylabel("vacancy − perfect")
    bottom.set_xlabel("energy transfer (meV)")
    top.set_xlim(0, 80)
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    top.set_title("Si vacancy: the defect's modes")
    fig.tight_layout()
    with atomic_path(out / "vacancy" / "difference.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def _records(study: Study) -> list[dict]:
    """metrics.json records {structure, a, b, kind, mse, cosine, wasserstein_meV,
    peak_shift_meV} exactly as `mlff-ins compare` computed them."""
    recs = []
    for step in study.steps:
        if not step.argv or step.argv[0] != "compare":
            continue
        path = study.out / step.outputs[0]
        if not path.exists():
            continue
        doc = json.loads(path.read_text())
        kind = step.argv[step.argv.index("--kind") + 1]
        for pair in doc.get("pairs", []):
            peaks = pair.get("peaks") or {}
            shifts = peaks.get("shifts_meV") or []
            recs.append({"structure": step.structure, "a": pair["a"], "b": pair["b"],
                         "kind": kind, "comparison": Path(step.outputs[0]).parent.name,
                         "mse": pair.get("mse"), "cosine": pair.get("cosine"),
                         "wasserstein_meV": pair.get("wasserstein_meV"),
                         # the largest |shift| of the matched peaks (all of them below)
                         "peak_shift_meV": max((abs(x) for x in shifts), default=None),
                         "peak_shifts_meV": shifts,
                         # peaks with no partner within compare's matching distance: a shift
                         # larger than it, or a peak one route lacks
                         "peaks_unmatched_a": peaks.get("unmatched_a") or [],
                         "peaks_unmatched_b": peaks.get("unmatched_b") or []})
    return recs


def report(study: Study) -> None:
    """metrics.json and report.md from the outputs of the other steps."""
    from mlff_ins.casestudy_report import write_report

    write_text_atomic(study.out / "metrics.json", json.dumps(_records(study), indent=1) + "\n")
    write_report(study, _records(study), _read_timings(study.out))


def glass_check(study: Study) -> None:
    """Stop a full-size study whose melt-quench left a crystal (its phonons of a P1 cell and
    spectra would be hours spent on the wrong structure); a quick study, whose 64-atom quench
    is known to stay crystalline, goes on and its report says so."""
    from mlff_ins.casestudy_report import not_amorphous

    structure = json.loads((study.out / "a-si" / "structure.json").read_text())
    if not_amorphous(structure) and study.size.name == "full":
        raise InputError(f"{study.out / 'a-si'}: the melt-quench left a crystal "
                         f"({100 * structure['coordination']['fraction_4fold']:.0f} % 4-fold, "
                         f"bond angles spread {structure['bond_angles']['std_deg']:.1f}°); melt "
                         f"hotter or longer (protocols/melt_quench.yaml) and rerun the a-Si MD")


FUNCTIONS = {"structures": structures, "vacancy_difference": vacancy_difference,
             "glass_check": glass_check, "report": report}
