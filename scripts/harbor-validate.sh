#!/usr/bin/env bash
# Validate task suites with Harbor's own task model and linter (PyPI `harbor`, which needs
# Python >= 3.12).
#
#   scripts/harbor-validate.sh [SUITE_DIR|TASK_DIR...]      (default: fixtures/suites/demo)
#
# Every task.toml is loaded through `harbor.models.task.config.TaskConfig` (pydantic: unknown
# network modes and wrong types are errors), and every task directory goes through
# `harbor.lint.lint_task`: its schema rules (invalid-task-config, unknown-config-field,
# invalid-task-files) must find nothing; the other rules' findings (style advice such as
# shared-verifier) are counted and shown, not failed on. Prints "N tasks: valid under Harbor's
# task schema" or the failures; exits non-zero on any failure.
#
# Where Harbor runs:
#   - this machine's python3, when it is 3.12 or later (harbor installed from PyPI into a
#     throw-away virtualenv);
#   - else in a container of $HARBOR_BASE (default git-harness/base:trixie, Debian trixie's
#     Python 3.13) with no network: the wheels of harbor==$HARBOR_VERSION and of what its task
#     model and linter import are downloaded on this host (`pip download --python-version 3.13
#     --only-binary=:all:`) and installed from them. Make that image once with
#       git harness image base --debootstrap trixie --include python3,python3-venv --tag git-harness/base:trixie
#     (a few minutes), or pass --build-base to have this script make it;
#   - else: a "skipped" line and exit 0, or exit 1 when HARBOR_VALIDATE_REQUIRE=1 (CI sets it
#     and builds the trixie image while the tests run, so it cannot pass by skipping).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
HARBOR_VERSION="${HARBOR_VERSION:-0.26.0}"
HARBOR_BASE="${HARBOR_BASE:-git-harness/base:trixie}"
BUILD_BASE=0
skip() {
    echo "harbor-validate: skipped ($1)"
    if [ "${HARBOR_VALIDATE_REQUIRE:-}" = 1 ]; then
        echo "harbor-validate: HARBOR_VALIDATE_REQUIRE=1: a skip is a failure" >&2
        exit 1
    fi
    exit 0
}
if [ "${1:-}" = "--build-base" ]; then
    BUILD_BASE=1
    shift
fi
[ "$#" -gt 0 ] || set -- "$ROOT/fixtures/suites/demo"

read -r -d '' CHECK <<'PY' || true
import collections
import pathlib
import sys
import tomllib

from harbor.models.task.config import TaskConfig
from harbor.lint import LintRule, lint_task

SCHEMA = {LintRule.INVALID_TASK_CONFIG, LintRule.UNKNOWN_CONFIG_FIELD, LintRule.INVALID_TASK_FILES}
failures, advice, n = [], collections.Counter(), 0
for suite in map(pathlib.Path, sys.argv[1:]):
    dirs = [suite] if (suite / "task.toml").is_file() else sorted(p for p in suite.iterdir() if (p / "task.toml").is_file())
    for d in dirs:
        n += 1
        text = (d / "task.toml").read_text()
        try:
            if hasattr(TaskConfig, "model_validate_toml"):
                TaskConfig.model_validate_toml(text)
            else:
                TaskConfig.model_validate(tomllib.loads(text))
        except Exception as e:  # pydantic's ValidationError, a TOML error
            failures.append(f"{d.name}: {e}")
        for f in lint_task(d):
            if f.rule in SCHEMA:
                line = f":{f.line}" if f.line is not None else ""
                failures.append(f"{d.name}/{pathlib.Path(f.path).name}{line}: [{f.rule}] {f.message}")
            else:
                advice[str(f.rule)] += 1
import harbor
version = getattr(harbor, "__version__", "?")
if advice:
    print(f"harbor {version} lint advice (not schema): " + ", ".join(f"{r} x{c}" for r, c in sorted(advice.items())))
if failures:
    print("\n".join(failures))
    print(f"{len(failures)} problem(s) in {n} tasks under Harbor's task schema (harbor {version})")
    sys.exit(1)
print(f"{n} tasks: valid under Harbor's task schema (harbor {version}: TaskConfig and lint schema rules)")
PY

if "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    VENV="$(mktemp -d)"
    trap 'rm -rf "$VENV"' EXIT
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q "harbor==$HARBOR_VERSION"
    exec "$VENV/bin/python" -c "$CHECK" "$@"
fi

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    skip "$("$PY" --version 2>&1 || echo "no $PY"); Harbor needs Python >= 3.12, and no Docker engine answers"
fi
if ! docker image inspect "$HARBOR_BASE" >/dev/null 2>&1; then
    if [ "$BUILD_BASE" = 1 ]; then
        cargo build -q --bin git-harness --manifest-path "$ROOT/Cargo.toml"
        "$ROOT/target/debug/git-harness" image base --debootstrap trixie \
            --include python3,python3-venv --tag "$HARBOR_BASE"
    else
        skip "$("$PY" --version 2>&1); Harbor needs Python >= 3.12, and there is no $HARBOR_BASE image: make it with \`git harness image base --debootstrap trixie --include python3,python3-venv --tag $HARBOR_BASE\` or pass --build-base"
    fi
fi

# What harbor's task model and linter import (harbor's CLI, LLM clients and cloud SDKs are not
# needed for them), as wheels for the image's Python, downloaded here with the host's network
# and TLS setup; the container has no network.
WHEELS="${HARBOR_WHEELS:-$ROOT/target/harbor-wheels/$HARBOR_VERSION}"
NEEDED=(harbor pydantic pydantic_core typing_extensions annotated_types typing_inspection toml
        shortuuid packaging pathspec typer annotated_doc shellingham)
if ! ls "$WHEELS"/harbor-"$HARBOR_VERSION"-*.whl >/dev/null 2>&1; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download -q --python-version 3.13 --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any \
        -d "$WHEELS" "harbor==$HARBOR_VERSION"
fi

mounts=(-v "$WHEELS:/wheels:ro")
args=()
i=0
for s in "$@"; do
    s="$(cd "$s" && pwd)"
    mounts+=(-v "$s:/suites/$i/$(basename "$s"):ro")
    args+=("/suites/$i/$(basename "$s")")
    i=$((i + 1))
done
docker run --rm --network none "${mounts[@]}" "$HARBOR_BASE" bash -c '
    set -e
    python3 -m venv /tmp/harbor
    files=()
    for w in '"${NEEDED[*]}"'; do files+=("$(ls /wheels/"$w"-*.whl | head -n 1)"); done
    /tmp/harbor/bin/pip install -q --no-index --no-deps "${files[@]}"
    exec /tmp/harbor/bin/python -c "$0" "$@"
' "$CHECK" "${args[@]}"
