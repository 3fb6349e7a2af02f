"""The one INS engine: a vibrational source -> incoherent approximation -> instrument -> spectra.

A :class:`VibrationalSource` is what any route knows about the vibrations (AbINS' "abstract
data"): for every site κ — an atom of the primitive cell for phonons, an element for an MD
trajectory — the fraction of the atoms it stands for, its mass, its projected DOS Z_κ(E) (area 1
per degree of freedom on a uniform one-sided grid 0, dE, 2dE, ...) and its isotropic mean-square
displacement ⟨u²⟩_κ (one Cartesian component, Å²). Phonon modes (:mod:`mlff_ins.ins.modes`) and
MD correlations (``mlff-ins spectra``) both build one; the predictor will too.

From a source, in the incoherent approximation (:mod:`mlff_ins.ins.incoherent`):

  S(Q,E) = Σ_κ f_κ (σ_κ/4π) e^{−Q²⟨u²⟩_κ} Σ_{n=1}^{N} (E_R,κ)ⁿ/n! T_n,κ(E)   barn/(sr meV) per atom

An indirect-geometry instrument (VISION, TOSCA) sees each bank along its kinematic line Q(E);
the energy-loss side is broadened with the instrument's resolution. Every route writes the same
spectra: ``s_e`` (mean of the banks), ``s_e_<angle>`` (each bank) and, with more than one element,
``s_e_<El>`` (element partials, bank mean).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlff_ins.ins.incoherent import order_weights, phonon_orders, powder_s_qe_2d
from mlff_ins.neutron.spectrum import Spectrum1D


@dataclass
class VibrationalSource:
    energy_meV: np.ndarray        # (E,) uniform, starting at 0
    dos: np.ndarray               # (K, E) 1/meV, area 1 per site (less when modes lie above)
    u2_A2: np.ndarray             # (K,) ⟨u_x²⟩
    masses_amu: np.ndarray        # (K,)
    symbols: list                 # (K,) element of each site
    fractions: np.ndarray         # (K,) fraction of all atoms each site stands for (sum 1)
    temperature_K: float
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.energy_meV = np.asarray(self.energy_meV, dtype=float)
        self.dos = np.atleast_2d(np.asarray(self.dos, dtype=float))
        self.u2_A2 = np.asarray(self.u2_A2, dtype=float).reshape(-1)
        self.masses_amu = np.asarray(self.masses_amu, dtype=float).reshape(-1)
        self.fractions = np.asarray(self.fractions, dtype=float).reshape(-1)
        k = len(self.symbols)
        if not (self.dos.shape == (k, len(self.energy_meV)) and len(self.u2_A2) == k
                and len(self.masses_amu) == k and len(self.fractions) == k):
            raise ValueError("a vibrational source needs one DOS row, ⟨u²⟩, mass and fraction "
                             "per site")
        de = np.diff(self.energy_meV)
        if self.energy_meV[0] != 0 or not np.allclose(de, de[0], rtol=1e-6):
            raise ValueError("the DOS grid must be uniform and start at 0 meV")
        if abs(self.fractions.sum() - 1) > 1e-9:
            raise ValueError(f"site fractions sum to {self.fractions.sum()}, not 1")

    @property
    def elements(self) -> list[str]:
        """Distinct elements in order of first appearance."""
        return list(dict.fromkeys(self.symbols))


def indirect_s_e(source: VibrationalSource, instrument, sigma_barn, n_phonon: int = 10):
    """S(E) on an indirect-geometry ``instrument`` (an object with ``bank_angles_deg``,
    ``q_of_energy(E, angle)`` and ``broaden(E, S)``), ``sigma_barn[κ]`` the cross section of each
    site (σ_total in the incoherent approximation). Orders are built once per site and weighted
    for every bank. Returns (E ≥ 0, {name: S}) with the names of the module docstring."""
    angles = list(instrument.bank_angles_deg)
    banks = {el: [0.0] * len(angles) for el in source.elements}
    energies = None
    for k, el in enumerate(source.symbols):
        energies, orders = phonon_orders(source.energy_meV, source.dos[k], source.temperature_K,
                                         n_phonon)
        orders = np.asarray(orders)                                      # (N, E)
        scale = source.fractions[k] * sigma_barn[k] / (4 * np.pi)
        for i, a in enumerate(angles):
            q = instrument.q_of_energy(np.abs(energies), a)
            w = order_weights(q, source.masses_amu[k], source.u2_A2[k], n_phonon)   # (E, N)
            banks[el][i] = banks[el][i] + np.einsum("en,ne->e", w, orders) * scale
    keep = energies >= 0
    e = energies[keep]
    # the resolution acts on the energy-loss side only: the instruments measure nothing else
    banks = {el: [instrument.broaden(e, b[keep]) for b in per_bank]
             for el, per_bank in banks.items()}
    out = {}
    for i, a in enumerate(angles):
        out[f"s_e_{a:g}"] = sum(per_bank[i] for per_bank in banks.values())
    out["s_e"] = np.mean([out[f"s_e_{a:g}"] for a in angles], axis=0)
    if len(banks) > 1:
        for el, per_bank in banks.items():
            out[f"s_e_{el}"] = np.mean(per_bank, axis=0)
    return e, out


def incoherent_sqe(source: VibrationalSource, q, sigma_barn, n_phonon: int = 10,
                   first_order: int = 1):
    """Powder S(Q,E) (rows |Q|, symmetric energy grid) in the incoherent approximation, orders
    ``first_order``..``n_phonon``; returns (E, S)."""
    keys = range(len(source.symbols))
    return powder_s_qe_2d(q, source.energy_meV, {k: source.dos[k] for k in keys},
                          {k: source.fractions[k] * sigma_barn[k] / (4 * np.pi) for k in keys},
                          {k: source.masses_amu[k] for k in keys},
                          {k: source.u2_A2[k] for k in keys}, source.temperature_K, n_phonon,
                          first_order)


def s_e_spectra(energies, mean: dict, instrument, std: dict | None = None,
                **meta) -> dict[str, Spectrum1D]:
    """The one writer of indirect-geometry spectra: ``mean`` (and ``std``) from
    :func:`indirect_s_e` -> Spectrum1D per name, each saying its bank(s) and element."""
    angles = list(instrument.bank_angles_deg)
    bank_names = {f"s_e_{a:g}": a for a in angles}
    out = {}
    for name, y in mean.items():
        if name in bank_names:
            bank, element = [bank_names[name]], ""
        else:
            bank, element = angles, name[len("s_e_"):] if name != "s_e" else ""
        prov = {**meta.get("provenance", {}), "final_energy_meV": instrument.final_energy_meV,
                "bank_angles_deg": bank, **instrument.resolution.provenance()}
        out[name] = Spectrum1D(kind="s_e", x=np.asarray(energies), intensity=y,
                               intensity_std=None if std is None else std.get(name),
                               element=element, instrument=instrument.name,
                               units="barn/sr/meV", provenance=prov,
                               **{k: v for k, v in meta.items() if k != "provenance"})
    return out
