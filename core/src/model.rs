//! The container model every other crate speaks.
//!
//! These types are runtime-neutral: adapters translate Docker, containerd and
//! CRI objects into them, and nothing here names a runtime's own types. Their
//! serde form is the JSON shape in the design (`portwarden ps --json`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// A container's full id, exactly as its runtime reports it.
///
/// Docker and CRI ids are 64 hex digits; containerd ids are free-form. The id
/// is never shortened: two runtimes report the same container under the same
/// full id, which is how the inventory recognises it. [`ContainerId::short`]
/// exists for display only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(String);

impl ContainerId {
    /// Wraps a full id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, as `docker ps` shows them.
    pub fn short(&self) -> &str {
        let end = self.0.char_indices().nth(12).map_or(self.0.len(), |(i, _)| i);
        &self.0[..end]
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A runtime's name, as its provider gives it: `docker`, `containerd`,
/// `cri`, `podman`, or whatever an embedder's provider calls itself.
///
/// The set of runtimes is open: core never matches on a name. It is the
/// key of a runtime's config section, the value of `--runtime` and of the
/// `runtime` field in JSON and the API.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuntimeName(Cow<'static, str>);

impl RuntimeName {
    /// A name known at compile time; usable in `const` items.
    pub const fn from_static(name: &'static str) -> Self {
        Self(Cow::Borrowed(name))
    }

    /// A name made at run time.
    pub fn new(name: impl Into<String>) -> Self {
        Self(Cow::Owned(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for RuntimeName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RuntimeName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A container's lifecycle state, normalised across runtimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Running: it has a PID and a network namespace.
    Running,
    /// Frozen; still has its PID and namespace.
    Paused,
    /// Being restarted by its runtime.
    Restarting,
    /// Being removed.
    Removing,
    /// Stopped.
    Exited,
    /// The runtime failed to stop or remove it.
    Dead,
    /// The runtime reported a state this version does not know.
    Unknown,
}

impl ContainerState {
    /// True while the container's processes exist (running or paused), so
    /// its PID and network namespace are usable.
    pub fn is_alive(self) -> bool {
        matches!(self, ContainerState::Running | ContainerState::Paused)
    }

    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Kubernetes pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
}

impl Pod {
    /// The label keys the kubelet (dockershim, cri-dockerd, CRI) puts on every
    /// container it creates.
    pub const NAME_LABEL: &'static str = "io.kubernetes.pod.name";
    /// See [`Pod::NAME_LABEL`].
    pub const NAMESPACE_LABEL: &'static str = "io.kubernetes.pod.namespace";
    /// See [`Pod::NAME_LABEL`].
    pub const UID_LABEL: &'static str = "io.kubernetes.pod.uid";

    /// Reads a pod from the kubelet's labels; `None` unless name and namespace
    /// are both present (the uid may be missing on hand-made containers).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Pod> {
        let name = labels.get(Self::NAME_LABEL)?;
        let namespace = labels.get(Self::NAMESPACE_LABEL)?;
        Some(Pod {
            name: name.clone(),
            namespace: namespace.clone(),
            uid: labels.get(Self::UID_LABEL).cloned().unwrap_or_default(),
        })
    }
}

/// One container, as the inventory knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The full id.
    pub id: ContainerId,
    /// The runtime whose report this is.
    pub runtime: RuntimeName,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// The image reference the container was created from.
    pub image: String,
    /// The lifecycle state.
    pub state: ContainerState,
    /// The PID of the container's init process in the host's PID namespace,
    /// while it is alive.
    pub pid: Option<u32>,
    /// The runtime's labels.
    pub labels: BTreeMap<String, String>,
    /// The containerd namespace (`moby`, `k8s.io`, ...), when the runtime has them.
    pub namespace: Option<String>,
    /// The Kubernetes pod, when known.
    pub pod: Option<Pod>,
    /// The container's IP addresses.
    pub ips: Vec<IpAddr>,
    /// The network namespace to enter for capture: `<proc root>/<pid>/ns/net`.
    pub netns: Option<PathBuf>,
    /// True when the container shares the host's network namespace, so its
    /// traffic is captured once, as the host's.
    pub host_network: bool,
    /// True for a pod's sandbox (pause, infra) container: it holds the
    /// pod's namespaces and runs nothing of its own. Each adapter knows its
    /// runtime's marks for it (CRI's labels, dockershim's, Podman's infra).
    #[serde(default)]
    pub sandbox: bool,
    /// The CRI log file holding its stdout and stderr, when the runtime keeps one.
    pub log_path: Option<PathBuf>,
    /// Every runtime that reports this container, filled in by the
    /// [`Inventory`](crate::Inventory); adapters leave it empty.
    pub reported_by: Vec<RuntimeName>,
}

impl Container {
    /// A container known only by its runtime and id: unnamed, in state
    /// `unknown`, with nothing else known yet. Adapters fill in what they
    /// know, usually with struct update syntax:
    /// `Container { name, pid, ..Container::new(runtime, id) }`.
    pub fn new(runtime: RuntimeName, id: ContainerId) -> Self {
        Self {
            id,
            runtime,
            name: String::new(),
            image: String::new(),
            state: ContainerState::Unknown,
            pid: None,
            labels: BTreeMap::new(),
            namespace: None,
            pod: None,
            ips: Vec::new(),
            netns: None,
            host_network: false,
            sandbox: false,
            log_path: None,
            reported_by: Vec::new(),
        }
    }

    /// The network namespace path of a process under a proc root.
    pub fn netns_path(proc_root: &Path, pid: u32) -> PathBuf {
        proc_root.join(pid.to_string()).join("ns/net")
    }

    /// A short human label: the name, or the short id when unnamed.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() { self.id.short() } else { &self.name }
    }

    /// The order of a namespace's members: the containers that run
    /// something by name, then pod sandboxes, so the first member (which a
    /// capture, its alerts and its interfaces are named after) is never a
    /// pause container while the pod has another.
    pub fn member_order(&self) -> (bool, &str, &str) {
        (self.sandbox, &self.name, self.id.as_str())
    }
}

/// What happened to a container, as a runtime's event stream reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The container's full id.
    pub id: ContainerId,
    /// What happened.
    pub kind: RuntimeEventKind,
    /// When the runtime says it happened.
    pub time: SystemTime,
}

/// The lifecycle transitions the inventory acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeEventKind {
    /// The container was created.
    Created,
    /// Its init process started.
    Started,
    /// Its init process exited.
    Exited {
        /// The exit code, when the runtime reported one.
        exit_code: Option<i32>,
    },
    /// It was frozen.
    Paused,
    /// It was thawed.
    Resumed,
    /// Its metadata changed (for example, a rename).
    Changed,
    /// It was removed.
    Deleted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_id_is_twelve_chars_or_the_whole_id() {
        let long = ContainerId::new("0123456789abcdef0123");
        assert_eq!(long.short(), "0123456789ab");
        assert_eq!(ContainerId::new("web").short(), "web");
    }

    #[test]
    fn pod_needs_name_and_namespace() {
        let mut labels = BTreeMap::new();
        labels.insert(Pod::NAME_LABEL.to_owned(), "web-0".to_owned());
        assert_eq!(Pod::from_labels(&labels), None);
        labels.insert(Pod::NAMESPACE_LABEL.to_owned(), "prod".to_owned());
        let pod = Pod::from_labels(&labels).expect("pod");
        assert_eq!((pod.name.as_str(), pod.namespace.as_str(), pod.uid.as_str()), ("web-0", "prod", ""));
    }

    #[test]
    fn container_json_has_the_design_shape() {
        let c = Container {
            name: "web".into(),
            image: "nginx:1".into(),
            state: ContainerState::Running,
            pid: Some(42),
            ips: vec!["172.18.0.2".parse().expect("ip")],
            netns: Some("/proc/42/ns/net".into()),
            reported_by: vec![RuntimeName::from_static("docker")],
            ..Container::new(RuntimeName::from_static("docker"), ContainerId::new("abc"))
        };
        let v = serde_json::to_value(&c).expect("json");
        for key in ["id", "runtime", "name", "image", "state", "pid", "labels", "namespace", "pod", "ips"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["runtime"], "docker");
        assert_eq!(v["state"], "running");
        assert_eq!(v["ips"][0], "172.18.0.2");
        assert!(v["pod"].is_null());
    }

    #[test]
    fn a_pods_sandbox_sorts_after_the_containers_that_run_something() {
        let member = |name: &str, sandbox: bool| Container {
            name: name.into(),
            state: ContainerState::Running,
            pid: Some(1),
            sandbox,
            ..Container::new(RuntimeName::from_static("containerd"), ContainerId::new(name))
        };
        let mut members = [member("client", false), member("POD", true), member("POD2", true), member("app", false)];
        members.sort_by(|a, b| a.member_order().cmp(&b.member_order()));
        let names: Vec<&str> = members.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "client", "POD", "POD2"]);
    }
}
