//! Log collection's parts as the config describes them: the outputs, and
//! the container log sources (CRI files and the runtimes' own).

use std::sync::Arc;

use portwarden_core::{Detected, LogOrigin, LogRecord, LogSource, LogSourceOptions, LogStats};
use portwarden_logs::{
    CriLogSource, DiskBuffer, JsonFile, JsonStdout, OtlpOutput, Output, OutputConfig, Routed, SyslogOutput,
    alert_severity,
};
use tracing::info;

use crate::config::Config;

/// Opens the configured outputs, each given its streams: the log outputs
/// take log records, and alerts and flow records unless their
/// `to_log_outputs` is off; `[[alerts.outputs]]` take alerts of
/// `alerts.min_severity` or graver; `[[flows.outputs]]` take flow records.
pub(crate) fn outputs(config: &Config, stats: &Arc<LogStats>) -> anyhow::Result<Vec<Box<dyn Output>>> {
    let (alerts, flows) = (config.alerts.to_log_outputs, config.flows.to_log_outputs);
    let mut all = open(config, &config.logs.outputs, stats)?;
    if !alerts || !flows {
        let takes = move |r: &LogRecord| match (r.origin, alert_severity(r)) {
            (LogOrigin::Flow, _) => flows,
            (_, Some(_)) => alerts,
            _ => true,
        };
        all = all.into_iter().map(|o| Box::new(Routed::new(o, takes)) as _).collect();
    }
    let min = config.alerts.min_severity;
    for o in open(config, &config.alerts.outputs, stats)? {
        all.push(Box::new(Routed::new(o, move |r| alert_severity(r).is_some_and(|s| s <= min))));
    }
    for o in open(config, &config.flows.outputs, stats)? {
        all.push(Box::new(Routed::new(o, |r| r.origin == LogOrigin::Flow)));
    }
    Ok(all)
}

fn open(config: &Config, list: &[OutputConfig], stats: &Arc<LogStats>) -> anyhow::Result<Vec<Box<dyn Output>>> {
    let host = config.logs.host();
    // The deploy files set it from the pod's spec.nodeName.
    let node = std::env::var("PORTWARDEN_NODE_NAME").ok().filter(|n| !n.is_empty());
    list.iter()
        .map(|o| -> anyhow::Result<Box<dyn Output>> {
            Ok(match o {
                OutputConfig::Stdout => Box::new(JsonStdout::new(host.clone())),
                OutputConfig::File { path, max_bytes, max_files } => {
                    Box::new(JsonFile::open(path.clone(), *max_bytes, *max_files, host.clone())?)
                }
                OutputConfig::Syslog { address, tls, when_full, buffer_max_bytes } => {
                    let output = SyslogOutput::new(address.clone(), host.clone()).when_full(*when_full);
                    let output = match tls {
                        Some(tls) => {
                            output.with_tls(tls).map_err(|e| anyhow::anyhow!("syslog output {address}: {e}"))?
                        }
                        None => output,
                    };
                    buffered(config, Box::new(output), *buffer_max_bytes)?
                }
                OutputConfig::Otlp(otlp) => {
                    let output = OtlpOutput::new(otlp.clone(), host.clone(), node.clone(), Arc::clone(stats))
                        .map_err(|e| anyhow::anyhow!("OTLP output {}: {e}", otlp.endpoint))?;
                    buffered(config, Box::new(output), otlp.buffer_max_bytes)?
                }
            })
        })
        .collect()
}

/// `output` behind a disk buffer of `max_bytes` in the state directory,
/// or as it is when `max_bytes` is 0.
fn buffered(config: &Config, output: Box<dyn Output>, max_bytes: u64) -> anyhow::Result<Box<dyn Output>> {
    if max_bytes == 0 {
        return Ok(output);
    }
    let name = output.name();
    let state = config
        .logs
        .state_dir()
        .ok_or_else(|| anyhow::anyhow!("output {name}: buffer_max_bytes needs logs.state_dir"))?;
    // One directory per output, named after it.
    let dir: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    let buffer = DiskBuffer::open(output, &state.join("buffers").join(dir), max_bytes)
        .map_err(|e| anyhow::anyhow!("output {name}: disk buffer: {e}"))?;
    Ok(Box::new(buffer))
}

/// The container log sources the config enables: CRI log files, then
/// the log sources of the detected runtimes' providers.
pub(crate) fn sources(config: &Config, detected: &[Detected], stats: &Arc<LogStats>) -> Vec<Arc<dyn LogSource>> {
    let mut sources: Vec<Arc<dyn LogSource>> = Vec::new();
    if config.logs.cri {
        sources.push(Arc::new(CriLogSource::new(config.host_root(), config.logs.tail_options(), Arc::clone(stats))));
    }
    let options = LogSourceOptions { max_line: config.logs.max_message_bytes, stats: Arc::clone(stats) };
    for d in detected {
        if let Some(source) = d.provider.log_source(&d.endpoint, &options) {
            sources.push(source);
        }
    }
    sources
}

/// When the agent runs in a container of its own: a selector that leaves
/// that container out, of capture (with host networking, its traffic is the
/// host's, not its own) and of log collection (records about records). It is the one whose mount namespace is the agent's:
/// every container has a mount namespace of its own, even one sharing the
/// host's PID namespace (`hostPID`, which pre-start attach needs), so this
/// holds where comparing PID namespaces does not.
pub(crate) fn not_the_agent(proc_root: &std::path::Path) -> Option<portwarden_core::Selector> {
    use std::os::unix::fs::MetadataExt;
    let ns = |p: std::path::PathBuf| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mine = ns("/proc/self/ns/mnt".into())?;
    // In the host's mount namespace the agent is in no container.
    if ns(proc_root.join("1/ns/mnt")) == Some(mine) {
        return None;
    }
    let proc_root = proc_root.to_path_buf();
    let told = std::sync::atomic::AtomicBool::new(false);
    Some(Arc::new(move |c: &portwarden_core::Container| {
        let theirs = c.pid.and_then(|pid| ns(proc_root.join(pid.to_string()).join("ns/mnt")));
        if theirs == Some(mine) {
            if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                info!(container = %c.id, name = %c.name,
                    "this is the agent's own container; it is neither captured nor its output collected");
            }
            return false;
        }
        true
    }))
}
