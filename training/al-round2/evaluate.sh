#!/usr/bin/env bash
# What active-learning round 2 changed (issue 19, part 3): the round-1 reference ensemble (the
# model that chose the frames; training/si-reference-al1, shipped until round 2 replaces it)
# against the round-2 ensemble (`ROUND=2 bash scripts/train_si_reference.sh`, run folder
# training/si-reference-al2), after run.sh has labelled si_cp2k_pbe_al2.xyz. Run it before
# round 2 is shipped: OLD defaults to the shipped model and is refused unless it is round 1.
#
#   1. force/energy errors on the round-2 CP2K frames: all twelve for round 1 (it saw none), and
#      the ones in round 2's test split for both (held out from both). Caveat: the split keeps
#      one frame of each config_type for training, so each held-out frame's sibling (the other
#      frame picked from the same MD run or stage, 0.6-0.7 Å RMS apart for the 300 K, 900 K and
#      vacancy pairs) is in round 2's training: its numbers there are optimistic. Round 2's
#      test split as a whole is not round 1's either (new config_types reshuffle it), so round
#      1's and round 2's metrics.json are not on the same frames;
#   2. the ensemble force spread along round 2's own MD (run.sh's trajectories), both ensembles
#      on the same stored frames (spread_along.py);
#   3. the a-Si VDOS and VISION S(E): the cell run.sh's melt-quench made, 8 ps at 300 K with each
#      ensemble (same seed), overlaid and scored by `mlff-ins compare`, and their structure.
#
# About an hour on 2 cores; every MD and the spread table resume. Outputs in $RUN/eval/.
# LABELS=k222: round 2 trained on the k-point data set instead (`LABELS=k222 bash
# scripts/train_si_reference.sh`, training/si-reference-k222: every geometry, these twelve
# included, relabelled with 2x2x2 k-points; training/kpoint-check/README.md). The errors of
# step 1 are then taken against the k-point labels of the twelve frames, for both ensembles
# (the round-1 one learned Gamma-only labels: its "before" includes that difference), and the
# new ensemble is the run's last stage (training/si-reference-k222-stage; STAGE=0: the run
# before it).
# Usage: bash training/al-round2/evaluate.sh [OLD_MODEL [NEW_MODEL]]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${RUN:-runs/al2}
LABELS=${LABELS:-gamma}
if [ "$LABELS" = k222 ] && [ "${STAGE:-1}" = 1 ]; then
  # the run's last stage (training/si-reference-k222-stage.yaml), which is what ships
  TRAIN_RUN=${TRAIN_RUN:-training/si-reference-k222-stage}
  TRAIN_ARGS=(training/si-reference-k222-stage.yaml)
elif [ "$LABELS" = k222 ]; then
  TRAIN_RUN=${TRAIN_RUN:-training/si-reference-k222}
  TRAIN_ARGS=(--preset reference --data mlff_ins/resources/si/si_cp2k_pbe_k222.xyz)
else
  TRAIN_RUN=${TRAIN_RUN:-training/si-reference-al2}
  TRAIN_ARGS=(--preset reference --data mlff_ins/resources/si/si_cp2k_pbe.xyz
              --data mlff_ins/resources/si/si_cp2k_pbe_al1.xyz
              --data mlff_ins/resources/si/si_cp2k_pbe_al2.xyz)
fi
OLD=${1:-mlff_ins/resources/si/reference_model}
# one folder per label set: a k-point evaluation must not reuse the Gamma-only one's model and MD
OUT=$RUN/eval
[ "$LABELS" = k222 ] && OUT=$RUN/eval-k222
mkdir -p "$OUT"
NEW=${2:-$OUT/round2_model}
AL=mlff_ins/resources/si/si_cp2k_pbe_al2.xyz
if [ "$LABELS" = k222 ]; then   # the twelve frames' k-point labels
  AL=$OUT/al2_k222.xyz
  python - "$AL" <<'EOF'
import sys
from ase.io import read, write
frames = [a for a in read("mlff_ins/resources/si/si_cp2k_pbe_k222.xyz", ":")
          if a.info.get("gamma_file") == "si_cp2k_pbe_al2.xyz"]
if len(frames) != 12:
    sys.exit(f"{len(frames)} of the twelve round-2 frames relabelled with k-points")
write(sys.argv[1], frames)
EOF
fi
python - "$OLD" <<'PY'
import sys
from mlff_ins.model.calculator import read_bundle
files = " ".join(map(str, read_bundle(sys.argv[1]).get("training_data", {}).get("files", [])))
if "al1" not in files or "al2" in files:
    sys.exit(f"{sys.argv[1]}: not the round-1 ensemble; give it as the first argument")
PY
if [ -f "$NEW/bundle.json" ]; then   # an export made earlier must be of this label set
  python - "$NEW" "$LABELS" <<'PY'
import sys
from pathlib import Path
from mlff_ins.model.calculator import read_bundle
data = read_bundle(sys.argv[1]).get("training_data", {})
files = [Path(str(f)).name for f in data.get("files") or [data.get("file", "")]]
if any(f.startswith("si_cp2k_pbe_k222") for f in files) != (sys.argv[2] == "k222"):
    sys.exit(f"{sys.argv[1]}: trained on {', '.join(files)}, not the LABELS={sys.argv[2]} "
             f"data; remove it (or give NEW_MODEL)")
PY
fi
if [ ! -f "$NEW/bundle.json" ]; then   # the round-2 run as it stands (partial if unfinished)
  rm -rf "$NEW"
  mlff-ins train "${TRAIN_ARGS[@]}" -o "$TRAIN_RUN" --export "$NEW"
fi

# 1. errors on the round-2 frames
python - "$TRAIN_RUN/data/test.xyz" "$OUT/al2_test.xyz" <<'EOF'
import sys
from ase.io import read, write
held = [a for a in read(sys.argv[1], ":") if "_al2_" in a.info.get("config_type", "")]
write(sys.argv[2], held)
print(f"{len(held)} round-2 frames in round 2's test split:",
      ", ".join(a.info["config_type"] for a in held))
EOF
echo "== round-1 ensemble, all round-2 frames (before)"
python -m mlff_ins.bench train --model "$OLD" --frames "$AL"
if [ -s "$OUT/al2_test.xyz" ]; then
  echo "== round-1 ensemble, round-2 frames held out from round 2"
  python -m mlff_ins.bench train --model "$OLD" --frames "$OUT/al2_test.xyz"
  echo "== round-2 ensemble, the same held-out frames (after)"
  python -m mlff_ins.bench train --model "$NEW" --frames "$OUT/al2_test.xyz"
fi
echo "== round-2 ensemble, its whole test split"
python -m mlff_ins.bench train --model "$NEW" --frames "$TRAIN_RUN/data/test.xyz"

# 2. spread along round 2's MD, both ensembles on the same frames
for traj in asi64 liquid_2500K asi64_900K vac63_1200K; do
  python training/al-round2/spread_along.py "$RUN/$traj.h5md" "$OLD" "$NEW" \
      -o "$OUT/spread_$traj.tsv" --every 5
done

# 3. a-Si at 300 K from the melt-quenched cell, with each ensemble
[ -f "$OUT/asi64_quenched.xyz" ] || python - "$RUN/asi64.h5md" "$OUT/asi64_quenched.xyz" <<'EOF'
import sys
from ase.io import write
from mlff_ins.data.h5md import frame_count, read_frame
atoms = read_frame(sys.argv[1], frame_count(sys.argv[1]) - 1)
atoms.calc = None
write(sys.argv[2], atoms, format="extxyz")
EOF
for tag in r1:"$OLD" r2:"$NEW"; do
  name=${tag%%:*} model=${tag#*:}
  nice -n 10 mlff-ins md "$OUT/asi64_quenched.xyz" --model "$model" -T 300 --dt 2 --steps 4000 \
      --every 5 --thermostat bussi --seed 4 -o "$OUT/asi64_300K_$name.h5md" --resume
  [ -f "$OUT/asi_$name.h5" ] || mlff-ins spectra "$OUT/asi64_300K_$name.h5md" --vdos \
      --instrument vision -T 300 --skip-ps 2 --e-max 100 -o "$OUT/asi_$name.h5" --plot
  mlff-ins structure "$OUT/asi64_300K_$name.h5md" --start 400 -o "$OUT/structure_$name"
done
for kind in vdos s_e; do
  mlff-ins compare "$OUT/asi_r1.h5" "$OUT/asi_r2.h5" --kind $kind --label "round 1" \
      --label "round 2" -o "$OUT/compare_$kind"
done
python training/al-round1/md_summary.py "$OUT/asi64_300K_r1.h5md" "$OUT/asi64_300K_r2.h5md"
