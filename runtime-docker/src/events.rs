//! Splits Docker's `/events` body, one JSON object per line, into events.

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use portwarden_core::{Error, Result, RuntimeEvent};

use crate::{api, convert};

/// Longest event line accepted. Real events are under 4 KiB even with many
/// labels; a longer line is skipped, not buffered without bound.
const MAX_LINE: usize = 1 << 20;

/// Turns body chunks into events: Docker's `/events`, or Podman's
/// (`/libpod/events` speaks the same shape with its own action names).
/// Undecodable lines become `Err(Protocol)` items and the stream goes on; a
/// transport error is passed through.
pub fn decode(body: BoxStream<'static, Result<Bytes>>) -> BoxStream<'static, Result<RuntimeEvent>> {
    let state = Splitter { body, buf: BytesMut::new(), skipping: false, done: false };
    futures::stream::unfold(state, |mut s| async move { s.next_event().await.map(|item| (item, s)) }).boxed()
}

struct Splitter {
    body: BoxStream<'static, Result<Bytes>>,
    buf: BytesMut,
    /// Inside an over-long line: drop bytes until its newline.
    skipping: bool,
    done: bool,
}

impl Splitter {
    async fn next_event(&mut self) -> Option<Result<RuntimeEvent>> {
        loop {
            while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                if let Some(item) = parse(&line[..pos]) {
                    return Some(item);
                }
            }
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                if !std::mem::replace(&mut self.skipping, true) {
                    return Some(Err(Error::protocol("GET /events", format!("event line over {MAX_LINE} bytes"))));
                }
            }
            if self.done {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(chunk.chunk()),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    if !self.buf.is_empty() && !self.skipping {
                        let rest = self.buf.split();
                        if let Some(item) = parse(&rest) {
                            return Some(item);
                        }
                    }
                }
            }
        }
    }
}

/// `None` for blank lines and events the inventory does not watch.
fn parse(line: &[u8]) -> Option<Result<RuntimeEvent>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<api::Event>(line) {
        Ok(ev) => convert::event(ev).map(Ok),
        Err(e) => Some(Err(Error::protocol("GET /events", e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(chunks: Vec<Result<Bytes>>) -> Vec<Result<RuntimeEvent>> {
        decode(futures::stream::iter(chunks).boxed()).collect().await
    }

    const START: &str = r#"{"Type":"container","Action":"start","Actor":{"ID":"aaa"},"timeNano":1}"#;

    #[tokio::test]
    async fn events_split_across_chunks_are_reassembled() {
        let (a, b) = START.split_at(20);
        let out = run(vec![Ok(Bytes::from(a.to_owned())), Ok(Bytes::from(format!("{b}\n{START}\n")))]).await;
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| e.as_ref().is_ok_and(|e| e.id.as_str() == "aaa")));
    }

    #[tokio::test]
    async fn garbage_is_reported_and_the_stream_goes_on() {
        let out = run(vec![Ok(Bytes::from(format!("{{\"Type\":\"contai\n\n{START}\n")))]).await;
        assert_eq!(out.len(), 2);
        assert!(matches!(out[0], Err(Error::Protocol { .. })));
        assert!(out[1].is_ok());
    }

    #[tokio::test]
    async fn an_oversized_line_is_skipped_once_with_one_error() {
        let huge = Bytes::from(vec![b'x'; MAX_LINE + 10]);
        let out = run(vec![Ok(huge.clone()), Ok(huge), Ok(Bytes::from(format!("tail\n{START}\n")))]).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(out[0], Err(Error::Protocol { .. })));
        assert!(out[1].is_ok());
    }

    #[tokio::test]
    async fn a_last_line_without_newline_still_counts() {
        let out = run(vec![Ok(Bytes::from(START))]).await;
        assert_eq!(out.len(), 1);
    }
}
