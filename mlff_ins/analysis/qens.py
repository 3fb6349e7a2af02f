"""Quasi-elastic analysis: diffusion from the MSD slope, Lorentzian widths of S_inc(Q,E), EISF.

- D from the MSD: least-squares line MSD = 6Dt + c over a fraction of the lags (default 20–80 %,
  past the ballistic regime); the uncertainty is the fit's standard error, which takes the lags
  as independent: MSD values at neighbouring lags share their time origins, so it understates
  the statistical uncertainty (on Langevin particles 0.0006 against a spread of 0.2 Å²/ps over
  blocks); the spectra pipeline replaces it by the spread over blocks (``--blocks``).
- Lorentzian widths: at each Q, S_inc(Q,E) is fitted with an elastic line plus a Lorentzian,
  a₀δ(E) + a₁L(E; Γ), convolved with the very same time window the spectrum was made with (the model
  is transformed on the same grid, so the resolution enters exactly); Γ is the HWHM in meV, with
  its standard error from the covariance.
- D from the widths: Fickian Γ = ħDQ² through the origin over Q ≤ ``q_max_fit``, and the
  Chudley–Elliott jump model Γ = (ħ/τ)(1 − sin(Ql)/(Ql)), D = l²/6τ, over all Q.
- EISF: the long-time plateau of F_s(Q,t), the mean of its last 20 % of lags (std as uncertainty).
D is reported in Å²/ps (1 Å²/ps = 1e-4 cm²/s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit

from mlff_ins.analysis.fourier import HBAR_MEV_FS, spectrum_from_correlation


@dataclass
class Fit:
    value: float
    std: float

    def as_dict(self):
        return {"value": self.value, "std": self.std}


def diffusion_from_msd(time_fs, msd, fit_range=(0.2, 0.8)) -> Fit:
    """D (Å²/ps) from the slope of the MSD over ``fit_range`` (fractions of the lag range)."""
    n = len(time_fs)
    i0 = int(fit_range[0] * (n - 1))
    i1 = min(max(int(fit_range[1] * (n - 1)), i0 + 3), n - 1)
    t, m = np.asarray(time_fs[i0:i1 + 1]), np.asarray(msd[i0:i1 + 1])
    if len(t) < 4:
        raise ValueError("the MSD fit needs at least 4 lags; lengthen the correlation window")
    (slope, _), cov = np.polyfit(t, m, 1, cov=True)
    std = float(np.sqrt(cov[0, 0]))
    return Fit(slope / 6.0 * 1000.0, std / 6.0 * 1000.0)


def lorentzian_widths(time_fs, fs_qt, window: str):
    """Fit S_inc(Q,E) at every Q with elastic line + Lorentzian, both resolution-convolved.

    Model: a₀δ(E) + a₁L(E; Γ), i.e. F_s(t) = a₀ + a₁e^{−Γt/ħ}, transformed with the same window
    and grid as the data. Returns the HWHM Γ (meV) per Q with its standard error.
    """
    dt = float(time_fs[1] - time_fs[0])
    time_fs = np.asarray(time_fs, dtype=float)
    widths = []
    for f in np.atleast_2d(fs_qt):
        s = spectrum_from_correlation(f, dt, window)

        def model(t_unused, elastic, amp, gamma):
            return spectrum_from_correlation(
                abs(elastic) + amp * np.exp(-abs(gamma) * time_fs / HBAR_MEV_FS), dt, window)

        # start from the 1/e decay time of F_s above its final value
        plateau = max(float(f[-1]), 0.0)
        below = np.flatnonzero(f - plateau < (f[0] - plateau) / np.e)
        tau = time_fs[below[0]] if len(below) else time_fs[-1]
        try:
            p, cov = curve_fit(model, time_fs, s,
                               p0=(plateau, f[0] - plateau, HBAR_MEV_FS / max(tau, dt)))
            widths.append(Fit(abs(float(p[2])), float(np.sqrt(cov[2, 2]))))
        except (RuntimeError, ValueError):
            widths.append(Fit(float("nan"), float("nan")))
    return widths


def diffusion_from_widths(q, widths: list[Fit], q_max_fit: float) -> Fit:
    """Fickian D (Å²/ps) from Γ = ħDQ² through the origin over Q ≤ q_max_fit."""
    q = np.asarray(q)
    g = np.array([w.value for w in widths])
    e = np.array([w.std for w in widths])
    use = (q <= q_max_fit) & np.isfinite(g) & np.isfinite(e) & (e > 0)
    if use.sum() < 1:
        return Fit(float("nan"), float("nan"))
    x = q[use] ** 2 * HBAR_MEV_FS / 1000.0  # Γ = x·D with D in Å²/ps
    w = 1.0 / e[use] ** 2
    d = np.sum(w * x * g[use]) / np.sum(w * x * x)
    return Fit(float(d), float(np.sqrt(1.0 / np.sum(w * x * x))))


def chudley_elliott(q, widths: list[Fit]):
    """Jump length l (Å), residence time τ (ps) and D = l²/6τ (Å²/ps) from Γ(Q); Fits or None."""
    q = np.asarray(q)
    g = np.array([w.value for w in widths])
    e = np.array([w.std for w in widths])
    use = np.isfinite(g) & np.isfinite(e) & (e > 0)
    if use.sum() < 3:
        return None

    def model(qq, tau_ps, length):
        ql = np.maximum(qq * abs(length), 1e-9)
        return HBAR_MEV_FS / 1000.0 / abs(tau_ps) * (1 - np.sin(ql) / ql)

    try:
        p, cov = curve_fit(model, q[use], g[use], sigma=e[use], absolute_sigma=True,
                           p0=(1.0, 1.5))
    except (RuntimeError, ValueError):
        return None
    tau, length = abs(p[0]), abs(p[1])
    d = length ** 2 / (6 * tau)
    jac = np.array([-d / tau, 2 * d / length])
    d_std = float(np.sqrt(jac @ cov @ jac))
    return {"tau_ps": Fit(tau, float(np.sqrt(cov[0, 0]))),
            "jump_length_A": Fit(length, float(np.sqrt(cov[1, 1]))),
            "D_A2_per_ps": Fit(d, d_std)}


def eisf(fs_qt, tail: float = 0.2):
    """Plateau of F_s(Q,t) normalised by F_s(Q,0): mean and std over the last ``tail`` of lags."""
    f = np.atleast_2d(fs_qt)
    f = f / f[:, :1]
    n = max(1, int(round(tail * f.shape[1])))
    return f[:, -n:].mean(axis=1), f[:, -n:].std(axis=1)
