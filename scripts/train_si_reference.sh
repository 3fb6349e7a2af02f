#!/usr/bin/env bash
# How the silicon reference ensemble in mlff_ins/resources/si/reference_model/ is made. By default
# (LABELS=k222 ROUND=4) it remakes the shipped model, every step from the CP2K frames in the
# repository (no DFT and no MD is run here: the active-learning rounds' frames are labelled and
# kept in mlff_ins/resources/si/):
#   1. the `reference` preset (configs/train/reference.yaml: 3 members of at most 250 epochs, each
#      ending after 40 epochs without a lower validation loss, ZBL core repulsion) on the k-point
#      data set (si_cp2k_pbe_k222.xyz) in training/si-reference-k222;
#   2. the last stage (training/si-reference-k222-stage.yaml: the crystal's frozen-phonon and
#      displaced frames weighted 50 in the loss, from each member's best epoch), in $OUT-stage;
#   3. active-learning round 3 (training/si-reference-k222-al3.yaml: the stage fine-tuned on the
#      k-point set plus round 3's frames), in training/si-reference-k222-al3;
#   4. round 4 (training/si-reference-k222-al4.yaml: round 3 fine-tuned on its data plus round
#      4's glasses, energy loss weight 30), in training/si-reference-k222-al4: the shipped model.
# ROUND=2 stops after step 2 and ROUND=3 after step 3 (the models shipped before). How each
# round's frames were made (MD, selection, CP2K) is in training/al-round3/run.sh and
# training/al-round4/run.sh, which also train their round (the same commands as here).
# Hours in all on 2 cores (step 1: 5-6 hours for the three members on idle cores; each later step
# under an hour); stop it with SIGTERM or Ctrl-C at any point (passed on to the trainer) and rerun
# this script: it resumes where it stopped (finished runs and members kept, the unfinished member
# from its last.ckpt, elapsed time included). The run folders are kept in git (checkpoints
# included) so that a later session on another machine resumes them: commit them when you stop.
# In this repository every run folder is there. Round 4's member 2 is unfinished (it was stopped
# by hand at epoch 30 and its best epoch, 24, shipped), so a plain rerun would train it on;
# EXPORT_ONLY=1 trains nothing and exports the runs as they are, which remakes the shipped
# bundle (its members predict as the shipped ones to 2e-7 eV/Å).
# The finished ensemble is exported to mlff_ins/resources/si/reference_model.new and benchmarked;
# it replaces the shipped reference_model only with SHIP=1 (run the round's evaluate.sh first,
# which compares it with the shipped model; rerunning with SHIP=1 skips the finished training).
# LABELS=gamma is the history before the k-point labels: the embedded Γ-only frames
# (si_cp2k_pbe.xyz, with the frozen TA phonons) and active-learning rounds 1..ROUND
# (si_cp2k_pbe_alK.xyz) in training/si-reference-alROUND. Round 0 (no ZBL, no frozen phonons, no
# round-1 frames; 400 epochs) is training/si-reference/: its member 0 after 172 epochs is the
# interim model the round-1 frames were picked with.
set -euo pipefail
cd "$(dirname "$0")/.."
source training/al_lib.sh
# LABELS=k222 (default): the k-point data set, every geometry of the embedded frames and of
# rounds 1-2 relabelled with 2x2x2 k-points and the DZVP-MOLOPT-GTH basis (si_cp2k_pbe_k222.xyz,
# scripts/relabel_si_k222.sh; why: training/kpoint-check/README.md), then ROUND's fine-tunes
LABELS=${LABELS:-k222}
if [ "$LABELS" = k222 ]; then ROUND=${ROUND:-4}; else ROUND=${ROUND:-1}; fi
EXPORT_ONLY=${EXPORT_ONLY:-0}
RESUME=""
if [ "$LABELS" = k222 ]; then
  OUT=${OUT:-training/si-reference-k222}
  # rounds 3 and 4 fine-tune the stage in turn; their configs name the run they start from
  # (training.init_from), the one before, so they need the default folders (checked before
  # anything trains)
  if [ ! -f "training/si-reference-k222-al$ROUND.yaml" ] && [ "$ROUND" -gt 2 ]; then
    echo "ROUND=$ROUND: the k-point rounds are 2 (the stage), 3 and 4" >&2
    exit 2
  fi
  if [ "$ROUND" -ge 3 ] && [ "$OUT" != training/si-reference-k222 ]; then
    echo "ROUND=$ROUND: rounds 3 and 4 start from training/si-reference-k222-stage;" \
         "leave OUT unset (or set ROUND=2)" >&2
    exit 2
  fi
  ARGS=(--preset reference --data mlff_ins/resources/si/si_cp2k_pbe_k222.xyz)
  CHECKS=("training/relabel-k222/frames.xyz mlff_ins/resources/si/si_cp2k_pbe_k222.xyz")
elif [ "$LABELS" = gamma ]; then
  OUT=${OUT:-training/si-reference-al$ROUND}
  ARGS=(--preset reference --data mlff_ins/resources/si/si_cp2k_pbe.xyz)
  CHECKS=()
  for k in $(seq 1 "$ROUND"); do
    ARGS+=(--data "mlff_ins/resources/si/si_cp2k_pbe_al$k.xyz")
    [ "$k" -ge 2 ] && CHECKS+=("training/al-round$k/frames_unlabelled.xyz mlff_ins/resources/si/si_cp2k_pbe_al$k.xyz")
  done
else
  echo "LABELS=$LABELS: k222 (default) or gamma" >&2
  exit 2
fi
[ -d "$OUT" ] && RESUME="--resume"
ARGS+=(-o "$OUT")
# EPOCHS=N ends (or extends) the run at N epochs instead of the preset's 250: a resume may change
# the run length. Round 1 ended at 121 (validation force error rising since epoch ~45 while the
# training error fell: training/si-reference-al1/README.md)
[ -n "${EPOCHS:-}" ] && ARGS+=(--epochs "$EPOCHS")
# a member that reaches the preset's time cap (1200 min) stops as finished and a resume does not
# extend it; round 1 took ~133 s an epoch on an idle machine, so 250 epochs of a larger round
# beside other work can pass it: MAX_MINUTES (default 3000) sets the cap of this run
{ [ "$ROUND" -ge 2 ] || [ "$LABELS" = k222 ]; } && ARGS+=(--max-minutes "${MAX_MINUTES:-3000}")
# every labelled file complete: labels grow frame by frame while `mlff-ins label` runs, and a
# training started on part of them could not resume once the rest landed
for pair in "${CHECKS[@]}"; do
  python - $pair <<'PY'
import sys
from pathlib import Path
from ase.io import read
todo, done = map(Path, sys.argv[1:])
rejected = done.with_name(done.name + ".rejected.jsonl")
n_todo = len(read(todo, ":")) if todo.exists() else 0
n_done = len(read(done, ":")) if done.exists() else 0
n_rej = len(rejected.read_text().splitlines()) if rejected.exists() else 0
if not done.exists() or n_done + n_rej < n_todo:
    sys.exit(f"{done}: {n_done} of the {n_todo} frames of {todo} labelled ({n_rej} rejected); "
             f"finish the round's labelling first")
PY
done
# the three members side by side, one torch thread each (docs/training.md: on 2 cores this beats
# one 2-thread member at a time, more so beside other work), so a stopped run already has a
# partial ensemble to export
if [ ! -f "$OUT/bundle.json" ] && [ "$EXPORT_ONLY" != 1 ]; then
  nice -n 19 mlff-ins train "${ARGS[@]}" --parallel-members 3 $RESUME &
  pid=$!
  # bash does not pass a SIGTERM on to a foreground child: without this, stopping the script
  # left the trainer running, and a rerun would have trained beside it
  trap 'kill -TERM $pid 2>/dev/null; wait $pid' TERM INT
  wait $pid
  trap - TERM INT
fi
# LABELS=k222: then the last stage, training/si-reference-k222-stage.yaml (the frozen-phonon and
# displaced-crystal frames weighted 50 in the loss, from each member's best epoch; STAGE=0
# skips it and the rounds after it), in $OUT-stage; exported with ROUND=2
EXPORT_ARGS=("${ARGS[@]}")
if [ "$LABELS" = k222 ] && [ "${STAGE:-1}" = 1 ]; then
  STAGE_OUT=$OUT-stage
  STAGE_RESUME=""
  [ -d "$STAGE_OUT" ] && STAGE_RESUME="--resume"
  if [ ! -f "$STAGE_OUT/bundle.json" ] && [ "$EXPORT_ONLY" != 1 ]; then
    nice -n 19 mlff-ins train training/si-reference-k222-stage.yaml --parallel-members 3 \
        -o "$STAGE_OUT" $STAGE_RESUME &
    pid=$!
    trap 'kill -TERM $pid 2>/dev/null; wait $pid' TERM INT
    wait $pid
    trap - TERM INT
  fi
  EXPORT_ARGS=(training/si-reference-k222-stage.yaml -o "$STAGE_OUT")
  # rounds 3 and 4 fine-tune the stage in turn (their configs name the run they start from)
  for k in $(seq 3 "$ROUND"); do
    CONFIG=training/si-reference-k222-al$k.yaml
    if [ "$EXPORT_ONLY" != 1 ]; then
      # the round's frames all labelled (frames_unlabelled*.xyz -> si_cp2k_pbe_k222_al$k*.xyz)
      for todo in training/al-round$k/frames_unlabelled*.xyz; do
        suffix=$(basename "$todo" .xyz); suffix=${suffix#frames_unlabelled}
        labels_complete "$todo" "mlff_ins/resources/si/si_cp2k_pbe_k222_al$k$suffix.xyz"
      done
      train_round "$CONFIG" training/si-reference-k222-al$k
    fi
    EXPORT_ARGS=("$CONFIG" -o training/si-reference-k222-al$k)
  done
fi
# ship the members and the report, not the checkpoints (`--export` also ships an unfinished
# run's best checkpoints so far, marked partial; stop the training first)
NEW=mlff_ins/resources/si/reference_model.new
rm -rf "$NEW"
mlff-ins train "${EXPORT_ARGS[@]}" --export "$NEW"
python -m mlff_ins.bench phonons --model "$NEW" --no-speed --no-sevenn
if [ "${SHIP:-0}" = 1 ]; then
  # old aside, new in place, old removed: a kill in between leaves one of them whole
  rm -rf mlff_ins/resources/si/reference_model.old
  mv -T mlff_ins/resources/si/reference_model mlff_ins/resources/si/reference_model.old
  mv -T "$NEW" mlff_ins/resources/si/reference_model
  rm -rf mlff_ins/resources/si/reference_model.old
else
  echo "exported to $NEW (not shipped); after the round's evaluate.sh, rerun with SHIP=1"
fi
