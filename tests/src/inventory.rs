//! Running an in-process inventory over real runtimes, and waiting for its
//! changes.

use std::sync::Arc;
use std::time::Duration;

use portwarden_core::{ContainerChange, ContainerRuntime, Inventory, InventoryEvent, InventoryOptions};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long a change may take before a test gives up (a hang guard).
const WAIT: Duration = Duration::from_secs(60);

/// Starts an inventory over `runtimes` with periodic re-listing off, so only
/// events change it after the first sync, and waits for that sync.
pub async fn start_inventory(
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
) -> (Inventory, broadcast::Receiver<InventoryEvent>, CancellationToken) {
    let inventory = Inventory::new(runtimes, InventoryOptions { resync_interval: None, ..Default::default() });
    let changes = inventory.subscribe();
    let cancel = CancellationToken::new();
    tokio::spawn({
        let (inventory, cancel) = (inventory.clone(), cancel.clone());
        async move { inventory.run(cancel).await }
    });
    inventory.wait_synced().await;
    (inventory, changes, cancel)
}

/// The next change of container `id` that satisfies `pred`; other events
/// are skipped (and consumed).
pub async fn next_change(
    rx: &mut broadcast::Receiver<InventoryEvent>,
    id: &str,
    pred: impl Fn(&ContainerChange) -> bool,
) -> Arc<ContainerChange> {
    let wait = async {
        loop {
            if let InventoryEvent::Container(change) = rx.recv().await.expect("inventory alive") {
                if change.container().id.as_str() == id && pred(&change) {
                    return change;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.expect("the change arrives")
}
