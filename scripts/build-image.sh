#!/usr/bin/env bash
# scripts/build-image.sh [--minimal] [TAG] - build Portwarden's image with the
# local dockerd only: compile in release mode on this (Debian) host, gather
# the binaries and exactly the shared libraries they load into rootfs/, and
# `docker build` the Dockerfile from scratch. Prints the tag and the size.
#
# The default image holds Suricata 7 (Debian's, from bookworm-backports, as
# scripts/install-suricata.sh installs it) with its classification,
# reference and threshold files and its default suricata.yaml: the agent
# detects with its built-in rules and nothing else installed. --minimal
# leaves Suricata out (log collection and capture only; detection off).
# TAG defaults to localhost/portwarden:dev (localhost/portwarden:dev-minimal).
set -euo pipefail
cd "$(dirname "$0")/.."
minimal=false
if [ "${1:-}" = --minimal ]; then
  minimal=true
  shift
fi
if $minimal; then tag=${1:-localhost/portwarden:dev-minimal}; else tag=${1:-localhost/portwarden:dev}; fi
# PORTWARDEN_PROFILE=debug reuses a debug build (the tests do; bigger image).
profile=${PORTWARDEN_PROFILE:-release}
bash scripts/install-build-deps.sh
if [ "$profile" = release ]; then
  cargo build --release --locked --bins -p portwarden -p portwarden-logs >&2
else
  cargo build --locked --bins -p portwarden -p portwarden-logs >&2
fi
bin=target/$profile
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/bin" "$root/opt/portwarden/fluent-bit" "$root/tmp" "$root/run" "$root/var/lib/portwarden" \
  "$root/etc/portwarden/rules"
install -m 0755 $bin/portwarden "$root/usr/bin/portwarden"
install -m 0755 $bin/fluent-launch "$root/usr/bin/fluent-launch"
cp "$root/usr/bin/fluent-launch" "$root/opt/portwarden/fluent-bit/fluent-launch"
chmod 1777 "$root/tmp"
binaries=("$bin/portwarden" "$bin/fluent-launch")
if ! $minimal; then
  bash scripts/install-suricata.sh >&2
  suricata=$(command -v suricata)
  install -m 0755 "$suricata" "$root/usr/bin/suricata"
  binaries+=("$suricata")
  mkdir -p "$root/etc/suricata" "$root/var/log/suricata" "$root/var/lib/suricata"
  for f in suricata.yaml classification.config reference.config threshold.config; do
    cp /etc/suricata/$f "$root/etc/suricata/$f"
  done
fi
# Every shared library the binaries load, at the path the loader expects.
for lib in $(ldd "${binaries[@]}" | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# The CAs TLS outputs (OTLP, syslog) trust unless their `tls.ca` names others.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/:/usr/bin/portwarden\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
cp Dockerfile "$ctx/Dockerfile"
if $minimal; then
  printf '# No Suricata in this variant.\nENV PORTWARDEN_NO_DETECT=true\n' >>"$ctx/Dockerfile"
fi
docker build -q -t "$tag" "$ctx" >&2
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "$tag $((size / 1024 / 1024)) MiB ($size bytes)"
