//! Frame decoding: just enough of each frame for flow tracking.
//!
//! etherparse slices the headers in place (no copies); VLAN tags, IPv4,
//! IPv6, TCP, UDP and ICMP are understood. A frame that cannot be read is a
//! decode error, counted and skipped; an IP fragment after the first carries
//! no ports and is counted as such.

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use portwarden_core::LinkType;

/// The transport protocol of a flow, as Suricata names it in EVE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// ICMPv6.
    Icmpv6,
    /// Any other IP protocol, by number.
    Other(u8),
}

impl Proto {
    /// EVE's `proto` string.
    pub fn eve_name(self) -> String {
        match self {
            Proto::Tcp => "TCP".into(),
            Proto::Udp => "UDP".into(),
            Proto::Icmp => "ICMP".into(),
            Proto::Icmpv6 => "IPv6-ICMP".into(),
            Proto::Other(n) => n.to_string(),
        }
    }
}

/// What flow tracking needs of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 without ports).
    pub sport: u16,
    /// Destination port (0 without ports).
    pub dport: u16,
    /// Protocol.
    pub proto: Proto,
    /// TCP flags byte (FIN=0x01 ... URG=0x20), 0 for other protocols.
    pub tcp_flags: u8,
    /// True for an IP fragment (ports unknown unless it is the first).
    pub fragment: bool,
}

/// Why a frame was not summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not IP (ARP, LLDP, ...): fine, just not a flow.
    NotIp,
    /// Truncated or malformed headers.
    Malformed,
}

/// Decodes one frame captured on a link of type `link`.
pub fn summarize(link: LinkType, data: &[u8]) -> Result<Summary, Skip> {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(data),
        LinkType::RawIp => SlicedPacket::from_ip(data),
        LinkType::Other(_) => return Err(Skip::NotIp),
    }
    .map_err(|_| Skip::Malformed)?;
    let (src, dst, payload) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), ip.payload())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), ip.payload())
        }
        Some(NetSlice::Arp(_)) | None => return Err(Skip::NotIp),
    };
    let fragment = payload.fragmented;
    let mut summary =
        Summary { src, dst, sport: 0, dport: 0, proto: Proto::Other(payload.ip_number.0), tcp_flags: 0, fragment };
    match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            summary.proto = Proto::Tcp;
            summary.sport = tcp.source_port();
            summary.dport = tcp.destination_port();
            summary.tcp_flags = [tcp.fin(), tcp.syn(), tcp.rst(), tcp.psh(), tcp.ack(), tcp.urg()]
                .iter()
                .enumerate()
                .fold(0u8, |acc, (bit, set)| if *set { acc | (1 << bit) } else { acc });
        }
        Some(TransportSlice::Udp(udp)) => {
            summary.proto = Proto::Udp;
            summary.sport = udp.source_port();
            summary.dport = udp.destination_port();
        }
        Some(TransportSlice::Icmpv4(_)) => summary.proto = Proto::Icmp,
        Some(TransportSlice::Icmpv6(_)) => summary.proto = Proto::Icmpv6,
        Some(TransportSlice::Igmp(_)) | None => {
            summary.proto = match payload.ip_number.0 {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                1 => Proto::Icmp,
                58 => Proto::Icmpv6,
                n => Proto::Other(n),
            };
            // A TCP/UDP header that should be there but is not: malformed,
            // unless this is a later fragment, which carries none.
            if matches!(summary.proto, Proto::Tcp | Proto::Udp) && !fragment {
                return Err(Skip::Malformed);
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn tcp_syn() -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 65535)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, b"").expect("build");
        out
    }

    #[test]
    fn a_tcp_syn_is_summarised() {
        let s = summarize(LinkType::Ethernet, &tcp_syn()).expect("decodes");
        assert_eq!((s.sport, s.dport, s.proto, s.tcp_flags), (40000, 80, Proto::Tcp, 0x02));
        assert_eq!(s.src, "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn vlan_tagged_udp_over_ipv6_is_summarised() {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(42).expect("vlan"))
            .ipv6([1; 16], [2; 16], 64)
            .udp(53, 5353);
        let mut out = Vec::new();
        builder.write(&mut out, b"hi").expect("build");
        let s = summarize(LinkType::Ethernet, &out).expect("decodes");
        assert_eq!((s.proto, s.sport, s.dport), (Proto::Udp, 53, 5353));
    }

    #[test]
    fn truncated_frames_are_malformed_and_arp_is_not_ip() {
        let syn = tcp_syn();
        assert_eq!(summarize(LinkType::Ethernet, &syn[..20]), Err(Skip::Malformed));
        assert_eq!(summarize(LinkType::Ethernet, &syn[..40]), Err(Skip::Malformed));
        let mut arp = vec![0xff; 6];
        arp.extend([1, 2, 3, 4, 5, 6, 0x08, 0x06]);
        arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        arp.extend([0u8; 20]);
        assert_eq!(summarize(LinkType::Ethernet, &arp), Err(Skip::NotIp));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Garbage, truncation and oversize never panic.
        #[test]
        fn any_bytes_decode_without_panicking(data in proptest::collection::vec(any::<u8>(), 0..2048), raw in any::<bool>()) {
            let link = if raw { LinkType::RawIp } else { LinkType::Ethernet };
            let _ = summarize(link, &data);
        }

        /// Every prefix of a valid frame decodes or is reported, never panics.
        #[test]
        fn every_truncation_of_a_valid_frame_is_handled(cut in 0usize..60) {
            let syn = tcp_syn();
            let _ = summarize(LinkType::Ethernet, &syn[..cut.min(syn.len())]);
        }
    }
}
