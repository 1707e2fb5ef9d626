//! The CRI log line format: `<RFC3339Nano> <stdout|stderr> <P|F[:tags]> <msg>`.

use portwarden_core::LogStream;
use portwarden_core::time::parse_rfc3339;

/// One parsed line of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    /// Nanoseconds since the epoch.
    pub timestamp: u64,
    /// The stream it was written to.
    pub stream: LogStream,
    /// True for a `P` (partial) line, which the next line of the same stream continues.
    pub partial: bool,
    /// False when the tag field was missing (an old or foreign writer); the
    /// line is then taken as full and the rest as its message.
    pub tagged: bool,
    /// The message, without the line's newline.
    pub message: &'a [u8],
}

/// Parses one line (without its trailing `\n`). `None` when it is not a CRI
/// line at all: no timestamp, or no stream.
pub(crate) fn parse_line(line: &[u8]) -> Option<CriLine<'_>> {
    let (ts, rest) = split_field(line)?;
    let timestamp = parse_rfc3339(std::str::from_utf8(ts).ok()?)?;
    let (stream, rest) = split_field(rest).or_else(|| Some((rest, &[][..])))?;
    let stream = LogStream::parse(std::str::from_utf8(stream).ok()?)?;
    // The tag field is `P`, `F`, or either followed by `:`-separated tags.
    let tag_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    let tag = &rest[..tag_end];
    let flag = tag.split(|&b| b == b':').next().unwrap_or_default();
    let (partial, tagged) = match flag {
        b"P" => (true, true),
        b"F" => (false, true),
        _ => (false, false),
    };
    let message = if tagged { rest.get(tag_end + 1..).unwrap_or_default() } else { rest };
    Some(CriLine { timestamp, stream, partial, tagged, message })
}

fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', s)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_partial_tagged_and_untagged_lines() {
        let l = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!((l.stream, l.partial, l.tagged, l.message), (LogStream::Stdout, false, true, &b"log content 1"[..]));
        assert_eq!(l.timestamp, 1_475_713_029_669_794_202);
        let l = parse_line(b"2016-10-06T00:17:09.669794203Z stderr P:tag1:tag2 part").unwrap();
        assert_eq!((l.stream, l.partial, l.message), (LogStream::Stderr, true, &b"part"[..]));
        let l = parse_line(b"2016-10-06T00:17:09.669794203Z stdout F").unwrap();
        assert_eq!(l.message, b"");
        let l = parse_line(b"2016-10-06T00:17:09.669794203Z stdout no tags here").unwrap();
        assert_eq!((l.tagged, l.partial, l.message), (false, false, &b"no tags here"[..]));
        assert!(parse_line(b"garbage").is_none());
        assert!(parse_line(b"2016-10-06T00:17:09Z stdin F x").is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&line);
        }

        #[test]
        fn round_trips(msg in "[ -~]{0,80}", partial in any::<bool>()) {
            let line = format!("2026-11-27T13:00:00.000000001Z stderr {} {msg}", if partial { "P" } else { "F" });
            let l = parse_line(line.as_bytes()).unwrap();
            prop_assert_eq!(l.message, msg.as_bytes());
            prop_assert_eq!(l.partial, partial);
        }
    }
}
