#!/usr/bin/env bash
# The test command: formatting, lints, then every test (unit, integration, doc).
# Docker tests need a running engine and the base image (.ci/run prepares both); outside CI
# they say loudly that they are skipped when no engine answers.
#
# The tests run under cargo-nextest when it is installed (the machines and CI have it): every
# test in its own process, the long loop tests started first and overlapping with the short
# ones (.config/nextest.toml). The two modules whose tests share one expensive fixture run in
# one process with cargo test, and nextest does not run doc tests, so `cargo test --doc` follows.
# Without nextest, plain `cargo test` runs the same tests, one binary after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --check
cargo clippy --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  profile=default
  if [ "${CI:-}" = true ]; then profile=ci; fi
  cargo nextest run --profile "$profile"
  cargo test --test it -- report:: mine_demo::
  cargo test --doc
else
  echo "test.sh: cargo-nextest is not installed; running cargo test" >&2
  cargo test
fi
