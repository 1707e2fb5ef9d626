//! Between the agent's model (`portwarden_core`) and the wire.

use portwarden_core::{ContainerId, ContainerState, RuntimeName};

use crate::v1;

impl From<&portwarden_core::Pod> for v1::Pod {
    fn from(p: &portwarden_core::Pod) -> Self {
        v1::Pod { name: p.name.clone(), namespace: p.namespace.clone(), uid: p.uid.clone() }
    }
}

impl From<&portwarden_core::Container> for v1::Container {
    fn from(c: &portwarden_core::Container) -> Self {
        v1::Container {
            id: c.id.as_str().to_owned(),
            runtime: c.runtime.as_str().to_owned(),
            name: c.name.clone(),
            image: c.image.clone(),
            state: c.state.as_str().to_owned(),
            pid: c.pid,
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            namespace: c.namespace.clone().unwrap_or_default(),
            pod: c.pod.as_ref().map(Into::into),
            ips: c.ips.iter().map(ToString::to_string).collect(),
            host_network: c.host_network,
            sandbox: c.sandbox,
            reported_by: c.reported_by.iter().map(|k| k.as_str().to_owned()).collect(),
            netns: c.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            log_path: c.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        }
    }
}

const STATES: [ContainerState; 8] = [
    ContainerState::Created,
    ContainerState::Running,
    ContainerState::Paused,
    ContainerState::Restarting,
    ContainerState::Removing,
    ContainerState::Exited,
    ContainerState::Dead,
    ContainerState::Unknown,
];

impl v1::Container {
    /// The agent's model of this container, for clients that print or
    /// match it as the agent does. Runtime names are open (any provider's
    /// name); unknown states read as `unknown`, and unparsable IPs are left
    /// out.
    pub fn to_model(&self) -> portwarden_core::Container {
        portwarden_core::Container {
            id: ContainerId::new(self.id.clone()),
            runtime: RuntimeName::new(self.runtime.clone()),
            name: self.name.clone(),
            image: self.image.clone(),
            state: STATES.into_iter().find(|s| s.as_str() == self.state).unwrap_or(ContainerState::Unknown),
            pid: self.pid,
            labels: self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            namespace: (!self.namespace.is_empty()).then(|| self.namespace.clone()),
            pod: self.pod.as_ref().map(|p| portwarden_core::Pod {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                uid: p.uid.clone(),
            }),
            ips: self.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
            netns: (!self.netns.is_empty()).then(|| self.netns.clone().into()),
            host_network: self.host_network,
            sandbox: self.sandbox,
            log_path: (!self.log_path.is_empty()).then(|| self.log_path.clone().into()),
            reported_by: self.reported_by.iter().map(|k| RuntimeName::new(k.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_container_survives_the_wire() {
        let c = portwarden_core::Container {
            id: ContainerId::new("0123456789abcdef"),
            runtime: RuntimeName::from_static("containerd"),
            name: "web".into(),
            image: "busybox:local".into(),
            state: ContainerState::Paused,
            pid: Some(42),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            namespace: Some("k8s.io".into()),
            pod: Some(portwarden_core::Pod { name: "p".into(), namespace: "default".into(), uid: "u".into() }),
            ips: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            netns: Some("/proc/42/ns/net".into()),
            host_network: false,
            sandbox: true,
            log_path: Some("/var/log/pods/x/0.log".into()),
            reported_by: vec![RuntimeName::from_static("containerd"), RuntimeName::from_static("cri")],
        };
        assert_eq!(v1::Container::from(&c).to_model(), c);
    }

    #[test]
    fn any_runtime_name_passes_and_unknown_states_degrade() {
        let wire = v1::Container { runtime: "podman".into(), state: "frozen".into(), ..Default::default() };
        let c = wire.to_model();
        assert_eq!(c.runtime, "podman");
        assert_eq!(c.state, ContainerState::Unknown);
        assert_eq!(c.namespace, None);
    }
}
