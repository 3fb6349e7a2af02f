"""``mlff-ins demo``: the pipeline on the embedded CP2K silicon data, in minutes on 2 CPU cores.

Steps: check the embedded labels (validation, and that forces sum to zero in every frame as they
must for a translation-invariant DFT energy), train a tiny NequIP model on them, and score it on
held-out frames; then phonons of diamond Si with it (cell relaxed with the model, 2x2x2
conventional supercell, batched finite displacements) and the VISION spectrum they give, with the
model's Γ, X and L frequencies printed next to experiment.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from mlff_ins.errors import InputError

RESOURCES = Path(__file__).resolve().parent / "resources"
SI_DATA = RESOURCES / "si" / "si_cp2k_pbe.xyz"


def check_labels(path: Path = SI_DATA) -> dict:
    """Validate the embedded data and measure the force sum of every frame.

    Returns counts per ``config_type`` and the largest |sum of forces| (eV/Angstrom).
    """
    from mlff_ins.data.ingest import read_frames, split_isolated_atoms
    from mlff_ins.data.validate import validate

    frames, e0s = split_isolated_atoms(read_frames(path))
    validate(frames, e0s=e0s)
    counts = dict(Counter(a.info.get("config_type", "?") for a in frames))
    max_sum = max(float(np.linalg.norm(a.get_forces().sum(axis=0))) for a in frames)
    return {"n_frames": len(frames), "counts": counts, "e0s": e0s, "max_force_sum": max_sum}


def run_demo(output: str | Path = "mlff-ins-demo", *, epochs: int | None = None) -> Path:
    """Run the demo into ``output`` and return the trained bundle's folder."""
    from mlff_ins.train.config import load_train_config
    from mlff_ins.train.driver import train_bundle

    if not SI_DATA.exists():
        raise InputError(f"{SI_DATA}: embedded data missing (broken install?)")
    output = Path(output)
    info = check_labels()
    print(f"embedded data {SI_DATA.name}: {info['n_frames']} CP2K PBE frames of Si "
          f"({', '.join(f'{k} {v}' for k, v in sorted(info['counts'].items()))}); "
          f"isolated-atom energy {', '.join(f'{k} {v:.3f} eV' for k, v in info['e0s'].items())}; "
          f"largest |sum of forces| "
          f"{info['max_force_sum']:.1e} eV/Å: labels OK")
    cfg = load_train_config(preset="tiny", overrides={"data": str(SI_DATA),
                                                      "training.max_epochs": epochs})
    bundle = output / "models" / "si_tiny"
    resume = bundle.exists() and not (bundle / "bundle.json").exists()
    if (bundle / "bundle.json").exists():
        print(f"{bundle}: already trained (delete it to train again)")
        return bundle
    print(f"training a tiny NequIP model into {bundle} ...")
    return train_bundle(cfg, bundle, resume=resume)


#: Si phonon frequencies from experiment (THz), for the demo's printout
SI_EXPERIMENT_THZ = {"Γ TO": 15.53, "X TA": 4.49, "X LA": 12.32, "X TO": 13.90, "L TA": 3.43,
                     "L LA": 11.35, "L LO": 12.60, "L TO": 14.68}


def run_phonon_demo(bundle: Path, output: str | Path) -> dict:
    """Phonons and the VISION S(E) of diamond Si with the demo model; returns the file paths
    and the frequencies (THz) at Γ, X, L."""
    from ase.build import bulk
    from mlff_ins.ins.from_phonons import InsOptions, ins_from_phonons
    from mlff_ins.model.calculator import load_calculator
    from mlff_ins.neutron.plot import plot_spectra
    from mlff_ins.neutron.spectrum import write_spectra
    from mlff_ins.phonons.finite_displacement import phonons_from_model, relax
    from mlff_ins.phonons.io import write_phonons
    from mlff_ins.phonons.plot import plot_phonons
    from mlff_ins.phonons.properties import compute_properties, diamond_special_frequencies

    output = Path(output)
    calc = load_calculator(bundle)
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    try:
        si = relax(si, calc, fmax=1e-3)
        relaxed = True
    except InputError:            # a barely trained model may have no sensible minimum
        relaxed = False
    pset = phonons_from_model(si, calc, [2, 2, 2])
    props = compute_properties(pset.members, [12, 12, 12])
    ph_path = output / "si_phonons.h5"
    write_phonons(ph_path, pset, props)
    plot_phonons(props, ph_path.with_suffix(".png"), title="Si, demo model")
    spectra = ins_from_phonons(pset, InsOptions(instrument="vision", temperature_K=10.0,
                                                mesh=[12, 12, 12], e_max_meV=200.0))
    vis_path = output / "si_vision.h5"
    write_spectra(vis_path, spectra)
    plot_spectra({"s_e": spectra["s_e"]}, vis_path.with_suffix(".png"))
    freqs = {f"{'Γ' if point == 'G' else point} {branch}": f
             for point, branches in diamond_special_frequencies(pset.mean).items()
             for branch, f in branches.items()}
    return {"phonons": ph_path, "vision": vis_path, "lattice_A": float(si.cell.lengths()[0]),
            "relaxed": relaxed,
            "frequencies_THz": freqs}
