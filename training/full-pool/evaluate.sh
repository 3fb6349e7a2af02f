#!/usr/bin/env bash
# The full-pool stage of issue 19 (README.md here): training/si-reference-k222-full (the shipped
# round-4 members, each fine-tuned on the whole training pool at lr 0.0002) against the shipped
# round-4 ensemble (OLD), on the same frames:
#   1. force/energy errors per kind, ensemble mean, on round 4's test split (21 frames) and on
#      the k-point set's 15 of them (the issue's targets), then each member alone on the 21;
#   2. Si phonons at Γ, X, L against our CP2K, with the members' spread (bench phonons);
#   3. energy offsets by kind of frame (training/al-round4/energy_bias.py).
# Deterministic errors; pause any training first all the same (kill -STOP), it halves the speed.
# Usage: bash training/full-pool/evaluate.sh [OUT]   (default runs/full-pool)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/full-pool}
OLD=mlff_ins/resources/si/reference_model
NEW=$OUT/full_model
TEST=training/si-reference-k222-al4/data/test.xyz
POOL=training/si-reference-k222-al4/data/train_pool.xyz
mkdir -p "$OUT"
rm -rf "$NEW"
(cd training && mlff-ins train si-reference-k222-full.yaml -o si-reference-k222-full \
     --export "../$NEW") > "$OUT/export.log" 2>&1
python - "$TEST" "$OUT/kpoint_test.xyz" <<'PY'
import sys
from ase.io import read, write
frames = [a for a in read(sys.argv[1], ":") if a.info.get("read_from") == "si_cp2k_pbe_k222.xyz"]
write(sys.argv[2], frames)
print(f"{len(frames)} test frames of the k-point set")
PY
for m in OLD NEW; do
  model=${!m}
  echo "== $m ($model): test split (21 frames), then the k-point set's test frames"
  python -m mlff_ins.bench train --model "$model" --frames "$TEST" | tail -7
  python -m mlff_ins.bench train --model "$model" --frames "$OUT/kpoint_test.xyz" | tail -7
done
echo "== NEW, each member alone, test split"
bash training/width-check/per_member.sh "$NEW" "$TEST"
echo "== NEW: Si phonons"
python -m mlff_ins.bench phonons --model "$NEW" --no-speed --no-sevenn | tail -16
echo "== NEW: energy offsets by kind"
python training/al-round4/energy_bias.py "$NEW" "$POOL" "$TEST" | grep -v "^  [a-z_0-9]*al[0-9]_"
