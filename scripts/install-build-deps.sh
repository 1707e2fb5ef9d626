#!/usr/bin/env bash
# scripts/install-build-deps.sh - what building Portwarden needs beyond Rust,
# as root, idempotently: protoc, for the containerd and CRI gRPC bindings,
# and libpcap, whose compiler turns tcpdump filter expressions into BPF.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="protobuf-compiler libpcap-dev"
bash "$(dirname "$0")/apt-install.sh" $PKGS
command -v protoc >/dev/null || { echo "install-build-deps: protoc still missing" >&2; exit 1; }
