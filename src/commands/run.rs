//! `portwarden run`: the daemon, which is the library's [`Agent`] plus
//! signal handling.

use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::agent::{Agent, RunMode};
use crate::config::Config;

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads the rules.
pub(crate) async fn run(config: &Config, mode: RunMode) -> anyhow::Result<ExitCode> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let agent = Agent::builder(config.clone()).mode(mode).build()?;
    let reload = agent.reload_handle();
    let cancel = CancellationToken::new();
    let signals = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let signal = loop {
                tokio::select! {
                    _ = sigterm.recv() => break "SIGTERM",
                    _ = sigint.recv() => break "SIGINT",
                    _ = sighup.recv() => {
                        info!("SIGHUP");
                        reload.request();
                    }
                    () = cancel.cancelled() => return,
                }
            };
            info!(signal, "shutting down");
            cancel.cancel();
        }
    });
    let outcome = agent.run(cancel.clone()).await;
    cancel.cancel();
    let _ = signals.await;
    outcome.map(|()| ExitCode::SUCCESS)
}
