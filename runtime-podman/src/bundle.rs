//! Podman's containers in their OCI bundles (pre-start attach).

use portwarden_core::{Container, OciBundle};

use crate::PODMAN;

/// A Podman container: libpod marks every bundle it writes. Its name comes
/// later, from the inventory (`podman create` reported it before the start).
pub(crate) fn identify(bundle: &OciBundle) -> Option<Container> {
    (bundle.annotation("io.container.manager") == Some("libpod")).then(|| bundle.container(PODMAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpod_marks_its_bundles() {
        let b = OciBundle {
            id: "a383d1a9dd70".into(),
            annotations: [("io.container.manager".into(), "libpod".into())].into(),
            ..OciBundle::default()
        };
        assert_eq!(identify(&b).map(|c| c.runtime), Some(PODMAN));
        assert!(identify(&OciBundle::default()).is_none());
    }
}
