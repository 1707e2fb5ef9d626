//! A daemon for API tests: capture on, logs into a file of its own, syslog
//! on a free port, and its API on a socket of its own.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent::Agent;
use crate::logs::free_port;
use crate::{docker_ok, portwarden_bin, test_network, unique_name};

/// A running daemon, its config file, and its syslog port.
pub struct ApiAgent {
    /// The running agent (its `api_socket` is the API).
    pub agent: Agent,
    /// Its config file, for CLI commands that should find it.
    pub config: PathBuf,
    /// Its syslog port (TCP and UDP).
    pub syslog_port: u16,
}

impl ApiAgent {
    /// Starts the daemon with `extra` appended to its config, and waits for
    /// its API and its first inventory sync.
    pub async fn start(prefix: &str, extra: &str) -> ApiAgent {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("test dir");
        let syslog = free_port();
        let config = format!(
            "[capture]\nflows = false\n\n[logs]\nstate_dir = \"{state}\"\n\n\
             [logs.syslog]\nbind = \"127.0.0.1\"\ntcp_port = {syslog}\nudp_port = {syslog}\n\n\
             [logs.forward]\nenabled = false\n\n[metrics]\nenabled = false\n\n[nids]\nenabled = false\n\n\
             [[logs.outputs]]\ntype = \"file\"\npath = \"{out}\"\n\n{extra}\n",
            state = dir.join("state").display(),
            out = dir.join("out.json").display(),
        );
        let path = dir.join("portwarden.toml");
        std::fs::write(&path, config).expect("config");
        let mut command = Command::new(portwarden_bin());
        command.arg("--config").arg(&path).args(["--log-format", "json", "run"]);
        let agent = Agent::spawn_command(&mut command, Stdio::null());
        let within = Duration::from_secs(60);
        agent.wait_for_text("API on unix socket", within).await;
        agent.wait_for_text("runtime synced", within).await;
        ApiAgent { agent, config: path, syslog_port: syslog }
    }

    /// The `portwarden` CLI, pointed at this daemon.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(portwarden_bin());
        command.arg("--config").arg(&self.config).env("PORTWARDEN_API_SOCKET", &self.agent.api_socket);
        command
    }

    /// The records its file output holds so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let out = self.config.with_file_name("out.json");
        let text = std::fs::read_to_string(out).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// A client of its API.
    pub async fn client(&self) -> portwarden_proto::AgentClient {
        portwarden_proto::connect_unix(&self.agent.api_socket).await.expect("the API answers on its socket")
    }
}

/// The test network's gateway (the host's side of its bridge): a target
/// for test pings that stays on this machine.
pub fn gateway() -> String {
    docker_ok(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &test_network()])
}

/// A shell command that pings the test network's gateway once.
pub fn ping_gateway() -> String {
    format!("ping -c 1 -W 1 {} >/dev/null 2>&1", gateway())
}

/// A shell loop that pings the test network's gateway every `interval`.
pub fn pinger(interval: &str) -> String {
    format!("while true; do {}; sleep {interval}; done", ping_gateway())
}
