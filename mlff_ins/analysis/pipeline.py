"""``mlff-ins spectra``: trajectory file -> one streamed pass -> spectra (NXdata) + QENS fits.

Everything a user asks for on the command line is computed from one read of the trajectory
(:func:`mlff_ins.analysis.dynamics.correlate`); this module only chooses the correlations,
converts them to :mod:`mlff_ins.neutron.spectrum` objects and applies instrument kinematics.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from mlff_ins.analysis import qens
from mlff_ins.analysis.dynamics import correlate
from mlff_ins.analysis.qpoints import spherical_shells
from mlff_ins.analysis.spectra_md import (element_mass, kinetic_sum, msd_spectra,
                                          scattering_spectra, vdos_spectra, velocity_spectra)
from mlff_ins.analysis.trajectory import Trajectory
from mlff_ins.errors import InputError
from mlff_ins.neutron.units import MEV_PER_THZ
from mlff_ins.ins.engine import VibrationalSource, indirect_s_e, s_e_spectra
from mlff_ins.ins.incoherent import quantum_u2_ratio, u2_from_dos
from mlff_ins.neutron.instruments import get_instrument
from mlff_ins.neutron.kinematics import kinematic_mask
from mlff_ins.neutron.quantum import KB_MEV_PER_K
from mlff_ins.neutron.resolution import CHOPPER_INSTRUMENTS, constant_fwhm, direct_resolution
from mlff_ins.neutron.scattering_lengths import sigma_total_barn
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

#: 1 amu Å²/fs² in meV
AMU_A2_PER_FS2_MEV = 1.0364269656262175e5


@dataclass
class SpectraOptions:
    vdos: bool = True
    sqe: bool = False
    qens: bool = False
    temperature_K: float | None = None      # None: from the kinetic energy
    time_window_fs: float | None = None     # None: half the trajectory, at most 2000 frames
    window: str = "gaussian"
    quantum_correction: str = "harmonic"
    weighting: str = "neutron"
    q_min: float = 0.2
    q_max: float = 5.0
    q_width: float = 0.1
    q_per_shell: int = 50
    seed: int = 0
    partials: bool = True
    instrument: str = "direct"
    ei_meV: float | None = None
    angles_deg: tuple[float, float] = (3.0, 135.0)
    resolution_fraction: float = 0.0        # direct geometry: Gaussian FWHM / E_i
    fwhm_meV: float = 0.0                   # S(Q,E) without E_i: constant Gaussian broadening
    e_max_meV: float | None = 500.0         # energy axes cut at |E| <= e_max (None: all)
    chopper_frequency_hz: float | None = None   # a named chopper spectrometer's settings
    chopper_package: str | None = None
    q_max_fickian: float = 1.0              # QENS: Γ = ħDQ² fitted below this Q (1/Å)
    debye_waller: str = "vdos"              # VISION/TOSCA: ⟨u²⟩ from the VDOS or the MD MSD
    low_energy: str = "debye"               # VISION/TOSCA: the VDOS below the window's resolution
    n_phonon: int = 10                      # VISION/TOSCA: phonon orders
    isotopes: dict = field(default_factory=dict)  # element -> mass number (cross sections, mass)
    device: str = "cpu"
    float32: bool = False
    max_memory_gb: float = 2.0              # budget of the correlations (GiB)
    blocks: int = 1                         # >1: intensity_std from that many frame blocks
    remove_drift: bool = False              # take the cell's centre-of-mass motion out first


def spectra_from_trajectory(path, opts: SpectraOptions, dt_fs: float | None = None,
                            stride: int = 1, progress: bool = True, traj=None,
                            types: list[str] | None = None, topology=None, start: int = 0,
                            stop: int | None = None, skip_fs: float | None = None):
    """Compute the requested spectra; returns ({name: spectrum}, summary dict).

    ``traj`` (e.g. an :class:`ArrayTrajectory`) replaces reading ``path``; ``types`` names the
    elements of LAMMPS atom types 1, 2, ... for LAMMPS dumps; ``topology`` makes MDAnalysis read
    the trajectory. Frames ``start``..``stop`` (every ``stride``-th) are analysed; ``skip_fs``
    instead skips that much simulated time at the start.
    """
    indirect = opts.instrument in ("vision", "tosca")
    if indirect:
        if opts.ei_meV is not None:
            raise InputError(f"--ei applies to direct geometry; {opts.instrument} has a fixed "
                             f"final energy")
    elif opts.instrument != "direct" and opts.instrument not in CHOPPER_INSTRUMENTS:
        get_instrument(opts.instrument)  # an unknown name: the error lists the instruments
    resolution = None if indirect else direct_resolution(
        opts.instrument, opts.ei_meV, opts.resolution_fraction, opts.chopper_frequency_hz,
        opts.chopper_package)                            # bad settings fail before any work
    if opts.debye_waller not in ("msd", "vdos"):
        raise InputError(f"--debye-waller must be msd or vdos, not {opts.debye_waller!r}")
    if opts.low_energy not in LOW_ENERGY_CHOICES:
        raise InputError(f"--low-energy must be {' or '.join(LOW_ENERGY_CHOICES)}, not "
                         f"{opts.low_energy!r}")
    if traj is None:
        if skip_fs is not None:
            if skip_fs < 0:
                raise InputError(f"--skip-ps must not be negative, not {skip_fs / 1000:g}")
            first = Trajectory(path, dt_fs=dt_fs, types=types, topology=topology)
            start = int(np.ceil(skip_fs / first.dt_fs - 1e-9))
        traj = Trajectory(path, dt_fs=dt_fs, stride=stride, types=types, topology=topology,
                          start=start or 0, stop=stop)
    _check_isotopes(traj, opts.isotopes)
    blocks = int(opts.blocks)
    if blocks < 1:
        raise InputError(f"--blocks must be a positive integer, not {opts.blocks}")
    span = traj.n_frames // blocks        # frames one correlation window must fit in
    if opts.time_window_fs is None:
        max_lag = min(span // 2, 2000)
        if blocks > 1 and max_lag < 3:
            raise InputError(f"--blocks {blocks}: blocks of {span} frames are too short for a "
                             f"correlation (3 frames at least); use fewer blocks")
    else:
        max_lag = int(round(opts.time_window_fs / traj.dt_fs))
        if not 3 <= max_lag < span:
            raise InputError(f"--time-window {opts.time_window_fs:g} fs is {max_lag} frames; it "
                             f"must span 3..{span - 1} frames of {traj.dt_fs:g} fs" +
                             (f" (blocks of {span} frames: --blocks {blocks})"
                              if blocks > 1 else ""))
    max_lag = max(max_lag, 3)
    shells = None
    if opts.sqe or opts.qens:
        shells = spherical_shells(traj.first_cell(), q_max=opts.q_max, q_min=opts.q_min,
                                  width=opts.q_width, per_shell=opts.q_per_shell, seed=opts.seed)
    device = _device(opts.device)
    dtype = torch.float32 if opts.float32 else torch.float64
    corr = correlate(traj, max_lag, vacf=True, msd=opts.qens or indirect, shells=shells,
                     coherent=opts.sqe, incoherent=opts.sqe or opts.qens, device=device,
                     dtype=dtype, progress=progress,
                     max_memory_bytes=int(opts.max_memory_gb * 1024 ** 3),
                     remove_drift=opts.remove_drift)
    _check_drift(corr)
    # with the centre of mass at rest (taken out, or a zero total momentum the MD conserved:
    # velocity Verlet, Bussi, Nose-Hoover, Langevin with FixCom) the atoms keep 3N - 3 degrees
    # of freedom; a thermostat that kicks every atom on its own leaves all 3N
    at_rest = corr.drift_removed or corr.com_kinetic_share < COM_AT_REST
    dof = 3 * corr.n_atoms - (3 if at_rest and corr.n_atoms > 1 else 0)
    # Σ m v² from the VACF's spectrum: its lag-0 value for stored velocities, and for velocities
    # differenced from positions the same with their damping sinc²(ωΔt) divided out
    kinetic_T = (kinetic_sum(*velocity_spectra(corr, opts.window, warn=True))
                 * AMU_A2_PER_FS2_MEV / (dof * KB_MEV_PER_K))
    temperature = opts.temperature_K if opts.temperature_K is not None else kinetic_T
    meta = dict(instrument=opts.instrument, source="md", temperature_K=temperature,
                provenance={"trajectory": str(traj.path), "trajectory_sha256": _sha256(traj.path),
                            "options": {k: v for k, v in asdict(opts).items()},
                            "dt_fs": traj.dt_fs, "n_frames": corr.n_frames,
                            "centre_of_mass_drift": {
                                "kinetic_energy_share": corr.drift_share,
                                "removed": corr.drift_removed},
                            "kinetic_temperature_degrees_of_freedom": dof,
                            "n_atoms": corr.n_atoms, "masses_amu": corr.masses})
    if shells is not None:
        meta["provenance"]["q_shells"] = (
            "fixed Miller indices in each frame's own cell; |Q| of a shell is its mean over the "
            f"frames (largest change from the first frame {corr.q_mean_change:.2%})")
    first_frame = getattr(traj, "start", 0)
    meta["provenance"]["frames"] = {"start": first_frame, "stop": getattr(traj, "stop", None),
                                    "step": getattr(traj, "stride", 1)}
    summary = {"n_frames": corr.n_frames, "n_atoms": corr.n_atoms, "dt_fs": traj.dt_fs,
               "first_frame": first_frame,
               "last_frame": first_frame + (corr.n_frames - 1) * getattr(traj, "stride", 1),
               "time_window_fs": float(corr.time_fs[-1]), "kinetic_temperature_K": kinetic_T,
               "temperature_K": temperature,
               # the highest energy frames dt apart resolve (E = h / 2 dt); faster motion aliases
               "nyquist_meV": MEV_PER_THZ * 1000.0 / (2.0 * traj.dt_fs)}
    out: dict = {}
    if opts.vdos:
        out.update(vdos_spectra(corr, opts.window, opts.isotopes, **_meta(meta)))
    if opts.sqe or opts.qens:
        kw = _meta(meta)
        kw.pop("temperature_K")
        sp = scattering_spectra(corr, temperature, opts.window, opts.quantum_correction,
                                opts.weighting, opts.partials, opts.isotopes, **kw)
        if not opts.sqe:
            sp = {k: v for k, v in sp.items() if k.endswith("inc") or "_inc_" in k}
        out.update(sp)
    if opts.qens:
        out.update(msd_spectra(corr, **_meta(meta)))
        summary["qens"] = _qens_fits(corr, opts, out, meta)
    if indirect:
        out.update(indirect_ins(corr, opts, temperature, summary, _meta(meta)))
    if opts.ei_meV is not None:
        _apply_direct_geometry(out, opts, resolution)
    elif opts.fwhm_meV > 0:
        broad = constant_fwhm(opts.fwhm_meV)
        for sp in out.values():
            if isinstance(sp, Spectrum2D) and sp.axis_name == "energy":
                sp.intensity = broad.broaden(sp.y, sp.intensity)
                sp.provenance.update(broad.provenance())
    if opts.e_max_meV is not None:
        _cut_energy(out, opts.e_max_meV)
    if blocks > 1:
        summary["blocks"] = _block_errors(out, summary, traj, opts, max_lag, temperature)
    return out, summary


def _block_errors(out: dict, summary: dict, traj, opts: SpectraOptions, max_lag: int,
                  temperature: float) -> dict:
    """intensity_std of every spectrum in ``out``, and the std of the diffusion coefficients in
    ``summary["qens"]``: the standard error of the mean over ``opts.blocks`` consecutive blocks
    of the analysed frames (batch means), each block analysed like the whole (same correlation
    window, temperature and options). It measures how well the run has sampled the spectrum,
    not the force field's error."""
    n = int(opts.blocks)
    sub = replace(opts, blocks=1, time_window_fs=max_lag * traj.dt_fs, temperature_K=temperature)
    with warnings.catch_warnings():      # the whole run's warnings have been given
        warnings.simplefilter("ignore")
        results = [spectra_from_trajectory(None, sub, traj=block, progress=False)
                   for block in traj.blocks(n)]
    parts = [r[0] for r in results]
    length = traj.n_frames // n
    for element, fits in summary.get("qens", {}).items():
        for key in ("D_msd_A2_per_ps", "D_fickian_A2_per_ps"):
            values = [r[1]["qens"][element][key]["value"] for r in results]
            fits[key].update(std=float(np.std(values, ddof=1) / np.sqrt(n)),
                             std_from=f"standard error of the mean over {n} blocks")
    how = (f"standard error of the mean over {n} consecutive blocks of {length} frames "
           f"({length * traj.dt_fs / 1000:g} ps) analysed like the whole: the statistical "
           f"uncertainty of this MD estimate, not the force field's")
    done = []
    for name, sp in out.items():
        values = [p[name].intensity for p in parts
                  if name in p and p[name].intensity.shape == sp.intensity.shape]
        if len(values) == n:
            sp.intensity_std = np.std(values, axis=0, ddof=1) / np.sqrt(n)
            sp.provenance["intensity_std"] = how
            done.append(name)
    return {"n": n, "frames_each": length, "spectra": done}


def _cut_energy(out: dict, e_max: float) -> None:
    """Keep |E| <= e_max on every energy axis (VDOS, S(E), S(Q,E))."""
    for sp in out.values():
        if isinstance(sp, Spectrum2D):
            if sp.axis_name == "energy":
                keep = np.abs(sp.y) <= e_max
                sp.y, sp.intensity = sp.y[keep], sp.intensity[:, keep]
                if sp.intensity_std is not None:
                    sp.intensity_std = sp.intensity_std[:, keep]
        elif getattr(sp, "axis_name", "energy") == "energy":
            keep = np.abs(sp.x) <= e_max
            sp.x, sp.intensity = sp.x[keep], sp.intensity[keep]
            if sp.intensity_std is not None:
                sp.intensity_std = sp.intensity_std[keep]


def indirect_ins(corr, opts, temperature, summary, meta) -> dict:
    """S(E) on VISION/TOSCA: the MD partial DOS and ⟨u²⟩ per element as the INS engine's
    vibrational source (:mod:`mlff_ins.ins.engine`, the same engine as ``mlff-ins ins``)."""
    instrument = get_instrument(opts.instrument)
    iso = opts.isotopes or {}
    vd = vdos_spectra(corr, opts.window)
    e = vd["vdos"].x
    fwhm = vd["vdos"].provenance.get("resolution_fwhm_meV")
    dos, masses, u2, how, clipped, below = [], [], {}, {}, {}, {}
    for s in corr.species:
        g = np.array(vd[f"vdos_{s}"].intensity, dtype=float)
        zero_share = _drop_zero_energy(e, g, s)
        # a windowed VACF transform can dip slightly below zero where the DOS is ~0 (near E = 0
        # in a solid); the 1/E of the phonon orders would turn that into negative intensity
        negative = g < 0
        clipped[s] = float(-np.sum(g[negative]) / max(np.sum(np.abs(g)), 1e-300))
        g[negative] = 0.0
        if opts.low_energy == "debye":
            below[s] = (debye_below_resolution(e, g, fwhm) if zero_share <= ZERO_ENERGY_TOLERANCE
                        else f"as computed: {zero_share:.1%} of the VDOS area at E = 0 (diffusion "
                             f"or drift), not a Debye solid")
        dos.append(g / (np.sum(g) * (e[1] - e[0])))          # area 1 per degree of freedom
        masses.append(element_mass(corr, s, iso))
        if opts.debye_waller == "msd":
            u2_cl, how[s] = u2_from_msd(corr.time_fs, corr.msd[s], s)
            ratio = quantum_u2_ratio(e, dos[-1], temperature)
            u2[s] = u2_cl * ratio
            how[s] += (f", times {ratio:.4f} (quantum/classical <u^2> of the VDOS, harmonic), "
                       f"as the phonon orders are quantum")
        else:
            u2[s] = u2_from_dos(e, dos[-1], masses[-1], temperature)
            how[s] = "from the VDOS, harmonic quantum form"
    source = VibrationalSource(e, dos, [u2[s] for s in corr.species], masses, corr.species,
                               [corr.counts[s] / corr.n_atoms for s in corr.species], temperature)
    sigma = [sigma_total_barn(s, iso.get(s)) for s in corr.species]
    energies, arrays = indirect_s_e(source, instrument, sigma, opts.n_phonon)
    _check_low_energy_peak(energies, arrays["s_e"], fwhm, temperature)   # a VDOS used as is
    summary["u2_A2"] = u2
    prov = {**meta["provenance"], "debye_waller": opts.debye_waller, "u2_A2": u2,
            "u2_source": how, "masses_amu": dict(zip(corr.species, masses)), "isotopes": iso,
            "phonon_orders": opts.n_phonon,
            "negative_vdos_area_clipped": clipped,
            "low_energy": below or "as computed (--low-energy as-is)",
            "cross_section": "sigma_total (incoherent approximation)",
            # the correlation window's width is in the DOS, so in S(E) beside the instrument's
            "window": vd["vdos"].provenance.get("window"),
            "resolution_fwhm_meV": fwhm}
    return s_e_spectra(energies, arrays, instrument, temperature_K=meta["temperature_K"],
                       source=meta["source"], provenance=prov)


#: a centre of mass whose motion carries less than this share of the kinetic energy is at rest
#: (a conserved zero momentum leaves rounding, ~1e-15; independent kicks ~1/N)
COM_AT_REST = 1e-6

#: a steady centre-of-mass drift carrying more than this share of the kinetic energy is
#: reported: thermal velocities drawn without zeroing the total momentum and run at constant
#: momentum leave about 1/N (0.5 % for N = 200 atoms), and all of it lands at E = 0 in the VDOS
#: and at the lowest energies of S(E). A centre of mass that oscillates (independent
#: oscillators, an Einstein solid) averages out over the run and is not counted.
DRIFT_TOLERANCE = 0.005


def _check_drift(corr) -> None:
    """Warn when the whole cell drifts and the drift was left in."""
    if corr.drift_share > DRIFT_TOLERANCE and not corr.drift_removed:
        import warnings

        warnings.warn(f"the centre of mass of the cell drifts: {corr.drift_share:.1%} of the "
                      "kinetic energy is steady drift of the whole cell, which lands at E = 0 "
                      "in the VDOS and at the lowest energies of S(E); take it out with "
                      "--remove-drift, or zero the total momentum in the MD (ASE: Stationary "
                      "after drawing the velocities, FixCom with Langevin; LAMMPS: velocity "
                      "... mom yes, fix momentum)",
                      stacklevel=3)


def _check_low_energy_peak(energies, s_e, fwhm_meV, temperature_K) -> None:
    """Warn when S(E) is largest within the correlation window's energy resolution of E = 0.

    There the windowed VDOS holds weight smeared down from higher energies (a Gaussian of
    width σ turns a Debye a·E² into about a·(E² + σ²)), and the 1/E of the phonon orders with
    the Bose factor (n + 1 ≈ kT/E) turn that into a rise towards E = 0 that may be the window's
    rather than the sample's."""
    if not fwhm_meV:
        return
    e_peak = float(np.asarray(energies)[int(np.argmax(s_e))])
    if 0 < e_peak < fwhm_meV:
        import warnings

        warnings.warn(f"S(E) is largest at {e_peak:.2g} meV, within the correlation window's "
                      f"energy resolution ({fwhm_meV:.2g} meV FWHM) of E = 0, where the windowed "
                      "VDOS holds weight smeared down from higher energies and the 1/E and "
                      f"Bose factors at {temperature_K:g} K amplify it: the rise may be the "
                      "window's, not the sample's; a longer run and --time-window give a finer "
                      "resolution",
                      stacklevel=3)


#: what ``--low-energy`` may be: the VDOS below the window's resolution replaced by a Debye law
#: (default) or used as computed
LOW_ENERGY_CHOICES = ("debye", "as-is")

#: a Debye law replacing more than this share of the VDOS area replaces vibrations, not smearing
DEBYE_REPLACED_TOLERANCE = 0.05


def debye_below_resolution(e, g, fwhm_meV) -> str:
    """Replace, in place, the VDOS ``g`` below the correlation window's energy resolution by the
    Debye law a·E² through its value at E_m, the first grid energy at or above one FWHM; returns
    what was done, for the provenance.

    Below its resolution a windowed VDOS is not resolved: a window of width σ turns a solid's
    a·E² into a·(E² + σ²) (Gaussian window), and the 1/E of the phonon orders with the Bose
    factor (n + 1 ≈ kT/E) turn the excess a·σ² into a rise of S(E) as σ²/E² towards E = 0 that
    belongs to the window, not to the sample (a spike in the first bins of VISION's S(E)). At
    E_m = one FWHM (2.35 σ) the windowed value is still high by σ²/E_m² (18 %, Gaussian window),
    which the replaced bins inherit. The law holds for the acoustic modes of a three-dimensional
    solid; a VDOS with weight at E = 0 (diffusion) is left as computed by the caller."""
    e = np.asarray(e, dtype=float)
    if not fwhm_meV or fwhm_meV <= 0:
        return "as computed (no window resolution known)"
    at = np.flatnonzero(e >= fwhm_meV)
    if not len(at) or g[at[0]] <= 0:
        return "as computed (no VDOS at or above the window's resolution)"
    m = int(at[0])
    total = float(np.sum(g))
    share = float(np.sum(g[:m])) / total if total > 0 else 0.0
    g[:m] = g[m] * (e[:m] / e[m]) ** 2
    if share > DEBYE_REPLACED_TOLERANCE:
        import warnings

        warnings.warn(f"the correlation window's energy resolution ({fwhm_meV:.2g} meV FWHM) "
                      f"covers {share:.0%} of the VDOS area, which S(E) takes as a Debye law "
                      f"below {e[m]:.2g} meV: the window is short for these vibrations; a longer "
                      f"run and --time-window resolve them",
                      stacklevel=4)
    return (f"Debye law a·E² below {e[m]:.4g} meV (the correlation window's resolution, "
            f"{fwhm_meV:.4g} meV FWHM), a = {g[m] / e[m] ** 2:.4g} per meV³ before normalising")


#: a VDOS whose E = 0 bin holds more than this fraction of its area has weight that is not a
#: vibration (diffusion, drift) or a correlation window too short for its slowest modes
ZERO_ENERGY_TOLERANCE = 0.01


def _drop_zero_energy(e, g, element: str) -> float:
    """Set the E = 0 bin of a VDOS to zero in place (before it is normalised): the phonon orders
    and ⟨u²⟩ skip E = 0, so its weight would otherwise be counted in the normalisation and lost
    from S(E). Warn when that bin held more than ZERO_ENERGY_TOLERANCE of the area; return the
    share it held."""
    zero = np.flatnonzero(np.isclose(e, 0.0))
    if not len(zero):
        return 0.0
    total = float(np.sum(g))
    share = float(np.sum(g[zero])) / total if total > 0 else 0.0
    g[zero] = 0.0
    if share > ZERO_ENERGY_TOLERANCE:
        import warnings

        warnings.warn(f"the VDOS of {element} has {share:.1%} of its area at E = 0 (it diffuses, "
                      f"or the correlation window is short for its slowest modes); that weight is "
                      f"left out of S(E), whose vibrational part is renormalised without it",
                      stacklevel=3)
    return share


#: the MSD counts as levelled off when it grows by less than this fraction of its value over the
#: last half of the time window
MSD_PLATEAU_TOLERANCE = 0.1


def u2_from_msd(time_fs, msd, element: str) -> tuple[float, str]:
    """⟨u_x²⟩ = MSD/6 over the last fifth of the window (classical), and how it was obtained.
    An MSD that still grows over the last half of the window (a liquid, a diffusing species, a
    window too short) has no plateau: ⟨u²⟩ then depends on the window, which a warning says."""
    msd = np.asarray(msd, dtype=float)
    n = len(msd)
    tail = msd[-max(1, n // 5):]
    value = float(np.mean(tail)) / 6.0
    half = slice(n // 2, n)
    t = np.asarray(time_fs, dtype=float)[half]
    slope = np.polyfit(t, msd[half], 1)[0] if len(t) > 2 else 0.0
    growth = slope * (t[-1] - t[0]) / max(float(np.mean(msd[half])), 1e-300)
    if growth > MSD_PLATEAU_TOLERANCE:
        import warnings

        warnings.warn(f"the MSD of {element} does not level off: it grows {growth:.0%} over the "
                      f"last half of the {time_fs[-1]:g} fs window ({element} diffuses, or the "
                      f"window is too short), so its Debye-Waller factor depends on the window; "
                      f"--debye-waller vdos takes <u^2> from the VDOS instead", stacklevel=2)
        return value, (f"MSD/6 over the last fifth of the window; no plateau (grows "
                       f"{growth:.0%} over the last half), depends on the window")
    return value, "MSD/6 over the last fifth of the window (plateau)"


def _check_isotopes(traj, isotopes: dict) -> None:
    """An isotope names an element of the trajectory; when its mass differs from the mass the
    dynamics ran with, say so (the spectra then mix the two: dynamics of one, scattering of the
    other)."""
    import warnings

    from mlff_ins.neutron.scattering_lengths import mass_amu

    symbols = np.array(traj.symbols)
    for el, a in (isotopes or {}).items():
        if el not in traj.species:
            raise InputError(f"--isotope {el}={a}: {traj.path} has no {el} "
                             f"(elements: {', '.join(traj.species)})")
        ran = float(np.mean(np.asarray(traj.masses)[symbols == el]))
        if abs(ran - mass_amu(el, a)) > 0.01 * ran:
            warnings.warn(f"--isotope {el}={a}: the trajectory ran {el} with mass {ran:.3f} amu, "
                          f"not {mass_amu(el, a):.3f}; the spectra use the dynamics as run and "
                          f"the cross sections and recoil of {el}-{a}", stacklevel=2)


def _meta(meta):
    return {**meta, "provenance": dict(meta["provenance"])}


#: what the std of a diffusion coefficient is without --blocks
FIT_STD_NOTE = ("least-squares standard error of one fit, which treats the lags (or energies) "
                "as independent: they are correlated, so it understates the statistical "
                "uncertainty (by two orders of magnitude on diffusing particles); --blocks N "
                "gives the spread over blocks instead")


def _qens_fits(corr, opts, out, meta) -> dict:
    res = {}
    for s in corr.species:
        d = qens.diffusion_from_msd(corr.time_fs, corr.msd[s])
        fs = corr.shells.shell_average(corr.fqt_inc[s])
        widths = qens.lorentzian_widths(corr.time_fs, fs, opts.window)
        ce = qens.chudley_elliott(corr.shells.q, widths)
        plateau, plateau_std = qens.eisf(fs)
        fit_only = {"std_from": FIT_STD_NOTE}
        res[s] = {"D_msd_A2_per_ps": {**d.as_dict(), **fit_only},
                  "D_fickian_A2_per_ps": {**qens.diffusion_from_widths(
                      corr.shells.q, widths, opts.q_max_fickian).as_dict(), **fit_only},
                  "chudley_elliott": ({k: v.as_dict() for k, v in ce.items()} if ce else None),
                  "hwhm_meV": [w.as_dict() for w in widths]}
        out[f"eisf_{s}"] = Spectrum1D(kind="eisf", axis_name="q", x=corr.shells.q,
                                      intensity=plateau, intensity_std=plateau_std, units="",
                                      element=s, **_meta(meta))
        out[f"msd_{s}"].provenance["qens_fits"] = res[s]
    return res


def _apply_direct_geometry(out: dict, opts: SpectraOptions, resolution) -> None:
    for sp in out.values():
        if isinstance(sp, Spectrum2D) and sp.axis_name == "energy":
            if resolution is not None:
                sp.intensity = resolution.broaden(sp.y, sp.intensity)
                sp.provenance.update(resolution.provenance())
            mask = kinematic_mask(sp.q, sp.y, opts.ei_meV, opts.angles_deg)
            sp.intensity = np.where(mask, sp.intensity, np.nan)
            sp.instrument = opts.instrument
            sp.provenance.update(ei_meV=opts.ei_meV, angles_deg=list(opts.angles_deg),
                                 resolution_fwhm_fraction_of_ei=opts.resolution_fraction)


def _device(name: str) -> torch.device:
    from mlff_ins.model.calculator import resolve_device

    return resolve_device(name)


def _sha256(path) -> str:
    from mlff_ins.atomic_io import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return ""
