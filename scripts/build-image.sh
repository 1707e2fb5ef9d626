#!/usr/bin/env bash
# scripts/build-image.sh [TAG] - build Portwarden's image with the local
# dockerd only: compile in release mode on this (Debian) host, gather the
# binaries and the shared libraries they load into rootfs/, and
# `docker build` the Dockerfile from scratch. Prints the tag and the size.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/portwarden:dev}
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
mkdir -p "$root/usr/bin" "$root/opt/portwarden/fluent-bit" "$root/tmp" "$root/run" "$root/var/lib/portwarden" "$root/etc"
install -m 0755 $bin/portwarden "$root/usr/bin/portwarden"
install -m 0755 $bin/fluent-launch "$root/usr/bin/fluent-launch"
cp "$root/usr/bin/fluent-launch" "$root/opt/portwarden/fluent-bit/fluent-launch"
chmod 1777 "$root/tmp"
# Every shared library either binary loads, at the path the loader expects.
for lib in $(ldd $bin/portwarden $bin/fluent-launch | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/:/usr/bin/portwarden\n' >"$root/etc/passwd"
cp Dockerfile "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >&2
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "$tag $((size / 1024 / 1024)) MiB ($size bytes)"
