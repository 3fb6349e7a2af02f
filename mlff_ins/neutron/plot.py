"""One PNG overview of a spectra file: 1D spectra as lines, 2D ones as maps (log colour scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

_LABELS = {"energy": "energy transfer (meV)", "time": "time (fs)", "q": "Q (1/Å)"}


def plot_spectra(spectra: dict, path: str | Path, unit: str = "meV"):
    """Panels: each 1D kind (totals and partials overlaid), then each 2D total (maps share one
    energy range); energy axes in ``unit`` (meV, cm-1 or THz). Returns the (closed) matplotlib
    figure, or None when there is nothing to plot."""
    from mlff_ins.neutron.units import UNIT_LABEL, convert_energy

    conv = lambda e: convert_energy(e, unit)  # noqa: E731
    energy_label = f"energy transfer ({UNIT_LABEL[unit]})"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ones: dict[str, list[tuple[str, Spectrum1D]]] = {}
    twos: list[tuple[str, Spectrum2D]] = []
    order = {k: i for i, k in enumerate(("vdos", "gdos", "s_e", "sqe", "sqe_coh", "sqe_inc", "msd",
                                         "eisf"))}
    for name, sp in sorted(spectra.items(), key=lambda kv: order.get(kv[1].kind, 99)):
        if isinstance(sp, Spectrum1D):
            ones.setdefault(sp.kind, []).append((name, sp))
        elif not sp.element and sp.kind.startswith("sqe"):
            twos.append((name, sp))
    n = len(ones) + len(twos)
    if n == 0:
        return None
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    panels = iter(axes.flat)
    for kind, items in ones.items():
        ax = next(panels)
        for name, sp in items:
            total = not sp.element and name == sp.kind     # e.g. "s_e", not the bank "s_e_45"
            style = dict(lw=1.6, color="k") if total else dict(lw=1.0)
            x = conv(sp.x) if sp.axis_name == "energy" else sp.x
            ax.plot(x, sp.intensity, label="total" if total else (sp.element or name),
                    **style)
            if sp.intensity_std is not None:
                ax.fill_between(x, sp.intensity - sp.intensity_std,
                                sp.intensity + sp.intensity_std, alpha=0.25)
        if items[0][1].axis_name == "energy":
            ax.set_xlim(0, conv(_extent(items[0][1].x, items[0][1].intensity)))
            ax.set_xlabel(energy_label)
        else:
            ax.set_xlabel(_LABELS[items[0][1].axis_name])
        ax.set_ylabel(f"{kind} ({items[0][1].units or 'dimensionless'})")
        ax.legend(fontsize=7)
    # one energy range for every map, so that sqe, sqe_coh and sqe_inc can be compared
    top = max((_extent(np.abs(sp.y), np.nan_to_num(sp.intensity).max(axis=0)) for _, sp in twos),
              default=0.0)
    for name, sp in twos:
        ax = next(panels)
        data = np.ma.masked_invalid(sp.intensity)
        positive = data[data > 0]
        norm = LogNorm(vmin=max(positive.max() * 1e-4, positive.min()), vmax=positive.max()) \
            if positive.size else None
        y = conv(sp.y) if sp.axis_name == "energy" else sp.y
        mesh = ax.pcolormesh(sp.q, y, np.ma.masked_less_equal(data, 0).T, norm=norm,
                             shading="nearest")
        fig.colorbar(mesh, ax=ax, label=sp.units)
        ax.set_xlabel(_LABELS["q"])
        ax.set_ylabel(energy_label if sp.axis_name == "energy" else _LABELS[sp.axis_name])
        top_ = conv(top) if sp.axis_name == "energy" else top
        ax.set_ylim(-top_ if sp.y.min() < 0 else 0, top_)
        ax.set_title(f"{name} ({sp.temperature_K:.0f} K)", fontsize=9)
    for ax in panels:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return fig


def _extent(x, y, fraction: float = 1e-3) -> float:
    """Largest |x| where y exceeds ``fraction`` of its maximum (with a 10 % margin)."""
    y = np.asarray(y)
    big = np.flatnonzero(y > fraction * np.nanmax(y)) if np.nanmax(y) > 0 else []
    return float(np.max(np.abs(x)[big]) * 1.1) if len(big) else float(np.max(np.abs(x)))
