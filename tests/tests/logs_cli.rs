//! Issue 5: the defaults a new user sees (`portwarden run` with no config:
//! every runtime, syslog on 1514, forward on 24224, JSON lines on stdout),
//! and `portwarden logs`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::{TestContainer, eventually, portwarden_bin};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_no_config_collects_listens_and_prints_json() {
    let mut agent = Agent::spawn(&["--log-format", "json", "run"], Stdio::piped());
    let stdout = agent.take_stdout().expect("piped");
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    agent.wait_for_text("forward listening", Duration::from_secs(30)).await;
    assert!(agent.lines().iter().any(|l| l.contains("syslog listening") && l.contains("1514")));
    assert!(agent.lines().iter().any(|l| l.contains("forward listening") && l.contains("24224")));

    let c = TestContainer::run_cmd("defaults", &[], &["sh", "-c", "echo hello-defaults; sleep 3600"]);
    for proto in ["--tcp", "--udp"] {
        let status = Command::new("logger")
            .args(["-n", "127.0.0.1", "-P", "1514", proto, "-t", "defaults"])
            .arg(format!("logger-defaults{proto}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut records = Vec::new();
    eventually("the container's line and both logger lines on stdout", Duration::from_secs(60), || {
        records.extend(rx.try_iter());
        let have = |m: &str| records.iter().any(|r| r["message"] == m);
        (have("hello-defaults") && have("logger-defaults--tcp") && have("logger-defaults--udp")).then_some(())
    })
    .await;
    let line = records.iter().find(|r| r["message"] == "hello-defaults").unwrap();
    assert_eq!(line["container"]["id"], c.id.as_str());
    assert_eq!(line["source"], "docker");
    let (status, _) = agent.stop("-TERM");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_command_shows_follows_and_prints_json() {
    let c = TestContainer::run_cmd("logscmd", &[], &["sh", "-c", "echo first; echo second >&2; sleep 3600"]);
    let out = eventually("two lines from `portwarden logs`", Duration::from_secs(30), || {
        let out = Command::new(portwarden_bin()).args(["logs", "--container", &c.name]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.lines().count() == 2).then_some(text)
    })
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(&format!("{} stdout first", c.name))), "{out}");
    assert!(lines.iter().any(|l| l.ends_with(&format!("{} stderr second", c.name))), "{out}");

    let out = Command::new(portwarden_bin()).args(["logs", "--json", "--container", &c.id[..12]]).output().unwrap();
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["container"]["name"] == c.name.as_str()));

    // -f: the old lines, then a new one written while following.
    let mut follow = Agent::spawn(&["logs", "-f", "--container", &c.name], Stdio::piped());
    let stdout = follow.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    eventually("the old lines", Duration::from_secs(30), || {
        seen.extend(rx.try_iter());
        (seen.len() >= 2).then_some(())
    })
    .await;
    portwarden_tests::docker_ok(&["exec", &c.id, "sh", "-c", "echo third > /proc/1/fd/1"]);
    eventually("the new line", Duration::from_secs(30), || {
        seen.extend(rx.try_iter());
        seen.iter().any(|l| l.ends_with("stdout third")).then_some(())
    })
    .await;
    let (status, _) = follow.stop("-INT");
    assert!(status.success());

    let out = Command::new(portwarden_bin()).args(["logs", "--container", "no-such-container"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container"));
}
