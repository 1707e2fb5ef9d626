//! Suricata's EVE events, read from its unix socket (or an EVE file), each
//! given the `container` its VLAN tag stands for, and passed on.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use portwarden_core::time::parse_rfc3339;
use portwarden_core::{LogOrigin, LogRecord, LogSender};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::tags::TagTable;

/// Counters of the EVE reader, and Suricata's own latest figures.
#[derive(Debug, Default)]
pub struct EveStats {
    /// Events relayed.
    pub relayed: AtomicU64,
    /// Alerts among them.
    pub alerts: AtomicU64,
    /// Lines that were not a JSON object.
    pub malformed: AtomicU64,
    /// Events whose tag resolved to no capture.
    pub unattributed: AtomicU64,
    /// The last `stats` event's figures.
    pub suricata: Mutex<Option<SuricataStats>>,
}

/// What `portwarden status` shows of Suricata's own counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SuricataStats {
    /// Seconds Suricata has run.
    pub uptime: u64,
    /// Packets it decoded (read from the mirror).
    pub packets: u64,
    /// Packets its decoder found invalid.
    pub decoder_invalid: u64,
    /// Alerts raised.
    pub alerts: u64,
}

/// Turns EVE lines into records.
#[derive(Clone)]
pub struct Enricher {
    tags: TagTable,
    stats: Arc<EveStats>,
    /// The node's name, as an EVE value.
    host: Option<Value>,
}

impl Enricher {
    /// Resolves tags through `tags`.
    pub fn new(tags: TagTable, stats: Arc<EveStats>) -> Self {
        Self { tags, stats, host: None }
    }

    /// Adds `host` (the node) to every event that has none; empty adds nothing.
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = (!host.is_empty()).then(|| Value::String(host.to_owned()));
        self
    }

    /// One EVE line: `None` for `stats` events (kept for status) and bad lines (counted).
    pub fn event(&self, line: &[u8]) -> Option<LogRecord> {
        let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(line) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(line = %String::from_utf8_lossy(line), "skipping an EVE line that is not a JSON object");
            return None;
        };
        let kind = event.get("event_type").and_then(Value::as_str).unwrap_or_default().to_owned();
        if kind == "stats" {
            self.note_stats(&event);
            return None;
        }
        let tag = event.get("vlan").and_then(|v| v.get(0)).and_then(Value::as_u64).and_then(|t| u16::try_from(t).ok());
        let container = tag.and_then(|t| self.tags.resolve(t)).and_then(|o| o.container);
        if container.is_none() {
            self.stats.unattributed.fetch_add(1, Ordering::Relaxed);
        }
        let container_json = container.as_ref().and_then(|c| serde_json::to_value(c).ok()).unwrap_or(Value::Null);
        event.insert("container".into(), container_json);
        if let Some(host) = &self.host {
            event.entry("host").or_insert_with(|| host.clone());
        }
        let ts = event.get("timestamp").and_then(Value::as_str).and_then(parse_rfc3339);
        let timestamp = ts.map_or_else(std::time::SystemTime::now, |ns| UNIX_EPOCH + Duration::from_nanos(ns));
        let alert_severity = event.get("alert").and_then(|a| a.get("severity")).and_then(Value::as_u64);
        let summary = match kind.as_str() {
            "alert" => {
                self.stats.alerts.fetch_add(1, Ordering::Relaxed);
                event
                    .get("alert")
                    .and_then(|a| a.get("signature"))
                    .and_then(Value::as_str)
                    .unwrap_or("alert")
                    .to_owned()
            }
            other => other.to_owned(),
        };
        let mut record = LogRecord::new(timestamp, LogOrigin::Suricata, None, summary);
        record.container = container.map(Arc::new);
        record.raw = Some(Value::Object(event).to_string());
        // For outputs with a severity of their own (OTLP); 1 is the gravest.
        if let Some(severity) = alert_severity {
            record.fields.push(("alert_severity".into(), severity.to_string()));
        }
        self.stats.relayed.fetch_add(1, Ordering::Relaxed);
        Some(record)
    }

    /// The records of the whole lines at the start of `pending`, which
    /// keeps the unfinished last line.
    fn complete_lines(&self, pending: &mut Vec<u8>) -> Vec<LogRecord> {
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let batch =
            pending[..end].split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| self.event(l)).collect();
        pending.drain(..=end);
        batch
    }

    fn note_stats(&self, event: &Map<String, Value>) {
        let s = &event["stats"];
        let n = |path: &[&str]| path.iter().try_fold(s, |v, k| v.get(k)).and_then(Value::as_u64).unwrap_or(0);
        let figures = SuricataStats {
            uptime: n(&["uptime"]),
            packets: n(&["decoder", "pkts"]),
            decoder_invalid: n(&["decoder", "invalid"]),
            alerts: n(&["detect", "alert"]),
        };
        *self.stats.suricata.lock().unwrap_or_else(|e| e.into_inner()) = Some(figures);
    }
}

/// Reads EVE lines from `reader` into `out` until it ends.
async fn relay(reader: impl AsyncRead + Unpin, enricher: &Enricher, out: &LogSender) -> io::Result<()> {
    let mut lines = BufReader::with_capacity(256 << 10, reader).split(b'\n');
    while let Some(line) = lines.next_segment().await? {
        if line.is_empty() {
            continue;
        }
        if let Some(record) = enricher.event(&line) {
            if out.send(vec![record]).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// How long connections still open at `done` get to reach their end.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Listens on `path` for Suricata's EVE `unix_stream` output (it connects
/// again after a restart) until `done`; then reads what open connections
/// still carry, up to their end (Suricata exited) or `CLOSE_GRACE`.
pub(crate) async fn serve_socket(
    path: PathBuf,
    enricher: Enricher,
    out: LogSender,
    done: CancellationToken,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|source| io::Error::other(crate::Error::Eve { what: "socket", path: path.clone(), source }))?;
    info!(path = %path.display(), "listening for Suricata's EVE events");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = done.cancelled() => break,
        };
        let (enricher, out) = (enricher.clone(), out.clone());
        connections.spawn(async move {
            if let Err(e) = relay(stream, &enricher, &out).await {
                warn!(error = %e, "EVE connection failed");
            }
        });
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let closed = tokio::time::timeout(CLOSE_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if closed.is_err() {
        warn!("an EVE connection was still open after Suricata stopped; stopped reading it");
    }
    Ok(())
}

/// Room in the EVE pipe for a burst of alerts while the agent is busy
/// (Linux's default `pipe-max-size`; the kernel's default is 64 KiB).
const FIFO_CAPACITY: libc::c_int = 1 << 20;

/// Reads the managed Suricata's EVE output from a named pipe at `path`
/// until `done` (Suricata has exited), then what the pipe still holds.
///
/// A pipe rather than Suricata's `unix_stream` output: live, Suricata sends
/// to a socket with `MSG_DONTWAIT` and silently drops the events (or a line's
/// tail) that do not fit, so a burst of alerts is lost. Its writes to a
/// regular-file output block instead: when the agent falls behind, Suricata
/// waits, and what it cannot capture meanwhile shows as its kernel drops.
/// The agent holds the pipe open for both reading and writing, so a
/// restarted Suricata reopens the same pipe and reading never sees its end.
pub(crate) async fn serve_fifo(
    fifo: EveFifo,
    enricher: Enricher,
    out: LogSender,
    done: CancellationToken,
) -> io::Result<()> {
    let EveFifo { rx, path } = fifo;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut draining = false;
    loop {
        if !draining {
            tokio::select! {
                ready = rx.readable() => ready?,
                () = done.cancelled() => draining = true,
            }
        }
        let n = match rx.try_read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if draining {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&buf[..n]);
        let batch = enricher.complete_lines(&mut pending);
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return Ok(());
        }
    }
    if !pending.is_empty() {
        // Suricata was killed in the middle of a line.
        enricher.stats.malformed.fetch_add(1, Ordering::Relaxed);
    }
    drop(rx);
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The EVE pipe, made before Suricata starts (else Suricata would create a
/// regular file at its path).
pub(crate) struct EveFifo {
    rx: tokio::net::unix::pipe::Receiver,
    path: PathBuf,
}

impl EveFifo {
    /// Makes a fresh named pipe at `path` and opens it.
    pub(crate) fn create(path: PathBuf) -> crate::Result<Self> {
        let rx = open_fifo(&path).map_err(|source| crate::Error::Eve { what: "pipe", path: path.clone(), source })?;
        info!(path = %path.display(), "reading Suricata's EVE events from a pipe");
        Ok(Self { rx, path })
    }
}

/// Makes sure a named pipe is at `path` and opens it for reading (and
/// writing, so it never reports an end), with room for `FIFO_CAPACITY`.
fn open_fifo(path: &Path) -> io::Result<tokio::net::unix::pipe::Receiver> {
    crate::pipe::ensure_fifo(path)?;
    let rx = tokio::net::unix::pipe::OpenOptions::new().read_write(true).open_receiver(path)?;
    crate::pipe::set_capacity(&rx, FIFO_CAPACITY);
    Ok(rx)
}

/// Follows an EVE file another Suricata writes (from its end; a rotated
/// file is followed to the new one) until `done`.
pub(crate) async fn follow_file(
    path: &Path,
    enricher: Enricher,
    out: LogSender,
    done: CancellationToken,
) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let mut file: Option<(std::fs::File, u64)> = None;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        if file.is_none() {
            if let Ok(mut f) = std::fs::File::open(path) {
                f.seek(SeekFrom::End(0))?;
                let ino = f.metadata()?.ino();
                info!(path = %path.display(), "following Suricata's EVE file");
                file = Some((f, ino));
            }
        }
        let n = match file.as_mut() {
            Some((f, _)) => f.read(&mut buf)?,
            None => 0,
        };
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            let batch = enricher.complete_lines(&mut pending);
            if !batch.is_empty() && out.send(batch).await.is_err() {
                return Ok(());
            }
            continue;
        }
        // At the end: a new file at the path means rotation.
        if let (Some((_, ino)), Ok(meta)) = (file.as_ref(), std::fs::metadata(path)) {
            if meta.ino() != *ino {
                file = None;
                if let Ok(mut f) = std::fs::File::open(path) {
                    let ino = f.metadata()?.ino();
                    f.seek(SeekFrom::Start(0))?;
                    file = Some((f, ino));
                }
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = done.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::TagOwner;

    #[test]
    fn events_get_their_container_and_bad_lines_are_counted() {
        let tags = TagTable::new(Duration::from_secs(60));
        let tag = tags.allocate(TagOwner { container: None }).unwrap();
        let stats = Arc::new(EveStats::default());
        let e = Enricher::new(tags, Arc::clone(&stats));
        let line = format!(
            r#"{{"timestamp":"2026-11-27T13:00:00.000001+0000","event_type":"alert","vlan":[{tag}],"alert":{{"signature":"x"}}}}"#
        );
        let r = e.event(line.as_bytes()).unwrap();
        assert_eq!(r.message, "x");
        let v: Value = serde_json::from_str(r.raw.as_deref().unwrap()).unwrap();
        assert!(v["container"].is_null());
        assert!(e.event(b"not json").is_none());
        assert!(e.event(br#"{"event_type":"stats","stats":{"decoder":{"pkts":3}}}"#).is_none());
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.suricata.lock().unwrap().as_ref().unwrap().packets, 3);
    }
}
