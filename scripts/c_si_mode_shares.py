"""Equipartition check of the case study's c-Si MD: the share of the MD VDOS below a cut energy
against the share of harmonic modes below it (member 0's force constants, the MD cell's q-points:
the Gamma-centred 4x4x4 mesh of the conventional cell), in each quarter of the production (the
last 2000 frames: the full size's 20 ps).

    python scripts/c_si_mode_shares.py STUDY [MD.h5md] [CUT_meV]

MD.h5md defaults to STUDY/c-si/md.h5md, CUT to 11.5 meV (between the lowest two groups of modes,
9.85 and 10.82 meV with the round-4 model, and the next at 12.31 meV). In equipartition the two
shares agree within the canonical spread of the modes below the cut (about 20 % for 24 modes).
Hann-windowed quarters of 5 ps (0.8 meV resolution); README's case-study paragraph quotes it.
"""
import sys

import h5py
import numpy as np
import phonopy

from mlff_ins.data.h5md import GROUP, complete_frames, open_h5md
from mlff_ins.neutron.units import MEV_PER_THZ

study = sys.argv[1]
traj = sys.argv[2] if len(sys.argv) > 2 else f"{study}/c-si/md.h5md"
cut = float(sys.argv[3]) if len(sys.argv) > 3 else 11.5
ph = phonopy.load(f"{study}/c-si/phonons_conv_phonopy_params.yaml", produce_fc=False)
with h5py.File(f"{study}/c-si/phonons_conv.h5") as h:
    ph.force_constants = h["force_constants"][0]
ph.run_mesh([4, 4, 4], is_gamma_center=True, is_mesh_symmetry=False)
e = ph.mesh.frequencies.ravel() * MEV_PER_THZ
e = e[e > 0.5]   # drop the 3 acoustic modes at Gamma
vals, counts = np.unique(np.round(e, 2), return_counts=True)
print("lowest harmonic energies (meV, count):", list(zip(vals[:6], counts[:6])))
print(f"harmonic share below {cut} meV: {np.mean(e < cut) * 100:.2f} % of {e.size} modes")
with open_h5md(traj) as f:
    n = complete_frames(f)
    v = f[GROUP]["velocity/value"][:n]
    m = f[GROUP]["mass"][:]
    t = f[GROUP]["position/time"][:n] if "time" in f[GROUP]["position"] else None
dt_fs = float(t[1] - t[0]) if t is not None else 10.0
prod = v[-2000:]
print(f"{n} frames, frame interval {dt_fs} fs; production = the last {len(prod)} frames")
for k, part in enumerate(np.array_split(prod, 4)):
    w = np.sqrt(m)[None, :, None] * part
    # a Hann window: the sidelobes of the strong optical and TA peaks stay out of the window
    hann = np.hanning(len(part))[:, None, None]
    spec = (np.abs(np.fft.rfft((w - w.mean(axis=0)) * hann, axis=0)) ** 2).sum(axis=(1, 2))
    energy = np.fft.rfftfreq(len(part), dt_fs * 1e-3) * MEV_PER_THZ     # 1/ps = THz -> meV
    print(f"quarter {k + 1}: MD VDOS share below {cut} meV "
          f"{spec[energy < cut].sum() / spec.sum() * 100:.2f} %")
