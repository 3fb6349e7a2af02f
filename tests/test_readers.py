"""Readers of measured data: synthetic files in each layout, written here (no third-party data).

Tolerances: values that pass through text with 17 significant digits or through HDF5 float64
unchanged are compared with ``rtol=1e-12`` (a few float64 roundings, ~1e-16 each, from a unit
conversion or a bin-centre average); physical constants quoted to a given number of digits are
compared at that precision, as stated next to each check.
"""

import warnings

import h5py
import numpy as np
import pytest

from mlff_ins.compare.readers import (MEV_PER_UNIT, convert_energy, energy_to_meV, pixel_q,
                                      powder_sqe, read_measured)
from mlff_ins.errors import InputError
from mlff_ins.neutron.kinematics import E_PER_K2
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

RTOL = 1e-12  # float64 through text (repr) or HDF5, plus a few roundings of ~1e-16


def _write(path, text):
    path.write_text(text)
    return path


def _rows(x, *cols, sep=","):
    return "\n".join(sep.join(repr(float(v)) for v in row) for row in zip(x, *cols)) + "\n"


# --- units -----------------------------------------------------------------------------------


def test_unit_constants_follow_the_si_definitions():
    # h = 6.62607015e-34 J s, c = 299792458 m/s and e = 1.602176634e-19 C are exact in the SI;
    # the stored constants have 10 significant digits, so they agree to 1e-9 relative
    mev = 1.602176634e-22
    assert MEV_PER_UNIT["cm-1"] == pytest.approx(6.62607015e-34 * 299792458 * 100 / mev,
                                                 rel=1e-9)
    assert MEV_PER_UNIT["THz"] == pytest.approx(6.62607015e-34 * 1e12 / mev, rel=1e-9)
    # the factors as usually quoted, at their precision: 1 meV = 8.065544 cm-1 and
    # 0.2417990 THz (7 decimals: a tolerance of one unit in the last place)
    assert convert_energy(1.0, "cm-1") == pytest.approx(8.065544, abs=1e-6)
    assert convert_energy(1.0, "THz") == pytest.approx(0.2417990, abs=1e-7)
    x = np.array([0.5, 12.0, 250.0])
    for unit in ("meV", "cm-1", "THz", "CM-1", "cm^-1", "DeltaE_inWavenumber"):
        assert np.allclose(energy_to_meV(convert_energy(x, unit), unit), x, rtol=RTOL, atol=0)
    with pytest.raises(InputError, match="'K' is not an energy unit"):
        convert_energy(x, "K")


# --- ISIS INS database / aCLIMAX .dat ----------------------------------------------------------


def test_isis_dat_in_wavenumbers_comes_back_in_meV(tmp_path):
    x = np.linspace(16.0, 1600.0, 397)
    x[200] = 806.5544  # a peak at 806.5544 cm-1 = 100 meV
    y = 1e-10 * (1 + 50 * np.exp(-0.5 * ((x - 806.5544) / 8.0) ** 2))
    e = np.sqrt(y) * 1e-5
    path = _write(tmp_path / "acetonitrile.dat",
                  "ACETONITRILE Ref: J.CS. Farad.Trans. 87 (1991) 539.\n"
                  "C (CM-1) COUNTS ERROR\n" + _rows(x, y, e, sep="  "))
    out = read_measured(path)
    assert list(out) == ["s_e"]
    sp = out["s_e"]
    assert isinstance(sp, Spectrum1D) and sp.kind == "s_e" and sp.source == "measured"
    # 1 meV = 8.065544 cm-1 is quoted to 7 significant figures: 100 meV to 1e-7 relative
    assert sp.x[np.argmax(sp.intensity)] == pytest.approx(100.0, rel=1e-7)
    assert np.allclose(sp.x, x * MEV_PER_UNIT["cm-1"], rtol=RTOL, atol=0)
    assert np.allclose(sp.intensity, y, rtol=RTOL, atol=0)
    assert np.allclose(sp.intensity_std, e, rtol=RTOL, atol=0)
    p = sp.provenance
    assert p["format"] == "isis_dat" and p["energy_unit_in_file"] == "cm-1"
    assert p["file"] == str(path) and len(p["sha256"]) == 64 and p["x_bins"] == "centres"
    assert sp.units == "arb. units"


def test_two_column_dat_has_unknown_errors(tmp_path):
    x = np.array([10.0, 20.0, 30.0, 40.0])
    path = _write(tmp_path / "two.dat", "benzene\nEnergy (meV)   S\n" + _rows(x, x ** 2,
                                                                          sep=" "))
    sp = read_measured(path)["s_e"]
    assert np.allclose(sp.x, x, rtol=RTOL, atol=0)
    assert np.all(np.isnan(sp.intensity_std))


def test_a_unit_option_that_contradicts_the_file_is_refused(tmp_path):
    """The file's header says cm⁻¹: --measured-unit meV would read every energy 8 times too
    high, so it is refused naming the line; the unit the file names, or none, is accepted."""
    x = np.array([100.0, 200.0, 300.0, 400.0])
    path = _write(tmp_path / "m.dat", "Energy (cm-1)   S\n" + _rows(x, x ** 2, sep=" "))
    with pytest.raises(InputError, match="--measured-unit meV .* contradicts the file, whose "
                                         "line 1 says cm-1"):
        read_measured(path, unit="meV")
    assert np.allclose(read_measured(path, unit="cm-1")["s_e"].x, x * MEV_PER_UNIT["cm-1"])
    bare = _write(tmp_path / "bare.dat", _rows(x, x ** 2, sep=" "))
    assert np.allclose(read_measured(bare, unit="meV")["s_e"].x, x)
    with pytest.raises(InputError, match="--measured-unit"):
        read_measured(bare)


# --- Mantid SaveAscii v2 -----------------------------------------------------------------------


def test_mantid_ascii_v2_with_unit_comment_and_bin_edges(tmp_path):
    edges = np.arange(0.0, 11.0)  # 10 bins of 1 meV
    y, e = np.arange(1.0, 11.0), np.full(10, 0.5)
    block = _rows(edges[:-1], y, e)
    path = _write(tmp_path / "v2.txt", "# X unit: meV\n# X , Y , E\n1\n" + block
                  + f"{float(edges[-1])!r}\n")
    sp = read_measured(path)["s_e"]
    assert np.allclose(sp.x, edges[:-1] + 0.5, rtol=RTOL, atol=0)
    assert np.allclose(sp.intensity, y, rtol=RTOL) and np.allclose(sp.intensity_std, e)
    assert sp.provenance["format"] == "mantid_ascii_v2"
    assert sp.provenance["x_bins"].startswith("edges (last row x only)")
    # the same numbers without the unit comment: refused, unless unit= says it
    bare = _write(tmp_path / "bare.txt", "# X , Y , E\n1\n" + block)
    with pytest.raises(InputError, match=r"bare.txt: no energy unit.*unit="):
        read_measured(bare)
    sp = read_measured(bare, unit="cm-1")["s_e"]
    assert np.allclose(sp.x, edges[:-1] * MEV_PER_UNIT["cm-1"], rtol=RTOL, atol=0)
    assert sp.provenance["energy_unit_from"] == "unit= keyword"
    with pytest.raises(InputError, match=r"bare.txt: unit= 'K' is not an energy unit"):
        read_measured(bare, unit="K")


def test_mantid_ascii_v2_blocks_select_banks(tmp_path):
    x = np.linspace(1.0, 50.0, 8)
    text = "# Energy transfer (cm-1)\n# X , Y , E\n"
    for number in (1, 2, 3):
        text += f"{number}\n" + _rows(x, number * x, np.full(8, 0.1 * number))
    path = _write(tmp_path / "vision.txt", text)
    out = read_measured(path)
    assert list(out) == ["s_e"]
    assert np.allclose(out["s_e"].intensity, 3 * x, rtol=RTOL)  # default: the average bank
    assert out["s_e"].provenance["bank"] == "average"
    assert "default" in out["s_e"].provenance["bank_choice"]
    back = read_measured(path, bank="backward")["s_e"]
    assert np.allclose(back.intensity, x, rtol=RTOL) and back.provenance["spectrum_number"] == 1
    assert np.allclose(read_measured(path, bank=1)["s_e"].intensity, 2 * x, rtol=RTOL)
    assert list(read_measured(path, bank="all")) == ["s_e_backward", "s_e_forward",
                                                     "s_e_average"]
    with pytest.raises(InputError, match=r"vision.txt: bank 3 is out of range.*3 spectra"):
        read_measured(path, bank=3)
    with pytest.raises(InputError, match=r"vision.txt: no bank 'sideways'"):
        read_measured(path, bank="sideways")


# --- Mantid SaveAscii v1 -----------------------------------------------------------------------


def test_mantid_ascii_v1_column_pairs_and_a_trailing_zero_row(tmp_path):
    """SaveAscii v1 writes a row per bin at its centre (Mantid's SaveAscii.cpp writes the
    workspace's points): a last row with y = e = 0 is an empty bin, with a warning naming the
    option that reads it as a closing bin edge instead, which then gives the bin centres."""
    edges = np.linspace(0.0, 400.0, 9)  # 8 bins, in cm-1
    ys = [np.arange(1.0, 9.0) * k for k in (1, 2, 3)]
    es = [np.full(8, 0.01 * k) for k in (1, 2, 3)]
    cols = []
    for y, e in zip(ys, es):
        cols += [np.append(y, 0.0), np.append(e, 0.0)]  # a last row with y = e = 0
    path = _write(tmp_path / "v1.dat", "# X unit: cm-1\n#X , Y0 , E0 , Y1 , E1 , Y2 , E2\n"
                  + _rows(edges, *cols, sep=" , "))
    with pytest.warns(UserWarning, match="v1.dat: .*the last row has y = e = 0.*--measured-x "
                                         "edges"):
        kept = read_measured(path, bank="all")
    assert len(kept) == 3
    for sp in kept.values():
        assert sp.provenance["format"] == "mantid_ascii_v1"
        assert sp.provenance["x_bins"] == "centres" and len(sp.x) == 9
        assert sp.x[-1] == pytest.approx(400.0 * MEV_PER_UNIT["cm-1"])
    out = read_measured(path, bank="all", x_edges=True)
    centres_meV = 0.5 * (edges[:-1] + edges[1:]) * MEV_PER_UNIT["cm-1"]
    for sp, y, e in zip(out.values(), ys, es):
        assert sp.provenance["x_bins"].startswith("edges (last row with y = e = 0")
        assert np.allclose(sp.x, centres_meV, rtol=RTOL, atol=0)
        assert np.allclose(sp.intensity, y, rtol=RTOL) and np.allclose(sp.intensity_std, e)


def test_a_table_of_q_e_i_rows_is_not_read_as_a_spectrum(tmp_path):
    """`export --csv` writes S(Q,E) as Q, E, I rows: three columns that look like x, y, e. Their
    repeated first column is refused, naming the lines, as is a non-finite energy."""
    from mlff_ins.compare.export import export_csv
    from mlff_ins.neutron.spectrum import Spectrum2D

    sqe = Spectrum2D(kind="sqe", q=np.array([0.5, 1.0]), y=np.array([1.0, 2.0, 3.0]),
                     intensity=np.arange(6.0).reshape(2, 3), units="barn/(sr meV)")
    (csv,) = export_csv({"sqe": sqe}, tmp_path)
    with pytest.raises(InputError, match=r"sqe.csv: the first column repeats 0.5 \(lines \d+ "
                                         r"and \d+\)"):
        read_measured(csv, unit="meV")
    nan = _write(tmp_path / "nan.txt", "# X unit: meV\nX , Y0 , E0\n1,2,3\nnan,2,3\n3,4,5\n")
    with pytest.raises(InputError, match="nan.txt: line 4: the energy nan is not a finite"):
        read_measured(nan)
    # errors: negative or infinite ones are refused; NaN (none known, as export writes) is kept
    for rows, ok in (("1,2,0.1\n2,nan,nan\n3,4,0.1\n", True),
                     ("1,2,0.1\n2,3,-1.4\n3,4,0.1\n", False),
                     ("1,2,0.1\n2,3,inf\n3,4,0.1\n", False)):
        f = _write(tmp_path / "e.txt", "# X unit: meV\n# X , Y , E\n1\n" + rows)
        if ok:
            assert np.isnan(read_measured(f)["s_e"].intensity[1])
        else:
            with pytest.raises(InputError, match="e.txt: spectrum1: the error .* at x = 2 is "
                                                 "negative or infinite"):
                read_measured(f)


def test_a_unit_named_in_passing_is_a_guess_said_aloud(tmp_path):
    """A unit that only a free comment names (here the elastic line's width, while x is in
    cm-1) is taken with a warning naming the line and the option; a declaration is not."""
    rows = "\n".join(f"{x},{1.0},{0.1}" for x in (400.0, 800.0, 1200.0))
    guess = _write(tmp_path / "guess.dat", "# VISION, elastic line FWHM 0.1 meV\n" + rows + "\n")
    with pytest.warns(UserWarning, match=r"guess.dat: energy unit meV taken from line 1 .*"
                                         r"--measured-unit"):
        read_measured(guess)
    assert read_measured(guess, unit="cm-1")["s_e"].x[0] == pytest.approx(400 * 0.12398419843)
    declared = _write(tmp_path / "declared.dat", "# X unit: cm-1\n" + rows + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_measured(declared)


@pytest.mark.parametrize("layout", ["id_and_q", "q_only"])
def test_saveascii2_spectrum_metadata_lines_give_q(tmp_path, layout):
    """SaveAscii2 with SpectrumMetaData writes each block's metadata line: "number , Q", or Q
    alone without the spectrum number (WriteSpectrumID=False): read as S(Q,E) at those Q. Its
    newer header's Distribution flag is not a column."""
    x = np.arange(1.0, 6.0)
    rows = "\n".join(f"{a},{2 * a},{0.1}" for a in x)
    heads = {"id_and_q": ("1 , 0.5", "2 , 1.5"), "q_only": ("0.5", "1.5")}[layout]
    path = _write(tmp_path / f"{layout}.txt", "# X unit: meV\n# X , Y , E\n"
                  + "".join(f"{h}\n{rows}\n" for h in heads))
    (sqe,) = read_measured(path).values()
    np.testing.assert_array_equal(sqe.q, [0.5, 1.5])
    np.testing.assert_allclose(sqe.intensity, [2 * x, 2 * x])
    flag = _write(tmp_path / "flag.txt", "# X unit: meV\n# X , Y , E Distribution=false\n"
                  + rows + "\n")
    np.testing.assert_allclose(read_measured(flag)["s_e"].intensity, 2 * x)


def test_unit_names_in_column_headers():
    """Column names such as energy_meV or E_THz name their unit (the underscore is a word
    character: a word boundary missed them); a word that merely contains the letters does not."""
    from mlff_ins.neutron.units import energy_unit

    assert [energy_unit(t) for t in ("energy_meV", "E_meV", "E (meV)", "freq_THz",
                                     "DeltaE_inWavenumber", "DeltaE")] == \
        ["meV", "meV", "meV", "THz", "cm-1", "meV"]
    assert energy_unit("meVs") is None and energy_unit("themev") is None


def test_trailing_run_of_zeros_is_data_not_an_edge(tmp_path):
    x = np.arange(1.0, 7.0)
    y = np.array([3.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    path = _write(tmp_path / "zeros.txt", "# X unit: meV\nX , Y0 , E0\n" + _rows(x, y, 0 * y))
    sp = read_measured(path)["s_e"]
    assert np.array_equal(sp.x, x) and sp.provenance["x_bins"] == "centres"


# --- NXSPE -------------------------------------------------------------------------------------


def _nxspe(path, signal, error, energy_edges, polar, ei):
    with h5py.File(path, "w") as f:
        g = f.create_group("run_1234")
        g.attrs["NX_class"] = "NXentry"
        d = g.create_dataset("definition", data="NXSPE")
        d.attrs["version"] = "1.3"
        info = g.create_group("NXSPE_info")
        info.create_dataset("fixed_energy", data=ei).attrs["units"] = "meV"
        info.create_dataset("psi", data=np.nan)
        info.create_dataset("ki_over_kf_scaling", data=1)
        data = g.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        s = data.create_dataset("data", data=signal)
        s.attrs["signal"], s.attrs["axes"] = 1, "polar:energy"
        data.create_dataset("error", data=error)
        data.create_dataset("energy", data=energy_edges).attrs["units"] = "meV"
        data.create_dataset("polar", data=polar)
        data.create_dataset("azimuthal", data=np.zeros_like(polar))
        g.create_dataset("instrument/name", data="MARI")
    return path


def test_pixel_q_by_hand():
    # E = ħ²k²/2m_n = c k², c = 2.0721 meV Å² as usually quoted (5 significant figures)
    assert E_PER_K2 == pytest.approx(2.0721, rel=1e-4)
    ei, e, two_theta = 50.0, 10.0, 90.0
    ki = np.sqrt(ei / E_PER_K2)                     # 4.912 1/Å
    kf = np.sqrt((ei - e) / E_PER_K2)               # 4.394 1/Å
    q = np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(two_theta)))
    assert q == pytest.approx(6.5904, abs=1e-4)     # √(90/2.0721249) by hand
    assert pixel_q(ei, e, two_theta) == pytest.approx(q, rel=RTOL)
    assert np.isnan(pixel_q(ei, 60.0, two_theta))   # E > E_i: no such neutron


def test_nxspe_powder_sqe_averages_pixels_and_drops_masked_detectors(tmp_path):
    ei = 50.0
    energy_edges = np.array([-5.0, 5.0, 15.0, 25.0, 45.0, 55.0])  # centres 0 10 20 35 50
    polar = np.array([90.0, 90.0, 30.0, 60.0])
    rng = np.random.default_rng(3)
    signal = rng.uniform(1.0, 2.0, (4, 5))
    error = rng.uniform(0.1, 0.2, (4, 5))
    signal[3], error[3] = np.nan, 0.0  # detector 3 masked, as SaveNXSPE writes it
    path = _nxspe(tmp_path / "run.nxspe", signal, error, energy_edges, polar, ei)
    q_edges = np.linspace(0.0, 8.0, 161)  # 0.05 1/Å bins
    out = read_measured(path, q_edges=q_edges)
    sp = out["sqe"]
    assert isinstance(sp, Spectrum2D) and sp.kind == "sqe" and sp.source == "measured"
    assert np.allclose(sp.y, [0.0, 10.0, 20.0, 35.0], rtol=RTOL)  # E = 50 = E_i is dropped
    assert np.allclose(sp.q, 0.5 * (q_edges[:-1] + q_edges[1:]), rtol=RTOL)
    p = sp.provenance
    assert p["format"] == "nxspe" and p["n_detectors_masked"] == 1 and p["ei_meV"] == ei
    assert sp.instrument == "mari"
    # E = 10 meV: detectors 0 and 1 (2θ = 90°) share one |Q| bin -> their mean, σ = √(Σσ²)/2
    ki, kf = np.sqrt(ei / E_PER_K2), np.sqrt((ei - 10.0) / E_PER_K2)
    q90 = np.sqrt(ki ** 2 + kf ** 2)  # cos 90° = 0
    iq = int(np.searchsorted(q_edges, q90) - 1)
    assert sp.intensity[iq, 1] == pytest.approx(signal[:2, 1].mean(), rel=RTOL)
    assert sp.intensity_std[iq, 1] == pytest.approx(np.hypot(*error[:2, 1]) / 2, rel=RTOL)
    q30 = np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(30.0)))
    iq30 = int(np.searchsorted(q_edges, q30) - 1)
    assert sp.intensity[iq30, 1] == pytest.approx(signal[2, 1], rel=RTOL)
    assert sp.intensity_std[iq30, 1] == pytest.approx(error[2, 1], rel=RTOL)
    # two occupied bins per energy (the 90° pair, the 30° pixel); the masked one adds nothing
    assert np.isfinite(sp.intensity).sum() == 2 * 4
    # default |Q| grid: 100 bins from 0 to the largest pixel |Q| (2θ = 90°, E = 0: √(2E_i/c))
    default = read_measured(path)["sqe"]
    assert len(default.q) == 100
    assert default.provenance["q_bins_invA"]["max"] == pytest.approx(np.sqrt(2 * ei / E_PER_K2),
                                                                     rel=RTOL)


def test_nxspe_of_older_mantid_with_the_mask_flag(tmp_path):
    """Older SaveNXSPE wrote masked pixels as -1e30, not NaN: the same file with the flag reads
    exactly as with NaN (masked detector counted, never averaged into a bin)."""
    ei, energy_edges = 50.0, np.array([-5.0, 5.0, 15.0, 25.0])
    polar = np.array([90.0, 30.0, 60.0])
    signal = np.array([[1.0, 2.0, 3.0], [1.5, 2.5, 3.5], [np.nan] * 3])
    error = np.full((3, 3), 0.1)
    nan = read_measured(_nxspe(tmp_path / "nan.nxspe", signal, error, energy_edges, polar, ei))
    signal[2] = -1e30
    flag = read_measured(_nxspe(tmp_path / "flag.nxspe", signal, error, energy_edges, polar, ei))
    a, b = nan["sqe"], flag["sqe"]
    assert b.provenance["n_detectors_masked"] == 1
    np.testing.assert_array_equal(a.intensity, b.intensity)
    np.testing.assert_array_equal(a.intensity_std, b.intensity_std)
    assert np.nanmin(b.intensity) > 0


def test_powder_sqe_propagates_unknown_errors_as_nan():
    q, e, i, s, _ = powder_sqe(np.ones((2, 1)), np.array([[0.1], [np.nan]]), [0.0, 2.0],
                               [90.0, 90.0], 20.0, q_edges=[0.0, 10.0])
    assert i[0, 0] == 1.0 and np.isnan(s[0, 0])


# --- Mantid processed NeXus (SofQW, RebinnedOutput, 1D spectra) -------------------------------


def _processed(path, values, errors, axis1, axis2, units1="DeltaE", units2="MomentumTransfer",
               frac=None, finalized=None, distribution=None):
    with h5py.File(path, "w") as f:
        entry = f.create_group("mantid_workspace_1")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("definition", data="Mantid Processed Workspace")
        ws = entry.create_group("workspace")
        ws.attrs["NX_class"] = "NXdata"
        v = ws.create_dataset("values", data=values)
        v.attrs["signal"], v.attrs["axes"], v.attrs["units"] = 1, "axis2,axis1", "Counts"
        ws.create_dataset("errors", data=errors)
        if frac is not None:
            fa = ws.create_dataset("frac_area", data=frac)
            if finalized is not None:  # NexusFileIO writes "1"/"0" as NX_CHAR on frac_area
                fa.attrs["finalized"] = np.bytes_(finalized)
                fa.attrs["sqrd_errors"] = np.bytes_(b"0")
        a1 = ws.create_dataset("axis1", data=axis1)
        a1.attrs["units"] = units1
        if distribution is not None:  # NexusFileIO: "1"/"0" with its NUL, NX_CHAR of length 2
            a1.attrs.create("distribution", np.bytes_(distribution + b"\x00"), dtype="S2")
        ws.create_dataset("axis2", data=axis2).attrs["units"] = units2
    return path


def test_a_file_pointing_outside_itself_is_not_read(tmp_path):
    """HDF5 external raw storage or an external link would make the reader (and the web page's
    server) read another file of the machine as "intensities": refused, naming the object; the
    same layout kept inside the file reads."""
    from mlff_ins.neutron.spectrum import read_spectra

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype="<f8").tobytes())
    edges = np.linspace(0.0, 4.0, 5)
    inside = _processed(tmp_path / "inside.nxs", np.ones((1, 4)), np.ones((1, 4)), edges,
                        [0.0, 1.0])
    assert read_measured(inside)
    external = _processed(tmp_path / "external.nxs", np.ones((1, 4)), np.ones((1, 4)), edges,
                          [0.0, 1.0])
    with h5py.File(external, "a") as f:
        ws = f["mantid_workspace_1/workspace"]
        del ws["values"]
        ws.create_dataset("values", shape=(1, 4), dtype="<f8", external=[(str(secret), 0, 32)])
    with pytest.raises(InputError, match=r"external\.nxs: dataset /mantid_workspace_1/"
                                         r"workspace/values keeps its values in other files"):
        read_measured(external)
    linked = tmp_path / "linked.h5"
    with h5py.File(linked, "w") as f:
        f["s_e"] = h5py.ExternalLink(str(inside), "/mantid_workspace_1/workspace")
    for reader in (read_measured, read_spectra):
        with pytest.raises(InputError, match=r"linked\.h5: /s_e is a link to another file"):
            reader(linked)
    # a few kB of compressed fill values declaring 2 GiB: refused before anything is read
    bomb = _processed(tmp_path / "bomb.nxs", np.ones((1, 4)), np.ones((1, 4)), edges,
                      [0.0, 1.0])
    with h5py.File(bomb, "a") as f:
        ws = f["mantid_workspace_1/workspace"]
        del ws["values"]
        ws.create_dataset("values", shape=(16384, 16384), dtype="<f8", chunks=(1024, 1024),
                          compression="gzip", fillvalue=1.0)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"bomb\.nxs: dataset /mantid_workspace_1/workspace/"
                                         r"values holds 2\.0 GiB once read, more than the 0\.5"):
        read_measured(bomb, max_bytes=512 * 1024**2)


@pytest.mark.parametrize("units1, factor", [("DeltaE", 1.0), ("DeltaE_inWavenumber", 8.065544)])
def test_counts_per_bin_become_a_density(tmp_path, units1, factor):
    """distribution "0" (counts per bin) on log-spaced bins: dividing by the widths in meV gives
    back the density the counts were integrated from; "1" and no flag keep the values."""
    edges_meV = np.geomspace(2.0, 200.0, 25)
    density = np.exp(-0.5 * ((0.5 * (edges_meV[1:] + edges_meV[:-1]) - 40.0) / 15.0) ** 2)
    counts = density * np.diff(edges_meV)                 # what a histogram holds per bin
    rows = np.vstack([counts, 2 * counts, 3 * counts])
    kw = dict(units1=units1, units2="spectraNumber")
    path = _processed(tmp_path / "c.nxs", rows, 0.1 * rows, edges_meV * factor,
                      np.array([1.0, 2.0, 3.0]), distribution=b"0", **kw)
    sp = read_measured(path)["s_e"]
    assert sp.provenance["divided_by_bin_width"] is True
    assert sp.units == "Counts per meV"        # what the division made of the file's Counts
    # 8.065544 cm-1/meV is quoted to 7 figures: the widths agree to 1e-6 relative
    assert np.allclose(sp.intensity, 3 * density, rtol=1e-6)
    assert np.allclose(sp.intensity_std, 0.3 * density, rtol=1e-6)
    for flag in (b"1", None):
        path = _processed(tmp_path / "d.nxs", rows, 0.1 * rows, edges_meV * factor,
                          np.array([1.0, 2.0, 3.0]), distribution=flag, **kw)
        sp = read_measured(path)["s_e"]
        assert np.array_equal(sp.intensity, rows[2]) and "divided_by_bin_width" not in sp.provenance
    # point data flagged "0": nothing to divide by, kept and said so
    path = _processed(tmp_path / "p.nxs", rows, 0.1 * rows, edges_meV[1:] * factor,
                      np.array([1.0, 2.0, 3.0]), distribution=b"0", **kw)
    sp = read_measured(path)["s_e"]
    assert np.array_equal(sp.intensity, rows[2]) and sp.provenance["divided_by_bin_width"] is False


def test_sofqw_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    values, errors = rng.uniform(0, 5, (6, 9)), rng.uniform(0.1, 0.3, (6, 9))
    e_edges, q_edges = np.linspace(-2.0, 16.0, 10), np.linspace(0.5, 3.5, 7)
    path = _processed(tmp_path / "sqw.nxs", values, errors, e_edges, q_edges)
    sp = read_measured(path)["sqe"]
    assert np.array_equal(sp.intensity, values) and np.array_equal(sp.intensity_std, errors)
    assert np.allclose(sp.y, 0.5 * (e_edges[1:] + e_edges[:-1]), rtol=RTOL)
    assert np.allclose(sp.q, 0.5 * (q_edges[1:] + q_edges[:-1]), rtol=RTOL)
    assert sp.units == "Counts" and sp.provenance["rebinned_output"] is False
    # the same workspace with its energy axis in cm-1 (DeltaE_inWavenumber)
    path = _processed(tmp_path / "sqw_cm.nxs", values, errors, e_edges * 8.065544, q_edges,
                      units1="DeltaE_inWavenumber")
    sp_cm = read_measured(path)["sqe"]
    # 8.065544 is quoted to 7 significant figures: the axes agree to 1e-7 relative
    assert np.allclose(sp_cm.y, sp.y, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("finalized", [b"0", b"1", None])
def test_rebinned_output_frac_area(tmp_path, finalized):
    values = np.array([[2.0, 3.0, 4.0], [1.0, 0.0, 6.0]])
    errors = np.array([[0.2, 0.3, 0.4], [0.1, 0.0, 0.6]])
    frac = np.array([[0.5, 1.0, 0.25], [2.0, 0.0, 3.0]])
    path = _processed(tmp_path / "rebinned.nxs", values, errors, np.arange(4.0),
                      np.array([1.0, 2.0, 3.0]), frac=frac, finalized=finalized)
    sp = read_measured(path)["sqe"]
    p = sp.provenance
    assert p["rebinned_output"] is True
    if finalized == b"0":  # data still carry the fractional area: divide, NaN where it is 0
        assert p["frac_area_divided"] is True
        good = frac > 0
        assert np.allclose(sp.intensity[good], (values / np.where(good, frac, 1))[good], rtol=RTOL)
        assert np.allclose(sp.intensity_std[good], (errors / np.where(good, frac, 1))[good],
                           rtol=RTOL)
        assert np.isnan(sp.intensity[1, 1]) and np.isnan(sp.intensity_std[1, 1])
    else:  # finalized, or no flag (Mantid's LoadNexusProcessed then takes it as finalized)
        assert p["frac_area_divided"] is False
        assert np.array_equal(sp.intensity, values) and np.array_equal(sp.intensity_std, errors)
        assert ("finalized_assumed" in p) == (finalized is None)


def test_processed_1d_spectra_in_wavenumbers_select_banks(tmp_path):
    x_edges = np.linspace(0.0, 4000.0, 11)
    values = np.vstack([np.arange(10.0) * k for k in (1, 2, 3)])
    path = _processed(tmp_path / "vision.nxs", values, values * 0.1, x_edges,
                      np.array([1.0, 2.0, 3.0]), units1="DeltaE_inWavenumber",
                      units2="spectraNumber")
    sp = read_measured(path)["s_e"]
    assert sp.provenance["bank"] == "average" and np.array_equal(sp.intensity, values[2])
    centres = 0.5 * (x_edges[1:] + x_edges[:-1])
    assert np.allclose(sp.x, centres * MEV_PER_UNIT["cm-1"], rtol=RTOL)
    assert np.array_equal(read_measured(path, bank="forward")["s_e"].intensity, values[1])


# --- Mantid MDHistoWorkspace (SaveMD v2) ------------------------------------------------------


def _mdhisto(path, dims, signal, errors_squared, mask=None, write_axes=True):
    """dims in Mantid's order d0, d1, ...; arrays in SaveMD2's reversed (C) order."""
    with h5py.File(path, "w") as f:
        root = f.create_group("MDHistoWorkspace")
        root.attrs["NX_class"], root.attrs["SaveMDVersion"] = "NXentry", 2
        data = root.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        for name, edges, units in dims:
            d = data.create_dataset(name, data=edges)
            d.attrs["units"], d.attrs["long_name"], d.attrs["frame"] = units, name, "General"
        s = data.create_dataset("signal", data=signal)
        s.attrs["signal"] = 1
        if write_axes:
            s.attrs["axes"] = ":".join(name for name, _, _ in reversed(dims))
        data.create_dataset("errors_squared", data=errors_squared)
        data.create_dataset("num_events", data=np.ones_like(signal))
        data.create_dataset("mask", data=np.zeros(signal.shape, np.int8) if mask is None
                            else mask.astype(np.int8))
    return path


@pytest.mark.parametrize("write_axes", [True, False])
def test_mdhisto_reversed_dimensions(tmp_path, write_axes):
    q_edges, e_edges = np.linspace(0.0, 4.0, 5), np.linspace(-1.0, 9.0, 6)   # 4 Q, 5 E bins
    dims = [("|Q|", q_edges, "Angstrom^-1"), ("DeltaE", e_edges, "meV"),
            ("T", np.array([0.0, 1.0]), "K")]                                 # T integrated
    rng = np.random.default_rng(7)
    sqe = rng.uniform(1, 2, (4, 5))          # what we want back, indexed [Q, E]
    var = rng.uniform(0.01, 0.04, (4, 5))
    mask = np.zeros((1, 5, 4), bool)
    mask[0, 2, 3] = True                      # E bin 2, Q bin 3
    path = _mdhisto(tmp_path / "md.nxs", dims, sqe.T[None], var.T[None], mask, write_axes)
    sp = read_measured(path)["sqe"]
    assert sp.intensity.shape == (4, 5) and sp.provenance["format"] == "mantid_mdhisto"
    expected = sqe.copy()
    expected[3, 2] = np.nan
    assert np.allclose(sp.intensity, expected, rtol=RTOL, equal_nan=True)
    assert np.allclose(sp.intensity_std, np.where(np.isnan(expected), np.nan, np.sqrt(var)),
                       rtol=RTOL, equal_nan=True)
    assert np.allclose(sp.q, 0.5 * (q_edges[1:] + q_edges[:-1]), rtol=RTOL)
    assert np.allclose(sp.y, 0.5 * (e_edges[1:] + e_edges[:-1]), rtol=RTOL)


def test_mdhisto_energy_only_in_wavenumbers(tmp_path):
    e_edges = np.linspace(0.0, 800.0, 9)
    path = _mdhisto(tmp_path / "md1.nxs", [("DeltaE", e_edges, "cm^-1")],
                    np.arange(8.0), np.full(8, 4.0))
    sp = read_measured(path)["s_e"]
    assert np.allclose(sp.x, 0.5 * (e_edges[1:] + e_edges[:-1]) * MEV_PER_UNIT["cm-1"],
                       rtol=RTOL)
    assert np.allclose(sp.intensity_std, 2.0, rtol=RTOL)


# --- bad input: one line, naming the file -------------------------------------------------------


def _one_line_error(path, **kw):
    with pytest.raises(InputError) as info:
        read_measured(path, **kw)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_bad_inputs_name_the_file(tmp_path):
    assert "no such" in _one_line_error(tmp_path / "missing.dat")
    assert "no numeric rows" in _one_line_error(_write(tmp_path / "words.txt", "just\nwords\n"))
    msg = _one_line_error(_write(tmp_path / "kelvin.txt", "# X unit: K\n# X , Y , E\n1\n"
                                 "1,2,3\n2,3,4\n"))
    assert "'K'" in msg and "line 1" in msg
    msg = _one_line_error(_write(tmp_path / "broken.dat", "title\nC (CM-1) COUNTS ERROR\n"
                                 "1 2 3\n2 3 4\noops here\n"))
    assert "line 5" in msg
    msg = _one_line_error(_write(tmp_path / "ragged.dat", "t\nCM-1\n1 2 3\n2 3\n3 4 5\n"))
    assert "line 4" in msg
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("something")
    assert "no NXSPE entry" in _one_line_error(tmp_path / "empty.h5")
    nx = _nxspe(tmp_path / "noerr.nxspe", np.ones((2, 3)), np.ones((2, 3)), np.arange(4.0),
                np.array([10.0, 20.0]), 20.0)
    with h5py.File(nx, "a") as f:
        del f["run_1234/data/error"]
    assert "'error'" in _one_line_error(nx)
    nx = _nxspe(tmp_path / "shape.nxspe", np.ones((2, 3)), np.ones((2, 3)), np.arange(3.0),
                np.array([10.0, 20.0]), 20.0)
    assert "data/energy" in _one_line_error(nx)
    nx = _nxspe(tmp_path / "q.nxspe", np.ones((2, 3)), np.ones((2, 3)), np.arange(4.0),
                np.array([10.0, 20.0]), 20.0)
    assert "q_edges" in _one_line_error(nx, q_edges=[1.0, 0.5])
    assert "bank=" in _one_line_error(nx, bank=0)
    md = _mdhisto(tmp_path / "badmd.nxs", [("DeltaE", np.arange(4.0), "meV")], np.ones(3),
                  np.ones(4))
    assert "errors_squared" in _one_line_error(md)
    tof = _processed(tmp_path / "tof.nxs", np.ones((2, 2)), np.ones((2, 2)), np.arange(3.0),
                     np.arange(3.0), units1="TOF")
    assert "'TOF'" in _one_line_error(tof)


# --- µeV and the energy-gain convention ---------------------------------------------------------


def test_micro_ev_is_read_as_a_thousandth_of_an_meV(tmp_path):
    """Backscattering and QENS data come in µeV, spelt with the micro sign, the Greek mu, a u
    or Mantid's "microeV"; a word that merely holds the letters names nothing."""
    from mlff_ins.neutron.units import energy_unit

    assert [energy_unit(t) for t in ("E (µeV)", "E (μeV)", "energy_ueV", "microeV",
                                     "micro-electron-volts")] == ["ueV"] * 5
    assert energy_unit("queV") is None and energy_unit("meV") == "meV"
    x = np.array([-50.0, -25.0, 0.0, 25.0, 50.0])          # µeV
    y = np.exp(-0.5 * (x / 20.0) ** 2)
    path = _write(tmp_path / "qens.txt", "# X unit: µeV\nX , Y0 , E0\n" + _rows(x, y, 0.1 * y))
    sp = read_measured(path)["s_e"]
    np.testing.assert_allclose(sp.x, x * 1e-3, rtol=1e-12)
    np.testing.assert_allclose(sp.intensity, y, rtol=1e-12)
    assert convert_energy(0.05, "ueV") == pytest.approx(50.0, rel=1e-12)


def test_energy_gain_files_are_negated_to_energy_loss(tmp_path):
    """A file that counts energy gain positive (its peak at -30 meV in this package's
    convention) comes back with the axis negated and reversed: the peak at +30 meV, the
    intensities and errors carried with their energies, the flip written in the provenance."""
    x = np.arange(-60.0, 0.5, 1.0)                          # energy gain: loss side negative
    y = np.exp(-0.5 * ((x + 30.0) / 3.0) ** 2) + 0.01 * np.arange(x.size)
    e = 0.05 + 0.001 * np.arange(x.size)
    path = _write(tmp_path / "gain.txt", "# X unit: meV\nX , Y0 , E0\n" + _rows(x, y, e))
    plain = read_measured(path)["s_e"]
    flipped = read_measured(path, energy_gain=True)["s_e"]
    assert np.all(np.diff(flipped.x) > 0)
    np.testing.assert_array_equal(flipped.x, -plain.x[::-1])
    np.testing.assert_array_equal(flipped.intensity, plain.intensity[::-1])
    np.testing.assert_array_equal(flipped.intensity_std, plain.intensity_std[::-1])
    assert abs(flipped.x[np.argmax(flipped.intensity)] - 30.0) <= 1.0
    assert "negated" in flipped.provenance["energy_sign"]


def test_a_dave_group_file_is_refused_with_the_way_round(tmp_path):
    """DAVE's .grp layout (counts, x values, y values, then intensity-error pairs per group)
    used to fail on "line 14 has 2 columns"; now one line names the format and the way to a
    file the reader takes."""
    text = ("# Number of x values\n3\n# Number of y values\n2\n# x values\n1.0\n2.0\n3.0\n"
            "# y values\n0.5\n1.0\n# Group 0\n1.0 0.1\n2.0 0.1\n3.0 0.1\n"
            "# Group 1\n1.0 0.1\n2.0 0.1\n3.0 0.1\n")
    path = _write(tmp_path / "hfbs.grp", text)
    with pytest.raises(InputError, match=r"hfbs.grp: a DAVE group file \(.grp\), which this "
                                         r"reader does not read; load it in Mantid"):
        read_measured(path, unit="meV")


def test_energy_gain_is_refused_for_hdf5_files(tmp_path):
    """NXSPE and Mantid NeXus files carry Mantid's sign (energy loss positive), from which the
    |Q| of each NXSPE pixel is computed: negating the axis afterwards would leave intensities
    at the wrong |Q|, so the flag is refused there, in one line naming it."""
    nx = _nxspe(tmp_path / "run.nxspe", np.ones((2, 3)), np.ones((2, 3)), np.arange(4.0),
                np.array([30.0, 60.0]), 50.0)
    with pytest.raises(InputError, match="--measured-energy-gain .* apply to text files"):
        read_measured(nx, energy_gain=True)
