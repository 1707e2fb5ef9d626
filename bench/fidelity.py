#!/usr/bin/env python3
"""Detection fidelity: does traffic inside a container produce, through
`portwarden run`, exactly the alerts Suricata produces offline on the same
packets?

For each case of the corpus (Suricata's own test suite: a pcap, rules and
the Suricata options the case needs):
- the reference: `suricata -r` on the pcap with Debian's stock config,
  `-k none` and the case's options;
- the agent: `portwarden run` with the case's rules and options (`[nids]
  set`, `runmode`; a 1 MiB first capture ring, see agent_config) watches a
  `--network none` busybox container, the pcap is
  replayed (tcpreplay, 20 000 pps) into a veth whose other end is in that
  container, then the agent gets SIGTERM: it must drain by itself.
Alerts are compared as multisets of (sid, src, sport, dst, dport, proto).
Prints one line per case that differs, and `fidelity=K/N`.

    python3 bench/fidelity.py                  # the whole corpus (a benchmark)
    python3 bench/fidelity.py --smoke          # the cases in bench/fidelity-smoke.txt
    python3 bench/fidelity.py CASE [CASE ...]  # chosen cases, with details
    python3 bench/fidelity.py --wait-all 120 smb2-07-frames   # time until alerts on
                                               # never-acknowledged data arrive while running

As root, with the testbed up (scripts/testbed-up.sh), Suricata and tcpreplay
installed and `cargo build -p portwarden` done (the newer of the release
and debug builds is used). Exits 1 when a case differs and --smoke (or --strict) is given.
Traffic stays in namespaces this script makes: the container has no network
but the veth, and the other end is in a namespace of its own.
"""
import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "..", "shared", "fidelity", "corpus")
SMOKE = os.path.join(ROOT, "bench", "fidelity-smoke.txt")
IMAGE = os.environ.get("TESTBED_BUSYBOX_IMAGE", "localhost/testbed/busybox:1")
SRC_NS = f"pwfid-src-{os.getpid()}"
SRC_IF, DST_IF = "pwfid0", "pwfid1"
# After the replay, how long alerts get to arrive before SIGTERM.
SETTLE = 0.5


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def binary():
    """The most recently built portwarden (release or debug)."""
    built = [p for p in (os.path.join(ROOT, "target", b, "portwarden") for b in ("release", "debug"))
             if os.path.exists(p)]
    if not built:
        sys.exit("fidelity: build portwarden first (cargo build -p portwarden)")
    return max(built, key=os.path.getmtime)


def read_index(corpus):
    cases = {}
    with open(os.path.join(corpus, "INDEX.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    header = rows[0]
    for row in rows[1:]:
        case = dict(zip(header, row))
        cases[case["test"]] = case
    return cases


def case_args(case_dir):
    path = os.path.join(case_dir, "suricata.args")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def key(alert):
    return (
        alert["alert"]["signature_id"],
        alert.get("src_ip"),
        alert.get("src_port"),
        alert.get("dest_ip"),
        alert.get("dest_port"),
        alert.get("proto"),
    )


def alerts_in(path):
    found = collections.Counter()
    if not os.path.exists(path):
        return found
    with open(path, errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event_type") == "alert":
                found[key(event)] += 1
    return found


def reference(work, pcap, args):
    logs = os.path.join(work, "ref")
    os.makedirs(logs, exist_ok=True)
    cmd = ["suricata", "-c", "/etc/suricata/suricata.yaml", "-r", pcap, "-S", "test.rules", "-k", "none",
           "--init-errors-fatal", "-l", logs] + args
    run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if run.returncode != 0:
        return None, run.stdout[-2000:] + run.stderr[-2000:]
    return alerts_in(os.path.join(logs, "eve.json")), ""


def toml_str(s):
    return json.dumps(s)


def agent_config(work, args):
    """`[nids]` from the case's Suricata arguments: `--set k=v` and `--runmode`."""
    sets, runmode, i = [], None, 0
    while i < len(args):
        if args[i] == "--set" and i + 1 < len(args):
            sets.append(args[i + 1])
            i += 2
        elif args[i] == "--runmode" and i + 1 < len(args):
            runmode = args[i + 1]
            i += 2
        else:
            raise ValueError(f"unsupported Suricata argument {args[i]}")
    nids = [
        f"run_dir = {toml_str(os.path.join(work, 'run'))}",
        f"rules = {toml_str(os.path.join(work, 'test.rules'))}",
        "builtin_rules = false",
        "set = [" + ", ".join(toml_str(s) for s in sets) + "]",
    ]
    if runmode:
        nids.append(f"runmode = {toml_str(runmode)}")
    return (
        f"lock_file = {toml_str(os.path.join(work, 'lock'))}\n\n"
        # The replay sends some cases' 43 KB frames at 20 000 pps (800 MB/s):
        # the default 256 KiB ring can overflow before its first block is
        # read and it grows. A 1 MiB ring holds the corpus's biggest burst,
        # and still grows (so the growth path stays under test).
        "[capture]\nflows = false\nring_bytes = 1048576\n\n"
        "[logs]\nenabled = false\nstate_dir = \"\"\n\n"
        "[metrics]\nenabled = false\n\n"
        f"[api]\nsocket = {toml_str(os.path.join(work, 'api.sock'))}\n\n"
        "[nids]\n" + "\n".join(nids) + "\n\n"
        f"[[logs.outputs]]\ntype = \"file\"\npath = {toml_str(os.path.join(work, 'out.json'))}\n"
    )


def wait_log(path, needles, timeout):
    """Waits until every needle is in the agent's log; returns the log."""
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        with open(path, errors="replace") as f:
            text = f.read()
        if all(n in text for n in needles):
            return text
        time.sleep(0.05)
    raise TimeoutError(f"agent log lacks {[n for n in needles if n not in text]}:\n{text[-3000:]}")


class Target:
    """A `--network none` busybox container with a veth to a namespace of ours."""

    def __init__(self):
        self.name = f"pwfid-{os.getpid()}"
        sh("docker", "rm", "-f", self.name, check=False)
        self.id = sh("docker", "run", "-d", "--network", "none", "--name", self.name, IMAGE,
                     "sleep", "86400").stdout.strip()
        pid = sh("docker", "inspect", "-f", "{{.State.Pid}}", self.id).stdout.strip()
        sh("ip", "netns", "del", SRC_NS, check=False)
        sh("ip", "netns", "add", SRC_NS)
        sh("ip", "link", "add", SRC_IF, "netns", SRC_NS, "type", "veth", "peer", "name", DST_IF, "netns", pid)
        for ns_cmd, iface in ((["ip", "netns", "exec", SRC_NS], SRC_IF),
                              (["nsenter", "-t", pid, "-n"], DST_IF)):
            sh(*ns_cmd, "sysctl", "-qw", f"net.ipv6.conf.{iface}.disable_ipv6=1")
            sh(*ns_cmd, "ip", "link", "set", iface, "mtu", "65535")
            sh(*ns_cmd, "ethtool", "-K", iface, "gro", "off", "tso", "off", "gso", "off", check=False)
            sh(*ns_cmd, "ip", "link", "set", iface, "up")

    def close(self):
        sh("docker", "rm", "-f", self.name, check=False)
        sh("ip", "netns", "del", SRC_NS, check=False)


def drops(pw, work):
    """Nonzero drop and gap counters in the running agent's status (capture, mirror,
    Suricata): why a case may have lost alerts. The whole status is kept in
    the work directory as status.json."""
    out = sh(pw, "--config", os.path.join(work, "portwarden.toml"), "status", "--json", check=False).stdout
    with open(os.path.join(work, "status.json"), "w") as f:
        f.write(out)
    found = {}

    def walk(path, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{path}.{k}" if path else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{path}[{i}]", v)
        elif isinstance(value, int) and not isinstance(value, bool) and value and ("drop" in path or "gap" in path):
            found[path] = value
    try:
        walk("", json.loads(out))
    except ValueError:
        pass
    return found


def run_case(pw, target, corpus, name, case, keep, wait_all=None):
    src = os.path.join(corpus, name)
    before_stop, dropped, differs = 0, {}, False
    work = tempfile.mkdtemp(prefix=f"pwfid-{name}-")
    try:
        for entry in os.listdir(src):
            if os.path.isfile(os.path.join(src, entry)):
                shutil.copy(os.path.join(src, entry), work)
        pcap = os.path.join(work, case["pcap"])
        args = case_args(src)
        want, err = reference(work, pcap, args)
        if want is None:
            return "skip", f"offline suricata failed: {err.strip()[-300:]}"
        with open(os.path.join(work, "portwarden.toml"), "w") as f:
            f.write(agent_config(work, args))
        log = os.path.join(work, "agent.log")
        with open(log, "w") as logf:
            agent = subprocess.Popen([pw, "--config", os.path.join(work, "portwarden.toml"), "--log-format", "json",
                                      "run"], stdout=subprocess.DEVNULL, stderr=logf)
        try:
            wait_log(log, ["Suricata engine started", target.id], 120)
            # The container's capture attached and is mirrored.
            deadline = time.time() + 60
            while time.time() < deadline:
                text = open(log, errors="replace").read()
                if any("capture attached" in line and target.id in line for line in text.splitlines()):
                    break
                time.sleep(0.05)
            replay = sh("ip", "netns", "exec", SRC_NS, "tcpreplay", "--pps", "20000", "-i", SRC_IF, pcap, check=False)
            with open(os.path.join(work, "tcpreplay.txt"), "w") as f:
                f.write(replay.stdout + replay.stderr)
            # Alerts Suricata raises on what it has seen arrive now; the rest
            # (data never acknowledged, flows still open) only when it stops.
            replayed = time.time()
            if wait_all:
                # Without stopping: how long until every alert is out (data
                # never acknowledged waits for its flow to time out).
                while time.time() - replayed < wait_all and alerts_in(os.path.join(work, "out.json")) != want:
                    time.sleep(0.2)
                complete = alerts_in(os.path.join(work, "out.json")) == want
                waited = f"all alerts {time.time() - replayed:.1f}s after the replay" if complete else \
                    f"not all alerts within {wait_all}s"
            else:
                time.sleep(SETTLE)
            dropped = drops(pw, work)
            before_stop = sum(alerts_in(os.path.join(work, "out.json")).values())
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=120)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        got = alerts_in(os.path.join(work, "out.json"))
        if agent.returncode != 0:
            return "fail", f"agent exited {agent.returncode}: {open(log).read()[-1500:]}"
        at_stop = sum(got.values()) - before_stop
        if got == want:
            if wait_all:
                return "ok", f"{sum(want.values())} alerts, {waited}, {at_stop} raised while Suricata stopped"
            return "ok", f"{sum(want.values())} alerts, {at_stop} of them raised while Suricata stopped"
        missing, extra = want - got, got - want
        differs = True
        # Status was read before the stop; the capture's last counters are in its log.
        for line in open(log, errors="replace"):
            if "capture detached" in line:
                drops_at_stop = json.loads(line).get("kernel_drops", 0)
                if drops_at_stop:
                    dropped["kernel_drops at stop"] = drops_at_stop
        note = f" (drops: {dropped})" if dropped else ""
        return "diff", f"missing {dict(missing)} extra {dict(extra)}{note}"
    finally:
        if keep or differs:
            print(f"  kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--smoke", action="store_true", help="the cases in bench/fidelity-smoke.txt")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any case differs")
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--keep", action="store_true",
                        help="keep each case's work directory (a case that differs always keeps it)")
    parser.add_argument("--wait-all", type=float, metavar="SECONDS",
                        help="before stopping the agent, wait up to SECONDS for every alert (measures the flow-timeout bound)")
    o = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("fidelity: run as root")
    for tool in ("suricata", "tcpreplay", "docker", "ethtool", "nsenter"):
        if not shutil.which(tool):
            sys.exit(f"fidelity: {tool} is not installed")
    index = read_index(o.corpus)
    names = o.cases
    if o.smoke:
        with open(SMOKE) as f:
            names = [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    if not names:
        names = sorted(index)
    unknown = [n for n in names if n not in index]
    if unknown:
        sys.exit(f"fidelity: no such case: {', '.join(unknown)}")
    pw = binary()
    target = Target()
    results = collections.Counter()
    started = time.time()
    try:
        for name in names:
            t = time.time()
            status, detail = run_case(pw, target, o.corpus, name, index[name], o.keep, o.wait_all)
            results[status] += 1
            if status != "ok" or o.cases or o.smoke:
                print(f"{status:4} {name} ({time.time() - t:.1f}s): {detail}", flush=True)
    finally:
        target.close()
    considered = len(names) - results["skip"]
    print(f"fidelity={results['ok']}/{considered} (skipped {results['skip']}, "
          f"{time.time() - started:.0f}s)", flush=True)
    if (o.smoke or o.strict) and results["ok"] != considered:
        sys.exit(1)


if __name__ == "__main__":
    main()
