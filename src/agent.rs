//! [`Agent`]: the whole daemon as a library, which `portwarden run` and
//! embedders start the same way.
//!
//! The builder takes the config and the runtime registry, plus what an
//! embedder adds: log outputs, packet sinks and log sources of its own. The
//! agent then does what `portwarden run` does: detects the runtimes, keeps
//! the inventory, captures each container's traffic into the sinks (the
//! detection mirror, flow records, the embedder's), collects logs from the
//! CRI files, the runtimes' own log sources and the listeners into the
//! outputs, and serves the API and metrics. [`Agent::run`] returns when its
//! token is cancelled, after draining in order: capture first, then
//! detection, then the record pipeline's outputs.

use std::sync::Arc;

use portwarden_capture::sinks::FlowSink;
use portwarden_capture::{AfPacketSource, Detached, FlowTimeouts};
use portwarden_core::{
    Capabilities, CaptureEngine, ContainerChange, ErrorChain, Inventory, InventoryEvent, LogSource, LogStats,
    PacketSink, Registry, Rejection, RuntimeProvider,
};
use portwarden_logs::{
    CheckpointStore, Contained, ForwardServer, LogCollector, Output, Pipeline, PipelineOptions, Resolver, SyslogServer,
};
use portwarden_nids::Nids;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::collect;
use crate::config::Config;
use crate::metrics::{Facts, NidsHandles, RecordHandles, RuntimeInfo, Telemetry};
use crate::mode::{self, CapturePlan};

/// Frame bytes that may wait for each packet sink an embedder adds.
const EMBEDDED_SINK_QUEUE: u64 = 8 << 20;

/// How long outputs get to drain at shutdown.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the agent runs as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunMode {
    /// Everything the config enables: capture, detection, logs, the API
    /// and metrics (`portwarden run`).
    #[default]
    Daemon,
    /// Detection only, its alerts written to stdout: as text lines, or with
    /// `json` through the configured outputs (`portwarden alerts` when no
    /// daemon runs). No container logs, listeners, flow records or API.
    Alerts {
        /// Alerts as EVE JSON rather than text lines.
        json: bool,
    },
}

/// Builds an [`Agent`].
pub struct AgentBuilder {
    config: Config,
    registry: Registry,
    mode: RunMode,
    outputs: Vec<Box<dyn Output>>,
    sinks: Vec<Arc<dyn PacketSink>>,
    sources: Vec<Arc<dyn LogSource>>,
}

impl AgentBuilder {
    /// Replaces the runtime registry (the default is
    /// [`default_registry`](crate::default_registry) for the config).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Adds a runtime provider to the registry.
    pub fn runtime<P: RuntimeProvider + 'static>(mut self, provider: P) -> Self {
        self.registry.register(provider);
        self
    }

    /// Sets what the agent runs as (default: [`RunMode::Daemon`]).
    pub fn mode(mut self, mode: RunMode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds a log output: it receives every record (container logs, the
    /// listeners', alerts) as the configured outputs do, in a queue of its
    /// own. Unlike theirs, its queue never slows the sources: while it is
    /// full (the output stuck or slow) batches skip it, counted in the
    /// `output_dropped` log counter, and checkpoints do not wait for it. A
    /// panic cuts it off alone (the `panics` counter).
    pub fn log_output(mut self, output: Box<dyn Output>) -> Self {
        self.outputs.push(output);
        self
    }

    /// Adds a packet sink: it receives every captured frame, with its
    /// capture's group, as the detection mirror does, but on a thread of its
    /// own behind an 8 MiB queue: a sink that blocks or is slow loses its
    /// own frames (counted), never the captures'; one that panics is
    /// dropped for that capture and counted.
    pub fn packet_sink(mut self, sink: Arc<dyn PacketSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Adds a container log source, consulted before the built-in ones for
    /// each container (the first that [accepts](LogSource::accepts) it
    /// reads it).
    pub fn log_source(mut self, source: Arc<dyn LogSource>) -> Self {
        self.sources.push(source);
        self
    }

    /// Checks the config against the registry (every runtime it names is
    /// registered, and no name twice) and returns the agent, not yet
    /// running.
    pub fn build(mut self) -> anyhow::Result<Agent> {
        if let RunMode::Alerts { .. } = self.mode {
            let config = &mut self.config;
            config.logs.enabled = false;
            config.logs.state_dir = std::path::PathBuf::new();
            config.capture.flows = false;
            config.api.enabled = false;
        }
        self.config.validate()?;
        self.config.check_runtimes(&self.registry)?;
        let (reload_tx, reload_rx) = mpsc::channel(4);
        Ok(Agent { parts: self, reload_tx, reload_rx })
    }
}

/// The agent, built and ready to [run](Agent::run): the builder's parts,
/// checked, and the reload requests.
pub struct Agent {
    parts: AgentBuilder,
    reload_tx: mpsc::Sender<()>,
    reload_rx: mpsc::Receiver<()>,
}

/// Asks a running agent to reload its detection rules (what SIGHUP does).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<()>);

impl ReloadHandle {
    /// Asks for a reload; requests made while one is pending are merged.
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

impl Agent {
    /// A builder over `config`, with every runtime this build includes.
    pub fn builder(config: Config) -> AgentBuilder {
        let registry = crate::default_registry(&config);
        AgentBuilder {
            config,
            registry,
            mode: RunMode::Daemon,
            outputs: Vec::new(),
            sinks: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// A handle that asks the running agent to reload its rules.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reload_tx.clone())
    }

    /// Starts every part, runs until `cancel` fires, then drains and stops.
    /// Errors are startup failures (a bad Suricata setting, another agent
    /// holding the host lock, an output that cannot be opened); once
    /// running, a part that fails is logged and the others go on.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let Agent { parts, reload_tx: _, mut reload_rx } = self;
        let AgentBuilder { config, registry, mode, outputs, sinks, sources } = parts;
        let config = &config;
        if config.nids.active() && config.capture.enabled && config.nids.options().runs_suricata() {
            // A bad include or setting stops the agent here, before it
            // starts anything, with Suricata's own message.
            config.nids.options().suricata().preflight().await.map_err(|e| anyhow::anyhow!("nids: {e}"))?;
        }
        let lock = crate::guard::HostLock::acquire(&config.lock_files())?;
        if let Some(lock) = &lock {
            debug!(lock = %lock.path().display(), "agent lock held");
        }

        let detection = registry.detect(&config.detect_options(&registry)).await;
        for d in &detection.runtimes {
            info!(runtime = %d.info.runtime, socket = %d.socket.display(), name = %d.info.name,
                version = %d.info.version, "runtime detected");
        }
        for r in &detection.rejected {
            if matches!(r.reason, Rejection::Missing | Rejection::Disabled) {
                debug!(runtime = %r.runtime, socket = %r.socket.display(), reason = %r.reason, "runtime candidate rejected");
            } else {
                warn!(runtime = %r.runtime, socket = %r.socket.display(), reason = %r.reason, "runtime candidate rejected");
            }
        }
        if detection.runtimes.is_empty() {
            warn!("no container runtime detected; no containers will be watched (`portwarden runtimes` says why)");
        }
        let caps = Capabilities::current();
        for cap in caps.missing() {
            warn!(capability = %cap, switches_off = cap.switches_off(), "capability missing");
        }
        let (run_mode, plan, reason) = mode::decide(detection.runtimes.len(), caps, config.capture.enabled);
        info!(mode = run_mode.as_str(), capture = plan.as_str(), %reason, "mode");
        let mut telemetry = Telemetry::new(Facts {
            started: std::time::Instant::now(),
            mode: run_mode,
            plan,
            reason,
            runtimes: detection
                .runtimes
                .iter()
                .map(|d| RuntimeInfo {
                    kind: d.info.runtime.clone(),
                    socket: d.socket.clone(),
                    name: d.info.name.clone(),
                    version: d.info.version.clone(),
                })
                .collect(),
            capabilities: caps,
        });

        // The parts, made before anything reads them.
        let stats = Arc::new(LogStats::default());
        let mut log_sources = sources;
        if config.logs.enabled {
            log_sources.extend(collect::sources(config, &detection.runtimes, &stats));
        }
        let watching = !detection.runtimes.is_empty();
        let inventory =
            Inventory::new(detection.runtimes.into_iter().map(|d| d.runtime).collect(), config.inventory_options());
        telemetry.inventory = watching.then(|| inventory.clone());
        let (nids, mirror) = start_nids(config, plan);
        match &nids {
            Some(nids) => {
                let status = nids.status_reader();
                telemetry.nids = Some(NidsHandles { status: Arc::new(status), reload: nids.reloader() });
            }
            None => {
                telemetry.detection_off = Some(if !config.nids.active() {
                    config.nids.off_reason()
                } else if plan == CapturePlan::Off {
                    "capture is off".to_owned()
                } else {
                    "the mirror could not be set up (see the log)".to_owned()
                });
            }
        }
        // Flow records go through the outputs too.
        let flows = config.capture.flows && plan != CapturePlan::Off;
        let pipeline = if config.logs.enabled || nids.is_some() || flows {
            let mut all = match mode {
                RunMode::Alerts { json: false } => {
                    vec![Box::new(crate::commands::TextStdout::default()) as Box<dyn Output>]
                }
                _ => collect::outputs(config, &stats)?,
            };
            // An embedder's outputs never hold the others back (nor the
            // sources): stuck or slow, they miss batches, counted.
            all.extend(outputs.into_iter().map(|o| Box::new(Contained(o)) as Box<dyn Output>));
            let store = CheckpointStore::new(config.logs.state_dir())?;
            let options = PipelineOptions { queue: config.logs.queue_batches, ..PipelineOptions::default() };
            let pipeline = Pipeline::start(all, store, options, Arc::clone(&stats))?;
            telemetry.records = Some(RecordHandles {
                stats: Arc::clone(&stats),
                queues: pipeline.gauges(),
                tap: pipeline.tap(),
                sources: log_sources.iter().map(|s| s.name()).collect(),
            });
            Some(pipeline)
        } else {
            None
        };
        // The agent's own container, when it runs in one: neither captured
        // (with host networking its traffic is the host's) nor collected
        // (records about records).
        let not_me = collect::not_the_agent(&config.proc_root());
        let engine = (plan != CapturePlan::Off).then(|| {
            let mut all = mirror;
            if let (true, Some(pipeline)) = (flows, &pipeline) {
                let sink = FlowSink::to_records(&pipeline.sender(), Arc::clone(&stats), FlowTimeouts::default());
                all.push(Arc::new(sink));
            }
            // An embedder's sinks run on threads of their own: one that
            // blocks or is slow costs its own frames, never the captures.
            for (i, sink) in sinks.into_iter().enumerate() {
                match Detached::spawn(&format!("ext{i}"), sink, EMBEDDED_SINK_QUEUE) {
                    Ok(detached) => all.push(Arc::new(detached)),
                    Err(e) => warn!(error = %e, "cannot start a thread for an added packet sink; it is left out"),
                }
            }
            let engine = CaptureEngine::new(Arc::new(AfPacketSource), all, config.capture.options());
            match &not_me {
                Some(not_me) => engine.with_selector(Arc::clone(not_me)),
                None => engine,
            }
        });
        telemetry.engine.clone_from(&engine);
        let hook = match (&engine, plan) {
            (Some(engine), CapturePlan::PerContainer) => {
                let (hook, state) = crate::prestart::start(config, &registry, engine);
                telemetry.prestart = Some(state);
                hook
            }
            (Some(_), _) => {
                // Capturing its own namespace (a sidecar, no runtime): there
                // is no container start to attach to.
                let why = if caps.has(portwarden_core::Cap::SysAdmin) {
                    "the agent captures its own namespace only (no container runtime watched)"
                } else {
                    "no CAP_SYS_ADMIN: the agent captures its own namespace only"
                };
                info!(reason = why, "pre-start attach off");
                telemetry.prestart = Some(crate::metrics::Prestart::Off(why.to_owned()));
                None
            }
            (None, _) => None,
        };
        let telemetry = Arc::new(telemetry);

        // Running them. Capture stops first at shutdown, so that detection
        // sees every frame before Suricata is stopped; then detection drains;
        // then the record pipeline flushes the outputs.
        let stop = cancel.child_token();
        let capture_stop = stop.child_token();
        let nids_stop = CancellationToken::new();
        let mut changes = inventory.subscribe();
        let watcher = tokio::spawn({
            let (inventory, stop) = (inventory.clone(), stop.child_token());
            async move { inventory.run(stop).await }
        });
        let mut servers = JoinSet::new();
        if config.metrics.enabled {
            servers.spawn(crate::metrics::serve(config.metrics.listen, Arc::clone(&telemetry), stop.child_token()));
        }
        if config.api.enabled {
            servers.spawn(crate::api::serve(
                config.clone(),
                inventory.clone(),
                Arc::clone(&telemetry),
                stop.child_token(),
            ));
        }
        servers.spawn(crate::heap::keep_trimmed(stop.child_token()));
        let capture = tokio::spawn(run_capture(engine, plan, inventory.clone(), capture_stop.clone()));
        let records = pipeline.map(|pipeline| {
            let parts = RecordParts {
                config: config.clone(),
                inventory: watching.then(|| inventory.clone()),
                sources: log_sources,
                not_me,
                nids: nids.map(|n| (n, nids_stop.clone())),
            };
            tokio::spawn(run_records(parts, pipeline, stats, stop.child_token()))
        });
        let reloader = telemetry.nids.as_ref().map(|n| n.reload.clone());

        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(()) = reload_rx.recv() => match &reloader {
                    Some(reload) if reload.request() => info!("reloading rules"),
                    Some(_) => info!("Suricata is external; nothing to reload"),
                    None => info!("nothing to reload (detection is off)"),
                },
                change = changes.recv() => match change {
                    Ok(InventoryEvent::Container(change)) => log_change(&change),
                    Ok(InventoryEvent::RuntimeLost { runtime, endpoint, error }) => {
                        telemetry.runtime_lost(&runtime, &endpoint, error);
                    }
                    Ok(InventoryEvent::RuntimeSynced { runtime, endpoint, .. }) => {
                        telemetry.runtime_synced(&runtime, &endpoint);
                    }
                    Err(RecvError::Lagged(missed)) => warn!(missed, "container log fell behind; skipped changes"),
                    Err(RecvError::Closed) => {}
                },
            }
        }
        // No start is held once stopping: the hook goes first.
        if let Some(hook) = hook {
            tokio::task::spawn_blocking(move || hook.stop()).await?;
        }
        capture_stop.cancel();
        capture.await?;
        nids_stop.cancel();
        stop.cancel();
        watcher.await?;
        while servers.join_next().await.is_some() {}
        if let Some(records) = records {
            if let Err(e) = records.await? {
                warn!(error = %format!("{e:#}"), "record pipeline failed");
            }
        }
        info!("stopped");
        Ok(())
    }
}

/// Sets detection up (the mirror interface and sockets) when it is on; its
/// failures switch detection off with one message, never the agent.
fn start_nids(config: &Config, plan: CapturePlan) -> (Option<Nids>, Vec<Arc<dyn PacketSink>>) {
    if !config.nids.active() {
        info!(reason = %config.nids.off_reason(), "intrusion detection is off (capture and logs go on)");
        return (None, Vec::new());
    }
    if config.nids.options().runs_suricata() && config.nids.builtin_rules && config.nids.user_rules() == 0 {
        info!(rules = %config.nids.rules.display(),
            "no user rules (missing, or no rules in *.rules); detecting with the built-in rules");
    }
    if plan == CapturePlan::Off {
        warn!("intrusion detection needs capture, which is off; detection is off");
        return (None, Vec::new());
    }
    let options = portwarden_nids::NidsOptions { host: config.logs.host(), ..config.nids.options() };
    match Nids::setup(options) {
        Ok((nids, sinks)) => (Some(nids), sinks),
        Err(e) => {
            warn!(error = %ErrorChain(&e), "cannot set up the mirror; intrusion detection is off (capture and logs go on)");
            (None, Vec::new())
        }
    }
}

/// Captures per the plan until `cancel`.
async fn run_capture(
    engine: Option<CaptureEngine>,
    plan: CapturePlan,
    inventory: Inventory,
    cancel: CancellationToken,
) {
    let Some(engine) = engine else { return };
    match plan {
        CapturePlan::PerContainer => engine.run(&inventory, cancel).await,
        CapturePlan::OwnNamespace => {
            if let Err(e) = engine.run_own_namespace(cancel).await {
                warn!(error = %ErrorChain(&e), "capture of the agent's own namespace failed");
            }
        }
        CapturePlan::Off => {}
    }
}

/// What feeds the record pipeline.
struct RecordParts {
    config: Config,
    /// The inventory, when a runtime is watched.
    inventory: Option<Inventory>,
    /// Container log sources, in the order they are asked.
    sources: Vec<Arc<dyn LogSource>>,
    /// Leaves out the agent's own container, when it runs in one.
    not_me: Option<portwarden_core::Selector>,
    /// Detection and its own stop token.
    nids: Option<(Nids, CancellationToken)>,
}

/// Runs the record pipeline until `cancel`: containers' output (when there
/// is an inventory and log collection is on), the syslog and forward
/// listeners, and detection's enriched events (until detection's own stop
/// token and its drain); then drains the outputs.
async fn run_records(
    parts: RecordParts,
    pipeline: Pipeline,
    stats: Arc<LogStats>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let logs = &parts.config.logs;
    let resolver = Resolver::new(parts.inventory.clone());
    let mut tasks = JoinSet::new();
    if logs.enabled {
        let (resolver, cancel) = (resolver.clone(), cancel.clone());
        tasks.spawn(async move { resolver.run(cancel).await });
    }
    if logs.enabled && logs.syslog.enabled {
        match SyslogServer::bind(logs.syslog_options()?, resolver.clone(), Arc::clone(&stats)).await {
            Ok(server) => {
                tasks.spawn(server.run(pipeline.sender(), cancel.clone()));
            }
            Err(e) => warn!(error = %ErrorChain(&e), "syslog listener off"),
        }
    }
    if logs.enabled && logs.forward.enabled {
        match ForwardServer::bind(logs.forward_options()?, resolver.clone(), Arc::clone(&stats)).await {
            Ok(server) => {
                tasks.spawn(server.run(pipeline.sender(), cancel.clone()));
            }
            Err(e) => warn!(error = %ErrorChain(&e), "forward listener off"),
        }
    }
    if let (true, Some(inventory)) = (logs.enabled, parts.inventory) {
        let mut collector =
            LogCollector::new(parts.sources, pipeline.sender(), pipeline.resume(), pipeline.forgetter())
                .counting(Arc::clone(&stats));
        if let Some(not_me) = parts.not_me {
            collector = collector.only(not_me);
        }
        tasks.spawn(collector.run(inventory, cancel.clone()));
    }
    if let Some((nids, stop)) = parts.nids {
        tasks.spawn(nids.run(pipeline.sender(), stop));
    }
    while tasks.join_next().await.is_some() {}
    pipeline.finish(DRAIN_GRACE).await;
    info!(stats = ?stats.snapshot(), "record pipeline stopped");
    Ok(())
}

fn log_change(change: &ContainerChange) {
    let c = change.container();
    let pod = c.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name));
    // Removal first: a container removed while running (`rm -f`, no exit
    // event seen first) is removed, not merely stopped.
    let message = if change.after.is_none() {
        "container removed"
    } else if change.started() {
        "container started"
    } else if change.stopped() {
        "container stopped"
    } else {
        debug!(container = %c.id, name = %c.name, state = %c.state, origin = ?change.origin, "container updated");
        return;
    };
    info!(container = %c.id, name = %c.name, image = %c.image, runtime = %c.runtime, state = %c.state,
        pid = c.pid, pod, origin = ?change.origin, "{message}");
}
