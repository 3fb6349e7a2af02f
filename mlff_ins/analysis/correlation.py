"""Time correlations over all time origins, by FFT, streamed in blocks of frames.

For lags 0..M the sum  c[lag] = Σ_{t0} conj(x(t0)) · y(t0 + lag)  over every origin t0 of a
trajectory of N frames is accumulated block by block: the origins of one block (L frames) are
correlated with those frames plus the next M frames through one zero-padded FFT of length ≥ L + M,
so no wrap-around term enters and each (t0, t0 + lag) pair is counted exactly once. Only L + M
frames are held at a time, so memory does not grow with the length of the trajectory; dividing by
the number of origins N − lag gives the all-origins average (the estimator MDANSE and dynasor use).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft
import torch


def fft_length(n: int) -> int:
    """Smallest FFT-friendly length ≥ n."""
    return int(scipy.fft.next_fast_len(int(n)))


def lagged_fft_products(x: torch.Tensor, y: torch.Tensor, n_fft: int):
    """FFTs along dim 0 of origins ``x`` (L, ...) and extended ``y`` (L+E, ...), zero-padded.

    Returns (conj(X), Y); the caller multiplies, reduces channels and calls :func:`lags_from_fft`.
    Real inputs use the real FFT.
    """
    if torch.is_complex(x) or torch.is_complex(y):
        return torch.fft.fft(x, n=n_fft, dim=0).conj(), torch.fft.fft(y, n=n_fft, dim=0)
    return torch.fft.rfft(x, n=n_fft, dim=0).conj(), torch.fft.rfft(y, n=n_fft, dim=0)


def lags_from_fft(product: torch.Tensor, n_fft: int, max_lag: int, real: bool) -> torch.Tensor:
    """Inverse FFT along dim 0 of a reduced product; returns lags 0..max_lag (dim 0)."""
    if real:
        return torch.fft.irfft(product, n=n_fft, dim=0)[: max_lag + 1]
    return torch.fft.ifft(product, n=n_fft, dim=0)[: max_lag + 1]


def block_autocorrelation(x: torch.Tensor, n_origins: int, max_lag: int, reduce,
                          dim: int = 0) -> torch.Tensor:
    """Σ_{t0 < n_origins} conj(x(t0))·x(t0+lag), lags 0..max_lag, reduced by ``reduce``.

    Time runs along ``dim`` (0 or −1) of ``x``: a block's origins followed by the E = T −
    n_origins frames after them. The autocorrelation of the whole segment counts every wanted
    pair plus the pairs lying wholly inside the trailing E frames (origins of the next block), so
    the latter, the autocorrelation of those E frames alone, is subtracted. Each needs one FFT of
    a power spectrum |X|², which ``reduce`` (e.g. a sum over atoms, keeping ``dim`` where it is)
    shrinks before the one inverse FFT. Returns the real part with the lag axis first.
    """
    def lags(seg):
        n = fft_length(seg.shape[dim] + max_lag)
        if torch.is_complex(seg):
            f = torch.fft.fft(seg, n=n, dim=dim)
            p = reduce(f.real.square() + f.imag.square())  # |X|², without abs()'s square root
            c = torch.fft.ifft(p.to(seg.dtype), dim=dim).real
        else:
            f = torch.fft.rfft(seg, n=n, dim=dim)
            c = torch.fft.irfft(reduce(f.real.square() + f.imag.square()), n=n, dim=dim)
        return c.narrow(dim, 0, max_lag + 1).movedim(dim, 0)

    out = lags(x)
    n_total = x.shape[dim]
    if n_total > n_origins:
        tail = lags(x.narrow(dim, n_origins, n_total - n_origins))
        m = min(max_lag + 1, n_total - n_origins)
        out = out.clone()
        out[:m] -= tail[:m]
    return out


class BlockStream:
    """Buffers per-frame arrays and hands blocks of origins plus their M-frame extension on.

    ``on_block(arrays, n_origins)`` receives a dict of tensors of T = n_origins + E frames
    (E ≤ max_lag; E < max_lag only at the end of the trajectory). Every frame is an origin of
    exactly one block.
    """

    def __init__(self, max_lag: int, on_block: Callable[[dict, int], None], block: int | None = None):
        if max_lag < 1:
            raise ValueError("the correlation window must span at least one frame interval")
        self.max_lag = int(max_lag)
        self.block = int(block or max(2 * (max_lag + 1), 64))
        self.on_block = on_block
        self._buf: dict[str, list[torch.Tensor]] = {}
        self._len = 0
        self.n_frames = 0

    def push(self, **arrays: torch.Tensor) -> None:
        n = {len(a) for a in arrays.values()}
        if len(n) != 1:
            raise ValueError("all arrays pushed together must have the same number of frames")
        for k, a in arrays.items():
            self._buf.setdefault(k, []).append(a)
        self._len += n.pop()
        while self._len >= self.block + self.max_lag:
            self._emit(self.block)

    def finish(self) -> None:
        while self._len > 0:
            self._emit(min(self.block, self._len))

    def _emit(self, n_origins: int) -> None:
        joined = {k: torch.cat(v, dim=0) for k, v in self._buf.items()}
        take = min(self._len, n_origins + self.max_lag)
        self.on_block({k: v[:take] for k, v in joined.items()}, n_origins)
        self._buf = {k: [v[n_origins:]] for k, v in joined.items()}
        self._len -= n_origins
        self.n_frames += n_origins


def origin_counts(n_frames: int, max_lag: int) -> np.ndarray:
    """Number of time origins contributing to each lag 0..max_lag (N − lag, at least 0)."""
    return np.maximum(n_frames - np.arange(max_lag + 1), 0).astype(float)
