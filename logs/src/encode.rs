//! A record as one JSON line: `timestamp`, `source`, `stream`, `message`,
//! `container` (with pod; or the identity the sender claimed; or null),
//! `host`, then `truncated` and the source's own fields when present.

use std::collections::HashMap;
use std::sync::Arc;

use portwarden_core::time::{rfc3339_nanos, unix_nanos};
use portwarden_core::{Container, LogOrigin, LogRecord};
use serde_json::Value;

/// Serialised containers kept before those of containers gone are dropped.
const CONTAINER_CACHE: usize = 64;

/// Encodes records, re-using each container's serialised form.
#[derive(Default)]
pub struct Encoder {
    host: String,
    containers: HashMap<usize, (Arc<Container>, String)>,
    /// The size at which containers only the cache holds are dropped.
    cache_limit: usize,
    /// The last second formatted, and its text.
    second: (u64, String),
}

impl Encoder {
    /// Records without a sending host get `host`.
    pub fn new(host: String) -> Self {
        Self { host, containers: HashMap::new(), cache_limit: CONTAINER_CACHE, second: (0, String::new()) }
    }

    /// Appends `record` and a newline to `out`.
    pub fn line(&mut self, record: &LogRecord, out: &mut Vec<u8>) {
        if let Some(raw) = &record.raw {
            out.extend_from_slice(raw.as_bytes());
            out.push(b'\n');
            return;
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        self.timestamp(unix_nanos(record.timestamp), out);
        out.extend_from_slice(b"\",\"source\":\"");
        out.extend_from_slice(record.origin.as_str().as_bytes());
        out.extend_from_slice(b"\",\"stream\":");
        match record.stream {
            Some(s) => {
                out.push(b'"');
                out.extend_from_slice(s.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"message\":");
        string(&record.message, out);
        out.extend_from_slice(b",\"container\":");
        self.container(record, out);
        out.extend_from_slice(b",\"host\":");
        string(record.host.as_deref().unwrap_or(&self.host), out);
        if record.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if !record.fields.is_empty() {
            let key = match record.origin {
                LogOrigin::Syslog => "syslog",
                LogOrigin::Forward => "forward",
                _ => "fields",
            };
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":{");
            for (i, (k, v)) in record.fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                string(v, out);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"}\n");
    }

    /// RFC 3339 with nanoseconds; the date and time of day are formatted
    /// once per second, the fraction by hand.
    fn timestamp(&mut self, ns: u64, out: &mut Vec<u8>) {
        let secs = ns / 1_000_000_000;
        if self.second.0 != secs || self.second.1.is_empty() {
            let full = rfc3339_nanos(secs * 1_000_000_000);
            // `YYYY-MM-DDTHH:MM:SS` without `.000000000Z`.
            self.second = (secs, full[..full.len() - 11].to_owned());
        }
        out.extend_from_slice(self.second.1.as_bytes());
        let mut frac = *b".000000000Z";
        let mut n = ns % 1_000_000_000;
        for d in frac[1..10].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&frac);
    }

    fn container(&mut self, record: &LogRecord, out: &mut Vec<u8>) {
        if let Some(c) = &record.container {
            let key = Arc::as_ptr(c) as usize;
            if let Some((_, json)) = self.containers.get(&key) {
                out.extend_from_slice(json.as_bytes());
                return;
            }
            let json = serde_json::to_string(c.as_ref()).unwrap_or_else(|_| "null".into());
            out.extend_from_slice(json.as_bytes());
            if self.containers.len() >= self.cache_limit {
                // Only the cache still holds a gone container's Arc: drop
                // those, so the cache follows the live containers, not history.
                self.containers.retain(|_, (c, _)| Arc::strong_count(c) > 1);
                self.cache_limit = (2 * self.containers.len()).max(CONTAINER_CACHE);
            }
            // Holding the Arc keeps the address from being reused.
            self.containers.insert(key, (Arc::clone(c), json));
        } else if let Some(claimed) = &record.claimed {
            let mut obj = serde_json::Map::new();
            obj.insert("id".into(), claimed.id.clone().map_or(Value::Null, Value::String));
            obj.insert("name".into(), claimed.name.clone().map_or(Value::Null, Value::String));
            obj.insert("pid".into(), claimed.pid.map_or(Value::Null, Value::from));
            obj.insert("known".into(), Value::Bool(false));
            out.extend_from_slice(Value::Object(obj).to_string().as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
    }
}

/// `s` as a JSON string. Log lines rarely hold anything JSON escapes (`"`,
/// `\\`, control characters), so when eight bytes at a time show none, `s`
/// is copied whole; otherwise serde_json escapes it. (serde_json alone
/// looks at every byte, which was a tenth of the syslog ingest's CPU.)
#[inline]
fn string(s: &str, out: &mut Vec<u8>) {
    if needs_escaping(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// True when `bytes` holds a `"`, a `\\` or a byte under 0x20.
#[inline]
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A high bit for (at least) every zero byte of `w`, none when there is none.
    let zero_in = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let special = |w: u64| {
        (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
            | zero_in(w ^ (ONES * u64::from(b'"')))
            | zero_in(w ^ (ONES * u64::from(b'\\')))
            != 0
    };
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    // The last eight bytes overlap the last whole chunk: no copy needed.
    bytes.chunks_exact(8).any(|c| special(word(c))) || special(word(&bytes[bytes.len() - 8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portwarden_core::{ClaimedIdentity, LogStream};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all_ascii = String::new();
        for b in 0u8..0x80 {
            all_ascii.push(char::from(b));
        }
        let cases = [
            String::new(),
            "plain text, longer than eight bytes".into(),
            "quote\" and backslash\\ and\nnewline\tand tab\r".into(),
            "\u{1}\u{1f}\u{7f} é 日本語 🦀 \"".into(),
            "\"\"\"\"\"\"\"\"\"".into(),
            "1234567\\".into(),
            all_ascii,
        ];
        for case in cases {
            let mut ours = Vec::new();
            string(&case, &mut ours);
            assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&case).unwrap(), "{case:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(case in "(?s).{0,40}") {
            let mut ours = Vec::new();
            string(&case, &mut ours);
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&case).unwrap());
        }
    }

    #[test]
    fn shape_matches_the_design() {
        let mut r = LogRecord::new(
            UNIX_EPOCH + Duration::from_nanos(1_795_784_400_000_000_001),
            LogOrigin::Syslog,
            Some(LogStream::Stderr),
            "say \"hi\"\n".into(),
        );
        r.claimed = Some(ClaimedIdentity { id: Some("abc".into()), name: None, pid: Some(7) });
        r.fields.push(("appname".into(), "web".into()));
        r.truncated = true;
        let mut out = Vec::new();
        Encoder::new("node1".into()).line(&r, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-11-27T13:00:00.000000001Z");
        assert_eq!(v["source"], "syslog");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["message"], "say \"hi\"\n");
        assert_eq!(v["container"]["id"], "abc");
        assert_eq!(v["container"]["known"], false);
        assert_eq!(v["host"], "node1");
        assert_eq!(v["truncated"], true);
        assert_eq!(v["syslog"]["appname"], "web");
        assert!(out.ends_with(b"}\n"));
    }

    #[test]
    fn the_container_cache_follows_live_containers_not_history() {
        use portwarden_core::{ContainerId, RuntimeName};
        let mut encoder = Encoder::new("node1".into());
        let live = Arc::new(Container::new(RuntimeName::new("docker"), ContainerId::new("live")));
        let mut out = Vec::new();
        for n in 0..1000 {
            // A container that logs once and is gone: only the cache still
            // holds it afterwards.
            let gone = Arc::new(Container::new(RuntimeName::new("docker"), ContainerId::new(format!("gone{n}"))));
            for c in [&gone, &live] {
                let mut r = LogRecord::new(UNIX_EPOCH, LogOrigin::Cri, None, "x".into());
                r.container = Some(Arc::clone(c));
                encoder.line(&r, &mut out);
            }
        }
        assert!(encoder.containers.len() <= CONTAINER_CACHE, "{} kept", encoder.containers.len());
        assert!(encoder.containers.values().any(|(c, _)| Arc::ptr_eq(c, &live)), "the live one stays cached");
        let last = out.split(|b| *b == b'\n').rfind(|l| !l.is_empty()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(last).unwrap()["container"]["id"], "live");
    }
}
