//! A Suricata the agent runs itself: a generated `suricata.yaml`, the
//! user's rules, EVE over a unix socket back to the agent, restarts with
//! backoff after a crash, rule reloads on request, and rejected rules
//! reported one by one.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// What the generated config asks of Suricata.
#[derive(Clone, Debug)]
pub struct SuricataOptions {
    /// The executable. Default: `suricata` on `PATH`.
    pub binary: PathBuf,
    /// A rule file, or a directory whose `*.rules` are all loaded.
    pub rules: PathBuf,
    /// The interface Suricata reads (the mirror's far end).
    pub interface: String,
    /// The network namespace that interface is in.
    pub netns: String,
    /// Where the config, logs and pid file go.
    pub run_dir: PathBuf,
    /// The EVE socket the agent listens on.
    pub eve_socket: PathBuf,
    /// EVE event types besides `alert` and `stats` (`flow`, `dns`, `http`, `tls`).
    pub extra_types: Vec<String>,
    /// Seconds between `stats` events.
    pub stats_interval: u32,
}

/// Counters about the managed Suricata.
#[derive(Debug, Default)]
pub struct SuricataHealth {
    /// Times it was started.
    pub starts: AtomicU64,
    /// Times it exited without being asked to.
    pub crashes: AtomicU64,
    /// Rules it rejected at the last start.
    pub rejected_rules: AtomicU64,
    /// Rules it loaded at the last start.
    pub loaded_rules: AtomicU64,
    /// Rule loads it reported (the start, then each reload).
    pub rule_loads: AtomicU64,
}

/// The `*.rules` files `rules` stands for, sorted.
pub fn rule_files(rules: &Path) -> io::Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(rules).map_err(|e| io::Error::new(e.kind(), format!("rules {}: {e}", rules.display())))?;
    if meta.is_file() {
        return Ok(vec![rules.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    Ok(files)
}

/// Suricata's config for the agent: af-packet on the mirror interface,
/// flows tracked per VLAN (that is, per container), checksums not checked
/// (captured frames carry offloaded, unfinished checksums), EVE to the
/// agent's socket.
pub fn config_yaml(o: &SuricataOptions) -> io::Result<String> {
    let files = rule_files(&o.rules)?;
    let mut y = String::from("%YAML 1.1\n---\n");
    y.push_str(
        "vars:\n  address-groups:\n    HOME_NET: \"[10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7]\"\n    EXTERNAL_NET: \"any\"\n",
    );
    for g in [
        "HTTP_SERVERS",
        "SMTP_SERVERS",
        "SQL_SERVERS",
        "DNS_SERVERS",
        "TELNET_SERVERS",
        "AIM_SERVERS",
        "DC_SERVERS",
        "DNP3_SERVER",
        "DNP3_CLIENT",
        "MODBUS_CLIENT",
        "MODBUS_SERVER",
        "ENIP_CLIENT",
        "ENIP_SERVER",
    ] {
        let _ = writeln!(y, "    {g}: \"$HOME_NET\"");
    }
    y.push_str("  port-groups:\n");
    for (g, v) in [
        ("HTTP_PORTS", "80"),
        ("SHELLCODE_PORTS", "!80"),
        ("ORACLE_PORTS", "1521"),
        ("SSH_PORTS", "22"),
        ("DNP3_PORTS", "20000"),
        ("MODBUS_PORTS", "502"),
        ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
        ("FTP_PORTS", "21"),
        ("GENEVE_PORTS", "6081"),
        ("VXLAN_PORTS", "4789"),
        ("TEREDO_PORTS", "3544"),
    ] {
        let _ = writeln!(y, "    {g}: \"{v}\"");
    }
    let _ = writeln!(y, "default-log-dir: {}", o.run_dir.display());
    y.push_str("rule-files:\n");
    for f in &files {
        let _ = writeln!(y, "  - {}", f.display());
    }
    for (key, file) in [("classification-file", "classification.config"), ("reference-config-file", "reference.config")]
    {
        let path = Path::new("/etc/suricata").join(file);
        if path.exists() {
            let _ = writeln!(y, "{key}: {}", path.display());
        }
    }
    y.push_str("outputs:\n  - eve-log:\n      enabled: yes\n      filetype: unix_stream\n");
    let _ = writeln!(y, "      filename: {}", o.eve_socket.display());
    y.push_str("      types:\n        - alert:\n            tagged-packets: no\n        - stats:\n            totals: yes\n            threads: no\n            deltas: no\n");
    for t in &o.extra_types {
        let _ = writeln!(y, "        - {t}");
    }
    let _ = writeln!(y, "stats:\n  enabled: yes\n  interval: {}", o.stats_interval.max(1));
    y.push_str("logging:\n  default-log-level: info\n  outputs:\n    - console:\n        enabled: yes\n");
    let _ = writeln!(
        y,
        "af-packet:\n  - interface: {}\n    cluster-id: 99\n    cluster-type: cluster_flow\n    defrag: yes\n    use-mmap: yes\n    tpacket-v3: yes\n    checksum-checks: no\n    threads: 1",
        o.interface
    );
    y.push_str("vlan:\n  use-for-tracking: true\n");
    y.push_str("stream:\n  checksum-validation: no\n");
    y.push_str("host-mode: sniffer-only\n");
    y.push_str("detect-engine:\n  - rule-reload: true\n");
    y.push_str("unix-command:\n  enabled: no\n");
    y.push_str("app-layer:\n  protocols:\n    http:\n      enabled: yes\n    tls:\n      enabled: yes\n    dns:\n      tcp:\n        enabled: yes\n      udp:\n        enabled: yes\n");
    Ok(y)
}

/// Runs Suricata until `cancel`, restarting it after a crash with backoff;
/// `reload` makes it re-read its rules (SIGUSR2).
pub async fn supervise(
    options: SuricataOptions,
    health: Arc<SuricataHealth>,
    reload: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let config = options.run_dir.join("suricata.yaml");
        let written = std::fs::create_dir_all(&options.run_dir)
            .and_then(|()| config_yaml(&options))
            .and_then(|yaml| std::fs::write(&config, yaml));
        if let Err(e) = written {
            error!(error = %e, "cannot write suricata.yaml; detection is off");
            return;
        }
        let pidfile = options.run_dir.join("suricata.pid");
        let _ = std::fs::remove_file(&pidfile);
        let netns = match crate::iface::open_netns(&options.netns) {
            Ok(fd) => fd,
            Err(e) => {
                error!(error = %e, "the mirror's namespace is gone; intrusion detection is off");
                return;
            }
        };
        let mut command = Command::new(&options.binary);
        // SAFETY: setns is async-signal-safe; the fd stays open until exec.
        unsafe {
            command.pre_exec(move || crate::iface::enter(&netns));
        }
        let spawned = command
            .arg("-c")
            .arg(&config)
            .arg("--af-packet")
            .arg("--pidfile")
            .arg(&pidfile)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                error!(binary = %options.binary.display(),
                    "Suricata is not installed; intrusion detection is off (capture and logs go on)");
                return;
            }
            Err(e) => {
                error!(binary = %options.binary.display(), error = %e, "cannot start Suricata; intrusion detection is off");
                return;
            }
        };
        health.starts.fetch_add(1, Ordering::Relaxed);
        info!(pid = child.id(), rules = %options.rules.display(), "Suricata started");
        let started = Instant::now();
        for pipe in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(report_console(pipe, Arc::clone(&health)));
        }
        let pid = child.id();
        let status = loop {
            tokio::select! {
                status = child.wait() => break Some(status),
                () = reload.notified() => {
                    if let Some(pid) = pid {
                        info!("reloading Suricata's rules");
                        // Rewrite the config first: the rule files may have changed.
                        if let Ok(yaml) = config_yaml(&options) {
                            let _ = std::fs::write(&config, yaml);
                        }
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
                    }
                }
                () = cancel.cancelled() => break None,
            }
        };
        let Some(status) = status else {
            if let Some(pid) = pid {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            return;
        };
        health.crashes.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        warn!(status = ?status.ok(), retry_in = ?backoff, "Suricata exited; restarting it");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Relays Suricata's console: rejected rules as warnings naming the rule,
/// the load summary as info, errors as errors.
async fn report_console(pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>, health: Arc<SuricataHealth>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("error parsing signature") {
            health.rejected_rules.fetch_add(1, Ordering::Relaxed);
            warn!(suricata = %line, "Suricata rejected a rule; the others keep running");
        } else if let Some(summary) = rules_summary(&line) {
            health.loaded_rules.store(summary.0, Ordering::Relaxed);
            health.rejected_rules.store(summary.1, Ordering::Relaxed);
            health.rule_loads.fetch_add(1, Ordering::Release);
            info!(loaded = summary.0, failed = summary.1, "Suricata rules loaded");
        } else if line.contains("Engine started") {
            info!("Suricata engine started");
        } else if line.contains("Error") || line.starts_with("E:") {
            warn!(suricata = %line, "Suricata error");
        } else {
            tracing::debug!(suricata = %line, "Suricata");
        }
    }
}

/// `N rules successfully loaded, M rules failed` → (N, M).
fn rules_summary(line: &str) -> Option<(u64, u64)> {
    let loaded_at = line.find(" rules successfully loaded")?;
    let loaded = line[..loaded_at].rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let rest = &line[loaded_at..];
    let failed_at = rest.find(" rules failed")?;
    let failed = rest[..failed_at].rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((loaded, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_is_read() {
        let line = "Info: detect: 1 rule files processed. 2 rules successfully loaded, 1 rules failed, 0";
        assert_eq!(rules_summary(line), Some((2, 1)));
        assert_eq!(rules_summary("nothing"), None);
    }
}
