#!/usr/bin/env bash
# The width check of issue 19 (README.md here): the one-member runs training/si-reference-k222-wide
# (3 x 64) and training/si-reference-k222-scratch (3 x 32), both from scratch on round 4's data
# and split, exported from their best epochs so far (a partial export of a run under way is
# allowed) and scored side by side, each alone and against the shipped round-4 members:
#   1. force/energy errors per kind on round 4's test split (bench train; the shipped members one
#      by one: per_member.sh here) and on the training pool (how well each fits its data);
#   2. Si phonons at Γ, X, L against our CP2K (bench phonons, accuracy only);
#   3. energy offsets by kind of frame (training/al-round4/energy_bias.py);
#   4. the cost of a force call on 512 atoms (force_cost.py), what MD with each model costs.
# Pause any training first (kill -STOP), or the figures are taken beside it.
# Usage: bash training/width-check/evaluate.sh [OUT]   (default runs/width-check)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/width-check}
TEST=training/si-reference-k222-al4/data/test.xyz
POOL=training/si-reference-k222-al4/data/train_pool.xyz
mkdir -p "$OUT"
for name in wide scratch; do
  run=training/si-reference-k222-$name
  model=$OUT/${name}_model
  rm -rf "$model"
  (cd training && mlff-ins train si-reference-k222-$name.yaml -o "si-reference-k222-$name" \
       --export "../$model") > "$OUT/${name}_export.log" 2>&1
  grep -h "best\|epoch" "$model"/report.md | head -5 || true
  echo "== $name: test split (21 frames), then training pool (171 frames)"
  python -m mlff_ins.bench train --model "$model" --frames "$TEST" | tail -7
  python -m mlff_ins.bench train --model "$model" --frames "$POOL" | tail -7
  echo "== $name: Si phonons"
  python -m mlff_ins.bench phonons --model "$model" --no-speed --no-sevenn | tail -14
  echo "== $name: energy offsets by kind"
  python training/al-round4/energy_bias.py "$model" "$POOL" "$TEST" | grep -v "^  [a-z_0-9]*al[0-9]_" 
done
echo "== cost of a force call, 512 atoms, member 0 (shipped, control, wide)"
python training/width-check/force_cost.py mlff_ins/resources/si/reference_model \
    "$OUT/scratch_model" "$OUT/wide_model"
