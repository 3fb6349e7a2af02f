"""Energy units: the one place where meV, µeV, cm⁻¹ and THz are converted and recognised.

1 cm⁻¹ = 0.1239841984 meV (hc; 1 meV = 8.065544 cm⁻¹) and 1 THz = 4.135667696 meV (h;
1 meV = 0.2417990 THz), CODATA 2018; µeV (backscattering and QENS data) is 1e-3 meV, written
"ueV" on command lines.
"""

from __future__ import annotations

import re

import numpy as np

from mlff_ins.errors import InputError

MEV_PER_INVCM = 0.1239841984
MEV_PER_THZ = 4.135667696  # E = h f
#: meV per unit of each energy unit the package reads, writes and plots
MEV_PER_UNIT = {"meV": 1.0, "ueV": 1e-3, "cm-1": MEV_PER_INVCM, "THz": MEV_PER_THZ}
#: axis-label spelling of each unit
UNIT_LABEL = {"meV": "meV", "ueV": "µeV", "cm-1": "cm⁻¹", "THz": "THz"}
#: the units a command line offers (--unit, --measured-unit)
ENERGY_UNITS = tuple(MEV_PER_UNIT)

#: how each unit is spelt in files: Mantid unit IDs (DeltaE, DeltaE_inWavenumber), their labels
#: (meV, cm^-1), the ISIS database's "CM-1" and the words people write
_UNIT_PATTERNS = {
    "cm-1": re.compile(r"cm\s*(?:\^|\*\*)?\s*\(?\s*[-\u2212]\s*1\b|cm\u207b\u00b9|\b1\s*/\s*cm\b|"
                       r"\bwave\s*numbers?\b|\bwavenumbers?\b|\bdeltae_inwavenumber\b", re.I),
    # letters, not word characters, around the symbols: "energy_meV", "E_THz" name them too
    "meV": re.compile(r"(?<![a-z])mev(?![a-z])|\bdeltae\b|\bmilli[- ]?electron[- ]?volts?\b",
                      re.I),
    "THz": re.compile(r"(?<![a-z])thz(?![a-z])|\bterahertz\b", re.I),
    # the micro sign (U+00B5), the Greek mu (U+03BC) or a u; Mantid's label is "microeV"
    "ueV": re.compile(r"(?<![a-z])[u\u00b5\u03bc]ev(?![a-z])|\bmicro[- ]?ev\b|"
                      r"\bmicro[- ]?electron[- ]?volts?\b", re.I),
}


def energy_unit(text: str) -> str | None:
    """The energy unit ("meV", "ueV", "cm-1" or "THz") that ``text`` names, or None if none or
    several."""
    found = [u for u, pattern in _UNIT_PATTERNS.items() if pattern.search(text or "")]
    return found[0] if len(found) == 1 else None


def _check_unit(unit: str, what: str = "unit") -> str:
    canonical = energy_unit(unit) if isinstance(unit, str) else None
    if canonical is None:
        raise InputError(f"{what} {unit!r} is not an energy unit; choose one of "
                         f"{', '.join(MEV_PER_UNIT)}")
    return canonical


def energy_to_meV(values, unit: str) -> np.ndarray:
    """Energies in ``unit`` ("meV", "cm-1", "THz"; spellings as :func:`energy_unit`) -> meV."""
    return np.asarray(values, dtype=float) * MEV_PER_UNIT[_check_unit(unit)]


def convert_energy(values_meV, unit: str) -> np.ndarray:
    """Energies in meV -> ``unit`` ("meV", "cm-1" or "THz"); an unknown unit is an InputError."""
    return np.asarray(values_meV, dtype=float) / MEV_PER_UNIT[_check_unit(unit)]
