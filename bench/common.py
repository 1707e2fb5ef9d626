"""Helpers the benchmark scripts share: running commands, reading a
process's CPU and memory, and the veth pair with one end in a namespace of
our own that the capture and mirror benchmarks send into (no addresses, no
routes: nothing leaves it)."""
import os
import subprocess

CLK = os.sysconf("SC_CLK_TCK")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def cpu_seconds_live_threads(pid):
    """On-CPU time of the live threads of `pid`, from the scheduler's
    nanosecond counters: precise where `cpu_seconds` counts 10 ms ticks.
    Threads that already ended are not counted."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total / 1e9


def status_kib(pid, field):
    """A `/proc/<pid>/status` memory figure in KiB (`VmRSS`, `VmHWM`)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def veth_setup(ns, a, b):
    """`a` here, `b` in namespace `ns`; returns `b`'s MAC."""
    veth_teardown(ns, a)
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns)
    sh("ip", "link", "set", a, "up")
    sh("ip", "-n", ns, "link", "set", b, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    return sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{b}/address").strip()


def veth_teardown(ns, a):
    sh("ip", "link", "del", a, check=False)
    sh("ip", "netns", "del", ns, check=False)
