#!/usr/bin/env bash
# scripts/apt-install.sh PKG... - installs the Debian packages not installed
# yet, as root, idempotently: `apt-get update` only when an install fails,
# and no daemon started by a postinst (there is no init system here, and the
# testbed starts its daemons itself). Output goes to $APT_LOG when set.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log=${APT_LOG:-/dev/null}
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
echo "apt-install: installing:$missing" >&2
prc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; prc=1
fi
trap '[ -z "$prc" ] || rm -f /usr/sbin/policy-rc.d' EXIT
inst() { apt-get install -y -qq --no-install-recommends $missing >>"$log" 2>&1; }
inst || { apt-get update -qq >>"$log" 2>&1 && inst; } || {
  [ "$log" = /dev/null ] || tail -n 20 "$log" >&2
  echo "apt-install: apt-get failed for:$missing" >&2; exit 1; }
