#!/usr/bin/env python3
"""bench/nids.py - intrusion detection: latency, mirror CPU, sustained rate.

1. Latency: a test container opens 1,000 TCP connections carrying a payload
   a rule matches; each alert's packet time (EVE `timestamp`) is compared
   with the moment the enriched alert reaches `portwarden run`'s stdout.
   Median and p99.
2. Mirror cost and rate: UDP frames from `pktgen` into a veth pair whose far
   end sits in a namespace of our own, where `portwarden run` captures its
   own namespace (runtimes off) and mirrors into a managed Suricata (a pcap
   stream through a named pipe). Same traffic, same rates, three ways: agent
   with the mirror, agent without (capture only: the difference is the
   mirror's CPU), and Suricata reading the interface directly (the peer).
   Reports the agent's and Suricata's CPU per million frames, their ratio,
   and what was lost at each rate (mirror drops vs the direct Suricata's
   kernel drops).

As root, with the testbed up and `cargo build --release --bins -p portwarden`
plus `cargo build --release -p portwarden-tests --example pktgen` done.
"""
import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time

from common import cpu_seconds, sh, veth_setup, veth_teardown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PW = os.path.join(ROOT, "target/release/portwarden")
PKTGEN = os.path.join(ROOT, "target/release/examples/pktgen")
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")
NS, A, B = "pwnids", "pwn-a", "pwn-b"
RULE = 'alert tcp any any -> any any (msg:"bench payload"; flow:established; content:"PORTWARDEN-BENCH"; sid:9100001; rev:1;)\n'


def eve_time(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def latency(count):
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "bench.rules"), "w") as f:
        f.write(RULE)
    conf = os.path.join(d, "pw.toml")
    with open(conf, "w") as f:
        f.write(f'[capture]\nflows = false\n[logs]\nenabled = false\nstate_dir = ""\n[nids]\nbuiltin_rules = false\nrun_dir = "{d}/run"\n')
    agent = subprocess.Popen([PW, "--config", conf, "--log-format", "json", "run", "--rules", d],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrivals = []

    def read_alerts():
        for line in agent.stdout:
            now = time.time()
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event_type") == "alert" and (e.get("container") or {}).get("name") == "pw-bench-cli":
                arrivals.append(now - eve_time(e["timestamp"]))

    def wait_for(text):
        for line in agent.stderr:
            if text in line:
                return
        raise SystemExit(f"agent never said {text!r}")

    threading.Thread(target=read_alerts, daemon=True).start()
    wait_for("Suricata engine started")
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    for name in ("pw-bench-srv", "pw-bench-cli"):
        sh("docker", "rm", "-f", name, check=False)
    # httpd is always listening (a looping `nc -l` refuses connections between two).
    sh("docker", "run", "-d", "--pull", "never", "--network", "tb-internal", "--name", "pw-bench-srv", IMAGE,
       "httpd", "-f", "-p", "80")
    srv = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "pw-bench-srv").strip()
    sh("docker", "run", "-d", "--pull", "never", "--network", "tb-internal", "--name", "pw-bench-cli", IMAGE, "sleep", "3600")
    time.sleep(2)
    script = f"i=0; while [ $i -lt {count} ]; do echo PORTWARDEN-BENCH | nc -w 1 {srv} 80; i=$((i+1)); done"
    sh("docker", "exec", "pw-bench-cli", "sh", "-c", script)
    deadline = time.time() + 60
    while len(arrivals) < count and time.time() < deadline:
        time.sleep(0.5)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=60)
    sh("docker", "rm", "-f", "pw-bench-srv", "pw-bench-cli", check=False)
    got = sorted(arrivals)
    if not got:
        print("\n== latency: no alerts arrived")
        return
    p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
    print(f"\n== packet on the wire -> enriched alert on stdout ({len(got)} of {count} alerts)")
    print(f"  median {statistics.median(got) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {got[-1] * 1000:.1f} ms (goal: p99 <= 1000 ms)")


def suricata_pid(agent_pid):
    """The managed Suricata: the agent's child process named Suricata."""
    out = subprocess.run(["pgrep", "-P", str(agent_pid), "-f", "suricata"], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.split() else None


def agent_run(mac, count, rate, mirror, d):
    conf = os.path.join(d, f"pw-{mirror}.toml")
    run_dir = os.path.join(d, f"run-{mirror}")
    with open(conf, "w") as f:
        f.write(f"""[capture]
flows = false
[runtimes.docker]
enabled = false
[runtimes.containerd]
enabled = false
[runtimes.cri]
enabled = false
[runtimes.podman]
enabled = false
[logs]
enabled = false
state_dir = ""
[nids]
enabled = {"true" if mirror else "false"}
builtin_rules = false
rules = "{d}/rules"
run_dir = "{run_dir}"
[api]
socket = "{run_dir}/api.sock"
""")
    agent = subprocess.Popen(["ip", "netns", "exec", NS, PW, "--config", conf, "--log-format", "json", "run"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:
        if ("Suricata engine started" if mirror else "capture attached") in line:
            break
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    time.sleep(1)
    suricata = suricata_pid(agent.pid) if mirror else None
    cpu0 = cpu_seconds(agent.pid)
    scpu0 = cpu_seconds(suricata) if suricata else 0
    sh(PKTGEN, A, mac, str(count), str(rate), "512")
    time.sleep(1)
    cpu = cpu_seconds(agent.pid) - cpu0
    result = {"cpu": cpu, "suricata_cpu": (cpu_seconds(suricata) - scpu0) if suricata else 0}
    if mirror:
        time.sleep(12)  # a Suricata stats event (every 10 s), then ask the agent's API
        status = json.loads(sh(PW, "--config", conf, "status", "--json"))["daemon"]["nids"]
        s = status.get("suricata") or {}
        # Suricata also reads one heartbeat a second: count only what it missed.
        result.update(sent=status["mirror"]["sent"], mirror_dropped=status["mirror"]["dropped"],
                      suricata_packets=s.get("packets", 0),
                      suricata_drops=max(0, status["mirror"]["sent"] - s.get("packets", 0)))
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=60)
    return result


def suricata_direct(mac, count, rate, d):
    logdir = tempfile.mkdtemp(dir=d)
    proc = subprocess.Popen(["ip", "netns", "exec", NS, "suricata", "-i", B, "-k", "none", "-S",
                             os.path.join(d, "rules", "bench.rules"), "-l", logdir,
                             "--set", "outputs.1.eve-log.types.0=stats", "--set", "stats.interval=2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    sh(PKTGEN, A, mac, str(count), str(rate), "512")
    time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    packets = drops = 0
    with open(os.path.join(logdir, "eve.json")) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event_type") == "stats":
                cap = e["stats"].get("capture", {})
                packets, drops = cap.get("kernel_packets", packets), cap.get("kernel_drops", drops)
    return {"suricata_packets": packets, "suricata_drops": drops}


def mirror_bench(count, rates):
    d = tempfile.mkdtemp()
    os.makedirs(os.path.join(d, "rules"))
    with open(os.path.join(d, "rules", "bench.rules"), "w") as f:
        f.write(RULE)
    mac = veth_setup(NS, A, B)
    rows = []
    try:
        for rate in rates:
            with_mirror = agent_run(mac, count, rate, True, d)
            without = agent_run(mac, count, rate, False, d)
            direct = suricata_direct(mac, count, rate, d)
            rows.append((rate, with_mirror, without, direct))
    finally:
        veth_teardown(NS, A)
    print(f"\n== mirror: {count} UDP frames of 512 bytes per run, captured in a namespace of our own")
    print(f"  {'offered pps':>11} {'agent cpu s/Mpkt':>17} {'capture only':>13} {'mirror cost':>12}"
          f" {'suricata cpu':>13} {'mirror/suricata':>16}"
          f" {'mirror drops':>13} {'suricata drops (direct)':>24}")
    for rate, w, wo, dr in rows:
        per = lambda cpu: cpu / count * 1e6
        mirror_cost = per(w['cpu'] - wo['cpu'])
        ratio = mirror_cost / per(w['suricata_cpu']) if w['suricata_cpu'] else float("nan")
        print(f"  {rate if rate else 'top':>11} {per(w['cpu']):>17.3f} {per(wo['cpu']):>13.3f} {mirror_cost:>12.3f}"
              f" {per(w['suricata_cpu']):>13.3f} {ratio:>16.2f}"
              f" {w['mirror_dropped']:>13} of {w['sent']:<9} {dr['suricata_drops']:>12} of {dr['suricata_packets']:<9}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument("--count", type=int, default=500_000)
    ap.add_argument("--rates", default="50000,100000,200000")
    ap.add_argument("--no-latency", action="store_true", help="only the mirror runs")
    a = ap.parse_args()
    if not a.no_latency:
        latency(a.alerts)
    mirror_bench(a.count, [int(r) for r in a.rates.split(",")])


if __name__ == "__main__":
    main()
