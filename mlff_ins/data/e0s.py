"""Per-element reference energies (E0s): the model's fixed per-type energy shifts.

The model predicts E = sum_i E0[Z_i] + (what the network learns), so the E0s set the energy
baseline of each element; forces do not depend on them. They come from, in order of preference:

1. ``e0s: {Cu: ..., Au: ...}`` in the training config (eV);
2. isolated-atom frames (``config_type=IsolatedAtom``) in the data, with ``e0s: auto``;
3. a least-squares fit to the energies of the training frames, with ``e0s: auto`` when the data
   has no isolated-atom frame for some element, or with ``e0s: fit`` (what MACE calls "average"
   E0s).

Isolated-atom energies are the more transferable choice: they are a property of each element
alone, while fitted E0s depend on the compositions in the training set. The two are never mixed
(an isolated-atom energy holds a cohesive energy a fitted one does not), so when isolated atoms
cover only some elements all E0s are fitted.

The fit (:func:`fit_e0s`) uses the training frames only, never validation or test frames. It
minimises the squared error of the energy per atom, as the training loss does,
sum_f (E_f/N_f - sum_el x_f,el E0_el)^2 with x_f,el the fraction of element el in frame f. When
the compositions do not determine every E0 (all frames with the same stoichiometry, or elements
always in a fixed ratio) the fit is rank-deficient: among the least-squares solutions it takes
the one closest to the mean energy per atom of the training frames for every element, so with a
single fixed composition every element gets that mean (and the fitted E0s still reproduce the
energy baseline of that composition exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlff_ins.errors import InputError

ISOLATED_ATOMS = "isolated_atoms"   # from config_type=IsolatedAtom frames of the data
CONFIG = "config"                   # from e0s: in the training config
FITTED = "fitted"                   # least squares on the training frames' energies

RCOND = 1e-9  # singular values below this fraction of the largest count as zero


@dataclass
class E0Choice:
    """The E0s of a training run and where they came from.

    values : element -> E0 in eV, for every element of the model.
    method : ISOLATED_ATOMS, CONFIG or FITTED.
    message : what to tell the user (one or more lines).
    fit : diagnostics of the fit (None unless fitted), see :func:`fit_e0s`.
    """

    values: dict[str, float]
    method: str
    message: str
    fit: dict | None = field(default=None)


def fit_e0s(frames, elements: list[str]) -> tuple[dict[str, float], dict]:
    """Fit per-element reference energies to the frames' total energies by least squares.

    Parameters
    ----------
    frames : labelled frames (energy in eV); only training frames should be passed.
    elements : the model's elements (one E0 each, also for an element in no frame).

    Returns
    -------
    e0s : element -> E0 in eV.
    info : ``n_frames``; ``rank`` (how many independent combinations of E0s the compositions
        determine, at most ``len(elements)``); ``mean_energy_per_atom_eV`` (the value the
        undetermined combinations are set closest to); ``rms_residual_meV_per_atom`` (what is
        left to the network); ``absent`` (elements in no frame: they get the mean energy per
        atom); ``fixed_composition`` (every frame has the same element fractions).
    """
    if not frames:
        raise InputError("no training frames to fit the E0s to")
    col = {el: k for k, el in enumerate(elements)}
    counts = np.zeros((len(frames), len(elements)))
    energy = np.empty(len(frames))
    for f, atoms in enumerate(frames):
        for z in atoms.get_chemical_symbols():
            counts[f, col[z]] += 1
        energy[f] = float(atoms.get_potential_energy())
    n_atoms = counts.sum(axis=1)
    x = counts / n_atoms[:, None]         # element fractions; each row sums to 1
    y = energy / n_atoms                  # energy per atom
    mean = float(y.mean())
    # rows of x sum to one, so x @ (mean * 1) = mean: solve for the deviation from `mean`; the
    # minimum-norm least-squares deviation leaves undetermined directions at `mean`
    delta, _, rank, _ = np.linalg.lstsq(x, y - mean, rcond=RCOND)
    e0 = mean + delta
    resid = y - x @ e0
    absent = [el for el in elements if not counts[:, col[el]].any()]
    fixed = bool(np.allclose(x, x[0], rtol=0, atol=1e-12))
    info = {"n_frames": len(frames), "rank": int(rank), "n_elements": len(elements),
            "mean_energy_per_atom_eV": mean,
            "rms_residual_meV_per_atom": float(1000 * np.sqrt(np.mean(resid ** 2))),
            "absent": absent, "fixed_composition": fixed}
    return {el: float(e0[col[el]]) for el in elements}, info


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{el} {v:.4f}" for el, v in values.items())


def fit_message(values: dict[str, float], info: dict, reason: str) -> str:
    """The lines that tell the user the E0s were fitted, with their values and caveats."""
    lines = [(f"E0s fitted ({reason}): least squares on the energies of the "
              f"{info['n_frames']} training frames, in eV: {_fmt(values)} "
              f"(left to the network: RMS {info['rms_residual_meV_per_atom']:.1f} meV/atom)")]
    present = info["n_elements"] - len(info["absent"])
    if info["rank"] < present:
        mean = info["mean_energy_per_atom_eV"]
        if info["fixed_composition"] and present > 1:
            lines.append(f"  all training frames have the same composition, so the data do not "
                         f"say how to split the energy between elements: each element gets the "
                         f"mean energy per atom, {mean:.4f} eV. Forces and energies of this "
                         f"composition are unaffected; energies of other compositions are not "
                         f"meaningful.")
        else:
            lines.append(f"  the training compositions determine only {info['rank']} of "
                         f"{present} independent E0 combinations; the rest are set as close "
                         f"as possible to the mean energy per atom, {mean:.4f} eV, so energies "
                         f"of new compositions are less reliable.")
    if info["absent"]:
        lines.append(f"  {', '.join(info['absent'])}: in no training frame; E0 set to the mean "
                     f"energy per atom, {info['mean_energy_per_atom_eV']:.4f} eV")
    lines.append("  isolated-atom frames (config_type=IsolatedAtom) or e0s: in the config give "
                 "more transferable E0s")
    return "\n".join(lines)


def choose_e0s(setting, isolated: dict[str, float], elements: list[str], train_frames,
               *, source: str) -> E0Choice:
    """Decide the E0s of a training run.

    Parameters
    ----------
    setting : the config's ``e0s``: ``"auto"``, ``"fit"`` or a mapping element -> eV.
    isolated : element -> energy of the data's isolated-atom frames.
    elements : the model's elements.
    train_frames : the training frames (the fit uses these and nothing else).
    source : the data file, for messages.
    """
    if isinstance(setting, dict):
        given = {str(k): float(v) for k, v in setting.items()}
        missing = [el for el in elements if el not in given]
        if missing:
            raise InputError(f"e0s: no energy for element {missing[0]} (give every element of "
                             f"the model, or e0s: auto to take isolated-atom frames or fit them)")
        values = {el: given[el] for el in elements}
        return E0Choice(values, CONFIG, f"E0s from e0s: in the config, in eV: {_fmt(values)}")
    if setting == "auto" and all(el in isolated for el in elements):
        values = {el: isolated[el] for el in elements}
        return E0Choice(values, ISOLATED_ATOMS,
                        f"E0s from the isolated-atom frames of {source}, in eV: {_fmt(values)}")
    if setting == "fit":
        reason = "e0s: fit"
    elif not isolated:
        reason = f"no isolated-atom frames in {source}"
    else:
        lacking = [el for el in elements if el not in isolated]
        reason = (f"{source} has isolated-atom frames for {', '.join(sorted(isolated))} but "
                  f"not for {', '.join(lacking)}; isolated-atom and fitted E0s are not mixed")
    values, info = fit_e0s(train_frames, elements)
    return E0Choice(values, FITTED, fit_message(values, info, reason), info)
