//! Log collection as the binary runs it: outputs and sources built from
//! the config, the listeners, and the collector, on one pipeline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{Inventory, LogSource};
use portwarden_logs::stats::LogStats;
use portwarden_logs::{
    CheckpointStore, CriLogSource, DockerLogSource, ForwardServer, JsonFile, JsonStdout, LogCollector, Output,
    OutputConfig, Pipeline, PipelineOptions, Resolver, SyslogOutput, SyslogServer,
};
use portwarden_nids::Nids;
use portwarden_runtime_docker::DockerLogs;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Telemetry;

/// How long outputs get to drain at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Opens the configured outputs.
pub(crate) fn outputs(config: &Config) -> anyhow::Result<Vec<Box<dyn Output>>> {
    let host = config.logs.host();
    config
        .logs
        .outputs
        .iter()
        .map(|o| -> anyhow::Result<Box<dyn Output>> {
            Ok(match o {
                OutputConfig::Stdout => Box::new(JsonStdout::new(host.clone())),
                OutputConfig::File { path, max_bytes, max_files } => Box::new(
                    JsonFile::open(path.clone(), *max_bytes, *max_files, host.clone())
                        .map_err(|e| anyhow::anyhow!("log output {}: {e}", path.display()))?,
                ),
                OutputConfig::Syslog { address } => Box::new(SyslogOutput::new(address.clone(), host.clone())),
            })
        })
        .collect()
}

/// The container log sources the config enables: Docker's logs API (when a
/// Docker socket was detected) and CRI log files.
pub(crate) fn sources(
    config: &Config,
    docker_socket: Option<PathBuf>,
    stats: &Arc<LogStats>,
) -> Vec<Arc<dyn LogSource>> {
    let mut sources: Vec<Arc<dyn LogSource>> = Vec::new();
    if config.logs.cri {
        sources.push(Arc::new(CriLogSource::new(config.host_root(), config.logs.tail_options(), Arc::clone(stats))));
    }
    if let (true, Some(socket)) = (config.logs.docker, docker_socket) {
        let logs = DockerLogs::new(&socket, config.runtimes.request_timeout);
        let skip = config.logs.docker_skip_drivers.clone();
        sources.push(Arc::new(DockerLogSource::new(logs, config.logs.max_message_bytes, skip, Arc::clone(stats))));
    }
    sources
}

/// Runs the record pipeline until `cancel`: containers' output (when there
/// is an inventory and log collection is on), the syslog and forward
/// listeners, and detection's enriched events (until detection's own stop
/// token and its drain), into `outputs`.
pub(crate) async fn run(
    config: Config,
    inventory: Option<Inventory>,
    docker_socket: Option<PathBuf>,
    outputs: Vec<Box<dyn Output>>,
    nids: Option<(Nids, CancellationToken)>,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let logs = &config.logs;
    let stats = Arc::new(LogStats::default());
    let _ = telemetry.logs.set(Arc::clone(&stats));
    let store = CheckpointStore::new(logs.state_dir())?;
    let options = PipelineOptions { queue: logs.queue_batches, ..PipelineOptions::default() };
    let pipeline = Pipeline::start(outputs, store, options, Arc::clone(&stats))?;
    let _ = telemetry.records.set(pipeline.tap());
    let _ = telemetry.queues.set(pipeline.gauges());
    let resolver = Resolver::new(inventory.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if logs.enabled {
        let (resolver, cancel) = (resolver.clone(), cancel.clone());
        tasks.spawn(async move { resolver.run(cancel).await });
    }
    if logs.enabled && logs.syslog.enabled {
        match SyslogServer::bind(logs.syslog_options()?, resolver.clone(), Arc::clone(&stats)).await {
            Ok(server) => {
                tasks.spawn(server.run(pipeline.sender(), cancel.clone()));
            }
            Err(e) => warn!(error = %e, "syslog listener off"),
        }
    }
    if logs.enabled && logs.forward.enabled {
        match ForwardServer::bind(logs.forward_options()?, resolver.clone(), Arc::clone(&stats)).await {
            Ok(server) => {
                tasks.spawn(server.run(pipeline.sender(), cancel.clone()));
            }
            Err(e) => warn!(error = %e, "forward listener off"),
        }
    }
    if let (true, Some(inventory)) = (logs.enabled, inventory) {
        let sources = sources(&config, docker_socket, &stats);
        let mut collector = LogCollector::new(sources, pipeline.sender(), pipeline.resume(), pipeline.forgetter());
        if let Some(not_me) = not_the_agent(&config.proc_root()) {
            // The agent in a container would otherwise read its own output,
            // records about records, without end.
            collector = collector.only(not_me);
        }
        tasks.spawn(collector.run(inventory, cancel.clone()));
    }
    if let Some((nids, stop)) = nids {
        let _ = telemetry.nids.set(Arc::new(nids.status_reader()));
        tasks.spawn(nids.run(pipeline.sender(), stop));
    }
    while tasks.join_next().await.is_some() {}
    pipeline.finish(DRAIN_GRACE).await;
    info!(stats = ?stats.snapshot(), "record pipeline stopped");
    Ok(())
}

/// When the agent runs in a container of its own: a selector that leaves
/// that container out (the one whose PID namespace is the agent's).
fn not_the_agent(proc_root: &std::path::Path) -> Option<portwarden_core::Selector> {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: std::path::PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mine = ns("/proc/self/ns/pid".into())?;
    // In the host's PID namespace the agent is in no container.
    if ns(proc_root.join("1/ns/pid")) == Some(mine) {
        return None;
    }
    let proc_root = proc_root.to_path_buf();
    Some(Arc::new(move |c: &portwarden_core::Container| {
        let theirs = c.pid.and_then(|pid| ns(proc_root.join(pid.to_string()).join("ns/pid")));
        if theirs == Some(mine) {
            info!(container = %c.id, name = %c.name, "this is the agent's own container; its output is not collected");
            return false;
        }
        true
    }))
}
