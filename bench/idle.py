#!/usr/bin/env python3
"""bench/idle.py - the agent at rest, against the seed's budget (a request of
0.25 CPU and 100 MiB, a limit of 500 MiB): RSS and CPU of `portwarden run`
(capture and log collection attached to every container, no detection) with
0, 20 and 100 idle test containers, and the time from start to the first
inventory sync. Also the image size when the image exists.

As root with the testbed up and `cargo build --release --bins -p portwarden`.
"""
import os
import subprocess
import tempfile
import time

from common import cpu_seconds, sh, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PW = os.path.join(ROOT, "target/release/portwarden")
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")


def containers(n):
    names = [f"pw-idle-{i}" for i in range(n)]
    for name in names:
        sh("docker", "rm", "-f", name, check=False)
        sh("docker", "run", "-d", "--pull", "never", "--network", "tb-internal", "--name", name, IMAGE, "sleep", "3600")
    return names


def measure(n, d, capture=""):
    names = containers(n)
    conf = os.path.join(d, "pw.toml")
    with open(conf, "w") as f:
        f.write('[logs]\nstate_dir = ""\n[logs.syslog]\nenabled = false\n[logs.forward]\nenabled = false\n'
                '[capture]\nflows = false\n' + capture + '[metrics]\nenabled = false\n')
    t0 = time.time()
    agent = subprocess.Popen([PW, "--config", conf, "--log-format", "json", "--lock-file", os.path.join(d, "lock"),
                              "--api-socket", os.path.join(d, "api.sock"), "run", "--no-detect"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    synced = None
    attached = 0
    deadline = time.time() + 120
    for line in agent.stderr:
        if '"runtime synced"' in line and synced is None:
            synced = time.time() - t0
        if '"capture attached"' in line:
            attached += 1
        if synced is not None and attached >= n:
            break
        if time.time() > deadline:
            break
    import threading
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    time.sleep(5)
    cpu0, t1 = cpu_seconds(agent.pid), time.time()
    time.sleep(20)
    cpu = (cpu_seconds(agent.pid) - cpu0) / (time.time() - t1)
    rss = status_kib(agent.pid, "VmRSS")
    agent.terminate()
    agent.wait(timeout=30)
    if names:
        sh("docker", "rm", "-f", *names, check=False)
    return synced, attached, rss, cpu


def main():
    d = tempfile.mkdtemp()
    print("\n== idle agent (capture + logs attached to every container), vs the seed's request of 100 MiB / 0.25 CPU")
    for n in (0, 20, 100):
        synced, attached, rss, cpu = measure(n, d)
        print(f"  {n:>3} containers: RSS {rss / 1024:6.1f} MiB, CPU {cpu * 100:5.2f} % of a core "
              f"({cpu / 0.25 * 100:4.1f} % of the request), first sync {synced * 1000:.0f} ms, {attached} captures")
    # Kernel capture rings are mapped into the agent, so they count in its
    # RSS: the same 100 containers with the fixed 4 MiB rings of before.
    for label, capture in [
        ("fixed 4 MiB rings, snaplen 262144", "snaplen = 262144\nring_bytes = 4194304\nring_max_bytes = 4194304\n"),
    ]:
        synced, attached, rss, cpu = measure(100, d, capture)
        print(f"  100 containers, {label}: RSS {rss / 1024:6.1f} MiB, CPU {cpu * 100:5.2f} % of a core")
    try:
        size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", "localhost/portwarden:dev").strip())
        print(f"  image localhost/portwarden:dev: {size / 1024 / 1024:.1f} MiB")
    except subprocess.CalledProcessError:
        print("  image: not built (scripts/build-image.sh)")


if __name__ == "__main__":
    main()
