"""Thermodynamics from a DOS alone (pymatgen's PhononDos): an Einstein solid and the
Dulong–Petit limit against their analytic forms, silicon's DFT phonon DOS against phonopy's mode
sum on the same mesh, and `mlff-ins thermo` on spectra files."""

import numpy as np
import pytest

pytest.importorskip("pymatgen.phonon.dos")

from mlff_ins.cli import main
from mlff_ins.errors import InputError
from mlff_ins.ins.modes import MEV_PER_THZ
from mlff_ins.neutron.quantum import KB_MEV_PER_K
from mlff_ins.neutron.spectrum import Spectrum1D, write_spectra
from mlff_ins.phonons.thermo_dos import (
    KJ_PER_MOL_PER_MEV,
    R_J_PER_K_MOL,
    thermal_from_dos,
    thermal_from_spectra_file,
)

E_STEP = 0.01  # meV; bin centres E_STEP/2, 3 E_STEP/2, ...


def _gaussian(e, e0, sigma, area):
    return area * np.exp(-0.5 * ((e - e0) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def _debye(e, e_max):
    """g(E) = 9 E²/E_D³ below E_D: area 3."""
    return np.where(e < e_max, 9 * e ** 2 / e_max ** 3, 0.0)


# per mode, as functions of E (meV) at temperature T (K): C_V and S in k_B, F in meV
def _cv(e, t):
    x = e / (KB_MEV_PER_K * t)
    return x ** 2 * np.exp(x) / np.expm1(x) ** 2


def _s(e, t):
    x = e / (KB_MEV_PER_K * t)
    return x / np.expm1(x) - np.log(-np.expm1(-x))


def _f(e, t):
    return e / 2 + KB_MEV_PER_K * t * np.log(-np.expm1(-e / (KB_MEV_PER_K * t)))


def test_einstein_solid():
    """A narrow Gaussian DOS (σ = 0.3 meV, area 3) at E0 = 30 meV against the Einstein solid,
    3 φ(E0) per atom for φ = C_V/k_B, S/k_B, F. Averaging φ over the Gaussian shifts it by
    ½ φ''(E0) σ² + O(σ⁴) (second order in σ/kT: 1.2 % for C_V at 20 K, 0.005 % at 300 K), so
    each value must lie within twice that term (φ'' by central differences of the analytic φ),
    plus (σ/kT)⁴ relative for the fourth-order term (it matters only where φ'' crosses zero),
    plus 1e-7 relative for the constants (pymatgen's CODATA h, k_B, N_A against ours). ZPE =
    3 E0/2 per atom exactly (the Gaussian's mean), to 1e-7; per formula unit = 2 × per atom."""
    e0, sigma = 30.0, 0.3
    e = np.arange(E_STEP / 2, 60.0, E_STEP)
    t = np.arange(0.0, 1001.0, 10.0)
    th = thermal_from_dos(e, _gaussian(e, e0, sigma, 3.0), t, n_atoms_per_formula=2)
    pa = th["per_atom"]
    assert th["n_dropped"] == 0 and th["dos_area_per_atom"] == pytest.approx(3.0, rel=1e-9)
    assert pa["heat_capacity"][0, 0] == 0 and pa["entropy"][0, 0] == 0
    assert pa["free_energy"][0, 0] == pytest.approx(pa["zero_point_energy"][0], rel=1e-12)
    assert pa["zero_point_energy_meV"][0] == pytest.approx(1.5 * e0, rel=1e-7)
    assert pa["zero_point_energy"][0] == pytest.approx(1.5 * e0 * KJ_PER_MOL_PER_MEV, rel=1e-7)
    ours = {"cv": pa["heat_capacity_kB"][0], "s": pa["entropy_kB"][0],
            "f": pa["free_energy"][0] / KJ_PER_MOL_PER_MEV}
    np.testing.assert_allclose(pa["heat_capacity"][0], ours["cv"] * R_J_PER_K_MOL, rtol=1e-12)
    h = 0.05
    hot = t >= 20
    for key, phi in (("cv", _cv), ("s", _s), ("f", _f)):
        exact = 3 * phi(e0, t[hot])
        second = 3 * 0.5 * sigma ** 2 * (phi(e0 + h, t[hot]) - 2 * phi(e0, t[hot])
                                         + phi(e0 - h, t[hot])) / h ** 2
        fourth = (sigma / (KB_MEV_PER_K * t[hot])) ** 4
        tol = 2 * np.abs(second) + (fourth + 1e-7) * np.abs(exact)
        diff = np.abs(ours[key][hot] - exact)
        bad = diff > tol
        assert not bad.any(), (key, t[hot][bad], diff[bad], tol[bad])
    for key in ("heat_capacity", "entropy", "free_energy", "zero_point_energy"):
        np.testing.assert_allclose(th["per_formula_unit"][key], 2 * pa[key], rtol=1e-12)


def test_dulong_petit():
    """Debye DOS ending at 40 meV, 3000 K (kT = 259 meV): C_V per mole of atoms within 1 % of
    3R and below it; more sharply, C_V/3R = 1 − ⟨x²⟩/12 + r, x = E/kT, with |r| ≤ ⟨x⁴⟩/240
    (the alternating series of (x/2)²/sinh²(x/2)), ⟨x²⟩ = 3/5 (E_D/kT)², ⟨x⁴⟩ = 3/7 (E_D/kT)⁴."""
    e_d = 40.0
    e = np.arange(E_STEP / 2, 50.0, E_STEP)
    th = thermal_from_dos(e, _debye(e, e_d), [3000.0])
    cv = th["per_atom"]["heat_capacity"][0, 0]
    assert cv == pytest.approx(3 * R_J_PER_K_MOL, rel=0.01) and cv < 3 * R_J_PER_K_MOL
    y = e_d / (KB_MEV_PER_K * 3000.0)
    bound = 3 / 7 * y ** 4 / 240
    assert abs(cv / (3 * R_J_PER_K_MOL) - (1 - 3 / 5 * y ** 2 / 12)) <= bound + 1e-6


def test_modes_at_negative_energy_are_left_out_and_counted():
    """Area 2.7 at 30 meV plus 0.3 at −5 meV (an imaginary branch, as phonopy writes it): the
    points at E ≤ 0 are counted and their 0.3 modes per atom left out, so C_V(3000 K) →
    0.9 × 3R (1 − x²/12), x = 30 meV/kT, to 1e-4 (the next term, x⁴/240, is 6e-7)."""
    e = np.arange(-10.0 + E_STEP / 2, 60.0, E_STEP)
    g = _gaussian(e, 30.0, 0.3, 2.7) + _gaussian(e, -5.0, 0.5, 0.3)
    th = thermal_from_dos(e, g, [0.0, 3000.0])
    assert th["n_dropped"] == int(np.sum(e <= 0))
    assert th["dropped_modes_per_atom"] == pytest.approx(0.3, abs=1e-6)
    x = 30.0 / (KB_MEV_PER_K * 3000.0)
    assert th["per_atom"]["heat_capacity_kB"][0, 1] == pytest.approx(
        2.7 * (1 - x ** 2 / 12), rel=1e-4)
    assert th["per_atom"]["zero_point_energy_meV"][0] == pytest.approx(2.7 * 15.0, rel=1e-6)


def test_bad_dos_is_refused():
    e = np.arange(E_STEP / 2, 60.0, E_STEP)
    g = _gaussian(e, 30.0, 0.3, 3.0)
    with pytest.raises(InputError, match="increasing"):
        thermal_from_dos(e[::-1], g[::-1], [300.0])
    with pytest.raises(InputError, match="not positive"):
        thermal_from_dos(e, -g, [300.0])
    # sinh(E/2kT) overflows in pymatgen's weights: refused, naming the temperature
    g_hi = _gaussian(e * 10, 450.0, 3.0, 3.0) * 10
    with pytest.raises(InputError, match="too low"):
        thermal_from_dos(e * 10, g_hi, [0.0, 0.5])


def test_silicon_dos_against_phonopy_mode_sum():
    """Si (phonopy's Si-CP2K DFT force set, 16³ Γ-centred mesh): phonopy's tetrahedron total DOS
    (0.05 THz pitch), per atom, through thermal_from_dos, against phonopy's own thermal
    properties summed over the modes of the same mesh. C_V and S at 300 K to 1 %, the
    zero-point energy to 1 %, F(300 K) to 1 % of the ZPE (F crosses zero near 450 K). Both see
    the same mesh frequencies; what differs is the tetrahedron interpolation and 0.2 meV bins
    against point sampling, small where kT = 26 meV varies slowly, and the three Γ acoustic
    modes phonopy leaves out (3 of 6 × 16³ modes)."""
    from mlff_ins.phonons.si_reference import dft_reference
    from mlff_ins.phonons.properties import thermal_properties

    _, ph, _ = dft_reference()
    mesh = [16, 16, 16]
    ref = thermal_properties([ph], mesh, t_max=1000, t_step=100)
    ph.run_mesh(mesh, is_gamma_center=True)
    ph.run_total_dos(freq_pitch=0.05)
    f = np.asarray(ph.total_dos.frequency_points)
    n = len(ph.primitive.symbols)
    ours = thermal_from_dos(f * MEV_PER_THZ, np.asarray(ph.total_dos.dos) / n / MEV_PER_THZ,
                            ref["temperature_K"])
    i = int(np.flatnonzero(ref["temperature_K"] == 300)[0])
    a, b = ours["per_atom"], ref["per_atom"]
    for key in ("heat_capacity", "entropy"):
        assert a[key][0, i] == pytest.approx(b[key][0, i], rel=0.01), key
    zpe = b["zero_point_energy"][0]
    assert a["zero_point_energy"][0] == pytest.approx(zpe, rel=0.01)
    assert a["free_energy"][0, i] == pytest.approx(b["free_energy"][0, i], abs=0.01 * zpe)
    assert ours["n_dropped"] > 0 and ours["dropped_modes_per_atom"] < 1e-4  # zeros below 0


def _write(path, **groups):
    write_spectra(path, {name: Spectrum1D(kind=kind, x=x, intensity=y, units="1/meV",
                                          element=el, source="md")
                         for name, (kind, x, y, el) in groups.items()})
    return str(path)


def test_thermo_command(tmp_path, capsys):
    """A file with a total VDOS and two element partials (area 3 × atom fraction): the total
    gives the table, the CSV (units in its header row) and the C_V plot; a partial gives values
    per atom of its element."""
    e = np.arange(0.25, 80.0, 0.5)
    g_mg = _gaussian(e, 30.0, 3.0, 1.5)
    g_o = _gaussian(e, 60.0, 3.0, 1.5)
    path = _write(tmp_path / "md_spectra.h5", vdos=("vdos", e, g_mg + g_o, ""),
                  vdos_Mg=("vdos", e, g_mg, "Mg"), vdos_O=("vdos", e, g_o, "O"),
                  gdos=("gdos", e, g_mg + g_o, ""))
    csv = tmp_path / "out" / "mgo.csv"
    assert main(["thermo", path, "-o", str(csv), "--plot", "--t-max", "500", "--t-step", "50",
                 "--atoms-per-formula", "2"]) == 0
    out = capsys.readouterr().out
    assert "zero-point energy" in out and "300" in out and "500" in out
    lines = csv.read_text().splitlines()
    header = next(ln for ln in lines if not ln.startswith("#"))
    assert "temperature (K)" in header and "J/(K mol)" in header and "kJ/mol" in header
    table = np.loadtxt(csv, delimiter=",", comments="#", skiprows=lines.index(header) + 1)
    assert table.shape == (11, 9)
    th = thermal_from_spectra_file(path, t_max=500, t_step=50, n_atoms_per_formula=2)
    np.testing.assert_allclose(table[:, 1], th["per_atom"]["heat_capacity"][0], rtol=1e-9)
    np.testing.assert_allclose(table[:, 6], 2 * table[:, 1], rtol=1e-9)
    assert th["formula"] == "Mg-O" and th["group"] == "vdos"
    assert (tmp_path / "out" / "mgo_heat_capacity.png").stat().st_size > 0
    # the O partial, rescaled from 1.5 to 3: per atom of O, an Einstein solid at ~60 meV
    part = thermal_from_spectra_file(path, group="vdos_O", t_max=500, t_step=50)
    assert part["dos_area_per_atom"] == pytest.approx(1.5, rel=1e-3)
    assert part["per_atom"]["zero_point_energy_meV"][0] == pytest.approx(90.0, rel=2e-3)
    assert main(["thermo", path, "--group", "vdos_O", "-o", str(tmp_path / "o.csv")]) == 0
    assert "per atom of O" in capsys.readouterr().out


@pytest.mark.parametrize("what, argv, message", [
    ("no vdos", [], "spectra --vdos"),
    ("bad area", [], "area 2.4"),
    ("gdos group", ["--group", "gdos"], "not a VDOS"),
    ("missing group", ["--group", "vdos_X"], "no group vdos_X"),
])
def test_thermo_command_refuses_with_one_line(what, argv, message, tmp_path, capsys):
    e = np.arange(0.25, 80.0, 0.5)
    g = _gaussian(e, 30.0, 3.0, 3.0)
    groups = {"no vdos": {"s_e": ("s_e", e, g, "")},
              "bad area": {"vdos": ("vdos", e, 0.8 * g, "")}}.get(
        what, {"vdos": ("vdos", e, g, ""), "gdos": ("gdos", e, g, "")})
    path = _write(tmp_path / "in.h5", **groups)
    csv = tmp_path / "t.csv"
    assert main(["thermo", path, "-o", str(csv), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "in.h5" in err, err
    assert not csv.exists()


def test_thermo_on_a_phonons_file_points_to_what_it_holds(tmp_path, capsys):
    """A phonons file (`mlff-ins phonons`) has no spectra groups: the error says its /thermal
    holds the thermodynamics already and how to get a VDOS file from it."""
    from pathlib import Path

    src = Path(__file__).parent / "data" / "phonopy" / "MgO"
    out = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(src), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["thermo", str(out), "-o", str(tmp_path / "t.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a phonons file" in err and "/thermal" in err, err
