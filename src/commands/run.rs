//! `portwarden run`: the daemon.

use std::process::ExitCode;

use portwarden_core::{ContainerChange, Inventory, InventoryEvent, Registry, Rejection};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;

pub(crate) async fn run(config: &Config, registry: &Registry) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

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

    let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
    let inventory = Inventory::new(runtimes, config.inventory_options());
    let mut changes = inventory.subscribe();
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.child_token());
        async move { inventory.run(cancel).await }
    });

    let signal = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            change = changes.recv() => match change {
                Ok(InventoryEvent::Container(change)) => log_change(&change),
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => warn!(missed, "container log fell behind; skipped changes"),
                Err(RecvError::Closed) => {}
            },
        }
    };
    info!(signal, "shutting down");
    cancel.cancel();
    watcher.await?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
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
