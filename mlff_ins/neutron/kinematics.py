"""Direct-geometry kinematics and resolution for 2D S(Q,E).

Accessible region: for incident energy E_i, energy transfer E < E_i and scattering angles
2θ ∈ [2θ_min, 2θ_max], Q² = k_i² + k_f² − 2 k_i k_f cos 2θ with E = 2.0721 k² (meV, Å⁻¹).
Resolution: :mod:`mlff_ins.neutron.resolution`.
"""

from __future__ import annotations

import numpy as np

from mlff_ins.errors import InputError

E_PER_K2 = 2.0721249  # meV Å², E = ħ²k²/2m_n (CODATA 2018 ħ and m_n)


def q_limits(energy_meV, ei_meV: float, angles_deg=(3.0, 135.0)):
    """(Q_min, Q_max) in 1/Å reachable at each energy transfer; NaN where E ≥ E_i."""
    e = np.asarray(energy_meV, dtype=float)
    ki = np.sqrt(ei_meV / E_PER_K2)
    ef = ei_meV - e
    kf = np.sqrt(np.where(ef > 0, ef, np.nan) / E_PER_K2)
    lo, hi = np.radians(angles_deg)
    qmin = np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(lo))
    qmax = np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(hi))
    return qmin, qmax


def kinematic_mask(q, energy_meV, ei_meV: float, angles_deg=(3.0, 135.0)) -> np.ndarray:
    """Boolean (len(q), len(E)): True where the instrument can measure."""
    if not ei_meV > 0:
        raise InputError(f"--ei must be a positive incident energy in meV, not {ei_meV}")
    qmin, qmax = q_limits(energy_meV, ei_meV, angles_deg)
    q = np.asarray(q)[:, None]
    with np.errstate(invalid="ignore"):
        return (q >= qmin[None, :]) & (q <= qmax[None, :])
