//! Issue 5: nothing lost and nothing repeated when the agent is killed
//! (SIGKILL) while containers keep logging, and when an output is blocked
//! for 30 s: sources wait, memory stays bounded, then everything arrives.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use portwarden_tests::agent::Agent;
use portwarden_tests::cri::CriPod;
use portwarden_tests::logs::LogAgent;
use portwarden_tests::{TestContainer, portwarden_bin, unique_name};
use serde_json::Value;

/// A shell loop printing `seq N` for N in 0..count, alternating stdout and
/// stderr, `usleep` µs apart.
fn writer(count: u32, usleep: u32) -> String {
    format!(
        "i=0; while [ $i -lt {count} ]; do echo \"seq $i\"; i=$((i+1)); echo \"seq $i\" >&2; i=$((i+1)); \
         usleep {usleep}; done; sleep 3600"
    )
}

fn from(id: &str) -> impl Fn(&Value) -> bool + '_ {
    move |r: &Value| r["container"]["id"] == id
}

/// How many times each sequence number from `id` was seen.
fn counts(records: &[Value], id: &str) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for r in records.iter().filter(|r| r["container"]["id"] == id) {
        if let Some(n) = r["message"].as_str().and_then(|m| m.strip_prefix("seq ")).and_then(|n| n.parse().ok()) {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

fn assert_exactly_once(seen: &HashMap<u64, u32>, count: u64, what: &str) {
    let missing: Vec<u64> = (0..count).filter(|n| !seen.contains_key(n)).take(10).collect();
    let doubled: Vec<(u64, u32)> = seen.iter().filter(|(_, c)| **c > 1).map(|(n, c)| (*n, *c)).take(10).collect();
    assert!(missing.is_empty() && doubled.is_empty(), "{what}: missing {missing:?}, repeated {doubled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_loses_and_repeats_nothing() {
    const COUNT: u64 = 6000;
    let mut agent = LogAgent::start("logs-restart", "", "").await;
    let docker = TestContainer::run_cmd("restart", &[], &["sh", "-c", &writer(COUNT as u32, 1000)]);
    let mut pod = CriPod::run("restart").await;
    let cri = pod.start_with("writer", &["sh", "-c", &writer(COUNT as u32, 1000)]).await;

    // Kill at a quarter, half and three quarters of the Docker container's lines.
    for round in 1..=3u64 {
        let target = (COUNT * round / 4) as usize;
        agent.wait_records("a share of the lines", target, from(&docker.id)).await;
        agent.crash_and_restart().await;
        eprintln!("round {round}: killed after {target}+ Docker lines");
    }
    let got = agent.wait_records("every Docker line", COUNT as usize, from(&docker.id)).await;
    assert_exactly_once(&counts(&got, &docker.id), COUNT, "docker");
    let got = agent.wait_records("every CRI line", COUNT as usize, from(&cri)).await;
    assert_exactly_once(&counts(&got, &cri), COUNT, "cri");
    // And nothing more trickles in afterwards.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = agent.records();
    assert_exactly_once(&counts(&all, &docker.id), COUNT, "docker, settled");
    assert_exactly_once(&counts(&all, &cri), COUNT, "cri, settled");
    pod.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_blocked_for_30s_holds_sources_back_within_bounded_memory() {
    const COUNT: u64 = 20_000;
    let dir = std::env::temp_dir().join(unique_name("blocked"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("portwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[capture]\nenabled = false\n[logs]\nstate_dir = \"{}\"\n[logs.syslog]\nenabled = false\n\
             [logs.forward]\nenabled = false\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(portwarden_bin());
    command.arg("--config").arg(&config).arg("--log-format").arg("json").arg("run");
    let mut agent = Agent::spawn_command(&mut command, Stdio::piped());
    let stdout = agent.take_stdout().expect("piped stdout");
    agent.wait_for_text("runtime synced", Duration::from_secs(30)).await;

    let docker = TestContainer::run_cmd("blocked", &[], &["sh", "-c", &writer(COUNT as u32, 200)]);
    let mut pod = CriPod::run("blocked").await;
    let cri = pod.start_with("writer", &["sh", "-c", &writer(COUNT as u32, 200)]).await;

    // Nobody reads stdout: the pipe fills and the output blocks.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let early = agent.rss_kib();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let late = agent.rss_kib();
    eprintln!("agent RSS while blocked: {early} KiB at 10 s, {late} KiB at 30 s");
    assert!(late < 64 * 1024, "RSS {late} KiB while blocked");
    assert!(late < early + 8 * 1024, "RSS grew from {early} to {late} KiB while blocked");

    // Unblock: read everything.
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let mut records = Vec::new();
    let complete = |records: &[Value]| {
        counts(records, &docker.id).len() as u64 == COUNT && counts(records, &cri).len() as u64 == COUNT
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !complete(&records) && std::time::Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            records.push(v);
            records.extend(rx.try_iter());
        }
    }
    assert_exactly_once(&counts(&records, &docker.id), COUNT, "docker");
    assert_exactly_once(&counts(&records, &cri), COUNT, "cri");
    pod.remove().await;
    let _ = std::fs::remove_dir_all(&dir);
}
