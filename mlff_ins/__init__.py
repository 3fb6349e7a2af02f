"""mlff-ins: from DFT snapshots to neutron spectra with NequIP force fields.

The public entry points are re-exported here lazily, so ``import mlff_ins`` stays cheap (no torch
import until a model is loaded).
"""

__version__ = "0.1.0"

__all__ = ["load_calculator", "__version__"]


def __getattr__(name):
    if name == "load_calculator":
        from mlff_ins.model.calculator import load_calculator
        return load_calculator
    raise AttributeError(f"module 'mlff_ins' has no attribute {name!r}")
