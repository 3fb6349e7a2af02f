"""One PNG overview of a spectra file: 1D spectra as lines, 2D ones as maps (log colour scale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

_LABELS = {"energy": "energy transfer (meV)", "time": "time (fs)", "q": "Q (1/Å)"}


def spread_band(y, std):
    """Lower and upper edge of a ±1σ band around ``y``; for a quantity that is nowhere negative
    (an intensity, a DOS, a heat capacity) the lower edge stops at zero, as the quantity does."""
    y, std = np.asarray(y, dtype=float), np.asarray(std, dtype=float)
    low = y - std
    if np.nanmin(y) >= 0:
        low = np.clip(low, 0.0, None)
    return low, y + std


def plot_spectra(spectra: dict, path: str | Path, unit: str = "meV"):
    """Panels: each 1D kind (totals and partials overlaid), then each 2D total (maps share one
    energy range); energy axes in ``unit`` (meV, ueV, cm-1 or THz). Returns the (closed) matplotlib
    figure, or None when there is nothing to plot."""
    from mlff_ins.neutron.units import MEV_PER_UNIT, UNIT_LABEL, convert_energy

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
        # one order (so one colour each) whatever order the file or the engine gave: the
        # total, elements alphabetically, detector banks by angle
        items = sorted(items, key=_line_order)
        first = items[0][1]
        energy_axis = first.axis_name == "energy"
        # a density per meV drawn against cm⁻¹ or THz is drawn per that unit (× dE/dx)
        per_meV = energy_axis and (first.units or "").endswith("/meV")
        jac = MEV_PER_UNIT[unit] if per_meV else 1.0
        units = (first.units[:-len("meV")] + UNIT_LABEL[unit]) if per_meV else first.units
        smooth = _display_smoothing(first)
        for name, sp in items:
            total = not sp.element and name == sp.kind     # e.g. "s_e", not the bank "s_e_45"
            style = dict(lw=1.6, color="k") if total else dict(lw=1.0)
            x = conv(sp.x) if energy_axis else sp.x
            y = sp.intensity if smooth is None else smooth(sp.x, sp.intensity)
            line, = ax.plot(x, y * jac, label=_legend(name, sp, total), **style)
            if sp.intensity_std is not None:
                std = sp.intensity_std if smooth is None else smooth(sp.x, sp.intensity_std)
                low, high = spread_band(y, std)
                ax.fill_between(x, low * jac, high * jac, alpha=0.25, color=line.get_color(),
                                lw=0)
        if energy_axis:
            ax.set_xlim(0, conv(_extent(first.x, first.intensity)))
            ax.set_xlabel(energy_label)
        else:
            ax.set_xlabel(_LABELS[first.axis_name])
        ax.set_ylabel(f"{_KIND_LABELS.get(kind, kind)} ({units or 'dimensionless'})")
        title = ", ".join(t for t in (
            (first.instrument or "").upper() if first.instrument not in (None, "", "direct")
            else "", _kelvin(first.temperature_K),
            f"{first.source}" if first.source else "",
            "smoothed for display (0.5 meV FWHM)" if smooth is not None else "") if t)
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7)
    # one energy range for every map, so that sqe, sqe_coh and sqe_inc can be compared
    top = max((_extent(np.abs(sp.y), np.nan_to_num(sp.intensity).max(axis=0)) for _, sp in twos),
              default=0.0)
    for name, sp in twos:
        ax = next(panels)
        data = np.ma.masked_invalid(sp.intensity)
        positive = data[data > 0]
        top_value = _colour_top(sp, data)
        saturated = positive.size and top_value < positive.max()
        norm = LogNorm(vmin=max(top_value * 1e-4, positive.min()), vmax=top_value) \
            if positive.size else None
        y = conv(sp.y) if sp.axis_name == "energy" else sp.y
        # bins at or below zero (an MD map's noise, empty bins) take the lowest colour, as bins
        # below the scale do; only NaN bins (outside an instrument's coverage) stay blank
        viridis = matplotlib.colormaps["viridis"]
        cmap = viridis.with_extremes(under=viridis(0.0), over=viridis(1.0))
        shown = np.ma.where(data > 0, data, norm.vmin / 2.0) if norm is not None else data
        mesh = ax.pcolormesh(sp.q, y, shown.T, norm=norm, cmap=cmap, shading="nearest")
        fig.colorbar(mesh, ax=ax, label=sp.units, extend="max" if saturated else "neither")
        ax.set_xlabel(_LABELS["q"])
        ax.set_ylabel(energy_label if sp.axis_name == "energy" else _LABELS[sp.axis_name])
        top_ = conv(top) if sp.axis_name == "energy" else top
        ax.set_ylim(-top_ if sp.y.min() < 0 else 0, top_)
        kelvin = _kelvin(sp.temperature_K, ".0f")
        title = f"{name} ({kelvin})" if kelvin else name
        ax.set_title(title + ("\nelastic line above the colour scale" if saturated else ""),
                     fontsize=9)
    for ax in panels:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return fig


def _kelvin(temperature_K, fmt: str = ".4g") -> str:
    """'300 K', or '' for a spectrum without a temperature (None or NaN: a phonon DOS)."""
    if temperature_K is None or not np.isfinite(temperature_K):
        return ""
    return f"{temperature_K:{fmt}} K"


_KIND_LABELS = {"s_e": "S(E)", "vdos": "VDOS", "gdos": "GDOS", "msd": "MSD", "eisf": "EISF"}
#: FWHM (meV) of the Gaussian a binned phonon DOS is drawn with
DISPLAY_FWHM_MEV = 0.5


def _line_order(item) -> tuple:
    name, sp = item
    bank = name.rsplit("_", 1)[-1]
    if not sp.element and name == sp.kind:
        return (0, "", 0.0)
    if sp.element:
        return (1, sp.element, 0.0)
    return (2, "", float(bank)) if bank.isdigit() else (3, name, 0.0)


def _legend(name: str, sp, total: bool) -> str:
    if total:
        return "total"
    if sp.element:
        return sp.element
    bank = name.rsplit("_", 1)[-1]
    return f"{bank}° bank" if bank.isdigit() else name


def _display_smoothing(sp):
    """For a VDOS binned from phonon modes on bins finer than DISPLAY_FWHM_MEV (a comb of
    spikes, one per mode group of the q-mesh): a function that broadens it for the plot only
    (the file keeps the binned modes); else None."""
    if sp.kind not in ("vdos", "gdos") or sp.source != "phonons" or sp.axis_name != "energy":
        return None
    x = np.asarray(sp.x, dtype=float)
    if len(x) < 3 or np.median(np.diff(x)) >= 0.5 * DISPLAY_FWHM_MEV:
        return None
    from mlff_ins.neutron.resolution import constant_fwhm

    kernel = constant_fwhm(DISPLAY_FWHM_MEV)
    return kernel.broaden


#: energy bins either side of E = 0 that hold a map's elastic line (Bragg peaks, the incoherent
#: elastic peak of an MD map, spread over a bin or two by the correlation window)
ELASTIC_BINS = 3
#: the elastic line sets a map's colour scale unless it outshines the rest by more than this
ELASTIC_DOMINANCE = 10.0


def _colour_top(sp, data) -> float:
    """Top of a map's log colour scale: its largest value, unless an elastic line at E = 0
    outshines the inelastic part by more than ELASTIC_DOMINANCE (a crystal's Bragg peaks reach
    ~10 barn/sr/meV where its phonons are ~1e-3); then the inelastic part's largest value, and
    the elastic bins are drawn in the top colour, so the phonons keep the scale's decades."""
    positive = data[data > 0]
    if not positive.size or sp.axis_name != "energy" or len(sp.y) < 4 * ELASTIC_BINS:
        return float(positive.max()) if positive.size else 0.0
    step = float(np.median(np.abs(np.diff(sp.y))))
    outside = data[:, np.abs(sp.y) > ELASTIC_BINS * step + 0.5 * step]
    rest = outside[outside > 0]
    if rest.size and positive.max() > ELASTIC_DOMINANCE * rest.max():
        return float(rest.max())
    return float(positive.max())


def _extent(x, y, fraction: float = 1e-3) -> float:
    """Largest |x| where y exceeds ``fraction`` of its maximum (with a 10 % margin)."""
    y = np.asarray(y)
    big = np.flatnonzero(y > fraction * np.nanmax(y)) if np.nanmax(y) > 0 else []
    return float(np.max(np.abs(x)[big]) * 1.1) if len(big) else float(np.max(np.abs(x)))
