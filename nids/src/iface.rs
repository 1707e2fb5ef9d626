//! The mirror's veth pair: made with iproute2 when missing, MTU raised so
//! GRO-sized frames fit, IPv6 off so the kernel adds no traffic of its own.

use std::io;
use std::process::Command;

use tracing::info;

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(e.kind(), format!("cannot run `ip` (iproute2) to set up the mirror interface: {e}"))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())))
    }
}

fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Makes sure the veth pair `ours` (written by the agent) and `theirs`
/// (read by Suricata) exists and is up.
pub fn ensure_veth(ours: &str, theirs: &str) -> io::Result<()> {
    if !exists(ours) {
        ip(&["link", "add", ours, "type", "veth", "peer", "name", theirs])?;
        info!(ours, theirs, "mirror veth pair created");
    }
    for name in [ours, theirs] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        ip(&["link", "set", name, "mtu", "65535"])?;
        ip(&["link", "set", name, "up"])?;
    }
    Ok(())
}

/// Removes the pair (deleting one end removes both).
pub fn remove_veth(ours: &str) {
    if exists(ours) {
        let _ = ip(&["link", "del", ours]);
    }
}
