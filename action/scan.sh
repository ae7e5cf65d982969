#!/usr/bin/env bash
# The scan step of action.yml (also runnable by hand): archscan scan with the gate, writing text to the
# log, SARIF, JUnit, JSON and the Markdown step summary.  It never fails itself: it records archscan's
# exit code (0 pass, 1 gate failed, 2 input or trace error, 3 internal error) in $GITHUB_OUTPUT so that the SARIF upload
# still runs, and the action's last step exits with it.
#
# Inputs (environment): INPUT_MODEL, INPUT_INPUT_SHAPE, INPUT_FAIL_ON, INPUT_FAIL_UNDER, INPUT_BASELINE,
# INPUT_ARGS (extra arguments, split on spaces), INPUT_OUTPUT_DIR (default archscan-results).
set -uo pipefail
out="${INPUT_OUTPUT_DIR:-archscan-results}"
mkdir -p "$out"
rm -f "$out/archscan.sarif" "$out/summary.md" "$out/junit.xml" "$out/report.json" "$out/stderr.txt" "$out/annotations.txt"
args=(scan)
[ -n "${INPUT_MODEL:-}" ] && args+=("$INPUT_MODEL")
[ -n "${INPUT_INPUT_SHAPE:-}" ] && args+=(--input-shape "$INPUT_INPUT_SHAPE")
[ -n "${INPUT_FAIL_ON:-}" ] && args+=(--fail-on "$INPUT_FAIL_ON")
[ -n "${INPUT_FAIL_UNDER:-}" ] && args+=(--fail-under "$INPUT_FAIL_UNDER")
[ -n "${INPUT_BASELINE:-}" ] && args+=(--baseline "$INPUT_BASELINE")
args+=(--format text --format "sarif:$out/archscan.sarif" --format "markdown:$out/summary.md"
       --format "junit:$out/junit.xml" --format "json:$out/report.json" --format "github:$out/annotations.txt")
read -r -a extra <<< "${INPUT_ARGS:-}"

archscan "${args[@]}" "${extra[@]}" 2> "$out/stderr.txt"
code=$?
cat "$out/stderr.txt" >&2
# workflow commands on stdout: annotations on the diff, with or without code scanning
[ "$code" -le 1 ] && [ -s "$out/annotations.txt" ] && cat "$out/annotations.txt"

summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
if [ -s "$out/summary.md" ] && [ "$code" -le 1 ]; then
  cat "$out/summary.md" >> "$summary"
else
  { echo "## archscan: error (exit $code)"; echo; echo '```'; cat "$out/stderr.txt"; echo '```'; } >> "$summary"
fi
{
  echo "exit-code=$code"
  [ "$code" -le 1 ] && [ -s "$out/archscan.sarif" ] && echo "sarif=$out/archscan.sarif"
  [ -s "$out/report.json" ] && echo "report=$out/report.json"
  echo "summary=$out/summary.md"
} >> "${GITHUB_OUTPUT:-/dev/null}"
exit 0
