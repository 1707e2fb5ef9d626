//! Issue 3: containerd's native API, the CRI, and a mixed fleet, against
//! the testbed's containerd 1.6 (CRI plugin on) with dockerd on top of it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{ContainerChange, ContainerId, ContainerRuntime, ContainerState};
use portwarden_runtime_containerd::{ContainerdRuntime, Namespaces};
use portwarden_runtime_crio::{CriOptions, CriRuntime, EventMode};
use portwarden_runtime_docker::DockerRuntime;
use portwarden_tests::cri::{CriPod, CtrNamespace, cri_socket};
use portwarden_tests::inventory::{next_change, start_inventory};
use portwarden_tests::{TestContainer, docker_socket, eventually, portwarden_bin};

const WAIT: Duration = Duration::from_secs(60);
const PROC: &str = "/proc";

async fn containerd() -> Arc<ContainerdRuntime> {
    let socket = cri_socket();
    let rt = ContainerdRuntime::connect(&socket, Path::new(PROC), Namespaces::All, Duration::from_secs(10)).await;
    Arc::new(rt.expect("containerd answers"))
}

async fn cri(mode: EventMode) -> Arc<CriRuntime> {
    let options = CriOptions { event_mode: mode, ..CriOptions::default() };
    Arc::new(CriRuntime::connect(&cri_socket(), Path::new(PROC), options).await.expect("CRI answers"))
}

fn docker() -> Arc<DockerRuntime> {
    Arc::new(DockerRuntime::new(&docker_socket(), Path::new(PROC), Duration::from_secs(10)))
}

/// The IPv4 address of `eth0` in the namespace of `pid`, read by `nsenter`.
fn ip_in_netns(pid: u32) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .expect("nsenter runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr = text.split_whitespace().nth(3).expect("an address");
    cidr.split('/').next().expect("ip").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_container_in_its_own_namespace_appears_with_its_pid_and_goes() {
    let ns = CtrNamespace::new("ns");
    let (inventory, mut changes, cancel) = start_inventory(vec![containerd().await]).await;

    let id = "pw-native-1";
    ns.run(id);
    let change = next_change(&mut changes, id, ContainerChange::started).await;
    let got = change.after.clone().expect("present");
    assert_eq!(got.runtime, portwarden_runtime_containerd::CONTAINERD);
    assert_eq!(got.namespace.as_deref(), Some(ns.name.as_str()));
    assert_eq!(got.pid, ns.pid(id), "the PID `ctr tasks ls` shows");
    assert_eq!(got.image, portwarden_tests::busybox_image());

    ns.delete(id);
    next_change(&mut changes, id, |c| c.after.is_none()).await;
    assert!(inventory.get(&ContainerId::new(id)).is_none());

    // The namespace itself goes while watched: no panic, and events go on.
    ns.remove();
    let other = CtrNamespace::new("ns2");
    other.run("pw-native-2");
    next_change(&mut changes, "pw-native-2", ContainerChange::started).await;
    other.delete("pw-native-2");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_pod_with_two_containers_is_one_pod_in_one_netns_group() {
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![containerd().await, cri(EventMode::Auto).await];
    let (inventory, _changes, cancel) = start_inventory(runtimes).await;

    let mut pod = CriPod::run("pod").await;
    let app = pod.start("app").await;
    let sidecar = pod.start("sidecar").await;
    eventually("both containers, described by the CRI, with PIDs", WAIT, || {
        let described = |id: &str| {
            inventory
                .get(&ContainerId::new(id))
                .is_some_and(|c| c.runtime == portwarden_runtime_crio::CRI && c.pid.is_some())
        };
        (described(&app) && described(&sidecar)).then_some(())
    })
    .await;

    let ctr_pids = std::process::Command::new("ctr").args(["-n", "k8s.io", "tasks", "ls"]).output().expect("ctr");
    let ctr_pids = String::from_utf8_lossy(&ctr_pids.stdout).into_owned();
    let mut pids = Vec::new();
    for (name, id) in &pod.containers {
        let c = inventory.get(&ContainerId::new(id.clone())).expect("known");
        assert_eq!(&c.name, name);
        let p = c.pod.as_ref().expect("pod");
        assert_eq!((&p.name, &p.namespace, &p.uid), (&pod.name, &pod.namespace, &pod.uid));
        let pid = c.pid.expect("pid");
        let line = ctr_pids.lines().find(|l| l.starts_with(id.as_str())).expect("ctr lists the task");
        assert_eq!(line.split_whitespace().nth(1), Some(pid.to_string().as_str()), "the PID ctr shows");
        assert_eq!(c.ips.iter().map(ToString::to_string).collect::<Vec<_>>(), [ip_in_netns(pid)]);
        assert_eq!(c.namespace.as_deref(), Some("k8s.io"), "filled in from containerd's report");
        assert_eq!(c.reported_by, [portwarden_runtime_containerd::CONTAINERD, portwarden_runtime_crio::CRI]);
        assert!(c.log_path.as_ref().is_some_and(|p| p.ends_with(format!("{name}/0.log"))));
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1]);

    let groups = inventory.netns_groups();
    let group = groups.iter().find(|g| g.containers.iter().any(|c| c.id.as_str() == app)).expect("grouped");
    let members: Vec<&str> =
        group.containers.iter().filter(|c| c.runtime == portwarden_runtime_crio::CRI).map(|c| c.id.as_str()).collect();
    assert_eq!(members.len(), 2, "both containers share one network namespace: {members:?}");
    assert!(members.contains(&sidecar.as_str()));
    assert_eq!(group.pod().map(|p| p.uid.as_str()), Some(pod.uid.as_str()));

    pod.remove().await;
    eventually("the pod's containers to be removed", WAIT, || {
        let gone = |id: &str| inventory.get(&ContainerId::new(id)).is_none();
        (gone(&app) && gone(&sidecar)).then_some(())
    })
    .await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_1_6_falls_back_to_polling_and_sees_a_pod_within_two_polls() {
    let runtime = cri(EventMode::Auto).await;
    let (inventory, mut changes, cancel) = start_inventory(vec![runtime.clone()]).await;
    eventually("the poller to run", WAIT, || (runtime.polls() > 0).then_some(())).await;

    let mut pod = CriPod::run("poll").await;
    let id = pod.start("app").await;
    let started_at = runtime.polls();
    next_change(&mut changes, &id, ContainerChange::started).await;
    let seen_at = runtime.polls();
    assert!(seen_at <= started_at + 2, "seen after poll {seen_at}, container started before poll {}", started_at + 1);
    assert_eq!(inventory.get(&ContainerId::new(id.clone())).map(|c| c.state), Some(ContainerState::Running));
    pod.remove().await;
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_container_reported_by_dockerd_and_containerd_is_one_entry() {
    let runtimes: Vec<Arc<dyn ContainerRuntime>> = vec![containerd().await, docker()];
    let (inventory, mut changes, cancel) = start_inventory(runtimes).await;
    let c = TestContainer::run("twice", &[]);
    let change = next_change(&mut changes, &c.id, |ch| {
        ch.after.as_ref().is_some_and(|a| a.reported_by.len() == 2 && a.pid.is_some())
    })
    .await;
    let got = change.after.clone().expect("present");
    assert_eq!(got.runtime, portwarden_runtime_docker::DOCKER, "Docker's report is richer than native containerd's");
    assert_eq!(got.name, c.name);
    assert_eq!(got.namespace.as_deref(), Some("moby"));
    // `reported_by` is sorted by name.
    assert_eq!(got.reported_by, [portwarden_runtime_containerd::CONTAINERD, portwarden_runtime_docker::DOCKER]);
    assert_eq!(inventory.snapshot().iter().filter(|x| x.id.as_str() == c.id).count(), 1);
    cancel.cancel();

    // The CLI, with every runtime detected, lists it once too.
    let out = std::process::Command::new(portwarden_bin()).args(["ps", "--json"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows: Vec<_> = list.iter().filter(|r| r["id"] == c.id.as_str()).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["runtime"], "docker");
    assert_eq!(rows[0]["namespace"], "moby");
}

/// Issue 15: a native container already running when the agent starts is
/// listed running, with the PID `ctr tasks ls` shows (containerd's task list
/// names a task by `id` only), and the agent captures it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_container_running_before_the_agent_is_listed_with_its_pid_and_captured() {
    let ns = CtrNamespace::new("before");
    let id = "pw-native-before";
    ns.run(id);
    let listed = containerd().await.list().await.expect("list");
    let c = listed.iter().find(|c| c.id.as_str() == id).expect("listed");
    assert_eq!((c.state, c.pid), (ContainerState::Running, ns.pid(id)), "{c:?}");

    let mut command = std::process::Command::new(portwarden_bin());
    command
        .args(["run", "--no-detect", "--log-format", "json", "--runtime", "containerd", "--containerd-socket"])
        .arg(cri_socket());
    let agent = portwarden_tests::agent::Agent::spawn_command(&mut command, std::process::Stdio::null());
    eventually("the capture of the container that was there first", WAIT, || {
        agent.find_json("capture attached", |v| v["container"] == id)
    })
    .await;
    let (status, lines) = agent.stop("-TERM");
    assert!(status.success(), "{lines:?}");
    ns.delete(id);
    ns.remove();
}
