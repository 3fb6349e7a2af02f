"""Structural checks of a (usually amorphous) periodic model against the literature.

The radial distribution function g(r) (total and element-pair partials), its first peak and
first minimum, per-atom coordination with the fractions of 3-, 4- and 5-fold atoms, and the
distribution of bond angles, each averaged over the frames given; :func:`structure_report`
gathers them into one JSON-serialisable dict (cutoff from the first minimum of g(r) unless
given) and :func:`plot_structure` draws g(r) and the bond-angle distribution with the
literature values of amorphous silicon. Frames may be one ``ase.Atoms``, a list of them, a
:class:`~mlff_ins.analysis.trajectory.Trajectory` (any reader of that module), or a path read
with the same readers (H5MD, or anything ``ase.io`` reads). Lengths in Å, angles in degrees.

Choice of algorithm (measured on 512 atoms x 50 frames, r_max 8 Å, 2 busy cores): pairs from
``ase.neighborlist.neighbor_list`` took 31 s, ``ase.geometry.rdf.get_rdf`` 4.3 s for the total
alone (one more call per element pair; it refuses r_max beyond half the cell and loops over atoms
in Python), a direct minimum-image count 0.6 s. g(r) therefore counts pairs directly by minimum
image, which is exact when r_max <= half the smallest perpendicular cell width (a pair closer
than that has fractional separations within (-1/2, 1/2), so rounding them finds it, and no two
images of it can both lie within r_max). Beyond half the cell a periodic model of a glass shows
its own images, not the material, so such an r_max is refused unless ``beyond_half_cell=True``
is passed; then ASE's ``neighbor_list`` counts every periodic image within r_max (which is the
right g(r) of the infinite periodic crystal). Coordination and bond angles use ``neighbor_list``
(short cutoffs, any cell). The tests compare g(r) with ASE's ``get_rdf`` and with counts from
``neighbor_list``.

Normalisation: g(r) in the bin [r_k, r_k+1) is the number of neighbours counted there per
centre atom divided by the ideal-gas count rho * 4/3 pi (r_k+1^3 - r_k^3) (the exact shell volume,
the integral of rho 4 pi r^2 dr), with rho = N/V, so g -> 1 at large r (to (N-1)/N for an ideal
gas of N atoms); partials g_ab use N_a centres and rho_b = N_b/V, so g_ab = g_ba and
g = sum_ab c_a c_b g_ab (the convention of LAMMPS ``compute rdf`` and ASE >= 3.27).

Literature (amorphous Si): K. Laaziri et al., Phys. Rev. Lett. 82, 3460 (1999), "High Resolution
Radial Distribution Function of Pure Amorphous Silicon" (high-energy x-ray diffraction of
ion-implanted membranes). Its abstract, checked against a stored copy, gives the first-shell
coordination C1 = 3.88 after annealing at 600 C. The first-peak position 2.35 Å could not be
checked against the paper's text here (only the abstract was available); it is the a-Si bond
length commonly quoted from this measurement and agrees with crystalline Si
(sqrt(3)/4 * 5.431 Å = 2.352 Å). 109.47 deg is the ideal tetrahedral angle arccos(-1/3).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms

from mlff_ins.atomic_io import atomic_path
from mlff_ins.errors import InputError

LITERATURE_SOURCE = "Laaziri et al., Phys. Rev. Lett. 82, 3460 (1999)"
A_SI_FIRST_PEAK_A = 2.35        # a-Si first-neighbour distance (see the module docstring)
A_SI_COORDINATION = 3.88        # Laaziri et al., annealed at 600 C (checked: abstract)
TETRAHEDRAL_ANGLE_DEG = float(np.degrees(np.arccos(-1.0 / 3.0)))   # 109.4712...

_PAIR_BLOCK = 2_000_000          # pairs per block of the direct count (memory ~100 MB)


class FirstShell(NamedTuple):
    """The first peak of g(r) and the first minimum after it (Å; g dimensionless)."""
    r_peak_A: float
    g_peak: float
    r_min_A: float
    g_min: float


class _Frame(NamedTuple):
    symbols: list[str]
    positions: np.ndarray     # (N, 3) Å
    cell: np.ndarray          # (3, 3) Å, rows are lattice vectors
    pbc: np.ndarray           # (3,) bool


# ----------------------------------------------------------------------------------- frames


def _frames(source) -> Iterator[_Frame]:
    """Yield the frames of ``source`` (see the module docstring); InputError if there are none
    or a frame has no atoms."""
    from mlff_ins.analysis.trajectory import Trajectory

    if isinstance(source, Atoms):
        it: Iterable = [_from_atoms(source)]
    elif isinstance(source, Trajectory):
        it = _from_trajectory(source)
    elif isinstance(source, (str, os.PathLike)):
        it = _from_path(Path(source))
    elif isinstance(source, Iterable):
        it = (_from_atoms(a) if isinstance(a, Atoms) else _bad_frame(a) for a in source)
    else:
        raise InputError(f"frames must be ase.Atoms, a list of them, a Trajectory or a path, "
                         f"not {type(source).__name__}")
    n = 0
    for frame in it:
        if len(frame.symbols) == 0:
            raise InputError(f"frame {n} has no atoms")
        n += 1
        yield frame
    if n == 0:
        raise InputError("no frames given (an empty list or trajectory)")


def _bad_frame(a):
    raise InputError(f"frames must be ase.Atoms, not {type(a).__name__}")


def _from_atoms(a: Atoms) -> _Frame:
    return _Frame(a.get_chemical_symbols(), np.asarray(a.positions, dtype=float),
                  np.asarray(a.cell.array, dtype=float), np.asarray(a.pbc, dtype=bool))


def _from_trajectory(traj) -> Iterator[_Frame]:
    symbols = list(traj.symbols)
    pbc = np.ones(3, dtype=bool)
    for chunk in traj.chunks(64):
        for pos, cell in zip(chunk.positions, chunk.cells):
            yield _Frame(symbols, np.asarray(pos, dtype=float), np.asarray(cell, dtype=float),
                         pbc)


def _from_path(path: Path) -> Iterator[_Frame]:
    # the readers of trajectory.py, without Trajectory's demands of a time step and two frames
    from mlff_ins.analysis.trajectory import _ASE, _H5MD

    if not path.is_file():
        raise InputError(f"{path}: no such trajectory file")
    impl = _H5MD(path) if path.suffix.lower() in (".h5", ".h5md", ".hdf5") else _ASE(path)
    pbc = np.ones(3, dtype=bool)
    for chunk in impl.chunks(64, 1, 0, None):
        for pos, cell in zip(chunk.positions, chunk.cells):
            yield _Frame(list(impl.symbols), pos, cell, pbc)


def _as_frame(atoms) -> _Frame:
    if isinstance(atoms, _Frame):
        return atoms
    if not isinstance(atoms, Atoms):
        raise InputError(f"coordination needs one ase.Atoms, not {type(atoms).__name__}")
    if len(atoms) == 0:
        raise InputError("the structure has no atoms")
    return _from_atoms(atoms)


def _volume(frame: _Frame, n: int, what: str) -> float:
    vol = abs(float(np.linalg.det(frame.cell)))
    if not np.all(frame.pbc) or vol < 1e-9:
        raise InputError(f"frame {n}: {what} needs a periodic cell (pbc in all three directions "
                         f"and a non-zero volume)")
    return vol


def half_cell_width(cell: np.ndarray) -> float:
    """Half the smallest distance between opposite faces of the cell (Å)."""
    vol = abs(np.linalg.det(cell))
    return 0.5 * min(vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
                     for i in range(3))


def _neighbors(frame: _Frame, cutoff: float, quantities: str):
    from ase.neighborlist import primitive_neighbor_list

    return primitive_neighbor_list(quantities, frame.pbc, frame.cell, frame.positions,
                                   float(cutoff), self_interaction=False)


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be positive, not {value!r}")
    return v


# ---------------------------------------------------------------------------------- g(r)


def _pair_names(pairs, species: Sequence[str]) -> list[tuple[str, str]]:
    if pairs is None:
        return [(a, b) for k, a in enumerate(species) for b in species[k:]]
    out = []
    for p in pairs:
        ab = tuple(p.split("-")) if isinstance(p, str) else tuple(p)
        if len(ab) != 2 or not all(isinstance(x, str) for x in ab):
            raise InputError(f"pairs: {p!r} is not an element pair such as 'Si-O'")
        for x in ab:
            if x not in species:
                raise InputError(f"pairs: {p!r} names {x}, which is not among the elements of "
                                 f"the frames ({', '.join(species)})")
        out.append(tuple(sorted(ab)))
    return list(dict.fromkeys(out))


def _pair_histogram(frame: _Frame, kinds: np.ndarray, n_kinds: int, edges: np.ndarray,
                    beyond_half_cell: bool) -> np.ndarray:
    """Ordered-pair counts (n_kinds, n_kinds, bins): [a, b, k] = pairs i of kind a, j of kind
    b, i != j (or a periodic image of i), at a distance in [edges[k], edges[k+1])."""
    r_max, n_bins = edges[-1], len(edges) - 1
    dr = r_max / n_bins
    counts = np.zeros(n_kinds * n_kinds * n_bins, dtype=np.int64)

    def add(ki, kj, d):
        keep = d < r_max
        b = np.minimum((d[keep] / dr).astype(np.int64), n_bins - 1)
        code = (ki[keep] * n_kinds + kj[keep]) * n_bins + b
        counts[:] += np.bincount(code, minlength=counts.size)

    if beyond_half_cell:
        i, j, d = _neighbors(frame, r_max, "ijd")
        add(kinds[i], kinds[j], d)
    else:
        # minimum image by rounding fractional separations: exact for r_max <= half width
        n = len(kinds)
        frac = np.linalg.solve(frame.cell.T, frame.positions.T).T
        rows = max(1, _PAIR_BLOCK // n)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            ds = frac[s:e, None, :] - frac[None, :, :]
            ds -= np.round(ds)
            d = np.linalg.norm(ds @ frame.cell, axis=-1)
            d[np.arange(e - s), np.arange(s, e)] = np.inf          # no self pairs
            add(np.repeat(kinds[s:e], n), np.tile(kinds, e - s), d.ravel())
    return counts.reshape(n_kinds, n_kinds, n_bins)


def radial_distribution(frames_or_atoms, r_max: float = 8.0, dr: float = 0.02, pairs=None, *,
                        beyond_half_cell: bool = False) -> dict:
    """Total and partial radial distribution functions averaged over frames.

    Parameters
    ----------
    frames_or_atoms
        ``ase.Atoms``, a sequence of them, a Trajectory or a trajectory path; periodic cells.
    r_max, dr
        Range and bin width of the histogram (Å); ``dr`` is adjusted so that a whole number of
        bins fills [0, r_max).
    pairs
        Element pairs of the partials, as ``"Si-O"`` or ``("Si", "O")``; None: every pair.
    beyond_half_cell
        Allow r_max larger than half the smallest perpendicular cell width (then every periodic
        image within r_max counts). Without it such an r_max is an :class:`InputError`.

    Returns
    -------
    dict
        ``r_A`` (bins,) bin centres Å; ``r_edges_A`` (bins+1,); ``g_total`` (bins,);
        ``partials`` {"A-B": (bins,)} with A <= B alphabetically; ``number_density_per_A3``
        (mean over frames); ``species``; ``n_frames``; ``n_atoms`` (of the first frame);
        ``dr_A``; ``r_max_A``.
    """
    r_max = _positive(r_max, "r_max")
    dr = _positive(dr, "dr")
    if dr > r_max:
        raise InputError(f"dr ({dr} Å) must not exceed r_max ({r_max} Å)")
    n_bins = max(1, round(r_max / dr))
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    g_sum = None
    rho_sum, n_frames, first_n, species, names = 0.0, 0, 0, None, None
    for t, frame in enumerate(_frames(frames_or_atoms)):
        vol = _volume(frame, t, "g(r)")
        half = half_cell_width(frame.cell)
        if r_max > half * (1 + 1e-12) and not beyond_half_cell:
            raise InputError(f"r_max {r_max:g} Å is more than half the smallest width of the "
                             f"cell of frame {t} ({half:.3f} Å); lower --r-max, or make a "
                             f"supercell first (`mlff-ins build CELL --supercell 3 3 3`; "
                             f"beyond_half_cell=True in Python counts periodic images)")
        if species is None:
            species = sorted(set(frame.symbols))
            names = _pair_names(pairs, species)
            first_n = len(frame.symbols)
        index = {s: k for k, s in enumerate(species)}
        try:
            kinds = np.array([index[s] for s in frame.symbols], dtype=np.int64)
        except KeyError as exc:
            raise InputError(f"frame {t} has element {exc.args[0]}, absent from frame 0") \
                from None
        n_of = np.bincount(kinds, minlength=len(species)).astype(float)
        hist = _pair_histogram(frame, kinds, len(species), edges, beyond_half_cell)
        n = float(len(kinds))
        g = [hist.sum(axis=(0, 1)) / (n * (n / vol) * shell)]
        for a, b in names:
            ia, ib = index[a], index[b]
            if n_of[ia] == 0 or n_of[ib] == 0:
                raise InputError(f"frame {t} has no {a if n_of[ia] == 0 else b} atoms for the "
                                 f"partial g(r) {a}-{b}")
            g.append(hist[ia, ib] / (n_of[ia] * (n_of[ib] / vol) * shell))
        g = np.stack(g)
        g_sum = g if g_sum is None else g_sum + g
        rho_sum += n / vol
        n_frames += 1
    g_mean = g_sum / n_frames
    return {
        "r_A": 0.5 * (edges[:-1] + edges[1:]),
        "r_edges_A": edges,
        "g_total": g_mean[0],
        "partials": {f"{a}-{b}": g_mean[k + 1] for k, (a, b) in enumerate(names)},
        "number_density_per_A3": rho_sum / n_frames,
        "species": species,
        "n_frames": n_frames,
        "n_atoms": first_n,
        "dr_A": float(edges[1]),
        "r_max_A": r_max,
    }


def coordination_from_rdf(rdf: dict, cutoff: float) -> float:
    """Mean coordination 4 pi rho integral_0^cutoff g(r) r^2 dr from :func:`radial_distribution`
    (exact shell volumes; linear within the bin holding ``cutoff``). For frames of one volume it
    equals the mean neighbour count within ``cutoff`` (to rounding when cutoff is a bin edge)."""
    cutoff = _positive(cutoff, "cutoff")
    edges = np.asarray(rdf["r_edges_A"], dtype=float)
    if cutoff > edges[-1]:
        raise InputError(f"cutoff {cutoff:g} Å lies beyond r_max {edges[-1]:g} Å of the g(r)")
    shell = 4.0 / 3.0 * np.pi * np.diff(edges ** 3)
    running = np.concatenate([[0.0], np.cumsum(np.asarray(rdf["g_total"]) * shell)])
    return float(rdf["number_density_per_A3"] * np.interp(cutoff, edges, running))


# --------------------------------------------------------------------------- first shell


def _vertex(r: np.ndarray, g: np.ndarray, k: int, maximum: bool) -> tuple[float, float]:
    """Sub-bin extremum: the vertex of the parabola through bins k-1, k, k+1, kept only when it
    curves the right way and stays within half a bin of bin k; else the bin itself."""
    x, y = r[k - 1:k + 2], g[k - 1:k + 2]
    c2, c1, c0 = np.polyfit(x - r[k], y, 2)
    half = 0.5 * min(r[k] - r[k - 1], r[k + 1] - r[k])
    if (c2 < 0) if maximum else (c2 > 0):
        dx = -c1 / (2 * c2)
        if abs(dx) <= half:
            return float(r[k] + dx), float(c0 + c1 * dx + c2 * dx * dx)
    return float(r[k]), float(g[k])


def first_peak(r, g, *, prominence: float = 0.1, smooth_A: float = 0.04) -> FirstShell:
    """Position of the first maximum of g(r) and of the first minimum after it.

    Parameters
    ----------
    r, g
        Bin centres (Å) and g(r), shape (bins,).
    prominence
        A maximum or minimum counts when it stands out from its surroundings by at least this
        fraction of max(g) (``scipy.signal.find_peaks`` prominence), so statistical noise in a
        short average does not count as the first shell. The minimum of a flat stretch (a
        crystal's empty gap between shells) is the middle of that stretch.
    smooth_A
        Standard deviation (Å) of the Gaussian that smooths g before the extrema are located
        and refined: one frame of a few hundred atoms leaves isolated one-bin spikes of a few
        pairs each, which a parabola through three raw bins would follow. A symmetric peak
        keeps its position; 0 uses g as it is.

    Returns
    -------
    FirstShell
        ``(r_peak_A, g_peak, r_min_A, g_min)`` of the smoothed g, each refined below the bin
        width by a parabola through the extreme bin and its neighbours. ``r_min_A`` is the
        natural cutoff of the first coordination shell.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    r = np.asarray(r, dtype=float)
    g = np.asarray(g, dtype=float)
    if r.ndim != 1 or r.shape != g.shape or len(r) < 5:
        raise InputError(f"first_peak needs r and g of one equal length (>= 5), not shapes "
                         f"{r.shape} and {g.shape}")
    if not np.all(np.isfinite(g)) or g.max() <= 0:
        raise InputError("g(r) is zero everywhere (or not finite): no pair of atoms within "
                         "r_max; a small crystal cell needs a supercell first (`mlff-ins build "
                         "CELL --supercell 3 3 3`)")
    if smooth_A < 0:
        raise InputError(f"smooth_A must not be negative, not {smooth_A}")
    if smooth_A > 0:
        g = gaussian_filter1d(g, smooth_A / float(np.mean(np.diff(r))), mode="nearest")
    height = float(prominence) * g.max()
    peaks, _ = find_peaks(g, prominence=height)
    if not len(peaks):
        raise InputError("g(r) has no maximum inside its range: raise r_max")
    p = int(peaks[0])
    minima, _ = find_peaks(-g, prominence=height)
    minima = minima[minima > p]
    if not len(minima):
        raise InputError(f"g(r) has no minimum after its first peak at {r[p]:.3f} Å within "
                         f"r_max {r[-1]:.2f} Å: raise r_max")
    m = int(minima[0])
    rp, gp = _vertex(r, g, p, maximum=True)
    rm, gm = _vertex(r, g, m, maximum=False)
    return FirstShell(rp, gp, rm, gm)


# -------------------------------------------------------------------------- coordination


def coordination(atoms: Atoms, cutoff: float) -> np.ndarray:
    """Number of neighbours of every atom closer than ``cutoff`` (Å), periodic images included.

    Returns
    -------
    numpy.ndarray
        (N,) int.
    """
    cutoff = _positive(cutoff, "cutoff")
    frame = _as_frame(atoms)
    i = _neighbors(frame, cutoff, "i")
    return np.bincount(i, minlength=len(frame.symbols))


def coordination_summary(frames, cutoff: float) -> dict:
    """Mean coordination and the fractions of 3-, 4-, 5-fold and other atoms over all frames.

    Returns
    -------
    dict
        ``cutoff_A``; ``mean_coordination``; ``fraction_3fold``, ``fraction_4fold``,
        ``fraction_5fold``, ``fraction_other`` (sum to 1; atoms x frames pooled);
        ``distribution`` {"n": fraction} for every count seen; ``n_frames``; ``n_atom_frames``.
    """
    cutoff = _positive(cutoff, "cutoff")
    hist = np.zeros(0, dtype=np.int64)
    n_frames = 0
    for frame in _frames(frames):
        c = np.bincount(coordination(frame, cutoff))
        if len(c) > len(hist):
            hist = np.concatenate([hist, np.zeros(len(c) - len(hist), dtype=np.int64)])
        hist[:len(c)] += c
        n_frames += 1
    total = int(hist.sum())
    frac = hist / total
    part = [float(frac[k]) if k < len(frac) else 0.0 for k in (3, 4, 5)]
    return {
        "cutoff_A": cutoff,
        "mean_coordination": float(np.arange(len(hist)) @ hist / total),
        "fraction_3fold": part[0],
        "fraction_4fold": part[1],
        "fraction_5fold": part[2],
        "fraction_other": float(max(0.0, 1.0 - sum(part))),
        "distribution": {str(k): float(f) for k, f in enumerate(frac) if hist[k]},
        "n_frames": n_frames,
        "n_atom_frames": total,
    }


# ------------------------------------------------------------------------------ angles


def _frame_angles(frame: _Frame, cutoff: float) -> np.ndarray:
    """Angles (deg) between every two bonds shorter than ``cutoff`` at each atom."""
    i, vec = _neighbors(frame, cutoff, "iD")
    order = np.argsort(i, kind="stable")
    i, vec = i[order], vec[order]
    if len(i) < 2:
        return np.zeros(0)
    unit = vec / np.linalg.norm(vec, axis=1)[:, None]
    # bonds of one atom are contiguous after sorting: pair each with the next 1, 2, ... of them
    idx = np.arange(len(i))
    first, second = [], []
    for step in range(1, int(np.bincount(i).max())):
        a = idx[:-step]
        same = i[a] == i[a + step]
        first.append(a[same])
        second.append(a[same] + step)
    if not first:
        return np.zeros(0)
    a, b = np.concatenate(first), np.concatenate(second)
    cos = np.clip(np.einsum("ij,ij->i", unit[a], unit[b]), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def bond_angles(frames, cutoff: float, bins: int = 180) -> dict:
    """Distribution of the angle between each pair of bonds (shorter than ``cutoff``, Å) at each
    atom, pooled over frames.

    Returns
    -------
    dict
        ``angle_deg`` (bins,) bin centres on [0, 180]; ``angle_edges_deg`` (bins+1,);
        ``density_per_deg`` (bins,), unit area; ``mean_deg``; ``std_deg`` (population);
        ``n_angles``; ``cutoff_A``.
    """
    cutoff = _positive(cutoff, "cutoff")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer, not {bins!r}")
    edges = np.linspace(0.0, 180.0, int(bins) + 1)
    counts = np.zeros(int(bins), dtype=np.int64)
    n, mean, m2 = 0, 0.0, 0.0
    for frame in _frames(frames):
        x = _frame_angles(frame, cutoff)
        if not len(x):
            continue
        counts += np.histogram(x, bins=edges)[0]
        # Chan et al.'s merge of (count, mean, sum of squared deviations): no cancellation
        nb, mb = len(x), float(x.mean())
        m2b = float(((x - mb) ** 2).sum())
        delta = mb - mean
        tot = n + nb
        mean += delta * nb / tot
        m2 += m2b + delta * delta * n * nb / tot
        n = tot
    if n == 0:
        raise InputError(f"no atom has two neighbours closer than the cutoff {cutoff:g} Å: no "
                         f"bond angles")
    return {
        "angle_deg": 0.5 * (edges[:-1] + edges[1:]),
        "angle_edges_deg": edges,
        "density_per_deg": counts / (n * np.diff(edges)),
        "mean_deg": mean,
        "std_deg": float(np.sqrt(m2 / n)),
        "n_angles": n,
        "cutoff_A": cutoff,
    }


# ------------------------------------------------------------------------------- report


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def structure_report(frames, species: Sequence[str] | None = None, r_max: float = 8.0, *,
                     dr: float = 0.02, cutoff: float | None = None, bins: int = 180,
                     beyond_half_cell: bool = False) -> dict:
    """g(r), first shell, coordination and bond angles of ``frames`` in one JSON-ready dict.

    Parameters
    ----------
    frames
        As for :func:`radial_distribution`.
    species
        Elements whose pair partials g(r) are reported (every pair among them); None: all.
        Coordination and bond angles always count every atom.
    r_max, dr
        g(r) range and bin width (Å).
    cutoff
        Bond cutoff (Å) for coordination and angles; None: the first minimum of g(r).
    bins
        Bond-angle bins on [0, 180] deg.
    beyond_half_cell
        As for :func:`radial_distribution`.

    Returns
    -------
    dict
        ``rdf`` (lists), ``first_shell`` (peak and minimum), ``cutoff_A`` and ``cutoff_source``,
        ``coordination`` (:func:`coordination_summary`), ``coordination_from_rdf``,
        ``bond_angles`` (lists), ``reference`` (the a-Si literature values when the frames are
        pure Si, else None) and ``settings``.
    """
    if not isinstance(frames, (Atoms, str, os.PathLike, Sequence)) and isinstance(frames,
                                                                              Iterator):
        frames = list(frames)          # a generator would be spent after the first pass
    pairs = None
    if species is not None:
        species = list(species)
        pairs = [(a, b) for k, a in enumerate(sorted(species)) for b in sorted(species)[k:]]
    rdf = radial_distribution(frames, r_max=r_max, dr=dr, pairs=pairs,
                              beyond_half_cell=beyond_half_cell)
    try:
        shell = first_peak(rdf["r_A"], rdf["g_total"])
    except InputError:
        if cutoff is None:
            raise
        # a cell too small to show the first minimum: the cutoff was given, keep the peak
        k = int(np.argmax(rdf["g_total"]))
        shell = FirstShell(float(rdf["r_A"][k]), float(rdf["g_total"][k]), float("nan"),
                           float("nan"))
    if cutoff is None:
        cut, source = shell.r_min_A, "first minimum of g(r)"
    else:
        cut, source = _positive(cutoff, "cutoff"), "given"
    coord = coordination_summary(frames, cut)
    angles = bond_angles(frames, cut, bins=bins)
    reference = None
    if rdf["species"] == ["Si"]:
        reference = {"material": "amorphous Si", "source": LITERATURE_SOURCE,
                     "first_peak_A": A_SI_FIRST_PEAK_A, "coordination": A_SI_COORDINATION,
                     "tetrahedral_angle_deg": round(TETRAHEDRAL_ANGLE_DEG, 2)}
    report = {
        "n_frames": rdf["n_frames"],
        "n_atoms": rdf["n_atoms"],
        "species": rdf["species"],
        "number_density_per_A3": rdf["number_density_per_A3"],
        "rdf": {k: rdf[k] for k in ("r_A", "g_total", "partials", "dr_A", "r_max_A")},
        "first_shell": shell._asdict(),
        "cutoff_A": cut,
        "cutoff_source": source,
        "coordination": coord,
        "coordination_from_rdf": coordination_from_rdf(rdf, cut) if cut <= rdf["r_max_A"]
        else None,
        "bond_angles": {k: angles[k] for k in ("angle_deg", "density_per_deg", "mean_deg",
                                               "std_deg", "n_angles")},
        "reference": reference,
        "settings": {"r_max_A": rdf["r_max_A"], "dr_A": rdf["dr_A"], "angle_bins": int(bins),
                     "beyond_half_cell": bool(beyond_half_cell)},
    }
    return _jsonable(report)


def plot_structure(report: dict, png_path: str | os.PathLike) -> None:
    """Two panels, g(r) (total, partials when several) and the bond-angle distribution, with the
    first-shell cutoff and, for pure Si, the a-Si literature values; written atomically."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_g, ax_a = fig.subplots(1, 2)
    rdf = report["rdf"]
    # on top of the partials, which otherwise hide it where they peak
    ax_g.plot(rdf["r_A"], rdf["g_total"], color="k", lw=1.2, label="g(r) total", zorder=3)
    if len(rdf["partials"]) > 1:
        for name, g in rdf["partials"].items():
            ax_g.plot(rdf["r_A"], g, lw=0.9, label=name)
    ax_g.axhline(1.0, color="0.7", lw=0.6)
    shell = report["first_shell"]
    ax_g.axvline(report["cutoff_A"], color="C2", ls=":", lw=1,
                 label=f"cutoff {report['cutoff_A']:.2f} Å ({report['cutoff_source']})")
    ref = report.get("reference")
    if ref:
        ax_g.axvline(ref["first_peak_A"], color="C3", ls="--", lw=1,
                     label=f"a-Si {ref['first_peak_A']} Å, {ref['source']}")
    ax_g.set_xlabel("r (Å)")
    ax_g.set_ylabel("g(r)")
    ax_g.set_xlim(0, rdf["r_max_A"])
    c = report["coordination"]
    ax_g.set_title(f"first peak {shell['r_peak_A']:.3f} Å; coordination "
                   f"{c['mean_coordination']:.2f} (3-fold {100 * c['fraction_3fold']:.1f}%, "
                   f"5-fold {100 * c['fraction_5fold']:.1f}%)", fontsize=8)
    top = max(float(np.nanmax(g)) for g in [rdf["g_total"], *rdf["partials"].values()])
    ax_g.set_ylim(top=1.45 * top)        # headroom: the legend sits above the first peak
    ax_g.legend(fontsize=7, loc="upper right")
    ba = report["bond_angles"]
    width = 180.0 / len(ba["angle_deg"])
    ax_a.bar(ba["angle_deg"], ba["density_per_deg"], width=width, color="C0", alpha=0.7,
             label="bond angles")
    if ref:
        ax_a.axvline(ref["tetrahedral_angle_deg"], color="C3", ls="--", lw=1,
                     label=f"tetrahedral {ref['tetrahedral_angle_deg']}°")
    ax_a.set_xlabel("bond angle (deg)")
    ax_a.set_ylabel("probability density (1/deg)")
    ax_a.set_xlim(0, 180)
    ax_a.set_title(f"mean {ba['mean_deg']:.2f}°, std {ba['std_deg']:.2f}°", fontsize=8)
    ax_a.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


# ------------------------------------------------------------------- did the melt melt?

#: a stage whose typical atom moved less than this (Å) over the stage did not flow: about half a
#: Si-Si bond, twice the rms thermal displacement of crystalline Si near its melting point
#: (~0.25 Å); a liquid's atoms diffuse several Å in a picosecond or two
MELT_MIN_DISPLACEMENT_A = 1.0


class StageMotion(NamedTuple):
    """How far the atoms moved during one protocol stage (unwrapped, first to last frame)."""
    stage: str
    frames: int
    median_A: float
    max_A: float


def stage_motion(path: str | os.PathLike) -> list[StageMotion]:
    """For each protocol stage of an `mlff-ins md --protocol` trajectory, the median and the
    largest distance an atom travelled between the stage's first and last frames (positions
    unwrapped frame by frame, the mean displacement of all atoms, a drift of the whole cell under
    a Langevin thermostat, taken off). A melt whose median stays below :data:`MELT_MIN_DISPLACEMENT_A`
    left the crystal a (superheated) solid."""
    from mlff_ins.analysis.unwrap import Unwrapper
    from mlff_ins.data.h5md import frame_stages

    stages = frame_stages(path, "stage motion")
    unwrap, start, out = Unwrapper(), None, []
    frames = _from_path(Path(path))
    for i, (name, frame) in enumerate(zip(stages, frames)):
        pos = unwrap(frame.positions[None], frame.cell[None])[0]
        if i == 0 or name != stages[i - 1]:
            start, n = pos, 0
        n += 1
        if i == len(stages) - 1 or stages[i + 1] != name:
            step = pos - start
            d = np.linalg.norm(step - step.mean(axis=0), axis=1)   # the cell's drift removed
            out.append(StageMotion(name, n, float(np.median(d)), float(d.max())))
    return out
