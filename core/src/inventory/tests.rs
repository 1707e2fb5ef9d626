//! Inventory logic against a scripted in-memory runtime. The real-daemon
//! proof lives in the `portwarden-tests` crate.

use super::*;
use crate::testing::{CONTAINERD, CRI, DOCKER, FakeRuntime, container};

fn quick() -> InventoryOptions {
    InventoryOptions {
        resync_interval: None,
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        event_capacity: 64,
    }
}

/// Waits for the first event matching `pred`, skipping others.
async fn next_matching(
    rx: &mut broadcast::Receiver<InventoryEvent>,
    pred: impl Fn(&InventoryEvent) -> bool,
) -> InventoryEvent {
    let wait = async {
        loop {
            let ev = rx.recv().await.expect("channel open");
            if pred(&ev) {
                return ev;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("event within deadline")
}

fn start(inventory: &Inventory) -> CancellationToken {
    let cancel = CancellationToken::new();
    let (inv, c) = (inventory.clone(), cancel.clone());
    tokio::spawn(async move { inv.run(c).await });
    cancel
}

#[tokio::test]
async fn events_after_the_first_list_are_applied() {
    let rt = FakeRuntime::new(DOCKER);
    rt.put(container("a", DOCKER, ContainerState::Running));
    let inventory = Inventory::new(vec![rt.clone()], quick());
    let mut rx = inventory.subscribe();
    let cancel = start(&inventory);
    inventory.wait_synced().await;
    assert_eq!(inventory.snapshot().len(), 1);

    rt.put(container("b", DOCKER, ContainerState::Running));
    rt.emit("b", RuntimeEventKind::Started);
    let ev =
        next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.container().id.as_str() == "b")).await;
    let InventoryEvent::Container(change) = ev else { unreachable!() };
    assert!(change.started());
    assert_eq!(change.origin, Origin::Event);

    rt.put(container("b", DOCKER, ContainerState::Exited));
    rt.emit("b", RuntimeEventKind::Exited { exit_code: Some(0) });
    let ev = next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.stopped())).await;
    let InventoryEvent::Container(change) = ev else { unreachable!() };
    assert_eq!(change.after.as_ref().map(|c| c.pid), Some(None));

    rt.containers.lock().unwrap().remove(&ContainerId::new("b"));
    rt.emit("b", RuntimeEventKind::Deleted);
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.after.is_none())).await;
    assert!(inventory.get(&ContainerId::new("b")).is_none());
    cancel.cancel();
}

#[tokio::test]
async fn a_broken_inspect_keeps_the_inventory_consistent() {
    let rt = FakeRuntime::new(DOCKER);
    rt.put(container("a", DOCKER, ContainerState::Running));
    let inventory = Inventory::new(vec![rt.clone()], quick());
    let mut rx = inventory.subscribe();
    let cancel = start(&inventory);
    inventory.wait_synced().await;

    rt.broken_inspect.lock().unwrap().insert(ContainerId::new("a"));
    rt.emit("a", RuntimeEventKind::Exited { exit_code: Some(137) });
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.stopped())).await;
    let a = inventory.get(&ContainerId::new("a")).expect("still known");
    assert_eq!((a.state, a.pid), (ContainerState::Exited, None));

    // A start we cannot inspect adds nothing half-filled.
    rt.emit("ghost", RuntimeEventKind::Started);
    rt.emit("a", RuntimeEventKind::Deleted);
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.after.is_none())).await;
    assert!(inventory.snapshot().is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn a_lost_runtime_is_retried_and_reconciled() {
    let rt = FakeRuntime::new(DOCKER);
    rt.put(container("stays", DOCKER, ContainerState::Running));
    rt.put(container("goes", DOCKER, ContainerState::Running));
    let inventory = Inventory::new(vec![rt.clone()], quick());
    let mut rx = inventory.subscribe();
    let cancel = start(&inventory);
    inventory.wait_synced().await;

    rt.kill();
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::RuntimeLost { .. })).await;
    assert_eq!(inventory.snapshot().len(), 2, "containers are kept while the runtime is away");

    rt.containers.lock().unwrap().remove(&ContainerId::new("goes"));
    rt.put(container("new", DOCKER, ContainerState::Running));
    rt.revive();
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::RuntimeSynced { restored: true, .. })).await;
    let names: Vec<String> = inventory.snapshot().into_iter().map(|c| c.id.to_string()).collect();
    assert_eq!(names, ["new", "stays"]);
    cancel.cancel();
}

#[tokio::test]
async fn one_container_reported_twice_is_one_entry_with_the_richest_report() {
    let docker = FakeRuntime::new(DOCKER);
    let containerd = FakeRuntime::new(CONTAINERD);
    docker.put(container("x", DOCKER, ContainerState::Running));
    containerd.put(container("x", CONTAINERD, ContainerState::Running));
    let inventory = Inventory::new(vec![containerd.clone(), docker.clone()], quick());
    assert!(inventory.sync_once().await.is_empty());
    let all = inventory.snapshot();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].runtime, DOCKER);

    docker.containers.lock().unwrap().clear();
    assert!(inventory.sync_once().await.is_empty());
    assert_eq!(inventory.snapshot()[0].runtime, CONTAINERD);
}

#[tokio::test]
async fn sync_once_reports_failures_and_keeps_the_rest() {
    let up = FakeRuntime::new(DOCKER);
    let down = FakeRuntime::new(CRI);
    up.put(container("a", DOCKER, ContainerState::Running));
    down.kill();
    let inventory = Inventory::new(vec![up, down], quick());
    let failed = inventory.sync_once().await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0.name(), CRI);
    assert_eq!(inventory.snapshot().len(), 1);
}

#[tokio::test]
async fn the_merged_view_fills_gaps_and_lists_every_reporter() {
    let cri = FakeRuntime::new(CRI);
    let containerd = FakeRuntime::new(CONTAINERD);
    let mut from_cri = container("p", CRI, ContainerState::Running);
    from_cri.ips = vec!["10.88.0.5".parse().expect("ip")];
    from_cri.labels.insert("shared".into(), "cri".into());
    let mut native = container("p", CONTAINERD, ContainerState::Running);
    native.namespace = Some("k8s.io".into());
    native.labels.insert("shared".into(), "native".into());
    native.labels.insert("only-native".into(), "yes".into());
    cri.put(from_cri);
    containerd.put(native);
    let inventory = Inventory::new(vec![containerd, cri], quick());
    assert!(inventory.sync_once().await.is_empty());
    let p = inventory.get(&ContainerId::new("p")).expect("merged");
    assert_eq!(p.runtime, CRI);
    assert_eq!(p.reported_by, [CONTAINERD, CRI]);
    assert_eq!(p.namespace.as_deref(), Some("k8s.io"));
    assert_eq!(p.ips.len(), 1);
    assert_eq!(p.labels["shared"], "cri");
    assert_eq!(p.labels["only-native"], "yes");
}

#[tokio::test]
async fn a_start_seen_by_one_runtime_is_inspected_by_the_others() {
    let evented = FakeRuntime::new(CONTAINERD);
    let polled = FakeRuntime::new(CRI);
    let inventory = Inventory::new(vec![evented.clone(), polled.clone()], quick());
    let mut rx = inventory.subscribe();
    let cancel = start(&inventory);
    inventory.wait_synced().await;

    // Both runtimes know the container; only one says so with an event.
    evented.put(container("x", CONTAINERD, ContainerState::Running));
    polled.put(container("x", CRI, ContainerState::Running));
    evented.emit("x", RuntimeEventKind::Started);
    next_matching(
        &mut rx,
        |e| matches!(e, InventoryEvent::Container(c) if c.after.as_ref().is_some_and(|a| a.runtime == CRI)),
    )
    .await;
    assert_eq!(inventory.get(&ContainerId::new("x")).map(|c| c.reported_by.len()), Some(2));
    cancel.cancel();
}

#[tokio::test]
async fn a_removal_seen_by_one_runtime_clears_the_others_reports() {
    let evented = FakeRuntime::new(CONTAINERD);
    let polled = FakeRuntime::new(CRI);
    let inventory = Inventory::new(vec![evented.clone(), polled.clone()], quick());
    let mut rx = inventory.subscribe();
    let cancel = start(&inventory);
    inventory.wait_synced().await;
    evented.put(container("x", CONTAINERD, ContainerState::Running));
    polled.put(container("x", CRI, ContainerState::Running));
    evented.emit("x", RuntimeEventKind::Started);
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.container().reported_by.len() == 2)).await;

    // Gone from both; only one says so, and the other never polls.
    evented.containers.lock().unwrap().clear();
    polled.containers.lock().unwrap().clear();
    evented.emit("x", RuntimeEventKind::Deleted);
    next_matching(&mut rx, |e| matches!(e, InventoryEvent::Container(c) if c.after.is_none())).await;
    assert!(inventory.snapshot().is_empty());
    cancel.cancel();
}
