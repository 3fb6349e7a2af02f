#!/usr/bin/env bash
# What active-learning round 3 changed (issue 19, part 3): the shipped round-2 k-point ensemble
# (OLD, the model that chose the frames) against round 3's fine-tuned ensemble (NEW, exported
# from training/si-reference-k222-al3 unless given), after run.sh has finished. Run it before
# shipping round 3: OLD defaults to the shipped model and is refused unless it is round 2.
#
#   1. force/energy errors on round 3's CP2K frames: all of them for OLD (it saw none), and those
#      in round 3's test split for both (held out from both; each has siblings from the same MD
#      stage in round 3's training, so NEW's numbers there are somewhat optimistic); then NEW on
#      its whole test split (the k-point set's test frames, unchanged, plus round 3's), beside
#      OLD's on the same frames; NEW's Si phonons (`bench phonons`, against the k-point labels
#      and experiment; OLD's are in training/si-reference-k222/README.md);
#   2. the ensemble force spread along run.sh's MD, both ensembles on the same stored frames
#      (training/al-round2/spread_along.py);
#   3. the a-Si VDOS and VISION S(E): the 64-atom glass of run.sh's second melt-quench, 8 ps at
#      300 K with each ensemble (same seed), overlaid and scored by `mlff-ins compare`, and their
#      structure (`mlff-ins structure`).
#
# About an hour on 2 cores; every MD and the spread table resume. Outputs in $RUN/eval/.
# Usage: bash training/al-round3/evaluate.sh [OLD_MODEL [NEW_MODEL]]
set -euo pipefail
cd "$(dirname "$0")/../.."
source training/al_lib.sh
RUN=${RUN:-runs/al3}
TRAIN_RUN=training/si-reference-k222-al3
OLD=${1:-mlff_ins/resources/si/reference_model}
OUT=$RUN/eval
mkdir -p "$OUT"
# runs/ does not survive between sessions: the MD runs the frames were selected from are
# kept in training/al-round3/md/ and put back here when missing
for t in asi64 liquid_2500K asi64_900K vac63_1200K asi64_2500K; do
  [ -f "$RUN/$t.h5md" ] || [ ! -f training/al-round3/md/$t.h5md ] || cp training/al-round3/md/$t.h5md "$RUN/"
done
NEW=${2:-$OUT/round3_model}
AL=$OUT/al3_all.xyz
python - "$OLD" <<'PY'
import sys
from mlff_ins.model.calculator import read_bundle
files = " ".join(map(str, read_bundle(sys.argv[1]).get("training_data", {}).get("files", [])))
if "si_cp2k_pbe_k222.xyz" not in files or "al3" in files:
    sys.exit(f"{sys.argv[1]}: not the round-2 k-point ensemble; give it as the first argument")
PY
# round 3's run as it stands (partial if unfinished), exported again when the run is newer than
# the export; then every output of the NEW model (not of OLD) is made again too
if [ -z "${2:-}" ] && { [ ! -f "$NEW/bundle.json" ] || [ "$TRAIN_RUN/bundle.json" -nt "$NEW/bundle.json" ]; }; then
  rm -rf "$NEW" "$OUT/phonons_r3.txt" "$OUT"/asi64_300K_r3.h5md "$OUT"/asi_r3.* \
     "$OUT"/structure_r3.* "$OUT"/compare_*
  for f in "$OUT"/spread_*.tsv; do
    [ -f "$f" ] && awk -F'\t' -v m="$NEW" '$1 != m' "$f" > "$f.part" && mv "$f.part" "$f"
  done
  mlff-ins train training/si-reference-k222-al3.yaml -o "$TRAIN_RUN" --export "$NEW"
fi
python - "$AL" mlff_ins/resources/si/si_cp2k_pbe_k222_al3.xyz \
    mlff_ins/resources/si/si_cp2k_pbe_k222_al3_glass.xyz <<'PY'
import sys
from ase.io import read, write
write(sys.argv[1], [a for p in sys.argv[2:] for a in read(p, ":")], format="extxyz")
PY

# 1. errors on round 3's frames
split_test "$TRAIN_RUN/data/test.xyz" al3 "$OUT/al3_test.xyz" "$OUT/k222_test.xyz"
echo "== round-2 ensemble, all round-3 frames (before)"
python -m mlff_ins.bench train --model "$OLD" --frames "$AL"
echo "== round-2 ensemble, round-3 frames held out from round 3"
python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/al3_test.xyz"
echo "== round-3 ensemble, the same held-out frames (after)"
python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/al3_test.xyz"
echo "== round-2 and round-3 ensembles, the k-point set's test frames (unseen by both)"
python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/k222_test.xyz"
python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/k222_test.xyz"
echo "== round-3 ensemble, Si phonons (the round must not cost the crystal what round 2 fixed)"
if [ ! -f "$OUT/phonons_r3.txt" ]; then
  python -m mlff_ins.bench phonons --model "$NEW" --no-speed --no-sevenn > "$OUT/phonons_r3.part"
  mv "$OUT/phonons_r3.part" "$OUT/phonons_r3.txt"
fi
cat "$OUT/phonons_r3.txt"

# 2. spread along round 3's MD, both ensembles on the same frames
for traj in asi64 liquid_2500K asi64_900K vac63_1200K asi64_2500K; do
  python training/al-round2/spread_along.py "$RUN/$traj.h5md" "$OLD" "$NEW" \
      -o "$OUT/spread_$traj.tsv" --every 5
done

# 3. a-Si at 300 K from the second melt-quench's glass (run.sh glass; the first stayed a
#    crystal), with each ensemble
last_frame "$RUN/asi64_2500K.h5md" "$OUT/asi64_2500K_last.xyz"
for tag in r2:"$OLD" r3:"$NEW"; do
  name=${tag%%:*} model=${tag#*:}
  nice -n 10 mlff-ins md "$OUT/asi64_2500K_last.xyz" --model "$model" -T 300 --dt 2 --steps 4000 \
      --every 5 --thermostat bussi --seed 4 -o "$OUT/asi64_300K_$name.h5md" --resume
  [ -f "$OUT/asi_$name.h5" ] || mlff-ins spectra "$OUT/asi64_300K_$name.h5md" --vdos \
      --instrument vision -T 300 --skip-ps 2 --e-max 100 -o "$OUT/asi_$name.h5" --plot
  mlff-ins structure "$OUT/asi64_300K_$name.h5md" --start 400 -o "$OUT/structure_$name"
done
for kind in vdos s_e; do
  mlff-ins compare "$OUT/asi_r2.h5" "$OUT/asi_r3.h5" --kind $kind --label "round 2" \
      --label "round 3" -o "$OUT/compare_$kind"
done
python training/al-round1/md_summary.py "$OUT/asi64_300K_r2.h5md" "$OUT/asi64_300K_r3.h5md"
