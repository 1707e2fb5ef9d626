//! Log records and the [`LogSource`] trait: a container's stdout and stderr.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

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
pub type LogSender = mpsc::Sender<LogBatch>;

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
