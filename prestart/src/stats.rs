//! The hook's counters, and how long held events waited for their answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the answer-time buckets, in microseconds.
const BUCKETS_US: [u64; 12] = [250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 15_000, 25_000, 50_000, 100_000, u64::MAX];

/// Live counters, shared by the hook's threads.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) runtime_execs: AtomicU64,
    pub(crate) creates: AtomicU64,
    pub(crate) unknown_args: AtomicU64,
    pub(crate) exec_unseen: AtomicU64,
    pub(crate) pid_invisible: AtomicU64,
    pub(crate) rootless: AtomicU64,
    pub(crate) bad_config: AtomicU64,
    pub(crate) bad_pid_file: AtomicU64,
    pub(crate) marks_vanished: AtomicU64,
    pub(crate) pending_expired: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) attached: AtomicU64,
    pub(crate) joined: AtomicU64,
    pub(crate) not_attached: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) overflows: AtomicU64,
    answer_buckets: [AtomicU64; BUCKETS_US.len()],
    answer_max_us: AtomicU64,
}

/// A copy of [`Stats`] for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Executions of a marked runtime or monitor (every subcommand).
    pub runtime_execs: u64,
    /// Of those, container creates understood.
    pub creates: u64,
    /// Creates invoked with arguments the hook does not understand.
    pub unknown_args: u64,
    /// Executions whose process was gone or never became the runtime.
    pub exec_unseen: u64,
    /// Executions by a process outside the agent's PID namespace.
    pub pid_invisible: u64,
    /// Creates by a runtime not running as root (rootless).
    pub rootless: u64,
    /// Bundles whose `config.json` could not be read or parsed.
    pub bad_config: u64,
    /// Pid files that were not a small plain file holding a PID.
    pub bad_pid_file: u64,
    /// Marks whose directory was gone when placed or removed.
    pub marks_vanished: u64,
    /// Pid files nobody read before the timeout.
    pub pending_expired: u64,
    /// Pid-file reads held while the capture attached.
    pub held: u64,
    /// Of those, captures opened before the container ran.
    pub attached: u64,
    /// Containers that joined a namespace captured already.
    pub joined: u64,
    /// Held reads let go without a capture (not selected, failed).
    pub not_attached: u64,
    /// Held reads allowed at the time limit, before the capture answered.
    pub late: u64,
    /// Times the kernel's event queue overflowed.
    pub overflows: u64,
    /// Median time a held read waited, in microseconds (bucket bound).
    pub answer_p50_us: u64,
    /// 99th percentile of that (bucket bound).
    pub answer_p99_us: u64,
    /// The longest wait seen.
    pub answer_max_us: u64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a held read waited.
    pub(crate) fn answered(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(BUCKETS_US.len() - 1);
        self.answer_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.answer_max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The bucket bound under which `q` of the answers fall.
    fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.answer_buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= want {
                return BUCKETS_US[i].min(self.answer_max_us.load(Ordering::Relaxed));
            }
        }
        self.answer_max_us.load(Ordering::Relaxed)
    }

    /// A copy for reporting.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            runtime_execs: get(&self.runtime_execs),
            creates: get(&self.creates),
            unknown_args: get(&self.unknown_args),
            exec_unseen: get(&self.exec_unseen),
            pid_invisible: get(&self.pid_invisible),
            rootless: get(&self.rootless),
            bad_config: get(&self.bad_config),
            bad_pid_file: get(&self.bad_pid_file),
            marks_vanished: get(&self.marks_vanished),
            pending_expired: get(&self.pending_expired),
            held: get(&self.held),
            attached: get(&self.attached),
            joined: get(&self.joined),
            not_attached: get(&self.not_attached),
            late: get(&self.late),
            overflows: get(&self.overflows),
            answer_p50_us: self.quantile(0.5),
            answer_p99_us: self.quantile(0.99),
            answer_max_us: get(&self.answer_max_us),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds_capped_by_the_maximum() {
        let s = Stats::default();
        assert_eq!(s.snapshot().answer_p99_us, 0);
        for _ in 0..98 {
            s.answered(Duration::from_micros(700));
        }
        s.answered(Duration::from_millis(4));
        s.answered(Duration::from_millis(120));
        let snap = s.snapshot();
        assert_eq!((snap.answer_p50_us, snap.answer_p99_us, snap.answer_max_us), (1_000, 5_000, 120_000));
    }
}
