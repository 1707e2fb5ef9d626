//! Docker's log stream: multiplexed 8-byte-header frames (or raw bytes for
//! a TTY container), each message prefixed with its timestamp, lines over
//! 16 KiB split into partial messages. Also where resuming de-duplicates.

use serde::{Deserialize, Serialize};

use portwarden_core::LogStream;
use portwarden_core::time::parse_rfc3339;

use portwarden_core::text::Assembler;

/// How far apart in time Docker may write the two streams out of order.
/// A stream that has been quiet is assumed delivered up to this much before
/// the newest record, so a quiet stderr does not pin resuming to the start.
pub(super) const REORDER_MARGIN_NS: u64 = 5_000_000_000;

/// A frame longer than this cannot be Docker's (its messages are 16 KiB);
/// the stream is out of step and is reopened.
const MAX_FRAME: usize = 4 << 20;

/// Where one stream stands: the timestamp of the last message delivered,
/// and how many messages with exactly that timestamp were delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCursor {
    /// Nanoseconds since the epoch.
    pub ts: u64,
    /// Messages at `ts` already delivered.
    pub seen: u32,
}

impl StreamCursor {
    fn advance(&mut self, ts: u64) {
        if ts == self.ts {
            self.seen += 1;
        } else {
            *self = StreamCursor { ts, seen: 1 };
        }
    }
}

/// A container's resume point: one cursor per stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerCursor {
    /// Standard output.
    pub stdout: StreamCursor,
    /// Standard error.
    pub stderr: StreamCursor,
}

impl DockerCursor {
    /// The `since` to ask Docker for: the earlier of the two streams.
    pub fn since(&self) -> u64 {
        self.stdout.ts.min(self.stderr.ts)
    }
}

/// One complete line out of the stream.
#[derive(Debug, PartialEq)]
pub struct DockerLine {
    /// Which stream.
    pub stream: LogStream,
    /// The timestamp of its first fragment, nanoseconds since the epoch.
    pub timestamp: u64,
    /// The text without its newline, lossily decoded.
    pub message: String,
    /// Cut at the size limit.
    pub truncated: bool,
    /// The resume point once this line is delivered.
    pub cursor: DockerCursor,
}

/// What went wrong in a stream.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A frame header that cannot be Docker's: the stream must be reopened.
    BadFrame(String),
}

#[derive(Default)]
struct StreamState {
    assembler: Assembler,
    first_ts: u64,
    /// Every message read, fragments included.
    read: StreamCursor,
    /// Only messages that completed a line, and those before them.
    delivered: StreamCursor,
    /// Messages at or before this were delivered before a restart.
    skip: Option<StreamCursor>,
    skip_count: StreamCursor,
}

/// Decodes one container's log stream.
pub struct DockerDecoder {
    tty: bool,
    max_line: usize,
    buf: Vec<u8>,
    streams: [StreamState; 2],
    /// Messages skipped as already delivered, and lines without a timestamp.
    pub deduplicated: u64,
    /// Messages without a parseable timestamp (dropped: Docker always sends one).
    pub malformed: u64,
}

impl DockerDecoder {
    /// A decoder for a TTY (raw) or multiplexed stream, resuming after
    /// `resume` when given.
    pub fn new(tty: bool, max_line: usize, resume: Option<DockerCursor>) -> Self {
        let mut streams: [StreamState; 2] = Default::default();
        if let Some(r) = resume {
            for (state, cursor) in streams.iter_mut().zip([r.stdout, r.stderr]) {
                state.skip = Some(cursor);
                state.read = cursor;
                state.delivered = cursor;
            }
        }
        Self { tty, max_line, buf: Vec::new(), streams, deduplicated: 0, malformed: 0 }
    }

    /// Feeds bytes from the stream; complete lines are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<DockerLine>) -> Result<(), DecodeError> {
        self.buf.extend_from_slice(data);
        let mut buf = std::mem::take(&mut self.buf);
        let used = if self.tty { self.raw(&buf, out) } else { self.frames(&buf, out) };
        match used {
            Ok(n) => {
                buf.drain(..n);
                self.buf = buf;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn frames(&mut self, buf: &[u8], out: &mut Vec<DockerLine>) -> Result<usize, DecodeError> {
        let mut at = 0;
        while buf.len() - at >= 8 {
            let header = &buf[at..at + 8];
            let stream = match header[0] {
                1 => LogStream::Stdout,
                2 => LogStream::Stderr,
                other => return Err(DecodeError::BadFrame(format!("stream byte {other}"))),
            };
            let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if size > MAX_FRAME {
                return Err(DecodeError::BadFrame(format!("frame of {size} bytes")));
            }
            if buf.len() - at - 8 < size {
                break;
            }
            self.message(stream, &buf[at + 8..at + 8 + size], out);
            at += 8 + size;
        }
        Ok(at)
    }

    /// A TTY stream has no frames: messages end at newlines.
    fn raw(&mut self, buf: &[u8], out: &mut Vec<DockerLine>) -> Result<usize, DecodeError> {
        let mut at = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            self.message(LogStream::Stdout, &buf[at..=nl], out);
            at = nl + 1;
        }
        if buf.len() - at > MAX_FRAME {
            // A terminal line with no end in sight: deliver it cut.
            let (head, _) = buf[at..].split_at(self.max_line.min(buf.len() - at));
            let mut piece = head.to_vec();
            piece.push(b'\n');
            self.message(LogStream::Stdout, &piece, out);
            at = buf.len();
        }
        Ok(at)
    }

    /// One message: `<timestamp> <text>[\n]`.
    fn message(&mut self, stream: LogStream, payload: &[u8], out: &mut Vec<DockerLine>) {
        let Some(space) = memchr::memchr(b' ', payload) else {
            self.malformed += 1;
            return;
        };
        let Some(ts) = std::str::from_utf8(&payload[..space]).ok().and_then(parse_rfc3339) else {
            self.malformed += 1;
            return;
        };
        let text = &payload[space + 1..];
        let (text, complete) = match text.strip_suffix(b"\n") {
            Some(t) => (t, true),
            None => (text, false),
        };
        let slot = usize::from(stream == LogStream::Stderr);
        let state = &mut self.streams[slot];
        if let Some(skip) = state.skip {
            state.skip_count.advance(ts);
            if ts < skip.ts || (ts == skip.ts && state.skip_count.seen <= skip.seen) {
                self.deduplicated += 1;
                return;
            }
            state.skip = None;
        }
        state.read.advance(ts);
        if !state.assembler.is_open() {
            state.first_ts = ts;
        }
        state.assembler.push(text, self.max_line);
        if !complete {
            return;
        }
        state.delivered = state.read;
        let (message, truncated) = state.assembler.take();
        let timestamp = state.first_ts;
        let cursor = self.cursor_after(ts);
        out.push(DockerLine { stream, timestamp, message, truncated, cursor });
    }

    /// Both streams' resume points once a line at `ts` is delivered.
    fn cursor_after(&self, ts: u64) -> DockerCursor {
        let floor = ts.saturating_sub(REORDER_MARGIN_NS);
        let settle = |c: StreamCursor| if c.ts < floor { StreamCursor { ts: floor, seen: 0 } } else { c };
        DockerCursor { stdout: settle(self.streams[0].delivered), stderr: settle(self.streams[1].delivered) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(stream: u8, payload: &str) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    fn ts(n: u64) -> String {
        portwarden_core::time::rfc3339_nanos(1_795_784_400_000_000_000 + n)
    }

    fn decode_all(d: &mut DockerDecoder, bytes: &[u8]) -> Vec<DockerLine> {
        let mut out = Vec::new();
        // One byte at a time: frames split anywhere must still decode.
        for b in bytes {
            d.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn multiplexed_streams_and_partials_merge() {
        let mut bytes = frame(1, &format!("{} hello\n", ts(1)));
        bytes.extend(frame(1, &format!("{} par", ts(2))));
        bytes.extend(frame(2, &format!("{} oops\n", ts(3))));
        bytes.extend(frame(1, &format!("{} tial\n", ts(4))));
        let mut d = DockerDecoder::new(false, 1 << 20, None);
        let lines = decode_all(&mut d, &bytes);
        let got: Vec<_> = lines.iter().map(|l| (l.stream, l.message.as_str())).collect();
        assert_eq!(got, [(LogStream::Stdout, "hello"), (LogStream::Stderr, "oops"), (LogStream::Stdout, "partial")]);
        assert_eq!(lines[2].timestamp, 1_795_784_400_000_000_002);
        // While "par" was pending, stdout's resume point stayed at "hello".
        assert_eq!(lines[1].cursor.stdout.ts, 1_795_784_400_000_000_001);
    }

    #[test]
    fn tty_stream_is_lines() {
        let bytes = format!("{} one\r\n{} two\r\n", ts(1), ts(2));
        let mut d = DockerDecoder::new(true, 1 << 20, None);
        let lines = decode_all(&mut d, bytes.as_bytes());
        assert_eq!(lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    }

    #[test]
    fn resume_skips_exactly_what_was_delivered_per_stream() {
        // Same timestamp twice on stdout; stderr out of order with stdout.
        let mut bytes = frame(1, &format!("{} a\n", ts(5)));
        bytes.extend(frame(1, &format!("{} b\n", ts(5))));
        bytes.extend(frame(2, &format!("{} x\n", ts(4))));
        bytes.extend(frame(1, &format!("{} c\n", ts(6))));
        bytes.extend(frame(2, &format!("{} y\n", ts(4))));
        let mut first = DockerDecoder::new(false, 1 << 20, None);
        let all = decode_all(&mut first, &bytes);
        assert_eq!(all.len(), 5);
        for cut in 0..all.len() {
            let mut again = DockerDecoder::new(false, 1 << 20, Some(all[cut].cursor));
            let rest = decode_all(&mut again, &bytes);
            let want: Vec<_> = all[cut + 1..].iter().map(|l| l.message.clone()).collect();
            let got: Vec<_> = rest.iter().map(|l| l.message.clone()).collect();
            assert_eq!(got, want, "resuming after line {cut}");
        }
    }

    #[test]
    fn a_bad_header_is_an_error_not_a_panic() {
        let mut d = DockerDecoder::new(false, 1 << 20, None);
        assert!(d.push(&[7, 0, 0, 0, 0, 0, 0, 1, b'x'], &mut Vec::new()).is_err());
        let mut d = DockerDecoder::new(false, 1 << 20, None);
        assert!(d.push(&[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], &mut Vec::new()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes_never_panic(tty in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = DockerDecoder::new(tty, 64, None);
            let _ = d.push(&data, &mut Vec::new());
        }
    }
}
