//! RFC 3339 timestamps without a calendar crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, 0 for earlier times.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `2026-11-27T13:00:00.123456789Z`: UTC, nanosecond precision.
pub fn rfc3339_nanos(ns: u64) -> String {
    let (date, secs_of_day) = civil(ns);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    format!("{date}T{h:02}:{m:02}:{s:02}.{:09}Z", ns % 1_000_000_000)
}

/// `2026-11-27T13:00:00.123456+0000`: the form Suricata writes in EVE.
pub fn eve_timestamp(ns: u64) -> String {
    let (date, secs_of_day) = civil(ns);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    format!("{date}T{h:02}:{m:02}:{s:02}.{:06}+0000", ns % 1_000_000_000 / 1000)
}

/// Parses an RFC 3339 timestamp (`2026-11-27T13:00:00.123456789Z`, any
/// fraction length, `Z` or a `±hh:mm` offset, or `±hhmm` as Suricata writes) to nanoseconds since the epoch.
/// `None` for anything else or a time before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let digits = &b[r];
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hm = [*h1, *h2, *m1, *m2];
            if !hm.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v = |x: u8, y: u8| i64::from(x - b'0') * 10 + i64::from(y - b'0');
            let secs = v(hm[0], hm[1]) * 3600 + v(hm[2], hm[3]) * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    u64::try_from(secs).ok().map(|s| s * 1_000_000_000 + nanos as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, after Howard
/// Hinnant's `days_from_civil`.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (`YYYY-MM-DD`, seconds into the day), after Howard Hinnant's
/// `civil_from_days`.
fn civil(ns: u64) -> (String, u64) {
    let secs = ns / 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), secs % 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_exactly() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (leap day) 12:34:56.000000789
        assert_eq!(rfc3339_nanos(951_827_696_000_000_789), "2000-02-29T12:34:56.000000789Z");
        assert_eq!(eve_timestamp(1_795_784_400_123_456_789), "2026-11-27T13:00:00.123456+0000");
        assert_eq!(rfc3339_nanos(4_102_444_799_999_999_999), "2099-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn rfc3339_parses_what_it_formats_and_offsets() {
        for ns in [0, 951_827_696_000_000_789, 1_795_784_400_123_456_789, 4_102_444_799_999_999_999] {
            assert_eq!(parse_rfc3339(&rfc3339_nanos(ns)), Some(ns));
        }
        assert_eq!(parse_rfc3339("2026-11-27T13:00:00Z"), Some(1_795_784_400_000_000_000));
        assert_eq!(parse_rfc3339("2026-11-27T14:00:00.5+01:00"), Some(1_795_784_400_500_000_000));
        assert_eq!(parse_rfc3339("2026-11-27T13:00:00.123456+0000"), Some(1_795_784_400_123_456_000));
        assert_eq!(parse_rfc3339("2026-11-27T13:00:00.1234567891Z"), Some(1_795_784_400_123_456_789));
        for bad in [
            "",
            "2026-11-27",
            "2026-13-27T13:00:00Z",
            "2026-11-27T13:00:00",
            "2026-11-27T13:00:00.Z",
            "x026-11-27T13:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
