"""Unwrap positions across periodic boundaries, frame by frame (triclinic and NPT safe).

Between consecutive frames the Cartesian step of each atom is brought to its nearest image in the
*new* frame's cell (Δr − round(Δr·h⁻¹)·h), then added to the running unwrapped position. This is
the scheme that keeps diffusion unbiased under a fluctuating box (Bullerjahn, von Bülow and Hummer,
J. Chem. Phys. 2023); it is exact as long as no atom's step between frames, projected on a face
normal of the cell, reaches half the cell's width across those faces (shorter than half a box
vector in a skewed cell).
Positions that are already unwrapped pass through unchanged.
"""

from __future__ import annotations

import numpy as np


class Unwrapper:
    """Stateful: feed chunks in trajectory order, get unwrapped positions back (Å)."""

    def __init__(self):
        self._last_wrapped: np.ndarray | None = None
        self._last_unwrapped: np.ndarray | None = None

    def __call__(self, positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
        out = np.empty_like(positions)
        for t in range(len(positions)):
            if self._last_wrapped is None:
                out[t] = positions[t]
            else:
                step = positions[t] - self._last_wrapped
                frac = step @ np.linalg.inv(cells[t])
                step = step - np.round(frac) @ cells[t]
                out[t] = self._last_unwrapped + step
            self._last_wrapped = positions[t]
            self._last_unwrapped = out[t]
        return out
