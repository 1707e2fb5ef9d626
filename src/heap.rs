//! Giving glibc's heap back after churn.
//!
//! Every capture runs on a thread of its own, and glibc's malloc gives
//! threads arenas of their own. When a container goes, its capture's
//! buffers and tables are freed, but the pages stay in the arenas: the soak
//! benchmark (`tests/examples/soak.rs`) showed RSS MiBs over its baseline
//! after a few hundred containers had come and gone, with almost none of it
//! live (heaptrack), and half as much under jemalloc. So the agent looks
//! every [`INTERVAL`] at how much free memory the arenas hold, and trims
//! them when it is worth it.
//!
//! The `portwarden` binary allocates with jemalloc (its `jemalloc`
//! feature, on by default; see `src/main.rs`), whose background thread
//! returns freed pages itself, and then glibc's arenas stay nearly empty
//! and this finds nothing to do. It is for agents that embed the library
//! with glibc's malloc, and for builds without the feature.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often the arenas' free memory is looked at.
pub(crate) const INTERVAL: Duration = Duration::from_secs(30);

/// Free heap bytes worth a trim.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const WORTH_TRIMMING: usize = 1 << 20;

/// Trims the heap whenever it holds enough free memory, until `cancel`.
pub(crate) async fn keep_trimmed(cancel: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => trim_if_worth_it(),
            () = cancel.cancelled() => return,
        }
    }
}

/// Hands free heap pages back to the kernel (glibc's `malloc_trim`) when
/// the arenas hold at least [`WORTH_TRIMMING`] free; other C libraries need
/// nothing here.
fn trim_if_worth_it() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free < WORTH_TRIMMING {
            return;
        }
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes the allocator's own locks and only
        // returns free pages; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(free, took_us = started.elapsed().as_micros() as u64, "heap trimmed");
    }
}
