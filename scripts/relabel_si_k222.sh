#!/usr/bin/env bash
# Relabel every geometry of the silicon reference data set with k-points: the 64-atom frames of
# si_cp2k_pbe.xyz and of the active-learning rounds (si_cp2k_pbe_al1.xyz, si_cp2k_pbe_al2.xyz)
# and the phonon benchmark's displaced supercell, with configs/label/cp2k_si_k222.yaml (PBE,
# DZVP-MOLOPT-GTH, 2x2x2 k-points) instead of cp2k_si.yaml (Gamma point only, SR basis).
# Why: training/kpoint-check/README.md (the Gamma-only forces of disordered 64-atom frames are
# ~220-260 meV/Å RMS from the k-point ones, as large as the model's error against them).
#
#   1. the phonon benchmark's two supercells -> si_cp2k_pbe_k222_phonon_check.xyz
#   2. the 155 training geometries, in the order written to training/relabel-k222/frames.xyz
#      (the isolated atom, then one frame of each config_type in turn, so that a partial
#      relabelling already covers every kind of frame) -> si_cp2k_pbe_k222.xyz
#
# Each frame keeps its config_type, with gamma_file/gamma_index naming the Gamma-only label it
# replaces. Resumes frame by frame: rerun after a kill. About 8 minutes a 64-atom crystal frame on
# 2 cores (16 SCF steps of ~20 s, then forces and stress), more for disordered ones: about 20
# hours in all. CP2K's MPI ranks slow down 2-7x beside other work: keep the machine quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
SI=mlff_ins/resources/si
CALC=mlff_ins/configs/label/cp2k_si_k222.yaml
HERE=training/relabel-k222
mkdir -p "$HERE"
if [ ! -f "$HERE/frames.xyz" ]; then
  python - "$HERE/frames.xyz" <<'PY'
import sys
from collections import OrderedDict

from ase import Atoms
from ase.io import read, write

from mlff_ins.atomic_io import atomic_path

files = ["si_cp2k_pbe.xyz", "si_cp2k_pbe_al1.xyz", "si_cp2k_pbe_al2.xyz"]
queues = OrderedDict()
for name in files:
    for i, a in enumerate(read(f"mlff_ins/resources/si/{name}", ":")):
        frame = Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)
        ct = a.info.get("config_type", "unknown")
        frame.info.update({"config_type": ct, "gamma_file": name, "gamma_index": i})
        if "md_temperature_K" in a.info:
            frame.info["md_temperature_K"] = float(a.info["md_temperature_K"])
        queues.setdefault(ct, []).append(frame)
ordered = queues.pop("IsolatedAtom", [])
while any(queues.values()):
    for q in queues.values():
        if q:
            ordered.append(q.pop(0))
with atomic_path(sys.argv[1]) as tmp:
    write(tmp, ordered, format="extxyz")
print(f"{sys.argv[1]}: {len(ordered)} geometries to relabel")
PY
fi
# bash does not pass a SIGTERM on to a foreground child: run each label in the background and
# forward it, so that `kill` of this script stops the labelling and its CP2K too
label() {
  nice -n 19 mlff-ins label "$@" &
  local pid=$!
  trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 143' TERM INT
  wait $pid
  trap - TERM INT
}
label "$SI/si_cp2k_pbe_phonon_check.xyz" --calculator "$CALC" \
  -o "$SI/si_cp2k_pbe_k222_phonon_check.xyz"
label "$HERE/frames.xyz" --calculator "$CALC" -o "$SI/si_cp2k_pbe_k222.xyz"
