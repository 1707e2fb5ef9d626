//! Matching what a sender calls a container (a full or short id, a name) to
//! the inventory's container, for records that arrive over the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use portwarden_core::{ClaimedIdentity, Container, Inventory};
use tokio_util::sync::CancellationToken;

/// Remembered lookups before the cache starts over.
const CACHE_LIMIT: usize = 4096;

/// Resolves claimed identities against an inventory, caching answers until
/// the inventory changes.
#[derive(Clone, Default)]
pub struct Resolver {
    inventory: Option<Inventory>,
    cache: Arc<Mutex<HashMap<String, Option<Arc<Container>>>>>,
}

impl Resolver {
    /// Resolves against `inventory`; `None` (no runtime) resolves nothing.
    pub fn new(inventory: Option<Inventory>) -> Self {
        Self { inventory, cache: Arc::default() }
    }

    /// Keeps the cache fresh: forgets every answer when the inventory
    /// changes, until `cancel`.
    pub async fn run(&self, cancel: CancellationToken) {
        let Some(inventory) = &self.inventory else { return };
        let mut changes = inventory.subscribe();
        loop {
            tokio::select! {
                change = changes.recv() => {
                    if matches!(change, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
                () = cancel.cancelled() => return,
            }
        }
    }

    /// The container called `key`: its full id, an id prefix of at least 12
    /// hex digits, or its name (Docker's leading `/` allowed).
    pub fn lookup(&self, key: &str) -> Option<Arc<Container>> {
        let inventory = self.inventory.as_ref()?;
        let key = key.strip_prefix('/').unwrap_or(key);
        if key.is_empty() {
            return None;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(key) {
            return hit.clone();
        }
        let looks_like_id = key.len() >= 12 && key.bytes().all(|b| b.is_ascii_hexdigit());
        let found = inventory
            .snapshot()
            .into_iter()
            .filter(|c| (looks_like_id && c.id.as_str().starts_with(key)) || c.name == key)
            // A live container wins over an exited one of the same name.
            .max_by_key(|c| c.state.is_alive())
            .map(Arc::new);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key.to_owned(), found.clone());
        found
    }

    /// The first of `candidates` that names a known container.
    pub fn first_match<'a>(&self, candidates: impl IntoIterator<Item = Option<&'a str>>) -> Option<Arc<Container>> {
        candidates.into_iter().flatten().find_map(|c| self.lookup(c))
    }
}

/// True for a full (64) or short (12) hex container id.
pub(crate) fn looks_like_container_id(s: &str) -> bool {
    (s.len() == 12 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The identity a sender claimed, kept when no container matched.
pub(crate) fn claimed(id: Option<&str>, name: Option<&str>, pid: Option<&str>) -> Option<ClaimedIdentity> {
    let identity = ClaimedIdentity {
        id: id.map(str::to_owned),
        name: name.map(|n| n.strip_prefix('/').unwrap_or(n).to_owned()),
        pid: pid.and_then(|p| p.parse().ok()),
    };
    (identity.id.is_some() || identity.name.is_some()).then_some(identity)
}
