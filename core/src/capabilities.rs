//! The agent's effective Linux capabilities, and what each missing one
//! switches off.
//!
//! Read from `CapEff` in `/proc/self/status` at startup, so the agent can say
//! plainly which features it runs without, instead of failing later.

use std::fmt;

/// Capabilities the agent's features depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// Listen on ports below 1024.
    NetBindService,
    /// Open AF_PACKET sockets.
    NetRaw,
    /// Enter other processes' namespaces (`setns`).
    SysAdmin,
    /// Open other processes' `/proc/<pid>/ns/*` across credentials.
    SysPtrace,
}

impl Cap {
    /// The kernel's bit number.
    pub fn bit(self) -> u32 {
        match self {
            Cap::NetBindService => 10,
            Cap::NetRaw => 13,
            Cap::SysPtrace => 19,
            Cap::SysAdmin => 21,
        }
    }

    /// `CAP_NET_RAW`, ...
    pub fn name(self) -> &'static str {
        match self {
            Cap::NetBindService => "CAP_NET_BIND_SERVICE",
            Cap::NetRaw => "CAP_NET_RAW",
            Cap::SysAdmin => "CAP_SYS_ADMIN",
            Cap::SysPtrace => "CAP_SYS_PTRACE",
        }
    }

    /// What goes missing without it.
    pub fn switches_off(self) -> &'static str {
        match self {
            Cap::NetBindService => "listening on ports below 1024",
            Cap::NetRaw => "all packet capture",
            Cap::SysAdmin => "per-container capture (entering container network namespaces)",
            Cap::SysPtrace => "per-container capture of containers running as other users",
        }
    }

    /// Every capability the agent uses.
    pub const ALL: [Cap; 4] = [Cap::NetBindService, Cap::NetRaw, Cap::SysAdmin, Cap::SysPtrace];
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An effective capability set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// This process's effective set; empty if it cannot be read.
    pub fn current() -> Capabilities {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| Self::parse_status(&s))
            .unwrap_or(Capabilities(0))
    }

    /// Reads `CapEff:` from a `/proc/<pid>/status` text.
    pub fn parse_status(status: &str) -> Option<Capabilities> {
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
        u64::from_str_radix(hex, 16).ok().map(Capabilities)
    }

    /// True when `cap` is effective.
    pub fn has(self, cap: Cap) -> bool {
        self.0 & (1u64 << cap.bit()) != 0
    }

    /// The agent's capabilities that are missing.
    pub fn missing(self) -> Vec<Cap> {
        Cap::ALL.into_iter().filter(|c| !self.has(*c)).collect()
    }

    /// True when per-container capture can work: entering namespaces and
    /// opening packet sockets.
    pub fn can_capture_containers(self) -> bool {
        self.has(Cap::SysAdmin) && self.has(Cap::NetRaw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_parsed_from_status() {
        let full = Capabilities::parse_status("Name:\tx\nCapEff:\t000001ffffffffff\n").expect("parsed");
        assert!(full.missing().is_empty());
        assert!(full.can_capture_containers());
        let no_admin = Capabilities(full.0 & !(1 << 21));
        assert_eq!(no_admin.missing(), [Cap::SysAdmin]);
        assert!(!no_admin.can_capture_containers());
        assert!(Capabilities::parse_status("Name:\tx\n").is_none());
    }
}
