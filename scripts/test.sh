#!/usr/bin/env bash
# scripts/test.sh - the whole test suite on a fresh Debian machine, as root.
# Installs what the tests need (through testbed-up.sh: containerd, dockerd,
# CNI, busybox images), starts the daemons, builds, and runs every test:
# unit tests, doctests, and the integration tests against the real daemons.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (it starts dockerd and containerd)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found; install Rust first" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

echo "== build dependencies" >&2
bash scripts/install-build-deps.sh

echo "== test tools" >&2
bash scripts/install-test-tools.sh

echo "== suricata (bookworm-backports)" >&2
bash scripts/install-suricata.sh

echo "== deploy manifests (offline)" >&2
bash scripts/validate-deploy.sh

echo "== testbed" >&2
eval "$(bash scripts/testbed-up.sh)"
export CONTAINERD_SOCK CRI_SOCK DOCKER_SOCK TESTBED_BUSYBOX_IMAGE TESTBED_PAUSE_IMAGE TESTBED_DOCKER_NETWORK TESTBED_LOG_DIR

echo "== podman (its API service, as a user starts it)" >&2
eval "$(bash scripts/podman-up.sh)"
export PODMAN_SOCK TESTBED_PODMAN_NETWORK

echo "== CRI-O (../shared/crio, when beside the checkout)" >&2
if [ -f ../shared/crio/up.sh ]; then
  eval "$(bash ../shared/crio/up.sh)"
  export CRIO_SOCK
else
  echo "scripts/test.sh: ../shared/crio not found; CRI-O tests skipped" >&2
fi

echo "== build" >&2
# The integration tests run the `portwarden` binary, so build it first.
cargo build --workspace --all-targets --locked

echo "== tests" >&2
cargo test --workspace --locked --no-fail-fast

echo "== detection fidelity (smoke subset of ../shared/fidelity)" >&2
# Real traffic from Suricata's own test suite, replayed into a container
# while `portwarden run` watches it; every case must give exactly the alerts
# offline Suricata gives (bench/fidelity.py; the whole corpus is a benchmark).
if [ -d ../shared/fidelity/corpus ]; then
  python3 bench/fidelity.py --smoke
else
  echo "scripts/test.sh: ../shared/fidelity/corpus not found; fidelity smoke skipped" >&2
fi

echo "== soak, short: 100 containers come and go (tests/examples/soak.rs)" >&2
# Docker containers and CRI pods, some dying during attach, vanishing
# before inspect, or losing their log file while it is read, under capture,
# logs and detection. Asserts every line arrived once and attributed, every
# container captured, no resume point of a removed container kept, fds and
# threads back at their baseline; never times (bench/run.sh runs N = 2000).
target/debug/examples/soak --containers 100 --settle 30 --check
