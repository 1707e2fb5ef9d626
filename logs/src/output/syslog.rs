//! RFC 5424 with octet counting (RFC 6587) over TCP, or over TLS (RFC 5425),
//! to a remote syslog. The container's identity goes in STRUCTURED-DATA
//! under the SD-ID `portwarden@32473` (32473 is the documentation
//! enterprise number).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portwarden_core::time::{rfc3339_nanos, unix_nanos};
use portwarden_core::{LogRecord, LogStream};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tracing::{info, warn};

use super::tls::{TlsConfig, TlsFiles};
use super::{Output, WhenFull};

/// How long connecting, or a write the receiver does not take, may last.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the receiver, plain or TLS.
type Stream = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Sends records to a remote syslog, reconnecting as needed.
pub struct SyslogOutput {
    address: String,
    host: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    stream: Option<Stream>,
    buf: Vec<u8>,
    when_full: WhenFull,
    io_timeout: Duration,
}

impl SyslogOutput {
    /// Sends to `address` (`host:port`) over plain TCP; records without a
    /// sending host get `host`.
    pub fn new(address: String, host: String) -> Self {
        Self {
            address,
            host,
            tls: None,
            stream: None,
            buf: Vec::new(),
            when_full: WhenFull::Block,
            io_timeout: IO_TIMEOUT,
        }
    }

    /// Sends over TLS (RFC 5425), verifying the receiver's certificate
    /// against `tls.ca`, with the client certificate when one is given.
    pub fn with_tls(mut self, tls: &TlsConfig) -> Result<Self, String> {
        let files = TlsFiles::load(tls)?;
        let host = self.address.rsplit_once(':').map_or(self.address.as_str(), |(h, _)| h);
        let name = files.server_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned());
        let name = ServerName::try_from(name).map_err(|e| format!("TLS server name: {e}"))?;
        self.tls = Some((TlsConnector::from(Arc::new(files.rustls()?)), name));
        Ok(self)
    }

    /// How long connecting, or a write the receiver does not take, may
    /// last before the connection is made again (default 30 s).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// What the pipeline does when its queue is full.
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    async fn connect(&self) -> io::Result<Stream> {
        let tcp = TcpStream::connect(&self.address).await?;
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        })
    }

    fn frame(&self, r: &LogRecord, out: &mut Vec<u8>) {
        // facility user (1); stderr is an error, everything else informational.
        let severity = if r.stream == Some(LogStream::Stderr) { 3 } else { 6 };
        let c = r.container.as_deref();
        let app = c.map(|c| c.display_name()).unwrap_or("portwarden");
        let procid = c.and_then(|c| c.pid).map_or_else(|| "-".to_owned(), |p| p.to_string());
        let mut msg = format!(
            "<{}>1 {} {} {} {} {} ",
            8 + severity,
            rfc3339_nanos(unix_nanos(r.timestamp)),
            header(r.host.as_deref().unwrap_or(&self.host), 255),
            header(app, 48),
            header(&procid, 128),
            header(r.origin.as_str(), 32),
        );
        let mut sd = Vec::new();
        if let Some(c) = c {
            sd.push(("container_id", c.id.as_str().to_owned()));
            sd.push(("container_name", c.name.clone()));
            sd.push(("image", c.image.clone()));
            sd.push(("runtime", c.runtime.as_str().to_owned()));
            if let Some(p) = &c.pod {
                sd.push(("pod", format!("{}/{}", p.namespace, p.name)));
                sd.push(("pod_uid", p.uid.clone()));
            }
        } else if let Some(claimed) = &r.claimed {
            if let Some(id) = &claimed.id {
                sd.push(("container_id", id.clone()));
            }
            if let Some(name) = &claimed.name {
                sd.push(("container_name", name.clone()));
            }
        }
        if let Some(s) = r.stream {
            sd.push(("stream", s.as_str().to_owned()));
        }
        if r.truncated {
            sd.push(("truncated", "true".to_owned()));
        }
        if sd.is_empty() {
            msg.push('-');
        } else {
            msg.push_str("[portwarden@32473");
            for (k, v) in sd {
                msg.push(' ');
                msg.push_str(k);
                msg.push_str("=\"");
                for ch in v.chars() {
                    if matches!(ch, '"' | '\\' | ']') {
                        msg.push('\\');
                    }
                    msg.push(ch);
                }
                msg.push('"');
            }
            msg.push(']');
        }
        msg.push(' ');
        // An EVE event goes whole, as JSON, so the SIEM keeps every field.
        msg.push_str(r.raw.as_deref().unwrap_or(&r.message));
        out.extend_from_slice(msg.len().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(msg.as_bytes());
    }
}

/// A header field: printable US-ASCII without spaces, bounded, `-` if empty.
fn header(s: &str, max: usize) -> String {
    let cleaned: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if cleaned.is_empty() { "-".into() } else { cleaned }
}

#[async_trait]
impl Output for SyslogOutput {
    fn when_full(&self) -> WhenFull {
        self.when_full
    }

    fn name(&self) -> String {
        let scheme = if self.tls.is_some() { "syslog+tls" } else { "syslog" };
        format!("{scheme}:{}", self.address)
    }

    async fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        for r in records {
            self.frame(r, &mut buf);
        }
        self.buf = buf;
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.stream.is_none() {
            let connected = tokio::time::timeout(self.io_timeout, self.connect())
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "no connection in time")));
            let stream = connected.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.name())))?;
            info!(output = %self.name(), "connected to remote syslog");
            self.stream = Some(stream);
        }
        let result = match self.stream.as_mut() {
            // TLS keeps written data in its own buffer until flushed. A
            // receiver that accepts but never reads would hold the write
            // forever: it times out, and the connection is made again.
            Some(s) => {
                let write = async {
                    s.write_all(&self.buf).await?;
                    s.flush().await
                };
                tokio::time::timeout(self.io_timeout, write).await.unwrap_or_else(|_| {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "the receiver stopped taking data"))
                })
            }
            None => Ok(()),
        };
        match &result {
            Ok(()) => self.buf.clear(),
            // Sent again whole on a new connection: the receiver may see
            // part of it twice (TCP syslog has no acknowledgements).
            Err(e) => {
                warn!(address = %self.address, error = %e, "remote syslog write failed; reconnecting");
                self.stream = None;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use portwarden_core::LogOrigin;

    use super::*;

    #[tokio::test]
    async fn a_receiver_that_accepts_and_never_reads_times_out_and_is_left() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // Accepts, then holds the connection without reading.
        let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let mut out = SyslogOutput::new(address, "h".into()).io_timeout(Duration::from_millis(500));
        let big = LogRecord::new(SystemTime::now(), LogOrigin::Syslog, None, "x".repeat(1 << 20));
        for _ in 0..32 {
            out.write(std::slice::from_ref(&big)).await.unwrap();
        }
        let err = out.flush().await.expect_err("more than the socket buffers take");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(out.stream.is_none(), "the connection is made again next time");
        assert!(!out.buf.is_empty(), "nothing is lost: the frames wait for the next attempt");
        drop(held);
    }
}
