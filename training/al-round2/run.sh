#!/usr/bin/env bash
# Active-learning round 2 of the silicon reference model (issue 19, part 3), the first with an
# ensemble to ask: the round-1 reference ensemble (3 members; scripts/train_si_reference.sh)
# runs its own MD of CP2K-sized cells and `mlff-ins select` takes, from each run or protocol
# stage, the frames where its members disagree most (largest per-atom force spread); CP2K
# labels them into mlff_ins/resources/si/si_cp2k_pbe_al2.xyz. Round 1 (training/al-round1/)
# picked its frames at fixed steps: its model had one member, so no spread to rank by.
#
#   melt-quench of 64 atoms (training/al-round1/melt_quench_64.yaml: melt at 2000 K, quench at
#     250 K/ps, anneal, 300 K): 2 frames each from the melt, the quench and the 300 K stage;
#   a 2500 K liquid (the case study melts at 2500 K): 2 frames;
#   the quenched a-Si at 900 K: 2 frames; the 63-atom vacancy cell at 1200 K: 2 frames.
#
# Every step resumes (MD with --resume, the labelling frame by frame); rerun after a kill. The
# MD takes about an hour on 2 cores with 3 members, CP2K about 5 minutes per 64-atom frame.
# Usage: bash training/al-round2/run.sh [MODEL]   (default: the shipped reference model, which
# must be the round-1 ensemble)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=training/al-round2
RUN=${RUN:-runs/al2}
MODEL=${1:-mlff_ins/resources/si/reference_model}
F=$HERE/frames_unlabelled.xyz
mkdir -p "$RUN"

if [ ! -f $F ]; then
  python - "$MODEL" <<'PY'
import sys
from mlff_ins.model.calculator import read_bundle
b = read_bundle(sys.argv[1])
files = b.get("training_data", {}).get("files") or [b.get("training_data", {}).get("file", "")]
if len(b["members"]) < 2 or not any("al1" in str(f) for f in files):
    sys.exit(f"{sys.argv[1]}: not the round-1 ensemble (needs several members trained with "
             f"si_cp2k_pbe_al1.xyz); give the model as the first argument")
PY
  python - "$RUN" <<'PY'
import sys
from ase.build import bulk
from ase.io import read, write
run = sys.argv[1]
write(f"{run}/si64.xyz", bulk("Si", "diamond", a=5.466, cubic=True) * (2, 2, 2))
vac = next(a for a in read("mlff_ins/resources/si/si_frames_unlabelled.xyz", ":")
           if a.info.get("config_type") == "vacancy")
write(f"{run}/vac63.xyz", vac)
PY
  md() { nice -n 10 mlff-ins md "$@" --model "$MODEL" --resume; }
  md "$RUN/si64.xyz" --protocol training/al-round1/melt_quench_64.yaml --seed 21 \
     -o "$RUN/asi64.h5md"
  md "$RUN/si64.xyz" -T 2500 --dt 1 --steps 3000 --every 20 --seed 22 -o "$RUN/liquid_2500K.h5md"
  md "$RUN/asi64.h5md" -T 900 --dt 2 --steps 2000 --every 10 --seed 23 -o "$RUN/asi64_900K.h5md"
  md "$RUN/vac63.xyz" -T 1200 --dt 2 --steps 2000 --every 10 --seed 24 -o "$RUN/vac63_1200K.h5md"
  sel() { mlff-ins select "$@" --top 2; }
  sel "$RUN/asi64.h5md" --stage melt --config-type liquid_al2_2000K -o "$RUN/sel_melt.xyz"
  sel "$RUN/asi64.h5md" --stage quench --config-type amorphous_al2_quench -o "$RUN/sel_quench.xyz"
  sel "$RUN/asi64.h5md" --stage production --config-type amorphous_al2_300K \
      -o "$RUN/sel_300K.xyz"
  sel "$RUN/liquid_2500K.h5md" --config-type liquid_al2_2500K -o "$RUN/sel_2500K.xyz"
  sel "$RUN/asi64_900K.h5md" --config-type amorphous_al2_900K -o "$RUN/sel_900K.xyz"
  sel "$RUN/vac63_1200K.h5md" --config-type vacancy_al2_1200K -o "$RUN/sel_vac.xyz"
  python - "$RUN" "$F" <<'PY'
import sys
from ase.io import read, write
from mlff_ins.atomic_io import atomic_path
run, out = sys.argv[1], sys.argv[2]
frames = [a for name in ("melt", "quench", "300K", "2500K", "900K", "vac")
          for a in read(f"{run}/sel_{name}.xyz", ":")]
with atomic_path(out) as tmp:
    write(tmp, frames, format="extxyz")
print(f"{out}: {len(frames)} frames, max force spread "
      + ", ".join(f"{a.info['config_type']} {a.info['max_force_std']:.2f}" for a in frames)
      + " eV/Å")
PY
fi

# CP2K with the settings of the embedded data set, frame by frame (resumes)
nice -n 19 mlff-ins label $F --calculator configs/label/cp2k_si.yaml \
    -o mlff_ins/resources/si/si_cp2k_pbe_al2.xyz
