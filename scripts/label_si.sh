#!/usr/bin/env bash
# Reproduce the embedded silicon data set: Stillinger-Weber geometries -> CP2K labels.
# Needs: apt-get install cp2k cp2k-data; pip install -e .[data]. Takes hours on 2 cores;
# rerun the same command after an interruption to resume (no frame is computed twice).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=mlff_ins/resources/si/si_frames_unlabelled.xyz
[ -f "$frames" ] || python scripts/make_si_frames.py -o "$frames"
mlff-ins label "$frames" --calculator configs/label/cp2k_si.yaml \
    -o mlff_ins/resources/si/si_cp2k_pbe.xyz
