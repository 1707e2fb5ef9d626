//! Helpers for the integration tests, which talk to the real daemons that
//! `scripts/testbed-up.sh` starts. Run them with `scripts/test.sh`.

pub mod agent;
pub mod api;
pub mod attacks;
pub mod cri;
pub mod inventory;
pub mod logs;
pub mod nids;
pub mod podman;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The Docker socket the testbed started (`DOCKER_SOCK`, default
/// `/var/run/docker.sock`). Panics with instructions when dockerd is not up.
pub fn docker_socket() -> PathBuf {
    let sock = PathBuf::from(std::env::var("DOCKER_SOCK").unwrap_or_else(|_| "/var/run/docker.sock".into()));
    let up = Command::new("docker").arg("-H").arg(format!("unix://{}", sock.display())).arg("version").output();
    assert!(
        up.is_ok_and(|o| o.status.success()),
        "no dockerd at {}: these tests need the testbed; run scripts/test.sh (as root)",
        sock.display()
    );
    sock
}

/// The busybox image the testbed built (`TESTBED_BUSYBOX_IMAGE`).
pub fn busybox_image() -> String {
    std::env::var("TESTBED_BUSYBOX_IMAGE").unwrap_or_else(|_| "localhost/testbed/busybox:1".into())
}

/// The internal Docker network test containers join (`TESTBED_DOCKER_NETWORK`).
pub fn test_network() -> String {
    std::env::var("TESTBED_DOCKER_NETWORK").unwrap_or_else(|_| "tb-internal".into())
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `portwarden` binary built next to this test (`cargo build` first), or
/// `PORTWARDEN_BIN`.
pub fn portwarden_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("PORTWARDEN_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>/deps").join("portwarden");
    assert!(bin.exists(), "{} is missing: run `cargo build` before the integration tests", bin.display());
    bin
}

/// Runs the docker CLI against the testbed's dockerd.
pub fn docker(args: &[&str]) -> Output {
    let sock = std::env::var("DOCKER_SOCK").unwrap_or_else(|_| "/var/run/docker.sock".into());
    Command::new("docker").arg("-H").arg(format!("unix://{sock}")).args(args).output().expect("docker CLI runs")
}

/// Runs the docker CLI and returns its trimmed stdout; panics on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("pw-{prefix}-{}-{nanos:x}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A Docker container removed (with `rm -f`) when dropped.
pub struct TestContainer {
    /// Its name.
    pub name: String,
    /// Its full id.
    pub id: String,
}

impl TestContainer {
    /// `docker run -d` on the internal test network, running `sleep`.
    pub fn run(prefix: &str, extra: &[&str]) -> TestContainer {
        let name = unique_name(prefix);
        let network = test_network();
        let image = busybox_image();
        let mut args = vec!["run", "-d", "--pull", "never", "--name", &name, "--network", &network];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&image, "sleep", "3600"]);
        let id = docker_ok(&args);
        TestContainer { name, id }
    }

    /// `docker run -d` on the internal test network, running `command`.
    pub fn run_cmd(prefix: &str, extra: &[&str], command: &[&str]) -> TestContainer {
        let name = unique_name(prefix);
        let network = test_network();
        let image = busybox_image();
        let mut args = vec!["run", "-d", "--pull", "never", "--name", &name, "--network", &network];
        args.extend_from_slice(extra);
        args.push(&image);
        args.extend_from_slice(command);
        let id = docker_ok(&args);
        TestContainer { name, id }
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.id])
    }

    /// Its IP address on the test network.
    pub fn ip(&self) -> String {
        self.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.id]);
    }
}

/// Polls `check` until it returns `Some` or `within` passes; panics naming
/// `what` on timeout. The deadline is a hang guard, not a speed assertion.
pub async fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
