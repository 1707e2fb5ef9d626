//! A small packet generator for the capture benchmark: UDP frames of a
//! fixed size sent out of one interface with `sendmmsg` on an AF_PACKET
//! socket, at a given rate or as fast as possible.
//!
//! `pktgen IFACE DST_MAC COUNT [RATE_PPS] [FRAME_BYTES]` (rate 0: top speed).
//! Prints `sent N in S s (R pps)`.

use std::ffi::CString;
use std::time::{Duration, Instant};

const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: pktgen IFACE DST_MAC COUNT [RATE_PPS] [FRAME_BYTES]");
        std::process::exit(2);
    }
    let iface = &args[1];
    let dst: Vec<u8> = args[2].split(':').map(|h| u8::from_str_radix(h, 16).expect("hex MAC")).collect();
    let count: u64 = args[3].parse().expect("count");
    let rate: u64 = args.get(4).map_or(0, |r| r.parse().expect("rate"));
    let size: usize = args.get(5).map_or(64, |s| s.parse().expect("size"));

    let payload = vec![0x5a; size.saturating_sub(14 + 20 + 8).max(1)];
    let builder = etherparse::PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 1], dst.try_into().expect("6-byte MAC"))
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(40000, 9);
    let mut frame = Vec::new();
    builder.write(&mut frame, &payload).expect("frame");

    let name = CString::new(iface.as_str()).expect("name");
    // SAFETY: plain libc calls on values owned here.
    let (fd, ifindex) = unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert!(ifindex > 0, "no interface {iface}");
        // Frames this socket sends are not looped back into it.
        let one: libc::c_int = 1;
        libc::setsockopt(fd, 263, 23, (&raw const one).cast(), 4); // PACKET_QDISC_BYPASS
        (fd, ifindex)
    };
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;

    let mut iov: Vec<libc::iovec> =
        (0..BATCH).map(|_| libc::iovec { iov_base: frame.as_ptr() as *mut _, iov_len: frame.len() }).collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|i| {
            // SAFETY: zeroed msghdr is valid; pointers set below stay alive.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&raw mut addr).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = &raw mut iov[i];
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();

    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let n = (count - sent).min(BATCH as u64) as usize;
        // SAFETY: `msgs` holds `n` valid mmsghdrs.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == std::io::ErrorKind::WouldBlock {
                continue;
            }
            panic!("sendmmsg: {e}");
        }
        sent += r as u64;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("sent {sent} in {secs:.3} s ({:.0} pps)", sent as f64 / secs);
}
