//! Portwarden's own gRPC API, `portwarden.v1`: the generated messages,
//! the client and server stubs, conversions from the agent's model, and
//! helpers to connect to a running agent.
//!
//! A client that lists the containers a running agent knows, then follows
//! the log records of one of them:
//!
//! ```no_run
//! use portwarden_proto::v1::{ListContainersRequest, Selector, StreamLogsRequest};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut agent = portwarden_proto::connect_unix(portwarden_proto::DEFAULT_SOCKET).await?;
//! let reply = agent.list_containers(ListContainersRequest::default()).await?.into_inner();
//! for c in &reply.containers {
//!     println!("{} {} {}", c.runtime, c.name, c.image);
//! }
//! let selector = Selector { containers: vec!["web".into()], ..Default::default() };
//! let request = StreamLogsRequest { selector: Some(selector), ..Default::default() };
//! let mut records = agent.stream_logs(request).await?.into_inner();
//! while let Some(record) = records.message().await? {
//!     println!("{} {}", record.stream, record.message);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod convert;
mod selector;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};

pub use selector::InvalidSelector;

/// The generated `portwarden.v1` package.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    tonic::include_proto!("portwarden.v1");
}

/// A client of the agent's API.
pub type AgentClient = v1::agent_client::AgentClient<Channel>;

/// Where the agent serves its API unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/portwarden/portwarden.sock";

/// Connects to an agent's unix socket. The connection is made now, so a
/// missing socket or a refused connection is reported here.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<AgentClient, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://portwarden.sock")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await?;
    Ok(v1::agent_client::AgentClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connects to an agent's TCP listener with mutual TLS: `ca` verifies the
/// agent, `cert` and `key` (PEM) identify this client.
pub async fn connect_tls(
    address: &str,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    domain: &str,
) -> Result<AgentClient, tonic::transport::Error> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .domain_name(domain);
    let channel = Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls)?.connect().await?;
    Ok(v1::agent_client::AgentClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// The largest message either side accepts: one packet batch carries up to
/// a capture ring block (4 MiB at most) plus framing.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

#[cfg(test)]
mod tests {
    /// The README's client example is this crate's doctest, line for line.
    #[test]
    fn the_readme_example_is_the_doctest() {
        let readme = include_str!("../../README.md");
        let api = readme.find("### The API").expect("the API section");
        let start = api + readme[api..].find("```rust\n").expect("a rust block") + "```rust\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let doc = include_str!("lib.rs");
        for line in readme[start..end].lines() {
            assert!(doc.contains(&format!("//! {line}\n")), "not in the doctest: {line}");
        }
    }
}
