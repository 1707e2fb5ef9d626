//! What the mirror does to a captured frame before Suricata sees it: the
//! capture's 802.1Q tag goes in after the MAC addresses (a tag the kernel
//! took off goes back in after it), a raw IP frame gets an Ethernet header,
//! and a checksum the sender left to offload is filled in, as the NIC would
//! have done.

use portwarden_core::LinkType;

/// The bytes the mirror puts before a frame's remainder: MAC addresses, the
/// capture's tag, then the frame's own tag or a made-up EtherType.
pub(crate) struct TaggedHead {
    bytes: [u8; 20],
    len: usize,
}

impl TaggedHead {
    /// The head's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The MAC addresses and what follows the capture's tag: the head of
    /// the same frame without that tag (what VXLAN carries).
    pub(crate) fn untagged(&self) -> ([u8; 12], &[u8]) {
        let mut macs = [0u8; 12];
        macs.copy_from_slice(&self.bytes[..12]);
        (macs, &self.bytes[16..self.len])
    }
}

/// Splits `frame` into the head the mirror writes (with `tag`) and the rest
/// of the frame, which follows the head unchanged. `None` for a link type
/// that cannot be mirrored, or a frame too short to be one.
pub(crate) fn tag_frame(
    frame: &[u8],
    link: LinkType,
    tag: u16,
    own_tag: Option<[u8; 4]>,
) -> Option<(TaggedHead, &[u8])> {
    let mut bytes = [0u8; 20];
    let ours = [0x81, 0x00, (tag >> 8) as u8, tag as u8];
    match link {
        LinkType::Ethernet if frame.len() >= 14 => {
            bytes[..12].copy_from_slice(&frame[..12]);
            bytes[12..16].copy_from_slice(&ours);
            let len = match own_tag {
                Some(own) => {
                    bytes[16..20].copy_from_slice(&own);
                    20
                }
                None => 16,
            };
            Some((TaggedHead { bytes, len }, &frame[12..]))
        }
        LinkType::RawIp if !frame.is_empty() => {
            // No Ethernet header: make one (zero MACs), tagged.
            let ethertype: u16 = if frame[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
            bytes[12..16].copy_from_slice(&ours);
            bytes[16..18].copy_from_slice(&ethertype.to_be_bytes());
            Some((TaggedHead { bytes, len: 18 }, frame))
        }
        _ => None,
    }
}

/// Fills in the TCP or UDP checksum of an Ethernet `frame` (tags in it are
/// skipped) whose sender left it to offload (`CHECKSUM_PARTIAL`): the field
/// holds the pseudo-header's sum, and the checksum is the complement of the
/// sum from the transport header to the end. Returns false, changing
/// nothing, for anything else or a frame cut short.
pub(crate) fn complete_checksum(frame: &mut [u8]) -> bool {
    let Some(l3) = network_offset(frame) else { return false };
    let Some((l4, protocol)) = transport(&frame[l3..]) else { return false };
    let field = match protocol {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let start = l3 + l4;
    if frame.len() < start + field + 2 {
        return false;
    }
    let mut checksum = !fold(sum(&frame[start..]));
    if protocol == 17 && checksum == 0 {
        checksum = 0xffff;
    }
    frame[start + field..start + field + 2].copy_from_slice(&checksum.to_be_bytes());
    true
}

/// Where the IP packet starts in an Ethernet frame, past any 802.1Q/802.1ad
/// tags; `None` when it holds neither IPv4 nor IPv6.
fn network_offset(frame: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return Some(at + 2),
            _ => return None,
        }
    }
}

/// Where an IP packet's transport header starts, and its protocol (IPv6
/// extension headers skipped). `None` for a fragment past the first, whose
/// bytes are not a transport header.
fn transport(packet: &[u8]) -> Option<(usize, u8)> {
    match packet.first()? >> 4 {
        4 => {
            let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            if fragment_offset != 0 {
                return None;
            }
            Some((usize::from(packet.first()? & 0x0f) * 4, *packet.get(9)?))
        }
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

/// The ones'-complement sum of `bytes` as big-endian 16-bit words (an odd
/// last byte padded with zero), not yet folded.
fn sum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut total: u64 = 0;
    for c in &mut chunks {
        let word = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves: the 16-bit words' carries stay in range.
        total += (word >> 32) + (word & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks(2);
    for pair in &mut rest {
        total += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    total
}

/// Folds a sum to 16 bits with end-around carry.
fn fold(mut total: u64) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksum computed the textbook way: pseudo-header plus segment
    /// with its checksum field zeroed.
    fn reference(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> u16 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&[0, protocol]);
        bytes.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        bytes.extend_from_slice(segment);
        let mut total = 0u32;
        for pair in bytes.chunks(2) {
            total += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while total > 0xffff {
            total = (total & 0xffff) + (total >> 16);
        }
        !(total as u16)
    }

    /// A tagged Ethernet frame holding IPv4 and a transport segment whose
    /// checksum field holds the pseudo-header sum, as an offloading sender
    /// leaves it.
    fn offloaded(protocol: u8, segment: &[u8], field: usize) -> Vec<u8> {
        let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        frame.extend_from_slice(&ip);
        let mut seg = segment.to_vec();
        seg[field..field + 2].fill(0);
        let pseudo = !reference(src, dst, protocol, &vec![0u8; seg.len()]);
        seg[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        frame.extend_from_slice(&seg);
        frame
    }

    #[test]
    fn an_offloaded_tcp_checksum_is_filled_in() {
        let mut segment = vec![0u8; 20];
        segment[12] = 0x50;
        segment.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n!");
        let mut frame = offloaded(6, &segment, 16);
        assert!(complete_checksum(&mut frame));
        let l4 = 18 + 20;
        let got = u16::from_be_bytes([frame[l4 + 16], frame[l4 + 17]]);
        assert_eq!(got, reference([10, 0, 0, 1], [10, 0, 0, 2], 6, &segment));
    }

    #[test]
    fn an_offloaded_udp_checksum_is_filled_in() {
        let mut segment = vec![0, 53, 0, 53, 0, 13, 0, 0];
        segment.extend_from_slice(b"hello");
        let mut frame = offloaded(17, &segment, 6);
        assert!(complete_checksum(&mut frame));
        let got = u16::from_be_bytes([frame[18 + 20 + 6], frame[18 + 20 + 7]]);
        assert_eq!(got, reference([10, 0, 0, 1], [10, 0, 0, 2], 17, &segment));
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert!(!complete_checksum(&mut arp));
        let mut short = vec![0u8; 12];
        short.extend_from_slice(&[0x08, 0x00, 0x45]);
        assert!(!complete_checksum(&mut short));
        let mut icmp = offloaded(1, &[0u8; 8], 2);
        assert!(!complete_checksum(&mut icmp));
        // A later IPv4 fragment holds no transport header.
        let mut segment = vec![0u8; 8];
        segment[5] = 8;
        let mut fragment = offloaded(17, &segment, 6);
        fragment[18 + 6] = 0x00;
        fragment[18 + 7] = 0x10;
        let before = fragment.clone();
        assert!(!complete_checksum(&mut fragment));
        assert_eq!(fragment, before);
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x86, 0xdd]);
        let mut ip = vec![0u8; 40 + 8];
        ip[0] = 0x60;
        ip[6] = 0; // hop-by-hop
        ip[40] = 17;
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        assert!(complete_checksum(&mut frame));
        assert_ne!(&frame[14 + 48 + 6..14 + 48 + 8], &[0, 0]);
    }

    #[test]
    fn raw_ip_gets_a_made_up_ethernet_header() {
        let (head, rest) = tag_frame(&[0x60, 1, 2], LinkType::RawIp, 0x123, None).unwrap();
        assert_eq!(&head.as_slice()[12..], &[0x81, 0x00, 0x01, 0x23, 0x86, 0xdd]);
        assert_eq!(rest, &[0x60, 1, 2]);
        let frame = [[0xaa; 12].as_slice(), &[0x08, 0x00, 0x45]].concat();
        let (head, rest) = tag_frame(&frame, LinkType::Ethernet, 5, Some([0x81, 0, 0, 9])).unwrap();
        assert_eq!(&head.as_slice()[12..], &[0x81, 0, 0, 5, 0x81, 0, 0, 9]);
        assert_eq!(rest, &[0x08, 0x00, 0x45]);
        assert_eq!(head.untagged().1, &[0x81, 0, 0, 9]);
        assert!(tag_frame(&[0u8; 10], LinkType::Ethernet, 5, None).is_none());
    }
}
