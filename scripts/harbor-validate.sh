#!/usr/bin/env bash
# Validate task suites with Harbor's own task model (PyPI `harbor`, which needs Python >= 3.12).
#
#   scripts/harbor-validate.sh [SUITE_DIR...]      (default: fixtures/suites/demo)
#
# Installs harbor into a throw-away virtualenv, then loads every task directory's task.toml
# through `harbor.models.task.config.TaskConfig` (pydantic: unknown network modes and wrong
# types are errors). Prints "N tasks: valid under Harbor's task schema" or the failures; exits
# non-zero on any failure, 0 with a "skipped" line when this Python is older than 3.12 (CI runs
# it whenever `python3 --version` is 3.12 or later).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    echo "harbor-validate: skipped ($("$PY" --version 2>&1 || echo "no $PY"); Harbor needs Python >= 3.12)"
    exit 0
fi
[ "$#" -gt 0 ] || set -- "$ROOT/fixtures/suites/demo"

VENV="$(mktemp -d)"
trap 'rm -rf "$VENV"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q harbor

"$VENV/bin/python" - "$@" <<'PY'
import pathlib
import sys
import tomllib

from harbor.models.task.config import TaskConfig

failures, n = [], 0
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
if failures:
    print("\n".join(failures))
    print(f"{len(failures)} of {n} tasks fail Harbor's task schema")
    sys.exit(1)
print(f"{n} tasks: valid under Harbor's task schema")
PY
