"""Equality with dynasor 2.5 on the same trajectory and Q-points (max relative difference 1e-6).

dynasor's conventions: F(q,t) per atom of the whole cell as ours; S(q,ω) = ∫F e^{−iωt} dt with ω in
rad/fs and no 1/2π, so S_ours(E) = S_dynasor(ω = E/ħ) / (2πħ) with ħ in meV·fs.
"""

import numpy as np
import pytest

dynasor = pytest.importorskip("dynasor")

from mlff_ins.analysis.dynamics import correlate  # noqa: E402
from mlff_ins.analysis.fourier import HBAR_MEV_FS, energy_axis, spectrum_from_correlation  # noqa: E402
from mlff_ins.analysis.qpoints import spherical_shells  # noqa: E402
from mlff_ins.analysis.trajectory import Trajectory  # noqa: E402


@pytest.fixture(scope="module")
def emt_trajectory(tmp_path_factory):
    """Langevin MD of a triclinic Cu-Au cell with EMT, 121 frames every 2 steps of 2 fs."""
    import ase.io
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = bulk("Cu", "fcc", a=3.65).repeat((3, 3, 3))  # primitive vectors: a triclinic cell
    atoms.symbols[::3] = "Au"
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=900, rng=np.random.default_rng(0))
    dyn = Langevin(atoms, 2 * units.fs, temperature_K=900, friction=0.02, fixcm=False,
                   rng=np.random.default_rng(1))
    frames = []
    dyn.attach(lambda: frames.append(atoms.copy()), interval=2)
    dyn.run(240)
    path = tmp_path_factory.mktemp("dyn") / "cuau.extxyz"
    ase.io.write(path, frames)
    return path


def test_equal_to_dynasor(emt_trajectory):
    dt, max_lag = 4.0, 25
    traj = Trajectory(emt_trajectory, dt_fs=dt)
    cell = traj.first_cell()
    shells = spherical_shells(cell, q_max=3.5, q_min=0.5, width=0.5, per_shell=10, seed=1)
    q = shells.vectors(cell)
    ours = correlate(traj, max_lag, vacf=False, shells=shells, coherent=True, incoherent=True)
    dtraj = dynasor.Trajectory(str(emt_trajectory), trajectory_format="extxyz",
                               atomic_indices="read_from_trajectory")
    ref = dynasor.compute_dynamic_structure_factors(dtraj, q, dt=dt, window_size=max_lag,
                                                    calculate_incoherent=True)

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    for (a, b), f in ours.fqt_coh.items():
        assert rel(f, ref[f"Fqt_coh_{a}_{b}"]) <= 1e-6
        s = spectrum_from_correlation(f, dt, "none")
        assert rel(s, ref[f"Sqw_coh_{a}_{b}"] / (2 * np.pi * HBAR_MEV_FS)) <= 1e-6
    for a, f in ours.fqt_inc.items():
        assert rel(f, ref[f"Fqt_incoh_{a}"]) <= 1e-6
        s = spectrum_from_correlation(f, dt, "none")
        assert rel(s, ref[f"Sqw_incoh_{a}"] / (2 * np.pi * HBAR_MEV_FS)) <= 1e-6
    np.testing.assert_allclose(energy_axis(max_lag + 1, dt), ref.omega * HBAR_MEV_FS, rtol=1e-12)
    assert rel(sum(ours.fqt_coh.values()), ref.Fqt_coh) <= 1e-6
