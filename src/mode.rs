//! Which deployment mode the agent is in, and why.

use portwarden_core::{Cap, Capabilities};
use serde::Serialize;

/// The design's three modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// At least one runtime socket: every container is seen. Capture is
    /// per container when namespaces can be entered (see [`CapturePlan`]).
    Full,
    /// Privileged, no runtime: the host's own interfaces.
    HostOnly,
    /// Unprivileged, no runtime: the agent's own namespace (a sidecar).
    Sidecar,
}

impl Mode {
    /// The name JSON and the docs use: `full`, `host_only`, `sidecar`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::HostOnly => "host_only",
            Mode::Sidecar => "sidecar",
        }
    }
}

/// What capture does in a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapturePlan {
    /// One capture per container network namespace.
    PerContainer,
    /// The agent's own network namespace only.
    OwnNamespace,
    /// None (no CAP_NET_RAW, or disabled).
    Off,
}

impl CapturePlan {
    /// The name `status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            CapturePlan::PerContainer => "per_container",
            CapturePlan::OwnNamespace => "own_namespace",
            CapturePlan::Off => "off",
        }
    }
}

/// The mode, the capture plan, and a sentence saying why.
pub fn decide(runtimes: usize, caps: Capabilities, capture_enabled: bool) -> (Mode, CapturePlan, String) {
    let privileged = caps.has(Cap::SysAdmin);
    let mode = match (runtimes > 0, privileged) {
        (true, _) => Mode::Full,
        (false, true) => Mode::HostOnly,
        (false, false) => Mode::Sidecar,
    };
    let (plan, why) = if !capture_enabled {
        (CapturePlan::Off, "capture disabled in config".to_owned())
    } else if !caps.has(Cap::NetRaw) {
        (CapturePlan::Off, format!("{} missing: packet capture is off", Cap::NetRaw))
    } else if runtimes > 0 && caps.can_capture_containers() {
        (CapturePlan::PerContainer, format!("{runtimes} runtime(s) detected and namespaces can be entered"))
    } else if runtimes > 0 {
        let why =
            format!("{} missing: per-container capture is off; capturing the agent's own namespace", Cap::SysAdmin);
        (CapturePlan::OwnNamespace, why)
    } else if privileged {
        (CapturePlan::OwnNamespace, "no runtime socket: capturing the host's interfaces".to_owned())
    } else {
        (
            CapturePlan::OwnNamespace,
            "no runtime socket and no privilege: capturing the agent's own namespace".to_owned(),
        )
    };
    (mode, plan, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Capabilities = Capabilities(u64::MAX >> 23);

    #[test]
    fn modes_follow_runtimes_and_privilege() {
        assert_eq!(decide(1, ALL, true).0, Mode::Full);
        assert_eq!(decide(1, ALL, true).1, CapturePlan::PerContainer);
        assert_eq!(decide(0, ALL, true).0, Mode::HostOnly);
        let no_admin = Capabilities(ALL.0 & !(1 << 21));
        assert_eq!(decide(1, no_admin, true).1, CapturePlan::OwnNamespace);
        assert_eq!(decide(0, no_admin, true).0, Mode::Sidecar);
        assert_eq!(decide(1, Capabilities(0), true).1, CapturePlan::Off);
        assert_eq!(decide(1, ALL, false).1, CapturePlan::Off);
    }
}
