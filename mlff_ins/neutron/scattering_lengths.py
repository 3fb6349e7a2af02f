"""Neutron scattering lengths and cross sections per element (Sears 1992, via ``periodictable``).

Coherent weights use b_coh (fm); incoherent weights use the tabulated σ_inc (barn), not a mean
b_inc², so isotopic and spin incoherence are both included. 1 barn = 100 fm².
"""

from __future__ import annotations

import math

from mlff_ins.errors import InputError


def _element(symbol: str):
    import periodictable

    try:
        return periodictable.elements.symbol(symbol)
    except ValueError:
        raise InputError(f"unknown element {symbol!r}") from None


def b_coh_fm(symbol: str) -> float:
    """Bound coherent scattering length (fm), real part."""
    b = _element(symbol).neutron.b_c
    if b is None:
        raise InputError(f"element {symbol}: no tabulated coherent scattering length")
    return float(b)


def sigma_inc_barn(symbol: str) -> float:
    """Bound incoherent cross section σ_inc (barn)."""
    s = _element(symbol).neutron.incoherent
    if s is None:
        raise InputError(f"element {symbol}: no tabulated incoherent cross section")
    return float(s)


def sigma_total_barn(symbol: str) -> float:
    """Total bound scattering cross section σ_coh + σ_inc (barn)."""
    return 4 * math.pi * b_coh_fm(symbol) ** 2 / 100.0 + sigma_inc_barn(symbol)


def mass_amu(symbol: str) -> float:
    """Standard atomic mass (amu)."""
    return float(_element(symbol).mass)
