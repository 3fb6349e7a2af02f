"""Instrument resolution: TOSCA's AbINS polynomial by hand, the chopper spectrometers' widths
equal to ResINS' own, broadening that gives those widths, and the `ins` options around them."""

from pathlib import Path

import numpy as np
import pytest

from mlff_ins.cli import main
from mlff_ins.errors import InputError
from mlff_ins.neutron import resolution as res_mod
from mlff_ins.neutron.instruments import get_instrument
from mlff_ins.neutron.resolution import (FWHM_PER_SIGMA, chopper_resolution, constant_fwhm,
                                         direct_resolution, indirect_resolution)

resins = pytest.importorskip("resins")  # in the test extra; the package works without it
DATA = Path(__file__).parent / "data" / "phonopy"


def test_tosca_width_is_the_abins_polynomial_by_hand():
    """σ = 2.5 + 0.005 w + 1e-7 w² cm⁻¹, w = E / 0.1239841984 meV: at E = 0, σ = 2.5 cm⁻¹ =
    0.309960 meV; at E = 100 meV, w = 806.5544 cm⁻¹, σ = 2.5 + 4.032772 + 0.065053 =
    6.597825 cm⁻¹ = 0.818027 meV (worked by hand, 6 digits)."""
    tosca = indirect_resolution("tosca")
    np.testing.assert_allclose(tosca.sigma_meV([0.0, 100.0]), [0.309960, 0.818027], rtol=2e-6)
    assert "Dymkowski" in " ".join(tosca.citation)
    vision = indirect_resolution("vision")
    assert "approximation" in vision.provenance()["resolution_note"]


def test_tosca_fallback_without_resins_is_the_same_polynomial(monkeypatch):
    e = np.array([1.0, 10.0, 50.0, 100.0, 200.0, 500.0])
    with_resins = indirect_resolution("tosca").sigma_meV(e)
    monkeypatch.setattr(res_mod, "_resins", lambda: None)
    res_mod.indirect_resolution.cache_clear()
    try:
        fallback = res_mod.indirect_resolution("tosca")
        np.testing.assert_allclose(fallback.sigma_meV(e), with_resins, rtol=1e-9)
        with pytest.raises(InputError, match="needs ResINS"):
            chopper_resolution("mari", 100.0)
    finally:
        res_mod.indirect_resolution.cache_clear()


@pytest.mark.parametrize("name, rname, ei, freq_key, freq, package", [
    ("mari", "MARI", 100.0, "chopper_frequency", 250, "A"),
    ("sequoia", "SEQUOIA", 60.0, "chopper_frequency", 120, "High-Resolution"),
    ("let", "LET", 10.0, "resolution_frequency", 240, "High Resolution"),
    ("cncs", "CNCS", 12.0, "resolution_disk_frequency", 300, None),
])
def test_chopper_widths_equal_resins(name, rname, ei, freq_key, freq, package):
    ours = chopper_resolution(name, ei, freq, package)
    kwargs = {"e_init": ei, freq_key: freq, **({"chopper_package": package} if package else {})}
    model = resins.Instrument.from_default(rname).get_resolution_function(None, **kwargs)
    e = np.array([0.05, 0.25, 0.5, 0.75]) * ei
    np.testing.assert_allclose(ours.sigma_meV(e),
                               model.get_characteristics(e[:, None])["sigma"], rtol=1e-12)
    assert ours.citation == list(model.citation)


def test_broadening_a_line_gives_the_model_width():
    """A line at 40 meV on MARI (Ei 100 meV, A, 250 Hz) comes out with the model's FWHM at
    40 meV and its area kept. The half-maximum crossings are interpolated linearly between
    0.01 meV bins, good to ~0.1% of a 1.7 meV width."""
    mari = chopper_resolution("mari", 100.0, 250, "A")
    e = np.arange(0.0, 99.0, 0.01)
    line = np.zeros_like(e)
    line[4000] = 1.0 / 0.01
    b = mari.broaden(e, line)
    assert b.sum() * 0.01 == pytest.approx(1.0, rel=1e-9)
    half = b.max() / 2
    i = np.flatnonzero(b >= half)
    lo, hi = i[0], i[-1]
    left = np.interp(half, [b[lo - 1], b[lo]], [e[lo - 1], e[lo]])
    right = np.interp(half, [b[hi + 1], b[hi]], [e[hi + 1], e[hi]])
    assert right - left == pytest.approx(float(mari.fwhm_meV(40.0)[0]), rel=1e-3)


def test_broadening_keeps_the_area_on_grids_coarser_than_the_resolution():
    """VISION's σ at 10-60 meV is 0.3-0.5 meV; an MD spectrum of a short run may have bins of
    4 meV. The broadened spectrum keeps its area to 1e-12 on any grid (a kernel sampled at the
    bin centres and normalised as a continuous Gaussian multiplied it by 2.85 on the 4 meV grid),
    and on bins 20σ wide the spectrum is left as it is (a neighbouring bin gets exp(−200) of
    it)."""
    inst = get_instrument("vision")
    for de in (0.01, 0.1, 1.0, 4.0):
        e = np.arange(0.0, 100.0 + de / 2, de)
        y = np.exp(-((e - 50.0) / 10.0) ** 2)
        b = inst.broaden(e, y)
        assert np.trapezoid(b, e) == pytest.approx(np.trapezoid(y, e), rel=1e-12)
    e = np.arange(0.0, 100.0, 4.0)
    y = np.exp(-((e - 50.0) / 10.0) ** 2)
    assert np.allclose(constant_fwhm(0.2 * FWHM_PER_SIGMA).broaden(e, y), y, rtol=1e-12, atol=0)


def test_banded_kernel_equals_the_dense_sum():
    """broaden_variable spreads each chunk of source bins only over the target bins within 39 σ:
    equal to the plain dense sum over every pair of bins, Σ_E' y(E') exp(−(E−E')²/2σ(E')²) /
    norm(E'), to rounding, on VISION's fine grid (σ 0.1-1.5 meV) and on a grid with a σ wider
    than the spectrum, for increasing and decreasing energies and several spectra at once."""
    from mlff_ins.neutron.resolution import broaden_variable, lattice_norm

    rng = np.random.default_rng(4)
    for e, sigma in ((np.arange(0.0, 250.0, 0.05), None),
                     (np.linspace(-20.0, 20.0, 301), np.full(301, 30.0))):
        sigma = indirect_resolution("vision").sigma_meV(np.abs(e)) if sigma is None else sigma
        y = rng.random((3, len(e)))
        for order in (slice(None), slice(None, None, -1)):
            ee, ss, yy = e[order], sigma[order], y[:, order]
            kernel = np.exp(-0.5 * ((ee[:, None] - ee[None, :]) / ss[None, :]) ** 2)
            dense = yy @ (kernel / lattice_norm(ss / abs(ee[1] - ee[0]))[None, :]).T
            got = broaden_variable(ee, yy, ss)
            assert np.abs(got - dense).max() <= 1e-13 * np.abs(dense).max()


def test_settings_that_would_be_ignored_are_refused():
    with pytest.raises(InputError, match="needs --ei"):
        direct_resolution("mari", None)
    with pytest.raises(InputError, match="--resolution"):
        direct_resolution("mari", 100.0, fraction=0.03)
    with pytest.raises(InputError, match="--chopper-frequency needs a named"):
        direct_resolution("direct", 100.0, chopper_frequency_hz=250)
    with pytest.raises(InputError, match="--resolution applies to direct geometry with --ei"):
        direct_resolution("direct", None, fraction=0.03)
    with pytest.raises(InputError, match="one of the following values"):
        chopper_resolution("mari", 100.0, 255)
    with pytest.raises(InputError, match="--chopper-package Q: MARI has A, B"):
        chopper_resolution("mari", 100.0, 250, "Q")
    assert direct_resolution("direct", 100.0, fraction=0.03).fwhm_meV(7.0)[0] == \
        pytest.approx(3.0)
    assert FWHM_PER_SIGMA == pytest.approx(2.3548200, rel=1e-7)


def test_ins_on_a_chopper_spectrometer(tmp_path, capsys):
    from mlff_ins.neutron.spectrum import read_spectra

    ph5 = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(DATA / "MgO"), "--mesh", "4", "4", "4",
                 "-o", str(ph5)]) == 0
    out = tmp_path / "mari.h5"
    assert main(["ins", str(ph5), "--instrument", "mari", "--ei", "100", "--chopper-frequency",
                 "250", "--chopper-package", "A", "--mesh", "4", "4", "4", "--directions", "10",
                 "--q-max", "8", "--e-max-2d", "110", "-o", str(out)]) == 0
    sp = read_spectra(out)["sqe"]
    assert sp.instrument == "mari"
    assert sp.provenance["resolution_model"].startswith("MARI PyChop model (ResINS")
    assert np.isnan(sp.intensity[:, sp.y >= 100.0]).all()       # E ≥ Ei is out of reach
    capsys.readouterr()
    assert main(["ins", str(ph5), "--instrument", "mari", "-o", str(tmp_path / "x.h5")]) == 2
    assert "--instrument mari needs --ei" in capsys.readouterr().err
    assert main(["ins", str(ph5), "--instrument", "direct", "--ei", "100", "--fwhm", "2",
                 "-o", str(tmp_path / "x.h5")]) == 2
    assert "--fwhm" in capsys.readouterr().err


def test_a_kernel_wider_than_the_spectrum(tmp_path):
    """A FWHM far wider than the energy range spreads the intensity past both ends: the shape
    is kept, the values stay finite, and what remains on the grid is the Gaussian's share
    (here the fraction of a σ = 212 meV Gaussian centred in a 20 meV window, < 5 %)."""
    from mlff_ins.neutron.resolution import constant_fwhm

    e = np.arange(0.0, 20.0, 0.5)
    y = np.ones((3, len(e)))
    out = constant_fwhm(500.0).broaden(e, y)
    assert out.shape == y.shape and np.isfinite(out).all()
    kept = out.sum(axis=1) / y.sum(axis=1)
    assert np.all(kept < 0.05) and np.all(kept > 0)
    ph5 = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(DATA / "MgO"), "--mesh", "4", "4", "4",
                 "-o", str(ph5)]) == 0
    assert main(["ins", str(ph5), "--2d", "--fwhm", "500", "--e-max-2d", "20", "--mesh", "4",
                 "4", "4", "--directions", "5", "--q-max", "3", "-o",
                 str(tmp_path / "wide.h5")]) == 0
