"""What a phonon calculation reports: mesh frequencies and eigenvectors, DOS and partial DOS,
a band structure along the standard path, and the imaginary modes — for every ensemble member.

Frequencies are phonopy's (THz; imaginary modes are negative numbers); energies are meV
(E = h f, 1 THz = 4.135667696 meV). Partial DOS are per element, summed over the element's atoms
in the primitive cell, so they add up to the total DOS (area 3 n_atoms).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlff_ins.ins.modes import MEV_PER_THZ, mesh_modes  # noqa: F401  (re-exported)


@dataclass
class PhononProperties:
    mesh: np.ndarray                 # (3,) grid
    qpoints: np.ndarray              # (Q, 3) fractional, reciprocal of the primitive cell
    weights: np.ndarray              # (Q,)
    frequencies_THz: np.ndarray      # (K, Q, 3n)
    eigenvectors: np.ndarray | None  # (Q, 3n, 3n) of the member-mean force constants
    dos_frequency_THz: np.ndarray    # (E,)
    dos_total: np.ndarray            # (K, E) states/THz per primitive cell
    dos_partial: dict                # element -> (K, E)
    band_qpoints: np.ndarray         # (B, 3)
    band_distances: np.ndarray       # (B,)
    band_labels: list                # [(distance, label), ...]
    band_frequencies_THz: np.ndarray  # (K, B, 3n)
    imaginary: list = field(default_factory=list)  # [(q frac, frequency THz, where), ...]
    thermal: dict | None = None      # :func:`thermal_properties`


def band_path(ph, npoints: int = 200):
    """Standard band path of the primitive cell (ASE's special points), as fractional q-points,
    cumulative distances (1/Angstrom, 2 pi included) and labelled breakpoints."""
    from ase.cell import Cell

    path = Cell(ph.primitive.cell).bandpath(npoints=npoints)
    q = np.array(path.kpts)
    x, xlabels, labels = path.get_linear_kpoint_axis()
    pretty = [r"$\Gamma$" if s == "G" else s for s in labels]
    return q, 2 * np.pi * np.asarray(x), list(zip((2 * np.pi * np.asarray(xlabels)).tolist(),
                                                  pretty))


def _gamma_ends(q, x):
    """(q, x, {index: direction}) with every Γ of a band path an end of its segment: a Γ with a
    segment on each side (the same distance as neither neighbour) is doubled, each copy taking
    the limit along its own segment (towards the neighbouring point)."""
    q, x = np.asarray(q, dtype=float), np.asarray(x, dtype=float)
    out_q, out_x, directions = [], [], {}
    for i in range(len(q)):
        if np.abs(q[i]).max() >= 1e-12:
            out_q.append(q[i])
            out_x.append(x[i])
            continue
        before = i > 0 and x[i - 1] < x[i]             # a segment arrives here
        after = i + 1 < len(q) and x[i + 1] > x[i]     # a segment leaves from here
        for side, j in ((before, i - 1), (after, i + 1)):
            if side:
                directions[len(out_q)] = q[j] - q[i]
                out_q.append(q[i])
                out_x.append(x[i])
        if not (before or after):                      # a path of Γ alone
            out_q.append(q[i])
            out_x.append(x[i])
    return np.array(out_q), np.array(out_x), directions


def imaginary_modes(qpoints, frequencies_THz, where: str, tol_THz: float):
    """(q, lowest frequency, where) for every q-point with a mode below -tol_THz.

    ``frequencies_THz`` (q, modes) of one model, or (members, q, modes) of an ensemble: a q-point
    counts where any member has such a mode (its lowest over the members; ``where`` then says in
    how many), so a mode soft in some members is not averaged away by the others."""
    f_all = np.asarray(frequencies_THz)
    members = f_all if f_all.ndim == 3 else f_all[None]
    lowest = members.min(axis=2)                                    # (members, q)
    out = []
    for i, q in enumerate(qpoints):
        soft = int(np.sum(lowest[:, i] < -tol_THz))
        if soft:
            label = where if len(members) == 1 else f"{where}, {soft} of {len(members)} members"
            out.append((tuple(float(x) for x in q), float(lowest[:, i].min()), label))
    return out


#: the three lowest modes at Γ count as the acoustic ones when below this (THz)
GAMMA_ACOUSTIC_THZ = 0.05


def thermal_properties(members, mesh, t_max: float = 1000.0, t_step: float = 10.0) -> dict:
    """Harmonic heat capacity C_V, entropy S, Helmholtz free energy F and zero-point energy of
    every member, by phonopy's own thermal properties on ``mesh`` (T = 0..t_max K).

    phonopy gives them per mole of primitive cells; here they are per mole of atoms and per mole
    of formula units (the primitive cell's composition reduced by its greatest common divisor),
    in J/(K mol) and kJ/mol. Modes below phonopy's cutoff (imaginary ones included) and the
    acoustic modes at Γ are left out. Returns {"temperature_K", "per_atom": {...}, "per_formula_unit": {...},
    "formula", "n_atoms_primitive"}, each quantity of shape (members, T)."""
    from math import gcd

    from mlff_ins.phonons.finite_displacement import mean_phonopy

    symbols = list(mean_phonopy(members).primitive.symbols)
    counts = {s: symbols.count(s) for s in dict.fromkeys(symbols)}
    n_fu = 0
    for c in counts.values():
        n_fu = gcd(n_fu, c)
    formula = "".join(f"{s}{c // n_fu if c // n_fu > 1 else ''}" for s, c in counts.items())
    rows = {"heat_capacity": [], "entropy": [], "free_energy": []}
    temps = None
    for m in members:
        # the three acoustic modes at Γ (zero frequency, up to round-off) are left out, as phonopy
        # advises; a model without them (an Einstein solid) keeps all its modes
        m.run_qpoints([[0.0, 0.0, 0.0]])
        acoustic = np.sort(np.abs(m.qpoints.frequencies[0]))[:3].max() < GAMMA_ACOUSTIC_THZ
        # the full grid, as for the DOS: a length-derived mesh of a body-centred lattice
        # (anatase: [11, 11, 15]) breaks the point group, and phonopy would fall back to
        # time-reversal only with a warning; the sums are the same either way
        m.run_mesh(mesh, is_gamma_center=True, is_mesh_symmetry=False)
        m.run_thermal_properties(t_min=0.0, t_max=t_max, t_step=t_step,
                                 exclude_gamma_acoustic=bool(acoustic))
        tp = m.thermal_properties      # kJ/mol and J/(K mol), as phonopy's dict had them
        temps = np.array(tp.temperatures)
        for k in rows:
            rows[k].append(np.array(getattr(tp, k)))
    n = len(symbols)
    out = {"temperature_K": temps, "formula": formula, "n_atoms_primitive": n,
           "units": {"heat_capacity": "J/(K mol)", "entropy": "J/(K mol)",
                     "free_energy": "kJ/mol", "zero_point_energy": "kJ/mol"}}
    for label, per in (("per_atom", n), ("per_formula_unit", n_fu)):
        q = {k: np.array(v) / per for k, v in rows.items()}
        q["zero_point_energy"] = q["free_energy"][:, 0]      # F(T = 0)
        out[label] = q
    return out


def band_points_for(n_atoms: int, requested: int) -> int:
    """Points of the band path for a primitive cell of ``n_atoms``: a cell of hundreds of atoms
    (an amorphous or defect cell as its own supercell) has folded bands of little meaning, and
    each point costs a diagonalisation of 3n x 3n per member, so cells above 64 atoms get
    proportionally fewer (512 atoms: 25 of 200), never fewer than 8 (or than asked for)."""
    if n_atoms <= 64:
        return requested
    return min(requested, max(8, requested * 64 // n_atoms))


def compute_properties(members, mesh, *, band_points: int = 200, dos_pitch_THz: float = 0.05,
                       imaginary_tol_THz: float = 0.05, t_max: float | None = 1000.0
                       ) -> PhononProperties:
    """Mesh, DOS (phonopy's tetrahedron method), partial DOS per element and bands for every
    member; eigenvectors from the member-mean force constants; imaginary modes wherever any
    member has one (:func:`imaginary_modes`); thermal properties up to ``t_max`` K (None:
    none)."""
    from mlff_ins.phonons.finite_displacement import mean_phonopy

    mean = mean_phonopy(members)
    grid, qpoints, weights, _, eigvecs = mesh_modes(mean, mesh)
    freqs = []
    for m in members:
        freqs.append(mesh_modes(m, grid, with_eigenvectors=False)[3])
    freqs = np.array(freqs)
    fmin = min(0.0, float(freqs.min())) - 5 * dos_pitch_THz
    fmax = float(freqs.max()) + 5 * dos_pitch_THz
    symbols = list(mean.primitive.symbols)
    elements = list(dict.fromkeys(symbols))
    dos_total, dos_partial = [], {e: [] for e in elements}
    for m in members:
        m.run_mesh(grid, is_mesh_symmetry=False, with_eigenvectors=True, is_gamma_center=True)
        m.run_projected_dos(freq_min=fmin, freq_max=fmax, freq_pitch=dos_pitch_THz)
        pd = m.projected_dos
        proj = np.array(pd.projected_dos)
        dos_total.append(proj.sum(axis=0))
        for e in elements:
            dos_partial[e].append(proj[[i for i, s in enumerate(symbols) if s == e]].sum(axis=0))
        dos_freq = np.array(pd.frequency_points)
    bq, bx, blabels = band_path(mean, band_points_for(len(mean.primitive), band_points))
    # with the non-analytical term, Γ itself is taken along the path, so the LO branch meets Γ
    # at its long-wavelength limit instead of dropping onto the TO one: each segment at its own
    # Γ (a Γ in the middle of the path, as in K-Γ-A, is doubled: in an anisotropic crystal the
    # two segments reach different LO limits), the limit along that segment
    directions = {}
    if mean.nac_params is not None:
        bq, bx, directions = _gamma_ends(bq, bx)
    band = []
    for m in members:
        m.run_qpoints(bq)
        f = np.array(m.qpoints.frequencies)
        for i, direction in directions.items():
            m.run_qpoints([bq[i]], nac_q_direction=direction)
            f[i] = m.qpoints.frequencies[0]
        band.append(f)
    band = np.array(band)
    imag = (imaginary_modes(qpoints, freqs, "mesh", imaginary_tol_THz)
            + imaginary_modes(bq, band, "band", imaginary_tol_THz))
    thermal = thermal_properties(members, grid, t_max) if t_max else None
    return PhononProperties(grid, qpoints, weights, freqs, eigvecs, dos_freq,
                            np.array(dos_total), {e: np.array(v) for e, v in dos_partial.items()},
                            bq, bx, blabels, band, imag, thermal)


#: branch names of the sorted frequencies at Γ, X and L of diamond-structure crystals (Si, Ge, C)
DIAMOND_BRANCHES = {"G": [None, None, None, "TO", "TO", "TO"],
                    "X": ["TA", "TA", "LA", "LA", "TO", "TO"],
                    "L": ["TA", "TA", "LA", "LO", "TO", "TO"]}


def diamond_special_frequencies(ph) -> dict:
    """{point: {branch: THz}} at Γ ("G"), X and L of a diamond-structure crystal, from the sorted
    frequencies (LO and TO are degenerate at Γ without NAC; at L, LA < LO < TO as in Si)."""
    from ase.cell import Cell

    special = Cell(ph.primitive.cell).bandpath().special_points
    out = {}
    for label, names in DIAMOND_BRANCHES.items():
        ph.run_qpoints([special[label]])
        f = np.sort(ph.qpoints.frequencies[0])
        out[label] = {n: float(v) for n, v in zip(names, f) if n}
    return out
