#!/usr/bin/env bash
# bench train of each member of bundle $1 alone, on frames $2 (single-member views of the bundle)
set -euo pipefail
B=$(realpath "$1"); F=$2; V=runs/width-check/views/$(basename "$B")
n=$(python -c "import json,sys; print(len(json.load(open('$B/bundle.json'))['members']))")
for k in $(seq 0 $((n-1))); do
  d=$V/m$k; rm -rf "$d"; mkdir -p "$d"
  mkdir -p "$d/members"; cp -r "$B/members/member_$k" "$d/members/"
  python - "$B/bundle.json" "$d/bundle.json" "$k" <<'PY'
import json, sys
b = json.load(open(sys.argv[1])); k = int(sys.argv[3])
b["members"] = [b["members"][k]]
json.dump(b, open(sys.argv[2], "w"))
PY
  echo "== member $k"; python -m mlff_ins.bench train --model "$d" --frames "$F" | tail -7
done
