//! Issue 14: the sidecar on Fargate. The agent runs in a task's network
//! namespace (here: an app container's) with exactly the capabilities a
//! Fargate container gets (Docker's defaults plus SYS_PTRACE, the one it
//! may add), no runtime socket and no host /proc: it captures the task's
//! traffic, detects with the built-in rules, and collects the logs the
//! task routes to it (Docker's fluentd driver, as FireLens does).

use std::process::{Command, Stdio};
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::{TestContainer, docker_ok, eventually, portwarden_bin, test_network, unique_name};

/// Docker's default capabilities, which Fargate grants, plus SYS_PTRACE.
const FARGATE: &[&str] = &[
    "cap_chown",
    "cap_dac_override",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_net_bind_service",
    "cap_net_raw",
    "cap_sys_chroot",
    "cap_mknod",
    "cap_audit_write",
    "cap_setfcap",
    "cap_sys_ptrace",
];

/// Every capability this kernel knows that Fargate does not grant.
fn not_on_fargate() -> Vec<String> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
    let out = Command::new("capsh").arg("--decode=0x".to_owned() + &format!("{:x}", (1u64 << (last + 1)) - 1)).output();
    let all = String::from_utf8_lossy(&out.expect("capsh runs").stdout).into_owned();
    all.trim()
        .split('=')
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .filter(|c| !FARGATE.contains(c))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_with_fargates_capabilities_captures_detects_and_collects() {
    let dir = std::env::temp_dir().join(unique_name("fargate"));
    std::fs::create_dir_all(&dir).unwrap();
    // The task: an app serving HTTP. The agent joins its network namespace.
    let app = TestContainer::run_cmd("task-app", &[], &["httpd", "-f", "-p", "80"]);
    let pid = app.inspect("{{.State.Pid}}");
    let out = dir.join("out.json");
    let config = format!(
        // Fargate has no host to see: an empty host root holds no runtime socket.
        "lock_file = \"{d}/lock\"\nhost_root = \"{d}/no-host\"\n[capture]\nflows = false\n[logs]\nstate_dir = \"\"\n[metrics]\nenabled = false\n\
         [api]\nsocket = \"{d}/api.sock\"\n[nids]\nrun_dir = \"{d}/run\"\n\
         [[logs.outputs]]\ntype = \"file\"\npath = \"{out}\"\n",
        d = dir.display(),
        out = out.display()
    );
    std::fs::create_dir_all(dir.join("no-host")).unwrap();
    std::fs::write(dir.join("portwarden.toml"), config).unwrap();
    let drop = not_on_fargate().join(",");
    let script = format!(
        "exec {} --config {} --proc-root /proc --log-format json run",
        portwarden_bin().display(),
        dir.join("portwarden.toml").display()
    );
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/proc/{pid}/ns/net")).args([
        "--",
        "capsh",
        &format!("--drop={drop}"),
        "--",
        "-c",
        &script,
    ]);
    let agent = Agent::spawn_command(&mut command, Stdio::null());

    let mode = eventually("the mode", Duration::from_secs(60), || agent.find_json("mode", |_| true)).await;
    assert_eq!((mode["mode"].as_str(), mode["capture"].as_str()), (Some("sidecar"), Some("own_namespace")), "{mode}");
    assert!(agent.find_json("capability missing", |v| v["capability"] == "CAP_SYS_ADMIN").is_some());
    eventually("Suricata's engine", Duration::from_secs(120), || agent.find_json("Suricata engine started", |_| true))
        .await;
    eventually("the task's capture", Duration::from_secs(60), || agent.find_json("capture attached", |_| true)).await;
    // Pre-start attach needs CAP_SYS_ADMIN, and says so.
    let off = agent.find_json("pre-start attach off", |_| true).expect("the reason pre-start attach is off");
    assert!(off["reason"].as_str().is_some_and(|r| r.contains("CAP_SYS_ADMIN")), "{off}");

    // Traffic into the task: a scanner from another container.
    let scanner = TestContainer::run("task-scanner", &[]);
    let sqlmap = format!("timeout 5 wget -q -O /dev/null -U 'sqlmap/1.7.2#stable' http://{}/ ; true", app.ip());
    docker_ok(&["exec", &scanner.id, "sh", "-c", &sqlmap]);
    // Logs the task routes to the agent: Docker's fluentd driver at the task's address.
    let name = unique_name("task-logger");
    let address = format!("fluentd-address={}:24224", app.ip());
    let network = test_network();
    docker_ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--name",
        &name,
        "--network",
        &network,
        "--log-driver",
        "fluentd",
        "--log-opt",
        &address,
        "--log-opt",
        "fluentd-async=false",
        &portwarden_tests::busybox_image(),
        "echo",
        "hello-from-the-task",
    ]);
    let events = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let alert = eventually("the scanner's alert", Duration::from_secs(90), || {
        events().into_iter().find(|e| e["event_type"] == "alert" && e["alert"]["signature_id"] == 9_100_001)
    })
    .await;
    assert_eq!(alert["dest_ip"], app.ip().as_str(), "{alert}");
    eventually("the task's log line", Duration::from_secs(60), || {
        std::fs::read_to_string(&out).unwrap_or_default().contains("hello-from-the-task").then_some(())
    })
    .await;
    let (status, lines) = agent.stop("-TERM");
    assert!(status.success(), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
