//! A thin safe layer over fanotify(7): one notification group, its marks,
//! its events and the answers to permission events.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One event: what happened (`FAN_*` bits), the file it happened to (an fd
/// the kernel opened for us, which reading does not notify), and the
/// process that did it (0 when outside the agent's PID namespace).
pub(crate) struct Event {
    pub(crate) mask: u64,
    pub(crate) file: Option<OwnedFd>,
    pub(crate) pid: i32,
}

/// A fanotify group of class `FAN_CLASS_CONTENT`: it may answer permission
/// events. Closing it allows every event it still holds.
pub(crate) struct Group {
    fd: OwnedFd,
}

impl Group {
    /// A new group. Needs `CAP_SYS_ADMIN`.
    pub(crate) fn new() -> io::Result<Group> {
        // SAFETY: fanotify_init(2) with constant flags; the fd is owned below.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_UNLIMITED_QUEUE,
                (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nothing else owns.
        Ok(Group { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Adds `mask` to the marks on `path` (`flags`: `FAN_MARK_*` besides ADD).
    pub(crate) fn mark(&self, path: &Path, mask: u64) -> io::Result<()> {
        self.change(libc::FAN_MARK_ADD, path, mask)
    }

    /// Removes `mask` from the marks on `path`.
    pub(crate) fn unmark(&self, path: &Path, mask: u64) -> io::Result<()> {
        self.change(libc::FAN_MARK_REMOVE, path, mask)
    }

    fn change(&self, how: libc::c_uint, path: &Path, mask: u64) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: a valid group fd and a NUL-terminated path.
        let rc = unsafe { libc::fanotify_mark(self.fd.as_raw_fd(), how, mask, libc::AT_FDCWD, c.as_ptr()) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The raw fd, to poll.
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the events ready now (blocks when there are none).
    pub(crate) fn read(&self, buf: &mut [u64]) -> io::Result<Vec<Event>> {
        let bytes = std::mem::size_of_val(buf);
        // SAFETY: reads at most `bytes` into `buf`, which is 8-aligned as
        // fanotify_event_metadata wants.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), bytes) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the first `n` bytes were written by the kernel.
        let data = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let header = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut events = Vec::new();
        let mut at = 0;
        while at + header <= n {
            // SAFETY: `header` bytes are in range; read unaligned to be safe.
            let meta: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(data[at..].as_ptr().cast()) };
            let len = meta.event_len as usize;
            if meta.vers != libc::FANOTIFY_METADATA_VERSION || len < header || at + len > n {
                // Not a layout this build knows: close what we can and stop.
                if meta.fd >= 0 {
                    // SAFETY: the kernel gave us this fd.
                    drop(unsafe { OwnedFd::from_raw_fd(meta.fd) });
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, "unknown fanotify event layout"));
            }
            // SAFETY: the kernel opened this fd for us; we own it now.
            let file = (meta.fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(meta.fd) });
            events.push(Event { mask: meta.mask, file, pid: meta.pid });
            at += len;
        }
        Ok(events)
    }
}

/// Allows the permission event whose fd is `file`, through group fd `group`.
pub(crate) fn allow(group: RawFd, file: &OwnedFd) -> io::Result<()> {
    let answer = libc::fanotify_response { fd: file.as_raw_fd(), response: libc::FAN_ALLOW };
    let size = std::mem::size_of::<libc::fanotify_response>();
    // SAFETY: writes one fanotify_response to the group fd.
    let n = unsafe { libc::write(group, (&raw const answer).cast(), size) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The (device, inode) of an open file.
pub(crate) fn identity(file: &OwnedFd) -> io::Result<(u64, u64)> {
    let meta = stat(file)?;
    Ok((meta.st_dev, meta.st_ino))
}

/// fstat(2).
pub(crate) fn stat(file: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: a zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and out-pointer.
    if unsafe { libc::fstat(file.as_raw_fd(), &raw mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Reads up to `buf.len()` bytes at offset 0, without moving the file's
/// offset (the runtime reading the same open file is unaffected).
pub(crate) fn read_start(file: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into `buf`, within its length.
    let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}
