//! Issue 4: capture attaches and detaches with the containers, leaks
//! nothing, and degrades to the agent's own namespace without
//! CAP_SYS_ADMIN.

use std::process::{Command, Stdio};
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::{busybox_image, docker_ok, eventually, portwarden_bin, test_network, unique_name};

const WAIT: Duration = Duration::from_secs(120);

fn count(agent: &Agent, message: &str) -> usize {
    agent.lines().iter().filter(|l| l.contains(&format!("\"message\":\"{message}\""))).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_containers_leave_fds_and_threads_at_baseline() {
    let agent = Agent::spawn(&["run", "--log-format", "json", "--runtime", "docker"], Stdio::null());
    eventually("the agent to sync", WAIT, || agent.find_json("runtime synced", |_| true)).await;
    let attached_before = count(&agent, "capture attached");
    eventually("startup captures to settle", WAIT, || {
        (count(&agent, "capture attached") == attached_before).then_some(())
    })
    .await;
    let baseline = agent.fds_and_threads();

    const N: usize = 200;
    let (net, image) = (test_network(), busybox_image());
    for i in 0..N {
        let name = unique_name(&format!("churn{i}"));
        let id =
            docker_ok(&["run", "-d", "--pull", "never", "--network", &net, "--name", &name, &image, "sleep", "60"]);
        docker_ok(&["rm", "-f", &id]);
    }
    // Every container got its own capture, and every capture closed again.
    eventually("every capture to detach", WAIT, || {
        let (attached, detached) = (count(&agent, "capture attached"), count(&agent, "capture detached"));
        (attached - attached_before >= N * 9 / 10 && attached == detached + attached_before).then_some(())
    })
    .await;
    let attached = count(&agent, "capture attached") - attached_before;
    eprintln!("{attached} of {N} short-lived containers got a capture attached before they were removed");
    // Idle API connections close after 10 s; allow for that.
    let last = std::cell::Cell::new(baseline);
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let now = agent.fds_and_threads();
            last.set(now);
            if now.0 <= baseline.0 && now.1 <= baseline.1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (fds, threads) = last.get();
    assert!(settled.is_ok(), "fds {fds} (baseline {}), threads {threads} (baseline {})", baseline.0, baseline.1);
    let (status, _) = agent.stop("-TERM");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cap_sys_admin_the_agent_captures_its_own_namespace() {
    let out = std::env::temp_dir().join(unique_name("nocap")).with_extension("jsonl");
    let script = format!("exec {} run --log-format json > {}", portwarden_bin().display(), out.display());
    let mut command = Command::new("capsh");
    command.args(["--drop=cap_sys_admin", "--", "-c", &script]);
    let agent = Agent::spawn_command(&mut command, Stdio::null());

    let missing = eventually("the missing capability to be reported", WAIT, || {
        agent.find_json("capability missing", |v| v["capability"] == "CAP_SYS_ADMIN")
    })
    .await;
    assert!(missing["switches_off"].as_str().is_some_and(|s| s.contains("per-container capture")));
    let mode = eventually("the mode", WAIT, || agent.find_json("mode", |_| true)).await;
    assert_eq!(mode["capture"], "OwnNamespace", "{mode}");
    assert!(mode["reason"].as_str().is_some_and(|r| r.contains("per-container capture is off")));
    eventually("the own-namespace capture", WAIT, || agent.find_json("capture attached", |v| v["label"] == "host"))
        .await;

    // Traffic in the agent's (here: the host's) namespace is captured.
    let ping = Command::new("busybox").args(["ping", "-c", "2", "127.0.0.1"]).output().expect("ping runs");
    assert!(ping.status.success());
    let (status, lines) = agent.stop("-TERM");
    assert!(status.success(), "{lines:?}");
    let flows = std::fs::read_to_string(&out).expect("flow output");
    let icmp = flows
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|f| f["proto"] == "ICMP" && f["src_ip"] == "127.0.0.1");
    let icmp = icmp.unwrap_or_else(|| panic!("no ICMP flow on lo among: {flows}"));
    assert!(icmp["container"].is_null());
    assert!(icmp["flow"]["pkts_toserver"].as_u64().is_some_and(|n| n >= 2));
    let _ = std::fs::remove_file(out);
}
