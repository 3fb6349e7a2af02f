# Shell helpers shared by the active-learning rounds' scripts (training/al-round*/run.sh):
# source it after `cd` to the repository root.

# bash does not pass a SIGTERM on to a foreground child: run a long command in the background
# and forward the signal, so that `kill` of the calling script stops the command too
fwd() {
  "$@" &
  local pid=$!
  trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 143' TERM INT
  wait $pid
  trap - TERM INT
}

# gather OUT PART...: the selections of `mlff-ins select` into one extxyz, written atomically
gather() {
  python - "$@" <<'PY'
import sys
from ase.io import read, write
from mlff_ins.atomic_io import atomic_path
out, parts = sys.argv[1], sys.argv[2:]
frames = [a for p in parts for a in read(p, ":")]
with atomic_path(out) as tmp:
    write(tmp, frames, format="extxyz")
print(f"{out}: {len(frames)} frames, max force spread "
      + ", ".join(f"{a.info['config_type']} {a.info['max_force_std']:.2f}" for a in frames)
      + " eV/Å")
PY
}

# assert_glass TRAJ STRUCTURE_JSON: exit when `mlff-ins structure` found a crystal (the case
# study's test, casestudy_report.not_amorphous: at least 98 % of the atoms 4-fold and a narrow
# bond-angle spread), so that no crystal frames are labelled as amorphous
assert_glass() {
  python - "$1" "$2" <<'PY'
import json, sys
from mlff_ins.casestudy_report import not_amorphous
s = json.load(open(sys.argv[2]))
if not_amorphous(s):
    sys.exit(f"{sys.argv[1]}: the melt-quench left a crystal "
             f"({100 * s['coordination']['fraction_4fold']:.0f} % 4-fold, bond angles spread "
             f"{s['bond_angles']['std_deg']:.1f}°): no amorphous frames to take from it")
PY
}

# labels_complete UNLABELLED LABELLED [...]: exit unless every frame of each UNLABELLED file is
# in its LABELLED file or in the labeller's .rejected.jsonl beside it (a training started on
# part of them could not resume: its data would change under it)
labels_complete() {
  python - "$@" <<'PY'
import sys
from pathlib import Path
from ase.io import read
for todo, done in zip(*[iter(map(Path, sys.argv[1:]))] * 2):
    rejected = done.with_name(done.name + ".rejected.jsonl")
    n_todo = len(read(todo, ":")) if todo.exists() else 1
    n_done = len(read(done, ":")) if done.exists() else 0
    n_rej = len(rejected.read_text().splitlines()) if rejected.exists() else 0
    if n_done + n_rej < n_todo:
        sys.exit(f"{done}: {n_done} of the {n_todo} frames labelled ({n_rej} rejected); finish "
                 f"the labelling first (a training started on part of them could not resume)")
PY
}

# split_test TEST TAG HELD REST: the frames of a training run's test split whose config_type
# contains _TAG_ (an active-learning round's own frames) into HELD, the others into REST
split_test() {
  python - "$@" <<'PY'
import sys
from ase.io import read, write
test, tag, held_path, rest_path = sys.argv[1:]
frames = read(test, ":")
held = [a for a in frames if f"_{tag}_" in a.info.get("config_type", "")]
write(held_path, held)
write(rest_path, [a for a in frames if f"_{tag}_" not in a.info.get("config_type", "")])
print(f"{len(held)} {tag} frames in the test split {test}:",
      ", ".join(a.info["config_type"] for a in held))
PY
}

# last_frame TRAJ.h5md OUT.xyz: the last stored frame of an MD run, as a starting structure
last_frame() {
  [ -f "$2" ] || python - "$1" "$2" <<'PY'
import sys
from ase.io import write
from mlff_ins.data.h5md import frame_count, read_frame
atoms = read_frame(sys.argv[1], frame_count(sys.argv[1]) - 1)
atoms.calc = None
write(sys.argv[2], atoms, format="extxyz")
PY
}

# train_round CONFIG OUT: a round's fine-tune of the reference ensemble into OUT, resumed when
# OUT holds an unfinished run, skipped when it holds a finished one
train_round() {
  local resume=""
  [ -d "$2" ] && resume="--resume"
  [ -f "$2/bundle.json" ] \
    || fwd nice -n 19 mlff-ins train "$1" --parallel-members 3 -o "$2" $resume
}
