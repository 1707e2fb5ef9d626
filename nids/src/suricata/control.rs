//! A client for Suricata's command socket (`unix-command`), which answers
//! JSON commands. The agent asks it how many packets Suricata has read, so
//! that at shutdown Suricata is stopped only once it has read everything the
//! mirror wrote.

use std::io;
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// An open, greeted connection to Suricata's command socket.
pub struct Control {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Control {
    /// Connects and says which protocol version the agent speaks.
    pub async fn connect(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path).await?;
        let mut control = Self { stream, buf: Vec::new() };
        control.call(json!({"version": "0.2"})).await?;
        Ok(control)
    }

    /// Sends one command and returns its `message`; an answer other than
    /// `OK` is an error carrying Suricata's message.
    pub async fn command(&mut self, name: &str, arguments: Option<Value>) -> io::Result<Value> {
        let mut request = json!({"command": name});
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        self.call(request).await
    }

    /// Packets Suricata has read from `iface`, and those its kernel ring dropped.
    pub async fn iface_counters(&mut self, iface: &str) -> io::Result<(u64, u64)> {
        let m = self.command("iface-stat", Some(json!({"iface": iface}))).await?;
        let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        Ok((n("pkts"), n("drop")))
    }

    async fn call(&mut self, request: Value) -> io::Result<Value> {
        let mut line = request.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes()).await?;
        self.buf.clear();
        // The answer is one JSON object; read until it parses.
        loop {
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "Suricata closed its command socket"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Ok(answer) = serde_json::from_slice::<Value>(&self.buf) {
                let message = answer.get("message").cloned().unwrap_or(Value::Null);
                return match answer.get("return").and_then(Value::as_str) {
                    Some("OK") => Ok(message),
                    _ => Err(io::Error::other(format!("Suricata answered: {message}"))),
                };
            }
            if self.buf.len() > 1 << 20 {
                return Err(io::Error::other("Suricata's answer is not JSON"));
            }
        }
    }
}
