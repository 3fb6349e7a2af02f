"""Indirect-geometry spectrometers (VISION, TOSCA): fixed final energy, two banks, Gaussian
resolution; used to turn an S(Q,E) model into the S(E) these instruments record.

Both analyser banks sit at 45° (forward) and 135° (backward) scattering, so each energy transfer E
is seen at one Q per bank: Q² = k_i² + k_f² − 2 k_i k_f cos 2θ, E_i = E + E_f, E = 2.0721 k²
(meV, Å⁻¹). Resolution: :mod:`mlff_ins.neutron.resolution` (TOSCA: AbINS' polynomial; VISION:
the same polynomial as an approximation, said in the provenance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff_ins.errors import InputError
from mlff_ins.neutron.kinematics import E_PER_K2
from mlff_ins.neutron.resolution import MEV_PER_INVCM, Resolution, indirect_resolution  # noqa: F401


@dataclass(frozen=True)
class IndirectInstrument:
    name: str
    final_energy_meV: float
    bank_angles_deg: tuple[float, ...]

    def q_of_energy(self, energy_meV, angle_deg: float) -> np.ndarray:
        """|Q| (1/Å) seen at energy transfer E (meV) by the bank at scattering angle 2θ."""
        e = np.asarray(energy_meV, dtype=float)
        ki2 = (e + self.final_energy_meV) / E_PER_K2
        kf2 = self.final_energy_meV / E_PER_K2
        return np.sqrt(np.maximum(ki2 + kf2 - 2 * np.sqrt(ki2 * kf2) * np.cos(np.radians(angle_deg)),
                                  0.0))

    @property
    def resolution(self) -> Resolution:
        return indirect_resolution(self.name)

    def sigma_meV(self, energy_meV) -> np.ndarray:
        """Gaussian resolution σ (meV) at energy transfer E (meV)."""
        return self.resolution.sigma_meV(energy_meV)

    def broaden(self, energy_meV, intensity) -> np.ndarray:
        """The instrument's energy-dependent Gaussian resolution (area kept)."""
        return self.resolution.broaden(energy_meV, intensity)


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
