//! gRPC statuses to core error kinds.

use portwarden_core::Error;
use tonic::Status;

/// Maps a failed call on `request` to the kind callers branch on.
pub(crate) fn error(request: &str, endpoint: &std::path::Path, status: Status) -> Error {
    let (code, message) = (status.code() as i32, status.message().to_owned());
    Error::from_grpc(request, endpoint, code, &message, status)
}
