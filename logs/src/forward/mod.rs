//! The Fluentd forward server (TCP, and optionally a unix socket), so
//! Docker's fluentd log driver, Fluent Bit and FireLens can send directly.
//! Records from Docker's driver (`container_id`, `container_name`,
//! `source`, `log`, partial fields) are attributed and re-assembled.

mod msgpack;
mod protocol;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use portwarden_core::{LogOrigin, LogRecord, LogSender, LogStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) use msgpack::{DecodeError, Value, read as read_value};
pub(crate) use protocol::{ProtocolError, interpret, unpack};

use crate::net::{Cidr, allowed};
use crate::resolve::{Resolver, claimed};
use portwarden_core::LogStats;
use portwarden_core::text::{Assembler, limited, lossy};

/// Where and how the forward server listens.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// Address to bind.
    pub bind: IpAddr,
    /// TCP port, or none for no TCP listener.
    pub port: Option<u16>,
    /// A unix socket to listen on as well.
    pub unix_socket: Option<PathBuf>,
    /// Source networks allowed to connect over TCP; empty allows all.
    pub allowed: Vec<Cidr>,
    /// Longest message kept; longer ones are cut and marked.
    pub max_message: usize,
    /// Largest forward message accepted, and the most a compressed one may
    /// inflate to.
    pub max_chunk: usize,
}

/// Open partial messages per connection before they are flushed as cut.
const MAX_OPEN_PARTIALS: usize = 1024;

/// The bound forward listeners.
pub struct ForwardServer {
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    options: ForwardOptions,
    resolver: Resolver,
    stats: Arc<LogStats>,
}

impl ForwardServer {
    /// Binds the configured listeners.
    pub async fn bind(options: ForwardOptions, resolver: Resolver, stats: Arc<LogStats>) -> crate::Result<Self> {
        let tcp = match options.port {
            Some(port) => Some(TcpListener::bind((options.bind, port)).await.map_err(|source| {
                crate::Error::Listen { what: "forward", address: format!("tcp port {port}"), source }
            })?),
            None => None,
        };
        let unix = match &options.unix_socket {
            Some(path) => {
                // A socket left by a previous run would make bind fail.
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                Some(UnixListener::bind(path).map_err(|source| crate::Error::Listen {
                    what: "forward",
                    address: path.display().to_string(),
                    source,
                })?)
            }
            None => None,
        };
        Ok(Self { tcp, unix, options, resolver, stats })
    }

    /// The bound TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `cancel`.
    pub async fn run(self, out: LogSender, cancel: CancellationToken) {
        let ctx = Arc::new(Context { options: self.options, resolver: self.resolver, stats: self.stats });
        let tcp = async {
            let Some(listener) = self.tcp else { return };
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "forward listening (tcp)");
            }
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = cancel.cancelled() => return,
                };
                match accepted {
                    Ok((stream, peer)) if allowed(&ctx.options.allowed, peer.ip()) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve(stream, Arc::clone(&ctx), out.clone(), cancel.child_token()));
                    }
                    Ok((_, peer)) => {
                        ctx.stats.refused_peers.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "forward connection refused: source not allowed");
                    }
                    Err(e) => {
                        warn!(error = %e, "forward accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        let unix = async {
            let Some(listener) = self.unix else { return };
            info!(path = ?ctx.options.unix_socket, "forward listening (unix)");
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = cancel.cancelled() => return,
                };
                match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, Arc::clone(&ctx), out.clone(), cancel.child_token()));
                    }
                    Err(e) => {
                        warn!(error = %e, "forward accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::join!(tcp, unix);
    }
}

struct Context {
    options: ForwardOptions,
    resolver: Resolver,
    stats: Arc<LogStats>,
}

/// One connection: read messages, hand their records on (waiting while the
/// pipeline is full, which closes the TCP window), then acknowledge.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ctx: Arc<Context>,
    out: LogSender,
    cancel: CancellationToken,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut partials = Partials::default();
    // Re-parse an incomplete message only once this much more has arrived.
    let mut need = 1;
    loop {
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        let n = tokio::select! {
            r = stream.read_buf(&mut buf) => r.unwrap_or(0),
            () = cancel.cancelled() => return,
        };
        if n == 0 {
            if !buf.is_empty() {
                ctx.stats.framing_errors.fetch_add(1, Ordering::Relaxed);
                debug!(bytes = buf.len(), "forward connection closed inside a message");
            }
            return;
        }
        if buf.len() < need {
            continue;
        }
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut pos = 0;
        let mut close = false;
        loop {
            match read_value(&buf[pos..]) {
                Ok((value, used)) => {
                    pos += used;
                    ctx.message(&value, &mut partials, &mut batch, &mut acks);
                }
                Err(DecodeError::Incomplete) => {
                    let pending = buf.len() - pos;
                    if pending > ctx.options.max_chunk {
                        ctx.stats.framing_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(
                            bytes = pending,
                            limit = ctx.options.max_chunk,
                            "forward message over the size limit; closing the connection"
                        );
                        close = true;
                    }
                    need = pending + (pending / 4).max(1);
                    break;
                }
                Err(DecodeError::Invalid(why)) => {
                    // msgpack has no resynchronisation point: the rest of
                    // this connection cannot be trusted.
                    ctx.stats.invalid_forward.fetch_add(1, Ordering::Relaxed);
                    warn!(reason = why, "forward data is not msgpack; closing the connection");
                    close = true;
                    break;
                }
            }
        }
        buf.drain(..pos);
        if pos > 0 && buf.len() < need {
            need = buf.len().max(1);
        }
        if !batch.is_empty() && out.send(batch).await.is_err() {
            return;
        }
        for chunk in acks {
            if stream.write_all(&ack(&chunk)).await.is_err() {
                return;
            }
            ctx.stats.acks.fetch_add(1, Ordering::Relaxed);
        }
        if close {
            return;
        }
    }
}

/// `{"ack": chunk}`.
fn ack(chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + 8);
    let _ = rmp::encode::write_map_len(&mut out, 1);
    let _ = rmp::encode::write_str(&mut out, "ack");
    let _ = rmp::encode::write_str_len(&mut out, chunk.len() as u32);
    out.extend_from_slice(chunk);
    out
}

/// Docker's partial messages being put back together, by `partial_id`.
#[derive(Default)]
struct Partials {
    open: HashMap<String, (Assembler, u64)>,
}

impl Context {
    fn message(&self, value: &Value<'_>, partials: &mut Partials, batch: &mut Vec<LogRecord>, acks: &mut Vec<Vec<u8>>) {
        let message = match interpret(value, self.options.max_chunk) {
            Ok(m) => m,
            Err(e) => {
                let counter = if e == ProtocolError::TooLarge {
                    &self.stats.decompression_limit
                } else {
                    &self.stats.invalid_forward
                };
                counter.fetch_add(1, Ordering::Relaxed);
                debug!(error = ?e, "forward message rejected");
                return;
            }
        };
        let packed;
        let events = match &message.packed {
            Some(bytes) => match unpack(bytes) {
                Ok(events) => {
                    packed = events;
                    &packed
                }
                Err(_) => {
                    self.stats.invalid_forward.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            None => &message.events,
        };
        for (time, record) in events {
            self.record(message.tag, *time, record, partials, batch);
        }
        if let Some(chunk) = message.chunk {
            acks.push(chunk.to_vec());
        }
    }

    fn record(&self, tag: &str, time: u64, record: &Value<'_>, partials: &mut Partials, batch: &mut Vec<LogRecord>) {
        let Value::Map(entries) = record else {
            self.stats.invalid_forward.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let body = ["log", "message", "msg"].iter().find_map(|k| record.get(k));
        let body_bytes: Vec<u8> = match body {
            Some(Value::Str(b) | Value::Bin(b)) => b.to_vec(),
            Some(other) => to_json(other).to_string().into_bytes(),
            None => to_json(record).to_string().into_bytes(),
        };
        let max = self.options.max_message;
        // Docker splits lines over 16 KiB; its fluentd driver marks the pieces.
        let (message, truncated, time) = if text("partial_message") == Some("true") {
            let id = text("partial_id").unwrap_or_default().to_owned();
            if partials.open.len() >= MAX_OPEN_PARTIALS && !partials.open.contains_key(&id) {
                for (_, (mut a, t)) in partials.open.drain() {
                    let (m, _) = a.take();
                    batch.push(self.build(tag, t, m, true, record));
                }
            }
            let (assembler, first) = partials.open.entry(id.clone()).or_insert_with(|| (Assembler::default(), time));
            assembler.push(body_bytes.strip_suffix(b"\n").unwrap_or(&body_bytes), max);
            if text("partial_last") != Some("true") {
                return;
            }
            let first = *first;
            let (mut a, _) = partials.open.remove(&id).unwrap_or_default();
            let (m, t) = a.take();
            (m, t, first)
        } else {
            let body = body_bytes.strip_suffix(b"\n").unwrap_or(&body_bytes);
            let (m, t) = limited(body, max);
            (m, t, time)
        };
        let mut r = self.build(tag, time, message, truncated, record);
        for (k, v) in entries {
            let Some(k) = k.as_str() else { continue };
            if matches!(k, "log" | "message" | "msg" | "source" | "stream" | "container_id" | "container_name")
                || k.starts_with("partial_")
            {
                continue;
            }
            let v = match v {
                Value::Str(s) | Value::Bin(s) => lossy(s),
                other => to_json(other).to_string(),
            };
            r.fields.push((Cow::Owned(k.to_owned()), v));
        }
        batch.push(r);
    }

    fn build(&self, tag: &str, time: u64, message: String, truncated: bool, record: &Value<'_>) -> LogRecord {
        let text = |k: &str| record.get(k).and_then(Value::as_str);
        let stream = text("source").or_else(|| text("stream")).and_then(LogStream::parse);
        let mut r = LogRecord::new(UNIX_EPOCH + Duration::from_nanos(time), LogOrigin::Forward, stream, message);
        r.truncated = truncated;
        if truncated {
            self.stats.truncated.fetch_add(1, Ordering::Relaxed);
        }
        let (id, name) = (text("container_id"), text("container_name"));
        // Docker's default tag is `docker.<short id>`; FireLens uses `<name>-firelens-<task>`.
        let tag_id = tag.strip_prefix("docker.");
        r.container = self.resolver.first_match([id, name, tag_id]);
        if r.container.is_none() {
            r.claimed = claimed(id, name, None);
        }
        r.fields.push((Cow::Borrowed("tag"), tag.to_owned()));
        r
    }
}

/// A msgpack value as JSON, for fields that are not strings.
pub(crate) fn to_json(v: &Value<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map(J::from).unwrap_or_else(|_| J::String(i.to_string())),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) | Value::Bin(s) => J::String(lossy(s)),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().map_or_else(|| to_json(k).to_string(), str::to_owned), to_json(v)))
                .collect(),
        ),
        Value::Ext(ty, data) => J::String(format!("ext({ty}):{}", data.len())),
    }
}
