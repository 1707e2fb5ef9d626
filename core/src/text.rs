//! Turning bytes into messages: lossy UTF-8, size limits, and partial lines
//! put back together. Shared by every [`LogSource`](crate::LogSource), so
//! that all of them cut and decode the same way.

/// Decodes `bytes` as UTF-8, replacing invalid sequences, and strips one
/// trailing `\r` (TTY output and CRLF senders).
pub fn lossy(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// Accumulates the pieces of one logical line up to a size limit; past it,
/// the rest is dropped and the line is marked truncated.
#[derive(Debug, Default)]
pub struct Assembler {
    buf: Vec<u8>,
    truncated: bool,
    started: bool,
}

impl Assembler {
    /// True while a line is being put together.
    pub fn is_open(&self) -> bool {
        self.started
    }

    /// Adds a piece, keeping at most `max` bytes in all.
    pub fn push(&mut self, piece: &[u8], max: usize) {
        self.started = true;
        let room = max.saturating_sub(self.buf.len());
        if piece.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// The line so far, and whether it was cut; resets for the next line.
    pub fn take(&mut self) -> (String, bool) {
        let message = lossy(&self.buf);
        let truncated = self.truncated;
        self.buf.clear();
        self.truncated = false;
        self.started = false;
        (message, truncated)
    }
}

/// Cuts `bytes` to `max` and decodes it: (message, truncated).
pub fn limited(bytes: &[u8], max: usize) -> (String, bool) {
    if bytes.len() > max { (lossy(&bytes[..max]), true) } else { (lossy(bytes), false) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_joins_and_truncates() {
        let mut a = Assembler::default();
        a.push(b"abc", 5);
        a.push(b"def", 5);
        assert_eq!(a.take(), ("abcde".to_owned(), true));
        assert!(!a.is_open());
        a.push(b"x\r", 5);
        assert_eq!(a.take(), ("x".to_owned(), false));
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
    }
}
