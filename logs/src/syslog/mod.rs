//! The syslog server: TCP (octet-counted or newline-framed, per frame) and
//! UDP, RFC 5424 and RFC 3164, records attributed to containers by the
//! identity in the header (Docker's syslog driver puts the container id in
//! the tag; Fluent Bit's `out_syslog` as the seed sets it up puts it in
//! HOSTNAME and the name in APP-NAME).

mod framing;
mod parse;

use std::borrow::Cow;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use portwarden_core::{LogOrigin, LogRecord, LogSender};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) use framing::Framer;
pub(crate) use parse::{Format, parse};

use crate::net::{Cidr, allowed, now_nanos};
use crate::resolve::{Resolver, claimed, looks_like_container_id};
use portwarden_core::LogStats;
use portwarden_core::text::limited;

/// Where and how the syslog server listens.
#[derive(Clone, Debug)]
pub struct SyslogOptions {
    /// Address to bind.
    pub bind: IpAddr,
    /// TCP port, or none for no TCP listener.
    pub tcp_port: Option<u16>,
    /// UDP port, or none for no UDP listener.
    pub udp_port: Option<u16>,
    /// Source networks allowed to send; empty allows all.
    pub allowed: Vec<Cidr>,
    /// Longest message kept; longer ones are cut and marked.
    pub max_message: usize,
}

/// The bound sockets, so binding errors surface before anything runs.
pub struct SyslogServer {
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    options: SyslogOptions,
    resolver: Resolver,
    stats: Arc<LogStats>,
}

impl SyslogServer {
    /// Binds the configured ports.
    pub async fn bind(options: SyslogOptions, resolver: Resolver, stats: Arc<LogStats>) -> crate::Result<Self> {
        let tcp = match options.tcp_port {
            Some(port) => Some(TcpListener::bind((options.bind, port)).await.map_err(|e| annotate(e, "tcp", port))?),
            None => None,
        };
        let udp = match options.udp_port {
            Some(port) => Some(UdpSocket::bind((options.bind, port)).await.map_err(|e| annotate(e, "udp", port))?),
            None => None,
        };
        Ok(Self { tcp, udp, options, resolver, stats })
    }

    /// The bound TCP address, if any (useful with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound UDP address, if any.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Serves until `cancel`.
    pub async fn run(self, out: LogSender, cancel: CancellationToken) {
        let ctx = Arc::new(Context { options: self.options, resolver: self.resolver, stats: self.stats });
        if let Some(addr) = self.tcp.as_ref().and_then(|l| l.local_addr().ok()) {
            info!(%addr, "syslog listening (tcp)");
        }
        if let Some(addr) = self.udp.as_ref().and_then(|s| s.local_addr().ok()) {
            info!(%addr, "syslog listening (udp)");
        }
        let tcp = async {
            if let Some(listener) = self.tcp {
                accept_loop(listener, Arc::clone(&ctx), out.clone(), cancel.clone()).await;
            }
        };
        let udp = async {
            if let Some(socket) = self.udp {
                udp_loop(socket, Arc::clone(&ctx), out.clone(), cancel.clone()).await;
            }
        };
        tokio::join!(tcp, udp);
    }
}

fn annotate(source: io::Error, proto: &str, port: u16) -> crate::Error {
    crate::Error::Listen { what: "syslog", address: format!("{proto} port {port}"), source }
}

struct Context {
    options: SyslogOptions,
    resolver: Resolver,
    stats: Arc<LogStats>,
}

impl Context {
    /// `now` (nanoseconds) stands in for a missing timestamp and year.
    fn record(&self, frame: &[u8], truncated: bool, now: u64) -> LogRecord {
        let m = parse(frame, now);
        if m.format == Format::Unparsed {
            self.stats.unparsed_syslog.fetch_add(1, Ordering::Relaxed);
        }
        let (message, cut) = limited(m.message, self.options.max_message);
        let timestamp = UNIX_EPOCH + Duration::from_nanos(m.timestamp.unwrap_or(now));
        let mut record = LogRecord::new(timestamp, LogOrigin::Syslog, None, message);
        record.truncated = truncated || cut;
        if record.truncated {
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        record.host = m.hostname.map(str::to_owned);
        record.container = self.resolver.first_match([m.hostname, m.app_name, m.msgid]);
        if record.container.is_none() {
            record.claimed = match (m.hostname, m.app_name) {
                (Some(h), app) if looks_like_container_id(h) => claimed(Some(h), app, m.procid),
                (_, Some(app)) if looks_like_container_id(app) => claimed(Some(app), None, None),
                _ => None,
            };
        }
        // Docker's containers, whichever runtime reported them first.
        let docker =
            |c: &portwarden_core::Container| c.runtime.as_str() == "docker" || c.namespace.as_deref() == Some("moby");
        if record.container.as_deref().is_some_and(docker) {
            record.stream = docker_stream(m.severity);
        }
        let header = [("appname", m.app_name), ("procid", m.procid), ("msgid", m.msgid), ("sd", m.structured_data)];
        let priority = m.facility.zip(m.severity);
        let fields = &mut record.fields;
        fields.reserve_exact(2 * usize::from(priority.is_some()) + header.iter().filter(|(_, v)| v.is_some()).count());
        if let Some((f, s)) = priority {
            fields.push((Cow::Borrowed("facility"), number(f)));
            fields.push((Cow::Borrowed("severity"), number(s)));
        }
        for (k, v) in header {
            if let Some(v) = v {
                fields.push((Cow::Borrowed(k), v.to_owned()));
            }
        }
        record
    }
}

/// A facility or severity as text, without the formatting machinery (this
/// runs for every record).
fn number(n: u8) -> String {
    const TEXT: [&str; 24] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19",
        "20", "21", "22", "23",
    ];
    TEXT.get(usize::from(n)).map_or_else(|| n.to_string(), |t| (*t).to_owned())
}

/// The stream of a line Docker's syslog driver sent: it writes stderr at
/// severity err and stdout at info, whatever the facility.
fn docker_stream(severity: Option<u8>) -> Option<portwarden_core::LogStream> {
    match severity {
        Some(3) => Some(portwarden_core::LogStream::Stderr),
        Some(6) => Some(portwarden_core::LogStream::Stdout),
        _ => None,
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Context>, out: LogSender, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if !allowed(&ctx.options.allowed, peer.ip()) {
                    ctx.stats.refused_peers.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, "syslog connection refused: source not allowed");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, peer, Arc::clone(&ctx), out.clone(), cancel.child_token()));
            }
            Err(e) => {
                // Out of descriptors, usually: wait rather than spin.
                warn!(error = %e, "syslog accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one connection. While the pipeline is full, `send` waits and
/// nothing is read, so the kernel's receive window closes on the sender.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    out: LogSender,
    cancel: CancellationToken,
) {
    let mut framer = Framer::new(ctx.options.max_message);
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            () = cancel.cancelled() => return,
        };
        let eof = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                debug!(%peer, error = %e, "syslog connection failed");
                true
            }
        };
        let mut pos = 0;
        let mut batch = Vec::new();
        let now = now_nanos();
        while let Some(frame) = framer.next(&buf, &mut pos, eof) {
            if frame.malformed {
                ctx.stats.framing_errors.fetch_add(1, Ordering::Relaxed);
            }
            batch.push(ctx.record(&buf[frame.range], frame.truncated, now));
        }
        buf.drain(..pos);
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
        if eof {
            return;
        }
    }
}

async fn udp_loop(socket: UdpSocket, ctx: Arc<Context>, out: LogSender, cancel: CancellationToken) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = cancel.cancelled() => return,
        };
        let mut batch = Vec::new();
        let take = |n: usize, peer: SocketAddr, batch: &mut Vec<LogRecord>, buf: &[u8]| {
            if allowed(&ctx.options.allowed, peer.ip()) {
                let frame = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
                batch.push(ctx.record(frame, false, now_nanos()));
            } else {
                ctx.stats.refused_peers.fetch_add(1, Ordering::Relaxed);
            }
        };
        match received {
            Ok((n, peer)) => take(n, peer, &mut batch, &buf),
            Err(e) => {
                debug!(error = %e, "syslog udp receive failed");
                continue;
            }
        }
        // Drain what else is queued without waiting, as one batch.
        while batch.len() < 256 {
            match socket.try_recv_from(&mut buf) {
                Ok((n, peer)) => take(n, peer, &mut batch, &buf),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        match out.try_send(batch) {
            Ok(()) => {}
            // UDP cannot be re-read or slowed down: drop, and count it.
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                ctx.stats.udp_dropped.fetch_add(count, Ordering::Relaxed);
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
