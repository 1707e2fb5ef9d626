//! The local handover to Suricata: every mirrored frame, as a pcap record,
//! into a named pipe that Suricata reads with `-r` (its pcap-file mode).
//!
//! Why a pipe and not an interface: handing frames to Suricata's capture
//! ring through a veth pair cost the agent six times Suricata's own CPU per
//! frame, almost all of it the kernel's transmit and receive path for each
//! frame; a pcap stream costs a copy into a buffer and one `write` per few
//! hundred frames. It also needs no network namespace, interfaces or
//! `CAP_NET_ADMIN`, so it works where those are not granted (a Fargate
//! task), and stopping is exact: the pipe's end is the end of the input, so
//! Suricata inspects everything (open flows, unacknowledged data) and exits
//! by itself, as it does on a pcap file.
//!
//! Suricata's clock in this mode is the packets' own time, so flows time out
//! only as packets come. When nothing was written for a second the writer
//! sends a heartbeat (an ARP probe, which makes no flow and no event) with
//! the current time: idle flows still end, and their alerts come, within the
//! flow timeouts.
//!
//! Capture threads never block on the pipe: they append whole records to a
//! bounded buffer that a writer thread empties into the pipe. When the
//! buffer is full the frame is dropped and counted; while nothing reads the
//! pipe, frames are counted as the gap.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::frame;
use crate::mirror::MirrorStats;

/// Bytes of records waiting for the writer, at most (plus the pipe's own
/// capacity, [`PIPE_CAPACITY`]): about 15 ms at 1 Gbit/s.
const BUFFER_LIMIT: usize = 2 << 20;
/// The pipe's capacity, asked of the kernel.
pub(crate) const PIPE_CAPACITY: i32 = 1 << 20;
/// Idle time after which a heartbeat moves Suricata's clock.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often a writer with no reader tries to open the pipe.
const RETRY_OPEN: Duration = Duration::from_millis(100);
/// How long the stop waits for a reader to take what is still buffered.
const FINISH_LIMIT: Duration = Duration::from_secs(10);
/// pcap's record header: seconds, nanoseconds, captured and original length.
const RECORD_HEADER: usize = 16;

/// Makes sure a named pipe (mode 0600) is at `path`. One already there is
/// kept, so a reader waiting on it (an external Suricata) stays connected;
/// anything else there is replaced.
pub(crate) fn ensure_fifo(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel for a pipe of `bytes`; the default stays on failure.
pub(crate) fn set_capacity(fd: &impl AsRawFd, bytes: i32) {
    // SAFETY: F_SETPIPE_SZ on a descriptor we own; failure changes nothing.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) } < 0 {
        debug!(error = %io::Error::last_os_error(), "pipe keeps the kernel's default size");
    }
}

/// One frame for [`PcapPipe::append`].
pub(crate) struct Record<'a> {
    /// Capture time, nanoseconds since the epoch.
    pub timestamp_ns: u64,
    /// Bytes the capture cut off the frame's end.
    pub cut: u32,
    /// The mirror's head (MAC addresses and tags).
    pub head: &'a [u8],
    /// The rest of the frame.
    pub rest: &'a [u8],
    /// Its transport checksum was left to offload: fill it in.
    pub checksum_pending: bool,
}

/// The pcap stream into the pipe, shared by every capture's sink.
pub struct PcapPipe {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: records, a detach or the finish.
    wake: Condvar,
    /// Wakes whoever waits for a detach.
    detached: Condvar,
    stats: Arc<MirrorStats>,
}

#[derive(Default)]
struct State {
    /// Whole records, for the writer.
    pending: Vec<u8>,
    pending_frames: u64,
    /// A reader has the pipe open and the stream's header was written.
    attached: bool,
    /// Drop the current reader (it exited) before a new one opens the pipe.
    detach: bool,
    /// Write what is pending, then close: the end of Suricata's input.
    finish: bool,
}

impl PcapPipe {
    /// Makes the pipe at `path` and starts its writer, which waits for a
    /// reader.
    pub fn create(path: PathBuf, stats: Arc<MirrorStats>) -> crate::Result<Arc<Self>> {
        ensure_fifo(&path).map_err(|source| crate::Error::MirrorPipe { path: path.clone(), source })?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            detached: Condvar::new(),
            stats,
        });
        let writer = {
            let (shared, pipe) = (Arc::clone(&shared), path.clone());
            std::thread::Builder::new()
                .name("pw-mirror".into())
                .spawn(move || write_loop(&shared, &pipe))
                .map_err(|source| crate::Error::MirrorPipe { path: path.clone(), source })?
        };
        info!(path = %path.display(), "mirror writing pcap to a pipe for Suricata");
        Ok(Arc::new(Self { shared, writer: Mutex::new(Some(writer)), path }))
    }

    /// The pipe's path, which Suricata reads (`-r`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends frames: each goes whole into the buffer, or is counted as
    /// dropped (buffer full) or as the gap (nothing reads the pipe).
    pub(crate) fn append<'a>(&self, records: impl ExactSizeIterator<Item = Record<'a>>) {
        let stats = &self.shared.stats;
        let count = records.len() as u64;
        let mut state = self.shared.lock();
        if !state.attached {
            drop(state);
            stats.gap_frames.fetch_add(count, Ordering::Relaxed);
            return;
        }
        let was_empty = state.pending.is_empty();
        let (mut sent, mut dropped) = (0, 0);
        for r in records {
            let caplen = r.head.len() + r.rest.len();
            if state.pending.len() + RECORD_HEADER + caplen > BUFFER_LIMIT {
                dropped += 1;
                continue;
            }
            let buf = &mut state.pending;
            push_header(buf, r.timestamp_ns, caplen as u32, caplen as u32 + r.cut);
            let start = buf.len();
            buf.extend_from_slice(r.head);
            buf.extend_from_slice(r.rest);
            if r.checksum_pending && r.cut == 0 {
                frame::complete_checksum(&mut buf[start..]);
            }
            sent += 1;
        }
        state.pending_frames += sent;
        drop(state);
        stats.sent.fetch_add(sent, Ordering::Relaxed);
        stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        if was_empty && sent > 0 {
            self.shared.wake.notify_one();
        }
    }

    /// The mirror's counters, which the pipe keeps.
    pub fn stats(&self) -> &MirrorStats {
        &self.shared.stats
    }

    /// Whether a reader has the pipe open.
    pub fn attached(&self) -> bool {
        self.shared.lock().attached
    }

    /// Lets go of the current reader (which has exited) and waits until the
    /// writer has closed its end, so a new reader starts a fresh stream. What
    /// was buffered for the old reader counts as the gap.
    pub fn detach(&self) {
        let mut state = self.shared.lock();
        state.detach = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + Duration::from_secs(2);
        while state.detach {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.shared.detached.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Ends the stream: what is buffered is written (for up to
    /// 10 s while a reader takes it), then the pipe is closed and
    /// its reader sees the end of its input. Blocks until done.
    pub fn finish(&self) {
        self.shared.lock().finish = true;
        self.shared.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for PcapPipe {
    fn drop(&mut self) {
        self.shared.lock().finish = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_attached(&self, state: &mut State, attached: bool) {
        state.attached = attached;
        self.stats.receiver_up.store(attached, Ordering::Release);
    }
}

fn push_header(buf: &mut Vec<u8>, timestamp_ns: u64, caplen: u32, len: u32) {
    buf.extend_from_slice(&((timestamp_ns / 1_000_000_000) as u32).to_ne_bytes());
    buf.extend_from_slice(&((timestamp_ns % 1_000_000_000) as u32).to_ne_bytes());
    buf.extend_from_slice(&caplen.to_ne_bytes());
    buf.extend_from_slice(&len.to_ne_bytes());
}

/// pcap's file header: nanosecond timestamps, Ethernet, room for any frame.
fn stream_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[..4].copy_from_slice(&0xa1b2_3c4d_u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    h[16..20].copy_from_slice(&262_144u32.to_ne_bytes());
    h[20..24].copy_from_slice(&1u32.to_ne_bytes());
    h
}

/// A broadcast ARP probe stamped now: it moves Suricata's clock and starts
/// no flow.
fn heartbeat(buf: &mut Vec<u8>) {
    const ARP_PROBE: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0, 0x08, 0x06, // Ethernet
        0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4, request
        0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, // sender: no address yet
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // target
    ];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    push_header(buf, now, ARP_PROBE.len() as u32, ARP_PROBE.len() as u32);
    buf.extend_from_slice(&ARP_PROBE);
}

/// Opens the pipe for writing without waiting: `ENXIO` while no reader has
/// it open.
fn open_writer(path: &Path) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: a valid C string; the fd is wrapped at once.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_capacity(&fd, PIPE_CAPACITY);
    Ok(fd)
}

/// Writes all of `bytes` to the non-blocking `fd`, waiting for room while
/// `keep_waiting` says so. Err: the reader is gone, or the wait was given up.
fn write_all(fd: &OwnedFd, mut bytes: &[u8], keep_waiting: impl Fn() -> bool) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                if !keep_waiting() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "reader stopped taking data"));
                }
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&raw mut pfd, 1, 100) };
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// The writer thread: waits for a reader, writes the stream's header, then
/// moves the buffer into the pipe as records come, with heartbeats when idle.
fn write_loop(shared: &Shared, path: &Path) {
    let mut fd: Option<OwnedFd> = None;
    let mut out = Vec::new();
    let mut last_write = Instant::now();
    let mut finish_deadline: Option<Instant> = None;
    let mut open_error_logged = false;
    loop {
        let mut state = shared.lock();
        loop {
            if state.detach || state.finish || (fd.is_some() && !state.pending.is_empty()) {
                break;
            }
            let wait = match fd {
                None => RETRY_OPEN,
                Some(_) => HEARTBEAT.saturating_sub(last_write.elapsed()),
            };
            if wait.is_zero() {
                break;
            }
            state = shared.wake.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
            if fd.is_none() {
                break;
            }
        }
        if state.detach {
            fd = None;
            shared.set_attached(&mut state, false);
            shared.stats.gap_frames.fetch_add(std::mem::take(&mut state.pending_frames), Ordering::Relaxed);
            state.pending.clear();
            state.detach = false;
            shared.detached.notify_all();
            continue;
        }
        let finishing = state.finish;
        let Some(writer) = &fd else {
            drop(state);
            if finishing {
                return;
            }
            match open_writer(path) {
                Ok(opened) => {
                    if write_all(&opened, &stream_header(), || true).is_ok() {
                        info!(path = %path.display(), "Suricata reads the mirror");
                        fd = Some(opened);
                        last_write = Instant::now();
                        open_error_logged = false;
                        shared.set_attached(&mut shared.lock(), true);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => {
                    if !open_error_logged {
                        warn!(path = %path.display(), error = %e, "cannot open the mirror pipe");
                        open_error_logged = true;
                    }
                    std::thread::sleep(RETRY_OPEN);
                }
            }
            continue;
        };
        std::mem::swap(&mut state.pending, &mut out);
        let frames = std::mem::take(&mut state.pending_frames);
        drop(state);
        if out.is_empty() {
            if finishing {
                // Closing the pipe ends Suricata's input.
                return;
            }
            heartbeat(&mut out);
        }
        if finishing {
            finish_deadline.get_or_insert_with(|| Instant::now() + FINISH_LIMIT);
        }
        let keep_waiting = || {
            let state = shared.lock();
            !state.detach && finish_deadline.is_none_or(|d| Instant::now() < d)
        };
        match write_all(writer, &out, keep_waiting) {
            Ok(()) => last_write = Instant::now(),
            Err(e) => {
                debug!(error = %e, "mirror pipe write ended");
                fd = None;
                let mut state = shared.lock();
                shared.set_attached(&mut state, false);
                // Frames the reader will never see: a restart's gap.
                shared.stats.gap_frames.fetch_add(frames, Ordering::Relaxed);
                if finishing {
                    warn!(frames, "Suricata did not read the last mirrored frames before the stop");
                    return;
                }
            }
        }
        out.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn record<'a>(head: &'a [u8], rest: &'a [u8]) -> Record<'a> {
        Record { timestamp_ns: 1_500_000_000_123, cut: 0, head, rest, checksum_pending: false }
    }

    /// A pipe of the test's own: its directory, path, counters and writer.
    fn open_pipe(name: &str) -> (PathBuf, PathBuf, Arc<MirrorStats>, Arc<PcapPipe>) {
        let dir = std::env::temp_dir().join(format!("pw-pipe-{name}-{}", std::process::id()));
        let path = dir.join("mirror.pcap");
        let stats = Arc::new(MirrorStats::default());
        let pipe = PcapPipe::create(path.clone(), Arc::clone(&stats)).unwrap();
        (dir, path, stats, pipe)
    }

    fn wait_attached(pipe: &PcapPipe) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pipe.attached() {
            assert!(Instant::now() < deadline, "the writer never saw the reader");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_reader_gets_the_header_records_and_the_end() {
        let (dir, path, stats, pipe) = open_pipe("records");
        // Nothing reads yet: the frame is the gap's.
        pipe.append([record(b"head", b"rest")].into_iter());
        assert_eq!(stats.gap_frames.load(Ordering::Relaxed), 1);
        let reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::fs::File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        });
        wait_attached(&pipe);
        pipe.append([record(&[1; 14], &[2; 6]), record(&[3; 16], &[])].into_iter());
        pipe.finish();
        let bytes = reader.join().unwrap();
        assert_eq!(&bytes[..24], &stream_header());
        assert_eq!(u32::from_ne_bytes(bytes[24..28].try_into().unwrap()), 1500);
        assert_eq!(u32::from_ne_bytes(bytes[28..32].try_into().unwrap()), 123);
        assert_eq!(u32::from_ne_bytes(bytes[32..36].try_into().unwrap()), 20);
        assert_eq!(&bytes[40..60], [[1u8; 14].as_slice(), &[2; 6]].concat());
        assert_eq!(u32::from_ne_bytes(bytes[68..72].try_into().unwrap()), 16);
        assert_eq!(bytes.len(), 24 + 16 + 20 + 16 + 16);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_buffer_drops_whole_frames() {
        let (dir, path, stats, pipe) = open_pipe("full");
        // A reader that opens the pipe and reads nothing.
        let reader = std::fs::File::open(&path).unwrap();
        wait_attached(&pipe);
        let big = vec![0u8; 60_000];
        for _ in 0..100 {
            pipe.append((0..10).map(|_| record(&[0; 14], &big)));
        }
        let (sent, dropped) = (stats.sent.load(Ordering::Relaxed), stats.dropped.load(Ordering::Relaxed));
        assert_eq!(sent + dropped, 1000);
        assert!(dropped > 0 && sent > 0, "sent {sent}, dropped {dropped}");
        // The reader goes away: the writer lets go and counts the rest.
        drop(reader);
        pipe.detach();
        assert!(!pipe.attached());
        pipe.finish();
        let _ = std::fs::remove_dir_all(dir);
    }
}
