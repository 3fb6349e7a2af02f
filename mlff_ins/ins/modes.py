"""INS from harmonic phonons: the OCLIMAX/AbINS route (incoherent approximation, mode-resolved
Debye–Waller, multiphonon by isotropic convolution) and coherent one-phonon powder S(Q,E) by
sampling Q directions on spheres (Euphonic's route).

Inputs are phonopy objects with force constants (one per ensemble member). For every atom κ of
the primitive cell, from the modes (q, ν) of a full q-mesh with weights w_q (Σ w_q = 1):

- thermal displacement tensor  B_κ = Σ w_q (ħ²/2M_κ)/(ħω) coth(ħω/2kT) Re(e_κ e_κ^†)   (Å²)
  (modes below ``freq_min`` — the acoustic ones at Γ and any imaginary ones — are left out);
- atom-projected DOS  Z_κ(E) = Σ w_q |e_κ|²/3 δ(E − ħω), area 1;
- incoherent approximation, powder:
  S(Q,E) = Σ_κ (σ_κ/4π n) e^{−Q²⟨u²⟩_κ} Σ_n (E_R,κ)ⁿ/n! T_n,κ(E), ⟨u²⟩_κ = Tr B_κ/3
  (ins/incoherent.py, through ins/engine.py), each atom with its own Debye–Waller factor;
- coherent one phonon (energy loss):
  S(Q,E) = (1/n) Σ_ν |Σ_κ (b_κ/10) √(ħ²/2M_κ) e^{−Q·B_κ·Q/2} (Q·e*_κν(Q))|² (n_ν+1)/ħω_ν δ(E − ħω_ν)
  with the eigenvectors of the dynamical matrix at Q itself (phonopy's convention includes the
  atom positions in the phases, so no e^{iG·r} factor is left); b in fm, S in barn/(sr meV) per
  atom; the powder average is the mean over directions on a Fibonacci sphere at each |Q|.
"""

from __future__ import annotations

import numpy as np

from mlff_ins.ins.engine import VibrationalSource
from mlff_ins.ins.incoherent import NEUTRON_MASS_AMU
from mlff_ins.neutron.kinematics import E_PER_K2
from mlff_ins.neutron.quantum import KB_MEV_PER_K

from mlff_ins.neutron.units import MEV_PER_THZ  # noqa: F401  (re-exported)

#: modes below this (THz) carry no weight (acoustic modes at Γ, imaginary modes)
FREQ_MIN_THZ = 0.05


def _hbar2_over_2m(mass_amu):
    """ħ²/2M in meV Å²."""
    return E_PER_K2 * NEUTRON_MASS_AMU / np.asarray(mass_amu, dtype=float)


def _coth_factor(e_meV, temperature_K):
    """coth(E/2kT) (1 at T = 0)."""
    if temperature_K <= 0:
        return np.ones_like(e_meV)
    return 1.0 / np.tanh(e_meV / (2 * KB_MEV_PER_K * temperature_K))


def _bose(e_meV, temperature_K):
    if temperature_K <= 0:
        return np.zeros_like(e_meV)
    return 1.0 / np.expm1(e_meV / (KB_MEV_PER_K * temperature_K))


def mesh_modes(ph, mesh, with_eigenvectors: bool = True):
    """Full-grid (no symmetry reduction) mesh: qpoints, weights, frequencies, eigenvectors.
    The full grid keeps per-atom projections and displacement tensors exact for every atom."""
    ph.run_mesh(mesh, is_mesh_symmetry=False, with_eigenvectors=with_eigenvectors,
                is_gamma_center=True)
    m = ph.mesh
    return (np.array(m.mesh_numbers), np.array(m.qpoints), np.array(m.weights, dtype=float),
            np.array(m.frequencies), np.array(m.eigenvectors) if with_eigenvectors else None)


def thermal_displacements(freqs_THz, eigvecs, weights, masses, temperature_K,
                          freq_min_THz: float = FREQ_MIN_THZ) -> np.ndarray:
    """B_κ = ⟨u u^T⟩ per atom of the primitive cell, shape (n, 3, 3), Å²."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    e = np.asarray(freqs_THz) * MEV_PER_THZ                          # (Q, M)
    ok = np.asarray(freqs_THz) > freq_min_THz
    amp = np.where(ok, _coth_factor(np.where(ok, e, 1.0), temperature_K) / np.where(ok, e, 1.0),
                   0.0) * w[:, None]                                  # (Q, M)
    n = len(masses)
    v = np.asarray(eigvecs).reshape(len(w), n, 3, -1)                 # (Q, κ, α, mode)
    b = np.einsum("qm,qkam,qkbm->kab", amp, v, v.conj()).real
    return b * _hbar2_over_2m(masses)[:, None, None]


#: share of the modes in the DOS's E = 0 bin above which site_dos warns
ZERO_BIN_WARN_SHARE = 1e-3


def site_dos(freqs_THz, eigvecs, weights, n_atoms: int, energy_meV,
             freq_min_THz: float = FREQ_MIN_THZ, warn: bool = True) -> np.ndarray:
    """Atom-projected DOS on the uniform grid ``energy_meV`` (0, dE, 2dE, ...), shape (n, E),
    1/meV; modes are binned to the nearest grid energy.

    Normalised by all modes above ``freq_min_THz`` (each atom's DOS has area 1 when every mode
    lies on the grid): modes above the grid's end are left out of the DOS but not out of the
    normalisation, so a grid that is too short loses their intensity instead of inflating the
    rest. A warning names the fraction lost and the highest mode energy, and another the
    fraction below dE/2 (in the E = 0 bin, which S(E) leaves out) when it passes 0.1 %.
    """
    e_grid = np.asarray(energy_meV)
    de = e_grid[1] - e_grid[0]
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    f = np.asarray(freqs_THz)
    proj = (np.abs(np.asarray(eigvecs).reshape(len(w), n_atoms, 3, -1)) ** 2).sum(axis=2) / 3
    idx = np.rint(f * MEV_PER_THZ / de).astype(int)                 # (Q, M)
    valid = f > freq_min_THz
    ok = valid & (idx < len(e_grid))
    out = np.zeros((n_atoms, len(e_grid)))
    total = np.zeros(n_atoms)
    for k in range(n_atoms):
        pw = proj[:, k, :] * w[:, None]
        out[k] = np.bincount(idx[ok], weights=pw[ok], minlength=len(e_grid))[:len(e_grid)]
        total[k] = pw[valid].sum()
    above = valid & ~ok
    if warn and above.any():
        import warnings

        lost = 1 - out.sum() / max(total.sum(), 1e-300)
        warnings.warn(f"{lost:.1%} of the vibrational modes lie above the energy grid "
                      f"(highest mode {f.max() * MEV_PER_THZ:.1f} meV, grid ends at "
                      f"{e_grid[-1]:.1f} meV); their intensity is left out; raise --e-max to "
                      f"include them", stacklevel=2)
    # modes between freq_min_THz and dE/2 land in the E = 0 bin, which the phonon orders leave
    # out (their 1/E): a coarse grid loses them while the normalisation keeps them
    at_zero = out[:, 0].sum() / max(total.sum(), 1e-300)
    if warn and at_zero > ZERO_BIN_WARN_SHARE:
        import warnings

        warnings.warn(f"{at_zero:.2%} of the vibrational modes lie below half the energy grid's "
                      f"step ({de / 2:.3g} meV), in its E = 0 bin, which S(E) leaves out; a "
                      f"finer grid keeps them", stacklevel=2)
    return out / (np.where(total > 0, total, 1.0)[:, None] * de)


def soft_modes(qpoints, freqs_THz, freq_min_THz: float = FREQ_MIN_THZ):
    """Modes left out of the INS for lying below ``freq_min_THz`` (imaginary ones included),
    other than the acoustic modes at Γ (|f| <= ``freq_min_THz`` there): list of
    (q fractional, frequency THz)."""
    out = []
    for q, fr in zip(np.asarray(qpoints), np.asarray(freqs_THz)):
        low = np.flatnonzero(fr <= freq_min_THz)
        if np.allclose(q - np.rint(q), 0):
            # Γ: up to three acoustic modes at |f| <= freq_min are expected, not reported
            acoustic = low[np.argsort(np.abs(fr[low]))][:3]
            acoustic = acoustic[np.abs(fr[acoustic]) <= freq_min_THz]
            low = np.setdiff1d(low, acoustic)
        out.extend((tuple(round(float(x), 4) for x in q), float(fr[i])) for i in low)
    return out


class ModeSet:
    """Mesh modes of one phonopy object with the per-atom quantities the INS formulas need."""

    def __init__(self, ph, mesh, temperature_K: float, masses=None,
                 freq_min_THz: float = FREQ_MIN_THZ):
        if masses is not None:
            ph.masses = masses                     # isotope substitution (phonopy rebuilds D)
        self.ph = ph
        _, self.qpoints, self.weights, self.freqs, self.eigvecs = mesh_modes(ph, mesh)
        self.masses = np.array(ph.primitive.masses)
        self.symbols = list(ph.primitive.symbols)
        self.temperature_K = temperature_K
        self.freq_min_THz = freq_min_THz
        self.B = thermal_displacements(self.freqs, self.eigvecs, self.weights, self.masses,
                                       temperature_K, freq_min_THz)
        self.u2 = np.trace(self.B, axis1=1, axis2=2) / 3
        self.soft = soft_modes(self.qpoints, self.freqs, freq_min_THz)
        if self.soft:
            import warnings

            qs = sorted({q for q, _ in self.soft})
            shown = ", ".join(str(list(q)) for q in qs[:4]) + (" ..." if len(qs) > 4 else "")
            warnings.warn(f"{len(self.soft)} soft or imaginary modes (below {freq_min_THz} THz, "
                          f"lowest {min(x for _, x in self.soft):.3f} THz) at {len(qs)} q-points "
                          f"({shown}) are left out of the DOS and the Debye-Waller factors",
                          stacklevel=2)

    def site_dos(self, energy_meV):
        return site_dos(self.freqs, self.eigvecs, self.weights, len(self.masses), energy_meV,
                        self.freq_min_THz)

    def source(self, energy_meV) -> VibrationalSource:
        """The modes as the INS engine's source: one site per atom of the primitive cell, each
        with its own projected DOS and ⟨u²⟩ (mode-resolved Debye–Waller factors)."""
        n = len(self.masses)
        return VibrationalSource(energy_meV, self.site_dos(energy_meV), self.u2, self.masses,
                                 self.symbols, np.full(n, 1.0 / n), self.temperature_K,
                                 provenance={"vibrations": "phonon modes"})


def fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly uniform unit vectors (golden-angle spiral), shape (n, 3)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = np.pi * (3 - np.sqrt(5)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def coherent_modes(modes: ModeSet, q_cart, b_coh_fm):
    """Energies (meV) and one-phonon coherent intensities (barn/sr per atom, energy loss,
    Bose factor included) of every mode at Cartesian Q-vectors (1/Å, 2π included).
    Returns (E (P, 3n), I (P, 3n))."""
    ph = modes.ph
    q_cart = np.atleast_2d(q_cart)
    lattice = np.array(ph.primitive.cell)
    q_frac = q_cart @ lattice.T / (2 * np.pi)
    # modes at a reduced q = Q - G, then phonopy's eigenvectors carried to Q:
    # e_j(q + G) = e_j(q) exp(-2πi G·x_j). The non-analytical term (Born charges) needs the
    # shortest such q, in the first Brillouin zone, as phonopy's DynamicStructureFactor uses;
    # without it any G will do, and rounding is cheaper.
    if ph.nac_params is not None:
        from phonopy.structure.brillouin_zone import get_qpoints_in_Brillouin_zone

        q_red = np.array(get_qpoints_in_Brillouin_zone(np.linalg.inv(lattice), q_frac,
                                                       only_unique=True)).reshape(q_frac.shape)
    else:
        q_red = q_frac - np.rint(q_frac)
    g = np.rint(q_frac - q_red)
    ph.run_qpoints(q_red, with_eigenvectors=True)
    freqs = np.array(ph.qpoints.frequencies)                          # (P, M)
    vecs = np.array(ph.qpoints.eigenvectors)                          # (P, 3n, M)
    n = len(modes.masses)
    phase = np.exp(-2j * np.pi * g @ np.array(ph.primitive.scaled_positions).T)  # (P, n)
    v = vecs.reshape(len(q_cart), n, 3, -1) * phase[:, :, None, None]
    dw = np.exp(-0.5 * np.einsum("pa,kab,pb->pk", q_cart, modes.B, q_cart))    # (P, n)
    amp = (np.asarray(b_coh_fm) / 10.0) * np.sqrt(_hbar2_over_2m(modes.masses))  # (n,), complex
    f = np.einsum("pk,pa,pkam->pm", dw * amp[None, :], q_cart, v.conj())        # (P, M)
    e = freqs * MEV_PER_THZ
    ok = freqs > modes.freq_min_THz
    es = np.where(ok, e, 1.0)
    inten = np.where(ok, np.abs(f) ** 2 / es * (_bose(es, modes.temperature_K) + 1), 0.0) / n
    return e, inten


#: default memory budget of the coherent powder average (the `--max-memory` default)
DEFAULT_MAX_MEMORY = 2 * 1024 ** 3


def coherent_chunk(n_atoms: int, max_memory_bytes: int = DEFAULT_MAX_MEMORY) -> int:
    """Q-vectors per batch so that the batch's eigenvectors — (3n)² complex numbers per Q, held
    about four times over (phonopy's dynamical matrices and eigenvectors, the phase-shifted copy,
    temporaries) — use at most half the budget; at most 4096."""
    per_q = (3 * n_atoms) ** 2 * 16 * 4
    return int(max(1, min(4096, 0.5 * max_memory_bytes // per_q)))


def coherent_powder_sqe(modes: ModeSet, q, energy_meV, b_coh_fm, n_directions: int = 200,
                        seed: int = 0, chunk: int | None = None,
                        max_memory_bytes: int = DEFAULT_MAX_MEMORY):
    """One-phonon coherent powder S(Q,E) (rows |Q|, columns the uniform grid ``energy_meV`` of
    bin centres), barn/(sr meV) per atom. Each |Q| uses ``n_directions`` directions on a
    Fibonacci sphere given a random rotation (``seed``) so shells do not share directions.
    Q-vectors go through phonopy in batches sized by ``max_memory_bytes`` (or ``chunk``)."""
    chunk = chunk or coherent_chunk(len(modes.masses), max_memory_bytes)
    from scipy.spatial.transform import Rotation

    e_grid = np.asarray(energy_meV)
    de = e_grid[1] - e_grid[0]
    base = fibonacci_sphere(n_directions)
    rots = Rotation.random(len(q), random_state=seed).as_matrix()
    out = np.zeros((len(q), len(e_grid)))
    pts = np.concatenate([qa * base @ r.T for qa, r in zip(q, rots)])      # (nQ*nd, 3)
    row = np.repeat(np.arange(len(q)), n_directions)
    from tqdm.auto import tqdm

    # one dynamical matrix (3n x 3n) per Q-vector: the cost grows like n_Q n_dir n³
    bar = tqdm(total=len(pts), unit="Q", desc="coherent S(Q,E)", disable=None, leave=False)
    for lo in range(0, len(pts), chunk):
        e, inten = coherent_modes(modes, pts[lo:lo + chunk], b_coh_fm)
        bar.update(len(e))
        idx = np.rint((e - e_grid[0]) / de).astype(int)
        ok = (idx >= 0) & (idx < len(e_grid)) & (inten > 0)
        r = np.broadcast_to(row[lo:lo + chunk, None], idx.shape)
        np.add.at(out, (r[ok], idx[ok]), inten[ok])
    bar.close()
    return out / (n_directions * de)
