"""``mlff-ins compare``: calculated spectra of any route and measured files on one grid after one
resolution, every pair's metrics, one overlay picture and a report.

Inputs
    Calculated files are spectra files of this package (``FILE`` or ``FILE:GROUP``); the spectrum
    of ``kind`` (and ``element``) is taken from each: the group named exactly ``kind`` (or
    ``kind_element``) if present, else the only group of that kind and element. Measured files
    are read by :func:`mlff_ins.compare.readers.read_measured`.
Alignment
    :func:`mlff_ins.compare.align.match_resolution` broadens every calculation to the coarsest
    resolution (or to the measured instrument's, ``instrument``); then all go on one grid: the
    first measured spectrum's own energies (χ² is computed on measured points) clipped to the
    overlap, else :func:`~mlff_ins.compare.align.common_grid`.
Outputs (``out_dir``)
    ``compare.png`` (1D: overlay with ±``intensity_std`` bands, calculations scaled onto the
    first measurement by its fit, else each max-normalised; 2D: maps on one colour scale and
    the difference of each calculation from the reference), ``metrics.json`` (documented in
    :data:`mlff_ins.compare.metrics.METRICS_DOC`), ``report.md``; with ``residual``
    ``residual.h5`` and ``residual.png`` (:func:`phonon_residual`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path, write_json_atomic, write_text_atomic
from mlff_ins.compare.align import common_grid, match_resolution, on_measured_grid, resample
from mlff_ins.compare.metrics import (BACKGROUNDS, edges_from_centres, fit_scale_background,
                                      pair_metrics)
from mlff_ins.compare.readers import read_measured
from mlff_ins.errors import InputError
from mlff_ins.neutron.plot import spread_band
from mlff_ins.neutron.spectrum import Spectrum2D, read_spectra, write_spectra
from mlff_ins.neutron.units import UNIT_LABEL as _UNIT_LABEL
from mlff_ins.neutron.units import convert_energy, energy_unit

KINDS_1D = ("s_e", "vdos", "gdos")
KINDS_2D = ("sqe", "sqe_coh", "sqe_inc")


@dataclass
class CompareOptions:
    kind: str = "s_e"
    element: str = ""
    background: str = "none"
    e_range: tuple | None = None
    unit: str = "meV"
    instrument: str | None = None      # resolution of the measured spectra, when known
    bank: object = None
    q_edges: object = None
    measured_unit: str | None = None
    measured_x_edges: bool | None = None   # text files: x as bin edges, centres, or None: guess
    measured_energy_gain: bool = False     # the files count energy gain positive: negate
    residual: bool = False
    residual_q_min: float | None = None   # fit region of the residual: |Q| >= this (1/Å)
    labels: list = field(default_factory=list)


# -------------------------------------------------------------------------------------- inputs

def _pick(path: str, spectra: dict, group: str | None, kind: str, element: str):
    if group is not None:
        if group not in spectra:
            raise InputError(f"{path}: no group {group} (groups: {', '.join(spectra)})")
        return group, spectra[group]
    for name in (kind if not element else f"{kind}_{element}", kind):
        sp = spectra.get(name)
        if sp is not None and sp.kind == kind and sp.element == element:
            return name, sp
    found = [n for n, s in spectra.items() if s.kind == kind and s.element == element]
    if len(found) == 1:
        return found[0], spectra[found[0]]
    what = f"kind {kind}" + (f", element {element}" if element else "")
    if not found:
        have = sorted({s.kind for s in spectra.values()})
        raise InputError(f"{path}: no spectrum of {what} (it holds {', '.join(have) or 'none'}; "
                         "choose with --kind/--element)")
    raise InputError(f"{path}: several spectra of {what} ({', '.join(found)}); name one as "
                     f"{path}:GROUP")


def _split(arg: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:GROUP`` (a colon followed by no path separator)."""
    head, sep, tail = str(arg).rpartition(":")
    if sep and head and "/" not in tail and not Path(arg).exists():
        return head, tail
    return str(arg), None


def load_inputs(files, measured, opts: CompareOptions) -> dict:
    """{label: spectrum} of every calculated file then every measured file."""
    import h5py

    two_d = opts.kind in KINDS_2D
    out = {}
    n_inputs = len(files) + len(measured)
    if opts.labels and len(opts.labels) != n_inputs:
        raise InputError(f"--label given {len(opts.labels)} times for {n_inputs} inputs; give "
                         f"one per input (files, then --measured), or none")
    labels = iter(opts.labels)
    for arg in files:
        path, group = _split(arg)
        if Path(path).is_file() and not h5py.is_hdf5(path):
            # a measurement (text, NeXus is HDF5 too) given where calculated files go
            raise InputError(f"{path}: not a spectra file of mlff-ins (HDF5 from phonons/ins, "
                             f"spectra or predict); give a measured file after --measured")
        name, sp = _pick(path, read_spectra(path), group, opts.kind, opts.element)
        out[_label(next(labels, None) or f"{Path(path).stem}:{name}", out)] = sp
    for path in measured:
        found = read_measured(path, bank=opts.bank, q_edges=opts.q_edges if two_d else None,
                              unit=opts.measured_unit, x_edges=opts.measured_x_edges,
                              energy_gain=opts.measured_energy_gain)
        fitting = {n: s for n, s in found.items() if isinstance(s, Spectrum2D) == two_d}
        if not fitting:
            raise InputError(f"{path}: holds no {'2D S(Q,E)' if two_d else '1D S(E)'} to compare "
                             f"with --kind {opts.kind}")
        if len(fitting) > 1:
            raise InputError(f"{path}: holds several spectra ({', '.join(fitting)}); choose one "
                             "with --bank")
        (name, sp), = fitting.items()
        out[_label(next(labels, None) or f"{Path(path).stem} (measured)", out)] = sp
    for label, sp in out.items():
        if isinstance(sp, Spectrum2D) != two_d or getattr(sp, "axis_name", "energy") != "energy":
            raise InputError(f"{label}: a {'2D' if isinstance(sp, Spectrum2D) else '1D'} "
                             f"spectrum cannot be compared as --kind {opts.kind}")
    if len(out) < 2:
        raise InputError("compare needs at least two spectra (files and --measured together)")
    return out


def _label(text: str, taken: dict) -> str:
    label, i = text, 2
    while label in taken:
        label, i = f"{text} ({i})", i + 1
    return label


# ----------------------------------------------------------------------------------- alignment

def align(spectra: dict, opts: CompareOptions) -> tuple[dict, dict]:
    """Broaden to one resolution, then resample onto one grid; returns (spectra, record)."""
    broadened, record = match_resolution(spectra, instrument=opts.instrument)
    measured = [k for k, s in spectra.items() if s.source == "measured"]
    if measured:
        grid = on_measured_grid(broadened, broadened[measured[0]], e_range=opts.e_range)
    else:
        grid = common_grid(broadened, e_range=opts.e_range)
    if len(grid.energy_meV) < 3:
        raise InputError("the spectra share fewer than 3 energy points; check their ranges "
                         "and --e-range")
    aligned = {k: resample(s, grid) for k, s in broadened.items()}
    record["grid"] = {"energy_meV": [float(grid.energy_meV[0]), float(grid.energy_meV[-1]),
                                     len(grid.energy_meV)]}
    if grid.q_invA is not None:
        record["grid"]["q_invA"] = [float(grid.q_invA[0]), float(grid.q_invA[-1]),
                                    len(grid.q_invA)]
    return aligned, record


# ------------------------------------------------------------------------------------- metrics

def all_pairs(aligned: dict, opts: CompareOptions) -> list[dict]:
    """Metrics of every pair; a measured spectrum is always ``b`` (the fit is onto it)."""
    names = list(aligned)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = a, b
            if aligned[x].source == "measured" and aligned[y].source != "measured":
                x, y = y, x
            measured_b = aligned[y].source == "measured"
            m = pair_metrics(aligned[x], aligned[y], measured_b=measured_b,
                             background=opts.background, e_range=opts.e_range)
            out.append({"a": x, "b": y, **m})
    return out


# -------------------------------------------------------------------------------------- output

def run_compare(files, measured, out_dir, opts: CompareOptions) -> dict:
    """Everything of the module docstring; returns the metrics document."""
    if opts.background not in BACKGROUNDS:
        raise InputError(f"--background {opts.background}: choose one of "
                         f"{', '.join(BACKGROUNDS)}")
    if energy_unit(opts.unit) is None:
        raise InputError(f"--unit {opts.unit}: choose meV, ueV (µeV), cm-1 or THz")
    opts.unit = energy_unit(opts.unit)
    if opts.kind not in KINDS_1D + KINDS_2D:
        raise InputError(f"--kind {opts.kind}: choose one of {', '.join(KINDS_1D + KINDS_2D)}")
    if opts.residual and not (opts.kind in KINDS_2D and measured):
        raise InputError("--residual needs a 2D measurement (--measured) and --kind sqe")
    spectra = load_inputs(files, measured, opts)
    aligned, record = align(spectra, opts)
    pairs = all_pairs(aligned, opts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"code_version": __version__, "kind": opts.kind, "element": opts.element,
           "inputs": {k: _describe(s) for k, s in spectra.items()},
           "resolution": {k: v for k, v in record.items() if k != "grid"},
           "grid": record["grid"], "background": opts.background,
           "e_range_meV": list(opts.e_range) if opts.e_range else None, "pairs": pairs}
    if opts.residual:
        ref = next(k for k, s in aligned.items() if s.source == "measured")
        calc = next(k for k, s in aligned.items() if s.source != "measured")
        res, info = phonon_residual(aligned[calc], aligned[ref], opts.residual_q_min)
        write_spectra(out_dir / "residual.h5", {"residual": res})
        _plot_residual(res, out_dir / "residual.png", opts.unit, f"{ref} − scaled {calc}")
        doc["residual"] = {"measured": ref, "calculated": calc, **info,
                           "file": "residual.h5"}
    write_json_atomic(out_dir / "metrics.json", _strict(doc))
    if isinstance(next(iter(aligned.values())), Spectrum2D):
        _plot_maps(aligned, out_dir / "compare.png", opts.unit)
    else:
        _plot_lines(aligned, pairs, out_dir / "compare.png", opts.unit)
    write_text_atomic(out_dir / "report.md", _report(doc, opts))
    return doc


def _describe(sp) -> dict:
    prov = sp.provenance
    return {"source": sp.source, "kind": sp.kind, "element": sp.element,
            "instrument": sp.instrument, "temperature_K": sp.temperature_K,
            "file": prov.get("file", ""), "format": prov.get("format", "")}


def _strict(obj):
    """NaN/inf -> None so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _strict(obj.item())
    return obj


# ------------------------------------------------------------------------------------ residual

def phonon_residual(calc: Spectrum2D, measured: Spectrum2D, q_min: float | None = None):
    """Measured − s·calculated S(Q,E), with s fitted (weighted by the measured errors) where
    |Q| ≥ ``q_min`` (default: the upper half of the common Q range, where phonons dominate
    magnetic scattering, whose form factor falls with Q). The residual's error propagates the
    measured σ and the calculation's ensemble spread scaled by s, in quadrature."""
    q = measured.q
    q_min = float(q[len(q) // 2]) if q_min is None else float(q_min)
    region = q >= q_min
    if not region.any():
        raise InputError(f"--residual-q-min {q_min:g}: beyond the largest |Q| {q.max():g} 1/Å")
    e2 = np.broadcast_to(measured.y, measured.intensity.shape)
    a, b = calc.intensity[region].ravel(), measured.intensity[region].ravel()
    sigma = measured.intensity_std[region].ravel() if measured.intensity_std is not None \
        else np.full(b.shape, np.nan)
    keep = np.isfinite(a) & np.isfinite(b)
    if np.count_nonzero(keep & np.isfinite(sigma) & (sigma > 0)) < 3:
        raise InputError(f"--residual: fewer than 3 measured points with errors at |Q| >= "
                         f"{q_min:g} 1/Å overlap the calculation")
    fit = fit_scale_background(e2[region].ravel()[keep], a[keep], b[keep], sigma[keep], "none")
    s = fit["scale"]
    resid = measured.intensity - s * calc.intensity
    var = np.zeros_like(resid)
    if measured.intensity_std is not None:
        var = var + measured.intensity_std ** 2
    if calc.intensity_std is not None:
        var = var + (s * calc.intensity_std) ** 2
    out = Spectrum2D(kind="sqe", q=q, y=measured.y, intensity=resid,
                     intensity_std=np.sqrt(var), units=measured.units, source="measured",
                     instrument=measured.instrument, temperature_K=measured.temperature_K,
                     provenance={"residual": "measured - scale x calculated phonon S(Q,E)",
                                 "scale": s, "scale_std": fit["scale_std"],
                                 "fit_q_min_invA": q_min, "chi2_per_dof": fit["chi2_per_dof"],
                                 "measured": measured.provenance.get("file", ""),
                                 "calculated": calc.provenance.get("code_version", "")})
    return out, {"scale": s, "scale_std": fit["scale_std"], "fit_q_min_invA": q_min,
                 "chi2_per_dof": fit["chi2_per_dof"], "n_points": fit["n_points"]}


# --------------------------------------------------------------------------------------- plots

def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130)
    _figure().close(fig)


def _plot_lines(aligned: dict, pairs: list[dict], path: Path, unit: str) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    measured = [k for k, s in aligned.items() if s.source == "measured"]
    ref = measured[0] if measured else None
    fits = {p["a"]: p["fit"] for p in pairs if p["b"] == ref and p.get("fit")}
    for k, sp in aligned.items():
        x = convert_energy(sp.x, unit)
        y, std = sp.intensity, sp.intensity_std
        if ref is None:
            norm = np.nanmax(y) if np.nanmax(y) > 0 else 1.0
            y, std = y / norm, (None if std is None else std / norm)
            label = k
        elif k in fits:
            f = fits[k]
            bg = np.polyval(list(reversed(f["background"])), sp.x) if f["background"] else 0.0
            y, std = f["scale"] * y + bg, (None if std is None else f["scale"] * std)
            label = f"{k} (× {f['scale']:.3g}" + (", + background)" if f["background"] else ")")
        else:
            label = k
        if sp.source == "measured":
            if std is not None and not np.isfinite(std).any():
                std = None                     # no error bars: points only
            ax.errorbar(x, y, yerr=std, fmt="o", ms=2.5, lw=0.6, color="k", label=label,
                        zorder=3)
            continue
        line, = ax.plot(x, y, lw=1.2, label=label)
        if std is not None and np.any(std > 0):
            ax.fill_between(x, *spread_band(y, std), color=line.get_color(), alpha=0.25, lw=0)
    ax.set_xlabel(f"energy transfer ({_UNIT_LABEL[unit]})")
    # with a measurement everything is drawn on its scale, so in its units
    units = aligned[ref].units if ref else ""
    ax.set_ylabel("intensity" + ("" if ref else " (max-normalised)")
                  + (f" ({units})" if units else ""))
    ax.set_title(_title(pairs))
    ax.legend(fontsize=8)
    ax.set_xlim(x.min(), x.max())
    fig.tight_layout()
    _save(fig, path)


def _title(pairs: list[dict]) -> str:
    p = pairs[0]
    text = f"{p['a']} vs {p['b']}: MSE {_fmt(p['mse'], '.3g')}"
    if p.get("wasserstein_meV") is not None:
        text += f", W1 {p['wasserstein_meV']:.2f} meV"
    if p.get("fit") and p["fit"].get("chi2_per_dof") is not None:
        text += f", χ²/N {p['fit']['chi2_per_dof']:.3g}"
    return text if len(text) < 90 else text[:87] + "..."


def _plot_maps(aligned: dict, path: Path, unit: str) -> None:
    plt = _figure()
    names = list(aligned)
    ref = next((k for k in names if aligned[k].source == "measured"), names[0])
    others = [k for k in names if k != ref]
    scales = {}
    for k in others:   # calculations scaled onto the reference by least squares (unweighted)
        a, b = aligned[k].intensity, aligned[ref].intensity
        ok = np.isfinite(a) & np.isfinite(b)
        scales[k] = float(np.dot(a[ok], b[ok]) / max(np.dot(a[ok], a[ok]), 1e-300))
    shown = {ref: aligned[ref].intensity, **{k: scales[k] * aligned[k].intensity
                                             for k in others}}
    vmax = np.nanpercentile(np.concatenate([v[np.isfinite(v)] for v in shown.values()]), 99.5)
    cols = len(names) + len(others)
    fig, axes = plt.subplots(1, cols, figsize=(3.6 * cols, 3.6), squeeze=False)
    panels = iter(axes.flat)
    sp0 = aligned[ref]
    mesh = _mesh(sp0, unit)
    for k, v in shown.items():
        ax = next(panels)
        im = ax.pcolormesh(*mesh, v.T, vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(k if k == ref else f"{k} × {scales[k]:.3g}", fontsize=8)
    fig.colorbar(im, ax=axes[0, len(names) - 1])
    for k in others:
        ax = next(panels)
        d = shown[ref] - shown[k]
        lim = np.nanpercentile(np.abs(d[np.isfinite(d)]), 99.5) or 1.0
        im = ax.pcolormesh(*mesh, d.T, vmin=-lim, vmax=lim, cmap="RdBu_r")
        ax.set_title(f"{ref} − {k}", fontsize=8)
        fig.colorbar(im, ax=ax)
    for ax in axes.flat:
        ax.set_xlabel("Q (1/Å)")
        ax.set_ylabel(f"E ({_UNIT_LABEL[unit]})")
    fig.tight_layout()
    _save(fig, path)


def _mesh(sp: Spectrum2D, unit: str):
    """(Q edges, E edges in ``unit``) of a map, for pcolormesh: each bin drawn where it is,
    on uneven grids too (imshow's extent put the bin centres on the image edges)."""
    return (edges_from_centres(sp.q),
            edges_from_centres(convert_energy(np.asarray(sp.y, dtype=float), unit)))


def _plot_residual(res: Spectrum2D, path: Path, unit: str, title: str) -> None:
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    mesh = _mesh(res, unit)
    r = res.intensity
    lim = np.nanpercentile(np.abs(r[np.isfinite(r)]), 99.5) or 1.0
    im = axes[0].pcolormesh(*mesh, r.T, vmin=-lim, vmax=lim, cmap="RdBu_r")
    axes[0].set_title(title, fontsize=8)
    fig.colorbar(im, ax=axes[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        z = r / res.intensity_std
    im = axes[1].pcolormesh(*mesh, z.T, vmin=-5, vmax=5, cmap="RdBu_r")
    axes[1].axvline(res.provenance["fit_q_min_invA"], color="k", ls="--", lw=0.8)
    axes[1].set_title("residual / error (fit region right of the line)", fontsize=8)
    fig.colorbar(im, ax=axes[1])
    for ax in axes:
        ax.set_xlabel("Q (1/Å)")
        ax.set_ylabel(f"E ({_UNIT_LABEL[unit]})")
    fig.tight_layout()
    _save(fig, path)


# -------------------------------------------------------------------------------------- report

def _fmt(v, spec=".4g") -> str:
    return "—" if v is None else format(v, spec)


def _report(doc: dict, opts: CompareOptions) -> str:
    u = opts.unit
    lines = [f"# mlff-ins compare ({doc['kind']}{', ' + doc['element'] if doc['element'] else ''})",
             "", "![overlay](compare.png)", "", "## Inputs", "",
             "| label | source | instrument | T (K) | resolution |", "|---|---|---|---|---|"]
    for k, d in doc["inputs"].items():
        res = doc["resolution"]["spectra"][k]
        note = res["own"] + (f"; broadened by up to σ {res['added_sigma_max_meV']:.3g} meV"
                             if res["broadened"] else "")
        lines.append(f"| {k} | {d['source']} | {d['instrument']} | "
                     f"{_fmt(d['temperature_K'], '.4g')} | {note} |")
    g = doc["grid"]["energy_meV"]
    lines += ["", f"Common resolution: {doc['resolution']['target']}.",
              f"Grid: {g[2]} energies from {_fmt(float(convert_energy(g[0], u)))} to "
              f"{_fmt(float(convert_energy(g[1], u)))} {u}" +
              (f"; {doc['grid']['q_invA'][2]} |Q| values from {doc['grid']['q_invA'][0]:.3g} "
               f"to {doc['grid']['q_invA'][1]:.3g} 1/Å" if "q_invA" in doc["grid"] else "") + ".",
              "", "## Agreement", "",
              "| a | b | MSE | MAE | cosine | Pearson r | W1 (meV) | peak shifts (meV) | "
              "χ²/N | scale |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in doc["pairs"]:
        peaks = p.get("peaks") or {}
        shifts = ", ".join(f"{s:+.2f}" for s in peaks.get("shifts_meV", [])) or "—"
        fit = p.get("fit") or {}
        lines.append(f"| {p['a']} | {p['b']} | {_fmt(p['mse'])} | {_fmt(p['mae'])} | "
                     f"{_fmt(p['cosine'])} | {_fmt(p['pearson_r'])} | "
                     f"{_fmt(p['wasserstein_meV'], '.3f')} | {shifts} | "
                     f"{_fmt(fit.get('chi2_per_dof'))} | "
                     f"{_fmt(fit.get('scale'))} |")
    for p in doc["pairs"]:
        peaks = p.get("peaks") or {}
        if peaks.get("unmatched_a") or peaks.get("unmatched_b"):
            lines.append("")
            def listed(values):
                return (", ".join(f"{e:.1f}" for e in values) + " meV") if values else "none"

            lines.append(f"Unmatched peaks, {p['a']}: {listed(peaks['unmatched_a'])}; "
                         f"{p['b']}: {listed(peaks['unmatched_b'])}.")
        fit = p.get("fit")
        if fit:
            lines.append("")
            lines.append(f"Fit of {p['a']} onto {p['b']} ({fit['background_model']} "
                         f"background): scale {fit['scale']:.4g} ± {_fmt(fit['scale_std'], '.2g')}"
                         + "".join(f", b{i} {b:.4g} ± {_fmt(s, '.2g')}" for i, (b, s) in enumerate(
                             zip(fit["background"], fit["background_std"])))
                         + (f", χ²/N {_fmt(fit['chi2_per_dof'])}"
                            if fit.get("weights") != "equal" else
                            ", equal weights (the measurement has no error bars; the ± are from "
                            "the residual scatter)")
                         + f" over {fit['n_points']} point{'s' if fit['n_points'] != 1 else ''}"
                         + (f" ({fit['n_excluded']} without errors left out)"
                            if fit["n_excluded"] else "")
                         + (f" ({fit['n_sigma_floored']} with σ = 0 given the smallest σ)"
                            if fit.get("n_sigma_floored") else "") + ".")
    if "residual" in doc:
        r = doc["residual"]
        lines += ["", "## Residual", "", "![residual](residual.png)", "",
                  f"{r['measured']} − {r['scale']:.4g} × {r['calculated']}, the scale fitted "
                  f"at |Q| ≥ {r['fit_q_min_invA']:.3g} 1/Å (χ²/N {_fmt(r['chi2_per_dof'])}); "
                  "the map and its error are in residual.h5."]
    lines += ["", "Metric definitions: README, section *Comparing with measurements* "
              "(metrics.json has every number of this page).", ""]
    return "\n".join(lines)
