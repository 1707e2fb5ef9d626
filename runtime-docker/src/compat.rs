//! For other runtimes that serve a Docker-style API (Podman): the HTTP
//! client, the event stream decoder, and who is answering on a socket.
//! Podman's API is Docker's plus its own `/libpod` endpoints, and it
//! answers Docker's `/_ping` and `/version` too, so a Docker socket and a
//! Podman socket can only be told apart by what `/version` lists.

use portwarden_core::Result;

pub use crate::api::NetworkSettings;
pub use crate::client::DockerClient;
pub use crate::events::decode as decode_events;
pub use crate::runtime::{is_safe_id, percent_encode};

use crate::api;

/// The engine behind a Docker-style socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Docker Engine.
    Docker {
        /// Its product name (`Docker Engine - Community`, ...).
        name: String,
        /// Its version.
        version: String,
        /// The Engine API version it speaks.
        api_version: String,
    },
    /// Podman, through its Docker-compatible API.
    Podman {
        /// Podman's version.
        version: String,
    },
}

/// Asks `GET /version` who answers: Podman lists a `Podman Engine`
/// component, Docker an `Engine`.
pub async fn engine(client: &DockerClient) -> Result<Engine> {
    let v: api::Version = client.get_json("/version").await?;
    Ok(identify(v))
}

fn identify(v: api::Version) -> Engine {
    if let Some(podman) = v.components.iter().find(|c| c.name == "Podman Engine") {
        return Engine::Podman { version: podman.version.clone() };
    }
    let name = v.platform.map(|p| p.name).filter(|n| !n.is_empty()).unwrap_or_else(|| "Docker Engine".into());
    Engine::Docker { name, version: v.version, api_version: v.api_version }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_is_told_from_docker_by_its_components() {
        let podman = r#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1"},{"Name":"Conmon","Version":"2.1.6"}],"Version":"4.3.1","ApiVersion":"1.41"}"#;
        let docker = r#"{"Platform":{"Name":""},"Components":[{"Name":"Engine","Version":"20.10.24+dfsg1"},{"Name":"containerd","Version":"1.6.20"}],"Version":"20.10.24+dfsg1","ApiVersion":"1.41"}"#;
        assert_eq!(identify(serde_json::from_str(podman).unwrap()), Engine::Podman { version: "4.3.1".into() });
        assert_eq!(
            identify(serde_json::from_str(docker).unwrap()),
            Engine::Docker {
                name: "Docker Engine".into(),
                version: "20.10.24+dfsg1".into(),
                api_version: "1.41".into()
            }
        );
    }
}
