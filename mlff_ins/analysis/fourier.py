"""From a correlation function of time to a spectrum of energy: windows, energy axis, FFT.

Convention (DESIGN.md): S(E) = (1/2πħ) ∫ F(t) e^{−iEt/ħ} dt, so Σ_k S(E_k) ΔE = F(0) exactly on
the two-sided discrete grid; E in meV, t in fs, ħ = 0.6582119569 meV·ps. The even function F(|t|)
for lags −M..M is transformed on 2M+1 points (dynasor's mirroring), giving E_k = 2πħk/((2M+1)Δt),
k = 0..M. A window w(t) with w(0) = 1 tapers F before the transform: it keeps the sum rule and sets
the energy resolution (the transform of w is the line shape every feature is convolved with).
"""

from __future__ import annotations

import numpy as np

from mlff_ins.errors import InputError

HBAR_MEV_FS = 658.2119569509066  # ħ in meV·fs
WINDOWS = ("gaussian", "hann", "none")


def energy_axis(n_lags: int, dt_fs: float) -> np.ndarray:
    """Energies (meV) of the one-sided spectrum of a correlation with lags 0..n_lags−1."""
    m = n_lags - 1
    return 2 * np.pi * HBAR_MEV_FS * np.arange(m + 1) / ((2 * m + 1) * dt_fs)


def window(n_lags: int, kind: str = "gaussian") -> np.ndarray:
    """Taper over lags 0..n_lags−1 with w(0) = 1.

    gaussian: exp(−t²/2σ²) with σ = t_max/3 (energy resolution FWHM = 2.355 ħ/σ);
    hann: cos²(πt/2(t_max+Δt)); none: 1 (sharpest, with truncation ripples).
    """
    n = np.arange(n_lags, dtype=float)
    m = max(n_lags - 1, 1)
    if kind == "gaussian":
        return np.exp(-0.5 * (n / (m / 3.0)) ** 2)
    if kind == "hann":
        return np.cos(0.5 * np.pi * n / (m + 1)) ** 2
    if kind == "none":
        return np.ones(n_lags)
    raise InputError(f"--window must be one of {', '.join(WINDOWS)}, not {kind!r}")


#: FWHM of sin(πx)/(πx) in units of its first zero: the rectangular window's line width in bins
SINC_FWHM_BINS = 1.2067


def resolution_fwhm_meV(n_lags: int, dt_fs: float, kind: str) -> float:
    """Energy resolution (FWHM, meV) the window imposes; for 'none' the central lobe of the
    sinc of the rectangular window over the mirrored correlation, 1.2067 bins."""
    if kind == "gaussian":
        sigma_t = (n_lags - 1) * dt_fs / 3.0
        return 2 * np.sqrt(2 * np.log(2)) * HBAR_MEV_FS / sigma_t
    return float(energy_axis(n_lags, dt_fs)[1]) * (2.0 if kind == "hann" else SINC_FWHM_BINS)


def spectrum_from_correlation(f: np.ndarray, dt_fs: float, kind: str = "gaussian") -> np.ndarray:
    """Two-sided-normalised spectrum at E_k ≥ 0 of real even correlations ``f`` (..., lags).

    Returns S(E_k) (units of f per meV) for k = 0..M; S(−E) = S(E) for a classical correlation.
    """
    f = np.asarray(f, dtype=float) * window(f.shape[-1], kind)
    mirrored = np.concatenate([f, f[..., :0:-1]], axis=-1)
    return np.fft.rfft(mirrored, axis=-1).real * dt_fs / (2 * np.pi * HBAR_MEV_FS)


def central_difference_response(energy_meV, dt_fs: float) -> np.ndarray:
    """Power response of velocities taken as central differences of positions frames ``dt_fs``
    apart, v(t) = [r(t+Δt) − r(t−Δt)]/2Δt: a motion at E = ħω comes out times sin(x)/x with
    x = ωΔt, so its spectrum times sinc²(x), which falls to 0.92 at x = 0.5 and 0 at the Nyquist
    energy (x = π)."""
    x = np.asarray(energy_meV, dtype=float) * dt_fs / HBAR_MEV_FS
    return np.sinc(x / np.pi) ** 2
