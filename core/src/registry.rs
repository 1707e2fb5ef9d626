//! Runtime detection: which sockets answer, and why the others were rejected.
//!
//! The [`Registry`] holds one [`RuntimeProvider`] per runtime kind. At startup
//! [`Registry::detect`] checks every candidate socket at once: the provider's
//! default paths under the host root, or the paths pinned in config. Each
//! candidate goes through the same steps, and the first that fails is its
//! [`Rejection`]:
//!
//! 1. resolve the path inside the host root and `stat` it (missing, not a
//!    socket, permission denied; a provider whose endpoint is not a socket
//!    skips the socket checks);
//! 2. skip it if an earlier candidate of the same kind is the same socket;
//! 3. connect (nobody listening, permission denied, timed out);
//! 4. the provider's version call (wrong protocol, timed out).
//!
//! Steps 3 and 4 share one deadline, so a socket that accepts and then never
//! answers costs at most the probe timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::net::UnixStream;
use tokio::time::{Instant, timeout_at};

use crate::error::Error;
use crate::error::ErrorChain;
use crate::hostpath::resolve_in_root;
use crate::model::{Container, RuntimeName};
use crate::provider::{RuntimeEnv, RuntimeProvider};
use crate::runtime::{ContainerRuntime, RuntimeInfo};

/// The providers this process knows about.
#[derive(Clone, Default)]
pub struct Registry {
    providers: Vec<Registered>,
}

#[derive(Clone)]
struct Registered {
    provider: Arc<dyn RuntimeProvider>,
    /// The provider's Rust type, to name it in errors.
    type_name: &'static str,
}

/// Two providers registered under one runtime name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("runtime name `{name}` is registered twice: by {first} and by {second}")]
pub struct DuplicateRuntime {
    /// The name.
    pub name: RuntimeName,
    /// The provider registered first (its Rust type).
    pub first: &'static str,
    /// The one registered later.
    pub second: &'static str,
}

/// Where to look and how long to wait.
#[derive(Clone, Debug)]
pub struct DetectOptions {
    /// The host's filesystem as the agent sees it (`/` on the host, often
    /// `/host` in a container). Default socket paths are looked up under it.
    pub host_root: PathBuf,
    /// Passed to every connected runtime.
    pub env: RuntimeEnv,
    /// The deadline for connecting to one socket and getting its version.
    pub probe_timeout: Duration,
    /// Sockets pinned per runtime: they replace that runtime's defaults and
    /// are used exactly as given, not under the host root.
    pub pinned: BTreeMap<RuntimeName, Vec<PathBuf>>,
    /// Runtimes not to use at all.
    pub disabled: BTreeSet<RuntimeName>,
    /// When set, the only runtimes to use (`--runtime`); the others are
    /// reported as disabled.
    pub only: Option<BTreeSet<RuntimeName>>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            host_root: PathBuf::from("/"),
            env: RuntimeEnv::default(),
            probe_timeout: Duration::from_secs(2),
            pinned: BTreeMap::new(),
            disabled: BTreeSet::new(),
            only: None,
        }
    }
}

/// The outcome of [`Registry::detect`].
#[derive(Default)]
pub struct Detection {
    /// Every runtime that answered, in registration and path order.
    pub runtimes: Vec<Detected>,
    /// Every candidate that did not, with the reason.
    pub rejected: Vec<Rejected>,
}

/// A runtime that answered its probe, connected.
#[derive(Clone)]
pub struct Detected {
    /// The socket as configured or defaulted (under the host root).
    pub socket: PathBuf,
    /// That socket with its symlinks resolved within the host root: what
    /// connects to it (a `/var/run` link is absolute and would leave the
    /// host root when followed in the agent's own root).
    pub endpoint: PathBuf,
    /// What it said about itself.
    pub info: RuntimeInfo,
    /// The client.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The provider that connected it (for its [log source](RuntimeProvider::log_source)).
    pub provider: Arc<dyn RuntimeProvider>,
}

/// A candidate socket that was not used. Serializes as
/// `{"runtime", "socket", "reason": <code>, "detail": <sentence>}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The runtime it was a candidate for.
    pub runtime: RuntimeName,
    /// The socket path (under the host root, or as pinned).
    pub socket: PathBuf,
    /// Why it was not used.
    pub reason: Rejection,
}

/// Why a candidate socket was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The runtime is disabled in config.
    Disabled,
    /// Nothing exists at the path.
    Missing,
    /// The path exists but is not a unix socket.
    NotASocket,
    /// The agent may not stat or connect to it.
    PermissionDenied(String),
    /// A socket with nobody listening (connection refused).
    NotListening,
    /// No answer within the probe timeout.
    TimedOut(Duration),
    /// Something answered, but not this runtime's protocol.
    WrongProtocol(String),
    /// The same socket as another candidate, reached by another path.
    Duplicate(PathBuf),
    /// Any other failure.
    Failed(String),
}

impl Rejection {
    /// A stable machine-readable name: `missing`, `not_a_socket`, ...
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Disabled => "disabled",
            Rejection::Missing => "missing",
            Rejection::NotASocket => "not_a_socket",
            Rejection::PermissionDenied(_) => "permission_denied",
            Rejection::NotListening => "not_listening",
            Rejection::TimedOut(_) => "timed_out",
            Rejection::WrongProtocol(_) => "wrong_protocol",
            Rejection::Duplicate(_) => "duplicate",
            Rejection::Failed(_) => "failed",
        }
    }
}

impl Serialize for Rejected {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Rejected", 4)?;
        st.serialize_field("runtime", &self.runtime)?;
        st.serialize_field("socket", &self.socket)?;
        st.serialize_field("reason", self.reason.code())?;
        st.serialize_field("detail", &self.reason.to_string())?;
        st.end()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Disabled => f.write_str("disabled (config or --runtime)"),
            Rejection::Missing => f.write_str("missing"),
            Rejection::NotASocket => f.write_str("not a socket"),
            Rejection::PermissionDenied(d) => write!(f, "permission denied: {d}"),
            Rejection::NotListening => f.write_str("nobody listening (connection refused)"),
            Rejection::TimedOut(after) => write!(f, "timed out after {after:?}"),
            Rejection::WrongProtocol(d) => write!(f, "wrong protocol: {d}"),
            Rejection::Duplicate(of) => write!(f, "same socket as {}", of.display()),
            Rejection::Failed(d) => f.write_str(d),
        }
    }
}

/// One socket to try.
struct Candidate {
    provider: Arc<dyn RuntimeProvider>,
    /// As shown to the user.
    socket: PathBuf,
    /// With symlinks resolved (inside the host root for defaults).
    resolved: io::Result<PathBuf>,
}

impl Registry {
    /// An empty registry. The `portwarden` crate's `default_registry()`
    /// registers the built-in runtimes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider; builder form of [`Registry::register`].
    pub fn with_provider<P: RuntimeProvider + 'static>(mut self, provider: P) -> Self {
        self.register(provider);
        self
    }

    /// Adds a provider. Detection tries them in registration order. Two
    /// providers with one name are reported by [`Registry::validate`].
    pub fn register<P: RuntimeProvider + 'static>(&mut self, provider: P) {
        self.providers.push(Registered { provider: Arc::new(provider), type_name: std::any::type_name::<P>() });
    }

    /// The registered providers.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn RuntimeProvider>> {
        self.providers.iter().map(|r| &r.provider)
    }

    /// Who a container about to start is, by the first provider that
    /// recognises its bundle; a plain [`OCI`](crate::OCI) container with the
    /// bundle's id when none does.
    pub fn identify(&self, bundle: &crate::OciBundle) -> Container {
        self.providers().find_map(|p| p.identify_bundle(bundle)).unwrap_or_else(|| bundle.container(crate::OCI))
    }

    /// The registered runtime names, in registration order.
    pub fn names(&self) -> Vec<RuntimeName> {
        self.providers().map(|p| p.name()).collect()
    }

    /// Checks that every runtime name is registered once.
    pub fn validate(&self) -> Result<(), DuplicateRuntime> {
        for (i, later) in self.providers.iter().enumerate() {
            let name = later.provider.name();
            if let Some(first) = self.providers[..i].iter().find(|r| r.provider.name() == name) {
                return Err(DuplicateRuntime { name, first: first.type_name, second: later.type_name });
            }
        }
        Ok(())
    }

    /// Probes every candidate socket at once and connects to each that answers.
    pub async fn detect(&self, opts: &DetectOptions) -> Detection {
        let mut detection = Detection::default();
        let mut candidates = Vec::new();
        for provider in self.providers() {
            let kind = provider.name();
            let pinned = opts.pinned.get(&kind);
            let excluded = opts.only.as_ref().is_some_and(|only| !only.contains(&kind));
            if excluded || opts.disabled.contains(&kind) {
                for socket in self.candidate_paths(provider.as_ref(), pinned, &opts.host_root) {
                    detection.rejected.push(Rejected { runtime: kind.clone(), socket, reason: Rejection::Disabled });
                }
                continue;
            }
            // (resolved, as shown) of this kind's candidates so far
            let mut seen: Vec<(PathBuf, PathBuf)> = Vec::new();
            for socket in self.candidate_paths(provider.as_ref(), pinned, &opts.host_root) {
                let resolved = if pinned.is_some() {
                    std::fs::canonicalize(&socket).or_else(|e| missing_or(e, &socket))
                } else {
                    let host_path = socket.strip_prefix(&opts.host_root).unwrap_or(&socket);
                    resolve_in_root(&opts.host_root, &Path::new("/").join(host_path))
                };
                // Two paths to one existing socket are one candidate; missing
                // paths are each reported as missing.
                if let Some(path) = resolved.as_ref().ok().filter(|p| p.exists()) {
                    if let Some((_, first)) = seen.iter().find(|(p, _)| p == path) {
                        let reason = Rejection::Duplicate(first.clone());
                        detection.rejected.push(Rejected { runtime: kind.clone(), socket, reason });
                        continue;
                    }
                    seen.push((path.clone(), socket.clone()));
                }
                candidates.push(Candidate { provider: Arc::clone(provider), socket, resolved });
            }
        }

        let outcomes = join_all(candidates.iter().map(|c| check(c, opts))).await;
        for (candidate, outcome) in candidates.into_iter().zip(outcomes) {
            let runtime = candidate.provider.name();
            match outcome {
                Ok((info, client)) => {
                    let (provider, socket) = (candidate.provider, candidate.socket);
                    let endpoint = candidate.resolved.unwrap_or_else(|_| socket.clone());
                    detection.runtimes.push(Detected { socket, endpoint, info, runtime: client, provider });
                }
                Err(reason) => detection.rejected.push(Rejected { runtime, socket: candidate.socket, reason }),
            }
        }
        detection
    }

    fn candidate_paths(
        &self,
        provider: &dyn RuntimeProvider,
        pinned: Option<&Vec<PathBuf>>,
        host_root: &Path,
    ) -> Vec<PathBuf> {
        match pinned {
            Some(paths) => paths.clone(),
            None => provider.default_sockets().iter().map(|p| host_root.join(p.trim_start_matches('/'))).collect(),
        }
    }
}

/// A missing pinned path is still a candidate (rejected as missing later).
fn missing_or(e: io::Error, socket: &Path) -> io::Result<PathBuf> {
    if e.kind() == io::ErrorKind::NotFound { Ok(socket.to_path_buf()) } else { Err(e) }
}

/// Runs the four steps in the module docs for one candidate.
async fn check(
    candidate: &Candidate,
    opts: &DetectOptions,
) -> Result<(RuntimeInfo, Arc<dyn ContainerRuntime>), Rejection> {
    let path = match &candidate.resolved {
        Ok(path) => path,
        Err(e) => return Err(io_rejection(e)),
    };
    let provider = &candidate.provider;
    let socket = provider.endpoint_is_socket();
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() || !socket => {}
        Ok(_) => return Err(Rejection::NotASocket),
        Err(e) => return Err(io_rejection(&e)),
    }

    let deadline = Instant::now() + opts.probe_timeout;
    let timed_out = |_| Rejection::TimedOut(opts.probe_timeout);
    if socket {
        match timeout_at(deadline, UnixStream::connect(path)).await.map_err(timed_out)? {
            Ok(stream) => drop(stream),
            Err(e) => return Err(io_rejection(&e)),
        }
    }
    let info = timeout_at(deadline, provider.probe(path)).await.map_err(timed_out)?.map_err(probe_rejection)?;
    // Connecting dials again (gRPC channels connect eagerly): bound it too.
    let connect =
        tokio::time::timeout(opts.probe_timeout, provider.connect(path, &opts.env)).await.map_err(timed_out)?;
    let client = connect.map_err(|e| Rejection::Failed(ErrorChain(&e).to_string()))?;
    Ok((info, client))
}

fn io_rejection(e: &io::Error) -> Rejection {
    match e.kind() {
        io::ErrorKind::NotFound => Rejection::Missing,
        io::ErrorKind::PermissionDenied => Rejection::PermissionDenied(e.to_string()),
        io::ErrorKind::ConnectionRefused => Rejection::NotListening,
        _ => Rejection::Failed(e.to_string()),
    }
}

fn probe_rejection(e: Error) -> Rejection {
    match e {
        Error::Protocol { detail, .. } => Rejection::WrongProtocol(detail),
        Error::Api { status, message, .. } => Rejection::WrongProtocol(format!("status {status}: {message}")),
        Error::PermissionDenied { what } => Rejection::PermissionDenied(what),
        Error::Timeout { after, .. } => Rejection::TimedOut(after),
        other => Rejection::Failed(ErrorChain(&other).to_string()),
    }
}
