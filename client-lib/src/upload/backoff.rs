//! Exponential backoff with full jitter, capped: how long to wait before the next connection attempt.

use std::time::Duration;

/// Backoff state: each failure doubles the ceiling (up to `max`); the wait is uniform in
/// `[0, ceiling]` ("full jitter"), so many agents restarting at once do not knock together.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial: initial.max(Duration::from_millis(1)), max: max.max(initial), failures: 0 }
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
        jitter(ceiling)
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A duration uniform in `[0, ceiling]`.
fn jitter(ceiling: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // Without randomness, wait the whole ceiling: slower, never faster than intended.
    if getrandom::fill(&mut bytes).is_err() {
        return ceiling;
    }
    let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_per_failure_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
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
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let waits: std::collections::BTreeSet<_> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.len() > 10, "full jitter spreads the waits: {waits:?}");
    }
}
