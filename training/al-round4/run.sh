#!/usr/bin/env bash
# Active-learning round 4 of the silicon reference model (issue 19, parts 1 and 3): amorphous
# frames. The ensemble's force error on held-out amorphous frames (~170 meV/Å, target 100) is
# the same on its own glass's CP2K frames (round 3: 166), and its learning curves (training
# 18-25 meV/Å, validation ~70) say the disordered phases are short of data: this round adds
# frames from three more independent glasses, at the temperatures the spectra are taken at and
# hotter.
#
#   1. (md) with member 0 of the shipped ensemble: three 64-atom glasses quenched from snapshots
#      of round 3's 2500 K liquid 1, 2 and 3 ps apart (quench_64.yaml: 1 ps at 2500 K, quench at
#      500 K/ps, anneal at 0 GPa, 2 ps at 300 K; seeds 41-43), each checked to be a glass
#      (`mlff-ins structure`), then each glass 2 ps at 600 K and at 900 K (seeds 44-49);
#   2. (select) `mlff-ins select --model` scores the frames with the whole ensemble and takes the
#      most uncertain from each glass: quench 3, 300 K 2, 600 K 2, 900 K 2 (27 frames);
#   3. (label) CP2K labels them with the k-point data set's settings
#      (configs/label/cp2k_si_k222.yaml) into mlff_ins/resources/si/si_cp2k_pbe_k222_al4.xyz
#      (about 3.5 minutes a 64-atom frame on 2 quiet cores: ~1.6 hours);
#   4. (train) training/si-reference-k222-al4.yaml fine-tunes the shipped round-3 ensemble
#      (training/si-reference-k222-al3) on its data plus these frames (~45 minutes).
#
# Every step resumes (MD with --resume, which refuses a run begun with another version of the
# model; the labelling frame by frame): rerun after a kill. About 35 minutes of MD on 2 idle
# cores (1100-1300 atom-steps/s with one member); run nothing else with torch beside it.
# Then evaluate (training/al-round4/evaluate.sh) and ship only if better.
# Usage: bash training/al-round4/run.sh [STEP]   (STEP: md, select, label, train; default all)
set -euo pipefail
cd "$(dirname "$0")/../.."
source training/al_lib.sh
HERE=training/al-round4
RUN=${RUN:-runs/al4}
MODEL=mlff_ins/resources/si/reference_model
LIQUID=training/al-round3/md/liquid_2500K.h5md
F=$HERE/frames_unlabelled.xyz
LABELS=mlff_ins/resources/si/si_cp2k_pbe_k222_al4.xyz
STEP=${1:-all}
mkdir -p "$RUN" $HERE/md

md() { fwd nice -n 10 mlff-ins md "$@" --model "$MODEL" --members 0 --resume; }
sel() { fwd nice -n 10 mlff-ins select "$@" --model "$MODEL"; }
# the MD runs are kept in $HERE/md (runs/ does not survive between sessions) and copied back
keep() { cmp -s "$RUN/$1" $HERE/md/$1 || cp "$RUN/$1" $HERE/md/$1; }
for g in 1 2 3; do
  for t in glass$g glass${g}_600K glass${g}_900K; do
    [ -f "$RUN/$t.h5md" ] || [ ! -f $HERE/md/$t.h5md ] || cp $HERE/md/$t.h5md "$RUN/"
  done
done

if [ "$STEP" = all ] || [ "$STEP" = md ]; then
  for g in 1 2 3; do
    # liquid_2500K.h5md holds a frame every 20 fs: frames 50, 100, 150 are 1, 2 and 3 ps in
    md "$LIQUID" --index $((50 * g)) --protocol $HERE/quench_64.yaml --seed $((40 + g)) \
       -o "$RUN/glass$g.h5md"
    keep glass$g.h5md
    mlff-ins structure "$RUN/glass$g.h5md" --stage production -o $HERE/md/glass${g}_structure
    assert_glass "$RUN/glass$g.h5md" $HERE/md/glass${g}_structure.json
    for T in 600 900; do
      md "$RUN/glass$g.h5md" -T $T --dt 2 --steps 1000 --every 10 --seed $((42 + 2 * g + T / 900)) \
         -o "$RUN/glass${g}_${T}K.h5md"
      keep glass${g}_${T}K.h5md
    done
  done
fi

if { [ "$STEP" = all ] || [ "$STEP" = select ]; } && [ ! -f "$F" ]; then
  parts=()
  for g in 1 2 3; do
    sel "$RUN/glass$g.h5md" --stage quench --top 3 --config-type amorphous_al4_quench \
        -o "$RUN/sel_${g}_quench.xyz"
    sel "$RUN/glass$g.h5md" --stage production --top 2 --config-type amorphous_al4_300K \
        -o "$RUN/sel_${g}_300K.xyz"
    for T in 600 900; do
      sel "$RUN/glass${g}_${T}K.h5md" --top 2 --config-type amorphous_al4_${T}K \
          -o "$RUN/sel_${g}_${T}K.xyz"
    done
    parts+=("$RUN"/sel_${g}_{quench,300K,600K,900K}.xyz)
  done
  gather "$F" "${parts[@]}"
fi

if [ "$STEP" = all ] || [ "$STEP" = label ]; then
  fwd nice -n 19 mlff-ins label "$F" --calculator mlff_ins/configs/label/cp2k_si_k222.yaml \
      -o "$LABELS"
fi

if [ "$STEP" = all ] || [ "$STEP" = train ]; then
  labels_complete "$F" "$LABELS"
  train_round training/si-reference-k222-al4.yaml training/si-reference-k222-al4
fi
