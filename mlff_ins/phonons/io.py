"""The phonon files: ``NAME.h5`` (everything, per ensemble member) and ``NAME_phonopy_params.yaml``
(member-mean force constants, for phonopy and Euphonic users).

HDF5 layout (``format = "mlff-ins phonons 1"`` at the root, with ``source``, ``n_members``,
``code_version`` and ``provenance`` as JSON text):

- ``structure/``: ``lattice`` (3, 3) Angstrom, ``scaled_positions``, ``symbols``, ``masses`` (amu)
  of the unit cell; ``supercell_matrix``; ``primitive_matrix``.
- ``force_constants`` (K, ...) eV/Angstrom^2, phonopy's layout (compact or full) per member.
- ``mesh/``: ``mesh``, ``qpoints`` (fractional, primitive reciprocal cell), ``weights``,
  ``frequency_THz`` (K, Q, 3n), ``energy_meV`` (same in meV), ``eigenvectors`` (Q, 3n, 3n; columns
  are modes, phonopy's convention) of the mean force constants.
- ``dos/``: ``frequency_THz``, ``energy_meV``, ``total`` (K, E) and ``partial_<El>`` (K, E) in
  states/THz per primitive cell, with ``*_mean`` and ``*_std`` over members.
- ``band/``: ``qpoints``, ``distance`` (1/Angstrom), ``labels``/``label_distance``, ``frequency_THz``.
- ``imaginary/``: ``qpoints``, ``frequency_THz``, ``where`` (mesh|band) of modes below the tolerance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mlff_ins import __version__
from mlff_ins.atomic_io import atomic_path
from mlff_ins.errors import InputError
from mlff_ins.phonons.finite_displacement import PhononSet, with_force_constants
from mlff_ins.phonons.properties import MEV_PER_THZ, PhononProperties

FORMAT = "mlff-ins phonons 1"


def params_path(h5_path: str | os.PathLike) -> Path:
    p = Path(h5_path)
    return p.with_name(p.stem + "_phonopy_params.yaml")


def _stats(group, name, values):
    group.create_dataset(name, data=values)
    group.create_dataset(name + "_mean", data=values.mean(axis=0))
    group.create_dataset(name + "_std", data=values.std(axis=0))


def write_phonons(path: str | os.PathLike, pset: PhononSet, props: PhononProperties) -> list[Path]:
    """Write ``path`` (HDF5) and its ``_phonopy_params.yaml``, each atomically and as a pair:
    both are written in full to temporary files before either replaces its old version (a
    failure leaves both old files as they were); return both paths."""
    import h5py

    path = Path(path)
    yaml_path = params_path(path)
    with atomic_path(yaml_path) as ytmp:
        pset.mean.save(ytmp, settings={"force_constants": True})
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            _write_h5(f, pset, props)
    return [path, yaml_path]


def _write_h5(f, pset: PhononSet, props: PhononProperties) -> None:
    ph = pset.members[0]
    unit = ph.unitcell
    f.attrs["format"] = FORMAT
    f.attrs["source"] = pset.source
    f.attrs["n_members"] = len(pset.members)
    f.attrs["code_version"] = __version__
    f.attrs["provenance"] = json.dumps({**pset.provenance, "timings_s": pset.timings_s})
    s = f.create_group("structure")
    s["lattice"] = np.array(unit.cell)
    s["scaled_positions"] = np.array(unit.scaled_positions)
    s["symbols"] = np.array(list(unit.symbols), dtype="S")
    s["masses"] = np.array(unit.masses)
    s["supercell_matrix"] = np.array(ph.supercell_matrix)
    s["primitive_matrix"] = np.array(ph.primitive_matrix)
    if ph.nac_params is not None:  # Born charges (primitive cell) and dielectric tensor
        nac = f.create_group("nac")
        nac["born"] = np.array(ph.nac_params["born"])
        nac["dielectric"] = np.array(ph.nac_params["dielectric"])
        nac.attrs["factor"] = float(ph.nac_params["factor"])
    fc = f.create_dataset("force_constants",
                          data=np.array([m.force_constants for m in pset.members]),
                          compression="gzip")
    fc.attrs["units"] = "eV/angstrom^2"
    m = f.create_group("mesh")
    m["mesh"] = props.mesh
    m["qpoints"] = props.qpoints
    m["weights"] = props.weights
    m["frequency_THz"] = props.frequencies_THz
    m["energy_meV"] = props.frequencies_THz * MEV_PER_THZ
    if props.eigenvectors is not None:
        m.create_dataset("eigenvectors", data=props.eigenvectors, compression="gzip")
    d = f.create_group("dos")
    d["frequency_THz"] = props.dos_frequency_THz
    d["energy_meV"] = props.dos_frequency_THz * MEV_PER_THZ
    d.attrs["units"] = "states/THz per primitive cell"
    _stats(d, "total", props.dos_total)
    for el, v in props.dos_partial.items():
        _stats(d, f"partial_{el}", v)
    b = f.create_group("band")
    b["qpoints"] = props.band_qpoints
    b["distance"] = props.band_distances
    b["label_distance"] = np.array([x for x, _ in props.band_labels])
    b["labels"] = np.array([lab for _, lab in props.band_labels], dtype="S")
    b["frequency_THz"] = props.band_frequencies_THz
    if props.thermal is not None:
        th = props.thermal
        g = f.create_group("thermal")
        g["temperature_K"] = th["temperature_K"]
        g.attrs["formula_unit"] = th["formula"]
        g.attrs["source"] = "phonopy thermal properties (harmonic), on the mesh above"
        for label in ("per_atom", "per_formula_unit"):
            sub = g.create_group(label)
            for name, values in th[label].items():
                _stats(sub, name, values)
                sub[f"{name}_mean"].attrs["units"] = th["units"][name]
    im = f.create_group("imaginary")
    im["qpoints"] = np.array([q for q, _, _ in props.imaginary]).reshape(-1, 3)
    im["frequency_THz"] = np.array([x for _, x, _ in props.imaginary])
    im["where"] = np.array([w for _, _, w in props.imaginary], dtype="S")


def _looks_like_phonopy(path: Path) -> bool:
    """A file of a phonopy calculation (FORCE_SETS, FORCE_CONSTANTS, a phonopy YAML, a
    POSCAR-style unit cell) given where a phonons HDF5 file belongs."""
    name = path.name.upper()
    if name.startswith(("FORCE_SETS", "FORCE_CONSTANTS", "POSCAR", "SPOSCAR", "BORN")):
        return True
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except OSError:
            return False
        return b"phonopy:" in head
    return False


def read_phonons(path: str | os.PathLike) -> PhononSet:
    """Rebuild the per-member phonopy objects (force constants set) from a phonons HDF5 file."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    from mlff_ins.hdf5_files import open_self_contained

    if not path.is_dir() and _looks_like_phonopy(path):
        raise InputError(f"{path}: a phonopy file, not a phonons file of mlff-ins; make one "
                         f"from its folder with `mlff-ins phonons --force-sets "
                         f"{path.parent} -o phonons.h5`")
    with open_self_contained(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise InputError(f"{path}: not a phonons file of mlff-ins (write one with "
                             "`mlff-ins phonons`)")
        s = f["structure"]
        unit = PhonopyAtoms(symbols=[x.decode() for x in s["symbols"][()]],
                            cell=s["lattice"][()], scaled_positions=s["scaled_positions"][()],
                            masses=s["masses"][()])
        smat, pmat = s["supercell_matrix"][()], s["primitive_matrix"][()]
        fcs = f["force_constants"][()]
        source = str(f.attrs["source"])
        prov = json.loads(f.attrs["provenance"])
        mesh = f["mesh/mesh"][()]
        nac = ({"born": f["nac/born"][()], "dielectric": f["nac/dielectric"][()],
                "factor": float(f["nac"].attrs["factor"])} if "nac" in f else None)
    ph = Phonopy(unit, supercell_matrix=smat, primitive_matrix=pmat)
    if nac is not None:
        ph.nac_params = nac
    members = [with_force_constants(ph, fc) for fc in fcs]
    return PhononSet(members, source, provenance={**prov, "mesh": mesh.tolist(),
                                                  "phonons_file": str(path)})
