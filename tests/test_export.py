"""CSV and Mantid-ASCII exports: read back with numpy and with our reader, in meV, cm-1 and THz.

Tolerance: values are written with 17 significant digits (``repr``), which a float64 read gives
back exactly; the energy axis goes through one conversion out and one back (two roundings of
~1e-16 relative). 1e-10 relative is therefore a bound with six orders of margin, not a fit.
"""

import re

import numpy as np
import pytest

from mlff_ins.compare.export import export_csv, export_mantid_ascii
from mlff_ins.compare.readers import MEV_PER_UNIT, read_measured
from mlff_ins.errors import InputError
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D

RTOL = 1e-10
UNITS = ("meV", "cm-1", "THz")


@pytest.fixture
def spectra():
    rng = np.random.default_rng(5)
    e = np.linspace(0.25, 150.0, 60)
    q = np.linspace(0.1, 6.0, 7)
    s1 = Spectrum1D(kind="s_e", x=e, intensity=rng.uniform(0, 3, 60),
                    intensity_std=rng.uniform(0.01, 0.1, 60), units="barn/sr/meV",
                    element="H", instrument="vision", source="phonons", temperature_K=10.0)
    s2 = Spectrum2D(kind="sqe", q=q, y=e, intensity=rng.uniform(0, 1, (7, 60)),
                    intensity_std=rng.uniform(0.001, 0.01, (7, 60)), units="barn/sr/meV",
                    source="md", temperature_K=300.0)
    s3 = Spectrum1D(kind="vdos", x=e, intensity=rng.uniform(0, 1, 60), units="1/meV")
    return {"ins H": s1, "sqe": s2, "vdos": s3}


def _close(a, b):
    return np.allclose(a, b, rtol=RTOL, atol=0, equal_nan=True)


@pytest.mark.parametrize("unit", UNITS)
def test_csv_round_trip(spectra, tmp_path, unit):
    paths = export_csv(spectra, tmp_path / "csv", unit)
    assert [p.name for p in paths] == ["ins_H.csv", "sqe.csv", "vdos.csv"]
    head = paths[0].read_text().splitlines()
    assert "# name: ins H" in head and "# kind: s_e" in head and "# element: H" in head
    assert f"# columns: energy ({unit}), intensity (barn/sr/meV), intensity_std (barn/sr/meV)" \
        in head
    s1, s2, s3 = spectra.values()
    t = np.loadtxt(paths[0], delimiter=",")
    assert _close(t[:, 0] * MEV_PER_UNIT[unit], s1.x)
    assert _close(t[:, 1], s1.intensity) and _close(t[:, 2], s1.intensity_std)
    t = np.loadtxt(paths[1], delimiter=",")  # one row per (Q, E), Q outermost
    assert t.shape == (7 * 60, 4)
    assert _close(t[:, 0], np.repeat(s2.q, 60))
    assert _close(t[:, 1] * MEV_PER_UNIT[unit], np.tile(s2.y, 7))
    assert _close(t[:, 2].reshape(7, 60), s2.intensity)
    assert _close(t[:, 3].reshape(7, 60), s2.intensity_std)
    t = np.loadtxt(paths[2], delimiter=",")  # no uncertainties: a nan column
    assert _close(t[:, 1], s3.intensity) and np.all(np.isnan(t[:, 2]))


@pytest.mark.parametrize("unit", UNITS)
def test_mantid_ascii_round_trip_through_our_reader(spectra, tmp_path, unit):
    paths = export_mantid_ascii(spectra, tmp_path / "ascii", unit=unit)
    s1, s2, s3 = spectra.values()
    back = read_measured(paths[0])["s_e"]
    assert back.provenance["format"] == "mantid_ascii_v2"
    assert back.provenance["energy_unit_in_file"] == unit
    assert _close(back.x, s1.x) and _close(back.intensity, s1.intensity)
    assert _close(back.intensity_std, s1.intensity_std) and back.units == "barn/sr/meV"
    back = read_measured(paths[1])["sqe"]
    assert isinstance(back, Spectrum2D)
    assert _close(back.q, s2.q) and _close(back.y, s2.y)
    assert _close(back.intensity, s2.intensity) and _close(back.intensity_std, s2.intensity_std)
    back = read_measured(paths[2])["s_e"]
    assert _close(back.intensity, s3.intensity) and np.all(np.isnan(back.intensity_std))


def test_mantid_ascii_follows_loadascii2_line_rules(spectra, tmp_path):
    """Mantid's LoadAscii (v2, Framework/DataHandling/src/LoadAscii2.cpp, parseLine) accepts a
    line that is blank, a comment starting with the comment indicator ("#"), a single integer
    (a spectrum number) or 2-4 separator-delimited numbers starting with a digit, '-' or '+';
    every spectrum must have a number or none may. Check each exported line against that."""
    for path in export_mantid_ascii(spectra, tmp_path):
        lines = path.read_text().splitlines()
        assert "# X , Y , E" in lines
        numbers, data_rows = [], 0
        for line in lines:
            if line.startswith("#"):
                continue
            if re.fullmatch(r"\d+", line):
                numbers.append(int(line))
                continue
            fields = line.split(",")
            assert len(fields) == 3 and line[0] in "0123456789-+", line
            [float(v) for v in fields]
            data_rows += 1
        assert numbers == list(range(1, len(numbers) + 1)) and data_rows % len(numbers) == 0


def test_unknown_unit_and_empty_input_are_refused(spectra, tmp_path):
    with pytest.raises(InputError, match=r"export unit 'eV' is not one of meV, ueV, cm-1, THz"):
        export_csv(spectra, tmp_path, "eV")
    with pytest.raises(InputError, match="export unit 'K'"):
        export_mantid_ascii(spectra, tmp_path, unit="K")
    with pytest.raises(InputError, match="nothing to export"):
        export_csv({}, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_names_that_clean_up_alike_get_separate_files(spectra, tmp_path):
    s1 = spectra["ins H"]
    paths = export_csv({"a b": s1, "a_b": s1, "a/b": s1}, tmp_path)
    assert [p.name for p in paths] == ["a_b.csv", "a_b_2.csv", "a_b_3.csv"]
    assert all(p.is_file() for p in paths)


def test_a_spectrum_ending_in_an_empty_bin_survives_the_round_trip(tmp_path):
    """Our export writes bin centres: a spectrum whose last point is (0, 0) reads back with
    every point at its own energy (a warning says how the last row was taken); only Mantid's
    SaveAscii v1 layout reads such a row as a closing bin edge unasked, and x_edges=True does
    so on request."""
    x = np.arange(1.0, 11.0)
    y, e = np.append(np.arange(1.0, 10.0), 0.0), np.append(np.full(9, 0.1), 0.0)
    sp = Spectrum1D(kind="s_e", x=x, intensity=y, intensity_std=e, units="barn/sr/meV")
    path = export_mantid_ascii({"s_e": sp}, tmp_path / "ascii", unit="meV")[0]
    with pytest.warns(UserWarning, match="last row has y = e = 0 after data"):
        back = read_measured(path)["s_e"]
    assert _close(back.x, x) and _close(back.intensity, y) and _close(back.intensity_std, e)
    edges = read_measured(path, x_edges=True)["s_e"]
    assert _close(edges.x, x[:-1] + 0.5) and len(edges.intensity) == 9
