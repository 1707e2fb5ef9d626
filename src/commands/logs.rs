//! `portwarden logs`: containers' output, read directly from the runtimes
//! (through a running daemon once its API exists, issue #7).

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portwarden_core::time::{rfc3339_nanos, unix_nanos};
use portwarden_core::{Inventory, LogRecord, Registry, RuntimeKind};
use portwarden_logs::stats::LogStats;
use portwarden_logs::{CheckpointStore, JsonStdout, LogCollector, Output, Pipeline, PipelineOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::selector;
use crate::cli::LogsArgs;
use crate::collect;
use crate::config::Config;

pub(crate) async fn logs(config: &Config, registry: &Registry, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let detection = registry.detect(&config.detect_options()).await;
    if detection.runtimes.is_empty() {
        anyhow::bail!("no container runtime detected (`portwarden runtimes` says why)");
    }
    let docker_socket =
        detection.runtimes.iter().find(|d| d.info.kind == RuntimeKind::Docker).map(|d| d.socket.clone());
    let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
    let inventory = Inventory::new(runtimes, config.inventory_options());
    let stop = CancellationToken::new();
    let watcher = tokio::spawn({
        let (inventory, stop) = (inventory.clone(), stop.clone());
        async move { inventory.run(stop).await }
    });
    inventory.wait_synced().await;
    let wanted = selector(&args.containers, args.pod.as_deref())?;

    let stats = Arc::new(LogStats::default());
    let output: Box<dyn Output> =
        if args.json { Box::new(JsonStdout::new(config.logs.host())) } else { Box::new(TextStdout::default()) };
    let pipeline =
        Pipeline::start(vec![output], CheckpointStore::new(None)?, PipelineOptions::default(), Arc::clone(&stats))?;
    let sources = collect::sources(config, docker_socket, &stats);

    if args.follow {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let collector = LogCollector::new(sources, pipeline.sender(), pipeline.resume(), pipeline.forgetter())
            .only(Arc::clone(&wanted));
        let run = tokio::spawn(collector.run(inventory.clone(), stop.clone()));
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        stop.cancel();
        let _ = run.await;
    } else {
        let mut matched = 0;
        let mut containers: Vec<_> = inventory.snapshot().into_iter().filter(|c| wanted(c)).collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        for c in containers {
            let Some(source) = sources.iter().find(|s| s.accepts(&c)) else { continue };
            matched += 1;
            // Already cancelled: read what is there and return.
            let done = CancellationToken::new();
            done.cancel();
            if let Err(e) = source.follow(Arc::new(c.clone()), pipeline.resume(), pipeline.sender(), done).await {
                eprintln!("portwarden: {}: {}", c.display_name(), portwarden_core::ErrorChain(&e));
            }
        }
        stop.cancel();
        if matched == 0 && (!args.containers.is_empty() || args.pod.is_some()) {
            pipeline.finish(Duration::from_secs(5)).await;
            let _ = watcher.await;
            anyhow::bail!("no container with readable logs matches");
        }
    }
    pipeline.finish(Duration::from_secs(5)).await;
    let _ = watcher.await;
    Ok(ExitCode::SUCCESS)
}

/// `TIMESTAMP NAME STREAM MESSAGE`, like `docker logs -t` with a name column.
#[derive(Default)]
pub(crate) struct TextStdout {
    buf: Vec<u8>,
}

#[async_trait]
impl Output for TextStdout {
    fn name(&self) -> String {
        "stdout".into()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        for r in records {
            let name = r.container.as_deref().map_or("-", |c| c.display_name());
            let stream = r.stream.map_or("-", |s| s.as_str());
            let _ = writeln!(self.buf, "{} {name} {stream} {}", rfc3339_nanos(unix_nanos(r.timestamp)), r.message);
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(&self.buf)?;
        self.buf.clear();
        out.flush()
    }
}
