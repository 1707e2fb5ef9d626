//! CRI objects to core's model.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use crate::CRI;
use k8s_cri::v1::{ContainerState as CriState, NamespaceMode, PodSandboxStatus};
use portwarden_core::{Container, ContainerId, ContainerState, Pod};
use tracing::warn;

/// What a CRI container is made of, whichever call supplied it.
pub(crate) struct Parts<'a> {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) image: String,
    pub(crate) state: i32,
    pub(crate) labels: HashMap<String, String>,
    pub(crate) log_path: String,
    /// The verbose status `info` map, when the status call succeeded.
    pub(crate) info: Option<&'a HashMap<String, String>>,
    pub(crate) sandbox: Option<&'a PodSandboxStatus>,
}

pub(crate) fn container(p: Parts<'_>, proc_root: &Path) -> Container {
    let state = state(p.state);
    let labels: BTreeMap<String, String> = p.labels.into_iter().collect();
    let pid = if state.is_alive() { p.info.and_then(|info| pid(&p.id, &p.name, info)) } else { None };
    let sandbox = p.sandbox;
    let pod = sandbox
        .and_then(|s| s.metadata.as_ref())
        .map(|m| Pod { name: m.name.clone(), namespace: m.namespace.clone(), uid: m.uid.clone() })
        .or_else(|| Pod::from_labels(&labels));
    let ips = sandbox.and_then(|s| s.network.as_ref()).map_or_else(Vec::new, |n| {
        let all = std::iter::once(n.ip.as_str()).chain(n.additional_ips.iter().map(|ip| ip.ip.as_str()));
        all.filter_map(|ip| ip.parse::<IpAddr>().ok()).collect()
    });
    let host_network = sandbox
        .and_then(|s| s.linux.as_ref())
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == NamespaceMode::Node as i32);
    Container {
        name: p.name,
        image: p.image,
        state,
        pid,
        labels,
        pod,
        ips,
        netns: pid.map(|pid| Container::netns_path(proc_root, pid)),
        host_network,
        log_path: (!p.log_path.is_empty()).then(|| p.log_path.into()),
        ..Container::new(CRI, ContainerId::new(p.id))
    }
}

pub(crate) fn state(state: i32) -> ContainerState {
    match CriState::try_from(state) {
        Ok(CriState::ContainerCreated) => ContainerState::Created,
        Ok(CriState::ContainerRunning) => ContainerState::Running,
        Ok(CriState::ContainerExited) => ContainerState::Exited,
        Ok(CriState::ContainerUnknown) | Err(_) => ContainerState::Unknown,
    }
}

/// The PID from verbose status: `info["info"]` is a JSON document with a
/// `pid` field (containerd and CRI-O alike). Anything else is a warning.
fn pid(id: &str, name: &str, info: &HashMap<String, String>) -> Option<u32> {
    let Some(text) = info.get("info") else {
        warn!(container = %id, %name, "CRI verbose status has no `info`; PID unknown");
        return None;
    };
    let doc: serde_json::Value = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            warn!(container = %id, %name, error = %e, "CRI verbose `info` is not JSON; PID unknown");
            return None;
        }
    };
    let pid = doc.get("pid").and_then(serde_json::Value::as_u64).and_then(|p| u32::try_from(p).ok()).filter(|&p| p > 0);
    if pid.is_none() {
        warn!(container = %id, %name, "CRI verbose `info` has no usable `pid`; PID unknown");
    }
    pid
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        LinuxPodSandboxStatus, Namespace, NamespaceOption, PodIp, PodSandboxMetadata, PodSandboxNetworkStatus,
    };

    fn parts<'a>(info: Option<&'a HashMap<String, String>>, sandbox: Option<&'a PodSandboxStatus>) -> Parts<'a> {
        Parts {
            id: "c1".into(),
            name: "app".into(),
            image: "busybox".into(),
            state: CriState::ContainerRunning as i32,
            labels: HashMap::new(),
            log_path: "/var/log/pods/x/app/0.log".into(),
            info,
            sandbox,
        }
    }

    fn info(text: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_owned(), text.to_owned())])
    }

    #[test]
    fn verbose_info_gives_the_pid_and_the_sandbox_the_pod() {
        let sandbox = PodSandboxStatus {
            metadata: Some(PodSandboxMetadata {
                name: "web-0".into(),
                uid: "u1".into(),
                namespace: "shop".into(),
                attempt: 0,
            }),
            network: Some(PodSandboxNetworkStatus {
                ip: "10.88.0.7".into(),
                additional_ips: vec![PodIp { ip: "fd00::7".into() }],
            }),
            ..Default::default()
        };
        let i = info(r#"{"sandboxID":"s1","pid":4321}"#);
        let c = container(parts(Some(&i), Some(&sandbox)), Path::new("/host/proc"));
        assert_eq!(c.pid, Some(4321));
        assert_eq!(c.netns.as_deref(), Some(Path::new("/host/proc/4321/ns/net")));
        assert_eq!(c.pod.map(|p| (p.name, p.namespace, p.uid)), Some(("web-0".into(), "shop".into(), "u1".into())));
        assert_eq!(c.ips.len(), 2);
        assert_eq!(c.log_path.as_deref(), Some(Path::new("/var/log/pods/x/app/0.log")));
        assert!(!c.host_network);
    }

    #[test]
    fn missing_or_broken_info_means_no_pid_and_no_panic() {
        for i in [HashMap::new(), info("not json {"), info(r#"{"pid":"12"}"#), info(r#"{"pid":-1}"#), info("[]")] {
            let c = container(parts(Some(&i), None), Path::new("/proc"));
            assert_eq!((c.state, c.pid, c.netns), (ContainerState::Running, None, None));
        }
        assert_eq!(container(parts(None, None), Path::new("/proc")).pid, None);
    }

    #[test]
    fn host_network_pods_are_flagged() {
        let sandbox = PodSandboxStatus {
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }),
                }),
            }),
            ..Default::default()
        };
        assert!(container(parts(None, Some(&sandbox)), Path::new("/proc")).host_network);
    }
}
