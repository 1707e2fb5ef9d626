//! `portwarden logs`: containers' output. What was written so far is read
//! from the runtimes (Docker's logs API, CRI log files); `-f` then follows
//! the running daemon's stream, which also carries syslog and forward
//! records, or follows the runtimes here when no daemon runs.
//!
//! With a daemon, the two halves split at one instant: history keeps the
//! records written before it, the daemon's stream those from it on, so no
//! line shows twice or goes missing in between.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use portwarden_core::LogStats;
use portwarden_core::time::{rfc3339_nanos, unix_nanos};
use portwarden_core::{ErrorChain, Inventory, LogRecord, Registry};
use portwarden_logs::{CheckpointStore, JsonStdout, LogCollector, Output, Pipeline, PipelineOptions};
use portwarden_proto::{AgentClient, v1};
use tokio_util::sync::CancellationToken;

use super::{Interrupt, selector};
use crate::api::status_error;
use crate::cli::LogsArgs;
use crate::collect;
use crate::config::Config;

pub(crate) async fn logs(
    config: &Config,
    registry: &Registry,
    daemon: Option<AgentClient>,
    args: LogsArgs,
) -> anyhow::Result<ExitCode> {
    let live = match (args.follow, daemon) {
        (true, Some(mut daemon)) => {
            let request = v1::StreamLogsRequest {
                selector: Some(super::wire_selector(&args.containers, args.pod.as_deref())),
                sources: Vec::new(),
            };
            let stream = daemon.stream_logs(request).await.map_err(status_error)?.into_inner();
            Some((SystemTime::now(), stream))
        }
        _ => None,
    };
    let history_until = live.as_ref().map(|(split, _)| *split);
    let code = history(config, registry, &args, history_until).await?;
    match live {
        Some((split, stream)) => follow_daemon(stream, split, args.json).await,
        None => Ok(code),
    }
}

/// Prints the daemon's live records: container output from `split` on
/// (history printed what came before), every syslog and forward record.
async fn follow_daemon(
    stream: tonic::Streaming<v1::LogRecord>,
    split: SystemTime,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let split = i64::try_from(unix_nanos(split)).unwrap_or(i64::MAX);
    super::print_stream(
        stream,
        "records",
        |r| r.missed,
        |r| {
            if matches!(r.source.as_str(), "docker" | "cri") && r.time_unix_nano < split {
                return None;
            }
            Some(if json {
                format!("{}\n", r.json)
            } else {
                let stream = if r.stream.is_empty() { "-" } else { &r.stream };
                text_line(r.time_unix_nano, super::wire_name(r.container.as_ref()), stream, &r.message)
            })
        },
    )
    .await
}

/// Reads containers' logs from the runtimes: what is there (records before
/// `until`, when given), and with `-f` and no `until`, what follows.
async fn history(
    config: &Config,
    registry: &Registry,
    args: &LogsArgs,
    until: Option<SystemTime>,
) -> anyhow::Result<ExitCode> {
    let follow = args.follow && until.is_none();
    let detection = registry.detect(&config.detect_options(registry)).await;
    if detection.runtimes.is_empty() {
        anyhow::bail!("no container runtime detected (`portwarden runtimes` says why)");
    }
    let stats = Arc::new(LogStats::default());
    let sources = collect::sources(config, &detection.runtimes, &stats);
    let runtimes = detection.runtimes.into_iter().map(|d| d.runtime).collect();
    let inventory = Inventory::new(runtimes, config.inventory_options());
    let stop = CancellationToken::new();
    // Following needs the runtimes' events; reading what is there needs
    // one listing (no event subscription, none of its settling time).
    let watcher = if follow {
        let watcher = tokio::spawn({
            let (inventory, stop) = (inventory.clone(), stop.clone());
            async move { inventory.run(stop).await }
        });
        inventory.wait_synced().await;
        Some(watcher)
    } else {
        for (runtime, e) in inventory.sync_once().await {
            let endpoint = runtime.endpoint().display().to_string();
            eprintln!("portwarden: could not list {} at {endpoint}: {}", runtime.name(), ErrorChain(&e));
        }
        None
    };
    let wanted = selector(&args.containers, args.pod.as_deref())?;

    let mut output: Box<dyn Output> =
        if args.json { Box::new(JsonStdout::new(config.logs.host())) } else { Box::new(TextStdout::default()) };
    if let Some(until) = until {
        output = Box::new(Before { until, inner: output, kept: Vec::new() });
    }
    let pipeline =
        Pipeline::start(vec![output], CheckpointStore::new(None)?, PipelineOptions::default(), Arc::clone(&stats))?;

    if follow {
        let mut interrupt = Interrupt::new()?;
        let collector = LogCollector::new(sources, pipeline.sender(), pipeline.resume(), pipeline.forgetter())
            .only(Arc::clone(&wanted));
        let run = tokio::spawn(collector.run(inventory.clone(), stop.clone()));
        interrupt.wait().await;
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
                eprintln!("portwarden: {}: {}", c.display_name(), ErrorChain(&e));
            }
        }
        stop.cancel();
        if matched == 0 && !args.follow && (!args.containers.is_empty() || args.pod.is_some()) {
            pipeline.finish(Duration::from_secs(5)).await;
            if let Some(watcher) = watcher {
                let _ = watcher.await;
            }
            anyhow::bail!("no container with readable logs matches");
        }
    }
    pipeline.finish(Duration::from_secs(5)).await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
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
            let time = i64::try_from(unix_nanos(r.timestamp)).unwrap_or(i64::MAX);
            self.buf.extend_from_slice(text_line(time, name, stream, &r.message).as_bytes());
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

/// One record as text: `TIMESTAMP NAME STREAM MESSAGE`.
pub(crate) fn text_line(time_unix_nano: i64, name: &str, stream: &str, message: &str) -> String {
    format!("{} {name} {stream} {message}\n", rfc3339_nanos(u64::try_from(time_unix_nano).unwrap_or(0)))
}

/// Passes on only the records written before `until`.
struct Before {
    until: SystemTime,
    inner: Box<dyn Output>,
    kept: Vec<LogRecord>,
}

#[async_trait]
impl Output for Before {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        self.kept.clear();
        self.kept.extend(records.iter().filter(|r| r.timestamp < self.until).cloned());
        self.inner.write(&self.kept).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }
}
