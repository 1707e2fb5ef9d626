//! Issue 7 (first parts): one agent per host, and SIGTERM delivers what was
//! already written before the agent exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portwarden_tests::agent::Agent;
use portwarden_tests::logs::LogAgent;
use portwarden_tests::{TestContainer, docker_ok, portwarden_bin, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_host_is_refused_naming_the_first() {
    let lock = std::env::temp_dir().join(format!("{}.lock", unique_name("guard")));
    let mut first = Command::new(portwarden_bin());
    first.env("PORTWARDEN_LOCK_FILE", &lock).args(["--log-format", "json", "run"]);
    let first = Agent::spawn_command(&mut first, Stdio::null());
    first.wait_for_text("runtime synced", Duration::from_secs(30)).await;

    let second = Command::new(portwarden_bin())
        .env("PORTWARDEN_LOCK_FILE", &lock)
        .arg("run")
        .output()
        .expect("second agent runs");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another portwarden agent is already running"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "names the running one: {err}");
    let (status, _) = first.stop("-TERM");
    assert!(status.success());
    let _ = std::fs::remove_file(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_the_last_line_and_exits_zero() {
    let agent = LogAgent::start("sigterm", "", "").await;
    let c = TestContainer::run("sigterm", &[]);
    agent
        .agent
        .wait_for_text(&format!("log collection attached\",\"container\":\"{}", c.id), Duration::from_secs(30))
        .await;
    docker_ok(&["exec", &c.id, "sh", "-c", "echo LAST-LINE-BEFORE-SIGTERM > /proc/1/fd/1"]);
    let asked = Instant::now();
    let mut agent = agent;
    let status = agent.agent.signal_and_wait("-TERM");
    let exited = asked.elapsed();
    eprintln!("SIGTERM -> exit: {exited:?}");
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    let records = agent.records();
    assert!(
        records.iter().any(|r| r["message"] == "LAST-LINE-BEFORE-SIGTERM" && r["container"]["id"] == c.id.as_str()),
        "the line written before SIGTERM is in the output"
    );
}
