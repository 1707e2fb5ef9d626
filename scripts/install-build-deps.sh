#!/usr/bin/env bash
# scripts/install-build-deps.sh - what building Portwarden needs beyond Rust,
# as root, idempotently: protoc, for the containerd and CRI gRPC bindings,
# and libpcap, whose compiler turns tcpdump filter expressions into BPF.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS="protobuf-compiler libpcap-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
command -v protoc >/dev/null || { echo "install-build-deps: protoc still missing" >&2; exit 1; }
