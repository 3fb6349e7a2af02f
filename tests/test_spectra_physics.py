"""Spectra from dynamics against analytic results (ideal gas, Langevin diffusion, damped
oscillators), sum rules, wrapping and unwrapping, and phonopy for a harmonic crystal."""

import numpy as np
import pytest
import torch

from mlff_ins.analysis.synthetic import (damped_oscillators, dho_velocity_acf, dho_velocity_psd,
                                         ideal_gas, kT_amu, langevin_particles)
from mlff_ins.analysis import qens
from mlff_ins.analysis.dynamics import correlate
from mlff_ins.analysis.fourier import HBAR_MEV_FS, energy_axis, spectrum_from_correlation
from mlff_ins.analysis.qpoints import spherical_shells
from mlff_ins.analysis.spectra_md import scattering_spectra, vdos_spectra
from mlff_ins.analysis.trajectory import ArrayTrajectory
from mlff_ins.neutron.quantum import KB_MEV_PER_K, correction_factor
from mlff_ins.neutron.scattering_lengths import b_coh_fm, sigma_inc_barn


def test_ideal_gas_self_intermediate_scattering():
    """F_s(Q,t) = exp(−Q² kT t² / 2m) for free particles, within 1 % of F_s(Q,0)."""
    mass, T = 1.008, 300.0
    # 16000 particles: the sampling error of the velocity distribution is ~0.4 % of F_s(Q,0)
    pos, vel, cell = ideal_gas(n=16000, mass=mass, temperature_K=T, frames=60, dt=10.0)
    traj = ArrayTrajectory(["H"] * pos.shape[1], pos, cell, 10.0, velocities=vel)
    shells = spherical_shells(cell, q_max=1.5, q_min=0.3, width=0.4, per_shell=40)
    r = correlate(traj, 59, vacf=False, shells=shells, incoherent=True)
    fs = shells.shell_average(r.fqt_inc["H"])
    q2 = np.sum(shells.vectors(cell) ** 2, axis=1)  # exact per vector, then shell-averaged
    exact = shells.shell_average(np.exp(-np.outer(q2, r.time_fs ** 2) * kT_amu(T) / (2 * mass)))
    assert np.abs(fs - exact).max() < 0.01
    assert exact[:, -1].max() < 0.05  # the decay is really sampled


@pytest.fixture(scope="module")
def langevin():
    pos, vel, cell, d = langevin_particles()
    traj = ArrayTrajectory(["H"] * pos.shape[1], pos, cell, 10.0, velocities=vel)
    shells = spherical_shells(cell, q_max=0.7, q_min=0.3, width=0.1, per_shell=20)
    return correlate(traj, 300, vacf=False, msd=True, shells=shells, incoherent=True), d


def test_langevin_diffusion_from_msd(langevin):
    """D from the MSD slope agrees with kT/(mγ) within 5 %."""
    r, d_exact = langevin
    d = qens.diffusion_from_msd(r.time_fs, r.msd["H"])
    assert d.value == pytest.approx(d_exact * 1000, rel=0.05)


def test_langevin_lorentzian_width_is_DQ2(langevin):
    """HWHM of S_inc(Q,E) = ħDQ² at small Q (within 5 %), and D from the widths."""
    r, d_exact = langevin
    fs = r.shells.shell_average(r.fqt_inc["H"])
    widths = qens.lorentzian_widths(r.time_fs, fs, "gaussian")
    for q, w in zip(r.shells.q, widths):
        assert w.value == pytest.approx(HBAR_MEV_FS * d_exact * q * q, rel=0.05)
    d = qens.diffusion_from_widths(r.shells.q, widths, q_max_fit=0.7)
    assert d.value == pytest.approx(d_exact * 1000, rel=0.05)


def test_eisf_of_particles_in_harmonic_wells():
    """EISF = exp(−Q²⟨u_x²⟩) with ⟨u_x²⟩ = kT/(mω0²) for particles bound to sites."""
    mass, w0, T = 12.0, 0.05, 300.0
    pos, vel, cell = damped_oscillators(n=100, frames=800, mass=mass, omega0=w0, gamma=0.05,
                                        temperature_K=T, seed=7)
    traj = ArrayTrajectory(["C"] * 100, pos, cell, 1.0, velocities=vel)
    shells = spherical_shells(cell, q_max=9.0, q_min=2.0, width=1.0, per_shell=12)
    r = correlate(traj, 300, vacf=False, shells=shells, incoherent=True)
    plateau, spread = qens.eisf(shells.shell_average(r.fqt_inc["C"]))
    exact = np.exp(-shells.q ** 2 * kT_amu(T) / (mass * w0 ** 2))
    assert exact.min() < 0.6  # a real drop across the Q range
    np.testing.assert_allclose(plateau, exact, atol=0.03)


def test_damped_oscillator_acf_and_psd():
    """VACF and VDOS of Langevin harmonic oscillators match the analytic ACF and PSD."""
    mass, w0, gamma, T = 12.0, 0.05, 0.01, 300.0
    pos, vel, cell = damped_oscillators(n=800, frames=4000, mass=mass, omega0=w0, gamma=gamma,
                                        temperature_K=T)
    traj = ArrayTrajectory(["C"] * 800, pos, cell, 1.0, velocities=vel)
    r = correlate(traj, 1500, vacf=True)
    kTm = kT_amu(T) / mass
    acf = r.vacf["C"] / mass / 800 / 3
    exact = dho_velocity_acf(r.time_fs, kTm, w0, gamma)
    assert np.abs(acf - exact).max() < 0.03 * exact[0]
    e = energy_axis(len(r.time_fs), 1.0)
    # the transform of the analytic ACF is the analytic PSD (normalisation, units: per meV) ...
    psd = dho_velocity_psd(e / HBAR_MEV_FS, kTm, w0, gamma) / HBAR_MEV_FS
    s_exact = spectrum_from_correlation(exact, 1.0, "none")
    assert np.abs(s_exact - psd).max() < 0.01 * psd.max()
    # ... and the measured spectrum matches it under the same window (statistics: 3 % of peak)
    s = spectrum_from_correlation(acf, 1.0, "gaussian")
    s_ref = spectrum_from_correlation(exact, 1.0, "gaussian")
    assert np.abs(s - s_ref).max() < 0.03 * s_ref.max()
    assert abs(e[np.argmax(s)] - w0 * HBAR_MEV_FS) <= e[1]
    # the VDOS built from it peaks at ħω0 and has area 3
    vd = vdos_spectra(r, window="gaussian")["vdos"]
    assert vd.area() == pytest.approx(3.0, abs=1e-9)
    assert abs(vd.x[np.argmax(vd.intensity)] - w0 * HBAR_MEV_FS) <= e[1]


@pytest.fixture(scope="module")
def binary_liquid():
    """Two species of Langevin particles (distinct masses) for sum rules and partial sums."""
    pos_a, vel_a, cell, _ = langevin_particles(n=60, frames=300, every=5, mass=16.0, seed=1)
    pos_b, vel_b, _, _ = langevin_particles(n=30, frames=300, every=5, mass=28.1, seed=2)
    pos = np.concatenate([pos_a, pos_b], axis=1)
    vel = np.concatenate([vel_a, vel_b], axis=1)
    traj = ArrayTrajectory(["O"] * 60 + ["Si"] * 30, pos, cell, 5.0, velocities=vel)
    shells = spherical_shells(cell, q_max=2.5, q_min=0.3, width=0.4, per_shell=12)
    return correlate(traj, 60, vacf=True, shells=shells, coherent=True, incoherent=True)


def test_sum_rules_and_partials(binary_liquid):
    r = binary_liquid
    de = None
    for weighting in ("number", "neutron"):
        sp = scattering_spectra(r, 300.0, window="gaussian", quantum_correction="none",
                                weighting=weighting)
        for kind in ("coh", "inc"):
            s, f = sp[f"sqe_{kind}"], sp[f"fqt_{kind}"]
            de = s.y[1] - s.y[0]
            # ∫ S(Q,E) dE = F(Q,0) on the two-sided grid
            np.testing.assert_allclose(s.intensity.sum(axis=1) * de, f.intensity[:, 0],
                                       rtol=1e-10, atol=1e-12)
        if weighting == "number":
            coh = sum(sp[f"fqt_coh_{p}"].intensity for p in ("O-O", "O-Si", "Si-Si"))
            np.testing.assert_allclose(coh, sp["fqt_coh"].intensity, atol=1e-12)
            inc = sp["fqt_inc_O"].intensity + sp["fqt_inc_Si"].intensity
            np.testing.assert_allclose(inc, sp["fqt_inc"].intensity, atol=1e-12)
            np.testing.assert_allclose(inc[:, 0], 1.0, atol=1e-12)  # F_s(Q,0) = 1 per atom
            # dimensionless F(Q,t), so S(Q,E) per meV (was written "meV")
            assert {sp[k].units for k in sp if k.startswith("sqe_")} == {"1/meV"}
        else:
            b = {s: b_coh_fm(s) for s in ("O", "Si")}
            expected = sum(b[x] * b[y] / 100 * sp[f"fqt_coh_{x}-{y}"].intensity
                           for x, y in (("O", "O"), ("O", "Si"), ("Si", "Si")))
            np.testing.assert_allclose(expected, sp["fqt_coh"].intensity, atol=1e-12)
            inc = sum(sigma_inc_barn(s) / (4 * np.pi) * sp[f"fqt_inc_{s}"].intensity
                      for s in ("O", "Si"))
            np.testing.assert_allclose(inc, sp["fqt_inc"].intensity, atol=1e-14)
            np.testing.assert_allclose(sp["sqe"].intensity,
                                       sp["sqe_coh"].intensity + sp["sqe_inc"].intensity)
    vd = vdos_spectra(r)
    assert vd["vdos"].area() == pytest.approx(3.0, abs=1e-9)
    assert vd["gdos"].area() == pytest.approx(3.0, abs=1e-9)
    np.testing.assert_allclose(vd["vdos_O"].intensity + vd["vdos_Si"].intensity,
                               vd["vdos"].intensity, atol=1e-12)
    # equipartition: each element's share of the area is its atom fraction (statistics: 5 %)
    assert vd["vdos_Si"].area() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("kind", ["harmonic", "schofield"])
def test_quantum_corrections_obey_detailed_balance(binary_liquid, kind):
    T = 150.0
    sp = scattering_spectra(binary_liquid, T, quantum_correction=kind, weighting="number")
    s = sp["sqe_inc"]
    e = s.y
    pos = e > 0
    mirrored = s.intensity[:, ::-1][:, pos]  # S(−E) for the positive energies
    np.testing.assert_allclose(mirrored, s.intensity[:, pos] * np.exp(-e[pos] / (KB_MEV_PER_K * T)),
                               rtol=1e-10, atol=1e-300)
    assert correction_factor(np.array([0.0]), T, kind)[0] == pytest.approx(1.0)


def test_wrapping_does_not_change_rho_and_msd_follows_the_unwrapped_truth():
    """A triclinic cell, particles crossing the boundary many times: coherent and incoherent
    F(Q,t) from wrapped and unwrapped positions agree, and the MSD equals the true one."""
    rng = np.random.default_rng(3)
    cell = np.array([[6.0, 0.0, 0.0], [2.5, 5.5, 0.0], [1.0, 1.5, 6.5]])
    n, frames = 8, 400
    steps = rng.normal(scale=0.4, size=(frames, n, 3))
    steps[:, 0] += np.array([0.9, 0.3, -0.5])  # atom 0 drifts through many periodic images
    truth = np.cumsum(steps, axis=0)
    frac = truth @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    assert np.ptp(frac[:, 0, 0]) > 30
    symbols = ["Ar"] * 5 + ["Kr"] * 3
    shells = spherical_shells(cell, q_max=3.0, q_min=0.5, width=0.5, per_shell=10)
    kw = dict(vacf=False, msd=True, shells=shells, coherent=True, incoherent=True)
    r_w = correlate(ArrayTrajectory(symbols, wrapped, cell, 2.0), 50, **kw)
    r_u = correlate(ArrayTrajectory(symbols, truth, cell, 2.0), 50, **kw)
    for key in r_w.fqt_coh:
        np.testing.assert_allclose(r_w.fqt_coh[key], r_u.fqt_coh[key], atol=1e-9)
    for key in r_w.fqt_inc:
        np.testing.assert_allclose(r_w.fqt_inc[key], r_u.fqt_inc[key], atol=1e-9)
    for s in ("Ar", "Kr"):
        idx = [i for i, x in enumerate(symbols) if x == s]
        exact = [np.mean(np.sum((truth[k:, idx] - truth[:frames - k, idx]) ** 2, axis=-1))
                 for k in range(51)]
        np.testing.assert_allclose(r_w.msd[s], exact, rtol=1e-9, atol=1e-9)


def test_velocities_from_positions_match_central_differences():
    rng = np.random.default_rng(4)
    pos = np.cumsum(rng.normal(scale=0.1, size=(53, 5, 3)), axis=0) + 5.0
    cell = np.eye(3) * 10.0
    with_v = ArrayTrajectory(["Ne"] * 5, pos, cell, 2.0, velocities=np.gradient(pos, 2.0, axis=0))
    without_v = ArrayTrajectory(["Ne"] * 5, pos % 10.0, cell, 2.0)
    a = correlate(with_v, 20, vacf=True, chunk=7).vacf["Ne"]
    b = correlate(without_v, 20, vacf=True, chunk=7).vacf["Ne"]
    np.testing.assert_allclose(a, b, rtol=1e-10)


def _mirrored_oscillators(drift, frames=600, dt=2.0, seed=5):
    """Pairs of equal atoms vibrating against each other (so the centre of mass stays put) in
    a cubic box, plus a uniform ``drift`` velocity (Å/fs) of every atom, positions wrapped;
    returns (symbols, positions, velocities, cell)."""
    rng = np.random.default_rng(seed)
    n_pairs, box = 12, 9.0
    sites = rng.uniform(0, box, (2 * n_pairs, 3))
    omega = rng.uniform(0.02, 0.12, n_pairs)[:, None]                    # rad/fs
    amp = rng.normal(scale=0.05, size=(n_pairs, 3))
    phase = rng.uniform(0, 2 * np.pi, (n_pairs, 3))
    t = np.arange(frames)[:, None, None] * dt
    x = amp * np.cos(omega * t + phase)                                  # (T, pairs, 3)
    v = -amp * omega * np.sin(omega * t + phase)
    disp = np.concatenate([x, -x], axis=1)
    vel = np.concatenate([v, -v], axis=1) + np.asarray(drift)
    pos = (sites + disp + np.asarray(drift) * t) % box
    return ["Cu"] * (2 * n_pairs), pos, vel, np.eye(3) * box


@pytest.mark.parametrize("stored_velocities", [True, False])
def test_centre_of_mass_drift_is_measured_and_removed(stored_velocities):
    """A cell drifting as a whole: the measured share of the kinetic energy in the drift is
    M V² / (M V² + Σ m v²) exactly (the vibrations carry no momentum), and with remove_drift
    the VACF, MSD and self F(Q,t) equal those of the same vibrations at rest (to 1e-9), from
    stored velocities or from differentiated positions."""
    drift = np.array([0.004, -0.002, 0.003])          # Å/fs: 10 box lengths in 600 frames
    sym, pos, vel, cell = _mirrored_oscillators(drift)
    _, pos0, vel0, _ = _mirrored_oscillators(np.zeros(3))
    shells = spherical_shells(cell, q_max=3.0, q_min=0.5, width=0.5, per_shell=10)
    kw = dict(vacf=True, msd=True, shells=shells, incoherent=True, coherent=True)

    def run(p, v, **extra):
        return correlate(ArrayTrajectory(sym, p, cell, 2.0,
                                         velocities=v if stored_velocities else None),
                         100, **kw, **extra)

    rest = run(pos0, vel0)
    kept = run(pos, vel)
    removed = run(pos, vel, remove_drift=True)
    assert rest.drift_share < 1e-12 and not rest.drift_removed
    if stored_velocities:     # differentiated positions carry the finite-difference error
        m = 63.546
        vib = np.sum(m * vel0 ** 2)
        drift_ke = len(sym) * m * np.sum(drift ** 2) * len(pos)
        assert kept.drift_share == pytest.approx(drift_ke / (drift_ke + vib), rel=1e-9)
    assert kept.drift_share > 0.05 and removed.drift_removed
    assert removed.drift_share == pytest.approx(kept.drift_share, rel=1e-12)
    np.testing.assert_allclose(removed.vacf["Cu"], rest.vacf["Cu"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(removed.msd["Cu"], rest.msd["Cu"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(removed.fqt_inc["Cu"], rest.fqt_inc["Cu"], atol=1e-9)
    np.testing.assert_allclose(removed.fqt_coh[("Cu", "Cu")], rest.fqt_coh[("Cu", "Cu")],
                               atol=1e-9)
    # left in, the drift adds M V² to the VACF at every lag (cross terms carry Σ m v = 0)
    np.testing.assert_allclose(kept.vacf["Cu"] - rest.vacf["Cu"],
                               len(sym) * 63.546 * np.sum(drift ** 2), rtol=1e-9)


def test_an_oscillating_centre_of_mass_is_no_drift():
    """32 independent Langevin oscillators (an Einstein solid): the centre of mass carries ~1/N
    of the kinetic energy at any instant, but it oscillates and puts nothing at E = 0. Only the
    steady part counts: its expected share is ~2/(3N ω² T²) = 2e-6 for ω = 0.05 rad/fs over
    T = 2000 fs; the bound 1e-4 leaves a factor 50 for the randomness of the end points."""
    from mlff_ins.analysis.synthetic import damped_oscillators

    pos, vel, cell = damped_oscillators(n=32, frames=2000, every=2, h=0.5, mass=12.0,
                                        omega0=0.05, gamma=0.01, temperature_K=300.0, seed=1)
    instant = np.sum(np.sum(vel, axis=1) ** 2) / len(vel[0]) / np.sum(vel ** 2)
    assert instant > 0.01       # ~1/32 of the kinetic energy moves the centre of mass
    corr = correlate(ArrayTrajectory(["C"] * 32, pos, cell, 1.0, velocities=vel), 100)
    assert corr.drift_share < 1e-4
    # its centre of mass moves frame by frame (not at rest): all 3N degrees of freedom count
    assert corr.com_kinetic_share == pytest.approx(instant, rel=1e-9)


def test_spectra_warn_about_a_drifting_cell_and_say_so_in_the_provenance():
    from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory

    sym, pos, vel, cell = _mirrored_oscillators(np.array([0.004, -0.002, 0.003]))
    traj = ArrayTrajectory(sym, pos, cell, 2.0, velocities=vel)
    with pytest.warns(UserWarning, match="centre of mass of the cell drifts"):
        out, _ = spectra_from_trajectory(None, SpectraOptions(), traj=traj, progress=False)
    assert out["vdos"].provenance["centre_of_mass_drift"]["removed"] is False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out, summary = spectra_from_trajectory(None, SpectraOptions(remove_drift=True), traj=traj,
                                               progress=False)
    prov = out["vdos"].provenance["centre_of_mass_drift"]
    assert prov["removed"] is True and prov["kinetic_energy_share"] > 0.05
    # without the drift the vibrations keep 3N - 3 degrees of freedom: T from their energy
    _, _, vel0, _ = _mirrored_oscillators(np.zeros(3))
    from mlff_ins.neutron.quantum import KB_MEV_PER_K as kb
    from mlff_ins.analysis.pipeline import AMU_A2_PER_FS2_MEV

    t_vib = np.mean(np.sum(63.546 * vel0 ** 2, axis=(1, 2))) * AMU_A2_PER_FS2_MEV / (
        (3 * len(sym) - 3) * kb)
    assert summary["kinetic_temperature_K"] == pytest.approx(t_vib, rel=1e-6)
    # the same cell at rest (a zero total momentum, as velocity Verlet, Bussi or Langevin with
    # FixCom keep it): 3N - 3 too, without being told
    _, pos0, vel0, _ = _mirrored_oscillators(np.zeros(3))
    out, summary = spectra_from_trajectory(
        None, SpectraOptions(), traj=ArrayTrajectory(sym, pos0, cell, 2.0, velocities=vel0),
        progress=False)
    assert summary["kinetic_temperature_K"] == pytest.approx(t_vib, rel=1e-6)
    assert out["vdos"].provenance["kinetic_temperature_degrees_of_freedom"] == 3 * len(sym) - 3


def test_chunking_and_float32(binary_liquid):
    """Results do not depend on how frames are streamed; float32 agrees to single precision."""
    pos_a, vel_a, cell, _ = langevin_particles(n=20, frames=120, every=5, seed=5)
    traj = ArrayTrajectory(["H"] * 20, pos_a, cell, 5.0, velocities=vel_a)
    shells = spherical_shells(cell, q_max=1.5, q_min=0.3, width=0.4, per_shell=8)
    kw = dict(vacf=True, msd=True, shells=shells, coherent=True, incoherent=True)
    a = correlate(traj, 30, chunk=1, **kw)
    b = correlate(traj, 30, chunk=50, **kw)
    c = correlate(traj, 30, chunk=50, dtype=torch.float32, **kw)
    np.testing.assert_allclose(a.fqt_coh[("H", "H")], b.fqt_coh[("H", "H")], atol=1e-10)
    np.testing.assert_allclose(a.fqt_inc["H"], b.fqt_inc["H"], atol=1e-12)
    np.testing.assert_allclose(a.msd["H"], b.msd["H"], rtol=1e-10)
    np.testing.assert_allclose(c.fqt_inc["H"], b.fqt_inc["H"], atol=1e-4)
    np.testing.assert_allclose(c.vacf["H"], b.vacf["H"], rtol=0, atol=1e-5 * b.vacf["H"][0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(binary_liquid):
    pos_a, vel_a, cell, _ = langevin_particles(n=40, frames=150, every=5, seed=6)
    traj = ArrayTrajectory(["H"] * 40, pos_a, cell, 5.0, velocities=vel_a)
    shells = spherical_shells(cell, q_max=1.5, q_min=0.3, width=0.4, per_shell=8)
    kw = dict(vacf=True, msd=True, shells=shells, coherent=True, incoherent=True)
    a = correlate(traj, 40, device="cpu", **kw)
    b = correlate(traj, 40, device="cuda", **kw)
    for x, y in ((a.fqt_coh[("H", "H")], b.fqt_coh[("H", "H")]), (a.fqt_inc["H"], b.fqt_inc["H"]),
                 (a.vacf["H"], b.vacf["H"]), (a.msd["H"], b.msd["H"])):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10)


def test_each_quantum_correction_keeps_its_moment():
    """Free particles with whitened Maxwell velocities (⟨(Q·v)²⟩ = Q²kT/M exactly): with no
    correction ∫S_inc dE = F_s(Q,0) = 1; the harmonic correction keeps the first moment instead,
    the f-sum rule ∫E S_inc dE = E_R = ħ²Q²/2M, plus σ_res²/2kT from the Gaussian time window
    (its second moment adds σ_res² to that of the classical S), and not the zeroth (x coth(x/2)
    ≥ 2 raises it). Tolerance 1%: what is left is the discrete sampling of a smooth F_s(Q,t)."""
    from mlff_ins.ins.incoherent import recoil_energy_meV

    mass, T = 1.008, 300.0
    pos, vel, cell = ideal_gas(n=1500, mass=mass, temperature_K=T, frames=200, dt=2.0)
    traj = ArrayTrajectory(["H"] * pos.shape[1], pos, cell, 2.0, velocities=vel)
    shells = spherical_shells(cell, q_max=1.5, q_min=0.5, width=0.5, per_shell=20)
    r = correlate(traj, 100, vacf=False, shells=shells, incoherent=True)
    q2 = shells.shell_average(np.sum(shells.vectors(cell) ** 2, axis=1))
    none = scattering_spectra(r, T, quantum_correction="none", weighting="number")["sqe_inc"]
    harm = scattering_spectra(r, T, quantum_correction="harmonic", weighting="number")["sqe_inc"]
    de = none.y[1] - none.y[0]
    np.testing.assert_allclose(none.intensity.sum(axis=1) * de, 1.0, rtol=1e-10)
    sigma_res = harm.provenance["resolution_fwhm_meV"] / (2 * np.sqrt(2 * np.log(2)))
    first = (harm.intensity * harm.y).sum(axis=1) * de
    expected = recoil_energy_meV(np.sqrt(q2), mass) + sigma_res ** 2 / (2 * KB_MEV_PER_K * T)
    np.testing.assert_allclose(first, expected, rtol=0.01)
    assert np.all(harm.intensity.sum(axis=1) * de > 1.01)


def test_variable_cell_q_shells_use_each_frames_reciprocal_vectors():
    """NPT-like cell growing by 6 % over the run: Miller indices stay fixed, the phases use each
    frame's own cell, and the |Q| of each shell is its mean over frames (exactly q0·⟨1/s⟩)."""
    pos, vel, cell = ideal_gas(n=200, frames=40, dt=5.0, box=12.0)
    scale = np.linspace(1.0, 1.06, len(pos))
    cells = cell[None] * scale[:, None, None]
    frac = pos / 12.0
    traj = ArrayTrajectory(["Ar"] * 200, frac * 12.0 * scale[:, None, None], cells, 5.0,
                           velocities=vel)
    shells = spherical_shells(cell, q_max=2.0, q_min=0.5, width=0.3, per_shell=10)
    r = correlate(traj, 10, vacf=False, shells=shells, incoherent=True, coherent=True)
    np.testing.assert_allclose(r.shells.q, shells.q * np.mean(1 / scale), rtol=1e-12)
    assert r.q_mean_change == pytest.approx(1 - np.mean(1 / scale), rel=1e-9)
    # the particles move with the cell (fixed fractional coordinates + free flight): F_s(Q,0) = 1
    fs = r.shells.shell_average(r.fqt_inc["Ar"])
    np.testing.assert_allclose(fs[:, 0], 1.0, atol=1e-12)


def test_memory_budget_changes_chunking_not_results(binary_liquid):
    """A small --max-memory splits blocks, atoms and Q-vectors into more pieces: every
    correlation is unchanged (to round-off); a budget too small for the window is refused."""
    from mlff_ins.errors import InputError

    pos_a, vel_a, cell, _ = langevin_particles(n=60, frames=300, every=5, mass=16.0, seed=1)
    pos_b, vel_b, _, _ = langevin_particles(n=30, frames=300, every=5, mass=28.1, seed=2)
    traj = ArrayTrajectory(["O"] * 60 + ["Si"] * 30, np.concatenate([pos_a, pos_b], axis=1),
                           cell, 5.0, velocities=np.concatenate([vel_a, vel_b], axis=1))
    shells = spherical_shells(cell, q_max=2.5, q_min=0.3, width=0.4, per_shell=12)
    small = correlate(traj, 60, vacf=True, msd=True, shells=shells, coherent=True,
                      incoherent=True, max_memory_bytes=8 * 1024 ** 2)
    big = binary_liquid
    for name in ("vacf", "fqt_coh", "fqt_inc"):
        for k, v in getattr(big, name).items():
            np.testing.assert_allclose(getattr(small, name)[k], v, rtol=1e-9,
                                       atol=1e-12 * np.abs(v).max())
    with pytest.raises(InputError, match="--max-memory .* too small"):
        correlate(traj, 60, shells=shells, coherent=True, incoherent=True,
                  max_memory_bytes=256 * 1024)


def test_block_standard_error_matches_the_spread_of_independent_runs():
    """--blocks: the standard error of the mean over 4 blocks of one run estimates how much the
    whole run's VDOS would scatter between independent runs. 30 independent Langevin oscillator
    runs (8 atoms, 4 ps, same options): the spread of their VDOS against the mean of their
    block errors, bin by bin where the VDOS is above a tenth of its peak. The median ratio must
    lie within 0.7-1.3: 30 runs leave ~13 % on the spread and ~8 % on the mean error per bin
    (chi-square statistics of 29 and 30 x 3 degrees of freedom), and the whole run, whose time
    origins also span the block boundaries, scatters a little less than the block mean."""
    from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory

    opts = SpectraOptions(time_window_fs=400.0, blocks=4, e_max_meV=None)
    whole, errors = [], []
    for seed in range(30):
        pos, vel, cell = damped_oscillators(n=8, frames=2000, every=4, h=0.5, mass=12.0,
                                            omega0=0.05, gamma=0.01, seed=seed)
        traj = ArrayTrajectory(["C"] * 8, pos, cell, 2.0, velocities=vel)
        out, summary = spectra_from_trajectory(None, opts, traj=traj, progress=False)
        assert summary["blocks"]["n"] == 4 and summary["blocks"]["frames_each"] == 500
        assert set(summary["blocks"]["spectra"]) == set(out)   # every spectrum has its band
        whole.append(out["vdos"].intensity)
        errors.append(out["vdos"].intensity_std)
        assert "standard error of the mean over 4" in out["vdos"].provenance["intensity_std"]
    whole, errors = np.array(whole), np.array(errors)
    mean = whole.mean(0)
    band = mean > 0.1 * mean.max()
    ratio = np.median(whole.std(0, ddof=1)[band] / errors.mean(0)[band])
    print(f"spread of independent runs / block standard error: {ratio:.3f}")
    assert 0.7 < ratio < 1.3, ratio


def test_velocities_differenced_from_positions_are_undamped():
    """Velocities differenced from positions 10 fs apart see a 32.9 meV oscillator through
    sinc²(ωΔt) = 0.92; with that divided out, Σ m v² (the kinetic temperature) equals that of
    the stored velocities to 1.5 % and the VDOS at its peak to 1 %, where undivided they are
    8-9 % low. What is left: the friction's Lorentzian tail, γkT/(πmω²) at high ω, puts
    2γ/(π ω_N/2) ≈ 0.8 % of the velocity spectrum beyond half the Nyquist energy, where the
    correction stops (and the stored velocities alias its part beyond the Nyquist energy)."""
    from mlff_ins.analysis.spectra_md import kinetic_sum, velocity_spectra

    pos, vel, cell = damped_oscillators(n=200, frames=1500, every=20, h=0.5, gamma=0.002)
    stored = correlate(ArrayTrajectory(["C"] * 200, pos, cell, 10.0, velocities=vel), 300,
                       vacf=True)
    diffed = correlate(ArrayTrajectory(["C"] * 200, pos, cell, 10.0), 300, vacf=True)
    assert diffed.velocities_from_positions and not stored.velocities_from_positions
    truth = kinetic_sum(*velocity_spectra(stored))
    assert truth == pytest.approx(stored.vacf["C"][0], rel=1e-12)  # the sum rule
    assert diffed.vacf["C"][0] / truth < 0.93                      # the damping
    assert kinetic_sum(*velocity_spectra(diffed)) == pytest.approx(truth, rel=0.015)
    a, b = vdos_spectra(stored)["vdos"], vdos_spectra(diffed)["vdos"]
    peak = np.argmax(a.intensity)
    assert a.x[peak] == pytest.approx(32.9, abs=1.0)
    assert b.intensity[peak] == pytest.approx(a.intensity[peak], rel=0.01)
    assert b.provenance["velocities"].startswith("central differences")


def test_differenced_velocities_too_far_apart_warn():
    """Frames 40 fs apart put the 32.9 meV oscillator at ωΔt = 2, beyond half the Nyquist
    energy (25.7 meV), where differenced velocities lose the motion: the spectra say so."""
    from mlff_ins.analysis.spectra_md import velocity_spectra

    pos, _, cell = damped_oscillators(n=50, frames=400, every=80, h=0.5, gamma=0.002)
    diffed = correlate(ArrayTrajectory(["C"] * 50, pos, cell, 40.0), 100, vacf=True)
    with pytest.warns(UserWarning, match="no velocities.*40 fs apart"):
        velocity_spectra(diffed, warn=True)


def test_diffusion_uncertainty_comes_from_blocks():
    """The least-squares error of the MSD slope takes correlated lags as independent (it is
    ~0.001 Å²/ps on Langevin particles whose D scatters by ~0.3 between seeds); with --blocks
    the reported std is the standard error over blocks instead: at least 3x the fit's, and the
    exact D = kT/mγ lies within 4 of it."""
    from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory

    pos, vel, cell, d_exact = langevin_particles(n=200, frames=1600)
    traj = ArrayTrajectory(["H"] * 200, pos, cell, 10.0, velocities=vel)
    opts = dict(vdos=False, qens=True, q_min=0.3, q_max=0.7, q_width=0.1, q_per_shell=10,
                q_max_fickian=0.7, time_window_fs=3000.0)
    _, fit = spectra_from_trajectory(None, SpectraOptions(**opts), traj=traj, progress=False)
    _, blk = spectra_from_trajectory(None, SpectraOptions(**opts, blocks=4), traj=traj,
                                     progress=False)
    one, four = fit["qens"]["H"]["D_msd_A2_per_ps"], blk["qens"]["H"]["D_msd_A2_per_ps"]
    assert one["std_from"].startswith("least-squares") and "blocks" in four["std_from"]
    assert four["value"] == pytest.approx(one["value"], rel=1e-12)   # the same fit of the whole
    assert four["std"] > 3 * one["std"]
    assert abs(four["value"] - d_exact * 1000) < 4 * four["std"]
    assert "blocks" in blk["qens"]["H"]["D_fickian_A2_per_ps"]["std_from"]
