"""Powder INS in the isotropic incoherent approximation (Sjölander's phonon expansion).

For element α with normalised DOS Z_α(E) (area 1 per degree of freedom), mass M_α and mean-square
displacement ⟨u²⟩_α along one direction, with recoil energy E_R = ħ²Q²/2M_α = 2.0721 Q² m_n/M_α:

  T₁(E) = Z(E)/E · [n(E) + 1]        (E > 0, neutron energy loss; T₁(−E) = e^{−E/kT} T₁(E))
  Tₙ = Tₙ₋₁ ⊗ T₁                      (isotropic convolution for the n-phonon term)
  S(Q,E) = Σ_α (σ_α/4π) e^{−Q²⟨u²⟩_α} Σ_{n=1}^{N} (E_R)ⁿ/n! · Tₙ(E)

Units: Z in 1/meV, S in barn/(sr meV) per atom (weights are atom fractions × σ/4π). ⟨u²⟩ must be
the harmonic quantum one, ⟨u²⟩ = (ħ²/2M) ∫ Z(E)/E · coth(E/2kT) dE: the Tₙ above are the quantum
forms, and only with the ⟨u²⟩ of the same Z do the orders sum to 1 − e^{−Q²⟨u²⟩} (all of σ/4π
over all orders). A classical ⟨u²⟩ (an MD MSD plateau, kT/Mω²) is smaller wherever E > 2kT, and
then the orders sum to e^{−Q²u_cl}(e^{Q²u_q} − 1), above 1 at large Q: an MSD is used only after
scaling by :func:`quantum_u2_ratio` (this is the route OCLIMAX offers for MD input).
"""

from __future__ import annotations

import numpy as np

from mlff_ins.neutron.kinematics import E_PER_K2
from mlff_ins.neutron.quantum import KB_MEV_PER_K

NEUTRON_MASS_AMU = 1.00866491595


def recoil_energy_meV(q, mass_amu: float):
    """ħ²Q²/2M (meV) for Q in 1/Å."""
    return E_PER_K2 * np.asarray(q) ** 2 * NEUTRON_MASS_AMU / mass_amu


def u2_from_dos(energy_meV, dos, mass_amu: float, temperature_K: float) -> float:
    """Harmonic quantum ⟨u_x²⟩ (Å²) from a DOS with area 1 on a uniform grid (E = 0 skipped)."""
    e = np.asarray(energy_meV)
    z = np.asarray(dos)
    pos = e > 0
    x = e[pos] / (2 * KB_MEV_PER_K * max(temperature_K, 1e-9))
    coth = 1.0 / np.tanh(x)
    # ħ²/2M per (meV Å²): E_R(Q=1) = 2.0721 m_n/M meV
    er1 = E_PER_K2 * NEUTRON_MASS_AMU / mass_amu
    return float(er1 * np.sum(z[pos] / e[pos] * coth) * (e[1] - e[0]))


def quantum_u2_ratio(energy_meV, dos, temperature_K: float) -> float:
    """⟨u²⟩ quantum / classical for a harmonic DOS: ∫ Z/E coth(E/2kT) dE / ∫ Z/E · 2kT/E dE
    (E = 0 skipped; ≥ 1, → 1 where every E ≪ 2kT). Scales a classical MD MSD plateau to the
    quantum ⟨u²⟩ that the Tₙ of this module need, keeping the amplitude the MD measured."""
    e = np.asarray(energy_meV, dtype=float)
    z = np.asarray(dos, dtype=float)
    pos = (e > 0) & (z > 0)
    if not pos.any():
        return 1.0
    two_kt = 2 * KB_MEV_PER_K * max(temperature_K, 1e-9)
    quantum = np.sum(z[pos] / e[pos] / np.tanh(e[pos] / two_kt))
    classical = np.sum(z[pos] / e[pos] * two_kt / e[pos])
    return float(quantum / classical)


def one_phonon_kernel(energy_meV, dos, temperature_K: float):
    """T₁ on the symmetric grid −E_max..E_max built from a one-sided DOS on 0..E_max (1/meV²)."""
    e = np.asarray(energy_meV)
    z = np.asarray(dos)
    t = np.zeros_like(z)
    pos = e > 0
    x = e[pos] / (KB_MEV_PER_K * max(temperature_K, 1e-9))
    t[pos] = z[pos] / e[pos] / -np.expm1(-x)   # Z/E · (n + 1)
    gain = t[pos] * np.exp(-x)                  # detailed balance for E < 0
    full_e = np.concatenate([-e[pos][::-1], e])
    full_t = np.concatenate([gain[::-1], t])
    return full_e, full_t


def _convolve_same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.convolve(a, b, "same")`` for equal lengths, by zero-padded FFT (O(N log N))."""
    n = len(a)
    full = 2 * n - 1
    nfft = 1 << (full - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(a, nfft) * np.fft.rfft(b, nfft), nfft)[:full]
    start = (n - 1) // 2
    return c[start:start + n]


def phonon_orders(energy_meV, dos, temperature_K: float, n_max: int = 10):
    """[T₁, …, T_nmax] on the symmetric grid; returns (energies, list of arrays).
    Each order is the previous one convolved with T₁ and cut to the grid."""
    e, t1 = one_phonon_kernel(energy_meV, dos, temperature_K)
    de = e[1] - e[0]
    orders = [t1]
    for _ in range(n_max - 1):
        orders.append(_convolve_same(orders[-1], t1) * de)
    return e, orders


def order_weights(q, mass_amu: float, u2: float, n_max: int) -> np.ndarray:
    """e^{−Q²⟨u²⟩} E_Rⁿ/n! for n = 1..n_max at each Q; shape (len(q), n_max)."""
    q = np.atleast_1d(np.asarray(q, dtype=float))
    er = recoil_energy_meV(q, mass_amu)
    out = np.empty((len(q), n_max))
    term = np.exp(-q ** 2 * u2)
    for n in range(1, n_max + 1):
        term = term * er / n
        out[:, n - 1] = term
    return out


def powder_s_qe(q_of_e, energy_meV, partial_dos: dict, weights: dict, masses: dict,
                u2: dict, temperature_K: float, n_max: int = 10):
    """S(Q(E),E) along a kinematic line Q(E) (e.g. an indirect-geometry bank).

    ``partial_dos[α]`` on the uniform one-sided grid ``energy_meV`` with area 1; ``weights[α]``
    = atom fraction × σ_α/4π; the keys may be elements or single atoms (mode-resolved
    Debye–Waller); returns (E, S) on the symmetric grid, and per-order totals.
    """
    total = None
    per_order = None
    for a, z in partial_dos.items():
        e, orders = phonon_orders(energy_meV, z, temperature_K, n_max)
        w = order_weights(q_of_e(e), masses[a], u2[a], n_max) * weights[a]   # (E, n)
        terms = [w[:, n] * tn for n, tn in enumerate(orders)]
        s = np.sum(terms, axis=0)
        total = s if total is None else total + s
        per_order = terms if per_order is None else [p + t for p, t in zip(per_order, terms)]
    return e, total, per_order


def powder_s_qe_2d(q, energy_meV, partial_dos: dict, weights: dict, masses: dict, u2: dict,
                   temperature_K: float, n_max: int = 10, first_order: int = 1):
    """S(Q,E) on a grid of |Q| (rows) and the symmetric energy grid, summing orders
    ``first_order``..``n_max``; returns (E, S) with S of shape (len(q), len(E))."""
    total = None
    for a, z in partial_dos.items():
        e, orders = phonon_orders(energy_meV, z, temperature_K, n_max)
        w = order_weights(q, masses[a], u2[a], n_max)[:, first_order - 1:] * weights[a]
        # no order in first_order..n_max (e.g. multiphonon asked with n_max = 1): zero
        s = (w @ np.array(orders[first_order - 1:]) if first_order <= n_max
             else np.zeros((len(np.atleast_1d(q)), len(e))))
        total = s if total is None else total + s
    return e, total
