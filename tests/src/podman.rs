//! Podman, as `scripts/podman-up.sh` starts it: its CLI for making test
//! containers and pods, and its API socket for the agent.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::{busybox_image, unique_name};

/// The Podman API socket (`PODMAN_SOCK`, default `/run/podman/podman.sock`).
/// Panics with instructions when the service is not up.
pub fn podman_socket() -> PathBuf {
    let sock = PathBuf::from(std::env::var("PODMAN_SOCK").unwrap_or_else(|_| "/run/podman/podman.sock".into()));
    assert!(sock.exists(), "no Podman service at {}: run scripts/podman-up.sh (scripts/test.sh does)", sock.display());
    sock
}

/// The internal Podman network test containers join (`TESTBED_PODMAN_NETWORK`).
pub fn podman_network() -> String {
    std::env::var("TESTBED_PODMAN_NETWORK").unwrap_or_else(|_| "tb-podman".into())
}

/// Runs the podman CLI.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("podman CLI runs")
}

/// Runs the podman CLI and returns its trimmed stdout; panics on failure.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(out.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A Podman container, removed (`rm -f -t 0`) when dropped.
pub struct PodmanContainer {
    /// Its name.
    pub name: String,
    /// Its full id.
    pub id: String,
}

impl PodmanContainer {
    /// `podman run -d` of busybox running `command`, on the internal test
    /// network unless `extra` says otherwise (`--pod P` joins a pod's).
    pub fn run(prefix: &str, extra: &[&str], command: &[&str]) -> PodmanContainer {
        let name = unique_name(prefix);
        let image = busybox_image();
        let network = format!("--network={}", podman_network());
        let mut args = vec!["run", "-d", "--pull=never", "--name", &name];
        if !extra.iter().any(|a| a.starts_with("--pod")) {
            args.push(&network);
        }
        args.extend_from_slice(extra);
        args.push(&image);
        args.extend_from_slice(command);
        let id = podman_ok(&args);
        PodmanContainer { name, id }
    }

    /// `podman inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        podman_ok(&["inspect", "-f", format, &self.id])
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().expect("a PID")
    }

    /// Its IP address on the test network (a pod member's is its pod's).
    pub fn ip(&self) -> String {
        self.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.id]);
    }
}

/// A Podman pod on the internal test network, removed with its containers
/// when dropped.
pub struct PodmanPod {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
}

impl PodmanPod {
    /// `podman pod create` (its infra container is the testbed's pause image).
    pub fn create(prefix: &str) -> PodmanPod {
        let name = unique_name(prefix);
        let network = format!("--network={}", podman_network());
        let id = podman_ok(&["pod", "create", "--name", &name, &network]);
        PodmanPod { name, id }
    }
}

impl Drop for PodmanPod {
    fn drop(&mut self) {
        let _ = podman(&["pod", "rm", "-f", "-t", "0", &self.id]);
    }
}
