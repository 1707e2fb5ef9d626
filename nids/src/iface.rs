//! The mirror's own network namespace, holding its veth pair: the agent
//! writes into one end, Suricata reads the other. Kept apart from the host's
//! namespace, so a capture of the host (host-only mode) never sees the mirror
//! and nothing the host does reaches Suricata. Made with iproute2.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;

use tracing::info;

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run `ip` (iproute2) to set up the mirror: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// Where iproute2 keeps a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Makes sure namespace `netns` exists with the veth pair `ours`/`theirs`
/// in it, up, with a large MTU (GRO-sized frames) and no addresses of its
/// own (no IPv6 link-local either), so only mirrored frames cross it.
pub fn ensure_mirror(netns: &str, ours: &str, theirs: &str) -> io::Result<()> {
    if !netns_path(netns).exists() {
        ip(&["netns", "add", netns])?;
    }
    let present =
        Command::new("ip").args(["-n", netns, "link", "show", ours]).output().is_ok_and(|o| o.status.success());
    if !present {
        ip(&["-n", netns, "link", "add", ours, "type", "veth", "peer", "name", theirs])?;
        info!(netns, ours, theirs, "mirror veth pair created");
    }
    for name in [ours, theirs] {
        ip(&["-n", netns, "link", "set", name, "addrgenmode", "none"])?;
        ip(&["-n", netns, "link", "set", name, "mtu", "65535"])?;
        ip(&["-n", netns, "link", "set", name, "up"])?;
    }
    Ok(())
}

/// Removes the namespace (and the pair with it).
pub fn remove_mirror(netns: &str) {
    if netns_path(netns).exists() {
        let _ = ip(&["netns", "del", netns]);
    }
}

/// Opens the namespace, for entering it.
pub fn open_netns(netns: &str) -> io::Result<OwnedFd> {
    let path = netns_path(netns);
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(OwnedFd::from(file))
}

/// Moves the calling thread into `fd`'s network namespace.
pub fn enter(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid namespace fd; only the calling thread moves.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `netns` (the thread is discarded
/// after, so no thread of the agent stays there); sockets it creates stay
/// bound to that namespace.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let fd = open_netns(netns)?;
    std::thread::spawn(move || {
        enter(&fd)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("mirror setup thread panicked"))?
}
