"""Quantum corrections that turn a classical (symmetric) S(Q,E) into one obeying detailed balance.

With x = E/k_BT (E > 0: neutron energy loss):
- harmonic (default): S(E) = x/(1 − e^{−x}) · S_cl(E)  (exact for a harmonic system);
- schofield: S(E) = e^{x/2} · S_cl(E);
- none: S(E) = S_cl(E).
The first two satisfy S(−E) = e^{−E/k_BT} S(E).
"""

from __future__ import annotations

import numpy as np

from mlff_ins.errors import InputError

KB_MEV_PER_K = 0.08617333262
CORRECTIONS = ("harmonic", "schofield", "none")


def correction_factor(energy_meV: np.ndarray, temperature_K: float, kind: str = "harmonic"):
    """Factor multiplying S_cl(|E|) at signed energies ``energy_meV``."""
    e = np.asarray(energy_meV, dtype=float)
    if kind == "none":
        return np.ones_like(e)
    if kind not in CORRECTIONS:
        raise InputError(f"--quantum-correction must be one of {', '.join(CORRECTIONS)}, "
                         f"not {kind!r}")
    if not temperature_K > 0:
        raise InputError(f"the {kind} quantum correction needs a temperature > 0 K (-T)")
    x = e / (KB_MEV_PER_K * temperature_K)
    if kind == "schofield":
        return np.exp(0.5 * x)
    out = np.ones_like(x)
    nz = np.abs(x) > 1e-12
    out[nz] = x[nz] / -np.expm1(-x[nz])
    return out


def two_sided(energy_meV: np.ndarray, s_classical: np.ndarray, temperature_K: float,
              kind: str = "harmonic"):
    """Mirror a one-sided classical spectrum (E ≥ 0, last axis) to −E..E and correct it."""
    e = np.concatenate([-energy_meV[:0:-1], energy_meV])
    s = np.concatenate([s_classical[..., :0:-1], s_classical], axis=-1)
    return e, s * correction_factor(e, temperature_K, kind)
