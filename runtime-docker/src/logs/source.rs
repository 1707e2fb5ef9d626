//! The log source that follows containers through the logs API.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use portwarden_core::{
    Container, Error, ErrorChain, LogOrigin, LogPosition, LogRecord, LogSender, LogSource, LogSourceOptions, LogStats,
    Result, ResumeLookup, RuntimeName,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{DecodeError, DockerCursor, DockerDecoder, DockerLine};
use super::stream::DockerLogs;

/// After `cancel`, how long a follower waits for Docker to end the stream
/// (it does once a stopped container's output is drained).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Lines gathered before a batch is sent.
const BATCH_LINES: usize = 1024;

/// How long a small batch waits for more lines.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// Follows containers' stdout and stderr through the logs API.
pub struct DockerLogSource {
    logs: DockerLogs,
    /// The runtime whose containers it reads.
    runtime: RuntimeName,
    /// The source's name: records' `source`, and resume keys' prefix.
    name: &'static str,
    max_line: usize,
    skip_drivers: Vec<String>,
    stats: Arc<LogStats>,
}

impl DockerLogSource {
    /// Reads Docker's containers through `logs`. Containers whose log
    /// driver is in `skip_drivers` are left alone: those drivers (`syslog`,
    /// `fluentd`) usually send to this agent's listeners, and reading
    /// Docker's local copy as well would duplicate.
    pub fn new(logs: DockerLogs, options: &LogSourceOptions, skip_drivers: Vec<String>) -> Self {
        Self {
            logs,
            runtime: crate::DOCKER,
            name: "docker",
            max_line: options.max_line,
            skip_drivers,
            stats: Arc::clone(&options.stats),
        }
    }

    /// The same source for another runtime that serves Docker's logs API:
    /// it reads the containers `runtime` reports, under `runtime`'s name.
    pub fn for_runtime(mut self, runtime: &'static str) -> Self {
        self.runtime = RuntimeName::from_static(runtime);
        self.name = runtime;
        self
    }
}

#[async_trait]
impl LogSource for DockerLogSource {
    fn name(&self) -> &'static str {
        self.name
    }

    /// The runtime's own containers, except those that keep a CRI log file
    /// (cri-dockerd), which the CRI source reads.
    fn accepts(&self, container: &Container) -> bool {
        container.reported_by.contains(&self.runtime) && container.log_path.is_none()
    }

    fn resume_key(&self, container: &Container) -> String {
        format!("{}/{}", self.name, container.id)
    }

    async fn follow(
        &self,
        container: Arc<Container>,
        resume: ResumeLookup,
        out: LogSender,
        cancel: CancellationToken,
    ) -> Result<()> {
        let key: Arc<str> = self.resume_key(&container).into();
        let mut cursor: Option<DockerCursor> = portwarden_core::saved_resume(&resume, &key);
        // Started already cancelled: read what is there, without following.
        let mut follow = !cancel.is_cancelled();
        let mut backoff = Duration::from_millis(100);
        loop {
            let since = cursor.map(|c| c.since());
            let body = tokio::select! {
                body = self.logs.open(&container.id, since, follow) => body,
                () = cancel.cancelled(), if follow => return Ok(()),
            };
            let body = match body {
                Ok(b) => b,
                Err(Error::Api { status: 501, message, .. }) => {
                    self.stats.unreadable_drivers.fetch_add(1, Ordering::Relaxed);
                    warn!(container = %container.id, name = %container.name, reason = %message,
                        "container's log driver cannot be read back; its output is not collected");
                    return Ok(());
                }
                Err(Error::NotFound { .. }) => return Ok(()),
                Err(e) => {
                    if cancel.is_cancelled() {
                        return Err(e);
                    }
                    debug!(container = %container.id, error = %ErrorChain(&e), "cannot open log stream; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => return Err(e),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if self.skip_drivers.contains(&body.driver) {
                info!(container = %container.id, name = %container.name, driver = %body.driver,
                    "container logs through its log driver; not read through the logs API");
                return Ok(());
            }
            let mut decoder = DockerDecoder::new(body.tty, self.max_line, cursor);
            let mut frames = body.body;
            let drain = async {
                cancel.cancelled().await;
                tokio::time::sleep(DRAIN_GRACE).await;
            };
            tokio::pin!(drain);
            let ended = loop {
                let chunk = tokio::select! {
                    chunk = frames.next() => chunk,
                    () = &mut drain, if follow => break Ok(true),
                };
                let chunk = match chunk {
                    None => break Ok(true),
                    Some(Ok(c)) => c,
                    Some(Err(e)) => break Err(e),
                };
                let mut lines = Vec::new();
                let mut decoded = decoder.push(&chunk, &mut lines);
                let (mut pending_error, mut ended_early) = (None, false);
                // Take what else has already arrived, so a busy container
                // costs one batch per burst rather than one per line.
                // Docker writes a line at a time; lingering briefly for the
                // next ones saves a hand-off through the pipeline per line.
                let linger = tokio::time::sleep(BATCH_LINGER);
                tokio::pin!(linger);
                while lines.len() < BATCH_LINES && decoded.is_ok() {
                    let more = match frames.next().now_or_never() {
                        Some(more) => more,
                        None if lines.len() >= BATCH_LINES / 8 => break,
                        None => tokio::select! {
                            more = frames.next() => more,
                            () = &mut linger => break,
                        },
                    };
                    match more {
                        Some(Ok(more)) => decoded = decoder.push(&more, &mut lines),
                        Some(Err(e)) => {
                            pending_error = Some(e);
                            break;
                        }
                        None => {
                            ended_early = true;
                            break;
                        }
                    }
                }
                self.stats.deduplicated.fetch_add(std::mem::take(&mut decoder.deduplicated), Ordering::Relaxed);
                self.stats.malformed.fetch_add(std::mem::take(&mut decoder.malformed), Ordering::Relaxed);
                if let Some(last) = lines.last() {
                    cursor = Some(last.cursor);
                }
                let mut batch: Vec<LogRecord> = lines.into_iter().map(|l| self.record(l, &container)).collect();
                // Only the newest resume point of a batch is ever saved.
                if let (Some(last), Some(c)) = (batch.last_mut(), cursor) {
                    let state = serde_json::to_string(&c).unwrap_or_default();
                    last.position = Some(LogPosition { key: Arc::clone(&key), state });
                }
                if !batch.is_empty() && out.send(batch).await.is_err() {
                    return Ok(());
                }
                if let Err(DecodeError::BadFrame(what)) = decoded {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    break Err(Error::protocol(format!("logs of {}", container.id), what));
                }
                if let Some(e) = pending_error {
                    break Err(e);
                }
                if ended_early {
                    break Ok(true);
                }
            };
            match ended {
                // Docker ends a follow at once for a container it does not
                // see running: not yet (its runtime reported the start
                // first) or no longer. Read on from the cursor until the
                // collector says it stopped, then once more without
                // following for what it wrote meanwhile.
                Ok(_) if follow => {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => follow = false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Ok(_) => return Ok(()),
                Err(e) if cancel.is_cancelled() => return Err(e),
                Err(e) => {
                    debug!(container = %container.id, error = %ErrorChain(&e), "log stream broke; reopening");
                    backoff = Duration::from_millis(100);
                }
            }
        }
    }
}

impl DockerLogSource {
    fn record(&self, line: DockerLine, container: &Arc<Container>) -> LogRecord {
        let timestamp = UNIX_EPOCH + Duration::from_nanos(line.timestamp);
        let mut record = LogRecord::new(timestamp, LogOrigin::Runtime(self.name), Some(line.stream), line.message);
        if line.truncated {
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        record.truncated = line.truncated;
        record.container = Some(Arc::clone(container));
        record
    }
}
