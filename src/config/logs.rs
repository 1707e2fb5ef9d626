//! `[logs]`: container log collection, the syslog and forward listeners,
//! and where records go.

use std::net::IpAddr;
use std::path::PathBuf;

use portwarden_logs::{Cidr, ForwardOptions, OutputConfig, SyslogOptions, TailOptions};
use serde::{Deserialize, Serialize};

/// `[logs]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Collect logs at all. Default: `true`.
    pub enabled: bool,
    /// Tail CRI containers' log files. Default: `true`. (Reading through a
    /// runtime's logs API is that runtime's setting: `[runtimes.docker]`
    /// `logs`.)
    pub cri: bool,
    /// Where resume points are kept; empty keeps none (every start reads
    /// containers' logs from their beginning). Default: `/var/lib/portwarden`.
    pub state_dir: PathBuf,
    /// The `host` of records whose sender names none. Default: this host's name.
    pub host: String,
    /// Longest message kept; longer ones are cut and marked `truncated`.
    /// Default: `786432`.
    pub max_message_bytes: usize,
    /// Batches queued in front of each output before sources are slowed.
    /// Default: `32`.
    pub queue_batches: usize,
    /// The syslog listener.
    pub syslog: SyslogConfig,
    /// The Fluentd forward listener.
    pub forward: ForwardConfig,
    /// Where records go. Default: one `{ type = "stdout" }`.
    /// Example: `[[logs.outputs]]` with `type = "file"`, `path = "/var/log/portwarden.json"`.
    pub outputs: Vec<OutputConfig>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cri: true,
            state_dir: PathBuf::from("/var/lib/portwarden"),
            host: String::new(),
            max_message_bytes: 786_432,
            queue_batches: 32,
            syslog: SyslogConfig::default(),
            forward: ForwardConfig::default(),
            outputs: vec![OutputConfig::Stdout],
        }
    }
}

/// `[logs.syslog]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// Listen at all. Default: `true`.
    pub enabled: bool,
    /// Address to bind. Default: `0.0.0.0`.
    pub bind: IpAddr,
    /// TCP port; `0` turns TCP off. Default: `1514`.
    pub tcp_port: u16,
    /// UDP port; `0` turns UDP off. Default: `1514`.
    pub udp_port: u16,
    /// Source networks allowed to send. Default: empty (all).
    /// Example: `allowed_sources = ["127.0.0.0/8", "10.0.0.0/8"]`.
    pub allowed_sources: Vec<String>,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: IpAddr::from([0, 0, 0, 0]),
            tcp_port: 1514,
            udp_port: 1514,
            allowed_sources: Vec::new(),
        }
    }
}

/// `[logs.forward]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Listen at all. Default: `true`.
    pub enabled: bool,
    /// Address to bind. Default: `0.0.0.0`.
    pub bind: IpAddr,
    /// TCP port; `0` turns TCP off. Default: `24224`.
    pub port: u16,
    /// Also listen on this unix socket. Default: none.
    /// Example: `unix_socket = "/var/run/fluent.sock"`.
    pub unix_socket: Option<PathBuf>,
    /// Source networks allowed to connect over TCP. Default: empty (all).
    pub allowed_sources: Vec<String>,
    /// Largest forward message, and the most a compressed one may inflate
    /// to. Default: `67108864` (64 MiB).
    pub max_chunk_bytes: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 24224,
            unix_socket: None,
            allowed_sources: Vec::new(),
            max_chunk_bytes: 64 << 20,
        }
    }
}

fn cidrs(key: &str, list: &[String]) -> anyhow::Result<Vec<Cidr>> {
    list.iter().map(|s| s.parse::<Cidr>().map_err(|e| anyhow::anyhow!("{key}: {e}"))).collect()
}

fn port(p: u16) -> Option<u16> {
    (p != 0).then_some(p)
}

impl LogsConfig {
    /// Rejects values that parse but cannot work; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.max_message_bytes >= 64, "logs.max_message_bytes must be at least 64");
        anyhow::ensure!(self.queue_batches >= 1, "logs.queue_batches must be at least 1");
        anyhow::ensure!(!self.outputs.is_empty(), "logs.outputs must name at least one output");
        anyhow::ensure!(self.forward.max_chunk_bytes >= 1024, "logs.forward.max_chunk_bytes must be at least 1024");
        cidrs("logs.syslog.allowed_sources", &self.syslog.allowed_sources)?;
        cidrs("logs.forward.allowed_sources", &self.forward.allowed_sources)?;
        validate_outputs("logs.outputs", &self.outputs)
    }

    /// The syslog server's options.
    pub fn syslog_options(&self) -> anyhow::Result<SyslogOptions> {
        Ok(SyslogOptions {
            bind: self.syslog.bind,
            tcp_port: port(self.syslog.tcp_port),
            udp_port: port(self.syslog.udp_port),
            allowed: cidrs("logs.syslog.allowed_sources", &self.syslog.allowed_sources)?,
            max_message: self.max_message_bytes,
        })
    }

    /// The forward server's options.
    pub fn forward_options(&self) -> anyhow::Result<ForwardOptions> {
        Ok(ForwardOptions {
            bind: self.forward.bind,
            port: port(self.forward.port),
            unix_socket: self.forward.unix_socket.clone(),
            allowed: cidrs("logs.forward.allowed_sources", &self.forward.allowed_sources)?,
            max_message: self.max_message_bytes,
            max_chunk: self.forward.max_chunk_bytes,
        })
    }

    /// The CRI tailer's options.
    pub fn tail_options(&self) -> TailOptions {
        TailOptions { max_line: self.max_message_bytes, ..TailOptions::default() }
    }

    /// The state directory, if any.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        (!self.state_dir.as_os_str().is_empty()).then_some(self.state_dir.as_path())
    }

    /// The host name records carry by default.
    pub fn host(&self) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    }
}

/// Checks each output of the list under `key` (`logs.outputs`,
/// `alerts.outputs`); errors name the entry.
pub(crate) fn validate_outputs(key: &str, outputs: &[OutputConfig]) -> anyhow::Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        match o {
            OutputConfig::File { max_bytes, .. } => {
                anyhow::ensure!(*max_bytes >= 4096, "{key}[{i}].max_bytes must be at least 4096");
            }
            OutputConfig::Syslog { address, tls, .. } => {
                anyhow::ensure!(
                    address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
                    "{key}[{i}].address must be host:port, got `{address}`"
                );
                if let Some(tls) = tls {
                    tls.check().map_err(|e| anyhow::anyhow!("{key}[{i}] (syslog): {e}"))?;
                }
            }
            OutputConfig::Otlp(otlp) => {
                otlp.validate().map_err(|e| anyhow::anyhow!("{key}[{i}] (otlp): {e}"))?;
            }
            OutputConfig::Stdout => {}
        }
    }
    Ok(())
}
