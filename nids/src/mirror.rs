//! The mirror: every captured frame, tagged with its capture's 802.1Q tag,
//! handed to Suricata as a pcap stream through a named pipe (see [`pipe`]),
//! or, for a remote sensor, wrapped in VXLAN with the tag as VNI and sent
//! with `sendmmsg`, one call per ring block. Neither ever blocks capture:
//! when the receiver cannot keep up, frames are counted as dropped and
//! capture goes on.
//!
//! [`pipe`]: crate::pipe

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use portwarden_core::{
    CaptureGroup, CaptureStats, GroupSink, Interface, LinkType, PacketBatch, PacketMeta, PacketSink,
};
use serde::Serialize;
use tracing::{info, warn};

use crate::frame::{TaggedHead, tag_frame};
use crate::pipe::{PcapPipe, Record};
use crate::tags::{TagOwner, TagTable};

/// Frames handed to one `sendmmsg`.
const MAX_BATCH: usize = 512;

/// The mirror's counters.
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Frames written.
    pub sent: AtomicU64,
    /// Frames the receiver could not take (buffer full), dropped.
    pub dropped: AtomicU64,
    /// Frames of a link type that cannot be mirrored.
    pub skipped: AtomicU64,
    /// Captures that got no tag (all 4094 in use or held back).
    pub untagged_captures: AtomicU64,
    /// Frames not written because nothing was reading the mirror (Suricata
    /// starting, or restarting after a crash): the gap.
    pub gap_frames: AtomicU64,
    /// Something reads the mirror's pipe now (kept by the pipe; while
    /// false, frames count as the gap).
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
    /// pcap records into a named pipe that Suricata reads.
    Pipe(Arc<PcapPipe>),
    /// VXLAN (UDP 4789) to a remote sensor, VNI = tag.
    Vxlan(OwnedFd),
}

/// The mirror, as a capture sink.
pub struct Mirror {
    transport: Transport,
    tags: TagTable,
    stats: Arc<MirrorStats>,
}

impl Mirror {
    /// A mirror writing pcap into the named pipe at `path` (made if
    /// missing), for Suricata to read with `-r`.
    pub fn pipe(path: PathBuf, tags: TagTable, stats: Arc<MirrorStats>) -> crate::Result<(Self, Arc<PcapPipe>)> {
        let pipe = PcapPipe::create(path, Arc::clone(&stats))?;
        Ok((Self { transport: Transport::Pipe(Arc::clone(&pipe)), tags, stats }, pipe))
    }

    /// A mirror sending VXLAN to `remote` (usually port 4789).
    pub fn vxlan(remote: SocketAddr, tags: TagTable, stats: Arc<MirrorStats>) -> crate::Result<Self> {
        Self::vxlan_socket(remote)
            .map(|socket| Self { transport: Transport::Vxlan(socket), tags, stats })
            .map_err(|source| crate::Error::Vxlan { remote, source })
    }

    fn vxlan_socket(remote: SocketAddr) -> io::Result<OwnedFd> {
        let bind: SocketAddr =
            if remote.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(io::Error::other)?;
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.connect(remote)?;
        socket.set_nonblocking(true)?;
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid fd and a pointer to a live c_int of the given size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        info!(%remote, "mirror sending VXLAN");
        Ok(OwnedFd::from(socket))
    }
}

fn owner(group: &CaptureGroup) -> TagOwner {
    TagOwner { container: group.container().cloned() }
}

/// The sink the capture engine is given.
pub struct MirrorSink {
    mirror: Arc<Mirror>,
}

impl MirrorSink {
    /// Wraps a mirror for the capture engine.
    pub fn new(mirror: Mirror) -> Self {
        Self { mirror: Arc::new(mirror) }
    }
}

impl PacketSink for MirrorSink {
    fn open(&self, group: &CaptureGroup) -> Box<dyn GroupSink> {
        let tag = self.mirror.tags.allocate(owner(group));
        if tag.is_none() {
            self.mirror.stats.untagged_captures.fetch_add(1, Ordering::Relaxed);
            warn!(capture = %group.label(), "no free 802.1Q tag; this capture is not mirrored");
        }
        Box::new(GroupMirror {
            mirror: Arc::clone(&self.mirror),
            tag,
            links: std::collections::HashMap::new(),
            members: group.containers.clone(),
            vxlan: VxlanBatch::default(),
        })
    }
}

/// One capture's mirror state, on its capture thread.
struct GroupMirror {
    mirror: Arc<Mirror>,
    tag: Option<u16>,
    links: std::collections::HashMap<u32, LinkType>,
    /// The members the tag's owner was last set from: a richer report of
    /// the same container (a name, an image) replaces it too.
    members: Vec<portwarden_core::Container>,
    vxlan: VxlanBatch,
}

/// A frame ready to leave: the mirror's head, the rest of the frame, and
/// the frame's capture record.
type Tagged<'a> = (TaggedHead, &'a [u8], &'a PacketMeta);

impl GroupSink for GroupMirror {
    fn started(&mut self, group: &CaptureGroup) {
        if let Some(tag) = self.tag {
            info!(capture = %group.label(), tag, "capture mirrored");
        }
    }

    fn members_changed(&mut self, group: &CaptureGroup) {
        // Alerts on frames already sent are named when Suricata reports
        // them: a name that arrives after the first frames still counts.
        self.publish_owner(group);
    }

    fn batch(&mut self, group: &CaptureGroup, batch: &PacketBatch<'_>) {
        self.note_interfaces(batch.new_interfaces);
        self.publish_owner(group);
        let Some(tag) = self.tag else { return };
        let stats = &self.mirror.stats;
        let mut skipped = 0;
        let frames: Vec<Tagged<'_>> = batch
            .iter()
            .filter_map(|(meta, bytes)| {
                let link = self.links.get(&meta.ifindex).copied().unwrap_or(LinkType::Ethernet);
                let tagged = tag_frame(bytes, link, tag, meta.vlan.map(|t| t.bytes()));
                if tagged.is_none() {
                    skipped += 1;
                }
                tagged.map(|(head, rest)| (head, rest, meta))
            })
            .collect();
        stats.skipped.fetch_add(skipped, Ordering::Relaxed);
        match &self.mirror.transport {
            Transport::Pipe(pipe) => pipe.append(frames.iter().map(|(head, rest, meta)| Record {
                timestamp_ns: meta.timestamp_ns,
                cut: meta.original_len.saturating_sub(meta.len),
                head: head.as_slice(),
                rest,
                checksum_pending: meta.checksum_pending,
            })),
            Transport::Vxlan(fd) => {
                for chunk in frames.chunks(MAX_BATCH) {
                    self.vxlan.send(fd, tag, chunk, stats);
                }
            }
        }
    }

    fn close(&mut self, _group: &CaptureGroup, _stats: CaptureStats) {
        if let Some(tag) = self.tag.take() {
            self.mirror.tags.release(tag);
        }
    }
}

impl GroupMirror {
    /// Points this capture's tag at its current members.
    fn publish_owner(&mut self, group: &CaptureGroup) {
        let Some(tag) = self.tag else { return };
        if group.containers != self.members {
            self.members = group.containers.clone();
            self.mirror.tags.update(tag, owner(group));
        }
    }

    fn note_interfaces(&mut self, interfaces: &[Interface]) {
        for i in interfaces {
            self.links.insert(i.index, i.link);
        }
    }
}

impl Drop for GroupMirror {
    fn drop(&mut self) {
        if let Some(tag) = self.tag.take() {
            self.mirror.tags.release(tag);
        }
    }
}

/// Scratch space for one `sendmmsg` of VXLAN datagrams.
#[derive(Default)]
struct VxlanBatch {
    /// Per frame: the VXLAN header, MAC addresses and what followed our tag.
    headers: Vec<([u8; 24], usize)>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovecs` and `msgs` are scratch space,
// rebuilt for every send and never dereferenced outside `send`.
unsafe impl Send for VxlanBatch {}

impl VxlanBatch {
    /// Sends `frames` as VXLAN datagrams (VNI = `tag`); counts what did not go.
    fn send(&mut self, fd: &OwnedFd, tag: u16, frames: &[Tagged<'_>], stats: &MirrorStats) {
        self.headers.clear();
        self.iovecs.clear();
        self.msgs.clear();
        for (head, _, _) in frames {
            // VXLAN header (flags: VNI present, VNI = tag), then the frame
            // without our tag.
            let mut vx = [0u8; 24];
            vx[0] = 0x08;
            vx[4..8].copy_from_slice(&(u32::from(tag) << 8).to_be_bytes());
            let (macs, after) = head.untagged();
            vx[8..20].copy_from_slice(&macs);
            vx[20..20 + after.len()].copy_from_slice(after);
            self.headers.push((vx, 20 + after.len()));
        }
        for (i, (_, rest, _)) in frames.iter().enumerate() {
            let (header, len) = &mut self.headers[i];
            self.iovecs.push(libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: *len });
            self.iovecs.push(libc::iovec { iov_base: rest.as_ptr().cast_mut().cast(), iov_len: rest.len() });
        }
        for i in 0..frames.len() {
            // SAFETY: msghdr is plain data; zeroed is valid.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = self.iovecs[2 * i..].as_mut_ptr();
            hdr.msg_iovlen = 2;
            self.msgs.push(libc::mmsghdr { msg_hdr: hdr, msg_len: 0 });
        }
        let count = frames.len();
        let mut done = 0;
        while done < count {
            // SAFETY: msgs[done..] point into iovecs, headers and the
            // borrowed ring block, all alive for this call.
            let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), self.msgs[done..].as_mut_ptr(), (count - done) as u32, 0) };
            if n <= 0 {
                let err = io::Error::last_os_error();
                // ECONNREFUSED reports an ICMP error for an earlier datagram
                // (a sensor with no socket on 4789 just sniffs): not this frame's fault.
                if matches!(err.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused) {
                    continue;
                }
                // Full (EAGAIN/ENOBUFS): drop this frame, try the rest.
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                done += 1;
                continue;
            }
            stats.sent.fetch_add(n as u64, Ordering::Relaxed);
            done += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use portwarden_core::{Container, ContainerId, Direction, RuntimeName};

    use super::*;

    fn group(name: &str) -> CaptureGroup {
        let c =
            Container { name: name.into(), ..Container::new(RuntimeName::from_static("fake"), ContainerId::new(name)) };
        CaptureGroup { key: 1, netns: None, containers: vec![c] }
    }

    /// An Ethernet frame: MACs, IPv4 ethertype, a payload.
    fn frame() -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(b"payload-of-the-frame");
        f
    }

    #[test]
    fn vxlan_carries_each_frame_whole_with_its_captures_tag_as_vni() {
        let sensor = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sensor.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let tags = TagTable::new(Duration::ZERO);
        let stats = Arc::new(MirrorStats::default());
        let mirror =
            Mirror::vxlan(sensor.local_addr().expect("addr"), tags.clone(), Arc::clone(&stats)).expect("vxlan");
        let sink = MirrorSink::new(mirror);
        let web = group("web");
        let mut g = sink.open(&web);
        g.started(&web);
        let data = frame();
        let meta = PacketMeta {
            timestamp_ns: 1,
            ifindex: 2,
            original_len: data.len() as u32,
            direction: Direction::Outgoing,
            offset: 0,
            len: data.len() as u32,
            vlan: None,
            checksum_pending: false,
        };
        g.batch(&web, &PacketBatch { new_interfaces: &[], packets: &[meta, meta], data: &data });

        let (tag, owner) = tags.snapshot().into_iter().next().expect("the capture holds a tag");
        assert_eq!(owner.container.as_ref().map(|c| c.name.as_str()), Some("web"));
        for _ in 0..2 {
            let mut buf = [0u8; 2048];
            let n = sensor.recv(&mut buf).expect("a datagram");
            assert_eq!(buf[0], 0x08, "VNI-present flag");
            assert_eq!(&buf[4..8], &(u32::from(tag) << 8).to_be_bytes(), "VNI = the capture's tag");
            assert_eq!(&buf[8..n], &data[..], "the frame, without the mirror's 802.1Q tag");
        }
        assert_eq!(stats.snapshot().dropped, 0);

        g.close(&web, CaptureStats::default());
        assert_eq!(tags.active(), 0, "the tag is released with the capture");
    }

    #[test]
    fn a_frame_too_short_to_tag_is_skipped_and_counted() {
        let sensor = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let stats = Arc::new(MirrorStats::default());
        let mirror =
            Mirror::vxlan(sensor.local_addr().expect("addr"), TagTable::new(Duration::ZERO), Arc::clone(&stats))
                .expect("vxlan");
        let sink = MirrorSink::new(mirror);
        let web = group("web");
        let mut g = sink.open(&web);
        let data = [0u8; 6];
        let meta = PacketMeta {
            timestamp_ns: 1,
            ifindex: 2,
            original_len: 6,
            direction: Direction::Incoming,
            offset: 0,
            len: 6,
            vlan: None,
            checksum_pending: false,
        };
        g.batch(&web, &PacketBatch { new_interfaces: &[], packets: &[meta], data: &data });
        assert_eq!(stats.snapshot().skipped, 1);
    }
}
