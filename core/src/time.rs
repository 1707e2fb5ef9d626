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
}
