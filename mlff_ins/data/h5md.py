"""H5MD 1.1 trajectories: the one place that knows the file layout (writer and reader helpers).

Layout (readable by MDAnalysis' H5MD reader, which expects the particle group ``trajectory``):

    /h5md                         version [1, 1], author, creator
    /particles/trajectory/
        species                   (N,) atomic numbers
        mass                      (N,) atomic masses, amu (isotopes as the run used them)
        position|velocity|force/  value (T, N, 3), step (T,), time (T,)   Å, Å/fs, kJ/(mol Å)
        box/edges/                value (T, 3, 3) rows are lattice vectors, step, time   Å
    /observables/NAME/            value (T,), step, time   (potential_energy eV, temperature K, ...)
    /parameters/md_settings/      value (T,) JSON text: the run settings each frame was made with

The step and time datasets of every element are hard links to those of ``position`` (H5MD
allows elements to share them), so a frame costs one write of each.

Crash safety. The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, in which
the library orders its metadata writes so that the file on disk is consistent at every moment: a
SIGKILL at any point leaves a readable file. A frame is written in two flushes: first every
value and the step, then the time. The time dataset's fill value is NaN, so a frame counts as
complete only once its time is on disk, after all its data. A file that was not closed cleanly
(HDF5 then marks it "open for write") or that comes from an older version is rebuilt on resume:
its complete frames are copied into a new file that replaces it atomically, so a kill during the
rebuild leaves the original untouched. While a run is going, or after a kill, readers open the
file in SWMR read mode (:func:`open_h5md`); after a clean close any HDF5 reader opens it.

Forces are stored in kJ mol⁻¹ Å⁻¹ (1 eV/Å = 96.485 kJ mol⁻¹ Å⁻¹) because MDAnalysis' reader knows
no eV-based force unit; :func:`read_forces` returns them in eV/Å.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path, exclusive_lock
from mlff_ins.errors import InputError
from mlff_ins.hdf5_files import refuse_outside_references

GROUP = "particles/trajectory"
SETTINGS = "parameters/md_settings"
SETTINGS_BYTES = 4096
UNITS = {"position": "Angstrom", "velocity": "Angstrom fs-1", "force": "kJ mol-1 Angstrom-1",
         "edges": "Angstrom"}
KJ_PER_MOL_PER_EV = 96.48533212331002
OBSERVABLE_UNITS = {"potential_energy": "eV", "kinetic_energy": "eV", "total_energy": "eV",
                    "temperature": "K", "pressure": "GPa", "volume": "Angstrom^3",
                    "max_force_std": "eV Angstrom-1", "conserved_energy": "eV"}
_COPY_FRAMES = 256   # frames per block when a file is rebuilt


def _is_open_for_write(exc: OSError) -> bool:
    return "open for write" in str(exc)


@contextlib.contextmanager
def open_h5md(path: str | Path):
    """Open a trajectory for reading, also while a writer holds it or after a writer was killed
    (SWMR read mode). Raises :class:`InputError` naming the file if it is not HDF5."""
    import h5py

    path = Path(path)
    # no file lock: a reader must never make a writer's open (md --resume) fail; the writer
    # replaces a file only by an atomic rename, so a reader sees the old or the new one
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        if not _is_open_for_write(exc):
            raise InputError(f"{path}: cannot open as HDF5 ({exc})") from None
        try:
            f = h5py.File(path, "r", swmr=True, locking=False)
        except OSError as exc2:
            raise InputError(f"{path}: cannot open as HDF5 ({exc2})") from None
    try:
        refuse_outside_references(f, path, max_bytes=None)   # read frame by frame
        yield f
    finally:
        f.close()


def _value_datasets(f):
    g = f.get(GROUP)
    if g is not None:
        for name in ("position", "velocity", "force"):
            if name in g and "value" in g[name]:
                yield g[name]["value"]
        edges = g.get("box/edges")
        if edges is not None and "value" in edges:
            yield edges["value"]
    obs = f.get("observables")
    if obs is not None:
        for grp in obs.values():
            if "value" in grp:
                yield grp["value"]
    if SETTINGS in f:
        yield f[SETTINGS]["value"]


def complete_frames(f) -> int | None:
    """Number of complete frames in an open h5py trajectory (None if it has no position).

    The shortest time-dependent dataset bounds it; in files of this writer a frame whose time
    is still NaN (the fill value) was being written when the writer stopped and does not count.
    Files of older versions carry ``n_frames_complete``, which bounds it too.
    """
    g = f.get(GROUP)
    if g is None or "position" not in g or "value" not in g["position"]:
        return None
    n = min(ds.shape[0] for ds in _value_datasets(f))
    if "time" in g["position"] and g["position/time"].ndim == 1:   # scalar: a fixed interval
        times = g["position/time"]
        n = min(n, times.shape[0])
        unwritten = np.flatnonzero(~np.isfinite(times[:n]))
        if len(unwritten):
            n = int(unwritten[0])
    if "n_frames_complete" in g.attrs:
        n = min(n, int(g.attrs["n_frames_complete"]))
    return int(n)


class H5MDWriter:
    """Append frames to an H5MD file; ``resume=True`` continues an existing file.

    ``observables`` names the per-frame values that every :meth:`append` provides: a name for a
    scalar, or ``(name, size)`` for a vector of ``size`` numbers. An observable missing from a
    file being resumed is added, NaN for the frames already there. ``masses`` (amu, one per
    atom) are stored as H5MD's ``mass`` element; by default the standard atomic masses.
    """

    def __init__(self, path: str | Path, symbols: list[str], *, velocities: bool = True,
                 forces: bool = True, observables: tuple[str, ...] = (), resume: bool = False,
                 masses=None):
        import h5py
        from ase.data import atomic_masses, atomic_numbers

        self.path = Path(path)
        self.fields = ["position"] + (["velocity"] if velocities else []) + (
            ["force"] if forces else [])
        self.shapes = dict((o, ()) if isinstance(o, str) else (o[0], (int(o[1]),))
                           for o in observables)
        self.observables = tuple(self.shapes)
        self.species = np.array([atomic_numbers[s] for s in symbols])
        self.masses = (atomic_masses[self.species] if masses is None
                       else np.asarray(masses, dtype=float))
        self._handles = None
        self.file = None
        # one writer at a time: HDF5 cannot tell a running writer from a killed one (both leave
        # "open for write"), and a second `md --resume` would rebuild the file under the first.
        # The lock is a hidden file next to the trajectory (kept: deleting it would let two
        # writers hold locks on different files); it goes with the process that holds it.
        self._lock = contextlib.ExitStack()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.enter_context(exclusive_lock(
            self.path.parent / f".{self.path.name}.lock",
            f"{self.path}: another process is writing this trajectory (an `mlff-ins md` still "
            f"running?); wait for it or stop it before resuming"))
        try:
            if resume and self.path.exists():
                self.file = self._reopen()
            else:
                with atomic_path(self.path) as tmp:
                    with h5py.File(tmp, "w", libver="latest") as f:
                        self._skeleton(f)
                self.file = h5py.File(self.path, "r+", libver="latest")
                self.file.swmr_mode = True
        except BaseException:
            self._lock.close()
            raise
        self.n_frames = complete_frames(self.file)

    # --- layout -------------------------------------------------------------------------
    def _skeleton(self, f, attrs: dict | None = None) -> None:
        """Create the empty layout in the open file ``f``."""
        h = f.create_group("h5md")
        h.attrs["version"] = np.array([1, 1])
        h.create_group("author").attrs["name"] = "mlff-ins"
        c = h.create_group("creator")
        c.attrs["name"], c.attrs["version"] = "mlff-ins", __version__
        g = f.create_group(GROUP)
        g.create_dataset("species", data=self.species)
        g.create_dataset("mass", data=self.masses).attrs["unit"] = "amu"
        n = len(self.species)
        # every element shares the position's step and time datasets (hard links, as H5MD
        # allows): one resize and write of each per frame instead of one per element
        clock = self._series(g.create_group(self.fields[0]), (n, 3), UNITS[self.fields[0]])
        for name in self.fields[1:]:
            self._series(g.create_group(name), (n, 3), UNITS[name], clock)
        box = g.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        self._series(box.create_group("edges"), (3, 3), UNITS["edges"], clock)
        obs = f.create_group("observables")
        for name, shape in self.shapes.items():
            self._series(obs.create_group(name), shape, OBSERVABLE_UNITS.get(name, ""), clock)
        self._series(f.create_group(SETTINGS), (), "", clock, dtype=f"S{SETTINGS_BYTES}")
        for key, value in (attrs or {}).items():
            f["parameters"].attrs[key] = value

    @staticmethod
    def _series(group, shape, unit, clock=None, dtype="f8"):
        """Create a time series (value, step, time) in ``group``; with ``clock`` (the step and
        time datasets of another series) step and time are hard links to those. Returns the
        series' (step, time) datasets."""
        v = group.create_dataset("value", shape=(0,) + shape, maxshape=(None,) + shape,
                                 dtype=dtype, chunks=(1,) + shape if shape else (256,))
        v.attrs["unit"] = unit
        if clock is not None:
            group["step"], group["time"] = clock
            return clock
        st = group.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8",
                                  chunks=(256,))
        # NaN marks a frame not yet complete: the time is the last thing written
        t = group.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,),
                                 fillvalue=np.nan)
        t.attrs["unit"] = "fs"
        return st, t

    def _reopen(self):
        """Open the existing file for appending, in SWMR mode; rebuild it first unless it was
        closed cleanly by this version with every frame complete and every series present."""
        import h5py

        try:
            f = h5py.File(self.path, "r+", libver="latest")
        except OSError as exc:
            if not _is_open_for_write(exc):
                raise InputError(f"{self.path}: cannot open as HDF5 ({exc})") from None
            # a writer was killed (one still running holds the lock taken in __init__)
            f = None
        if f is not None:
            if GROUP not in f:
                f.close()
                raise InputError(f"{self.path}: not a trajectory written by mlff-ins md "
                                 f"(no /{GROUP})")
            self._check_atoms(f)
            ok = (SETTINGS in f and "mass" in f[GROUP]
                  and all(name in f[GROUP] for name in self.fields)
                  and all(name in f["observables"] for name in self.observables)
                  and "n_frames_complete" not in f[GROUP].attrs
                  and len({ds.shape[0] for ds in _value_datasets(f)}
                          | {complete_frames(f)}) == 1)
            if ok:
                try:
                    f.swmr_mode = True   # fails on files of older HDF5 layouts
                    return f
                except (OSError, ValueError, RuntimeError):
                    pass
            f.close()
        self._rebuild()
        f = h5py.File(self.path, "r+", libver="latest")
        f.swmr_mode = True
        return f

    def _check_atoms(self, f) -> None:
        """Refuse a file whose atoms (species, masses) are not those being written."""
        g = f[GROUP]
        stored = [int(z) for z in g["species"][()]]
        if stored != [int(z) for z in self.species]:
            raise InputError(f"{self.path}: the trajectory holds other atoms than the "
                             f"structure being resumed")
        if "mass" in g and masses_differ(g["mass"][()], self.masses):
            raise InputError(f"{self.path}: the trajectory was run with other atomic masses "
                             f"(isotopes) than this run")

    def _rebuild(self) -> None:
        """Copy the complete frames into a fresh file that atomically replaces the old one."""
        import h5py

        with open_h5md(self.path) as src:
            if GROUP not in src:
                raise InputError(f"{self.path}: not a trajectory written by mlff-ins md")
            self._check_atoms(src)
            n = complete_frames(src)
            attrs = dict(src["parameters"].attrs) if "parameters" in src else {}
            with atomic_path(self.path) as tmp:
                with h5py.File(tmp, "w", libver="latest") as dst:
                    self._skeleton(dst, attrs)
                    pairs = [(src[GROUP][k]["value"], dst[GROUP][k]["value"])
                             for k in self.fields]
                    pairs.append((src[GROUP]["box/edges/value"], dst[GROUP]["box/edges/value"]))
                    pairs += [(src["observables"][k]["value"] if k in src.get("observables", {})
                               else None, dst["observables"][k]["value"])
                              for k in self.observables]
                    pairs.append((src[SETTINGS]["value"] if SETTINGS in src else None,
                                  dst[SETTINGS]["value"]))
                    for _, ds in pairs:
                        ds.resize(n, axis=0)
                    g = dst[GROUP]["position"]
                    g["step"].resize(n, axis=0)
                    g["time"].resize(n, axis=0)
                    for s in range(0, n, _COPY_FRAMES):
                        sl = slice(s, min(s + _COPY_FRAMES, n))
                        for source, target in pairs:
                            if source is None:
                                target[sl] = b"" if target.dtype.kind == "S" else np.nan
                            else:
                                target[sl] = source[sl]
                        g["step"][sl] = src[GROUP]["position/step"][sl]
                        g["time"][sl] = src[GROUP]["position/time"][sl]

    # --- writing ------------------------------------------------------------------------
    def append(self, step: int, time_fs: float, positions, cell, velocities=None, forces=None,
               settings: str | None = None, **observables: float) -> None:
        """Write one frame (positions Å, cell rows Å, velocities Å/fs, forces eV/Å, the run's
        ``settings`` as JSON text) and flush it to disk."""
        values = {"position": positions, "velocity": velocities,
                  "force": None if forces is None else np.asarray(forces) * KJ_PER_MOL_PER_EV}
        i = self.n_frames
        if self._handles is None:   # h5py path lookups cost more than the writes themselves
            g, obs = self.file[GROUP], self.file["observables"]
            self._handles = ([(name, g[name]["value"]) for name in self.fields]
                             + [("edges", g["box/edges/value"])]
                             + [(name, obs[name]["value"]) for name in self.observables])
            self._settings = self.file[SETTINGS]["value"]
            self._step, self._time = g["position/step"], g["position/time"]
        for name, value in self._handles:
            if name in values:
                data = values[name]
            elif name == "edges":
                data = cell
            else:
                data = observables[name]
            value.resize(i + 1, axis=0)
            value[i] = np.asarray(data, dtype=float)
        text = (settings or "").encode()
        if len(text) > SETTINGS_BYTES:
            raise ValueError(f"run settings longer than {SETTINGS_BYTES} bytes")
        self._settings.resize(i + 1, axis=0)
        self._settings[i] = text
        self._step.resize(i + 1, axis=0)
        self._step[i] = step
        self.file.flush()          # every value of the frame is on disk ...
        self._time.resize(i + 1, axis=0)
        self._time[i] = time_fs    # ... before the time that marks it complete
        self.file.flush()
        self.n_frames = i + 1

    def last_frame(self) -> dict:
        """Step, time, positions, velocities, cell, observables and run settings (a dict, empty
        if not stored) of the last complete frame."""
        g = self.file[GROUP]
        i = self.n_frames - 1
        if i < 0:
            raise InputError(f"{self.path}: no complete frame to resume from")
        out = {"step": int(g["position/step"][i]), "time_fs": float(g["position/time"][i]),
               "positions": g["position/value"][i], "cell": g["box/edges/value"][i],
               "observables": {name: self.file["observables"][name]["value"][i]
                               for name in self.observables},
               "settings": parse_settings(self.file[SETTINGS]["value"][i])}
        if "velocity" in self.fields:
            out["velocities"] = g["velocity/value"][i]
        return out

    def close(self) -> None:
        self._handles = None
        try:
            if self.file:
                self.file.flush()
                self.file.close()
                self.file = None
        finally:
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def last_settings(path: str | Path) -> tuple[int, dict] | None:
    """(step, run settings) of the last complete frame of a trajectory, read without modifying
    the file; None when it has no complete frame."""
    with open_h5md(path) as f:
        n = complete_frames(f)
        if not n:
            return None
        g = f[GROUP]
        raw = f[SETTINGS]["value"][n - 1] if SETTINGS in f else b""
        return int(g["position/step"][n - 1]), parse_settings(raw)


def masses_differ(a, b) -> bool:
    """Whether two per-atom mass arrays (amu) differ beyond round-off."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=0)


def parse_settings(raw) -> dict:
    """The run settings stored with a frame (bytes of JSON) as a dict; {} when none."""
    if isinstance(raw, bytes):
        raw = raw.decode()
    if not raw:
        return {}
    try:
        out = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def frame_stages(path, option: str = "--stage") -> list[str]:
    """The protocol stage of each complete frame of an H5MD file written by `mlff-ins md`
    (stored with each frame in /parameters/md_settings; '' outside a protocol). ``option``
    names what asked, in the error for a file that is not such a trajectory."""
    path = Path(path)
    if path.suffix.lower() not in (".h5", ".h5md", ".hdf5"):
        raise InputError(f"{option}: {path} is not an H5MD trajectory of `mlff-ins md`")
    with open_h5md(path) as f:
        if SETTINGS not in f:
            raise InputError(f"{option}: {path} stores no run settings (not written by "
                             f"`mlff-ins md`)")
        n = complete_frames(f)
        values = f[SETTINGS]["value"][:n]
    stages = []
    for v in values:
        text = v.decode() if isinstance(v, bytes) else str(v)
        stages.append(parse_settings(text.rstrip("\x00")).get("stage", ""))
    return stages


def stage_frames(path, name: str) -> tuple[int, int]:
    """(start, stop) of the frames of protocol stage ``name`` in an H5MD file written by
    `mlff-ins md --protocol` (each frame stores its stage in /parameters/md_settings)."""
    stages = frame_stages(path, f"--stage {name}")
    names = [s for s in dict.fromkeys(stages) if s]
    hits = np.flatnonzero(np.array(stages, dtype=object) == name)
    if not len(hits):
        raise InputError(f"--stage {name}: {path} has " + (
            f"the stages {', '.join(names)}" if names else "no protocol stages"))
    if np.any(np.diff(hits) != 1):
        raise InputError(f"--stage {name}: its frames in {path} are not one contiguous run")
    return int(hits[0]), int(hits[-1]) + 1


def read_forces(f, frame: int) -> np.ndarray:
    """Forces (eV/Å) of one frame from an open h5py file written by :class:`H5MDWriter`."""
    return f[GROUP]["force/value"][frame] / KJ_PER_MOL_PER_EV


def frame_count(path: str | Path) -> int:
    """Complete frames of an mlff-ins H5MD trajectory."""
    with open_h5md(path) as f:
        if GROUP not in f:
            raise InputError(f"{path}: not an mlff-ins H5MD trajectory (no /{GROUP})")
        n = complete_frames(f)
        return int(f[GROUP]["position/value"].shape[0] if n is None else n)


def creator(f) -> str:
    """The program an open H5MD file names as its creator ("" if none)."""
    c = f.get("h5md/creator")
    name = c.attrs.get("name", "") if c is not None else ""
    return name.decode() if isinstance(name, bytes) else str(name)


def read_frame(path: str | Path, index: int = -1):
    """One frame of an mlff-ins H5MD trajectory as ASE ``Atoms`` (positions, cell, periodic,
    the masses the run used; ``info`` names the file, frame, step and time). ``index`` is
    0-based, negative from the end; frames the writer had not finished do not count."""
    from ase import Atoms

    path = Path(path)
    with open_h5md(path) as f:
        if GROUP not in f:
            raise InputError(f"{path}: not an mlff-ins H5MD trajectory (no /{GROUP})")
        if creator(f) != "mlff-ins":
            # other writers use the same group with other units, species and box layouts
            writer = creator(f) or "an unnamed program"
            raise InputError(f"{path}: an H5MD file written by {writer}, not mlff-ins: take a "
                             f"frame from it as extxyz first (MDAnalysis or ASE), or analyse "
                             f"it with `mlff-ins spectra`")
        g = f[GROUP]
        n = complete_frames(f)
        n = int(g["position/value"].shape[0] if n is None else n)
        if not -n <= index < n:
            raise InputError(f"--index {index}: {path} has {n} complete frame"
                             f"{'s' if n != 1 else ''}" + (f" (0..{n - 1})" if n else ""))
        i = index % n
        atoms = Atoms(numbers=g["species"][()], positions=g["position/value"][i],
                      cell=g["box/edges/value"][i], pbc=True)
        if "mass" in g:
            atoms.set_masses(g["mass"][()])
        atoms.info.update(source=str(path), source_frame=i, step=int(g["position/step"][i]),
                          time_fs=float(g["position/time"][i]))
    return atoms
