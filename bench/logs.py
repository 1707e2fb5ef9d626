#!/usr/bin/env python3
"""bench/logs.py - log collection against peers, same machine, same run.

  syslog: TCP ingest (newline-framed RFC 3164, 256-byte lines unless
          --line-bytes) into a file, portwarden
          (JSON lines) vs rsyslog's imtcp (RSYSLOG_FileFormat lines);
  docker: a finished container's whole log, `portwarden logs` vs
          `docker logs -f -t`, both to /dev/null (the agent's command
          includes detecting runtimes and listing containers);
  cri:    a CRI log file from its start, portwarden's tailer (encoding each
          record as JSON) vs `tail -n +1 -F`, both to a pipe;
  otlp:   the same syslog ingest into an OTLP/HTTP output (plain and gzip)
          vs the JSON file output: records per CPU second, and bytes per
          record on the wire (a local sink that counts request bodies) or in
          the file.

Prints lines per second, CPU seconds and peak RSS for each, and ratios.
As root, after `cargo build --release --bins -p portwarden -p portwarden-logs
--examples`. Usage: bench/logs.py [--runs 3] [--lines N]
"""
import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time

from common import cpu_seconds, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port






def wait_listening(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def wait_settled(path, lines, timeout=300):
    """Waits until `path` stops growing; returns its mtime (the last write)."""
    deadline = time.time() + timeout
    last, since = -1, time.time()
    while time.time() < deadline:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        if size != last:
            last, since = size, time.time()
        elif time.time() - since > 1.0 and size > 0:
            with open(path, "rb") as f:
                got = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
            if got >= lines:
                return os.stat(path).st_mtime, got
        time.sleep(0.1)
    raise SystemExit(f"{path} never reached {lines} lines")


LINE_BYTES = 256


def syslog_payload(lines):
    """`lines` newline-framed RFC 3164 lines of LINE_BYTES bytes each."""
    head = "<13>Nov 27 13:00:00 benchhost app[42]: message 00000000 "
    pad = "x" * max(0, LINE_BYTES - len(head) - 1)
    return "".join(f"<13>Nov 27 13:00:00 benchhost app[42]: message {i:08d} {pad}\n" for i in range(lines)).encode()


def syslog_agent_conf(port, output, extra=""):
    """An agent that only takes syslog over TCP on `port` into `output`
    (the TOML keys of one [[logs.outputs]]): no runtimes, no capture."""
    return f"""[capture]
enabled = false
[runtimes.docker]
enabled = false
[runtimes.containerd]
enabled = false
[runtimes.cri]
enabled = false
[runtimes.podman]
enabled = false
{extra}[logs]
state_dir = ""
[logs.syslog]
bind = "127.0.0.1"
tcp_port = {port}
udp_port = 0
[logs.forward]
enabled = false
[[logs.outputs]]
{output}
"""


def send(port, payload):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(payload)
    s.close()


def run_receiver(name, argv, port, out, payload, lines, workdir):
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, name + ".err"), "w"))
    try:
        wait_listening(port)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.time()
        send(port, payload)
        end, got = wait_settled(out, lines)
        cpu = cpu_seconds(proc.pid) - cpu0
        rss = status_kib(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait()
    assert got == lines, f"{name}: {got} of {lines} lines"
    return lines / (end - t0), cpu, rss


def bench_syslog(runs, lines):
    payload = syslog_payload(lines)
    results = {"portwarden": [], "rsyslog": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            out = os.path.join(d, "out.json")
            conf = os.path.join(d, "pw.toml")
            with open(conf, "w") as f:
                f.write(syslog_agent_conf(port, f'type = "file"\npath = "{out}"\nmax_bytes = 10000000000'))
            argv = [os.path.join(REL, "portwarden"), "--config", conf, "run"]
            results["portwarden"].append(run_receiver("portwarden", argv, port, out, payload, lines, d))
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            out = os.path.join(d, "messages")
            conf = os.path.join(d, "rsyslog.conf")
            with open(conf, "w") as f:
                f.write(f"""global(workDirectory="{d}")
module(load="imtcp")
ruleset(name="in") {{ action(type="omfile" file="{out}" template="RSYSLOG_FileFormat") }}
input(type="imtcp" port="{port}" ruleset="in")
""")
            argv = ["rsyslogd", "-n", "-f", conf, "-i", os.path.join(d, "pid")]
            results["rsyslog"].append(run_receiver("rsyslog", argv, port, out, payload, lines, d))
    report("syslog tcp -> file", results, "portwarden", "rsyslog")


class _Sink:
    """A local OTLP/HTTP receiver that only counts what it is sent."""

    def __init__(self):
        import http.server
        import threading

        sink = self
        self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def _written(metrics_port, output):
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    prefix = f'portwarden_log_output_records_total{{output="{output}"}} '
    return next((int(l[len(prefix):]) for l in body.splitlines() if l.startswith(prefix)), 0)


def bench_otlp(runs, lines):
    payload = syslog_payload(lines)
    results = {}
    for mode in ("file", "otlp", "otlp-gzip"):
        results[mode] = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as d:
                port, metrics = free_port(), free_port()
                sink = _Sink() if mode != "file" else None
                out = os.path.join(d, "out.json")
                if sink:
                    endpoint = f"http://127.0.0.1:{sink.port}"
                    gzip = 'compression = "gzip"' if mode == "otlp-gzip" else ""
                    output = f'type = "otlp"\nprotocol = "http"\nendpoint = "{endpoint}"\n{gzip}'
                    name = f"otlp:{endpoint}"
                else:
                    output = f'type = "file"\npath = "{out}"\nmax_bytes = 10000000000'
                    name = f"file:{out}"
                conf = os.path.join(d, "pw.toml")
                with open(conf, "w") as f:
                    f.write(syslog_agent_conf(port, output, f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n'))
                argv = [os.path.join(REL, "portwarden"), "--config", conf, "run"]
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "err"), "w"))
                try:
                    wait_listening(port)
                    cpu0 = cpu_seconds(proc.pid)
                    t0 = time.time()
                    send(port, payload)
                    deadline = time.time() + 300
                    while _written(metrics, name) < lines:
                        if time.time() > deadline:
                            raise SystemExit(f"{mode}: never wrote {lines} records")
                        time.sleep(0.05)
                    wall = time.time() - t0
                    cpu = cpu_seconds(proc.pid) - cpu0
                    wire = sink.bytes if sink else os.path.getsize(out)
                finally:
                    proc.kill()
                    proc.wait()
                    if sink:
                        sink.close()
                results[mode].append((lines / wall, lines / max(cpu, 1e-9), wire / lines))
    print(f"\nsyslog tcp -> output ({runs} runs, medians; {lines} lines)")
    med = {m: [statistics.median(r[i] for r in rs) for i in range(3)] for m, rs in results.items()}
    for m, (rate, per_cpu, per_record) in med.items():
        print(f"  {m:10s} {rate:12,.0f} records/s   {per_cpu:12,.0f} records per CPU second   {per_record:6.1f} bytes/record")
    for m in ("otlp", "otlp-gzip"):
        print(f"  ratio {m}/file: records per CPU second {med[m][1] / med['file'][1]:.2f}x, bytes per record {med[m][2] / med['file'][2]:.2f}x")


def timed(argv):
    """Runs argv to completion under GNU time: (wall s, cpu s, peak RSS KiB)."""
    with tempfile.NamedTemporaryFile("r") as report_file:
        subprocess.check_call(["/usr/bin/time", "-o", report_file.name, "-f", "%e %U %S %M"] + argv,
                              stdout=subprocess.DEVNULL)
        wall, user, system, rss = report_file.read().split()
    return float(wall), float(user) + float(system), int(rss)


def bench_docker(runs, lines):
    cid = subprocess.check_output(
        ["docker", "run", "-d", "--pull", "never", "--network", "none", IMAGE, "seq", "1", str(lines)]
    ).decode().strip()
    try:
        subprocess.check_call(["docker", "wait", cid], stdout=subprocess.DEVNULL)
        # Both ask dockerd for timestamps (the agent needs them to resume).
        results = {"portwarden": [], "docker logs": []}
        for _ in range(runs):
            wall, cpu, rss = timed([os.path.join(REL, "portwarden"), "logs", "--container", cid])
            results["portwarden"].append((lines / wall, cpu, rss))
            wall, cpu, rss = timed(["docker", "logs", "-f", "-t", cid])
            results["docker logs"].append((lines / wall, cpu, rss))
        report("docker source (whole log, with timestamps)", results, "portwarden", "docker logs")
    finally:
        subprocess.call(["docker", "rm", "-f", cid], stdout=subprocess.DEVNULL)


def bench_cri(runs, lines):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "0.log")
        with open(path, "w") as f:
            for i in range(lines):
                f.write(f"2026-11-27T13:00:00.{i % 1000000000:09d}Z stdout F line {i:08d} of a container log\n")
        results = {"portwarden": [], "tail -F": []}
        for _ in range(runs):
            wall, cpu, rss = timed([os.path.join(REL, "examples", "cri_tail"), path, str(lines)])
            results["portwarden"].append((lines / wall, cpu, rss))
            t0 = time.time()
            proc = subprocess.Popen(["tail", "-n", "+1", "-F", path], stdout=subprocess.PIPE)
            got = 0
            while got < lines:
                chunk = proc.stdout.read1(1 << 20)
                if not chunk:
                    break
                got += chunk.count(b"\n")
            wall = time.time() - t0
            cpu, rss = cpu_seconds(proc.pid), status_kib(proc.pid, "VmHWM")
            proc.kill()
            proc.wait()
            results["tail -F"].append((lines / wall, cpu, rss))
        report("cri file", results, "portwarden", "tail -F")


def report(title, results, ours, peer):
    def med(name, i):
        return statistics.median(r[i] for r in results[name])

    print(f"\n{title} ({len(results[ours])} runs, medians)")
    for name in (ours, peer):
        print(f"  {name:12s} {med(name, 0):12,.0f} lines/s   cpu {med(name, 1):6.2f} s   peak RSS {med(name, 2) / 1024:6.1f} MiB")
    print(f"  ratio {ours}/{peer}: rate {med(ours, 0) / med(peer, 0):.2f}x, cpu {med(ours, 1) / max(med(peer, 1), 1e-9):.2f}x")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lines", type=int, default=300_000)
    p.add_argument("--only", choices=["syslog", "docker", "cri", "otlp"])
    p.add_argument("--line-bytes", type=int, default=LINE_BYTES, help="syslog lines' length, newline included")
    a = p.parse_args()
    globals()["LINE_BYTES"] = a.line_bytes
    if a.only:
        globals()["bench_" + a.only](a.runs, a.lines)
        return
    bench_syslog(a.runs, a.lines)
    bench_docker(a.runs, a.lines)
    bench_cri(a.runs, a.lines)
    bench_otlp(a.runs, a.lines)


if __name__ == "__main__":
    main()
