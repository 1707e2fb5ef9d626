#!/usr/bin/env python3
"""bench/memory.py - the image's memory with rules: agent + Suricata RSS,
idle and at a steady packet rate, with the built-in rules and with a large
generated rule set, against the reference budget (request 100 Mi, limit
500 Mi).

The image (scripts/build-image.sh) runs as the seed runs it (host network,
Docker socket, host /proc, the agent's capabilities). Two test containers
sit on the internal test network; `pktgen` sends UDP frames from one to the
other's MAC (addresses 198.18.0.0/15, the benchmarking range; the network
has no route beyond the host). Both are captured, so each frame is mirrored
twice. Reports VmRSS and VmHWM of the agent and of Suricata, and the
container's cgroup memory (which also holds the capture rings and page cache).

    python3 bench/memory.py [--image TAG] [--rules 20000] [--rate 10000] [--seconds 30]

As root, with the testbed up and the image built, plus
`cargo build --release -p portwarden-tests --example pktgen`.
"""
import argparse
import os
import random
import string
import subprocess
import tempfile
import time

from common import sh, status_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKTGEN = os.path.join(ROOT, "target/release/examples/pktgen")
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")
NETWORK = os.environ.get("TESTBED_DOCKER_NETWORK", "tb-internal")


def generated_rules(count, path):
    """`count` rules of the kinds real rule sets are made of: HTTP URI and
    user-agent contents, DNS and TLS names, TCP and UDP payload contents,
    some with a PCRE; none matches the benchmark's traffic."""
    rnd = random.Random(14)
    word = lambda n: "".join(rnd.choice(string.ascii_lowercase + string.digits) for _ in range(n))
    kinds = [
        lambda: f'alert http any any -> any any (msg:"gen uri"; flow:established,to_server; http.uri; content:"/{word(10)}/{word(6)}"; nocase;',
        lambda: f'alert http any any -> any any (msg:"gen ua"; flow:established,to_server; http.user_agent; content:"{word(12)}";',
        lambda: f'alert dns any any -> any any (msg:"gen dns"; dns.query; content:"{word(10)}.{word(3)}"; nocase; endswith;',
        lambda: f'alert tls any any -> any any (msg:"gen sni"; tls.sni; content:"{word(9)}.{word(4)}"; nocase;',
        lambda: f'alert tcp any any -> any any (msg:"gen tcp"; flow:established; content:"{word(14)}"; pcre:"/{word(6)}[0-9]+/";',
        lambda: f'alert udp any any -> any any (msg:"gen udp"; content:"|{" ".join(f"{rnd.randrange(256):02x}" for _ in range(8))}|";',
    ]
    with open(path, "w") as f:
        for sid in range(1, count + 1):
            f.write(f"{kinds[sid % len(kinds)]()} sid:{8_000_000 + sid}; rev:1;)\n")


def container_pids(name):
    """The agent's pid and its Suricata's."""
    agent = int(sh("docker", "inspect", "-f", "{{.State.Pid}}", name).strip())
    kids = sh("pgrep", "-P", str(agent), check=False).split()
    suricata = next((int(k) for k in kids if "suricata" in open(f"/proc/{k}/comm").read().lower()), None)
    return agent, suricata


def cgroup_mib(pid):
    """The container's cgroup memory: v2 `memory.current`, or v1 usage."""
    with open(f"/proc/{pid}/cgroup") as f:
        lines = [l.strip().split(":", 2) for l in f if l.strip()]
    for _, controllers, path in lines:
        if controllers == "":
            p = f"/sys/fs/cgroup{path}/memory.current"
        elif "memory" in controllers.split(","):
            p = f"/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"
        else:
            continue
        if os.path.exists(p):
            return int(open(p).read()) / 2**20
    return float("nan")


def figures(name):
    agent, suricata = container_pids(name)
    mib = lambda pid, field: status_kib(pid, field) / 1024 if pid else float("nan")
    return {
        "agent_rss": mib(agent, "VmRSS"), "agent_hwm": mib(agent, "VmHWM"),
        "suricata_rss": mib(suricata, "VmRSS"), "suricata_hwm": mib(suricata, "VmHWM"),
        "cgroup": cgroup_mib(agent),
    }


def run(image, rules_dir, rate, seconds, label):
    name = f"pw-bench-mem-{os.getpid()}"
    sh("docker", "rm", "-f", name, check=False)
    args = ["docker", "run", "-d", "--name", name, "--net=host", "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
            "--cap-add", "NET_RAW", "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", "/proc:/host/proc:ro",
            "-e", "PORTWARDEN_LOCK_FILE=/tmp/agent.lock", "-e", "PORTWARDEN_API_SOCKET=/tmp/api.sock",
            "-e", "PORTWARDEN_METRICS_LISTEN=127.0.0.1:19464"]
    if rules_dir:
        args += ["-v", f"{rules_dir}:/etc/portwarden/rules:ro"]
    sh(*args, image, "--log-format", "json", "run")
    srv = cli = None
    try:
        deadline = time.time() + 300
        while "Suricata engine started" not in subprocess.run(["docker", "logs", name], capture_output=True,
                                                                text=True).stderr:
            if time.time() > deadline:
                raise SystemExit(f"{label}: Suricata's engine did not start")
            time.sleep(1)
        srv = sh("docker", "run", "-d", "--pull", "never", "--network", NETWORK, IMAGE, "sleep", "3600").strip()
        cli = sh("docker", "run", "-d", "--pull", "never", "--network", NETWORK, IMAGE, "sleep", "3600").strip()
        time.sleep(5)  # both captured
        idle = figures(name)
        mac = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}", srv).strip()
        pid = sh("docker", "inspect", "-f", "{{.State.Pid}}", cli).strip()
        sh("nsenter", "-t", pid, "-n", PKTGEN, "eth0", mac, str(rate * seconds), str(rate), "512")
        busy = figures(name)
        print(f"{label:>24}  idle: agent {idle['agent_rss']:6.1f} MiB, Suricata {idle['suricata_rss']:6.1f} MiB, "
              f"cgroup {idle['cgroup']:6.1f} MiB | at {rate} pps: agent {busy['agent_rss']:6.1f} (peak "
              f"{busy['agent_hwm']:.1f}) MiB, Suricata {busy['suricata_rss']:6.1f} (peak {busy['suricata_hwm']:.1f}) MiB, "
              f"cgroup {busy['cgroup']:6.1f} MiB", flush=True)
    finally:
        for c in (srv, cli):
            if c:
                sh("docker", "rm", "-f", c, check=False)
        sh("docker", "rm", "-f", name, check=False)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="localhost/portwarden:dev")
    p.add_argument("--rules", type=int, default=20000, help="generated rules for the large set")
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--seconds", type=int, default=30)
    o = p.parse_args()
    print(f"== {o.image}: RSS with rules (reference budget: request 100 MiB, limit 500 MiB)")
    run(o.image, None, o.rate, o.seconds, "built-in rules")
    with tempfile.TemporaryDirectory() as d:
        generated_rules(o.rules, os.path.join(d, "generated.rules"))
        run(o.image, d, o.rate, o.seconds, f"+ {o.rules} generated rules")


if __name__ == "__main__":
    main()
