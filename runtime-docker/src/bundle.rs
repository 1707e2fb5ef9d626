//! Docker's containers in their OCI bundles (pre-start attach): dockerd
//! runs them through containerd in its own namespace, `moby`.

use portwarden_core::{Container, OciBundle};

use crate::DOCKER;

/// The containerd namespace dockerd uses (`--containerd-namespace`).
const MOBY: &str = "moby";

/// A Docker container, when the bundle is in containerd's `moby` task
/// directory. Its name comes later, from the inventory (`docker create`
/// reported it before the start).
pub(crate) fn identify(bundle: &OciBundle) -> Option<Container> {
    (bundle.in_containerd_task_dir() && bundle.parent_name() == Some(MOBY)).then(|| bundle.container(DOCKER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_bundles_live_in_the_moby_namespace() {
        let mut b = OciBundle {
            id: "3b9ad5521b36".into(),
            dir: "/run/containerd/io.containerd.runtime.v2.task/moby/3b9ad5521b36".into(),
            ..OciBundle::default()
        };
        assert_eq!(identify(&b).map(|c| c.runtime), Some(DOCKER));
        b.dir = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3b9ad5521b36".into();
        assert!(identify(&b).is_none());
    }
}
