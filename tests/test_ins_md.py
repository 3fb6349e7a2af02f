"""Incoherent-approximation INS (VISION/TOSCA) from a DOS: Poisson phonon orders for an Einstein
oscillator, indirect-geometry kinematics and resolution, and the `--instrument vision` command."""

import numpy as np
import pytest

from mlff_ins.analysis.pipeline import SpectraOptions, spectra_from_trajectory
from mlff_ins.analysis.synthetic import damped_oscillators
from mlff_ins.analysis.trajectory import ArrayTrajectory
from mlff_ins.neutron.incoherent_approximation import (phonon_orders, powder_s_qe,
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
