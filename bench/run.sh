#!/usr/bin/env bash
# bench/run.sh - every benchmark, each printing ratios against a peer measured
# in the same run. As root; brings up the testbed and builds in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-build-deps.sh
eval "$(bash scripts/testbed-up.sh)"
export CRI_SOCK DOCKER_SOCK TESTBED_BUSYBOX_IMAGE TESTBED_DOCKER_NETWORK DOCKER_HOST="unix://$DOCKER_SOCK"
cargo build --release --locked --bin portwarden
python3 bench/ps.py --portwarden target/release/portwarden "$@"
python3 bench/prestart.py --portwarden target/release/portwarden
cargo run --release --locked -q -p portwarden-tests --example discovery
cargo build --release --locked -q -p portwarden-tests --example pktgen
python3 bench/capture.py
bash scripts/install-test-tools.sh
cargo build --release --locked -q --bins -p portwarden -p portwarden-logs
cargo build --release --locked -q -p portwarden-logs --examples
python3 bench/logs.py
bash scripts/install-suricata.sh
python3 bench/nids.py
bash scripts/build-image.sh
python3 bench/idle.py
python3 bench/memory.py
# 2000 containers (Docker and CRI pods) come and go under capture, logs and
# detection: RSS, fds and threads back at their baseline, every line seen.
cargo build --release --locked -q -p portwarden-tests --example soak
target/release/examples/soak --containers 2000
