"""Energy resolution of neutron spectrometers: Gaussian widths σ(E) and broadening with them.

Where a model exists in ResINS (PyPI ``resins``, the PACE/Euphonic group's library of instrument
resolution functions, GPL-3.0-or-later), it is used; ResINS is an optional extra
(``pip install mlff-ins[resolution]``), so mlff-ins itself stays BSD-3-Clause:

- TOSCA: AbINS' polynomial σ = 2.5 + 0.005 E + 1e−7 E² (E, σ in cm⁻¹); K. Dymkowski, S. F.
  Parker, F. Fernandez-Alonso, S. Mukhopadhyay, Physica B 551, 443 (2018). ResINS' ``AbINS``
  model of TOSCA when installed, else the same polynomial here (identical to 1e−10 meV).
- VISION: ResINS 0.1.0 carries the model of P. A. Seeger, L. L. Daemen, J. Z. Larese,
  NIM A 604, 719 (2009), but it cannot be evaluated (its instrument data leave ``d_t`` undefined).
  Until it works VISION gets TOSCA's polynomial — an approximation, not VISION's measured
  resolution — and every VISION spectrum says so in its provenance (``resolution_model``).
- Chopper spectrometers (MARI, MAPS, MERLIN, LET, SEQUOIA, ARCS, CNCS, HYSPEC): ResINS' PyChop
  models (R. I. Bewley et al., PyChop) for the incident energy, chopper package and frequency;
  these need ResINS.
- The explicit simple models: a constant FWHM, or a FWHM that is a fraction of E_i.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mlff_ins.errors import InputError

from mlff_ins.neutron.units import MEV_PER_INVCM  # noqa: F401  (re-exported)
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
TOSCA_SIGMA_INVCM = (2.5, 0.005, 1e-7)
TOSCA_CITATION = ("K. Dymkowski, S. F. Parker, F. Fernandez-Alonso, S. Mukhopadhyay, "
                  "Physica B 551, 443 (2018) (AbINS' TOSCA resolution)")

#: chopper spectrometers: ResINS name, and the keyword of the frequency `--chopper-frequency` sets
CHOPPER_INSTRUMENTS = {
    "mari": ("MARI", "chopper_frequency"),
    "maps": ("MAPS", "chopper_frequency"),
    "merlin": ("MERLIN", "chopper_frequency"),
    "let": ("LET", "resolution_frequency"),
    "sequoia": ("SEQUOIA", "chopper_frequency"),
    "arcs": ("ARCS", "chopper_frequency"),
    "cncs": ("CNCS", "resolution_disk_frequency"),
    "hyspec": ("HYSPEC", "chopper_frequency"),
}


@dataclass
class Resolution:
    """A Gaussian resolution σ(E) (meV) with where it comes from."""

    name: str
    sigma_fn: object                      # callable: E (meV, array) -> σ (meV, array)
    citation: list = field(default_factory=list)
    note: str = ""

    def sigma_meV(self, energy_meV) -> np.ndarray:
        return np.asarray(self.sigma_fn(np.atleast_1d(np.asarray(energy_meV, dtype=float))),
                          dtype=float)

    def fwhm_meV(self, energy_meV) -> np.ndarray:
        return self.sigma_meV(energy_meV) * FWHM_PER_SIGMA

    def broaden(self, energy_meV, intensity, chunk: int = 256) -> np.ndarray:
        """Broaden along the last axis (a uniform energy grid) with σ(E') of each source bin."""
        return broaden_variable(energy_meV, intensity, self.sigma_meV(np.abs(energy_meV)), chunk)

    def provenance(self) -> dict:
        return {"resolution_model": self.name, "resolution_citation": list(self.citation),
                **({"resolution_note": self.note} if self.note else {})}


def lattice_norm(ratio) -> np.ndarray:
    """Σ_k exp(−k²/2r²) over all integers k: the sum of a Gaussian of width r bins sampled at the
    bin centres (its area on the grid, in bins). Equal to √(2π) r to better than 1e-76 for r ≥ 3
    (Poisson summation: the relative error is 2 exp(−2π² r²) and smaller terms); summed directly
    for narrower ones, which would otherwise gain area (a σ → 0 Gaussian sampled at its centre is
    a spike of height 1/(√(2π) σ), many times a bin's worth)."""
    ratio = np.asarray(ratio, dtype=float)
    out = np.sqrt(2 * np.pi) * ratio
    narrow = ratio < 3
    k = np.arange(-40, 41)[None, :]                   # ±40 bins: over 13 σ for r < 3
    r = ratio[narrow][:, None]
    out[narrow] = np.sum(np.exp(-0.5 * (k / r) ** 2), axis=1)
    return out


def broaden_variable(energy_meV, intensity, sigma_meV, chunk: int = 256) -> np.ndarray:
    """Gaussian broadening whose width depends on the source energy: the intensity of each bin E'
    is spread over the grid as a Gaussian of width σ(E') sampled at the bin centres and divided by
    its lattice sum (:func:`lattice_norm`), so each source bin keeps its intensity (up to what
    spills past the grid ends) on any grid: also one coarser than σ, such as an MD spectrum of a
    short run, whose bins may be several meV wide against a resolution of a fraction of a meV
    (there the broadening leaves the spectrum as it is, where a kernel normalised as a continuous
    Gaussian would multiply its area). On grids finer than σ/3 the kernel is the continuous
    Gaussian's to 1e-76. Works on the last axis; memory is chunk × len(E).

    Each chunk of source bins is spread only over the target bins within ``KERNEL_REACH_SIGMA``
    of its widest Gaussian: beyond 39 σ the kernel underflows to exactly 0 in float64, so the
    band gives the dense kernel's numbers to rounding (1e-15; 8x faster than the dense kernel on
    VISION's 5001-point grid in 256-bin chunks)."""
    e = np.asarray(energy_meV, dtype=float)
    y = np.asarray(intensity, dtype=float)
    sigma = np.maximum(np.broadcast_to(np.asarray(sigma_meV, dtype=float), e.shape), 1e-12)
    de = e[1] - e[0]
    norm = lattice_norm(sigma / abs(de))
    flat = y.reshape(-1, len(e))
    out = np.zeros_like(flat)
    increasing = de > 0
    for lo in range(0, len(e), chunk):
        src = slice(lo, lo + chunk)
        lo_t, hi_t = 0, len(e)
        if increasing:               # the target bins this chunk's Gaussians reach
            reach = KERNEL_REACH_SIGMA * sigma[src]
            lo_t = int(np.searchsorted(e, np.min(e[src] - reach), side="left"))
            hi_t = int(np.searchsorted(e, np.max(e[src] + reach), side="right"))
        tgt = slice(lo_t, hi_t)
        k = np.exp(-0.5 * ((e[tgt, None] - e[None, src]) / sigma[None, src]) ** 2)
        out[:, tgt] += flat[:, src] @ (k / norm[None, src]).T
    return out.reshape(y.shape)


#: half-width of the broadening kernel in σ: exp(−x²/2) is exactly 0.0 in float64 for x > 38.6
KERNEL_REACH_SIGMA = 39.0


def tosca_polynomial_sigma(energy_meV) -> np.ndarray:
    """AbINS' TOSCA σ (meV) at energy transfer E (meV)."""
    a, b, c = TOSCA_SIGMA_INVCM
    w = np.asarray(energy_meV, dtype=float) / MEV_PER_INVCM
    return (a + b * w + c * w * w) * MEV_PER_INVCM


def _resins():
    try:
        import resins
    except ImportError:
        return None
    return resins


def _resins_sigma(model):
    def sigma(e):
        return model.get_characteristics(np.asarray(e, dtype=float)[:, None])["sigma"]
    return sigma


@lru_cache(maxsize=None)
def indirect_resolution(name: str) -> Resolution:
    """The resolution of VISION or TOSCA (see the module docstring for the models)."""
    resins = _resins()
    if resins is not None:
        model = resins.Instrument.from_default("TOSCA").get_resolution_function("AbINS")
        tosca = Resolution("TOSCA, AbINS polynomial (ResINS)", _resins_sigma(model),
                           list(model.citation))
    else:
        tosca = Resolution("TOSCA, AbINS polynomial", tosca_polynomial_sigma, [TOSCA_CITATION])
    if name == "tosca":
        return tosca
    return Resolution(tosca.name + ", used for VISION", tosca.sigma_fn, tosca.citation,
                      note="VISION's own model (Seeger, Daemen and Larese, NIM A 604, 719 "
                           "(2009)) cannot be evaluated in ResINS 0.1.0; TOSCA's polynomial is "
                           "an approximation of VISION's resolution")


def chopper_resolution(name: str, ei_meV: float, chopper_frequency_hz: float | None = None,
                       chopper_package: str | None = None) -> Resolution:
    """ResINS' PyChop model of a chopper spectrometer at ``ei_meV``; σ is evaluated for
    0 ≤ E < E_i (the polynomial fit is not extrapolated: energies outside are clipped to it)."""
    key = name.lower()
    if key not in CHOPPER_INSTRUMENTS:
        raise InputError(f"--instrument {name}: known chopper spectrometers are "
                         f"{', '.join(CHOPPER_INSTRUMENTS)}")
    resins = _resins()
    if resins is None:
        raise InputError(f"--instrument {name} needs ResINS for its resolution (GPL-3.0; "
                         f"pip install 'mlff-ins[resolution]'), or use --instrument direct with "
                         f"--resolution FRACTION")
    rname, freq_key = CHOPPER_INSTRUMENTS[key]
    kwargs = {"e_init": float(ei_meV)}
    if chopper_frequency_hz is not None:
        kwargs[freq_key] = int(round(chopper_frequency_hz))
    if chopper_package is not None:
        kwargs["chopper_package"] = chopper_package
    try:
        inst = resins.Instrument.from_default(rname)
        model = inst.get_resolution_function(None, **kwargs)
    except KeyError:
        options = inst.possible_options_for_model(inst.default_model)
        packages = options.get("chopper_package", []) if isinstance(options, dict) else []
        raise InputError(f"--chopper-package {chopper_package}: {rname} has "
                         f"{', '.join(map(str, packages)) or 'other packages'}") from None
    except Exception as exc:  # ResINS: InvalidInputError, NoTransmissionError, ...
        raise InputError(f"--instrument {name} --ei {ei_meV:g}: ResINS refuses these settings "
                         f"({' '.join(str(exc).split())})") from None
    raw = _resins_sigma(model)
    top = float(ei_meV) * (1 - 1e-6)

    def sigma(e):
        return raw(np.clip(e, 0.0, top))

    settings = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return Resolution(f"{rname} PyChop model (ResINS; {settings})", sigma, list(model.citation))


def fraction_of_ei(ei_meV: float, fraction: float) -> Resolution:
    fwhm = fraction * ei_meV
    return Resolution(f"Gaussian, FWHM {fraction:g} x Ei = {fwhm:g} meV",
                      lambda e: np.full_like(e, fwhm / FWHM_PER_SIGMA))


def constant_fwhm(fwhm_meV: float) -> Resolution:
    return Resolution(f"Gaussian, FWHM {fwhm_meV:g} meV",
                      lambda e: np.full_like(e, fwhm_meV / FWHM_PER_SIGMA))


def direct_resolution(instrument: str, ei_meV: float | None, fraction: float = 0.0,
                      chopper_frequency_hz: float | None = None,
                      chopper_package: str | None = None) -> Resolution | None:
    """The energy resolution of a direct-geometry measurement: a named chopper spectrometer's
    ResINS model, or ``--instrument direct`` with a FWHM that is ``fraction`` of E_i (None when
    there is none). Settings that would be ignored are refused."""
    named = instrument.lower() in CHOPPER_INSTRUMENTS
    if ei_meV is None:
        if named:
            raise InputError(f"--instrument {instrument} needs --ei (incident energy, meV)")
        for opt, value in (("--resolution", fraction), ("--chopper-frequency",
                                                         chopper_frequency_hz),
                           ("--chopper-package", chopper_package)):
            if value:
                raise InputError(f"{opt} applies to direct geometry with --ei; give --ei MEV")
        return None
    if named:
        if fraction:
            raise InputError(f"--resolution: --instrument {instrument} has its own resolution "
                             "model; --resolution FRACTION is for --instrument direct")
        return chopper_resolution(instrument, ei_meV, chopper_frequency_hz, chopper_package)
    for opt, value in (("--chopper-frequency", chopper_frequency_hz),
                       ("--chopper-package", chopper_package)):
        if value:
            raise InputError(f"{opt} needs a named chopper spectrometer (--instrument "
                             f"{'|'.join(CHOPPER_INSTRUMENTS)})")
    return fraction_of_ei(ei_meV, fraction) if fraction > 0 else None
