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
bash "$(dirname "$0")/apt-install.sh" tshark libcap2-bin rsyslog bsdutils util-linux gzip time openssl tcpreplay ethtool iproute2 python3 prometheus
