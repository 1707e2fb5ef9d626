//! How long the capture thread lets ready ring blocks pile up before it
//! reads them.
//!
//! Reading a block as soon as the kernel retires it costs more per frame
//! than reading several at once, a little later: at 100 k frames/s of 64
//! bytes, reading every block as it retired took 150 ms of CPU for 2 M
//! frames, reading every 100 ms took 90 ms (`bench/perf-capture.sh`). The
//! price is latency, so the delay is an option (`CaptureOptions::read_delay`,
//! zero by default, where detection wants frames at once).
//!
//! A pause never lasts longer than a quarter of the ring takes to fill at
//! the rate the last round's blocks show (their first-to-last frame
//! times), so traffic would have to quadruple during a pause to fill the
//! ring; pauses under 10 ms are not taken. After the kernel drops frames,
//! pausing stops for a while.

use std::time::{Duration, Instant};

/// Shorter pauses are not taken: they save little (rounds are big anyway
/// when blocks fill that fast), and waking up on time is not certain on a
/// busy host (a 1.5 ms pause dropped frames at 470 k frames/s of 1400
/// bytes, where reading at once did not).
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// How long pausing stays off after the kernel dropped frames.
const AFTER_DROPS: Duration = Duration::from_secs(10);

/// Paces the reads of one ring.
#[derive(Debug)]
pub(crate) struct Pacer {
    delay: Duration,
    /// The shortest fill time among the blocks read in this round.
    shortest: Option<Duration>,
    /// No pausing before this (set after drops).
    off_until: Option<Instant>,
}

impl Pacer {
    /// Blocks may wait up to `delay` (zero: never).
    pub(crate) fn new(delay: Duration) -> Pacer {
        Pacer { delay, shortest: None, off_until: None }
    }

    /// Notes a block read in this round and how long it took to fill;
    /// true for the round's first block.
    pub(crate) fn block(&mut self, span: Duration) -> bool {
        let first = self.shortest.is_none();
        self.shortest = Some(self.shortest.map_or(span, |s| s.min(span)));
        first
    }

    /// The kernel dropped frames: read every block at once for a while.
    pub(crate) fn dropped(&mut self, now: Instant) {
        self.off_until = Some(now + AFTER_DROPS);
    }

    /// The round is over (no block is ready): how long to wait before
    /// reading again, for a ring of `blocks` blocks. Zero means wait for
    /// the next block as usual.
    pub(crate) fn pause(&mut self, blocks: u32, now: Instant) -> Duration {
        let Some(shortest) = self.shortest.take() else { return Duration::ZERO };
        if self.off_until.is_some_and(|until| now < until) {
            return Duration::ZERO;
        }
        let pause = self.delay.min(shortest.saturating_mul(blocks / 4));
        if pause < MIN_PAUSE { Duration::ZERO } else { pause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_delay_means_no_pause() {
        let mut p = Pacer::new(Duration::ZERO);
        p.block(20 * MS);
        assert_eq!(p.pause(32, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn pauses_are_bounded_by_a_quarter_of_the_ring_at_the_fastest_fill() {
        let now = Instant::now();
        let mut p = Pacer::new(200 * MS);
        assert!(p.block(20 * MS), "a round's first block");
        assert!(!p.block(5 * MS));
        // 16 blocks: a quarter is 4 blocks of 5 ms.
        assert_eq!(p.pause(16, now), 20 * MS);
        // Blocks that fill in 2 ms: too short a pause to be worth it.
        p.block(2 * MS);
        assert_eq!(p.pause(16, now), Duration::ZERO);
        // Slow traffic: the delay is the bound.
        p.block(Duration::from_secs(1));
        assert_eq!(p.pause(16, now), 200 * MS);
        // A ring of fewer than four blocks has no room to wait.
        p.block(Duration::from_secs(1));
        assert_eq!(p.pause(3, now), Duration::ZERO);
    }

    #[test]
    fn a_round_without_blocks_does_not_pause() {
        let mut p = Pacer::new(200 * MS);
        p.block(20 * MS);
        assert!(!p.pause(16, Instant::now()).is_zero());
        assert_eq!(p.pause(16, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn drops_switch_pausing_off_for_a_while() {
        let now = Instant::now();
        let mut p = Pacer::new(200 * MS);
        p.dropped(now);
        p.block(20 * MS);
        assert_eq!(p.pause(16, now + Duration::from_secs(1)), Duration::ZERO);
        p.block(20 * MS);
        assert_eq!(p.pause(16, now + AFTER_DROPS), 80 * MS);
    }
}
