#!/usr/bin/env python3
"""bench/prestart.py - what pre-start attach costs a container's start.

Container start latency (`docker run` until its first line of output) in
three modes, measured in one run and interleaved in rounds so the machine's
noise falls on all of them alike:

- off:       no agent;
- events:    `portwarden run --prestart false` (attach from runtime events);
- prestart:  `portwarden run` (the shim's pid-file read is held until the
             capture is open).

Prints p50/p99 per mode and the delay each agent mode adds to them, and the
agent's own figures for the held reads (from `portwarden status`).

    python3 bench/prestart.py [--portwarden target/release/portwarden] [--runs 30] [--rounds 3]

As root, with the testbed up (scripts/testbed-up.sh). Detection is off in
both agent modes (`--no-detect`): the hold waits for the capture, not for
Suricata, and Suricata's start would only add noise.
"""
import argparse
import json
import os
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")


def start_latency():
    """Seconds from `docker run` to the container's first line."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        ["docker", "run", "--rm", "--pull", "never", "--network", "none", IMAGE, "echo", "first"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = p.stdout.readline()
    took = time.perf_counter() - t0
    p.wait()
    assert line.strip() == b"first", line
    return took


class AgentRun:
    """`portwarden run --no-detect` with a directory of its own."""

    def __init__(self, binary, prestart):
        self.dir = tempfile.mkdtemp(prefix="pw-bench-prestart-")
        config = os.path.join(self.dir, "portwarden.toml")
        with open(config, "w") as f:
            f.write('[logs]\nstate_dir = ""\n[logs.syslog]\nenabled = false\n[logs.forward]\nenabled = false\n'
                    '[capture]\nflows = false\n[metrics]\nenabled = false\n')
        self.env = dict(os.environ,
                        PORTWARDEN_LOCK_FILE=os.path.join(self.dir, "lock"),
                        PORTWARDEN_API_SOCKET=os.path.join(self.dir, "api.sock"))
        self.binary = binary
        self.log = open(os.path.join(self.dir, "stderr"), "w+")
        args = [binary, "--config", config, "--log-format", "json", "run", "--no-detect",
                "--prestart", "true" if prestart else "false"]
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log)
        want = "pre-start attach on" if prestart else "runtime synced"
        deadline = time.time() + 60
        while want not in self.text():
            assert self.proc.poll() is None and time.time() < deadline, self.text()
            time.sleep(0.1)
        time.sleep(1)

    def text(self):
        self.log.seek(0)
        return self.log.read()

    def status(self):
        out = subprocess.run([self.binary, "status", "--json"], env=self.env, capture_output=True, text=True)
        return json.loads(out.stdout)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        subprocess.run(["rm", "-rf", self.dir])


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portwarden", default=os.path.join(ROOT, "target/release/portwarden"))
    ap.add_argument("--runs", type=int, default=30, help="starts per mode per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for _ in range(3):
        start_latency()  # warm the image and the daemons
    modes = ["off", "events", "prestart"]
    took = {m: [] for m in modes}
    held = []
    for r in range(args.rounds):
        for mode in modes:
            agent = AgentRun(args.portwarden, mode == "prestart") if mode != "off" else None
            took[mode] += [start_latency() for _ in range(args.runs)]
            if mode == "prestart":
                held.append(agent.status()["daemon"]["prestart"])
            if agent:
                agent.stop()
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    n = len(took["off"])
    print(f"\ncontainer start latency (`docker run` -> first line), {n} starts per mode:")
    base = {q: percentile(took["off"], q) for q in (0.5, 0.99)}
    for mode, label in zip(modes, ["agent off", "event attach", "pre-start attach"]):
        p50, p99 = percentile(took[mode], 0.5), percentile(took[mode], 0.99)
        added = "" if mode == "off" else f"   added: p50 {1e3 * (p50 - base[0.5]):+.1f} ms, p99 {1e3 * (p99 - base[0.99]):+.1f} ms"
        print(f"  {label:<17} p50 {1e3 * p50:7.1f} ms  p99 {1e3 * p99:7.1f} ms{added}")
    if held:
        total = sum(h.get("held", 0) for h in held)
        late = sum(h.get("late", 0) for h in held)
        attached = sum(h.get("attached", 0) for h in held)
        p50 = max(h.get("answer_p50_us", 0) for h in held)
        p99 = max(h.get("answer_p99_us", 0) for h in held)
        worst = max(h.get("answer_max_us", 0) for h in held)
        print(f"  held pid-file reads: {total} ({attached} attached before start, {late} allowed at the limit); "
              f"held p50 <= {p50} us, p99 <= {p99} us, max {worst} us (bucket bounds, worst round)")


if __name__ == "__main__":
    main()
