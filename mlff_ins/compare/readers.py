"""Readers of measured INS data (h5py and numpy only, no Mantid) into Spectrum1D / Spectrum2D.

:func:`read_measured` recognises a file by its content, not its suffix, and returns
``{name: spectrum}`` with ``source="measured"``, kind ``"s_e"`` (1D, energy) or ``"sqe"`` (2D,
|Q| and energy), energies in meV (bin centres), |Q| in 1/Å, ``intensity_std`` from the file's
errors (NaN where unknown) and provenance ``{file, format, sha256, bank, ...}``. Formats:

- Mantid SaveAscii v1 (``X , Y0 , E0 , Y1 , E1 ...``: spectra as column pairs) and SaveAscii v2
  (``# X , Y , E`` and a spectrum-number line before each block), comma- or space-separated.
  Mantid ASCII carries no energy unit, so the unit comes from a comment such as ``# X unit: meV``
  or ``# Energy transfer (cm-1)``, or from ``unit=``; without either the file is refused.
  A three-spectrum file is taken as VISION's backward, forward and average banks, in that order.
- ISIS INS-database ``.dat``, which is also what aCLIMAX reads as an experimental spectrum: a
  title line, a column header such as ``C (CM-1) COUNTS ERROR`` that carries the unit, then x, y, e
  columns (two columns x, y are accepted as well, with unknown errors).
- NXSPE (HDF5): detector pixels (2θ, E) of a direct-geometry spectrometer, binned onto a powder
  S(|Q|, E) (:func:`powder_sqe`).
- Mantid processed NeXus (SaveNexusProcessed) of a SofQW workspace, including RebinnedOutput
  (``frac_area``), or of a workspace of 1D energy spectra (one per spectrum number).
- Mantid MDHistoWorkspace files (SaveMD version 2) with |Q| and energy (or energy alone) as the
  dimensions that are not integrated out.

Where the layouts come from, and what is assumed:

- ISIS INS database "Spectra formats" page: the ``.dat`` is title, ``C (CM-1) COUNTS ERROR``,
  then x (cm⁻¹), y, e, and "is also suitable for use with ... aCLIMAX"; that is the layout read
  as aCLIMAX's experimental input. aCLIMAX's own *calculated* output is a CSV (three comment
  lines, x in cm⁻¹, one column per quantum order and phonon wing, per Mantid's LoadAclimax); it
  is a calculation, not a measurement, and is not read here.
- Mantid SaveAscii/SaveAscii2, SaveNXSPE, NexusFileIO (SaveNexusProcessed), LoadNexusProcessed
  and SaveMD2 sources for the other layouts; each reader cites what it follows.
- Three spectra in one 1D file are taken as VISION's backward, forward and average banks (that
  order); any other count is named ``spectrum<N>`` by its spectrum number.
- Bin edges in text: a last row with x alone is the closing edge. A last row with y = e = 0 in
  every spectrum after a row that is not all zero is an empty last bin, with a warning
  (``x_edges=True`` reads it as the closing edge): Mantid's SaveAscii (v1 and v2) writes one row
  per bin at its centre.
- Intensities are not rescaled when the energy axis is converted (a density per cm⁻¹ read from a
  file stays in the file's intensity units, stated in ``units``).

Energy units are recognised and converted by :mod:`mlff_ins.neutron.units` (meV, cm⁻¹, THz),
whose functions are re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import file_sha256
from mlff_ins.errors import InputError
from mlff_ins.neutron.kinematics import E_PER_K2
from mlff_ins.neutron.units import (MEV_PER_INVCM, MEV_PER_THZ, MEV_PER_UNIT,  # noqa: F401
                                    _UNIT_PATTERNS,
                                    _check_unit, convert_energy, energy_to_meV, energy_unit)
from mlff_ins.neutron.spectrum import Spectrum, Spectrum1D, Spectrum2D

# energy units live in mlff_ins.neutron.units (re-exported here for the readers' callers)
#: spellings of |Q| units (1/Å); Mantid writes "MomentumTransfer" (unit ID) or "Angstrom^-1"
_Q_UNIT = re.compile(r"^\s*(momentumtransfer|angstrom\s*\^\s*-\s*1|1\s*/\s*(angstrom|a|\u00c5)|"
                     r"a\s*\^\s*-\s*1|\u00c5\s*\^?\s*-\s*1|\u00c5\u207b\u00b9|inv_?a(ngstrom)?|"
                     r"q\s*\(\s*(1/angstrom|1/\u00c5|\u00c5\^-1|angstrom\^-1)\s*\))\s*$", re.I)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------

#: VISION's reduction writes its banks in this order (backward, forward, their average)
VISION_BANKS = ("backward", "forward", "average")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_measured(path, *, bank: int | str | None = None, q_edges=None, unit: str | None = None,
                  x_edges: bool | None = None, max_bytes: int | None = None,
                  energy_gain: bool = False) -> dict[str, Spectrum]:
    """Read a measured spectrum file into ``{name: Spectrum1D | Spectrum2D}``, energies in meV.

    Parameters
    ----------
    path : str or Path
        Any of the formats of the module docstring; the format is found from the content.
    bank : int, str or None
        Which of several 1D spectra to return: an index (0-based, negative counts from the end),
        "backward"/"forward"/"average" (files of exactly three spectra, VISION's order) or "all".
        Default: the last ("average") of three spectra, all spectra otherwise; the choice is in
        each spectrum's provenance. Not accepted for 2D files.
    q_edges : array-like or None
        |Q| bin edges (1/Å) for NXSPE files; default 100 bins from 0 to the largest |Q| of the
        pixels. Not accepted for other formats.
    unit : str or None
        Energy unit of a text file's x column ("meV", "cm-1", "THz"), overriding what the file
        says; needed for Mantid ASCII files, which carry no unit unless a comment names it.
    x_edges : bool or None
        Text files: None finds bin edges by themselves (a last row with x only; a last row with
        y = e = 0 in every spectrum after a row that is not all zero stays a point, with a
        warning); True takes the last x as the closing edge; False takes every row with y as a
        point.
    max_bytes : int or None
        HDF5 files: the largest dataset read, bytes once decompressed (default
        :data:`mlff_ins.hdf5_files.MAX_DATASET_BYTES`; the web page sets its own).
    energy_gain : bool
        Text files: the file counts energy transfer positive for neutron energy gain (the
        opposite of this package): its energy axis is negated (and reversed, to increase
        again). HDF5 files carry Mantid's convention (energy loss positive) and refuse it.

    Returns
    -------
    dict
        Names ``"s_e"`` / ``"sqe"`` for a single spectrum, ``"s_e_<bank>"`` or
        ``"sqe_<entry>"`` where a file holds several; insertion order as in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such measured-data file")
    if bank is not None and not isinstance(bank, (int, np.integer, str)):
        raise InputError(f"{path}: bank must be an index or a name, not {bank!r}")
    if _is_hdf5(path):
        if unit is not None or x_edges is not None or energy_gain:
            raise InputError(f"{path}: --measured-unit, --measured-x and --measured-energy-gain "
                             f"(unit=, x_edges=, energy_gain= in Python) apply to text files; "
                             f"this HDF5 file carries its own units, bin edges and Mantid's "
                             f"sign (energy loss positive, which |Q| of NXSPE pixels needs)")
        out = _read_hdf5(path, bank=bank, q_edges=q_edges, max_bytes=max_bytes)
    else:
        if q_edges is not None:
            raise InputError(f"{path}: q_edges applies to NXSPE files only")
        out = _read_text(path, bank=bank, unit=unit, x_edges=x_edges)
    digest = file_sha256(path)
    for name, sp in out.items():
        sp.provenance = {"file": str(path), "sha256": digest, **sp.provenance}
        if energy_gain:
            out[name] = _energy_gain_to_loss(sp)
    return out


def _energy_gain_to_loss(sp: Spectrum) -> Spectrum:
    """The spectrum with its energy axis negated and reversed (energy gain -> energy loss)."""
    from dataclasses import replace

    std = sp.intensity_std
    note = {**sp.provenance, "energy_sign": "the file's energies negated (energy gain in the "
                                            "file, energy loss here)"}
    if isinstance(sp, Spectrum1D):
        return replace(sp, x=-sp.x[::-1], intensity=sp.intensity[::-1],
                       intensity_std=None if std is None else std[::-1], provenance=note)
    return replace(sp, y=-sp.y[::-1], intensity=sp.intensity[:, ::-1],
                   intensity_std=None if std is None else std[:, ::-1], provenance=note)


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head == _HDF5_SIGNATURE:
        return True
    import h5py  # a user block moves the signature to 512, 1024, ...; h5py knows where to look

    return bool(h5py.is_hdf5(path))


def _measured_1d(x_meV, y, e, units: str, instrument: str, provenance: dict) -> Spectrum1D:
    return Spectrum1D(kind="s_e", axis_name="energy", x=x_meV, intensity=y,
                      intensity_std=_std_or_nan(e, np.shape(y)), units=units or "arb. units",
                      instrument=instrument or "unknown", source="measured", provenance=provenance)


def _measured_2d(q, e_meV, intensity, std, units: str, instrument: str,
                 provenance: dict) -> Spectrum2D:
    return Spectrum2D(kind="sqe", q=q, axis_name="energy", y=e_meV, intensity=intensity,
                      intensity_std=_std_or_nan(std, np.shape(intensity)),
                      units=units or "arb. units", instrument=instrument or "unknown",
                      source="measured", provenance=provenance)


def _std_or_nan(std, shape) -> np.ndarray:
    return np.full(shape, np.nan) if std is None else np.asarray(std, dtype=float)


def _centres(edges) -> np.ndarray:
    edges = np.asarray(edges, dtype=float)
    return 0.5 * (edges[:-1] + edges[1:])


# ---------------------------------------------------------------------------------------------
# text formats: Mantid SaveAscii v1/v2, ISIS INS-database / aCLIMAX .dat
# ---------------------------------------------------------------------------------------------

_SPLIT = re.compile(r"[,;\s]+")
_INT = re.compile(r"^[+-]?\d+$")
#: Mantid's column header: "X , Y , E" (v2) or "X , Y0 , E0 , Y1 , E1" (v1), "#" optional
_MANTID_HEADER = re.compile(r"^\s*#?\s*X\s*[,;\s]\s*Y\d*\s*[,;\s]\s*(E|Y)\d*", re.I)
#: an explicit declaration of the x unit: "# X unit: meV", "# Energy unit = cm-1"
_UNIT_DECL = re.compile(r"^\s*#?\s*(?:x[ _-]?units?|units?[ _-]?(?:of[ _-]?)?x|energy[ _-]?units?)"
                        r"\s*[:=]\s*(.+?)\s*$", re.I)
_Y_UNIT_DECL = re.compile(r"^\s*#?\s*(?:y[ _-]?units?|intensity[ _-]?units?)\s*[:=]\s*(.+?)\s*$",
                          re.I)
#: a block's |Q| as written by export_mantid_ascii: "# Q (1/angstrom) = 0.25"
_Q_DECL = re.compile(r"^\s*#\s*Q\s*(?:\(([^)]*)\))?\s*[:=]\s*(\S+)\s*$", re.I)


@dataclass
class _Line:
    number: int  # 1-based line number in the file
    text: str
    kind: str  # "blank", "comment", "numeric" or "text"
    values: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


@dataclass
class _Column1D:
    label: str
    x: np.ndarray
    y: np.ndarray
    e: np.ndarray | None
    closing_x: float | None = None
    number: int | None = None
    q: float | None = None
    group: int = 0  # columns of one group share their x rows (one table of SaveAscii v1)


def _classify(lineno: int, raw: str) -> _Line:
    s = raw.strip()
    if not s:
        return _Line(lineno, raw, "blank")
    if s.startswith("#"):
        return _Line(lineno, raw, "comment")
    tokens = [t for t in _SPLIT.split(s) if t]
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return _Line(lineno, raw, "text")
    return _Line(lineno, raw, "numeric", values, tokens)


#: the first line of a DAVE group file, as DAVE and Mantid's SaveDaveGrp write it
_DAVE_GRP = re.compile(r"^\s*#\s*number\s+of\s+x\s+values\s*$", re.I)


def _read_lines(path: Path) -> list[_Line]:
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise InputError(f"{path}: a binary file that is not HDF5; expected Mantid ASCII, an "
                         f"ISIS .dat, NXSPE or a Mantid NeXus/MD file")
    text = data.decode("utf-8", errors="replace")
    return [_classify(i + 1, raw) for i, raw in enumerate(text.splitlines())]


def _read_text(path: Path, *, bank, unit, x_edges) -> dict[str, Spectrum]:
    lines = _read_lines(path)
    if any(_DAVE_GRP.match(ln.text) for ln in lines[:3] if ln.kind == "comment"):
        # its one-column layout (counts, then the x values, the y values and a block of
        # intensity, error per group) would otherwise fail on a column count
        raise InputError(f"{path}: a DAVE group file (.grp), which this reader does not read; "
                         f"load it in Mantid (LoadDaveGrp) and save it with SaveAscii or "
                         f"SaveNexusProcessed, which `compare --measured` reads")
    numeric = [ln for ln in lines if ln.kind == "numeric"]
    if not numeric:
        raise InputError(f"{path}: no numeric rows; expected Mantid ASCII or an ISIS/aCLIMAX "
                         f".dat table of energy, intensity, error")
    first, last = numeric[0].number, numeric[-1].number
    for ln in lines:
        if ln.kind == "text" and ln.number > first:
            raise InputError(f"{path}: line {ln.number} is not numeric: "
                             f"{ln.text.strip()[:60]!r}")
    header = [ln for ln in lines if ln.number < first and ln.kind in ("comment", "text")]
    mantid_header = next((ln for ln in header if _MANTID_HEADER.match(ln.text)), None)
    body = [ln for ln in lines if first <= ln.number <= last]
    if _has_spectrum_numbers(body):  # comments above the data may carry the first block's Q
        fmt = "mantid_ascii_v2"
        columns = _parse_blocks(path, [ln for ln in lines if ln.number <= last])
    else:
        fmt = _columns_format(mantid_header, header)
        columns = _parse_columns(path, body, mantid_header)
    energy_unit_, unit_source = _text_energy_unit(path, lines, header, unit)
    y_units = _declared_y_units(lines)
    return _text_spectra(path, fmt, columns, bank=bank, x_edges=x_edges,
                         unit=energy_unit_, unit_source=unit_source, y_units=y_units)


def _columns_format(mantid_header: _Line | None, header: list[_Line]) -> str:
    if mantid_header is not None:  # v1 numbers its columns (Y0, E0, ...); v2 writes X , Y , E
        return "mantid_ascii_v1" if re.search(r"Y\d", mantid_header.text, re.I) \
            else "mantid_ascii_v2"
    return "isis_dat" if header else "text_columns"


def _has_spectrum_numbers(body: list[_Line]) -> bool:
    """SaveAscii v2: a line of a spectrum's metadata (its number; or SpectrumMetaData's
    number and Q, or Q alone), followed by a row of more values."""
    rows = [ln for ln in body if ln.kind == "numeric"]
    if any(len(a.tokens) == 1 and _INT.match(a.tokens[0]) and len(b.tokens) > 1
           for a, b in zip(rows, rows[1:])):
        return True
    return _starts_with_metadata(rows)


def _starts_with_metadata(rows: list[_Line]) -> bool:
    """Whether the first numeric line is a SaveAscii2 metadata line of 1-2 values (Q; number
    and Q; Q and angle) before a row of 3 or more: only then are such lines further down read
    as metadata, not as ragged data rows."""
    return len(rows) > 1 and len(rows[0].tokens) <= 2 and len(rows[1].tokens) >= 3


def _parse_blocks(path: Path, body: list[_Line]) -> list[_Column1D]:
    """SaveAscii v2 blocks: spectrum number, then rows x, y[, e[, dx]]; a blank line also ends a
    block, and a row with x only after the last full row is the block's closing bin edge."""
    rows = [ln for ln in body if ln.kind in ("numeric", "blank", "comment")]
    next_width = [0] * len(rows)  # number of values on the next numeric row (0: none)
    width = 0
    for i in range(len(rows) - 1, -1, -1):
        next_width[i] = width
        if rows[i].kind == "numeric":
            width = len(rows[i].values)
    blocks: list[dict] = []
    current: dict | None = None
    pending_q: float | None = None
    metadata = _starts_with_metadata([ln for ln in rows if ln.kind == "numeric"])
    for i, ln in enumerate(rows):
        if ln.kind == "comment":
            m = _Q_DECL.match(ln.text)
            if m:
                pending_q = _float_or_error(path, ln, m.group(2))
            continue
        if ln.kind == "blank":
            current = None
            continue
        if (len(ln.tokens) == 1 and _INT.match(ln.tokens[0]) and next_width[i] > 1) or \
                (metadata and len(ln.tokens) <= 2 and next_width[i] >= 3):
            # a block's metadata (SaveAscii2's SpectrumMetaData): its number; its number and
            # Q; Q (and angle) without the number (WriteSpectrumID=False)
            number, q = None, pending_q
            if _INT.match(ln.tokens[0]):
                number = int(ln.tokens[0])
                if len(ln.tokens) == 2:
                    q = ln.values[1]
            else:
                q = ln.values[0]
            current = {"number": number, "rows": [], "closing": None, "q": q,
                       "line": ln.number}
            pending_q = None
            blocks.append(current)
            continue
        if len(ln.tokens) == 1:
            if current is not None and current["rows"] and current["closing"] is None:
                current["closing"] = ln.values[0]
            else:
                raise InputError(f"{path}: line {ln.number}: a single value {ln.tokens[0]!r} that "
                                 f"is neither a spectrum number nor a closing bin edge")
            continue
        if current is not None and current["closing"] is not None:
            raise InputError(f"{path}: line {ln.number}: data after the closing bin edge of "
                             f"spectrum {current['number']}")
        if current is None:
            current = {"number": None, "rows": [], "closing": None, "q": pending_q,
                       "line": ln.number}
            pending_q = None
            blocks.append(current)
        current["rows"].append(ln)
    out = []
    for k, b in enumerate(blocks):
        if not b["rows"]:
            raise InputError(f"{path}: line {b['line']}: spectrum {b['number']} has no rows")
        table = _table(path, b["rows"], allowed=(2, 3, 4))
        number = b["number"] if b["number"] is not None else k + 1
        e = table[:, 2] if table.shape[1] >= 3 else None
        out.append(_Column1D(f"spectrum{number}", table[:, 0], table[:, 1], e,
                             closing_x=b["closing"], number=number, q=b["q"], group=k))
    return out


def _table(path: Path, rows: list[_Line], *, allowed=None) -> np.ndarray:
    n = len(rows[0].values)
    if allowed is not None and n not in allowed:
        raise InputError(f"{path}: line {rows[0].number} has {n} columns; expected "
                         f"{' or '.join(map(str, allowed))}")
    for ln in rows:
        if len(ln.values) != n:
            raise InputError(f"{path}: line {ln.number} has {len(ln.values)} columns where the "
                             f"rows before have {n}")
    return np.array([ln.values for ln in rows], dtype=float)


def _column_roles(path: Path, header: _Line | None, ncols: int) -> list[tuple[int, int | None]]:
    """(y column, e column) of each spectrum: from Mantid's ``X , Y0 , E0 , ...`` header if
    there is one, else x, y[, e] for 2-3 columns and x followed by (y, e) pairs for 5, 7, ..."""
    if header is not None:
        # newer SaveAscii2 headers end with a flag, "# X , Y , E Distribution=false"
        names = [t for t in _SPLIT.split(header.text.strip().lstrip("#").strip())
                 if t and "=" not in t]
        roles, y_col = [], None
        for col, name in enumerate(names[1:], start=1):
            upper = name.upper()
            if re.fullmatch(r"Y\d*", upper):
                if y_col is not None:
                    roles.append((y_col, None))
                y_col = col
            elif re.fullmatch(r"E\d*|Y\d*_ERROR", upper) and y_col is not None:
                roles.append((y_col, col))
                y_col = None
        if y_col is not None:
            roles.append((y_col, None))
        if len(names) != ncols or not roles:
            raise InputError(f"{path}: line {header.number}: the header names {len(names)} "
                             f"columns but the rows have {ncols}")
        return roles
    if ncols in (2, 3):
        return [(1, 2 if ncols == 3 else None)]
    if ncols >= 5 and ncols % 2 == 1:
        return [(c, c + 1) for c in range(1, ncols, 2)]
    raise InputError(f"{path}: {ncols} columns without a Mantid 'X , Y0 , E0 , ...' header; "
                     f"expected x, y[, e] or x followed by (y, e) pairs")


def _parse_columns(path: Path, body: list[_Line], header: _Line | None) -> list[_Column1D]:
    """One table: x then spectra as columns (SaveAscii v1, ISIS .dat); a last row holding x
    alone is the closing bin edge."""
    rows = [ln for ln in body if ln.kind == "numeric"]
    closing = None
    if len(rows) > 1 and len(rows[-1].values) == 1 and len(rows[0].values) > 1:
        closing, rows = rows[-1].values[0], rows[:-1]
    ncols = len(rows[0].values)
    table = _table(path, rows)
    roles = _column_roles(path, header, ncols)
    x = table[:, 0]
    _check_x_column(path, rows, x)
    return [_Column1D(f"spectrum{k + 1}", x, table[:, yc], None if ec is None else table[:, ec],
                      closing_x=closing, number=k + 1) for k, (yc, ec) in enumerate(roles)]


def _check_x_column(path: Path, rows: list[_Line], x: np.ndarray) -> None:
    """The energies of a table are finite and each appears once: a value met again is a table
    of S(Q,E) as rows (Q, E, I), which a spectrum's columns would silently scramble."""
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise InputError(f"{path}: line {rows[bad[0]].number}: the energy {x[bad[0]]} is not a "
                         f"finite number")
    order = np.argsort(x, kind="stable")
    same = np.flatnonzero(np.diff(x[order]) == 0)
    if len(same):
        a, b = sorted((order[same[0]], order[same[0] + 1]))
        raise InputError(f"{path}: the first column repeats {x[a]:g} (lines {rows[a].number} and "
                         f"{rows[b].number}): not one energy per row; a table of Q, E, I rows "
                         f"(S(Q,E)) is read from NXSPE, Mantid processed NeXus or SaveAscii v2 "
                         f"blocks (one per Q)")


def _check_column(path: Path, col: _Column1D) -> None:
    """A spectrum's energies are finite and distinct, and its errors are not negative or
    infinite (NaN: no error known, as `export` writes for a spectrum without one)."""
    where = f"{path}: {col.label}"
    if not np.all(np.isfinite(col.x)):
        raise InputError(f"{where}: an energy that is not a finite number "
                         f"({col.x[~np.isfinite(col.x)][0]})")
    if len(np.unique(col.x)) != len(col.x):
        raise InputError(f"{where}: an energy appears twice; not one energy per row")
    if col.e is not None:
        bad = np.isinf(col.e) | (col.e < 0)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where}: the error {col.e[k]} at x = {col.x[k]:g} is negative "
                             f"or infinite")


def _float_or_error(path: Path, ln: _Line, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{path}: line {ln.number}: {text!r} is not a number") from None


def _text_energy_unit(path: Path, lines, header, unit) -> tuple[str, str]:
    """(unit, where it came from): unit= first, then an explicit "X unit:" comment, then one
    unit named in the header or comment lines; none, an unknown or an ambiguous one is refused.
    A unit= that contradicts a unit the file names is refused too (one of them is wrong)."""
    if unit is not None:
        given = _check_unit(unit, f"{path}: unit=")
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # a guess is not the file's word
                named, where = _text_energy_unit(path, lines, header, None)
        except InputError:
            return given, "unit= keyword"
        if named != given and not where.endswith("(guessed)"):
            raise InputError(f"{path}: --measured-unit {given} (unit= in Python) contradicts "
                             f"the file, whose {where} says {named}; drop the option or correct "
                             f"the file")
        return given, "unit= keyword"
    in_header = {ln.number for ln in header}
    texts = [ln for ln in lines if ln.kind == "comment" or ln.number in in_header]
    for ln in texts:
        m = _UNIT_DECL.match(ln.text)
        if m and not _Y_UNIT_DECL.match(ln.text):
            found = energy_unit(m.group(1))
            if found is None:
                raise InputError(f"{path}: line {ln.number}: energy unit {m.group(1)!r} is not "
                                 f"meV, µeV, cm-1 or THz; give the unit (--measured-unit, unit= in "
                                 f"Python)")
            return found, f"line {ln.number}"
    if header:       # the column header just above the data, naming the unit of its first
        first = re.split(r"\s*[,;\t]\s*|\s{2,}", header[-1].text.strip().lstrip("#").strip())[0]
        if energy_unit(first):
            return energy_unit(first), f"line {header[-1].number}"
    seen = {}
    for ln in texts:
        if _Y_UNIT_DECL.match(ln.text) or _Q_DECL.match(ln.text):
            continue
        for u, pattern in _UNIT_PATTERNS.items():
            if pattern.search(ln.text):
                seen.setdefault(u, ln.number)
    if len(seen) == 1:
        # a unit named in passing (a comment about the resolution, say) may not be the x
        # column's: taken, and said, so that a wrong guess shows
        (u, number), = seen.items()
        import warnings

        text = next(ln.text.strip() for ln in texts if ln.number == number)
        warnings.warn(f"{path}: energy unit {u} taken from line {number} ({text[:60]!r}), "
                      f"which does not declare the x column's unit; if the energies are in "
                      f"another unit, give it (--measured-unit, unit= in Python)", stacklevel=4)
        return u, f"line {number} (guessed)"
    if len(seen) > 1:
        named = ", ".join(f"{u} (line {n})" for u, n in seen.items())
        raise InputError(f"{path}: the header names several energy units: {named}; give the "
                         f"unit (--measured-unit, unit= in Python)")
    raise InputError(f"{path}: no energy unit in the file (Mantid ASCII carries none unless a "
                     f"comment such as '# X unit: meV' names it); give the unit (--measured-unit "
                     f"meV|ueV|cm-1|THz, unit= in Python)")


def _declared_y_units(lines) -> str:
    for ln in lines:
        if ln.kind == "comment":
            m = _Y_UNIT_DECL.match(ln.text)
            if m:
                return m.group(1)
    return "arb. units"


def _edge_rule(path: Path, cols: list[_Column1D], x_edges: bool | None,
               fmt: str = "") -> str:
    """How the x rows of columns sharing one table are read: "closing" (an x-only last row),
    "zero" (the last row, y = e = 0 in every column, is the closing edge) or "points".

    Unasked (``x_edges`` None), a last row of zeros after one that is not is read as the
    closing edge only in Mantid's SaveAscii v1 layout, which writes histograms that way; in
    other files (SaveAscii2 writes bin centres, and so does `mlff-ins export`) it is a point,
    an empty last bin, with a warning that says how to read it as an edge."""
    if cols[0].closing_x is not None:
        if x_edges is False:
            raise InputError(f"{path}: {cols[0].label} ends with a row holding x only, a closing "
                             f"bin edge; x_edges=False cannot apply")
        return "closing"
    if x_edges is False or len(cols[0].y) < 3:
        return "points"

    def zero_row(col, i):
        return col.y[i] == 0 and (col.e is None or col.e[i] == 0)

    last_zero = all(zero_row(c, -1) for c in cols)
    if x_edges is True:
        if not last_zero:
            raise InputError(f"{path}: {cols[0].label}: x_edges=True but the last row carries "
                             f"data; it is not a closing bin edge")
        return "zero"
    if not last_zero or all(zero_row(c, -2) for c in cols):
        return "points"
    # Mantid's SaveAscii (v1 and v2) writes one row per bin at its centre (the workspace's
    # points), never a closing edge: an empty last row is an empty last bin unless told
    import warnings

    warnings.warn(f"{path}: {cols[0].label}: the last row has y = e = 0 after data; read as an "
                  f"empty last bin at its own x (if it is a closing bin edge: compare "
                  f"--measured-x edges, x_edges=True in Python)", stacklevel=4)
    return "points"


_EDGE_NOTES = {"closing": "edges (last row x only)",
               "zero": "edges (last row with y = e = 0 read as the closing edge; x_edges=False "
                       "keeps it as a point)",
               "points": "centres"}


def _to_centres(col: _Column1D, rule: str) -> tuple:
    """(x, y, e) with x at bin centres when the column came with bin edges."""
    if rule == "closing":
        return _centres(np.append(col.x, col.closing_x)), col.y, col.e
    if rule == "zero":
        return _centres(col.x), col.y[:-1], None if col.e is None else col.e[:-1]
    return col.x, col.y, col.e


def _select_banks(path: Path, labels: list[str], bank) -> tuple[list[int], str]:
    """Indices of the spectra to return, and a note for the provenance."""
    n = len(labels)
    names = VISION_BANKS if n == 3 else ()
    if bank is None:
        if n == 3:
            return [2], "average (default: the last of 3 spectra, VISION's average bank)"
        return list(range(n)), "all"
    if isinstance(bank, str):
        key = bank.strip().lower()
        if key == "all":
            return list(range(n)), "all"
        if key in names:
            return [names.index(key)], key
        if key in [lb.lower() for lb in labels]:
            return [[lb.lower() for lb in labels].index(key)], key
        choices = ", ".join(list(names) + labels + ["all"])
        raise InputError(f"{path}: no bank {bank!r}; this file has {n} spectra ({choices})")
    index = int(bank)
    if not -n <= index < n:
        raise InputError(f"{path}: bank {index} is out of range; this file has {n} spectra "
                         f"(0..{n - 1})")
    index %= n
    return [index], names[index] if names else labels[index]


def _text_spectra(path, fmt, columns, *, bank, x_edges, unit, unit_source, y_units):
    for col in columns:
        _check_column(path, col)
    rules = {}
    for g in sorted({c.group for c in columns}):
        rules[g] = _edge_rule(path, [c for c in columns if c.group == g], x_edges, fmt)
    converted = []
    for col in columns:
        x, y, e = _to_centres(col, rules[col.group])
        converted.append((col, energy_to_meV(x, unit), y, e, _EDGE_NOTES[rules[col.group]]))
    base = {"format": fmt, "energy_unit_in_file": unit, "energy_unit_from": unit_source}
    if all(col.q is not None for col in columns):
        return {"sqe": _text_sqe(path, converted, bank, base, y_units)}
    labels = [VISION_BANKS[k] if len(columns) == 3 else col.label
              for k, col in enumerate(columns)]
    chosen, note = _select_banks(path, labels, bank)
    out = {}
    for k in chosen:
        col, x, y, e, how = converted[k]
        prov = {**base, "bank": labels[k], "bank_choice": note, "bank_index": k,
                "spectrum_number": col.number, "n_spectra_in_file": len(columns), "x_bins": how}
        name = "s_e" if len(chosen) == 1 else f"s_e_{labels[k]}"
        out[name] = _measured_1d(x, y, e, y_units, "", prov)
    return out


def _text_sqe(path, converted, bank, base, y_units) -> Spectrum2D:
    """Blocks that each carry a "# Q = ..." comment (export_mantid_ascii of S(Q,E))."""
    if bank is not None:
        raise InputError(f"{path}: bank= selects among 1D spectra; this file holds S(Q,E) "
                         f"(one block per |Q|)")
    x0 = converted[0][1]
    for col, x, *_ in converted[1:]:
        if len(x) != len(x0) or not np.allclose(x, x0, rtol=1e-12, atol=0):
            raise InputError(f"{path}: the blocks of S(Q,E) have different energy axes "
                             f"({col.label})")
    q = np.array([c[0].q for c in converted])
    intensity = np.array([c[2] for c in converted])
    std = np.array([c[3] if c[3] is not None else np.full(len(x0), np.nan) for c in converted])
    prov = {**base, "bank": None, "x_bins": converted[0][4], "n_spectra_in_file": len(q)}
    return _measured_2d(q, x0, intensity, std, y_units, "", prov)


# ---------------------------------------------------------------------------------------------
# HDF5 formats: NXSPE, Mantid processed NeXus, Mantid MDHisto
# ---------------------------------------------------------------------------------------------


def _read_hdf5(path: Path, *, bank, q_edges, max_bytes=None) -> dict[str, Spectrum]:
    import h5py

    from mlff_ins.hdf5_files import MAX_DATASET_BYTES, open_self_contained

    with open_self_contained(path, max_bytes or MAX_DATASET_BYTES) as f:
        nxspe = [name for name, g in f.items() if isinstance(g, h5py.Group)
                 and isinstance(g.get("definition"), h5py.Dataset)
                 and _text(g["definition"][()]).strip().upper() == "NXSPE"]
        if nxspe:
            _no_bank(path, bank, "NXSPE")
            return {("sqe" if len(nxspe) == 1 else f"sqe_{e}"): _read_nxspe(path, f[e], q_edges)
                    for e in nxspe}
        if q_edges is not None:
            raise InputError(f"{path}: q_edges applies to NXSPE files only")
        if "MDHistoWorkspace" in f:
            _no_bank(path, bank, "an MDHistoWorkspace")
            return _read_mdhisto(path, f["MDHistoWorkspace"])
        entries = sorted((n for n in f if re.fullmatch(r"mantid_workspace_\d+", n)),
                         key=lambda n: int(n.rsplit("_", 1)[1]))
        if entries:
            return _read_processed(path, f, entries, bank)
    raise InputError(f"{path}: an HDF5 file with no NXSPE entry (definition 'NXSPE'), no "
                     f"mantid_workspace_N entry and no MDHistoWorkspace")


def _no_bank(path: Path, bank, what: str) -> None:
    if bank is not None:
        raise InputError(f"{path}: bank= selects among 1D spectra; {what} holds S(Q,E)")


def _text(value) -> str:
    """Text of an HDF5 scalar, 1-element array or attribute, bytes or str."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    return value.decode(errors="replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _dataset(path: Path, group, name: str, where: str):
    import h5py

    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{path}: {where} lacks the dataset {name!r}")
    return obj


def _attr(obj, name: str, default: str = "") -> str:
    # NeXus writes C strings with their terminating NUL (NexusFileIO's "1"/"0" flags)
    return _text(obj.attrs[name]).strip("\x00 \t\r\n") if name in obj.attrs else default


# --- NXSPE -----------------------------------------------------------------------------------


def pixel_q(ei_meV: float, energy_meV, two_theta_deg) -> np.ndarray:
    """|Q| (1/Å) of a pixel at scattering angle 2θ for energy transfer E, direct geometry.

    k_i = √(E_i/c), k_f = √((E_i − E)/c) with c = ħ²/2m_n = :data:`E_PER_K2` (meV Å²), and
    Q² = k_i² + k_f² − 2 k_i k_f cos 2θ; NaN where E ≥ E_i. Arrays broadcast.
    """
    e = np.asarray(energy_meV, dtype=float)
    ki = np.sqrt(ei_meV / E_PER_K2)
    with np.errstate(invalid="ignore"):
        kf = np.sqrt(np.where(e < ei_meV, ei_meV - e, np.nan) / E_PER_K2)
        q2 = ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(two_theta_deg))
    return np.sqrt(np.clip(q2, 0.0, None))


def powder_sqe(signal, error, energy_edges_meV, polar_deg, ei_meV: float, q_edges=None):
    """Powder S(|Q|, E) from the pixels of a direct-geometry spectrometer.

    Parameters
    ----------
    signal, error : (ndet, nE) arrays
        Intensity and its standard deviation per detector and energy bin; NaN signal = masked.
    energy_edges_meV : (nE + 1,) array
        Energy-transfer bin edges (meV).
    polar_deg : (ndet,) array
        Scattering angle 2θ of each detector (degrees).
    ei_meV : float
        Incident energy (meV).
    q_edges : array-like or None
        |Q| bin edges (1/Å); default 100 equal bins from 0 to the largest pixel |Q|.

    Returns
    -------
    q_centres (nQ,), energy_centres (nE',), intensity (nQ, nE'), std (nQ, nE'), q_edges
        Energy bins with centre E < E_i only. Each (Q, E) bin holds the mean of the pixels whose
        |Q| at the bin's centre energy falls in it, with σ = √(Σ σ²)/n; NaN where none falls.
    """
    signal = np.array(signal, dtype=float)
    # older Mantid SaveNXSPE wrote masked pixels as -1e30 (MASK_FLAG), newer ones as NaN
    signal[signal <= NXSPE_MASK_FLAG] = np.nan
    error = np.asarray(error, dtype=float)
    polar = np.asarray(polar_deg, dtype=float)
    e_centres = _centres(energy_edges_meV)
    keep = e_centres < ei_meV
    e_centres, signal, error = e_centres[keep], signal[:, keep], error[:, keep]
    if q_edges is None:
        # the largest |Q| of any unmasked pixel at any kept energy
        q_max = max((float(np.max(pixel_q(ei_meV, e, polar[np.isfinite(signal[:, j])])))
                     for j, e in enumerate(e_centres) if np.isfinite(signal[:, j]).any()),
                    default=1.0)
        q_edges = np.linspace(0.0, q_max, 101)
    q_edges = np.asarray(q_edges, dtype=float)
    nq, ne = len(q_edges) - 1, len(e_centres)
    count, total, var = np.zeros((nq, ne)), np.zeros((nq, ne)), np.zeros((nq, ne))
    for j, e in enumerate(e_centres):  # one energy bin at a time keeps memory at O(ndet)
        q = pixel_q(ei_meV, e, polar)
        iq = np.searchsorted(q_edges, q, side="right") - 1
        iq[q == q_edges[-1]] = nq - 1  # the last edge belongs to the last bin
        ok = np.isfinite(signal[:, j]) & (iq >= 0) & (iq < nq)
        count[:, j] = np.bincount(iq[ok], minlength=nq)
        total[:, j] = np.bincount(iq[ok], weights=signal[ok, j], minlength=nq)
        var[:, j] = np.bincount(iq[ok], weights=error[ok, j] ** 2, minlength=nq)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        std = np.where(count > 0, np.sqrt(var) / count, np.nan)
    return _centres(q_edges), e_centres, mean, std, q_edges


#: at or below this, an NXSPE signal value is the mask flag of older Mantid versions (-1e30)
NXSPE_MASK_FLAG = -1e29


def _check_q_edges(path: Path, q_edges) -> np.ndarray | None:
    if q_edges is None:
        return None
    edges = np.asarray(q_edges, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.diff(edges) > 0) or edges[0] < 0:
        raise InputError(f"{path}: q_edges must be at least two increasing |Q| values ≥ 0 (1/Å)")
    return edges


def _read_nxspe(path: Path, entry, q_edges) -> Spectrum2D:
    where = f"NXSPE entry {entry.name.strip('/')}"
    data = entry.get("data")
    info = entry.get("NXSPE_info")
    if data is None or info is None:
        raise InputError(f"{path}: {where} lacks the group 'data' or 'NXSPE_info'")
    signal = _dataset(path, data, "data", f"{where}/data")[()]
    error = _dataset(path, data, "error", f"{where}/data")[()]
    energy_ds = _dataset(path, data, "energy", f"{where}/data")
    polar = np.asarray(_dataset(path, data, "polar", f"{where}/data")[()], dtype=float).ravel()
    ei_ds = _dataset(path, info, "fixed_energy", f"{where}/NXSPE_info")
    if signal.ndim != 2 or error.shape != signal.shape:
        raise InputError(f"{path}: {where}/data/data and error must be equal [ndet, nE] arrays, "
                         f"not {signal.shape} and {error.shape}")
    ndet, ne = signal.shape
    energy = _hdf5_energy(path, energy_ds, f"{where}/data/energy")
    if len(energy) != ne + 1:
        raise InputError(f"{path}: {where}/data/energy has {len(energy)} values for {ne} energy "
                         f"bins (expected {ne + 1} bin edges)")
    if len(polar) != ndet:
        raise InputError(f"{path}: {where}/data/polar has {len(polar)} angles for {ndet} detectors")
    ei = np.asarray(_hdf5_energy(path, ei_ds, f"{where}/NXSPE_info/fixed_energy")).ravel()
    if ei.size != 1 or not np.isfinite(ei[0]) or ei[0] <= 0:
        raise InputError(f"{path}: {where}/NXSPE_info/fixed_energy must be one positive incident "
                         f"energy (direct geometry), not {ei.tolist()}")
    signal = np.array(signal, dtype=float)
    signal[signal <= NXSPE_MASK_FLAG] = np.nan      # the mask flag of older SaveNXSPE
    masked = np.all(~np.isfinite(signal), axis=1)
    if masked.all():
        raise InputError(f"{path}: {where}: every detector is masked (NaN or -1e30)")
    edges = _check_q_edges(path, q_edges)
    q, e, intensity, std, edges = powder_sqe(signal[~masked], error[~masked], energy,
                                             polar[~masked], float(ei[0]), edges)
    instrument = entry.get("instrument/name")
    prov = {"format": "nxspe", "entry": entry.name.strip("/"), "bank": None,
            "ei_meV": float(ei[0]), "n_detectors": int(ndet),
            "n_detectors_masked": int(masked.sum()),
            "q_bins_invA": {"min": float(edges[0]), "max": float(edges[-1]), "n": len(edges) - 1},
            "q_from": f"Q^2 = ki^2 + kf^2 - 2 ki kf cos(2theta), E = {E_PER_K2} k^2 (meV, 1/A)",
            "binning": "mean of pixels per (|Q|, E) bin; std = sqrt(sum sigma^2)/n"}
    units = _attr(data["data"], "units") or "arb. units"
    return _measured_2d(q, e, intensity, std, units,
                        "" if instrument is None else _text(instrument[()]).lower(), prov)


def _hdf5_energy(path: Path, ds, where: str) -> np.ndarray:
    """A dataset of energies in meV, converting from its ``units`` attribute when it has one."""
    values = np.asarray(ds[()], dtype=float)
    units = _attr(ds, "units")
    if not units:
        return values
    found = energy_unit(units)
    if found is None:
        raise InputError(f"{path}: {where} has units {units!r}, not an energy transfer in meV, "
                         f"µeV, cm-1 or THz")
    return energy_to_meV(values, found)


# --- Mantid processed NeXus ------------------------------------------------------------------


#: Mantid unit IDs of an energy-transfer axis (Kernel/Unit.h): DeltaE in meV and in cm⁻¹
_MANTID_ENERGY_IDS = {"deltae": "meV", "deltae_inwavenumber": "cm-1"}


def _mantid_axis_kind(units: str) -> str:
    u = units.strip().lower()
    if u in _MANTID_ENERGY_IDS:
        return "energy"
    if _Q_UNIT.match(units):
        return "q"
    if u in ("spectranumber", "", "empty", "textaxis"):
        return "spectra"
    return "other"


def _read_processed(path: Path, f, entries: list[str], bank) -> dict[str, Spectrum]:
    """SaveNexusProcessed layout (Mantid Framework/Nexus NexusFileIO::writeNexusProcessedData2D):
    ``<entry>/workspace/values`` and ``errors`` [nHist, nBins], ``axis1`` (x, bin edges or points,
    ``units`` = unit ID) and ``axis2`` (the spectrum axis: |Q| for SofQW, or spectrum numbers)."""
    out: dict[str, Spectrum] = {}
    for entry in entries:
        ws = f[entry].get("workspace")
        if ws is None or "values" not in ws:
            raise InputError(f"{path}: {entry} lacks workspace/values (not a MatrixWorkspace)")
        for name, sp in _read_workspace(path, f[entry], ws, bank).items():
            out[name if len(entries) == 1 else f"{name}_{entry}"] = sp
    return out


def _read_workspace(path: Path, entry, ws, bank) -> dict[str, Spectrum]:
    where = f"{entry.name.strip('/')}/workspace"
    values = np.asarray(_dataset(path, ws, "values", where)[()], dtype=float)
    errors = np.asarray(_dataset(path, ws, "errors", where)[()], dtype=float)
    axes = {a: _dataset(path, ws, a, where) for a in ("axis1", "axis2")}
    if values.ndim != 2 or errors.shape != values.shape:
        raise InputError(f"{path}: {where}/values and errors must be equal [nHist, nBins] arrays, "
                         f"not {values.shape} and {errors.shape}")
    values, errors, note = _undo_fractional_area(path, ws, where, values, errors)
    units = {a: _attr(ds, "units") for a, ds in axes.items()}
    kinds = {a: _mantid_axis_kind(u) for a, u in units.items()}
    x_name, s_name = "axis1", "axis2"
    if kinds["axis1"] == "q" and kinds["axis2"] == "energy":  # transposed: rows are energies
        values, errors, x_name, s_name = values.T, errors.T, "axis2", "axis1"
    if kinds[x_name] != "energy":
        raise InputError(f"{path}: {where}/{x_name} has units {units[x_name]!r}; expected an "
                         f"energy transfer (DeltaE in meV or DeltaE_inWavenumber in cm-1)")
    unit = _MANTID_ENERGY_IDS[units[x_name].lower()]
    x = _numeric_axis(path, axes[x_name], f"{where}/{x_name}")
    energy = energy_to_meV(_axis_centres(path, x, values.shape[1], f"{where}/{x_name}"), unit)
    dist_note = {}
    if x_name == "axis1":  # Mantid's distribution flag is about the X (axis1) bins
        values, errors, dist_note = _to_distribution(path, axes["axis1"], x, unit, values, errors)
    base = {"format": "mantid_nexus_processed", "entry": entry.name.strip("/"),
            "energy_unit_in_file": unit, **note, **dist_note}
    y_units = _attr(ws["values"], "units") or "arb. units"
    if dist_note.get("divided_by_bin_width"):      # counts per bin became counts per meV
        y_units = f"{y_units} per meV"
    instrument = entry.get("instrument/name")
    instrument = "" if instrument is None else _text(instrument[()]).lower()
    if kinds[s_name] == "q":
        _no_bank(path, bank, "this SofQW workspace")
        q = _axis_centres(path, _numeric_axis(path, axes[s_name], f"{where}/{s_name}"),
                          values.shape[0], f"{where}/{s_name}")
        return {"sqe": _measured_2d(q, energy, values, errors, y_units, instrument,
                                    {**base, "bank": None})}
    if kinds[s_name] != "spectra":
        raise InputError(f"{path}: {where}/{s_name} has units {units[s_name]!r}; expected "
                         f"MomentumTransfer (|Q|) or spectrum numbers")
    spectrum_axis = axes[s_name][()]
    numbers = ([int(v) for v in np.ravel(spectrum_axis)]
               if axes[s_name].dtype.kind in "fiu" and np.size(spectrum_axis) == len(values)
               else list(range(1, len(values) + 1)))
    labels = [VISION_BANKS[k] if len(values) == 3 else f"spectrum{n}"
              for k, n in enumerate(numbers)]
    chosen, choice = _select_banks(path, labels, bank)
    out = {}
    for k in chosen:
        prov = {**base, "bank": labels[k], "bank_choice": choice, "bank_index": k,
                "spectrum_number": numbers[k], "n_spectra_in_file": len(values)}
        out["s_e" if len(chosen) == 1 else f"s_e_{labels[k]}"] = _measured_1d(
            energy, values[k], errors[k], y_units, instrument, prov)
    return out


def _to_distribution(path: Path, axis1, x, unit: str, values, errors):
    """Counts per bin to counts per meV, as Mantid's ConvertToDistribution does.

    NexusFileIO writes ``distribution`` ("1"/"0") on axis1: "0" means each value is the content
    of its energy bin, not a density. Comparing such data on uneven bins (log or wavenumber
    binning) with a calculated S(E) per meV distorts the shape, so histogram data flagged "0"
    are divided by their energy-bin widths in meV (errors too). Point data cannot be converted
    and are kept as stored (noted); no flag, or "1", keeps the data as stored."""
    flag = _flag(_attr(axis1, "distribution"))
    if flag is None or flag:
        return values, errors, {"distribution_in_file": flag}
    n = values.shape[1]
    if len(x) != n + 1:
        return values, errors, {"distribution_in_file": False,
                                "divided_by_bin_width": False,
                                "distribution_note": "counts per bin on point data: kept as "
                                                     "stored (no bin widths to divide by)"}
    width = np.abs(np.diff(energy_to_meV(x, unit)))
    if not np.all(width > 0):
        raise InputError(f"{path}: energy bins of zero width; cannot convert counts per bin to "
                         f"a distribution")
    return values / width, errors / width, {"distribution_in_file": False,
                                            "divided_by_bin_width": True}


def _numeric_axis(path: Path, ds, where: str) -> np.ndarray:
    if ds.dtype.kind not in "fiu":
        raise InputError(f"{path}: {where} is not numeric")
    axis = np.asarray(ds[()], dtype=float)
    if axis.ndim == 2:  # one x row per spectrum: accepted when all rows agree
        if not np.allclose(axis, axis[:1], equal_nan=True):
            raise InputError(f"{path}: {where} differs between spectra (ragged bins)")
        axis = axis[0]
    return axis.ravel()


def _axis_centres(path: Path, axis, n: int, where: str) -> np.ndarray:
    axis = np.asarray(axis, dtype=float)
    if len(axis) == n + 1:
        return _centres(axis)
    if len(axis) == n:
        return axis
    raise InputError(f"{path}: {where} has {len(axis)} values for {n} bins "
                     f"(expected {n + 1} edges or {n} points)")


def _flag(text: str) -> bool | None:
    t = text.strip().lower()
    if t in ("1", "true", "yes"):
        return True
    if t in ("0", "false", "no"):
        return False
    return None


def _undo_fractional_area(path, ws, where, values, errors):
    """RebinnedOutput (SofQWNormalisedPolygon): Mantid keeps the counts and the fractional area
    apart; unless the workspace was saved "finalized" the data are values / frac_area. Mantid
    writes the ``finalized`` and ``sqrd_errors`` flags ("1"/"0") on ``frac_area``; where they are
    absent its LoadNexusProcessed takes finalized = true and sqrd_errors = false (followed here).
    With squared errors the errors array holds variances, divided by frac_area² when finalizing.
    """
    if "frac_area" not in ws:
        return values, errors, {"rebinned_output": False}
    frac = np.asarray(ws["frac_area"][()], dtype=float)
    if frac.shape != values.shape:
        raise InputError(f"{path}: {where}/frac_area has shape {frac.shape}, values {values.shape}")
    holders = (ws["frac_area"], ws["values"], ws)
    finalized = next((_flag(_attr(h, "finalized")) for h in holders
                      if _flag(_attr(h, "finalized")) is not None), None)
    squared = next((_flag(_attr(h, "sqrd_errors")) for h in holders
                    if _flag(_attr(h, "sqrd_errors")) is not None), None)
    note = {"rebinned_output": True, "finalized_in_file": finalized,
            "squared_errors_in_file": bool(squared)}
    if finalized is None:
        finalized = True
        note["finalized_assumed"] = "no 'finalized' flag: taken as finalized, as Mantid does"
    with np.errstate(invalid="ignore", divide="ignore"):
        if finalized:
            std = np.sqrt(errors) if squared else errors
            note["frac_area_divided"] = False
            return values, std, note
        good = frac > 0
        y = np.where(good, values / np.where(good, frac, 1.0), np.nan)
        if squared:
            std = np.where(good, np.sqrt(np.clip(errors, 0, None)) / np.where(good, frac, 1.0),
                           np.nan)
        else:
            std = np.where(good, errors / np.where(good, frac, 1.0), np.nan)
    note["frac_area_divided"] = True
    return y, std, note


# --- Mantid MDHistoWorkspace -----------------------------------------------------------------


def _read_mdhisto(path: Path, root) -> dict[str, Spectrum]:
    """SaveMD version 2 (Mantid Framework/MDAlgorithms/src/SaveMD2.cpp, ``doSaveHisto``): group
    ``MDHistoWorkspace/data`` holds one dataset per dimension, named by the dimension id, with the
    nbins+1 bin boundaries and ``units``/``long_name`` attributes, and ``signal``,
    ``errors_squared`` (variances), ``num_events`` and ``mask`` of shape (n_{D−1}, …, n_0): the
    dimensions in reverse order ("C style order, so z,y,x"). ``signal`` has the attribute
    ``axes`` = "id_{D−1}:…:id_0", the ids in the array's axis order. The signal is returned as
    stored (no division by num_events); masked bins (mask ≠ 0) become NaN."""
    where = "MDHistoWorkspace/data"
    data = root.get("data")
    if data is None:
        raise InputError(f"{path}: MDHistoWorkspace lacks the group 'data'")
    signal = np.asarray(_dataset(path, data, "signal", where)[()], dtype=float)
    var = np.asarray(_dataset(path, data, "errors_squared", where)[()], dtype=float)
    if var.shape != signal.shape:
        raise InputError(f"{path}: {where}/errors_squared has shape {var.shape}, signal "
                         f"{signal.shape}")
    if "mask" in data:
        mask = np.asarray(data["mask"][()]) != 0
        if mask.shape != signal.shape:
            raise InputError(f"{path}: {where}/mask has shape {mask.shape}, signal {signal.shape}")
        signal, var = np.where(mask, np.nan, signal), np.where(mask, np.nan, var)
    dims = _md_dimensions(path, data, signal.shape)
    keep = [k for k, (_, edges, _) in enumerate(dims) if len(edges) > 2]
    kinds = []
    for k in keep:
        name, _, units = dims[k]
        kind = "energy" if (name.lower() == "deltae" or energy_unit(units)) else (
            "q" if (name in ("|Q|", "Q", "|Q| (1/Angstrom)") or _Q_UNIT.match(units)) else None)
        if kind is None:
            raise InputError(f"{path}: {where}: dimension {name!r} (units {units!r}) is neither "
                             f"|Q| nor energy transfer; integrate it out first")
        kinds.append(kind)
    if sorted(kinds) not in (["energy"], ["energy", "q"]):
        raise InputError(f"{path}: {where}: expected |Q| and energy transfer (or energy alone) as "
                         f"the binned dimensions, found {[dims[k][0] for k in keep]}")
    integrated = tuple(k for k in range(signal.ndim) if k not in keep)
    signal, var = signal.sum(axis=integrated), var.sum(axis=integrated)  # size-1 axes only
    e_axis = keep[kinds.index("energy")]
    e_name, e_edges, e_units = dims[e_axis]
    unit = energy_unit(e_units)
    if unit is None:  # ConvertToMD labels DeltaE "meV"; anything else is not guessed
        raise InputError(f"{path}: {where}/{e_name} has units {e_units!r}, not meV, "
                         f"µeV, cm-1 or THz")
    energy = energy_to_meV(_centres(e_edges), unit)
    prov = {"format": "mantid_mdhisto", "bank": None, "energy_unit_in_file": unit,
            "dimensions_in_array_order": [d[0] for d in dims]}
    std = np.sqrt(var)
    if kinds == ["energy"]:
        return {"s_e": _measured_1d(energy, signal, std, "arb. units", "", prov)}
    q_axis = keep[kinds.index("q")]
    if keep.index(q_axis) > keep.index(e_axis):  # arrays come (E, Q): make them (Q, E)
        signal, std = signal.T, std.T
    q = _centres(dims[q_axis][1])
    return {"sqe": _measured_2d(q, energy, signal, std, "arb. units", "", prov)}


def _md_dimensions(path: Path, data, shape) -> list[tuple[str, np.ndarray, str]]:
    """(id, bin boundaries, units) for each axis of the signal array, in array order."""
    import h5py

    axes = _attr(data["signal"], "axes")
    names = [a for a in axes.split(":") if a] if axes else []
    if names and len(names) != len(shape):
        raise InputError(f"{path}: MDHistoWorkspace/data/signal has {len(shape)} axes but its "
                         f"'axes' attribute names {len(names)}: {axes!r}")
    if not names:  # no axes attribute: match each array axis to the one dataset of n+1 edges
        candidates = {n: d for n, d in data.items() if isinstance(d, h5py.Dataset)
                      and n not in ("signal", "errors_squared", "num_events", "mask")
                      and d.ndim == 1}
        for n_bins in shape:
            fits = [n for n, d in candidates.items() if len(d) == n_bins + 1 and n not in names]
            if len(fits) != 1:
                raise InputError(f"{path}: MDHistoWorkspace/data/signal has no 'axes' attribute "
                                 f"and the dimension of {n_bins} bins is ambiguous: {fits}")
            names.append(fits[0])
    dims = []
    for name, n_bins in zip(names, shape):
        ds = _dataset(path, data, name, "MDHistoWorkspace/data")
        edges = np.asarray(ds[()], dtype=float).ravel()
        if len(edges) != n_bins + 1:
            raise InputError(f"{path}: MDHistoWorkspace/data/{name} has {len(edges)} boundaries "
                             f"for {n_bins} bins")
        dims.append((name, edges, _attr(ds, "units")))
    return dims
