"""Q-vectors on spherical shells, commensurate with the simulation cell.

A vector Q = m · B (m integer Miller indices, B = 2π (h⁻¹)ᵀ the reciprocal basis of the cell h)
makes exp(i Q·r) periodic in the cell, so ρ(Q) does not depend on how atoms are wrapped. Shells
are [q_min + kΔ, q_min + (k+1)Δ); a shell with more than ``per_shell`` vectors keeps a seeded random
subset of ±Q pairs (per_shell rounded down to even, at least one pair). Q includes the 2π (1/Å).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlff_ins.errors import InputError


@dataclass
class QShells:
    miller: np.ndarray      # (n_vectors, 3) int
    shell: np.ndarray       # (n_vectors,) index of each vector's shell
    q: np.ndarray           # (n_shells,) mean |Q| of the vectors of each shell, 1/Å
    counts: np.ndarray      # (n_shells,) vectors per shell

    def vectors(self, cell: np.ndarray) -> np.ndarray:
        """Cartesian Q-vectors (1/Å) for the given cell (rows are lattice vectors)."""
        return self.miller @ reciprocal_basis(cell)

    @property
    def n_shells(self) -> int:
        return len(self.q)

    def shell_average(self, values: np.ndarray) -> np.ndarray:
        """Average per-vector values (n_vectors, ...) over each shell -> (n_shells, ...)."""
        out = np.zeros((self.n_shells,) + values.shape[1:], dtype=values.dtype)
        np.add.at(out, self.shell, values)
        return out / self.counts.reshape((-1,) + (1,) * (values.ndim - 1))


def reciprocal_basis(cell: np.ndarray) -> np.ndarray:
    """Rows b_j with a_i · b_j = 2π δ_ij."""
    return 2 * np.pi * np.linalg.inv(np.asarray(cell, dtype=float)).T


def spherical_shells(cell, q_max: float, q_min: float = 0.0, width: float = 0.1,
                     per_shell: int = 100, seed: int = 0) -> QShells:
    """All commensurate Q-vectors with q_min ≤ |Q| < q_max, grouped into shells of ``width``."""
    if not (q_max > q_min >= 0):
        raise InputError(f"--q-min {q_min} must be >= 0 and below --q-max {q_max} (1/Å)")
    if width <= 0:
        raise InputError(f"--q-width must be positive (1/Å), not {width}")
    if per_shell < 1:
        raise InputError(f"--q-per-shell must be at least 1, not {per_shell}")
    basis = reciprocal_basis(cell)
    # |m_i| <= q_max |a_i| / 2π bounds every vector inside the sphere
    n0, n1, n2 = np.ceil(q_max * np.linalg.norm(cell, axis=1) / (2 * np.pi)).astype(int)
    kk, ll = (g.ravel() for g in np.meshgrid(np.arange(-n1, n1 + 1), np.arange(-n2, n2 + 1),
                                              indexing="ij"))
    keep_per_shell = max(1, per_shell // 2)
    # Enumerate one of each ±m pair (first nonzero index positive), one plane of m_0 at a time so
    # memory stays small for large cells; each shell keeps the vectors with the smallest random
    # keys (seeded per plane), i.e. a uniform random subset independent of the enumeration order.
    best: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for h in range(0, n0 + 1):
        m = np.column_stack([np.full(kk.size, h), kk, ll])
        if h == 0:
            m = m[(kk > 0) | ((kk == 0) & (ll > 0))]
        q = np.linalg.norm(m @ basis, axis=1)
        sel = (q >= q_min) & (q < q_max)
        if not np.any(sel):
            continue
        m, q = m[sel], q[sel]
        shell = np.floor((q - q_min) / width).astype(int)
        keys = np.random.default_rng([seed, h]).random(len(m))
        for s in np.unique(shell):
            inside = shell == s
            k, v = keys[inside], m[inside]
            if s in best:
                k, v = np.concatenate([best[s][0], k]), np.concatenate([best[s][1], v])
            order = np.argsort(k, kind="stable")[:keep_per_shell]
            best[s] = (k[order], v[order])
    if not best:
        smallest = np.min(np.linalg.norm(basis, axis=1))
        raise InputError(f"no Q-vector of this cell lies in {q_min}..{q_max} 1/Å; the smallest "
                         f"is about {smallest:.3f} 1/Å")
    chosen_m, chosen_shell, q_mean, counts = [], [], [], []
    for s in sorted(best):
        half = best[s][1]
        both = np.concatenate([half, -half])   # ±Q: same real correlation, computed once
        chosen_m.append(both)
        chosen_shell.append(np.full(len(both), len(q_mean)))
        q_mean.append(np.linalg.norm(half @ basis, axis=1).mean())
        counts.append(len(both))
    return QShells(np.concatenate(chosen_m), np.concatenate(chosen_shell), np.array(q_mean),
                   np.array(counts))
