#!/usr/bin/env bash
# scripts/run.sh - build and run the agent with its defaults on this host, as
# root: it finds the runtime sockets itself and watches every container until
# SIGINT or SIGTERM. Extra arguments go to `portwarden run`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/run.sh: run as root (runtime sockets and /proc need it)" >&2; exit 1; }
bash scripts/install-build-deps.sh
cargo build --release --locked --bins -p portwarden -p portwarden-logs
exec target/release/portwarden run "$@"
