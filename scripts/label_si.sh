#!/usr/bin/env bash
# Reproduce the embedded silicon data set: Stillinger-Weber geometries -> CP2K labels.
# Needs: apt-get install cp2k cp2k-data; pip install -e .[data]. Takes hours on 2 cores;
# rerun the same command after an interruption to resume (no frame is computed twice).
set -euo pipefail
cd "$(dirname "$0")/.."
frames=mlff_ins/resources/si/si_frames_unlabelled.xyz
[ -f "$frames" ] || python scripts/make_si_frames.py -o "$frames"
# --allow-config-change: the labels so far were made under four versions of cp2k_si.yaml
# (label_config_sha256 b68ecf48, 0a7677db, 863a0305, 4bc3aaa0) that differ only in how CP2K is
# launched (OpenMP threads, then 2 MPI ranks, then /usr/bin/mpirun) and in comments: the same
# PBE calculation (checked with git diff of the YAML between commits ff38421, ff4f67d, baaf64e
# and 1e54b90). Labels written since 2026-12-01 record the hash of the calculation (the YAML
# without comments and `command`), so launch changes no longer need the flag; the old frames
# recorded the text's hash. Drop the flag after any change to the calculation itself.
mlff-ins label "$frames" --calculator configs/label/cp2k_si.yaml --allow-config-change \
    -o mlff_ins/resources/si/si_cp2k_pbe.xyz
