#!/usr/bin/env bash
# The optional pull-request comment step of action.yml (input pr-comment): the Markdown report as one
# comment on the pull request, updated in place on later pushes (found by a hidden marker on its first
# line) so a PR never collects a comment per push.  It never fails the job: where the token may not
# write (a fork's pull request, a workflow without `pull-requests: write`) it says so as a warning.
#
# Inputs (environment): SUMMARY (the Markdown file), PR_NUMBER (empty outside a pull request),
# GITHUB_REPOSITORY, GH_TOKEN (for the gh CLI, preinstalled on GitHub-hosted runners).
set -uo pipefail
marker='<!-- archscan-report -->'
limit=60000                      # GitHub refuses comment bodies over 65536 characters
if [ -z "${PR_NUMBER:-}" ]; then echo "archscan: not a pull request, no comment"; exit 0; fi
if [ ! -s "${SUMMARY:-}" ]; then echo "archscan: no Markdown report to post"; exit 0; fi
body="$(mktemp)"
{
  echo "$marker"
  head -c "$limit" "$SUMMARY"
  [ "$(wc -c < "$SUMMARY")" -gt "$limit" ] && printf '\n\n_(cut at %s characters: the full report is in the step summary)_\n' "$limit"
} > "$body"
api="repos/$GITHUB_REPOSITORY/issues"
existing=$(gh api "$api/$PR_NUMBER/comments" --paginate \
           --jq ".[] | select(.body | startswith(\"$marker\")) | .id" 2>/dev/null | head -n 1)
if [ -n "$existing" ]; then
  gh api -X PATCH "$api/comments/$existing" -F "body=@$body" > /dev/null
else
  gh api -X POST "$api/$PR_NUMBER/comments" -F "body=@$body" > /dev/null
fi
code=$?
rm -f "$body"
if [ "$code" -ne 0 ]; then
  echo "::warning title=archscan::could not comment on the pull request (the token may not write: a fork's pull request, or the workflow lacks permissions: pull-requests: write)"
fi
exit 0
