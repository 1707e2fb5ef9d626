//! Progress for long CLI operations (the first inventory sync, a capture
//! to a file): one line on stderr, rewritten in place, shown only when
//! stderr is a terminal so scripts and logs stay clean.

use std::io::{IsTerminal, Write};

/// A progress line on stderr.
pub(crate) struct Progress {
    on: bool,
}

impl Progress {
    /// Progress on stderr, when it is a terminal.
    pub(crate) fn stderr() -> Progress {
        Progress { on: std::io::stderr().is_terminal() }
    }

    /// True when lines are shown.
    pub(crate) fn enabled(&self) -> bool {
        self.on
    }

    /// Replaces the line with `text`.
    pub(crate) fn show(&self, text: &str) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2Kportwarden: {text}");
            let _ = err.flush();
        }
    }

    /// Removes the line.
    pub(crate) fn clear(&self) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
