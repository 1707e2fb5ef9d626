//! Issue 15: the embedding example (`examples/embed.rs`) against the
//! testbed: its own runtime (a JSON list naming a Docker container's
//! process), its own packet sink and its own log output, all counting.

use std::process::Command;
use std::time::Duration;

use portwarden_tests::{TestContainer, docker_ok, unique_name};

/// `target/<profile>/examples/embed`, built by `cargo build --all-targets`.
fn example() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps").join("examples/embed");
    assert!(bin.exists(), "{} is missing: run `cargo build --all-targets` first", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_example_counts_records_and_bytes_for_its_own_runtimes_container() {
    let target = TestContainer::run("embed-target", &[]);
    let script = format!("while true; do ping -c 1 -W 1 {} >/dev/null; sleep 0.2; done", target.ip());
    let pinger = TestContainer::run_cmd("embed-pinger", &[], &["sh", "-c", &script]);
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &pinger.id]);

    let dir = std::env::temp_dir().join(unique_name("embed"));
    std::fs::create_dir_all(&dir).expect("dir");
    let log = dir.join("static.log");
    let lines: String =
        (1..=3).map(|i| format!("2026-01-01T00:00:0{i}.000000000Z stdout F static line {i}\n")).collect();
    std::fs::write(&log, lines).expect("log");
    let list = dir.join("containers.json");
    let json = serde_json::json!([{ "id": "static-1", "name": "static-web", "pid": pid.parse::<u32>().expect("pid"),
        "log_path": log }]);
    std::fs::write(&list, json.to_string()).expect("list");

    let out = Command::new(example()).arg(&list).arg("4").output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let row = stdout.lines().find(|l| l.starts_with("container static-web ")).unwrap_or_else(|| panic!("{stdout}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[2..4], ["records", "3"], "{row}");
    let bytes: u64 = fields[5].parse().expect("bytes");
    assert!(bytes >= 4 * 98, "the pings' frames were counted: {row}");
    let _ = std::fs::remove_dir_all(&dir);
    tokio::time::sleep(Duration::ZERO).await;
}
