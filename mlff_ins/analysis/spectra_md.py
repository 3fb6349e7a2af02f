"""Spectra from MD correlations: VDOS/GDOS, F(Q,t) and S(Q,E) (coherent, incoherent), MSD.

Normalisations (DESIGN.md §4):
- ``vdos``: per atom, one-sided in E ≥ 0, area 3 (rectangle rule over the bin centres); velocities
  taken from central differences of positions (a file without velocities) have their response
  sinc²(ωΔt) divided out (up to half the Nyquist energy; beyond it, where the differences lose
  the motion, by the factor there, π²/4, and a warning when that holds more than 1 % of the
  VDOS); element
  partials are contributions that add up to the total (area 3 × that element's share of the kinetic
  energy, i.e. 3 × its atom fraction at equilibrium). ``gdos``: partials weighted by σ_total/M and
  renormalised to area 3.
- ``fqt_*`` / ``sqe_*`` partials (``element`` "A-B" or "A"): per atom of the whole cell, unweighted,
  so F_coh,A-B(Q,0) is the partial static structure factor; the classical spectrum
  (``quantum_correction="none"``) has ∫ S dE = F(Q,0). The harmonic correction keeps the first
  moment instead, not the zeroth: ∫ E S dE = (ħ²/2kT) × the second moment of the windowed
  classical spectrum, which for the self part is the f-sum rule's ħ²Q²/2M plus the window's own
  ħ²F(Q,0)/(2kTσ_t²) (Gaussian window of width σ_t in time; 0.008 meV at 300 K for σ_t of 1 ps,
  whatever the mass, but not negligible for a short window, a low T or ``window="none"``, whose
  sharp edge has no finite second moment). Schofield's keeps neither, only detailed balance. Totals (``element``
  ""): with ``weighting="neutron"`` each partial is weighted by b_A b_B (coherent) or σ_inc,A/4π
  (incoherent) in barn/sr per atom; ``weighting="number"`` sums the partials unweighted. ``sqe`` is
  the coherent plus incoherent neutron-weighted total.
- S(Q,E) is two-sided (−E_max..E_max, E > 0 neutron energy loss) after the quantum correction.
"""

from __future__ import annotations

import numpy as np

from mlff_ins.analysis.dynamics import Correlations
from mlff_ins.analysis.fourier import (HBAR_MEV_FS, central_difference_response, energy_axis,
                                      resolution_fwhm_meV, spectrum_from_correlation)
from mlff_ins.neutron.quantum import two_sided
from mlff_ins.neutron.scattering_lengths import (b_coh_complex_fm, mass_amu, sigma_inc_barn,
                                                 sigma_total_barn)
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

WEIGHTINGS = ("neutron", "number")


#: velocities from central differences of positions: above x = ωΔt = π/2 (half the Nyquist
#: energy) the response sinc²(x) is no longer divided out (it falls to zero at the Nyquist
#: energy, where dividing would blow up noise); the factor there, π²/4, is kept beyond
DIFFERENCE_CORRECTION_X_MAX = np.pi / 2
#: share of the VDOS beyond that point above which the spectra warn
DIFFERENCE_WARN_SHARE = 0.01


def velocity_spectra(corr: Correlations, window: str = "gaussian", warn: bool = False):
    """(E, {element: spectrum}) of the mass-weighted VACF at E ≥ 0 (two-sided normalisation:
    S(0) + 2 Σ S(E>0), times ΔE, is Σ m v² of the element's atoms). Velocities differenced from
    positions (``corr.velocities_from_positions``) have their response sinc²(ωΔt) divided out
    up to half the Nyquist energy, the factor there beyond it; with ``warn``, a warning when
    more than 1 % of the spectrum lies beyond."""
    e = energy_axis(len(corr.time_fs), corr.dt_fs)
    spectra = {s: spectrum_from_correlation(c, corr.dt_fs, window) for s, c in corr.vacf.items()}
    if not corr.velocities_from_positions:
        return e, spectra
    x_max = DIFFERENCE_CORRECTION_X_MAX
    e_max = x_max * HBAR_MEV_FS / corr.dt_fs
    gain = 1.0 / central_difference_response(np.minimum(e, e_max), corr.dt_fs)
    spectra = {s: g * gain for s, g in spectra.items()}
    total = sum(spectra.values())
    beyond = float(np.sum(total[e > e_max]) / max(np.sum(total), 1e-300))
    if warn and beyond > DIFFERENCE_WARN_SHARE:
        import warnings

        warnings.warn(f"the trajectory has no velocities, so they are differences of positions "
                      f"{corr.dt_fs:g} fs apart, which lose motion above {e_max:.3g} meV (half "
                      f"the Nyquist energy); {beyond:.1%} of the VDOS lies there and is "
                      "underestimated: store velocities or write frames more often",
                      stacklevel=3)
    return e, spectra


def kinetic_sum(e: np.ndarray, spectra: dict) -> float:
    """Σ m v² (amu Å²/fs²) of all atoms from :func:`velocity_spectra`' one-sided spectra: the
    VACF at lag 0 (exactly, for stored velocities: the discrete transform's sum rule)."""
    return float(sum(g[0] + 2.0 * np.sum(g[1:]) for g in spectra.values()) * (e[1] - e[0]))


def vdos_spectra(corr: Correlations, window: str = "gaussian", isotopes: dict | None = None,
                 **meta) -> dict[str, Spectrum1D]:
    """Total and per-element VDOS and the neutron-weighted GDOS (1/meV, area 3 per atom); the
    GDOS weights σ_total/M use the trajectory's masses and ``isotopes`` (element -> A)."""
    iso = isotopes or {}
    e, spectra = velocity_spectra(corr, window)
    c0 = kinetic_sum(e, spectra)
    partial = {}
    for s, g in spectra.items():
        g = g * 3.0 / c0
        g[1:] *= 2.0  # fold −E onto +E
        partial[s] = g
    out = {"vdos": Spectrum1D(kind="vdos", x=e, intensity=sum(partial.values()), units="1/meV",
                              **meta)}
    for s, g in partial.items():
        out[f"vdos_{s}"] = Spectrum1D(kind="vdos", x=e, intensity=g, units="1/meV", element=s,
                                      **meta)
    weights = {s: sigma_total_barn(s, iso.get(s)) / element_mass(corr, s, iso)
               for s in partial}
    gdos = sum(weights[s] * g for s, g in partial.items())
    area = np.sum(gdos) * (e[1] - e[0])
    out["gdos"] = Spectrum1D(kind="gdos", x=e, intensity=gdos * 3.0 / area, units="1/meV", **meta)
    fwhm = resolution_fwhm_meV(len(corr.time_fs), corr.dt_fs, window)
    velocities = ("central differences of positions, response sinc²(ωΔt) divided out up to "
                  "half the Nyquist energy" if corr.velocities_from_positions else "stored")
    for sp in out.values():
        sp.provenance = {**sp.provenance, "window": window, "resolution_fwhm_meV": fwhm,
                         "velocities": velocities}
    return out


def element_mass(corr: Correlations, element: str, isotopes: dict) -> float:
    """The mass an element scatters with: the isotope's when one is named, else the mean mass
    of its atoms in the trajectory (which stores deuterated or mass-scaled runs as run)."""
    if isotopes.get(element):
        return mass_amu(element, isotopes[element])
    return corr.masses.get(element) or mass_amu(element)


def _weights(corr: Correlations, weighting: str, isotopes: dict | None = None):
    iso = isotopes or {}
    if weighting == "number":
        return ({k: 1.0 for k in corr.fqt_coh}, {s: 1.0 for s in corr.fqt_inc}, "")
    # Re(b_a b_b*): an absorber's own pair gets |b|² (the partial of an unlike pair adds both
    # orders of the pair, F_ab + F_ba, which is real)
    coh = {(a, b): (b_coh_complex_fm(a, iso.get(a))
                    * b_coh_complex_fm(b, iso.get(b)).conjugate()).real / 100.0
           for (a, b) in corr.fqt_coh}
    inc = {s: sigma_inc_barn(s, iso.get(s)) / (4 * np.pi) for s in corr.fqt_inc}
    return coh, inc, "barn/sr"


def scattering_spectra(corr: Correlations, temperature_K: float, window: str = "gaussian",
                       quantum_correction: str = "harmonic", weighting: str = "neutron",
                       partials: bool = True, isotopes: dict | None = None,
                       **meta) -> dict[str, Spectrum2D]:
    """F(Q,t) and S(Q,E), coherent and incoherent, shell-averaged, partials and totals."""
    shells = corr.shells
    e_one = energy_axis(len(corr.time_fs), corr.dt_fs)
    w_coh, w_inc, wunit = _weights(corr, weighting, isotopes)
    out: dict[str, Spectrum2D] = {}
    meta = dict(meta, temperature_K=temperature_K)
    prov = {**meta.pop("provenance", {}), "window": window,
            "quantum_correction": quantum_correction, "weighting": weighting,
            "resolution_fwhm_meV": resolution_fwhm_meV(len(corr.time_fs), corr.dt_fs, window),
            "q_vectors_per_shell": shells.counts.tolist()}

    def add(name, kind, element, fqt, units):
        out[f"fqt_{name}"] = Spectrum2D(kind=f"fqt_{kind}", q=shells.q, axis_name="time",
                                        y=corr.time_fs, intensity=fqt, units=units,
                                        element=element, provenance=dict(prov), **meta)
        s_cl = spectrum_from_correlation(fqt, corr.dt_fs, window)
        e, s = two_sided(e_one, s_cl, temperature_K, quantum_correction)
        out[f"sqe_{name}"] = Spectrum2D(kind=f"sqe_{kind}", q=shells.q, axis_name="energy", y=e,
                                        intensity=s, units=f"{units}/meV" if units else "1/meV",
                                        element=element, provenance=dict(prov), **meta)
        return s

    totals = {}
    for label, parts, weights in (("coh", corr.fqt_coh, w_coh), ("inc", corr.fqt_inc, w_inc)):
        if not parts:
            continue
        averaged = {k: shells.shell_average(v) for k, v in parts.items()}
        if partials:
            for k, f in averaged.items():
                element = "-".join(k) if isinstance(k, tuple) else k
                add(f"{label}_{element}", label, element, f, "")
        total = sum(weights[k] * f for k, f in averaged.items())
        totals[label] = add(label, label, "", total, wunit)
    if len(totals) == 2 and weighting == "neutron":
        s_all = totals["coh"] + totals["inc"]
        out["sqe"] = Spectrum2D(kind="sqe", q=shells.q, axis_name="energy",
                                y=out["sqe_coh"].y, intensity=s_all, units="barn/sr/meV",
                                provenance=dict(prov), **meta)
    return out


def msd_spectra(corr: Correlations, **meta) -> dict[str, Spectrum1D]:
    """Mean squared displacement per element and averaged over all atoms (Å²) against time."""
    n = corr.n_atoms
    total = sum(corr.counts[s] * m for s, m in corr.msd.items()) / n
    out = {"msd": Spectrum1D(kind="msd", axis_name="time", x=corr.time_fs, intensity=total,
                             units="angstrom^2", **meta)}
    for s, m in corr.msd.items():
        out[f"msd_{s}"] = Spectrum1D(kind="msd", axis_name="time", x=corr.time_fs, intensity=m,
                                     units="angstrom^2", element=s, **meta)
    return out
