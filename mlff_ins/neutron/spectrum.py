"""Spectrum1D / Spectrum2D and their one file format: NeXus ``NXdata`` groups in HDF5.

Every route of the package (phonons, MD, the direct predictor) ends in these objects, so any two
results can be compared like for like. File layout (DESIGN.md, "Files"): one ``NXdata`` group per
spectrum at the file's root, ``signal = "intensity"``, ``axes`` naming the axis datasets in order
(2D: ``q`` first). Axis datasets are ``energy`` (meV, bin centres), ``q`` (1/Å, including 2π) and
``time`` (fs); every dataset carries a ``units`` attribute. Group attributes: ``kind``, ``element``
(empty for totals), ``temperature_K``, ``instrument``, ``source`` and ``provenance`` (JSON text).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path
from mlff_ins.errors import InputError

#: Spectrum kinds a file may hold (DESIGN.md).
KINDS = ("vdos", "gdos", "fqt_coh", "fqt_inc", "sqe_coh", "sqe_inc", "sqe", "s_e", "eisf", "msd")
#: Units of each axis dataset.
AXIS_UNITS = {"energy": "meV", "q": "1/angstrom", "time": "fs"}
SOURCES = ("phonons", "md", "predictor", "measured")


@dataclass
class _Spectrum:
    kind: str
    intensity: np.ndarray
    units: str = ""
    intensity_std: np.ndarray | None = None
    element: str = ""
    temperature_K: float = float("nan")
    instrument: str = "direct"
    source: str = "md"
    provenance: dict = field(default_factory=dict)

    def _check(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown spectrum kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; known: {', '.join(SOURCES)}")
        self.intensity = np.asarray(self.intensity, dtype=float)
        shape = tuple(len(a) for _, a in self.axes())
        if self.intensity.shape != shape:
            raise ValueError(f"{self.kind}: intensity shape {self.intensity.shape} does not match "
                             f"the axes {shape}")
        if self.intensity_std is not None:
            self.intensity_std = np.asarray(self.intensity_std, dtype=float)
            if self.intensity_std.shape != shape:
                raise ValueError(f"{self.kind}: intensity_std shape {self.intensity_std.shape} "
                                 f"does not match the axes {shape}")

    def axes(self) -> list[tuple[str, np.ndarray]]:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass
class Spectrum1D(_Spectrum):
    """A spectrum along one axis: ``axis_name`` is "energy" (meV), "time" (fs) or "q" (1/Å)."""

    axis_name: str = "energy"
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        if self.axis_name not in AXIS_UNITS:
            raise ValueError(f"unknown axis {self.axis_name!r}; known: {', '.join(AXIS_UNITS)}")
        self.x = np.asarray(self.x, dtype=float)
        self._check()

    def axes(self):
        return [(self.axis_name, self.x)]

    def area(self) -> float:
        """Rectangle-rule integral over uniformly spaced bin centres (intensity units × axis units)."""
        return float(np.sum(self.intensity) * (self.x[1] - self.x[0]))


@dataclass
class Spectrum2D(_Spectrum):
    """A spectrum on a (q, energy) or (q, time) grid; ``intensity`` has shape (len(q), len(y))."""

    q: np.ndarray = field(default_factory=lambda: np.zeros(0))
    axis_name: str = "energy"
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self):
        if self.axis_name not in ("energy", "time"):
            raise ValueError(f"second axis must be energy or time, not {self.axis_name!r}")
        self.q = np.asarray(self.q, dtype=float)
        self.y = np.asarray(self.y, dtype=float)
        self._check()

    def axes(self):
        return [("q", self.q), (self.axis_name, self.y)]


Spectrum = Spectrum1D | Spectrum2D


def write_spectra(path: str | Path, spectra: dict[str, Spectrum]) -> None:
    """Write ``{group name: spectrum}`` to one HDF5 file atomically (NXdata groups at the root)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["NX_class"] = "NXroot"
            f.attrs["creator"] = f"mlff-ins {__version__}"
            for name, sp in spectra.items():
                g = f.create_group(name)
                g.attrs["NX_class"] = "NXdata"
                g.attrs["signal"] = "intensity"
                axes = sp.axes()
                g.attrs["axes"] = np.array([a for a, _ in axes], dtype=h5py.string_dtype())
                for i, (a, values) in enumerate(axes):
                    d = g.create_dataset(a, data=values)
                    d.attrs["units"] = AXIS_UNITS[a]
                    g.attrs[f"{a}_indices"] = i
                d = g.create_dataset("intensity", data=sp.intensity)
                d.attrs["units"] = sp.units
                if sp.intensity_std is not None:
                    d = g.create_dataset("intensity_std", data=sp.intensity_std)
                    d.attrs["units"] = sp.units
                g.attrs["kind"] = sp.kind
                g.attrs["element"] = sp.element
                g.attrs["temperature_K"] = float(sp.temperature_K)
                g.attrs["instrument"] = sp.instrument
                g.attrs["source"] = sp.source
                g.attrs["provenance"] = json.dumps({"code_version": __version__,
                                                    **sp.provenance}, default=str)


def read_spectra(path: str | Path) -> dict[str, Spectrum]:
    """Read every NXdata group of a spectra file written by this package (or by hand, same layout)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such spectra file")
    out: dict[str, Spectrum] = {}
    from mlff_ins.hdf5_files import open_self_contained

    with open_self_contained(path) as f:
        for name, g in f.items():
            if not isinstance(g, h5py.Group) or _text(g.attrs.get("NX_class", "")) != "NXdata":
                continue
            axes = [_text(a) for a in np.atleast_1d(g.attrs["axes"])]
            if "intensity" not in g or any(a not in g for a in axes):
                raise InputError(f"{path}: group {name} lacks 'intensity' or one of its axes "
                                 f"{axes}")
            common = dict(
                kind=_text(g.attrs["kind"]), intensity=g["intensity"][()],
                units=_text(g["intensity"].attrs.get("units", "")),
                intensity_std=g["intensity_std"][()] if "intensity_std" in g else None,
                element=_text(g.attrs.get("element", "")),
                temperature_K=float(g.attrs.get("temperature_K", float("nan"))),
                instrument=_text(g.attrs.get("instrument", "direct")),
                source=_text(g.attrs.get("source", "md")),
                provenance=json.loads(_text(g.attrs.get("provenance", "{}"))))
            if len(axes) == 1:
                out[name] = Spectrum1D(axis_name=axes[0], x=g[axes[0]][()], **common)
            elif len(axes) == 2 and axes[0] == "q":
                out[name] = Spectrum2D(q=g["q"][()], axis_name=axes[1], y=g[axes[1]][()],
                                       **common)
            else:
                raise InputError(f"{path}: group {name} has axes {axes}; expected one axis or "
                                 f"(q, energy|time)")
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
