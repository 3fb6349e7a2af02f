"""Spectra from MD correlations: VDOS/GDOS, F(Q,t) and S(Q,E) (coherent, incoherent), MSD.

Normalisations (DESIGN.md §4):
- ``vdos``: per atom, one-sided in E ≥ 0, area 3 (rectangle rule over the bin centres); element
  partials are contributions that add up to the total (area 3 × that element's share of the kinetic
  energy, i.e. 3 × its atom fraction at equilibrium). ``gdos``: partials weighted by σ_total/M and
  renormalised to area 3.
- ``fqt_*`` / ``sqe_*`` partials (``element`` "A-B" or "A"): per atom of the whole cell, unweighted,
  so F_coh,A-B(Q,0) is the partial static structure factor; the classical spectrum
  (``quantum_correction="none"``) has ∫ S dE = F(Q,0). The harmonic correction keeps the first
  moment instead (the f-sum rule ∫ E S_inc dE = ħ²Q²/2M), not the zeroth; Schofield's keeps
  neither, only detailed balance. Totals (``element``
  ""): with ``weighting="neutron"`` each partial is weighted by b_A b_B (coherent) or σ_inc,A/4π
  (incoherent) in barn/sr per atom; ``weighting="number"`` sums the partials unweighted. ``sqe`` is
  the coherent plus incoherent neutron-weighted total.
- S(Q,E) is two-sided (−E_max..E_max, E > 0 neutron energy loss) after the quantum correction.
"""

from __future__ import annotations

import numpy as np

from mlff_ins.analysis.dynamics import Correlations
from mlff_ins.analysis.fourier import energy_axis, resolution_fwhm_meV, spectrum_from_correlation
from mlff_ins.neutron.quantum import two_sided
from mlff_ins.neutron.scattering_lengths import b_coh_fm, mass_amu, sigma_inc_barn, sigma_total_barn
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

WEIGHTINGS = ("neutron", "number")


def vdos_spectra(corr: Correlations, window: str = "gaussian", isotopes: dict | None = None,
                 **meta) -> dict[str, Spectrum1D]:
    """Total and per-element VDOS and the neutron-weighted GDOS (1/meV, area 3 per atom); the
    GDOS weights σ_total/M use the trajectory's masses and ``isotopes`` (element -> A)."""
    iso = isotopes or {}
    e = energy_axis(len(corr.time_fs), corr.dt_fs)
    c0 = sum(v[0] for v in corr.vacf.values())
    partial = {}
    for s, c in corr.vacf.items():
        g = spectrum_from_correlation(c, corr.dt_fs, window) * 3.0 / c0
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
    for sp in out.values():
        sp.provenance = {**sp.provenance, "window": window, "resolution_fwhm_meV": fwhm}
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
    coh = {(a, b): b_coh_fm(a, iso.get(a)) * b_coh_fm(b, iso.get(b)) / 100.0
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
