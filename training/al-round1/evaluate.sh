#!/usr/bin/env bash
# What active-learning round 1 changed (issue 19, part 3): the interim model of round 0 (member 0
# of training/si-reference at its best epoch: training/al-round1/round0_model) against the
# round-1 reference ensemble (scripts/train_si_reference.sh, run folder training/si-reference-al1).
#
#   1. force/energy errors on the round-1 CP2K frames: all 16 for the interim model (it saw
#      none), and the ones in round 1's test split for both models (held out from both);
#   2. the 2500 K melt of the 64-atom cell on which round 0 failed (two atoms collapsed after
#      1.6 ps): the same start, seed and protocol with the round-1 ensemble, its closest pair and
#      ensemble force spread along the run;
#   3. the a-Si cell of round 0 (the embedded Stillinger-Weber frame 8) at 300 K, 8 ps, same seed,
#      frames every 10 fs: VDOS and VISION S(E) from both models, overlaid and scored by
#      `mlff-ins compare`, their structure, and the round-1 ensemble's force spread along the run
#      (round 0 was one member: no spread).
#
# Minutes to an hour on 2 cores (the two MD runs); every MD resumes. Outputs in $RUN/eval/.
# Usage: bash training/al-round1/evaluate.sh [NEW_MODEL]   (default: the exported round-1 run)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/al1}
TRAIN_RUN=${TRAIN_RUN:-training/si-reference-al1}
OLD=training/al-round1/round0_model
OUT=$RUN/eval
mkdir -p "$OUT"
NEW=${1:-$OUT/round1_model}
if [ ! -f "$NEW/bundle.json" ]; then   # the round-1 run as it stands (partial if unfinished)
  rm -rf "$NEW"
  mlff-ins train --preset reference --data mlff_ins/resources/si/si_cp2k_pbe.xyz \
      --data mlff_ins/resources/si/si_cp2k_pbe_al1.xyz -o "$TRAIN_RUN" --export "$NEW"
fi
AL=mlff_ins/resources/si/si_cp2k_pbe_al1.xyz

# 1. errors on the round-1 frames
python - "$TRAIN_RUN/data/test.xyz" "$OUT/al1_test.xyz" <<'EOF'
import sys
from ase.io import read, write
held = [a for a in read(sys.argv[1], ":") if "_model" in a.info.get("config_type", "")]
write(sys.argv[2], held)
print(f"{len(held)} round-1 frames in round 1's test split:",
      ", ".join(a.info["config_type"] for a in held))
EOF
echo "== interim model (round 0), all round-1 frames"
python -m mlff_ins.bench train --model "$OLD" --frames "$AL"
echo "== interim model (round 0), round-1 frames held out from round 1"
python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/al1_test.xyz"
echo "== round-1 ensemble, the same held-out frames"
python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/al1_test.xyz"

# 2. the 2500 K melt that round 0 failed (run.sh, step 3: same cell, protocol and seed)
sed -e 's/T_end: 2000, rate/T_end: 2500, rate/' -e 's/T: 2000, ps: 2/T: 2500, ps: 3/' \
    -e 's/T_start: 2000/T_start: 2500/' training/al-round1/melt_quench_64.yaml \
    > "$OUT/melt_quench_2500K.yaml"
nice -n 10 mlff-ins md "$RUN/si64.xyz" --model "$NEW" --protocol "$OUT/melt_quench_2500K.yaml" \
    --seed 1 -o "$OUT/asi64_2500K_r1.h5md" --resume || true
# 3. a-Si at 300 K: the cell and seed of run.sh's asi64_300K.h5md, but frames every 10 fs (that
# run stored one every 50 fs: energies up to 41 meV only), with both models
for tag in r0:"$OLD" r1:"$NEW"; do
  name=${tag%%:*} model=${tag#*:}
  nice -n 10 mlff-ins md "$RUN/asi64_sw.xyz" --model "$model" -T 300 --dt 2 --steps 4000 \
      --every 5 --thermostat bussi --seed 4 -o "$OUT/asi64_300K_$name.h5md" --resume
  [ -f "$OUT/asi_$name.h5" ] || mlff-ins spectra "$OUT/asi64_300K_$name.h5md" --vdos \
      --instrument vision -T 300 --skip-ps 2 --e-max 100 -o "$OUT/asi_$name.h5" --plot
  mlff-ins structure "$OUT/asi64_300K_$name.h5md" --start 400 -o "$OUT/structure_$name"  # last 4 ps
done
for kind in vdos s_e; do
  mlff-ins compare "$OUT/asi_r0.h5" "$OUT/asi_r1.h5" --kind $kind --label "round 0" \
      --label "round 1" -o "$OUT/compare_$kind"
done
python training/al-round1/md_summary.py "$RUN/asi64_2500K.h5md" "$OUT/asi64_2500K_r1.h5md" \
    "$OUT/asi64_300K_r0.h5md" "$OUT/asi64_300K_r1.h5md"
