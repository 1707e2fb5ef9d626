//! Classic BPF programs for the capture socket.
//!
//! Filter expressions use tcpdump's syntax and are compiled by libpcap's own
//! compiler (through the `pcap` crate), so a filter means exactly what it
//! means to tcpdump. The kernel runs the program on every frame before it
//! reaches the ring, so rejected frames cost no copy. The program's accept
//! value is the snap length, which is how the kernel learns to truncate.

use std::io;
use std::os::fd::RawFd;

use pcap::{Capture, Linktype};

const SOL_SOCKET: libc::c_int = libc::SOL_SOCKET;
const SO_ATTACH_FILTER: libc::c_int = 26;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;

/// A compiled classic BPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

/// `struct sock_filter`, with equality for tests.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// A filter expression libpcap could not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid capture filter `{expression}`: {message}")]
pub struct FilterError {
    /// The expression.
    pub expression: String,
    /// libpcap's explanation.
    pub message: String,
}

impl Program {
    /// Accepts every frame, cut at `snaplen`.
    pub fn accept_all(snaplen: u32) -> Program {
        Program { insns: vec![insn(RET_K, 0, 0, snaplen)] }
    }

    /// Compiles a tcpdump expression for Ethernet framing; accepted frames
    /// are cut at `snaplen`.
    pub fn compile(expression: &str, snaplen: u32) -> Result<Program, FilterError> {
        let error = |message: String| FilterError { expression: expression.to_owned(), message };
        let dead = Capture::dead(Linktype::ETHERNET).map_err(|e| error(e.to_string()))?;
        let program = dead.compile(expression, true).map_err(|e| error(e.to_string()))?;
        let mut insns = Vec::new();
        for instruction in program.get_instructions() {
            // The crate exposes instructions only as "code jt jf k".
            let text = instruction.to_string();
            let mut parts = text.split_whitespace().map(str::parse::<u64>);
            let mut next =
                || parts.next().and_then(Result::ok).ok_or_else(|| error(format!("unreadable instruction `{text}`")));
            let (code, jt, jf, k) = (next()?, next()?, next()?, next()?);
            let narrow = |v: u64| error(format!("instruction field {v} out of range in `{text}`"));
            let code = u16::try_from(code).map_err(|_| narrow(code))?;
            let k = u32::try_from(k).map_err(|_| narrow(k))?;
            // libpcap compiled for its own snaplen; accept with ours.
            let k = if code == RET_K && k != 0 { snaplen } else { k };
            insns.push(insn(
                code,
                u8::try_from(jt).map_err(|_| narrow(jt))?,
                u8::try_from(jf).map_err(|_| narrow(jf))?,
                k,
            ));
        }
        Ok(Program { insns })
    }

    /// The program for optional `expression`.
    pub fn for_filter(expression: Option<&str>, snaplen: u32) -> Result<Program, FilterError> {
        match expression.map(str::trim).filter(|e| !e.is_empty()) {
            Some(e) => Program::compile(e, snaplen),
            None => Ok(Program::accept_all(snaplen)),
        }
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// True for an empty program (never produced by this module).
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Attaches the program to a socket (SO_ATTACH_FILTER).
    pub(crate) fn attach(&self, fd: RawFd) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: u16::try_from(self.insns.len()).map_err(io::Error::other)?,
            // `Insn` has `sock_filter`'s layout (both repr(C), same fields).
            filter: self.insns.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        let len = libc::socklen_t::try_from(size_of::<libc::sock_fprog>()).map_err(io::Error::other)?;
        // SAFETY: `prog` points at `insns`, alive for the call; the kernel copies it.
        let ret = unsafe { libc::setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, (&raw const prog).cast(), len) };
        if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_expressions_compile_with_our_snaplen() {
        let p = Program::compile("tcp port 80", 262_144).expect("valid");
        assert!(p.len() > 4);
        assert!(p.insns.iter().any(|i| i.code == RET_K && i.k == 262_144));
        assert!(p.insns.iter().any(|i| i.code == RET_K && i.k == 0));
    }

    #[test]
    fn a_bad_expression_is_an_error_naming_it() {
        let err = Program::compile("tcp prot 80", 100).expect_err("typo");
        assert!(err.to_string().contains("tcp prot 80"), "{err}");
    }

    #[test]
    fn insn_has_the_kernel_layout() {
        assert_eq!(size_of::<Insn>(), size_of::<libc::sock_filter>());
        assert_eq!(std::mem::align_of::<Insn>(), std::mem::align_of::<libc::sock_filter>());
    }

    #[test]
    fn no_filter_accepts_all_at_snaplen() {
        assert_eq!(Program::for_filter(Some("  "), 96).expect("ok"), Program::accept_all(96));
    }
}
