//! A Suricata the agent runs itself: reading the mirror's pcap pipe, with a
//! config layered over Suricata's own defaults (see [`config`]), the user's
//! rules, EVE over a pipe back to the agent, restarts with backoff after a
//! crash (the frames of the gap counted), rule reloads on request, rejected
//! rules reported one by one, and a stop that ends its input: Suricata
//! reads everything the mirror wrote, inspects what it still holds, and
//! exits by itself.

pub(crate) mod config;
pub(crate) mod groups;

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portwarden_core::ErrorChain;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use config::{Runmode, SuricataSettings};

use crate::pipe::PcapPipe;

/// How long Suricata gets, once its input has ended, to inspect what it
/// still holds (open flows, unacknowledged data) and exit, before SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(60);
/// How long it gets after SIGTERM before it is killed.
const TERM_LIMIT: Duration = Duration::from_secs(10);

/// What the generated config asks of Suricata.
#[derive(Clone, Debug)]
pub struct SuricataOptions {
    /// The executable. Default: `suricata` on `PATH`.
    pub binary: PathBuf,
    /// A rule file, or a directory whose `*.rules` are all loaded.
    pub rules: PathBuf,
    /// Load the built-in rules ([`BUILTIN_RULES`]) before the user's.
    pub builtin_rules: bool,
    /// The named pipe Suricata reads the mirror from (`-r`).
    pub input: PathBuf,
    /// Where the config, logs and pid file go.
    pub run_dir: PathBuf,
    /// The named pipe the agent reads EVE from.
    pub eve_pipe: PathBuf,
    /// EVE event types besides `alert` and `stats` (`flow`, `dns`, `http`, `tls`).
    pub extra_types: Vec<String>,
    /// Seconds between `stats` events.
    pub stats_interval: u32,
    /// The user's settings.
    pub settings: SuricataSettings,
}

impl SuricataOptions {
    /// The config file Suricata is started with.
    pub fn config_path(&self) -> PathBuf {
        self.run_dir.join("suricata.yaml")
    }

    /// The rule files Suricata loads, in order: the built-in set (written
    /// into `run_dir`), then the user's.
    pub fn rule_sources(&self) -> crate::Result<Vec<RuleSource>> {
        let mut sources = Vec::new();
        if self.builtin_rules {
            let path = self.run_dir.join("builtin.rules");
            sources.push(RuleSource { path, builtin: true, rules: count_rules(BUILTIN_RULES), rejected: 0 });
        }
        let files = match rule_files(&self.rules) {
            Ok(files) => files,
            Err(e) if e.io().kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for path in files {
            let rules = std::fs::read_to_string(&path).map(|t| count_rules(&t)).unwrap_or(0);
            sources.push(RuleSource { path, builtin: false, rules, rejected: 0 });
        }
        Ok(sources)
    }

    /// Writes the config's layers (and the built-in rules) into `run_dir`;
    /// returns the main file and the rule files it loads.
    pub fn write_config(&self) -> crate::Result<PathBuf> {
        self.write_config_with_sources().map(|(main, _)| main)
    }

    fn write_config_with_sources(&self) -> crate::Result<(PathBuf, Vec<RuleSource>)> {
        let config_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| crate::Error::Config { path, source }
        };
        std::fs::create_dir_all(&self.run_dir).map_err(config_error(&self.run_dir))?;
        let sources = self.rule_sources()?;
        if self.builtin_rules {
            let builtin = self.run_dir.join("builtin.rules");
            std::fs::write(&builtin, BUILTIN_RULES).map_err(config_error(&builtin))?;
        }
        let files: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let rule_dir = if self.rules.is_dir() {
            self.rules.clone()
        } else {
            self.rules.parent().unwrap_or(Path::new("/")).to_path_buf()
        };
        let layer = config::agent_layer(
            &self.settings,
            &config::AgentLayer {
                rule_files: &files,
                rule_dir: &rule_dir,
                log_dir: &self.run_dir,
                eve_pipe: &self.eve_pipe,
                extra_types: &self.extra_types,
                stats_interval: self.stats_interval,
            },
        );
        let agent = self.run_dir.join("portwarden.yaml");
        std::fs::write(&agent, layer).map_err(config_error(&agent))?;
        let user = match &self.settings.include {
            Some(include) => Some(config::stage_include(include, &self.run_dir)?),
            None => None,
        };
        let defaults = self.settings.defaults_file();
        let main = self.config_path();
        std::fs::write(&main, config::main_config(defaults.as_deref(), &agent, user.as_deref()))
            .map_err(config_error(&main))?;
        Ok((main, sources))
    }

    /// The arguments every run of Suricata gets besides the mode.
    fn common_args(&self, config: &Path) -> Vec<OsString> {
        let mut args = vec![OsString::from("-c"), config.into()];
        args.extend(self.settings.set_args());
        args
    }

    /// Writes the config and has Suricata parse it (without rules or
    /// capture): a YAML error in the user's include, or a bad `set`, is
    /// reported with Suricata's own message. `Ok` when Suricata is not
    /// installed: that switches detection off later, with its own message.
    pub async fn preflight(&self) -> Result<(), String> {
        let config = self.write_config().map_err(|e| ErrorChain(&e).to_string())?;
        let out = Command::new(&self.binary).args(self.common_args(&config)).arg("--dump-config").output().await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot run {}: {e}", self.binary.display())),
        };
        let mut errors = suricata_errors(&out.stdout, &out.stderr);
        if out.status.success() && errors.is_empty() {
            return Ok(());
        }
        // A parse error is the include's (the agent's own layers parse): say
        // so, with its line in the user's file, not in the staged copy.
        if let Some(include) = &self.settings.include {
            let added = config::header_lines_added(include);
            for e in &mut errors {
                if let Some(line) = e.split("at line ").nth(1).and_then(|r| r.split(':').next()) {
                    if let Ok(n) = line.trim().parse::<usize>() {
                        *e = format!(
                            "{}: line {}: {}",
                            include.display(),
                            n.saturating_sub(added),
                            e.rsplit(':').next().unwrap_or_default().trim()
                        );
                    }
                }
            }
        }
        Err(format!("Suricata cannot use this config ({}): {}", config.display(), errors.join("; ")))
    }

    /// `suricata -T`: the config and every rule, checked by Suricata. Returns
    /// Suricata's own error lines (naming file and line) when it fails.
    pub async fn test(&self) -> Result<(), String> {
        let config = self.write_config().map_err(|e| ErrorChain(&e).to_string())?;
        let out = Command::new(&self.binary)
            .args(self.common_args(&config))
            .args(["-T", "--init-errors-fatal", "-l"])
            .arg(&self.run_dir)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let errors = suricata_errors(&out.stdout, &out.stderr);
        if out.status.success() && errors.is_empty() {
            Ok(())
        } else if errors.is_empty() {
            Err(format!("suricata -T failed ({})", out.status))
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Suricata's error lines in its console output.
fn suricata_errors(stdout: &[u8], stderr: &[u8]) -> Vec<String> {
    [stdout, stderr]
        .iter()
        .flat_map(|b| String::from_utf8_lossy(b).lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.starts_with("Error") || l.starts_with("E:") || l.contains("<Error>"))
        .collect()
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
    /// Its engine runs (started, not yet exited).
    pub running: AtomicBool,
    /// Milliseconds it was down between a crash and the next engine start.
    pub gap_ms: AtomicU64,
    /// The rule files of the last load, with the rules rejected in each.
    pub sources: std::sync::Mutex<Vec<RuleSource>>,
    /// Why it cannot run at all (not installed, cannot start).
    pub off: std::sync::Mutex<Option<String>>,
}

impl SuricataHealth {
    /// The rule files of the last load.
    pub fn sources(&self) -> Vec<RuleSource> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why it cannot run at all, when so.
    pub fn off(&self) -> Option<String> {
        self.off.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_off(&self, why: String) {
        *self.off.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    fn set_sources(&self, sources: Vec<RuleSource>) {
        *self.sources.lock().unwrap_or_else(|e| e.into_inner()) = sources;
    }

    /// Counts a rejected rule against the file Suricata's message names.
    fn reject_in(&self, message: &str) {
        let Some(file) = message.split(" from file ").nth(1).and_then(|r| r.rsplit_once(" at line ")).map(|r| r.0)
        else {
            return;
        };
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = sources.iter_mut().find(|s| s.path == Path::new(file)) {
            source.rejected += 1;
        }
    }
}

/// Portwarden's own rules: common attacks on and from containers (scanner
/// user agents, SQL injection, path traversal, JNDI lookups, shell command
/// injection, cleartext credentials, DNS tunnelling hints).
pub const BUILTIN_RULES: &str = include_str!("../../rules/portwarden.rules");

/// One rule file Suricata loads, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleSource {
    /// The file.
    pub path: PathBuf,
    /// Portwarden's built-in set.
    pub builtin: bool,
    /// Rules in it (lines that are not blank or comments).
    pub rules: u64,
    /// Rules Suricata rejected at the last load.
    pub rejected: u64,
}

/// Rules in a rule file's text: lines that are neither blank nor comments.
pub fn count_rules(text: &str) -> u64 {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).count() as u64
}

/// The `*.rules` files `rules` stands for, sorted.
pub fn rule_files(rules: &Path) -> crate::Result<Vec<PathBuf>> {
    let unreadable = |source| crate::Error::Rules { path: rules.to_path_buf(), source };
    let meta = std::fs::metadata(rules).map_err(unreadable)?;
    if meta.is_file() {
        return Ok(vec![rules.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules)
        .map_err(unreadable)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    Ok(files)
}

/// Runs Suricata on the mirror's pipe until `stop`, restarting it after a
/// crash with backoff; `reload` makes it re-read its rules (SIGUSR2).
/// After a crash the pipe lets go of the dead reader before the next one
/// starts, so every Suricata reads a stream from its start; frames of the
/// gap are counted by the pipe. At `stop` (capture has stopped) the pipe is
/// closed after its last frame, and Suricata exits by itself once it has
/// inspected everything.
pub(crate) async fn supervise(
    options: SuricataOptions,
    health: Arc<SuricataHealth>,
    pipe: Arc<PcapPipe>,
    reload: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    let mut down_since: Option<Instant> = None;
    loop {
        let config = match options.write_config_with_sources() {
            Ok((config, sources)) => {
                health.set_sources(sources);
                config
            }
            Err(e) => {
                error!(error = %ErrorChain(&e), "cannot write Suricata's config; detection is off");
                health.set_off(format!("cannot write Suricata's config: {}", ErrorChain(&e)));
                return;
            }
        };
        let pidfile = options.run_dir.join("suricata.pid");
        let _ = std::fs::remove_file(&pidfile);
        let spawned = Command::new(&options.binary)
            .args(options.common_args(&config))
            .arg("-r")
            .arg(&options.input)
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
                health.set_off(format!("Suricata is not installed ({} not found)", options.binary.display()));
                return;
            }
            Err(e) => {
                error!(binary = %options.binary.display(), error = %e, "cannot start Suricata; intrusion detection is off");
                health.set_off(format!("cannot start {}: {e}", options.binary.display()));
                return;
            }
        };
        health.starts.fetch_add(1, Ordering::Relaxed);
        info!(pid = child.id(), rules = %options.rules.display(), "Suricata started");
        let started = Instant::now();
        let engine = Arc::new(Notify::new());
        for console in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(report_console(console, Arc::clone(&health), Arc::clone(&engine)));
        }
        let pid = child.id();
        let status = loop {
            tokio::select! {
                status = child.wait() => break Some(status),
                () = engine.notified() => {
                    health.running.store(true, Ordering::Release);
                    if let Some(since) = down_since.take() {
                        let gap = since.elapsed();
                        health.gap_ms.fetch_add(gap.as_millis() as u64, Ordering::Relaxed);
                        warn!(gap = ?gap, frames = pipe_gap(&pipe),
                            "Suricata is back; frames mirrored while it was down were not inspected");
                    }
                }
                () = reload.notified() => {
                    if let Some(pid) = pid {
                        info!("reloading Suricata's rules");
                        // Rewrite the config first: the rule files may have changed.
                        match options.write_config_with_sources() {
                            Ok((_, sources)) => health.set_sources(sources),
                            Err(e) => warn!(error = %ErrorChain(&e), "cannot rewrite Suricata's config for the reload"),
                        }
                        // SAFETY: signalling our own child.
                        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
                    }
                }
                () = stop.cancelled() => break None,
            }
        };
        let Some(status) = status else {
            stop_suricata(&mut child, pid, &pipe).await;
            health.running.store(false, Ordering::Release);
            return;
        };
        health.running.store(false, Ordering::Release);
        let detaching = Arc::clone(&pipe);
        let _ = tokio::task::spawn_blocking(move || detaching.detach()).await;
        down_since.get_or_insert_with(Instant::now);
        health.crashes.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        warn!(status = ?status.ok(), retry_in = ?backoff, "Suricata exited; restarting it");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn pipe_gap(pipe: &PcapPipe) -> u64 {
    pipe.stats().gap_frames.load(Ordering::Relaxed)
}

/// Ends Suricata's input and waits for it to exit: it reads what the pipe
/// still holds, inspects open flows and unacknowledged data, writes those
/// alerts and exits, as at the end of a pcap file. One that never opened
/// the pipe has nothing to finish and is stopped at once.
async fn stop_suricata(child: &mut tokio::process::Child, pid: Option<u32>, pipe: &Arc<PcapPipe>) {
    let reading = pipe.attached();
    let finishing = Arc::clone(pipe);
    let _ = tokio::task::spawn_blocking(move || finishing.finish()).await;
    let term = |pid: Option<u32>| {
        if let Some(pid) = pid {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    };
    if !reading {
        term(pid);
    }
    if let Ok(status) = tokio::time::timeout(EXIT_LIMIT, child.wait()).await {
        info!(status = ?status.ok(), "Suricata stopped");
        return;
    }
    warn!(limit = ?EXIT_LIMIT, "Suricata did not finish in time; stopping it");
    term(pid);
    if tokio::time::timeout(TERM_LIMIT, child.wait()).await.is_err() {
        warn!("Suricata did not stop; killing it");
        let _ = child.kill().await;
    }
}

/// Relays Suricata's console: rejected rules as warnings naming the rule,
/// the load summary as info, errors as errors.
async fn report_console(
    pipe: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    health: Arc<SuricataHealth>,
    engine: Arc<Notify>,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("error parsing signature") {
            health.rejected_rules.fetch_add(1, Ordering::Relaxed);
            health.reject_in(&line);
            warn!(suricata = %line, "Suricata rejected a rule; the others keep running");
        } else if let Some(summary) = rules_summary(&line) {
            health.loaded_rules.store(summary.0, Ordering::Relaxed);
            health.rejected_rules.store(summary.1, Ordering::Relaxed);
            health.rule_loads.fetch_add(1, Ordering::Release);
            info!(loaded = summary.0, failed = summary.1, "Suricata rules loaded");
        } else if line.contains("Engine started") {
            engine.notify_one();
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
