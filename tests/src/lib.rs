//! Helpers for the integration tests, which talk to the real daemons that
//! `scripts/testbed-up.sh` starts. Run them with `scripts/test.sh`.

pub mod agent;
pub mod api;
pub mod attacks;
pub mod cri;
pub mod inventory;
pub mod logs;
pub mod nids;
pub mod otlp;
pub mod podman;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

/// `tshark -r FILE -T fields -e FIELD`: one value per frame.
pub fn tshark_fields(file: &Path, field: &str) -> Vec<String> {
    let out = Command::new("tshark").arg("-r").arg(file).args(["-T", "fields", "-e", field]).output().expect("tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
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
/// For checks that are cheap and do not wait; [`eventually_async`] is for
/// checks that await (an API call, a child process).
pub async fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    eventually_async(what, within, || std::future::ready(check())).await
}

/// As [`eventually`], with a check that awaits.
pub async fn eventually_async<T, F>(what: &str, within: Duration, mut check: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that `check` finds nothing for the whole of `quiet`: an absence
/// (no warning, no second record) proved over a span rather than at one
/// instant. Panics naming `what` and what was found.
pub async fn assert_quiet_for<T: std::fmt::Debug>(what: &str, quiet: Duration, mut check: impl FnMut() -> Option<T>) {
    let until = tokio::time::Instant::now() + quiet;
    loop {
        if let Some(found) = check() {
            panic!("expected no {what} for {quiet:?}, found {found:?}");
        }
        if tokio::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_some_and_polls_until_then() {
        let polls = Cell::new(0);
        let got = eventually("the third poll", Duration::from_secs(5), || {
            polls.set(polls.get() + 1);
            (polls.get() == 3).then_some("ready")
        })
        .await;
        assert_eq!((got, polls.get()), ("ready", 3));
        let got = eventually_async("an awaited check", Duration::from_secs(5), || async { Some(7) }).await;
        assert_eq!(got, 7);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn eventually_panics_naming_what_it_waited_for() {
        eventually::<()>("nothing", Duration::from_secs(1), || None).await;
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_holds_for_the_whole_span() {
        let polls = Cell::new(0);
        assert_quiet_for("noise", Duration::from_secs(2), || {
            polls.set(polls.get() + 1);
            None::<()>
        })
        .await;
        assert!(polls.get() > 10, "polled throughout: {}", polls.get());
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "expected no noise for 2s, found \"late\"")]
    async fn noise_late_in_the_span_is_found() {
        let start = tokio::time::Instant::now();
        assert_quiet_for("noise", Duration::from_secs(2), || {
            (start.elapsed() > Duration::from_millis(1500)).then_some("late")
        })
        .await;
    }
}
