"""Silicon's phonon references: experiment, the published CP2K calculation (phonopy's Si-CP2K
example, shipped in mlff_ins/resources/si/phonopy-Si-CP2K) and CP2K with the settings of our
training data on the same displaced supercell, and a model's Γ, X, L at that geometry.

The benchmark (``python -m mlff_ins.bench phonons``), the case study's report and the tests read
them from here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlff_ins.phonons.properties import diamond_special_frequencies

#: experiment (THz), as quoted in the issue: Γ TO; X TA, LA, TO; L TA, LA, LO, TO
EXPERIMENT = {"G": {"TO": 15.53}, "X": {"TA": 4.49, "LA": 12.32, "TO": 13.90},
              "L": {"TA": 3.43, "LA": 11.35, "LO": 12.60, "TO": 14.68}}
CP2K_DIR = Path(__file__).resolve().parents[1] / "resources" / "si" / "phonopy-Si-CP2K"
HARTREE_PER_BOHR_TO_EV_PER_A = 51.422090462576755   # phonopy's CP2K interface factor
#: the lattice constant of the Si-CP2K reference calculation (its Si.inp), in Å
CP2K_LATTICE_A = 5.4661639157319968
LABELLED_CHECK = CP2K_DIR.parent / "si_cp2k_pbe_phonon_check.xyz"
#: the same two supercells labelled with the k-point data set's settings
#: (configs/label/cp2k_si_k222.yaml: 2x2x2 k-points, DZVP-MOLOPT-GTH; scripts/relabel_si_k222.sh)
LABELLED_CHECK_K222 = CP2K_DIR.parent / "si_cp2k_pbe_k222_phonon_check.xyz"


def labelled_check_for(model) -> Path:
    """The phonon check labelled with the settings of the data ``model`` was trained on: the
    k-point one when ``model`` is a bundle folder trained on the k-point data set
    (si_cp2k_pbe_k222*.xyz), else the Gamma-only one (also for a universal model by name, which
    learned neither)."""
    from mlff_ins.model.calculator import read_bundle
    from mlff_ins.model.shipped import resolve_model

    model = resolve_model(str(model))          # a shipped bundle by name: its folder
    if not (Path(model) / "bundle.json").exists():
        return LABELLED_CHECK
    data = read_bundle(model).get("training_data", {})
    files = data.get("files") or [data.get("file", "")]
    k222 = any(Path(str(f)).name.startswith("si_cp2k_pbe_k222") for f in files)
    return LABELLED_CHECK_K222 if k222 else LABELLED_CHECK


def dft_reference():
    """Γ, X, L of phonopy's Si-CP2K example (PBE, 2x2x2 conventional supercell); also returns
    its phonopy object (one displacement) and the CP2K forces on that displaced supercell."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    a = CP2K_LATTICE_A
    frac = [[0.875, 0.875, 0.875], [0.875, 0.375, 0.375], [0.375, 0.875, 0.375],
            [0.375, 0.375, 0.875], [0.125, 0.125, 0.125], [0.125, 0.625, 0.625],
            [0.625, 0.125, 0.625], [0.625, 0.625, 0.125]]
    unit = PhonopyAtoms(symbols=["Si"] * 8, cell=np.eye(3) * a, scaled_positions=frac)
    ph = Phonopy(unit, supercell_matrix=np.diag([2, 2, 2]),
                 primitive_matrix=[[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    ph.generate_displacements(distance=0.01)
    lines = (CP2K_DIR / "Si-supercell-001-forces-1_0.xyz").read_text().splitlines()
    rows = [ln.split() for ln in lines if ln.strip().split()[:1] and ln.split()[0].isdigit()]
    forces = np.array([[float(x) for x in r[3:6]] for r in rows]) * HARTREE_PER_BOHR_TO_EV_PER_A
    assert len(forces) == len(ph.supercell), "Si-CP2K forces do not match the 2x2x2 supercell"
    return _frequencies_from_forces(ph, forces), ph, forces


def _frequencies_from_forces(ph, forces) -> dict:
    ph.forces = [forces]
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    return diamond_special_frequencies(ph)


def labelled_dft(ph, path: Path = LABELLED_CHECK):
    """Γ, X, L from CP2K with the settings of the embedded data set (configs/label/cp2k_si.yaml;
    ``path`` = LABELLED_CHECK_K222: those of the k-point data set) on the reference's own
    displaced supercell (resources/si/si_cp2k_pbe_phonon_check.xyz, made by
    scripts/make_si_phonon_check.py): the DFT the models learn. Returns (frequencies, forces)."""
    import ase.io

    from mlff_ins.errors import InputError

    if not Path(path).exists():
        raise InputError(f"{path}: not labelled yet (scripts/relabel_si_k222.sh labels it first)")
    frame = ase.io.read(path, index=0)
    displaced = ph.supercells_with_displacements[0]
    assert np.abs(frame.get_scaled_positions() - displaced.scaled_positions).max() < 1e-9, \
        f"{path} is not the reference's displaced supercell"
    forces = frame.get_forces()
    return _frequencies_from_forces(ph, forces), forces


def model_at_reference(calc) -> tuple[dict, dict]:
    """Γ, X and L of ``calc`` at the CP2K reference geometry (a = 5.4662 Å, 2x2x2 conventional
    supercell, as the reference): the ensemble mean's {point: {branch: THz}}, and the spread
    of the members' frequencies, {point: {branch: std in THz}} (population std; empty for a
    one-member model)."""
    from ase.build import bulk

    from mlff_ins.phonons.finite_displacement import phonons_from_model

    pset = phonons_from_model(bulk("Si", "diamond", a=CP2K_LATTICE_A, cubic=True), calc,
                              [2, 2, 2])
    mean = diamond_special_frequencies(pset.mean)
    if len(pset.members) < 2:
        return mean, {}
    each = [diamond_special_frequencies(m) for m in pset.members]
    spread = {point: {branch: float(np.std([f[point][branch] for f in each]))
                      for branch in branches} for point, branches in mean.items()}
    return mean, spread
