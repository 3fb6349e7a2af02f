"""`mlff-ins serve`: a FastAPI app with one local page, a structure in, neutron spectra out.

:func:`create_app` builds the app from :class:`Settings`. The page (``static/``: plain HTML,
JavaScript and CSS; Plotly served from the installed plotly wheel, nothing from the internet)
calls the same JSON API that scripts can use. Every bad input is answered with a 4xx status and
``{"error": "one sentence"}``, never a traceback. Uploads are parsed as data (structures with
:func:`mlff_ins.data.ingest.read_structure`, measurements with
:func:`mlff_ins.compare.readers.read_measured`; nothing is unpickled or executed) and live in a
temporary folder that is removed when the server stops, as are job results and downloads.

Endpoints (energies in the requested ``unit``: meV, ueV (µeV), cm-1 or THz; |Q| in 1/Å)

``GET /``
    The page. ``GET /static/...`` its files; ``GET /vendor/plotly.min.js`` Plotly from the
    plotly package; ``GET /docs`` FastAPI's interactive API description (that page alone
    loads Swagger UI from FastAPI's CDN when opened).
``GET /api/status``
    ``{version, predictor: {available, message, elements, instruments, two_d},
    model: {available, name}, direct: {instruments, angles_deg},
    limits: {max_atoms, max_upload_mb, max_queued}}``; ``direct.instruments`` are the
    direct-geometry choices of this server (``direct``, and the chopper spectrometers when
    ResINS is installed), ``direct.angles_deg`` the default 2θ range.
``POST /api/structure`` (multipart: ``file``; CIF, POSCAR/CONTCAR/.vasp/.poscar or
    extxyz/.xyz, the format chosen by the file's name)
    ``{id, name, formula, n_atoms, spacegroup, cell: {a_A, b_A, c_A, alpha_deg, beta_deg,
    gamma_deg, volume_A3, matrix_A}, elements, warnings}``. 413 when the file is over
    ``--max-upload-mb`` (checked while it streams in), 422 when it cannot be read, has partly
    occupied sites or more atoms than ``--max-atoms``. ``GET /api/structure/{id}`` the same.
The instrument fields (``predict``, ``compare`` and ``jobs`` take the same ones)
    ``instrument``: ``vision`` or ``tosca`` (indirect geometry), or direct geometry: ``direct``
    (a Gaussian energy resolution whose FWHM is ``resolution_fraction`` × Ei; 0, the default:
    none) or a chopper spectrometer whose resolution ResINS models (``mari``, ``maps``,
    ``merlin``, ``let``, ``sequoia``, ``arcs``, ``cncs``, ``hyspec``; optional
    ``chopper_frequency_hz``, ``chopper_package``). Direct geometry needs ``ei_meV`` (incident
    energy, meV, > 0) and takes ``angles_deg`` ``[min, max]`` (scattering angles 2θ covered,
    degrees, 0 ≤ min < max ≤ 180; default 3, 135). These are the options ``--instrument``,
    ``--ei``, ``--angles``, ``--resolution``, ``--chopper-frequency`` and ``--chopper-package``
    of ``mlff-ins ins`` and ``mlff-ins spectra``, applied with the same functions
    (:func:`mlff_ins.neutron.resolution.direct_resolution`,
    :func:`mlff_ins.neutron.kinematics.kinematic_mask`): the powder S(Q,E) is broadened with
    the instrument's energy resolution, then NaN (JSON null: not measured) outside the (|Q|, E)
    region it reaches. The direct-geometry S(E) is that masked map integrated over |Q| (see
    :func:`q_integrated`). A bad value is a 400 naming the field (a chopper setting that ResINS
    refuses: 422); direct-geometry fields with vision or tosca are refused too.
``POST /api/predict`` (JSON ``{id, instrument fields, temperature_K, unit}``)
    The direct predictor's S(E): ``{result_id, structure_id, instrument, geometry,
    temperature_K, unit, energy_label, units, spectra: {name: {x, y, std, element, kind,
    units}}, map, warnings, downloads: {h5, csv, png}}``; ``geometry`` the instrument fields as
    used, with a ``label`` and a ``key`` that tells settings apart; ``spectra`` holds ``s_e``
    (``std`` the ensemble spread) and, for VISION/TOSCA, the element partials ``s_e_<El>``;
    ``map`` is the predicted powder S(Q,E) ``{q, e, z, units}`` (``z[i][j]`` at energy ``e[i]``
    and |Q| ``q[j]``) when the predictor has a 2D part, else null; in direct geometry it is
    broadened and masked as above (409 when the predictor has no 2D part). ``warnings`` lists
    what makes the prediction doubtful (an element it never saw, neighbour distances outside
    its training range). 409 when no predictor is loaded.
``POST /api/measured`` (multipart: ``file``, optional ``unit`` = the file's energy unit, for
    Mantid ASCII files that name none)
    ``{id, name, format, spectra: [{name, dims, kind, units, energy_meV: [lo, hi],
    q_invA: [lo, hi] | null, has_errors}]}``; any format of ``read_measured``.
    ``GET /api/measured/{id}?unit=`` the data: ``{id, name, energy_label, spectra: {name:
    curve | map}}``.
``POST /api/compare`` (JSON ``{measured_id, id (structure), job_id, measured_name,
    instrument fields, temperature_K, unit, background: none|flat|linear, e_range_meV}``)
    The measurement against the prediction for structure ``id`` and/or the finished phonon job
    ``job_id``, broadened and put on the measured grid as ``mlff-ins compare`` does:
    ``{kind: s_e|sqe, unit, energy_label, resolution, pairs: [{a, b, mse, cosine,
    wasserstein_meV, peaks, fit, ...}], overlay (1D: curves, calculations scaled by their fit
    onto the measurement), maps (2D: measured, each calculation, and ``residual`` = measured −
    scaled calculation when a 2D calculation exists), notes}``. Metric keys as
    :data:`mlff_ins.compare.metrics.METRICS_DOC`.
``POST /api/jobs`` (JSON ``{id, instrument fields, temperature_K}``; needs ``--model``)
    Queues the phonon route: relax (positions and cell) -> finite-displacement phonons in a
    supercell at least 9 Å wide (at most 256 atoms) -> INS S(E) for the instrument and the
    powder S(Q,E) map (direct geometry: the map as ``mlff-ins ins --ei`` makes it, and its
    |Q| integral as S(E)). ``202 {job_id, state, position}``; 429 when ``--max-queued`` jobs are
    waiting or running; 409 without a model.
``GET /api/jobs/{job_id}?unit=``
    ``{job_id, state: queued|running|done|failed, progress (0..1), message, position, info,
    result}``; ``result`` (when done): ``{spectra, map, energy_label, supercell, formula,
    instrument, geometry, downloads}``; a failed job's ``message`` says why in one sentence.
``GET /api/download/{kind}/{id}?format=h5|csv|png&unit=&name=``
    ``kind`` ``prediction`` (``id`` a ``result_id``) or ``job`` (a ``job_id``): the spectra as
    this package's HDF5 file, as CSV (one spectrum with ``name``, else a zip of one CSV per
    spectrum) or as a PNG overview.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import shutil
import tempfile
import threading
import uuid
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlff_ins import __version__
from mlff_ins.errors import InputError
from mlff_ins.neutron.resolution import CHOPPER_INSTRUMENTS
from mlff_ins.neutron.units import ENERGY_UNITS
from mlff_ins.web.jobs import JobQueue, QueueFull

_LOG = logging.getLogger("mlff_ins.web")
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: file names the structure upload accepts, and the ASE format each is read as
#: (CIF, POSCAR and extxyz only: ASE's readers of some other formats, CASTEP's .cell among
#: them, run external programs)
STRUCTURE_SUFFIXES = {".cif": "cif", ".vasp": "vasp", ".poscar": "vasp", ".xyz": "extxyz",
                      ".extxyz": "extxyz"}
_VASP_NAMES = re.compile(r"^(POSCAR|CONTCAR)", re.IGNORECASE)
UNITS = ENERGY_UNITS
INDIRECT = ("vision", "tosca")
#: direct geometry: ``direct`` (resolution a fraction of Ei) or a chopper spectrometer (ResINS),
#: the `--instrument` choices of `mlff-ins ins` and `mlff-ins spectra`
DIRECT = ("direct", *CHOPPER_INSTRUMENTS)
INSTRUMENTS = INDIRECT + DIRECT
BACKGROUNDS = ("none", "flat", "linear")
#: the phonon job: supercell widths of at least this (Å), with at most this many atoms
JOB_SUPERCELL_A, JOB_MAX_SUPERCELL_ATOMS = 9.0, 256
#: the job's powder S(Q,E) grid: that of the predictor's database (0-15 1/Å x 0-150 meV)
JOB_TWO_D = {"q_min": 0.0, "q_max": 15.0, "q_step": 0.15, "e_max_2d_meV": 150.0,
             "e_step_2d_meV": 1.5, "n_directions": 50}
#: multipart headers and small text fields allowed around the uploaded file (bytes)
_FORM_SLACK = 64 * 1024
#: kept uploads and predictions; older ones are forgotten (and their files removed)
_KEEP = 64
_SPACEGROUP_SYMPREC_A = 1e-3


@dataclass
class Settings:
    """What ``mlff-ins serve`` was started with.

    predictor : predictor folder; None: the one shipped in the package, if any.
    model : universal model name, model bundle folder or calculator YAML for the phonon route;
        None: no "compute phonons".
    max_atoms : largest structure accepted (atoms).
    max_upload_mb : largest uploaded file (MiB).
    max_queued : most phonon jobs waiting or running at once.
    job_ins : overrides of the job's :class:`~mlff_ins.ins.from_phonons.InsOptions` fields.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    predictor: str | None = None
    model: str | None = None
    max_atoms: int = 5000
    max_upload_mb: float = 20.0
    device: str = "cpu"
    max_queued: int = 4
    job_ins: dict = field(default_factory=dict)


class Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ----------------------------------------------------------------------------- request bodies

class InstrumentFields(BaseModel):
    """The instrument and, for direct geometry, its settings (module docstring; None: unset)."""

    instrument: str = "vision"
    ei_meV: float | None = None
    angles_deg: list[float] | None = None
    resolution_fraction: float | None = None
    chopper_frequency_hz: float | None = None
    chopper_package: str | None = None


class PredictRequest(InstrumentFields):
    id: str
    temperature_K: float | None = None
    unit: str = "meV"


class CompareRequest(InstrumentFields):
    measured_id: str
    id: str | None = None
    job_id: str | None = None
    measured_name: str | None = None
    temperature_K: float | None = None
    unit: str = "meV"
    background: str = "none"
    e_range_meV: list[float] | None = None


class JobRequest(InstrumentFields):
    id: str
    temperature_K: float | None = None


@dataclass(frozen=True)
class Geometry:
    """The instrument a spectrum is computed for: VISION/TOSCA, or a direct-geometry setting.

    instrument : vision, tosca, direct or a chopper spectrometer (:data:`DIRECT`).
    ei_meV : incident energy, meV (direct geometry only).
    angles_deg : (min, max) scattering angles 2θ covered, degrees (direct geometry only).
    resolution_fraction : ``direct``: Gaussian FWHM as a fraction of Ei (0: no broadening).
    chopper_frequency_hz, chopper_package : a chopper spectrometer's settings (None: ResINS'
        defaults).
    """

    instrument: str
    ei_meV: float | None = None
    angles_deg: tuple[float, float] | None = None
    resolution_fraction: float = 0.0
    chopper_frequency_hz: float | None = None
    chopper_package: str | None = None

    @property
    def direct(self) -> bool:
        return self.instrument in DIRECT

    def resolution(self):
        """The energy resolution `mlff-ins ins --ei` applies for these settings
        (:func:`mlff_ins.neutron.resolution.direct_resolution`); None for VISION/TOSCA (the INS
        engine applies theirs) and for ``direct`` without ``resolution_fraction``."""
        from mlff_ins.neutron.resolution import direct_resolution

        if not self.direct:
            return None
        return direct_resolution(self.instrument, self.ei_meV, self.resolution_fraction,
                                 self.chopper_frequency_hz, self.chopper_package)

    def ins_options(self) -> dict:
        """The :class:`~mlff_ins.ins.from_phonons.InsOptions` fields of these settings."""
        if not self.direct:
            return {"instrument": self.instrument}
        return {"instrument": self.instrument, "ei_meV": self.ei_meV,
                "angles_deg": tuple(self.angles_deg),
                "resolution_fraction": self.resolution_fraction,
                "chopper_frequency_hz": self.chopper_frequency_hz,
                "chopper_package": self.chopper_package}

    def label(self) -> str:
        """``VISION``; ``direct geometry, Ei 50 meV, 2θ 3–135°, FWHM 0.03 Ei``; ``MARI, Ei 50
        meV, 2θ 3–135°``."""
        if not self.direct:
            return self.instrument.upper()
        lo, hi = self.angles_deg
        parts = ["direct geometry" if self.instrument == "direct" else self.instrument.upper(),
                 f"Ei {self.ei_meV:g} meV", f"2θ {lo:g}–{hi:g}°"]
        if self.resolution_fraction:
            parts.append(f"FWHM {self.resolution_fraction:g} Ei")
        if self.chopper_frequency_hz:
            parts.append(f"{self.chopper_frequency_hz:g} Hz")
        if self.chopper_package:
            parts.append(f"package {self.chopper_package}")
        return ", ".join(parts)

    def key(self) -> str:
        """A text that differs between any two settings (cache keys, the page's matching)."""
        return repr((self.instrument, self.ei_meV, self.angles_deg, self.resolution_fraction,
                     self.chopper_frequency_hz, self.chopper_package))

    def stem(self) -> str:
        """A file-name part: ``vision``, ``direct_Ei50meV``."""
        return self.instrument + (f"_Ei{self.ei_meV:g}meV" if self.direct else "")

    def as_json(self) -> dict:
        return {"instrument": self.instrument, "ei_meV": self.ei_meV,
                "angles_deg": list(self.angles_deg) if self.angles_deg else None,
                "resolution_fraction": self.resolution_fraction if self.direct else None,
                "chopper_frequency_hz": self.chopper_frequency_hz,
                "chopper_package": self.chopper_package, "direct": self.direct,
                "label": self.label(), "key": self.key()}


# ---------------------------------------------------------------------------- server state

class _Records:
    """The last ``limit`` records by id (uploads, predictions); a forgotten record's folder
    ``record["dir"]`` is removed."""

    def __init__(self, limit: int = _KEEP):
        self.limit = limit
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, record: dict) -> str:
        with self._lock:
            self._items[key] = record
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                _, old = self._items.popitem(last=False)
                if old.get("dir"):
                    shutil.rmtree(old["dir"], ignore_errors=True)
        return key

    def get(self, key: str | None) -> dict | None:
        with self._lock:
            return self._items.get(key) if key else None


class _Server:
    """Everything a request may need: settings, predictor, temporary folder, records, jobs."""

    def __init__(self, settings: Settings, predictor, predictor_message: str):
        self.settings = settings
        self.predictor = predictor
        self.predictor_message = predictor_message
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.workdir = Path()
        self.structures, self.measured, self.predictions = _Records(), _Records(), _Records()
        self.jobs = JobQueue(settings.max_queued)
        self._calc = None
        self._calc_lock = threading.Lock()
        self.plot_lock = threading.Lock()   # matplotlib's pyplot is not thread-safe

    def open(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="mlff-ins-serve-",
                                               ignore_cleanup_errors=True)
        self.workdir = Path(self.tmp.name)
        for sub in ("uploads", "results", "downloads"):
            (self.workdir / sub).mkdir()
        self.jobs = JobQueue(self.settings.max_queued)      # a fresh worker for every run
        self.jobs.start()

    def close(self) -> None:
        self.jobs.stop()
        if self.tmp is not None:
            self.tmp.cleanup()

    def new_dir(self, kind: str) -> Path:
        path = self.workdir / kind / uuid.uuid4().hex[:12]
        path.mkdir(parents=True)
        return path

    def calculator(self):
        """The model's calculator with the batched-forces interface, loaded once."""
        from mlff_ins.predict.database import _forces_interface, load_teacher

        with self._calc_lock:
            if self._calc is None:
                calc, _ = load_teacher(self.settings.model, device=self.settings.device,
                                       workdir=self.workdir / "results")
                self._calc = (calc, _forces_interface(calc))
            return self._calc


# ---------------------------------------------------------------------------------- uploads

def _safe_name(filename: str) -> str:
    """The uploaded file's own name (suffix kept, so the reader can be chosen from it) with
    only letters, digits and ``._+-``; never empty, hidden or a path."""
    base = re.split(r"[\\/]", filename or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip(".")
    if len(base) > 100:
        stem, dot, suffix = base.rpartition(".")
        base = stem[:80] + dot + suffix[:16] if dot else base[:100]
    return base or "upload"


class _FormSink:
    """python-multipart callbacks that write the ``file`` part to ``dest`` while it streams in,
    refusing it (413) as soon as it passes ``limit_bytes``, and keep small text fields."""

    def __init__(self, dest: Path, limit_bytes: int, limit_mb: float):
        self.dest, self.limit, self.limit_mb = dest, limit_bytes, limit_mb
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.filename = ""
        self.size = 0
        self._header, self._value, self._headers = b"", b"", {}
        self._part, self._fh, self._text = None, None, b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_header_field": self._field,
                "on_header_value": self._hvalue, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._end}

    def _begin(self):
        self._headers, self._part, self._text = {}, None, b""

    def _field(self, data, start, end):
        self._header += data[start:end]

    def _hvalue(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._header.decode("latin-1").lower()] = self._value
        self._header, self._value = b"", b""

    def _headers_done(self):
        from python_multipart.multipart import parse_options_header

        _, opts = parse_options_header(self._headers.get("content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        if name == "file" and filename is not None and self._fh is None:
            self.filename = filename.decode("utf-8", "replace")
            self.path = self.dest / _safe_name(self.filename)
            self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in _end or close()
            self._part = "file"
        elif filename is None:
            self._part = name

    def _data(self, data, start, end):
        chunk = data[start:end]
        if self._part == "file":
            self.size += len(chunk)
            if self.size > self.limit:
                raise Refused(413, f"{self.filename}: the file is larger than this server's "
                                   f"limit of {self.limit_mb:g} MiB (--max-upload-mb)")
            self._fh.write(chunk)
        elif self._part is not None:
            self._text += chunk
            if len(self._text) > 4096:
                raise Refused(413, f"form field {self._part}: longer than 4096 bytes")

    def _end(self):
        if self._part == "file":
            self._fh.close()
        elif self._part is not None:
            self.fields[self._part] = self._text.decode("utf-8", "replace").strip()
        self._part = None

    def close(self):
        if self._fh is not None and not self._fh.closed:
            self._fh.close()


def _display_name(sink: _FormSink) -> str:
    """The uploaded file's name as the user's machine gave it, without its folders."""
    return re.split(r"[\\/]", sink.filename)[-1] or sink.path.name


async def receive_upload(request: Request, dest: Path, limit_mb: float) -> _FormSink:
    """Stream a multipart/form-data body with a ``file`` part into folder ``dest``; the size
    is checked from the Content-Length header first and then on every chunk received."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    limit = int(limit_mb * 1024 * 1024)
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in opts:
        raise Refused(400, "send the file as multipart/form-data in a field named file")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + _FORM_SLACK:
        raise Refused(413, f"the upload is larger than this server's limit of {limit_mb:g} MiB "
                           "(--max-upload-mb)")
    sink = _FormSink(dest, limit, limit_mb)
    parser = MultipartParser(opts[b"boundary"], sink.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + _FORM_SLACK:
                raise Refused(413, f"the upload is larger than this server's limit of "
                                   f"{limit_mb:g} MiB (--max-upload-mb)")
            parser.write(chunk)
        parser.finalize()
    except Refused:
        raise
    except Exception as err:  # noqa: BLE001 - python-multipart's parse errors
        raise Refused(400, f"the upload is not a valid multipart form ({err})") from None
    finally:
        sink.close()
    if sink.path is None:
        raise Refused(400, "no file in the upload: send it in a form field named file")
    if sink.size == 0:
        raise Refused(422, f"{sink.filename}: the file is empty")
    return sink


# ------------------------------------------------------------------------------- structures

def structure_format(name: str) -> str:
    """The ASE format of an uploaded structure, from its name; others are refused (422)."""
    suffix = Path(name).suffix.lower()
    if suffix in STRUCTURE_SUFFIXES:
        return STRUCTURE_SUFFIXES[suffix]
    if _VASP_NAMES.match(Path(name).name):
        return "vasp"
    accepted = ", ".join(sorted(STRUCTURE_SUFFIXES))
    raise Refused(422, f"{name}: not a structure file this page reads (a name ending in "
                       f"{accepted}, or POSCAR/CONTCAR)")


def read_uploaded_structure(path: Path, name: str, max_atoms: int):
    """(atoms, reader warnings) of an uploaded file, messages naming the user's file name."""
    from mlff_ins.data.ingest import read_structure

    fmt = structure_format(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            atoms = read_structure(path, format=fmt)    # as named, not as the content says
        except InputError as err:
            raise Refused(422, str(err).replace(str(path), name)) from None
    if len(atoms) > max_atoms:
        raise Refused(422, f"{name}: {len(atoms)} atoms, more than this server's limit of "
                           f"{max_atoms} (--max-atoms)")
    notes = [str(w.message).replace(str(path), name).splitlines()[0] for w in caught
             if issubclass(w.category, UserWarning) and str(w.message)]
    return atoms, list(dict.fromkeys(notes))


def spacegroup(atoms) -> str:
    """International symbol and number from spglib (tolerance 1e-3 Å), e.g. ``Fm-3m (225)``;
    ``—`` for a structure without a periodic cell."""
    import spglib

    if not all(atoms.pbc) or atoms.cell.rank < 3:
        return "— (no periodic cell)"
    cell = (np.asarray(atoms.cell[:]), atoms.get_scaled_positions(), atoms.numbers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # spglib 2.5's error handling
        return spglib.get_spacegroup(cell, symprec=_SPACEGROUP_SYMPREC_A) or "not found"


def cell_summary(atoms) -> dict:
    """Cell lengths (Å), angles (degrees), volume (Å³) and matrix (Å, rows a, b, c)."""
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    periodic = atoms.cell.rank == 3
    return {"a_A": a, "b_A": b, "c_A": c, "alpha_deg": alpha, "beta_deg": beta,
            "gamma_deg": gamma, "volume_A3": atoms.get_volume() if periodic else None,
            "matrix_A": np.asarray(atoms.cell[:]).tolist()}


def structure_summary(record: dict) -> dict:
    atoms = record["atoms"]
    return {"id": record["id"], "name": record["name"], "formula": atoms.get_chemical_formula(),
            "n_atoms": len(atoms), "spacegroup": record["spacegroup"],
            "cell": _strict(cell_summary(atoms)),
            "elements": list(dict.fromkeys(atoms.get_chemical_symbols())),
            "warnings": record["warnings"]}


# -------------------------------------------------------------------------------- JSON forms

def _strict(obj):
    """NaN/inf -> None and numpy scalars -> Python, recursively, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _floats(values) -> list:
    """An array as (nested) lists of floats, None where not finite."""
    a = np.asarray(values, dtype=float)
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def energy_label(unit: str) -> str:
    from mlff_ins.neutron.units import UNIT_LABEL

    return f"energy transfer ({UNIT_LABEL[unit]})"


def curve_json(sp, unit: str, *, scale: float = 1.0, background=()) -> dict:
    """A 1D spectrum for Plotly: x in ``unit``, y (and std) times ``scale`` plus the fitted
    ``background`` polynomial (b0, b1 per meV)."""
    from mlff_ins.neutron.units import convert_energy

    bg = np.polyval(list(reversed(background)), sp.x) if len(background) else 0.0
    std = None if sp.intensity_std is None else _floats(scale * sp.intensity_std)
    return {"x": _floats(convert_energy(sp.x, unit)), "y": _floats(scale * sp.intensity + bg),
            "std": std, "element": sp.element, "kind": sp.kind, "units": sp.units}


def map_json(sp, unit: str) -> dict:
    """A 2D spectrum for a Plotly heatmap: ``z[i][j]`` at energy ``e[i]`` (``unit``) and |Q|
    ``q[j]`` (1/Å)."""
    from mlff_ins.neutron.units import convert_energy

    return {"q": _floats(sp.q), "e": _floats(convert_energy(sp.y, unit)),
            "z": _floats(np.asarray(sp.intensity).T), "units": sp.units, "kind": sp.kind}


def spectra_json(spectra: dict, unit: str) -> tuple[dict, dict | None]:
    """(1D spectra by name, the total 2D map or None) of a result."""
    from mlff_ins.neutron.spectrum import Spectrum2D

    curves = {n: curve_json(s, unit) for n, s in spectra.items() if not isinstance(s, Spectrum2D)}
    sqe = spectra.get("sqe")
    return curves, (map_json(sqe, unit) if sqe is not None else None)


# ------------------------------------------------------------------------------ validation

def check_unit(unit: str) -> str:
    from mlff_ins.neutron.units import energy_unit

    canonical = energy_unit(unit or "")
    if canonical not in UNITS:
        raise Refused(400, f"unit {unit!r}: choose {', '.join(UNITS)}")
    return canonical


def default_angles_deg() -> tuple[float, float]:
    """The 2θ range of `--angles` when it is not given (``InsOptions``' default)."""
    from mlff_ins.ins.from_phonons import InsOptions

    return tuple(float(a) for a in InsOptions.angles_deg)


def direct_instruments() -> list[str]:
    """The direct-geometry choices this server can compute: ``direct``, and the chopper
    spectrometers when ResINS (their resolution) is installed."""
    import importlib.util

    return list(DIRECT) if importlib.util.find_spec("resins") is not None else ["direct"]


#: the command-line names in messages of the resolution functions, and the API's fields
_CLI_NAMES = {"--resolution FRACTION": "resolution_fraction", "--resolution": "resolution_fraction",
              "--chopper-frequency": "chopper_frequency_hz",
              "--chopper-package": "chopper_package", "--instrument": "instrument",
              "--ei": "ei_meV"}


def _api_names(message: str) -> str:
    pattern = "|".join(re.escape(k) for k in _CLI_NAMES)
    return re.sub(rf"({pattern})(?![\w-])", lambda m: _CLI_NAMES[m.group(1)], message)


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def check_geometry(req: InstrumentFields) -> Geometry:
    """The request's instrument fields as a :class:`Geometry`; every bad value is a 400 that
    names the field, a chopper setting ResINS refuses a 422."""
    name = str(req.instrument).lower()
    if name not in INSTRUMENTS:
        raise Refused(400, f"instrument {req.instrument!r}: choose vision, tosca, direct or a "
                           f"chopper spectrometer ({', '.join(CHOPPER_INSTRUMENTS)})")
    fields = {"ei_meV": req.ei_meV, "angles_deg": req.angles_deg,
              "resolution_fraction": req.resolution_fraction,
              "chopper_frequency_hz": req.chopper_frequency_hz,
              "chopper_package": req.chopper_package}
    if name in INDIRECT:
        given = [k for k, v in fields.items() if v not in (None, "")]
        if given:
            raise Refused(400, f"{given[0]}: applies to direct geometry (instrument direct or a "
                               f"chopper spectrometer); {name} has a fixed final energy")
        return Geometry(name)
    ei = req.ei_meV
    if ei is None:
        raise Refused(400, f"ei_meV: instrument {name} is direct geometry and needs the "
                           "incident energy Ei in meV")
    if not (_finite(ei) and ei > 0):
        raise Refused(400, f"ei_meV {ei:g}: the incident energy Ei must be above 0 meV")
    angles = default_angles_deg() if req.angles_deg is None else tuple(req.angles_deg)
    if len(angles) != 2:
        raise Refused(400, "angles_deg: give two scattering angles 2θ in degrees, the smallest "
                           "then the largest")
    lo, hi = angles
    if not all(_finite(a) and 0 <= a <= 180 for a in angles):
        raise Refused(400, f"angles_deg {lo:g}, {hi:g}: scattering angles 2θ lie from 0 to "
                           "180 degrees")
    if not lo < hi:
        raise Refused(400, f"angles_deg {lo:g}, {hi:g}: the smallest angle 2θ comes first and "
                           "must be below the largest")
    fraction = 0.0 if req.resolution_fraction is None else req.resolution_fraction
    if not (_finite(fraction) and 0 <= fraction < 1):
        raise Refused(400, f"resolution_fraction {fraction:g}: give the resolution FWHM as a "
                           "fraction of Ei, from 0 (none) to below 1")
    freq = req.chopper_frequency_hz
    if freq is not None and not (_finite(freq) and freq > 0):
        raise Refused(400, f"chopper_frequency_hz {freq:g}: give a frequency above 0 Hz")
    geometry = Geometry(name, float(ei), (float(lo), float(hi)), float(fraction),
                        None if freq is None else float(freq), req.chopper_package or None)
    try:
        geometry.resolution()              # the resolution's own checks (ResINS) fail here
    except InputError as err:
        raise Refused(422, _api_names(str(err))) from None
    return geometry


def check_temperature(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value <= 2000):
        raise Refused(400, f"temperature {value:g} K: give a temperature above 0 and at most "
                           "2000 K")
    return value


def _structure(server: _Server, sid: str | None) -> dict:
    record = server.structures.get(sid)
    if record is None:
        raise Refused(404, f"structure {sid!r} is not on this server (it was never uploaded, "
                           "was forgotten or the server restarted): upload it again")
    return record


def _finished_job(server: _Server, job_id: str):
    job = server.jobs.get(job_id)
    if job is None:
        raise Refused(404, f"job {job_id!r} is not on this server (the server may have "
                           "restarted): start it again")
    if job.state != "done":
        raise Refused(409, f"job {job_id} is {job.state}, not done")
    return job


# ------------------------------------------------------------------------------- prediction

def predict(server: _Server, sid: str, geometry: Geometry,
            temperature_K: float | None) -> dict:
    """The prediction record (``id``, ``spectra``, ``warnings``) for a structure, made once per
    (structure, instrument settings, temperature) and kept. Direct geometry: the predicted
    powder map through :func:`direct_geometry_map`, and its :func:`q_integrated` S(E)."""
    record = _structure(server, sid)
    if server.predictor is None:
        raise Refused(409, server.predictor_message)
    targets = server.predictor.instruments
    two_d = server.predictor.has_two_d
    if geometry.direct and not two_d:
        raise Refused(409, f"instrument {geometry.instrument}: direct geometry needs the "
                           "predicted S(Q,E) map and this predictor has no S(Q,E) part; choose "
                           f"{' or '.join(targets)}, or compute the phonons")
    if not geometry.direct and geometry.instrument not in targets:
        raise Refused(400, f"instrument {geometry.instrument}: this predictor was trained for "
                           f"{', '.join(targets)} only")
    key = "p" + hashlib.sha1(f"{sid}|{geometry.key()}|{temperature_K}".encode()).hexdigest()[:12]
    done = server.predictions.get(key)
    if done is not None:
        return done
    # direct geometry uses only the map, which does not depend on the predictor's 1D target
    target = targets[0] if geometry.direct else geometry.instrument
    spectra, notes = server.predictor.predict(record["atoms"], target, temperature_K,
                                              source_name=record["name"], two_d=two_d)
    # the page draws S(E): a predicted DOS (and its partials) stays in the command line's files
    spectra = {n: s for n, s in spectra.items() if s.kind != "vdos"}
    if geometry.direct:
        sqe = direct_geometry_map(spectra["sqe"], geometry)
        spectra = {"s_e": q_integrated(sqe), "sqe": sqe}
    result = {"id": key, "structure_id": sid, "spectra": spectra, "warnings": notes,
              "instrument": geometry.instrument, "geometry": geometry,
              "temperature_K": temperature_K,
              "stem": f"{record['atoms'].get_chemical_formula()}_{geometry.stem()}_predicted"}
    server.predictions.put(key, result)
    return result


def _max_normalised(sp):
    """``sp`` scaled to a maximum of 1 when its units say it is max-normalised (masking can
    remove the maximum), else as it is."""
    if sp.units != "max-normalised":
        return sp
    top = float(np.nanmax(sp.intensity)) if np.any(np.isfinite(sp.intensity)) else 0.0
    if not top > 0:
        return sp
    std = None if sp.intensity_std is None else sp.intensity_std / top
    return replace(sp, intensity=sp.intensity / top, intensity_std=std)


def direct_geometry_map(sqe, geometry: Geometry):
    """An unbroadened powder S(Q,E) as the direct-geometry instrument ``geometry`` sees it.

    The steps of ``mlff-ins ins --ei`` (:func:`mlff_ins.ins.from_phonons.two_d_arrays`) with its
    functions: broadened along E with :meth:`Geometry.resolution`
    (:func:`mlff_ins.neutron.resolution.direct_resolution`), then NaN outside
    :func:`mlff_ins.neutron.kinematics.kinematic_mask` (the (|Q|, E) region Ei and the 2θ range
    reach). ``intensity_std`` (the ensemble spread) goes through the same two steps: an upper
    bound of the spread of the broadened members. A max-normalised map is normalised again.

    Parameters
    ----------
    sqe : Spectrum2D
        Intensity shape (len(q), len(E)), |Q| in 1/Å, E in meV on a uniform grid.
    geometry : Geometry
        A direct-geometry setting (``geometry.direct``).

    Returns
    -------
    Spectrum2D
        The same grid; ``instrument`` the geometry's, provenance with ``ei_meV``,
        ``angles_deg``, ``resolution_fwhm_fraction`` and the resolution model, as the CLI writes.
    """
    from mlff_ins.neutron.kinematics import kinematic_mask

    mask = kinematic_mask(sqe.q, sqe.y, geometry.ei_meV, geometry.angles_deg)
    res = geometry.resolution()

    def seen(values):
        if values is None:
            return None
        broadened = res.broaden(sqe.y, values) if res is not None else values
        return np.where(mask, broadened, np.nan)

    prov = {**sqe.provenance, "ei_meV": geometry.ei_meV, "angles_deg": list(geometry.angles_deg),
            "resolution_fwhm_fraction": geometry.resolution_fraction,
            **(res.provenance() if res is not None else {})}
    return _max_normalised(replace(
        sqe, intensity=seen(sqe.intensity), intensity_std=seen(sqe.intensity_std),
        instrument=geometry.instrument, provenance=prov))


def q_integrated(sqe):
    """The direct-geometry S(E) of a masked map: S(E) = Σ_j S(Q_j, E) ΔQ over the |Q| bins the
    instrument reaches at E (NaN bins count 0; rectangle rule, ΔQ the |Q| step), NaN where it
    reaches none (E ≥ Ei). The CLI has no 1D direct-geometry S(E); this is the page's
    convention. Units: the map's × 1/Å; a max-normalised map gives a max-normalised S(E).
    ``intensity_std`` is the same sum of the map's std (an upper bound of the members' spread).

    Parameters
    ----------
    sqe : Spectrum2D
        Intensity shape (len(q), len(E)) with NaN outside the reachable region.

    Returns
    -------
    Spectrum1D
        ``kind`` s_e on the map's energies (meV), its instrument, temperature and provenance.
    """
    from mlff_ins.neutron.spectrum import Spectrum1D

    dq = float(np.median(np.diff(sqe.q))) if len(sqe.q) > 1 else 1.0
    reached = np.isfinite(sqe.intensity).any(axis=0)

    def integral(values):
        if values is None:
            return None
        return np.where(reached, np.nansum(values, axis=0) * dq, np.nan)

    normalised = sqe.units == "max-normalised"
    out = Spectrum1D(kind="s_e", x=sqe.y, intensity=integral(sqe.intensity),
                     intensity_std=integral(sqe.intensity_std),
                     units=sqe.units if normalised else f"{sqe.units} × 1/Å",
                     source=sqe.source, instrument=sqe.instrument,
                     temperature_K=sqe.temperature_K,
                     provenance={**sqe.provenance, "s_e": "direct geometry: the masked S(Q,E) "
                                 "integrated over the reachable |Q| (sum × ΔQ)"})
    return _max_normalised(out)


def _downloads(kind: str, rid: str, unit: str) -> dict:
    return {fmt: f"/api/download/{kind}/{rid}?format={fmt}&unit={unit}"
            for fmt in ("h5", "csv", "png")}


def prediction_json(result: dict, unit: str) -> dict:
    curves, sqe = spectra_json(result["spectra"], unit)
    s_e = result["spectra"]["s_e"]
    return {"result_id": result["id"], "structure_id": result["structure_id"],
            "instrument": result["instrument"], "geometry": result["geometry"].as_json(),
            "temperature_K": s_e.temperature_K,
            "unit": unit, "energy_label": energy_label(unit), "units": s_e.units,
            "spectra": curves, "map": sqe, "warnings": result["warnings"],
            "downloads": _downloads("prediction", result["id"], unit)}


# ------------------------------------------------------------------------------ measurement

#: the largest dataset of an uploaded HDF5 measurement, bytes once decompressed
MEASURED_MAX_DATASET_BYTES = 512 * 1024**2


def read_uploaded_measured(path: Path, name: str, unit: str | None) -> dict:
    """Every spectrum of a measured file, messages naming the user's file name."""
    from mlff_ins.compare.readers import read_measured

    try:
        # a measurement within the upload limit needs no dataset of more than a few hundred MB
        # (what decompression may add is bounded here, not by the upload's size)
        return read_measured(path, unit=unit or None, max_bytes=MEASURED_MAX_DATASET_BYTES)
    except InputError as err:
        text = str(err).replace(str(path), name)
        # the command line's words for the page's fields
        for cli, field in (("--measured-unit, --measured-x and --measured-energy-gain (unit=, "
                            "x_edges=, energy_gain= in Python) apply", "the unit field applies"),
                           ("--measured-unit and --measured-x (unit= and x_edges= in Python)",
                            "the unit field"),
                           ("--measured-unit, unit= in Python", "the unit field"),
                           ("--measured-unit", "the unit field"), (" (unit= in Python)", "")):
            text = text.replace(cli, field)
        if "no energy unit" in text:
            text = (f"{name}: the file names no energy unit (Mantid ASCII carries none); "
                    "choose the file's energy unit (field unit) and upload it again")
        raise Refused(422, text) from None


def measured_summary(record: dict) -> dict:
    from mlff_ins.neutron.spectrum import Spectrum2D

    out = []
    for name, sp in record["spectra"].items():
        two = isinstance(sp, Spectrum2D)
        e = sp.y if two else sp.x
        std = sp.intensity_std
        out.append({"name": name, "dims": 2 if two else 1, "kind": sp.kind, "units": sp.units,
                    "energy_meV": [float(np.min(e)), float(np.max(e))],
                    "q_invA": [float(np.min(sp.q)), float(np.max(sp.q))] if two else None,
                    "has_errors": bool(std is not None and np.any(np.isfinite(std)))})
    first = next(iter(record["spectra"].values()))
    return {"id": record["id"], "name": record["name"],
            "format": first.provenance.get("format", ""), "spectra": out}


def _pick_measured(record: dict, name: str | None):
    spectra = record["spectra"]
    if name:
        if name not in spectra:
            raise Refused(400, f"{record['name']}: no spectrum {name!r} (it holds "
                               f"{', '.join(spectra)})")
        return name, spectra[name]
    if len(spectra) > 1:
        raise Refused(400, f"{record['name']}: holds several spectra ({', '.join(spectra)}); "
                           "choose one (measured_name)")
    return next(iter(spectra.items()))


# ---------------------------------------------------------------------------------- compare

def compare_pairs(aligned: dict, opts) -> list[dict]:
    """Every pair's metrics, a measurement always ``b`` and fitted (with equal weights when it
    has no error bars, as `mlff-ins compare` does); a fit that cannot be made (degenerate)
    leaves ``fit`` null with a ``note``."""
    from mlff_ins.compare.metrics import pair_metrics

    names, out = list(aligned), []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            a, b = (second, first) if aligned[first].source == "measured" else (first, second)
            fit = aligned[b].source == "measured"
            kw = {"background": opts.background, "e_range": opts.e_range}
            try:
                m = pair_metrics(aligned[a], aligned[b], measured_b=fit, **kw)
            except InputError as err:
                if not fit:
                    raise
                m = {**pair_metrics(aligned[a], aligned[b], **kw), "note": str(err)}
            out.append({"a": a, "b": b, **m})
    return out


def _overlay(aligned: dict, pairs: list[dict], unit: str, partials: dict) -> list[dict]:
    """Measured points, then each calculation scaled onto them by its fit (else by the ratio
    of maxima), with its scaled element partials."""
    meas = aligned["measured"]
    name = Path(meas.provenance.get("file", "")).name or "measured"
    curves = [{"label": f"measured ({name})", "role": "measured", **curve_json(meas, unit)}]
    fits = {p["a"]: p.get("fit") for p in pairs if p["b"] == "measured"}
    top = float(np.nanmax(meas.intensity))
    for label, sp in aligned.items():
        if label == "measured":
            continue
        fit = fits.get(label)
        if fit:
            scale, bg = fit["scale"], fit["background"]
            how = f"× {scale:.3g}" + (" + background" if bg else "") + " (fit)"
        else:
            peak = float(np.nanmax(sp.intensity))
            scale, bg = (top / peak if peak > 0 else 1.0), []
            how = f"× {scale:.3g} (maxima matched: no error bars to fit)"
        curves.append({"label": f"{label} {how}", "role": "calculated",
                       **curve_json(sp, unit, scale=scale, background=bg)})
        for name, part in partials.get(label, {}).items():
            curves.append({"label": f"{label} {part.element}", "role": "partial",
                           **curve_json(part, unit, scale=scale)})
    return curves


def _calculations(server: _Server, req: CompareRequest, two_d: bool, geometry: Geometry,
                  temperature: float | None) -> tuple[dict, dict, list[str]]:
    """({label: calculated spectrum}, {label: partials}, notes) to compare with."""
    calcs, partials, notes = {}, {}, []
    name = "sqe" if two_d else "s_e"
    if req.job_id:
        result = _finished_job(server, req.job_id).result
        t_job = result["temperature_K"]
        t_now = t_job if temperature is None else temperature
        if result["geometry"].key() != geometry.key() or abs(t_now - t_job) > 1e-9:
            # a spectrum of other settings would be compared as if it were of these
            notes.append(f"the phonons (job {req.job_id}) were computed for "
                         f"{result['geometry'].label()} at {t_job:g} K, not "
                         f"{geometry.label()} at {t_now:g} K: not compared (compute them again "
                         f"with these settings)")
        elif name in result["spectra"]:
            calcs["phonons"] = result["spectra"][name]
    if req.id:
        if server.predictor is None:
            notes.append(server.predictor_message)
        else:
            pred = predict(server, req.id, geometry, temperature)["spectra"]
            if name in pred:
                calcs["predicted"] = pred[name]
                partials["predicted"] = {n: s for n, s in pred.items()
                                         if n.startswith("s_e_") and s.element}
            elif two_d:
                notes.append("the predictor has no S(Q,E) part: compute the phonons for a "
                             "calculated map")
    if not calcs and req.job_id and notes and notes[0].startswith("the phonons (job"):
        raise Refused(409, notes[0])
    if not calcs:
        what = "S(Q,E) map" if two_d else "S(E)"
        raise Refused(409, f"there is no calculated {what} to compare the measurement with: "
                           + ("compute the phonons first" if two_d else
                              "upload a structure (with a predictor) or compute the phonons"))
    return calcs, partials, notes


def compare(server: _Server, req: CompareRequest) -> dict:
    """Align, pair and (1D) overlay or (2D) map the measurement and the calculations."""
    from mlff_ins.compare.report import CompareOptions, align, phonon_residual
    from mlff_ins.neutron.spectrum import Spectrum2D

    unit, geometry = check_unit(req.unit), check_geometry(req)
    temperature = check_temperature(req.temperature_K)
    if req.background not in BACKGROUNDS:
        raise Refused(400, f"background {req.background!r}: choose none, flat or linear")
    e_range = _e_range(req.e_range_meV)
    record = server.measured.get(req.measured_id)
    if record is None:
        raise Refused(404, f"measurement {req.measured_id!r} is not on this server: upload it "
                           "again")
    mname, msp = _pick_measured(record, req.measured_name)
    two_d = isinstance(msp, Spectrum2D)
    calcs, partials, notes = _calculations(server, req, two_d, geometry, temperature)
    # the measurement's resolution: the instrument's (direct geometry: that of its settings,
    # None for `direct` without resolution_fraction); 2D maps keep their own
    measured_resolution = geometry.resolution() if geometry.direct else geometry.instrument
    opts = CompareOptions(kind="sqe" if two_d else "s_e", background=req.background,
                          e_range=e_range, instrument=None if two_d else measured_resolution)
    try:
        aligned, rec = align({**calcs, "measured": msp}, opts)
        pairs = compare_pairs(aligned, opts)
    except InputError as err:
        raise Refused(422, str(err)) from None
    out = {"kind": opts.kind, "unit": unit, "energy_label": energy_label(unit),
           "measured_id": record["id"], "measured_name": mname, "resolution": rec["target"],
           "pairs": _strict(pairs), "notes": notes, "overlay": None, "maps": None}
    if not two_d:
        out["overlay"] = _overlay(aligned, pairs, unit, partials)
        return out
    out["maps"] = {label: map_json(sp, unit) for label, sp in aligned.items()}
    calc = "phonons" if "phonons" in aligned else "predicted"
    try:
        res, info = phonon_residual(aligned[calc], aligned["measured"])
        out["maps"]["residual"] = {**map_json(res, unit), "label": f"measured − scaled {calc}",
                                   "info": _strict(info)}
    except InputError as err:
        notes.append(f"no residual map: {err}")
    return out


def _e_range(values) -> tuple | None:
    if not values:
        return None
    if len(values) != 2 or not values[0] < values[1]:
        raise Refused(400, f"e_range_meV {values}: give two energies, low then high (meV)")
    return float(values[0]), float(values[1])


# --------------------------------------------------------------------------------- the job

def phonon_work(server: _Server, atoms, geometry: Geometry, temperature_K: float,
                out_dir: Path):
    """The phonon route as a job function ``work(report)`` -> result dict. Direct geometry:
    the maps as ``mlff-ins ins --ei`` makes them, and :func:`q_integrated` as ``s_e``."""

    def work(report):
        from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
        from mlff_ins.neutron.spectrum import write_spectra
        from mlff_ins.phonons.finite_displacement import (
            make_phonopy,
            phonons_from_model,
            relax,
        )
        from mlff_ins.predict.database import supercell_for

        report(0.01, "loading the model")
        calc, forces = server.calculator()
        report(0.05, "relaxing positions and cell")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            relaxed = relax(atoms, calc, fmax=5e-3, steps=300)
        supercell = supercell_for(relaxed, JOB_SUPERCELL_A, JOB_MAX_SUPERCELL_ATOMS)
        total = max(len(make_phonopy(relaxed, supercell).displacements), 1)
        done = [0]

        def tick(n):
            done[0] += n
            report(0.2 + 0.5 * done[0] / total, f"forces: {done[0]} of {total} displaced "
                                                 f"supercells ({'x'.join(map(str, supercell))})")

        report(0.2, f"forces: 0 of {total} displaced supercells")
        pset = phonons_from_model(relaxed, forces, supercell, primitive="auto", progress=tick)
        report(0.72, f"INS: the powder S(Q,E) map for {geometry.label()}" if geometry.direct
               else f"INS: {geometry.label()} S(E) and the powder S(Q,E) map")
        opts = InsOptions(temperature_K=temperature_K, two_d=True, **geometry.ins_options(),
                          **{**JOB_TWO_D, **server.settings.job_ins})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spectra = ins_from_phonons(pset, opts, {"structure": atoms.get_chemical_formula(),
                                                    "model": str(server.settings.model)})
        if geometry.direct:
            spectra = {"s_e": q_integrated(spectra["sqe"]), **spectra}
        write_spectra(out_dir / "phonons.h5", spectra)
        return {"spectra": spectra, "supercell": supercell, "n_displacements": total,
                "formula": relaxed.get_chemical_formula(), "instrument": geometry.instrument,
                "geometry": geometry, "temperature_K": temperature_K,
                "volume_change": relaxed.get_volume() / atoms.get_volume() - 1.0,
                "stem": f"{relaxed.get_chemical_formula()}_{geometry.stem()}_phonons"}

    return work


def job_json(server: _Server, job, unit: str) -> dict:
    out = {"job_id": job.id, "state": job.state, "progress": job.progress,
           "message": job.message, "position": server.jobs.position(job), "info": job.info,
           "result": None}
    if job.state == "done":
        r = job.result
        curves, sqe = spectra_json(r["spectra"], unit)
        out["result"] = {"spectra": curves, "map": sqe, "energy_label": energy_label(unit),
                         "unit": unit, "supercell": r["supercell"], "formula": r["formula"],
                         "instrument": r["instrument"], "geometry": r["geometry"].as_json(),
                         "temperature_K": r["temperature_K"],
                         "n_displacements": r["n_displacements"],
                         "volume_change": r["volume_change"],
                         "downloads": _downloads("job", job.id, unit)}
    return _strict(out)


def submit_job(server: _Server, req: JobRequest):
    if not server.settings.model:
        raise Refused(409, "this server has no model for phonons: start it with --model NAME "
                           "or --model DIR")
    record = _structure(server, req.id)
    atoms = record["atoms"]
    if not all(atoms.pbc) or atoms.cell.rank < 3:
        raise Refused(422, f"{record['name']}: phonons need a periodic cell, and this "
                           "structure has none")
    if len(atoms) > JOB_MAX_SUPERCELL_ATOMS:
        raise Refused(422, f"{record['name']}: {len(atoms)} atoms; the phonon route here takes "
                           f"at most {JOB_MAX_SUPERCELL_ATOMS} atoms in the supercell")
    geometry = check_geometry(req)
    temperature = check_temperature(req.temperature_K) or 10.0
    out_dir = server.new_dir("results")
    work = phonon_work(server, atoms, geometry, temperature, out_dir)
    try:
        return server.jobs.submit(work, info={"structure_id": record["id"],
                                              "formula": atoms.get_chemical_formula(),
                                              "instrument": geometry.instrument,
                                              "geometry": geometry.as_json(),
                                              "temperature_K": temperature})
    except QueueFull as err:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise Refused(429, f"The calculation queue is full: {err}.") from None


# -------------------------------------------------------------------------------- downloads

def download(server: _Server, spectra: dict, stem: str, fmt: str, unit: str,
             name: str | None) -> FileResponse:
    """The spectra as HDF5, CSV (one spectrum, or a zip of all) or PNG, from a folder that is
    removed once sent."""
    from mlff_ins.compare.export import export_csv
    from mlff_ins.neutron.plot import plot_spectra
    from mlff_ins.neutron.spectrum import write_spectra

    if name is not None:
        if name not in spectra:
            raise Refused(404, f"no spectrum {name!r} here (there are {', '.join(spectra)})")
        spectra, stem = {name: spectra[name]}, f"{stem}_{name}"
    folder = server.new_dir("downloads")
    cleanup = BackgroundTask(shutil.rmtree, folder, ignore_errors=True)
    if fmt == "h5":
        path = folder / f"{stem}.h5"
        write_spectra(path, spectra)
        return FileResponse(path, filename=path.name, media_type="application/x-hdf5",
                            background=cleanup)
    if fmt == "png":
        path = folder / f"{stem}.png"
        with server.plot_lock:
            plot_spectra(spectra, path, unit=unit)
        return FileResponse(path, filename=path.name, media_type="image/png",
                            background=cleanup)
    if fmt == "csv":
        files = export_csv(spectra, folder / "csv", unit=unit)
        if len(files) == 1:
            return FileResponse(files[0], filename=f"{stem}.csv", media_type="text/csv",
                                background=cleanup)
        path = folder / f"{stem}_csv.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, f.name)
        return FileResponse(path, filename=path.name, media_type="application/zip",
                            background=cleanup)
    shutil.rmtree(folder, ignore_errors=True)
    raise Refused(400, f"format {fmt!r}: choose h5, csv or png")


# ------------------------------------------------------------------------------- app factory

def load_predictor(settings: Settings):
    """(Predictor or None, the sentence the page shows when there is none)."""
    from mlff_ins.model.calculator import resolve_device
    from mlff_ins.predict.predictor import Predictor, shipped_predictor

    device = resolve_device(settings.device)
    try:
        predictor = Predictor(settings.predictor or shipped_predictor(), device)
    except InputError:
        if settings.predictor:
            raise
        return None, ("No predictor is available on this server, so no spectra are predicted; "
                      "start it with --predictor DIR to add them.")
    if predictor.has_two_d:
        predictor.load_two_d()      # the page shows the map with every prediction: load it now
    return predictor, ""


def _check_settings(settings: Settings) -> None:
    if settings.max_atoms < 1:
        raise InputError(f"--max-atoms {settings.max_atoms}: must be at least 1")
    if not settings.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb {settings.max_upload_mb}: must be above 0 MiB")
    if settings.max_queued < 1:
        raise InputError(f"--max-queued {settings.max_queued}: must be at least 1")
    if settings.model:
        from mlff_ins.predict.database import check_teacher

        try:
            check_teacher(settings.model)
        except InputError:
            raise InputError(f"--model {settings.model}: neither a universal model name, a "
                             "model bundle folder nor a calculator YAML file") from None


def _error(status: int, message: str, server: _Server | None = None) -> JSONResponse:
    """``{"error": message}`` with the server's temporary paths taken out of the message."""
    text = str(message).splitlines()[0] if str(message) else "bad request"
    if server is not None and str(server.workdir) not in ("", "."):
        text = re.sub(re.escape(str(server.workdir)) + r"[^\s:]*/", "", text)
    return JSONResponse({"error": text}, status_code=status)


def _install_error_handlers(app: FastAPI, server: _Server) -> None:
    @app.exception_handler(Refused)
    async def refused(request, exc: Refused):
        return _error(exc.status, exc.message, server)

    @app.exception_handler(InputError)
    async def input_error(request, exc: InputError):
        return _error(422, str(exc), server)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(422, "the request body is not valid JSON")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where or 'request'}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        _LOG.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the "
                           "details")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app for ``settings``; the predictor is loaded here (a bad ``--predictor`` is an
    :class:`InputError`), the temporary folder and job worker live as long as the app runs."""
    settings = settings or Settings()
    _check_settings(settings)
    predictor, message = load_predictor(settings)
    server = _Server(settings, predictor, message)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.open()
        try:
            yield
        finally:
            server.close()

    app = FastAPI(title="mlff-ins", version=__version__, lifespan=lifespan,
                  description="Neutron spectra from a structure: the direct predictor, the "
                              "phonon route with a force field, and measured data.")
    app.state.server = server
    _install_error_handlers(app, server)
    _add_origin_check(app, settings)
    _add_page_routes(app)
    _add_api_routes(app, server)
    return app


#: the names a browser on this machine uses for a server bound to the loopback interface
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def _host_name(netloc: str) -> str:
    """The host of ``host[:port]`` or ``[v6]:port``, lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _add_origin_check(app: FastAPI, settings: Settings) -> None:
    """Requests from other web sites are refused (403): a request whose ``Origin`` is not the
    page's own, and, on a server bound to the loopback interface, one whose ``Host`` is not a
    local name (a site that points its own name at 127.0.0.1, DNS rebinding, would otherwise
    be the page's origin and read the answers)."""
    from urllib.parse import urlsplit

    local_only = settings.host in LOCAL_NAMES

    @app.middleware("http")
    async def same_origin(request, call_next):
        host = request.headers.get("host", "")
        if local_only and _host_name(host) not in LOCAL_NAMES:
            return _error(403, f"this server answers requests to localhost only, not to "
                               f"{_host_name(host) or 'no host'}")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return _error(403, "requests from another site's pages are refused")
        return await call_next(request)


def _add_page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index():
        # the page loads nothing from elsewhere; the header makes the browser hold it to that
        csp = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' "
               "'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'")
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": csp,
                                     "Cache-Control": "no-cache"})

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js():
        import plotly

        path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
        if not path.is_file():
            raise Refused(404, "plotly.min.js is missing from the installed plotly package")
        return FileResponse(path, media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _add_api_routes(app: FastAPI, server: _Server) -> None:
    s = server.settings

    @app.get("/api/status")
    def status():
        p = server.predictor
        return {"version": __version__,
                "predictor": {"available": p is not None, "message": server.predictor_message,
                              "elements": p.meta["elements"] if p else [],
                              "instruments": p.instruments if p else [],
                              "two_d": bool(p is not None and p.has_two_d)},
                "model": {"available": bool(s.model), "name": str(s.model or "")},
                "direct": {"instruments": direct_instruments(),
                           "angles_deg": list(default_angles_deg())},
                "limits": {"max_atoms": s.max_atoms, "max_upload_mb": s.max_upload_mb,
                           "max_queued": s.max_queued}}

    @app.post("/api/structure")
    async def upload_structure(request: Request):
        folder = server.new_dir("uploads")
        try:
            sink = await receive_upload(request, folder, s.max_upload_mb)
            name = _display_name(sink)
            structure_format(name)
            atoms, notes = await run_in_threadpool(read_uploaded_structure, sink.path, name,
                                                   s.max_atoms)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if server.predictor is not None:
            notes += server.predictor.familiarity(atoms)
        sid = folder.name
        record = {"id": sid, "name": name, "atoms": atoms, "dir": folder, "warnings": notes,
                  "spacegroup": spacegroup(atoms)}
        server.structures.put(sid, record)
        return structure_summary(record)

    @app.get("/api/structure/{sid}")
    def get_structure(sid: str):
        return structure_summary(_structure(server, sid))

    @app.post("/api/predict")
    def post_predict(req: PredictRequest):
        unit, geometry = check_unit(req.unit), check_geometry(req)
        result = predict(server, req.id, geometry, check_temperature(req.temperature_K))
        return _strict(prediction_json(result, unit))

    @app.post("/api/measured")
    async def upload_measured(request: Request):
        folder = server.new_dir("uploads")
        try:
            sink = await receive_upload(request, folder, s.max_upload_mb)
            name = _display_name(sink)
            unit = sink.fields.get("unit") or None
            if unit:
                unit = check_unit(unit)
            spectra = await run_in_threadpool(read_uploaded_measured, sink.path, name, unit)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        record = {"id": folder.name, "name": name, "spectra": spectra, "dir": folder}
        server.measured.put(folder.name, record)
        return _strict(measured_summary(record))

    @app.get("/api/measured/{mid}")
    def get_measured(mid: str, unit: str = "meV"):
        from mlff_ins.neutron.spectrum import Spectrum2D

        unit = check_unit(unit)
        record = server.measured.get(mid)
        if record is None:
            raise Refused(404, f"measurement {mid!r} is not on this server: upload it again")
        data = {n: (map_json(sp, unit) if isinstance(sp, Spectrum2D) else curve_json(sp, unit))
                for n, sp in record["spectra"].items()}
        return _strict({**measured_summary(record), "unit": unit,
                        "energy_label": energy_label(unit), "data": data})

    @app.post("/api/compare")
    def post_compare(req: CompareRequest):
        return _strict(compare(server, req))

    @app.post("/api/jobs", status_code=202)
    def post_job(req: JobRequest):
        job = submit_job(server, req)
        return {"job_id": job.id, "state": job.state, "position": server.jobs.position(job)}

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str, unit: str = "meV"):
        unit = check_unit(unit)
        job = server.jobs.get(job_id)
        if job is None:
            raise Refused(404, f"job {job_id!r} is not on this server (the server may have "
                               "restarted): start it again")
        return job_json(server, job, unit)

    @app.get("/api/download/{kind}/{rid}")
    def get_download(kind: str, rid: str, format: str = "h5", unit: str = "meV",
                     name: str | None = None):
        unit = check_unit(unit)
        if kind == "prediction":
            result = server.predictions.get(rid)
            if result is None:
                raise Refused(404, f"prediction {rid!r} is not on this server: predict again")
        elif kind == "job":
            result = _finished_job(server, rid).result
        else:
            raise Refused(404, f"download kind {kind!r}: choose prediction or job")
        return download(server, result["spectra"], result["stem"], format, unit, name)


__all__ = ["Settings", "create_app"]
