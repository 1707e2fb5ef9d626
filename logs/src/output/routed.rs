//! An output that takes only some records: how alerts become a stream of
//! their own (`[[alerts.outputs]]`) and can be kept off the log outputs.

use std::io;

use async_trait::async_trait;
use portwarden_core::{LogOrigin, LogRecord};

use super::{FileMark, Output, WhenFull};

/// A Suricata alert's severity (1 is the gravest); `None` for every other
/// record, EVE protocol events included.
pub fn alert_severity(r: &LogRecord) -> Option<u8> {
    if r.origin != LogOrigin::Suricata {
        return None;
    }
    r.fields.iter().find(|(k, _)| k == "alert_severity").and_then(|(_, v)| v.parse().ok())
}

/// Wraps an output so it is written only the records `takes` accepts.
/// The others count as written for it, so checkpoints do not wait on them.
pub struct Routed {
    inner: Box<dyn Output>,
    takes: Box<dyn Fn(&LogRecord) -> bool + Send + Sync>,
}

impl Routed {
    /// `inner`, given only what `takes` accepts.
    pub fn new(inner: Box<dyn Output>, takes: impl Fn(&LogRecord) -> bool + Send + Sync + 'static) -> Self {
        Self { inner, takes: Box::new(takes) }
    }
}

#[async_trait]
impl Output for Routed {
    fn name(&self) -> String {
        self.inner.name()
    }

    /// Hands the inner output each run of accepted records as it is: no
    /// copy, however the records are mixed.
    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        let mut start = None;
        for (i, r) in records.iter().enumerate() {
            match ((self.takes)(r), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    self.inner.write(&records[s..i]).await?;
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            self.inner.write(&records[s..]).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    fn mark(&self) -> Option<FileMark> {
        self.inner.mark()
    }

    fn restore(&mut self, mark: &FileMark) -> io::Result<()> {
        self.inner.restore(mark)
    }

    fn when_full(&self) -> WhenFull {
        self.inner.when_full()
    }

    fn buffer_stats(&self) -> Option<std::sync::Arc<super::BufferStats>> {
        self.inner.buffer_stats()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use super::*;

    struct Seen(Arc<Mutex<Vec<Vec<String>>>>);

    #[async_trait]
    impl Output for Seen {
        fn name(&self) -> String {
            "seen".into()
        }
        async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
            self.0.lock().unwrap().push(records.iter().map(|r| r.message.clone()).collect());
            Ok(())
        }
        async fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn alert(message: &str, severity: u8) -> LogRecord {
        let mut r = LogRecord::new(SystemTime::now(), LogOrigin::Suricata, None, message.into());
        r.fields.push(("alert_severity".into(), severity.to_string()));
        r
    }

    fn log(message: &str) -> LogRecord {
        LogRecord::new(SystemTime::now(), LogOrigin::Cri, None, message.into())
    }

    #[tokio::test]
    async fn only_accepted_records_reach_the_output_in_runs() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut out = Routed::new(Box::new(Seen(Arc::clone(&seen))), |r| alert_severity(r).is_some_and(|s| s <= 2));
        let batch = [log("a"), alert("grave", 1), alert("also", 2), log("b"), alert("minor", 3), alert("last", 1)];
        out.write(&batch).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [vec!["grave", "also"], vec!["last"]]);
        let mut eve = LogRecord::new(SystemTime::now(), LogOrigin::Suricata, None, "dns".into());
        eve.fields.push(("other".into(), "1".into()));
        assert_eq!(alert_severity(&eve), None, "an EVE protocol event is not an alert");
    }
}
