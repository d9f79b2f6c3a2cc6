#!/usr/bin/env bash
# The test command: formatting, lints, then every test (unit, integration, doc).
# Docker tests need a running engine and the base image (.ci/run prepares both); outside CI
# they say loudly that they are skipped when no engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test
