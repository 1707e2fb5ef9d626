//! What an OCI bundle tells of a container before it runs: the pre-start
//! hook reads the bundle a runtime was asked to `create`, and the runtime
//! adapters say whose container it is (each knows its own annotations and
//! directory layout; core knows none).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::{Container, ContainerId, ContainerState, RuntimeName};

/// The runtime name of a container no adapter recognised: a plain OCI
/// runtime invocation (`runc create` by some other manager).
pub const OCI: RuntimeName = RuntimeName::from_static("oci");

/// A container about to be started, as its OCI bundle describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciBundle {
    /// The id the runtime was given (its last argument): the container id
    /// every runtime adapter uses too.
    pub id: String,
    /// The bundle directory, as a path on the host.
    pub dir: PathBuf,
    /// `annotations` of its `config.json`.
    pub annotations: BTreeMap<String, String>,
    /// `hostname` of its `config.json`.
    pub hostname: Option<String>,
}

impl OciBundle {
    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The name of the directory holding the bundle: containerd's shims
    /// keep bundles at `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`,
    /// so for them this is the containerd namespace.
    pub fn parent_name(&self) -> Option<&str> {
        self.dir.parent().and_then(Path::file_name).and_then(|n| n.to_str())
    }

    /// True when the bundle sits in a containerd v2 shim's task directory.
    pub fn in_containerd_task_dir(&self) -> bool {
        self.dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .is_some_and(|n| n == "io.containerd.runtime.v2.task")
    }

    /// A running container of `runtime` with this bundle's id and nothing
    /// else known yet; adapters fill in what their annotations say.
    pub fn container(&self, runtime: RuntimeName) -> Container {
        let mut c = Container::new(runtime, ContainerId::new(self.id.clone()));
        c.state = ContainerState::Running;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_task_dirs_are_told_by_their_place() {
        let b = OciBundle {
            id: "abc".into(),
            dir: "/run/containerd/io.containerd.runtime.v2.task/moby/abc".into(),
            ..OciBundle::default()
        };
        assert!(b.in_containerd_task_dir());
        assert_eq!(b.parent_name(), Some("moby"));
        let other = OciBundle { dir: "/run/crio/overlay-containers/abc/userdata".into(), ..b };
        assert!(!other.in_containerd_task_dir());
    }
}
