"""A model bundle as one ASE calculator: the ensemble mean, with the spread across members.

:func:`load_calculator` reads ``bundle.json``, loads every packaged NequIP member on the chosen
device and returns :class:`BundleCalculator`. Each call builds the neighbour list once and runs
every member on it; the results are the member mean of energy (eV), per-atom energies (eV), forces
(eV/Angstrom) and stress (eV/Angstrom^3, ASE Voigt order and sign), plus

- ``energy_std`` (eV): standard deviation of the total energy across members;
- ``forces_std`` (eV/Angstrom, shape (N,)): per atom, the root of the summed per-component
  variances across members, i.e. the RMS deviation of a member's force vector from the mean.

With one member both are zero.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from mlff_ins.errors import InputError


def read_bundle(path: str | os.PathLike) -> dict:
    """Read and check ``bundle.json`` of a model bundle folder.

    Trust boundary: a bundle's members are loaded with torch.package / ``torch.load``, which
    runs code stored in them. Open only bundles you trust; member paths must lie inside the
    bundle folder (no absolute paths, no ``..``, no symlinks out of it). ``path`` may also name
    a bundle shipped in the package (:mod:`mlff_ins.model.shipped`: si-reference)."""
    from mlff_ins.model.shipped import resolve_model

    path = Path(resolve_model(path))
    meta_path = path / "bundle.json"
    if not meta_path.exists():
        if (path / "train_settings.json").exists():
            raise InputError(f"{path}: training has not finished (no bundle.json); "
                             "continue it with `mlff-ins train ... --resume`")
        if not path.exists():
            from mlff_ins.model.universal import UNIVERSAL

            from mlff_ins.model.shipped import SHIPPED

            raise InputError(f"{path}: not a model bundle folder nor a model name (shipped: "
                             f"{', '.join(SHIPPED)}; universal: {', '.join(UNIVERSAL)})")
        raise InputError(f"{path}: not a model bundle (no bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path}: not valid JSON ({err})") from None
    members = meta.get("members") if isinstance(meta, dict) else None
    if not isinstance(members, list) or not members:
        raise InputError(f"{meta_path}: needs a non-empty 'members' list")
    root = path.resolve()
    for member in members:
        # loading a member runs code (torch.package): only files inside the bundle folder
        target = (path / str(member)).resolve()
        if (not isinstance(member, str) or Path(member).is_absolute()
                or ".." in Path(member).parts or not target.is_relative_to(root)):
            raise InputError(f"{meta_path}: member path {member!r} leaves the bundle folder; "
                             f"refusing to load it")
        if not (path / member).exists():
            raise InputError(f"{path}: member model {member} is missing")
    return meta


@contextlib.contextmanager
def default_dtype(dtype):
    """Set torch's global default dtype while the block runs, and restore it after."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _float64_default():
    """nequip expects data in float64 (it sets that as torch's global default); we set it only
    while our calls run, so loading a model changes nothing global for the user. Without it,
    positions are rounded to float32 before the model sees them (errors ~1e-6 Angstrom)."""
    import torch

    return default_dtype(torch.float64)


def _remember_installed_packages() -> None:
    """Make ``importlib.metadata.packages_distributions`` remember its answer in this process.

    nequip's version module maps every installed distribution when it is imported (~1.2 s on 2
    cores with this package's dependencies), and a packaged model (``model.nequip.zip``) brings
    its own copy of that module, imported again for every member loaded: 5 s of the 8 s that
    loading a 3-member bundle took. The map only changes when packages are installed while the
    process runs, which loading a model does not do."""
    import functools
    import importlib.metadata as md

    if not hasattr(md.packages_distributions, "cache_info"):
        md.packages_distributions = functools.lru_cache(maxsize=1)(md.packages_distributions)


def _load_member(model_path: Path, device):
    """Load one packaged NequIP model and its transforms (type mapping, neighbour list)."""
    _remember_installed_packages()
    from nequip.integrations.utils import basic_transforms, handle_chemical_species_map
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.nn import graph_model

    with _float64_default():
        model = load_saved_model(str(model_path))
    model.eval()
    model.to(device)
    r_max = float(model.metadata[graph_model.R_MAX_KEY])
    type_names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    species_map = handle_chemical_species_map(True, type_names)  # types are elements
    transforms = basic_transforms(model.metadata, r_max, type_names, species_map)
    return model, transforms


def _run_member(model, data: dict, stress: bool) -> dict:
    """One member's outputs on ``data`` (which it may modify). ``stress=False`` differentiates
    the energy by the positions alone, skipping the strain derivative nequip's
    ``ForceStressOutput`` always takes: the same forces (to round-off), measured 3-6 % faster
    at 64 atoms and 1-3 % at 512 (two small presets, 2 CPU cores)."""
    import torch
    from nequip.data import AtomicDataDict as K

    wrapped = getattr(model, "model", None)
    # by name: a packaged model brings its own copy of nequip's classes (torch.package)
    if (stress or type(wrapped).__name__ != "ForceStressOutput"
            or not getattr(wrapped, "do_derivatives", False)):
        return model(data)
    # what GraphModel.forward passes on, then ForceStressOutput without the strain
    inner = {k: data[k] for k in model.model_input_fields if k in data}
    pos = inner[K.POSITIONS_KEY].requires_grad_(True)
    out = wrapped.func(inner)
    (grad,) = torch.autograd.grad([out[K.TOTAL_ENERGY_KEY].sum()], [pos])
    out[K.FORCE_KEY] = torch.neg(grad)
    pos.requires_grad_(False)
    return out


def resolve_device(name: str = "cpu"):
    """The torch device a ``--device`` option names: ``cpu``, ``cuda``, ``cuda:N``, or ``auto``
    (cuda when torch sees a GPU, else cpu). Raises :class:`InputError` for an unknown name or
    for cuda on a machine without one (instead of torch's error deep inside model loading)."""
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use cpu "
                             f"or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
    elif device.type != "cpu":
        raise InputError(f"--device {name!r}: only cpu, cuda, cuda:N or auto")
    return device


def default_batch_atoms(device) -> int:
    """Atoms per batched model call: 4096 on a GPU; 512 on a CPU, where large batches were
    slower (vacancy phonons, 70 supercells of 215 atoms, l_max 2 small preset, 2 cores: force
    time 9.3 s with 512, 9.7 and 11.3 s with 1000, 12.5 and 12.6 s with 4096)."""
    import torch

    return 4096 if torch.device(device).type == "cuda" else 512


class BundleCalculator(Calculator):
    """ASE calculator for a model bundle (one or more NequIP members).

    Parameters
    ----------
    member_paths : packaged NequIP models (``.nequip.zip``) or checkpoints, one per member.
    device : "cpu", "cuda", "cuda:1", ... or "auto" (see :func:`resolve_device`).
    name : what error messages call the model (the bundle folder).
    skin : Å; successive calls reuse one neighbour list of radius cutoff + skin while it still
        holds every pair within the cutoff (see :mod:`mlff_ins.model.neighbours`); 0 builds a
        fresh list at every call.

    Attribute ``compute_stress`` (default True): compute the stress at every call, as nequip's
    calculator does, so that a following ``get_stress()`` costs nothing. Set it to False where
    only forces are needed (the MD driver does for NVE/NVT steps that are not written): the
    stress is then computed only when it is asked for.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress",
                              "energy_std", "forces_std"]

    def __init__(self, member_paths, *, device: str = "cpu", name: str = "model",
                 skin: float = 1.0, **kwargs):
        import torch
        _remember_installed_packages()       # before the first import of nequip
        from nequip.data.transforms import NeighborListTransform
        from nequip.nn import graph_model

        from mlff_ins.model.neighbours import SkinNeighbourList

        super().__init__(**kwargs)
        self.model_name = str(name)
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.compute_stress = True
        loaded = [_load_member(Path(p), self.device) for p in member_paths]
        self.models = [m for m, _ in loaded]
        self.elements = self.models[0].metadata[graph_model.TYPE_NAMES_KEY].split(" ")
        # Members share elements and cutoff, so one set of transforms serves all of them.
        self.transforms = loaded[0][1]
        # the skin list replaces nequip's neighbour-list transform when that is a plain one
        nl = [t for t in self.transforms if isinstance(t, NeighborListTransform)]
        self._skin_nl = None
        if len(nl) == 1 and nl[0] is self.transforms[-1] and nl[0]._pruner is None:
            self._skin_nl = SkinNeighbourList(nl[0].r_max, skin, backend=nl[0].backend)

    def check_elements(self, atoms, source=None) -> None:
        """Raise :class:`InputError` if ``atoms`` hold an element the model was not trained on;
        ``source`` (the structure's file) starts the message."""
        unknown = sorted(set(atoms.get_chemical_symbols()) - set(self.elements))
        if unknown:
            raise InputError((f"{source}: " if source is not None else "")
                             + f"element {unknown[0]} is not known to the model "
                             f"{self.model_name} (its elements: {', '.join(self.elements)})")

    def _member_outputs(self, atoms, keys, stress: bool = True) -> list[dict]:
        """Run every member on ``atoms`` (neighbour list built once); return the ``keys`` of each
        member's output as float64 numpy arrays (the stress only with ``stress``)."""
        import torch
        from nequip.data import AtomicDataDict, from_ase

        self.check_elements(atoms)
        with _float64_default():
            data = from_ase(atoms)
            if self._skin_nl is not None:
                for t in self.transforms[:-1]:
                    data = t(data)
                data = self._skin_nl(data)
            else:
                for t in self.transforms:
                    data = t(data)
            data = AtomicDataDict.to_(data, self.device)
            outputs = []
            for model in self.models:
                # each member gets its own copy: the model writes its outputs into the dict
                out = _run_member(model, {k: (v.clone() if torch.is_tensor(v) else v)
                                          for k, v in data.items()}, stress)
                outputs.append({k: out[k].detach().double().cpu().numpy()
                                for k in keys if k in out})
        return outputs

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from ase.stress import full_3x3_to_voigt_6_stress
        from nequip.data import AtomicDataDict as K

        super().calculate(atoms, properties, system_changes)
        outs = self._member_outputs(self.atoms, (K.TOTAL_ENERGY_KEY, K.PER_ATOM_ENERGY_KEY,
                                                 K.FORCE_KEY, K.STRESS_KEY),
                                    stress=self.compute_stress or "stress" in properties)
        if len(outs) == 1:   # no spread to compute (the reductions took ~0.2 ms at 64 atoms)
            out = outs[0]
            energy = float(out[K.TOTAL_ENERGY_KEY].reshape(()))
            self.results = {"energy": energy, "free_energy": energy,
                            "energies": out[K.PER_ATOM_ENERGY_KEY].reshape(-1),
                            "forces": out[K.FORCE_KEY], "energy_std": 0.0,
                            "forces_std": np.zeros(len(out[K.FORCE_KEY]))}
        else:
            E = np.array([o[K.TOTAL_ENERGY_KEY].reshape(()) for o in outs])
            F = np.stack([o[K.FORCE_KEY] for o in outs])
            self.results = {
                "energy": float(E.mean()),
                "free_energy": float(E.mean()),
                "energies": np.mean([o[K.PER_ATOM_ENERGY_KEY].reshape(-1) for o in outs],
                                    axis=0),
                "forces": F.mean(axis=0),
                "energy_std": float(E.std()),
                "forces_std": np.sqrt(F.var(axis=0).sum(axis=1)),
            }
        if self.atoms.pbc.all() and all(K.STRESS_KEY in o for o in outs):
            S = np.mean([o[K.STRESS_KEY].reshape(3, 3) for o in outs], axis=0)
            self.results["stress"] = full_3x3_to_voigt_6_stress(S)

    def member_forces(self, atoms) -> np.ndarray:
        """Forces of every member, shape (K, N, 3), eV/Angstrom (for diagnostics)."""
        from nequip.data import AtomicDataDict as K

        return np.stack([o[K.FORCE_KEY]
                         for o in self._member_outputs(atoms, (K.FORCE_KEY,), stress=False)])

    def member_forces_batched(self, structures, max_batch_atoms: int | None = None,
                              progress=None) -> np.ndarray:
        """Forces of every member for S structures of N atoms each (the displaced supercells of
        a finite-displacement calculation), shape (K, S, N, 3), eV/Angstrom.

        Structures are packed into batched graphs of at most ``max_batch_atoms`` atoms (at least
        one structure each; default :func:`default_batch_atoms` for the device) and every member
        runs once per batch: one model call evaluates many supercells. Each structure keeps its
        own neighbour list, so the result is the same as calling :meth:`member_forces` on each
        (up to summation order, ~1e-15 relative in float64).
        ``progress(n_done)`` is called after each batch.
        """
        import torch
        from nequip.data import AtomicDataDict, from_ase

        structures = list(structures)
        if max_batch_atoms is None:
            max_batch_atoms = default_batch_atoms(self.device)
        sizes = {len(a) for a in structures}
        if len(sizes) != 1:
            raise ValueError("member_forces_batched needs structures with equal atom counts")
        n_atoms = sizes.pop()
        per_batch = max(1, int(max_batch_atoms) // max(n_atoms, 1))
        out = np.empty((len(self.models), len(structures), n_atoms, 3))
        with _float64_default():
            for start in range(0, len(structures), per_batch):
                chunk = structures[start:start + per_batch]
                graphs = []
                for atoms in chunk:
                    self.check_elements(atoms)
                    data = from_ase(atoms)
                    for t in self.transforms:
                        data = t(data)
                    graphs.append(data)
                batch = AtomicDataDict.to_(AtomicDataDict.batched_from_list(graphs), self.device)
                for k, model in enumerate(self.models):
                    res = _run_member(model, {key: (v.clone() if torch.is_tensor(v) else v)
                                              for key, v in batch.items()}, stress=False)
                    forces = res[AtomicDataDict.FORCE_KEY].detach().double().cpu().numpy()
                    out[k, start:start + len(chunk)] = forces.reshape(len(chunk), n_atoms, 3)
                if progress is not None:
                    progress(len(chunk))
        return out


def load_calculator(bundle_dir: str | os.PathLike, device: str = "cpu",
                    skin: float = 1.0, members: Sequence[int] | None = None) -> BundleCalculator:
    """Load a model bundle as an ASE calculator (ensemble mean, with ``energy_std`` and
    ``forces_std`` in ``results``), see :class:`BundleCalculator`; or, when ``bundle_dir`` is no
    folder but the name of a universal model (:mod:`mlff_ins.model.universal`), that model; the
    name of a bundle shipped in the package (si-reference) loads that bundle.
    ``members``: use only these members of the bundle (0-based; default all): a long MD costs
    one model evaluation per member and step."""
    from mlff_ins.model.shipped import resolve_model
    from mlff_ins.model.universal import UniversalCalculator, is_universal

    bundle_dir = resolve_model(bundle_dir)
    if is_universal(bundle_dir) and not Path(bundle_dir).exists():
        if members is not None:
            raise InputError(f"--members: {bundle_dir} is one universal model, not an ensemble")
        return UniversalCalculator(str(bundle_dir), device=device)
    meta = read_bundle(bundle_dir)
    paths = list(meta["members"])
    if members is not None:
        bad = [k for k in members if not 0 <= k < len(paths)]
        if bad or not members or len(set(members)) != len(members):
            raise InputError(f"--members {' '.join(map(str, members))}: {bundle_dir} has "
                             f"{len(paths)} member(s), numbered 0 to {len(paths) - 1}; give "
                             f"each at most once")
        paths = [paths[k] for k in members]
    calc = BundleCalculator([Path(bundle_dir) / m for m in paths], device=device,
                            name=str(bundle_dir), skin=skin)
    calc.bundle = meta
    return calc
