"""H5MD 1.1 trajectories: the one place that knows the file layout (writer and reader helpers).

Layout (readable by MDAnalysis' H5MD reader, which expects the particle group ``trajectory``):

    /h5md                         version [1, 1], author, creator
    /particles/trajectory/
        species                   (N,) atomic numbers
        position|velocity|force/  value (T, N, 3), step (T,), time (T,)   Å, Å/fs, kJ/(mol Å)
        box/edges/                value (T, 3, 3) rows are lattice vectors, step, time   Å
    /observables/NAME/            value (T,), step, time   (potential_energy eV, temperature K, ...)

The step and time datasets of every element are hard links to those of ``position`` (H5MD
allows elements to share them), so a frame costs one write of each.

Frames are appended one at a time and the file is flushed after each. A frame is complete when
every time-dependent dataset holds it; ``/particles/trajectory`` carries ``n_frames_complete``,
written last, and a writer that resumes a killed run truncates every dataset to that count, so a
half-written frame is dropped and nothing is duplicated.

Forces are stored in kJ mol⁻¹ Å⁻¹ (1 eV/Å = 96.485 kJ mol⁻¹ Å⁻¹) because MDAnalysis' reader knows
no eV-based force unit; :func:`read_forces` returns them in eV/Å.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.errors import InputError

GROUP = "particles/trajectory"
UNITS = {"position": "Angstrom", "velocity": "Angstrom fs-1", "force": "kJ mol-1 Angstrom-1",
         "edges": "Angstrom"}
KJ_PER_MOL_PER_EV = 96.48533212331002
OBSERVABLE_UNITS = {"potential_energy": "eV", "kinetic_energy": "eV", "total_energy": "eV",
                    "temperature": "K", "pressure": "GPa", "volume": "Angstrom^3",
                    "max_force_std": "eV Angstrom-1", "conserved_energy": "eV"}


class H5MDWriter:
    """Append frames to an H5MD file; ``resume=True`` continues an existing file.

    ``observables`` names the per-frame values that every :meth:`append` provides: a name for a
    scalar, or ``(name, size)`` for a vector of ``size`` numbers. An observable missing from a
    file being resumed is added, NaN for the frames already there.
    """

    def __init__(self, path: str | Path, symbols: list[str], *, velocities: bool = True,
                 forces: bool = True, observables: tuple[str, ...] = (), resume: bool = False):
        import h5py
        from ase.data import atomic_numbers

        self.path = Path(path)
        self.fields = ["position"] + (["velocity"] if velocities else []) + (
            ["force"] if forces else [])
        shapes = dict((o, ()) if isinstance(o, str) else (o[0], (int(o[1]),))
                      for o in observables)
        self.observables = tuple(shapes)
        self._handles = None
        n = len(symbols)
        if resume and self.path.exists():
            self.file = h5py.File(self.path, "r+")
            g = self.file[GROUP]
            stored = [int(z) for z in g["species"][()]]
            if stored != [atomic_numbers[s] for s in symbols]:
                raise InputError(f"{self.path}: the trajectory holds other atoms than the "
                                 f"structure being resumed")
            self.n_frames = int(g.attrs.get("n_frames_complete", 0))
            obs = self.file.require_group("observables")
            for name, shape in shapes.items():
                if name not in obs:   # written by an older version
                    self._series(obs.create_group(name), shape,
                                 OBSERVABLE_UNITS.get(name, ""))
                    for key in ("value", "step", "time"):
                        obs[name][key].resize(self.n_frames, axis=0)
                    obs[name]["value"][:] = np.nan
                    obs[name]["step"][:] = g["position/step"][:self.n_frames]
                    obs[name]["time"][:] = g["position/time"][:self.n_frames]
            for ds in self._datasets():
                ds.resize(self.n_frames, axis=0)  # drop a half-written frame
            self.file.flush()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.path, "w")
        h = self.file.create_group("h5md")
        h.attrs["version"] = np.array([1, 1])
        h.create_group("author").attrs["name"] = "mlff-ins"
        c = h.create_group("creator")
        c.attrs["name"], c.attrs["version"] = "mlff-ins", __version__
        g = self.file.create_group(GROUP)
        g.create_dataset("species", data=np.array([atomic_numbers[s] for s in symbols]))
        # every element shares the position's step and time datasets (hard links, as H5MD
        # allows): one resize and write of each per frame instead of one per element
        clock = self._series(g.create_group(self.fields[0]), (n, 3), UNITS[self.fields[0]])
        for name in self.fields[1:]:
            self._series(g.create_group(name), (n, 3), UNITS[name], clock)
        box = g.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        self._series(box.create_group("edges"), (3, 3), UNITS["edges"], clock)
        obs = self.file.create_group("observables")
        for name, shape in shapes.items():
            self._series(obs.create_group(name), shape, OBSERVABLE_UNITS.get(name, ""), clock)
        g.attrs["n_frames_complete"] = 0
        self.n_frames = 0
        self.file.flush()

    @staticmethod
    def _series(group, shape, unit, clock=None):
        """Create a time series (value, step, time) in ``group``; with ``clock`` (the step and
        time datasets of another series) step and time are hard links to those. Returns the
        series' (step, time) datasets."""
        v = group.create_dataset("value", shape=(0,) + shape, maxshape=(None,) + shape,
                                 dtype="f8", chunks=(1,) + shape if shape else (256,))
        v.attrs["unit"] = unit
        if clock is not None:
            group["step"], group["time"] = clock
            return clock
        st = group.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8",
                                  chunks=(256,))
        t = group.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
        t.attrs["unit"] = "fs"
        return st, t

    def _groups(self):
        g = self.file[GROUP]
        yield from (g[name] for name in self.fields)
        yield g["box/edges"]
        yield from (self.file["observables"][name] for name in self.observables)

    def _datasets(self):
        for grp in self._groups():
            yield from (grp["value"], grp["step"], grp["time"])

    def append(self, step: int, time_fs: float, positions, cell, velocities=None, forces=None,
               **observables: float) -> None:
        """Write one frame (positions Å, cell rows Å, velocities Å/fs, forces eV/Å) and flush."""
        values = {"position": positions, "velocity": velocities,
                  "force": None if forces is None else np.asarray(forces) * KJ_PER_MOL_PER_EV}
        i = self.n_frames
        if self._handles is None:   # h5py path lookups cost more than the writes themselves
            groups = list(zip(self._group_names(), self._groups()))
            self._handles = [(name, grp["value"]) for name, grp in groups]
            clocks = []   # step and time datasets, each once (they are shared hard links)
            for _, grp in groups:
                for key, dtype in (("step", int), ("time", float)):
                    if all(grp[key] != ds for ds, _ in clocks):
                        clocks.append((grp[key], dtype))
            self._clocks = clocks
            self._attrs = self.file[GROUP].attrs
        for name, value in self._handles:
            if name in values:
                data = values[name]
            elif name == "edges":
                data = cell
            else:
                data = observables[name]
            value.resize(i + 1, axis=0)
            value[i] = np.asarray(data, dtype=float)
        for ds, dtype in self._clocks:
            ds.resize(i + 1, axis=0)
            ds[i] = step if dtype is int else time_fs
        self._attrs["n_frames_complete"] = i + 1
        self.file.flush()
        self.n_frames = i + 1

    def _group_names(self):
        return self.fields + ["edges"] + list(self.observables)

    def last_frame(self) -> dict:
        """Step, time, positions, velocities, cell and observables of the last complete frame."""
        g = self.file[GROUP]
        i = self.n_frames - 1
        if i < 0:
            raise InputError(f"{self.path}: no complete frame to resume from")
        out = {"step": int(g["position/step"][i]), "time_fs": float(g["position/time"][i]),
               "positions": g["position/value"][i], "cell": g["box/edges/value"][i],
               "observables": {name: self.file["observables"][name]["value"][i]
                               for name in self.observables}}
        if "velocity" in self.fields:
            out["velocities"] = g["velocity/value"][i]
        return out

    def close(self) -> None:
        self._handles = None
        if self.file:
            self.file.flush()
            self.file.close()
            self.file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def complete_frames(f) -> int | None:
    """Number of complete frames recorded by our writer in an open h5py file (None if absent)."""
    g = f.get(GROUP)
    if g is None or "n_frames_complete" not in g.attrs:
        return None
    return int(g.attrs["n_frames_complete"])


def read_forces(f, frame: int) -> np.ndarray:
    """Forces (eV/Å) of one frame from an open h5py file written by :class:`H5MDWriter`."""
    return f[GROUP]["force/value"][frame] / KJ_PER_MOL_PER_EV
