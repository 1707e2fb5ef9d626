//! Following one CRI log file through kubelet's rotations.
//!
//! Rotation is `0.log` renamed to `0.log.<timestamp>` (later gzipped) and a
//! new `0.log` opened. The tailer keeps its descriptor on the renamed file
//! and reads it to the end before it switches, so nothing written before
//! the rename is lost. Resuming, it finds its file again by identity, even
//! after it was renamed or compressed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use portwarden_core::{Container, LogOrigin, LogPosition, LogRecord, LogSender, LogStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::identity::{self, FINGERPRINT_BYTES, FileCursor, Found};
use super::parse::parse_line;
use portwarden_core::LogStats;
use portwarden_core::text::Assembler;

/// How a tailer reads.
#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Longest message kept; longer ones are truncated and marked.
    pub max_line: usize,
    /// Longest wait between looks at a file with nothing new.
    pub max_poll: Duration,
    /// Bytes read at once.
    pub chunk: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self { max_line: 786_432, max_poll: Duration::from_millis(250), chunk: 256 << 10 }
    }
}

/// The file being read.
enum Reader {
    /// The live path's file (or the file it was before a rename we have
    /// not caught up with yet).
    Live(File),
    /// A renamed or compressed file found on resume: read to its end, then
    /// move to the live path.
    Old(Box<dyn Read + Send>),
}

/// Tails one container's CRI log file.
pub struct CriTail {
    live: PathBuf,
    key: Arc<str>,
    container: Arc<Container>,
    options: TailOptions,
    stats: Arc<LogStats>,
    reader: Option<Reader>,
    cursor: FileCursor,
    head: Vec<u8>,
    /// Bytes read past the last complete line.
    pending: Vec<u8>,
    /// A line longer than the limit is being skipped up to its newline.
    skipping: bool,
    /// Partial (`P`) lines per stream, and the offset where each began.
    partial: [(Assembler, u64); 2],
    /// Where to resume after the last record made.
    resume_offset: u64,
    /// The live file was deleted while read (counted once).
    deleted: bool,
}

impl CriTail {
    /// A tailer for `live`, whose records carry `container` and resume
    /// points under `key`.
    pub fn new(
        live: PathBuf,
        key: Arc<str>,
        container: Arc<Container>,
        options: TailOptions,
        stats: Arc<LogStats>,
    ) -> Self {
        CriTail {
            live,
            key,
            container,
            options,
            stats,
            reader: None,
            cursor: FileCursor { dev: 0, ino: 0, fingerprint: 0, fp_len: 0, offset: 0 },
            head: Vec::new(),
            pending: Vec::new(),
            skipping: false,
            deleted: false,
            partial: Default::default(),
            resume_offset: 0,
        }
    }

    /// Reads from `resume` (or the live file's start) into `out` until
    /// `cancel`; then reads what is already written and returns. File
    /// reads, decompression and the rotation checks run on a blocking
    /// thread, one step at a time; only the hand-off to `out` and the
    /// waits happen on the async worker.
    pub async fn run(self, resume: Option<FileCursor>, out: LogSender, cancel: CancellationToken) -> io::Result<()> {
        let mut tail = self;
        if let Some(cursor) = resume {
            let (back, resumed) = off_thread(tail, move |t| t.resume(cursor)).await?;
            tail = back;
            resumed?;
        }
        let mut chunk = vec![0u8; tail.options.chunk];
        let mut idle = Duration::from_millis(10);
        let mut rotation_seen = false;
        loop {
            let ((back, back_chunk, seen), step) =
                off_thread((tail, chunk, rotation_seen), |(t, c, seen)| t.step(c, seen)).await?;
            (tail, chunk, rotation_seen) = (back, back_chunk, seen);
            match step? {
                Step::Records(batch) => {
                    idle = Duration::from_millis(10);
                    if !batch.is_empty() && out.send(batch).await.is_err() {
                        return Ok(()); // the pipeline is gone: shutting down
                    }
                }
                Step::Again => {}
                Step::Wait => {
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    sleep_or_cancel(&mut idle, tail.options.max_poll, &cancel).await;
                }
            }
        }
    }

    /// One read of the current file, or, at its end, one look at whether
    /// it was rotated, truncated or removed.
    fn step(&mut self, chunk: &mut [u8], rotation_seen: &mut bool) -> io::Result<Step> {
        if self.reader.is_none() && !self.open_live()? {
            return Ok(Step::Wait);
        }
        let n = match self.reader.as_mut() {
            Some(Reader::Live(f)) => f.read(chunk)?,
            Some(Reader::Old(r)) => r.read(chunk)?,
            None => 0,
        };
        if n > 0 {
            *rotation_seen = false;
            return Ok(Step::Records(self.consume(&chunk[..n])));
        }
        // At the end of the current file.
        match self.reader {
            Some(Reader::Old(_)) => {
                debug!(path = %self.live.display(), "finished a rotated file; moving to the live one");
                self.reader = None;
                return Ok(Step::Again);
            }
            Some(Reader::Live(ref f)) => match self.live_changed(f)? {
                Change::Same { truncated } => {
                    if truncated {
                        warn!(path = %self.live.display(), "log file truncated in place; reading it from the start");
                        self.stats.truncated_files.fetch_add(1, Ordering::Relaxed);
                        self.restart_file()?;
                        return Ok(Step::Again);
                    }
                    self.refresh_head()?;
                }
                Change::Replaced | Change::Gone if !*rotation_seen => {
                    // Read once more: the writer may have added to the
                    // old file between our last read and the rename.
                    *rotation_seen = true;
                    return Ok(Step::Again);
                }
                Change::Replaced => {
                    debug!(path = %self.live.display(), "log file rotated; moving to the new one");
                    self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                    self.reader = None;
                    *rotation_seen = false;
                    return Ok(Step::Again);
                }
                Change::Gone => {
                    if !self.deleted {
                        self.deleted = true;
                        debug!(path = %self.live.display(), "log file deleted while read");
                        self.stats.files_deleted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
            None => {}
        }
        Ok(Step::Wait)
    }

    /// Positions the tailer at `cursor`'s file and offset, wherever it is now.
    fn resume(&mut self, cursor: FileCursor) -> io::Result<()> {
        let found = identity::locate(&self.live, &cursor)?;
        let (reader, what): (Reader, String) = match found {
            Some(Found::Live(mut f)) => {
                f.seek(SeekFrom::Start(cursor.offset))?;
                (Reader::Live(f), "live file".into())
            }
            Some(Found::Rotated(mut f, path)) => {
                f.seek(SeekFrom::Start(cursor.offset))?;
                (Reader::Old(Box::new(f)), path.display().to_string())
            }
            Some(Found::Compressed(mut gz, path)) => {
                io::copy(&mut (&mut gz).take(cursor.offset), &mut io::sink())?;
                (Reader::Old(gz), path.display().to_string())
            }
            None => {
                warn!(path = %self.live.display(), "checkpointed log file is gone; reading the current file from its start");
                self.stats.resume_lost.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        info!(path = %self.live.display(), from = %what, offset = cursor.offset, "resuming log file");
        self.cursor = cursor;
        self.head.clear();
        self.reader = Some(reader);
        Ok(())
    }

    /// Opens the live path from its start; false when it does not exist yet.
    fn open_live(&mut self) -> io::Result<bool> {
        let f = match File::open(&self.live) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        self.cursor = FileCursor { dev: meta.dev(), ino: meta.ino(), fingerprint: 0, fp_len: 0, offset: 0 };
        self.head.clear();
        self.reader = Some(Reader::Live(f));
        self.refresh_head()?;
        Ok(true)
    }

    fn restart_file(&mut self) -> io::Result<()> {
        if let Some(Reader::Live(f)) = self.reader.as_mut() {
            f.seek(SeekFrom::Start(0))?;
        }
        self.cursor.offset = 0;
        self.head.clear();
        self.pending.clear();
        self.refresh_head()
    }

    /// Re-reads the first bytes while the file is shorter than the
    /// fingerprint, so the identity covers as much as it can.
    fn refresh_head(&mut self) -> io::Result<()> {
        if self.head.len() >= FINGERPRINT_BYTES {
            return Ok(());
        }
        if let Some(Reader::Live(f)) = self.reader.as_ref() {
            let mut buf = vec![0u8; FINGERPRINT_BYTES];
            let n = f.read_at(&mut buf, 0)?;
            buf.truncate(n);
            self.head = buf;
            self.cursor.fp_len = self.head.len() as u32;
            self.cursor.fingerprint = identity::fnv1a(&self.head);
        }
        Ok(())
    }

    /// What became of the live path while we read `f`.
    fn live_changed(&self, f: &File) -> io::Result<Change> {
        let ours = f.metadata()?;
        match std::fs::metadata(&self.live) {
            Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {
                Ok(Change::Same { truncated: m.len() < self.cursor.offset + self.pending.len() as u64 })
            }
            Ok(_) => Ok(Change::Replaced),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Change::Gone),
            Err(e) => Err(e),
        }
    }

    /// Splits what was read into lines and turns them into records.
    fn consume(&mut self, data: &[u8]) -> Vec<LogRecord> {
        self.pending.extend_from_slice(data);
        let mut batch = Vec::new();
        let mut start = 0;
        let pending = std::mem::take(&mut self.pending);
        for nl in memchr::memchr_iter(b'\n', &pending) {
            let line = &pending[start..nl];
            let end_offset = self.cursor.offset + (nl + 1) as u64;
            let line_start = self.cursor.offset + start as u64;
            if std::mem::take(&mut self.skipping) {
                // The tail of an over-long line, already emitted.
            } else {
                self.line(line, line_start, end_offset, false, &mut batch);
            }
            start = nl + 1;
        }
        self.cursor.offset += start as u64;
        let mut rest = pending;
        rest.drain(..start);
        // A line that will not end within the limit: emit what we have,
        // marked truncated, and skip to its newline.
        let limit = self.options.max_line + 64;
        if rest.len() > limit {
            if !self.skipping {
                let line_start = self.cursor.offset;
                self.line(&rest[..limit], line_start, line_start, true, &mut batch);
                self.skipping = true;
            }
            self.cursor.offset += rest.len() as u64;
            rest.clear();
        }
        self.pending = rest;
        // Only the newest resume point of a batch is ever saved: encode it once.
        if let Some(last) = batch.last_mut() {
            let cursor = FileCursor { offset: self.resume_offset, ..self.cursor.clone() };
            let state = serde_json::to_string(&cursor).unwrap_or_default();
            last.position = Some(LogPosition { key: Arc::clone(&self.key), state });
        }
        batch
    }

    fn line(&mut self, line: &[u8], line_start: u64, end_offset: u64, cut: bool, batch: &mut Vec<LogRecord>) {
        let Some(parsed) = parse_line(line) else {
            self.stats.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(path = %self.live.display(), "skipping a line that is not in CRI format");
            return;
        };
        if !parsed.tagged {
            self.stats.untagged.fetch_add(1, Ordering::Relaxed);
        }
        let slot = usize::from(parsed.stream == LogStream::Stderr);
        let max = self.options.max_line;
        let (assembler, began) = &mut self.partial[slot];
        if !assembler.is_open() {
            *began = line_start;
        }
        assembler.push(parsed.message, max);
        if parsed.partial && !cut {
            return;
        }
        let (message, truncated) = assembler.take();
        // Resume before any line still being assembled on the other stream.
        let other = &self.partial[1 - slot];
        let offset = if other.0.is_open() { other.1.min(end_offset) } else { end_offset };
        self.resume_offset = offset;
        let timestamp = UNIX_EPOCH + Duration::from_nanos(parsed.timestamp);
        let mut record = LogRecord::new(timestamp, LogOrigin::Cri, Some(parsed.stream), message);
        record.truncated = truncated || cut;
        record.container = Some(Arc::clone(&self.container));
        if record.truncated {
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        batch.push(record);
    }
}

enum Change {
    Same { truncated: bool },
    Replaced,
    Gone,
}

/// What one [`CriTail::step`] came to.
enum Step {
    /// Records read (possibly none: only part of a line so far).
    Records(Vec<LogRecord>),
    /// Something changed (a rotation, a truncation): step again at once.
    Again,
    /// Nothing new: wait before the next step.
    Wait,
}

/// Runs `f` on `value` on a blocking thread and gives `value` back with
/// `f`'s result.
async fn off_thread<T, R>(mut value: T, f: impl FnOnce(&mut T) -> R + Send + 'static) -> io::Result<(T, R)>
where
    T: Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(&mut value);
        (value, r)
    })
    .await
    .map_err(io::Error::other)
}

async fn sleep_or_cancel(idle: &mut Duration, max: Duration, cancel: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(*idle) => {}
        () = cancel.cancelled() => {}
    }
    *idle = (*idle * 2).min(max);
}
