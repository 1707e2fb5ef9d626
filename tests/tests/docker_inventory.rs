//! Issue 2: the inventory and `portwarden ps` against the testbed's dockerd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{
    ContainerChange, ContainerId, ContainerRuntime, ContainerState, Inventory, InventoryEvent, Origin,
};
use portwarden_runtime_docker::DockerRuntime;
use portwarden_tests::inventory::{next_change, start_inventory};
use portwarden_tests::{TestContainer, docker_ok, docker_socket, portwarden_bin};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

fn docker_runtime() -> Arc<dyn ContainerRuntime> {
    Arc::new(DockerRuntime::new(&docker_socket(), &PathBuf::from("/proc"), Duration::from_secs(10)))
}

/// An inventory over the testbed's dockerd, changed only by events after
/// its first sync.
async fn events_only_inventory() -> (Inventory, broadcast::Receiver<InventoryEvent>, CancellationToken) {
    start_inventory(vec![docker_runtime()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_run_reaches_the_inventory_through_events_with_full_metadata() {
    let (inventory, mut changes, cancel) = events_only_inventory().await;

    let c = TestContainer::run(
        "event",
        &[
            "--label",
            "team=payments",
            "--label",
            "io.kubernetes.pod.name=web-0",
            "--label",
            "io.kubernetes.pod.namespace=shop",
            "--label",
            "io.kubernetes.pod.uid=0b7c",
        ],
    );
    let change = next_change(&mut changes, &c.id, ContainerChange::started).await;
    assert_eq!(change.origin, Origin::Event, "delivered by the event stream, not a re-list");

    let got = change.after.clone().expect("present");
    assert_eq!(got.id.as_str(), c.id, "the full id");
    assert_eq!(got.name, c.name);
    assert_eq!(got.image, portwarden_tests::busybox_image());
    assert_eq!(got.state, ContainerState::Running);
    let pid: u32 = c.inspect("{{.State.Pid}}").parse().expect("pid");
    assert_eq!(got.pid, Some(pid));
    assert_eq!(got.netns, Some(PathBuf::from(format!("/proc/{pid}/ns/net"))));
    let theirs = std::fs::read_link(got.netns.as_ref().expect("netns")).expect("netns readable");
    let ours = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    assert_ne!(theirs, ours, "the container has its own network namespace");
    let ip = c.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    assert_eq!(got.ips, [ip.parse::<std::net::IpAddr>().expect("ip")]);
    assert_eq!(got.labels.get("team").map(String::as_str), Some("payments"));
    let pod = got.pod.expect("pod from kubelet labels");
    assert_eq!((pod.name.as_str(), pod.namespace.as_str(), pod.uid.as_str()), ("web-0", "shop", "0b7c"));
    assert_eq!(inventory.get(&ContainerId::new(c.id.clone())).map(|g| g.pid), Some(Some(pid)));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_marks_exited_and_docker_rm_removes() {
    let c = TestContainer::run("stop", &[]);
    let (inventory, mut changes, cancel) = events_only_inventory().await;
    let id = ContainerId::new(c.id.clone());
    assert_eq!(inventory.get(&id).map(|g| g.state), Some(ContainerState::Running));

    docker_ok(&["stop", "-t", "0", &c.id]);
    let change = next_change(&mut changes, &c.id, ContainerChange::stopped).await;
    let after = change.after.clone().expect("still present");
    assert_eq!((after.state, after.pid, after.netns), (ContainerState::Exited, None, None));

    docker_ok(&["rm", &c.id]);
    next_change(&mut changes, &c.id, |ch| ch.after.is_none()).await;
    assert!(inventory.get(&id).is_none());
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_containers_keep_their_pid() {
    let c = TestContainer::run("pause", &[]);
    let (inventory, mut changes, cancel) = events_only_inventory().await;
    docker_ok(&["pause", &c.id]);
    let change =
        next_change(&mut changes, &c.id, |ch| ch.after.as_ref().is_some_and(|a| a.state == ContainerState::Paused))
            .await;
    assert!(change.after.as_ref().expect("present").pid.is_some());
    docker_ok(&["unpause", &c.id]);
    next_change(&mut changes, &c.id, |ch| ch.after.as_ref().is_some_and(|a| a.state == ContainerState::Running)).await;
    assert!(!inventory.snapshot().is_empty());
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_json_has_the_design_shape_and_matches_docker() {
    let c = TestContainer::run("ps", &["--label", "tier=db"]);
    let sock = docker_socket();
    let out = std::process::Command::new(portwarden_bin())
        .args(["ps", "--json", "--runtime", "docker", "--docker-socket"])
        .arg(&sock)
        .output()
        .expect("portwarden runs");
    assert!(out.status.success(), "ps failed: {}", String::from_utf8_lossy(&out.stderr));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON array");
    let row = list.iter().find(|r| r["id"] == c.id.as_str()).expect("the container is listed");
    for key in ["id", "runtime", "name", "image", "state", "pid", "labels", "namespace", "pod", "ips"] {
        assert!(row.get(key).is_some(), "missing `{key}` in {row}");
    }
    assert_eq!(row["runtime"], "docker");
    assert_eq!(row["name"], c.name.as_str());
    assert_eq!(row["state"], "running");
    assert_eq!(row["pid"].as_u64().map(|p| p.to_string()), Some(c.inspect("{{.State.Pid}}")));
    assert_eq!(row["labels"]["tier"], "db");
    assert!(row["pod"].is_null() && row["namespace"].is_null());

    // Without --all, stopped containers are left out, as with `docker ps`.
    assert!(list.iter().all(|r| r["state"] == "running" || r["state"] == "paused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_lists_every_running_container() {
    let c = TestContainer::run("table", &[]);
    let out = std::process::Command::new(portwarden_bin()).arg("ps").output().expect("portwarden runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(&c.name)).expect("listed");
    assert!(line.starts_with(&c.id[..12]) && line.contains("running"), "{line}");
}
