//! Issue 3: containerd restarted under a running inventory. Alone in its own
//! test binary, because it takes containerd (and dockerd) away from everyone.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{ContainerId, ContainerRuntime, Inventory, InventoryEvent, InventoryOptions, RuntimeName};
use portwarden_runtime_containerd::{ContainerdRuntime, Namespaces};
use portwarden_runtime_crio::{CriOptions, CriRuntime};
use portwarden_tests::cri::{CriPod, CtrNamespace, cri_socket};
use portwarden_tests::{eventually, repo_root};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(90);

/// Waits until `matching` has returned every kind in `kinds`, in any order.
async fn until_all(
    rx: &mut broadcast::Receiver<InventoryEvent>,
    what: &str,
    kinds: &[RuntimeName],
    matching: impl Fn(&InventoryEvent) -> Option<RuntimeName>,
) {
    let mut missing: Vec<RuntimeName> = kinds.to_vec();
    let wait = async {
        while !missing.is_empty() {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(kind) = matching(&ev) {
                        missing.retain(|k| *k != kind);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
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
    let both = [portwarden_runtime_containerd::CONTAINERD, portwarden_runtime_crio::CRI];
    until_all(&mut rx, "loss", &both, |ev| match ev {
        InventoryEvent::RuntimeLost { runtime, .. } => Some(runtime.clone()),
        _ => None,
    })
    .await;

    let out = Command::new("bash").arg(repo_root().join("scripts/testbed-up.sh")).output().expect("testbed-up");
    assert!(out.status.success(), "testbed-up failed: {}", String::from_utf8_lossy(&out.stderr));
    until_all(&mut rx, "restore", &both, |ev| match ev {
        InventoryEvent::RuntimeSynced { runtime, restored: true, .. } => Some(runtime.clone()),
        _ => None,
    })
    .await;

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
