"""Harmonic thermodynamics from a phonon density of states alone — the predictor's DOS or an MD
VDOS — through pymatgen's :class:`~pymatgen.phonon.dos.PhononDos` (no hand-written integrals).

The output has the layout of :func:`mlff_ins.phonons.properties.thermal_properties` (same keys,
same units: J/(K mol) and kJ/mol, per mole of atoms and per mole of formula units, arrays of shape
(1, T) as for a one-member ensemble), so :func:`mlff_ins.phonons.plot.plot_heat_capacity` draws
both. Per atom it also gives C_V and S in units of k_B and the zero-point energy in meV.

pymatgen integrates the densities it is given over THz (trapezoid rule, frequencies ≥ 0 only)
and multiplies by N_A: its results are per "mole of cells", where a cell is whatever the DOS
integrates to 3 modes per atom of. It does not normalise by the DOS area (with ``structure`` it
only divides by the number of formula units). Here the DOS is therefore rescaled so that its
trapezoid area is exactly 3 per atom, which makes pymatgen's numbers per mole of atoms.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import constants
from scipy.integrate import trapezoid

from mlff_ins.errors import InputError
from mlff_ins.ins.modes import MEV_PER_THZ
from mlff_ins.neutron.quantum import KB_MEV_PER_K

#: gas constant, J/(K mol): the k_B N_A that pymatgen multiplies by (scipy's CODATA values)
R_J_PER_K_MOL = constants.Boltzmann * constants.Avogadro
#: one meV per particle in kJ/mol
KJ_PER_MOL_PER_MEV = constants.eV * constants.Avogadro * 1e-6
#: modes per atom
MODES_PER_ATOM = 3.0
#: a total DOS whose area is further than this from 3 per atom is refused (relative)
AREA_TOL = 0.02
#: pymatgen's weights take sinh(hν/2kT); numpy's sinh overflows above ~710
_SINH_ARG_MAX = 700.0

UNITS = {"heat_capacity": "J/(K mol)", "entropy": "J/(K mol)", "free_energy": "kJ/mol",
         "zero_point_energy": "kJ/mol", "heat_capacity_kB": "k_B", "entropy_kB": "k_B",
         "zero_point_energy_meV": "meV"}


def temperature_grid(t_max: float = 1000.0, t_step: float = 10.0) -> np.ndarray:
    """0, t_step, ... up to t_max (K), t_max included when it is a whole number of steps — the
    grid phonopy's ``run_thermal_properties(t_min=0, ...)`` uses."""
    if not (t_step > 0 and t_max > 0):
        raise InputError(f"--t-max {t_max:g} K and --t-step {t_step:g} K must be positive")
    return np.arange(0.0, t_max + t_step / 2, t_step)


def thermal_from_dos(energy_meV, dos_per_atom, temperatures_K, n_atoms_per_formula: int = 1, *,
                     formula: str = "") -> dict:
    """Harmonic C_V, S, F and zero-point energy from a phonon DOS, by pymatgen's PhononDos.

    Parameters
    ----------
    energy_meV : (E,) array
        Energies (meV), strictly increasing; points at E ≤ 0 (imaginary modes, the zero bin) are
        dropped and counted.
    dos_per_atom : (E,) array
        DOS per atom (1/meV). It is rescaled so that its trapezoid area over the whole grid is
        3 (modes per atom); the area found is returned as ``dos_area_per_atom``. Modes at
        E ≤ 0 stay out of the sums (as phonopy leaves out imaginary modes), so C_V tends to
        3R (1 − dropped/3) at high T.
    temperatures_K : (T,) array
        Temperatures (K), ≥ 0; at T = 0, C_V = S = 0 and F = the zero-point energy.
    n_atoms_per_formula : int
        Atoms in one formula unit, for the ``per_formula_unit`` values.
    formula : str
        Label of the formula unit (the plot's title shows it).

    Returns
    -------
    dict
        ``temperature_K`` (T,); ``per_atom`` and ``per_formula_unit``, each with
        ``heat_capacity`` and ``entropy`` (J/(K mol), shape (1, T)), ``free_energy`` (kJ/mol,
        (1, T)) and ``zero_point_energy`` (kJ/mol, (1,)); ``per_atom`` also has
        ``heat_capacity_kB`` and ``entropy_kB`` (k_B per atom, (1, T)) and
        ``zero_point_energy_meV`` (meV per atom, (1,)); ``units`` (key -> unit), ``formula``,
        ``n_atoms_per_formula``, ``dos_area_per_atom``, ``n_dropped`` (points at E ≤ 0) and
        ``dropped_modes_per_atom`` (their share of the 3 modes per atom).
    """
    from pymatgen.phonon.dos import PhononDos

    e = np.asarray(energy_meV, dtype=float)
    g = np.asarray(dos_per_atom, dtype=float)
    t = np.atleast_1d(np.asarray(temperatures_K, dtype=float))
    if e.ndim != 1 or e.shape != g.shape or len(e) < 3:
        raise InputError(f"DOS: need matching 1D energy and density arrays of 3 points or more "
                         f"(got shapes {e.shape} and {g.shape})")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(g))):
        raise InputError("DOS: energies or densities are not all finite")
    if np.any(np.diff(e) <= 0):
        raise InputError("DOS: energies must be strictly increasing")
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise InputError("temperatures must be finite and >= 0 K")
    if int(n_atoms_per_formula) < 1:
        raise InputError(f"atoms per formula unit must be at least 1 (got {n_atoms_per_formula})")
    area = float(trapezoid(g, e))
    if not area > 0:
        raise InputError(f"DOS: area {area:.4g} per atom is not positive")
    keep = e > 0
    if keep.sum() < 2:
        raise InputError("DOS: fewer than two points at positive energy")
    scale = MODES_PER_ATOM / area
    kept_area = float(trapezoid(g[keep], e[keep])) * scale
    e_max = float(e[keep][-1])
    t_pos = t[t > 0]
    if len(t_pos) and e_max / (2 * KB_MEV_PER_K * t_pos.min()) > _SINH_ARG_MAX:
        t_low = e_max / (2 * KB_MEV_PER_K * _SINH_ARG_MAX)
        raise InputError(f"T = {t_pos.min():g} K is too low for modes up to {e_max:.1f} meV "
                         f"(pymatgen's sinh(E/2kT) overflows below {t_low:.2g} K); start the "
                         f"temperatures higher (--t-step)")

    # pymatgen: frequencies in THz, densities in states/THz (per atom, area 3)
    dos = PhononDos(e[keep] / MEV_PER_THZ, g[keep] * scale * MEV_PER_THZ)
    cv = np.array([dos.cv(x) for x in t])                              # J/(K mol atoms)
    s = np.array([dos.entropy(x) for x in t])                          # J/(K mol atoms)
    f = np.array([dos.helmholtz_free_energy(x) for x in t]) * 1e-3     # kJ/mol atoms
    zpe = float(dos.zero_point_energy()) * 1e-3                        # kJ/mol atoms

    n_fu = int(n_atoms_per_formula)
    per_atom = {"heat_capacity": cv[None], "entropy": s[None], "free_energy": f[None],
                "zero_point_energy": np.array([zpe]),
                "heat_capacity_kB": cv[None] / R_J_PER_K_MOL,
                "entropy_kB": s[None] / R_J_PER_K_MOL,
                "zero_point_energy_meV": np.array([zpe / KJ_PER_MOL_PER_MEV])}
    per_fu = {k: per_atom[k] * n_fu
              for k in ("heat_capacity", "entropy", "free_energy", "zero_point_energy")}
    return {"temperature_K": t, "per_atom": per_atom, "per_formula_unit": per_fu,
            "units": dict(UNITS), "label": "harmonic C_V from the DOS (pymatgen)",
            "formula": formula, "n_atoms_per_formula": n_fu,
            "dos_area_per_atom": area, "n_dropped": int((~keep).sum()),
            "dropped_modes_per_atom": (MODES_PER_ATOM - kept_area) if (~keep).any() else 0.0,
            "source": "harmonic thermodynamics from a DOS by pymatgen's PhononDos"}



def _refuse_phonons_file(path: Path) -> None:
    """A phonons file (`mlff-ins phonons`) holds its thermodynamics already: say so."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            fmt = str(f.attrs.get("format", ""))
    except OSError:
        return
    if fmt.startswith("mlff-ins phonons"):
        raise InputError(f"{path}: a phonons file: its C_V, S, F and zero-point energy are in "
                         f"its /thermal group already (printed by `mlff-ins phonons`); for "
                         f"thermo from its VDOS run `mlff-ins ins {path.name} -o spectra.h5` "
                         f"and give spectra.h5")

def thermal_from_spectra_file(path, group: str | None = None, t_max: float = 1000.0,
                              t_step: float = 10.0, *, n_atoms_per_formula: int = 1) -> dict:
    """:func:`thermal_from_dos` of a ``vdos`` spectrum of a spectra file (T = 0..t_max K).

    ``group`` None takes the total VDOS (the group ``vdos``, or the one vdos group whose
    ``element`` is empty); a named group must be of kind ``vdos``. A total must have an area of
    3 per atom within 2 % (rectangle rule over the bin centres, as the file defines it). An
    element's partial (``vdos_<El>``, area 3 × that element's share of the atoms) is rescaled to
    3, so its results are per atom of that element. The returned dict also has ``path``,
    ``group`` and ``element``.
    """
    from mlff_ins.neutron.spectrum import Spectrum1D, read_spectra

    path = Path(path)
    spectra = read_spectra(path)
    vdos = {n: sp for n, sp in spectra.items()
            if sp.kind == "vdos" and isinstance(sp, Spectrum1D) and sp.axis_name == "energy"}
    if group is None:
        totals = [n for n, sp in vdos.items() if not sp.element]
        if "vdos" in vdos:
            group = "vdos"
        elif len(totals) == 1:
            group = totals[0]
        elif not vdos:
            _refuse_phonons_file(path)
            kinds = sorted({sp.kind for sp in spectra.values()})
            raise InputError(f"{path}: no VDOS in this file (it holds "
                             f"{', '.join(kinds) or 'no spectra'}); run mlff-ins spectra "
                             f"--vdos on a trajectory first")
        else:
            raise InputError(f"{path}: several VDOS groups ({', '.join(vdos)}); pick one with "
                             f"--group")
    elif group not in vdos:
        if group in spectra:
            raise InputError(f"{path}: --group {group} is a {spectra[group].kind} spectrum, not "
                             f"a VDOS (vdos groups: {', '.join(vdos) or 'none'})")
        raise InputError(f"{path}: no group {group} (vdos groups: "
                         f"{', '.join(vdos) or 'none; run mlff-ins spectra --vdos'})")
    sp = vdos[group]
    if len(sp.x) < 3:
        raise InputError(f"{path}: group {group} has {len(sp.x)} energy points; need 3 or more")
    area = sp.area()
    if not sp.element and abs(area / MODES_PER_ATOM - 1) > AREA_TOL:
        raise InputError(f"{path}: group {group} has area {area:.4g}, not 3 modes per atom "
                         f"within {AREA_TOL:.0%} (is it a per-atom VDOS in 1/meV?)")
    if not area > 0:
        raise InputError(f"{path}: group {group} has area {area:.4g}; not a DOS")
    label = sp.element or _elements(spectra) or "per atom"
    out = thermal_from_dos(sp.x, sp.intensity, temperature_grid(t_max, t_step),
                           n_atoms_per_formula, formula=label)
    out.update(path=str(path), group=group, element=sp.element)
    return out


def _elements(spectra) -> str:
    """The elements of the per-element VDOS partials, as a label (no formula is stored)."""
    els = [sp.element for sp in spectra.values() if sp.kind == "vdos" and sp.element]
    return "-".join(dict.fromkeys(els))


def thermal_csv(thermal: dict) -> str:
    """The thermal properties as CSV text: ``#`` lines saying what they are, then one row per
    temperature with the unit of each column in its name."""
    pa, pf = thermal["per_atom"], thermal["per_formula_unit"]
    u = thermal["units"]
    cols = [("temperature (K)", thermal["temperature_K"]),
            (f"C_V per atom ({u['heat_capacity']})", pa["heat_capacity"][0]),
            (f"C_V per atom ({u['heat_capacity_kB']})", pa["heat_capacity_kB"][0]),
            (f"S per atom ({u['entropy']})", pa["entropy"][0]),
            (f"S per atom ({u['entropy_kB']})", pa["entropy_kB"][0]),
            (f"F per atom ({u['free_energy']})", pa["free_energy"][0]),
            (f"C_V per formula unit ({u['heat_capacity']})", pf["heat_capacity"][0]),
            (f"S per formula unit ({u['entropy']})", pf["entropy"][0]),
            (f"F per formula unit ({u['free_energy']})", pf["free_energy"][0])]
    lines = [f"# {thermal['source']}",
             (f"# input: {thermal.get('path', '')}:{thermal.get('group', '')}; per mole of atoms "
              f"and per mole of formula units of {thermal['n_atoms_per_formula']} atom(s)"),
             (f"# zero-point energy: {pa['zero_point_energy'][0]:.6g} kJ/mol per atom "
              f"({pa['zero_point_energy_meV'][0]:.6g} meV per atom); "
              f"{pf['zero_point_energy'][0]:.6g} kJ/mol per formula unit"),
             (f"# DOS area {thermal['dos_area_per_atom']:.5g} per atom rescaled to 3; "
              f"{thermal['n_dropped']} points at E <= 0 left out "
              f"({thermal['dropped_modes_per_atom']:.3g} modes per atom)"),
             ",".join(name for name, _ in cols)]
    for row in zip(*(v for _, v in cols)):
        lines.append(",".join(f"{x:.10g}" for x in row))
    return "\n".join(lines) + "\n"
