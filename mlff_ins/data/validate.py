"""Check a training set before any training: each problem is one line naming file and frame.

Checked: missing energy or forces, NaN or infinite values, absurd forces (above 50 eV/Angstrom
by default), duplicate frames, atoms closer than 0.5 Angstrom. An element without an
isolated-atom energy is not a problem (training then fits the E0s to the energies,
see mlff_ins.data.e0s); :func:`e0s_note` says so.
"""

from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from mlff_ins.errors import InputError

MAX_FORCE_eV_A = 50.0
MIN_DISTANCE_A = 0.5


def _where(atoms: Atoms, k: int) -> str:
    src = atoms.info.get("read_from", "<frames>")
    return f"{src}: frame {atoms.info.get('read_index', k)}"


def _fingerprint(atoms: Atoms) -> str:
    h = hashlib.sha1()
    h.update(atoms.numbers.tobytes())
    h.update(np.round(atoms.positions, 6).tobytes())
    h.update(np.round(atoms.cell.array, 6).tobytes())
    return h.hexdigest()


def _get(atoms: Atoms, name: str):
    calc = atoms.calc
    if calc is None or name not in getattr(calc, "results", {}):
        return None
    return np.asarray(calc.results[name], dtype=float)


def find_problems(frames: list[Atoms], *, e0s: dict[str, float] | None = None,
                  max_force: float = MAX_FORCE_eV_A,
                  min_distance: float = MIN_DISTANCE_A) -> list[str]:
    """Return every problem of ``frames`` as one-line messages (empty list: all good).

    Parameters
    ----------
    frames : labelled frames (energies in eV, forces in eV/Angstrom).
    e0s : element -> isolated-atom energy (eV); when given, every element must have one (for
        callers that require them; training does not, see :func:`e0s_note`).
    max_force : largest plausible force component norm, eV/Angstrom.
    min_distance : smallest plausible interatomic distance, Angstrom.
    """
    problems: list[str] = []
    seen: dict[str, int] = {}
    for k, atoms in enumerate(frames):
        where = _where(atoms, k)
        if not np.all(np.isfinite(atoms.positions)):
            problems.append(f"{where}: positions contain NaN or infinity")
            continue
        energy = _get(atoms, "energy")
        forces = _get(atoms, "forces")
        stress = _get(atoms, "stress")
        if energy is None:
            problems.append(f"{where}: no energy")
        elif not np.all(np.isfinite(energy)):
            problems.append(f"{where}: energy is NaN or infinite")
        if forces is None:
            problems.append(f"{where}: no forces")
        elif forces.shape != (len(atoms), 3):
            problems.append(f"{where}: forces have shape {forces.shape}, "
                            f"expected ({len(atoms)}, 3)")
        elif not np.all(np.isfinite(forces)):
            bad = int(np.argwhere(~np.isfinite(forces))[0, 0])
            problems.append(f"{where}: force on atom {bad} is NaN or infinite")
        else:
            norms = np.linalg.norm(forces, axis=1)
            worst = int(np.argmax(norms)) if len(norms) else 0
            if len(norms) and norms[worst] > max_force:
                problems.append(f"{where}: force on atom {worst} is {norms[worst]:.1f} eV/A, "
                                f"above the plausible {max_force:g} eV/A")
        if stress is not None and not np.all(np.isfinite(stress)):
            problems.append(f"{where}: stress is NaN or infinite")
        if len(atoms) > 1:
            i, j, d = neighbor_list("ijd", atoms, min_distance)
            if len(d):
                m = int(np.argmin(d))
                problems.append(f"{where}: atoms {i[m]} and {j[m]} are {d[m]:.2f} A apart "
                                f"(closer than {min_distance} A)")
        fp = _fingerprint(atoms)
        if fp in seen:
            problems.append(f"{where}: duplicates frame {seen[fp]}")
        else:
            seen[fp] = atoms.info.get("read_index", k)
    if e0s is not None:
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
        for el in elements:
            if el not in e0s:
                problems.append(f"element {el} has no isolated-atom energy: add a frame with "
                                f"config_type=IsolatedAtom or give e0s: {{{el}: ...}} (eV)")
    return problems


def e0s_note(frames: list[Atoms], isolated: dict[str, float]) -> str | None:
    """A one-line note on the E0s training will use for ``frames`` (never a problem).

    None when ``isolated`` (element -> isolated-atom energy, eV) covers every element;
    otherwise the note says that training will fit the E0s to the training frames' energies,
    and whether the compositions of ``frames`` leave some of them undetermined.
    """
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    lacking = [el for el in elements if el not in isolated]
    if not lacking or not frames:
        return None
    if isolated:
        have = (f"isolated-atom energies for {', '.join(sorted(isolated))} but not for "
                f"{', '.join(lacking)}")
    else:
        have = "no isolated-atom frames (config_type=IsolatedAtom)"
    note = (f"note: {have}: training will fit the E0s of "
            f"{', '.join(elements)} to the training frames' energies by least squares")
    col = {el: k for k, el in enumerate(elements)}
    x = np.zeros((len(frames), len(elements)))
    for f, atoms in enumerate(frames):
        for z in atoms.get_chemical_symbols():
            x[f, col[z]] += 1.0 / len(atoms)
    if len(elements) > 1 and np.allclose(x, x[0], rtol=0, atol=1e-12):
        note += ("; all frames have the same composition, so every element will get the mean "
                 "energy per atom")
    else:
        rank = int(np.linalg.matrix_rank(x, tol=1e-9 * np.abs(x).max()))
        if rank < len(elements):
            note += (f"; the compositions determine only {rank} of {len(elements)} independent "
                     f"E0 combinations")
    return note + " (isolated-atom frames or e0s: in the config are more transferable)"


def validate(frames: list[Atoms], **kwargs) -> None:
    """Raise :class:`InputError` listing every problem of ``frames`` (one per line)."""
    problems = find_problems(frames, **kwargs)
    if problems:
        more = f" (and {len(problems) - 1} more below)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more + "".join("\n" + p for p in problems[1:]))
