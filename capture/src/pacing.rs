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
//! ring, nor longer than [`WARM_BYTES`] take to fill, so what is read is
//! still in the cache; pauses under 10 ms are not taken. After the kernel
//! drops frames, pausing stops for a while.

use std::time::{Duration, Instant};

/// Shorter pauses are not taken: they save little (rounds are big anyway
/// when blocks fill that fast), and waking up on time is not certain on a
/// busy host (a 1.5 ms pause dropped frames at 470 k frames/s of 1400
/// bytes, where reading at once did not).
const MIN_PAUSE: Duration = Duration::from_millis(10);

/// At most this much of the ring fills during a pause. The kernel writes
/// frames from other cores; read soon after, their lines are still in the
/// shared cache. Pausing until a quarter of a 64 MiB ring had filled (16
/// MiB of 512-byte frames at 200 k frames/s) made the walk wait on memory
/// for every frame header and cost up to twice the CPU of reading each
/// block at once (`bench/capture.py`).
const WARM_BYTES: u64 = 4 << 20;

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
    /// reading again, for a ring of `blocks` blocks of `block_size` bytes.
    /// Zero means wait for the next block as usual.
    pub(crate) fn pause(&mut self, blocks: u32, block_size: u32, now: Instant) -> Duration {
        let Some(shortest) = self.shortest.take() else { return Duration::ZERO };
        if self.off_until.is_some_and(|until| now < until) {
            return Duration::ZERO;
        }
        let warm = u32::try_from(WARM_BYTES / u64::from(block_size.max(1))).unwrap_or(u32::MAX).max(1);
        let pause = self.delay.min(shortest.saturating_mul((blocks / 4).min(warm)));
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
        assert_eq!(p.pause(32, 64 << 10, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn pauses_are_bounded_by_a_quarter_of_the_ring_at_the_fastest_fill() {
        let now = Instant::now();
        let mut p = Pacer::new(200 * MS);
        assert!(p.block(20 * MS), "a round's first block");
        assert!(!p.block(5 * MS));
        // 16 blocks: a quarter is 4 blocks of 5 ms.
        assert_eq!(p.pause(16, 64 << 10, now), 20 * MS);
        // Blocks that fill in 2 ms: too short a pause to be worth it.
        p.block(2 * MS);
        assert_eq!(p.pause(16, 64 << 10, now), Duration::ZERO);
        // Slow traffic: the delay is the bound.
        p.block(Duration::from_secs(1));
        assert_eq!(p.pause(16, 64 << 10, now), 200 * MS);
        // A ring of fewer than four blocks has no room to wait.
        p.block(Duration::from_secs(1));
        assert_eq!(p.pause(3, 64 << 10, now), Duration::ZERO);
    }

    #[test]
    fn pauses_end_while_what_filled_is_still_in_the_cache() {
        let now = Instant::now();
        let mut p = Pacer::new(200 * MS);
        // 128 blocks of 512 KiB filling in 4 ms each: a quarter of the ring
        // is 32 blocks (128 ms), but only 8 blocks (4 MiB) may pile up.
        p.block(4 * MS);
        assert_eq!(p.pause(128, 512 << 10, now), 32 * MS);
    }

    #[test]
    fn a_round_without_blocks_does_not_pause() {
        let mut p = Pacer::new(200 * MS);
        p.block(20 * MS);
        assert!(!p.pause(16, 64 << 10, Instant::now()).is_zero());
        assert_eq!(p.pause(16, 64 << 10, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn drops_switch_pausing_off_for_a_while() {
        let now = Instant::now();
        let mut p = Pacer::new(200 * MS);
        p.dropped(now);
        p.block(20 * MS);
        assert_eq!(p.pause(16, 64 << 10, now + Duration::from_secs(1)), Duration::ZERO);
        p.block(20 * MS);
        assert_eq!(p.pause(16, 64 << 10, now + AFTER_DROPS), 80 * MS);
    }
}
