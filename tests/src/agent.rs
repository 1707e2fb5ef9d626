//! The `portwarden` binary as a child process, with its stderr collected.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{eventually, portwarden_bin};

/// A running `portwarden` with its stderr lines, parsed as JSON where they
/// are JSON.
pub struct Agent {
    /// The API socket it serves when it runs as the daemon.
    pub api_socket: std::path::PathBuf,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// Starts `portwarden ARGS`, stdout to `stdout`.
    pub fn spawn(args: &[&str], stdout: Stdio) -> Agent {
        Self::spawn_command(Command::new(portwarden_bin()).args(args), stdout)
    }

    /// Starts a prepared command (for example under `capsh`). Unless the
    /// test sets `PORTWARDEN_LOCK_FILE` and `PORTWARDEN_API_SOCKET` itself,
    /// each agent gets a lock file and an API socket of its own, so the
    /// one-agent-per-host guard does not stop parallel tests, and CLI
    /// commands run standalone unless pointed at a test's daemon.
    pub fn spawn_command(command: &mut Command, stdout: Stdio) -> Agent {
        let name = crate::unique_name("agent");
        if !command.get_envs().any(|(k, _)| k == "PORTWARDEN_LOCK_FILE") {
            command.env("PORTWARDEN_LOCK_FILE", std::env::temp_dir().join(format!("{name}.lock")));
        }
        let api_socket = match command.get_envs().find(|(k, _)| *k == "PORTWARDEN_API_SOCKET") {
            Some((_, Some(path))) => path.into(),
            _ => {
                let path = std::env::temp_dir().join(format!("{name}.sock"));
                command.env("PORTWARDEN_API_SOCKET", &path);
                path
            }
        };
        let mut child = command.stdout(stdout).stderr(Stdio::piped()).spawn().expect("portwarden starts");
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = std::thread::spawn({
            let lines = Arc::clone(&lines);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    lines.lock().expect("lines lock").push(line);
                }
            }
        });
        Agent { api_socket, child, lines, reader: Some(reader) }
    }

    /// The agent's stdout, when it was spawned with `Stdio::piped()`.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// The first stderr line parsed as JSON whose `message` is `message`
    /// and which satisfies `pred`.
    pub fn find_json(&self, message: &str, pred: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["message"] == message && pred(v))
    }

    /// Waits for a stderr line containing `text`.
    pub async fn wait_for_text(&self, text: &str, within: Duration) -> String {
        eventually(&format!("stderr line containing {text:?}"), within, || {
            self.lines().into_iter().find(|l| l.contains(text))
        })
        .await
    }

    /// Sends `signal` (`-INT`, `-TERM`) and waits for the exit.
    pub fn stop(mut self, signal: &str) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let status = self.child.wait().expect("portwarden exits");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let lines = self.lines();
        (status, lines)
    }

    /// Sends `signal` and waits for the exit, keeping the agent (and its
    /// stderr lines) around.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let _ = Command::new("kill").args([signal, &self.child.id().to_string()]).status();
        self.child.wait().expect("portwarden exits")
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Open file descriptors and threads of the process.
    pub fn fds_and_threads(&self) -> (usize, usize) {
        let count = |dir: String| std::fs::read_dir(dir).map_or(0, Iterator::count);
        let pid = self.child.id();
        (count(format!("/proc/{pid}/fd")), count(format!("/proc/{pid}/task")))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
