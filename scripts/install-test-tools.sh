#!/usr/bin/env bash
# scripts/install-test-tools.sh - the real clients and peers the tests and
# benchmarks use, from Debian packages. As root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# tshark reads the pcapng the tests write; capsh runs the agent without a
# capability; rsyslog receives the remote-syslog output; logger (bsdutils),
# unshare (util-linux) and gzip are real clients and tools of the log tests;
# GNU time measures the benchmarks' peers; openssl makes the API's mTLS test
# certificates; tcpreplay, ethtool and iproute2 drive the detection-fidelity
# harness (bench/fidelity.py: replay into a container's veth, offloads off).
# prometheus (promtool and the server) checks and scrapes /metrics.
missing=""
for p in tshark libcap2-bin rsyslog bsdutils util-linux gzip time openssl tcpreplay ethtool iproute2 python3 prometheus; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
fi
