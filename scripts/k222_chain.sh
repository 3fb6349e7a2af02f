#!/usr/bin/env bash
# Issue 19's background chain on the k-point labels, one step after another, each of which
# resumes where a kill (or a machine reset between sessions) left it:
#   1. scripts/relabel_si_k222.sh: the 155 geometries relabelled with 2x2x2 k-points
#      (~4-5 min a frame on 2 quiet cores; commit si_cp2k_pbe_k222.xyz as frames land);
#   2. LABELS=k222 scripts/train_si_reference.sh: the reference ensemble on them (5-6 h), then
#      its last stage with the crystal's phonon frames weighted (training/si-reference-k222-
#      stage.yaml, under an hour); commit training/si-reference-k222 and
#      training/si-reference-k222-stage when stopping: their checkpoints resume them;
#   3. LABELS=k222 training/al-round2/evaluate.sh: round 1 against the new ensemble (~1 h).
# It stops before shipping: read runs/al2/eval-k222/ and the bench's phonon table first, then
# `LABELS=k222 SHIP=1 bash scripts/train_si_reference.sh` (skips the finished training) and
# `mlff-ins demo --full --md-members 0` (~5 h) for the case study.
# Usage: nohup bash scripts/k222_chain.sh > runs/k222_chain.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/relabel runs/al2
echo "== $(date -u +%FT%TZ) relabel"
bash scripts/relabel_si_k222.sh
echo "== $(date -u +%FT%TZ) train"
LABELS=k222 bash scripts/train_si_reference.sh
echo "== $(date -u +%FT%TZ) evaluate"
# round 2's own MD (the trajectories its frames were picked from), where evaluate.sh reads them
for f in training/al-round2/md/*.h5md; do
  [ -e "runs/al2/$(basename "$f")" ] || cp "$f" runs/al2/
done
LABELS=k222 bash training/al-round2/evaluate.sh
echo "== $(date -u +%FT%TZ) done: review, then LABELS=k222 SHIP=1 bash scripts/train_si_reference.sh"
