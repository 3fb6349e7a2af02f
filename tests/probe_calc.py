"""ASE's EMT with two observable changes, for labelling tests: the energy adds the frame's
initial magnetic moments and 10 x its initial charges (what a spin-polarised DFT code reads from
them), and with ``stress_tensor: false`` the stress is all zeros, as ASE's CP2K calculator
answers when CP2K was told not to compute it."""

import numpy as np
from ase.calculators.emt import EMT


class ProbeEMT(EMT):
    def __init__(self, stress_tensor: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.stress_tensor = stress_tensor

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        extra = float(np.sum(self.atoms.get_initial_magnetic_moments())
                      + 10 * np.sum(self.atoms.get_initial_charges()))
        self.results["energy"] += extra
        self.results["free_energy"] = self.results.get("free_energy", 0.0) + extra
        if not self.stress_tensor:
            self.results["stress"] = np.zeros(6)
