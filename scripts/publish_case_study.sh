#!/usr/bin/env bash
# Copy a finished case study (`mlff-ins demo --full -o STUDY`) into the repository's
# docs/case-study/: report.md, metrics.json, study.json, timings.json and every PNG, in the
# study's own folder layout so the report's links hold. The spectra files stay out (megabytes);
# examples/si_case_study.sh, with the model and size the report names, regenerates them.
# Usage: bash scripts/publish_case_study.sh STUDY [DEST]   (DEST default docs/case-study)
set -euo pipefail
STUDY=${1:?usage: publish_case_study.sh STUDY [DEST]}
DEST=${2:-$(dirname "$0")/../docs/case-study}
[ -f "$STUDY/report.md" ] && [ -f "$STUDY/metrics.json" ] || {
  echo "$STUDY: no report.md and metrics.json (run the study to its end first)" >&2; exit 2; }
rm -rf "$DEST.new"
mkdir -p "$DEST.new"
(cd "$STUDY" && find . \( -name report.md -o -name metrics.json -o -name study.json \
    -o -name timings.json -o -name '*.png' \) -print0) |
  while IFS= read -r -d '' f; do
    mkdir -p "$DEST.new/$(dirname "$f")"
    cp "$STUDY/$f" "$DEST.new/$f"
  done
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "$DEST: $(find "$DEST" -type f | wc -l) files from $STUDY"
