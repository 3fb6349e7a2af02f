"""Exports of spectra to text that other programs read: CSV and Mantid's SaveAscii v2 layout.

- :func:`export_csv` writes one ``<name>.csv`` per spectrum, ``#`` header lines naming the
  spectrum, its kind, element, source and the unit of each column, then comma-separated rows:
  1D ``x, intensity, intensity_std``; 2D one row per point ``Q, y, I`` (and ``I_std`` when the
  spectrum has uncertainties), Q outermost, as the CSVs of OCLIMAX and INSPIRED.
- :func:`export_mantid_ascii` writes one ``<name>.txt`` per spectrum in the layout of Mantid's
  SaveAscii v2 (``# X , Y , E``, a spectrum-number line before each block, ``x,y,e`` rows), which
  Mantid's LoadAscii (v2) reads back as a Workspace2D and
  :func:`mlff_ins.compare.readers.read_measured` reads back as well. A 2D spectrum is one block
  per |Q| bin (spectrum numbers 1..nQ), each preceded by a ``# Q (1/angstrom) = ...`` comment
  that LoadAscii skips.

Energy axes are written in ``unit`` ("meV", "cm-1" or "THz", converted by
:func:`mlff_ins.compare.readers.convert_energy`); intensities are written as they are, in the
units the header states (a density per meV stays per meV). Time (fs) and |Q| (1/Å) axes are
written as stored; ``read_measured`` reads energy spectra only, so such a Mantid-ASCII file is for
Mantid. Names that are not file-safe are cleaned (``"ins H"`` -> ``ins_H``). Values are written
with 17 significant digits (``repr``), so a file read back gives the same float64 numbers; unknown
errors are "nan".
Files appear atomically (:func:`mlff_ins.atomic_io.write_text_atomic`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import write_text_atomic
from mlff_ins.compare.readers import MEV_PER_UNIT, convert_energy, energy_unit
from mlff_ins.errors import InputError
from mlff_ins.neutron.spectrum import AXIS_UNITS, Spectrum, Spectrum1D, Spectrum2D


def _unit(unit: str) -> str:
    found = energy_unit(unit) if isinstance(unit, str) else None
    if found is None:
        raise InputError(f"export unit {unit!r} is not one of {', '.join(MEV_PER_UNIT)}")
    return found


def _axis(name: str, values_in_own_unit, unit: str) -> tuple[np.ndarray, str]:
    """An axis in the export unit: energies converted from meV, other axes (fs, 1/Å) as stored."""
    if name == "energy":
        return convert_energy(values_in_own_unit, unit), unit
    return np.asarray(values_in_own_unit, dtype=float), AXIS_UNITS[name]


def _file_stems(names) -> list[str]:
    """File-safe stems, one per name; names that clean up alike get _2, _3, ..."""
    stems: list[str] = []
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "spectrum"
        base, k = stem, 2
        while stem in stems:
            stem, k = f"{base}_{k}", k + 1
        stems.append(stem)
    return stems


def _num(v) -> str:
    return repr(float(v))


def _std(sp: Spectrum) -> np.ndarray:
    return (np.full(sp.intensity.shape, np.nan) if sp.intensity_std is None
            else np.asarray(sp.intensity_std, dtype=float))


def _header(name: str, sp: Spectrum) -> list[str]:
    lines = [f"# name: {name}", f"# kind: {sp.kind}", f"# element: {sp.element or 'total'}",
             f"# source: {sp.source}", f"# instrument: {sp.instrument}",
             f"# temperature_K: {sp.temperature_K}"]
    prov = sp.provenance or {}
    if prov.get("ei_meV") is not None:          # direct geometry: the incident energy
        lines.append(f"# ei_meV: {prov['ei_meV']}")
    if sp.intensity_std is not None and prov.get("intensity_std"):
        lines.append(f"# intensity_std: {prov['intensity_std']}")
    return lines


def _checked(spectra: dict, directory) -> Path:
    if not spectra:
        raise InputError("nothing to export: no spectra given")
    for name, sp in spectra.items():
        if not isinstance(sp, (Spectrum1D, Spectrum2D)):
            raise InputError(f"{name}: not a Spectrum1D or Spectrum2D")
    return Path(directory)


def export_csv(spectra: dict[str, Spectrum], directory, unit: str = "meV") -> list[Path]:
    """Write ``<directory>/<name>.csv`` for each spectrum; return the paths written.

    Parameters
    ----------
    spectra : dict
        ``{name: Spectrum1D | Spectrum2D}``; energies in meV, |Q| in 1/Å, time in fs.
    directory : str or Path
        Created if missing.
    unit : str
        Energy unit of the written energy axis: "meV", "cm-1" or "THz".
    """
    unit = _unit(unit)
    directory = _checked(spectra, directory)
    written = []
    for (name, sp), stem in zip(spectra.items(), _file_stems(spectra)):
        u = sp.units or "arb. units"
        lines = _header(name, sp)
        if isinstance(sp, Spectrum1D):
            x, xu = _axis(sp.axis_name, sp.x, unit)
            lines.append(f"# columns: {sp.axis_name} ({xu}), intensity ({u}), "
                         f"intensity_std ({u})")
            lines += [f"{_num(a)},{_num(b)},{_num(c)}" for a, b, c in zip(x, sp.intensity,
                                                                            _std(sp))]
        else:
            y, yu = _axis(sp.axis_name, sp.y, unit)
            with_std = sp.intensity_std is not None
            lines.append(f"# columns: Q ({AXIS_UNITS['q']}), {sp.axis_name} ({yu}), I ({u})"
                         + (f", I_std ({u})" if with_std else ""))
            std = _std(sp)
            for i, q in enumerate(sp.q):
                for j, e in enumerate(y):
                    row = f"{_num(q)},{_num(e)},{_num(sp.intensity[i, j])}"
                    lines.append(row + (f",{_num(std[i, j])}" if with_std else ""))
        path = directory / f"{stem}.csv"
        write_text_atomic(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def export_mantid_ascii(spectra: dict[str, Spectrum], directory,
                        unit: str = "meV") -> list[Path]:
    """Write ``<directory>/<name>.txt`` for each spectrum in Mantid's SaveAscii v2 layout.

    Parameters
    ----------
    spectra : dict
        ``{name: Spectrum1D | Spectrum2D}``; a 2D spectrum becomes one block per |Q| bin.
    directory : str or Path
        Created if missing.
    unit : str
        Energy unit of X: "meV", "cm-1" or "THz"; stated in a ``# X unit:`` comment, which
        :func:`~mlff_ins.compare.readers.read_measured` reads (Mantid's LoadAscii takes the
        unit from its own ``Unit`` property).

    Returns
    -------
    list of Path
    """
    unit = _unit(unit)
    directory = _checked(spectra, directory)
    written = []
    for (name, sp), stem in zip(spectra.items(), _file_stems(spectra)):
        x, xu = _axis(sp.axis_name, sp.x if isinstance(sp, Spectrum1D) else sp.y, unit)
        lines = _header(name, sp) + [f"# X unit: {xu}", f"# Y unit: {sp.units or 'arb. units'}",
                                     "# X , Y , E"]
        std = _std(sp)
        if isinstance(sp, Spectrum1D):
            lines += _block(1, x, sp.intensity, std)
        else:
            for i, q in enumerate(sp.q):
                lines.append(f"# Q ({AXIS_UNITS['q']}) = {_num(q)}")
                lines += _block(i + 1, x, sp.intensity[i], std[i])
        path = directory / f"{stem}.txt"
        write_text_atomic(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def _block(number: int, x, y, e) -> list[str]:
    """One SaveAscii v2 block: the spectrum number alone, then ``x,y,e`` rows (no spaces)."""
    return [str(number)] + [f"{_num(a)},{_num(b)},{_num(c)}" for a, b, c in zip(x, y, e)]
