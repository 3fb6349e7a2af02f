"""Neutron scattering lengths and cross sections per element (Sears 1992, via ``periodictable``).

Coherent amplitudes use the complex b_coh (fm; the imaginary part is an absorber's, large for B,
Cd, Sm, Gd), so a pair of atoms is weighted Re(b_a b_b*); cross sections are the tabulated σ_coh
and σ_inc (barn), not 4π Re(b_coh)² or a mean b_inc², so absorbers' imaginary lengths and
isotopic and spin incoherence are all included. 1 barn = 100 fm².
"""

from __future__ import annotations

import math

from mlff_ins.errors import InputError


def _element(symbol: str, isotope: int | None = None):
    """The element, or one of its isotopes (mass number ``isotope``, e.g. H 2 for deuterium)."""
    import periodictable

    try:
        el = periodictable.elements.symbol(symbol)
    except ValueError:
        raise InputError(f"unknown element {symbol!r}") from None
    if isotope is None:
        return el
    try:
        return el[int(isotope)]
    except (KeyError, ValueError):
        raise InputError(f"--isotope {symbol}={isotope}: {symbol} has no isotope of mass number "
                         f"{isotope}") from None


def parse_isotopes(items) -> dict[str, int]:
    """``["H=2", "Li=7"]`` -> {"H": 2, "Li": 7}, checked against periodictable."""
    out = {}
    for item in items or []:
        el, _, a = item.partition("=")
        if not a.strip().isdigit():
            raise InputError(f"--isotope {item}: expected ELEMENT=MASS_NUMBER, e.g. H=2")
        _element(el.strip(), int(a))
        out[el.strip()] = int(a)
    return out


def b_coh_fm(symbol: str, isotope: int | None = None) -> float:
    """Bound coherent scattering length (fm), real part."""
    b = _element(symbol, isotope).neutron.b_c
    if b is None:
        raise InputError(f"element {symbol}: no tabulated coherent scattering length")
    return float(b)


def b_coh_complex_fm(symbol: str, isotope: int | None = None) -> complex:
    """Bound coherent scattering length (fm) with its imaginary (absorption) part, which is
    large for B, Cd, Sm, Gd and zero where none is tabulated: coherent intensities weight a pair
    of atoms by Re(b_a b_b*), so an absorber's own term is |b|², not Re(b)²."""
    imag = _element(symbol, isotope).neutron.b_c_i
    return complex(b_coh_fm(symbol, isotope), float(imag or 0.0))


def sigma_inc_barn(symbol: str, isotope: int | None = None) -> float:
    """Bound incoherent cross section σ_inc (barn)."""
    s = _element(symbol, isotope).neutron.incoherent
    if s is None:
        raise InputError(f"element {symbol}: no tabulated incoherent cross section")
    return float(s)


def sigma_coh_barn(symbol: str, isotope: int | None = None) -> float:
    """Bound coherent cross section σ_coh (barn) as tabulated. For absorbers (B, Cd, Sm, Gd, ...)
    b_coh has a large imaginary part that 4π Re(b)² misses (Gd: 11.3 instead of 29.3 barn);
    4π|b|² is the fallback where no σ_coh is tabulated."""
    n = _element(symbol, isotope).neutron
    if n.coherent is not None:
        return float(n.coherent)
    return 4 * math.pi * abs(b_coh_complex_fm(symbol, isotope)) ** 2 / 100.0


def sigma_total_barn(symbol: str, isotope: int | None = None) -> float:
    """Total bound scattering cross section σ_coh + σ_inc (barn), both tabulated."""
    return sigma_coh_barn(symbol, isotope) + sigma_inc_barn(symbol, isotope)


def mass_amu(symbol: str, isotope: int | None = None) -> float:
    """Standard atomic mass (amu), or the isotope's mass."""
    return float(_element(symbol, isotope).mass)
