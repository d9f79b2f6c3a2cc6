#!/usr/bin/env bash
# Validate a pull request as a git-harness proposal against its base, and keep one comment on the
# pull request (or merge request) with the gate report, updated on every push.
#
# The pull request's changes, merged onto its base, become one proposal commit on the base
# (`harness/proposals/0/pr-<N>`); `git harness validate` gates it against the base on held_in and
# validation. The script exits with the gate's code, so the CI check's status is the verdict:
#   0 accept, 1 reject, 3 indecisive, 125 could not test (infrastructure), 2 usage or conflict.
#
# Environment:
#   HARNESS_BASE     base revision, e.g. origin/main                      (required)
#   HARNESS_PR       pull/merge request number                            (required)
#   HARNESS_HEAD     head revision                                        (default: HEAD)
#   HARNESS_REMOTE   remote holding refs/harness/* and the notes          (default: origin)
#   HARNESS_COMMENT  file the comment body is written to                  (default: harness-comment.md)
#   HARNESS_POST     where the comment goes: github | gitlab | none       (default: none)
#   HARNESS_BIN      how to call git-harness                              (default: git-harness)
#   HARNESS_GATE     --gate value passed to validate                      (default: the experiment's)
#   github: GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL (set by GitHub Actions)
#   gitlab: GITLAB_TOKEN (a token with the api scope), CI_API_V4_URL, CI_PROJECT_ID (set by GitLab)
# Posting needs curl and python3.
set -uo pipefail

marker='<!-- git-harness-validate -->'
base="${HARNESS_BASE:?set HARNESS_BASE to the base revision, e.g. origin/main}"
pr="${HARNESS_PR:?set HARNESS_PR to the pull request number}"
head="${HARNESS_HEAD:-HEAD}"
remote="${HARNESS_REMOTE:-origin}"
comment="${HARNESS_COMMENT:-harness-comment.md}"
post="${HARNESS_POST:-none}"
bin="${HARNESS_BIN:-git-harness}"

die() { # code message
  echo "validate-pr: $2" >&2
  exit "$1"
}

case "$pr" in
  '' | *[!0-9]*) die 2 "HARNESS_PR must be a number, not \`$pr\`" ;;
esac
case "$post" in
  github | gitlab | none) ;;
  *) die 2 "HARNESS_POST must be github, gitlab or none, not \`$post\`" ;;
esac

# The lineage's evidence: runs (the cache is rebuilt from them), notes, rejected proposals.
if git remote get-url "$remote" >/dev/null 2>&1; then
  git fetch -q "$remote" '+refs/harness/*:refs/harness/*' '+refs/notes/harness:refs/notes/harness' 2>/dev/null ||
    echo "validate-pr: no harness refs on $remote yet; the base is evaluated from scratch" >&2
fi

base_commit=$(git rev-parse --verify -q "$base^{commit}") || die 2 "base \`$base\` is not a commit"
head_commit=$(git rev-parse --verify -q "$head^{commit}") || die 2 "head \`$head\` is not a commit"

# git harness gates against main: in a CI checkout (detached HEAD) point the local main at the
# base; a checked-out main elsewhere than the base is left alone.
# CI machines often have no git identity; the candidate commit and the records need one.
if ! git var GIT_COMMITTER_IDENT >/dev/null 2>&1; then
  export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-git-harness CI}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-ci@git-harness.invalid}"
  export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-git-harness CI}" GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-ci@git-harness.invalid}"
fi

current=$(git symbolic-ref -q --short HEAD || true)
if [ "$current" = main ]; then
  [ "$(git rev-parse HEAD)" = "$base_commit" ] ||
    die 2 "main is checked out at another commit than the base; run from a detached checkout"
else
  git update-ref refs/heads/main "$base_commit"
fi

tree=$(git merge-tree --write-tree "$base_commit" "$head_commit" 2>/dev/null) ||
  die 2 "the pull request does not merge cleanly into $base; rebase it"
tree=$(printf '%s\n' "$tree" | head -n 1)
if [ "$tree" = "$(git rev-parse "$base_commit^{tree}")" ]; then
  die 2 "the pull request changes nothing against $base"
fi

# One commit on the base, dated like the head: the same head gives the same candidate, so a
# re-run finds its earlier validation record.
subject=$(git log -1 --format=%s "$head_commit")
surfaces=$(git diff --name-only "$base_commit" "$tree" | sed 's/^/Harness-Surface: /')
head_date=$(git log -1 --format=%cI "$head_commit")
candidate=$(
  GIT_AUTHOR_DATE="$head_date" GIT_COMMITTER_DATE="$head_date" \
    git commit-tree "$tree" -p "$base_commit" \
    -m "$subject" \
    -m "Pull request #$pr, head $head_commit, validated as a proposal on $base_commit." \
    -m "$surfaces"
) || die 2 "cannot write the candidate commit"
proposal="0/pr-$pr"
git update-ref "refs/heads/harness/proposals/$proposal" "$candidate"

args=(validate "$proposal" --format markdown)
[ -n "${HARNESS_GATE:-}" ] && args+=(--gate "$HARNESS_GATE")
report=$(mktemp)
errors=$(mktemp)
trap 'rm -f "$report" "$errors"' EXIT
"$bin" "${args[@]}" >"$report" 2>"$errors"
code=$?
cat "$errors" >&2

case "$code" in
  0) status="accept" ;;
  1) status="reject" ;;
  3) status="indecisive" ;;
  125) status="could not test (infrastructure)" ;;
  *) status="error (exit $code)" ;;
esac
{
  echo "$marker"
  if [ -s "$report" ]; then
    cat "$report"
  else
    echo "### git harness validate \`$proposal\`: $status"
    echo
    echo '```'
    tail -n 30 "$errors"
    echo '```'
  fi
  echo
  echo "<sub>head \`$head_commit\` · exit $code ($status)</sub>"
} >"$comment"

api_json() { # stdin: body text -> {"body": ...}
  python3 -c 'import json, sys; print(json.dumps({"body": sys.stdin.read()}))'
}
find_comment() { # stdin: JSON list of comments -> the id of ours, or nothing
  python3 -c '
import json, sys
marker = sys.argv[1]
for c in json.load(sys.stdin):
    if marker in (c.get("body") or ""):
        print(c["id"])
        break
' "$marker"
}

posted=0
case "$post" in
  github)
    : "${GITHUB_TOKEN:?set GITHUB_TOKEN to post the comment}" "${GITHUB_REPOSITORY:?}"
    api="${GITHUB_API_URL:-https://api.github.com}/repos/$GITHUB_REPOSITORY"
    auth=(-H "Authorization: Bearer $GITHUB_TOKEN" -H "Accept: application/vnd.github+json" -H "Content-Type: application/json")
    id=$(curl -fsS "${auth[@]}" "$api/issues/$pr/comments?per_page=100" | find_comment) || posted=1
    if [ "$posted" = 0 ] && [ -n "$id" ]; then
      api_json <"$comment" | curl -fsS -o /dev/null -X PATCH "${auth[@]}" --data-binary @- \
        "$api/issues/comments/$id" || posted=1
    elif [ "$posted" = 0 ]; then
      api_json <"$comment" | curl -fsS -o /dev/null -X POST "${auth[@]}" --data-binary @- \
        "$api/issues/$pr/comments" || posted=1
    fi
    ;;
  gitlab)
    : "${GITLAB_TOKEN:?set GITLAB_TOKEN (api scope) to post the comment}" "${CI_API_V4_URL:?}" "${CI_PROJECT_ID:?}"
    api="$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$pr/notes"
    auth=(-H "PRIVATE-TOKEN: $GITLAB_TOKEN" -H "Content-Type: application/json")
    id=$(curl -fsS "${auth[@]}" "$api?per_page=100" | find_comment) || posted=1
    if [ "$posted" = 0 ] && [ -n "$id" ]; then
      api_json <"$comment" | curl -fsS -o /dev/null -X PUT "${auth[@]}" --data-binary @- "$api/$id" || posted=1
    elif [ "$posted" = 0 ]; then
      api_json <"$comment" | curl -fsS -o /dev/null -X POST "${auth[@]}" --data-binary @- "$api" || posted=1
    fi
    ;;
esac
[ "$posted" = 0 ] || echo "validate-pr: could not post the comment to $post; it is in $comment" >&2

exit "$code"
