#!/usr/bin/env bash
# What active-learning round 4 changed (issue 19, part 3): the shipped round-3 ensemble (OLD, the
# model that chose the frames) against round 4's fine-tuned ensemble (NEW, exported from
# training/si-reference-k222-al4 unless given), after `run.sh train`. Run it before shipping
# round 4: OLD defaults to the shipped model and is refused unless it is round 3. The steps are
# round 3's (training/al-round3/evaluate.sh), cheapest first, so that a short session still gets
# the numbers that decide whether to ship:
#
#   1. force/energy errors: OLD on all 27 round-4 frames (it saw none); OLD and NEW on the
#      round-4 frames in round 4's test split (held out from both; siblings from the same glass
#      and temperature are in round 4's training, so NEW's numbers there are somewhat
#      optimistic); OLD and NEW on the rest of the test split (the k-point set's and round 3's
#      test frames, unseen by both); NEW's energy offset by kind of frame (energy_bias.py);
#   2. NEW's Si phonons (`bench phonons`; OLD's are in training/al-round3/eval-glass/);
#   3. a-Si at 300 K, 8 ps, from the same glass and with the same seed as round 3's evaluation
#      (the last frame of training/al-round3/md/asi64_2500K.h5md, seed 4): NEW's VDOS and VISION
#      S(E) against OLD's (training/al-round3/eval-glass/asi_r3.h5), scored by `mlff-ins compare`,
#      and its structure;
#   4. the ensemble force spread along round 4's MD, both ensembles on the same stored frames.
#
# About 40 minutes on 2 cores; the MD and the spread tables resume. Outputs in $RUN/eval/.
# Every step reads OLD afresh: do not ship round 4 while it runs with the default OLD (the
# shipped model), or give a copy of round 3 as OLD (`git archive COMMIT
# mlff_ins/resources/si/reference_model | tar -x -C DIR`), as the evaluation did.
# Usage: bash training/al-round4/evaluate.sh [OLD_MODEL [NEW_MODEL]]
set -euo pipefail
cd "$(dirname "$0")/../.."
source training/al_lib.sh
RUN=${RUN:-runs/al4}
TRAIN_RUN=training/si-reference-k222-al4
OLD=${1:-mlff_ins/resources/si/reference_model}
OUT=$RUN/eval
R3=training/al-round3/eval-glass
mkdir -p "$OUT"
NEW=${2:-$OUT/round4_model}
AL=mlff_ins/resources/si/si_cp2k_pbe_k222_al4.xyz
python - "$OLD" <<'PY'
import sys
from mlff_ins.model.calculator import read_bundle
files = " ".join(map(str, read_bundle(sys.argv[1]).get("training_data", {}).get("files", [])))
if "al3" not in files or "al4" in files:
    sys.exit(f"{sys.argv[1]}: not the round-3 ensemble; give it as the first argument")
PY
# round 4's run exported again when the run is newer than the export; then every output of
# the NEW model is made again too
if [ -z "${2:-}" ] && { [ ! -f "$NEW/bundle.json" ] \
                        || [ "$TRAIN_RUN/bundle.json" -nt "$NEW/bundle.json" ]; }; then
  rm -rf "$NEW" "$OUT"/phonons_r4.txt "$OUT"/energy_bias_r4.txt "$OUT"/asi64_300K_r4.h5md \
     "$OUT"/asi_r4.* "$OUT"/structure_r4.* "$OUT"/compare_* "$OUT"/spread_*.tsv
  mlff-ins train training/si-reference-k222-al4.yaml -o "$TRAIN_RUN" --export "$NEW"
fi

# 1. errors
split_test "$TRAIN_RUN/data/test.xyz" al4 "$OUT/al4_test.xyz" "$OUT/rest_test.xyz"
echo "== round-3 ensemble, all round-4 frames (before)"
python -m mlff_ins.bench train --model "$OLD" --frames "$AL"
echo "== round-3 and round-4 ensembles, round-4 frames held out from round 4"
python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/al4_test.xyz"
python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/al4_test.xyz"
echo "== round-3 and round-4 ensembles, the other test frames (unseen by both)"
python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/rest_test.xyz"
python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/rest_test.xyz"
echo "== energy offsets by kind (round 4 raised the energy weight for them; round 3's:"
echo "   training/al-round4/energy_bias_r3.txt), round 4 on its training pool and test split"
[ -f "$OUT/energy_bias_r4.txt" ] || python training/al-round4/energy_bias.py "$NEW" \
    "$TRAIN_RUN/data/train_pool.xyz" "$TRAIN_RUN/data/test.xyz" > "$OUT/energy_bias_r4.txt"
cat "$OUT/energy_bias_r4.txt"

# 2. phonons
echo "== round-4 ensemble, Si phonons"
if [ ! -f "$OUT/phonons_r4.txt" ]; then
  python -m mlff_ins.bench phonons --model "$NEW" --no-speed --no-sevenn > "$OUT/phonons_r4.part"
  mv "$OUT/phonons_r4.part" "$OUT/phonons_r4.txt"
fi
cat "$OUT/phonons_r4.txt"
echo "(round 3: $R3/phonons_r3.txt)"

# 3. a-Si at 300 K, the glass and seed of round 3's evaluation
last_frame training/al-round3/md/asi64_2500K.h5md "$OUT/asi64_2500K_last.xyz"
nice -n 10 mlff-ins md "$OUT/asi64_2500K_last.xyz" --model "$NEW" -T 300 --dt 2 --steps 4000 \
    --every 5 --thermostat bussi --seed 4 -o "$OUT/asi64_300K_r4.h5md" --resume
[ -f "$OUT/asi_r4.h5" ] || mlff-ins spectra "$OUT/asi64_300K_r4.h5md" --vdos \
    --instrument vision -T 300 --skip-ps 2 --e-max 100 -o "$OUT/asi_r4.h5" --plot
mlff-ins structure "$OUT/asi64_300K_r4.h5md" --start 400 -o "$OUT/structure_r4"
echo "(round 3's structure: $R3/structure_r3.json)"
for kind in vdos s_e; do
  mlff-ins compare "$R3/asi_r3.h5" "$OUT/asi_r4.h5" --kind $kind --label "round 3" \
      --label "round 4" -o "$OUT/compare_$kind"
done
python training/al-round1/md_summary.py "$OUT/asi64_300K_r4.h5md"

# 4. spread along round 4's MD, both ensembles on the same frames
for g in 1 2 3; do
  for traj in glass$g glass${g}_600K glass${g}_900K; do
    python training/al-round2/spread_along.py training/al-round4/md/$traj.h5md "$OLD" "$NEW" \
        -o "$OUT/spread_$traj.tsv" --every 5
  done
done
