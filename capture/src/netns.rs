//! Entering a network namespace, and describing its interfaces from inside.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, so capture runs on a
//! thread of its own that enters the namespace, opens its socket there (the
//! socket stays bound to that namespace), and exits when the capture ends:
//! the thread is discarded rather than restored.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use portwarden_core::{Interface, LinkType};

const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_NONE: u16 = 0xFFFE;
const ARPHRD_RAWIP: u16 = 519;

/// Moves the calling thread into the namespace at `path`.
pub(crate) fn enter(path: &Path) -> io::Result<()> {
    let ns = File::open(path)?;
    // SAFETY: setns(2) on a valid fd; affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct ifreq`, with the union seen as `sockaddr.sa_family` + padding.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    family: u16,
    rest: [u8; 22],
}

/// Describes interface `index` of the calling thread's namespace; `is_loopback`
/// tells whether it is a loopback device.
pub(crate) fn describe(index: u32, probe_fd: libc::c_int) -> (Interface, bool) {
    let mut buf = [0 as libc::c_char; libc::IFNAMSIZ];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let named = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    let name = if named.is_null() {
        format!("if{index}")
    } else {
        // SAFETY: on success the buffer holds a NUL-terminated name.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    };
    let mut req = IfReq { name: buf, family: 0, rest: [0; 22] };
    // SAFETY: SIOCGIFHWADDR fills `req`, a valid ifreq.
    let ok = unsafe { libc::ioctl(probe_fd, libc::SIOCGIFHWADDR, &raw mut req) } >= 0;
    let hw = if ok { req.family } else { ARPHRD_ETHER };
    let link = match hw {
        ARPHRD_ETHER | ARPHRD_LOOPBACK => LinkType::Ethernet,
        ARPHRD_NONE | ARPHRD_RAWIP => LinkType::RawIp,
        other => LinkType::Other(other),
    };
    (Interface { index, name, link }, hw == ARPHRD_LOOPBACK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_described_from_the_current_namespace() {
        // SAFETY: a throwaway datagram socket for the ioctl.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: "lo" is a NUL-terminated string.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        let (iface, is_loopback) = describe(lo, fd);
        // SAFETY: closes the socket opened above.
        unsafe { libc::close(fd) };
        assert_eq!((iface.name.as_str(), iface.link, is_loopback), ("lo", LinkType::Ethernet, true));
    }
}
