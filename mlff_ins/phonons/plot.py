"""Band structure + DOS in one PNG (meV); with an ensemble, the member spread as a shaded band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins.atomic_io import atomic_path
from mlff_ins.neutron.plot import spread_band
from mlff_ins.phonons.properties import MEV_PER_THZ, PhononProperties


#: band plots with more branches than this (a cell of more than 100 atoms) show the DOS only
MAX_DRAWN_BRANCHES = 300


def plot_phonons(props: PhononProperties, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_dos) = plt.subplots(1, 2, figsize=(8, 4.2), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 1]})
    x = props.band_distances
    band = props.band_frequencies_THz * MEV_PER_THZ         # (K, B, 3n)
    mean, std = band.mean(axis=0), band.std(axis=0)
    # breaks in the path (two consecutive points at the same distance: ASE repeats it where one
    # segment ends and the next starts elsewhere, e.g. ...K,U...) are not joined
    pieces = np.split(np.arange(len(x)), np.flatnonzero(np.diff(x) <= 1e-12) + 1)
    branches = range(mean.shape[1])
    if len(branches) > MAX_DRAWN_BRANCHES:
        # a cell of hundreds of atoms (a glass, a defect cell as its own supercell): its
        # branches fill the panel black, and its modes that count are at Γ (the DOS)
        ax.text(0.5, 0.5, f"{len(branches)} branches: not drawn\n(see the DOS)",
                transform=ax.transAxes, ha="center", va="center", fontsize=9)
        branches = ()
    for j in branches:
        for idx in pieces:
            ax.plot(x[idx], mean[idx, j], color="k", lw=1.0)
            if band.shape[0] > 1:
                ax.fill_between(x[idx], mean[idx, j] - std[idx, j], mean[idx, j] + std[idx, j],
                                color="C0", alpha=0.3, lw=0)
    ticks, names = [], []
    for d, lab in props.band_labels:
        if ticks and abs(d - ticks[-1]) < 1e-9:
            names[-1] = f"{names[-1]}|{lab}"
        else:
            ticks.append(d)
            names.append(lab)
    for t in ticks:
        ax.axvline(t, color="0.7", lw=0.6)
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xticks(ticks, names)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylabel("energy (meV)")
    if props.imaginary:
        ax.set_title(f"{title}  ({len(props.imaginary)} q-points with imaginary modes)",
                     fontsize=9, color="C3")
    elif title:
        ax.set_title(title, fontsize=9)
    e = props.dos_frequency_THz * MEV_PER_THZ
    per_mev = 1.0 / MEV_PER_THZ
    tot = props.dos_total * per_mev
    ax_dos.plot(tot.mean(axis=0), e, color="k", lw=1.2, label="total")
    if tot.shape[0] > 1:
        ax_dos.fill_betweenx(e, *spread_band(tot.mean(0), tot.std(0)), color="k",
                             alpha=0.2, lw=0)
    if len(props.dos_partial) > 1:
        # elements in alphabetical order, as the spectra plots draw them: one colour each
        for el, v in sorted(props.dos_partial.items()):
            ax_dos.plot((v * per_mev).mean(axis=0), e, lw=0.9, label=el)
    ax_dos.set_xlabel("DOS (states/meV/cell)")
    ax_dos.set_xlim(left=0)
    ax_dos.legend(fontsize=7)
    lo = min(0.0, float(np.min(mean)) * 1.1)
    ax.set_ylim(lo, float(np.max(mean)) * 1.08)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_heat_capacity(thermal: dict, path: str | Path, title: str = "") -> None:
    """C_V(T) per atom (ensemble mean ± std) with the Dulong–Petit limit 3R."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = thermal["temperature_K"]
    cv = thermal["per_atom"]["heat_capacity"]
    mean, std = cv.mean(axis=0), cv.std(axis=0)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(t, mean, color="C0", label=thermal.get("label", "harmonic C_V (phonopy)"))
    if len(cv) > 1:
        ax.fill_between(t, *spread_band(mean, std), color="C0", alpha=0.3,
                        label="ensemble spread")
    ax.axhline(3 * 8.314462618, color="grey", ls="--", lw=1, label="Dulong–Petit 3R")
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("C_V per atom (J/(K mol))")
    ax.set_xlim(0, t[-1])
    ax.set_ylim(0, 3 * 8.314462618 * 1.1)
    ax.legend(loc="lower right")
    ax.set_title(f"{title}  ({thermal['formula']})" if title else thermal["formula"])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
