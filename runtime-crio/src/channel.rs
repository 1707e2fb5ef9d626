//! A gRPC channel over a unix socket, and gRPC statuses as core errors.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use portwarden_core::Error;
use tokio::net::UnixStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects a gRPC channel to the CRI endpoint at `socket`, for embedders
/// that need CRI calls Portwarden does not make. It reconnects by itself after the runtime
/// restarts. The URI is never dialled: the connector opens the socket.
pub async fn connect(socket: &Path) -> Result<Channel, Error> {
    let path: PathBuf = socket.to_path_buf();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| Error::unavailable(socket.display().to_string(), e))
}

/// Maps a failed call on `request` to the kind callers branch on.
pub(crate) fn error(request: &str, socket: &Path, status: Status) -> Error {
    let (code, message) = (status.code() as i32, status.message().to_owned());
    Error::from_grpc(request, socket, code, &message, status)
}
