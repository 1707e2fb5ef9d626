//! Kubernetes containers in their OCI bundles (pre-start attach): the CRI
//! implementations annotate each bundle with the pod and the container, in
//! their own words.

use portwarden_core::{Container, OciBundle, Pod};

use crate::CRI;

/// One CRI implementation's annotation keys.
struct Keys {
    /// `sandbox` for a pod's sandbox (pause) container.
    kind: &'static str,
    container: &'static str,
    pod: &'static str,
    namespace: &'static str,
    uid: &'static str,
    image: &'static str,
}

/// containerd's CRI plugin.
const CONTAINERD: Keys = Keys {
    kind: "io.kubernetes.cri.container-type",
    container: "io.kubernetes.cri.container-name",
    pod: "io.kubernetes.cri.sandbox-name",
    namespace: "io.kubernetes.cri.sandbox-namespace",
    uid: "io.kubernetes.cri.sandbox-uid",
    image: "io.kubernetes.cri.image-name",
};

/// CRI-O (Podman writes some `cri-o` keys too, but never the type).
const CRIO: Keys = Keys {
    kind: "io.kubernetes.cri-o.ContainerType",
    container: "io.kubernetes.container.name",
    pod: "io.kubernetes.pod.name",
    namespace: "io.kubernetes.pod.namespace",
    uid: "io.kubernetes.pod.uid",
    image: "io.kubernetes.cri-o.ImageName",
};

/// A CRI container or pod sandbox, named as the CRI names it.
pub(crate) fn identify(bundle: &OciBundle) -> Option<Container> {
    let (keys, kind) = [CONTAINERD, CRIO].into_iter().find_map(|k| bundle.annotation(k.kind).map(|v| (k, v)))?;
    let get = |key: &str| bundle.annotation(key).unwrap_or_default().to_owned();
    let mut c = bundle.container(CRI);
    c.sandbox = kind == "sandbox";
    c.name = get(keys.container);
    c.image = get(keys.image);
    let pod = Pod { name: get(keys.pod), namespace: get(keys.namespace), uid: get(keys.uid) };
    if c.name.is_empty() && c.sandbox {
        c.name.clone_from(&pod.name);
    }
    c.namespace = (!pod.namespace.is_empty()).then(|| pod.namespace.clone());
    c.pod = (!pod.name.is_empty() && !pod.namespace.is_empty()).then_some(pod);
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(pairs: &[(&str, &str)]) -> OciBundle {
        OciBundle {
            id: "c1".into(),
            annotations: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            ..OciBundle::default()
        }
    }

    #[test]
    fn containerds_and_crios_annotations_name_the_pod() {
        let c = identify(&bundle(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", "app"),
            ("io.kubernetes.cri.sandbox-name", "web-0"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.sandbox-uid", "u1"),
        ]))
        .expect("containerd CRI");
        assert_eq!((c.name.as_str(), c.sandbox), ("app", false));
        assert_eq!(c.pod.map(|p| (p.name, p.namespace, p.uid)), Some(("web-0".into(), "shop".into(), "u1".into())));
        let s = identify(&bundle(&[
            ("io.kubernetes.cri-o.ContainerType", "sandbox"),
            ("io.kubernetes.pod.name", "web-1"),
            ("io.kubernetes.pod.namespace", "shop"),
        ]))
        .expect("CRI-O");
        assert!(s.sandbox);
        assert_eq!(s.name, "web-1");
        // Podman writes `cri-o` keys, but not the type: not a CRI container.
        assert!(identify(&bundle(&[("io.kubernetes.cri-o.TTY", "false")])).is_none());
    }
}
