//! A bounded msgpack reader: values borrow from the buffer, nothing is
//! allocated from a length the peer claims before the bytes are there, and
//! nesting is limited, so a hostile frame costs at most its own size.

/// A decoded value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    /// nil.
    Nil,
    /// true or false.
    Bool(bool),
    /// Any integer that fits.
    Int(i128),
    /// float 32 or 64.
    Float(f64),
    /// str (bytes as sent; usually UTF-8).
    Str(&'a [u8]),
    /// bin.
    Bin(&'a [u8]),
    /// array.
    Array(Vec<Value<'a>>),
    /// map, in wire order.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// ext: type and data.
    Ext(i8, &'a [u8]),
}

/// Why a value could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The buffer ends before the value does.
    Incomplete,
    /// Not msgpack (or nested too deep).
    Invalid(&'static str),
}

const MAX_DEPTH: usize = 32;

impl<'a> Value<'a> {
    /// The string, if this is a str or bin holding UTF-8.
    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self {
            Value::Str(s) | Value::Bin(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }

    /// The value under `key` in a map.
    pub(crate) fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads one value from the start of `buf`: the value and the bytes it used.
pub(crate) fn read(buf: &[u8]) -> Result<(Value<'_>, usize), DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Incomplete)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Incomplete)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, DecodeError> {
        usize::try_from(self.uint(n)?).map_err(|_| DecodeError::Invalid("length"))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::Invalid("nested too deep"));
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::Int(i128::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => Value::Str(self.take(usize::from(marker & 0x1f))?),
            0xc0 => Value::Nil,
            0xc1 => return Err(DecodeError::Invalid("reserved marker 0xc1")),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (marker - 0xc4))?;
                Value::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (marker - 0xc7))?;
                let ty = self.take(1)?[0] as i8;
                Value::Ext(ty, self.take(n)?)
            }
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Value::Int(i128::from(self.uint(1 << (marker - 0xcc))?)),
            0xd0 => Value::Int(i128::from(self.take(1)?[0] as i8)),
            0xd1 => Value::Int(i128::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i128::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(i128::from(self.uint(8)? as i64)),
            0xd4..=0xd8 => {
                let ty = self.take(1)?[0] as i8;
                Value::Ext(ty, self.take(1 << (marker - 0xd4))?)
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (marker - 0xd9))?;
                Value::Str(self.take(n)?)
            }
            0xdc | 0xdd => {
                let n = self.len(if marker == 0xdc { 2 } else { 4 })?;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.len(if marker == 0xde { 2 } else { 4 })?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(i128::from(marker as i8)),
        })
    }

    /// Each element takes at least one byte: a count beyond what is left
    /// is not yet there, and nothing is reserved for it.
    fn array(&mut self, n: usize, depth: usize) -> Result<Value<'a>, DecodeError> {
        if n > self.buf.len() - self.pos {
            return Err(DecodeError::Incomplete);
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value<'a>, DecodeError> {
        if n.saturating_mul(2) > self.buf.len() - self.pos {
            return Err(DecodeError::Incomplete);
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_what_rmp_writes() {
        let mut buf = Vec::new();
        rmp::encode::write_array_len(&mut buf, 4).unwrap();
        rmp::encode::write_str(&mut buf, "tag").unwrap();
        rmp::encode::write_sint(&mut buf, -5).unwrap();
        rmp::encode::write_map_len(&mut buf, 1).unwrap();
        rmp::encode::write_str(&mut buf, "k").unwrap();
        rmp::encode::write_bin(&mut buf, b"v").unwrap();
        rmp::encode::write_ext_meta(&mut buf, 8, 0).unwrap();
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        let (v, used) = read(&buf).unwrap();
        assert_eq!(used, buf.len());
        let Value::Array(items) = v else { panic!() };
        assert_eq!(items[0].as_str(), Some("tag"));
        assert_eq!(items[1], Value::Int(-5));
        assert_eq!(items[2].get("k").and_then(Value::as_str), Some("v"));
        assert_eq!(items[3], Value::Ext(0, &[0, 0, 0, 1, 0, 0, 0, 2]));
        for cut in 0..buf.len() {
            assert_eq!(read(&buf[..cut]), Err(DecodeError::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_lengths_are_not_trusted() {
        // An array claiming 2^32-1 elements in 5 bytes: incomplete, no allocation.
        assert_eq!(read(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Err(DecodeError::Incomplete));
        assert_eq!(read(&[0xc1]), Err(DecodeError::Invalid("reserved marker 0xc1")));
        let deep = vec![0x91u8; 100];
        assert!(matches!(read(&deep), Err(DecodeError::Invalid(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((_, used)) = read(&data) {
                prop_assert!(used <= data.len());
            }
        }
    }
}
