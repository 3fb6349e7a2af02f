#!/usr/bin/env bash
# How the predictor shipped in mlff_ins/resources/predictor/ is made (hours on 2 cores for the
# database, minutes for the training). The database itself is not in the repository (~150 kB
# per entry), but the teacher's work is: data/predictor/teacher_records.h5 (~15 kB per entry),
# which the build rebuilds entries from without the teacher. Rerunning this script resumes the
# build where it stopped, on any machine with the repository; commit the records file as it grows.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/database
mkdir -p data/predictor
nice -n 19 mlff-ins database build --structures aflow,ase-bulk,dcdft,substitutions \
    --teacher sevennet-0 -o build/database/db.h5 --records data/predictor/teacher_records.h5
mlff-ins database info build/database/db.h5
mlff-ins predictor train build/database/db.h5 -o mlff_ins/resources/predictor --members 3 --epochs 100
python -m mlff_ins.bench predictor --force-sets tests/data/phonopy/{MgO,NaCl,Al2O3}
