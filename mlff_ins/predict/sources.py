"""Crystal structures for the predictor's database, all available offline.

Each source yields ``(key, atoms)`` pairs in a fixed order; ``key`` names the entry for ever
(resuming a build skips the keys already done), so it is built from the source's own labels:

``aflow``
    pymatgen's AFLOW prototype library (288 ordered structures of real compounds), key
    ``aflow:<AFLOW label>``.
``ase-bulk``
    ASE's ground-state crystal of every element with a reference state (``ase.build.bulk``),
    key ``bulk:<symbol>``.
``dcdft``
    ASE's Delta-test set of elemental crystals (``ase.collections.dcdft``), key ``dcdft:<name>``.
``substitutions``
    Chemically sensible substitutions on the AFLOW prototypes of compounds (elemental
    prototypes are left to ``ase-bulk`` and ``dcdft``): the species of a charge-balanced guess of
    the composition (pymatgen's common oxidation states) are replaced by ions of the same charge,
    ranked by the data-mined substitution probabilities of Hautier et al., Inorg. Chem. 50, 656
    (2011) (pymatgen's ``SubstitutionProbability``, whose table ships with pymatgen): a
    substitution is kept when each replacement has a conditional probability of at least
    ``SITE_PROBABILITY_MIN`` and the product over its sites is at least
    ``SUBSTITUTION_THRESHOLD``, the most probable first; the volume is scaled by the cube of the
    ratio of covalent radii. Key ``sub:<AFLOW label>:<old>-<new>,...``. (Before 2026-12-02 the
    candidates were every element sharing the oxidation state, taken in atomic-number order: the
    first 88 built were mostly H, Be, B or C put in the place of a cation or an anion, and 82 %
    of them failed to relax or had imaginary modes.)

A structure is kept when its primitive cell has at most ``max_atoms`` atoms and every element has
neutron cross sections (``periodictable``) and is no noble gas. ``sources`` takes a
comma-separated list of these names, or a structure file / folder (every file ASE reads; key
``file:<name>[:<index>]``).

A build may substitute only the prototypes the teacher itself finds stable (``database build
--substitute stable``, the default): a prototype with imaginary modes gives unstable
substitutions more often. Measured on the 100 substitutions built with SevenNet-0 before that
option (85 from the older list): 18 of 51 were stable where the prototype was, 5 of 45 where it
had imaginary modes, 0 of 4 where it failed; 1.3 against 4.3 minutes of teacher time per stable
entry (docs/usage.md).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from ase import Atoms

from mlff_ins.errors import InputError

SOURCES = ("aflow", "ase-bulk", "dcdft", "substitutions")

#: elements left out: noble gases (no bonded crystal a teacher knows), radioactive and rare
#: elements outside the universal models' training data
EXCLUDED = {"He", "Ne", "Ar", "Kr", "Xe", "Rn", "Tc", "Pm", "Po", "At", "Fr", "Ra", "Ac", "Pa",
            "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm"}


def _usable(symbols) -> bool:
    from mlff_ins.neutron.scattering_lengths import sigma_total_barn

    for s in set(symbols):
        if s in EXCLUDED:
            return False
        try:
            if not np.isfinite(sigma_total_barn(s)):
                return False
        except Exception:  # noqa: BLE001 - an element periodictable lacks is simply not used
            return False
    return True


def primitive(atoms: Atoms, symprec: float = 1e-3) -> Atoms:
    """The spglib primitive cell of ``atoms`` (standardised), or ``atoms`` when spglib fails."""
    import spglib

    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    found = spglib.standardize_cell(cell, to_primitive=True, symprec=symprec)
    if found is None:
        return atoms.copy()
    lattice, positions, numbers = found
    return Atoms(numbers=numbers, cell=lattice, scaled_positions=positions, pbc=True)


def _aflow_entries():
    import os

    try:
        import pymatgen.analysis.prototypes as proto
    except ImportError:
        raise InputError("--structures aflow/substitutions need pymatgen "
                         "(pip install 'mlff-ins[database]')") from None
    from monty.serialization import loadfn
    from pymatgen.io.ase import AseAtomsAdaptor

    data = loadfn(os.path.join(os.path.dirname(proto.__file__), "aflow_prototypes.json.gz"))
    seen = set()
    for entry in data:
        label = entry["tags"]["aflow"]
        if label in seen:
            continue
        seen.add(label)
        yield label, AseAtomsAdaptor.get_atoms(entry["snl"].structure)


def aflow():
    for label, atoms in _aflow_entries():
        yield f"aflow:{label}", atoms


def ase_bulk():
    from ase.build import bulk
    from ase.data import chemical_symbols, reference_states

    for z, ref in enumerate(reference_states):
        if not ref or ref.get("symmetry") not in ("fcc", "bcc", "hcp", "diamond", "sc",
                                                   "rocksalt", "zincblende"):
            continue
        symbol = chemical_symbols[z]
        try:
            yield f"bulk:{symbol}", bulk(symbol)
        except (ValueError, KeyError):   # a reference state ase.build.bulk cannot build
            continue


def dcdft():
    from ase.collections import dcdft as collection

    for name in collection.names:
        yield f"dcdft:{name}", collection[name]


def _oxidation_guess(symbols) -> dict | None:
    from pymatgen.core import Composition

    try:
        guesses = Composition("".join(symbols)).oxi_state_guesses(max_sites=-50)
    except (ValueError, KeyError):
        return None
    return dict(guesses[0]) if guesses else None


#: the smallest product of per-site conditional substitution probabilities kept (the threshold
#: pymatgen's ``Substitutor`` uses by default)
SUBSTITUTION_THRESHOLD = 1e-3
#: a site's replacement is considered when its own conditional probability is at least this:
#: 1 % keeps, for Si4+, Ti, V, Mn or Fe (about 2 %), and leaves out the table's rare pairs such
#: as Rh+, N+ or C+ for Na+ (0.3-0.4 %)
SITE_PROBABILITY_MIN = 0.01


def _ranked_candidates(model, symbol: str, charge: float) -> list[tuple[str, float]]:
    """``(element, conditional probability)`` of the ions of the same charge that may replace
    ``symbol`` in that oxidation state with a probability of at least SITE_PROBABILITY_MIN, most
    probable first (the table's own entries only)."""
    from pymatgen.core import Species

    here = Species(symbol, charge)
    out = []
    for sp in model.species:
        if sp.oxi_state != charge or sp.symbol == symbol or sp.symbol in EXCLUDED \
                or sp.Z > 83:
            continue
        p = float(model.cond_prob(here, sp))
        if p >= SITE_PROBABILITY_MIN:
            out.append((sp.symbol, p))
    out.sort(key=lambda t: (-t[1], t[0]))
    return out


def _combinations(options: list[list[tuple[str, float]]], threshold: float):
    """``(probability, symbols)`` of every choice of one ``(symbol, probability)`` per site whose
    product is at least ``threshold``; a branch stops as soon as even the most probable choices
    of the sites after it cannot reach the threshold."""
    options = [sorted(o, key=lambda t: (-t[1], t[0])) for o in options]
    best_rest = [1.0] * (len(options) + 1)
    for i in range(len(options) - 1, -1, -1):
        best_rest[i] = best_rest[i + 1] * options[i][0][1]
    out = []

    def walk(i, p, chosen):
        if i == len(options):
            out.append((p, tuple(chosen)))
            return
        for symbol, q in options[i]:
            if p * q * best_rest[i + 1] < threshold:
                break
            walk(i + 1, p * q, chosen + [symbol])

    walk(0, 1.0, [])
    return out


def _covalent_radius(symbol: str) -> float:
    from ase.data import atomic_numbers, covalent_radii

    return float(covalent_radii[atomic_numbers[symbol]])


def substitute(atoms: Atoms, mapping: dict) -> Atoms:
    """``atoms`` with species replaced by ``mapping`` (old -> new) and the volume scaled by the
    mean cube of the covalent-radius ratios of the replaced atoms."""
    symbols = atoms.get_chemical_symbols()
    ratios = [(_covalent_radius(mapping[s]) / _covalent_radius(s)) ** 3
              for s in symbols if s in mapping]
    out = atoms.copy()
    out.set_chemical_symbols([mapping.get(s, s) for s in symbols])
    out.set_masses()
    scale = (1.0 + (np.mean(ratios) - 1.0) * len(ratios) / len(symbols)) ** (1.0 / 3.0)
    out.set_cell(out.cell[:] * scale, scale_atoms=True)
    return out


def parent_key(key: str) -> str | None:
    """The key of the AFLOW prototype a substitution was made from (``aflow:<label>``), or
    None for a structure that is not a substitution."""
    parts = str(key).split(":", 2)
    return f"aflow:{parts[1]}" if len(parts) == 3 and parts[0] == "sub" else None


def substitutions(per_prototype: int = 40, threshold: float = SUBSTITUTION_THRESHOLD,
                  prototypes=None):
    """Single- and multi-site substitutions of every charge-balanced AFLOW prototype of a
    compound, ranked by the Hautier et al. (2011) probabilities: the ``per_prototype`` most
    probable of those with a probability of at least ``threshold`` (the product over sites of
    the conditional probability of each replacement, a kept site counting its probability of
    staying; a replacement itself needs SITE_PROBABILITY_MIN), interleaved round-robin over the
    prototypes in order of rank (so a build stopped early has the most probable substitution of
    every prototype first). ``prototypes``: ``(label, atoms)`` pairs to substitute instead of
    the AFLOW library."""
    try:
        from pymatgen.analysis.structure_prediction.substitution_probability import (
            SubstitutionProbability)
        from pymatgen.core import Species
    except ImportError:
        raise InputError("--structures substitutions needs pymatgen "
                         "(pip install 'mlff-ins[database]')") from None
    model = SubstitutionProbability()
    table = {(sp.symbol, sp.oxi_state) for sp in model.species}
    lists = []
    for label, atoms in (_aflow_entries() if prototypes is None else prototypes):
        symbols = sorted(set(atoms.get_chemical_symbols()))
        if len(symbols) < 2:
            continue            # elements: ase-bulk and dcdft cover them
        guess = _oxidation_guess(atoms.get_chemical_symbols())
        if not guess or any((s, guess.get(s)) not in table for s in symbols):
            continue
        options = []
        for s in symbols:
            keep = float(model.cond_prob(Species(s, guess[s]), Species(s, guess[s])))
            options.append([(s, keep)] + _ranked_candidates(model, s, guess[s]))
        ranked = sorted(((p, new) for p, new in _combinations(options, threshold)
                         if new != tuple(symbols) and len(set(new)) == len(new)),
                        key=lambda t: (-t[0], t[1]))
        lists.append([(label, atoms, {s: n for s, n in zip(symbols, new) if s != n})
                      for _, new in ranked[:per_prototype]])
    for round_ in itertools.zip_longest(*lists):
        for item in round_:
            if item is not None:
                label, atoms, mapping = item
                text = ",".join(f"{s}-{n}" for s, n in mapping.items())
                yield f"sub:{label}:{text}", substitute(atoms, mapping)


def _files(path: Path):
    """``(key, atoms)`` of every frame of a structure file, or of every file under a folder
    (subfolders included, hidden names skipped). A key names the file by its path inside the
    folder given (``file:FOLDER/sub/POSCAR``, or ``file:NAME`` for a file given alone) and the
    start of its content's SHA-256: two files of one name in different folders are two entries,
    and an edited file is a new entry on resume, not one already done."""
    import hashlib

    from ase.io import read

    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            raise InputError(f"--structures {path}: a folder with no structure files")
        names = {f: f"{path.resolve().name}/{f.relative_to(path).as_posix()}" for f in files}
    else:
        files, names = [path], {path: path.name}
    for f in files:
        try:
            frames = read(f, index=":")
        except Exception as exc:  # noqa: BLE001 - any reader error is the user's file
            raise InputError(f"{f}: cannot read a structure ({str(exc).splitlines()[0]})") \
                from None
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
        for i, a in enumerate(frames):
            yield f"file:{names[f]}@{digest}" + (f":{i}" if len(frames) > 1 else ""), a


def iter_structures(spec: str, max_atoms: int = 12, per_prototype: int = 40):
    """``(key, primitive atoms)`` of every usable structure named by ``spec`` (comma-separated
    source names, or a structure file / folder), in a fixed order, without repeated keys."""
    makers = {"aflow": aflow, "ase-bulk": ase_bulk, "dcdft": dcdft,
              "substitutions": lambda: substitutions(per_prototype)}
    seen = set()
    for name in [s.strip() for s in str(spec).split(",") if s.strip()]:
        if name in makers:
            gen = makers[name]()
        elif Path(name).exists():
            gen = _files(Path(name))
        else:
            raise InputError(f"--structures {name}: neither a source ({', '.join(SOURCES)}) "
                             "nor an existing structure file or folder")
        for key, atoms in gen:
            if key in seen or not _usable(atoms.get_chemical_symbols()):
                continue
            prim = primitive(atoms)
            if len(prim) > max_atoms:
                continue
            seen.add(key)
            yield key, prim
