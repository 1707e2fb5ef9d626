//! Issue 2: runtime detection explains every rejected candidate, within the
//! probe timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portwarden_core::{DetectOptions, Registry, Rejection};
use portwarden_runtime_docker::DockerProvider;
use portwarden_tests::{docker_socket, portwarden_bin, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("detect"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// A unix socket that echoes back whatever it reads: it answers, but not HTTP.
fn echo_server(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind echo");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A unix socket that accepts and then never says anything.
fn silent_server(path: &Path) {
    let listener = UnixListener::bind(path).expect("bind silent");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_candidate_is_rejected_with_its_reason() {
    let real = docker_socket();
    let dir = scratch_dir();
    let file = dir.join("file.sock");
    std::fs::write(&file, b"not a socket").expect("write");
    let dead = dir.join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).expect("bind dead"));
    let echo = dir.join("echo.sock");
    echo_server(&echo);
    let silent = dir.join("silent.sock");
    silent_server(&silent);
    let missing = dir.join("missing.sock");
    let alias = dir.join("alias.sock");
    std::os::unix::fs::symlink(&real, &alias).expect("symlink");

    let mut opts = DetectOptions { probe_timeout: PROBE_TIMEOUT, ..DetectOptions::default() };
    let candidates =
        vec![real.clone(), file.clone(), dead.clone(), echo.clone(), silent.clone(), missing.clone(), alias.clone()];
    opts.pinned.insert(portwarden_runtime_docker::DOCKER, candidates);
    let registry = Registry::new().with_provider(DockerProvider::default());

    // The deadline only guards against a hang; every probe shares one timeout.
    let detection = tokio::time::timeout(Duration::from_secs(30), registry.detect(&opts)).await.expect("no hang");

    assert_eq!(detection.runtimes.len(), 1, "only the real dockerd answers");
    assert_eq!(detection.runtimes[0].socket, real);
    assert_eq!(detection.runtimes[0].info.runtime, portwarden_runtime_docker::DOCKER);
    let reason = |p: &Path| {
        detection.rejected.iter().find(|r| r.socket == p).map(|r| r.reason.clone()).unwrap_or_else(|| {
            panic!("{} not rejected: {:?}", p.display(), detection.rejected);
        })
    };
    assert_eq!(reason(&file), Rejection::NotASocket);
    assert_eq!(reason(&dead), Rejection::NotListening);
    assert!(matches!(reason(&echo), Rejection::WrongProtocol(_)), "{:?}", reason(&echo));
    assert_eq!(reason(&silent), Rejection::TimedOut(PROBE_TIMEOUT));
    assert_eq!(reason(&missing), Rejection::Missing);
    assert_eq!(reason(&alias), Rejection::Duplicate(real.clone()));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_runtime_is_reported_as_such() {
    let mut opts = DetectOptions::default();
    opts.disabled.insert(portwarden_runtime_docker::DOCKER);
    let detection = Registry::new().with_provider(DockerProvider::default()).detect(&opts).await;
    assert!(detection.runtimes.is_empty());
    assert_eq!(detection.rejected[0].reason, Rejection::Disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_paths_are_looked_up_under_the_host_root() {
    // A host root without any runtime: every default is missing.
    let root = scratch_dir();
    let opts = DetectOptions { host_root: root.clone(), ..DetectOptions::default() };
    let detection = Registry::new().with_provider(DockerProvider::default()).detect(&opts).await;
    assert!(detection.runtimes.is_empty());
    assert_eq!(detection.rejected[0].socket, root.join("var/run/docker.sock"));
    assert_eq!(detection.rejected[0].reason, Rejection::Missing);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_json_explains_each_decision() {
    let real = docker_socket();
    let dir = scratch_dir();
    let file = dir.join("file.sock");
    std::fs::write(&file, b"x").expect("write");
    let pinned = format!("{},{}", real.display(), file.display());
    let out = std::process::Command::new(portwarden_bin())
        .args(["runtimes", "--json", "--docker-socket", &pinned])
        .output()
        .expect("portwarden runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["detected"][0]["runtime"], "docker");
    assert_eq!(report["detected"][0]["socket"], real.display().to_string());
    assert!(report["detected"][0]["api_version"].is_string());
    // Other candidates on this host may be rejected too (CRI-O's socket
    // seen twice through /var/run): find the file by its path.
    let rejected = report["rejected"].as_array().expect("rejected list");
    let ours = rejected.iter().find(|r| r["socket"] == file.display().to_string());
    assert_eq!(ours.map(|r| &r["reason"]), Some(&serde_json::json!("not_a_socket")), "{rejected:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn typos_in_flags_and_config_are_named() {
    let out = std::process::Command::new(portwarden_bin()).args(["ps", "--jsn"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jsn"));

    let dir = scratch_dir();
    let config = dir.join("portwarden.toml");
    std::fs::write(&config, "[runtimes.docker]\nenabled = true\nsokets = []\n").expect("write");
    let out =
        std::process::Command::new(portwarden_bin()).arg("--config").arg(&config).arg("ps").output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sokets") && err.contains("line 3"), "{err}");

    let out = std::process::Command::new(portwarden_bin()).args(["ps", "--runtime", "dokcer"]).output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dokcer"));
    let _ = std::fs::remove_dir_all(dir);
}
