//! Command-line flags. Flags override environment variables, which
//! override the config file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// Portwarden: per-container network intrusion detection and log collection.
#[derive(Debug, Parser)]
#[command(name = "portwarden", version, propagate_version = true)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (TOML).
    #[arg(long, global = true, env = "PORTWARDEN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the host's filesystem is visible; runtime sockets are looked for under it [default: /].
    #[arg(long, global = true, env = "PORTWARDEN_HOST_ROOT", value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Where the host's /proc is visible [default: /host/proc if present, else /proc].
    #[arg(long, global = true, env = "PORTWARDEN_PROC_ROOT", value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// Use this Docker socket instead of the default paths (repeatable; taken as given).
    #[arg(long, global = true, env = "PORTWARDEN_DOCKER_SOCKET", value_name = "PATH", value_delimiter = ',')]
    pub docker_socket: Vec<PathBuf>,
    /// Use this containerd socket instead of the default paths (repeatable; taken as given).
    #[arg(long, global = true, env = "PORTWARDEN_CONTAINERD_SOCKET", value_name = "PATH", value_delimiter = ',')]
    pub containerd_socket: Vec<PathBuf>,
    /// Use this CRI socket (CRI-O, containerd, ...) instead of the default paths (repeatable; taken as given).
    #[arg(long, global = true, env = "PORTWARDEN_CRI_SOCKET", value_name = "PATH", value_delimiter = ',')]
    pub cri_socket: Vec<PathBuf>,
    /// Use this Podman socket instead of the default paths (repeatable; taken as given).
    #[arg(long, global = true, env = "PORTWARDEN_PODMAN_SOCKET", value_name = "PATH", value_delimiter = ',')]
    pub podman_socket: Vec<PathBuf>,
    /// Pin sockets for any registered runtime: NAME=PATH (repeatable; taken as given).
    #[arg(long = "runtime-socket", global = true, env = "PORTWARDEN_RUNTIME_SOCKET", value_name = "NAME=PATH", value_delimiter = ',', value_parser = parse_pin)]
    pub runtime_sockets: Vec<(String, PathBuf)>,
    /// Watch only these containerd namespaces (repeatable) [default: all].
    #[arg(long, global = true, env = "PORTWARDEN_CONTAINERD_NAMESPACE", value_name = "NS", value_delimiter = ',')]
    pub containerd_namespace: Vec<String>,
    /// Use only these runtimes (repeatable), by name: docker, containerd, cri, podman, or any registered one.
    #[arg(long = "runtime", global = true, env = "PORTWARDEN_RUNTIME", value_name = "NAME", value_delimiter = ',')]
    pub runtimes: Vec<String>,
    /// Deadline for probing one runtime socket, e.g. 500ms or 2s [default: 2s].
    #[arg(long, global = true, env = "PORTWARDEN_PROBE_TIMEOUT", value_name = "DURATION", value_parser = crate::duration::parse)]
    pub probe_timeout: Option<Duration>,
    /// The lock that keeps a second agent off this host [default: PROC_ROOT/1/root/run/portwarden.lock].
    #[arg(long, global = true, env = "PORTWARDEN_LOCK_FILE", value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// The daemon's API socket: `run` serves it, other commands use it when it answers [default: /run/portwarden/portwarden.sock].
    #[arg(long, global = true, env = "PORTWARDEN_API_SOCKET", value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Where `run` serves /metrics and /healthz, and where `health` asks [default: 127.0.0.1:9464].
    /// In a pod: `$(POD_IP):9464`, so kubelet and Prometheus reach it.
    #[arg(long, global = true, env = "PORTWARDEN_METRICS_LISTEN", value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Never use a running daemon: commands do their own work (standalone).
    #[arg(long, global = true, env = "PORTWARDEN_STANDALONE")]
    pub standalone: bool,
    /// Format of the agent's own logs on stderr [default: text].
    #[arg(long, global = true, env = "PORTWARDEN_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// `portwarden capture` options.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Capture this container, by name or id prefix (repeatable) [default: every container].
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Capture the pod NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME")]
    pub pod: Option<String>,
    /// Capture the agent's own network namespace (the host's, with --net=host) instead.
    #[arg(long, conflicts_with_all = ["containers", "pod"])]
    pub host: bool,
    /// A tcpdump-syntax filter, enforced in the kernel.
    #[arg(short = 'f', long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this many packets.
    #[arg(short = 'c', long, value_name = "COUNT")]
    pub count: Option<u64>,
    /// Write pcapng to FILE, or to stdout with `-`.
    #[arg(short = 'w', long, value_name = "FILE|-")]
    pub write: Option<std::path::PathBuf>,
    /// Bytes kept per packet; 0 keeps whole frames, as in tcpdump [default: the config's `capture.snaplen`, 130816].
    #[arg(short = 's', long)]
    pub snaplen: Option<u32>,
    /// Start a new file after this many bytes (FILE, FILE.1, FILE.2, ...); 0 never.
    #[arg(long, value_name = "BYTES", requires = "write", conflicts_with = "file_size")]
    pub rotate_bytes: Option<u64>,
    /// Start a new file after this many seconds; 0 never. (`-G` as in tcpdump.)
    #[arg(short = 'G', long, value_name = "SECONDS", requires = "write")]
    pub rotate_seconds: Option<u64>,
    /// As tcpdump's `-C`: start a new file after this many millions of bytes.
    #[arg(short = 'C', value_name = "MILLION_BYTES", requires = "write")]
    pub file_size: Option<u64>,
    /// A filter expression after the options, as tcpdump takes it (`tcp port 80`): the same as -f.
    #[arg(value_name = "EXPRESSION", num_args = 0.., conflicts_with = "filter")]
    pub expression: Vec<String>,
    /// The kernel ring in KiB, fixed, as tcpdump's `-B` [default: 2 MiB, grown on bursts to the
    /// config's `capture.ring_max_bytes`]. Through a daemon, its own rings serve.
    #[arg(short = 'B', long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub buffer_size: Option<u32>,
    /// Read every ring block as soon as it is ready. Without it, `-w` lets frames wait up to
    /// 200 ms to be read several blocks at once (as tcpdump buffers), which costs less CPU.
    #[arg(long)]
    pub immediate: bool,
}

impl CaptureArgs {
    /// The filter, from -f or the trailing expression.
    pub fn filter(&self) -> Option<String> {
        self.filter.clone().or_else(|| (!self.expression.is_empty()).then(|| self.expression.join(" ")))
    }

    /// Bytes per file before a new one starts (0 never): `--rotate-bytes`,
    /// or tcpdump's `-C` in millions of bytes.
    pub fn rotate_bytes(&self) -> u64 {
        self.rotate_bytes.or(self.file_size.map(|mb| mb.saturating_mul(1_000_000))).unwrap_or(0)
    }

    /// The fixed ring `-B` asks for, in bytes (tcpdump counts KiB).
    pub fn ring_bytes(&self) -> Option<usize> {
        self.buffer_size.map(|kib| kib as usize * 1024)
    }

    /// Bytes kept per frame: `-s 0` means whole frames, as in tcpdump
    /// (the most a ring block holds).
    pub fn snaplen(&self) -> Option<u32> {
        self.snaplen.map(|s| if s == 0 { portwarden_core::CaptureOptions::default().snaplen } else { s })
    }
}

/// `portwarden run` options.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Detect intrusions with these Suricata rules (a file or a directory of *.rules).
    #[arg(long, value_name = "PATH", env = "PORTWARDEN_RULES")]
    pub rules: Option<PathBuf>,
    /// Who runs Suricata: `managed` (the agent) or `external` (you; the agent reads its EVE).
    #[arg(long, value_name = "MODE", env = "PORTWARDEN_SURICATA")]
    pub suricata: Option<crate::config::SuricataMode>,
    /// Load Portwarden's built-in rules besides --rules (`false`: the user's rules only).
    #[arg(long, value_name = "BOOL", env = "PORTWARDEN_BUILTIN_RULES", value_parser = clap::builder::BoolishValueParser::new())]
    pub builtin_rules: Option<bool>,
    /// Attach capture before containers run (fanotify on the OCI runtimes); false attaches from runtime events.
    #[arg(long, value_name = "BOOL", env = "PORTWARDEN_PRESTART", value_parser = clap::builder::BoolishValueParser::new())]
    pub prestart: Option<bool>,
    /// No intrusion detection (capture and logs only), whatever the config says.
    #[arg(long, env = "PORTWARDEN_NO_DETECT", conflicts_with_all = ["rules", "suricata"])]
    pub no_detect: bool,
}

impl RunArgs {
    /// Applies the flags over `config`.
    pub fn apply(&self, config: &mut Config) {
        if self.no_detect {
            config.nids.enabled = Some(false);
        }
        if let Some(prestart) = self.prestart {
            config.capture.prestart.enabled = prestart;
        }
        if let Some(builtin) = self.builtin_rules {
            config.nids.builtin_rules = builtin;
        }
        if let Some(rules) = &self.rules {
            config.nids.rules.clone_from(rules);
            config.nids.enabled = Some(true);
        }
        if let Some(mode) = self.suricata {
            config.nids.suricata = mode;
            config.nids.enabled = Some(true);
        }
    }
}

/// `portwarden logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following new output until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Show this container, by name or id prefix (repeatable) [default: every container].
    #[arg(long = "container", value_name = "NAME|ID")]
    pub containers: Vec<String>,
    /// Show the pod NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME")]
    pub pod: Option<String>,
    /// Print records as JSON lines (the agent's output shape) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch every container runtime until SIGINT or SIGTERM (SIGHUP reloads rules).
    Run(RunArgs),
    /// Show intrusion alerts as they happen: the running daemon's, or, with no daemon, from detection run by this command.
    Alerts {
        /// Print EVE JSON lines (with the container) instead of text.
        #[arg(long)]
        json: bool,
        /// Keep following (the only behaviour: alerts are followed until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// Rules and engine, as for `run`.
        #[command(flatten)]
        run: RunArgs,
    },
    /// List containers from every detected runtime.
    Ps {
        /// Print JSON (an array of containers) instead of a table.
        #[arg(long)]
        json: bool,
        /// Include containers that are not running.
        #[arg(short, long)]
        all: bool,
    },
    /// Capture containers' traffic, like tcpdump: summary lines, or pcapng with -w.
    Capture(CaptureArgs),
    /// Show containers' stdout and stderr (Docker logs API or CRI log files); with -f and a running daemon, then its live stream, syslog and forward records included.
    Logs(LogsArgs),
    /// Rewrite a classic Fluent Bit config (-i/-f/-o/-s KEY VALUE), then exec Fluent Bit on it.
    ///
    /// Arguments: [-r RUN_PATH] [-c IN_CONFIG] [-m OUT_CONFIG] [-i|-f|-o|-s KEY VALUE]... [-- ARGS...]
    #[command(disable_help_flag = true)]
    FluentLaunch {
        /// The launcher's arguments, as `fluent-launch` takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Copy the standalone `fluent-launch` launcher into DIR (a volume shared with a Fluent Bit sidecar).
    ExportFluentBit {
        /// The directory to copy it into.
        dir: PathBuf,
    },
    /// Check the configuration (file, environment, flags), or print the default one.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show the mode (full, host-only, sidecar) and why; with a running daemon, its decisions and counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running agent's /healthz (a container health check): exit 0 when it is ready, 1 otherwise.
    Health,
    /// Show which runtime sockets were detected, and why every other candidate was not.
    Runtimes {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `portwarden config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Load and validate the configuration; print problems (exit 1) or what would run.
    Check,
    /// Print every key at its default, commented.
    Default,
}

fn parse_pin(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok((name.to_owned(), PathBuf::from(path))),
        _ => Err(format!("expected NAME=PATH, got `{text}`")),
    }
}

impl GlobalArgs {
    /// Applies the flags (and their environment variables) over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(root) = &self.host_root {
            config.host_root = Some(root.clone());
        }
        if let Some(root) = &self.proc_root {
            config.proc_root = Some(root.clone());
        }
        let mut pins: Vec<(&str, Vec<PathBuf>)> = Vec::new();
        for (name, sockets) in [
            ("docker", &self.docker_socket),
            ("containerd", &self.containerd_socket),
            ("cri", &self.cri_socket),
            ("podman", &self.podman_socket),
        ] {
            if !sockets.is_empty() {
                pins.push((name, sockets.clone()));
            }
        }
        for (name, path) in &self.runtime_sockets {
            match pins.iter_mut().find(|(n, _)| n == name) {
                Some((_, sockets)) => sockets.push(path.clone()),
                None => pins.push((name, vec![path.clone()])),
            }
        }
        for (name, sockets) in pins {
            config.runtimes.pin(name, sockets);
        }
        if !self.containerd_namespace.is_empty() {
            config.runtimes.containerd.namespaces.clone_from(&self.containerd_namespace);
        }
        if !self.runtimes.is_empty() {
            config.runtimes.only = Some(self.runtimes.clone());
        }
        if let Some(timeout) = self.probe_timeout {
            config.runtimes.probe_timeout = timeout;
        }
        if let Some(lock) = &self.lock_file {
            config.lock_file = Some(lock.clone());
        }
        if let Some(socket) = &self.api_socket {
            config.api.socket.clone_from(socket);
        }
        if let Some(listen) = self.metrics_listen {
            config.metrics.listen = listen;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn capture(args: &[&str]) -> CaptureArgs {
        let cli = Cli::try_parse_from([&["portwarden", "capture"], args].concat()).expect("parses");
        match cli.command {
            Command::Capture(c) => c,
            _ => unreachable!("capture"),
        }
    }

    #[test]
    fn capture_flags_keep_tcpdumps_meanings() {
        let c = capture(&["-s", "0", "-c", "5", "-w", "-", "-C", "2", "-G", "60", "tcp", "port", "80"]);
        assert_eq!(c.snaplen(), Some(portwarden_core::CaptureOptions::default().snaplen), "-s 0: whole frames");
        assert_eq!(c.count, Some(5));
        assert_eq!(c.rotate_bytes(), 2_000_000, "-C counts millions of bytes");
        assert_eq!(c.rotate_seconds, Some(60));
        assert_eq!(c.filter().as_deref(), Some("tcp port 80"), "the trailing expression");
        assert_eq!(capture(&["-s", "96"]).snaplen(), Some(96));
        assert_eq!(capture(&["-f", "udp"]).filter().as_deref(), Some("udp"));
        assert!(Cli::try_parse_from(["portwarden", "capture", "-f", "udp", "tcp"]).is_err(), "-f and an expression");
        assert!(Cli::try_parse_from(["portwarden", "capture", "-C", "1"]).is_err(), "-C needs -w");
        assert_eq!(capture(&["-B", "65536"]).ring_bytes(), Some(64 << 20), "-B counts KiB");
        assert_eq!(capture(&[]).ring_bytes(), None);
        assert!(Cli::try_parse_from(["portwarden", "capture", "-B", "0"]).is_err(), "an empty ring");
    }
}
