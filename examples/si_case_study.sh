#!/usr/bin/env bash
# The silicon case study: c-Si, a-Si and a vacancy cell, from the reference force field
# to VISION spectra by phonons, MD and the direct predictor, each pair compared.
# Written by `mlff-ins demo --full --dry-run`; `mlff-ins demo --full` runs the same steps
# (and skips those already done). Run from anywhere; OUT, MODEL and DEVICE (cpu, cuda)
# may be overridden.
set -euo pipefail
OUT=${OUT:-si-case-study}
DEVICE=${DEVICE:-cpu}
MODEL=${MODEL:-si-reference}

# structures: relax the diamond cell with the model; write the MD protocols
mlff-ins demo --full --size full --model "$MODEL" --device "$DEVICE" --step structures -o "$OUT"

# build 216-atom crystal
mlff-ins build "$OUT/structures/si_conventional.xyz" --supercell 3 3 3 -o "$OUT/structures/c-si_216.xyz"

# build 512-atom crystal
mlff-ins build "$OUT/structures/si_conventional.xyz" --supercell 4 4 4 -o "$OUT/structures/c-si_512.xyz"

# build vacancy cell
mlff-ins build "$OUT/structures/si_conventional.xyz" --supercell 3 3 3 --vacancies 1 --seed 0 -o "$OUT/structures/vacancy_215.xyz"

# c-Si: phonons
mlff-ins phonons "$OUT/structures/si_conventional.xyz" --model "$MODEL" --supercell 3 3 3 -o "$OUT/c-si/phonons.h5" --plot --device "$DEVICE"

# c-Si: INS from phonons
mlff-ins ins "$OUT/c-si/phonons.h5" --mesh 80 --2d --q-max 8 --instrument vision -T 300 --e-max 100 -o "$OUT/c-si/ins_phonons.h5" --plot

# c-Si: phonons of the MD cell's unit cell
mlff-ins phonons "$OUT/structures/si_conventional.xyz" --model "$MODEL" --primitive P --supercell 3 3 3 -o "$OUT/c-si/phonons_conv.h5" --device "$DEVICE"

# c-Si: INS on the MD cell's q-points
mlff-ins ins "$OUT/c-si/phonons_conv.h5" --mesh 4 4 4 --instrument vision -T 300 --e-max 100 -o "$OUT/c-si/ins_phonons_md_q.h5" --plot

# c-Si: MD
mlff-ins md "$OUT/structures/c-si_512.xyz" --model "$MODEL" --protocol "$OUT/protocols/production.yaml" -T 300 --seed 1 -o "$OUT/c-si/md.h5md" --device "$DEVICE" $([ -e "$OUT/c-si/md.h5md" ] && echo --resume)

# c-Si: spectra from MD
mlff-ins spectra "$OUT/c-si/md.h5md" --stage production --sqe --q-max 8 --vdos --instrument vision -T 300 --e-max 100 -o "$OUT/c-si/ins_md.h5" --plot --device "$DEVICE"

# c-Si: direct predictor
mlff-ins predict "$OUT/structures/si_conventional.xyz" --instrument vision -T 300 -o "$OUT/c-si/predict.h5" --plot --device "$DEVICE"

# c-Si: compare s_e (md_vs_phonons)
mlff-ins compare "$OUT/c-si/ins_md.h5" "$OUT/c-si/ins_phonons_md_q.h5" --kind s_e --label md --label phonons -o "$OUT/c-si/md_vs_phonons"

# c-Si: compare s_e (compare_s_e)
mlff-ins compare "$OUT/c-si/ins_md.h5" "$OUT/c-si/ins_phonons.h5" "$OUT/c-si/predict.h5" --kind s_e --label md --label phonons --label predictor -o "$OUT/c-si/compare_s_e"

# c-Si: compare vdos (compare_vdos)
mlff-ins compare "$OUT/c-si/ins_md.h5" "$OUT/c-si/ins_phonons.h5" "$OUT/c-si/predict.h5" --kind vdos --label md --label phonons --label predictor -o "$OUT/c-si/compare_vdos"

# a-Si: melt-quench MD
mlff-ins md "$OUT/structures/c-si_512.xyz" --model "$MODEL" --protocol "$OUT/protocols/melt_quench.yaml" --seed 1 -o "$OUT/a-si/quench.h5md" --device "$DEVICE" $([ -e "$OUT/a-si/quench.h5md" ] && echo --resume)

# a-Si: MD at 300 K: from the last frame of the melt-quench, new velocities
mlff-ins md "$OUT/a-si/quench.h5md" --model "$MODEL" --protocol "$OUT/protocols/production.yaml" -T 300 --seed 1 -o "$OUT/a-si/md.h5md" --device "$DEVICE" $([ -e "$OUT/a-si/md.h5md" ] && echo --resume)

# a-Si: structure
mlff-ins structure "$OUT/a-si/md.h5md" --stage production -o "$OUT/a-si/structure"

# a-Si: check that the quench made a glass: stop a full-size study whose melt-quench left a crystal
mlff-ins demo --full --size full --model "$MODEL" --device "$DEVICE" --step glass_check -o "$OUT"

# a-Si: spectra from MD
mlff-ins spectra "$OUT/a-si/md.h5md" --stage production --blocks 4 --vdos --instrument vision -T 300 --e-max 100 -o "$OUT/a-si/ins_md.h5" --plot --device "$DEVICE"

# a-Si: phonons of the quenched cell
mlff-ins phonons "$OUT/a-si/md.h5md" --model "$MODEL" --relax --relax-steps 5000 --supercell 1 1 1 -o "$OUT/a-si/phonons.h5" --plot --device "$DEVICE"

# a-Si: INS from phonons
mlff-ins ins "$OUT/a-si/phonons.h5" --mesh 1 1 1 --instrument vision -T 300 --e-max 100 -o "$OUT/a-si/ins_phonons.h5" --plot

# a-Si: direct predictor
mlff-ins predict "$OUT/a-si/md.h5md" --instrument vision -T 300 -o "$OUT/a-si/predict.h5" --plot --device "$DEVICE"

# a-Si: compare s_e (md_vs_phonons)
mlff-ins compare "$OUT/a-si/ins_md.h5" "$OUT/a-si/ins_phonons.h5" --kind s_e --label md --label phonons -o "$OUT/a-si/md_vs_phonons"

# a-Si: compare s_e (compare_s_e)
mlff-ins compare "$OUT/a-si/ins_md.h5" "$OUT/a-si/ins_phonons.h5" "$OUT/a-si/predict.h5" --kind s_e --label md --label phonons --label predictor -o "$OUT/a-si/compare_s_e"

# a-Si: compare vdos (compare_vdos)
mlff-ins compare "$OUT/a-si/ins_md.h5" "$OUT/a-si/ins_phonons.h5" "$OUT/a-si/predict.h5" --kind vdos --label md --label phonons --label predictor -o "$OUT/a-si/compare_vdos"

# vacancy: phonons
mlff-ins phonons "$OUT/structures/vacancy_215.xyz" --model "$MODEL" --relax --relax-steps 5000 --supercell 1 1 1 -o "$OUT/vacancy/phonons.h5" --device "$DEVICE"

# vacancy: INS from phonons
mlff-ins ins "$OUT/vacancy/phonons.h5" --mesh 1 1 1 --instrument vision -T 300 --e-max 100 -o "$OUT/vacancy/ins_phonons.h5" --plot

# vacancy: phonons of the perfect cell
mlff-ins phonons "$OUT/structures/c-si_216.xyz" --model "$MODEL" --primitive P --supercell 1 1 1 -o "$OUT/vacancy/perfect_phonons.h5" --device "$DEVICE"

# vacancy: INS of the perfect cell
mlff-ins ins "$OUT/vacancy/perfect_phonons.h5" --mesh 1 1 1 --instrument vision -T 300 --e-max 100 -o "$OUT/vacancy/perfect_ins_phonons.h5" --plot

# vacancy: MD
mlff-ins md "$OUT/structures/vacancy_215.xyz" --model "$MODEL" --protocol "$OUT/protocols/production.yaml" -T 300 --seed 1 -o "$OUT/vacancy/md.h5md" --device "$DEVICE" $([ -e "$OUT/vacancy/md.h5md" ] && echo --resume)

# vacancy: spectra from MD
mlff-ins spectra "$OUT/vacancy/md.h5md" --stage production --blocks 4 --vdos --instrument vision -T 300 --e-max 100 -o "$OUT/vacancy/ins_md.h5" --plot --device "$DEVICE"

# vacancy: MD of the perfect cell
mlff-ins md "$OUT/structures/c-si_216.xyz" --model "$MODEL" --protocol "$OUT/protocols/production.yaml" -T 300 --seed 1 -o "$OUT/vacancy/perfect_md.h5md" --device "$DEVICE" $([ -e "$OUT/vacancy/perfect_md.h5md" ] && echo --resume)

# vacancy: spectra from the perfect cell's MD
mlff-ins spectra "$OUT/vacancy/perfect_md.h5md" --stage production --blocks 4 --vdos --instrument vision -T 300 --e-max 100 -o "$OUT/vacancy/perfect_ins_md.h5" --plot --device "$DEVICE"

# vacancy: difference from the perfect crystal
mlff-ins demo --full --size full --model "$MODEL" --device "$DEVICE" --step vacancy_difference -o "$OUT"

# vacancy: direct predictor
mlff-ins predict "$OUT/structures/vacancy_215.xyz" --instrument vision -T 300 -o "$OUT/vacancy/predict.h5" --plot --device "$DEVICE"

# vacancy: compare s_e (md_vs_phonons)
mlff-ins compare "$OUT/vacancy/ins_md.h5" "$OUT/vacancy/ins_phonons.h5" --kind s_e --label md --label phonons -o "$OUT/vacancy/md_vs_phonons"

# vacancy: compare s_e (compare_s_e)
mlff-ins compare "$OUT/vacancy/ins_md.h5" "$OUT/vacancy/ins_phonons.h5" "$OUT/vacancy/predict.h5" --kind s_e --label md --label phonons --label predictor -o "$OUT/vacancy/compare_s_e"

# vacancy: compare vdos (compare_vdos)
mlff-ins compare "$OUT/vacancy/ins_md.h5" "$OUT/vacancy/ins_phonons.h5" "$OUT/vacancy/predict.h5" --kind vdos --label md --label phonons --label predictor -o "$OUT/vacancy/compare_vdos"

# report
mlff-ins demo --full --size full --model "$MODEL" --device "$DEVICE" --step report -o "$OUT"

