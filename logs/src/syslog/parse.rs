//! Syslog messages: RFC 5424, RFC 3164 (BSD), and anything else kept whole.

use portwarden_core::time::{days_from_civil, parse_rfc3339};

/// Which format a message was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// `<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`.
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`.
    Rfc3164,
    /// No recognisable header: the whole frame is the message.
    Unparsed,
}

/// A parsed message; text fields borrow from the frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SyslogMessage<'a> {
    /// The format it was in.
    pub format: Format,
    /// The facility (PRI / 8), when there was a PRI.
    pub facility: Option<u8>,
    /// The severity (PRI % 8), when there was a PRI.
    pub severity: Option<u8>,
    /// The sender's time, nanoseconds since the epoch (RFC 3164 times are
    /// taken as UTC in the current year).
    pub timestamp: Option<u64>,
    /// HOSTNAME.
    pub hostname: Option<&'a str>,
    /// APP-NAME, or the RFC 3164 TAG.
    pub app_name: Option<&'a str>,
    /// PROCID, or the RFC 3164 `[pid]`.
    pub procid: Option<&'a str>,
    /// MSGID (RFC 5424 only).
    pub msgid: Option<&'a str>,
    /// STRUCTURED-DATA as written (RFC 5424 only).
    pub structured_data: Option<&'a str>,
    /// The message.
    pub message: &'a [u8],
}

impl<'a> SyslogMessage<'a> {
    fn unparsed(frame: &'a [u8]) -> Self {
        SyslogMessage {
            format: Format::Unparsed,
            facility: None,
            severity: None,
            timestamp: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: None,
            message: frame,
        }
    }
}

/// Parses one frame (no framing bytes, trailing newline already removed).
/// `now` (nanoseconds since the epoch) supplies RFC 3164's missing year.
pub(crate) fn parse(frame: &[u8], now: u64) -> SyslogMessage<'_> {
    let Some((pri, rest)) = pri(frame) else { return SyslogMessage::unparsed(frame) };
    let (facility, severity) = (Some(pri / 8), Some(pri % 8));
    if let Some(m) = rfc5424(rest) {
        return SyslogMessage { facility, severity, ..m };
    }
    let m = rfc3164(rest, now);
    SyslogMessage { facility, severity, ..m }
}

/// `<N>` with N in 0..=191.
fn pri(frame: &[u8]) -> Option<(u8, &[u8])> {
    let rest = frame.strip_prefix(b"<")?;
    let end = rest.iter().take(4).position(|&b| b == b'>')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= 191).then_some((n as u8, &rest[end + 1..]))
}

fn token(s: &[u8]) -> Option<(&str, &[u8])> {
    let end = memchr::memchr(b' ', s).unwrap_or(s.len());
    let t = std::str::from_utf8(&s[..end]).ok()?;
    Some((t, s.get(end + 1..).unwrap_or_default()))
}

fn nil(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

fn rfc5424(rest: &[u8]) -> Option<SyslogMessage<'_>> {
    let (version, rest) = token(rest)?;
    if version != "1" {
        return None;
    }
    let (ts, rest) = token(rest)?;
    let timestamp = if ts == "-" { None } else { Some(parse_rfc3339(ts)?) };
    let (hostname, rest) = token(rest)?;
    let (app_name, rest) = token(rest)?;
    let (procid, rest) = token(rest)?;
    let (msgid, rest) = token(rest)?;
    let (sd, rest) = structured_data(rest)?;
    let message = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
    Some(SyslogMessage {
        format: Format::Rfc5424,
        facility: None,
        severity: None,
        timestamp,
        hostname: nil(hostname),
        app_name: nil(app_name),
        procid: nil(procid),
        msgid: nil(msgid),
        structured_data: nil(sd),
        message,
    })
}

/// `-` or `[id k="v" ...]...`, values with `\"`, `\]` and `\\` escaped.
fn structured_data(s: &[u8]) -> Option<(&str, &[u8])> {
    if s.first() == Some(&b'-') {
        return Some(("-", s.get(2..).unwrap_or_default()));
    }
    let mut i = 0;
    while s.get(i) == Some(&b'[') {
        let mut quoted = false;
        i += 1;
        loop {
            match *s.get(i)? {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let sd = std::str::from_utf8(&s[..i]).ok()?;
    Some((sd, s.get(i + 1..).unwrap_or_default()))
}

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];

/// `Mmm dd hh:mm:ss` (day space-padded) in the year that puts it closest
/// before `now` (plus a day of clock skew).
fn bsd_time(s: &[u8], now: u64) -> Option<u64> {
    if s.len() < 15 || s[3] != b' ' || s[6] != b' ' || s[9] != b':' || s[12] != b':' {
        return None;
    }
    let month = MONTHS.iter().position(|m| &s[..3] == m.as_slice())? as i64 + 1;
    let two = |i: usize| -> Option<i64> {
        let (a, b) = (s[i], s[i + 1]);
        let a = if a == b' ' { 0 } else { i64::from(a.checked_sub(b'0').filter(|d| *d < 10)?) };
        Some(a * 10 + i64::from(b.checked_sub(b'0').filter(|d| *d < 10)?))
    };
    let (day, h, m, sec) = (two(4)?, two(7)?, two(10)?, two(13)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let now_secs = i64::try_from(now / 1_000_000_000).ok()?;
    let year_now = 1970 + now_secs / 31_556_952;
    let at = |year: i64| days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec;
    let mut year = year_now + 1;
    while at(year) > now_secs + 86_400 {
        year -= 1;
    }
    u64::try_from(at(year)).ok().map(|s| s * 1_000_000_000)
}

fn rfc3164(rest: &[u8], now: u64) -> SyslogMessage<'_> {
    let (timestamp, mut rest) = match bsd_time(rest, now) {
        Some(t) => (Some(t), rest.get(16..).unwrap_or_default()),
        None => match token(rest).and_then(|(t, r)| parse_rfc3339(t).map(|ts| (ts, r))) {
            Some((ts, r)) => (Some(ts), r),
            None => (None, rest),
        },
    };
    // HOSTNAME is absent when the first word is already the tag
    // (`tag:` or `tag[pid]:`).
    let mut hostname = None;
    if timestamp.is_some() {
        if let Some((first, after)) = token(rest) {
            if !first.is_empty() && !first.ends_with(':') && !first.contains('[') {
                hostname = Some(first);
                rest = after;
            }
        }
    }
    let (mut app_name, mut procid) = (None, None);
    let tag_end = rest.iter().take(64).position(|&b| b == b':' || b == b' ' || b == b'[');
    if let Some(end) = tag_end {
        if let Ok(tag) = std::str::from_utf8(&rest[..end]) {
            let mut after = &rest[end..];
            if after.first() == Some(&b'[') {
                if let Some(close) = memchr::memchr(b']', after) {
                    procid = std::str::from_utf8(&after[1..close]).ok();
                    after = &after[close + 1..];
                }
            }
            if let Some(msg) = after.strip_prefix(b":") {
                app_name = nil(tag);
                rest = msg.strip_prefix(b" ").unwrap_or(msg);
            } else {
                procid = None;
            }
        }
    }
    SyslogMessage {
        format: Format::Rfc3164,
        facility: None,
        severity: None,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid: None,
        structured_data: None,
        message: rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_795_784_400_000_000_000; // 2026-11-27T13:00:00Z

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let m = parse(
            b"<165>1 2026-11-27T12:00:00.5Z host app 42 ID47 [ex@1 a=\"x\\]y\"][b c=\"d\"] \xEF\xBB\xBFhello",
            NOW,
        );
        assert_eq!(m.format, Format::Rfc5424);
        assert_eq!((m.facility, m.severity), (Some(20), Some(5)));
        assert_eq!((m.hostname, m.app_name, m.procid, m.msgid), (Some("host"), Some("app"), Some("42"), Some("ID47")));
        assert_eq!(m.structured_data, Some("[ex@1 a=\"x\\]y\"][b c=\"d\"]"));
        assert_eq!(m.message, b"hello");
        assert_eq!(m.timestamp, Some(NOW - 3_600_000_000_000 + 500_000_000));
        let m = parse(b"<13>1 - - - - - -", NOW);
        assert_eq!((m.format, m.hostname, m.message), (Format::Rfc5424, None, &b""[..]));
    }

    #[test]
    fn rfc3164_with_and_without_hostname() {
        let m = parse(b"<30>Nov 27 12:59:59 myhost 0123456789ab[812]: the line", NOW);
        assert_eq!(m.format, Format::Rfc3164);
        assert_eq!((m.hostname, m.app_name, m.procid), (Some("myhost"), Some("0123456789ab"), Some("812")));
        assert_eq!(m.message, b"the line");
        assert_eq!(m.timestamp, Some(NOW - 1_000_000_000));
        let m = parse(b"<13>Nov  1 00:00:00 root: x", NOW);
        assert_eq!((m.hostname, m.app_name, m.message), (None, Some("root"), &b"x"[..]));
        // December seen in late November is last year's.
        let m = parse(b"<13>Dec 31 00:00:00 h t: x", NOW);
        assert!(m.timestamp.unwrap() < NOW);
    }

    #[test]
    fn anything_else_is_kept_whole() {
        assert_eq!(parse(b"no header", NOW).format, Format::Unparsed);
        assert_eq!(parse(b"<999>1 x", NOW).format, Format::Unparsed);
        let m = parse(b"<13>just text", NOW);
        assert_eq!((m.format, m.message), (Format::Rfc3164, &b"just text"[..]));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics(frame in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&frame, NOW);
        }

        #[test]
        fn structured_prefixes_never_panic(tail in "[<>0-9a-zA-Z \\[\\]\"\\\\=:-]{0,120}") {
            let _ = parse(format!("<34>1 2026-11-27T12:00:00Z h a p m {tail}").as_bytes(), NOW);
            let _ = parse(format!("<34>Nov 27 12:00:00 {tail}").as_bytes(), NOW);
        }
    }
}
