//! The daemon's gRPC API (`portwarden.v1`): served on a unix socket that
//! only root can use, and optionally on TCP with mutual TLS; and found by
//! the CLI, which uses a running daemon when one answers.

mod packets;
mod records;
mod service;
mod streams;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::Inventory;
use portwarden_proto::v1::agent_server::AgentServer;
use portwarden_proto::{AgentClient, MAX_MESSAGE_BYTES};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{debug, info, warn};

pub(crate) use packets::replay;

use crate::config::{ApiTcpConfig, Config};
use crate::metrics::Telemetry;

/// How long shutdown waits for open calls to end after streams are told to.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves the API until `cancel`. Failures switch the API off with one
/// message; the agent keeps running.
pub(crate) async fn serve(config: Config, inventory: Inventory, telemetry: Arc<Telemetry>, cancel: CancellationToken) {
    let service = service::AgentService::new(&config, inventory, telemetry, cancel.clone());
    let mut servers = tokio::task::JoinSet::new();
    match bind_unix(&config.api.socket) {
        Ok(listener) => {
            info!(socket = %config.api.socket.display(), "API on unix socket");
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let router = Server::builder().add_service(grpc(service.clone()));
            let (cancel, path) = (cancel.clone(), config.api.socket.clone());
            servers.spawn(async move {
                let served = router.serve_with_incoming_shutdown(incoming, cancel.cancelled());
                if let Err(e) = bounded_shutdown(served, &cancel).await {
                    warn!(error = %e, "API server on the unix socket failed");
                }
                let _ = std::fs::remove_file(&path);
            });
        }
        Err(e) => warn!(socket = %config.api.socket.display(), error = %e, "API socket off"),
    }
    if let Some(tcp) = &config.api.tcp {
        match tls(tcp) {
            Ok(tls) => {
                let listen = tcp.listen;
                let cancel = cancel.clone();
                let service = service.clone();
                servers.spawn(async move {
                    let router = match Server::builder().tls_config(tls) {
                        Ok(mut b) => b.add_service(grpc(service)),
                        Err(e) => {
                            warn!(error = %e, "API on TCP off: TLS setup failed");
                            return;
                        }
                    };
                    info!(%listen, "API on TCP (mutual TLS)");
                    let served = router.serve_with_shutdown(listen, cancel.cancelled());
                    if let Err(e) = bounded_shutdown(served, &cancel).await {
                        warn!(%listen, error = %e, "API server on TCP failed");
                    }
                });
            }
            Err(e) => warn!(error = %e, "API on TCP off"),
        }
    }
    while servers.join_next().await.is_some() {}
}

fn grpc(service: service::AgentService) -> AgentServer<service::AgentService> {
    AgentServer::new(service).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Runs a server; once `cancel` fires, gives open calls a short grace.
async fn bounded_shutdown(
    served: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    cancel: &CancellationToken,
) -> Result<(), tonic::transport::Error> {
    tokio::pin!(served);
    tokio::select! {
        r = &mut served => r,
        () = cancel.cancelled() => {
            if tokio::time::timeout(SHUTDOWN_GRACE, served).await.is_err() {
                debug!("API calls still open at shutdown; closing them");
            }
            Ok(())
        }
    }
}

/// Binds the socket so that it is never reachable by others: bound under a
/// temporary name, made 0600, then renamed into place (which also replaces
/// a stale socket a crashed agent left; the host lock says none runs).
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(listener)
}

/// The TCP listener's TLS: our identity, and the CA client certificates
/// must chain to (mutual TLS; no client certificate, no connection).
fn tls(tcp: &ApiTcpConfig) -> anyhow::Result<ServerTlsConfig> {
    let read =
        |p: &Path, what: &str| std::fs::read(p).map_err(|e| anyhow::anyhow!("api.tcp.{what} {}: {e}", p.display()));
    let identity = Identity::from_pem(read(&tcp.cert, "cert")?, read(&tcp.key, "key")?);
    let ca = Certificate::from_pem(read(&tcp.client_ca, "client_ca")?);
    Ok(ServerTlsConfig::new().identity(identity).client_ca_root(ca))
}

/// The running daemon's API, when one answers on the configured socket.
/// `None` (do the work standalone) when none runs, or `--standalone`.
/// A socket that exists but refuses us is worth a word on stderr.
pub(crate) async fn daemon(config: &Config, standalone: bool) -> Option<AgentClient> {
    if standalone {
        return None;
    }
    let path = &config.api.socket;
    if !path.exists() {
        return None;
    }
    match portwarden_proto::connect_unix(path).await {
        Ok(client) => Some(client),
        Err(e) => {
            // A stale socket (refused) means no daemon; a socket we may not
            // open means one runs for another user, which is worth saying.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
                {
                    eprintln!(
                        "portwarden: the daemon's API at {} is root's only ({c}); working standalone",
                        path.display()
                    );
                    break;
                }
                cause = c.source();
            }
            None
        }
    }
}

/// A gRPC error as the CLI reports it: the code and the agent's reason.
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("the daemon said {:?}: {}", status.code(), status.message())
}
