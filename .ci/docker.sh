#!/usr/bin/env bash
# CI steps for Docker, meant to be sourced by .ci/run after
#   apt-get install -y docker.io bubblewrap debootstrap
# It installs nothing and pulls nothing from a registry:
#   1. starts dockerd in the background (pidfile + log) unless a daemon already answers;
#   2. waits until `docker info` answers (timeout with the log tail);
#   3. builds the base image git-harness/base:bookworm with the binary, via debootstrap from
#      the Debian mirror, unless the image exists.
# Functions stay defined for later steps: harness_docker_leftovers checks that no container
# made by the tests remains.
#
# Knobs: HARNESS_BIN (default: $CARGO_TARGET_DIR/debug/git-harness, built if missing),
#        HARNESS_DOCKERD_TIMEOUT (seconds, default 60), HARNESS_DEBIAN_MIRROR (default: the
#        Debian archive of the machine's apt sources),
#        HARNESS_DOCKERD_PIDFILE, HARNESS_DOCKERD_LOG.

harness_dockerd_pidfile="${HARNESS_DOCKERD_PIDFILE:-/var/run/dockerd-ci.pid}"
harness_dockerd_log="${HARNESS_DOCKERD_LOG:-/var/log/dockerd-ci.log}"

harness_docker_start() {
  if docker info >/dev/null 2>&1; then
    echo "docker.sh: a Docker daemon already answers" >&2
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker.sh: dockerd is not installed (apt-get install -y docker.io)" >&2
    return 1
  fi
  echo "docker.sh: starting dockerd (log: $harness_dockerd_log)" >&2
  dockerd --pidfile "$harness_dockerd_pidfile" >"$harness_dockerd_log" 2>&1 &
  local timeout="${HARNESS_DOCKERD_TIMEOUT:-60}" waited=0
  until docker info >/dev/null 2>&1; do
    if [ "$waited" -ge "$timeout" ]; then
      echo "docker.sh: dockerd did not answer within ${timeout}s; last lines of $harness_dockerd_log:" >&2
      tail -n 30 "$harness_dockerd_log" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "docker.sh: dockerd answers after ${waited}s" >&2
}

harness_docker_base() {
  local bin="${HARNESS_BIN:-${CARGO_TARGET_DIR:-target}/debug/git-harness}"
  if [ ! -x "$bin" ]; then
    cargo build --bin git-harness || return 1
  fi
  if docker image inspect git-harness/base:bookworm >/dev/null 2>&1; then
    echo "docker.sh: git-harness/base:bookworm exists" >&2
    return 0
  fi
  "$bin" image base --debootstrap bookworm --include python3 \
    ${HARNESS_DEBIAN_MIRROR:+--mirror "$HARNESS_DEBIAN_MIRROR"}
}

# No container made by the tests (label git-harness.test) may remain.
harness_docker_leftovers() {
  local left
  left="$(docker ps -aq --filter label=git-harness=1 --filter label=git-harness.test)"
  if [ -n "$left" ]; then
    echo "docker.sh: containers left behind by the tests:" >&2
    docker ps -a --filter label=git-harness=1 --filter label=git-harness.test >&2
    return 1
  fi
  echo "docker.sh: no test container left" >&2
}

if ! harness_docker_start || ! harness_docker_base; then
  echo "docker.sh: Docker setup failed" >&2
  return 1 2>/dev/null || exit 1
fi
