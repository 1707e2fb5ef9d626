//! Syslog over TCP (RFC 6587): each frame is either octet-counted
//! (`<len> <msg>`) or ends at a newline. Decided per frame, as rsyslog does,
//! so a sender may switch and a lying length costs one frame, not the
//! connection.

use std::ops::Range;

/// One frame found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Where it is in the buffer passed to [`Framer::next`].
    pub range: Range<usize>,
    /// Cut at the size limit.
    pub truncated: bool,
    /// Its framing was wrong (a length that lied or was not a number).
    pub malformed: bool,
}

/// Splits a TCP byte stream into frames.
#[derive(Debug)]
pub(crate) struct Framer {
    max: usize,
    /// Bytes still to discard from an over-long octet-counted frame.
    skip: usize,
    /// Discarding the rest of an over-long line.
    skip_line: bool,
}

impl Framer {
    /// Frames longer than `max` are cut to it.
    pub(crate) fn new(max: usize) -> Self {
        Self { max, skip: 0, skip_line: false }
    }

    /// The next frame in `buf[*pos..]`, advancing `pos` past it; `None`
    /// when more bytes are needed. With `eof`, what is left is one last frame.
    pub(crate) fn next(&mut self, buf: &[u8], pos: &mut usize, eof: bool) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - *pos);
                self.skip -= n;
                *pos += n;
                if self.skip > 0 {
                    return None;
                }
            }
            if self.skip_line {
                match memchr::memchr(b'\n', &buf[*pos..]) {
                    Some(i) => {
                        *pos += i + 1;
                        self.skip_line = false;
                    }
                    None => {
                        *pos = buf.len();
                        return None;
                    }
                }
            }
            let rest = &buf[*pos..];
            // Blank lines between frames (some senders add them) are skipped.
            let blank = rest.iter().take_while(|b| matches!(b, b'\n' | b'\r' | b'\0')).count();
            if blank > 0 {
                *pos += blank;
                continue;
            }
            if rest.is_empty() {
                return None;
            }
            return match octet_count(rest) {
                Count::Length(len, header) => self.counted(buf, pos, len, header, eof),
                Count::NeedMore if !eof => None,
                Count::NeedMore | Count::NotCounted => self.line(buf, pos, eof, false),
                Count::Bad => self.line(buf, pos, eof, true),
            };
        }
    }

    fn counted(&mut self, buf: &[u8], pos: &mut usize, len: usize, header: usize, eof: bool) -> Option<Frame> {
        let start = *pos + header;
        let available = buf.len() - start;
        let keep = len.min(self.max);
        if available < keep {
            if eof {
                // The length promised more than arrived.
                *pos = buf.len();
                return Some(Frame { range: start..buf.len(), truncated: true, malformed: true });
            }
            return None;
        }
        *pos = start + keep;
        self.skip = len - keep;
        // rsyslog and syslog-ng count a trailing LF into the frame; receivers
        // drop it (rsyslog's DropTrailingLFOnReception, on by default).
        let end =
            if len <= keep && buf[start..start + keep].ends_with(b"\n") { start + keep - 1 } else { start + keep };
        Some(Frame { range: start..end, truncated: len > keep, malformed: false })
    }

    fn line(&mut self, buf: &[u8], pos: &mut usize, eof: bool, malformed: bool) -> Option<Frame> {
        let start = *pos;
        let rest = &buf[start..];
        match memchr::memchr(b'\n', rest) {
            Some(i) if i <= self.max => {
                *pos = start + i + 1;
                Some(Frame { range: start..start + i, truncated: false, malformed })
            }
            _ if rest.len() > self.max => {
                *pos = start + self.max;
                self.skip_line = true;
                Some(Frame { range: start..start + self.max, truncated: true, malformed })
            }
            None if eof => {
                *pos = buf.len();
                Some(Frame { range: start..buf.len(), truncated: false, malformed })
            }
            _ => None,
        }
    }
}

enum Count {
    /// `len` bytes follow a header of this many bytes.
    Length(usize, usize),
    /// Digits so far, but no space yet.
    NeedMore,
    /// Not octet-counted: starts with something other than a digit.
    NotCounted,
    /// Digits, then not a space, or a number too long to be a length.
    Bad,
}

fn octet_count(s: &[u8]) -> Count {
    if !s[0].is_ascii_digit() {
        return Count::NotCounted;
    }
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 10 || s.get(digits).is_some_and(|&b| b != b' ') || s[0] == b'0' {
        return Count::Bad;
    }
    if digits == s.len() {
        return Count::NeedMore;
    }
    let len = std::str::from_utf8(&s[..digits]).ok().and_then(|d| d.parse::<usize>().ok());
    match len {
        Some(len) => Count::Length(len, digits + 1),
        None => Count::Bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool, bool)> {
        let mut f = Framer::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            buf.extend_from_slice(chunk);
            let eof = i == chunks.len() - 1;
            let mut pos = 0;
            while let Some(fr) = f.next(&buf, &mut pos, eof) {
                out.push((buf[fr.range].to_vec(), fr.truncated, fr.malformed));
            }
            buf.drain(..pos);
        }
        out
    }

    #[test]
    fn mixed_framing_split_anywhere() {
        let stream = b"5 <13>a<13>line one\n11 <13>counted\n<13>x";
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            let got = frames(100, &[a, b]);
            let msgs: Vec<_> = got.iter().map(|g| String::from_utf8_lossy(&g.0).into_owned()).collect();
            assert_eq!(msgs, ["<13>a", "<13>line one", "<13>counted", "<13>x"], "split at {split}");
        }
    }

    #[test]
    fn a_trailing_lf_inside_a_counted_frame_is_dropped() {
        // As rsyslog's omfwd sends with octet framing: the LF is counted.
        let got = frames(100, &[b"11 <13>line 1\n12 <13>line 2\n\n", b""]);
        assert_eq!(got, [(b"<13>line 1".to_vec(), false, false), (b"<13>line 2\n".to_vec(), false, false)]);
    }

    #[test]
    fn over_long_frames_are_cut_and_the_rest_skipped() {
        let got = frames(4, &[b"10 0123456789<1>ok\n", b"abcdefgh\nnext\n"]);
        assert_eq!(got[0], (b"0123".to_vec(), true, false));
        assert_eq!(got[1], (b"<1>o".to_vec(), true, false));
        assert_eq!(got[2], (b"abcd".to_vec(), true, false));
        assert_eq!(got[3], (b"next".to_vec(), false, false));
    }

    #[test]
    fn lying_lengths_cost_one_frame() {
        // Length too short: the rest of that message is taken as a line.
        let got = frames(100, &[b"3 <13>abc\n<13>after\n", b""]);
        assert_eq!(got[0].0, b"<13");
        assert_eq!(got[1], (b">abc".to_vec(), false, false));
        assert_eq!(got[2].0, b"<13>after");
        // Length too long at the end of the stream: kept, marked.
        let got = frames(100, &[b"50 <13>short", b""]);
        assert_eq!(got, [(b"<13>short".to_vec(), true, true)]);
        // Not a length at all.
        let got = frames(100, &[b"12x <13>a\n", b""]);
        assert_eq!(got, [(b"12x <13>a".to_vec(), false, true)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_and_always_progresses(data in proptest::collection::vec(any::<u8>(), 0..400), split in 0usize..400, max in 1usize..64) {
            let split = split.min(data.len());
            let (a, b) = data.split_at(split);
            let total: usize = frames(max, &[a, b]).iter().map(|f| f.0.len()).sum();
            prop_assert!(total <= data.len());
        }
    }
}
