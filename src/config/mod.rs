//! The agent's configuration file (TOML), merged under environment
//! variables and flags.
//!
//! Every table denies unknown keys, so a typo is an error naming the key and
//! its line, never a silently ignored setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod logs;
mod nids;
mod runtimes;
mod streams;

pub use logs::{ForwardConfig, LogsConfig, SyslogConfig};
pub use nids::{NidsConfig, SuricataMode};
pub use runtimes::{ContainerdConfig, CriConfig, CriEvents, DockerConfig, PodmanConfig, RuntimeConfig, RuntimesConfig};
pub use streams::{AlertsConfig, FlowsConfig};

use anyhow::Context;
use portwarden_core::{DetectOptions, InventoryOptions, Registry, RuntimeEnv, RuntimeName};
use serde::{Deserialize, Serialize};

/// Every key at its default, commented: what `portwarden config default` prints.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the host's filesystem is visible. Runtime sockets are looked for
    /// under it. Default: `/`. Example: `host_root = "/host"`.
    pub host_root: Option<PathBuf>,
    /// Where the host's `/proc` is visible. Default: `/host/proc` when it
    /// exists, else `/proc`.
    pub proc_root: Option<PathBuf>,
    /// The lock that keeps a second agent off this host. Default:
    /// `<proc_root>/1/root/run/portwarden.lock` (the host's `/run`, through
    /// its PID 1). Example: `lock_file = "/run/portwarden.lock"`.
    pub lock_file: Option<PathBuf>,
    /// The agent's own logs.
    pub log: LogConfig,
    /// Container runtime detection.
    pub runtimes: RuntimesConfig,
    /// Packet capture.
    pub capture: CaptureConfig,
    /// Log collection.
    pub logs: LogsConfig,
    /// Intrusion detection.
    pub nids: NidsConfig,
    /// Where alerts go besides the log outputs.
    pub alerts: AlertsConfig,
    /// Where flow records go besides the log outputs.
    pub flows: FlowsConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The gRPC API (`portwarden.v1`).
    pub api: ApiConfig,
}

/// `[api]`: the gRPC API the CLI and other programs use.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve it at all. Default: `true`.
    pub enabled: bool,
    /// The unix socket, created mode 0600 (root only). Default:
    /// `/run/portwarden/portwarden.sock`.
    pub socket: PathBuf,
    /// Also serve it on TCP, with mutual TLS. Default: off.
    pub tcp: Option<ApiTcpConfig>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { enabled: true, socket: portwarden_proto::DEFAULT_SOCKET.into(), tcp: None }
    }
}

/// `[api.tcp]`: the API on TCP. Clients must present a certificate that
/// `client_ca` signed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTcpConfig {
    /// Where to listen. Example: `listen = "0.0.0.0:9465"`.
    pub listen: std::net::SocketAddr,
    /// The agent's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs client certificates (PEM).
    pub client_ca: PathBuf,
}

/// `[metrics]`: Prometheus `/metrics` and `/healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve them at all. Default: `true`.
    pub enabled: bool,
    /// Where. Default: `127.0.0.1:9464`.
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)) }
    }
}

/// Largest snap length accepted: a 64 KiB GRO frame with room to spare
/// (the kernel refuses ring blocks much larger than this).
const MAX_SNAPLEN: u32 = 1 << 20;
/// Largest kernel ring per captured namespace.
const MAX_RING_BYTES: usize = 1 << 30;

/// `[capture]`: per-container packet capture.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Capture at all. Default: `true`.
    pub enabled: bool,
    /// Bytes kept per frame; GRO frames reach 64 KiB. Default: `130816`
    /// (the most a 128 KiB ring block holds).
    pub snaplen: u32,
    /// A tcpdump-syntax filter applied in the kernel to every capture.
    /// Default: empty (everything). Example: `filter = "not port 22"`.
    pub filter: String,
    /// Kernel ring memory per captured namespace at first, in bytes; it
    /// counts in the agent's RSS once per namespace. Default: 256 KiB.
    pub ring_bytes: usize,
    /// When the kernel drops frames, the ring is replaced by one this big
    /// (once). Default: 4 MiB. Equal to `ring_bytes` keeps it fixed, which
    /// dropped fewer frames under a flood (measured: a fixed 4 MiB ring).
    /// Example: `ring_max_bytes = 67108864`.
    pub ring_max_bytes: usize,
    /// How long the kernel may hold a partly filled block (latency at low
    /// rates). Default: `20ms`.
    #[serde(with = "crate::duration")]
    pub block_timeout: Duration,
    /// How long ready ring blocks may wait to be read together: less CPU
    /// per frame, up to this much more latency. Default: `0s` (read at
    /// once); `portwarden capture -w` uses at least `200ms`.
    #[serde(with = "crate::duration")]
    pub read_delay: Duration,
    /// Emit an EVE `flow` record (JSON line on stdout) for each ended flow.
    /// Default: `true`.
    pub flows: bool,
    /// `[capture.prestart]`: attach before containers run.
    pub prestart: PrestartConfig,
}

/// `[capture.prestart]`: pre-start attach through fanotify, so a container's
/// first packets are captured (needs `CAP_SYS_ADMIN`, Linux 5.0, the
/// host's PID namespace and its runtimes under `host_root`; otherwise
/// containers are attached from runtime events, and `status` says why).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrestartConfig {
    /// Default: `true`.
    pub enabled: bool,
    /// More OCI runtimes or monitors to mark, as paths on the host, beside
    /// the usual places of runc, crun and conmon. Example:
    /// `runtimes = ["/opt/bin/runc"]`.
    pub runtimes: Vec<PathBuf>,
    /// How long a container's start may be held while its capture
    /// attaches; then it goes on regardless (counted). At most `100ms`.
    /// Default: `80ms`.
    #[serde(with = "crate::duration")]
    pub answer_within: Duration,
    /// How long a created container's pid file is awaited. Default: `10s`.
    #[serde(with = "crate::duration")]
    pub pending_ttl: Duration,
}

impl Default for PrestartConfig {
    fn default() -> Self {
        let d = portwarden_prestart::HookOptions::default();
        Self { enabled: true, runtimes: Vec::new(), answer_within: d.answer_within, pending_ttl: d.pending_ttl }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        let d = portwarden_core::CaptureOptions::default();
        Self {
            enabled: true,
            snaplen: d.snaplen,
            filter: String::new(),
            ring_bytes: d.ring_bytes,
            ring_max_bytes: d.ring_max_bytes,
            block_timeout: d.block_timeout,
            read_delay: d.read_delay,
            flows: true,
            prestart: PrestartConfig::default(),
        }
    }
}

impl CaptureConfig {
    /// The engine's options.
    pub fn options(&self) -> portwarden_core::CaptureOptions {
        portwarden_core::CaptureOptions {
            snaplen: self.snaplen,
            filter: (!self.filter.trim().is_empty()).then(|| self.filter.clone()),
            ring_bytes: self.ring_bytes,
            ring_max_bytes: self.ring_max_bytes.max(self.ring_bytes),
            block_timeout: self.block_timeout,
            read_delay: self.read_delay,
        }
    }
}

/// `[log]`: the agent's own diagnostics.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. Default: `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `portwarden_core=debug`. Default: `info`.
    /// The `RUST_LOG` environment variable overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// How the agent writes its own logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// Reads and validates a config file. Errors name the file, the line and
    /// the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses config text and checks values serde cannot.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but cannot work; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let r = &self.runtimes;
        anyhow::ensure!(!r.probe_timeout.is_zero(), "runtimes.probe_timeout must be more than 0s");
        anyhow::ensure!(!r.request_timeout.is_zero(), "runtimes.request_timeout must be more than 0s");
        anyhow::ensure!(!r.cri.poll_interval.is_zero(), "runtimes.cri.poll_interval must be more than 0s");
        let c = &self.capture;
        let p = &c.prestart;
        anyhow::ensure!(
            !p.answer_within.is_zero() && p.answer_within <= portwarden_prestart::HARD_LIMIT,
            "capture.prestart.answer_within must be more than 0s and at most 100ms, got {:?}",
            p.answer_within
        );
        anyhow::ensure!(!p.pending_ttl.is_zero(), "capture.prestart.pending_ttl must be more than 0s");
        anyhow::ensure!(
            (1..=MAX_SNAPLEN).contains(&c.snaplen),
            "capture.snaplen must be 1..={MAX_SNAPLEN}, got {}",
            c.snaplen
        );
        anyhow::ensure!(
            c.ring_bytes <= MAX_RING_BYTES,
            "capture.ring_bytes must be at most {MAX_RING_BYTES}, got {}",
            c.ring_bytes
        );
        anyhow::ensure!(
            c.ring_max_bytes <= MAX_RING_BYTES,
            "capture.ring_max_bytes must be at most {MAX_RING_BYTES}, got {}",
            c.ring_max_bytes
        );
        anyhow::ensure!(!c.block_timeout.is_zero(), "capture.block_timeout must be more than 0s");
        anyhow::ensure!(
            !self.api.enabled || !self.api.socket.as_os_str().is_empty(),
            "api.socket must be a path (or set api.enabled = false)"
        );
        self.logs.validate()?;
        self.alerts.validate()?;
        self.flows.validate()?;
        self.nids.validate()
    }

    /// The pre-start hook's options.
    pub fn prestart_options(&self) -> portwarden_prestart::HookOptions {
        let p = &self.capture.prestart;
        portwarden_prestart::HookOptions {
            host_root: self.host_root(),
            proc_root: self.proc_root(),
            runtimes: p.runtimes.clone(),
            answer_within: p.answer_within,
            pending_ttl: p.pending_ttl,
        }
    }

    /// The host root, defaulted.
    pub fn host_root(&self) -> PathBuf {
        self.host_root.clone().unwrap_or_else(|| PathBuf::from("/"))
    }

    /// The proc root, defaulted: `/host/proc` when the host's `/proc` is
    /// mounted there, else the agent's own `/proc` (running on the host).
    pub fn proc_root(&self) -> PathBuf {
        self.proc_root.clone().unwrap_or_else(|| {
            let mounted = Path::new("/host/proc");
            if mounted.join("1").exists() { mounted.to_path_buf() } else { PathBuf::from("/proc") }
        })
    }

    /// The conflict guard's lock file, defaulted.
    pub fn lock_file(&self) -> PathBuf {
        self.lock_file.clone().unwrap_or_else(|| self.proc_root().join("1/root/run/portwarden.lock"))
    }

    /// Where the agent lock may be, in order: [`Config::lock_file`], then,
    /// unless one is configured, `/run/portwarden.lock` in the agent's own
    /// view (the host's `/run` for an agent on the host) for when the host's
    /// PID 1 cannot be reached.
    pub fn lock_files(&self) -> Vec<PathBuf> {
        let mut all = vec![self.lock_file()];
        if self.lock_file.is_none() {
            all.push(PathBuf::from("/run/portwarden.lock"));
        }
        all
    }

    /// What [`Registry::detect`](portwarden_core::Registry::detect) needs,
    /// for the runtimes `registry` holds.
    pub fn detect_options(&self, registry: &Registry) -> DetectOptions {
        let mut opts = DetectOptions {
            host_root: self.host_root(),
            env: RuntimeEnv { proc_root: self.proc_root() },
            probe_timeout: self.runtimes.probe_timeout,
            only: self.runtimes.only.as_ref().map(|only| only.iter().cloned().map(RuntimeName::new).collect()),
            ..DetectOptions::default()
        };
        for name in registry.names() {
            let (enabled, sockets) = self.runtimes.get(name.as_str());
            if !sockets.is_empty() {
                opts.pinned.insert(name.clone(), sockets.to_vec());
            }
            if !enabled {
                opts.disabled.insert(name);
            }
        }
        opts
    }

    /// Checks that every runtime the config names (a `[runtimes.<name>]`
    /// section, `--runtime`) is one `registry` holds, and that the
    /// registry names each runtime once.
    pub fn check_runtimes(&self, registry: &Registry) -> anyhow::Result<()> {
        registry.validate()?;
        let names = registry.names();
        for name in self.runtimes.named() {
            if !names.iter().any(|n| n == name) {
                let known: Vec<&str> = names.iter().map(RuntimeName::as_str).collect();
                anyhow::bail!("unknown runtime `{name}` (registered: {})", known.join(", "));
            }
        }
        Ok(())
    }

    /// What the [`Inventory`](portwarden_core::Inventory) needs.
    pub fn inventory_options(&self) -> InventoryOptions {
        let every = self.runtimes.resync_interval;
        InventoryOptions { resync_interval: (!every.is_zero()).then_some(every), ..InventoryOptions::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_the_key_and_the_line() {
        let err =
            Config::parse("[runtimes]\nprobe_timeout = \"1s\"\n\n[runtimes.docker]\nsocket = []\n").expect_err("typo");
        let text = format!("{err:#}");
        assert!(text.contains("socket"), "{text}");
        assert!(text.contains("line 5"), "{text}");
    }

    #[test]
    fn bad_values_are_errors_too() {
        let err = Config::parse("[runtimes]\nprobe_timeout = \"fast\"\n").expect_err("bad duration");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(Config::parse("[log]\nformat = \"xml\"\n").is_err());
    }

    #[test]
    fn unworkable_values_name_their_key() {
        for (text, key) in [
            ("[runtimes.cri]\npoll_interval = \"0s\"\n", "runtimes.cri.poll_interval"),
            ("[capture]\nsnaplen = 0\n", "capture.snaplen"),
            ("[capture]\nsnaplen = 2000000000\n", "capture.snaplen"),
            ("[logs.syslog]\nallowed_sources = [\"10.0.0.0/40\"]\n", "logs.syslog.allowed_sources"),
            ("[[logs.outputs]]\ntype = \"syslog\"\naddress = \"nohost\"\n", "logs.outputs[0].address"),
        ] {
            let err = Config::parse(text).expect_err(key);
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
    }

    #[test]
    fn sockets_pin_and_enabled_false_disables() {
        let cfg =
            Config::parse("host_root = \"/host\"\n[runtimes.docker]\nenabled = false\nsockets = [\"/tmp/d.sock\"]\n")
                .expect("valid");
        let opts = cfg.detect_options(&crate::default_registry(&cfg));
        assert_eq!(opts.host_root, PathBuf::from("/host"));
        let docker = RuntimeName::from_static("docker");
        assert!(opts.disabled.contains(&docker));
        assert_eq!(opts.pinned[&docker], [PathBuf::from("/tmp/d.sock")]);
    }

    #[test]
    fn a_runtime_section_is_keyed_by_name_and_checked_against_the_registry() {
        let cfg = Config::parse(
            "[runtimes.static]
sockets = [\"/tmp/s.json\"]\n[runtimes.static.options]\nfile = \"x\"\n",
        )
        .expect("any name parses");
        assert_eq!(cfg.runtimes.get("static"), (true, &[PathBuf::from("/tmp/s.json")][..]));
        assert_eq!(cfg.runtimes.other["static"].options["file"].as_str(), Some("x"));
        let err = cfg.check_runtimes(&crate::default_registry(&cfg)).expect_err("not registered");
        assert!(
            err.to_string().contains("unknown runtime `static` (registered: docker, containerd, cri, podman)"),
            "{err}"
        );
        let mut only = Config::default();
        only.runtimes.only = Some(vec!["podman".into(), "dockr".into()]);
        let err = only.check_runtimes(&crate::default_registry(&only)).expect_err("typo");
        assert!(err.to_string().contains("`dockr`"), "{err}");
    }

    #[test]
    fn a_typo_in_an_output_names_the_key() {
        let err = Config::parse("[[logs.outputs]]\ntype = \"file\"\npath = \"/x\"\nmax_byte = 1\n").expect_err("typo");
        assert!(format!("{err:#}").contains("max_byte"), "{err:#}");
    }

    #[test]
    fn the_commented_default_is_the_default() {
        assert_eq!(Config::parse(DEFAULT_TOML).expect("default.toml parses"), Config::default());
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let end = start + readme[start..].find("```").expect("closed");
        Config::parse(&readme[start..end]).expect("the README's config example is valid");
    }

    #[test]
    fn the_default_config_round_trips() {
        let text = toml::to_string(&Config::default()).expect("serialize");
        assert_eq!(Config::parse(&text).expect("parse"), Config::default());
    }
}
