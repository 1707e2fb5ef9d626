#!/usr/bin/env bash
# scripts/install-build-deps.sh - what building Portwarden needs beyond Rust,
# as root, idempotently: protoc, for the containerd and CRI gRPC bindings.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
command -v protoc >/dev/null && exit 0
echo "installing protobuf-compiler" >&2
apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null; }
command -v protoc >/dev/null || { echo "install-build-deps: protoc still missing" >&2; exit 1; }
