#!/usr/bin/env bash
# scripts/install-test-tools.sh - the real clients and peers the tests and
# benchmarks use, from Debian packages. As root; idempotent.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# tshark reads the pcapng the tests write; capsh runs the agent without a
# capability; rsyslog (with its TLS driver, rsyslog-gnutls) receives the
# remote-syslog output; logger (bsdutils),
# unshare (util-linux) and gzip are real clients and tools of the log tests;
# GNU time measures the benchmarks' peers; openssl makes the API's mTLS test
# certificates; tcpreplay, ethtool and iproute2 drive the detection-fidelity
# harness (bench/fidelity.py: replay into a container's veth, offloads off).
# prometheus (promtool and the server) checks and scrapes /metrics.
bash "$(dirname "$0")/apt-install.sh" tshark libcap2-bin rsyslog rsyslog-gnutls bsdutils util-linux gzip time openssl tcpreplay ethtool iproute2 python3 prometheus

# The OTLP receiver of the log-output tests (tests/otlp/receiver.py) runs
# on the official protos (opentelemetry-proto) and grpcio from PyPI, in a
# venv of its own so the system's Python stays untouched.
OTLP_VENV=/opt/portwarden-tests/otlp-venv
if ! "$OTLP_VENV/bin/python" -c 'import grpc, opentelemetry.proto.collector.logs.v1' 2>/dev/null; then
  bash "$(dirname "$0")/apt-install.sh" python3-venv
  python3 -m venv "$OTLP_VENV"
  "$OTLP_VENV/bin/pip" install --quiet --disable-pip-version-check \
    'grpcio==1.85.4' 'opentelemetry-proto==1.45.2' 'protobuf==7.36.2'
fi
