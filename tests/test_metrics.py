"""Comparison metrics and alignment on analytic pairs whose answers are known in closed form.

Tolerances and where they come from:

- rounding only (sums of ~10³ numbers of order 1): 1e-12;
- a Gaussian of width σ sampled at bins ΔE keeps its area, mean and variance up to
  ~exp(−2π²σ²/ΔE²) (Poisson summation), < 1e-300 for σ/ΔE ≥ 5 as used here, so those moments
  are held to rounding (1e-9 relative or meV);
- parabolic peak interpolation on a sampled Gaussian is biased by −(ΔE/σ)²/2 · u(1/2 − 2u²) bins
  (u = offset of the true centre from the bin, |u| ≤ 1/2; from the quartic term of the
  Gaussian), at most 0.048 (ΔE/σ)² bins; the tests state the bound they use;
- χ²/N of a correct fit to noisy data: mean 1, standard deviation sqrt(2/N) (Poisson counts of
  mean λ add 1/(2λ) to the variance factor, negligible for λ ≥ 500): held to 4 standard
  deviations.
"""

import json

import numpy as np
import pytest

from mlff_ins.compare.align import common_grid, match_resolution, own_resolution, resample
from mlff_ins.compare.metrics import (DEFAULT_MAX_SHIFT_MEV, METRICS_DOC, match_peaks,
                                      pair_metrics)
from mlff_ins.errors import InputError
from mlff_ins.neutron.resolution import FWHM_PER_SIGMA, tosca_polynomial_sigma
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

STEP = 0.1
E = np.round(np.arange(0.0, 120.0 + STEP / 2, STEP), 10)       # meV


def gauss(e, centre, sigma, height=1.0):
    return height * np.exp(-0.5 * ((e - centre) / sigma) ** 2)


def spec(y, e=E, **kw):
    kw.setdefault("kind", "s_e")
    kw.setdefault("source", "phonons")
    return Spectrum1D(x=e, intensity=y, **kw)


def peaks(*centres, sigma=1.5):
    return sum(gauss(E, c, sigma, h) for c, h in zip(centres, (1.0, 0.6, 0.8, 0.5)))


# ---------------------------------------------------------------------------- pair metrics

def test_identical_spectra_are_perfect_and_the_dict_is_strict_json():
    a = spec(peaks(20.0, 45.0, 80.0) + 0.02)
    m = pair_metrics(a, a)
    assert m["mse"] == 0.0 and m["mae"] == 0.0
    assert m["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert m["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert m["wasserstein_meV"] == pytest.approx(0.0, abs=1e-12)
    assert m["peaks"]["shifts_meV"] == [0.0, 0.0, 0.0]
    assert [p[0] for p in m["peaks"]["matched"]] == pytest.approx([20.0, 45.0, 80.0], abs=1e-4)
    assert m["peaks"]["unmatched_a"] == m["peaks"]["unmatched_b"] == []
    assert m["fit"] is None and m["n_points"] == len(E)
    json.dumps(m, allow_nan=False)
    top = {row.split("`")[1] for row in METRICS_DOC.splitlines()[2:]}
    assert set(m) == {k for k in top if "." not in k}
    assert {f"peaks.{k}" for k in m["peaks"]} == {k for k in top if k.startswith("peaks.")}


def test_shifted_gaussian_wasserstein_and_peak_shift_equal_the_shift():
    """δ = 1.337 meV = 13.37 bins of 0.1 meV (not a whole number of bins), σ = 2 meV.
    W1: both sampled Gaussians keep their means to ~exp(−2π²·20²) and their CDFs do not cross,
    so W1 = δ to rounding: 1e-9 meV. Peak shift: parabolic bias ≤ 0.048 (0.1/2)² bins =
    1.2e-5 meV per peak, so the shift is within 2.4e-5 meV; held to 3e-5 meV."""
    delta = 1.337
    a, b = spec(gauss(E, 40.0 + delta, 2.0)), spec(gauss(E, 40.0, 2.0))
    m = pair_metrics(a, b)
    assert m["wasserstein_meV"] == pytest.approx(delta, abs=1e-9)
    assert m["peaks"]["shifts_meV"] == pytest.approx([delta], abs=3e-5)
    assert m["peaks"]["matched"][0] == pytest.approx([40.0 + delta, 40.0], abs=3e-5)
    assert 0 < m["cosine"] < 1 and m["mse"] > 0


def test_wasserstein_weighs_each_point_by_its_bin_on_an_uneven_grid():
    """Intensities are per meV, so on a log-spaced grid (a measured one: bins 0.3 meV at 10 meV,
    6 meV at 200 meV) a point's mass is intensity × bin width. Two bands (20 and 120 meV,
    σ = 4 meV) shifted rigidly by 2 meV: W1 = 2 meV to the midpoint rule's accuracy on peaks
    several bins wide (held to 1e-3 meV); weighting the points by intensity alone gives each
    band the weight of its point count, not its area (W1 off by more than 0.05 meV here)."""
    from mlff_ins.compare.metrics import wasserstein_meV

    e = np.geomspace(1.0, 300.0, 300)

    def bands(shift):
        return gauss(e, 20.0 + shift, 4.0, 1.0) + gauss(e, 120.0 + shift, 4.0, 1.0)

    assert wasserstein_meV(e, bands(2.0), bands(0.0)) == pytest.approx(2.0, abs=1e-3)
    # the uniform grid is unchanged by the weighting (equal widths)
    assert wasserstein_meV(E, gauss(E, 42.0, 2.0), gauss(E, 40.0, 2.0)) == pytest.approx(
        2.0, abs=1e-9)


def test_unmatched_peaks_are_listed_both_ways():
    """a: 20, 50, 90; b: 21.5, 70, 90.2 meV. 50 and 70 are 20 meV apart, beyond the 5 meV
    match distance, so each is unmatched on its side. σ = 1.5 meV: parabolic bias
    ≤ 0.048 (0.1/1.5)² bins = 2e-5 meV; held to 1e-4 meV."""
    m = pair_metrics(spec(peaks(20.0, 50.0, 90.0)), spec(peaks(21.5, 70.0, 90.2)))
    p = m["peaks"]
    np.testing.assert_allclose(p["matched"], [[20.0, 21.5], [90.0, 90.2]], atol=1e-4)
    np.testing.assert_allclose(p["shifts_meV"], [-1.5, -0.2], atol=1e-4)
    np.testing.assert_allclose(p["unmatched_a"], [50.0], atol=1e-4)
    np.testing.assert_allclose(p["unmatched_b"], [70.0], atol=1e-4)


def test_peak_matching_is_one_to_one_and_respects_the_distance():
    assert DEFAULT_MAX_SHIFT_MEV == 5.0
    m = match_peaks([10.0, 30.0], [14.0, 36.0])
    assert m["matched"] == [[10.0, 14.0]] and m["unmatched_a"] == [30.0]
    assert m["unmatched_b"] == [36.0]
    m = match_peaks([10.0, 12.0], [11.5])                  # the closer one wins, once
    assert m["matched"] == [[12.0, 11.5]] and m["unmatched_a"] == [10.0]
    assert match_peaks([10.0], [16.0], max_shift_meV=7.0)["shifts_meV"] == [-6.0]


def _measured(y, sigma, e=E):
    return spec(y, e=e, source="measured", instrument="tosca", intensity_std=sigma)


@pytest.mark.parametrize("background, bg", [
    ("none", lambda e: 0.0 * e), ("flat", lambda e: 0.3 + 0.0 * e),
    ("linear", lambda e: 0.3 + 0.004 * e)])
def test_fit_recovers_scale_and_background_exactly(background, bg):
    """measured = 2.7·calc + background with no noise: the fit is exact to rounding (χ²/N
    < 1e-18, parameters to 1e-10); the points with σ NaN / −1 are left out, the one with σ = 0
    (an empty bin) is kept with the smallest σ."""
    calc = peaks(20.0, 45.0, 80.0) + 0.05
    meas = 2.7 * calc + bg(E)
    sigma = 0.02 + 0.05 * np.sqrt(meas)
    sigma[[5, 500, 900]] = [0.0, np.nan, -1.0]
    fit = pair_metrics(spec(calc), _measured(meas, sigma), measured_b=True,
                       background=background)["fit"]
    n_par = {"none": 1, "flat": 2, "linear": 3}[background]
    assert fit["n_excluded"] == 2 and fit["n_points"] == len(E) - 2
    assert fit["n_sigma_floored"] == 1 and fit["weights"] == "1/sigma^2"
    assert fit["dof"] == len(E) - 2 - n_par
    assert fit["chi2_per_dof"] < 1e-18
    assert fit["scale"] == pytest.approx(2.7, rel=1e-10)
    want = {"none": [], "flat": [0.3], "linear": [0.3, 0.004]}[background]
    np.testing.assert_allclose(fit["background"], want, rtol=1e-10)
    assert len(fit["background_std"]) == len(want) and fit["scale_std"] > 0


def test_shape_metrics_leave_out_the_fitted_background():
    """A measurement = 2.7 × calc + 0.3 + 0.004·E (no noise): with --background linear the shape
    metrics compare calc with the measurement minus the fitted background, so they find the same
    shape (cosine 1, mse 0 and W1 0 to rounding) where, with the background left in, W1 is
    several meV."""
    calc = peaks(20.0, 45.0, 80.0) + 0.05
    meas = 2.7 * calc + 0.3 + 0.004 * E
    sigma = np.full_like(E, 0.05)
    m = pair_metrics(spec(calc), _measured(meas, sigma), measured_b=True, background="linear")
    assert m["cosine"] == pytest.approx(1.0, abs=1e-12) and m["mse"] < 1e-20
    assert m["wasserstein_meV"] == pytest.approx(0.0, abs=1e-6)
    assert m["peaks"]["unmatched_a"] == m["peaks"]["unmatched_b"] == []
    raw = pair_metrics(spec(calc), _measured(meas, sigma), measured_b=True, background="none")
    assert raw["wasserstein_meV"] > 2.0 and raw["cosine"] < 0.99


def test_fit_to_poisson_counts_gives_chi2_per_dof_near_one():
    """N = 2000 points of Poisson counts with mean λ = 4·calc + 500 (λ ∈ [500, 4500]), σ =
    √λ: χ²/N has mean 1 and std sqrt(2/1998) (1 + 1/1000)^½ = 0.0317; held to 4 std = 0.127.
    The fitted scale and background are within 4 of their stated standard errors."""
    rng = np.random.default_rng(20240611)
    e = np.round(np.arange(0.1, 200.0 + 0.05, 0.1), 10)
    calc = sum(gauss(e, c, 3.0, h) for c, h in ((30, 1000), (75, 600), (140, 800)))
    lam = 4.0 * calc + 500.0
    counts = rng.poisson(lam).astype(float)
    fit = pair_metrics(spec(calc, e=e), _measured(counts, np.sqrt(lam), e=e), measured_b=True,
                       background="flat")["fit"]
    assert fit["n_points"] == 2000 and fit["dof"] == 1998
    assert abs(fit["chi2_per_dof"] - 1.0) < 4 * np.sqrt(2 / 1998) * np.sqrt(1 + 1 / 1000)
    assert abs(fit["scale"] - 4.0) < 4 * fit["scale_std"]
    assert abs(fit["background"][0] - 500.0) < 4 * fit["background_std"][0]


def test_fit_without_error_bars_has_equal_weights_and_errors_from_the_scatter():
    """A measurement without error bars (a two-column file): the fit has equal weights. With
    Gaussian noise of one σ₀ everywhere it is the weighted fit with σ = σ₀, and its standard
    errors, from the residual scatter, equal that fit's within the scatter of an estimate of σ₀
    from N = 2000 points (relative std 1/√(2N) = 1.6 %; held to 4 of those, 6.3 %). χ²/N is
    undefined (None)."""
    rng = np.random.default_rng(7)
    e = np.round(np.arange(0.1, 200.0 + 0.05, 0.1), 10)
    calc = sum(gauss(e, c, 3.0, h) for c, h in ((30, 10.0), (75, 6.0), (140, 8.0)))
    meas = 4.0 * calc + 0.5 + rng.normal(0.0, 0.2, len(e))
    no_errors = pair_metrics(spec(calc, e=e), _measured(meas, np.full(len(e), np.nan), e=e),
                             measured_b=True, background="flat")["fit"]
    known = pair_metrics(spec(calc, e=e), _measured(meas, np.full(len(e), 0.2), e=e),
                         measured_b=True, background="flat")["fit"]
    assert no_errors["weights"] == "equal" and no_errors["chi2_per_dof"] is None
    assert no_errors["scale"] == pytest.approx(known["scale"], rel=1e-12)
    assert no_errors["background"] == pytest.approx(known["background"], rel=1e-12)
    tol = 4 / np.sqrt(2 * len(e))
    assert no_errors["scale_std"] == pytest.approx(known["scale_std"], rel=tol)
    assert no_errors["background_std"][0] == pytest.approx(known["background_std"][0], rel=tol)
    none = pair_metrics(spec(calc, e=e), _measured(meas, None, e=e), measured_b=True)["fit"]
    assert none["weights"] == "equal" and none["n_points"] == len(e)


def test_nan_points_and_e_range_are_dropped_from_both():
    ya, yb = peaks(20.0, 45.0), peaks(21.0, 45.5)
    a_nan = ya.copy()
    a_nan[:50] = np.nan                                     # below 5 meV: outside a's range
    trimmed = pair_metrics(spec(ya[50:], e=E[50:]), spec(yb[50:], e=E[50:]))
    assert pair_metrics(spec(a_nan), spec(yb)) == trimmed
    ranged = pair_metrics(spec(ya), spec(yb), e_range=(E[50], 200.0))
    assert ranged == trimmed and ranged["n_points"] == len(E) - 50


def test_2d_spectra_are_flattened_and_energy_only_metrics_are_null():
    q = np.arange(0.5, 5.0, 0.5)
    a = Spectrum2D(kind="sqe", q=q, y=E, intensity=np.outer(q ** 2, peaks(20.0, 50.0)),
                   source="phonons")
    m = pair_metrics(a, a)
    assert m["mse"] == 0.0 and m["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert m["peaks"] is None and m["wasserstein_meV"] is None
    assert m["n_points"] == a.intensity.size


def test_inputs_that_cannot_be_compared_are_refused():
    a = spec(peaks(20.0))
    with pytest.raises(InputError, match="different grids"):
        pair_metrics(a, spec(peaks(20.0)[:-1], e=E[:-1]))
    with pytest.raises(InputError, match="background"):
        pair_metrics(a, _measured(peaks(20.0), np.ones_like(E)), measured_b=True,
                     background="cubic")


# --------------------------------------------------------------------------- grids, resample

def test_a_measurement_keeps_its_points_up_to_the_end_of_the_overlap():
    """A measurement on 0.1 meV bins (1-98 meV) against a calculation on 5 meV steps (0-100):
    every measured point from 1 to 98 meV is compared. The common grid at the coarsest step ends
    at 96 meV (1 + 19·5), and clipping to it dropped the measured points above."""
    from mlff_ins.compare.align import on_measured_grid

    calc = spec(np.ones(21), e=np.arange(21) * 5.0)
    meas = _measured(np.ones(971), np.ones(971), e=np.round(1.0 + 0.1 * np.arange(971), 10))
    grid = on_measured_grid([calc, meas], meas)
    np.testing.assert_array_equal(grid.energy_meV, meas.x)
    grid = on_measured_grid([calc, meas], meas, e_range=(10.0, 50.0))
    assert grid.energy_meV[0] == 10.0 and grid.energy_meV[-1] == 50.0


def test_common_grid_is_the_overlap_at_the_coarsest_step():
    a = spec(np.ones(386), e=np.arange(386) * 0.13)                # 0 .. 50.05
    b = spec(np.ones(296), e=1.05 + np.arange(296) * 0.2)          # 1.05 .. 60.05
    g = common_grid([a, b])
    assert g.energy_meV[0] == 1.05 and g.q_invA is None
    np.testing.assert_allclose(np.diff(g.energy_meV), 0.2, rtol=1e-12)
    assert 50.05 - 0.2 < g.energy_meV[-1] <= 50.05
    g = common_grid({"a": a, "b": b}, e_range=(10.0, 20.0), step=0.5)
    np.testing.assert_allclose(g.energy_meV, np.arange(10.0, 20.25, 0.5), rtol=1e-12)
    with pytest.raises(InputError, match="no energy range"):
        common_grid([a, spec(np.ones(10), e=100 + np.arange(10.0))])


def test_resample_is_exact_on_linear_functions():
    """Linear interpolation reproduces a + bE exactly, and bilinear a + bQ + cE + dQE, up to
    rounding (values ≤ 40: 1e-12)."""
    e = np.arange(386) * 0.13
    a = spec(3.0 + 0.7 * e, e=e, intensity_std=0.1 + 0.01 * e, source="measured")
    grid = np.arange(1.05, 55.0, 0.2)
    out = resample(a, grid)
    inside = grid <= e[-1]
    np.testing.assert_allclose(out.intensity[inside], 3.0 + 0.7 * grid[inside], atol=1e-12)
    np.testing.assert_allclose(out.intensity_std[inside], 0.1 + 0.01 * grid[inside], atol=1e-12)
    assert np.all(np.isnan(out.intensity[~inside])) and out.x is not a.x

    q, e2 = np.arange(0.5, 5.0 + 0.05, 0.1), np.arange(-10.0, 40.0 + 0.1, 0.25)
    f = 2.0 + 0.5 * q[:, None] + 0.3 * e2[None, :] + 0.05 * q[:, None] * e2[None, :]
    b = Spectrum2D(kind="sqe", q=q, y=e2, intensity=f, source="md")
    c = Spectrum2D(kind="sqe", q=np.arange(0.7, 4.95, 0.35), y=np.arange(-5.0, 35.0, 0.4),
                   intensity=np.zeros((13, 100)), source="md")
    g = common_grid([b, c])
    assert g.q_invA[0] == pytest.approx(0.7) and np.diff(g.q_invA)[0] == pytest.approx(0.35)
    out = resample(b, g)
    qq, ee = g.q_invA[:, None], g.energy_meV[None, :]
    np.testing.assert_allclose(out.intensity, 2.0 + 0.5 * qq + 0.3 * ee + 0.05 * qq * ee,
                               atol=1e-12)


# ------------------------------------------------------------------------------- resolution

E_FINE = np.round(np.arange(0.0, 150.0 + 0.025, 0.05), 10)   # 0.05 meV bins
E0 = 50.0
I0 = round(E0 / 0.05)


def _moments(e, y):
    area = np.sum(y)
    mean = np.sum(e * y) / area
    return area, mean, np.sqrt(np.sum((e - mean) ** 2 * y) / area)


def _line(**kw):
    y = np.zeros_like(E_FINE)
    y[I0] = 1.0
    kw.setdefault("kind", "vdos")
    kw.setdefault("instrument", "direct")
    return spec(y, e=E_FINE, **kw)


def test_a_line_broadened_to_tosca_has_toscas_width_and_tosca_is_left_alone():
    """σ_TOSCA(50 meV) = 0.56 meV = 11 bins: area, centre and width of the sampled Gaussian
    are exact to ~exp(−2π²·11²); ResINS' TOSCA equals the polynomial to 1e-10 meV, so the
    width is held to 1e-8 relative and area and centre to 1e-9."""
    tosca = spec(gauss(E_FINE, 60.0, 3.0), e=E_FINE, instrument="tosca")
    out, rec = match_resolution({"tosca": tosca, "line": _line()})
    area, mean, width = _moments(E_FINE, out["line"].intensity)
    assert area == pytest.approx(1.0, rel=1e-9) and mean == pytest.approx(E0, abs=1e-9)
    assert width == pytest.approx(float(tosca_polynomial_sigma(E0)), rel=1e-8)
    assert np.array_equal(out["tosca"].intensity, tosca.intensity)
    assert not rec["spectra"]["tosca"]["broadened"] and rec["spectra"]["line"]["broadened"]
    assert "TOSCA" in rec["target"]
    json.dumps(rec, allow_nan=False)


def test_a_finer_spectrum_gets_the_quadrature_difference():
    """An MD spectrum whose window already gave FWHM 0.4 meV is broadened by
    sqrt(σ_T² − σ_w²): a line in it ends up with exactly that width (1e-8 relative)."""
    sigma_w = 0.4 / FWHM_PER_SIGMA
    md = _line(source="md", provenance={"resolution_fwhm_meV": 0.4})
    tosca = spec(gauss(E_FINE, 60.0, 3.0), e=E_FINE, instrument="tosca")
    out, _ = match_resolution([md, tosca])
    _, _, width = _moments(E_FINE, out[0].intensity)
    assert width == pytest.approx(np.sqrt(tosca_polynomial_sigma(E0) ** 2 - sigma_w ** 2),
                                  rel=1e-8)
    assert np.array_equal(out[1].intensity, tosca.intensity)


def test_the_target_is_the_coarsest_width_at_each_energy():
    """A calculation with constant FWHM 2 meV (σ = 0.849 meV) against TOSCA (σ 0.31 meV at 0,
    1.08 meV at 140 meV): its line at 20 meV, where it is the coarsest, stays one bin (to
    rounding); its line at 140 meV gets sqrt(σ_T² − σ²) (1e-8 relative); the TOSCA spectrum is
    broadened where it is the finer one, so it changes too."""
    y = np.zeros_like(E_FINE)
    y[[400, 2800]] = 1.0                                     # 20 and 140 meV
    calc = spec(y, e=E_FINE, kind="sqe", provenance={"fwhm_meV": 2.0})
    tosca = spec(gauss(E_FINE, 60.0, 3.0), e=E_FINE, instrument="tosca")
    out, rec = match_resolution([calc, tosca])
    line = out[0].intensity
    assert line[400] == pytest.approx(1.0, abs=1e-12) and abs(line[399]) < 1e-12
    high = E_FINE > 100
    _, mean, width = _moments(E_FINE[high], line[high])
    assert mean == pytest.approx(140.0, abs=1e-9)
    assert width == pytest.approx(np.sqrt(tosca_polynomial_sigma(140.0) ** 2
                                          - (2.0 / FWHM_PER_SIGMA) ** 2), rel=1e-8)
    assert rec["spectra"]["1"]["broadened"]


def test_measured_spectra_are_never_broadened_and_set_the_target():
    """With instrument="tosca" for the measurement, an unbroadened line becomes TOSCA-wide;
    the measured spectrum, and a coarser calculation (constant FWHM 3 meV, wider than TOSCA
    at 50 meV), are left as they are."""
    meas = spec(gauss(E_FINE, 60.0, 3.0), e=E_FINE, source="measured", instrument="unknown",
                intensity_std=np.ones_like(E_FINE))
    coarse = _line(kind="sqe", provenance={"resolution_model": "Gaussian, FWHM 3 meV"})
    out, rec = match_resolution({"meas": meas, "line": _line(), "coarse": coarse},
                                instrument="tosca")
    _, _, width = _moments(E_FINE, out["line"].intensity)
    assert width == pytest.approx(float(tosca_polynomial_sigma(E0)), rel=1e-8)
    assert np.array_equal(out["meas"].intensity, meas.intensity)
    assert np.array_equal(out["coarse"].intensity, coarse.intensity)
    assert "coarser" in rec["spectra"]["coarse"]["note"]
    same, rec = match_resolution({"meas": meas, "line": _line()})   # no resolution known
    assert np.array_equal(same["line"].intensity, _line().intensity)
    assert rec["target"].startswith("none")


def test_own_resolution_reads_what_the_routes_record():
    e = np.array([10.0, 50.0])
    fw = FWHM_PER_SIGMA

    def sigma(**kw):
        return own_resolution(_line(**kw)).sigma_meV(e)

    np.testing.assert_allclose(sigma(provenance={"fwhm_meV": 1.2}), 1.2 / fw, rtol=1e-12)
    np.testing.assert_allclose(sigma(provenance={"resolution_model": "Gaussian, FWHM 2 meV"}),
                               2.0 / fw, rtol=1e-12)
    prov = {"resolution_model": "Gaussian, FWHM 0.03 x Ei = 1.5 meV", "ei_meV": 50.0,
            "resolution_fwhm_fraction": 0.03}
    np.testing.assert_allclose(sigma(provenance=prov), 1.5 / fw, rtol=1e-12)
    both = sigma(instrument="vision", provenance={"resolution_fwhm_meV": 0.4})
    np.testing.assert_allclose(both, np.hypot(tosca_polynomial_sigma(e), 0.4 / fw), rtol=1e-8)
    assert own_resolution(_line()) is None
    assert own_resolution(_line(provenance={"fwhm_meV": None})) is None


def test_own_resolution_rebuilds_a_chopper_model():
    pytest.importorskip("resins")
    from mlff_ins.neutron.resolution import chopper_resolution

    mari = chopper_resolution("mari", 100.0, 250, "A")
    got = own_resolution(_line(kind="sqe", instrument="mari",
                               provenance={**mari.provenance(), "ei_meV": 100.0}))
    e = np.array([5.0, 25.0, 60.0])
    np.testing.assert_allclose(got.sigma_meV(e), mari.sigma_meV(e), rtol=1e-12)
