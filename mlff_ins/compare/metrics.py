"""Agreement metrics for a pair of spectra on the same grid (`mlff-ins compare`, metrics.json).

:func:`pair_metrics` takes spectrum ``a`` (usually the calculation) and spectrum ``b`` (the
reference: another calculation or, with ``measured_b=True``, a measurement with error bars) on
one grid (:mod:`mlff_ins.compare.align` puts them there) and returns a JSON-serialisable dict
with the keys of :data:`METRICS_DOC`, which is also the table of the README. Points where either
intensity is NaN (outside a range, a kinematic mask) or that lie outside ``e_range`` are dropped
from both before anything is computed. 2D spectra S(Q,E) are flattened for the bin-by-bin
metrics and the fit; the Wasserstein distance and the peaks, which need one energy axis, are
``null`` for them. Every number that cannot be computed (a constant spectrum's Pearson r, a fit
with no degrees of freedom) is ``null``, never NaN, so the file is strict JSON. With a fitted
background (``--background flat|linear`` against a measurement) the shape metrics (mse, mae,
cosine, Pearson r, W1, peaks) compare ``a`` with the measurement minus that background, so a
flat background does not count as a difference of shape; without one, with ``b`` as given.

Defaults: a peak must stand out by 5 % of the spectrum's maximum (``prominence``) — above the
few-per-cent noise of a good INS measurement, below the weakest modes worth naming — and two
peaks are the same mode when they are at most 5 meV apart (``max_shift_meV``): a few per cent
of a typical mode energy, the size of the frequency errors of a good force field; a larger
window starts pairing neighbouring modes.

The keys, exactly as ``pair_metrics`` writes them (:data:`METRICS_DOC`, the table of the
README, appended to this docstring at import):
"""

from __future__ import annotations

import numpy as np

from mlff_ins.errors import InputError
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

METRICS_DOC = r"""| key | meaning | unit |
|---|---|---|
| `n_points` | grid points compared (both intensities finite, inside `e_range`) | — |
| `e_range_meV` | lowest and highest energy of the points compared | meV |
| `mse` | mean squared difference of the max-normalised spectra, mean((a/max a − b/max b)²) (Chen 2021, Cheng 2023) | — |
| `mae` | mean absolute difference of the max-normalised spectra | — |
| `cosine` | cosine similarity a·b / (‖a‖ ‖b‖) of the intensities; 1 = same shape | — |
| `pearson_r` | Pearson correlation coefficient of the intensities | — |
| `wasserstein_meV` | Wasserstein-1 (earth mover's) distance of the area-normalised spectra, negative intensities clipped to 0: ∫\|F_a − F_b\| dE of their cumulative distributions; for a rigid shift it equals the shift; `null` for 2D | meV |
| `peaks` | `null` for 2D spectra; else the peaks found in each spectrum and their matching: | |
| `peaks.prominence` | minimum peak prominence, as a fraction of each spectrum's maximum | — |
| `peaks.max_shift_meV` | the farthest apart two peaks may be and still count as one mode | meV |
| `peaks.matched` | matched peak pairs `[[E_a, E_b], ...]`, one-to-one, sorted by E_a | meV |
| `peaks.shifts_meV` | E_a − E_b of each matched pair, in the order of `matched` (positive: a higher) | meV |
| `peaks.unmatched_a` | peaks of a with no partner in b | meV |
| `peaks.unmatched_b` | peaks of b with no partner in a | meV |
| `fit` | `null` unless b is measured (`measured_b`); then the fit b ≈ scale·a + b0 (+ b1·E) weighted by 1/σ_b² (equal weights when b has no error bars): | |
| `fit.weights` | `1/sigma^2`, or `equal` for a measurement without error bars (standard errors then from the residual scatter) | — |
| `fit.background_model` | `none`, `flat` (b0) or `linear` (b0 + b1·E) | — |
| `fit.scale` | fitted scale factor s | units of b / units of a |
| `fit.scale_std` | standard error of s from the stated σ_b (not rescaled by χ²/N; multiply by √`chi2_per_dof` for that); with equal weights, from the residual scatter | as `scale` |
| `fit.background` | `[]`, `[b0]` or `[b0, b1]`: b0 at E = 0, b1 per meV | units of b (b1: per meV) |
| `fit.background_std` | standard errors of `background`, same layout | as `background` |
| `fit.chi2_per_dof` | χ²/N with N = `dof` = `n_points` − number of fitted parameters (1, 2 or 3); `null` with equal weights or N = 0 | — |
| `fit.dof` | N, the degrees of freedom | — |
| `fit.n_points` | points in the fit | — |
| `fit.n_excluded` | compared points left out of the fit because σ_b is negative or NaN | — |
| `fit.n_sigma_floored` | points with σ_b = 0 (empty bins) given the smallest positive σ_b instead | — |
"""
__doc__ = (__doc__ or "") + "\n" + METRICS_DOC  # one text for help() and the README
#: minimum peak prominence as a fraction of the spectrum's maximum
DEFAULT_PROMINENCE = 0.05
#: the farthest apart (meV) two peaks may be and still be matched as one mode
DEFAULT_MAX_SHIFT_MEV = 5.0
BACKGROUNDS = ("none", "flat", "linear")


# ------------------------------------------------------------------------ bin-by-bin metrics

def max_normalised(y) -> np.ndarray:
    """``y`` divided by its maximum (NaN everywhere when the maximum is not positive)."""
    y = np.asarray(y, dtype=float)
    top = np.max(y)
    return y / top if top > 0 else np.full_like(y, np.nan)


def mse_mae(a, b) -> tuple[float, float]:
    """Mean squared and mean absolute difference of the max-normalised spectra (dimensionless)."""
    d = max_normalised(a) - max_normalised(b)
    return float(np.mean(d ** 2)), float(np.mean(np.abs(d)))


def cosine_similarity(a, b) -> float:
    """a·b / (‖a‖ ‖b‖); NaN when either is all zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


def pearson_r(a, b) -> float:
    """Pearson correlation coefficient; NaN when either spectrum is constant."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    da, db = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(da ** 2) * np.sum(db ** 2))
    return float(np.sum(da * db) / norm) if norm > 0 else float("nan")


def edges_from_centres(centres) -> np.ndarray:
    """Bin edges around increasing (possibly uneven) bin centres: the midpoints, and half a step
    beyond the first and the last centre (a single centre: ±0.5)."""
    c = np.asarray(centres, dtype=float)
    if len(c) < 2:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def wasserstein_meV(energy_meV, a, b) -> float:
    """Wasserstein-1 distance (meV) between the spectra as distributions over energy.

    Each spectrum's intensities (per meV), clipped at zero and times the width of their bin
    (from the midpoints between the points: a measured grid may be uneven, log-binned or
    converted from cm⁻¹), are the weights of point masses at the points ``energy_meV``
    (scipy.stats.wasserstein_distance normalises them to unit area), so W1 = ∫|F_a(E) − F_b(E)|
    dE of the cumulative distributions. NaN when either has no positive intensity. For two
    sampled copies of one peak shifted by δ it is δ up to the sampling error of their means
    (exponentially small once the peak width exceeds a bin).
    """
    from scipy.stats import wasserstein_distance

    e = np.asarray(energy_meV, dtype=float)
    width = np.ones_like(e)
    if len(e) > 1:
        order = np.argsort(e)
        width[order] = np.diff(edges_from_centres(e[order]))
    wa = np.clip(a, 0.0, None) * width
    wb = np.clip(b, 0.0, None) * width
    if not (np.sum(wa) > 0 and np.sum(wb) > 0):
        return float("nan")
    return float(wasserstein_distance(e, e, wa, wb))


# -------------------------------------------------------------------------------------- peaks

def _vertex(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """Energy of the parabola's vertex through points i−1, i, i+1 (any spacing); x[i] on a flat
    top or when the parabola does not open downwards."""
    u0, u2 = x[i - 1] - x[i], x[i + 1] - x[i]
    d0, d2 = y[i - 1] - y[i], y[i + 1] - y[i]
    curv = (d2 / u2 - d0 / u0) / (u2 - u0)
    if not curv < 0:
        return float(x[i])
    slope = d0 / u0 - curv * u0
    return float(np.clip(x[i] - slope / (2 * curv), x[i - 1], x[i + 1]))


def find_peak_positions(energy_meV, y, prominence: float = DEFAULT_PROMINENCE) -> np.ndarray:
    """Peak energies (meV) of ``y``: local maxima with scipy.signal.find_peaks whose prominence
    is at least ``prominence`` × max(y), each placed between bins by the vertex of the parabola
    through it and its two neighbours (bias ≤ 0.05 (ΔE/σ)² bins for a Gaussian of width σ)."""
    from scipy.signal import find_peaks

    e, y = np.asarray(energy_meV, dtype=float), np.asarray(y, dtype=float)
    top = np.max(y, initial=-np.inf)
    if not top > 0:
        return np.zeros(0)
    idx, _ = find_peaks(y, prominence=prominence * top)
    return np.array([_vertex(e, y, i) for i in idx])


def match_peaks(peaks_a, peaks_b, max_shift_meV: float = DEFAULT_MAX_SHIFT_MEV) -> dict:
    """Pair the peaks of a and b one-to-one (Hungarian assignment, scipy's linear_sum_assignment,
    minimising the summed |E_a − E_b|), keeping pairs at most ``max_shift_meV`` apart.

    Returns ``{"matched": [[E_a, E_b], ...] (sorted by E_a), "shifts_meV": [E_a − E_b, ...],
    "unmatched_a": [...], "unmatched_b": [...]}``, all in meV.
    """
    from scipy.optimize import linear_sum_assignment

    pa, pb = np.asarray(peaks_a, dtype=float), np.asarray(peaks_b, dtype=float)
    pairs = []
    if len(pa) and len(pb):
        cost = np.abs(pa[:, None] - pb[None, :])
        # a pair too far apart costs more than every allowed pairing together, so the
        # assignment first matches as many allowed pairs as it can, then the closest ones
        too_far = cost > max_shift_meV
        big = (len(pa) + len(pb)) * (max_shift_meV + 1.0) + 1.0
        rows, cols = linear_sum_assignment(np.where(too_far, big, cost))
        pairs = sorted(((int(i), int(j)) for i, j in zip(rows, cols) if not too_far[i, j]),
                       key=lambda ij: pa[ij[0]])
    used_a = {i for i, _ in pairs}
    used_b = {j for _, j in pairs}
    return {"matched": [[float(pa[i]), float(pb[j])] for i, j in pairs],
            "shifts_meV": [float(pa[i] - pb[j]) for i, j in pairs],
            "unmatched_a": [float(v) for i, v in enumerate(pa) if i not in used_a],
            "unmatched_b": [float(v) for j, v in enumerate(pb) if j not in used_b]}


# ----------------------------------------------------------------------------------------- fit

def _design(energy, calc, background: str) -> np.ndarray:
    if background not in BACKGROUNDS:
        raise InputError(f"background must be one of {', '.join(BACKGROUNDS)}, not "
                         f"{background!r}")
    cols = [calc]
    if background in ("flat", "linear"):
        cols.append(np.ones_like(calc))
    if background == "linear":
        cols.append(energy)
    return np.stack(cols, axis=1)


def fit_scale_background(energy_meV, calc, measured, sigma, background: str = "none") -> dict:
    """Weighted linear least squares of measured ≈ s·calc + b0 (+ b1·E), weights 1/σ².

    Parameters
    ----------
    energy_meV, calc, measured, sigma : 1D arrays of one length
        Points with non-finite or negative σ are left out (counted in ``n_excluded``); σ = 0
        (an empty bin) is raised to the smallest positive σ (``n_sigma_floored``). Without any
        positive σ (``sigma`` None or all NaN: a measurement without error bars) the fit has
        equal weights and its standard errors come from the residual scatter (χ²/N is then
        undefined: None).
    background : "none", "flat" or "linear"

    Returns
    -------
    dict
        The ``fit`` block of :data:`METRICS_DOC`. Standard errors are the square roots of the
        diagonal of (Xᵀ W X)⁻¹ with the stated σ (not rescaled by χ²/N). The solution is by SVD
        of the weighted design matrix with unit-norm columns, so a linear term in E (meV up to
        hundreds) does not spoil the conditioning.
    """
    e, c, m = (np.asarray(v, dtype=float).ravel() for v in (energy_meV, calc, measured))
    s = (np.full_like(m, np.nan) if sigma is None
         else np.asarray(sigma, dtype=float).ravel().copy())
    positive = np.isfinite(s) & (s > 0)
    floored = 0
    if positive.any():
        weights = "1/sigma^2"
        # σ = 0 exactly is what Mantid writes for a bin without counts: leaving those out
        # would drop the low points and bias the scale up; they get the smallest stated σ
        zero = s == 0
        floored = int(np.count_nonzero(zero))
        s[zero] = np.min(s[positive])
        use = np.isfinite(s) & (s > 0)
    else:     # no error bars (a two-column file): equal weights, errors from the scatter
        weights = "equal"
        s = np.ones_like(m)
        use = np.ones(len(m), dtype=bool)
    x = _design(e[use], c[use], background) / s[use, None]
    y = m[use] / s[use]
    n, p = x.shape
    if n < p:
        raise InputError(f"fit: {n} points with a usable σ for {p} parameters")
    col = np.linalg.norm(x, axis=0)
    if not np.all(col > 0):
        raise InputError("fit: the calculated spectrum is zero where the measurement has errors")
    u, sv, vt = np.linalg.svd(x / col, full_matrices=False)
    if sv[-1] <= 1e-12 * sv[0]:
        raise InputError("fit: the scale and background are degenerate (the calculated "
                         "spectrum is flat or linear in E over the range)")
    params = (vt.T @ (u.T @ y / sv)) / col
    cov = (vt.T / sv ** 2) @ vt / np.outer(col, col)
    std = np.sqrt(np.diag(cov))
    chi2 = float(np.sum((y - x @ params) ** 2))
    dof = n - p
    if weights == "equal":     # σ unknown: estimated from the residual scatter
        cov = cov * (chi2 / dof if dof > 0 else np.nan)
        std = np.sqrt(np.diag(cov))
    return {"background_model": background, "weights": weights, "scale": float(params[0]),
            "scale_std": _finite_or_none(std[0]), "background": [float(v) for v in params[1:]],
            "background_std": [_finite_or_none(v) for v in std[1:]],
            "chi2_per_dof": (chi2 / dof if dof > 0 and weights != "equal" else None),
            "dof": int(dof), "n_points": int(n), "n_excluded": int(np.count_nonzero(~use)),
            "n_sigma_floored": floored}


# ---------------------------------------------------------------------------------------- pair

def _axes(sp):
    if isinstance(sp, Spectrum2D) and sp.axis_name == "energy":
        return sp.q, sp.y
    if isinstance(sp, Spectrum1D) and sp.axis_name == "energy":
        return None, sp.x
    raise InputError(f"{sp.kind}: metrics need an energy axis (1D E or 2D (q, E))")


def _same(u, v) -> bool:
    if u is None or v is None:
        return u is None and v is None
    if len(u) != len(v):
        return False
    scale = np.max(np.abs(np.diff(u)), initial=1.0)
    return bool(np.allclose(u, v, rtol=0, atol=1e-9 * scale))


def _finite_or_none(v):
    return float(v) if v is not None and np.isfinite(v) else None


def pair_metrics(a, b, *, measured_b: bool = False, background: str = "none", e_range=None,
                 prominence: float = DEFAULT_PROMINENCE,
                 max_shift_meV: float = DEFAULT_MAX_SHIFT_MEV) -> dict:
    """Every metric of :data:`METRICS_DOC` for spectra ``a`` and ``b`` on one grid.

    Parameters
    ----------
    a, b : Spectrum1D (energy axis) or Spectrum2D (q, energy), on the same grid
    measured_b : bool
        b is a measurement: also fit b ≈ s·a + background weighted by b's ``intensity_std``.
    background : "none", "flat" or "linear"
        The background of the fit.
    e_range : (lo, hi) meV, optional
        Compare (and fit) only there.
    prominence, max_shift_meV : float
        Peak finding and matching (module docstring for the defaults).

    Returns
    -------
    dict
        JSON-serialisable, keys exactly as in :data:`METRICS_DOC`.
    """
    qa, ea = _axes(a)
    qb, eb = _axes(b)
    if not (_same(qa, qb) and _same(ea, eb)):
        raise InputError(f"{a.kind} and {b.kind} are on different grids; put them on one with "
                         f"mlff_ins.compare.align.common_grid and resample")
    energy = np.broadcast_to(ea, a.intensity.shape).ravel()
    ya, yb = a.intensity.ravel(), b.intensity.ravel()
    keep = np.isfinite(ya) & np.isfinite(yb)
    if e_range is not None:
        keep &= (energy >= e_range[0]) & (energy <= e_range[1])
    if np.count_nonzero(keep) < 3:
        raise InputError(f"{a.kind} vs {b.kind}: fewer than 3 points in common"
                         + (f" inside {e_range[0]:g}-{e_range[1]:g} meV" if e_range else ""))
    e, ya, yb = energy[keep], ya[keep], yb[keep]
    fit = None
    if measured_b:
        sigma = None if b.intensity_std is None else b.intensity_std.ravel()[keep]
        fit = fit_scale_background(e, ya, yb, sigma, background)
        if not fit["scale"] > 0:
            import warnings

            warnings.warn(f"the scale fitted onto {b.kind} is {fit['scale']:.3g}, not "
                          f"positive: the calculation and the measurement do not match in shape "
                          f"here (check the energy unit, range and background)", stacklevel=2)
        if fit["background"]:      # the shapes are compared without the fitted background
            yb = yb - np.polyval(list(reversed(fit["background"])), e)
    mse, mae = mse_mae(ya, yb)
    one_d = qa is None
    out = {"n_points": len(e), "e_range_meV": [float(e.min()), float(e.max())],
           "mse": _finite_or_none(mse), "mae": _finite_or_none(mae),
           "cosine": _finite_or_none(cosine_similarity(ya, yb)),
           "pearson_r": _finite_or_none(pearson_r(ya, yb)),
           "wasserstein_meV": _finite_or_none(wasserstein_meV(e, ya, yb)) if one_d else None,
           "peaks": None, "fit": None}
    if one_d:
        out["peaks"] = {"prominence": float(prominence), "max_shift_meV": float(max_shift_meV),
                        **match_peaks(find_peak_positions(e, ya, prominence),
                                      find_peak_positions(e, yb, prominence), max_shift_meV)}
    out["fit"] = fit
    return out


__all__ = ["BACKGROUNDS", "DEFAULT_MAX_SHIFT_MEV", "DEFAULT_PROMINENCE", "METRICS_DOC",
           "cosine_similarity", "find_peak_positions", "fit_scale_background", "match_peaks",
           "max_normalised", "mse_mae", "pair_metrics", "pearson_r", "wasserstein_meV"]
