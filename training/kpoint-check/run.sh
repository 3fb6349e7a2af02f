#!/usr/bin/env bash
# Label three held-out 64-atom frames of the embedded data set (an SW-quenched amorphous frame, a
# 300 K crystal frame and a liquid frame; frames_gamma.xyz, with their Gamma-only labels) again
# with a 2x2x2 k-point grid, and the amorphous one with 3x3x3 (is 2x2x2 converged?); then compare
# the labels and the shipped model with each (README.md). Resumes frame by frame; rerun after a
# kill. CP2K on 2 cores: about 5 minutes a frame at 2x2x2 (Gamma only: about 2.5).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=training/kpoint-check
nice -n 19 mlff-ins label $HERE/frames_gamma.xyz --calculator $HERE/cp2k_si_k222.yaml \
  -o $HERE/labelled_k222.xyz
nice -n 19 mlff-ins label $HERE/frames_gamma_amorphous.xyz --calculator $HERE/cp2k_si_k333.yaml \
  -o $HERE/labelled_k333.xyz
python $HERE/compare.py | tee $HERE/compare.md
