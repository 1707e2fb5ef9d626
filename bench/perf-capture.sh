#!/bin/bash
# bench/perf-capture.sh TOOL SIZE COUNT - CPU ticks (and, with PERF=1, a perf
# profile in /tmp/perf.data) of `portwarden capture --host -w /dev/null`
# (TOOL pw) or `tcpdump -w /dev/null` (TOOL td) while pktgen floods a veth
# pair of its own with COUNT frames of SIZE bytes. As root, after
# `cargo build --release -p portwarden --bins` and
# `cargo build --release -p portwarden-tests --example pktgen`. RATE: frames/s
# (0: top speed); PWARGS: more `capture` flags (e.g. --immediate).
set -e
TOOL=${1:-pw}; SIZE=${2:-64}; COUNT=${3:-3000000}; RATE=${RATE:-0}; PWARGS=${PWARGS:-}
ip link del pwp-a 2>/dev/null || true; ip netns del pwperf 2>/dev/null || true
ip netns add pwperf
ip link add pwp-a type veth peer name pwp-b netns pwperf
ip link set pwp-a up; ip -n pwperf link set pwp-b up; ip -n pwperf link set lo up
MAC=$(ip netns exec pwperf cat /sys/class/net/pwp-b/address)
printf '[capture]\nsnaplen = 262144\nring_bytes = 4194304\nring_max_bytes = 4194304\n' > /tmp/pwperf.toml
if [ "$TOOL" = pw ]; then
  ip netns exec pwperf /work/main/target/release/portwarden --config /tmp/pwperf.toml capture --host $PWARGS -w /dev/null 2>/tmp/pwperf.err &
else
  ip netns exec pwperf tcpdump -i pwp-b -n -s 262144 -B 4096 -w /dev/null 2>/tmp/pwperf.err &
fi
PID=$!
sleep 1
if [ -n "$PERF" ]; then perf record -F 1999 -g -p $PID -o /tmp/perf.data 2>/dev/null & PP=$!; sleep 0.5; fi
/work/main/target/release/examples/pktgen pwp-a $MAC $COUNT $RATE $SIZE
sleep 0.5
# On-CPU time of every thread, in ns (precise, unlike the ticks above).
cat /proc/$PID/task/*/schedstat | awk '{ns += $1} END {printf "cpu_ms %.1f\n", ns / 1e6}'
[ -n "$PERF" ] && kill -INT $PP && wait $PP || true
kill -INT $PID; wait $PID || true
tail -2 /tmp/pwperf.err
ip link del pwp-a; ip netns del pwperf
