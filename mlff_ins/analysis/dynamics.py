"""One streamed pass over a trajectory: every time correlation function the spectra need.

- VACF per element, mass-weighted: C_s(t) = Σ_{j∈s} m_j ⟨v_j(0)·v_j(t)⟩ (amu Å²/fs²), from stored
  velocities or, when the file has none, central differences of unwrapped positions.
- Coherent intermediate scattering per element pair and Q-vector (dynasor's definition):
  F_ab(Q,t) = (1/N) Re⟨ρ_a(Q,0) ρ_b(Q,t)*⟩ (+ the b,a term for a ≠ b), ρ_a(Q,t) = Σ_{j∈a} e^{iQ·r_j(t)}.
- Incoherent (self) part per element: F_s,a(Q,t) = (1/N) Σ_{j∈a} Re⟨e^{iQ·[r_j(t) − r_j(0)]}⟩.
- MSD per element from unwrapped positions: Σ_{j∈a} ⟨|r_j(t) − r_j(0)|²⟩ / N_a, by the FFT
  algorithm (⟨r²(t0)⟩ + ⟨r²(t0+t)⟩ − 2⟨r(t0)·r(t0+t)⟩).

All averages run over every time origin (see :mod:`mlff_ins.analysis.correlation`); Q-vectors are
integer Miller indices of each frame's own cell, applied to fractional coordinates, so the result does
not depend on wrapping; when the cell changes (NPT) each shell's |Q| is its mean over the frames. The numerics run in torch on ``device`` (float64 unless float32 is asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mlff_ins.analysis.correlation import (BlockStream, block_autocorrelation, fft_length,
                                           lagged_fft_products, lags_from_fft, origin_counts)
from mlff_ins.analysis.qpoints import QShells
from mlff_ins.analysis.unwrap import Unwrapper



@dataclass
class Correlations:
    """Results of :func:`correlate` (numpy, float64). Lags 0..M at ``time_fs``."""

    species: list[str]
    counts: dict[str, int]
    time_fs: np.ndarray
    n_frames: int
    vacf: dict[str, np.ndarray] = field(default_factory=dict)          # (M+1,) per element
    msd: dict[str, np.ndarray] = field(default_factory=dict)           # (M+1,) Å², per atom
    fqt_coh: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (n_q, M+1)
    fqt_inc: dict[str, np.ndarray] = field(default_factory=dict)       # (n_q, M+1)
    shells: QShells | None = None
    masses: dict[str, float] = field(default_factory=dict)             # mean mass per element
    q_mean_change: float = 0.0   # largest |mean |Q| over frames / |Q| of frame 0 − 1| of a shell
    # share of the kinetic energy in the steady drift of the whole cell: M |<V>|² / <Σ m v²>,
    # with <V> the centre-of-mass velocity averaged over the run, measured before any removal
    # (a centre of mass that oscillates, as in an Einstein solid, averages out and is no drift);
    # and whether the centre of mass's motion was taken out
    drift_share: float = 0.0
    drift_removed: bool = False
    # share of the kinetic energy in the centre of mass's motion frame by frame, Σ_t M |V(t)|²
    # / Σ_t Σ m v²: zero (to rounding) when the MD conserves a zero total momentum, ~1/N when a
    # thermostat kicks the atoms independently, measured before any removal
    com_kinetic_share: float = 0.0
    # the VACF's velocities are central differences of positions (the file stores none): its
    # spectrum is the true one times sinc²(ωΔt) (:func:`~mlff_ins.analysis.fourier.
    # central_difference_response`), which the VDOS and the kinetic temperature divide out
    velocities_from_positions: bool = False

    @property
    def dt_fs(self) -> float:
        return float(self.time_fs[1] - self.time_fs[0])

    @property
    def n_atoms(self) -> int:
        return sum(self.counts.values())


#: default memory budget of the correlations (the `--max-memory` default)
DEFAULT_MAX_MEMORY = 2 * 1024 ** 3


def _drift_share(kinetic: dict, total_mass: float) -> float:
    """M |<V>|² over the mean of Σ m v² (both per frame), from the sums kept while streaming."""
    if kinetic["total"] <= 0 or kinetic["frames"] == 0:
        return 0.0
    mean_v = kinetic["v_com"] / kinetic["frames"]
    return total_mass * float(mean_v @ mean_v) * kinetic["frames"] / kinetic["total"]


def correlate(traj, max_lag: int, *, vacf: bool = True, msd: bool = False,
              shells: QShells | None = None, coherent: bool = False, incoherent: bool = False,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
              chunk: int = 64, progress: bool = False,
              max_memory_bytes: int = DEFAULT_MAX_MEMORY,
              remove_drift: bool = False) -> Correlations:
    """Compute the requested correlations for lags 0..``max_lag`` frames in one pass.

    The steady drift's share of the kinetic energy is always measured (``drift_share``: a cell
    that drifts as a whole puts that share of its VDOS at E = 0); with ``remove_drift`` its
    motion is taken out of every frame before any correlation (velocities minus the
    centre-of-mass velocity, positions minus the centre of mass's displacement from the first
    frame), as for a sample at rest.

    Memory stays near ``max_memory_bytes``: the frames buffered per block (the block length),
    the atoms and the Q-vectors handled at once are chosen from it; a window that cannot fit is
    refused before any work."""
    if (coherent or incoherent) and shells is None:
        raise ValueError("coherent/incoherent scattering needs Q shells")
    max_lag = int(min(max_lag, traj.n_frames - 1))
    device = torch.device(device)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    species = traj.species
    symbols = np.array(traj.symbols)
    type_index = torch.tensor([species.index(s) for s in traj.symbols], device=device)
    onehot = torch.nn.functional.one_hot(type_index, len(species)).to(dtype)      # (N, S)
    masses = torch.tensor(np.asarray(traj.masses), dtype=dtype, device=device)
    counts = {s: int(np.sum(symbols == s)) for s in species}
    species_mass = {s: float(np.mean(np.asarray(traj.masses)[symbols == s])) for s in species}
    n_s = len(species)
    species_atoms = [torch.as_tensor(np.flatnonzero(symbols == s), device=device) for s in species]
    miller, expand = None, None
    if shells is not None:
        # Q and −Q give identical real correlations: compute one of each pair, copy the other
        unique, expand = np.unique(_canonical(shells.miller), axis=0, return_inverse=True)
        expand = expand.reshape(-1)
        miller = torch.tensor(2 * np.pi * unique, dtype=dtype, device=device)  # 2π m
    n_q = 0 if miller is None else len(miller)
    stream_block, n_fft, work = _memory_plan(traj.n_atoms, n_s, n_q, max_lag, dtype, vacf, msd,
                                             incoherent, coherent, max_memory_bytes)

    acc: dict[str, torch.Tensor] = {}

    def add(name, value):
        acc[name] = acc[name] + value if name in acc else value

    def self_correlation(signal_fn, n_origins, n_features: int, complex_signal: bool):
        """(M+1, S, F): Σ_{j∈s} conj(x_j(t0))·x_j(t0+lag) per element s and feature; the sum
        over atoms is taken on the power spectra, so each element needs one inverse FFT."""
        step = max(1, work // (n_fft * n_features))
        out = []
        for idx in species_atoms:
            total = 0
            for a0 in range(0, len(idx), step):
                x = signal_fn(idx[a0:a0 + step])                    # (T, n, F)
                total = total + block_autocorrelation(x, n_origins, max_lag,
                                                      lambda p: p.sum(dim=1))
            out.append(total)
        return torch.stack(out, dim=1)

    def on_block(b: dict, n_origins: int):
        if vacf:
            v = b["vel"] * masses.sqrt()[None, :, None]
            add("vacf", self_correlation(lambda i: v[:, i], n_origins, 3, False).sum(-1))
        if msd:
            u = b["unwrapped"]
            add("msd_cross", self_correlation(lambda i: u[:, i], n_origins, 3, False).sum(-1))
            sq = (u * u).sum(dim=2) @ onehot                         # (T, S)
            add("msd_sq", _square_terms(sq, n_origins, max_lag))
        if incoherent:
            frac = b["frac"]                                         # (T, N, 3)
            # atoms x Q-vectors x FFT length within the work budget
            n_qc = min(n_q, max(1, work // n_fft))
            step = max(1, work // (n_fft * n_qc))
            fs = torch.zeros((max_lag + 1, n_s, n_q), dtype=dtype, device=device)
            for s, idx in enumerate(species_atoms):
                for q0 in range(0, n_q, n_qc):
                    qs = slice(q0, q0 + n_qc)
                    for a0 in range(0, len(idx), step):
                        e = _phases(frac[:, idx[a0:a0 + step]], miller[qs], cdtype)  # (n, Q, T)
                        fs[:, s, qs] += block_autocorrelation(e, n_origins, max_lag,
                                                              lambda p: p.sum(dim=0), dim=-1)
            add("fs", fs)                                            # (M+1, S, Q)
        if coherent:
            rho = b["rho"]                                           # (T, S, Q)
            n_qc = min(n_q, max(1, work // (n_fft * n_s * n_s)))
            if "coh" not in acc:
                acc["coh"] = torch.zeros((max_lag + 1, n_s, n_s, n_q), dtype=dtype,
                                         device=device)
            for q0 in range(0, n_q, n_qc):
                qs = slice(q0, q0 + n_qc)
                X, Y = lagged_fft_products(rho[:n_origins, :, qs], rho[:, :, qs], n_fft)
                prod = X[:, :, None, :] * Y[:, None, :, :]           # (n_fft, S, S, Q chunk)
                acc["coh"][..., qs] += lags_from_fft(prod, n_fft, max_lag, real=False).real

    stream = BlockStream(max_lag, on_block, block=stream_block)
    need_unwrapped = msd or remove_drift or (vacf and not traj.has_velocities)
    bar = _progress(traj.n_frames, progress)
    reference = None
    m_np = np.asarray(traj.masses, dtype=float)
    kinetic = {"v_com": np.zeros(3), "frames": 0, "com": 0.0, "total": 0.0}
    com_first = None
    q_sum, q_first, q_frames = None, None, 0
    for pos_np, cells_np, unwrapped_np, vel_np in _frames(traj, chunk, need_unwrapped,
                                                          vacf and not traj.has_velocities):
        if shells is not None:  # |Q| of each shell in each frame's own cell (NPT: it changes)
            qn = shells.shell_average(np.linalg.norm(np.einsum(
                "vi,tji->tvj", shells.miller, 2 * np.pi * np.linalg.inv(cells_np)), axis=2).T)
            q_first = qn[:, 0] if q_first is None else q_first
            q_sum = qn.sum(axis=1) + (0 if q_sum is None else q_sum)
            q_frames += qn.shape[1]
        if vel_np is not None:
            v_com = np.einsum("tnx,n->tx", vel_np, m_np) / m_np.sum()          # (T, 3)
            kinetic["v_com"] += v_com.sum(axis=0)
            kinetic["frames"] += len(v_com)
            kinetic["com"] += m_np.sum() * float(np.sum(v_com ** 2))
            kinetic["total"] += float(np.einsum("tnx,n->", vel_np ** 2, m_np))
            if remove_drift:
                vel_np = vel_np - v_com[:, None, :]
        if remove_drift:
            com = np.einsum("tnx,n->tx", unwrapped_np, m_np) / m_np.sum()
            com_first = com[0].copy() if com_first is None else com_first
            shift = (com - com_first)[:, None, :]
            pos_np, unwrapped_np = pos_np - shift, unwrapped_np - shift
        pos = torch.as_tensor(pos_np, dtype=dtype, device=device)
        cells = torch.as_tensor(cells_np, dtype=dtype, device=device)
        arrays = {}
        if incoherent or coherent:
            frac = pos @ torch.linalg.inv(cells)
            frac = frac - torch.floor(frac)
            if incoherent:
                arrays["frac"] = frac
            if coherent:  # ρ_s(Q, t) per frame: the coherent part needs nothing else
                arrays["rho"] = _densities(frac, miller, species_atoms, cdtype, work)
        if msd:
            if reference is None:  # MSD from displacements keeps float32 precision usable
                reference = unwrapped_np[0].copy()
            arrays["unwrapped"] = torch.as_tensor(unwrapped_np - reference, dtype=dtype,
                                                  device=device)
        if vacf:
            arrays["vel"] = torch.as_tensor(vel_np, dtype=dtype, device=device)
        stream.push(**arrays)
        bar.update(len(pos_np))
    stream.finish()
    bar.close()

    n_frames = stream.n_frames
    norm = torch.as_tensor(origin_counts(n_frames, max_lag), dtype=dtype, device=device)
    norm = torch.clamp(norm, min=1.0)  # lags beyond the trajectory stay zero
    if shells is not None:
        # shells keep their Miller indices; |Q| is the mean over frames, and the largest
        # relative change from the first frame is recorded
        q_mean = q_sum / q_frames
        shells = replace(shells, q=q_mean)
        q_change = float(np.max(np.abs(q_mean / q_first - 1)))
    res = Correlations(species=species, counts=counts, n_frames=n_frames,
                       time_fs=np.arange(max_lag + 1) * traj.dt_fs, shells=shells,
                       masses=species_mass,
                       q_mean_change=q_change if shells is not None else 0.0,
                       drift_share=_drift_share(kinetic, float(m_np.sum())),
                       com_kinetic_share=(kinetic["com"] / kinetic["total"]
                                          if kinetic["total"] > 0 else 0.0),
                       drift_removed=bool(remove_drift),
                       velocities_from_positions=bool(vacf and not traj.has_velocities))
    n_atoms = traj.n_atoms
    if vacf:
        c = (acc["vacf"] / norm[:, None]).cpu().numpy()
        res.vacf = {s: c[:, i] for i, s in enumerate(species)}
    if msd:
        c = ((acc["msd_sq"] - 2 * acc["msd_cross"]) / norm[:, None]).cpu().numpy()
        res.msd = {s: c[:, i] / counts[s] for i, s in enumerate(species)}
    if incoherent:
        c = (acc["fs"] / norm[:, None, None]).cpu().numpy() / n_atoms        # (M+1, S, Q)
        res.fqt_inc = {s: c[:, i, expand].T.copy() for i, s in enumerate(species)}
    if coherent:
        c = (acc["coh"] / norm[:, None, None, None]).cpu().numpy() / n_atoms  # (M+1, S, S, Q)
        for i, a in enumerate(species):
            for j in range(i, n_s):
                f = c[:, i, j, :] + (c[:, j, i, :] if j != i else 0.0)
                res.fqt_coh[(a, species[j])] = f[:, expand].T.copy()
    return res


def _memory_plan(n_atoms, n_s, n_q, max_lag, dtype, vacf, msd, incoherent, coherent,
                 max_memory_bytes):
    """(block length, FFT length, work elements) that keep the correlations near the budget.

    Buffered per frame: positions-like arrays (N x 3 reals: velocities, unwrapped and fractional
    positions) and, for the coherent part, ρ_s(Q) (S x Q complex); a block holds L + M frames,
    about twice over while blocks are joined. FFT temporaries get a fixed share of the budget."""
    from mlff_ins.errors import InputError

    real = 4 if dtype == torch.float32 else 8
    per_frame = n_atoms * 3 * real * (int(vacf) + int(msd) + int(incoherent)) + \
        (n_s * n_q * 2 * real if coherent else 0)
    per_frame = max(per_frame, 1)
    buffer_budget = 0.45 * max_memory_bytes
    need = 2 * (2 * max_lag + 1) * per_frame
    if need > buffer_budget:
        raise InputError(f"--max-memory {max_memory_bytes / 1024 ** 3:.3g} GiB is too small for "
                         f"a {max_lag}-frame correlation window over {n_atoms} atoms (about "
                         f"{need / 0.45 / 1024 ** 3:.3g} GiB needed); shorten --time-window, use "
                         f"--stride, or raise --max-memory")
    block = int(min(32 * (max_lag + 1), buffer_budget / (2 * per_frame) - max_lag))
    block = max(block, max_lag + 1, 64)
    n_fft = fft_length(block + max_lag)
    # FFT temporaries: a complex array and its transform, power spectra, the reduced result
    work = int(0.3 * max_memory_bytes / (2 * real * 6))
    work = max(min(work, 2 ** 24), n_fft)
    return block, n_fft, work


def _densities(frac, miller_2pi, species_atoms, cdtype, work):
    """ρ_s(Q, t) = Σ_{j∈s} exp(i 2πm·s_j(t)) for a chunk of frames (T, N, 3): (T, S, Q)."""
    n_t = frac.shape[0]
    out = torch.zeros((n_t, len(species_atoms), len(miller_2pi)), dtype=cdtype,
                      device=frac.device)
    step = max(1, work // max(1, len(miller_2pi) * n_t))
    for s, idx in enumerate(species_atoms):
        for a0 in range(0, len(idx), step):
            out[:, s] += _phases(frac[:, idx[a0:a0 + step]], miller_2pi, cdtype).sum(dim=0).T
    return out


def _canonical(miller: np.ndarray) -> np.ndarray:
    """Representative of each ±m pair: the sign that makes the first nonzero index positive."""
    m = np.asarray(miller)
    first = m[np.arange(len(m)), np.argmax(m != 0, axis=1)]
    return m * np.where(first < 0, -1, 1)[:, None]


def _phases(frac, miller_2pi, cdtype):
    """exp(i 2πm·s) for fractional coordinates (T, n, 3): (n, Q, T), time last for the FFT."""
    theta = miller_2pi @ frac.permute(1, 2, 0)
    out = torch.empty(theta.shape, dtype=cdtype, device=frac.device)
    parts = torch.view_as_real(out)
    torch.cos(theta, out=parts[..., 0])
    torch.sin(theta, out=parts[..., 1])
    return out


def _square_terms(sq: torch.Tensor, n_origins: int, max_lag: int) -> torch.Tensor:
    """Σ_{t0} [s(t0) + s(t0+lag)] over the block's origins with t0+lag inside the data; (M+1, S)."""
    T = sq.shape[0]
    cum = torch.cat([torch.zeros_like(sq[:1]), torch.cumsum(sq, dim=0)])
    out = torch.zeros((max_lag + 1, sq.shape[1]), dtype=sq.dtype, device=sq.device)
    for lag in range(min(max_lag + 1, T)):
        n = min(n_origins, T - lag)
        out[lag] = cum[n] + (cum[lag + n] - cum[lag])
    return out


def _frames(traj, chunk, need_unwrapped, differentiate):
    """Yield (positions, cells, unwrapped or None, velocities or None) chunks in order.

    Without stored velocities they are central differences of unwrapped positions,
    v(t) = [r(t+1) − r(t−1)] / 2dt (one-sided at the two ends); a chunk's last frame waits for the
    next chunk, whose first position it needs.
    """
    unwrap = Unwrapper()
    if not differentiate:
        for ch in traj.chunks(chunk):
            u = unwrap(ch.positions, ch.cells) if need_unwrapped else None
            yield ch.positions, ch.cells, u, ch.velocities
        return
    dt = traj.dt_fs
    pending = None   # (positions, cells, unwrapped) of the frame still waiting for its successor
    before = None    # unwrapped position of the frame before the pending one
    for ch in traj.chunks(chunk):
        u = unwrap(ch.positions, ch.cells)
        p, c = ch.positions, ch.cells
        if pending is not None:
            p, c, u = (np.concatenate([pending[0], p]), np.concatenate([pending[1], c]),
                       np.concatenate([pending[2], u]))
        if len(u) == 1:
            pending = (p, c, u)
            continue
        prev = np.concatenate([(u[:1] if before is None else before[None]), u[:-2]])
        v = (u[1:] - prev) / (2 * dt)
        if before is None and len(u) > 1:  # first frame of the trajectory: forward difference
            v[0] = (u[1] - u[0]) / dt
        yield p[:-1], c[:-1], u[:-1], v
        before = u[-2]
        pending = (p[-1:], c[-1:], u[-1:])
    if pending is not None and before is not None:
        yield pending[0], pending[1], pending[2], (pending[2] - before[None]) / dt


def _progress(total, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="correlations", disable=not enabled)
