"""Putting spectra side by side: one energy (and Q) grid, one energy resolution.

Two spectra can only be compared bin by bin when they sit on the same grid and have been seen
with the same resolution. :func:`common_grid` picks the grid (the overlap of the inputs' ranges at
the coarsest of their steps), :func:`resample` moves a spectrum onto it by linear interpolation,
and :func:`match_resolution` broadens each calculated spectrum to the coarsest resolution among
the inputs — or to the measured one's instrument — by the Gaussian that adds in quadrature.

Where a spectrum's own resolution comes from (:func:`own_resolution`, read from what the
routes of this package record):

- ``instrument`` "vision" or "tosca": that instrument's resolution
  (:func:`mlff_ins.neutron.resolution.indirect_resolution`), which the INS engine applied;
- provenance ``resolution_model`` written by a direct-geometry resolution: "Gaussian, FWHM X meV"
  (``--fwhm``), "FWHM f x Ei" (``--resolution``; FWHM = f·E_i from ``ei_meV`` and
  ``resolution_fwhm_fraction[_of_ei]``) or a ResINS PyChop model (rebuilt from the settings its
  name records; needs ResINS);
- provenance ``fwhm_meV`` > 0 (the constant broadening of ``mlff-ins ins`` maps without E_i);
- provenance ``resolution_fwhm_meV`` (the width an MD correlation window imposes on every MD
  spectrum), counted as a Gaussian of that FWHM — exact for the Gaussian window, an
  approximation for "hann" and "none";
- none of these (phonon VDOS/GDOS, unbroadened S(Q,E)): no resolution, σ = 0.

Independent sources of width add in quadrature (σ² = Σ σ_i²).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from mlff_ins.errors import InputError
from mlff_ins.neutron.resolution import (Resolution, broaden_variable, chopper_resolution,
                                         constant_fwhm, indirect_resolution)
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

#: a grid point this close (in units of the step) to an input's end counts as inside it, so that
#: rounding in ``lo + k·step`` does not turn the last point into NaN
_END_TOL = 1e-9


@dataclass(frozen=True)
class Grid:
    """A common grid: bin-centre energies (meV) and, for 2D spectra, |Q| values (1/Å)."""

    energy_meV: np.ndarray
    q_invA: np.ndarray | None = None


# --------------------------------------------------------------------------------------- grids

def _energy_axis(sp) -> np.ndarray:
    if isinstance(sp, Spectrum2D):
        if sp.axis_name != "energy":
            raise InputError(f"{sp.kind}: a (q, {sp.axis_name}) spectrum has no energy axis to "
                             f"compare on")
        return sp.y
    if sp.axis_name != "energy":
        raise InputError(f"{sp.kind}: a spectrum along {sp.axis_name} has no energy axis to "
                         f"compare on")
    return sp.x


def _step(x: np.ndarray) -> float:
    """The bin step of an axis: the median spacing (the spacing itself on a uniform grid)."""
    if len(x) < 2:
        raise InputError("an axis with fewer than two points has no step")
    return float(np.median(np.abs(np.diff(x))))


def _overlap_axis(axes: list[np.ndarray], limits, step, what: str) -> np.ndarray:
    lo = max(float(np.min(a)) for a in axes)
    hi = min(float(np.max(a)) for a in axes)
    if limits is not None:
        lo, hi = max(lo, float(limits[0])), min(hi, float(limits[1]))
    step = max(_step(a) for a in axes) if step is None else float(step)
    if not step > 0:
        raise InputError(f"the {what} step must be positive, not {step}")
    if hi < lo:
        hint = ""
        if what == "energy" and any(np.max(a) <= 0 < max(np.max(b) for b in axes)
                                    for a in axes):
            hint = ("; one of them lies at energies of 0 or below: energy gain? this package "
                    "counts energy transfer positive for neutron energy loss "
                    "(--measured-energy-gain negates a measured file's energies)")
        raise InputError(f"the spectra share no {what} range (overlap {lo:g} to {hi:g}){hint}")
    n = int(np.floor((hi - lo) / step * (1 + _END_TOL))) + 1
    return lo + step * np.arange(n)


def on_measured_grid(spectra, measured, e_range=None) -> Grid:
    """The points of the ``measured`` spectrum (one of ``spectra``) inside the range every
    spectrum covers (the true overlap of their axes, clipped to ``e_range``; not the overlap
    rounded down to a whole number of steps, which would drop measured points at the top)."""
    items = list(spectra.values()) if isinstance(spectra, Mapping) else list(spectra)
    common_grid(items, e_range=e_range)           # same checks and errors as the common grid

    def inside(values, axes, limits=None):
        lo = max(float(np.min(a)) for a in axes)
        hi = min(float(np.max(a)) for a in axes)
        if limits is not None:
            lo, hi = max(lo, float(limits[0])), min(hi, float(limits[1]))
        tol = _END_TOL * max(_step(a) for a in axes)
        return values[(values >= lo - tol) & (values <= hi + tol)]

    energy = inside(_energy_axis(measured), [_energy_axis(s) for s in items], e_range)
    q = (inside(measured.q, [s.q for s in items]) if isinstance(measured, Spectrum2D)
         else None)
    return Grid(energy, q)


def common_grid(spectra, e_range=None, step=None, *, q_step=None) -> Grid:
    """The grid every spectrum of ``spectra`` covers.

    Parameters
    ----------
    spectra : sequence or mapping of Spectrum1D / Spectrum2D
        All 1D (energy axis) or all 2D (q, energy).
    e_range : (lo, hi) in meV, optional
        Clip the overlap of the energy ranges to this window.
    step : float, optional
        Energy step (meV); default the coarsest of the inputs' steps (a finer grid would invent
        detail no input has).
    q_step : float, optional
        Q step (1/Å) for 2D spectra; default the coarsest of the inputs'.

    Returns
    -------
    Grid
        ``energy_meV`` from the highest lower end to the lowest upper end at ``step``; for 2D
        also ``q_invA`` on the common Q range.
    """
    items = list(spectra.values()) if isinstance(spectra, Mapping) else list(spectra)
    if not items:
        raise InputError("no spectra to put on a common grid")
    two_d = [isinstance(s, Spectrum2D) for s in items]
    if any(two_d) and not all(two_d):
        raise InputError("cannot put 1D and 2D spectra on one grid; compare like with like")
    energy = _overlap_axis([_energy_axis(s) for s in items], e_range, step, "energy")
    q = _overlap_axis([s.q for s in items], None, q_step, "Q") if all(two_d) else None
    return Grid(energy, q)


def _interp_last(x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """``y`` (..., len(x)) along its last axis at ``xq``; NaN outside [min x, max x] (with a
    tolerance of 1e-9 steps at the ends).

    Points of ``xq`` that are a run of consecutive points of ``x`` (a measured spectrum on its own
    energies) keep their values. Where a bin of ``xq`` (between the midpoints to its neighbours, half a step
    beyond the ends, so uneven grids have uneven bins) is more than 1.5 times wider than the
    typical step of ``x``, each value is the mean of the piecewise-linear ``y`` over its own bin
    (shortened symmetrically about its point at the ends of ``x``), so a line narrower than the
    new bins keeps its area instead of being sampled or missed; otherwise linear interpolation.
    Both are exact for a linear ``y`` on an even grid (on an uneven one the mean over a bin is
    the value at the bin's middle, which the midpoints between points put a little off it)."""
    order = np.argsort(x)
    x, y = x[order], y[..., order]
    tol = _END_TOL * _step(x)
    inside = (xq >= x[0] - tol) & (xq <= x[-1] + tol)
    xc = np.clip(xq, x[0], x[-1])
    flat = y.reshape(-1, len(x))
    at = np.clip(np.searchsorted(x, xq), 0, len(x) - 1)
    near = np.where(np.abs(x[at] - xq) <= np.abs(x[np.maximum(at - 1, 0)] - xq), at,
                    np.maximum(at - 1, 0))
    if len(x) > 1 and np.all(np.abs(x[near] - xq) <= tol) and np.all(np.diff(near) == 1):
        out = flat[:, near].astype(float)
    elif len(xq) > 1 and len(x) > 1:
        mid = 0.5 * (xq[1:] + xq[:-1])
        edges = np.concatenate([[xq[0] - (mid[0] - xq[0])], mid, [xq[-1] + (xq[-1] - mid[-1])]])
        if np.max(np.diff(edges)) > 1.5 * _step(x):
            # a bin reaching past an end of x is shortened symmetrically about its point, so
            # that the mean of a linear y stays its value there
            left = np.minimum(xc - edges[:-1], xc - x[0])
            right = np.minimum(edges[1:] - xc, x[-1] - xc)
            clipped = (xc - x[0] < xc - edges[:-1]) | (x[-1] - xc < edges[1:] - xc)
            both = np.minimum(left, right)
            left, right = np.where(clipped, both, left), np.where(clipped, both, right)
            out = _bin_mean(x, flat, xc, xc - left, xc + right)
        else:
            out = np.array([np.interp(xc, x, row) for row in flat])
    else:
        out = np.array([np.interp(xc, x, row) for row in flat])
    out[:, ~inside] = np.nan
    return out.reshape(y.shape[:-1] + (len(xq),))


def _bin_mean(x: np.ndarray, rows: np.ndarray, centres: np.ndarray, lo: np.ndarray,
              hi: np.ndarray) -> np.ndarray:
    """Mean of each piecewise-linear row over each bin [lo, hi] (inside the range of x): the
    difference of its exact running integral at the two edges over the width; the value at the
    centre where a bin has shrunk to almost nothing at an end. A bin that touches a NaN point
    (a masked region) is NaN; the others are not affected by it."""
    dx = np.diff(x)
    finite = np.isfinite(rows)
    bad = ~(finite[:, 1:] & finite[:, :-1])              # segments with a NaN end
    bad_before = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(bad, axis=1)], axis=1)
    point = np.array([np.interp(centres, x, row) for row in rows])   # NaN next to a NaN
    rows = np.where(finite, rows, 0.0)
    nodes = np.concatenate([np.zeros((len(rows), 1)),
                            np.cumsum(0.5 * (rows[:, 1:] + rows[:, :-1]) * dx, axis=1)], axis=1)

    def running(e):
        i = np.clip(np.searchsorted(x, e, side="right") - 1, 0, len(x) - 2)
        t = e - x[i]
        slope = (rows[:, i + 1] - rows[:, i]) / dx[i]
        return nodes[:, i] + rows[:, i] * t + 0.5 * slope * t ** 2

    width = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (running(hi) - running(lo)) / width

    def segment(e, side):
        return np.clip(np.searchsorted(x, e, side=side) - 1, 0, len(x) - 2)

    # NaN segments inside [lo, hi] (a bin ending exactly on a node does not reach past it)
    first, last = segment(lo, "right"), segment(hi, "left")
    last = np.maximum(last, first)
    touched = (bad_before[:, last + 1] - bad_before[:, first]) > 0
    mean = np.where(touched, np.nan, mean)
    # a bin shortened to almost nothing at an end: the point value (no cancellation)
    return np.where(width > 1e-6 * np.min(dx), mean, point)


def resample(spectrum, grid) -> Spectrum1D | Spectrum2D:
    """A copy of ``spectrum`` on ``grid`` by linear interpolation (NaN outside its range).

    Parameters
    ----------
    spectrum : Spectrum1D (energy axis) or Spectrum2D (q, energy)
    grid : Grid or array of energies (meV)
        2D spectra need ``grid.q_invA``; they are interpolated along E, then along Q (bilinear,
        so exact for a + bQ + cE + dQE).

    Notes
    -----
    ``intensity_std`` is interpolated like the intensity. For independent errors of measured
    data the exact σ of an interpolated point, sqrt(w² σ_a² + (1−w)² σ_b²), is at most the
    interpolated σ, so χ² on resampled data is conservative (smaller) between the input points,
    and neighbouring resampled points are correlated. For χ² against measured data, resample
    the calculation onto the measured energies (pass them as ``grid``) rather than the reverse.
    """
    grid = grid if isinstance(grid, Grid) else Grid(np.asarray(grid, dtype=float))
    energy = np.asarray(grid.energy_meV, dtype=float)
    out = copy.deepcopy(spectrum)
    e_in = _energy_axis(spectrum)

    def move(values):
        if values is None:
            return None
        v = _interp_last(e_in, values, energy)
        if isinstance(spectrum, Spectrum2D):
            v = np.moveaxis(_interp_last(spectrum.q, np.moveaxis(v, 0, -1), grid.q_invA), -1, 0)
        return v

    if isinstance(spectrum, Spectrum2D):
        if grid.q_invA is None:
            raise InputError(f"{spectrum.kind}: a 2D spectrum needs a grid with Q values")
        out.q = np.asarray(grid.q_invA, dtype=float)
        out.y = energy
    else:
        out.x = energy
    out.intensity, out.intensity_std = move(spectrum.intensity), move(spectrum.intensity_std)
    out.provenance = {**spectrum.provenance, "resampled": "linear interpolation onto a common "
                      "grid (NaN outside the input's range)"}
    return out


# ------------------------------------------------------------------------------ resolutions

def _quadrature(parts: list[Resolution]) -> Resolution | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return Resolution(" (+) ".join(p.name for p in parts),
                      lambda e: np.sqrt(sum(p.sigma_meV(e) ** 2 for p in parts)),
                      [c for p in parts for c in p.citation],
                      note="independent widths added in quadrature")


def _number(text: str) -> float:
    return float(text.strip())


def _from_model_name(model: str, instrument: str, prov: dict) -> Resolution | None:
    """The direct-geometry resolution a ``resolution_model`` name stands for (None if unknown)."""
    m = re.fullmatch(r"Gaussian, FWHM ([^ ]+) meV", model)
    if m:
        return constant_fwhm(_number(m.group(1)))
    m = re.fullmatch(r"Gaussian, FWHM [^ ]+ x Ei = ([^ ]+) meV", model)
    if m:
        ei = prov.get("ei_meV")
        frac = prov.get("resolution_fwhm_fraction", prov.get("resolution_fwhm_fraction_of_ei"))
        # the name keeps 6 digits; E_i and the fraction, when recorded, are exact
        return constant_fwhm(ei * frac if ei and frac else _number(m.group(1)))
    m = re.search(r"PyChop model \(ResINS; (.*)\)$", model)
    if m:
        settings = dict(kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
        freq = next((float(v) for k, v in settings.items() if k.endswith("frequency")), None)
        return chopper_resolution(instrument, float(settings["e_init"]), freq,
                                  settings.get("chopper_package"))
    return None


def own_resolution(spectrum) -> Resolution | None:
    """The resolution a spectrum already carries, from its ``instrument`` and ``provenance``
    (see the module docstring); None when it carries none (σ = 0)."""
    prov = spectrum.provenance or {}
    instrument = (spectrum.instrument or "").lower()
    parts = []
    window = prov.get("resolution_fwhm_meV")
    if window:
        parts.append(constant_fwhm(float(window)))
    if instrument in ("vision", "tosca"):
        parts.append(indirect_resolution(instrument))
    elif prov.get("resolution_model"):
        r = _from_model_name(str(prov["resolution_model"]), instrument, prov)
        if r is None:
            raise InputError(f"{spectrum.kind}: cannot tell the resolution "
                             f"{prov['resolution_model']!r} from its provenance; pass "
                             f"resolution_of")
        parts.append(r)
    elif prov.get("fwhm_meV"):
        parts.append(constant_fwhm(float(prov["fwhm_meV"])))
    return _quadrature(parts)


def _instrument_resolution(instrument) -> Resolution | None:
    if instrument is None or isinstance(instrument, Resolution):
        return instrument
    name = str(instrument).lower()
    if name in ("vision", "tosca"):
        return indirect_resolution(name)
    raise InputError(f"instrument {instrument!r}: give vision, tosca or a Resolution object "
                     f"(e.g. mlff_ins.neutron.resolution.chopper_resolution(...))")


def _sigma(res: Resolution | None, energy: np.ndarray) -> np.ndarray:
    return np.zeros_like(energy) if res is None else res.sigma_meV(np.abs(energy))


def broaden_added(energy_meV, intensity, sigma_meV) -> np.ndarray:
    """Broaden ``intensity`` (..., len(E)) along E with a Gaussian of width ``sigma_meV`` (per
    source bin, meV; 0 leaves the bin as it is) with
    :func:`mlff_ins.neutron.resolution.broaden_variable` (kernels normalised on the grid: the
    area is kept also where σ is narrower than a bin). NaN bins (outside a kinematic range) are
    taken as zero while broadening and stay NaN."""
    e = np.asarray(energy_meV, dtype=float)
    y = np.asarray(intensity, dtype=float)
    steps = np.diff(e)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0):
        raise InputError("broadening needs a uniform energy grid; resample first")
    nan = np.isnan(y)
    sigma = np.maximum(np.broadcast_to(np.asarray(sigma_meV, dtype=float), e.shape), 1e-12)
    out = broaden_variable(e, np.where(nan, 0.0, y), sigma)
    return np.where(nan, np.nan, out)


def match_resolution(spectra, resolution_of: Callable = own_resolution, *, instrument=None):
    """Broaden every calculated spectrum to one common resolution.

    The target width at each energy is σ_t(E) = the coarsest σ(E) among the inputs — or, when a
    measured spectrum's resolution is known, the coarsest among the measured ones only (the
    calculation must look like the measurement). Each calculated spectrum is broadened by the
    Gaussian σ_add(E) = sqrt(max(σ_t(E)² − σ_own(E)², 0)) (E of the source bin, |E| on a
    two-sided axis), so its resolution becomes σ_t. Measured spectra (``source == "measured"``)
    are never broadened. ``intensity_std`` is broadened with the same kernel: exact when the
    ensemble's deviations are fully correlated across bins, an upper bound otherwise.

    Parameters
    ----------
    spectra : mapping name -> spectrum, or sequence of spectra
        Spectrum1D on an energy axis or Spectrum2D on (q, energy), each on a uniform grid.
    resolution_of : callable spectrum -> Resolution | None
        A spectrum's own resolution; default :func:`own_resolution` (from its provenance).
    instrument : "vision", "tosca", a Resolution or None
        The resolution of the measured spectra, when known; overrides what ``resolution_of``
        says of them. Without a measured spectrum it is ignored.

    Returns
    -------
    (broadened, record)
        ``broadened``: the same container type with broadened copies (unchanged ones copied
        too). ``record``: JSON-serialisable dict ``{"target": str, "spectra": {name: {"own":
        str, "broadened": bool, "added_sigma_max_meV": float, "note": str}}}`` for the report.
    """
    is_map = isinstance(spectra, Mapping)
    named = dict(spectra) if is_map else {str(i): s for i, s in enumerate(spectra)}
    own = {k: resolution_of(s) for k, s in named.items()}
    measured = [k for k, s in named.items() if s.source == "measured"]
    inst = _instrument_resolution(instrument)
    if measured and inst is not None:
        own.update({k: inst for k in measured})
    known_measured = [k for k in measured if own[k] is not None]
    basis = known_measured or [k for k in named if own[k] is not None]
    if known_measured:
        target_text = "the measured spectra's resolution: " + "; ".join(
            sorted({own[k].name for k in known_measured}))
    elif basis:
        target_text = "the coarsest of: " + "; ".join(sorted({own[k].name for k in basis}))
    else:
        target_text = "none (no spectrum carries a resolution)"

    def target(e):
        return np.max([_sigma(own[k], e) for k in basis], axis=0) if basis else np.zeros_like(e)

    out, rec = {}, {}
    for k, sp in named.items():
        new = copy.deepcopy(sp)
        e = _energy_axis(sp)
        entry = {"own": own[k].name if own[k] is not None else "none (unbroadened)",
                 "broadened": False, "added_sigma_max_meV": 0.0, "note": ""}
        if sp.source == "measured":
            entry["note"] = "measured: never broadened"
        else:
            add2 = target(e) ** 2 - _sigma(own[k], e) ** 2
            add = np.sqrt(np.clip(add2, 0.0, None))
            if np.any(add2 < -1e-12):
                entry["note"] = "coarser than the target at some energies: left as it is there"
            if np.max(add, initial=0.0) > 0:
                new.intensity = broaden_added(e, sp.intensity, add)
                if sp.intensity_std is not None:
                    new.intensity_std = broaden_added(e, sp.intensity_std, add)
                new.provenance = {**sp.provenance, "matched_resolution": target_text}
                entry.update(broadened=True, added_sigma_max_meV=float(np.max(add)))
        out[k], rec[k] = new, entry
    result = out if is_map else [out[str(i)] for i in range(len(out))]
    return result, {"target": target_text, "spectra": rec}


__all__ = ["Grid", "broaden_added", "common_grid", "match_resolution", "own_resolution",
           "resample"]
