"""Synthetic trajectories with analytic answers, for validation tests and benchmarks (numpy only).

Units: Å, fs, amu; kT in amu Å²/fs² so that velocities come out in Å/fs.
"""

from __future__ import annotations

import numpy as np

AMU_A2_FS2_PER_EV = 1.0 / 103.6426965  # 1 eV in amu Å²/fs²
KB_EV = 8.617333262e-5


def kT_amu(temperature_K: float) -> float:
    return KB_EV * temperature_K * AMU_A2_FS2_PER_EV


def ideal_gas(n=16000, frames=30, dt=5.0, box=30.0, mass=39.948, temperature_K=300.0, seed=0):
    """Free particles with Maxwell velocities, wrapped; the sample is whitened so its covariance is
    exactly (kT/m)·I, i.e. every direction has the right variance, not only the axes."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3))
    v -= v.mean(0)
    v = v @ np.linalg.inv(np.linalg.cholesky(np.cov(v.T, bias=True))).T
    v *= np.sqrt(kT_amu(temperature_K) / mass)
    r0 = rng.uniform(0, box, (n, 3))
    t = np.arange(frames)[:, None, None] * dt
    pos = (r0[None] + v[None] * t) % box
    vel = np.broadcast_to(v, (frames, n, 3)).copy()
    return pos, vel, np.eye(3) * box


def langevin_particles(n=300, frames=2000, every=10, h=1.0, mass=1.008, temperature_K=300.0,
                       gamma=0.05, box=20.0, seed=0):
    """Free Langevin particles (Ornstein–Uhlenbeck velocities, step h fs), every `every` steps.

    Returns wrapped positions, velocities, cell and the exact D = kT/(mγ) in Å²/fs.
    """
    rng = np.random.default_rng(seed)
    sig = np.sqrt(kT_amu(temperature_K) / mass)
    x = rng.uniform(0, box, (n, 3))
    v = rng.normal(scale=sig, size=(n, 3))
    c1 = np.exp(-gamma * h)
    c2 = sig * np.sqrt(1 - c1 ** 2)
    pos = np.empty((frames, n, 3))
    vel = np.empty((frames, n, 3))
    for t in range(frames):
        for _ in range(every):
            v = c1 * v + c2 * rng.normal(size=(n, 3))
            x = x + v * h
        pos[t], vel[t] = x % box, v
    return pos, vel, np.eye(3) * box, sig ** 2 / gamma


def damped_oscillators(n=500, frames=4000, every=2, h=0.5, mass=12.0, omega0=0.05, gamma=0.01,
                       temperature_K=300.0, seed=0):
    """Independent 3D harmonic oscillators with Langevin friction (BAOAB, step h fs); ``omega0``
    (rad/fs) is one frequency for all, or one per oscillator (shape (n, 1)).

    Returns positions (not wrapped; they stay near their sites in a large box), velocities, cell.
    """
    rng = np.random.default_rng(seed)
    kT = kT_amu(temperature_K)
    sites = rng.uniform(0, 100.0, (n, 3))
    x = rng.normal(scale=np.sqrt(kT / mass) / omega0, size=(n, 3))
    v = rng.normal(scale=np.sqrt(kT / mass), size=(n, 3))
    c1 = np.exp(-gamma * h)
    c2 = np.sqrt(kT / mass * (1 - c1 ** 2))
    pos = np.empty((frames, n, 3))
    vel = np.empty((frames, n, 3))
    for t in range(frames * every):
        v -= 0.5 * h * omega0 ** 2 * x
        x += 0.5 * h * v
        v = c1 * v + c2 * rng.normal(size=(n, 3))
        x += 0.5 * h * v
        v -= 0.5 * h * omega0 ** 2 * x
        if (t + 1) % every == 0:
            pos[t // every], vel[t // every] = sites + x, v
    return pos, vel, np.eye(3) * 100.0


def dho_velocity_acf(t, kT_over_m, omega0, gamma):
    """⟨v(0)v(t)⟩ per Cartesian component of a damped harmonic oscillator (underdamped)."""
    w1 = np.sqrt(omega0 ** 2 - gamma ** 2 / 4)
    return kT_over_m * np.exp(-gamma * t / 2) * (np.cos(w1 * t) - gamma / (2 * w1) * np.sin(w1 * t))


def dho_velocity_psd(omega, kT_over_m, omega0, gamma):
    """(1/2π)∫⟨v(0)v(t)⟩e^{−iωt}dt per component (units of kT/m per rad/fs)."""
    return kT_over_m / np.pi * gamma * omega ** 2 / ((omega0 ** 2 - omega ** 2) ** 2
                                                     + gamma ** 2 * omega ** 2)
