//! containerd's own containers in their OCI bundles (pre-start attach):
//! `ctr run`, nerdctl, any client of a namespace that is not the CRI's.

use portwarden_core::{Container, OciBundle};

use crate::CONTAINERD;

/// Set by containerd's CRI plugin on its containers: those are the CRI
/// adapter's to name.
const CRI_TYPE: &str = "io.kubernetes.cri.container-type";

/// A containerd container, when the bundle is in a shim's task directory
/// and not a CRI one; its namespace is the directory above it.
pub(crate) fn identify(bundle: &OciBundle) -> Option<Container> {
    if !bundle.in_containerd_task_dir() || bundle.annotation(CRI_TYPE).is_some() {
        return None;
    }
    let mut c = bundle.container(CONTAINERD);
    c.namespace = bundle.parent_name().map(str::to_owned);
    c.name = bundle.annotation("nerdctl/name").unwrap_or(&bundle.id).to_owned();
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ctr_container_is_named_by_its_id_in_its_namespace() {
        let b = OciBundle {
            id: "job-1".into(),
            dir: "/run/containerd/io.containerd.runtime.v2.task/default/job-1".into(),
            ..OciBundle::default()
        };
        let c = identify(&b).expect("containerd's");
        assert_eq!((c.name.as_str(), c.namespace.as_deref()), ("job-1", Some("default")));
        let cri = OciBundle { annotations: [(CRI_TYPE.into(), "sandbox".into())].into(), ..b };
        assert!(identify(&cri).is_none());
    }
}
