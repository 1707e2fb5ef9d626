//! The mirror: every captured frame, tagged with its capture's 802.1Q tag,
//! written into one end of a veth pair where Suricata listens (or, for a
//! remote sensor, wrapped in VXLAN with the tag as VNI). Writes are batched
//! with `sendmmsg`, one call per ring block, and never block: when the
//! receiver cannot keep up the frames are counted as dropped and capture
//! goes on.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use portwarden_core::{CaptureGroup, CaptureStats, GroupSink, Interface, LinkType, PacketBatch, PacketSink};
use serde::Serialize;
use tracing::{info, warn};

use crate::tags::{TagOwner, TagTable};

/// Frames handed to one `sendmmsg`.
const MAX_BATCH: usize = 512;

/// One frame to mirror: its bytes, link type, the VLAN tag the kernel took
/// off, and whether its checksum is left to offload.
type OutFrame<'a> = (&'a [u8], LinkType, Option<[u8; 4]>, bool);

/// `struct virtio_net_hdr`, which the mirror's socket (`PACKET_VNET_HDR`)
/// takes before each frame. Used to mark a frame whose transport checksum
/// was offloaded (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): the frame reaches
/// Suricata as the kernel had it, `TP_STATUS_CSUMNOTREADY`, so Suricata's
/// default `checksum-checks: kernel` skips exactly those frames and still
/// checks every other one (as it does on a host's own interface).
type VnetHeader = [u8; 10];
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// The mirror's counters.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Frames written.
    pub sent: AtomicU64,
    /// Frames the receiver could not take (socket buffer full), dropped.
    pub dropped: AtomicU64,
    /// Frames of a link type that cannot be mirrored.
    pub skipped: AtomicU64,
    /// Captures that got no tag (all 4094 in use or held back).
    pub untagged_captures: AtomicU64,
    /// Frames not written because nothing was reading the mirror (Suricata
    /// starting, or restarting after a crash): the gap.
    pub gap_frames: AtomicU64,
    /// Something reads the mirror now; while false, frames only count.
    pub receiver_up: AtomicBool,
}

/// A copy of [`MirrorStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MirrorStatsSnapshot {
    /// Frames written.
    pub sent: u64,
    /// Frames dropped because the receiver was full.
    pub dropped: u64,
    /// Frames that could not be mirrored (link type).
    pub skipped: u64,
    /// Captures without a tag.
    pub untagged_captures: u64,
    /// Frames not written while nothing read the mirror.
    pub gap_frames: u64,
}

impl MirrorStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> MirrorStatsSnapshot {
        MirrorStatsSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            untagged_captures: self.untagged_captures.load(Ordering::Relaxed),
            gap_frames: self.gap_frames.load(Ordering::Relaxed),
        }
    }
}

/// How mirrored frames leave.
enum Transport {
    /// Raw frames with an 802.1Q tag on an interface (AF_PACKET).
    Vlan(OwnedFd),
    /// VXLAN (UDP 4789) to a remote sensor, VNI = tag.
    Vxlan(OwnedFd),
}

/// The mirror, as a capture sink.
pub struct Mirror {
    transport: Transport,
    tags: TagTable,
    stats: Arc<MirrorStats>,
}

fn os_err<T>(what: &str) -> io::Result<T> {
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if rc < 0 { os_err("setsockopt") } else { Ok(()) }
}

impl Mirror {
    /// A mirror writing tagged frames into `interface`, which lives in
    /// network namespace `netns`.
    pub fn vlan(netns: &str, interface: &str, tags: TagTable, stats: Arc<MirrorStats>) -> io::Result<Self> {
        let name = interface.to_owned();
        let owned = crate::iface::in_netns(netns, move || tx_socket(&name))?;
        info!(netns, interface, "mirror writing tagged frames");
        Ok(Self { transport: Transport::Vlan(owned), tags, stats })
    }

    /// A mirror sending VXLAN to `remote` (usually port 4789).
    pub fn vxlan(remote: SocketAddr, tags: TagTable, stats: Arc<MirrorStats>) -> io::Result<Self> {
        let bind: SocketAddr =
            if remote.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(io::Error::other)?;
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.connect(remote)?;
        socket.set_nonblocking(true)?;
        let _ = setsockopt_int(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
        info!(%remote, "mirror sending VXLAN");
        Ok(Self { transport: Transport::Vxlan(OwnedFd::from(socket)), tags, stats })
    }

    fn fd(&self) -> i32 {
        match &self.transport {
            Transport::Vlan(fd) | Transport::Vxlan(fd) => fd.as_raw_fd(),
        }
    }
}

/// A non-blocking AF_PACKET socket that sends on `interface` (in the
/// calling thread's namespace) and receives nothing.
fn tx_socket(interface: &str) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(interface).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: plain FFI calls on values we own; the fd is wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return os_err("mirror socket (needs CAP_NET_RAW)");
    }
    // SAFETY: fd is a fresh socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: cname is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return os_err(&format!("mirror interface {interface}"));
    }
    let _ = setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
    setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = 0; // send only: receive nothing
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let rc = unsafe { libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t) };
    if rc < 0 {
        return os_err("bind mirror socket");
    }
    Ok(owned)
}

/// Where the network layer starts in a frame sent as `head_len` bytes of
/// our header then `body` (which starts with the frame's EtherType or a tag
/// still in it), and the packet itself.
fn after_ethertypes(head_len: usize, body: &[u8]) -> Option<(usize, &[u8])> {
    // `body` starts with the frame's EtherType (or its next tag).
    let mut at = 0;
    loop {
        let ethertype = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return Some((head_len + at + 2, &body[at + 2..])),
            _ => return None,
        }
    }
}

/// The `virtio_net_hdr` marking the TCP/UDP checksum of `packet` (an IP
/// packet starting `at` bytes into the frame) as left to offload; all zero
/// (nothing to mark) when the packet is neither.
fn needs_checksum(at: usize, packet: &[u8]) -> VnetHeader {
    let mut vnet = VnetHeader::default();
    let Some((l4, protocol)) = transport(packet) else { return vnet };
    let field: u16 = match protocol {
        6 => 16, // TCP
        17 => 6, // UDP
        _ => return vnet,
    };
    let Ok(start) = u16::try_from(at + l4) else { return vnet };
    vnet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vnet[6..8].copy_from_slice(&start.to_ne_bytes());
    vnet[8..10].copy_from_slice(&field.to_ne_bytes());
    vnet
}

/// Where an IP packet's transport header starts, and its protocol (IPv6
/// extension headers skipped).
fn transport(packet: &[u8]) -> Option<(usize, u8)> {
    match packet.first()? >> 4 {
        4 => Some((usize::from(packet.first()? & 0x0f) * 4, *packet.get(9)?)),
        6 => {
            let (mut next, mut at) = (*packet.get(6)?, 40);
            // Hop-by-hop, routing and destination options: (len + 1) * 8 bytes.
            while matches!(next, 0 | 43 | 60) {
                next = *packet.get(at)?;
                at += (usize::from(*packet.get(at + 1)?) + 1) * 8;
            }
            Some((at, next))
        }
        _ => None,
    }
}

fn owner(group: &CaptureGroup) -> TagOwner {
    TagOwner { container: group.container().cloned() }
}

/// Shared between every capture's sink.
struct Shared {
    mirror: Mirror,
}

/// The sink the capture engine is given.
pub struct MirrorSink {
    shared: Arc<Shared>,
}

impl MirrorSink {
    /// Wraps a mirror for the capture engine.
    pub fn new(mirror: Mirror) -> Self {
        Self { shared: Arc::new(Shared { mirror }) }
    }
}

impl PacketSink for MirrorSink {
    fn open(&self, group: &CaptureGroup) -> Box<dyn GroupSink> {
        let tag = self.shared.mirror.tags.allocate(owner(group));
        if tag.is_none() {
            self.shared.mirror.stats.untagged_captures.fetch_add(1, Ordering::Relaxed);
            warn!(capture = %group.label(), "no free 802.1Q tag; this capture is not mirrored");
        }
        Box::new(GroupMirror {
            shared: Arc::clone(&self.shared),
            tag,
            links: std::collections::HashMap::new(),
            headers: Vec::new(),
            vnets: Vec::new(),
            iovecs: Vec::new(),
            msgs: Vec::new(),
            members: group.containers.clone(),
        })
    }
}

/// One capture's mirror state, on its capture thread.
struct GroupMirror {
    shared: Arc<Shared>,
    tag: Option<u16>,
    links: std::collections::HashMap<u32, LinkType>,
    /// Per frame: the bytes put before (or instead of) its Ethernet header.
    headers: Vec<[u8; 24]>,
    /// Per frame (local mirror only): its `virtio_net_hdr`.
    vnets: Vec<VnetHeader>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// The members the tag's owner was last set from: a richer report of
    /// the same container (a name, an image) replaces it too.
    members: Vec<portwarden_core::Container>,
}

// SAFETY: the raw pointers in `iovecs` and `msgs` are scratch space,
// rebuilt for every send and never dereferenced outside `flush`.
unsafe impl Send for GroupMirror {}

impl GroupMirror {
    fn note_interfaces(&mut self, interfaces: &[Interface]) {
        for i in interfaces {
            self.links.insert(i.index, i.link);
        }
    }

    /// Sends frames `[from, to)` of this round; counts what did not go.
    fn flush(&mut self, count: usize) {
        let stats = &self.shared.mirror.stats;
        let mut done = 0;
        while done < count {
            let remaining = (count - done) as u32;
            // SAFETY: msgs[done..count] point into iovecs/headers and the
            // borrowed ring block, all alive for this call.
            let n = unsafe { libc::sendmmsg(self.shared.mirror.fd(), self.msgs[done..].as_mut_ptr(), remaining, 0) };
            if n <= 0 {
                let err = io::Error::last_os_error();
                // ECONNREFUSED reports an ICMP error for an earlier datagram
                // (a sensor with no socket on 4789 just sniffs): not this frame's fault.
                if matches!(err.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused) {
                    continue;
                }
                // Full (EAGAIN/ENOBUFS) or refused: drop this frame, try the rest.
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                done += 1;
                continue;
            }
            stats.sent.fetch_add(n as u64, Ordering::Relaxed);
            done += n as usize;
        }
    }
}

impl GroupSink for GroupMirror {
    fn started(&mut self, group: &CaptureGroup) {
        if let Some(tag) = self.tag {
            info!(capture = %group.label(), tag, "capture mirrored");
        }
    }

    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        self.note_interfaces(batch.new_interfaces);
        let Some(tag) = self.tag else { return };
        if group.containers != self.members {
            self.members = group.containers.clone();
            self.shared.mirror.tags.update(tag, owner(group));
        }
        if !self.shared.mirror.stats.receiver_up.load(Ordering::Acquire) {
            self.shared.mirror.stats.gap_frames.fetch_add(batch.packets.len() as u64, Ordering::Relaxed);
            return;
        }
        let vxlan = matches!(self.shared.mirror.transport, Transport::Vxlan(_));
        let frames: Vec<OutFrame<'_>> = batch
            .iter()
            .map(|(meta, bytes)| {
                let link = self.links.get(&meta.ifindex).copied().unwrap_or(LinkType::Ethernet);
                (bytes, link, meta.vlan.map(|t| t.bytes()), meta.checksum_pending)
            })
            .collect();
        // iovecs per frame: [virtio_net_hdr,] our header, the frame's rest.
        let per = if vxlan { 2 } else { 3 };
        for chunk in frames.chunks(MAX_BATCH) {
            self.headers.clear();
            self.vnets.clear();
            self.iovecs.clear();
            self.msgs.clear();
            let mut used = 0;
            for (bytes, link, own_tag, checksum_pending) in chunk {
                let mut header = [0u8; 24];
                let (head_len, body): (usize, &[u8]) = match (link, vxlan) {
                    (LinkType::Ethernet, _) if bytes.len() >= 14 => {
                        // dst+src MAC, then our tag, then the frame's own tag
                        // (taken off by the kernel) and EtherType onwards.
                        header[..12].copy_from_slice(&bytes[..12]);
                        header[12..16].copy_from_slice(&[0x81, 0x00, (tag >> 8) as u8, tag as u8]);
                        match own_tag {
                            Some(own) => {
                                header[16..20].copy_from_slice(own);
                                (20, &bytes[12..])
                            }
                            None => (16, &bytes[12..]),
                        }
                    }
                    (LinkType::RawIp, _) if !bytes.is_empty() => {
                        // No Ethernet header: make one (zero MACs), tagged.
                        let ethertype: u16 = if bytes[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
                        header[12..16].copy_from_slice(&[0x81, 0x00, (tag >> 8) as u8, tag as u8]);
                        header[16..18].copy_from_slice(&ethertype.to_be_bytes());
                        (18, *bytes)
                    }
                    _ => {
                        self.shared.mirror.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                if vxlan {
                    // VXLAN header (flags: VNI present, VNI = tag) before the
                    // untagged Ethernet frame.
                    let mut vx = [0u8; 24];
                    vx[0] = 0x08;
                    vx[4..8].copy_from_slice(&(u32::from(tag) << 8).to_be_bytes());
                    vx[8..20].copy_from_slice(&header[..12]);
                    let mut len = 20;
                    match (link, head_len) {
                        // A raw IP frame's made-up EtherType.
                        (LinkType::RawIp, _) => {
                            vx[len..len + 2].copy_from_slice(&header[16..18]);
                            len += 2;
                        }
                        // The frame's own tag.
                        (_, 20) => {
                            vx[len..len + 4].copy_from_slice(&header[16..20]);
                            len += 4;
                        }
                        _ => {}
                    }
                    self.headers.push(vx);
                    self.iovecs.push(libc::iovec { iov_base: std::ptr::null_mut(), iov_len: len });
                } else {
                    let l3 = match link {
                        LinkType::RawIp => Some((head_len, body)),
                        _ => after_ethertypes(head_len, body),
                    };
                    let vnet = match l3 {
                        Some((at, packet)) if *checksum_pending => needs_checksum(at, packet),
                        _ => VnetHeader::default(),
                    };
                    self.vnets.push(vnet);
                    self.iovecs.push(libc::iovec { iov_base: std::ptr::null_mut(), iov_len: vnet.len() });
                    self.headers.push(header);
                    self.iovecs.push(libc::iovec { iov_base: std::ptr::null_mut(), iov_len: head_len });
                }
                self.iovecs.push(libc::iovec { iov_base: body.as_ptr().cast_mut().cast(), iov_len: body.len() });
                used += 1;
            }
            // Point the header iovecs at their (now stable) storage.
            for i in 0..used {
                if !vxlan {
                    self.iovecs[per * i].iov_base = self.vnets[i].as_mut_ptr().cast();
                }
                self.iovecs[per * i + per - 2].iov_base = self.headers[i].as_mut_ptr().cast();
            }
            for i in 0..used {
                // SAFETY: msghdr is plain data; zeroed is valid.
                let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                hdr.msg_iov = self.iovecs[per * i..].as_mut_ptr();
                hdr.msg_iovlen = per;
                self.msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
            }
            self.flush(used);
        }
    }

    fn close(&mut self, _group: &CaptureGroup, _stats: CaptureStats) {
        if let Some(tag) = self.tag.take() {
            self.shared.mirror.tags.release(tag);
        }
    }
}

impl Drop for GroupMirror {
    fn drop(&mut self) {
        if let Some(tag) = self.tag.take() {
            self.shared.mirror.tags.release(tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(vnet: &VnetHeader, at: usize) -> u16 {
        u16::from_ne_bytes([vnet[at], vnet[at + 1]])
    }

    #[test]
    fn offloaded_tcp_over_ipv4_is_marked_at_its_checksum() {
        // EtherType, then IPv4 with 8 bytes of options (IHL 7), TCP.
        let mut body = vec![0x08, 0x00, 0x47];
        body.resize(2 + 28 + 20, 0);
        body[2 + 9] = 6;
        let (at, packet) = after_ethertypes(16, &body).unwrap();
        assert_eq!(at, 18);
        let vnet = needs_checksum(at, packet);
        assert_eq!(vnet[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!((field(&vnet, 6), field(&vnet, 8)), (18 + 28, 16));
    }

    #[test]
    fn offloaded_udp_over_ipv6_skips_tags_and_extension_headers() {
        // A tag still in the frame, then IPv6 → hop-by-hop (8 bytes) → UDP.
        let mut body = vec![0x81, 0x00, 0x00, 0x05, 0x86, 0xdd];
        let mut ip = vec![0u8; 40 + 8 + 8];
        ip[0] = 0x60;
        ip[6] = 0;
        ip[40] = 17;
        body.extend_from_slice(&ip);
        let (at, packet) = after_ethertypes(20, &body).unwrap();
        assert_eq!(at, 26);
        let vnet = needs_checksum(at, packet);
        assert_eq!((field(&vnet, 6), field(&vnet, 8)), (26 + 48, 6));
    }

    #[test]
    fn other_protocols_and_short_packets_are_not_marked() {
        let mut icmp = vec![0x45u8; 28];
        icmp[9] = 1;
        assert_eq!(needs_checksum(14, &icmp), VnetHeader::default());
        assert_eq!(needs_checksum(14, &[0x60, 0, 0]), VnetHeader::default());
        assert!(after_ethertypes(14, &[0x08, 0x06, 0, 0]).is_none());
        assert!(after_ethertypes(14, &[0x81]).is_none());
    }
}
