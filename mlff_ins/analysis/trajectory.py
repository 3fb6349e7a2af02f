"""Read trajectories in chunks of frames: H5MD (ours, MDAnalysis') and anything ``ase.io`` reads.

A :class:`Trajectory` knows its species, the mass of every atom (amu: as stored in the file —
H5MD ``mass``, ASE ``masses``, MDAnalysis' topology — else the standard atomic mass), its number
of frames and the time between frames (fs),
and yields :class:`Chunk` objects of at most ``chunk`` frames with positions (Å), cells (Å),
velocities (Å/fs, when stored) — so no analysis ever holds the whole trajectory in memory.
Units found in H5MD ``unit`` attributes (nm, ps, ...) are converted.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mlff_ins.data.h5md import complete_frames, creator, open_h5md
from mlff_ins.errors import InputError

_LENGTH = {"angstrom": 1.0, "a": 1.0, "å": 1.0, "nm": 10.0, "pm": 0.01, "bohr": 0.52917721067}
_TIME = {"fs": 1.0, "ps": 1000.0, "ns": 1e6, "s": 1e15}


@dataclass
class Chunk:
    positions: np.ndarray          # (T, N, 3) Å, as stored (wrapped or not)
    cells: np.ndarray              # (T, 3, 3) Å, rows are lattice vectors
    velocities: np.ndarray | None  # (T, N, 3) Å/fs


class Trajectory:
    """A trajectory on disk, read lazily. ``dt_fs`` is the time between stored frames."""

    def __init__(self, path: str | Path, dt_fs: float | None = None, stride: int = 1,
                 types: list[str] | None = None, topology: str | Path | None = None,
                 start: int = 0, stop: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such trajectory file")
        if stride < 1:
            raise InputError(f"--step must be a positive integer, not {stride}")
        self.stride = int(stride)
        if self.path.suffix.lower() in (".h5", ".h5md", ".hdf5"):
            self._impl = _H5MD(self.path, types)
        elif topology is not None:
            self._impl = _MDAnalysis(self.path, Path(topology))
        else:
            self._impl = _ASE(self.path, types)
        if self._impl.n_frames < 2:
            raise InputError(f"{self.path}: {self._impl.n_frames} frame(s); correlations need "
                             f"at least two")
        stored_dt = self._impl.dt_fs
        if dt_fs is not None:
            if dt_fs <= 0:
                raise InputError(f"--dt must be positive (fs), not {dt_fs}")
            if stored_dt is not None and abs(stored_dt - dt_fs) > 1e-6 * stored_dt:
                raise InputError(f"{self.path}: --dt {dt_fs} fs contradicts the {stored_dt:g} fs "
                                 f"between frames stored in the file")
            stored_dt = dt_fs
        if stored_dt is None:
            raise InputError(f"{self.path}: the file does not store the time between frames; "
                             f"give it with --dt (fs)")
        self.dt_fs = stored_dt * self.stride
        self.symbols: list[str] = self._impl.symbols
        self.n_atoms = len(self.symbols)
        self.masses = _masses(getattr(self._impl, "masses", None), self.symbols, self.path)
        total = self._impl.n_frames
        stop = total if stop is None else int(stop)
        if not 0 <= start < total or not start < stop <= total:
            raise InputError(f"{self.path}: frames {start}..{stop} (--start/--stop) are not "
                             f"within its {total} frames")
        self.start, self.stop = int(start), stop
        self.n_frames = (stop - start + self.stride - 1) // self.stride
        self.has_velocities = self._impl.has_velocities
        if self.n_frames < 2:
            raise InputError(f"{self.path}: {self.n_frames} frame(s) selected of {total}; "
                             f"correlations need at least two")

    def chunks(self, size: int = 64) -> Iterator[Chunk]:
        """Yield consecutive chunks of at most ``size`` of the selected (strided) frames."""
        yield from self._impl.chunks(size, self.stride, self.start, self.stop)

    def blocks(self, n: int) -> list[Trajectory]:
        """The selected frames cut into ``n`` consecutive blocks of equal length (frames left
        over at the end belong to none), each a trajectory of its own."""
        length = self.n_frames // n
        out = []
        for b in range(n):
            block = copy.copy(self)
            block.start = self.start + b * length * self.stride
            block.stop = block.start + (length - 1) * self.stride + 1
            block.n_frames = length
            out.append(block)
        return out

    @property
    def species(self) -> list[str]:
        """Distinct elements, sorted alphabetically (dynasor's order)."""
        return sorted(set(self.symbols))

    def first_cell(self) -> np.ndarray:
        return next(self.chunks(1)).cells[0]


class ArrayTrajectory(Trajectory):
    """A trajectory held in memory: positions (T, N, 3) Å, cells (T, 3, 3) or (3, 3) Å,
    velocities (T, N, 3) Å/fs or None, ``dt_fs`` between frames."""

    def __init__(self, symbols, positions, cells, dt_fs: float, velocities=None, masses=None):
        self.path = Path("<memory>")
        self.stride = 1
        self.symbols = list(symbols)
        self.masses = _masses(masses, self.symbols, self.path)
        self.positions = np.asarray(positions, dtype=float)
        cells = np.asarray(cells, dtype=float)
        self.cells = np.broadcast_to(cells, (len(self.positions), 3, 3)) if cells.ndim == 2 \
            else cells
        self.velocities = None if velocities is None else np.asarray(velocities, dtype=float)
        self.dt_fs = float(dt_fs)
        self.n_atoms = len(self.symbols)
        self.n_frames = len(self.positions)
        self.has_velocities = self.velocities is not None
        if self.positions.shape != (self.n_frames, self.n_atoms, 3):
            raise ValueError(f"positions must have shape (frames, {self.n_atoms}, 3)")

    def blocks(self, n: int) -> list[ArrayTrajectory]:
        length = self.n_frames // n
        part = (lambda a, b: None if a is None else a[b * length:(b + 1) * length])
        return [ArrayTrajectory(self.symbols, part(self.positions, b), part(self.cells, b),
                                self.dt_fs, part(self.velocities, b), self.masses)
                for b in range(n)]

    def chunks(self, size: int = 64) -> Iterator[Chunk]:
        for s in range(0, self.n_frames, size):
            v = None if self.velocities is None else self.velocities[s:s + size]
            yield Chunk(self.positions[s:s + size], np.array(self.cells[s:s + size]), v)


class _H5MD:
    """H5MD of any writer. Ours states every unit and stores atomic numbers; another writer's
    (LAMMPS' dump h5md: atom types as species, no unit attributes) is read with ``types``
    naming the element of type 1, 2, ..., and what it leaves unstated is not guessed
    silently: positions without a unit are read as Å with a warning, a time without a unit
    is not used (--dt), velocities without a unit are not used (differenced from positions)."""

    def __init__(self, path: Path, types: list[str] | None = None):
        self.path = path
        with open_h5md(path) as f:
            ours = creator(f) == "mlff-ins"
            if "particles" not in f:
                raise InputError(f"{path}: not an H5MD trajectory (no /particles group)")
            groups = list(f["particles"])
            if not groups:
                raise InputError(f"{path}: /particles holds no particle group")
            self.group = "all" if "all" in groups else groups[0]
            g = f["particles"][self.group]
            for need in ("position", "box"):
                if need not in g:
                    raise InputError(f"{path}: particles/{self.group} has no {need} (an H5MD "
                                     f"trajectory needs /particles/{self.group}/{need})")
            pos = g["position"]["value"]
            complete = complete_frames(f)  # a frame our writer had not finished is ignored
            self.n_frames = pos.shape[0] if complete is None else min(complete, pos.shape[0])
            if "unit" not in pos.attrs and not ours:
                warnings.warn(f"{path}: positions without a unit (written by "
                              f"{creator(f) or 'an unnamed program'}): read as Å",
                              stacklevel=3)
            self.length_scale = _scale(pos.attrs.get("unit", "angstrom"), _LENGTH, path)
            self.has_velocities = "velocity" in g
            if self.has_velocities:
                v = g["velocity"]["value"]
                if "unit" not in v.attrs and not ours:
                    warnings.warn(f"{path}: velocities without a unit are not used; they are "
                                  f"differenced from the positions", stacklevel=3)
                    self.has_velocities = False
                else:
                    self.velocity_scale = _velocity_scale(v.attrs.get("unit", "angstrom fs-1"),
                                                          path)
            self.symbols = _h5md_symbols(g, path, types, ours)
            self.masses = _h5md_masses(g)
            time = g["position"].get("time")
            if time is not None and "unit" not in time.attrs and not ours:
                warnings.warn(f"{path}: times without a unit are not used; the time between "
                              f"frames is --dt", stacklevel=3)
                self.dt_fs = None
            else:
                self.dt_fs = _h5md_dt(g["position"], path, self.n_frames)

    def chunks(self, size: int, stride: int, start: int = 0,
               stop: int | None = None) -> Iterator[Chunk]:
        import h5py

        with open_h5md(self.path) as f:
            g = f["particles"][self.group]
            pos = g["position"]["value"]
            edges = g["box"]["edges"]
            vel = g["velocity"]["value"] if self.has_velocities else None
            box_scale = _scale(_box_unit(edges), _LENGTH, self.path)
            stop = self.n_frames if stop is None else stop
            for first in range(start, stop, size * stride):
                sl = slice(first, min(first + size * stride, stop), stride)
                p = pos[sl].astype(float) * self.length_scale
                if isinstance(edges, h5py.Group):
                    cells = edges["value"][sl].astype(float)
                else:
                    cells = np.broadcast_to(edges[()], (len(p),) + edges.shape).astype(float)
                cells = np.stack([np.diag(c) if c.ndim == 1 else c for c in cells]) * box_scale
                v = vel[sl].astype(float) * self.velocity_scale if vel is not None else None
                yield Chunk(p, cells, v)


class _ASE:
    """Anything ase.io reads; LAMMPS text dumps (*.lammpstrj, *.dump, dump.*) with ``types``
    naming the element of LAMMPS atom type 1, 2, ... (ASE reads types as atomic numbers)."""

    def __init__(self, path: Path, types: list[str] | None = None):
        import ase.io

        self.path = path
        name = path.name.lower()
        self.format = ("lammps-dump-text" if name.endswith((".lammpstrj", ".dump"))
                       or name.startswith("dump.") else None)
        self.types = types
        try:
            first = ase.io.read(path, index=0, format=self.format)
        except Exception as exc:  # ase raises many types for unreadable files
            raise InputError(f"{path}: cannot read as a trajectory ({exc})") from None
        self.symbols = self._symbols(first, 0)
        self.masses = first.get_masses() if first.has("masses") else None
        times = [a.info.get("time_fs") for a in ase.io.iread(path, index=":",
                                                               format=self.format)]
        self.n_frames = len(times)
        self.has_velocities = first.has("momenta")
        self.dt_fs = None
        if (self.n_frames > 1 and all(t is not None for t in times)
                and np.ptp(np.asarray(times, dtype=float)) > 0):   # a constant time_fs: none
            self.dt_fs = uniform_spacing(np.asarray(times, dtype=float), path)

    def _symbols(self, atoms, frame: int) -> list[str]:
        if self.types is None:
            if self.format is not None:
                raise InputError(f"{self.path}: a LAMMPS dump stores atom types, not elements; "
                                 f"name them with --types (element of type 1, type 2, ...)")
            return atoms.get_chemical_symbols()
        out = []
        for t in atoms.numbers:
            if not 1 <= t <= len(self.types):
                raise InputError(f"{self.path}: frame {frame} has atom type {t}, but --types "
                                 f"names only {len(self.types)} ({','.join(self.types)})")
            out.append(self.types[t - 1])
        return out

    def chunks(self, size: int, stride: int, start: int = 0,
               stop: int | None = None) -> Iterator[Chunk]:
        import ase.io
        from ase import units

        buf = []
        index = f"{start}:{'' if stop is None else stop}:{stride}"
        for i, atoms in enumerate(ase.io.iread(self.path, index=index, format=self.format)):
            frame = start + i * stride
            if len(atoms) != len(self.symbols) or self._symbols(atoms, frame) != self.symbols:
                raise InputError(f"{self.path}: frame {frame} has different atoms than "
                                 f"frame 0")
            buf.append(atoms)
            if len(buf) == size:
                yield self._chunk(buf, units.fs)
                buf = []
        if buf:
            yield self._chunk(buf, units.fs)

    def _chunk(self, frames, fs) -> Chunk:
        pos = np.stack([a.positions for a in frames])
        cells = np.stack([a.cell.array for a in frames])
        if np.any(np.abs(np.linalg.det(cells)) < 1e-6):
            raise InputError(f"{self.path}: frames without a periodic cell; spectra need one")
        vel = (np.stack([a.get_velocities() * fs for a in frames])
               if self.has_velocities else None)
        return Chunk(pos, cells, vel)


class _MDAnalysis:
    """Any trajectory MDAnalysis reads (DCD, XTC, TRR, NetCDF, ...) with a topology file that
    names the elements (PDB, PSF, GRO, LAMMPS data, ...). MDAnalysis works in Å and ps."""

    def __init__(self, path: Path, topology: Path):
        try:
            import MDAnalysis as mda
        except ImportError:
            raise InputError("--topology needs MDAnalysis: pip install MDAnalysis") from None
        if not topology.is_file():
            raise InputError(f"{topology}: no such topology file")
        self.path, self.topology = path, topology
        try:
            u = mda.Universe(str(topology), str(path))
        except Exception as exc:  # MDAnalysis raises many types
            raise InputError(f"{path}: MDAnalysis cannot read it with topology {topology} "
                             f"({exc})") from None
        if not hasattr(u.atoms, "elements") or not all(u.atoms.elements):
            try:
                u.guess_TopologyAttrs(to_guess=["elements"])
            except Exception as exc:  # noqa: BLE001 - MDAnalysis raises many types
                raise InputError(f"{topology}: no element names and none could be guessed "
                                 f"({exc})") from None
        self.symbols = [str(e).capitalize() for e in u.atoms.elements]
        self.masses = np.asarray(u.atoms.masses, dtype=float) if hasattr(u.atoms, "masses") \
            else None
        self.n_frames = len(u.trajectory)
        self.has_velocities = bool(u.trajectory.ts.has_velocities)
        self.dt_fs = float(u.trajectory.dt) * 1000.0 if self.n_frames > 1 else None
        self._universe = u

    def chunks(self, size: int, stride: int, start: int = 0,
               stop: int | None = None) -> Iterator[Chunk]:
        from MDAnalysis.lib.mdamath import triclinic_vectors

        traj = self._universe.trajectory
        buf_p, buf_c, buf_v = [], [], []
        for ts in traj[start:stop:stride]:
            if ts.dimensions is None:
                raise InputError(f"{self.path}: frame {ts.frame} has no periodic cell")
            buf_p.append(ts.positions.astype(float))
            buf_c.append(triclinic_vectors(ts.dimensions).astype(float))
            if self.has_velocities:
                buf_v.append(ts.velocities.astype(float) / 1000.0)  # Å/ps -> Å/fs
            if len(buf_p) == size:
                yield Chunk(np.stack(buf_p), np.stack(buf_c),
                            np.stack(buf_v) if buf_v else None)
                buf_p, buf_c, buf_v = [], [], []
        if buf_p:
            yield Chunk(np.stack(buf_p), np.stack(buf_c), np.stack(buf_v) if buf_v else None)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _scale(unit, table: dict, path: Path) -> float:
    key = _text(unit).strip().lower()
    if key not in table:
        raise InputError(f"{path}: unit {key!r} not understood (known: {', '.join(table)})")
    return table[key]


def _velocity_scale(unit, path: Path) -> float:
    """Factor to Å/fs for units written like 'nm ps-1', 'nm/ps', 'angstrom fs-1' or 'Å/fs'."""
    text = _text(unit).replace("/", " ").replace("-1", " ").split()
    if len(text) != 2:
        raise InputError(f"{path}: velocity unit {_text(unit)!r} not understood")
    return _scale(text[0], _LENGTH, path) / _scale(text[1], _TIME, path)


def _box_unit(edges) -> str:
    target = edges["value"] if hasattr(edges, "keys") else edges
    return _text(target.attrs.get("unit", "angstrom"))


def _h5md_symbols(g, path: Path, types: list[str] | None = None,
                  ours: bool = True) -> list[str]:
    """Element symbols of an H5MD particle group: species as names, as indices into a
    ``names`` attribute, as atom types named by ``types`` (1-based, as LAMMPS numbers them) or,
    in our own files, as atomic numbers."""
    from ase.data import chemical_symbols

    if "species" not in g:
        raise InputError(f"{path}: {g.name} has no species; the elements are unknown")
    sp = g["species"]
    values = sp["value"][0] if hasattr(sp, "keys") else sp[()]
    values = np.asarray(values)
    if values.dtype.kind in "SUO":
        return [_text(s) for s in values]
    names = sp.attrs.get("names") if not hasattr(sp, "keys") else None
    if names is not None:
        names = [_text(n) for n in names]
        return [names[int(i)] for i in values]
    if types is not None:
        bad = sorted({int(t) for t in values if not 1 <= int(t) <= len(types)})
        if bad:
            raise InputError(f"{path}: atom type {bad[0]} in its species, but --types names "
                             f"only {len(types)} ({','.join(types)})")
        return [types[int(t) - 1] for t in values]
    present = {int(z) for z in values}
    if not ours and present == set(range(1, max(present) + 1)):
        # 1, 2, ... k: LAMMPS' atom types as much as atomic numbers (H, He, ...): ask
        raise InputError(f"{path}: its species are the numbers 1..{max(present)} without names: "
                         f"atom types (LAMMPS writes them) or atomic numbers? name the element "
                         f"of each with --types")
    return [chemical_symbols[int(z)] for z in values]


def _h5md_masses(g):
    """Per-atom masses of an H5MD particle group (a fixed array or a time series: first frame)."""
    if "mass" not in g:
        return None
    m = g["mass"]
    values = m["value"][0] if hasattr(m, "keys") else m[()]
    return np.asarray(values, dtype=float).reshape(-1)


def _masses(stored, symbols, path) -> np.ndarray:
    """Stored masses when the file has them (checked), else the standard atomic masses."""
    from mlff_ins.neutron.scattering_lengths import mass_amu

    if stored is None:
        return np.array([mass_amu(s) for s in symbols])
    stored = np.asarray(stored, dtype=float).reshape(-1)
    if len(stored) != len(symbols) or not np.all(stored > 0):
        raise InputError(f"{path}: the stored masses are not one positive mass per atom "
                         f"({len(stored)} values for {len(symbols)} atoms)")
    return stored


def _h5md_dt(position, path: Path, n_frames: int) -> float | None:
    if "time" not in position:
        return None
    t = position["time"]
    scale = _scale(t.attrs.get("unit", "fs"), _TIME, path)
    if t.shape == ():
        return float(t[()]) * scale  # fixed time step between stored frames
    if n_frames < 2:
        return None
    return uniform_spacing(t[:n_frames], path) * scale


def uniform_spacing(times, path) -> float:
    """The time between consecutive frames, checked over every frame; a trajectory whose frames
    are not equally spaced (a resume with another --every, frames dropped or repeated) is refused
    with the first frame where the spacing changes."""
    times = np.asarray(times, dtype=float)
    steps = np.diff(times)
    dt = float(steps[0])
    bad = np.flatnonzero(~(np.abs(steps - dt) <= 1e-6 * abs(dt)) | ~(steps > 0))
    if len(bad):
        k = int(bad[0]) + 1
        raise InputError(f"{path}: frames are not equally spaced in time (frame {k} is "
                         f"{steps[k - 1]:g} after frame {k - 1}, frame 1 is {dt:g} after frame "
                         "0)")
    return dt
