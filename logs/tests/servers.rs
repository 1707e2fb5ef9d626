//! The syslog and forward servers on loopback, fed the protocol's every
//! mode and the bad input the issue lists: each case counted, the
//! connection kept where the protocol allows, nothing panics.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portwarden_core::{LogBatch, LogRecord};
use portwarden_core::{LogSender, LogStats, ResumePoints};
use portwarden_logs::{ForwardOptions, ForwardServer, Resolver, SyslogOptions, SyslogServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const MAX: usize = 1024;

struct Harness {
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
    rx: mpsc::Receiver<LogBatch>,
    stats: Arc<LogStats>,
    cancel: CancellationToken,
}

impl Harness {
    async fn take(&mut self, n: usize) -> Vec<LogRecord> {
        let mut got = Vec::new();
        while got.len() < n {
            let batch = tokio::time::timeout(Duration::from_secs(10), self.rx.recv()).await.expect("records in time");
            got.extend(batch.expect("server alive"));
        }
        got
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn syslog() -> Harness {
    let stats = Arc::new(LogStats::default());
    let options = SyslogOptions {
        bind: [127, 0, 0, 1].into(),
        tcp_port: Some(0),
        udp_port: Some(0),
        allowed: Vec::new(),
        max_message: MAX,
    };
    let server = SyslogServer::bind(options, Resolver::default(), Arc::clone(&stats)).await.unwrap();
    let (tcp, udp) = (server.tcp_addr().unwrap(), server.udp_addr());
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(LogSender::new(tx, ResumePoints::default()), cancel.clone()));
    Harness { tcp, udp, rx, stats, cancel }
}

async fn forward() -> Harness {
    let stats = Arc::new(LogStats::default());
    let options = ForwardOptions {
        bind: [127, 0, 0, 1].into(),
        port: Some(0),
        unix_socket: None,
        allowed: Vec::new(),
        max_message: MAX,
        max_chunk: 64 << 10,
    };
    let server = ForwardServer::bind(options, Resolver::default(), Arc::clone(&stats)).await.unwrap();
    let tcp = server.tcp_addr().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    tokio::spawn(server.run(LogSender::new(tx, ResumePoints::default()), cancel.clone()));
    Harness { tcp, udp: None, rx, stats, cancel }
}

#[tokio::test]
async fn syslog_bad_input_is_counted_and_the_connection_lives() {
    let mut h = syslog().await;
    let mut s = TcpStream::connect(h.tcp).await.unwrap();
    let long = "z".repeat(MAX * 3);
    let mut wire = Vec::new();
    wire.extend_from_slice(b"<13>1 2026-11-27T13:00:00Z h app - - - first\n");
    // A length that says more than the frame holds is not a number here.
    wire.extend_from_slice(b"12x <13>not a length\n");
    // Over the limit, octet-counted and newline-framed.
    wire.extend_from_slice(format!("{} <13>{long}", long.len() + 4).as_bytes());
    wire.extend_from_slice(format!("<13>{long}\n").as_bytes());
    // Invalid UTF-8.
    wire.extend_from_slice(b"<13>Nov 27 13:00:00 h t: bad \xff\xfe bytes\n");
    wire.extend_from_slice(b"<13>1 - - - - - - last\n");
    s.write_all(&wire).await.unwrap();
    let got = h.take(6).await;
    let msgs: Vec<&str> = got.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(msgs[0], "first");
    assert_eq!(msgs[1], "12x <13>not a length", "kept whole, counted");
    assert!(got[2].truncated && got[3].truncated);
    assert!(got[2].message.len() <= MAX && got[3].message.len() <= MAX);
    assert_eq!(msgs[4], "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(msgs[5], "last", "the connection survived all of it");
    let s_ = h.stats.snapshot();
    assert_eq!((s_.framing_errors, s_.truncated), (1, 2));
    // A length that promises more than ever arrives: kept, marked, counted.
    s.write_all(b"500 <13>short").await.unwrap();
    drop(s);
    let got = h.take(1).await;
    assert_eq!((got[0].message.as_str(), got[0].truncated), ("short", true));
    assert_eq!(h.stats.framing_errors.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn syslog_udp_datagrams_are_messages() {
    let mut h = syslog().await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(b"<14>Nov 27 13:00:00 host app[12]: over udp\n", h.udp.unwrap()).await.unwrap();
    let got = h.take(1).await;
    assert_eq!(got[0].message, "over udp");
    assert_eq!(got[0].host.as_deref(), Some("host"));
    assert!(got[0].fields.iter().any(|(k, v)| k == "procid" && v == "12"));
}

fn str_(buf: &mut Vec<u8>, s: &str) {
    rmp::encode::write_str(buf, s).unwrap();
}

fn event_time(buf: &mut Vec<u8>, secs: u32, nanos: u32) {
    rmp::encode::write_ext_meta(buf, 8, 0).unwrap();
    buf.extend_from_slice(&secs.to_be_bytes());
    buf.extend_from_slice(&nanos.to_be_bytes());
}

fn record(buf: &mut Vec<u8>, log: &str) {
    rmp::encode::write_map_len(buf, 2).unwrap();
    str_(buf, "log");
    str_(buf, log);
    str_(buf, "source");
    str_(buf, "stderr");
}

fn entry(buf: &mut Vec<u8>, log: &str) {
    rmp::encode::write_array_len(buf, 2).unwrap();
    event_time(buf, 1_795_784_400, 5);
    record(buf, log);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `[tag, entries-as-bin, {"chunk": id, "compressed"?: "gzip"}]`.
fn packed(buf: &mut Vec<u8>, entries: &[u8], chunk: &str, compressed: bool) {
    rmp::encode::write_array_len(buf, 3).unwrap();
    str_(buf, "app.packed");
    rmp::encode::write_bin(buf, entries).unwrap();
    rmp::encode::write_map_len(buf, if compressed { 2 } else { 1 }).unwrap();
    str_(buf, "chunk");
    str_(buf, chunk);
    if compressed {
        str_(buf, "compressed");
        str_(buf, "gzip");
    }
}

async fn read_ack(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("ack in time").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn forward_every_mode_event_time_and_acks() {
    let mut h = forward().await;
    let mut s = TcpStream::connect(h.tcp).await.unwrap();
    // Message mode, integer time, with an ack request.
    let mut m = Vec::new();
    rmp::encode::write_array_len(&mut m, 4).unwrap();
    str_(&mut m, "app.message");
    rmp::encode::write_uint(&mut m, 1_795_784_400).unwrap();
    record(&mut m, "message mode");
    rmp::encode::write_map_len(&mut m, 1).unwrap();
    str_(&mut m, "chunk");
    str_(&mut m, "c1");
    s.write_all(&m).await.unwrap();
    assert!(read_ack(&mut s).await.contains("c1"));
    // Forward mode with EventTime.
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    str_(&mut f, "app.forward");
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    entry(&mut f, "forward 1");
    entry(&mut f, "forward 2");
    s.write_all(&f).await.unwrap();
    // PackedForward and CompressedPackedForward.
    let mut entries = Vec::new();
    entry(&mut entries, "packed 1");
    entry(&mut entries, "packed 2");
    let mut p = Vec::new();
    packed(&mut p, &entries, "c2", false);
    packed(&mut p, &gzip(&entries), "c3", true);
    s.write_all(&p).await.unwrap();
    let acks = read_ack(&mut s).await;
    let got = h.take(7).await;
    let msgs: Vec<&str> = got.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(msgs, ["message mode", "forward 1", "forward 2", "packed 1", "packed 2", "packed 1", "packed 2"]);
    assert_eq!(got[1].timestamp, std::time::UNIX_EPOCH + Duration::from_nanos(1_795_784_400_000_000_005));
    assert_eq!(got[1].stream, Some(portwarden_core::LogStream::Stderr));
    let acks = if acks.contains("c3") { acks } else { acks + &read_ack(&mut s).await };
    assert!(acks.contains("c2") && acks.contains("c3"), "{acks}");
}

#[tokio::test]
async fn forward_bad_input_is_bounded_and_counted() {
    let mut h = forward().await;
    // A gzip bomb: 10 MiB of zeros inflating past the 64 KiB limit.
    let mut s = TcpStream::connect(h.tcp).await.unwrap();
    let bomb = gzip(&vec![0u8; 10 << 20]);
    let mut p = Vec::new();
    packed(&mut p, &bomb, "bomb", true);
    // A valid msgpack value that is not a forward message, then a good one.
    rmp::encode::write_uint(&mut p, 7).unwrap();
    let mut ok = Vec::new();
    entry(&mut ok, "still alive");
    packed(&mut p, &ok, "ok", false);
    s.write_all(&p).await.unwrap();
    let got = h.take(1).await;
    assert_eq!(got[0].message, "still alive");
    let stats = h.stats.snapshot();
    assert_eq!((stats.decompression_limit, stats.invalid_forward), (1, 1));
    // Bytes that are not msgpack at all: counted, connection closed.
    let mut s = TcpStream::connect(h.tcp).await.unwrap();
    s.write_all(b"\xc1 this is not msgpack").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "closed");
    assert_eq!(h.stats.invalid_forward.load(Ordering::Relaxed), 2);
}
