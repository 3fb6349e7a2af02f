"""Resumable model phonons: the work of a killed `mlff-ins phonons --model` kept on disk.

The phonons of a 512-atom glass take about an hour on 2 CPU cores (thousands of displaced
supercells, every ensemble member on each, after a relaxation of hundreds of steps). A run
keeps its progress in ``OUTPUT.partial/`` beside its output; the same command run again picks
it up, and the folder is removed once the output is written:

* ``forces_START_STOP.npy``: the member forces, shape (K, STOP - START, N, 3) eV/Å, of the
  displaced supercells START..STOP-1 in phonopy's order, each file written atomically, one about
  every ``SAVE_EVERY_S`` seconds of model calls and when the run is stopped (Ctrl-C, SIGTERM);
  they are used only with a ``key.json`` whose digest is that of the same displaced supercells
  (positions, cell, species) and the same model (bundle digest and members). The forces of a
  supercell depend on nothing else, so the resumed result equals an uninterrupted one.
* ``relax.npz``: with ``--relax``, the positions and cell every ``SAVE_EVERY_S`` seconds of
  the relaxation and when it stops (the steps taken so far in ``relax.json``); ``relaxed.npz``
  once it converged. They are used only for the same starting structure, model, fmax and cell
  option. A resumed relaxation starts a new BFGS from the saved structure (its Hessian estimate
  starts afresh), and converges to the same fmax in the steps left of ``--relax-steps``.

The work of another calculation (another structure, displacement, supercell or model) found in
the folder is removed with a note: it is a cache of this command, not a user's file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path, write_json_atomic
from mlff_ins.errors import raise_if_terminated

#: seconds of model calls between two saves of the forces or of the relaxation
SAVE_EVERY_S = 60.0

_CHUNK = re.compile(r"^forces_(\d+)_(\d+)\.npy$")
_OWN = re.compile(r"^(forces_\d+_\d+\.npy|key\.json|relax\.npz|relaxed\.npz|relax\.json)$")


def partial_dir(output: str | os.PathLike) -> Path:
    """The folder that keeps the progress of the phonons written to ``output``."""
    return Path(f"{output}.partial")


def _atoms_bytes(h, atoms) -> None:
    h.update(np.ascontiguousarray(atoms.numbers, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(atoms.cell.array, dtype="<f8").tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype="<f8").tobytes())


def digest(structures, **fields) -> str:
    """SHA-256 of structures (species, cell, positions, exactly) and of JSON-able fields."""
    h = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for atoms in structures:
        _atoms_bytes(h, atoms)
    return h.hexdigest()


class PhononProgress:
    """The ``OUTPUT.partial/`` folder of one `mlff-ins phonons --model` run (see the module)."""

    def __init__(self, output: str | os.PathLike, model_key: dict, log=print):
        self.folder = partial_dir(output)
        self.model_key = dict(model_key)
        self.log = log

    # ------------------------------------------------------------------ housekeeping

    def _own_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if _OWN.match(p.name)]

    def _drop(self, paths, why: str) -> None:
        paths = [p for p in paths if p.exists()]
        if paths:
            self.log(f"note: {self.folder}: {why}; its {len(paths)} file(s) removed and the "
                     f"work done again")
        for p in paths:
            p.unlink()

    def remove(self) -> None:
        """Remove the folder's own files, and the folder when nothing else is in it."""
        for p in self._own_files():
            p.unlink()
        # temporary files of a save that was killed
        for p in self.folder.glob(".*.tmp") if self.folder.is_dir() else []:
            p.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    # ------------------------------------------------------------------ relaxation

    def relax_key(self, atoms, fmax: float, cell: bool) -> str:
        return digest([atoms], model=self.model_key, fmax=float(fmax), cell=bool(cell))

    def relax_start(self, atoms, fmax: float, cell: bool):
        """(structure, steps taken, converged) to start the relaxation of ``atoms`` from: the
        one saved by the same relaxation, else ``atoms`` itself with 0 steps."""
        record = self.folder / "relax.json"
        try:
            saved = json.loads(record.read_text()) if record.exists() else None
        except (OSError, ValueError):
            saved = {}
        if saved is None:
            return atoms, 0, False
        finished = bool(saved.get("converged"))
        path = self.folder / ("relaxed.npz" if finished else "relax.npz")
        if saved.get("key") != self.relax_key(atoms, fmax, cell) or not path.exists():
            self._drop([record, self.folder / "relax.npz", self.folder / "relaxed.npz"],
                       "a relaxation of another structure or model, or with another --fmax")
            return atoms, 0, False
        # positions and cell exactly (the displaced supercells, and so the saved forces, are
        # keyed by them); everything else (masses, tags) is the start's
        with np.load(path) as arrays:
            got = atoms.copy()
            got.set_cell(arrays["cell"], scale_atoms=False)
            got.positions = arrays["positions"]
        got.calc = None
        steps = int(saved.get("steps", 0))
        self.log(f"{'relaxed' if finished else 'relaxation resumed'}: the structure after "
                 f"{steps} steps of an earlier run, from {path}")
        return got, steps, finished

    def save_relax(self, start_atoms, fmax: float, cell: bool, atoms, steps: int,
                   converged: bool) -> None:
        """Keep the relaxation of ``start_atoms``: ``atoms`` after ``steps`` steps."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = "relaxed.npz" if converged else "relax.npz"
        with atomic_path(self.folder / name) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, positions=np.array(atoms.positions, dtype=float),
                         cell=np.array(atoms.cell.array, dtype=float))
                fh.flush()
                os.fsync(fh.fileno())
        write_json_atomic(self.folder / "relax.json",
                          {"key": self.relax_key(start_atoms, fmax, cell),
                           "converged": bool(converged), "steps": int(steps)})

    # ------------------------------------------------------------------ forces

    def forces(self, calc, cells, *, max_batch_atoms: int | None = None, progress=None,
               save_every_s: float | None = None) -> np.ndarray:
        """:meth:`member_forces_batched` of ``cells``, shape (K, S, N, 3), continuing from
        the saved forces of the same cells and model and saving as it goes (every
        ``save_every_s`` seconds, None: :data:`SAVE_EVERY_S`)."""
        if save_every_s is None:
            save_every_s = SAVE_EVERY_S
        from mlff_ins.model.calculator import default_batch_atoms

        n = len(cells)
        n_atoms = len(cells[0]) if n else 0
        key = digest(cells, model=self.model_key)
        done = self._saved_forces(key, n, n_atoms)
        n0 = 0 if done is None else done.shape[1]
        if n0:
            self.log(f"resumed: the forces of {n0} of {n} displaced supercells from "
                     f"{self.folder}")
            if progress is not None:
                progress(n0)
        if n0 == n and done is not None:
            return done
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.folder / "key.json",
                          {"key": key, "n_supercells": n, "n_atoms": n_atoms,
                           "model": self.model_key})
        if max_batch_atoms is None:
            max_batch_atoms = default_batch_atoms(getattr(calc, "device", "cpu"))
        per_batch = max(1, int(max_batch_atoms) // max(n_atoms, 1))
        out = None
        saved = finished = n0      # forces of supercells < saved are on disk, < finished known
        last = time.monotonic()
        try:
            for start in range(n0, n, per_batch):
                raise_if_terminated()   # a SIGTERM whose exception a finaliser swallowed
                stop = min(n, start + per_batch)
                got = calc.member_forces_batched(cells[start:stop],
                                                 max_batch_atoms=max_batch_atoms,
                                                 progress=progress)
                if out is None:
                    out = np.empty((got.shape[0], n, n_atoms, 3))
                    if n0:
                        out[:, :n0] = done
                out[:, start:stop] = got
                finished = stop
                # the last one too: a stop while the force constants are made loses nothing
                if time.monotonic() - last >= save_every_s or finished == n:
                    self._save(out, saved, finished)
                    saved, last = finished, time.monotonic()
        except BaseException:
            # a stop (Ctrl-C, SIGTERM, a failure) keeps the supercells finished since the last
            # save; the batch it stopped in is done again
            if finished > saved:
                try:
                    self._save(out, saved, finished)
                except Exception:      # noqa: BLE001 - the stop's own error is the one to show
                    pass
            raise
        return out

    def _save(self, out: np.ndarray, start: int, stop: int) -> None:
        with atomic_path(self.folder / f"forces_{start:07d}_{stop:07d}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, out[:, start:stop])
                fh.flush()
                os.fsync(fh.fileno())

    def _saved_forces(self, key: str, n: int, n_atoms: int) -> np.ndarray | None:
        """The saved forces of supercells 0..M-1 for this key (None: none), joined."""
        chunks = sorted((int(m.group(1)), int(m.group(2)), p) for p in self._own_files()
                        if (m := _CHUNK.match(p.name)))
        record = self.folder / "key.json"
        try:
            saved = json.loads(record.read_text()) if record.exists() else {}
        except (OSError, ValueError):
            saved = {}
        if saved.get("key") != key:
            self._drop([record] + [c[2] for c in chunks],
                       "the forces of other displaced supercells or another model")
            return None
        parts, at = [], 0
        for start, stop, path in chunks:
            if start < at:             # a save of a run that stopped earlier, superseded
                continue
            if start > at or stop > n:
                break
            try:
                arr = np.load(path)
            except (OSError, ValueError):
                break
            if arr.ndim != 4 or arr.shape[1:] != (stop - start, n_atoms, 3):
                break
            parts.append(arr)
            at = stop
        return np.concatenate(parts, axis=1) if parts else None
