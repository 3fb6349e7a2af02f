#!/usr/bin/env bash
# How the silicon reference ensemble in mlff_ins/resources/si/reference_model/ is made: the
# `reference` preset (configs/train/reference.yaml: 3 members of 250 epochs, ZBL core repulsion;
# about 5-6 hours for the three on 2 otherwise idle CPU cores; a --resume may raise the epochs
# to train longer) on the embedded CP2K frames (si_cp2k_pbe.xyz, with the frozen TA phonons) and the
# active-learning round 1 (si_cp2k_pbe_al1.xyz), then the phonon benchmark on it.
# Round 0 (no ZBL, no frozen phonons, no round-1 frames; 400 epochs) is training/si-reference/:
# its member 0 after 172 epochs is the interim model the round-1 frames were picked with.
# Hours in all; stop it with SIGTERM or Ctrl-C at any point and rerun this script: it resumes
# where it stopped (finished members kept, the unfinished one from its last.ckpt, elapsed time
# included). The run folder, $OUT, is kept in git (checkpoints included) so that a later
# session on another machine resumes it: commit it when you stop.
set -euo pipefail
cd "$(dirname "$0")/.."
# ROUND=N trains on the embedded frames and active-learning rounds 1..N (si_cp2k_pbe_alK.xyz)
# in the run folder training/si-reference-alN (default: round 1, the shipped model's run)
ROUND=${ROUND:-1}
OUT=${OUT:-training/si-reference-al$ROUND}
RESUME=""
[ -d "$OUT" ] && RESUME="--resume"
ARGS=(--preset reference --data mlff_ins/resources/si/si_cp2k_pbe.xyz)
for k in $(seq 1 "$ROUND"); do ARGS+=(--data "mlff_ins/resources/si/si_cp2k_pbe_al$k.xyz"); done
ARGS+=(-o "$OUT")
# EPOCHS=N ends (or extends) the run at N epochs instead of the preset's 250: a resume may change
# the run length. Round 1 ended at 121 (validation force error rising since epoch ~45 while the
# training error fell: training/si-reference-al1/README.md)
[ -n "${EPOCHS:-}" ] && ARGS+=(--epochs "$EPOCHS")
# the three members side by side, one torch thread each (docs/training.md: on 2 cores this beats
# one 2-thread member at a time, more so beside other work), so a stopped run already has a
# partial ensemble to export
nice -n 19 mlff-ins train "${ARGS[@]}" --parallel-members 3 $RESUME
# ship the members and the report, not the checkpoints (`--export` also ships an unfinished
# run's best checkpoints so far, marked partial; stop the training first)
rm -rf mlff_ins/resources/si/reference_model.new
mlff-ins train "${ARGS[@]}" --export mlff_ins/resources/si/reference_model.new
rm -rf mlff_ins/resources/si/reference_model
mv -T mlff_ins/resources/si/reference_model.new mlff_ins/resources/si/reference_model
python -m mlff_ins.bench phonons --model mlff_ins/resources/si/reference_model --no-speed --no-sevenn
