#!/usr/bin/env bash
# scripts/install-build-deps.sh - what building Portwarden needs beyond Rust,
# as root, idempotently: protoc, for the containerd and CRI gRPC bindings,
# libpcap, whose compiler turns tcpdump filter expressions into BPF, and
# make and a C compiler, which build the binary's allocator (jemalloc).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="protobuf-compiler libpcap-dev make gcc"
bash "$(dirname "$0")/apt-install.sh" $PKGS
command -v protoc >/dev/null || { echo "install-build-deps: protoc still missing" >&2; exit 1; }
