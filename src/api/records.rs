//! `StreamLogs` and `StreamAlerts`: the record pipeline's tap, filtered
//! for one caller and put in wire form. A caller that reads too slowly
//! falls behind the tap and is told how many records it missed; the
//! pipeline and its outputs never wait for it.

use std::sync::Arc;

use portwarden_core::time::unix_nanos;
use portwarden_core::{Container, LogBatch, LogOrigin, LogRecord};
use portwarden_logs::Encoder;
use portwarden_proto::v1;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one stream wants.
pub(crate) struct Filter {
    pub(crate) selector: portwarden_core::Selector,
    /// Everything when the selector is empty: records with no known
    /// container are only shown then.
    pub(crate) everything: bool,
    /// Log sources wanted (`StreamLogs`), by name; empty: all.
    pub(crate) sources: Vec<&'static str>,
    /// `StreamAlerts`: every EVE event type, not only alerts.
    pub(crate) all_events: bool,
}

impl Filter {
    fn container(&self, c: Option<&Container>) -> bool {
        self.everything || c.is_some_and(|c| (self.selector)(c))
    }
}

/// The log sources every agent with log collection has, besides its
/// container sources (`cri` and those of the runtimes).
pub(crate) const LISTENERS: [&str; 2] = [LogOrigin::Syslog.as_str(), LogOrigin::Forward.as_str()];

/// Which of the two streams.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Logs,
    Alerts,
}

/// Relays the tap to one caller until it hangs up or `stop` fires.
pub(crate) async fn relay<T>(
    kind: Kind,
    mut tap: broadcast::Receiver<Arc<LogBatch>>,
    filter: Filter,
    host: String,
    tx: mpsc::Sender<Result<T, tonic::Status>>,
    stop: CancellationToken,
) where
    T: From<Wire>,
{
    let mut encoder = Encoder::new(host);
    let mut missed = 0u64;
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => return,
            got = tap.recv() => match got {
                Ok(batch) => batch,
                Err(RecvError::Lagged(batches)) => {
                    // The tap counts batches; a batch holds at least one record.
                    missed += batches;
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        for r in batch.iter() {
            let Some(wire) = convert(kind, r, &filter, &mut encoder, &mut missed) else { continue };
            tokio::select! {
                () = stop.cancelled() => return,
                sent = tx.send(Ok(T::from(wire))) => if sent.is_err() { return },
            }
        }
    }
}

/// A record in wire form, before it becomes a `LogRecord` or an `Alert`.
pub(crate) struct Wire {
    record_time: i64,
    origin: LogOrigin,
    stream: String,
    message: String,
    container: Option<v1::Container>,
    truncated: bool,
    json: String,
    event_type: String,
    missed: u64,
}

fn convert(kind: Kind, r: &LogRecord, filter: &Filter, encoder: &mut Encoder, missed: &mut u64) -> Option<Wire> {
    let event_type = match kind {
        Kind::Logs => {
            if r.origin == LogOrigin::Suricata
                || !(filter.sources.is_empty() || filter.sources.contains(&r.origin.as_str()))
            {
                return None;
            }
            String::new()
        }
        Kind::Alerts => {
            if r.origin != LogOrigin::Suricata {
                return None;
            }
            let event_type = r.raw.as_deref().and_then(event_type).unwrap_or_default();
            if !filter.all_events && event_type != "alert" {
                return None;
            }
            event_type
        }
    };
    if !filter.container(r.container.as_deref()) {
        return None;
    }
    let mut json = Vec::new();
    encoder.line(r, &mut json);
    while json.last() == Some(&b'\n') {
        json.pop();
    }
    Some(Wire {
        record_time: i64::try_from(unix_nanos(r.timestamp)).unwrap_or(i64::MAX),
        origin: r.origin,
        stream: r.stream.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        message: r.message.clone(),
        container: r.container.as_deref().map(Into::into),
        truncated: r.truncated,
        json: String::from_utf8_lossy(&json).into_owned(),
        event_type,
        missed: std::mem::take(missed),
    })
}

/// An EVE event's `event_type`, without parsing the rest.
fn event_type(eve: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        event_type: String,
    }
    serde_json::from_str::<Head>(eve).ok().map(|h| h.event_type)
}

impl From<Wire> for v1::LogRecord {
    fn from(w: Wire) -> Self {
        v1::LogRecord {
            time_unix_nano: w.record_time,
            source: w.origin.as_str().to_owned(),
            stream: w.stream,
            message: w.message,
            container: w.container,
            truncated: w.truncated,
            json: w.json,
            missed: w.missed,
        }
    }
}

impl From<Wire> for v1::Alert {
    fn from(w: Wire) -> Self {
        v1::Alert {
            time_unix_nano: w.record_time,
            event_type: w.event_type,
            container: w.container,
            message: w.message,
            json: w.json,
            missed: w.missed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_is_read_from_eve() {
        assert_eq!(event_type(r#"{"timestamp":"x","event_type":"alert","alert":{}}"#).as_deref(), Some("alert"));
        assert_eq!(event_type("not json"), None);
    }
}
