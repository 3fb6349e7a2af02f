"""The streamed all-origins correlation engine against direct sums; memory bounded by the window."""

import numpy as np
import pytest
import torch

from mlff_ins.analysis.correlation import (BlockStream, fft_length, lagged_fft_products,
                                           lags_from_fft, origin_counts)


def _direct(x, max_lag):
    n = len(x)
    return np.array([np.sum(np.conj(x[: n - k]) * x[k:], axis=0) for k in range(max_lag + 1)])


@pytest.mark.parametrize("complex_signal", [False, True])
@pytest.mark.parametrize("n_frames,max_lag,block,push", [(100, 10, 25, 7), (37, 20, 21, 50),
                                                         (64, 63, 64, 1), (200, 5, 6, 13)])
def test_stream_equals_direct_sum(complex_signal, n_frames, max_lag, block, push):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_frames, 4))
    if complex_signal:
        x = x + 1j * rng.normal(size=(n_frames, 4))
    acc = {}
    seen = []

    def on_block(b, n_origins):
        s = b["x"]
        n_fft = fft_length(len(s) + max_lag)
        X, Y = lagged_fft_products(s[:n_origins], s, n_fft)
        lags = lags_from_fft(X * Y, n_fft, max_lag, real=not complex_signal)
        acc["c"] = acc.get("c", 0) + lags.numpy()
        seen.append(len(s))

    stream = BlockStream(max_lag, on_block, block=block)
    for i in range(0, n_frames, push):
        stream.push(x=torch.as_tensor(x[i:i + push]))
    stream.finish()
    assert stream.n_frames == n_frames
    np.testing.assert_allclose(acc["c"], _direct(x, max_lag), rtol=0, atol=1e-10)
    # memory: a block never holds more than its origins plus the correlation window
    assert max(seen) <= block + max_lag


def test_origin_counts():
    np.testing.assert_array_equal(origin_counts(5, 6), [5, 4, 3, 2, 1, 0, 0])
