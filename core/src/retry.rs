//! Retry policy as a value: exponential backoff with jitter, bounded by a
//! largest delay and optionally by a number of attempts. Every retry loop in
//! premem (a worker calling an unreachable coordinator, a rank connecting to
//! its ring neighbour) takes one of these instead of its own constants.
//!
//! The n-th delay (n = 0, 1, …) is drawn uniformly from `[d/2, d]` with
//! `d = min(base_delay · 2ⁿ, max_delay)`: waits still grow geometrically,
//! but processes that failed together do not all retry at the same instant.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryParams {
    /// The delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// No delay exceeds this.
    pub max_delay: Duration,
    /// Give up after this many failed attempts (`None`: retry until the
    /// caller's own deadline or stop flag ends the loop).
    pub max_attempts: Option<u32>,
}

impl RetryParams {
    /// Calls to the coordinator from a long-lived process (evaluator worker,
    /// trainer rank, CLI): it may be restarting, so retry without a count.
    pub const COORDINATOR: RetryParams = RetryParams {
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        max_attempts: None,
    };

    /// Connecting to a peer on the local network that is about to listen
    /// (a ring neighbour): short waits, bounded by the caller's deadline.
    pub const PEER: RetryParams = RetryParams {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(500),
        max_attempts: None,
    };

    /// The delay before retry number `retry` (0 for the first retry), with
    /// jitter from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let low = ceiling / 2;
        let spread = (ceiling - low).as_nanos() as u64;
        low + Duration::from_nanos(rng.random_range(0..=spread))
    }

    /// The delay before retry number `retry` without jitter.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// A fresh backoff sequence under this policy.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            params: *self,
            retries: 0,
        }
    }
}

/// The state of one retry loop: how many retries it has made so far.
#[derive(Clone, Debug)]
pub struct Backoff {
    params: RetryParams,
    retries: u32,
}

impl Backoff {
    /// The wait before the next attempt, or `None` once `max_attempts`
    /// attempts have failed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if let Some(max) = self.params.max_attempts
            && self.retries + 1 >= max
        {
            return None;
        }
        let delay = self.params.delay(self.retries, &mut rand::rng());
        self.retries = self.retries.saturating_add(1);
        Some(delay)
    }

    /// Failed attempts so far, minus the first.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Starts over (after a success in a loop that keeps going).
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    const P: RetryParams = RetryParams {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_000),
        max_attempts: Some(4),
    };

    #[test]
    fn delays_double_up_to_the_ceiling_and_stay_within_the_jitter_band() {
        let ceilings: Vec<u128> = (0..6).map(|n| P.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for retry in 0..40 {
            let d = P.delay(retry, &mut rng);
            let c = P.ceiling(retry);
            assert!(
                d >= c / 2 && d <= c,
                "retry {retry}: {d:?} not in [{:?}, {c:?}]",
                c / 2
            );
        }
        // Jitter: the same retry does not always wait the same.
        let draws: std::collections::BTreeSet<_> = (0..16).map(|_| P.delay(3, &mut rng)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        assert_eq!(P.ceiling(u32::MAX), P.max_delay);
        let big = RetryParams {
            base_delay: Duration::from_secs(u64::MAX / 2),
            ..P
        };
        assert_eq!(big.ceiling(5), P.max_delay);
    }

    #[test]
    fn a_backoff_ends_after_max_attempts_and_starts_over_on_reset() {
        let mut b = P.backoff();
        // Four attempts: three waits between them.
        assert_eq!((0..10).filter_map(|_| b.next_delay()).count(), 3);
        assert_eq!(b.retries(), 3);
        b.reset();
        assert!(b.next_delay().is_some());
        let mut forever = RetryParams::COORDINATOR.backoff();
        assert!((0..100).all(|_| forever.next_delay().is_some()));
    }
}
