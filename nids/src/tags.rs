//! 802.1Q tags that name captures: one per capture (network-namespace
//! group) while it runs, then held back long enough that Suricata has let go
//! of every flow it saw under the old owner before the tag means someone else.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portwarden_core::Container;

/// The highest usable VLAN id (0 means "priority only", 4095 is reserved).
const MAX_TAG: u16 = 4094;

/// Who a tag stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct TagOwner {
    /// The container traffic is attributed to (a pod's first member by
    /// name), or `None` for the host or the agent's own namespace.
    pub container: Option<Container>,
}

/// Tags in use, and recently released ones still resolvable.
#[derive(Clone)]
pub struct TagTable {
    inner: Arc<Mutex<Inner>>,
    quarantine: Duration,
}

struct Inner {
    active: HashMap<u16, TagOwner>,
    /// Released tags: the last owner, resolvable and not reusable until the
    /// instant given.
    released: HashMap<u16, (TagOwner, Instant)>,
    order: VecDeque<u16>,
    next: u16,
}

impl TagTable {
    /// A released tag keeps resolving to its last owner, and is not handed
    /// out again, for `quarantine` (longer than Suricata's flow timeouts).
    pub fn new(quarantine: Duration) -> Self {
        let inner = Inner { active: HashMap::new(), released: HashMap::new(), order: VecDeque::new(), next: 1 };
        Self { inner: Arc::new(Mutex::new(inner)), quarantine }
    }

    /// A tag for a new capture, or `None` when all 4094 are taken or held back.
    pub fn allocate(&self, owner: TagOwner) -> Option<u16> {
        let mut inner = self.lock();
        inner.sweep(Instant::now());
        for _ in 0..MAX_TAG {
            let tag = inner.next;
            inner.next = if tag >= MAX_TAG { 1 } else { tag + 1 };
            if !inner.active.contains_key(&tag) && !inner.released.contains_key(&tag) {
                inner.active.insert(tag, owner);
                inner.order.push_back(tag);
                return Some(tag);
            }
        }
        None
    }

    /// The capture's members changed.
    pub fn update(&self, tag: u16, owner: TagOwner) {
        if let Some(o) = self.lock().active.get_mut(&tag) {
            *o = owner;
        }
    }

    /// The capture ended.
    pub fn release(&self, tag: u16) {
        let mut inner = self.lock();
        if let Some(owner) = inner.active.remove(&tag) {
            let until = Instant::now() + self.quarantine;
            inner.released.insert(tag, (owner, until));
        }
        inner.order.retain(|t| *t != tag);
    }

    /// Who `tag` stands for: its current owner, or its last one during the
    /// grace period after release.
    pub fn resolve(&self, tag: u16) -> Option<TagOwner> {
        let inner = self.lock();
        if let Some(o) = inner.active.get(&tag) {
            return Some(o.clone());
        }
        inner.released.get(&tag).filter(|(_, until)| *until > Instant::now()).map(|(o, _)| o.clone())
    }

    /// Every tag in use, with its owner, by tag.
    pub fn snapshot(&self) -> Vec<(u16, TagOwner)> {
        let inner = self.lock();
        let mut all: Vec<(u16, TagOwner)> = inner.active.iter().map(|(t, o)| (*t, o.clone())).collect();
        all.sort_by_key(|(t, _)| *t);
        all
    }

    /// Tags in use now.
    pub fn active(&self) -> usize {
        self.lock().active.len()
    }

    /// Forgets released tags whose grace period is over. Allocation does it
    /// too; this runs on a timer, so a node where churn has stopped does not
    /// hold the last owners (full container records) for ever.
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    /// Released tags still held back.
    pub fn held_back(&self) -> usize {
        self.lock().released.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.released.retain(|_, (_, until)| *until > now);
        // A burst of churn grows the maps; give the room back once it is over.
        if self.released.capacity() > 4 * self.released.len() + 64 {
            self.released.shrink_to_fit();
        }
        if self.active.capacity() > 4 * self.active.len() + 64 {
            self.active.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_tags_resolve_for_a_while_and_are_not_reused_meanwhile() {
        let t = TagTable::new(Duration::from_secs(60));
        let a = t.allocate(TagOwner { container: None }).unwrap();
        t.release(a);
        assert!(t.resolve(a).is_some(), "still resolvable in the grace period");
        let b = t.allocate(TagOwner { container: None }).unwrap();
        assert_ne!(a, b);
        // Exhausting the space never hands out a quarantined tag.
        let mut all = vec![b];
        while let Some(tag) = t.allocate(TagOwner { container: None }) {
            assert_ne!(tag, a);
            all.push(tag);
        }
        assert_eq!(all.len(), 4093);
        let t = TagTable::new(Duration::ZERO);
        let a = t.allocate(TagOwner { container: None }).unwrap();
        t.release(a);
        assert!(t.resolve(a).is_none());
    }

    #[test]
    fn a_sweep_forgets_owners_whose_grace_is_over_without_a_new_capture() {
        let t = TagTable::new(Duration::from_millis(20));
        let tags: Vec<u16> = (0..500).map(|_| t.allocate(TagOwner { container: None }).unwrap()).collect();
        for tag in tags {
            t.release(tag);
        }
        assert_eq!(t.held_back(), 500);
        std::thread::sleep(Duration::from_millis(30));
        t.sweep();
        assert_eq!(t.held_back(), 0);
        assert!(t.lock().released.capacity() <= 64, "the room a burst took is given back");
    }
}
