"""`mlff-ins build`: the cells users ask for — supercells, vacancies, substitutions, interstitials.

Random choices are seeded. An interstitial goes to the emptiest place found among many random
trial points (the largest distance to every existing atom, periodic images included).
"""

from __future__ import annotations

import numpy as np

from mlff_ins.errors import InputError


def build_cell(atoms, supercell=None, vacancies: int = 0, vacancy_element: str | None = None,
               substitutions: list[str] = (), interstitials: list[str] = (), seed: int = 0):
    """Return a new Atoms. ``substitutions``: "A:B:N" (N atoms of A become B, N may be a fraction
    like 0.1 of the A atoms); ``interstitials``: "B:N" (N atoms of B inserted)."""
    from ase.build import make_supercell
    from ase.data import atomic_masses, atomic_numbers

    rng = np.random.default_rng(seed)
    out = atoms.copy()
    if supercell is not None:
        p = np.diag(supercell) if np.ndim(supercell) == 1 else np.asarray(supercell)
        # repetitions (three numbers) must be positive; a full matrix may have negative entries
        # (fcc primitive -> cubic) but must keep the handedness and hold at least one cell
        if (np.ndim(supercell) == 1 and np.any(np.asarray(supercell) < 1)) \
                or round(np.linalg.det(p)) < 1:
            raise InputError(f"--supercell {supercell}: needs positive repetitions (a matrix: "
                             f"a positive determinant)")
        out = make_supercell(out, p)
    for spec in substitutions:
        parts = spec.split(":")
        if len(parts) != 3 or parts[1] not in atomic_numbers:
            raise InputError(f"--substitute {spec}: expected OLD:NEW:COUNT, e.g. Si:Ge:2")
        old, new, count = parts
        idx = np.flatnonzero(np.array(out.get_chemical_symbols()) == old)
        n = _count(count, len(idx), f"--substitute {spec}")
        if n > len(idx):
            raise InputError(f"--substitute {spec}: only {len(idx)} {old} atoms in the cell")
        chosen = [int(i) for i in rng.choice(idx, size=n, replace=False)]
        masses = out.get_masses()       # as the structure has them (isotopes, a read file's)
        for i in chosen:
            out[i].symbol = new
            masses[i] = atomic_masses[atomic_numbers[new]]   # the new element's, not the old's
        out.set_masses(masses)
    if vacancies < 0:
        raise InputError(f"--vacancies {vacancies}: a number of atoms to remove, 0 or more")
    if vacancies:
        symbols = np.array(out.get_chemical_symbols())
        idx = np.flatnonzero(symbols == vacancy_element) if vacancy_element else np.arange(len(out))
        if vacancies > len(idx):
            raise InputError(f"--vacancies {vacancies}: only {len(idx)} candidate atoms")
        del out[[int(i) for i in rng.choice(idx, size=vacancies, replace=False)]]
    for spec in interstitials:
        parts = spec.split(":")
        if len(parts) != 2 or parts[0] not in atomic_numbers:
            raise InputError(f"--interstitial {spec}: expected ELEMENT:COUNT, e.g. Li:1")
        for _ in range(_count(parts[1], 1, f"--interstitial {spec}")):
            out += _emptiest_site(out, parts[0], rng)
    return out


def _count(text: str, total: int, option: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{option}: count {text!r} is not a number") from None
    n = int(round(value * total)) if 0 < value < 1 else int(value)
    if n < 0 or (value >= 1 and value != int(value)):
        raise InputError(f"{option}: count must be a whole number or a fraction below 1")
    return n


def _emptiest_site(atoms, element: str, rng, trials: int = 4000):
    from ase import Atom
    from ase.geometry import get_distances

    frac = rng.random((trials, 3))
    points = frac @ atoms.cell.array
    _, d = get_distances(points, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    best = int(np.argmax(d.min(axis=1)))
    return Atom(element, points[best])
