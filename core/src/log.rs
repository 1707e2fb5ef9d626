//! Log records and the [`LogSource`] trait: a container's stdout and stderr.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::model::Container;

/// Where a log record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogOrigin {
    /// A runtime's logs API, by the name of its source (`docker`,
    /// `podman`, ...).
    Runtime(&'static str),
    /// A CRI log file.
    Cri,
    /// The syslog listener.
    Syslog,
    /// The Fluentd forward listener.
    Forward,
    /// Suricata's EVE output (alerts and protocol events), relayed.
    Suricata,
    /// The agent's own EVE flow records, from capture.
    Flow,
}

impl LogOrigin {
    /// The name used in records' `source` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogOrigin::Runtime(name) => name,
            LogOrigin::Cri => "cri",
            LogOrigin::Syslog => "syslog",
            LogOrigin::Forward => "forward",
            LogOrigin::Suricata => "suricata",
            LogOrigin::Flow => "flow",
        }
    }
}

/// Which output stream a line was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }

    /// Parses `stdout` or `stderr`.
    pub fn parse(s: &str) -> Option<LogStream> {
        match s {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// Who a record says it is from, when that could not be matched to a known
/// container (a syslog `HOSTNAME`/`APP-NAME`, a forward `container_id`). Kept
/// so the record still carries the identity its sender gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimedIdentity {
    /// The container id the sender gave.
    pub id: Option<String>,
    /// The container name the sender gave.
    pub name: Option<String>,
    /// The process id the sender gave.
    pub pid: Option<u32>,
}

/// Where a source stands after a record, saved in the state directory so a
/// restart resumes there. Only the source that wrote it reads `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPosition {
    /// Which resume point this updates (one per container stream or file).
    pub key: Arc<str>,
    /// The source's own encoding of the point, replaced wholesale.
    pub state: String,
}

/// One log record (partial lines already merged).
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// When the runtime or sender says it was written.
    pub timestamp: SystemTime,
    /// Where it came from.
    pub origin: LogOrigin,
    /// The stream, when known (syslog and forward records may lack one).
    pub stream: Option<LogStream>,
    /// The text, without the trailing newline. Invalid UTF-8 is replaced.
    pub message: String,
    /// True when the message was cut at the size limit.
    pub truncated: bool,
    /// The container that wrote it, when known.
    pub container: Option<Arc<Container>>,
    /// The identity the sender claimed, when it matched no known container.
    pub claimed: Option<ClaimedIdentity>,
    /// The sending host, when the protocol carries one (syslog `HOSTNAME`);
    /// outputs fill in the agent's host otherwise.
    pub host: Option<String>,
    /// Extra fields: the syslog header, a forward record's other keys.
    pub fields: Vec<(Cow<'static, str>, String)>,
    /// The source's resume point after this record, when it can re-read.
    pub position: Option<LogPosition>,
    /// A complete JSON event (an enriched EVE event) that JSON outputs write
    /// as it is, instead of the record shape; `message` then summarises it.
    pub raw: Option<String>,
}

impl LogRecord {
    /// A record with only the essentials set.
    pub fn new(timestamp: SystemTime, origin: LogOrigin, stream: Option<LogStream>, message: String) -> LogRecord {
        LogRecord {
            timestamp,
            origin,
            stream,
            message,
            truncated: false,
            container: None,
            claimed: None,
            host: None,
            fields: Vec::new(),
            position: None,
            raw: None,
        }
    }
}

/// Records travel in batches: one read's worth at a time.
pub type LogBatch = Vec<LogRecord>;

/// Where sources deliver their batches. It is bounded: a source that waits on
/// `send` has stopped reading, which is how backpressure reaches it.
///
/// It notes the newest resume point of each batch it hands over, in its
/// [`ResumePoints`]. A source re-attached in this run so continues right
/// after what its predecessor handed over, even while that batch still
/// waits in the queue: the checkpoints on disk hold only what every output
/// wrote, and reading on from them would send the rest twice.
#[derive(Clone, Debug)]
pub struct LogSender {
    tx: mpsc::Sender<LogBatch>,
    handed: ResumePoints,
    budget: Option<Arc<ByteBudget>>,
}

/// How many bytes of records may be in flight between the sources and the
/// outputs, counted in KiB units: a [`LogSender`] takes a batch's share
/// before handing it over, and the pipeline gives it back once every
/// output has written the batch. So what a slow or stalled output makes
/// the agent hold stays bounded, whatever the length of the stall: the
/// backlog waits in the sources (file offsets, TCP windows).
#[derive(Debug)]
pub struct ByteBudget {
    units: tokio::sync::Semaphore,
    total: u32,
}

impl ByteBudget {
    /// A budget of `bytes` (at least 64 KiB).
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from((bytes / 1024).max(64)).unwrap_or(u32::MAX >> 4);
        Self { units: tokio::sync::Semaphore::new(total as usize), total }
    }

    /// A batch's share: its text and a fixed overhead per record, in KiB
    /// units, at most the whole budget.
    pub fn units_of(&self, batch: &LogBatch) -> u32 {
        let bytes: usize = batch
            .iter()
            .map(|r| {
                r.message.len()
                    + r.raw.as_ref().map_or(0, String::len)
                    + r.fields.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>()
                    + 256
            })
            .sum();
        u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.total)
    }

    /// Gives `units` back.
    pub fn release(&self, units: u32) {
        self.units.add_permits(units as usize);
    }

    /// Units free now.
    pub fn available(&self) -> usize {
        self.units.available_permits()
    }

    async fn take(&self, units: u32) {
        if let Ok(permit) = self.units.acquire_many(units).await {
            permit.forget();
        }
    }

    fn try_take(&self, units: u32) -> bool {
        self.units.try_acquire_many(units).map(|p| p.forget()).is_ok()
    }
}

impl LogSender {
    /// Sends into `tx`, noting resume points in `handed`.
    pub fn new(tx: mpsc::Sender<LogBatch>, handed: ResumePoints) -> Self {
        Self { tx, handed, budget: None }
    }

    /// Takes each batch's share of `budget` before handing it over.
    pub fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Hands `batch` over, waiting while the queue is full or the byte
    /// budget spent. Fails only once the receiving side is gone.
    pub async fn send(&self, batch: LogBatch) -> std::result::Result<(), mpsc::error::SendError<LogBatch>> {
        let positions = newest_positions(&batch);
        let units = self.budget.as_ref().map(|b| b.units_of(&batch));
        if let (Some(budget), Some(units)) = (&self.budget, units) {
            budget.take(units).await;
        }
        if let Err(e) = self.tx.send(batch).await {
            if let (Some(budget), Some(units)) = (&self.budget, units) {
                budget.release(units);
            }
            return Err(e);
        }
        self.handed.note(positions);
        Ok(())
    }

    /// Hands `batch` over if the queue and the byte budget have room now.
    pub fn try_send(&self, batch: LogBatch) -> std::result::Result<(), mpsc::error::TrySendError<LogBatch>> {
        let positions = newest_positions(&batch);
        let units = self.budget.as_ref().map(|b| b.units_of(&batch));
        if let (Some(budget), Some(units)) = (&self.budget, units) {
            if !budget.try_take(units) {
                return Err(mpsc::error::TrySendError::Full(batch));
            }
        }
        if let Err(e) = self.tx.try_send(batch) {
            if let (Some(budget), Some(units)) = (&self.budget, units) {
                budget.release(units);
            }
            return Err(e);
        }
        self.handed.note(positions);
        Ok(())
    }

    /// A handle that does not keep the queue open (for gauges).
    pub fn downgrade(&self) -> mpsc::WeakSender<LogBatch> {
        self.tx.downgrade()
    }

    /// A sender that does not keep the pipeline open, for a source that
    /// lives as long as something else (a capture sink) and must not hold
    /// the pipeline's shutdown.
    pub fn weak(&self) -> WeakLogSender {
        WeakLogSender { tx: self.tx.downgrade(), handed: self.handed.clone(), budget: self.budget.clone() }
    }
}

/// A [`LogSender`] that does not keep the pipeline open: once the pipeline
/// has closed, sending fails as `Closed`.
#[derive(Clone, Debug)]
pub struct WeakLogSender {
    tx: mpsc::WeakSender<LogBatch>,
    handed: ResumePoints,
    budget: Option<Arc<ByteBudget>>,
}

impl WeakLogSender {
    /// Hands `batch` over if the pipeline is open and has room now.
    pub fn try_send(&self, batch: LogBatch) -> std::result::Result<(), mpsc::error::TrySendError<LogBatch>> {
        match self.tx.upgrade() {
            Some(tx) => LogSender { tx, handed: self.handed.clone(), budget: self.budget.clone() }.try_send(batch),
            None => Err(mpsc::error::TrySendError::Closed(batch)),
        }
    }
}

/// The newest resume point per key: saved by a previous run, then each one
/// a [`LogSender`] handed over. Cloning shares them.
///
/// A key forgotten (its container is gone) stays forgotten for
/// ten minutes: a last batch its source hands over, or the pipeline
/// commits, after the removal does not bring the point back, so resume
/// points follow the live containers, not history.
#[derive(Clone, Debug, Default)]
pub struct ResumePoints(Arc<Mutex<Points>>);

/// How long a forgotten key is ignored when a late batch carries it. Keys
/// name one container's stream, so they never come back in earnest.
const FORGOTTEN_FOR: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Points {
    current: HashMap<String, String>,
    forgotten: HashMap<String, Instant>,
}

impl Points {
    fn is_forgotten(&self, key: &str, now: Instant) -> bool {
        self.forgotten.get(key).is_some_and(|since| now.duration_since(*since) < FORGOTTEN_FOR)
    }
}

impl ResumePoints {
    /// Starting from the points a previous run saved.
    pub fn from_saved(saved: HashMap<String, String>) -> Self {
        Self(Arc::new(Mutex::new(Points { current: saved, forgotten: HashMap::new() })))
    }

    /// The point under `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().current.get(key).cloned()
    }

    /// Looks points up, for sources.
    pub fn lookup(&self) -> ResumeLookup {
        let points = self.clone();
        Arc::new(move |key: &str| points.get(key))
    }

    /// Drops the point under `key` (its container is gone), and ignores
    /// the key for a while.
    pub fn forget(&self, key: &str) {
        let now = Instant::now();
        let mut points = self.lock();
        points.current.remove(key);
        points.forgotten.retain(|_, since| now.duration_since(*since) < FORGOTTEN_FOR);
        points.forgotten.insert(key.to_owned(), now);
    }

    /// True while `key` is forgotten: its points are not to be kept.
    pub fn is_forgotten(&self, key: &str) -> bool {
        self.lock().is_forgotten(key, Instant::now())
    }

    /// Keys with a point now.
    pub fn len(&self) -> usize {
        self.lock().current.len()
    }

    /// True when no key has a point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn note(&self, positions: Vec<(Arc<str>, String)>) {
        if positions.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut points = self.lock();
        for (key, state) in positions {
            if !points.is_forgotten(&key, now) {
                points.current.insert(key.to_string(), state);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Points> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Each key's last resume point in `batch` (sources set few: usually one on
/// the batch's last record).
fn newest_positions(batch: &LogBatch) -> Vec<(Arc<str>, String)> {
    let mut newest: Vec<(Arc<str>, String)> = Vec::new();
    for p in batch.iter().filter_map(|r| r.position.as_ref()) {
        match newest.iter_mut().find(|(k, _)| *k == p.key) {
            Some(slot) => slot.1.clone_from(&p.state),
            None => newest.push((Arc::clone(&p.key), p.state.clone())),
        }
    }
    newest
}

/// Looks up a saved resume point by key.
pub type ResumeLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A source's saved resume point under `key`, decoded from the JSON the
/// source saved; an unreadable one is warned about and ignored (the source
/// starts from the beginning).
pub fn saved_resume<T: serde::de::DeserializeOwned>(resume: &ResumeLookup, key: &str) -> Option<T> {
    let state = resume(key)?;
    match serde_json::from_str(&state) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable resume point; reading from the start");
            None
        }
    }
}

/// What every log source a runtime provider supplies is given.
#[derive(Clone, Debug)]
pub struct LogSourceOptions {
    /// Longer messages are cut there and marked `truncated`.
    pub max_line: usize,
    /// The counters the source adds to.
    pub stats: Arc<crate::LogStats>,
}

/// A way to follow a container's output.
#[async_trait]
pub trait LogSource: Send + Sync {
    /// A short name for logs (`docker`, `cri`, ...).
    fn name(&self) -> &'static str;

    /// True when this source can read `container`'s output (a Docker source
    /// reads Docker's containers, a CRI source those with a log path).
    fn accepts(&self, container: &Container) -> bool;

    /// The key `container`'s resume point is saved under.
    fn resume_key(&self, container: &Container) -> String;

    /// Follows `container`'s output into `out` from where `resume` says it
    /// stopped, until the output ends (the container stopped) or `cancel`
    /// fires. After `cancel`, a source reads what is already written when it
    /// can do so without waiting long, then returns; a source started with
    /// `cancel` already fired reads what there is and returns.
    async fn follow(
        &self,
        container: Arc<Container>,
        resume: ResumeLookup,
        out: LogSender,
        cancel: CancellationToken,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: &str, state: &str) -> LogRecord {
        let mut r = LogRecord::new(SystemTime::UNIX_EPOCH, LogOrigin::Cri, None, String::new());
        r.position = Some(LogPosition { key: key.into(), state: state.into() });
        r
    }

    #[tokio::test]
    async fn a_handed_over_batch_moves_the_resume_point_before_anyone_reads_it() {
        let (tx, _rx) = mpsc::channel(4);
        let points = ResumePoints::from_saved(HashMap::from([("a".to_owned(), "saved".to_owned())]));
        let out = LogSender::new(tx, points.clone());
        let lookup = points.lookup();
        assert_eq!(lookup("a").as_deref(), Some("saved"));
        out.send(vec![at("a", "1"), at("b", "1"), at("a", "2")]).await.unwrap();
        assert_eq!((lookup("a").as_deref(), lookup("b").as_deref()), (Some("2"), Some("1")));
        out.try_send(vec![at("b", "2")]).unwrap();
        assert_eq!(lookup("b").as_deref(), Some("2"));
        points.forget("a");
        assert_eq!(lookup("a"), None);
        // A last batch handed over after the container was gone does not
        // bring its point back.
        out.send(vec![at("a", "3")]).await.unwrap();
        assert_eq!(lookup("a"), None);
        assert!(points.is_forgotten("a"));
        assert_eq!(points.len(), 1, "only b");
    }

    #[tokio::test]
    async fn a_batch_that_was_not_taken_moves_nothing() {
        let (tx, rx) = mpsc::channel(1);
        let points = ResumePoints::default();
        let out = LogSender::new(tx, points.clone());
        out.try_send(vec![at("a", "1")]).unwrap();
        assert!(out.try_send(vec![at("a", "2")]).is_err(), "queue full");
        assert_eq!(points.get("a").as_deref(), Some("1"));
        drop(rx);
        assert!(out.send(vec![at("a", "3")]).await.is_err());
        assert_eq!(points.get("a").as_deref(), Some("1"));
    }
}
