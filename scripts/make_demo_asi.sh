#!/usr/bin/env bash
# The 64-atom amorphous cell of `mlff-ins demo` (mlff_ins/resources/si/a-si_64_demo.xyz), made by
# the shipped reference model itself: a melt-quench of the 64-atom diamond cell
# (training/al-round1/melt_quench_64.yaml: heat at 2000 K/ps, 2 ps of liquid at 2000 K, quench at
# 250 K/ps to 300 K, 2 ps NPT anneal at 0 GPa, 3 ps at 300 K), then its structure against
# published a-Si. About an hour on 2 cores with a 3-member model; resumes after a kill.
# Usage: bash scripts/make_demo_asi.sh [MODEL]   (default: the shipped reference model)
# RUN=DIR SEED=N choose the run folder and seed: RUN=runs/al2 SEED=21 takes the melt-quench that
# training/al-round2/run.sh ran with the same protocol (a finished run resumes to nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-mlff_ins/resources/si/reference_model}
RUN=${RUN:-runs/demo-asi}
SEED=${SEED:-7}
mkdir -p "$RUN"
[ -f "$RUN/si64.xyz" ] || python - "$RUN/si64.xyz" <<'EOF'
import sys
from ase.build import bulk
from ase.io import write
write(sys.argv[1], bulk("Si", "diamond", a=5.466, cubic=True) * (2, 2, 2))
EOF
nice -n 10 mlff-ins md "$RUN/si64.xyz" --model "$MODEL" \
    --protocol training/al-round1/melt_quench_64.yaml --seed "$SEED" -o "$RUN/asi64.h5md" --resume
mlff-ins structure "$RUN/asi64.h5md" --stage production -o "$RUN/structure"
python - "$RUN" "$MODEL" "$SEED" <<'EOF'
import json, sys
from pathlib import Path
from ase.io import write
from mlff_ins.casestudy_report import not_amorphous
from mlff_ins.data.h5md import frame_count, read_frame
run, model, seed = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rep = json.loads((run / "structure.json").read_text())
if not_amorphous(rep):
    sys.exit(f"{run}/asi64.h5md: the quenched cell is still a crystal; not written")
atoms = read_frame(run / "asi64.h5md", frame_count(run / "asi64.h5md") - 1)
atoms.calc = None
c = rep["coordination"]
atoms.info = {"note": f"64-atom a-Si: melt-quench of diamond Si with {model} "
                      f"(training/al-round1/melt_quench_64.yaml, seed {seed}), last frame",
              "mean_coordination": round(c["mean_coordination"], 3),
              "bond_angle_std_deg": round(rep["bond_angles"]["std_deg"], 1)}
out = Path("mlff_ins/resources/si/a-si_64_demo.xyz")
write(out, atoms, format="extxyz")
print(f"{out}: coordination {c['mean_coordination']:.2f} (3-fold {c['fraction_3fold']:.1%}, "
      f"5-fold {c['fraction_5fold']:.1%}), bond angles {rep['bond_angles']['mean_deg']:.1f} ± "
      f"{rep['bond_angles']['std_deg']:.1f} deg")
EOF
