//! Human durations (`500ms`, `2s`, `5m`, `1h`) for flags and config.

use std::time::Duration;

/// Parses `<integer><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration (try `500ms`, `2s`, `5m`)"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}` has no known unit (use ms, s, m or h)")),
    };
    n.checked_mul(scale).map(Duration::from_millis).ok_or_else(|| format!("`{text}` is too long"))
}

/// Serde support: `#[serde(with = "crate::duration")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Serde support for the commented default config.
pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*value))
}

/// The shortest exact form: `2s`, `250ms`, `5m`.
pub fn format(value: Duration) -> String {
    let ms = value.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        for text in ["250ms", "2s", "5m", "1h", "0s"] {
            assert_eq!(format(parse(text).expect(text)), text);
        }
        assert!(parse("2").is_err());
        assert!(parse("2 sec").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("99999999999999999999h").is_err());
    }
}
