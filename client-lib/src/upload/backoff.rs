//! Exponential backoff with full jitter, capped: how long to wait before the next connection attempt.
//!
//! The jitter comes from a small generator seeded once (from the OS's randomness, by the worker), so
//! that the state machine that owns it stays a pure function of its events, and tests can seed it.

use std::time::Duration;

/// Backoff state: each failure doubles the ceiling (up to `max`); the wait is uniform in
/// `[0, ceiling]` ("full jitter"), so many agents restarting at once do not knock together.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    /// The state of the jitter's generator (splitmix64).
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self { initial: initial.max(Duration::from_millis(1)), max: max.max(initial), failures: 0, rng: seed }
    }

    /// The ceiling of the next wait, without jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    /// splitmix64: a well-mixed 64-bit value per call, from any seed (0 included).
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A seed for [`Backoff::new`] from the OS's randomness (the time, if there is none: agents that
/// start at the same moment still differ by their process id).
pub(crate) fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (nanos.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_per_failure_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            let wait = b.next_wait();
            assert!(wait <= Duration::from_secs(1));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn waits_are_jittered_not_constant() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10), 0);
        let waits: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.len() > 10, "full jitter spreads the waits: {waits:?}");
        let mean = waits.iter().map(Duration::as_secs_f64).sum::<f64>() / waits.len() as f64;
        assert!((2.0..8.0).contains(&mean), "uniform in [0, ceiling]: mean {mean}");
    }

    #[test]
    fn the_same_seed_gives_the_same_waits_and_another_seed_others() {
        let waits = |seed| {
            let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), seed);
            (0..5).map(|_| b.next_wait()).collect::<Vec<_>>()
        };
        assert_eq!(waits(42), waits(42));
        assert_ne!(waits(42), waits(43));
    }
}
