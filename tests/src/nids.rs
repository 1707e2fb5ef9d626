//! A `portwarden run --rules` of the test's own: detection only (log
//! collection off), its own run directory (and so its own mirror pipe),
//! records in a JSON-lines file.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::agent::Agent;
use crate::{eventually, portwarden_bin, unique_name};

/// The rules every detection test uses.
pub const RULES: &str = "\
alert http any any -> any any (msg:\"PW test sqlmap user agent\"; flow:established,to_server; http.user_agent; content:\"sqlmap\"; sid:9000001; rev:1;)
alert dns any any -> any any (msg:\"PW test dns query\"; dns.query; content:\"evil.portwarden.test\"; nocase; sid:9000002; rev:1;)
alert tcp any any -> any any (msg:\"PW test tcp payload\"; flow:established; content:\"PORTWARDEN-ATTACK\"; sid:9000003; rev:1;)
";

/// A detecting agent.
pub struct NidsAgent {
    /// The running agent.
    pub agent: Agent,
    /// The test's directory.
    pub dir: PathBuf,
    /// The JSON-lines output.
    pub out: PathBuf,
    /// The agent's run directory (Suricata's files, the mirror and EVE pipes).
    pub run_dir: PathBuf,
}

impl NidsAgent {
    /// Starts an agent with `rules` (a rules file's text) and extra `[nids]`
    /// keys, and waits for its managed Suricata's engine to start.
    pub async fn start(prefix: &str, rules: &str, extra_nids: &str) -> NidsAgent {
        let agent = Self::spawn(prefix, rules, extra_nids);
        agent.agent.wait_for_text("Suricata engine started", Duration::from_secs(120)).await;
        agent
    }

    /// Starts an agent without waiting for a managed Suricata (there is
    /// none, or the test expects it to fail).
    pub fn spawn(prefix: &str, rules: &str, extra_nids: &str) -> NidsAgent {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        let run_dir = dir.join("run");
        std::fs::create_dir_all(dir.join("rules")).expect("test dir");
        std::fs::write(dir.join("rules/test.rules"), rules).expect("rules");
        let out = dir.join("out.json");
        // `{dir}` in the extra keys stands for the test's directory.
        let mut extra_nids = extra_nids.replace("{dir}", &dir.display().to_string());
        // Only the test's rules, unless the test asks for the built-in ones.
        if !extra_nids.contains("builtin_rules") {
            extra_nids.push_str("\nbuiltin_rules = false");
        }
        let config = format!(
            "[capture]\nflows = false\n\n[logs]\nenabled = false\nstate_dir = \"\"\n\n\
             [nids]\nrun_dir = \"{run}\"\nrules = \"{rules}\"\n{extra_nids}\n\n\
             [[logs.outputs]]\ntype = \"file\"\npath = \"{out}\"\n",
            run = run_dir.display(),
            rules = dir.join("rules").display(),
            out = out.display(),
        );
        std::fs::write(dir.join("portwarden.toml"), config).expect("config");
        let mut command = Command::new(portwarden_bin());
        command.arg("--config").arg(dir.join("portwarden.toml")).args(["--log-format", "json", "run"]);
        let agent = Agent::spawn_command(&mut command, Stdio::null());
        NidsAgent { agent, dir, out, run_dir }
    }

    /// Every EVE event written so far.
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Alerts with signature `sid` attributed to container `id`.
    pub fn alerts(&self, sid: u64, id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event_type"] == "alert" && e["alert"]["signature_id"] == sid && e["container"]["id"] == id)
            .collect()
    }

    /// Waits until the agent captures (and so mirrors) container `id`:
    /// under load attaching can take longer than any fixed pause.
    pub async fn wait_captured(&self, id: &str) {
        eventually(&format!("the capture of {id}"), Duration::from_secs(60), || {
            self.agent.find_json("capture attached", |v| v["container"] == id)
        })
        .await;
    }

    /// Waits for an alert `sid` attributed to `id`.
    pub async fn wait_alert(&self, sid: u64, id: &str) -> Value {
        eventually(&format!("alert {sid} for {id}"), Duration::from_secs(60), || {
            self.alerts(sid, id).into_iter().next()
        })
        .await
    }

    /// The managed Suricata's pid.
    pub fn suricata_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.run_dir.join("suricata/suricata.pid")).ok()?.trim().parse().ok()
    }
}

impl Drop for NidsAgent {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.agent.pid().to_string()]).status();
        let _ = eventually_blocking(|| !std::path::Path::new(&format!("/proc/{}", self.agent.pid())).exists());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn eventually_blocking(done: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
