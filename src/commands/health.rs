//! `portwarden health`: the running agent's `/healthz`, for health checks
//! in images without a shell or curl (an ECS task's `healthCheck`).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Config;

/// How long the check waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Prints what `/healthz` says; exit 0 when it answers 200.
pub(crate) fn health(config: &Config) -> anyhow::Result<ExitCode> {
    let mut at = config.metrics.listen;
    // An agent listening on every address answers on loopback.
    if at.ip().is_unspecified() {
        let loopback = if at.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) };
        at = SocketAddr::new(loopback, at.port());
    }
    match ask(at) {
        Ok((code, body)) => {
            print!("{body}");
            Ok(if code == 200 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err(e) => {
            eprintln!("portwarden health: no answer from http://{at}/healthz: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// One `GET /healthz`: the status code and the body.
fn ask(at: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&at, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {at}\r\n\r\n").as_bytes())?;
    let mut reply = String::new();
    stream.take(64 << 10).read_to_string(&mut reply)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP reply");
    let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((code, body))
}
