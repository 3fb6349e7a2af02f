"""Indirect-geometry spectrometers (VISION, TOSCA): fixed final energy, two banks, Gaussian
resolution; used to turn an S(Q,E) model into the S(E) these instruments record.

Both analyser banks sit at 45° (forward) and 135° (backward) scattering, so each energy transfer E
is seen at one Q per bank: Q² = k_i² + k_f² − 2 k_i k_f cos 2θ, E_i = E + E_f, E = 2.0721 k²
(meV, Å⁻¹). Resolution: Gaussian σ(E) = 2.5 + 0.005 E + 1e−7 E² with E and σ in cm⁻¹ (the form
AbINS uses for TOSCA and OCLIMAX's defaults use for VISION).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff_ins.errors import InputError
from mlff_ins.neutron.kinematics import E_PER_K2

MEV_PER_INVCM = 0.1239841984


@dataclass(frozen=True)
class IndirectInstrument:
    name: str
    final_energy_meV: float
    bank_angles_deg: tuple[float, ...]
    resolution_invcm: tuple[float, float, float] = (2.5, 0.005, 1e-7)

    def q_of_energy(self, energy_meV, angle_deg: float) -> np.ndarray:
        """|Q| (1/Å) seen at energy transfer E (meV) by the bank at scattering angle 2θ."""
        e = np.asarray(energy_meV, dtype=float)
        ki2 = (e + self.final_energy_meV) / E_PER_K2
        kf2 = self.final_energy_meV / E_PER_K2
        return np.sqrt(np.maximum(ki2 + kf2 - 2 * np.sqrt(ki2 * kf2) * np.cos(np.radians(angle_deg)),
                                  0.0))

    def sigma_meV(self, energy_meV) -> np.ndarray:
        """Gaussian resolution σ (meV) at energy transfer E (meV)."""
        a, b, c = self.resolution_invcm
        w = np.asarray(energy_meV, dtype=float) / MEV_PER_INVCM
        return (a + b * w + c * w * w) * MEV_PER_INVCM

    def broaden(self, energy_meV, intensity, chunk: int = 1024) -> np.ndarray:
        """Apply the energy-dependent Gaussian resolution: the intensity in each bin at E' is
        spread over the output grid as a Gaussian of width σ(|E'|) with unit area, so the total
        area is kept (up to what spills past the grid ends). Memory is chunk × len(E)."""
        e = np.asarray(energy_meV, dtype=float)
        y = np.asarray(intensity, dtype=float)
        sigma = self.sigma_meV(np.abs(e))
        de = e[1] - e[0]
        out = np.zeros_like(y)
        for lo in range(0, len(e), chunk):
            src = slice(lo, lo + chunk)
            k = np.exp(-0.5 * ((e[:, None] - e[None, src]) / sigma[None, src]) ** 2)
            k /= np.sqrt(2 * np.pi) * sigma[None, src]          # unit area per source bin
            out += k @ y[src] * de
        return out


INSTRUMENTS = {
    "vision": IndirectInstrument("vision", 3.5, (45.0, 135.0)),
    "tosca": IndirectInstrument("tosca", 32 * MEV_PER_INVCM, (45.0, 135.0)),
}


def get_instrument(name: str) -> IndirectInstrument:
    try:
        return INSTRUMENTS[name.lower()]
    except KeyError:
        raise InputError(f"--instrument {name}: known indirect instruments are "
                         f"{', '.join(INSTRUMENTS)}") from None
