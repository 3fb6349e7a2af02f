"""`mlff-ins md`: molecular dynamics with any ASE calculator (a model bundle by default), written
to an H5MD trajectory frame by frame, resumable after a kill, stopped cleanly by a watchdog.

Ensembles (ASE's integrators): ``nve`` velocity Verlet; ``nvt`` Langevin (default), Bussi or a
Nosé–Hoover chain; ``npt`` isotropic or anisotropic MTK barostat with a Nosé–Hoover chain
thermostat (the cell is stored every frame). Units: fs, K, GPa, eV, Å.

Resume: the last complete frame of the trajectory (positions, velocities, cell, step) restarts the
run, which continues to the same total number of steps; for NVE the continued trajectory is the
one an uninterrupted run gives. The Langevin and Bussi thermostats draw their noise from a
generator reseeded from (seed, step) at every written frame, so a resumed NVT run is the
uninterrupted one too. The Nosé–Hoover chain and MTK barostat variables (thermostat and barostat
positions and momenta, cell momenta) are stored with every frame (observable
``integrator_state``) and restored on resume, so NHC and NPT runs continue as if uninterrupted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.constraints import FixCom

from mlff_ins.data.h5md import H5MDWriter, last_settings
from mlff_ins.errors import InputError, raise_if_terminated

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nhc")
BAROSTATS = ("iso", "aniso")
EV_PER_A3_TO_GPA = 160.21766208
OBSERVABLES = ("potential_energy", "kinetic_energy", "total_energy", "temperature", "pressure",
               "volume", "max_force_std")


#: extended-system variables of ASE's Nosé–Hoover chain / MTK integrators, by class
_STATE_ATTRS = {
    "NoseHooverChainNVT": ("_thermostat._eta", "_thermostat._p_eta"),
    "IsotropicMTKNPT": ("_thermostat._eta", "_thermostat._p_eta", "_barostat._xi",
                        "_barostat._p_xi", "_eps", "_p_eps", "_volume0", "_cell0"),
    "MTKNPT": ("_thermostat._eta", "_thermostat._p_eta", "_barostat._xi", "_barostat._p_xi",
               "_p_g"),
}
_STATE_KINDS = tuple(_STATE_ATTRS)
STATE_SIZE = 64   # [kind, variables..., NaN padding]


def _get(obj, dotted):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def integrator_state(dyn) -> np.ndarray:
    """The integrator's extended-system variables as a fixed-size vector (all NaN: none)."""
    out = np.full(STATE_SIZE, np.nan)
    name = type(dyn).__name__
    if name not in _STATE_ATTRS:
        return out
    try:
        values = np.concatenate([np.ravel(_get(dyn, a)).astype(float)
                                 for a in _STATE_ATTRS[name]])
    except AttributeError:   # another ASE version: resume restarts these from zero
        return out
    out[0] = _STATE_KINDS.index(name) + 1
    out[1:1 + len(values)] = values
    return out


def restore_integrator_state(dyn, state) -> bool:
    """Put ``state`` (from :func:`integrator_state`) back into ``dyn`` when it was written by the
    same kind of integrator; returns whether it did."""
    name = type(dyn).__name__
    if (state is None or not np.isfinite(state[0]) or name not in _STATE_ATTRS
            or int(state[0]) != _STATE_KINDS.index(name) + 1):
        return False
    pos = 1
    for attr in _STATE_ATTRS[name]:
        *owner, last = attr.split(".")
        obj = _get(dyn, ".".join(owner)) if owner else dyn
        current = getattr(obj, last)
        size = int(np.size(current))
        value = state[pos:pos + size]
        pos += size
        setattr(obj, last, float(value[0]) if np.ndim(current) == 0
                else value.reshape(np.shape(current)).copy())
    return True


#: run settings stored with every frame, the option a user sets each with, and whether a resume
#: must keep it (``always``: the whole file shares it; ``stage``: within one run or stage)
_SETTINGS = {
    "dt_fs": ("--dt", "always"), "every": ("--every", "always"),
    "model": ("--model/--calculator", "always"),
    "ensemble": ("--ensemble", "stage"), "thermostat": ("--thermostat", "stage"),
    "barostat": ("--barostat", "stage"), "temperature_K": ("-T", "stage"),
    "temperature_end_K": ("the protocol's T_end", "stage"), "pressure_GPa": ("-P", "stage"),
    "friction_per_fs": ("--friction", "stage"), "tdamp_fs": ("--tdamp", "stage"),
    "pdamp_fs": ("--pdamp", "stage"), "seed": ("--seed", "stage"),
    "ramp_start_step": ("the protocol's stages", "stage"),
    # a ramp's slope depends on where it ends: a resume inside it with another length (ps,
    # rate) would bend the temperature schedule mid-stage
    "ramp_end_step": ("the ramp's length (the protocol's ps or rate_K_per_ps)", "stage"),
    "stage": ("the protocol's stage", "stage"),
}


def run_settings(opts: "MDOptions") -> dict:
    """The settings that determine the dynamics of ``opts``, as stored with each frame. Options
    that do not act in the chosen ensemble (a barostat in NVT, friction for Bussi) are None."""
    nvt, npt = opts.ensemble == "nvt", opts.ensemble == "npt"
    langevin = nvt and opts.thermostat == "langevin"
    return {
        "dt_fs": opts.dt_fs, "every": opts.every, "model": opts.model,
        "ensemble": opts.ensemble, "thermostat": opts.thermostat if nvt else None,
        "barostat": opts.barostat if npt else None,
        "temperature_K": opts.temperature_K if opts.ensemble != "nve" else None,
        "temperature_end_K": opts.temperature_end_K,
        "pressure_GPa": opts.pressure_GPa if npt else None,
        "friction_per_fs": opts.friction_per_fs if langevin else None,
        "tdamp_fs": opts.tdamp_fs if (nvt and not langevin) or npt else None,
        "pdamp_fs": opts.pdamp_fs if npt else None,
        "seed": opts.seed if nvt and opts.thermostat in ("langevin", "bussi") else None,
        "ramp_start_step": opts.ramp_start_step, "stage": opts.stage,
        "ramp_end_step": opts.steps if opts.temperature_end_K is not None else None,
    }


def check_resume_settings(path, stored: dict, opts: "MDOptions", step: int) -> None:
    """Refuse to continue a trajectory with settings other than those its last frame was made
    with; raises :class:`InputError` naming the differing option."""
    if not stored:
        import warnings
        warnings.warn(f"{path}: the trajectory stores no run settings (written by an older "
                      f"version); cannot check that the resumed run uses the same ones",
                      stacklevel=2)
        return
    current = run_settings(opts)
    # a protocol stage that starts at this frame may change everything but the file's clock
    # and model; inside a run or stage nothing that shapes the dynamics may change
    scope = ("always",) if step <= opts.ramp_start_step else ("always", "stage")
    for key, (option, when) in _SETTINGS.items():
        if when not in scope or key not in stored:
            continue
        a, b = stored[key], current[key]
        same = a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                          and not isinstance(a, bool) and abs(a - b) <= 1e-12 * max(abs(a), 1))
        if not same:
            raise InputError(f"{path}: cannot resume with {option} {b!r}: the trajectory was "
                             f"run with {a!r} (settings stored at step {step}); use the same "
                             f"options or write a new file")


class WatchdogStop(RuntimeError):
    """The run was stopped on purpose; the message names the step and the atom."""


@dataclass
class MDOptions:
    temperature_K: float = 300.0
    steps: int = 1000                 # total steps of the run (a resumed run finishes these)
    dt_fs: float = 1.0
    ensemble: str = "nvt"
    thermostat: str = "langevin"
    barostat: str = "iso"
    pressure_GPa: float = 0.0
    friction_per_fs: float = 0.01     # Langevin
    tdamp_fs: float = 100.0           # Bussi / Nosé–Hoover time constant
    pdamp_fs: float = 1000.0          # MTK barostat time constant
    every: int = 10                   # write a frame every N steps
    seed: int = 0
    max_force: float = 50.0           # eV/Å: stop above
    max_temperature_K: float | None = None   # default: 10 × target, at least 5000 K
    max_force_std: float | None = None       # eV/Å: stop when the ensemble disagrees more
    temperature_end_K: float | None = None   # Langevin ramp: T goes linearly from
    ramp_start_step: int = 0                 #   temperature_K at this step (where a protocol
                                             #   stage starts) to this at `steps`
    stage: str = ""                   # protocol stage name, stored with every frame
    model: str = ""                   # identity of the model (hash), checked on resume

    def target_temperature(self, step: float) -> float:
        if self.temperature_end_K is None or self.steps <= self.ramp_start_step:
            return self.temperature_K
        x = min(max((step - self.ramp_start_step) / (self.steps - self.ramp_start_step), 0), 1)
        return self.temperature_K + x * (self.temperature_end_K - self.temperature_K)


@dataclass
class MDSummary:
    steps_done: int
    frames: int
    stopped: str | None = None
    wall_s: float = 0.0
    mean_temperature_K: float = float("nan")
    mean_pressure_GPa: float = float("nan")
    drift_meV_per_atom_per_ps: float | None = None
    ns_per_day: float = 0.0
    atom_steps_per_s: float = 0.0
    extra: dict = field(default_factory=dict)


def _check(opts: MDOptions) -> None:
    if opts.ensemble not in ENSEMBLES:
        raise InputError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, not {opts.ensemble!r}")
    if opts.thermostat not in THERMOSTATS:
        raise InputError(f"--thermostat must be one of {', '.join(THERMOSTATS)}")
    if opts.barostat not in BAROSTATS:
        raise InputError(f"--barostat must be one of {', '.join(BAROSTATS)}")
    if not opts.dt_fs > 0 or opts.steps < 0 or opts.every < 1:
        raise InputError("--dt must be positive (fs), --steps >= 0 and --every >= 1")
    if opts.ensemble != "nve" and not opts.temperature_K > 0:
        raise InputError(f"-T must be positive for {opts.ensemble}, not {opts.temperature_K}")
    if opts.temperature_end_K is not None and (opts.ensemble != "nvt"
                                               or opts.thermostat != "langevin"):
        raise InputError("temperature ramps need the nvt ensemble with the langevin thermostat")


class ThermostatFixCom(FixCom):
    """ASE's FixCom as added by :func:`make_dynamics` for a thermostatted NVT stage: a class of
    its own so that the next stage can tell it from a user's constraint and take it off."""


def make_dynamics(atoms, opts: MDOptions, step: int):
    """The ASE integrator for ``opts``; thermostat noise seeded from (seed, step). A Langevin,
    Bussi or Nose-Hoover chain stage carries FixCom; any other stage starts without it (the MTK
    integrators refuse constraints, and velocity Verlet conserves the total momentum)."""
    from ase import units

    dt = opts.dt_fs * units.fs
    rng = np.random.default_rng([opts.seed, step])
    atoms.constraints = [c for c in atoms.constraints if not isinstance(c, ThermostatFixCom)]
    if opts.ensemble == "nve":
        from ase.md.verlet import VelocityVerlet
        return VelocityVerlet(atoms, timestep=dt)
    if opts.ensemble == "nvt":
        if opts.thermostat == "langevin":
            from ase.md.langevin import Langevin

            # Langevin's independent kicks make the centre of mass of the whole cell a Brownian
            # particle (1/N of the kinetic energy), which spectra would show at E ~ 0 as if the
            # sample drifted; FixCom keeps it at rest (ASE's advice with fixcm=False). A cell
            # that already carries constraints (fixed atoms) is left as it is
            if not atoms.constraints:
                atoms.set_constraint(ThermostatFixCom())
            return Langevin(atoms, dt, temperature_K=opts.temperature_K,
                            friction=opts.friction_per_fs / units.fs, fixcm=False, rng=rng)
        if opts.thermostat == "bussi":
            from ase.md.bussi import Bussi

            # Bussi conserves the (zero) total momentum, and rescales the kinetic energy to
            # ndof/2 kT with ndof from the constraints: without FixCom 3N, so the 3N - 3
            # vibrational degrees of freedom ran N/(N - 1) hot (1.6 % at 64 atoms)
            if not atoms.constraints:
                atoms.set_constraint(ThermostatFixCom())
            return Bussi(atoms, dt, temperature_K=opts.temperature_K,
                         taut=opts.tdamp_fs * units.fs, rng=rng)
        from ase.md.nose_hoover_chain import NoseHooverChainNVT, NoseHooverChainThermostat

        # the chain conserves the (zero) total momentum, but ASE's thermostat drives the kinetic
        # energy to 3N/2 kT whatever the constraints: the 3N - 3 vibrational degrees of freedom
        # ran N/(N - 1) hot. Its degrees of freedom enter only as 3 x num_atoms_global, so a
        # thermostat built with ndof/3 there targets ndof/2 kT (ndof from the constraints, as
        # Bussi's); FixCom makes the logged temperature count the same ndof
        if not atoms.constraints:
            atoms.set_constraint(ThermostatFixCom())
        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=opts.temperature_K,
                                 tdamp=opts.tdamp_fs * units.fs)
        dyn._thermostat = NoseHooverChainThermostat(
            num_atoms_global=_degrees_of_freedom(atoms) / 3, masses=dyn.masses,
            temperature_K=opts.temperature_K, tdamp=opts.tdamp_fs * units.fs)
        return dyn
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, MTKNPT
    cls = IsotropicMTKNPT if opts.barostat == "iso" else MTKNPT
    return cls(atoms, dt, temperature_K=opts.temperature_K,
               pressure_au=opts.pressure_GPa / EV_PER_A3_TO_GPA,
               tdamp=opts.tdamp_fs * units.fs, pdamp=opts.pdamp_fs * units.fs)


def _kinetic_energy(atoms) -> float:
    """Kinetic energy (eV) as ASE's ``get_kinetic_energy``, without BLAS: ASE's ``np.vdot`` is a
    BLAS call, which OpenBLAS spreads over its threads for long vectors, and those threads then
    spin while the model runs. Measured at 4096 atoms on 2 cores, median time per calculator
    call, same calculator, two rounds: plain velocity Verlet 0.80 / 0.73 s, with ASE's
    temperature in a per-step observer 0.90 / 0.82 s; with this function 0.75 / 0.67 s against
    0.75 / 0.76 s."""
    momenta = atoms.get_momenta()
    return 0.5 * float(np.sum(momenta * momenta / atoms.get_masses()[:, None]))


def _degrees_of_freedom(atoms) -> int:
    """3N less the degrees of freedom the constraints remove (FixCom: 3)."""
    return 3 * len(atoms) - sum(c.get_removed_dof(atoms) for c in atoms.constraints)


def _temperature(atoms) -> float:
    """Kinetic temperature (K) as ASE's ``get_temperature`` (degrees of freedom removed by
    constraints are discounted), computed without BLAS (see :func:`_kinetic_energy`)."""
    from ase import units

    dof = _degrees_of_freedom(atoms)
    return 2 * _kinetic_energy(atoms) / (dof * units.kB) if dof > 0 else 0.0


def _observables(atoms) -> dict:
    res = atoms.calc.results
    epot = float(res.get("energy", atoms.get_potential_energy()))
    ekin = _kinetic_energy(atoms)
    temperature = _temperature(atoms)   # the watchdog's definition (constraints discounted)
    pressure = float("nan")
    if "stress" in res:
        stress = np.asarray(res["stress"])
        # P = −tr(σ)/3 + kinetic contribution N k T / V
        pressure = (-stress[:3].mean() + 2 * ekin / (3 * atoms.get_volume())) * EV_PER_A3_TO_GPA
    std = res.get("forces_std")
    # one member (a bundle run with --members K, a single model) has no spread: NaN, not the
    # zeros its calculator reports, so that `select` does not rank frames by them
    if len(getattr(atoms.calc, "models", ())) < 2:
        std = None
    return {"potential_energy": epot, "kinetic_energy": ekin, "total_energy": epot + ekin,
            "temperature": temperature, "pressure": pressure, "volume": atoms.get_volume(),
            "max_force_std": float(np.max(std)) if std is not None else float("nan")}


#: an NPT cell whose volume leaves this range (ratio to where this integration started: the
#: run's start, or the frame a --resume continues from) has collapsed or blown apart; a
#: collapsing cell also makes the neighbour lists, and memory, grow without bound
VOLUME_RATIO_LIMITS = (0.5, 2.0)


def _watchdog(atoms, step: int, opts: MDOptions, volume0: float | None = None) -> None:
    res = atoms.calc.results
    forces = res.get("forces")
    if forces is None or not np.all(np.isfinite(forces)) or not np.all(
            np.isfinite(atoms.positions)):
        bad = np.argwhere(~np.isfinite(np.concatenate(
            [atoms.positions, forces if forces is not None else np.full_like(atoms.positions,
                                                                              np.nan)], axis=1)))
        atom = int(bad[0, 0]) if len(bad) else -1
        raise WatchdogStop(f"step {step}: non-finite position or force on atom {atom} "
                           f"({atoms[atom].symbol if atom >= 0 else '?'})")
    f = np.linalg.norm(forces, axis=1)
    if f.max() > opts.max_force:
        atom = int(np.argmax(f))
        raise WatchdogStop(f"step {step}: force {f[atom]:.1f} eV/Å on atom {atom} "
                           f"({atoms[atom].symbol}) exceeds --max-force {opts.max_force:g}")
    limit = opts.max_temperature_K or max(10 * opts.temperature_K,
                                          10 * (opts.temperature_end_K or 0.0), 5000.0)
    t = _temperature(atoms)
    if t > limit:
        v2 = np.sum(atoms.get_velocities() ** 2, axis=1) * atoms.get_masses()
        atom = int(np.argmax(v2))
        raise WatchdogStop(f"step {step}: temperature {t:.0f} K above {limit:.0f} K (fastest "
                           f"atom {atom}, {atoms[atom].symbol})")
    if volume0:
        ratio = atoms.get_volume() / volume0
        if not VOLUME_RATIO_LIMITS[0] < ratio < VOLUME_RATIO_LIMITS[1]:
            raise WatchdogStop(f"step {step}: the cell volume is {ratio:.2f} x its value at the "
                               f"start of the run; the cell is collapsing or blowing apart "
                               f"(check the model, -P and --pdamp)")
    std = res.get("forces_std")
    if opts.max_force_std is not None and std is not None and np.max(std) > opts.max_force_std:
        atom = int(np.argmax(std))
        raise WatchdogStop(f"step {step}: ensemble force std {std[atom]:.3f} eV/Å on atom {atom} "
                           f"({atoms[atom].symbol}) exceeds --max-force-std "
                           f"{opts.max_force_std:g}; the model is extrapolating")


#: the extension MDAnalysis (and so most analysis tools) recognise an H5MD file by
TRAJECTORY_SUFFIX = ".h5md"


def check_trajectory_name(path: str | Path) -> None:
    """Warn (one line) when ``path`` does not end in ``.h5md``: the file is H5MD all the same,
    but ``MDAnalysis.Universe("traj.h5")`` refuses it ("'H5' isn't a valid topology format")."""
    import warnings

    path = Path(path)
    if path.suffix.lower() != TRAJECTORY_SUFFIX:
        warnings.warn(f"{path}: MDAnalysis opens H5MD trajectories by the {TRAJECTORY_SUFFIX} "
                      f"extension; {path.with_suffix(TRAJECTORY_SUFFIX).name} would open there "
                      f"as it is", stacklevel=2)


def run_md(atoms, calc, opts: MDOptions, output: str | Path, resume: bool = False,
           progress: bool = True) -> MDSummary:
    """Run MD on ``atoms`` with ``calc`` and write ``output`` (H5MD). See the module docstring."""
    from ase import units
    from ase.md import velocitydistribution as vd

    _check(opts)
    output = Path(output)
    if output.exists() and not resume:
        raise InputError(f"{output} exists; pass --resume to continue it or choose another -o")
    if resume and output.exists():   # checked before the file is opened for writing
        last = last_settings(output)
        if last is not None and last[0] < opts.steps:
            check_resume_settings(output, last[1], opts, last[0])
    atoms = atoms.copy()
    atoms.calc = calc
    if opts.ensemble == "npt" and atoms.constraints:   # refused before any file is written
        names = ", ".join(sorted({type(c).__name__ for c in atoms.constraints}))
        raise InputError(f"npt: the structure carries constraints ({names}), which ASE's MTK "
                         "barostat does not support; remove them or use nvt")

    def start() -> None:
        if not atoms.has("momenta") or not np.any(atoms.get_momenta()):
            thermalize = getattr(vd, "thermalize_momenta", None) or \
                vd.MaxwellBoltzmannDistribution  # ASE < 3.29
            thermalize(atoms, temperature_K=max(opts.temperature_K, 0.0),
                       rng=np.random.default_rng(opts.seed))
            vd.Stationary(atoms)
        try:
            atoms.get_forces()
        except InputError:
            raise
        except (NotImplementedError, KeyError, ValueError) as exc:
            # an ASE calculator that cannot handle the structure (EMT and an element it lacks)
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"{type(calc).__name__} cannot compute forces for this structure "
                             f"({', '.join(sorted(set(atoms.get_chemical_symbols())))}): "
                             f"{text}") from None

    fresh = not (resume and output.exists())
    if fresh:   # a calculator that fails on the structure leaves no empty trajectory behind
        start()
    writer = H5MDWriter(output, atoms.get_chemical_symbols(),
                        observables=OBSERVABLES + (("integrator_state", STATE_SIZE),),
                        resume=not fresh, masses=atoms.get_masses())
    step = 0
    state = None
    try:
        if writer.n_frames:
            last = writer.last_frame()
            state = last["observables"]["integrator_state"]
            atoms.set_cell(last["cell"], scale_atoms=False)
            atoms.positions = last["positions"]
            atoms.set_velocities(last["velocities"] / units.fs)
            step = last["step"]
        else:
            if not fresh:
                start()
            try:
                _watchdog(atoms, 0, opts)
            except WatchdogStop as stop:
                return MDSummary(steps_done=0, frames=0, stopped=str(stop))
            _write(writer, atoms, 0, opts, None)
        return _integrate(atoms, opts, writer, step, progress, state)
    finally:
        writer.close()


def _write(writer, atoms, step, opts, dyn):
    from ase import units

    res = atoms.calc.results
    state = integrator_state(dyn) if dyn is not None else np.full(STATE_SIZE, np.nan)
    writer.append(step, step * opts.dt_fs, atoms.positions, atoms.cell.array,
                  velocities=atoms.get_velocities() * units.fs, forces=res["forces"],
                  settings=json.dumps(run_settings(opts)), integrator_state=state,
                  **_observables(atoms))


def _integrate(atoms, opts, writer, step, progress, state=None) -> MDSummary:
    from tqdm.auto import tqdm

    dyn = make_dynamics(atoms, opts, step)
    if step > opts.ramp_start_step:
        # resumed inside a run or protocol stage: carry on with its thermostat/barostat
        # variables (a stage that starts here starts them afresh, as an uninterrupted run does)
        restore_integrator_state(dyn, state)
    summary = MDSummary(steps_done=step, frames=writer.n_frames)
    start = step

    def current() -> int:
        return start + dyn.nsteps

    volume0 = atoms.get_volume() if opts.ensemble == "npt" else None
    dyn.attach(lambda: _watchdog(atoms, current(), opts, volume0), interval=1)
    calc = atoms.calc
    # NVE/NVT integrators ask for forces only; a model bundle then skips the stress except on
    # the steps that are written (NPT needs it at every step)
    stress_on_demand = opts.ensemble != "npt" and isinstance(
        getattr(calc, "compute_stress", None), bool)
    stress_default = calc.compute_stress if stress_on_demand else None
    t0 = time.perf_counter()
    bar = tqdm(total=opts.steps, initial=step, unit="step", desc="md", disable=not progress)
    temps, pressures, energies, times = [], [], [], []
    try:
        while current() < opts.steps:
            raise_if_terminated()       # a SIGTERM whose exception a finaliser swallowed
            chunk = min(opts.every - current() % opts.every, opts.steps - current())
            if opts.temperature_end_K is not None:
                # ramp, updated every frame interval to its value at the interval's middle (at
                # its start, the target lagged the ramp by an interval: 1 K at 100 K/ps with
                # frames every 10 fs)
                dyn.set_temperature(temperature_K=opts.target_temperature(
                    current() + 0.5 * chunk))
            if current() % opts.every == 0 and hasattr(dyn, "rng"):
                # noise from here on depends only on (seed, step): a resume repeats it exactly
                dyn.rng = np.random.default_rng([opts.seed, current()])
            if stress_on_demand:
                # the steps between frames need forces only; the frame's step computes the
                # stress too, for its pressure
                calc.compute_stress = False
                if chunk > 1:
                    dyn.run(chunk - 1)
                calc.compute_stress = True
                dyn.run(1)
            else:
                dyn.run(chunk)
            if current() % opts.every == 0 or current() == opts.steps:
                _write(writer, atoms, current(), opts, dyn)
                obs = _observables(atoms)
                temps.append(obs["temperature"])
                pressures.append(obs["pressure"])
                energies.append(obs["total_energy"])
                times.append(current() * opts.dt_fs)
            bar.update(current() - bar.n)
            elapsed = time.perf_counter() - t0
            if elapsed > 0 and current() > start:
                done = current() - start
                bar.set_postfix(ns_day=f"{done * opts.dt_fs * 1e-6 / (elapsed / 86400):.3g}",
                                atom_steps_s=f"{done * len(atoms) / elapsed:.3g}",
                                T=f"{_temperature(atoms):.0f}K")
    except WatchdogStop as stop:
        summary.stopped = str(stop)
    finally:
        bar.close()
        if stress_on_demand:
            calc.compute_stress = stress_default
    wall = time.perf_counter() - t0
    done = current() - start
    summary.steps_done = current()
    summary.frames = writer.n_frames
    summary.wall_s = wall
    if done and wall > 0:
        summary.ns_per_day = done * opts.dt_fs * 1e-6 / (wall / 86400)
        summary.atom_steps_per_s = done * len(atoms) / wall
    if temps:
        summary.mean_temperature_K = float(np.mean(temps))
        summary.mean_pressure_GPa = float(np.nanmean(pressures)) if np.any(
            np.isfinite(pressures)) else float("nan")
    if opts.ensemble == "nve" and len(energies) > 2:
        slope = np.polyfit(np.array(times) / 1000.0, energies, 1)[0]  # eV/ps
        summary.drift_meV_per_atom_per_ps = float(slope * 1000.0 / len(atoms))
    return summary
