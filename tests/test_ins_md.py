"""Incoherent-approximation INS (VISION/TOSCA) from a DOS: Poisson phonon orders for an Einstein
oscillator, indirect-geometry kinematics and resolution, and the `--instrument vision` command."""

import numpy as np
import pytest

from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory
from mlff_ins.analysis.synthetic import damped_oscillators
from mlff_ins.analysis.trajectory import ArrayTrajectory
from mlff_ins.ins.incoherent import (phonon_orders, powder_s_qe,
                                                       recoil_energy_meV, u2_from_dos)
from mlff_ins.neutron.instruments import INSTRUMENTS, MEV_PER_INVCM
from mlff_ins.neutron.kinematics import E_PER_K2


def _einstein_dos(e0, de=0.25, e_max=400.0, width=0.5):
    e = np.arange(0, e_max + de / 2, de)
    z = np.exp(-0.5 * ((e - e0) / width) ** 2)
    return e, z / (z.sum() * de)


def test_einstein_oscillator_orders_are_poisson():
    """Order n carries e^{−x}xⁿ/n! of the intensity at nE0, x = E_R/E0 = Q²⟨u²⟩ (T → 0)."""
    e0, mass, q, T = 50.0, 12.0, 8.0, 2.0
    e, z = _einstein_dos(e0)
    u2 = u2_from_dos(e, z, mass, T)
    x = recoil_energy_meV(q, mass) / e0
    assert q * q * u2 == pytest.approx(x, rel=1e-3)  # ⟨u²⟩ = ħ²/2ME0 at T = 0
    energies, total, orders = powder_s_qe(lambda en: np.full_like(en, q), e, {"C": z},
                                          {"C": 1.0}, {"C": mass}, {"C": u2}, T, n_max=6)
    de = energies[1] - energies[0]
    for n, s_n in enumerate(orders, start=1):
        poisson = np.exp(-x) * x ** n / float(np.prod(np.arange(1, n + 1)))
        assert s_n.sum() * de == pytest.approx(poisson, rel=2e-3)
        assert energies[np.argmax(s_n)] == pytest.approx(n * e0, abs=2 * de)
    assert total.sum() * de == pytest.approx(sum(np.exp(-x) * x ** n / float(
        np.prod(np.arange(1, n + 1))) for n in range(1, 7)), rel=2e-3)


def test_detailed_balance_of_the_one_phonon_kernel():
    e, z = _einstein_dos(20.0, width=2.0)
    T = 100.0
    energies, (t1,) = phonon_orders(e, z, T, n_max=1)
    k = 0.08617333262 * T
    pos = energies > 1.0
    mirrored = t1[::-1][pos]
    np.testing.assert_allclose(mirrored, t1[pos] * np.exp(-energies[pos] / k), rtol=1e-10,
                               atol=1e-300)


def test_indirect_kinematics_and_resolution():
    vision = INSTRUMENTS["vision"]
    kf = np.sqrt(3.5 / E_PER_K2)
    # elastic line: Q = 2 k_f sin(θ) for scattering angle 2θ
    assert vision.q_of_energy(0.0, 135.0) == pytest.approx(2 * kf * np.sin(np.radians(67.5)))
    # high energy transfer: Q ≈ k_i for a 45° bank at E ≫ E_f grows like √E
    assert vision.q_of_energy(400.0, 45.0) > vision.q_of_energy(100.0, 45.0)
    assert vision.sigma_meV(0.0) == pytest.approx(2.5 * MEV_PER_INVCM)
    assert INSTRUMENTS["tosca"].final_energy_meV == pytest.approx(3.967, abs=1e-3)
    e = np.linspace(-50, 300, 1401)
    line = np.exp(-0.5 * ((e - 100) / 0.05) ** 2)
    b = vision.broaden(e, line)
    assert b.sum() == pytest.approx(line.sum(), rel=1e-3)       # area kept
    fwhm = np.ptp(e[b > b.max() / 2]) + (e[1] - e[0])
    assert fwhm == pytest.approx(2.3548 * vision.sigma_meV(100.0), rel=0.1)


def test_vision_spectrum_from_md_of_oscillators(tmp_path):
    """Einstein solid MD at 300 K: VISION S(E) peaks at ħω0 with its overtone at 2ħω0."""
    w0 = 0.06  # rad/fs -> 39.5 meV
    pos, vel, cell = damped_oscillators(n=64, frames=3000, every=2, h=0.5, mass=1.008, omega0=w0,
                                        gamma=0.004, temperature_K=300.0, seed=3)
    traj = ArrayTrajectory(["H"] * 64, pos, cell, 1.0, velocities=vel)
    out, summary = spectra_from_trajectory(None, SpectraOptions(instrument="vision",
                                                                time_window_fs=1000.0),
                                           traj=traj, progress=False)
    s = out["s_e"]
    e0 = w0 * 658.2119569509066
    assert s.kind == "s_e" and s.instrument == "vision" and s.x.min() == 0.0
    peak = s.x[np.argmax(s.intensity)]
    assert peak == pytest.approx(e0, abs=1.5)
    near_2 = (s.x > 2 * e0 - 4) & (s.x < 2 * e0 + 4)
    between = (s.x > 1.5 * e0 - 2) & (s.x < 1.5 * e0 + 2)
    assert s.intensity[near_2].max() > 3 * s.intensity[between].max()  # a real overtone
    assert summary["u2_A2"]["H"] > 0


def test_one_engine_einstein_solid_from_phonons_and_from_md():
    """The same Einstein solid (H, ħω₀ = 39.5 meV, 300 K) as phonon modes and as an MD trajectory
    goes through one INS engine: the same output groups, and the same absolute VISION S(E) —
    fundamental and first overtone areas, and the total — within what the MD line shape allows.

    Expected differences: the MD DOS is a Lorentzian of HWHM γ/2 = 0.66 meV (Langevin friction),
    whose tails beyond ±20 meV carry ~2% (~4% for the overtone, twice as wide); the DOS is
    normalised to area 1 on both routes, so the MD statistics enter only through its shape.
    Tolerances: 5% (fundamental, total) and 8% (overtone); peaks within 1 meV.
    """
    from ase.build import bulk
    from phonopy import Phonopy

    from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
    from mlff_ins.ins.modes import MEV_PER_THZ
    from mlff_ins.phonons.finite_displacement import PhononSet, to_phonopy_atoms

    hbar_mev_fs = 658.2119569509066
    w0, T, mass = 0.06, 300.0, 1.008
    e0 = w0 * hbar_mev_fs
    prim = bulk("H", "sc", a=3.0)
    prim.set_masses([mass])
    ph = Phonopy(to_phonopy_atoms(prim), supercell_matrix=np.eye(3, dtype=int))
    k = mass * (e0 / MEV_PER_THZ / 15.633302) ** 2           # ω² = k/M in phonopy's units
    ph.force_constants = k * np.eye(3)[None, None]
    phon = ins_from_phonons(PhononSet([ph], "einstein"),
                            InsOptions(instrument="vision", temperature_K=T, mesh=[2, 2, 2],
                                       e_max_meV=400.0, e_step_meV=0.1))

    pos, vel, cell = damped_oscillators(n=64, frames=4000, every=2, h=0.5, mass=mass, omega0=w0,
                                        gamma=0.002, temperature_K=T, seed=5)
    traj = ArrayTrajectory(["H"] * 64, pos, cell, 1.0, velocities=vel,
                           masses=np.full(64, mass))
    md, _ = spectra_from_trajectory(None, SpectraOptions(instrument="vision", vdos=False,
                                                         temperature_K=T,
                                                         time_window_fs=2000.0),
                                    traj=traj, progress=False)
    assert {k for k in md if k.startswith("s_e")} == {k for k in phon if k.startswith("s_e")} \
        == {"s_e", "s_e_45", "s_e_135"}

    def area(sp, lo, hi):
        x = sp.x
        inside = (x >= lo) & (x < hi)
        return sp.intensity[inside].sum() * (x[1] - x[0])

    for name in ("s_e", "s_e_45", "s_e_135"):
        a, b = phon[name], md[name]
        assert a.units == b.units == "barn/sr/meV" and a.instrument == b.instrument == "vision"
        assert a.x[np.argmax(a.intensity)] == pytest.approx(e0, abs=1.0)
        assert b.x[np.argmax(b.intensity)] == pytest.approx(e0, abs=1.0)
        assert area(b, e0 - 20, e0 + 20) == pytest.approx(area(a, e0 - 20, e0 + 20), rel=0.05)
        assert area(b, 2 * e0 - 20, 2 * e0 + 20) == pytest.approx(
            area(a, 2 * e0 - 20, 2 * e0 + 20), rel=0.08)
        assert area(b, 5, 300) == pytest.approx(area(a, 5, 300), rel=0.05)


def test_md_debye_waller_says_when_the_msd_has_no_plateau():
    """⟨u²⟩ from the MSD: an Einstein solid levels off (no warning); free Langevin particles
    never do, so the Debye–Waller factor depends on the window: a warning names the element and
    the provenance says what was used."""
    import warnings

    from mlff_ins.analysis.synthetic import langevin_particles

    pos, vel, cell = damped_oscillators(n=32, frames=2000, every=2, h=0.5, mass=12.0,
                                        omega0=0.05, gamma=0.01, temperature_K=300.0, seed=1)
    traj = ArrayTrajectory(["C"] * 32, pos, cell, 1.0, velocities=vel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = spectra_from_trajectory(None, SpectraOptions(instrument="tosca", vdos=False,
                                                              debye_waller="msd"),
                                         traj=traj, progress=False)
    assert "(plateau)" in out["s_e"].provenance["u2_source"]["C"]
    pos, vel, cell, _ = langevin_particles(n=40, frames=400, every=5, mass=39.95, box=15.0)
    liquid = ArrayTrajectory(["Ar"] * 40, pos, cell, 5.0, velocities=vel)
    with pytest.warns(UserWarning, match="MSD of Ar does not level off"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the VDOS of Ar")    # checked below
        out, _ = spectra_from_trajectory(None, SpectraOptions(instrument="tosca", vdos=False,
                                                              debye_waller="msd"),
                                         traj=liquid, progress=False)
    assert "no plateau" in out["s_e"].provenance["u2_source"]["Ar"]
    # a diffusing species has VDOS weight at E = 0, which is no vibration: left out, and said
    with pytest.warns(UserWarning, match="VDOS of Ar has .* of its area at E = 0"):
        spectra_from_trajectory(None, SpectraOptions(instrument="tosca", vdos=False),
                                traj=liquid, progress=False)


def test_md_debye_waller_is_the_quantum_one_from_the_vdos_and_from_the_msd():
    """Einstein H, ħω₀ = 39.5 meV at 300 K, where the quantum ⟨u_x²⟩ = (ħ²/2M) coth(x)/E₀
    (x = E₀/2kT = 0.76) is 1.19 times the classical kT/Mω₀² that the MD MSD measures. Both
    options give the quantum one, as the phonon orders need (with the classical one the orders
    summed to more than σ/4π at large Q). Tolerance 6 %: 64 oscillators over 8 ps with a velocity
    correlation time 1/γ = 0.5 ps give ~3000 independent samples of u², a relative standard error
    of √2/√3000 = 2.6 % on each estimate; 6 % is 2.3 of those. The unscaled MSD is 16 % low."""
    from mlff_ins.ins.incoherent import E_PER_K2, NEUTRON_MASS_AMU
    from mlff_ins.neutron.quantum import KB_MEV_PER_K

    T, mass, w0 = 300.0, 1.008, 0.06
    e0 = w0 * 658.2119569509066
    x = e0 / (2 * KB_MEV_PER_K * T)
    quantum = E_PER_K2 * NEUTRON_MASS_AMU / mass / e0 / np.tanh(x)
    pos, vel, cell = damped_oscillators(n=64, frames=4000, every=2, h=0.5, mass=mass, omega0=w0,
                                        gamma=0.002, temperature_K=T, seed=5)
    traj = ArrayTrajectory(["H"] * 64, pos, cell, 1.0, velocities=vel, masses=np.full(64, mass))
    for dw in ("vdos", "msd"):
        out, summary = spectra_from_trajectory(
            None, SpectraOptions(instrument="vision", vdos=False, temperature_K=T,
                                 debye_waller=dw, time_window_fs=2000.0),
            traj=traj, progress=False)
        assert summary["u2_A2"]["H"] == pytest.approx(quantum, rel=0.06), dw
        assert out["s_e"].provenance["debye_waller"] == dw
    assert "quantum/classical" in out["s_e"].provenance["u2_source"]["H"]


def test_quantum_over_classical_u2():
    """A single mode: ∫Z/E coth / ∫Z/E·2kT/E = x·coth(x), x = E/2kT (→ 1 when E ≪ 2kT); a DOS of
    two modes weighs each by Z/E²."""
    from mlff_ins.ins.incoherent import quantum_u2_ratio
    from mlff_ins.neutron.quantum import KB_MEV_PER_K

    e = np.arange(0.0, 200.0, 0.5)
    one = np.where(e == 100.0, 2.0, 0.0)
    x = 100.0 / (2 * KB_MEV_PER_K * 300.0)
    assert quantum_u2_ratio(e, one, 300.0) == pytest.approx(x / np.tanh(x), rel=1e-12)
    assert quantum_u2_ratio(e, one, 1e6) == pytest.approx(1.0, abs=1e-6)
    two = one + np.where(e == 10.0, 2.0, 0.0)
    x2 = 10.0 / (2 * KB_MEV_PER_K * 300.0)
    w = np.array([1 / 100.0**2, 1 / 10.0**2])
    expect = (w[0] * x / np.tanh(x) + w[1] * x2 / np.tanh(x2)) / w.sum()
    assert quantum_u2_ratio(e, two, 300.0) == pytest.approx(expect, rel=1e-12)


def test_md_masses_come_from_the_trajectory_and_isotopes_from_the_option(tmp_path):
    """A deuterated run stored with its masses (H5MD ``mass``) is analysed with them: the kinetic
    temperature is right (with H's mass it would come out halved) and the recoil uses 2.014 amu;
    `--isotope H=2` gives the cross sections of D."""
    from mlff_ins.analysis.trajectory import Trajectory
    from mlff_ins.data.h5md import H5MDWriter
    from mlff_ins.neutron.scattering_lengths import mass_amu, sigma_inc_barn, sigma_total_barn

    m_d = mass_amu("H", 2)
    pos, vel, cell = damped_oscillators(n=32, frames=1500, every=2, h=0.5, mass=m_d,
                                        omega0=0.05, gamma=0.01, temperature_K=300.0, seed=2)
    path = tmp_path / "deuterium.h5md"
    with H5MDWriter(path, ["H"] * 32, forces=False, masses=np.full(32, m_d)) as w:
        for i, (p, v) in enumerate(zip(pos, vel)):
            w.append(i, float(i), p, cell, velocities=v)
    traj = Trajectory(path)
    np.testing.assert_allclose(traj.masses, m_d)
    opts = SpectraOptions(instrument="vision", qens=True, q_max=2.0, q_per_shell=8)
    plain, summary = spectra_from_trajectory(path, opts, progress=False)
    # equipartition within the sampling of 32 oscillators x 1500 frames (5 %)
    assert summary["kinetic_temperature_K"] == pytest.approx(300.0, rel=0.05)
    assert plain["s_e"].provenance["masses_amu"]["H"] == pytest.approx(m_d)
    opts.isotopes = {"H": 2}
    deut, _ = spectra_from_trajectory(path, opts, progress=False)
    assert deut["s_e"].provenance["isotopes"] == {"H": 2}
    # same dynamics and mass: S(E) scales with σ_total, S_inc with σ_inc
    # (round-off: the FFT convolutions of the orders leave ~1e-16 of the maximum everywhere)
    for name, sigma in (("s_e", sigma_total_barn), ("sqe_inc", sigma_inc_barn)):
        expected = plain[name].intensity * sigma("H", 2) / sigma("H")
        np.testing.assert_allclose(deut[name].intensity, expected, rtol=1e-10,
                                   atol=1e-12 * np.abs(expected).max())


def test_spectra_isotope_option_on_the_command_line(tmp_path, capsys):
    """`spectra --isotope`: an element the trajectory lacks is refused in one line; an isotope
    whose mass differs from the mass the run used is applied with a warning that says so."""
    from mlff_ins.cli import main
    from mlff_ins.data.h5md import H5MDWriter

    pos, vel, cell = damped_oscillators(n=8, frames=200, every=2, h=0.5, mass=1.008,
                                        omega0=0.05, gamma=0.01, temperature_K=300.0, seed=4)
    path = tmp_path / "h.h5md"
    with H5MDWriter(path, ["H"] * 8, forces=False) as w:
        for i, (p, v) in enumerate(zip(pos, vel)):
            w.append(i, float(i), p, cell, velocities=v)
    out = tmp_path / "s.h5"
    assert main(["spectra", str(path), "-o", str(out), "--isotope", "O=18"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--isotope O=18" in err and "has no O" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["spectra", str(path), "-o", str(out), "--isotope", "H=2"]) == 0
    err = capsys.readouterr().err
    assert "ran H with mass 1.008" in err


def test_a_peak_of_md_s_e_inside_the_window_resolution_is_warned_about():
    """Einstein oscillators at ħω₀ = 6.6 meV, 300 K: with a 1.5 ps window (3.1 meV FWHM) S(E)
    peaks near E₀ and nothing is said; with a 150 fs window (31 meV FWHM) the windowed VDOS is
    smeared down to E = 0, the (n + 1)/E of S(E) puts its maximum inside the resolution, and a
    warning says so, with ``low_energy="as-is"`` and by default (a VDOS with more than 1 % of
    its area at E = 0 is used as computed)."""
    import warnings

    pos, vel, cell = damped_oscillators(n=32, frames=4000, every=2, h=0.5, mass=12.0,
                                        omega0=0.01, gamma=0.001, temperature_K=300.0, seed=1)
    traj = ArrayTrajectory(["C"] * 32, pos, cell, 1.0, velocities=vel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = spectra_from_trajectory(None, SpectraOptions(instrument="vision",
                                                              time_window_fs=1500.0),
                                         traj=traj, progress=False)
    s = out["s_e"]
    assert s.provenance["resolution_fwhm_meV"] < 4.0
    assert abs(s.x[np.argmax(s.intensity)] - 6.58) < s.provenance["resolution_fwhm_meV"]
    with pytest.warns(UserWarning, match="within the correlation window's energy resolution"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the VDOS of C")
        spectra_from_trajectory(None, SpectraOptions(instrument="vision", time_window_fs=150.0,
                                                     low_energy="as-is"),
                                traj=traj, progress=False)
    # by default too: with more than 1 % of its area at E = 0 this VDOS is not taken as a Debye
    # solid
    with pytest.warns(UserWarning, match="within the correlation window's energy resolution"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the VDOS of C")
        out, _ = spectra_from_trajectory(None, SpectraOptions(instrument="vision",
                                                              time_window_fs=150.0),
                                         traj=traj, progress=False)
    assert out["s_e"].provenance["low_energy"]["C"].startswith("as computed")


def test_a_debye_law_that_would_replace_vibrations_is_warned_about():
    """debye_below_resolution on analytic VDOS: a·(E² + σ²) (a Debye solid under a Gaussian
    window) becomes a·E²·(1 + σ²/E_m²) below E_m, the first bin at or above one FWHM, with no
    warning (the bins below hold under 1 % of the area); a band at 6.6 meV under a 31 meV FWHM
    is mostly replaced, and a warning says so."""
    import warnings

    from mlff_ins.analysis.pipeline import debye_below_resolution

    e = np.arange(0, 40, 0.25)
    fwhm = 2.0
    sigma = fwhm / np.sqrt(8 * np.log(2))
    g = 1e-3 * (e ** 2 + sigma ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        how = debye_below_resolution(e, g, fwhm)
    assert "below 2 meV" in how
    np.testing.assert_allclose(g[e < 2], 1e-3 * e[e < 2] ** 2 * (1 + sigma ** 2 / 4), rtol=1e-12)
    np.testing.assert_allclose(g[e >= 2], 1e-3 * (e[e >= 2] ** 2 + sigma ** 2), rtol=1e-12)
    band = np.exp(-0.5 * ((e - 6.6) / 1.0) ** 2)
    with pytest.warns(UserWarning, match="covers 100% of the VDOS area"):
        debye_below_resolution(e, band, 31.0)


def test_the_vdos_below_the_window_resolution_follows_debye_and_s_e_has_no_spike():
    """A Debye solid: 1000 oscillators with frequencies spread as ω² up to ħω_D = 19.7 meV (MD
    at 300 K, weak friction), and the exact Debye DOS 3E²/E_D³ through the same engine. Below
    the window's resolution the windowed VDOS is a·(E² + σ²) instead of a·E², which the 1/E and
    Bose factors of S(E) turn into a spike at the first bins: as computed, the first bin above
    E = 0 should be high by the factor 1 + σ²/E₁² = 1.9 here (4.65 meV FWHM, E₁ = 2.07 meV);
    asserted above 1.5. With the default ``low_energy="debye"`` every bin up to two FWHM is
    within 30 % of the exact S(E): the law is taken through the VDOS at the first bin at or
    above one FWHM, still high there by σ²/E_m² ≤ 18 % (Gaussian window), and ~1000 oscillators
    leave a few per cent of statistical noise."""
    import warnings

    from mlff_ins.ins.engine import VibrationalSource, indirect_s_e
    from mlff_ins.neutron.instruments import get_instrument
    from mlff_ins.neutron.scattering_lengths import sigma_total_barn

    n, wd, T, mass = 1000, 0.03, 300.0, 28.0855
    omega = wd * ((np.arange(n) + 0.5) / n) ** (1 / 3)
    pos, vel, cell = damped_oscillators(n=n, frames=3000, every=2, h=0.5, mass=mass,
                                        omega0=omega[:, None], gamma=0.0005, temperature_K=T,
                                        seed=2)
    traj = ArrayTrajectory(["Si"] * n, pos, cell, 1.0, velocities=vel,
                           masses=np.full(n, mass))
    runs = {}
    for how in ("debye", "as-is"):
        # as computed, the spike is S(E)'s maximum, and the warning says so
        with warnings.catch_warnings():
            warnings.simplefilter("error" if how == "debye" else "ignore")
            out, _ = spectra_from_trajectory(None, SpectraOptions(
                instrument="vision", vdos=False, temperature_K=T, time_window_fs=1000.0,
                low_energy=how), traj=traj, progress=False)
        runs[how] = out["s_e"]
    s = runs["debye"]
    fwhm = s.provenance["resolution_fwhm_meV"]
    assert "Debye law" in s.provenance["low_energy"]["Si"]
    e = s.x
    ed = wd * 658.2119569509066
    z = np.where(e <= ed, 3 * e ** 2 / ed ** 3, 0.0)
    z /= z.sum() * (e[1] - e[0])
    exact_src = VibrationalSource(e, z[None], [u2_from_dos(e, z, mass, T)], [mass], ["Si"], [1.0],
                                  T)
    _, exact = indirect_s_e(exact_src, get_instrument("vision"), [sigma_total_barn("Si")])
    exact = exact["s_e"]
    low = (e > 0) & (e <= 2 * fwhm)
    assert low.sum() >= 3
    np.testing.assert_allclose(s.intensity[low], exact[low], rtol=0.30)
    first = np.flatnonzero(e > 0)[0]
    assert runs["as-is"].intensity[first] > 1.5 * exact[first]
    assert runs["as-is"].provenance["low_energy"] == "as computed (--low-energy as-is)"
