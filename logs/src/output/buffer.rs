//! A disk buffer in front of a network output, so an outage neither loses
//! records nor holds back the other outputs.
//!
//! The pipeline writes to [`DiskBuffer`], which appends the records to a
//! log of segment files under the state directory and is done: for the
//! pipeline (and so for checkpoints) a record on disk is delivered. A
//! drainer task reads the log in order and hands it to the real output,
//! retrying with backoff while the receiver is down, and records how far it
//! got in an `ack` file. After a crash (SIGKILL included) what was not
//! acknowledged is sent again: at-least-once.
//!
//! Each frame is `[u32 length][u32 CRC-32][JSON record]`, little-endian. A
//! frame whose length or CRC is wrong is counted as corrupt and the rest of
//! its segment skipped; the other segments are kept. When the buffer holds
//! `max_bytes`, the output's `when_full` applies: `block` (the pipeline
//! waits, and so do the sources) or `drop_newest` (counted).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use portwarden_core::{ClaimedIdentity, Container, LogOrigin, LogRecord, LogStream};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Output, WhenFull};

/// A new segment starts past this size.
const SEGMENT_BYTES: u64 = 8 << 20;

/// A segment the drainer has caught up with is replaced by an empty one
/// once it holds this much, so a buffer that keeps up does not create and
/// remove a file per batch.
const ROLL_DRAINED_BYTES: u64 = 1 << 20;

/// Records handed to the output per delivery.
const DRAIN_RECORDS: usize = 1000;

/// No frame is larger (a record is at most a few MiB): a larger length is
/// damage, not a record.
const MAX_FRAME: u64 = 64 << 20;

/// What a buffer holds and did, for metrics.
#[derive(Debug, Default)]
pub struct BufferStats {
    /// Bytes on disk not yet delivered.
    pub bytes: AtomicU64,
    /// Records delivered from the buffer.
    pub delivered: AtomicU64,
    /// Deliveries that failed and were retried.
    pub retries: AtomicU64,
    /// Records dropped because the buffer was full (`drop_newest`).
    pub dropped: AtomicU64,
    /// Frames found damaged (bad length, CRC or record) and skipped.
    pub corrupt: AtomicU64,
}

/// Where the writer stands: the segment being appended to.
struct Tail {
    segment: u64,
    file: File,
    offset: u64,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    tail: Mutex<Tail>,
    /// The writer appended: the drainer may read on.
    data: Notify,
    /// The drainer acknowledged: the writer may find room.
    space: Notify,
    /// An append failed (a full disk, usually) since the drainer last
    /// replaced a segment it had caught up with: replace the next one
    /// whatever its size, since its disk space is what appends wait for.
    append_failed: AtomicBool,
    stats: Arc<BufferStats>,
}

/// A network output behind a disk buffer.
pub struct DiskBuffer {
    name: String,
    shared: Arc<Shared>,
    policy: WhenFull,
    /// Frames of the records written since the last flush.
    pending: Vec<u8>,
    pending_records: u64,
    stop: CancellationToken,
}

impl DiskBuffer {
    /// Buffers `inner` in `dir`, at most `max_bytes`, and starts delivering
    /// what an earlier run left there. Needs a Tokio runtime.
    pub fn open(inner: Box<dyn Output>, dir: &Path, max_bytes: u64) -> io::Result<DiskBuffer> {
        fs::create_dir_all(dir)?;
        let name = inner.name();
        let policy = inner.when_full();
        let stats = Arc::new(BufferStats::default());
        let (cursor, tail, bytes) = recover(dir, &stats)?;
        stats.bytes.store(bytes, Ordering::Relaxed);
        if bytes > 0 {
            info!(output = %name, bytes, "records left in the output's disk buffer are sent first");
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            max_bytes,
            tail: Mutex::new(tail),
            data: Notify::new(),
            space: Notify::new(),
            append_failed: AtomicBool::new(false),
            stats,
        });
        let stop = CancellationToken::new();
        tokio::spawn(drain(inner, Arc::clone(&shared), cursor, stop.clone()));
        Ok(DiskBuffer { name, shared, policy, pending: Vec::new(), pending_records: 0, stop })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<BufferStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Appends the pending frames if they fit; `Ok(false)` when full.
    fn append(&self) -> io::Result<bool> {
        let shared = &self.shared;
        let mut tail = shared.tail.lock().unwrap_or_else(|e| e.into_inner());
        let len = self.pending.len() as u64;
        if shared.stats.bytes.load(Ordering::Relaxed) + len > shared.max_bytes {
            return Ok(false);
        }
        if tail.offset >= SEGMENT_BYTES {
            let segment = tail.segment + 1;
            let file = open_segment(&shared.dir, segment)
                .inspect_err(|_| shared.append_failed.store(true, Ordering::Relaxed))?;
            *tail = Tail { segment, file, offset: 0 };
        }
        if let Err(e) = tail.file.write_all(&self.pending) {
            // Cut back what part of it reached the file (appends go to the end).
            let _ = tail.file.set_len(tail.offset);
            shared.append_failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        tail.offset += len;
        shared.stats.bytes.fetch_add(len, Ordering::Relaxed);
        drop(tail);
        shared.data.notify_one();
        Ok(true)
    }
}

impl Drop for DiskBuffer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Output for DiskBuffer {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        for r in records {
            frame(r, &mut self.pending);
        }
        self.pending_records += records.len() as u64;
        Ok(())
    }

    /// On disk is delivered, as far as the pipeline knows.
    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        loop {
            let room = shared.space.notified();
            match self.append() {
                Ok(true) => break,
                Ok(false) if self.policy == WhenFull::DropNewest => {
                    self.shared.stats.dropped.fetch_add(self.pending_records, Ordering::Relaxed);
                    break;
                }
                Ok(false) => {
                    // Room comes when the drainer acknowledges; check again
                    // now and then in case the notice was missed.
                    let _ = tokio::time::timeout(Duration::from_millis(500), room).await;
                }
                Err(e) if self.policy == WhenFull::DropNewest => {
                    warn!(output = %self.name, error = %e, "cannot append to the disk buffer; records dropped");
                    self.shared.stats.dropped.fetch_add(self.pending_records, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{} disk buffer: {e}", self.name))),
            }
        }
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// Appending is quick; a full buffer applies the policy itself.
    fn when_full(&self) -> WhenFull {
        WhenFull::Block
    }

    fn buffer_stats(&self) -> Option<Arc<BufferStats>> {
        Some(self.stats())
    }
}

/// Where the drainer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    segment: u64,
    offset: u64,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016}.seg"))
}

fn open_segment(dir: &Path, segment: u64) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(segment_path(dir, segment))
}

fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut all: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    all.sort_unstable();
    Ok(all)
}

fn read_ack(dir: &Path) -> Option<Cursor> {
    let text = fs::read_to_string(dir.join("ack")).ok()?;
    let (segment, offset) = text.trim().split_once(' ')?;
    Some(Cursor { segment: segment.parse().ok()?, offset: offset.parse().ok()? })
}

fn write_ack(dir: &Path, cursor: Cursor) -> io::Result<()> {
    let tmp = dir.join("ack.tmp");
    fs::write(&tmp, format!("{} {}\n", cursor.segment, cursor.offset))?;
    fs::rename(tmp, dir.join("ack"))
}

/// Finds where to read from and where to append after an earlier run: a
/// damaged tail of the last segment (a write cut short) is cut off, and
/// counted.
fn recover(dir: &Path, stats: &BufferStats) -> io::Result<(Cursor, Tail, u64)> {
    let all = segments(dir)?;
    let first = all.first().copied().unwrap_or(0);
    let mut cursor = read_ack(dir).filter(|c| all.contains(&c.segment)).unwrap_or(Cursor { segment: first, offset: 0 });
    if cursor.segment < first {
        cursor = Cursor { segment: first, offset: 0 };
    }
    // Delivered segments a crash left behind (between acknowledging the
    // next segment and removing this one).
    for s in all.iter().copied().filter(|s| *s < cursor.segment) {
        fs::remove_file(segment_path(dir, s))?;
    }
    let last = all.last().copied().unwrap_or(cursor.segment);
    let path = segment_path(dir, last);
    let valid = if path.exists() { valid_prefix(&path)? } else { 0 };
    let len = path.metadata().map_or(0, |m| m.len());
    if valid < len {
        stats.corrupt.fetch_add(1, Ordering::Relaxed);
        warn!(segment = %path.display(), kept = valid, cut = len - valid, "disk buffer segment ends in a damaged frame; cut there");
        OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
    }
    if cursor.segment == last && cursor.offset > valid {
        cursor.offset = valid;
    }
    let mut bytes = 0;
    for s in all.iter().copied().filter(|s| *s >= cursor.segment) {
        let size = if s == last { valid } else { segment_path(dir, s).metadata().map_or(0, |m| m.len()) };
        bytes += if s == cursor.segment { size.saturating_sub(cursor.offset) } else { size };
    }
    let file = open_segment(dir, last)?;
    Ok((cursor, Tail { segment: last, file, offset: valid }, bytes))
}

/// How many leading bytes of a segment are whole frames (a frame whose
/// payload is damaged is whole: the reader skips it alone).
fn valid_prefix(path: &Path) -> io::Result<u64> {
    let data = fs::read(path)?;
    let mut at = 0usize;
    while let Some(head) = data.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len as u64 > MAX_FRAME || at + 8 + len > data.len() {
            break;
        }
        at += 8 + len;
    }
    Ok(at as u64)
}

/// The frame at `at`: its payload and where the next one starts; `None`
/// when it is cut short or damaged.
#[cfg(test)]
fn parse_frame(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let head = data.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let payload = data.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

/// Keeps delivering what is on disk, in order, until `stop`.
async fn drain(mut inner: Box<dyn Output>, shared: Arc<Shared>, mut cursor: Cursor, stop: CancellationToken) {
    let name = inner.name();
    loop {
        let more = shared.data.notified();
        let (records, next, bytes) = match read_chunk(&shared, cursor) {
            Ok(chunk) => chunk,
            Err(e) => {
                warn!(output = %name, error = %e, "cannot read the disk buffer; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        if records.is_empty() && next == cursor {
            tokio::select! {
                () = more => continue,
                // Appends notify, but look again now and then regardless.
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                () = stop.cancelled() => return,
            }
        }
        if !records.is_empty() && !deliver(inner.as_mut(), &records, &shared.stats, &stop).await {
            return;
        }
        shared.stats.delivered.fetch_add(records.len() as u64, Ordering::Relaxed);
        if next.segment > cursor.segment {
            for s in cursor.segment..next.segment {
                let _ = fs::remove_file(segment_path(&shared.dir, s));
            }
        }
        cursor = next;
        if let Err(e) = write_ack(&shared.dir, cursor) {
            warn!(output = %name, error = %e, "cannot save the disk buffer's position; records may be sent again");
        }
        let _ =
            shared.stats.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
        match roll_when_drained(&shared, cursor) {
            Ok(Some(next)) => cursor = next,
            Ok(None) => {}
            Err(e) => {
                warn!(output = %name, error = %e, "cannot start a new disk buffer segment; the drained one stays meanwhile")
            }
        }
        shared.space.notify_one();
    }
}

/// When the drainer has delivered everything (`cursor` is where the writer
/// stands) and the segment is worth it, the writer moves on to a new, empty
/// segment and the drained one is removed: its disk space comes back at
/// once, not only when the segment would have filled. On a full disk that
/// is the only way appends can succeed again. Returns the new cursor.
///
/// The drained segment goes before the acknowledgement is written (on a
/// full disk, writing it needs the space): an acknowledgement naming a
/// segment that is gone makes [`recover`] start at the first one left,
/// the new one, so a crash in between re-sends nothing.
fn roll_when_drained(shared: &Shared, cursor: Cursor) -> io::Result<Option<Cursor>> {
    let mut tail = shared.tail.lock().unwrap_or_else(|e| e.into_inner());
    if (tail.segment, tail.offset) != (cursor.segment, cursor.offset) || cursor.offset == 0 {
        return Ok(None);
    }
    if cursor.offset < ROLL_DRAINED_BYTES && !shared.append_failed.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let next = Cursor { segment: tail.segment + 1, offset: 0 };
    let file = open_segment(&shared.dir, next.segment)?;
    *tail = Tail { segment: next.segment, file, offset: 0 };
    shared.append_failed.store(false, Ordering::Relaxed);
    drop(tail);
    fs::remove_file(segment_path(&shared.dir, cursor.segment))?;
    if let Err(e) = write_ack(&shared.dir, next) {
        warn!(dir = %shared.dir.display(), error = %e, "cannot save the disk buffer's position; the next acknowledgement saves it");
    }
    Ok(Some(next))
}

/// Writes and flushes `records` until it works; `false` when stopped first.
async fn deliver(inner: &mut dyn Output, records: &[LogRecord], stats: &BufferStats, stop: &CancellationToken) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            inner.write(records).await?;
            inner.flush().await
        };
        let result = tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => return false,
        };
        match result {
            Ok(()) => return true,
            Err(e) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                warn!(output = %inner.name(), error = %e, retry_in = ?backoff, "log output failed; its records wait in the disk buffer");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Up to [`DRAIN_RECORDS`] records from `cursor`, the cursor after them,
/// and the bytes they took.
fn read_chunk(shared: &Shared, cursor: Cursor) -> io::Result<(Vec<LogRecord>, Cursor, u64)> {
    let (tail_segment, tail_offset) = {
        let tail = shared.tail.lock().unwrap_or_else(|e| e.into_inner());
        (tail.segment, tail.offset)
    };
    let next_segment = Cursor { segment: cursor.segment + 1, offset: 0 };
    let path = segment_path(&shared.dir, cursor.segment);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && cursor.segment < tail_segment => {
            return Ok((Vec::new(), next_segment, 0));
        }
        Err(e) => return Err(e),
    };
    // Only what the writer finished appending.
    let size = if cursor.segment == tail_segment { tail_offset } else { file.metadata()?.len() };
    if cursor.offset >= size {
        let at = if cursor.segment < tail_segment { next_segment } else { cursor };
        return Ok((Vec::new(), at, 0));
    }
    let remaining = size - cursor.offset;
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(cursor.offset))?;
    let mut records = Vec::new();
    let mut consumed = 0u64;
    while records.len() < DRAIN_RECORDS && consumed < remaining {
        let mut head = [0u8; 8];
        let len = if remaining - consumed >= 8 {
            reader.read_exact(&mut head)?;
            u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]))
        } else {
            u64::MAX
        };
        if len > MAX_FRAME || consumed + 8 + len > remaining {
            return damaged(shared, cursor, consumed, records, size, tail_segment);
        }
        let mut payload = vec![0; len as usize];
        reader.read_exact(&mut payload)?;
        let intact = crc32fast::hash(&payload) == u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        match serde_json::from_slice::<Stored>(&payload) {
            Ok(stored) if intact => records.push(stored.into_record()),
            // A damaged payload behind a sound length: that frame alone.
            _ => {
                shared.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                warn!(segment = %path.display(), offset = cursor.offset + consumed, "damaged record in a disk buffer; skipped");
            }
        }
        consumed += 8 + len;
    }
    Ok((records, Cursor { segment: cursor.segment, offset: cursor.offset + consumed }, consumed))
}

/// A frame whose length is damaged, `consumed` bytes past `cursor`: there
/// is no finding the next one. What came before it is delivered first;
/// then it is counted and the rest of its segment skipped.
fn damaged(
    shared: &Shared,
    cursor: Cursor,
    consumed: u64,
    records: Vec<LogRecord>,
    size: u64,
    tail_segment: u64,
) -> io::Result<(Vec<LogRecord>, Cursor, u64)> {
    if !records.is_empty() || consumed > 0 {
        return Ok((records, Cursor { segment: cursor.segment, offset: cursor.offset + consumed }, consumed));
    }
    shared.stats.corrupt.fetch_add(1, Ordering::Relaxed);
    warn!(segment = %segment_path(&shared.dir, cursor.segment).display(), offset = cursor.offset,
        "damaged frame in a disk buffer; the rest of its segment is skipped");
    let skipped = size - cursor.offset;
    let at = if cursor.segment < tail_segment {
        Cursor { segment: cursor.segment + 1, offset: 0 }
    } else {
        Cursor { segment: cursor.segment, offset: size }
    };
    Ok((Vec::new(), at, skipped))
}

/// Appends `r` as one frame.
fn frame(r: &LogRecord, out: &mut Vec<u8>) {
    let payload = serde_json::to_vec(&Stored::from_record(r)).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A record as the buffer stores it.
#[derive(Serialize, Deserialize)]
struct Stored {
    t: u64,
    o: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    m: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tr: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cl: Option<(Option<String>, Option<String>, Option<u32>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    h: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    f: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
}

impl Stored {
    fn from_record(r: &LogRecord) -> Self {
        Stored {
            t: r.timestamp.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            o: r.origin.as_str().to_owned(),
            s: r.stream.map(|s| s.as_str().to_owned()),
            m: r.message.clone(),
            tr: r.truncated,
            c: r.container.as_deref().cloned(),
            cl: r.claimed.as_ref().map(|c| (c.id.clone(), c.name.clone(), c.pid)),
            h: r.host.clone(),
            f: r.fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            r: r.raw.clone(),
        }
    }

    fn into_record(self) -> LogRecord {
        let stream = match self.s.as_deref() {
            Some("stdout") => Some(LogStream::Stdout),
            Some("stderr") => Some(LogStream::Stderr),
            _ => None,
        };
        let mut r = LogRecord::new(UNIX_EPOCH + Duration::from_nanos(self.t), origin(&self.o), stream, self.m);
        r.truncated = self.tr;
        r.container = self.c.map(Arc::new);
        r.claimed = self.cl.map(|(id, name, pid)| ClaimedIdentity { id, name, pid });
        r.host = self.h;
        r.fields = self.f.into_iter().map(|(k, v)| (k.into(), v)).collect();
        r.raw = self.r;
        r
    }
}

/// The origin named `name`; a runtime's name is interned once.
fn origin(name: &str) -> LogOrigin {
    match name {
        "cri" => LogOrigin::Cri,
        "syslog" => LogOrigin::Syslog,
        "forward" => LogOrigin::Forward,
        "suricata" => LogOrigin::Suricata,
        "flow" => LogOrigin::Flow,
        "docker" => LogOrigin::Runtime("docker"),
        "podman" => LogOrigin::Runtime("podman"),
        other => {
            static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
            let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
            let known = names.iter().copied().find(|n| *n == other);
            LogOrigin::Runtime(known.unwrap_or_else(|| {
                let leaked: &'static str = Box::leak(other.to_owned().into_boxed_str());
                names.push(leaked);
                leaked
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    use super::*;

    /// An output that fails its first `fail` flushes (all of them while
    /// `fail` is `usize::MAX`) and keeps what it was given.
    struct Flaky {
        got: Arc<Mutex<Vec<String>>>,
        fail: Arc<AtomicUsize>,
        staged: Vec<String>,
        when_full: WhenFull,
    }

    #[async_trait]
    impl Output for Flaky {
        fn name(&self) -> String {
            "flaky".into()
        }
        async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
            self.staged.extend(records.iter().map(|r| r.message.clone()));
            Ok(())
        }
        async fn flush(&mut self) -> io::Result<()> {
            let left = self.fail.load(Ordering::Relaxed);
            if left > 0 {
                if left != usize::MAX {
                    self.fail.store(left - 1, Ordering::Relaxed);
                }
                self.staged.clear();
                return Err(io::Error::other("receiver down"));
            }
            self.got.lock().unwrap().append(&mut self.staged);
            Ok(())
        }
        fn when_full(&self) -> WhenFull {
            self.when_full
        }
    }

    /// What a [`Flaky`] received.
    type Received = Arc<Mutex<Vec<String>>>;

    fn flaky(fail: usize, when_full: WhenFull) -> (Box<dyn Output>, Received, Arc<AtomicUsize>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicUsize::new(fail));
        let out = Flaky { got: Arc::clone(&got), fail: Arc::clone(&fail), staged: Vec::new(), when_full };
        (Box::new(out), got, fail)
    }

    fn records(prefix: &str, n: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|i| {
                let mut r = LogRecord::new(
                    SystemTime::now(),
                    LogOrigin::Syslog,
                    Some(LogStream::Stderr),
                    format!("{prefix}{i}"),
                );
                r.fields.push(("severity".into(), "3".into()));
                r
            })
            .collect()
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pw-buffer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn records_wait_on_disk_through_failures_and_arrive_in_order_and_whole() {
        let dir = scratch("order");
        let (inner, got, _) = flaky(3, WhenFull::Block);
        let mut buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        for batch in 0..3 {
            buffer.write(&records(&format!("b{batch}-"), 5)).await.unwrap();
            buffer.flush().await.unwrap();
        }
        until("15 records", || got.lock().unwrap().len() == 15).await;
        let want: Vec<String> = (0..3).flat_map(|b| (0..5).map(move |i| format!("b{b}-{i}"))).collect();
        assert_eq!(*got.lock().unwrap(), want);
        let stats = buffer.stats();
        assert!(stats.retries.load(Ordering::Relaxed) >= 3);
        until("the buffer emptied", || stats.bytes.load(Ordering::Relaxed) == 0).await;
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn what_was_not_delivered_is_sent_after_a_restart() {
        let dir = scratch("restart");
        let (inner, got, _) = flaky(usize::MAX, WhenFull::Block);
        let mut buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        buffer.write(&records("r", 10)).await.unwrap();
        buffer.flush().await.unwrap();
        drop(buffer);
        assert!(got.lock().unwrap().is_empty());
        let (inner, got, _) = flaky(0, WhenFull::Block);
        let buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        until("the 10 left behind", || got.lock().unwrap().len() == 10).await;
        assert_eq!(got.lock().unwrap()[9], "r9");
        // Acknowledged: a third start sends nothing again.
        until("the ack", || buffer.stats().bytes.load(Ordering::Relaxed) == 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(buffer);
        let (inner, got, _) = flaky(0, WhenFull::Block);
        let _buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(got.lock().unwrap().is_empty(), "delivered once: {:?}", got.lock().unwrap());
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_drained_segment_gives_its_space_back_and_leftovers_are_removed_on_start() {
        let dir = scratch("roll");
        let (inner, got, _) = flaky(0, WhenFull::Block);
        let mut buffer = DiskBuffer::open(inner, &dir, 64 << 20).unwrap();
        // About 1.2 MiB, under a segment's 8: only the drainer can roll.
        for _ in 0..11 {
            buffer.write(&records(&"x".repeat(1000), 100)).await.unwrap();
            buffer.flush().await.unwrap();
        }
        until("every record delivered", || got.lock().unwrap().len() == 1100).await;
        until("the drained segment replaced", || buffer.shared.tail.lock().unwrap().segment == 1).await;
        assert_eq!(segments(&dir).unwrap(), [1], "the drained segment is gone");
        assert_eq!(read_ack(&dir), Some(Cursor { segment: 1, offset: 0 }));
        // A small segment rolls too once an append failed (a full disk).
        buffer.shared.append_failed.store(true, Ordering::Relaxed);
        buffer.write(&records("y", 3)).await.unwrap();
        buffer.flush().await.unwrap();
        until("the roll after a failed append", || segments(&dir).unwrap() == [2]).await;
        drop(buffer);
        // A delivered segment a crash left behind is removed on start.
        fs::write(segment_path(&dir, 1), b"old").unwrap();
        let (inner, _, _) = flaky(0, WhenFull::Block);
        let buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        assert_eq!(segments(&dir).unwrap(), [2]);
        assert_eq!(buffer.stats().bytes.load(Ordering::Relaxed), 0, "nothing to send twice");
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn damage_is_counted_and_intact_records_are_kept() {
        let dir = scratch("damage");
        let (inner, _, _) = flaky(usize::MAX, WhenFull::Block);
        let mut buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        buffer.write(&records("d", 6)).await.unwrap();
        buffer.flush().await.unwrap();
        drop(buffer);
        let seg = segment_path(&dir, 0);
        let mut data = fs::read(&seg).unwrap();
        // Flip a byte inside the fourth record's payload, and cut the last
        // frame short, as a crash mid-write would.
        let mut at = 0;
        let mut starts = Vec::new();
        while let Some((_, next)) = parse_frame(&data, at) {
            starts.push(at);
            at = next;
        }
        data[starts[3] + 12] ^= 0xff;
        data.truncate(data.len() - 3);
        fs::write(&seg, &data).unwrap();
        let (inner, got, _) = flaky(0, WhenFull::Block);
        let buffer = DiskBuffer::open(inner, &dir, 1 << 20).unwrap();
        until("the intact records", || got.lock().unwrap().len() == 4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*got.lock().unwrap(), ["d0", "d1", "d2", "d4"], "the damaged one and the cut one are gone");
        assert_eq!(buffer.stats().corrupt.load(Ordering::Relaxed), 2, "a cut tail and a bad CRC");
        // The agent goes on: new records after the damage are delivered.
        let mut buffer = buffer;
        buffer.write(&records("after", 2)).await.unwrap();
        buffer.flush().await.unwrap();
        until("records after the damage", || got.lock().unwrap().len() == 6).await;
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_full_buffer_drops_newest_when_told_and_blocks_otherwise() {
        let dir = scratch("full");
        let (inner, got, fail) = flaky(usize::MAX, WhenFull::DropNewest);
        let mut buffer = DiskBuffer::open(inner, &dir, 2048).unwrap();
        for _ in 0..20 {
            buffer.write(&records("x", 5)).await.unwrap();
            buffer.flush().await.unwrap();
        }
        let stats = buffer.stats();
        assert!(stats.dropped.load(Ordering::Relaxed) > 0);
        assert!(stats.bytes.load(Ordering::Relaxed) <= 2048);
        fail.store(0, Ordering::Relaxed);
        let kept = 100 - stats.dropped.load(Ordering::Relaxed) as usize;
        until("what was kept", || got.lock().unwrap().len() == kept).await;
        drop(buffer);
        let _ = fs::remove_dir_all(&dir);

        let (inner, got, fail) = flaky(usize::MAX, WhenFull::Block);
        let mut buffer = DiskBuffer::open(inner, &dir, 2048).unwrap();
        let mut blocked = false;
        for _ in 0..20 {
            buffer.write(&records("y", 5)).await.unwrap();
            if tokio::time::timeout(Duration::from_millis(300), buffer.flush()).await.is_err() {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "a full buffer holds the writer back");
        fail.store(0, Ordering::Relaxed);
        buffer.flush().await.unwrap();
        until("every record", || got.lock().unwrap().len() % 5 == 0 && got.lock().unwrap().len() >= 5).await;
        assert_eq!(buffer.stats().dropped.load(Ordering::Relaxed), 0);
        let _ = fs::remove_dir_all(dir);
    }
}
