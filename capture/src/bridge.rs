//! A plain packet socket that receives while a capture's first ring is
//! built, so the capture starts receiving in microseconds.
//!
//! Setting up a ring (`PACKET_RX_RING`) waits for an RCU grace period in
//! the kernel: 8-10 ms measured on this project's machines. A container
//! whose start is held until its capture receives (pre-start attach) would
//! wait that long. A socket without a ring receives as soon as it is
//! bound, into its receive queue; the ring is built meanwhile, bound, and
//! the queue is read for the frames stamped before that, exactly as a
//! ring that grows hands over to the next one.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::bpf::Program;
use crate::ring::{
    ETH_P_ALL, Frame, PACKET_STATISTICS, SOL_PACKET, TP_STATUS_CSUMNOTREADY, TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID, check, setsockopt,
};

/// `PACKET_AUXDATA`: a control message with each frame's status, length and tag.
const PACKET_AUXDATA: libc::c_int = 8;

/// `struct tpacket_auxdata`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

/// `SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE`: the
/// kernel's receive stamp, and none when a frame was not stamped.
const RX_SOFTWARE_STAMPS: libc::c_int = (1 << 3) | (1 << 4);

/// Keeps the kernel stamping every frame as it is received, for as long as
/// the process lives.
///
/// The kernel stamps frames only while some socket asks for stamps, and
/// turns that on from a work queue, later. A bridge opened while it is off
/// would see its first frames unstamped: with `SO_TIMESTAMPNS` the kernel
/// stamps those when they are read, after the ring took over, and the
/// handover would drop them as the ring's. One socket asking for stamps
/// from the start closes that window, and spares the kernel from turning
/// stamping on and off (patching its code) at every attach.
pub fn keep_timestamps() {
    static KEEPER: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    KEEPER.get_or_init(|| {
        // SAFETY: plain socket(2); owned below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return None;
        }
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one).ok().map(|()| fd)
    });
}

/// A bound packet socket without a ring.
pub(crate) struct Bridge {
    fd: OwnedFd,
}

impl Bridge {
    /// Opens it in the calling thread's namespace, filtered by `program`,
    /// with room for `queue_bytes`, bound to every interface.
    pub(crate) fn open(program: &Program, queue_bytes: usize) -> io::Result<Bridge> {
        // SAFETY: plain socket(2); owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        check(raw)?;
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        program.attach(fd.as_raw_fd())?;
        let one: libc::c_int = 1;
        setsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_AUXDATA, &one)?;
        // Not SO_TIMESTAMPNS: it stamps an unstamped frame when it is read,
        // which would place it after the handover.
        setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &RX_SOFTWARE_STAMPS)?;
        let queue = libc::c_int::try_from(queue_bytes).unwrap_or(libc::c_int::MAX);
        // Past `rmem_max` with CAP_NET_ADMIN; else as much as allowed.
        if setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &queue).is_err() {
            setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &queue)?;
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).map_err(io::Error::other)?;
        // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
        check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
        Ok(Bridge { fd })
    }

    /// Reads every queued frame, handing those stamped before `before`
    /// (nanoseconds since the epoch) to `f`; returns the frames the queue
    /// had no room for.
    pub(crate) fn drain(&self, snaplen: u32, before: u64, mut f: impl FnMut(Frame<'_>)) -> u64 {
        let mut buf = vec![0u8; snaplen as usize];
        let mut control = [0u64; 16];
        loop {
            // SAFETY: zeroed sockaddr_ll and msghdr are valid out-parameters.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            // SAFETY: every pointer in `msg` is valid for its length.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
            if n < 0 {
                break; // EAGAIN: the queue is empty
            }
            let (aux, stamp) = control_messages(&msg);
            // An unstamped frame came before stamping was on: kept (the ring
            // might hold it too; a rare duplicate is better than a loss).
            let timestamp_ns = match stamp {
                Some(ns) if ns >= before => continue, // the ring has it
                Some(ns) => ns,
                None => before.saturating_sub(1),
            };
            let captured = (n as usize).min(buf.len());
            let vlan = (aux.status & TP_STATUS_VLAN_VALID != 0).then_some(portwarden_core::VlanTag {
                tpid: if aux.status & TP_STATUS_VLAN_TPID_VALID != 0 { aux.vlan_tpid } else { 0x8100 },
                tci: aux.vlan_tci,
            });
            f(Frame {
                data: &buf[..captured],
                original_len: if aux.len > 0 { aux.len } else { captured as u32 },
                timestamp_ns,
                ifindex: u32::try_from(from.sll_ifindex).unwrap_or(0),
                pkttype: from.sll_pkttype,
                vlan,
                checksum_pending: aux.status & TP_STATUS_CSUMNOTREADY != 0,
            });
        }
        self.drops()
    }

    /// Frames dropped for want of room, from `PACKET_STATISTICS`.
    fn drops(&self) -> u64 {
        let mut stats = [0u32; 2];
        let mut len = size_of_val(&stats) as libc::socklen_t;
        // SAFETY: `stats` is writable for `len` bytes (tpacket_stats).
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                stats.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        if rc < 0 { 0 } else { u64::from(stats[1]) }
    }
}

/// The frame's auxiliary data and kernel timestamp, from its control messages.
fn control_messages(msg: &libc::msghdr) -> (AuxData, Option<u64>) {
    let (mut aux, mut stamp) = (AuxData::default(), None);
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (SOL_PACKET, PACKET_AUXDATA) => aux = std::ptr::read_unaligned(data.cast::<AuxData>()),
                // `struct scm_timestamping`: the software stamp first; zero
                // when the frame was not stamped.
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                    let ts = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    stamp = (ns != 0).then_some(ns);
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    (aux, stamp)
}
