//! Where OCI runtimes and monitors live on the usual hosts (paths on the
//! host; the hook looks for each under the host root).

use crate::invocation::Kind;

/// The binaries marked by default, and what each one is.
pub(crate) const DEFAULT: &[(&str, Kind)] = &[
    // runc, as distributions, Docker's packages and installers place it.
    ("/usr/bin/runc", Kind::Runtime),
    ("/usr/sbin/runc", Kind::Runtime),
    ("/usr/local/bin/runc", Kind::Runtime),
    ("/usr/local/sbin/runc", Kind::Runtime),
    ("/bin/runc", Kind::Runtime),
    ("/sbin/runc", Kind::Runtime),
    ("/usr/lib/cri-o-runc/sbin/runc", Kind::Runtime),
    ("/usr/libexec/crio/runc", Kind::Runtime),
    // Flatcar, GKE's COS, k3s, RKE2, k0s, MicroK8s, Bottlerocket.
    ("/run/torcx/unpack/docker/bin/runc", Kind::Runtime),
    ("/home/kubernetes/bin/runc", Kind::Runtime),
    ("/var/lib/rancher/k3s/data/current/bin/runc", Kind::Runtime),
    ("/var/lib/rancher/rke2/bin/runc", Kind::Runtime),
    ("/var/lib/k0s/bin/runc", Kind::Runtime),
    ("/snap/microk8s/current/bin/runc", Kind::Runtime),
    ("/x86_64-bottlerocket-linux-gnu/sys-root/usr/bin/runc", Kind::Runtime),
    ("/aarch64-bottlerocket-linux-gnu/sys-root/usr/bin/runc", Kind::Runtime),
    // crun.
    ("/usr/bin/crun", Kind::Runtime),
    ("/usr/local/bin/crun", Kind::Runtime),
    ("/usr/libexec/crio/crun", Kind::Runtime),
    // conmon (CRI-O, Podman).
    ("/usr/bin/conmon", Kind::Monitor),
    ("/usr/local/bin/conmon", Kind::Monitor),
    ("/usr/libexec/crio/conmon", Kind::Monitor),
    ("/usr/libexec/podman/conmon", Kind::Monitor),
    ("/usr/local/libexec/podman/conmon", Kind::Monitor),
];

/// What a binary the user names is, by its file name.
pub(crate) fn kind_of(path: &std::path::Path) -> Kind {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with("conmon") => Kind::Monitor,
        _ => Kind::Runtime,
    }
}
