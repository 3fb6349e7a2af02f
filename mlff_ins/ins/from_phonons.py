"""`mlff-ins ins`: spectra from a phonons file, for every ensemble member, as mean ± std.

Indirect geometry (VISION, TOSCA): S(E) per bank along the bank's kinematic line, incoherent
approximation with σ_total, orders 1..N, the instrument's resolution; ``s_e`` is the mean of the
two banks, ``s_e_<angle>`` each bank, ``s_e_<El>`` element partials (bank mean); with them the
phonon DOS ``vdos`` and ``vdos_<El>`` on the same energy grid (per atom, area 3), the phonon
route's counterpart of the MD VDOS for ``mlff-ins compare --kind vdos``.
Direct geometry / ``two_d``: powder S(Q,E) on a (Q, E) grid: ``sqe_coh`` = coherent one-phonon
(Q directions on spheres) + coherent multiphonon (orders ≥ 2 in the incoherent approximation with
σ_coh), ``sqe_inc`` = σ_inc, all orders; ``sqe`` their sum; with ``ei_meV`` the kinematic mask and
the resolution is applied: a chopper spectrometer's own (``instrument`` mari, maps, merlin, let,
sequoia, arcs, cncs, hyspec through ResINS) or a Gaussian whose FWHM is a fraction of Ei.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlff_ins.ins.engine import incoherent_sqe, indirect_s_e, s_e_spectra
from mlff_ins.ins.modes import ModeSet, coherent_powder_sqe
from mlff_ins.errors import InputError
from mlff_ins.neutron.instruments import get_instrument
from mlff_ins.neutron.resolution import CHOPPER_INSTRUMENTS, constant_fwhm, direct_resolution
from mlff_ins.neutron.kinematics import kinematic_mask
from mlff_ins.neutron.scattering_lengths import (b_coh_complex_fm, mass_amu, sigma_coh_barn,
                                                 sigma_inc_barn, sigma_total_barn)
from mlff_ins.neutron.spectrum import Spectrum1D, Spectrum2D


@dataclass
class InsOptions:
    instrument: str = "vision"           # vision | tosca | direct | a chopper spectrometer
    temperature_K: float = 10.0
    n_phonon: int = 10
    mesh: object = 80.0                  # phonopy mesh: a length (Angstrom) or three integers
    e_max_meV: float = 500.0
    e_step_meV: float = 0.1
    two_d: bool = False
    q_min: float = 0.0
    q_max: float = 10.0
    q_step: float = 0.1
    e_max_2d_meV: float = 150.0
    e_step_2d_meV: float = 0.5
    n_directions: int = 200
    ei_meV: float | None = None
    angles_deg: tuple = (3.0, 135.0)
    resolution_fraction: float = 0.0
    chopper_frequency_hz: float | None = None
    chopper_package: str | None = None
    fwhm_2d_meV: float = 0.0             # constant Gaussian broadening of the maps (no --ei)
    isotopes: dict = field(default_factory=dict)
    seed: int = 0
    max_memory_gb: float = 2.0           # budget of the coherent powder average (GiB)


def site_table(ph, isotopes):
    """Per atom of the primitive cell: symbols, masses (isotopes applied), b_coh (fm, complex:
    absorbers' imaginary part) and the cross sections (barn) the INS formulas use."""
    symbols = list(ph.primitive.symbols)
    iso = [isotopes.get(s) for s in symbols]
    return dict(
        symbols=symbols,
        masses=np.array([mass_amu(s, i) if i else m for s, i, m in
                         zip(symbols, iso, ph.primitive.masses)]),
        b_coh=np.array([b_coh_complex_fm(s, i) for s, i in zip(symbols, iso)]),
        sigma_inc=np.array([sigma_inc_barn(s, i) for s, i in zip(symbols, iso)]),
        sigma_coh=np.array([sigma_coh_barn(s, i) for s, i in zip(symbols, iso)]),
        sigma_total=np.array([sigma_total_barn(s, i) for s, i in zip(symbols, iso)]),
    )


def member_modes(ph, opts, sites):
    """The mesh modes of one phonopy object (one ensemble member)."""
    # isotope masses go on the primitive cell (phonopy maps them to the supercell)
    return ModeSet(ph, opts.mesh, opts.temperature_K,
                   masses=sites["masses"] if opts.isotopes else None)


def indirect_arrays(modes: ModeSet, sites, opts) -> tuple[np.ndarray, dict]:
    """(E, {name: S(E)}) on ``opts.instrument`` (vision or tosca), see ``indirect_s_e``."""
    e = np.arange(0.0, opts.e_max_meV + 0.5 * opts.e_step_meV, opts.e_step_meV)
    return indirect_s_e(modes.source(e), get_instrument(opts.instrument), sites["sigma_total"],
                        opts.n_phonon)


def two_d_arrays(modes: ModeSet, sites, opts) -> tuple[np.ndarray, np.ndarray, dict]:
    """(|Q|, E, {sqe_coh, sqe_inc, sqe}) powder maps, masked and broadened when ``opts`` names
    a direct-geometry setting."""
    q = np.arange(opts.q_min, opts.q_max + 0.5 * opts.q_step, opts.q_step)
    e = np.arange(0.0, opts.e_max_2d_meV + 0.5 * opts.e_step_2d_meV, opts.e_step_2d_meV)
    coh1 = coherent_powder_sqe(modes, q, e, sites["b_coh"], opts.n_directions, opts.seed,
                               max_memory_bytes=int(opts.max_memory_gb * 1024 ** 3))
    source = modes.source(e)
    energies, coh_multi = incoherent_sqe(source, q, sites["sigma_coh"], opts.n_phonon,
                                         first_order=2)
    _, inc = incoherent_sqe(source, q, sites["sigma_inc"], opts.n_phonon)
    keep = energies >= 0
    out = {"sqe_coh": coh1 + coh_multi[:, keep], "sqe_inc": inc[:, keep]}
    out["sqe"] = out["sqe_coh"] + out["sqe_inc"]
    if opts.ei_meV is not None:
        mask = kinematic_mask(q, e, opts.ei_meV, opts.angles_deg)
        res = _direct_resolution(opts)
        for k in out:
            v = res.broaden(e, out[k]) if res is not None else out[k]
            out[k] = np.where(mask, v, np.nan)
    elif opts.fwhm_2d_meV > 0:
        broad = constant_fwhm(opts.fwhm_2d_meV)
        out = {k: broad.broaden(e, v) for k, v in out.items()}
    return q, e, out


def _direct_resolution(opts):
    return direct_resolution(opts.instrument, opts.ei_meV, opts.resolution_fraction,
                             opts.chopper_frequency_hz, opts.chopper_package)


def ins_from_phonons(pset, opts: InsOptions, meta: dict | None = None) -> dict:
    """Spectra (name -> Spectrum1D/2D) of every member of ``pset``: mean with intensity_std."""
    indirect = opts.instrument in ("vision", "tosca")
    if not (indirect or opts.instrument == "direct" or opts.instrument in CHOPPER_INSTRUMENTS):
        raise InputError(f"--instrument {opts.instrument}: not an instrument mlff-ins knows")
    resolution = None if indirect else _direct_resolution(opts)  # bad settings fail first
    per_member = []
    dos_members = []
    axes = None
    sites = site_table(pset.members[0], opts.isotopes)
    u2 = []
    for ph in pset.members:
        modes = member_modes(ph, opts, sites)
        u2.append(modes.u2)
        res = {}
        if indirect:
            e1, one = indirect_arrays(modes, sites, opts)
            res.update(one)
            axes = (e1, axes[1] if axes else None, axes[2] if axes else None)
            dos_members.append(phonon_dos(modes, sites, e1))
        if opts.two_d or not indirect:
            q, e2, two = two_d_arrays(modes, sites, opts)
            res.update(two)
            axes = (axes[0] if axes else None, q, e2)
        per_member.append(res)
    prov = {**(meta or {}), "n_members": len(pset.members),
            "mesh": opts.mesh, "phonon_orders": opts.n_phonon,
            "u2_A2_per_site": np.mean(u2, axis=0).tolist(), "sites": sites["symbols"],
            "isotopes": opts.isotopes, "cross_section":
            "S(E): sigma_total, incoherent approximation; S(Q,E): coherent one-phonon + "
            "sigma_coh multiphonon, sigma_inc all orders"}
    if len(pset.members) > 1:
        prov["intensity_std"] = (f"standard deviation of the {len(pset.members)} ensemble "
                                 f"members' spectra: the force field's uncertainty")
    base = dict(temperature_K=opts.temperature_K, source="phonons", units="barn/sr/meV")
    spectra = {}
    s_e_mean, s_e_std = {}, {}
    for name in per_member[0]:
        stack = np.array([m[name] for m in per_member])
        mean, std = stack.mean(axis=0), (stack.std(axis=0) if len(stack) > 1 else None)
        if name.startswith("s_e"):
            s_e_mean[name], s_e_std[name] = mean, std
        else:
            p = dict(prov, n_directions=opts.n_directions, ei_meV=opts.ei_meV,
                     angles_deg=list(opts.angles_deg),
                     resolution_fwhm_fraction=opts.resolution_fraction,
                     fwhm_meV=opts.fwhm_2d_meV if opts.ei_meV is None else None,
                     **(resolution.provenance() if resolution is not None else {}))
            spectra[name] = Spectrum2D(kind=name, q=axes[1], y=axes[2], intensity=mean,
                                       intensity_std=std, provenance=p, **base,
                                       instrument="direct" if indirect else opts.instrument)
    if s_e_mean:
        spectra.update(s_e_spectra(axes[0], s_e_mean, get_instrument(opts.instrument), s_e_std,
                                   temperature_K=opts.temperature_K, source="phonons",
                                   provenance=prov))
    for name in (dos_members[0] if dos_members else {}):
        stack = np.array([m[name] for m in dos_members])
        spectra[name] = Spectrum1D(
            kind="vdos", x=axes[0], intensity=stack.mean(axis=0),
            intensity_std=stack.std(axis=0) if len(stack) > 1 else None, units="1/meV",
            element=name[5:], temperature_K=opts.temperature_K, source="phonons",
            provenance={**prov, "note": "phonon DOS per atom, area 3 (element partials: per "
                                        "atom of the cell, summing to the total); modes "
                                        "binned to the grid, no broadening"})
    return spectra


def phonon_dos(modes: ModeSet, sites, energy) -> dict:
    """{"vdos": total, "vdos_El": partial} phonon DOS on ``energy`` per atom of the cell (area 3
    in all, the convention of the MD route's ``vdos``): the atom-projected DOS of the modes."""
    site = modes.site_dos(energy)                       # (n, E), area 1 per atom
    symbols = list(sites["symbols"])
    n = len(symbols)
    out = {"vdos": 3.0 * site.sum(axis=0) / n}
    for el in dict.fromkeys(symbols):
        out[f"vdos_{el}"] = 3.0 * site[[s == el for s in symbols]].sum(axis=0) / n
    return out
