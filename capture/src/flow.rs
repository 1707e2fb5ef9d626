//! Per-capture flow table, emitting Suricata-style EVE `flow` records.
//!
//! A flow is keyed by protocol and both endpoints; its first frame decides
//! which side is the client (`src`), as in Suricata. A flow ends when it is
//! idle past its timeout, shortly after FIN or RST, or when the capture
//! stops; the record is then emitted once. The table is bounded: when full,
//! new flows are counted and not tracked.

use std::collections::HashMap;
use std::net::IpAddr;

use portwarden_core::time::eve_timestamp;
use serde_json::{Value, json};

use crate::decode::{Proto, Summary};

/// Idle times after which flows end, in nanoseconds of packet time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// TCP flows that completed a handshake. Default: 120 s.
    pub tcp_established_ns: u64,
    /// TCP flows that saw FIN or RST. Default: 5 s (late ACKs still count).
    pub tcp_closed_ns: u64,
    /// Everything else (UDP, ICMP, half-open TCP). Default: 30 s.
    pub other_ns: u64,
    /// Most flows tracked at once. Default: 65536.
    pub max_flows: usize,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self {
            tcp_established_ns: 120_000_000_000,
            tcp_closed_ns: 5_000_000_000,
            other_ns: 30_000_000_000,
            max_flows: 65_536,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    proto: Proto,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
}

/// One tracked flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Unique within this process.
    pub id: u64,
    /// Protocol.
    pub proto: Proto,
    /// The side that sent the first frame.
    pub src: (IpAddr, u16),
    /// The other side.
    pub dst: (IpAddr, u16),
    /// First frame, ns since the epoch.
    pub start_ns: u64,
    /// Last frame.
    pub last_ns: u64,
    /// Frames client to server.
    pub pkts_toserver: u64,
    /// Frames server to client.
    pub pkts_toclient: u64,
    /// Bytes client to server (wire length).
    pub bytes_toserver: u64,
    /// Bytes server to client.
    pub bytes_toclient: u64,
    /// TCP flags seen client to server.
    pub flags_ts: u8,
    /// TCP flags seen server to client.
    pub flags_tc: u8,
}

/// Why a flow record was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Idle past its timeout, or closed and quiet.
    Timeout,
    /// The capture stopped.
    Shutdown,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

impl Flow {
    fn closed(&self) -> bool {
        (self.flags_ts | self.flags_tc) & (FIN | RST) != 0
    }

    fn state(&self) -> &'static str {
        if self.proto == Proto::Tcp && self.closed() {
            "closed"
        } else if self.pkts_toclient > 0 {
            "established"
        } else {
            "new"
        }
    }

    /// The EVE `flow` event, with `container` (the design's object, or null)
    /// added.
    pub fn to_eve(&self, reason: EndReason, container: &Value) -> Value {
        let mut eve = json!({
            "timestamp": eve_timestamp(self.last_ns),
            "flow_id": self.id,
            "event_type": "flow",
            "src_ip": self.src.0.to_string(),
            "dest_ip": self.dst.0.to_string(),
            "proto": self.proto.eve_name(),
            "flow": {
                "pkts_toserver": self.pkts_toserver,
                "pkts_toclient": self.pkts_toclient,
                "bytes_toserver": self.bytes_toserver,
                "bytes_toclient": self.bytes_toclient,
                "start": eve_timestamp(self.start_ns),
                "end": eve_timestamp(self.last_ns),
                "age": (self.last_ns.saturating_sub(self.start_ns)) / 1_000_000_000,
                "state": self.state(),
                "reason": match reason { EndReason::Timeout => "timeout", EndReason::Shutdown => "shutdown" },
                "alerted": false,
            },
            "container": container,
        });
        if matches!(self.proto, Proto::Tcp | Proto::Udp) {
            eve["src_port"] = json!(self.src.1);
            eve["dest_port"] = json!(self.dst.1);
        }
        if self.proto == Proto::Tcp {
            let all = self.flags_ts | self.flags_tc;
            let mut tcp = json!({
                "tcp_flags": format!("{all:02x}"),
                "tcp_flags_ts": format!("{:02x}", self.flags_ts),
                "tcp_flags_tc": format!("{:02x}", self.flags_tc),
            });
            for (bit, name) in [(SYN, "syn"), (FIN, "fin"), (RST, "rst"), (PSH, "psh"), (ACK, "ack"), (URG, "urg")] {
                if all & bit != 0 {
                    tcp[name] = json!(true);
                }
            }
            eve["tcp"] = tcp;
        }
        eve
    }
}

/// Counters of what the table saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowCounters {
    /// Frames attributed to a tracked flow.
    pub packets: u64,
    /// Frames that could not be decoded.
    pub decode_errors: u64,
    /// Frames that were not IP (ARP, ...).
    pub non_ip: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// Frames not tracked because the table was full when their flow was new.
    pub untracked_frames: u64,
}

/// Flows of one capture.
pub struct FlowTable {
    timeouts: FlowTimeouts,
    flows: HashMap<Key, Flow>,
    next_id: u64,
    id_base: u64,
    /// What the table saw.
    pub counters: FlowCounters,
}

impl FlowTable {
    /// An empty table; `id_base` keeps flow ids of different captures apart.
    pub fn new(timeouts: FlowTimeouts, id_base: u64) -> FlowTable {
        FlowTable { timeouts, flows: HashMap::new(), next_id: 0, id_base, counters: FlowCounters::default() }
    }

    /// Tracks one decoded frame of `wire_len` bytes seen at `ts_ns`.
    pub fn observe(&mut self, ts_ns: u64, s: &Summary, wire_len: u32) {
        if s.fragment {
            self.counters.fragments += 1;
        }
        let forward = Key { proto: s.proto, src: (s.src, s.sport), dst: (s.dst, s.dport) };
        let reverse = Key { proto: s.proto, src: forward.dst, dst: forward.src };
        let (key, toserver) = if self.flows.contains_key(&forward) {
            (forward, true)
        } else if self.flows.contains_key(&reverse) {
            (reverse, false)
        } else {
            if self.flows.len() >= self.timeouts.max_flows {
                self.counters.untracked_frames += 1;
                return;
            }
            self.next_id += 1;
            let id = self.id_base.wrapping_add(self.next_id);
            let flow = Flow {
                id,
                proto: s.proto,
                src: forward.src,
                dst: forward.dst,
                start_ns: ts_ns,
                last_ns: ts_ns,
                pkts_toserver: 0,
                pkts_toclient: 0,
                bytes_toserver: 0,
                bytes_toclient: 0,
                flags_ts: 0,
                flags_tc: 0,
            };
            self.flows.insert(forward, flow);
            (forward, true)
        };
        let Some(flow) = self.flows.get_mut(&key) else { return };
        self.counters.packets += 1;
        flow.last_ns = flow.last_ns.max(ts_ns);
        if toserver {
            flow.pkts_toserver += 1;
            flow.bytes_toserver += u64::from(wire_len);
            flow.flags_ts |= s.tcp_flags;
        } else {
            flow.pkts_toclient += 1;
            flow.bytes_toclient += u64::from(wire_len);
            flow.flags_tc |= s.tcp_flags;
        }
    }

    /// Ends the flows idle past their timeout at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Flow> {
        let t = self.timeouts;
        let mut ended = Vec::new();
        self.flows.retain(|_, f| {
            let limit = match (f.proto, f.closed(), f.pkts_toclient > 0) {
                (Proto::Tcp, true, _) => t.tcp_closed_ns,
                (Proto::Tcp, false, true) => t.tcp_established_ns,
                _ => t.other_ns,
            };
            let keep = now_ns.saturating_sub(f.last_ns) < limit;
            if !keep {
                ended.push(f.clone());
            }
            keep
        });
        ended.sort_by_key(|f| f.id);
        ended
    }

    /// Ends every flow (the capture stopped).
    pub fn drain(&mut self) -> Vec<Flow> {
        let mut all: Vec<Flow> = self.flows.drain().map(|(_, f)| f).collect();
        all.sort_by_key(|f| f.id);
        all
    }

    /// Flows tracked now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Summary {
        Summary {
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            sport,
            dport,
            proto: Proto::Tcp,
            tcp_flags: flags,
            fragment: false,
        }
    }

    #[test]
    fn both_directions_make_one_flow_with_the_first_sender_as_client() {
        let mut t = FlowTable::new(FlowTimeouts::default(), 0);
        t.observe(1_000, &frame("10.0.0.1", 40000, "10.0.0.2", 80, SYN), 74);
        t.observe(2_000, &frame("10.0.0.2", 80, "10.0.0.1", 40000, SYN | ACK), 74);
        t.observe(3_000, &frame("10.0.0.1", 40000, "10.0.0.2", 80, ACK), 66);
        assert_eq!(t.len(), 1);
        let f = &t.drain()[0];
        assert_eq!((f.pkts_toserver, f.pkts_toclient, f.bytes_toserver), (2, 1, 140));
        let eve = f.to_eve(EndReason::Shutdown, &Value::Null);
        assert_eq!(eve["src_ip"], "10.0.0.1");
        assert_eq!(eve["dest_port"], 80);
        assert_eq!(eve["proto"], "TCP");
        assert_eq!(eve["flow"]["state"], "established");
        assert_eq!(eve["flow"]["reason"], "shutdown");
        assert_eq!(eve["tcp"]["tcp_flags"], "12");
        assert_eq!(eve["tcp"]["syn"], true);
    }

    #[test]
    fn closed_flows_end_sooner_than_open_ones() {
        let mut t = FlowTable::new(FlowTimeouts::default(), 0);
        t.observe(0, &frame("10.0.0.1", 1, "10.0.0.2", 2, SYN), 60);
        t.observe(0, &frame("10.0.0.2", 2, "10.0.0.1", 1, SYN | ACK), 60);
        t.observe(0, &frame("10.0.0.3", 1, "10.0.0.2", 2, FIN | ACK), 60);
        let ended = t.expire(6_000_000_000);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].src.0, "10.0.0.3".parse::<IpAddr>().expect("ip"));
        assert!(t.expire(119_000_000_000).is_empty());
        assert_eq!(t.expire(121_000_000_000).len(), 1);
    }

    #[test]
    fn a_full_table_counts_instead_of_growing() {
        let timeouts = FlowTimeouts { max_flows: 2, ..FlowTimeouts::default() };
        let mut t = FlowTable::new(timeouts, 0);
        for port in 1..=3 {
            t.observe(0, &frame("10.0.0.1", port, "10.0.0.2", 80, SYN), 60);
        }
        assert_eq!((t.len(), t.counters.untracked_frames, t.counters.packets), (2, 1, 2));
    }
}
