"""`mlff-ins compare` and `mlff-ins export` end to end: the phonon and MD routes of one harmonic
crystal (EMT Cu at 10 K), a measurement made from a known scale and background, and a 2D
measurement with a low-Q "magnetic" signal that the residual must give back."""

import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.constraints import FixCom
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from mlff_ins.cli import main
from mlff_ins.compare.align import resample
from mlff_ins.compare.export import export_mantid_ascii
from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D, read_spectra, write_spectra
from mlff_ins.neutron.units import MEV_PER_INVCM
from mlff_ins.phonons.finite_displacement import phonons_from_model
from mlff_ins.predict.database import _AseMembers


@pytest.fixture(scope="module")
def cu_routes(tmp_path_factory):
    """VISION S(E) of fcc Cu (EMT, 10 K) from phonons on the Γ-centred 2x2x2 mesh of the cubic
    cell and from NVE MD of the 2x2x2 cubic supercell, which samples exactly those q-points."""
    tmp = tmp_path_factory.mktemp("cu")
    unit = bulk("Cu", "fcc", a=3.59, cubic=True)
    pset = phonons_from_model(unit, _AseMembers(EMT()), [2, 2, 2], primitive="P")
    ph = tmp / "phonons.h5"
    write_spectra(ph, ins_from_phonons(pset, InsOptions(
        instrument="vision", temperature_K=10, mesh=[2, 2, 2], e_max_meV=60, e_step_meV=0.1,
        two_d=True, q_max=8.0, q_step=0.2, e_max_2d_meV=40.0, e_step_2d_meV=1.0,
        n_directions=20, fwhm_2d_meV=2.0)))
    atoms = unit.repeat((2, 2, 2))
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=20, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.set_constraint(FixCom())                  # the cell at rest, as a sample is
    Langevin(atoms, 5 * units.fs, temperature_K=10, friction=2e-3 / units.fs, fixcm=False,
             rng=np.random.default_rng(1)).run(400)
    dyn = VelocityVerlet(atoms, 5 * units.fs)       # NVE: no thermostat width on the lines
    frames = []

    def grab():
        a = atoms.copy()
        a.set_velocities(atoms.get_velocities())
        frames.append(a)

    dyn.attach(grab, interval=2)
    dyn.run(1600)
    write(tmp / "md.extxyz", frames)
    md = tmp / "md.h5"
    assert main(["spectra", str(tmp / "md.extxyz"), "--dt", "10", "--instrument", "vision",
                 "-T", "10", "-o", str(md)]) == 0
    return tmp, ph, md


def test_phonon_and_md_routes_agree(cu_routes, capsys):
    """Every peak of one route is found in the other within one bin of the common grid (the MD
    grid, 0.52 meV); MSE of the max-normalised spectra below 0.05, the predictor's target, which
    two routes of one potential must beat (measured here: 0.004)."""
    tmp, ph, md = cu_routes
    out = tmp / "report"
    assert main(["compare", str(ph), str(md), "-o", str(out), "--label", "phonons",
                 "--label", "MD"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    (pair,) = doc["pairs"]
    first, last, n = doc["grid"]["energy_meV"]
    bin_meV = (last - first) / (n - 1)
    peaks = pair["peaks"]
    assert len(peaks["matched"]) >= 4 and not peaks["unmatched_a"]
    assert np.all(np.abs(peaks["shifts_meV"]) <= bin_meV)
    assert pair["mse"] < 0.05
    # the MD spectrum's correlation-window width was matched: the phonon one was broadened
    assert doc["resolution"]["spectra"]["phonons"]["broadened"]
    assert not doc["resolution"]["spectra"]["MD"]["broadened"]
    report = (out / "report.md").read_text()
    assert "| phonons | MD |" in report and (out / "compare.png").stat().st_size > 10_000
    assert "peak shifts" in capsys.readouterr().out
    # absolute intensities (barn/(sr meV) per atom), not only the max-normalised shapes: one
    # crystal's S(E) has one area by either route, within 5 %
    s_ph, s_md = read_spectra(ph)["s_e"], read_spectra(md)["s_e"]
    area_ph, area_md = (np.trapezoid(s.intensity, s.x) for s in (s_ph, s_md))
    assert area_md == pytest.approx(area_ph, rel=0.05)
    # also from a short correlation window (200 fs: bins of 10 meV, 25-30 times VISION's σ at
    # 10-30 meV, where a kernel sampled at the bin centres had multiplied the area by 9.4)
    short = tmp / "md_short.h5"
    assert main(["spectra", str(tmp / "md.extxyz"), "--dt", "10", "--instrument", "vision",
                 "-T", "10", "--time-window", "200", "-o", str(short)]) == 0
    s_short = read_spectra(short)["s_e"]
    assert np.trapezoid(s_short.intensity, s_short.x) == pytest.approx(area_ph, rel=0.05)


def test_measurement_with_scale_and_background(cu_routes, tmp_path):
    """A 'measurement' = 3.7 x the phonon S(E) + 0.02 + 0.001 E (per meV), written in cm^-1 in
    Mantid's ASCII layout: the fit gives the scale and background back and χ² ≈ 0."""
    _, ph, _ = cu_routes
    s = read_spectra(ph)["s_e"]
    y = 3.7 * s.intensity + 0.02 + 0.001 * s.x
    meas = Spectrum1D(kind="s_e", x=s.x, intensity=y, intensity_std=0.01 + 0.01 * y,
                      source="measured", units="counts")
    export_mantid_ascii({"vision": meas}, tmp_path, unit="cm-1")
    (txt,) = tmp_path.glob("*.txt")
    out = tmp_path / "report"
    assert main(["compare", f"{ph}:s_e", "--measured", str(txt), "--background", "linear",
                 "-o", str(out), "--unit", "cm-1"]) == 0
    fit = json.loads((out / "metrics.json").read_text())["pairs"][0]["fit"]
    # the file holds 17 significant digits: exact to rounding
    assert fit["scale"] == pytest.approx(3.7, rel=1e-9)
    assert fit["background"] == pytest.approx([0.02, 0.001], rel=1e-6, abs=1e-10)
    assert fit["chi2_per_dof"] < 1e-12


def test_a_two_column_measurement_is_compared_and_fitted(cu_routes, tmp_path, capsys):
    """A measurement as two columns (energy in cm⁻¹, intensity; no error bars, a header line):
    compared and fitted with equal weights (it stopped with "fit: 0 points with a usable σ");
    the report and the printed line say there were no error bars."""
    _, ph, _ = cu_routes
    s = read_spectra(ph)["s_e"]
    sel = s.x > 2.0
    txt = tmp_path / "measured.dat"
    np.savetxt(txt, np.column_stack([s.x[sel] / MEV_PER_INVCM, 2.5 * s.intensity[sel] + 0.01]),
               header="energy (cm-1)  intensity")
    out = tmp_path / "report"
    assert main(["compare", f"{ph}:s_e", "--measured", str(txt), "--measured-unit", "cm-1",
                 "--background", "flat", "-o", str(out)]) == 0
    assert "equal weights (no error bars)" in capsys.readouterr().out
    fit = json.loads((out / "metrics.json").read_text())["pairs"][0]["fit"]
    assert fit["weights"] == "equal" and fit["scale"] == pytest.approx(2.5, rel=1e-6)
    assert fit["background"] == pytest.approx([0.01], rel=1e-4)
    assert "no error bars" in (out / "report.md").read_text()


def test_residual_gives_back_a_low_q_signal(cu_routes, tmp_path):
    """Measured S(Q,E) = 2.5 x phonons + a Gaussian 'magnon' at Q < 2 1/Å: fitting the scale at
    high Q and subtracting leaves the magnon (to the rounding of the file) and nothing else."""
    _, ph, _ = cu_routes
    calc = read_spectra(ph)["sqe"]
    qq, ee = np.meshgrid(calc.q, calc.y, indexing="ij")
    magnon = 0.05 * np.exp(-0.5 * ((qq - 1.0) / 0.3) ** 2 - 0.5 * ((ee - 12.0) / 1.5) ** 2)
    y = 2.5 * calc.intensity + magnon
    meas = Spectrum2D(kind="sqe", q=calc.q, y=calc.y, intensity=y,
                      intensity_std=1e-3 + 0.01 * np.abs(y), source="measured")
    export_mantid_ascii({"magnet": meas}, tmp_path, unit="meV")
    (txt,) = tmp_path.glob("*.txt")
    out = tmp_path / "report"
    assert main(["compare", f"{ph}:sqe", "--measured", str(txt), "--kind", "sqe",
                 "--residual", "--residual-q-min", "4", "-o", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["residual"]["scale"] == pytest.approx(2.5, rel=1e-9)
    res = read_spectra(out / "residual.h5")["residual"]
    np.testing.assert_allclose(res.intensity, magnon, atol=1e-12)
    assert (out / "residual.png").is_file() and (out / "compare.png").is_file()


def test_bin_mean_keeps_the_area_of_a_narrow_line():
    """A line one fine bin wide, resampled onto bins five times coarser, keeps its area (the
    running integral is exact for piecewise-linear data: 1e-12), where point sampling would
    miss it or multiply it."""
    e = np.arange(0, 50.0001, 0.1)
    y = np.where(np.isclose(e, 20.3), 10.0, 0.0)
    sp = Spectrum1D(kind="s_e", x=e, intensity=y, source="phonons")
    out = resample(sp, np.arange(0.0, 50.0001, 0.5))
    assert np.nansum(out.intensity) * 0.5 == pytest.approx(np.sum(y) * 0.1, rel=1e-12)


def test_bin_mean_keeps_a_masked_region_local():
    """A NaN region (S(Q,E) masked outside a direct-geometry spectrometer's reach) makes NaN
    only the coarse bins that touch it; every other bin equals the bin mean without the NaNs
    (before, the running integral carried one NaN to every later bin)."""
    e = np.arange(0, 100.0001, 0.5)
    y = 2 + np.sin(e / 10)
    masked = y.copy()
    masked[:5] = np.nan                      # 0-2 meV
    masked[100] = np.nan                     # 50 meV
    grid = np.linspace(0, 100, 18)           # 5.9 meV bins
    ref = resample(Spectrum1D(kind="s_e", x=e, intensity=y), grid).intensity
    out = resample(Spectrum1D(kind="s_e", x=e, intensity=masked), grid).intensity
    half = 0.5 * (grid[1] - grid[0])
    near = (grid - half <= 2.0 + 1e-9) | (np.abs(grid - 50.0) <= half + 0.5 + 1e-9)
    assert np.isnan(out[near]).all()
    np.testing.assert_allclose(out[~near], ref[~near], rtol=1e-12)
    assert (~near).sum() >= 14


def test_bad_inputs_are_one_line_errors(cu_routes, tmp_path, capsys):
    _, ph, md = cu_routes
    measured = tmp_path / "measured.csv"
    measured.write_text("# energy (meV), intensity\n10,1\n20,2\n30,1\n")
    cases = [
        ([str(ph), "-o", str(tmp_path / "a")], "at least two spectra"),
        ([f"{ph}:nope", str(md), "-o", str(tmp_path / "b")], "no group nope"),
        ([str(ph), str(md), "--kind", "gdos", "-o", str(tmp_path / "c")], "no spectrum of kind"),
        ([str(ph), str(md), "--residual", "-o", str(tmp_path / "d")], "--residual needs"),
        ([str(ph), str(md), "--label", "x", "-o", str(tmp_path / "e")],
         "--label given 1 times for 2 inputs"),
        # a measurement given where the calculated files go
        ([str(ph), str(measured), "-o", str(tmp_path / "f")],
         f"{measured}: not a spectra file of mlff-ins (HDF5 from phonons/ins, spectra or "
         f"predict); give a measured file after --measured"),
    ]
    for argv, text in cases:
        capsys.readouterr()
        assert main(["compare", *argv]) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.strip().splitlines()) == 1, err


def test_csv_header_says_the_incident_energy_and_what_the_band_is(tmp_path):
    from mlff_ins.compare.export import export_csv

    band = "standard error of the mean over 4 consecutive blocks"
    sp = Spectrum1D(kind="s_e", x=np.linspace(0, 10, 5), intensity=np.ones(5),
                    intensity_std=np.full(5, 0.1), provenance={"ei_meV": 80.0,
                                                               "intensity_std": band})
    plain = Spectrum1D(kind="vdos", x=np.linspace(0, 10, 5), intensity=np.ones(5))
    a, b = export_csv({"s_e": sp, "vdos": plain}, tmp_path)
    text = a.read_text()
    assert "# ei_meV: 80.0\n" in text and f"# intensity_std: {band}\n" in text
    assert "ei_meV" not in b.read_text() and "# intensity_std:" not in b.read_text()


def test_export_command_writes_csv_and_mantid_ascii(cu_routes, tmp_path, capsys):
    _, ph, _ = cu_routes
    assert main(["export", str(ph), "--csv", str(tmp_path / "csv"), "--mantid-ascii",
                 str(tmp_path / "mantid"), "--unit", "cm-1"]) == 0
    spectra = read_spectra(ph)
    assert len(list((tmp_path / "csv").iterdir())) == len(spectra)
    assert len(list((tmp_path / "mantid").iterdir())) == len(spectra)
    text = (tmp_path / "csv" / "s_e.csv").read_text()
    assert "cm-1" in text
    data = np.loadtxt(tmp_path / "csv" / "s_e.csv", delimiter=",", comments="#")
    np.testing.assert_allclose(data[:, 0], spectra["s_e"].x * 8.065543937, rtol=1e-8)


def test_uneven_grids_average_over_their_own_bins():
    """A log grid (ΔE/E = 2 %, 5-200 meV: bins 0.1-4 meV): each point is the mean over its own
    bin (between the midpoints to its neighbours), so a line 0.3 meV wide at 150 meV keeps its
    area to 1e-9 (the bin sums of a piecewise-linear spectrum are exact), where one width for
    every bin (the median, 0.6 meV) kept 39 % of it (93 % at 151.3 meV)."""
    e = np.arange(0, 250.0001, 0.05)
    y = np.exp(-0.5 * ((e - 150.0) / 0.3) ** 2) / (0.3 * np.sqrt(2 * np.pi))
    grid = 5.0 * 1.02 ** np.arange(187)                        # 5 .. 200 meV
    out = resample(Spectrum1D(kind="s_e", x=e, intensity=y, source="phonons"), grid).intensity
    mid = 0.5 * (grid[1:] + grid[:-1])
    widths = np.diff(mid)                                      # the interior points' bins
    assert np.sum(out[1:-1] * widths) == pytest.approx(1.0, rel=1e-9)


def test_a_measured_spectrum_keeps_its_own_values_on_its_own_points():
    """Resampled onto a run of its own energies (what `compare` does with a measurement, clipped
    to the calculations' range), a measured spectrum on an uneven grid keeps every value and
    error bar: it is not smoothed by bins of the clipped grid."""
    grid = 5.0 * 1.02 ** np.arange(187)
    rng = np.random.default_rng(1)
    meas = Spectrum1D(kind="s_e", x=grid, intensity=rng.random(187),
                      intensity_std=0.1 * rng.random(187), source="measured")
    out = resample(meas, grid[150:])
    np.testing.assert_array_equal(out.intensity, meas.intensity[150:])
    np.testing.assert_array_equal(out.intensity_std, meas.intensity_std[150:])


def test_a_spectrum_in_energy_gain_gets_a_hint():
    """A measurement whose energies are all 0 or below (neutron energy gain as positive, or
    the other sign convention) shares no range with a calculation: the error says why."""
    from mlff_ins.compare.align import common_grid
    from mlff_ins.errors import InputError

    e = np.linspace(1.0, 50.0, 50)
    calc = Spectrum1D(kind="s_e", x=e, intensity=np.exp(-(e - 20) ** 2), units="arb.")
    gain = Spectrum1D(kind="s_e", x=-e[::-1], intensity=np.ones(50), units="arb.")
    with pytest.raises(InputError, match="share no energy range .* energy gain\\? this "
                                         "package counts energy transfer positive"):
        common_grid([calc, gain])


def test_a_measurement_in_the_energy_gain_convention_is_fitted_with_the_flag(cu_routes,
                                                                              tmp_path, capsys):
    """The same measurement written with the energy-gain sign (energies negated): refused with
    the hint that names the option, then fitted with --measured-energy-gain as the plain file
    is (scale 2.5, background 0.01)."""
    _, ph, _ = cu_routes
    s = read_spectra(ph)["s_e"]
    sel = s.x > 2.0
    txt = tmp_path / "gain.dat"
    np.savetxt(txt, np.column_stack([-s.x[sel][::-1], 2.5 * s.intensity[sel][::-1] + 0.01]),
               header="energy (meV)  intensity")
    out = tmp_path / "report"
    assert main(["compare", f"{ph}:s_e", "--measured", str(txt), "-o", str(out)]) == 2
    assert "--measured-energy-gain negates" in capsys.readouterr().err
    assert main(["compare", f"{ph}:s_e", "--measured", str(txt), "--measured-energy-gain",
                 "--background", "flat", "-o", str(out)]) == 0
    fit = json.loads((out / "metrics.json").read_text())["pairs"][0]["fit"]
    assert fit["scale"] == pytest.approx(2.5, rel=1e-6)
    assert fit["background"] == pytest.approx([0.01], rel=1e-4)
