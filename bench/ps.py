#!/usr/bin/env python3
"""Issue 2 benchmarks: container discovery latency and `ps` wall time, each
against Docker's own CLI run in the same script. Run through bench/run.sh.

1. Discovery latency: time from `docker run -d` returning until the container
   shows up in (a) `portwarden ps --json` polled in a loop, (b) `docker ps`
   polled in a loop, (c) the log of an already running `portwarden run`.
2. `ps` wall time with N running containers: `portwarden ps --json` against
   `docker ps` (which prints no PIDs) and `docker ps` + `docker inspect` (the
   same information portwarden prints).
3. Memory: peak RSS of `portwarden run` watching those containers.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")
NETWORK = os.environ.get("TESTBED_DOCKER_NETWORK", "tb-internal")
PREFIX = "pw-bench-"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout


def docker_run(name):
    return sh("docker", "run", "-d", "--pull", "never", "--network", NETWORK, "--name", name, IMAGE, "sleep", "3600").strip()


def cleanup():
    ids = sh("docker", "ps", "-aq", "--filter", f"name={PREFIX}").split()
    if ids:
        sh("docker", "rm", "-f", *ids, check=False)


def poll_until(cmd, present, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if present(subprocess.run(cmd, capture_output=True, text=True).stdout):
            return
    raise RuntimeError(f"{cmd[0]} never saw the container")


class AgentLog:
    """`portwarden run --log-format json` in the background; notes when each container-started line arrives."""

    def __init__(self, pw):
        self.proc = subprocess.Popen([pw, "run", "--no-detect", "--log-format", "json"], stderr=subprocess.PIPE, text=True)
        self.seen = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if rec.get("message") == "container started":
                    self.seen[rec["container"]] = time.monotonic()
                if rec.get("message") == "runtime synced":
                    self.seen["synced"] = time.monotonic()
                self.cond.notify_all()

    def wait_for(self, key, deadline=30.0):
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.seen, timeout=deadline):
                raise RuntimeError(f"agent never logged {key}")
            return self.seen[key]

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def ms(values):
    return f"median {statistics.median(values) * 1000:7.1f} ms  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--portwarden", default="target/release/portwarden")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--ps-runs", type=int, default=20)
    args = ap.parse_args()
    pw = args.portwarden
    cleanup()

    agent = AgentLog(pw)
    agent.wait_for("synced")
    lat = {"portwarden ps --json (polled)": [], "docker ps (polled)": [], "portwarden run (event log)": []}
    for i in range(args.rounds):
        name = f"{PREFIX}lat-pw-{i}"
        cid = docker_run(name)
        t1 = time.monotonic()
        poll_until([pw, "ps", "--json"], lambda out: cid in out)
        lat["portwarden ps --json (polled)"].append(time.monotonic() - t1)
        # Negative when the agent logged the start before `docker run` returned.
        lat["portwarden run (event log)"].append(agent.wait_for(cid) - t1)

        name = f"{PREFIX}lat-docker-{i}"
        cid = docker_run(name)
        t1 = time.monotonic()
        poll_until(["docker", "ps", "-q", "--no-trunc"], lambda out: cid in out)
        lat["docker ps (polled)"].append(time.monotonic() - t1)
    cleanup()

    print(f"\n== discovery latency: `docker run -d` returned -> container visible ({args.rounds} rounds)")
    for k, v in lat.items():
        print(f"  {k:32s} {ms(v)}")
    base = statistics.median(lat["docker ps (polled)"])
    print(f"  ratio portwarden ps / docker ps: {statistics.median(lat['portwarden ps --json (polled)']) / base:.2f}")
    lead = sum(1 for v in lat["portwarden run (event log)"] if v <= 0)
    print(f"  `portwarden run` logged the start before `docker run -d` returned in {lead}/{args.rounds} rounds")

    print(f"\n== starting {args.containers} containers")
    ids = [docker_run(f"{PREFIX}many-{i}") for i in range(args.containers)]
    for cid in ids:
        agent.wait_for(cid)

    def timed(cmd, shell=False):
        out = []
        for _ in range(args.ps_runs):
            t = time.monotonic()
            subprocess.run(cmd, shell=shell, check=True, capture_output=True)
            out.append(time.monotonic() - t)
        return out

    walls = {
        "portwarden ps --json": timed([pw, "ps", "--json"]),
        "docker ps": timed(["docker", "ps"]),
        "docker ps + docker inspect": timed("docker inspect $(docker ps -q) >/dev/null", shell=True),
    }
    running = len(json.loads(sh(pw, "ps", "--json")))
    print(f"\n== `ps` wall time with {running} running containers ({args.ps_runs} runs each)")
    for k, v in walls.items():
        print(f"  {k:32s} {ms(v)}")
    p = statistics.median(walls["portwarden ps --json"])
    print(f"  ratio portwarden ps / docker ps: {p / statistics.median(walls['docker ps']):.2f}")
    print(f"  ratio portwarden ps / docker ps + inspect: {p / statistics.median(walls['docker ps + docker inspect']):.2f}")

    print(f"\n== memory: `portwarden run` peak RSS watching {running} containers: {agent.peak_rss_kib() / 1024:.1f} MiB")
    agent.stop()
    cleanup()


if __name__ == "__main__":
    sys.exit(main())
