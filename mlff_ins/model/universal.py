"""Universal interatomic potentials whose weights ship inside their wheels, by name.

``--model NAME`` accepts these wherever a model bundle is accepted (`md`, `phonons`), as
INSPIRED offers universal potentials beside DFT. Nothing is downloaded: SevenNet's weights are
inside the ``sevenn`` wheel, CHGNet's inside ``chgnet`` (``pip install -e .[universal]``).

========================  ========================================================
name                      model
========================  ========================================================
``sevennet-0``            SevenNet-0 (11 Jul 2024), ``sevenn`` (PBE, MPtrj)
``sevennet-l3i5``         SevenNet-l3i5, ``sevenn`` (PBE, MPtrj)
``sevennet-mf-0``         SevenNet-MF-0, ``sevenn``, its PBE modality
``chgnet``                CHGNet 0.3.0, ``chgnet`` (PBE/PBE+U, MPtrj)
========================  ========================================================

:class:`UniversalCalculator` gives them the interface of a bundle's calculator
(:class:`~mlff_ins.model.calculator.BundleCalculator`): ``check_elements`` and
``member_forces_batched`` (one member, structures one by one).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlff_ins.errors import InputError

#: name -> (package, constructor keyword arguments, description)
UNIVERSAL = {
    "sevennet-0": ("sevenn", {"model": "7net-0"}, "SevenNet-0 (11Jul2024)"),
    "sevennet-l3i5": ("sevenn", {"model": "7net-l3i5"}, "SevenNet-l3i5"),
    "sevennet-mf-0": ("sevenn", {"model": "7net-mf-0", "modal": "PBE"}, "SevenNet-MF-0 (PBE)"),
    "chgnet": ("chgnet", {"model": "0.3.0"}, "CHGNet 0.3.0"),
}


def _float32_default():
    """The universal models run in float32 and read torch's default dtype; nequip (imported by
    the bundle calculator) sets the global default to float64, so set float32 while they run."""
    import torch

    from mlff_ins.model.calculator import default_dtype

    return default_dtype(torch.float32)


def is_universal(name) -> bool:
    return str(name).lower() in UNIVERSAL


class UniversalCalculator(Calculator):
    """A universal potential as an ASE calculator with the bundle calculator's interface."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, name: str, device: str = "cpu"):
        super().__init__()
        from mlff_ins.model.calculator import resolve_device

        key = str(name).lower()
        if key not in UNIVERSAL:
            raise InputError(f"--model {name}: not a model bundle folder nor a universal model "
                             f"({', '.join(UNIVERSAL)})")
        package, kwargs, label = UNIVERSAL[key]
        self.device = resolve_device(device)
        self.model_name = key
        self.compute_stress = True
        import warnings

        try:
            with _float32_default():
                if package == "sevenn":
                    from sevenn.calculator import SevenNetCalculator

                    with warnings.catch_warnings():  # "no tensor product accelerator": speed
                        warnings.simplefilter("ignore", UserWarning)
                        self.inner = SevenNetCalculator(device=str(self.device), **kwargs)
                    self.elements = {int(z) for z in self.inner.type_map}
                else:
                    from chgnet.model import CHGNet
                    from chgnet.model.dynamics import CHGNetCalculator

                    model = CHGNet.load(model_name=kwargs["model"], verbose=False)
                    self.inner = CHGNetCalculator(model=model, use_device=str(self.device))
                    self.elements = set(range(1, 95))   # CHGNet's embedding covers H..Pu
        except ImportError:
            raise InputError(f"--model {name} needs the {package} package (its wheel holds the "
                             f"weights): pip install -e '.[universal]'") from None
        import importlib.metadata as md

        self.bundle = {"universal": key, "model": label, "package": package,
                       "version": md.version(package)}

    def check_elements(self, atoms, source=None) -> None:
        from ase.data import chemical_symbols

        unknown = sorted({int(z) for z in atoms.numbers} - self.elements)
        if unknown:
            where = f"{source}: " if source else ""
            raise InputError(f"{where}element {chemical_symbols[unknown[0]]} is not known to "
                             f"the universal model {self.model_name}")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.check_elements(self.atoms)
        a = self.atoms.copy()
        a.calc = self.inner
        with _float32_default():
            energy = float(a.get_potential_energy())
            self.results = {"energy": energy, "free_energy": energy,
                            "forces": np.asarray(a.get_forces(), dtype=float)}
            if self.compute_stress or "stress" in properties:
                self.results["stress"] = np.asarray(a.get_stress(), dtype=float)

    def member_forces_batched(self, structures, max_batch_atoms=None, progress=None) -> np.ndarray:
        """Forces of the one member for S structures, shape (1, S, N, 3), eV/Å."""
        out = []
        for atoms in structures:
            self.check_elements(atoms)
            a = atoms.copy()
            a.calc = self.inner
            with _float32_default():
                out.append(np.asarray(a.get_forces(), dtype=float))
            if progress is not None:
                progress(1)
        return np.asarray(out)[None]
