"""The predictor's training database: relax -> finite-displacement phonons -> INS, many crystals.

``mlff-ins database build --structures SOURCE --teacher NAME -o db.h5`` runs every structure of
:mod:`mlff_ins.predict.sources` through the same code as ``phonons`` and ``ins``
(:func:`~mlff_ins.phonons.finite_displacement.relax`,
:func:`~mlff_ins.phonons.finite_displacement.phonons_from_model`,
:mod:`mlff_ins.ins.from_phonons`) with a teacher: a universal model by name, a model bundle or a
calculator YAML.

Crash safety and resuming
    Every finished entry (failed ones too, with their reason, so they are not retried for ever)
    is written to its own small HDF5 file in ``db.h5.parts/`` under a temporary name and moved
    into place; a kill loses at most the entries in flight. Every ``consolidate_every`` entries
    and at the end the parts are merged into ``db.h5`` (written to a temporary file, then moved
    into place) and removed. An entry is identified by its structure key, so a resumed, a
    parallel or a Dask build skips what is done and can never hold an entry twice.

Parallelism
    ``workers`` local processes (each loads the teacher once, torch threads split between them) or
    ``dask`` = the address of a running ``dask.distributed`` scheduler, which receives the same
    tasks; the client process alone writes the files.

File layout (``db.h5``)
    ``/grids``: ``energy_meV`` (1D spectra and DOS), ``q_invA`` and ``energy_2d_meV`` (S(Q,E));
    attributes: temperature, mesh, teacher, options (JSON).
    ``/entries/<name>`` (``name`` a hash of the key) with attributes ``key``, ``formula``,
    ``status`` (``ok`` | ``imaginary`` | ``failed``), ``message``, ``seconds``, ``teacher`` and
    datasets ``numbers``, ``cell`` (Å), ``positions`` (Å) of the relaxed primitive cell,
    ``supercell_matrix``, ``force_constants`` (eV/Å², phonopy's compact layout), ``lowest_THz``,
    ``elements`` (element order of the partials), ``dos`` and ``dos_partial`` (states/meV per atom,
    area 3 per atom), ``vision``, ``vision_partial``, ``tosca`` (S(E), barn/sr/meV per atom) and
    ``sqe`` (powder S(Q,E) on the 2D grid, float32), and the teacher's work behind the force
    constants: ``displacement_atoms`` (supercell index of each displaced atom),
    ``displacements`` (Å) and ``forces`` (eV/Å, float32) of phonopy's displacement dataset.
    Failed entries hold attributes only.

Teacher records (``--records FILE``)
    The teacher evaluations are the expensive part, so they can be kept apart in a compact file
    that is small enough to keep under version control: per entry the attributes ``key``,
    ``formula``, ``status``, ``message``, ``teacher``, ``seconds`` and the datasets ``numbers``,
    ``cell``, ``positions``, ``supercell_matrix``, ``displacement_atoms``, ``displacements`` and
    ``forces`` (float32, gzip) under ``/records/<name>``; failed entries keep only ``key``,
    ``status`` and ``message``. Every finished entry is added to it (a copy of the file with
    the entry added, moved into place) before its part file is written, so a kill leaves it
    whole and holding every finished entry. A build first rebuilds every recorded entry missing
    from ``db.h5`` from its record (force constants from the stored displacements and forces,
    then the same spectra), without the teacher.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path, exclusive_lock, write_json_atomic
from mlff_ins.errors import InputError

ARRAYS = ("numbers", "cell", "positions", "supercell_matrix", "force_constants", "lowest_THz",
          "dos", "dos_partial", "vision", "vision_partial", "tosca", "sqe")
#: phonopy's displacement dataset with the teacher's forces (type 1: one displaced atom each)
TEACHER_ARRAYS = ("displacement_atoms", "displacements", "forces")
#: what a teacher record holds: the relaxed cell, the supercell and the teacher's forces
RECORD_ARRAYS = ("numbers", "cell", "positions", "supercell_matrix") + TEACHER_ARRAYS
RECORD_ATTRS = ("key", "formula", "status", "message", "teacher", "seconds")
RECORDS_FORMAT = "mlff-ins teacher records"
RECORDS_VERSION = 1
#: how the force constants are made from a record (as compute_entry makes them)
PHONOPY_SETTINGS = {"primitive": "P", "symprec": 1e-5, "fc": "traditional, compact",
                    "symmetrize": True}


@dataclass
class SpectraOptions:
    """Grids and conditions of every stored spectrum (``database respectra`` changes them)."""

    temperature_K: float = 10.0
    mesh: float = 30.0                   # phonopy mesh length (Å)
    e_max_meV: float = 500.0
    e_step_meV: float = 0.5
    q_max: float = 15.0                  # the 2D grid of Cheng et al. 2023: 0-15 1/Å x 0-150 meV
    q_step: float = 0.15
    e_max_2d_meV: float = 150.0
    e_step_2d_meV: float = 1.5
    n_directions: int = 50
    n_phonon: int = 10
    imaginary_tol_THz: float = 0.3       # modes below -tol (Γ acoustic aside) flag the entry

    def energy(self) -> np.ndarray:
        return np.arange(0.0, self.e_max_meV + 0.5 * self.e_step_meV, self.e_step_meV)


@dataclass
class BuildOptions:
    teacher: str
    spectra: SpectraOptions = field(default_factory=SpectraOptions)
    relax: bool = True
    fmax: float = 5e-3                   # eV/Å
    relax_steps: int = 300
    supercell_length_A: float = 9.0      # smallest width of the supercell
    max_supercell_atoms: int = 256
    #: phonons again in a supercell at least this wide (when it fits max_supercell_atoms and is
    #: larger) for an entry whose imaginary modes lie only between its supercell's q-points;
    #: None: no retry
    retry_supercell_length_A: float | None = 13.5
    device: str = "cpu"


def entry_name(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# the teacher

class _AseMembers:
    """A plain ASE calculator with the bundle interface ``member_forces_batched``."""

    def __init__(self, calc):
        self.calc = calc

    def member_forces_batched(self, structures, max_batch_atoms=None, progress=None):
        out = []
        for a in structures:
            a = a.copy()
            a.calc = self.calc
            out.append(a.get_forces())
            if progress is not None:
                progress(1)
        return np.array(out)[None]


def check_teacher(teacher: str) -> Path:
    """Refuse a teacher that is neither a universal model name, a bundle folder nor a
    calculator YAML file, before any work starts."""
    from mlff_ins.model.universal import is_universal

    path = Path(teacher)
    if (path.suffix in (".yaml", ".yml") and path.is_file()) or path.is_dir() \
            or is_universal(teacher):
        return path
    raise InputError(f"--teacher {teacher}: neither a universal model name, a model bundle "
                     "folder nor a calculator YAML file")


def load_teacher(teacher: str, device: str = "cpu", workdir: str | os.PathLike = "."):
    """(calculator, description) of a universal model name, a model bundle folder or a
    calculator YAML file (a documented trust boundary: YAML names the class it imports)."""
    path = check_teacher(teacher)
    if path.suffix in (".yaml", ".yml"):
        from mlff_ins.data.label import build_calculator, read_calculator_spec

        spec = read_calculator_spec(path)
        return build_calculator(spec, Path(workdir) / "teacher.calc"), teacher_description(teacher)
    from mlff_ins.model.calculator import load_calculator

    return load_calculator(teacher, device=device), teacher_description(teacher)


def teacher_description(teacher: str) -> str:
    """What an entry records as its teacher, without loading it: a universal model's name with
    its package and version, a calculator YAML's name and hash, or a bundle's folder name and
    the hash of its bundle.json."""
    import importlib.metadata

    from mlff_ins.model.universal import UNIVERSAL, is_universal

    path = check_teacher(teacher)
    if path.suffix in (".yaml", ".yml"):
        from mlff_ins.data.label import read_calculator_spec

        spec = read_calculator_spec(path)
        return f"calculator {spec.name} sha256:{spec.sha256[:16]}"
    if is_universal(teacher) and not path.exists():
        key = str(teacher).lower()
        package = UNIVERSAL[key][0]
        return f"{key} ({package} {importlib.metadata.version(package)})"
    digest = hashlib.sha256((path / "bundle.json").read_bytes()).hexdigest()[:16]
    return f"bundle {path.name} sha256:{digest}"


def _forces_interface(calc):
    return calc if hasattr(calc, "member_forces_batched") else _AseMembers(calc)


# --------------------------------------------------------------------------------------------
# one entry

def supercell_for(atoms, length_A: float, max_atoms: int) -> list[int]:
    """Diagonal supercell whose every width is at least ``length_A`` (Å), shrunk (the longest
    widths first) until it has at most ``max_atoms`` atoms."""
    cell = np.asarray(atoms.cell[:])
    volume = abs(np.linalg.det(cell))
    widths = np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                       for i in range(3)])
    n = np.maximum(1, np.ceil(length_A / widths - 1e-9)).astype(int)
    while n.prod() * len(atoms) > max_atoms and n.max() > 1:
        i = int(np.argmax(np.where(n > 1, n * widths, -1)))
        n[i] -= 1
    return n.tolist()


def lowest_mode_THz(qpoints, freqs_THz) -> float:
    """The lowest mesh frequency other than the three acoustic modes at Γ (zero by
    construction): at Γ the three closest to zero are left out, not the three lowest, which
    would drop a triply degenerate imaginary optical mode (a cubic perovskite's T1u)."""
    freqs, q = np.asarray(freqs_THz, dtype=float), np.asarray(qpoints, dtype=float)
    gamma = np.all(np.isclose(q - np.rint(q), 0), axis=1)
    g = freqs[gamma]
    rest = np.take_along_axis(g, np.argsort(np.abs(g), axis=1)[:, 3:], axis=1)
    return float(min(rest.min(initial=np.inf), freqs[~gamma].min(initial=np.inf)))


def commensurate_lowest_THz(ph) -> float:
    """The lowest mode at the q-points commensurate with ``ph``'s supercell (Γ's acoustic
    modes aside; inf when Γ holds nothing else)."""
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    pmat = np.eye(3) if ph.primitive_matrix is None else np.asarray(ph.primitive_matrix)
    smat = np.rint(np.linalg.inv(pmat) @ np.asarray(ph.supercell_matrix)).astype(int)
    q = get_commensurate_points(smat)
    ph.run_qpoints(q)
    return lowest_mode_THz(q, ph.qpoints.frequencies)


#: the end of an imaginary entry's message when its commensurate q-points are all real
INTERPOLATION_NOTE = ("imaginary between them only: an interpolation artefact, or an "
                      "instability at a wavevector the supercell cannot hold")


def stability_flag(ph, lowest_THz: float, tol_THz: float) -> dict:
    """``status`` and ``message`` of an entry whose lowest mesh mode is ``lowest_THz``: ok, or
    imaginary below ``-tol_THz`` with :func:`imaginary_message` as the reason."""
    if lowest_THz < -tol_THz:
        return {"status": "imaginary", "message": imaginary_message(ph, lowest_THz, tol_THz)}
    return {"status": "ok", "message": ""}


def imaginary_message(ph, lowest_THz: float, tol_THz: float) -> str:
    """Why an entry is flagged: its lowest mesh mode and the lowest mode at the supercell's
    commensurate q-points, where the force constants are exact rather than interpolated.
    Imaginary on the mesh only: an artefact of interpolating the force constants of a
    supercell too small, or an instability at a wavevector the supercell cannot hold; a wider
    supercell tells them apart (BuildOptions.retry_supercell_length_A). Measured on the first
    147 entries SevenNet-0 flagged: 34 without a mode below -0.3 THz at any commensurate
    q-point (docs/usage.md)."""
    commensurate = commensurate_lowest_THz(ph)
    if not np.isfinite(commensurate):       # a one-atom cell as its own supercell: Γ only
        return f"lowest mode {lowest_THz:.2f} THz on the mesh (the supercell's only q-point is Γ)"
    if commensurate < -tol_THz:
        return (f"lowest mode {lowest_THz:.2f} THz on the mesh, {commensurate:.2f} THz at the "
                "supercell's commensurate q-points")
    return (f"lowest mode {lowest_THz:.2f} THz on the mesh but {commensurate:.2f} THz at the "
            f"supercell's commensurate q-points ({INTERPOLATION_NOTE})")


def entry_spectra(ph, opts: SpectraOptions) -> dict:
    """Every stored array of one entry from a phonopy object with force constants: DOS and
    element partials, VISION and TOSCA S(E) (with element partials for VISION), powder S(Q,E),
    and the lowest mesh frequency. The same engine as ``mlff-ins ins``."""
    from mlff_ins.ins.from_phonons import (InsOptions, indirect_arrays, member_modes,
                                           phonon_dos, site_table, two_d_arrays)

    ins = InsOptions(instrument="vision", temperature_K=opts.temperature_K,
                     n_phonon=opts.n_phonon, mesh=opts.mesh, e_max_meV=opts.e_max_meV,
                     e_step_meV=opts.e_step_meV, two_d=True, q_min=0.0, q_max=opts.q_max,
                     q_step=opts.q_step, e_max_2d_meV=opts.e_max_2d_meV,
                     e_step_2d_meV=opts.e_step_2d_meV, n_directions=opts.n_directions)
    sites = site_table(ph, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # soft modes are flagged below, not printed
        modes = member_modes(ph, ins, sites)
        dos = phonon_dos(modes, sites, opts.energy())          # per atom, area 3
        _, vision = indirect_arrays(modes, sites, ins)
        ins.instrument = "tosca"
        _, tosca = indirect_arrays(modes, sites, ins)
        _, _, two = two_d_arrays(modes, sites, ins)
    elements = list(dict.fromkeys(sites["symbols"]))
    partial = np.array([dos[f"vdos_{el}"] for el in elements])
    lowest = lowest_mode_THz(modes.qpoints, modes.freqs)
    return dict(
        elements=elements, dos=dos["vdos"], dos_partial=partial,
        vision=vision["s_e"],
        vision_partial=np.array([vision.get(f"s_e_{el}", vision["s_e"]) for el in elements]),
        tosca=tosca["s_e"], sqe=two["sqe"].astype(np.float32),
        lowest_THz=np.array(lowest))


def compute_entry(key: str, atoms, opts: BuildOptions, calc) -> dict:
    """One database entry (a dict of attributes and arrays); failures become ``status: failed``
    with a one-line reason instead of an exception."""
    from mlff_ins.phonons.finite_displacement import phonons_from_model, relax

    t0 = time.perf_counter()
    entry = dict(key=key, formula=atoms.get_chemical_formula(mode="metal"), status="ok",
                 message="")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            relaxed = (relax(atoms, calc, fmax=opts.fmax, steps=opts.relax_steps)
                       if opts.relax else atoms.copy())
            sc = supercell_for(relaxed, opts.supercell_length_A, opts.max_supercell_atoms)
            pset = phonons_from_model(relaxed, _forces_interface(calc), sc, primitive="P")
            ph = pset.mean      # a model-bundle teacher: its members' mean, as it was relaxed
            arrays = entry_spectra(ph, opts.spectra)
            tol = opts.spectra.imaginary_tol_THz
            if (opts.retry_supercell_length_A and arrays["lowest_THz"] < -tol
                    and commensurate_lowest_THz(ph) >= -tol):
                # imaginary only between the supercell's q-points: an interpolation artefact,
                # or an instability at a wavevector the supercell cannot hold, which a wider
                # supercell tells apart; its force constants are kept, whatever they give
                wider = supercell_for(relaxed, opts.retry_supercell_length_A,
                                      opts.max_supercell_atoms)
                if np.prod(wider) > np.prod(sc):
                    sc = wider
                    ph = phonons_from_model(relaxed, _forces_interface(calc), sc,
                                            primitive="P").mean
                    arrays = entry_spectra(ph, opts.spectra)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one crystal is recorded, not fatal
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        entry.update(status="failed", message=f"{type(exc).__name__}: {text}"[:500],
                     seconds=time.perf_counter() - t0)
        return entry
    entry.update(stability_flag(ph, float(arrays["lowest_THz"]), opts.spectra.imaginary_tol_THz))
    entry.update(arrays, numbers=relaxed.numbers, cell=np.array(relaxed.cell[:]),
                 positions=relaxed.positions, supercell_matrix=np.diag(sc),
                 force_constants=np.array(ph.force_constants), **teacher_arrays(ph.dataset),
                 seconds=time.perf_counter() - t0)
    return entry


def teacher_arrays(dataset: dict) -> dict:
    """The displacement dataset of phonopy (type 1) with its forces as three arrays; forces in
    float32 (the universal teachers compute in float32, so nothing is lost for them; for a
    float64 teacher the force constants move by ~1e-8 of their largest value)."""
    first = dataset["first_atoms"]
    return dict(
        displacement_atoms=np.array([d["number"] for d in first], dtype=np.int32),
        displacements=np.array([d["displacement"] for d in first], dtype=np.float64),
        forces=np.array([d["forces"] for d in first], dtype=np.float32))


def phonopy_of_record(record: dict):
    """A phonopy object with the force constants made from a record's displacements and
    forces, exactly as :func:`compute_entry` makes them (compact, symmetrized)."""
    from ase import Atoms

    from mlff_ins.phonons.finite_displacement import make_phonopy

    atoms = Atoms(numbers=record["numbers"], cell=record["cell"], positions=record["positions"],
                  pbc=True)
    ph = make_phonopy(atoms, np.asarray(record["supercell_matrix"]),
                      primitive=PHONOPY_SETTINGS["primitive"],
                      symprec=PHONOPY_SETTINGS["symprec"])
    forces = np.asarray(record["forces"], dtype=np.float64)
    if forces.ndim != 3 or forces.shape[1:] != (len(ph.supercell), 3) \
            or len(forces) != len(record["displacements"]):
        raise InputError(f"record {record.get('key', '?')}: forces of shape {forces.shape} do "
                         f"not fit a supercell of {len(ph.supercell)} atoms")
    ph.dataset = {"natom": len(ph.supercell),
                  "first_atoms": [{"number": int(i), "displacement": np.array(d, dtype=float),
                                   "forces": f}
                                  for i, d, f in zip(record["displacement_atoms"],
                                                     record["displacements"], forces)]}
    ph.produce_force_constants(calculate_full_force_constants=False, show_drift=False)
    if PHONOPY_SETTINGS["symmetrize"]:
        ph.symmetrize_force_constants(show_drift=False)
    return ph


def entry_from_record(record: dict, opts: SpectraOptions) -> dict:
    """A database entry rebuilt from a teacher record without the teacher: the force
    constants from the stored displacements and forces, then :func:`entry_spectra`."""
    entry = {k: record[k] for k in RECORD_ATTRS if k in record}
    entry["restored"] = True
    if record["status"] == "failed":
        return entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # as in compute_entry: phonopy's symmetry notes
        ph = phonopy_of_record(record)
    arrays = entry_spectra(ph, opts)
    entry.update(stability_flag(ph, float(arrays["lowest_THz"]), opts.imaginary_tol_THz))
    entry.update(arrays, force_constants=np.array(ph.force_constants),
                 **{k: record[k] for k in RECORD_ARRAYS})
    return entry


# --------------------------------------------------------------------------------------------
# storage

def parts_dir(db: str | os.PathLike) -> Path:
    return Path(str(db) + ".parts")


def _write_entry(group, entry: dict) -> None:
    for k in ("key", "formula", "status", "message", "teacher"):
        group.attrs[k] = str(entry.get(k, ""))
    group.attrs["seconds"] = float(entry.get("seconds", float("nan")))
    if "elements" in entry:
        group.attrs["elements"] = json.dumps(list(entry["elements"]))
    for k in ARRAYS + TEACHER_ARRAYS:
        if k in entry:
            value = np.asarray(entry[k])
            # spectra are mostly zeros above the highest mode: lossless gzip shrinks them
            extra = dict(compression="gzip", compression_opts=4, shuffle=True) \
                if value.size > 64 else {}
            group.create_dataset(k, data=value, **extra)


def write_part(db: str | os.PathLike, entry: dict) -> Path:
    """One finished entry as its own file in ``db.h5.parts/``, atomically."""
    import h5py

    path = parts_dir(db) / f"{entry_name(entry['key'])}.h5"
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _write_entry(f.create_group("entry"), entry)
    return path


def _read_part(path: Path):
    """``(key, status)`` of a finished part, or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = f["entry"].attrs
            return str(attrs["key"]), str(attrs.get("status", ""))
    except (OSError, KeyError):
        return None            # not a finished part (cannot happen with atomic moves)


def _write_grids(f, spectra: SpectraOptions, meta: dict) -> None:
    g = f.require_group("grids")
    for name, values in (("energy_meV", spectra.energy()),
                         ("q_invA", np.arange(0.0, spectra.q_max + 0.5 * spectra.q_step,
                                              spectra.q_step)),
                         ("energy_2d_meV", np.arange(0.0, spectra.e_max_2d_meV
                                                     + 0.5 * spectra.e_step_2d_meV,
                                                     spectra.e_step_2d_meV))):
        if name in g:
            del g[name]
        g.create_dataset(name, data=values)
    g.attrs["spectra_options"] = json.dumps(asdict(spectra))
    for k, v in meta.items():
        g.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def done_statuses(db: str | os.PathLike) -> dict[str, str]:
    """``{key: status}`` of every finished entry: in ``db.h5`` and in its parts folder."""
    import h5py

    statuses = {}
    db = Path(db)
    if db.is_file():
        with h5py.File(db, "r") as f:
            statuses.update((str(g.attrs["key"]), str(g.attrs.get("status", "")))
                            for g in f.get("entries", {}).values())
    parts = parts_dir(db)
    if parts.is_dir():
        statuses.update(kv for kv in (_read_part(p) for p in sorted(parts.glob("*.h5"))) if kv)
    return statuses


def done_keys(db: str | os.PathLike) -> set[str]:
    """Keys of every finished entry: in ``db.h5`` and in its parts folder."""
    return set(done_statuses(db))


def _same_teacher(a: str, b: str) -> bool:
    if a == b:
        return True
    try:      # one model folder or file named two ways
        return os.path.samefile(a, b)
    except OSError:
        return False


def _settings_file(db: str | os.PathLike) -> Path:
    """The settings of a build, written before its first entry: what its parts were computed
    with before the first merge has written ``db``'s /grids."""
    return parts_dir(db) / "build.json"


def _stored_settings(db: Path) -> tuple[str, dict] | None:
    """``(where, attributes)`` of the settings ``db``'s entries were computed with: ``db``'s
    /grids, or the parts folder's settings file when no merge has happened yet; None for a new
    database."""
    import h5py

    if db.is_file():
        try:
            with h5py.File(db, "r") as f:
                attrs = dict(f["grids"].attrs) if "grids" in f else None
        except OSError as exc:
            raise InputError(f"{db}: cannot open as HDF5 ({exc}); not a database") from None
        if attrs is None:
            raise InputError(f"{db}: exists and is not a database written by `database build` "
                             f"(no /grids); choose another -o")
        return str(db), attrs
    settings = _settings_file(db)
    if settings.is_file() and any(parts_dir(db).glob("*.h5")):
        try:
            return str(settings), json.loads(settings.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{settings}: unreadable build settings ({exc}); move the parts "
                             f"folder away to start afresh") from None
    return None


def _entry_teachers(db: Path) -> set[str]:
    """The teachers named by the finished entries of ``db`` and its parts (failed entries that
    never reached the teacher name none)."""
    import h5py

    names = set()
    if db.is_file():
        with h5py.File(db, "r") as f:
            names.update(str(g.attrs.get("teacher", "")) for g in f.get("entries", {}).values())
    if parts_dir(db).is_dir():
        for part in parts_dir(db).glob("*.h5"):
            with contextlib.suppress(OSError, KeyError), h5py.File(part, "r") as f:
                names.add(str(f["entry"].attrs.get("teacher", "")))
    return names - {""}


def check_same_build(db: str | os.PathLike, opts: BuildOptions) -> None:
    """Refuse to add to an existing ``db`` (or to the parts of a build not yet merged into it)
    built with another teacher (by name, or the same name at another version or content: a
    universal model's package upgraded, a bundle retrained in place, a calculator YAML edited),
    other spectra settings or other relaxation/supercell settings: its entries and grids would
    then disagree with each other. Also refuses a file that is not such a database."""
    db = Path(db)
    stored_settings = _stored_settings(db)
    if stored_settings is None:
        return
    where, attrs = stored_settings
    stored = str(attrs.get("teacher", ""))
    if not _same_teacher(stored, opts.teacher):
        raise InputError(f"{where}: built with the teacher {stored}, not {opts.teacher}; one "
                         f"database holds one teacher's entries (choose another -o)")
    desc = teacher_description(opts.teacher)
    other = sorted(_entry_teachers(db) - {desc})
    if other:
        raise InputError(f"{where}: its entries were computed by {other[0]}; the teacher "
                         f"{opts.teacher} is now {desc}; one database holds one teacher's "
                         f"entries (choose another -o)")
    mine = json.loads(json.dumps(asdict(opts.spectra)))
    theirs = json.loads(str(attrs.get("spectra_options", "{}")))
    built = json.loads(str(attrs.get("build_options", "{}")))
    now = json.loads(json.dumps({k: v for k, v in asdict(opts).items() if k != "spectra"}))
    # keys the database does not record (a later version's new settings) are not compared
    diff = [f"{k} {theirs[k]!r} (now {v!r})" for k, v in mine.items()
            if k in theirs and theirs[k] != v]
    diff += [f"{k} {built.get(k)!r} (now {v!r})" for k, v in now.items()
             if k not in ("teacher", "device") and k in built and built.get(k) != v]
    if diff:
        raise InputError(f"{where}: its entries were computed with " + ", ".join(diff) +
                         "; a build goes on with the settings it started with (or `database "
                         "respectra` for other spectra settings)")


def write_build_settings(db: str | os.PathLike, opts: BuildOptions, meta: dict) -> None:
    """The settings file of a build (:func:`_settings_file`), in the layout of /grids'
    attributes, so that a build killed before its first merge is checked on resume."""
    attrs = {"spectra_options": json.dumps(asdict(opts.spectra))}
    attrs.update({k: json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                  for k, v in meta.items()})
    write_json_atomic(_settings_file(db), attrs)


def consolidate(db: str | os.PathLike, spectra: SpectraOptions, meta: dict) -> int:
    """Merge the parts into ``db.h5`` (a new file moved into place), then remove them; returns
    the number of entries in the database. Safe to interrupt at any point."""
    import shutil

    import h5py

    db = Path(db)
    parts = sorted(parts_dir(db).glob("*.h5")) if parts_dir(db).is_dir() else []
    # a merge killed midway leaves its copy of the database behind (the build's lock is held:
    # no other merge of this database is running)
    for stale in db.parent.glob(f".{db.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    with atomic_path(db) as tmp:
        if db.is_file():
            shutil.copyfile(db, tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["creator"] = f"mlff-ins {__version__}"
            _write_grids(f, spectra, meta)
            entries = f.require_group("entries")
            for p in parts:
                with h5py.File(p, "r") as src:
                    name = p.stem
                    if name not in entries:
                        src.copy(src["entry"], entries, name=name)
            n = len(entries)
    for p in parts:
        p.unlink()
    return n


def _open_database(db: str | os.PathLike):
    """The database file, opened for reading, after checking that it is one."""
    import h5py

    db = Path(db)
    if not db.is_file():
        raise InputError(f"{db}: no such database")
    try:
        f = h5py.File(db, "r")
    except OSError as exc:
        raise InputError(f"{db}: not an HDF5 file ({exc})") from None
    if "grids" not in f or "entries" not in f:
        f.close()
        raise InputError(f"{db}: not an mlff-ins database (no /grids or /entries)")
    return f


def read_database(db: str | os.PathLike, status: tuple = ("ok",),
                  teacher_data: bool = False) -> tuple[dict, list[dict]]:
    """(grids, entries) of a consolidated database, entries with ``status`` in ``status``
    (None: all), each a dict of attributes and arrays; the teacher's displacements and forces
    (``TEACHER_ARRAYS``) only with ``teacher_data``."""
    with _open_database(db) as f:
        grids = {k: v[()] for k, v in f["grids"].items()}
        grids.update({k: str(v) for k, v in f["grids"].attrs.items()})
        out = []
        for name, g in f["entries"].items():
            if status is not None and str(g.attrs["status"]) not in status:
                continue
            e = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in g.attrs.items()}
            e["elements"] = json.loads(e.get("elements", "[]"))
            e.update({k: g[k][()] for k in g if teacher_data or k not in TEACHER_ARRAYS})
            e["name"] = name
            out.append(e)
    return grids, out


# --------------------------------------------------------------------------------------------
# teacher records

def record_of(entry: dict) -> dict:
    """The teacher record of an entry: what the teacher computed and nothing derived from it;
    failed entries keep only their key, status and message."""
    if entry["status"] == "failed":
        return {k: entry.get(k, "") for k in ("key", "status", "message")}
    missing = [k for k in RECORD_ARRAYS if k not in entry]
    if missing:
        raise InputError(f"entry {entry['key']}: no {', '.join(missing)} stored (a database "
                         "built before teacher records existed)")
    rec = {k: entry.get(k, "") for k in RECORD_ATTRS}
    rec.update({k: entry[k] for k in RECORD_ARRAYS})
    rec["forces"] = np.asarray(rec["forces"], dtype=np.float32)
    return rec


def _check_records_file(f, path) -> None:
    if f.attrs.get("format") != RECORDS_FORMAT or "records" not in f:
        raise InputError(f"{path}: not an mlff-ins teacher records file")
    if int(f.attrs.get("version", 0)) > RECORDS_VERSION:
        raise InputError(f"{path}: teacher records version {f.attrs['version']}; this "
                         f"mlff-ins {__version__} reads up to {RECORDS_VERSION}")


def _open_records(path: Path):
    """A teacher records file opened for reading, after checking that it is one."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not an HDF5 file ({str(exc).splitlines()[0]}); a teacher "
                         f"records file (--records) is one") from None
    try:
        _check_records_file(f, path)
    except BaseException:
        f.close()
        raise
    return f


def record_keys(path: str | os.PathLike) -> dict:
    """``{name: key}`` of every record of a records file (empty when there is no file)."""
    path = Path(path)
    if not path.exists():
        return {}
    with _open_records(path) as f:
        return {name: str(g.attrs["key"]) for name, g in f["records"].items()}


def record_teachers(path: str | os.PathLike) -> set[str]:
    """The teachers named by the records of a records file (failed records name none)."""
    path = Path(path)
    if not path.exists():
        return set()
    with _open_records(path) as f:
        return {str(g.attrs["teacher"]) for g in f["records"].values()
                if str(g.attrs.get("teacher", ""))}


def read_records(path: str | os.PathLike, names=None) -> list[dict]:
    """The records (dicts of attributes and arrays) of a records file, those named by
    ``names`` only when given."""
    path = Path(path)
    with _open_records(path) as f:
        group = f["records"]
        out = []
        for name in (group if names is None else names):
            g = group[name]
            rec = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in g.attrs.items()}
            rec.update({k: g[k][()] for k in g})
            out.append(rec)
    return out


@contextlib.contextmanager
def _folder_lock(path: Path):
    """Serialise the read-copy-replace of files in one folder between processes (two builds
    sharing a records file must not drop each other's records). Yields whether the lock is
    held (not where flock is missing or fails)."""
    try:
        import fcntl

        fd = os.open(path.parent, os.O_RDONLY)
    except (ImportError, OSError):
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = True
        except OSError:
            held = False
        yield held
    finally:
        os.close(fd)        # releases the lock


#: the build options that shape the teacher's work (the relaxation and the supercell); a
#: records file keeps those it was started with (attribute ``build_options``)
TEACHER_OPTIONS = ("relax", "fmax", "relax_steps", "supercell_length_A", "max_supercell_atoms",
                   "retry_supercell_length_A")


def teacher_options(build_options: dict) -> dict:
    return {k: build_options[k] for k in TEACHER_OPTIONS if k in build_options}


def records_build_options(path: str | os.PathLike) -> dict | None:
    """The teacher-side build options a records file was started with (None: not recorded,
    files written before they were)."""
    import h5py

    path = Path(path)
    if not path.exists():
        return None
    with h5py.File(path, "r") as f:
        text = f.attrs.get("build_options")
    return None if text is None else json.loads(str(text))


def append_records(path: str | os.PathLike, entries, *, compact: bool = False,
                   build_options: dict | None = None, replace: bool = False) -> int:
    """Add the teacher records of ``entries`` not yet in the records file ``path`` (created
    when missing); returns how many were added. The new file is written beside ``path`` and
    moved onto it, so ``path`` is always a whole file, with or without the new records, and a
    record is never there twice (its name is its key's hash). The old file is copied and the
    records added to the copy, which leaves a few kB of unused space per call in the file;
    ``compact`` writes every record into a fresh file instead (raw chunk copies, no
    recompression), which the build does whenever it consolidates. ``build_options`` (the
    build's, :data:`TEACHER_OPTIONS` kept) are stored when the file has none yet. ``replace``:
    the records of ``entries`` replace those of the same keys (the teacher's work on an entry
    done again, e.g. in a wider supercell); the file is then written afresh."""
    import shutil

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path) as locked:
        # what a killed writer left behind (no other writer runs while the lock is held)
        for stale in path.parent.glob(f".{path.name}.*.tmp") if locked else ():
            stale.unlink(missing_ok=True)
        present = record_keys(path)
        new = {}
        for e in entries:
            name = entry_name(e["key"])
            if (name not in present or replace) and name not in new:
                new[name] = record_of(e)
        compact = compact or (replace and any(name in present for name in new))
        missing_options = build_options is not None and records_build_options(path) is None
        if not new and path.exists() and not compact and not missing_options:
            return 0
        with atomic_path(path) as tmp:
            fresh = compact or not path.exists()
            if not fresh:
                shutil.copyfile(path, tmp)
            # HDF5 1.10's object headers: half the size of 1.8's per record
            with h5py.File(tmp, "w" if fresh else "a", libver=("v110", "latest")) as f:
                f.attrs["format"] = RECORDS_FORMAT
                f.attrs["version"] = RECORDS_VERSION
                f.attrs["creator"] = f"mlff-ins {__version__}"
                f.attrs["phonopy"] = json.dumps(PHONOPY_SETTINGS)
                group = f.require_group("records")
                if fresh and path.exists():
                    with h5py.File(path, "r") as src:
                        for name, g in src["records"].items():
                            if name not in new:      # a replaced record is not copied
                                src.copy(g, group, name=name)
                        if "build_options" in src.attrs:
                            f.attrs["build_options"] = src.attrs["build_options"]
                if build_options is not None and "build_options" not in f.attrs:
                    f.attrs["build_options"] = json.dumps(teacher_options(build_options))
                for name, rec in new.items():
                    _write_record(group.create_group(name), rec)
            with open(tmp, "rb") as fh:       # on disk before it replaces the old file
                os.fsync(fh.fileno())
    return len(new)


def _write_record(g, rec: dict) -> None:
    for k in RECORD_ATTRS:
        if k in rec:
            g.attrs[k] = float(rec[k]) if k == "seconds" else str(rec[k])
    for k in RECORD_ARRAYS:
        if k in rec:
            value = np.asarray(rec[k])
            # gzip at its highest level: the forces are most of a file meant for git
            extra = dict(compression="gzip", compression_opts=9, shuffle=True) \
                if value.size > 64 else {}
            g.create_dataset(k, data=value, **extra)


def export_records(db: str | os.PathLike, out: str | os.PathLike, strict: bool = True) -> dict:
    """Add the teacher record of every entry of database ``db`` (and of its unmerged parts) not
    yet in the records file ``out``; returns counts (added, already there, lacking the
    displacement data). ``strict``: refuse a database none of whose computed entries holds the
    displacements and forces."""
    import h5py

    db = Path(db)
    read_database(db, status=())                 # the checks and messages of a database
    present = set(record_keys(out).values())
    groups = [(db, "entries/" + name) for name in _group_names(db, "entries")]
    parts = parts_dir(db)
    groups += [(p, "entry") for p in (sorted(parts.glob("*.h5")) if parts.is_dir() else [])]
    new, seen, computed, lacking = [], set(), 0, 0
    for path, where in groups:
        with h5py.File(path, "r") as f:
            g = f[where]
            key = str(g.attrs["key"])
            if key in seen:                       # merged into db.h5 but not yet removed
                continue
            seen.add(key)
            failed = str(g.attrs["status"]) == "failed"
            computed += not failed
            if not failed and not all(k in g for k in RECORD_ARRAYS):
                lacking += 1
                continue
            if key in present:
                continue
            e = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in g.attrs.items()}
            e.update({k: g[k][()] for k in RECORD_ARRAYS if k in g})
            new.append(e)
    if strict and lacking and lacking == computed:
        raise InputError(f"{db}: none of its {computed} computed entries holds the teacher's "
                         f"displacement data ({', '.join(TEACHER_ARRAYS)}; databases built "
                         "before mlff-ins kept teacher records lack it), so there are no "
                         "records to export: rebuild with `database build --records FILE`")
    with h5py.File(db, "r") as f:
        built = json.loads(str(f["grids"].attrs.get("build_options", "null"))) \
            if "grids" in f else None
    added = append_records(out, new, build_options=built) \
        if new or not Path(out).exists() else 0
    return {"added": added, "present": len(seen) - len(new) - lacking, "lacking": lacking}


def _group_names(path: Path, group: str) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        return list(f.get(group, {}))


# --------------------------------------------------------------------------------------------
# the build loop

_WORKER_TEACHER = {}
#: one entry at a time in a process: a dask worker runs tasks in several threads by default, and
#: they would share one teacher (its neighbour list and buffers) and the lazy loading of
#: periodictable's neutron tables, neither of which is thread-safe (measured: entries recorded
#: as failed with AttributeErrors of half-built objects)
_TASK_LOCK = threading.Lock()


def _worker_init(teacher: str, device: str, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _task(key: str, atoms_dict: dict | None, opts: BuildOptions,
          record: dict | None = None) -> dict:
    """One entry in whatever process runs it; the teacher is loaded once per process. With a
    teacher ``record`` the entry is rebuilt from it and the teacher is not touched."""
    from ase import Atoms

    with _TASK_LOCK:
        if record is not None:
            return entry_from_record(record, opts.spectra)
        if opts.teacher not in _WORKER_TEACHER:
            _WORKER_TEACHER[opts.teacher] = load_teacher(opts.teacher, opts.device,
                                                         workdir=f".teacher-{os.getpid()}")
        calc, desc = _WORKER_TEACHER[opts.teacher]
        entry = compute_entry(key, Atoms(**atoms_dict), opts, calc)
        entry["teacher"] = desc
        return entry


def _atoms_dict(atoms) -> dict:
    return dict(numbers=atoms.numbers.tolist(), cell=np.array(atoms.cell[:]).tolist(),
                positions=atoms.positions.tolist(), pbc=True)


def _task_args(item) -> tuple:
    """``_task``'s arguments for a to-do item: ``(key, atoms)`` or ``(key, record dict)``."""
    key, what = item
    if isinstance(what, dict):
        return key, None, what
    return key, _atoms_dict(what), None


def build_database(structures, db: str | os.PathLike, opts: BuildOptions, **kwargs) -> dict:
    """:func:`_build_database`, one build per database at a time: a second build of the same
    ``db`` (which would merge parts the first is merging, and lose some) is refused. The lock is
    a hidden file next to ``db``, kept; it goes with the process that holds it."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(db.parent / f".{db.name}.lock",
                        f"{db}: another `database build` is writing this database; wait for "
                        f"it or stop it first"):
        return _build_database(structures, db, opts, **kwargs)


def _build_database(structures, db: str | os.PathLike, opts: BuildOptions, *, workers: int = 1,
                    dask: str | None = None, limit: int | None = None,
                    consolidate_every: int = 20, progress: bool = True,
                    records: str | os.PathLike | None = None,
                    stable_parents: bool = False) -> dict:
    """Compute every structure ``(key, atoms)`` of ``structures`` not yet in ``db``; returns a
    summary (entries added, failures, database size). With ``records`` (a teacher records
    file) every recorded entry missing from ``db`` is first rebuilt from its record without
    the teacher (whether or not it is in ``structures``; ``limit`` does not count them), and
    every entry the teacher computes is added to the records file before it is saved.
    ``stable_parents``: substitutions (:func:`~mlff_ins.predict.sources.parent_key`) come after
    every other structure, and only those whose prototype's entry is ``ok`` are computed (the
    rest are counted as ``skipped_parent``: their prototype has imaginary modes, failed, or is
    neither in ``db`` nor in ``structures``)."""
    from tqdm.auto import tqdm

    from mlff_ins.predict.sources import parent_key

    db = Path(db)
    structures = list(structures)
    check_teacher(opts.teacher)
    check_same_build(db, opts)
    statuses = done_statuses(db)
    done = set(statuses)
    restore = []
    if records is not None:
        records = Path(records)
        mine = teacher_description(opts.teacher)
        other = sorted(record_teachers(records) - {mine})
        if other:
            raise InputError(f"{records}: records made with the teacher {other[0]}, not this "
                             f"build's {mine}; one records file holds one teacher's work "
                             f"(choose another --records file)")
        now = teacher_options(asdict(opts))
        theirs = records_build_options(records) or {}
        diff = [f"{k} {theirs[k]!r} (now {v!r})" for k, v in now.items()
                if k in theirs and theirs[k] != v]
        if diff:
            raise InputError(f"{records}: its records were computed with " + ", ".join(diff) +
                             "; restored entries would differ from new ones (choose another "
                             "--records file, or build with those settings)")
        missing = [name for name, key in record_keys(records).items() if key not in done]
        restore = [(r["key"], r) for r in read_records(records, missing)] if missing else []
        if any(r["status"] == "failed" for _, r in restore):
            # failed records keep no structure: name them after the source's structure
            formulas = {k: a.get_chemical_formula(mode="metal") for k, a in structures}
            for _, r in restore:
                r.setdefault("formula", formulas.get(r["key"], ""))
        # an empty records file now (the path is writable), or the options in an older one
        append_records(records, [], build_options=asdict(opts))
    restored = {k for k, _ in restore}
    todo = [(k, a) for k, a in structures if k not in done and k not in restored]
    later = []
    if stable_parents:
        later = [(k, a) for k, a in todo if parent_key(k) is not None]
        todo = [(k, a) for k, a in todo if parent_key(k) is None]
    if limit is not None:
        todo = todo[:limit]
    room = len(later) if limit is None else max(0, limit - len(todo))   # for substitutions
    todo = restore + todo
    meta = {"teacher": opts.teacher, "teacher_description": teacher_description(opts.teacher),
            "code_version": __version__,
            "build_options": {k: v for k, v in asdict(opts).items() if k != "spectra"}}
    write_build_settings(db, opts, meta)
    bar = tqdm(total=len(todo) + min(len(later), room), unit="entry", desc="database",
               disable=not progress, dynamic_ncols=True)
    counts = {"ok": 0, "imaginary": 0, "failed": 0, "restored": 0}
    since = 0
    merged = len(done)      # a merge copies the database: merge less often as it grows
    skipped_parent = 0

    def finished(entry):
        nonlocal since, merged
        statuses[entry["key"]] = entry["status"]
        if entry.pop("restored", False):
            counts["restored"] += 1
        elif records is not None:
            # first: a kill in between loses no teacher work
            append_records(records, [entry], build_options=asdict(opts))
        write_part(db, entry)
        counts[entry["status"]] += 1
        since += 1
        bar.set_postfix_str(f"{entry['formula']} {entry['status']}", refresh=False)
        bar.update(1)
        if since >= max(consolidate_every, merged // 10):
            merged = consolidate(db, opts.spectra, meta)
            if records is not None:
                append_records(records, [], compact=True)
            since = 0

    def run(items):
        if not items:
            return
        if dask:
            _run_dask(dask, items, opts, finished)
        elif workers > 1:
            _run_processes(workers, items, opts, finished)
        else:
            for item in items:
                key, atoms_dict, record = _task_args(item)
                finished(_task(key, atoms_dict, opts, record))

    try:
        run(todo)
        if later and room:
            # every prototype is finished now: substitute only the stable ones
            keep = [(k, a) for k, a in later if statuses.get(parent_key(k)) == "ok"]
            skipped_parent = len(later) - len(keep)
            keep = keep[:room]
            bar.total = len(todo) + len(keep)
            bar.refresh()
            run(keep)
    finally:
        bar.close()
        added = counts["ok"] + counts["imaginary"] + counts["failed"]
        n = consolidate(db, opts.spectra, meta) if added or \
            (parts_dir(db).is_dir() and any(parts_dir(db).glob("*.h5"))) else len(done)
    exported = {}
    if records is not None:
        if done and db.is_file():
            # entries computed before this records file was used (or by a build without it)
            exported = export_records(db, records, strict=False)
        if added - counts["restored"] or exported.get("added"):
            append_records(records, [], compact=True)
    return {"added": added, **counts, "entries": n, "skipped_done": len(done),
            "skipped_parent": skipped_parent,
            "records_exported": exported.get("added", 0),
            "records_lacking": exported.get("lacking", 0)}


def _run_processes(workers: int, todo, opts, finished) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init,
                             initargs=(opts.teacher, opts.device, threads)) as pool:
        items = iter(todo)
        pending = set()
        # keep the pool a little ahead of the workers, not the whole list in flight
        for item in items:
            key, atoms_dict, record = _task_args(item)
            pending.add(pool.submit(_task, key, atoms_dict, opts, record))
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished_now, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished_now:
                finished(fut.result())
                nxt = next(items, None)
                if nxt is not None:
                    key, atoms_dict, record = _task_args(nxt)
                    pending.add(pool.submit(_task, key, atoms_dict, opts, record))


def _run_dask(address: str, todo, opts, finished) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("--dask needs dask.distributed (pip install 'mlff-ins[database]')") \
            from None
    try:
        client = Client(address, timeout=30)
    except OSError as exc:
        raise InputError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
    with client:
        futures = []
        for item in todo:
            key, atoms_dict, record = _task_args(item)
            futures.append(client.submit(_task, key, atoms_dict, opts, record,
                                         key=f"entry-{entry_name(key)}", pure=False))
        for fut in as_completed(futures):
            finished(fut.result())
            fut.release()


# --------------------------------------------------------------------------------------------
# spectra again, from the stored force constants

def phonopy_of_entry(entry: dict):
    """A phonopy object carrying an entry's stored force constants (no teacher needed)."""
    from ase import Atoms

    from mlff_ins.phonons.finite_displacement import make_phonopy

    atoms = Atoms(numbers=entry["numbers"], cell=entry["cell"], positions=entry["positions"],
                  pbc=True)
    ph = make_phonopy(atoms, np.diag(entry["supercell_matrix"]), primitive="P")
    ph.force_constants = entry["force_constants"]
    return ph


def stored_spectra_options(db: str | os.PathLike) -> SpectraOptions:
    """The grids and conditions the spectra of database ``db`` were computed with."""
    with _open_database(db) as f:
        stored = json.loads(str(f["grids"].attrs.get("spectra_options", "{}")))
    known = {k: v for k, v in stored.items() if k in SpectraOptions.__dataclass_fields__}
    return SpectraOptions(**known)


def respectra(db: str | os.PathLike, out: str | os.PathLike,
              spectra: SpectraOptions | None = None, progress: bool = True,
              **changes) -> int:
    """A copy of database ``db`` with every spectrum recomputed from the stored force constants
    for new grids or temperature; written to ``out`` atomically. ``spectra``: the options of
    the new spectra; by default the database's own (:func:`stored_spectra_options`) with
    ``changes`` (fields of :class:`SpectraOptions`, e.g. ``temperature_K=300``) applied.
    Returns the entry count."""
    import h5py
    from tqdm.auto import tqdm

    if spectra is None:
        from dataclasses import replace

        bad = sorted(set(changes) - set(SpectraOptions.__dataclass_fields__))
        if bad:
            raise TypeError(f"respectra: unknown spectra options {bad}")
        spectra = replace(stored_spectra_options(db), **changes)
    elif changes:
        raise TypeError("respectra: give either spectra or changes to the stored options")
    if parts_dir(db).is_dir() and any(parts_dir(db).glob("*.h5")):
        raise InputError(f"{db}: entries of a build are still in {parts_dir(db)} (a build "
                         f"running, or killed before its last merge: rerun it to finish)")
    grids, entries = read_database(db, status=None, teacher_data=True)
    lacking = [e["key"] for e in entries
               if e.get("status") != "failed" and "force_constants" not in e]
    if lacking:
        raise InputError(f"{db}: {len(lacking)} entries with spectra but no force constants "
                         f"(e.g. {lacking[0]}); their spectra cannot be recomputed")
    meta = {k: grids[k] for k in ("teacher", "teacher_description", "code_version")
            if k in grids}
    if "build_options" in grids:    # kept: a later build into the output checks against them
        meta["build_options"] = json.loads(grids["build_options"])
    meta["respectra_of"] = str(db)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["creator"] = f"mlff-ins {__version__}"
            _write_grids(f, spectra, meta)
            g = f.create_group("entries")
            for e in tqdm(entries, unit="entry", desc="respectra", disable=not progress):
                if e.get("status") != "failed":
                    ph = phonopy_of_entry(e)
                    e.update(entry_spectra(ph, spectra))
                    e.update(stability_flag(ph, float(e["lowest_THz"]),
                                            spectra.imaginary_tol_THz))
                _write_entry(g.create_group(e["name"]), e)
    return len(entries)


def database_summary(db: str | os.PathLike) -> str:
    """A few lines on a database, or on a teacher records file (--records): entries by status,
    elements, teacher, median seconds."""
    import collections

    if _is_records_file(db):
        return _records_summary(Path(db))
    grids, entries = read_database(db, status=None)
    status = collections.Counter(e["status"] for e in entries)
    elements = sorted({el for e in entries if e["status"] == "ok" for el in e["elements"]})
    seconds = [e["seconds"] for e in entries if e["status"] != "failed"]
    lines = [f"{db}: {len(entries)} entries ({', '.join(f'{n} {k}' for k, n in status.items())})",
             f"teacher: {grids.get('teacher', '?')}",
             f"elements in ok entries ({len(elements)}): {' '.join(elements)}"]
    if seconds:
        lines.append(f"seconds per entry: median {np.median(seconds):.1f}, "
                     f"total {np.sum(seconds) / 3600:.2f} h")
    between = [e for e in entries if e["status"] == "imaginary"
               and INTERPOLATION_NOTE in str(e.get("message", ""))]
    if between:
        lines.append(f"imaginary on the mesh but real at the supercell's q-points: "
                     f"{len(between)} of {status['imaginary']}, e.g. "
                     + ", ".join(e["key"] for e in between[:5]))
    failed = [e for e in entries if e["status"] == "failed"]
    for e in failed[:5]:
        lines.append(f"failed: {e['key']} ({e['formula']}): {e['message']}")
    return "\n".join(lines)


def _is_records_file(path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == RECORDS_FORMAT
    except OSError:
        return False


def _records_summary(path: Path) -> str:
    """`database info` of a teacher records file: its attributes and the atoms of each record,
    not the forces."""
    import collections

    from ase.data import chemical_symbols

    with _open_records(path) as f:
        recs = []
        for g in f["records"].values():
            rec = {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in g.attrs.items()}
            rec["numbers"] = g["numbers"][()] if "numbers" in g else []
            recs.append(rec)
    status = collections.Counter(r["status"] for r in recs)
    teachers = sorted({r["teacher"] for r in recs if r.get("teacher")})
    elements = sorted({chemical_symbols[int(z)] for r in recs if r["status"] == "ok"
                       for z in r["numbers"]})
    seconds = [float(r["seconds"]) for r in recs if r["status"] != "failed" and "seconds" in r]
    lines = [f"{path}: teacher records of {len(recs)} entries "
             f"({', '.join(f'{n} {k}' for k, n in status.items())})",
             f"teacher: {', '.join(teachers) or '?'}",
             f"elements in ok entries ({len(elements)}): {' '.join(elements)}"]
    if seconds:
        lines.append(f"seconds per entry: median {np.median(seconds):.1f}, "
                     f"total {np.sum(seconds) / 3600:.2f} h")
    for r in [r for r in recs if r["status"] == "failed"][:5]:
        lines.append(f"failed: {r['key']}: {r.get('message', '')}")
    return "\n".join(lines)
