//! Network namespace groups: the unit capture attaches to.
//!
//! The containers of a pod share one network namespace, and so one capture
//! socket. Namespaces are told apart by their kernel identity, the device and
//! inode of `/proc/<pid>/ns/net`, not by path: two PIDs in one namespace have
//! different paths and the same identity.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::model::{Container, Pod};

/// The kernel identity of a network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetnsId {
    /// The nsfs device.
    pub dev: u64,
    /// The namespace's inode, as `ip netns identify` and `lsns` show it.
    pub ino: u64,
}

impl NetnsId {
    /// The identity of the namespace a `ns/net` path (or a bind mount of
    /// one, such as `/var/run/netns/cni-...`) refers to.
    pub fn of(path: &Path) -> io::Result<NetnsId> {
        let meta = std::fs::metadata(path)?;
        Ok(NetnsId { dev: meta.dev(), ino: meta.ino() })
    }
}

/// The running containers that share one network namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct NetnsGroup {
    /// The namespace.
    pub id: NetnsId,
    /// A path that enters it: a member's `<proc root>/<pid>/ns/net`.
    pub netns: PathBuf,
    /// True when the members use the host's network (captured as the host).
    pub host: bool,
    /// The members, sorted by name, pod sandboxes last.
    pub containers: Vec<Container>,
}

impl NetnsGroup {
    /// The pod every member belongs to, if they all agree on one.
    pub fn pod(&self) -> Option<&Pod> {
        let first = self.containers.first()?.pod.as_ref()?;
        self.containers.iter().all(|c| c.pod.as_ref() == Some(first)).then_some(first)
    }
}

/// Groups the running containers of `containers` by network namespace.
/// Containers whose namespace cannot be read (gone meanwhile) are left out.
pub fn group(containers: impl IntoIterator<Item = Container>) -> Vec<NetnsGroup> {
    let mut groups: Vec<NetnsGroup> = Vec::new();
    for c in containers.into_iter().filter(|c| c.state.is_alive()) {
        let Some(path) = c.netns.clone() else { continue };
        let Ok(id) = NetnsId::of(&path) else {
            tracing::debug!(container = %c.id, netns = %path.display(), "network namespace unreadable; not grouped");
            continue;
        };
        match groups.iter_mut().find(|g| g.id == id) {
            Some(g) => {
                g.host |= c.host_network;
                g.containers.push(c);
            }
            None => groups.push(NetnsGroup { id, netns: path, host: c.host_network, containers: vec![c] }),
        }
    }
    for g in &mut groups {
        g.containers.sort_by(|a, b| a.member_order().cmp(&b.member_order()));
    }
    groups.sort_by(|a, b| a.containers[0].name.cmp(&b.containers[0].name));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_paths_into_one_namespace_share_an_identity() {
        let me = NetnsId::of(Path::new("/proc/self/ns/net")).expect("own netns");
        let by_pid = NetnsId::of(&PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))).expect("by pid");
        assert_eq!(me, by_pid);
    }
}
