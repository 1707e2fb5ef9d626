#!/usr/bin/env bash
# podman-up.sh - bring up a REAL Podman (Debian bookworm's 4.3.1) for the Podman runtime adapter's tests,
# as root, idempotently:
#   podman + netavark from Debian, OCI runtime runc (already there from testbed-up.sh), cgroupfs,
#   events to a file, k8s-file logs, overlay storage; an internal network tb-podman (bridge tb-podman0,
#   10.91.0.0/24 (CRI-O's pods use 10.89.0.0/16), host side 10.91.0.1, no NAT, no DNS, no default route in containers) that is also
#   Podman's default network; the testbed busybox/pause images copied from Docker; and the libpod REST
#   API served by `podman system service --time=0 unix:///run/podman/podman.sock`.
# Needs scripts/testbed-up.sh first (dockerd holds the images); never touches dockerd/containerd.
# No registry is ever contacted (pull_policy = "never"). stdout is sourceable KEY=value lines + one
# '#' summary line; progress goes to stderr.
set -euo pipefail

TB_LOG=/var/log/testbed        # daemon + apt logs (shared with testbed-up.sh)
TB_LIB=/var/lib/testbed        # stamps
CC_DIR=/etc/containers
PODMAN_SOCK=/run/podman/podman.sock
BUSYBOX_IMG=localhost/testbed/busybox:1
PAUSE_IMG=localhost/testbed/pause:1
# not 10.88.0.0/16 (tb-cni0), 172.17.0.0/16 (docker0) nor 172.18.0.0/16 (Docker's pool)
NET=tb-podman NET_BRIDGE=tb-podman0 NET_SUBNET=10.91.0.0/24 NET_GW=10.91.0.1
FW_CHAIN=TESTBED-PODMAN
# podman pulls in conmon + golang-github-containers-common; netavark is the network backend
# (with --no-install-recommends, containernetworking-plugins would satisfy podman's dependency
# and Podman would silently fall back to CNI and the package's 87-podman-bridge.conflist)
PKGS="podman netavark runc iptables curl"

export DEBIAN_FRONTEND=noninteractive PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
T0=$EPOCHREALTIME
log() { printf 'podman-up: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$TB_LOG" "$TB_LIB" "$CC_DIR/networks" "${PODMAN_SOCK%/*}"

# ---- 1. packages ----
APT_LOG="$TB_LOG/apt.log" bash "$(dirname "$0")/apt-install.sh" $PKGS || die "apt-get failed"
command -v podman >/dev/null || die "no podman CLI"

# ---- helpers ----
# write stdin to $1; return 0 only when the content changed
put() { local t; t=$(mktemp); cat >"$t"
  if [ -f "$1" ] && cmp -s "$t" "$1"; then rm -f "$t"; return 1; fi
  mv "$t" "$1"; chmod 644 "$1"; }
# PIDs of `podman system service ... $PODMAN_SOCK` (other podman CLI processes are not ours)
service_pids() { local d; for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = podman ] || continue
    tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- "system service .*unix://$PODMAN_SOCK" && echo "${d#/proc/}"
  done; true; }
# SIGTERM one PID, wait up to 20 s, then SIGKILL
stop_pid() { kill "$1" 2>/dev/null || return 0
  for _ in $(seq 200); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }
ping_api() { curl -fsS --max-time 2 --unix-socket "$PODMAN_SOCK" http://d/_ping; }
imgid() { "$@" 2>/dev/null | sed 's/^sha256://'; }

# ---- 2. configs ----
# This VM's root lacks CAP_SYS_RESOURCE: Podman's default rlimits (nofile/nproc 1048576) make runc
# fail with "error setting rlimit type 7 (then 6): operation not permitted". Use the hard limits
# the podman process really has: its own nofile hard limit, and nproc, which podman lowers to 32768
# for itself at start-up.
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cfg_changed=0
put "$CC_DIR/containers.conf" <<EOF && cfg_changed=1 || true
# written by scripts/podman-up.sh (Portwarden testbed)
[containers]
# journald is not running here; k8s-file keeps logs in the container's userdata/ctr.log
log_driver = "k8s-file"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[network]
network_backend = "netavark"
network_config_dir = "$CC_DIR/networks"
# the internal network is the default one, so a container or pod created without --network
# never gets Podman's built-in "podman" network (10.88.0.0/16, NAT: would clash with tb-cni0)
default_network = "$NET"
default_subnet = "$NET_SUBNET"
default_subnet_pools = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
infra_image = "$PAUSE_IMG"
runtime = "runc"
pull_policy = "never"
EOF
put "$CC_DIR/storage.conf" <<EOF && cfg_changed=1 || true
# written by scripts/podman-up.sh (Portwarden testbed)
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
# The network file is written rather than `podman network create`d: Podman 4.3 refuses to create a
# network named like default_network ("already used"), and its CLI cannot name the bridge.
# internal: no NAT, no firewall rules from netavark, no default route in containers.
put "$CC_DIR/networks/$NET.json" <<EOF && cfg_changed=1 || true
{
     "name": "$NET",
     "id": "$(printf %s "$NET" | sha256sum | cut -c1-64)",
     "driver": "bridge",
     "network_interface": "$NET_BRIDGE",
     "created": "2026-01-01T00:00:00Z",
     "subnets": [
          {
               "subnet": "$NET_SUBNET",
               "gateway": "$NET_GW"
          }
     ],
     "ipv6_enabled": false,
     "internal": true,
     "dns_enabled": false,
     "ipam_options": {
          "driver": "host-local"
     }
}
EOF
got=$(podman info --format '{{.Host.NetworkBackend}} {{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Host.EventLogger}} {{.Store.GraphDriverName}}')
[ "$got" = "netavark runc cgroupfs file overlay" ] || die "podman info says '$got'"
got=$(podman network inspect "$NET" --format '{{.Internal}} {{.DNSEnabled}} {{.NetworkInterface}}')
[ "$got" = "true false $NET_BRIDGE" ] || die "network $NET: '$got'"

# ---- 3. keep test traffic on this machine ----
# br_netfilter is on and FORWARD's policy is DROP (dockerd), and netavark adds no rule for an internal
# network: containers on tb-podman0 could not talk to each other. Allow bridge-local forwarding and
# drop the rest. Own chain, jumped to from FORWARD: DOCKER-USER and Docker's chains stay untouched
# (a restarted dockerd puts its jumps above ours; none of its rules matches tb-podman0).
iptables -N "$FW_CHAIN" 2>/dev/null || true
fw() { iptables -C "$FW_CHAIN" "$@" 2>/dev/null || iptables -A "$FW_CHAIN" "$@"; }
fw -i "$NET_BRIDGE" -o "$NET_BRIDGE" -j ACCEPT
fw -i "$NET_BRIDGE" -j DROP
fw -o "$NET_BRIDGE" -j DROP
iptables -C FORWARD -j "$FW_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$FW_CHAIN"
nat_re="$(sed 's/\.0$//; s/\./\\./g' <<<"${NET_SUBNET%/*}")\.|$NET_BRIDGE|NETAVARK|CNI-"
if iptables-save -t nat | grep -E "$nat_re" >&2; then die "a NAT rule for $NET exists (see above)"; fi

# ---- 4. images: the testbed's, copied from Docker (re-imported when Docker's ID differs) ----
for img in "$BUSYBOX_IMG" "$PAUSE_IMG"; do
  have=$(imgid podman image inspect -f '{{.Id}}' "$img" || true)
  if ! want=$(imgid docker image inspect -f '{{.Id}}' "$img"); then
    [ -n "$have" ] || die "$img is not in Docker: run scripts/testbed-up.sh first"
    log "docker has no $img (dockerd down?): keeping podman's ${have:0:12}"; continue
  fi
  [ "$have" = "$want" ] && continue
  log "importing $img into podman"
  docker save "$img" | podman load -q >/dev/null 2>>"$TB_LOG/podman-load.log" || die "podman load $img failed"
  [ -z "$have" ] || podman rmi "$have" >/dev/null 2>&1 || true   # the replaced one, unless in use
done

# ---- 5. the API service (restart only when not running, not answering, or config changed) ----
pids=$(service_pids)
if [ $cfg_changed = 1 ] || [ -z "$pids" ] || [ "$(echo "$pids" | wc -l)" != 1 ] || ! ping_api >/dev/null 2>&1; then
  for p in $pids; do log "stopping pid $p (podman system service)"; stop_pid "$p"; done
  rm -f "$PODMAN_SOCK"
  log "starting podman system service (log $TB_LOG/podman.log)"
  setsid podman system service --time=0 "unix://$PODMAN_SOCK" </dev/null >>"$TB_LOG/podman.log" 2>&1 &
fi
for _ in $(seq 300); do [ "$(ping_api 2>/dev/null)" = OK ] && break; sleep 0.1; done
[ "$(ping_api 2>/dev/null)" = OK ] || { tail -n 30 "$TB_LOG/podman.log" >&2 || true; die "podman API did not answer within 30 s"; }

# ---- 6. report ----
secs=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
cat <<EOF
PODMAN_SOCK=$PODMAN_SOCK
TESTBED_PODMAN_NETWORK=$NET
# podman up in ${secs}s: podman $(podman version --format '{{.Client.Version}}') (libpod API on $PODMAN_SOCK; netavark, runc, cgroupfs, events file, logs k8s-file, overlay) + $NET $NET_SUBNET internal on $NET_BRIDGE (host $NET_GW, no NAT, no DNS)
EOF
