"""INS from phonons: peers (phonopy's dynamic structure factor and thermal displacements),
analytic cases (nearest-neighbour fcc springs, Einstein solid), sum rules and kinematics."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from mlff_ins.cli import main
from mlff_ins.ins.engine import incoherent_sqe
from mlff_ins.ins.modes import ModeSet, coherent_modes, coherent_powder_sqe
from mlff_ins.ins.incoherent import NEUTRON_MASS_AMU
from mlff_ins.neutron.instruments import INSTRUMENTS, MEV_PER_INVCM
from mlff_ins.neutron.kinematics import E_PER_K2, q_limits
from mlff_ins.neutron.spectrum import read_spectra
from mlff_ins.phonons.finite_displacement import phonons_from_force_sets
from mlff_ins.phonons.properties import MEV_PER_THZ

DATA = Path(__file__).parent / "data" / "phonopy"
warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")


def test_coherent_intensities_and_debye_waller_equal_phonopy():
    """NaCl (two atoms, so the phase convention matters) at 300 K: per-mode one-phonon
    intensities are phonopy's DynamicStructureFactor times one unit constant (to 1e-6), and our
    thermal displacement tensors are phonopy's (to 1e-4: rounded physical constants)."""
    from phonopy.phonon.thermal_displacement import ThermalDisplacementMatrices
    from phonopy.spectrum.dynamic_structure_factor import DynamicStructureFactor
    from phonopy.physical_units import get_physical_units

    ph = phonons_from_force_sets(DATA / "NaCl").members[0]
    T = 300.0
    modes = ModeSet(ph, [8, 8, 8], T)
    td = ThermalDisplacementMatrices(ph.mesh, freq_min=modes.freq_min_THz)
    td.temperatures = [T]
    td.run()
    ref_b = td.thermal_displacement_matrices[0]
    assert np.abs(modes.B - ref_b).max() <= 1e-4 * np.abs(ref_b).max()
    b = {"Na": 3.63, "Cl": 9.577}
    q_red = np.array([[2.1, 0.3, -0.4], [0.1, 0.2, 0.05], [3.3, 2.7, 1.1], [-1.2, 0.6, 2.2]])
    dsf = DynamicStructureFactor(ph.mesh, q_red, T, scattering_lengths=b,
                                 freq_min=modes.freq_min_THz)
    dsf.run()
    q_cart = 2 * np.pi * q_red @ np.linalg.inv(ph.primitive.cell).T
    e, inten = coherent_modes(modes, q_cart, [b[s] for s in ph.primitive.symbols])
    np.testing.assert_allclose(e / MEV_PER_THZ, dsf.frequencies, rtol=1e-9, atol=1e-9)
    ratio = inten / dsf.dynamic_structure_factors
    # ours: barn/sr per atom with b/10 in sqrt(barn), ħ²/2M = 2.0721 m_n/M meV Å², ħω in meV;
    # phonopy: b²|Q·e|²/(2 M f) / (AMU (2π THz)²) with Q without 2π
    u = get_physical_units()
    expected = (2 * E_PER_K2 * NEUTRON_MASS_AMU / (100 * MEV_PER_THZ)
                * u.AMU * (2 * np.pi * u.THz) ** 2 / 2)
    assert np.ptp(ratio) <= 1e-6 * ratio.mean()
    assert ratio.mean() == pytest.approx(expected, rel=1e-4)


def _fcc_springs(a=4.0, k=1.5, mass=60.0):
    """Monatomic fcc with nearest-neighbour central springs k (eV/Å²), full force constants."""
    from mlff_ins.phonons.finite_displacement import to_phonopy_atoms
    from phonopy import Phonopy

    prim = bulk("Cu", "fcc", a=a)
    prim.set_masses([mass])
    ph = Phonopy(to_phonopy_atoms(prim), supercell_matrix=np.diag([4, 4, 4]))
    sc = ph.supercell
    from ase import Atoms
    s_atoms = Atoms(numbers=sc.numbers, cell=sc.cell, scaled_positions=sc.scaled_positions,
                    pbc=True)
    i, j, d = neighbor_list("ijD", s_atoms, a / np.sqrt(2) * 1.1)
    n = len(s_atoms)
    fc = np.zeros((n, n, 3, 3))
    for ii, jj, dd in zip(i, j, d):
        u = dd / np.linalg.norm(dd)
        fc[ii, jj] -= k * np.outer(u, u)
        fc[ii, ii] += k * np.outer(u, u)
    ph.force_constants = fc
    nn = np.array([v for v in (a / 2) * np.array(
        [[s1 * x, s2 * y, s3 * z] for x, y, z in [(1, 1, 0), (1, 0, 1), (0, 1, 1)]
         for s1 in (1, -1) for s2 in (1, -1) for s3 in (1, -1)]) if np.count_nonzero(v) == 2])
    nn = np.unique(nn, axis=0)
    assert len(nn) == 12
    return ph, nn, k, mass


def test_fcc_nearest_neighbour_springs_dispersion_and_intensity():
    """One-phonon coherent S(Q,E) of a monatomic fcc spring model against the analytic
    dynamical matrix D(Q) = (k/M) Σ_d (1 − cos Q·d) d̂d̂ᵀ: every mode energy, and the total
    intensity Σ_ν |Q·e_ν|²/ħω_ν = Qᵀ (ħ²D)^(-1/2) Q, with the Debye–Waller factor."""
    ph, nn, k, mass = _fcc_springs()
    modes = ModeSet(ph, [8, 8, 8], 5.0)
    b = 7.718
    rng = np.random.default_rng(1)
    q_cart = rng.normal(size=(20, 3)) * 2.0
    e, inten = coherent_modes(modes, q_cart, [b])
    from phonopy.physical_units import get_physical_units

    # sqrt(eV/Å²/amu) -> THz with phonopy's own constant, so only the model is compared
    hbar_omega = get_physical_units().DefaultToTHz * MEV_PER_THZ
    u2 = modes.B[0]
    for qv, ev, iv in zip(q_cart, e, inten):
        d = sum((1 - np.cos(qv @ r)) * np.outer(r, r) / (r @ r) for r in nn) * k / mass
        w2, vec = np.linalg.eigh(d)
        e_an = np.sqrt(w2) * hbar_omega
        np.testing.assert_allclose(np.sort(ev), e_an, rtol=1e-9)
        proj = (vec.T @ qv) ** 2
        n_bose = 1 / np.expm1(e_an / (8.617333262e-2 * 5.0))
        expected = ((b / 10) ** 2 * E_PER_K2 * NEUTRON_MASS_AMU / mass
                    * np.exp(-qv @ u2 @ qv) * np.sum(proj / e_an * (n_bose + 1)))
        assert iv.sum() == pytest.approx(expected, rel=1e-6)


def test_powder_coherent_sum_rule_at_large_q():
    """Powder one-phonon intensity weighted by energy obeys Σ_ν ħω_ν I_ν = σ_coh/4π E_R e^{−2W}
    (f-sum rule of a monatomic crystal, T = 0), here summed over the binned map."""
    ph, nn, k, mass = _fcc_springs()
    modes = ModeSet(ph, [8, 8, 8], 0.0)
    b = 7.718
    q = np.array([2.0, 4.0, 6.0])
    e = np.arange(0.0, 80.0, 0.25)
    s = coherent_powder_sqe(modes, q, e, [b], n_directions=300)
    first_moment = (s * e).sum(axis=1) * 0.25
    u2 = modes.u2[0]
    er = E_PER_K2 * NEUTRON_MASS_AMU / mass * q ** 2
    np.testing.assert_allclose(first_moment, (b / 10) ** 2 * er * np.exp(-q ** 2 * u2),
                               rtol=2e-3)


def _einstein_solid(omega_thz_target=5.0, mass=12.0):
    from mlff_ins.phonons.finite_displacement import to_phonopy_atoms
    from phonopy import Phonopy

    prim = bulk("C", "sc", a=3.0)
    prim.set_masses([mass])
    ph = Phonopy(to_phonopy_atoms(prim), supercell_matrix=np.diag([2, 2, 2]))
    n = len(ph.supercell)
    fc = np.zeros((n, n, 3, 3))
    # ω² = k/M (THz → rad/s with phonopy's conversion): pick k for the target frequency
    k = mass * (omega_thz_target / 15.633302) ** 2
    for i in range(n):
        fc[i, i] = k * np.eye(3)
    ph.force_constants = fc
    return ph


def test_einstein_solid_poisson_series_and_debye_waller():
    """One harmonic oscillator per atom at T → 0: the n-phonon areas are σ/4π e^{−x} xⁿ/n! with
    x = Q²⟨u²⟩ = E_R/ħω₀, and all orders together give σ/4π (1 − e^{−x}) (the elastic rest)."""
    ph = _einstein_solid()
    modes = ModeSet(ph, [4, 4, 4], 1.0)
    e0 = float(modes.freqs.max()) * MEV_PER_THZ
    np.testing.assert_allclose(modes.freqs * MEV_PER_THZ, e0, rtol=1e-10)
    mass = modes.masses[0]
    assert modes.u2[0] == pytest.approx(E_PER_K2 * NEUTRON_MASS_AMU / mass / e0, rel=1e-10)
    q = np.array([3.0, 6.0, 9.0])
    de = e0 / 400          # ħω₀ on the grid: modes are binned to the nearest grid energy
    e = np.arange(0.0, 12 * e0, de)
    energies, s = incoherent_sqe(modes.source(e), q, [4 * np.pi], n_phonon=10)
    x = E_PER_K2 * NEUTRON_MASS_AMU / mass * q ** 2 / e0
    for n in range(1, 5):
        window = np.abs(energies - n * e0) < 0.5 * e0
        area = s[:, window].sum(axis=1) * de
        np.testing.assert_allclose(area, np.exp(-x) * x ** n / math.factorial(n), rtol=1e-6)
    total = s.sum(axis=1) * de
    tail = 1 - sum(np.exp(-x) * x ** n / math.factorial(n) for n in range(11))
    np.testing.assert_allclose(total, 1 - np.exp(-x) - tail, rtol=1e-6)
    # convergence with order: the 6-order sum misses only the Poisson tail beyond n = 6
    _, s6 = incoherent_sqe(modes.source(e), q, [4 * np.pi], n_phonon=6)
    missing = (total - s6.sum(axis=1) * de)
    expect = sum(np.exp(-x) * x ** n / math.factorial(n) for n in range(7, 11))
    np.testing.assert_allclose(missing, expect, rtol=1e-5, atol=1e-12)


def test_vision_overtones_of_an_einstein_solid_have_poisson_weights():
    """VISION S(E) of an Einstein solid at T -> 0, each bank: the n-phonon peak sits at n ħω₀
    and its area is σ/4π e^{-x} xⁿ/n! with x = E_R(Q)/ħω₀ at the Q that bank sees at n ħω₀
    (the resolution keeps areas)."""
    from types import SimpleNamespace

    from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
    from mlff_ins.neutron.scattering_lengths import sigma_total_barn

    ph = _einstein_solid()
    e0 = 5.0 * MEV_PER_THZ
    opts = InsOptions(instrument="vision", temperature_K=1.0, mesh=[2, 2, 2], n_phonon=6,
                      e_max_meV=4.5 * e0, e_step_meV=e0 / 200)
    sp = ins_from_phonons(SimpleNamespace(members=[ph]), opts)
    e = sp["s_e"].x
    sigma = sigma_total_barn("C")
    vision = INSTRUMENTS["vision"]
    for angle in (45, 135):
        s = sp[f"s_e_{angle}"].intensity
        for n in (1, 2, 3, 4):
            window = np.abs(e - n * e0) < 0.5 * e0
            assert e[window][np.argmax(s[window])] == pytest.approx(n * e0, abs=0.6)
            q = vision.q_of_energy(n * e0, angle)
            x = E_PER_K2 * NEUTRON_MASS_AMU / 12.0 * q ** 2 / e0
            expect = sigma / (4 * np.pi) * np.exp(-x) * x ** n / math.factorial(n)
            assert s[window].sum() * opts.e_step_meV == pytest.approx(expect, rel=2e-3)


def test_site_dos_keeps_the_weight_of_modes_above_the_grid():
    """Modes at 10, 10 and 300 meV on a 0–150 meV grid: the DOS has area 2/3, not 1, and a
    warning says a third of the modes are off the grid."""
    from mlff_ins.ins.modes import site_dos

    freqs = np.array([[10.0, 10.0, 300.0]]) / MEV_PER_THZ
    grid = np.arange(0.0, 150.0, 0.5)
    with pytest.warns(UserWarning, match=r"33.3% of the vibrational modes lie above"):
        dos = site_dos(freqs, np.eye(3)[None], [1.0], 1, grid)
    assert dos.sum() * 0.5 == pytest.approx(2 / 3, rel=1e-12)
    assert dos[0, 20] * 0.5 == pytest.approx(2 / 3, rel=1e-12)


def test_anisotropic_oscillator_above_the_grid_keeps_the_absolute_intensity():
    """An atom (hydrogen-like mass 1) on springs soft in x, y (ħω 40 meV) and stiff in z
    (ħω 400 meV, an X–H stretch), on the default 0–150 meV grid of `ins --2d`: at small Q the
    one-phonon area at 40 meV is σ/4π · (2/3) E_R/ħω_xy e^{-Q²⟨u²⟩}, the exact powder average of
    the two soft directions (the stretch must not be folded into them)."""
    from mlff_ins.phonons.finite_displacement import to_phonopy_atoms
    from phonopy import Phonopy

    prim = bulk("H", "sc", a=3.0)
    prim.set_masses([1.0])
    ph = Phonopy(to_phonopy_atoms(prim), supercell_matrix=np.diag([2, 2, 2]))
    n = len(ph.supercell)
    k_xy, k_z = [(e / MEV_PER_THZ / 15.633302) ** 2 for e in (40.0, 400.0)]   # mass 1
    fc = np.zeros((n, n, 3, 3))
    for i in range(n):
        fc[i, i] = np.diag([k_xy, k_xy, k_z])
    ph.force_constants = fc
    with pytest.warns(UserWarning, match="above the energy grid"):
        modes = ModeSet(ph, [2, 2, 2], 1.0)
        q = np.array([0.5, 1.0, 2.0])
        de = 0.5
        energies, s = incoherent_sqe(modes.source(np.arange(0.0, 150.0 + de / 2, de)), q,
                                     [4 * np.pi], n_phonon=1)
    window = np.abs(energies - 40.0) < 5
    area = s[:, window].sum(axis=1) * de
    er = E_PER_K2 * NEUTRON_MASS_AMU / 1.0 * q ** 2
    np.testing.assert_allclose(area, (2 / 3) * er / 40.0 * np.exp(-q ** 2 * modes.u2[0]),
                               rtol=1e-6)


def test_ins_2d_with_one_phonon_order(tmp_path):
    """`ins --2d --phonon-orders 1`: the coherent + incoherent one-phonon map, no crash."""
    ph5 = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(DATA / "MgO"), "--mesh", "4", "4", "4",
                 "-o", str(ph5)]) == 0
    out = {}
    for orders in ("1", "3"):
        path = tmp_path / f"mgo_{orders}.h5"
        assert main(["ins", str(ph5), "--2d", "--phonon-orders", orders, "--directions", "10",
                     "--q-max", "6", "--mesh", "4", "4", "4", "-o", str(path)]) == 0
        out[orders] = read_spectra(path)
    one, three = out["1"], out["3"]
    assert np.all(np.isfinite(one["sqe"].intensity)) and one["sqe"].intensity.max() > 0
    # the coherent one-phonon part is the same; orders 2-3 only add intensity
    np.testing.assert_array_equal(one["sqe_coh"].intensity.shape, three["sqe_coh"].intensity.shape)
    assert np.all(three["sqe"].intensity >= one["sqe"].intensity - 1e-15)
    assert (three["sqe"].intensity - one["sqe"].intensity).max() > 0


def test_ins_names_soft_and_imaginary_modes(capsys, tmp_path):
    """Modes below 0.05 THz (other than the acoustic ones at Γ) are left out of the INS: `ins`
    says how many and where."""
    ph = _einstein_solid()
    fc = ph.force_constants.copy()
    fc *= -1      # every mode imaginary
    ph.force_constants = fc
    with pytest.warns(UserWarning, match=r"24 soft or imaginary modes .* at 8 q-points"):
        ModeSet(ph, [2, 2, 2], 10.0)


def test_kinematics_by_hand():
    # TOSCA, 45° bank, E = 100 meV: k_i² = (100 + 3.967)/2.0721, k_f² = 3.967/2.0721
    tosca = INSTRUMENTS["tosca"]
    ef = 32 * MEV_PER_INVCM
    ki, kf = np.sqrt((100 + ef) / E_PER_K2), np.sqrt(ef / E_PER_K2)
    q45 = np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(45)))
    assert tosca.q_of_energy(100.0, 45.0) == pytest.approx(q45, rel=1e-12)
    assert q45 == pytest.approx(6.183, abs=1e-3)          # by hand: ki 7.0834, kf 1.3837
    # direct geometry, Ei = 100 meV, E = 40 meV, 2θ from 3° to 135°
    qmin, qmax = q_limits(np.array([40.0]), 100.0, (3.0, 135.0))
    ki, kf = np.sqrt(100 / E_PER_K2), np.sqrt(60 / E_PER_K2)
    assert qmin[0] == pytest.approx(np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(3))))
    assert qmax[0] == pytest.approx(np.sqrt(ki ** 2 + kf ** 2 - 2 * ki * kf * np.cos(np.radians(135))))
    # by hand: ki 6.9469, kf 5.3811
    assert (qmin[0], qmax[0]) == pytest.approx((1.598, 11.405), abs=1e-3)


def test_cli_ins_from_force_sets_vision_and_direct(tmp_path, capsys):
    ph5 = tmp_path / "mgo.h5"
    assert main(["phonons", "--force-sets", str(DATA / "MgO"), "--mesh", "6", "6", "6",
                 "-o", str(ph5)]) == 0
    out = tmp_path / "mgo_vision.h5"
    assert main(["ins", str(ph5), "--instrument", "vision", "--mesh", "6", "6", "6",
                 "-o", str(out), "--plot"]) == 0
    sp = read_spectra(out)
    assert {"s_e", "s_e_45", "s_e_135", "s_e_Mg", "s_e_O"} <= set(sp)
    np.testing.assert_allclose(sp["s_e_Mg"].intensity + sp["s_e_O"].intensity,
                               sp["s_e"].intensity, rtol=1e-10, atol=1e-14)
    assert sp["s_e"].source == "phonons" and sp["s_e"].instrument == "vision"
    # the phonon DOS beside it: 3 modes per atom (area 3 to the rectangle rule, every mode of
    # MgO lies below the 500 meV grid end), element partials summing to it, equal areas for
    # Mg and O (one of each per cell, every mode normalised per atom)
    dos = sp["vdos"]
    assert dos.kind == "vdos" and dos.source == "phonons"
    assert dos.area() == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_allclose(sp["vdos_Mg"].intensity + sp["vdos_O"].intensity, dos.intensity,
                               rtol=1e-12, atol=1e-14)
    assert sp["vdos_Mg"].area() == pytest.approx(1.5, rel=1e-6)
    # the highest MgO phonon is near 75 meV: the one-phonon band ends there, overtones beyond
    e = sp["s_e"].x
    assert e[np.argmax(sp["s_e"].intensity)] < 80
    d = tmp_path / "mgo_direct.h5"
    assert main(["ins", str(ph5), "--instrument", "direct", "--ei", "120", "--resolution", "0.03",
                 "--directions", "30", "--q-max", "8", "--mesh", "4", "4", "4",
                 "-o", str(d)]) == 0
    sq = read_spectra(d)["sqe"]
    masked = np.isnan(sq.intensity)
    assert masked.any() and (~masked).any()
    # the mask is the kinematic range of Ei = 120 meV, 2θ = 3..135° (bin centres)
    qmin, qmax = q_limits(sq.y, 120.0, (3.0, 135.0))
    inside = (sq.q[:, None] >= qmin[None, :]) & (sq.q[:, None] <= qmax[None, :])
    np.testing.assert_array_equal(~masked, inside)
    # a wrong isotope is one line naming the option
    assert main(["ins", str(ph5), "--isotope", "H=2", "-o", str(tmp_path / "x.h5")]) == 2
    assert "--isotope H=..." in capsys.readouterr().err


def test_ins_ensemble_error_band_and_isotope(tiny_bundle, tmp_path):
    from ase.io import write

    cif = tmp_path / "si.cif"
    write(cif, bulk("Si", "diamond", 5.43))
    ph5 = tmp_path / "si.h5"
    assert main(["phonons", str(cif), "--model", str(tiny_bundle), "--supercell", "2", "2", "2",
                 "--mesh", "6", "6", "6", "-o", str(ph5)]) == 0
    out = tmp_path / "si_tosca.h5"
    assert main(["ins", str(ph5), "--instrument", "tosca", "--mesh", "6", "6", "6",
                 "--e-max", "200", "-o", str(out)]) == 0
    s = read_spectra(out)["s_e"]
    assert s.intensity_std is not None and s.intensity_std.max() > 0
    assert "ensemble members" in s.provenance["intensity_std"]
    heavy = tmp_path / "si30.h5"
    assert main(["ins", str(ph5), "--instrument", "tosca", "--mesh", "6", "6", "6",
                 "--e-max", "200", "--isotope", "Si=30", "-o", str(heavy)]) == 0
    h = read_spectra(heavy)["s_e"]
    mean_e = (s.x * s.intensity).sum() / s.intensity.sum()
    mean_h = (h.x * h.intensity).sum() / h.intensity.sum()
    # heavier isotope: phonon energies scale like 1/sqrt(M) (first moment within 2 %)
    ratio = np.sqrt(28.0855 / 29.97377)
    assert mean_h / mean_e == pytest.approx(ratio, rel=0.02)


def test_coherent_cross_sections_are_the_tabulated_ones_for_absorbers():
    """σ_coh is the tabulated value (Sears 1992 via periodictable): for Gd, whose b_coh has a
    large imaginary part, 4π Re(b)² would give 11.3 barn instead of 29.3; for Si the two agree
    to the table's rounding (0.2 %). σ_total = σ_coh + σ_inc as tabulated."""
    import periodictable

    from mlff_ins.neutron.scattering_lengths import (b_coh_fm, sigma_coh_barn, sigma_inc_barn,
                                                     sigma_total_barn)

    for el in ("Gd", "Cd", "Sm", "B", "Si", "H"):
        n = periodictable.elements.symbol(el).neutron
        assert sigma_coh_barn(el) == pytest.approx(n.coherent, rel=1e-12)
        assert sigma_total_barn(el) == pytest.approx(n.coherent + n.incoherent, rel=1e-12)
    assert 4 * np.pi * b_coh_fm("Gd") ** 2 / 100 < 0.5 * sigma_coh_barn("Gd")
    assert sigma_coh_barn("Si") == pytest.approx(4 * np.pi * b_coh_fm("Si") ** 2 / 100, rel=2e-3)
    assert sigma_inc_barn("Gd") == pytest.approx(151.0)


def test_coherent_weights_of_absorbers_keep_the_imaginary_length():
    """Coherent intensities weight a pair of atoms by Re(b_a b_b*) (Squires ch. 3): an absorber's
    own pair |b|² (Gd: 9.5 − 13.6i fm, |b|² = 2.75 barn, Re(b)² only 0.90), a pair with a real
    length b_O Re(b_Gd); the MD route's weights and the phonon route's amplitudes both."""
    from types import SimpleNamespace

    from mlff_ins.analysis.spectra_md import _weights
    from mlff_ins.ins.from_phonons import site_table
    from mlff_ins.neutron.scattering_lengths import b_coh_complex_fm, b_coh_fm

    b_gd, b_o = b_coh_complex_fm("Gd"), b_coh_complex_fm("O")
    assert b_gd == complex(9.5, -13.6) and b_o.imag == 0.0 and b_o.real == b_coh_fm("O")
    corr = SimpleNamespace(fqt_coh={("Gd", "Gd"): None, ("Gd", "O"): None}, fqt_inc={})
    coh, _, _ = _weights(corr, "neutron")
    assert coh[("Gd", "Gd")] == pytest.approx((9.5 ** 2 + 13.6 ** 2) / 100, rel=1e-12)
    assert coh[("Gd", "O")] == pytest.approx(9.5 * b_o.real / 100, rel=1e-12)
    ph = SimpleNamespace(primitive=SimpleNamespace(symbols=["Gd", "O"], masses=[157.25, 16.0]))
    assert site_table(ph, {})["b_coh"][0] == b_gd


def test_modes_below_half_the_grid_step_are_reported():
    """A mode at 0.3 meV on a grid of 1 meV steps lands in the E = 0 bin, which S(E) leaves
    out: the DOS says how much (here a quarter of the modes); on a 0.2 meV grid it is kept,
    silently."""
    from mlff_ins.ins.modes import site_dos
    from mlff_ins.neutron.units import MEV_PER_THZ

    freqs = np.array([[0.3, 5.0, 6.0, 7.0]]) / MEV_PER_THZ     # THz, one q-point
    # eigenvectors (q-points, 3 x 1 atom, modes) of equal weight in every mode
    with pytest.warns(UserWarning, match="25.00% of the vibrational modes lie below half"):
        site_dos(freqs, np.ones((1, 3, 4)), [1.0], 1, np.arange(0, 10.0, 1.0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dos = site_dos(freqs, np.ones((1, 3, 4)), [1.0], 1, np.arange(0, 10.0, 0.2))
    assert dos[0, 0] == 0.0 and dos.sum() * 0.2 == pytest.approx(1.0)
