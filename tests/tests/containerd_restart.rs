//! Issue 3: containerd restarted under a running inventory. Alone in its own
//! test binary, because it takes containerd (and dockerd) away from everyone.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{ContainerId, ContainerRuntime, Inventory, InventoryEvent, InventoryOptions, RuntimeKind};
use portwarden_runtime_containerd::{ContainerdRuntime, Namespaces};
use portwarden_runtime_crio::{CriOptions, CriRuntime};
use portwarden_tests::cri::{CriPod, CtrNamespace, cri_socket};
use portwarden_tests::{eventually, repo_root};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(90);

async fn until(rx: &mut broadcast::Receiver<InventoryEvent>, what: &str, pred: impl Fn(&InventoryEvent) -> bool) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if pred(&ev) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("inventory gone"),
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_recovers_after_containerd_restarts() {
    let socket = cri_socket();
    let native = ContainerdRuntime::connect(&socket, Path::new("/proc"), Namespaces::All, Duration::from_secs(10));
    let native: Arc<dyn ContainerRuntime> = Arc::new(native.await.expect("containerd"));
    let cri = CriRuntime::connect(&socket, Path::new("/proc"), CriOptions::default()).await.expect("CRI");
    let options = InventoryOptions { resync_interval: None, ..Default::default() };
    let inventory = Inventory::new(vec![native, Arc::new(cri)], options);
    let mut rx = inventory.subscribe();
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.clone());
        async move { inventory.run(cancel).await }
    });
    inventory.wait_synced().await;

    let pid = Command::new("pidof").arg("containerd").output().expect("pidof runs");
    let pid = String::from_utf8_lossy(&pid.stdout).into_owned();
    assert!(Command::new("kill").args(["-KILL", pid.trim()]).status().expect("kill").success());
    for kind in [RuntimeKind::Containerd, RuntimeKind::Cri] {
        until(&mut rx, "loss", |ev| matches!(ev, InventoryEvent::RuntimeLost { runtime, .. } if *runtime == kind))
            .await;
    }

    let out = Command::new("bash").arg(repo_root().join("scripts/testbed-up.sh")).output().expect("testbed-up");
    assert!(out.status.success(), "testbed-up failed: {}", String::from_utf8_lossy(&out.stderr));
    for kind in [RuntimeKind::Containerd, RuntimeKind::Cri] {
        until(
            &mut rx,
            "restore",
            |ev| matches!(ev, InventoryEvent::RuntimeSynced { runtime, restored: true, .. } if *runtime == kind),
        )
        .await;
    }

    // Both the native and the CRI path see new work after the restart.
    let ns = CtrNamespace::new("restart");
    ns.run("pw-after-restart");
    let mut pod = CriPod::run("restart").await;
    let app = pod.start("app").await;
    eventually("new containers after the restart", WAIT, || {
        let native =
            inventory.get(&ContainerId::new("pw-after-restart")).is_some_and(|c| c.pid == ns.pid("pw-after-restart"));
        let cri = inventory.get(&ContainerId::new(app.clone())).is_some_and(|c| c.pod.is_some() && c.pid.is_some());
        (native && cri).then_some(())
    })
    .await;
    pod.remove().await;
    ns.delete("pw-after-restart");
    ns.remove();
    cancel.cancel();
}
