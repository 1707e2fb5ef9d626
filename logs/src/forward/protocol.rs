//! Fluentd's forward protocol (v1): Message, Forward, PackedForward and
//! CompressedPackedForward modes, EventTime, and the `chunk` option.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::msgpack::{self, DecodeError, Value};

/// One event: (nanoseconds since the epoch, record).
pub(super) type Event<'a> = (u64, Value<'a>);

/// Why a message was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    /// Valid msgpack, but not a forward message.
    NotForward(&'static str),
    /// A packed entry stream that is not msgpack.
    BadEntries,
    /// Compressed entries inflating past the limit.
    TooLarge,
}

/// The parts of a forward message a server acts on.
pub(crate) struct Message<'a> {
    /// The tag.
    pub tag: &'a str,
    /// The option map's `chunk`, to acknowledge.
    pub chunk: Option<&'a [u8]>,
    /// The events, when they could be borrowed from the frame (Message and
    /// Forward modes).
    pub events: Vec<Event<'a>>,
    /// The packed entries (already inflated), for PackedForward modes.
    pub packed: Option<Vec<u8>>,
}

/// Reads the time field: an integer of seconds, a float, or EventTime
/// (ext type 0: seconds and nanoseconds, big-endian u32 each).
pub(crate) fn event_time(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::Int(s) if *s >= 0 => u64::try_from(*s).ok()?.checked_mul(1_000_000_000),
        Value::Float(f) if *f >= 0.0 && f.is_finite() => Some((*f * 1e9) as u64),
        Value::Ext(0, d) if d.len() == 8 => {
            let secs = u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
            let nanos = u64::from(u32::from_be_bytes([d[4], d[5], d[6], d[7]]));
            Some(secs * 1_000_000_000 + nanos.min(999_999_999))
        }
        _ => None,
    }
}

/// Interprets one top-level value. `inflate_limit` bounds what a
/// CompressedPackedForward chunk may inflate to.
pub(crate) fn interpret<'a>(v: &'a Value<'a>, inflate_limit: usize) -> Result<Message<'a>, ProtocolError> {
    let Value::Array(items) = v else { return Err(ProtocolError::NotForward("not an array")) };
    let tag = items.first().and_then(Value::as_str).ok_or(ProtocolError::NotForward("no tag"))?;
    let second = items.get(1).ok_or(ProtocolError::NotForward("no entries"))?;
    let (events, packed, option) = match second {
        Value::Int(_) | Value::Float(_) | Value::Ext(..) => {
            let time = event_time(second).ok_or(ProtocolError::NotForward("bad time"))?;
            let record = items.get(2).ok_or(ProtocolError::NotForward("no record"))?;
            (vec![(time, record.clone())], None, items.get(3))
        }
        Value::Array(entries) => {
            let events = entries.iter().filter_map(entry).collect();
            (events, None, items.get(2))
        }
        Value::Str(bytes) | Value::Bin(bytes) => {
            let option = items.get(2);
            let gzip = option.and_then(|o| o.get("compressed")).and_then(Value::as_str) == Some("gzip");
            let packed = if gzip { inflate(bytes, inflate_limit)? } else { bytes.to_vec() };
            (Vec::new(), Some(packed), option)
        }
        _ => return Err(ProtocolError::NotForward("second element is not a time, array or binary")),
    };
    let chunk = option.and_then(|o| o.get("chunk")).and_then(|c| match c {
        Value::Str(s) | Value::Bin(s) => Some(*s),
        _ => None,
    });
    Ok(Message { tag, chunk, events, packed })
}

/// `[time, record]`; anything else is skipped.
fn entry<'a>(v: &Value<'a>) -> Option<Event<'a>> {
    let Value::Array(pair) = v else { return None };
    let time = event_time(pair.first()?)?;
    Some((time, pair.get(1)?.clone()))
}

/// The events of a packed entry stream.
pub(crate) fn unpack(packed: &[u8]) -> Result<Vec<Event<'_>>, ProtocolError> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < packed.len() {
        let (v, used) = msgpack::read(&packed[at..]).map_err(|_: DecodeError| ProtocolError::BadEntries)?;
        at += used;
        if let Some(e) = entry(&v) {
            events.push(e);
        }
    }
    Ok(events)
}

/// Gunzips at most `limit` bytes; more is a bomb (or a mistake) either way.
fn inflate(bytes: &[u8], limit: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    let mut gz = MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    gz.read_to_end(&mut out).map_err(|_| ProtocolError::BadEntries)?;
    if out.len() > limit {
        return Err(ProtocolError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that start like a forward message (array, tag) and then go
    /// anywhere: every layer (msgpack, mode, packed entries, gzip) must
    /// reject or accept without panicking, within its bounds.
    fn forwardish() -> impl Strategy<Value = Vec<u8>> {
        (0u8..4, proptest::collection::vec(any::<u8>(), 0..200)).prop_map(|(len, tail)| {
            let mut v = vec![0x90 | (len + 1), 0xa3, b't', b'a', b'g'];
            v.extend(tail);
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics(data in prop_oneof![forwardish(), proptest::collection::vec(any::<u8>(), 0..200)]) {
            if let Ok((value, _)) = msgpack::read(&data) {
                if let Ok(m) = interpret(&value, 4096) {
                    if let Some(packed) = &m.packed {
                        prop_assert!(packed.len() <= 4096 || packed.len() <= data.len());
                        let _ = unpack(packed);
                    }
                }
            }
        }
    }
}
