#!/usr/bin/env bash
# Rewrite every sample in docs/samples/ (the commands listed in README.md there); run from anywhere.
set -uo pipefail
cd "$(dirname "$0")/../.."
export ARCHSCAN_FIXED_TIME=2026-01-01T00:00:00+00:00 ARCHSCAN_NO_PROGRESS=1
S=docs/samples
archscan scan examples/paper_zoo.py:cnn6_d --input-shape 3,32,32 --fail-on partial \
  --format text:$S/cnn6_d.txt --format json:$S/cnn6_d.json --format sarif:$S/cnn6_d.sarif \
  --format junit:$S/cnn6_d.junit.xml --format markdown:$S/cnn6_d.md --format html:$S/cnn6_d.html 2>/dev/null
[ $? -eq 1 ] || { echo "expected exit 1 (gate failed) for cnn6_d --fail-on partial" >&2; exit 2; }
archscan scan examples/paper_zoo.py:cnn6 --input-shape 3,32,32 --baseline $S/cnn6_d.json --quiet \
  > $S/baseline_regression.txt
[ $? -eq 1 ] || { echo "expected exit 1 (regression) for cnn6 against the cnn6_d baseline" >&2; exit 2; }
archscan compare examples/paper_zoo.py:cnn6 examples/paper_zoo.py:cnn6_d --input-shape 3,32,32 \
  -o $S/compare_cnn6_cnn6_d.txt || exit 2
archscan compare examples/paper_zoo.py:cnn6 examples/paper_zoo.py:cnn6_d --input-shape 3,32,32 \
  --format json -o $S/compare_cnn6_cnn6_d.json || exit 2
archscan scan examples/paper_zoo.py:cnn_c4 --input-shape 3,32,32 --fail-on leaks --suggest on-fail \
  --format text:$S/cnn_c4_suggest.txt --format markdown:$S/cnn_c4_suggest.md \
  --format github:$S/cnn_c4_suggest.github.txt --format html:$S/cnn_c4_suggest.html 2>/dev/null
[ $? -eq 1 ] || { echo "expected exit 1 (gate failed) for cnn_c4 --fail-on leaks" >&2; exit 2; }
archscan suggest examples/paper_zoo.py:cnn_c4 --input-shape 3,32,32 --fail-on leaks > $S/cnn_c4_suggest_all.txt \
  || exit 2
echo "samples written to $S"
