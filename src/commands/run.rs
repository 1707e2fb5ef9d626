//! `portwarden run`: the daemon.

use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use portwarden_capture::AfPacketSource;
use portwarden_capture::FlowTimeouts;
use portwarden_capture::sinks::{FlowSink, SharedWriter};
use portwarden_core::{
    Capabilities, CaptureEngine, ContainerChange, ErrorChain, Inventory, InventoryEvent, PacketSink, Registry,
    Rejection, RuntimeKind,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use std::path::PathBuf;

use portwarden_nids::Nids;

use crate::collect;
use crate::config::Config;
use crate::metrics::{Facts, RuntimeInfo, Telemetry};
use crate::mode::{self, CapturePlan};

/// The daemon. `alerts_only` (`Some(json)`) is `portwarden alerts`: detection
/// only, alerts printed on stdout.
pub(crate) async fn run(config: &Config, registry: &Registry, alerts_only: Option<bool>) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut config = config.clone();
    if alerts_only.is_some() {
        config.logs.enabled = false;
        config.logs.state_dir = PathBuf::new();
        config.capture.flows = false;
    }
    let config = &config;
    if config.nids.active() && config.capture.enabled {
        let options = config.nids.options();
        if options.runs_suricata() {
            // A bad include or setting stops the agent here, before it starts
            // anything, with Suricata's own message.
            options.suricata().preflight().await.map_err(|e| anyhow::anyhow!("nids: {e}"))?;
        }
    }
    let lock = crate::guard::HostLock::acquire(&config.lock_file())?;
    if let Some(lock) = &lock {
        debug!(lock = %lock.path().display(), "agent lock held");
    }

    let detection = registry.detect(&config.detect_options()).await;
    for d in &detection.runtimes {
        info!(runtime = %d.info.kind, socket = %d.socket.display(), name = %d.info.name,
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
    let (mode, plan, reason) = mode::decide(detection.runtimes.len(), caps, config.capture.enabled);
    info!(mode = mode.as_str(), capture = plan.as_str(), %reason, "mode");

    let telemetry = Arc::new(Telemetry::default());
    let _ = telemetry.facts.set(Facts {
        started: std::time::Instant::now(),
        mode,
        plan,
        reason,
        runtimes: detection
            .runtimes
            .iter()
            .map(|d| RuntimeInfo {
                kind: d.info.kind,
                socket: d.socket.clone(),
                name: d.info.name.clone(),
                version: d.info.version.clone(),
            })
            .collect(),
        capabilities: caps,
    });
    let docker_socket =
        detection.runtimes.iter().find(|d| d.info.kind == RuntimeKind::Docker).map(|d| d.socket.clone());
    let watching = !detection.runtimes.is_empty();
    let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
    let inventory = Inventory::new(runtimes, config.inventory_options());
    let mut changes = inventory.subscribe();
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.child_token());
        async move { inventory.run(cancel).await }
    });
    if watching {
        let _ = telemetry.inventory.set(inventory.clone());
    }
    let metrics = config.metrics.enabled.then(|| {
        tokio::spawn(crate::metrics::serve(config.metrics.listen, Arc::clone(&telemetry), cancel.child_token()))
    });
    let (nids, mirror_sinks) = start_nids(config, plan);
    if nids.is_none() {
        let reason = if !config.nids.active() {
            config.nids.off_reason()
        } else if plan == CapturePlan::Off {
            "capture is off".to_owned()
        } else {
            "the mirror could not be set up (see the log)".to_owned()
        };
        let _ = telemetry.detection_off.set(reason);
    }
    let reload = nids.as_ref().map(Nids::reloader);
    if let Some(reload) = &reload {
        let _ = telemetry.reload.set(reload.clone());
    }
    let api = (config.api.enabled && alerts_only.is_none()).then(|| {
        tokio::spawn(crate::api::serve(config.clone(), inventory.clone(), Arc::clone(&telemetry), cancel.child_token()))
    });
    // Stopped first at shutdown, so that detection sees every frame before
    // Suricata is stopped.
    let capture_stop = cancel.child_token();
    let nids_stop = CancellationToken::new();
    let capture = tokio::spawn(run_capture(
        config.clone(),
        plan,
        inventory.clone(),
        mirror_sinks,
        Arc::clone(&telemetry),
        capture_stop.clone(),
    ));
    let outputs = match alerts_only {
        Some(false) => vec![Box::new(super::logs::TextStdout::default()) as Box<dyn portwarden_logs::Output>],
        _ => collect::outputs(config)?,
    };
    let records = (config.logs.enabled || nids.is_some()).then(|| {
        let inventory = watching.then(|| inventory.clone());
        let telemetry = Arc::clone(&telemetry);
        tokio::spawn(collect::run(
            config.clone(),
            inventory,
            docker_socket,
            outputs,
            nids.map(|n| (n, nids_stop.clone())),
            telemetry,
            cancel.child_token(),
        ))
    });

    let signal = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => match &reload {
                Some(reload) => {
                    if reload.request() {
                        info!("SIGHUP: reloading rules");
                    } else {
                        info!("SIGHUP: Suricata is external; nothing to reload");
                    }
                }
                None => info!("SIGHUP: nothing to reload (detection is off)"),
            },
            change = changes.recv() => match change {
                Ok(InventoryEvent::Container(change)) => log_change(&change),
                Ok(InventoryEvent::RuntimeLost { runtime, endpoint, error }) => {
                    telemetry.runtime_lost(runtime, &endpoint, error);
                }
                Ok(InventoryEvent::RuntimeSynced { runtime, endpoint, .. }) => {
                    telemetry.runtime_synced(runtime, &endpoint);
                }
                Err(RecvError::Lagged(missed)) => warn!(missed, "container log fell behind; skipped changes"),
                Err(RecvError::Closed) => {}
            },
        }
    };
    info!(signal, "shutting down");
    // Capture stops first (each ring's last block is read); then detection
    // lets Suricata read what was mirrored, stops it and reads its last
    // alerts; the record pipeline flushes the outputs after that.
    capture_stop.cancel();
    capture.await?;
    nids_stop.cancel();
    cancel.cancel();
    watcher.await?;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    if let Some(api) = api {
        let _ = api.await;
    }
    if let Some(records) = records {
        if let Err(e) = records.await? {
            warn!(error = %format!("{e:#}"), "record pipeline failed");
        }
    }
    info!("stopped");
    Ok(ExitCode::SUCCESS)
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
    match Nids::setup(config.nids.options()) {
        Ok((nids, sinks)) => (Some(nids), sinks),
        Err(e) => {
            warn!(error = %e, "cannot set up the mirror; intrusion detection is off (capture and logs go on)");
            (None, Vec::new())
        }
    }
}

/// Captures per the plan until `cancel`: flow records to stdout, frames to
/// the detection mirror.
async fn run_capture(
    config: Config,
    plan: CapturePlan,
    inventory: Inventory,
    extra: Vec<Arc<dyn PacketSink>>,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
) {
    let mut sinks: Vec<Arc<dyn PacketSink>> = extra;
    if config.capture.flows {
        let stdout: SharedWriter = Arc::new(Mutex::new(Box::new(std::io::stdout())));
        sinks.push(Arc::new(FlowSink::new(stdout, FlowTimeouts::default())));
    }
    let engine = CaptureEngine::new(Arc::new(AfPacketSource), sinks, config.capture.options());
    let _ = telemetry.engine.set(engine.clone());
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

fn log_change(change: &ContainerChange) {
    let c = change.container();
    let pod = c.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name));
    let message = if change.started() {
        "container started"
    } else if change.stopped() {
        "container stopped"
    } else if change.after.is_none() {
        "container removed"
    } else {
        debug!(container = %c.id, name = %c.name, state = %c.state, origin = ?change.origin, "container updated");
        return;
    };
    info!(container = %c.id, name = %c.name, image = %c.image, runtime = %c.runtime, state = %c.state,
        pid = c.pid, pod, origin = ?change.origin, "{message}");
}
