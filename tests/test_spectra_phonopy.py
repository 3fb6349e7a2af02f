"""Harmonic crystal at low T: the MD VDOS peaks where phonopy puts the modes of the same potential.

fcc Cu with EMT, a 2×2×2 conventional supercell (32 atoms). MD samples exactly the q-points
commensurate with that supercell, so phonopy's frequencies at those 8 q-points, given equal weight
(equipartition) and passed through the same window and transform, are the reference VDOS.
"""

import numpy as np
import pytest
from scipy.signal import find_peaks

from mlff_ins.analysis.dynamics import Correlations, correlate
from mlff_ins.analysis.fourier import HBAR_MEV_FS
from mlff_ins.analysis.spectra_md import vdos_spectra
from mlff_ins.analysis.trajectory import ArrayTrajectory

THZ_TO_MEV = 4.135667696


def _phonopy_mode_energies(unit, calc):
    from ase import Atoms
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    ph = Phonopy(PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=unit.cell.array,
                              scaled_positions=unit.get_scaled_positions()),
                 supercell_matrix=np.eye(3, dtype=int) * 2, primitive_matrix="P")
    ph.generate_displacements(distance=0.01)
    forces = []
    for sc in ph.supercells_with_displacements:
        at = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        at.calc = calc
        forces.append(at.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    qpoints = np.array([[i, j, k] for i in (0, 0.5) for j in (0, 0.5) for k in (0, 0.5)])
    ph.run_qpoints(qpoints)
    return ph.get_qpoints_dict()["frequencies"].ravel() * THZ_TO_MEV


def test_md_vdos_peaks_at_phonopy_frequencies():
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    unit = bulk("Cu", "fcc", a=3.59, cubic=True)
    modes = _phonopy_mode_energies(unit, EMT())
    atoms = unit.repeat((2, 2, 2))
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=20, rng=np.random.default_rng(0))
    dyn = Langevin(atoms, 5 * units.fs, temperature_K=10, friction=2e-3 / units.fs, fixcm=False,
                   rng=np.random.default_rng(1))
    dyn.run(200)
    pos, vel = [], []
    dyn.attach(lambda: (pos.append(atoms.positions.copy()),
                        vel.append(atoms.get_velocities() * units.fs)), interval=2)
    dyn.run(1600)
    traj = ArrayTrajectory(atoms.get_chemical_symbols(), np.array(pos), atoms.cell.array, 10.0,
                           velocities=np.array(vel))
    md = vdos_spectra(correlate(traj, 300, vacf=True))["vdos"]

    ref = Correlations(species=["Cu"], counts={"Cu": 32}, time_fs=np.arange(301) * 10.0,
                       n_frames=1)
    omega = modes[modes > 0.5] / HBAR_MEV_FS  # the three acoustic modes at Γ carry no weight
    ref.vacf = {"Cu": np.cos(np.outer(ref.time_fs, omega)).sum(axis=1)}
    expected = vdos_spectra(ref)["vdos"]

    peaks_ref, _ = find_peaks(expected.intensity, height=0.2 * expected.intensity.max())
    peaks_md, _ = find_peaks(md.intensity, height=0.2 * md.intensity.max())
    assert len(peaks_ref) >= 3
    bin_width = md.x[1] - md.x[0]
    for p in peaks_ref:  # every phonopy peak is found in the MD VDOS within one bin
        assert np.min(np.abs(md.x[peaks_md] - md.x[p])) <= bin_width + 1e-9
    # and the top of the spectrum is where phonopy's highest mode is
    assert md.x[peaks_md].max() == pytest.approx(modes.max(), abs=bin_width)
