//! An AF_PACKET socket with a TPACKET_V3 receive ring.
//!
//! The kernel writes frames into fixed-size blocks of a memory-mapped ring
//! and hands a block to user space when it is full or when its timeout
//! expires. Reading a block costs no system call; only an idle ring needs a
//! `poll`. The socket is created with protocol 0, so it receives nothing
//! until the filter is attached and [`Ring::start`] binds it: no frame that
//! fails the filter is ever queued (the race libpcap also closes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::bpf::Program;
use crate::pcapng::COPY_BELOW;

pub(crate) const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
pub(crate) const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The transport checksum is left to offload (`CHECKSUM_PARTIAL`).
pub(crate) const TP_STATUS_CSUMNOTREADY: u32 = 0x8;
/// The frame had an 802.1Q tag, taken off into `vlan_tci`.
pub(crate) const TP_STATUS_VLAN_VALID: u32 = 0x10;
/// `vlan_tpid` is set (else the tag was 0x8100).
pub(crate) const TP_STATUS_VLAN_TPID_VALID: u32 = 0x40;
pub(crate) const ETH_P_ALL: u16 = 0x0003;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where `sockaddr_ll` starts.
const SOCKADDR_OFFSET: usize = 48;
/// Frame slots are only bookkeeping in V3 (frames are packed); any aligned
/// size that divides the block works.
const FRAME_SIZE: u32 = 2048;

/// `struct tpacket_req3`.
#[repr(C)]
struct Req3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// `struct tpacket_block_desc` with its `tpacket_hdr_v1`.
#[repr(C)]
struct BlockDesc {
    version: u32,
    offset_to_priv: u32,
    block_status: AtomicU32,
    num_pkts: u32,
    offset_to_first_pkt: u32,
    blk_len: u32,
    seq_num: u64,
    ts_first: [u32; 2],
    ts_last: [u32; 2],
}

/// `struct tpacket3_hdr`.
#[repr(C)]
struct Hdr3 {
    next_offset: u32,
    sec: u32,
    nsec: u32,
    snaplen: u32,
    len: u32,
    status: u32,
    mac: u16,
    net: u16,
    rxhash: u32,
    vlan_tci: u32,
    vlan_tpid: u16,
    padding: u16,
    padding2: [u8; 8],
}

/// `struct tpacket_stats_v3`.
#[repr(C)]
#[derive(Default)]
struct StatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

/// One frame as the kernel delivered it, borrowed from the ring.
pub(crate) struct Frame<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) original_len: u32,
    pub(crate) timestamp_ns: u64,
    pub(crate) ifindex: u32,
    /// `sll_pkttype`: PACKET_HOST, PACKET_OUTGOING, ...
    pub(crate) pkttype: u8,
    /// The tag the kernel took off, if any.
    pub(crate) vlan: Option<portwarden_core::VlanTag>,
    /// The checksum was offloaded and is not filled in yet.
    pub(crate) checksum_pending: bool,
}

/// The tag the kernel took off a frame, from its header.
#[inline]
fn vlan_of(h: &Hdr3) -> Option<portwarden_core::VlanTag> {
    if h.status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if h.status & TP_STATUS_VLAN_TPID_VALID != 0 { h.vlan_tpid } else { 0x8100 };
    Some(portwarden_core::VlanTag { tpid, tci: h.vlan_tci as u16 })
}

/// Ring geometry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) block_size: u32,
    pub(crate) block_nr: u32,
    pub(crate) timeout: Duration,
}

impl Geometry {
    /// The ring's size in bytes.
    pub(crate) fn bytes(self) -> u64 {
        u64::from(self.block_size) * u64::from(self.block_nr)
    }

    /// Blocks large enough for one `snaplen` frame and, in a bigger ring,
    /// an eighth of it; as many as fit in `ring_bytes` (at least 2).
    ///
    /// Each block costs a wake-up and a round through the sinks: blocks
    /// sized by the snaplen alone (128 KiB at the default) made a 4 MiB
    /// ring cost half as much again per 512-byte frame as 512 KiB blocks,
    /// and drop frames at the generator's top speed (`bench/capture.py`).
    pub(crate) fn for_snaplen(snaplen: u32, ring_bytes: usize, timeout: Duration) -> Geometry {
        let share = u32::try_from(ring_bytes / BLOCKS_PER_RING).unwrap_or(u32::MAX).min(MAX_SHARED_BLOCK);
        let need = snaplen.saturating_add(256).max(1 << 16).max(share);
        let block_size = need.checked_next_power_of_two().unwrap_or(1 << 31);
        let block_nr = u32::try_from(ring_bytes / block_size as usize).unwrap_or(u32::MAX).max(2);
        Geometry { block_size, block_nr, timeout }
    }
}

/// How many blocks a ring has at least, where the snaplen allows: room
/// for the kernel to go on filling while the reader holds a few.
const BLOCKS_PER_RING: usize = 8;

/// Blocks are not made bigger than this for the ring's sake: the kernel
/// allocates each block in one piece, 4 MiB at most.
const MAX_SHARED_BLOCK: u32 = 4 << 20;

/// A receive ring bound to one network namespace (the one the creating
/// thread was in).
pub(crate) struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    geometry: Geometry,
    next_block: u32,
}

// The mapping is only touched through `&mut self`.
unsafe impl Send for Ring {}

pub(crate) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

pub(crate) fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(io::Error::other)?;
    // SAFETY: `value` points to a live `T` of `len` bytes.
    check(unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), len) })
}

impl Ring {
    /// Creates the socket (receiving nothing yet), attaches `filter`, and
    /// maps the ring.
    pub(crate) fn new(geometry: Geometry, filter: &Program) -> io::Result<Ring> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        filter.attach(fd.as_raw_fd())?;
        let req = Req3 {
            block_size: geometry.block_size,
            block_nr: geometry.block_nr,
            frame_size: FRAME_SIZE,
            frame_nr: geometry.block_size / FRAME_SIZE * geometry.block_nr,
            retire_blk_tov: u32::try_from(geometry.timeout.as_millis()).unwrap_or(u32::MAX).max(1),
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        setsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_RX_RING, &req)?;
        let map_len = geometry.block_size as usize * geometry.block_nr as usize;
        // Not MAP_LOCKED: the ring's pages are the kernel's and never
        // swapped, and the kernel maps every one of them here anyway;
        // locking only added a walk over the whole ring to every attach.
        // SAFETY: maps the ring the kernel just allocated for this fd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Ring { fd, map, map_len, geometry, next_block: 0 })
    }

    /// Binds to every interface of the namespace: frames start arriving.
    pub(crate) fn start(&self) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).map_err(io::Error::other)?;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = 0;
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).map_err(io::Error::other)?;
        // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
        check(unsafe { libc::bind(self.fd.as_raw_fd(), (&raw const addr).cast(), len) })
    }

    /// How many blocks the ring has.
    pub(crate) fn blocks(&self) -> u32 {
        self.geometry.block_nr
    }

    /// The block retire timeout.
    pub(crate) fn timeout(&self) -> Duration {
        self.geometry.timeout
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn block(&self, index: u32) -> *mut BlockDesc {
        let offset = index as usize * self.geometry.block_size as usize;
        // SAFETY: `index < block_nr`, so the offset is inside the mapping.
        unsafe { self.map.as_ptr().add(offset).cast::<BlockDesc>() }
    }

    /// Walks the next ready block, passing each frame and its offset in the
    /// block's frame area to `each`, and returns that area, which goes back to the
    /// kernel when the returned guard drops. `None` when no block is ready.
    pub(crate) fn next_block(&mut self, mut each: impl FnMut(Frame<'_>, usize)) -> Option<Block<'_>> {
        let desc = self.block(self.next_block);
        // SAFETY: the descriptor is inside the mapping; its status is shared
        // with the kernel, so it is read atomically with acquire ordering.
        let status = unsafe { &(*desc).block_status };
        if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return None;
        }
        let block_len = self.geometry.block_size as usize;
        // The first and last frames' times. (The descriptor's own first
        // time is when the block was opened, which can be long before its
        // first frame.)
        let (mut first_ns, mut last_ns) = (None, 0);
        // SAFETY: the kernel handed this block over (TP_STATUS_USER); until
        // the guard gives it back, it does not write to it.
        let data = unsafe {
            let base = desc.cast::<u8>();
            // Bounds are checked on offsets before any pointer is formed, so
            // a bad descriptor cannot lead outside the block. Frames (and
            // the returned slice) start after the block descriptor, which the
            // guard writes when it hands the block back.
            let first = ((*desc).offset_to_first_pkt as usize).clamp(size_of::<BlockDesc>(), block_len);
            let count = (*desc).num_pkts;
            let mut at = first;
            // Every line up to here has been asked for.
            let mut fetched = first;
            // The furthest frame start whose head lines have been asked for.
            let mut heads_fetched = first;
            for _ in 0..count {
                if at + SOCKADDR_OFFSET + size_of::<libc::sockaddr_ll>() > block_len {
                    break;
                }
                let hdr = base.add(at);
                let h = &*hdr.cast::<Hdr3>();
                // The kernel wrote these frames from another core, so each
                // line is a cache miss: ask for lines ahead now, so their
                // transfers overlap this frame's work.
                let size = h.next_offset as usize;
                if (h.snaplen as usize) < COPY_BELOW {
                    // Frames pcapng copies are read whole: every line,
                    // some frames ahead.
                    let to = (at + PREFETCH_AHEAD).min(block_len);
                    prefetch_lines(base, fetched.max(at), to);
                    fetched = fetched.max(to);
                } else {
                    // A frame written in place is never read past its
                    // headers: ask only for the head lines of the next
                    // frames, guessing they are as long as this one (a
                    // wrong guess costs a useless prefetch), so the walk
                    // does not wait on each header in turn.
                    for k in 1..=HEADS_AHEAD {
                        let next = at.saturating_add(k * size);
                        if next <= heads_fetched || next >= block_len {
                            continue;
                        }
                        prefetch_lines(base, next.max(fetched), next.saturating_add(HEAD_LINES).min(block_len));
                        heads_fetched = next;
                    }
                }
                let sll = &*hdr.add(SOCKADDR_OFFSET).cast::<libc::sockaddr_ll>();
                let data_at = at + h.mac as usize;
                let data_len = h.snaplen as usize;
                if data_at.checked_add(data_len).is_some_and(|end| end <= block_len) {
                    let timestamp_ns = u64::from(h.sec) * 1_000_000_000 + u64::from(h.nsec);
                    first_ns.get_or_insert(timestamp_ns);
                    last_ns = timestamp_ns;
                    let frame = Frame {
                        data: std::slice::from_raw_parts(base.add(data_at), data_len),
                        original_len: h.len,
                        timestamp_ns,
                        ifindex: u32::try_from(sll.sll_ifindex).unwrap_or(0),
                        pkttype: sll.sll_pkttype,
                        vlan: vlan_of(h),
                        checksum_pending: h.status & TP_STATUS_CSUMNOTREADY != 0,
                    };
                    each(frame, data_at - first);
                }
                if h.next_offset == 0 {
                    break;
                }
                at += h.next_offset as usize;
            }
            std::slice::from_raw_parts(base.add(first).cast_const(), block_len - first)
        };
        let span = Duration::from_nanos(last_ns.saturating_sub(first_ns.unwrap_or(last_ns)));
        // SAFETY: as above; the kernel wrote the length before handing the block over.
        let filled = (unsafe { (*desc).blk_len } as usize).min(block_len);
        self.next_block = (self.next_block + 1) % self.geometry.block_nr;
        Some(Block { data, status, span, last_ns, filled })
    }

    /// Kernel counters since the last call (reading resets them):
    /// (frames seen, frames dropped).
    pub(crate) fn take_stats(&self) -> io::Result<(u64, u64)> {
        let mut stats = StatsV3::default();
        let mut len = libc::socklen_t::try_from(size_of::<StatsV3>()).map_err(io::Error::other)?;
        // SAFETY: `stats` is a writable StatsV3 of `len` bytes.
        check(unsafe {
            libc::getsockopt(self.fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS, (&raw mut stats).cast(), &raw mut len)
        })?;
        Ok((u64::from(stats.packets), u64::from(stats.drops)))
    }
}

/// A ring block lent to user space; dropping it hands it back to the kernel.
pub(crate) struct Block<'a> {
    data: &'a [u8],
    status: &'a AtomicU32,
    span: Duration,
    last_ns: u64,
    filled: usize,
}

impl Block<'_> {
    /// The block's frame area; frame offsets from `next_block` index it.
    pub(crate) fn data(&self) -> &[u8] {
        self.data
    }

    /// Time from its first frame to its last: at most how long the block
    /// held the ring (until filled, or retired by its timeout).
    pub(crate) fn span(&self) -> Duration {
        self.span
    }

    /// Its last frame's timestamp (0 for a block without frames).
    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns
    }

    /// Bytes of the block its frames fill.
    pub(crate) fn filled(&self) -> usize {
        self.filled
    }
}

impl Drop for Block<'_> {
    fn drop(&mut self) {
        self.status.store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// How far ahead of the frame being read every line is requested: 4 KiB
/// (about 25 small frames) cut the ring walk's CPU by a tenth at 100 k
/// frames/s compared with 1 KiB, one line per frame; 8 KiB and more did
/// no better.
const PREFETCH_AHEAD: usize = 4096;

/// How much of a frame written in place is prefetched: ring header,
/// address, and the first bytes of the packet (what decoders read). Its
/// other lines are not: pcapng copies frames under [`COPY_BELOW`] bytes
/// and writes larger ones in place, and prefetching every line of
/// 1400-byte frames stalled the walk on memory bandwidth it did not need.
const HEAD_LINES: usize = 192;

/// How many frames ahead the head lines of frames written in place are
/// asked for.
const HEADS_AHEAD: usize = 4;

/// Hints the CPU to load every cache line of `base[from..to]`.
///
/// # Safety
/// `base[..to]` must lie inside one mapping.
#[inline(always)]
unsafe fn prefetch_lines(base: *const u8, from: usize, to: usize) {
    let mut line = from;
    while line < to {
        // SAFETY: `line < to`, inside the mapping (the caller's promise).
        prefetch(unsafe { base.add(line) });
        line += 64;
    }
}

/// Hints the CPU to load the cache line at `p`; no effect on correctness.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and never reads memory visibly.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_abi() {
        assert_eq!(size_of::<Req3>(), 28);
        assert_eq!(size_of::<Hdr3>(), 48);
        assert_eq!(std::mem::offset_of!(BlockDesc, block_status), 8);
        assert_eq!(std::mem::offset_of!(BlockDesc, seq_num), 24);
        assert_eq!(size_of::<BlockDesc>(), 48);
    }

    #[test]
    fn blocks_hold_a_full_snaplen_frame_and_an_eighth_of_a_bigger_ring() {
        let g = Geometry::for_snaplen(262_144, 4 << 20, Duration::from_millis(20));
        assert_eq!(g.block_size, 1 << 19);
        assert_eq!(g.block_nr, 8);
        let small = Geometry::for_snaplen(96, 256 << 10, Duration::from_millis(20));
        assert_eq!((small.block_size, small.block_nr), (1 << 16, 4));
        // A bigger ring gets bigger blocks, eight of them.
        let bigger = Geometry::for_snaplen(130_816, 2 << 20, Duration::from_millis(20));
        assert_eq!((bigger.block_size, bigger.block_nr), (256 << 10, 8));
        let huge = Geometry::for_snaplen(130_816, 64 << 20, Duration::from_millis(20));
        assert_eq!((huge.block_size, huge.block_nr), (4 << 20, 16));
        assert_eq!(Geometry::for_snaplen(262_144, 0, Duration::ZERO).block_nr, 2);
    }
}
