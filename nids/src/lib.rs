//! Network intrusion detection for Portwarden: captured traffic mirrored
//! into Suricata with each capture's own 802.1Q tag, and Suricata's alerts
//! given back the container the tag stands for.
//!
//! Suricata keeps flows apart per VLAN and reports `"vlan": [N]` in EVE, so
//! two containers with the same addresses (the same subnet on two networks)
//! never share a flow, and every alert names its container exactly.
//!
//! ```no_run
//! use std::sync::Arc;
//! use portwarden_nids::{Nids, NidsOptions};
//!
//! # async fn demo(out: portwarden_core::LogSender) -> portwarden_nids::Result<()> {
//! let options = NidsOptions::managed("/etc/portwarden/rules".into(), "/run/portwarden".into());
//! let (nids, sinks) = Nids::setup(options)?;
//! // Give `sinks` to the capture engine, then:
//! nids.run(out, tokio_util::sync::CancellationToken::new()).await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod error;
mod eve;
mod frame;
mod mirror;
mod pipe;
mod suricata;
mod tags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{ErrorChain, LogSender, PacketSink};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

pub use error::{Error, Result};
pub use eve::{Enricher, EveStats, SuricataStats};

pub use mirror::{Mirror, MirrorSink, MirrorStats, MirrorStatsSnapshot};
pub use pipe::PcapPipe;
pub use suricata::{
    BUILTIN_RULES, RuleSource, Runmode, SuricataHealth, SuricataOptions, SuricataSettings, count_rules, rule_files,
};
pub use tags::{TagOwner, TagTable};

/// Who runs Suricata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The agent starts and supervises it.
    Managed,
    /// The user runs it, reading the mirror pipe (`suricata -r
    /// <run_dir>/mirror.pcap`) and writing EVE to the agent's socket
    /// (`unix_stream`) or to a file the agent follows.
    External {
        /// An EVE file to follow instead of listening on the socket.
        eve_file: Option<PathBuf>,
    },
}

/// Everything detection needs.
#[derive(Clone, Debug)]
pub struct NidsOptions {
    /// Managed or external Suricata.
    pub engine: Engine,
    /// The Suricata executable (managed).
    pub binary: PathBuf,
    /// Rule file or directory (managed).
    pub rules: PathBuf,
    /// Load the built-in rules too (managed).
    pub builtin_rules: bool,
    /// Config, Suricata's logs, the mirror pipe and the EVE pipe or socket
    /// live here.
    pub run_dir: PathBuf,
    /// EVE types relayed besides alerts (`flow`, `dns`, `http`, `tls`).
    pub extra_types: Vec<String>,
    /// How long a released tag keeps naming its last container.
    pub tag_grace: Duration,
    /// Also (or only) send mirrored traffic as VXLAN to a remote sensor.
    pub vxlan: Option<SocketAddr>,
    /// Where the VNI → container map is written, for the remote sensor.
    pub vni_map: Option<PathBuf>,
    /// Mirror into the local pipe (false: remote sensor only).
    pub local: bool,
    /// The managed Suricata's settings (groups, overrides, include, threads).
    pub settings: SuricataSettings,
    /// The node's name, which every event carries as `host` (none when empty).
    pub host: String,
}

impl NidsOptions {
    /// Managed Suricata with `rules`, files under `run_dir`, defaults elsewhere.
    pub fn managed(rules: PathBuf, run_dir: PathBuf) -> Self {
        Self {
            engine: Engine::Managed,
            binary: "suricata".into(),
            rules,
            builtin_rules: true,
            run_dir,
            extra_types: Vec::new(),
            tag_grace: Duration::from_secs(300),
            vxlan: None,
            vni_map: None,
            local: true,
            settings: SuricataSettings::default(),
            host: String::new(),
        }
    }

    /// The EVE socket the agent listens on for an external Suricata.
    pub fn eve_socket(&self) -> PathBuf {
        self.run_dir.join("eve.sock")
    }

    /// The named pipe the mirror writes pcap to, which Suricata reads.
    pub fn mirror_pipe(&self) -> PathBuf {
        self.run_dir.join("mirror.pcap")
    }

    /// The named pipe the managed Suricata writes EVE to.
    pub fn eve_pipe(&self) -> PathBuf {
        self.run_dir.join("eve.pipe")
    }

    /// Whether the agent runs Suricata itself.
    pub fn runs_suricata(&self) -> bool {
        self.engine == Engine::Managed && self.local
    }

    /// The managed Suricata's options.
    pub fn suricata(&self) -> SuricataOptions {
        SuricataOptions {
            binary: self.binary.clone(),
            rules: self.rules.clone(),
            builtin_rules: self.builtin_rules,
            input: self.mirror_pipe(),
            run_dir: self.run_dir.join("suricata"),
            eve_pipe: self.eve_pipe(),
            extra_types: self.extra_types.clone(),
            stats_interval: 10,
            settings: self.settings.clone(),
        }
    }
}

/// Detection's health, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NidsStatus {
    /// The agent runs Suricata (else the user does, or a remote sensor).
    pub managed: bool,
    /// Why the managed Suricata does not run at all (not installed, cannot
    /// start); it is then not restarted.
    pub suricata_off: Option<String>,
    /// Captures holding a tag now.
    pub tagged_captures: usize,
    /// The local mirror's counters.
    pub mirror: MirrorStatsSnapshot,
    /// The VXLAN mirror's counters.
    pub vxlan: Option<MirrorStatsSnapshot>,
    /// Times Suricata was started and crashed; rules loaded and rejected.
    pub suricata_starts: u64,
    /// Times it exited unasked.
    pub suricata_crashes: u64,
    /// Whether its engine runs now (always true for an external Suricata).
    pub suricata_running: bool,
    /// Milliseconds it was down between a crash and its restart, in total;
    /// the frames of those gaps are `mirror.gap_frames`.
    pub suricata_gap_ms: u64,
    /// Rules loaded at the last start.
    pub rules_loaded: u64,
    /// Rules rejected at the last start.
    pub rules_rejected: u64,
    /// The rule files of the last load: built-in or the user's, with their
    /// rules and the ones rejected.
    pub rule_sources: Vec<RuleSource>,
    /// EVE events relayed, alerts among them, bad lines skipped.
    pub events: u64,
    /// Alerts relayed.
    pub alerts: u64,
    /// EVE lines that were not JSON.
    pub malformed_events: u64,
    /// Suricata's own latest counters.
    pub suricata: Option<SuricataStats>,
}

/// Asks the managed Suricata to re-read its rules (SIGUSR2, after the
/// config is rewritten), and can wait for its answer.
#[derive(Clone)]
pub struct RuleReloader {
    notify: Arc<Notify>,
    health: Arc<SuricataHealth>,
    managed: bool,
}

/// What a reload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Suricata reported the reload: rules loaded and rejected.
    Loaded {
        /// Rules loaded.
        loaded: u64,
        /// Rules rejected.
        failed: u64,
    },
    /// Asked, but Suricata said nothing within the wait.
    NoAnswer,
    /// Suricata is not the agent's to reload (external, or remote only).
    NotManaged,
}

impl RuleReloader {
    /// A reloader for a Suricata that is not the agent's: every request
    /// is refused ([`ReloadOutcome::NotManaged`]).
    pub fn unmanaged() -> Self {
        Self { notify: Arc::default(), health: Arc::default(), managed: false }
    }

    /// Asks for a reload and returns at once.
    pub fn request(&self) -> bool {
        if self.managed {
            self.notify.notify_one();
        }
        self.managed
    }

    /// Asks for a reload and waits up to `wait` for Suricata's summary.
    pub async fn reload(&self, wait: Duration) -> ReloadOutcome {
        use std::sync::atomic::Ordering;
        let before = self.health.rule_loads.load(Ordering::Acquire);
        if !self.request() {
            return ReloadOutcome::NotManaged;
        }
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.health.rule_loads.load(Ordering::Acquire) > before {
                return ReloadOutcome::Loaded {
                    loaded: self.health.loaded_rules.load(Ordering::Relaxed),
                    failed: self.health.rejected_rules.load(Ordering::Relaxed),
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ReloadOutcome::NoAnswer
    }
}

/// Detection, set up and ready to run.
pub struct Nids {
    options: NidsOptions,
    tags: TagTable,
    mirror_stats: Arc<MirrorStats>,
    vxlan_stats: Option<Arc<MirrorStats>>,
    health: Arc<SuricataHealth>,
    eve: Arc<EveStats>,
    reload: Arc<Notify>,
    /// The local mirror's pipe.
    pipe: Option<Arc<PcapPipe>>,
}

impl Nids {
    /// Creates the mirror pipe (and the VXLAN socket); returns detection and
    /// the capture sinks to register with the engine.
    pub fn setup(options: NidsOptions) -> Result<(Nids, Vec<Arc<dyn PacketSink>>)> {
        let tags = TagTable::new(options.tag_grace);
        // The pipe says when something reads it.
        let mirror_stats = Arc::new(MirrorStats::default());
        let mut sinks: Vec<Arc<dyn PacketSink>> = Vec::new();
        let mut pipe = None;
        if options.local {
            let (mirror, opened) = Mirror::pipe(options.mirror_pipe(), tags.clone(), Arc::clone(&mirror_stats))?;
            sinks.push(Arc::new(MirrorSink::new(mirror)));
            pipe = Some(opened);
        }
        let mut vxlan_stats = None;
        if let Some(remote) = options.vxlan {
            let stats = Arc::new(MirrorStats::default());
            // Its own tag table would give other numbers: share the local one.
            let mirror = Mirror::vxlan(remote, tags.clone(), Arc::clone(&stats))?;
            sinks.push(Arc::new(MirrorSink::new(mirror)));
            vxlan_stats = Some(stats);
        }
        let nids = Nids {
            options,
            tags,
            mirror_stats,
            vxlan_stats,
            health: Arc::default(),
            eve: Arc::default(),
            reload: Arc::new(Notify::new()),
            pipe,
        };
        Ok((nids, sinks))
    }

    /// A handle that asks Suricata to reload its rules.
    pub fn reloader(&self) -> RuleReloader {
        RuleReloader {
            notify: Arc::clone(&self.reload),
            health: Arc::clone(&self.health),
            managed: self.options.engine == Engine::Managed && self.options.local,
        }
    }

    /// A function that reads detection's health.
    pub fn status_reader(&self) -> impl Fn() -> NidsStatus + Send + Sync + 'static {
        let managed = self.options.runs_suricata();
        let (tags, mirror, vxlan, health, eve) = (
            self.tags.clone(),
            Arc::clone(&self.mirror_stats),
            self.vxlan_stats.clone(),
            Arc::clone(&self.health),
            Arc::clone(&self.eve),
        );
        move || {
            use std::sync::atomic::Ordering::Relaxed;
            NidsStatus {
                managed,
                suricata_off: health.off(),
                tagged_captures: tags.active(),
                mirror: mirror.snapshot(),
                vxlan: vxlan.as_ref().map(|s| s.snapshot()),
                suricata_starts: health.starts.load(Relaxed),
                suricata_crashes: health.crashes.load(Relaxed),
                // Managed: its engine runs; external: it reads the pipe.
                suricata_running: if managed { health.running.load(Relaxed) } else { mirror.receiver_up.load(Relaxed) },
                suricata_gap_ms: health.gap_ms.load(Relaxed),
                rules_loaded: health.loaded_rules.load(Relaxed),
                rules_rejected: health.rejected_rules.load(Relaxed),
                rule_sources: health.sources(),
                events: eve.relayed.load(Relaxed),
                alerts: eve.alerts.load(Relaxed),
                malformed_events: eve.malformed.load(Relaxed),
                suricata: eve.suricata.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            }
        }
    }

    /// Runs until `stop`, which comes once capture has stopped: the EVE
    /// reader, Suricata when managed, and the VNI map for a remote sensor.
    /// At `stop` a managed Suricata first reads what the mirror wrote, then
    /// is stopped, and its EVE is read until it has exited: alerts it raises
    /// while shutting down (unacknowledged data, open flows) are relayed.
    /// Enriched events go to `out`.
    pub async fn run(self, out: LogSender, stop: CancellationToken) {
        let enricher = Enricher::new(self.tags.clone(), Arc::clone(&self.eve)).with_host(&self.options.host);
        let managed = self.options.runs_suricata();
        // Ends the EVE reader: once Suricata has exited (managed), or a
        // moment after `stop` for a Suricata the agent does not run.
        let eve_done = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        match &self.options.engine {
            Engine::External { eve_file: Some(file) } => {
                let (file, enricher, out, done) = (file.clone(), enricher.clone(), out.clone(), eve_done.clone());
                tasks.spawn(async move {
                    if let Err(e) = eve::follow_file(&file, enricher, out, done).await {
                        error!(error = %e, "cannot follow the EVE file; no alerts");
                    }
                });
            }
            _ if managed => match eve::EveFifo::create(self.options.eve_pipe()) {
                Ok(fifo) => {
                    let (enricher, out, done) = (enricher.clone(), out.clone(), eve_done.clone());
                    tasks.spawn(async move {
                        if let Err(e) = eve::serve_fifo(fifo, enricher, out, done).await {
                            error!(error = %e, "cannot read Suricata's EVE events; no alerts");
                        }
                    });
                }
                Err(e) => error!(error = %ErrorChain(&e), "cannot make the EVE pipe; no alerts"),
            },
            _ => {
                let (socket, enricher, out, done) =
                    (self.options.eve_socket(), enricher.clone(), out.clone(), eve_done.clone());
                tasks.spawn(async move {
                    if let Err(e) = eve::serve_socket(socket, enricher, out, done).await {
                        error!(error = %e, "cannot listen for EVE events; no alerts");
                    }
                });
            }
        }
        if managed {
            let options = self.options.suricata();
            match suricata::rule_files(&options.rules) {
                Ok(files) if files.is_empty() => {
                    warn!(rules = %options.rules.display(), "no *.rules files; Suricata runs with no rules")
                }
                Ok(_) => {}
                Err(e) => warn!(error = %ErrorChain(&e), "rules not readable; Suricata runs with no rules"),
            }
            let (health, pipe, reload, stop, done) =
                (Arc::clone(&self.health), self.pipe.clone(), Arc::clone(&self.reload), stop.clone(), eve_done.clone());
            tasks.spawn(async move {
                if let Some(pipe) = pipe {
                    suricata::supervise(options, health, pipe, reload, stop).await;
                }
                done.cancel();
            });
        } else {
            let (stop, done, pipe) = (stop.clone(), eve_done.clone(), self.pipe.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                // The end of the pipe ends an external Suricata's input too.
                if let Some(pipe) = pipe {
                    let _ = tokio::task::spawn_blocking(move || pipe.finish()).await;
                }
                // What it writes right now still comes in.
                tokio::time::sleep(EXTERNAL_GRACE).await;
                done.cancel();
            });
        }
        if let Some(path) = self.options.vni_map.clone() {
            let (tags, stop) = (self.tags.clone(), stop.clone());
            tasks.spawn(async move { write_vni_map(path, tags, stop).await });
        }
        let (tags, done) = (self.tags.clone(), eve_done.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(TAG_SWEEP);
            loop {
                tokio::select! {
                    _ = tick.tick() => tags.sweep(),
                    () = done.cancelled() => return,
                }
            }
        });
        while tasks.join_next().await.is_some() {}
    }
}

/// How often released tags past their grace period are forgotten.
const TAG_SWEEP: Duration = Duration::from_secs(30);

/// How long an external Suricata's EVE is still read after capture stopped.
const EXTERNAL_GRACE: Duration = Duration::from_secs(1);

/// Keeps `path` holding `{"<vni>": container or null}` for a remote sensor.
async fn write_vni_map(path: PathBuf, tags: TagTable, cancel: CancellationToken) {
    let mut last = String::new();
    loop {
        let map: serde_json::Map<String, serde_json::Value> = tags
            .snapshot()
            .into_iter()
            .map(|(vni, owner)| (vni.to_string(), serde_json::to_value(owner.container).unwrap_or_default()))
            .collect();
        let text = serde_json::Value::Object(map).to_string();
        if text != last {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path)).is_ok() {
                last = text;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = cancel.cancelled() => return,
        }
    }
}
