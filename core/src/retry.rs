//! Retrying, in one place: every loop in premem that retries (a CLI or
//! worker calling a coordinator that may be restarting, a rank connecting
//! to its ring neighbour) runs through [`backon`] with a [`Retry`], which
//! names what is retried, under which policy, and for how long.
//!
//! A call site reads
//! `(|| attempt()).retry(plan.backoff()).when(retryable).notify(|e, w| plan.note(e, w)).call()`
//! (or `.await`): the backoff ends when the budget does, so the call returns
//! the last error once the deadline passes, the attempts are spent or the
//! stop flag is set.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A backoff policy: waits double from `base_delay` up to `max_delay`, each
/// with jitter (up to as long again, so processes that failed together do
/// not retry at the same instant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryParams {
    /// The delay before the first retry (before jitter).
    pub base_delay: Duration,
    /// No delay exceeds this before jitter (twice this after).
    pub max_delay: Duration,
}

impl RetryParams {
    /// Calls to the coordinator from a long-lived process (evaluator worker,
    /// trainer rank, CLI): it may be restarting.
    pub const COORDINATOR: RetryParams = RetryParams {
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
    };

    /// Connecting to a peer on the local network that is about to listen
    /// (a ring neighbour): short waits.
    pub const PEER: RetryParams = RetryParams {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(500),
    };

    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
    }
}

/// One call site's retrying: what it retries (for the log), its policy,
/// and its budget (a deadline, a number of attempts, a stop flag).
#[derive(Clone, Debug)]
pub struct Retry<'a> {
    what: String,
    params: RetryParams,
    deadline: Option<Instant>,
    attempts: Option<usize>,
    stop: Option<(&'a AtomicBool, Duration)>,
}

impl<'a> Retry<'a> {
    /// Retries `what` under `params` until the budget set below ends (with
    /// none set: forever).
    pub fn new(what: impl Into<String>, params: RetryParams) -> Retry<'a> {
        Retry {
            what: what.into(),
            params,
            deadline: None,
            attempts: None,
            stop: None,
        }
    }

    /// No retry starts after `limit` from now.
    pub fn for_at_most(self, limit: Duration) -> Retry<'a> {
        self.until(Instant::now().checked_add(limit))
    }

    /// No retry starts after `deadline` (`None`: no deadline); the last
    /// wait is cut short to end at it.
    pub fn until(mut self, deadline: Option<Instant>) -> Retry<'a> {
        self.deadline = deadline;
        self
    }

    /// At most `attempts` attempts in all.
    pub fn attempts(mut self, attempts: usize) -> Retry<'a> {
        self.attempts = Some(attempts);
        self
    }

    /// Once `stop` is set, retries go on for at most `grace` (zero: none).
    pub fn unless_stopped(mut self, stop: &'a AtomicBool, grace: Duration) -> Retry<'a> {
        self.stop = Some((stop, grace));
        self
    }

    /// The waits between attempts, for backon's `.retry(…)`.
    pub fn backoff(&self) -> Budgeted<'a> {
        Budgeted {
            retry: self.clone(),
        }
    }

    /// Logs a failed attempt that will be retried after `wait`.
    pub fn note(&self, error: &dyn Display, wait: Duration) {
        tracing::warn!(retrying = self.what, %error, retry_in = ?wait, "failed; retrying");
    }
}

/// A [`Retry`]'s backoff builder (see [`Retry::backoff`]).
#[derive(Clone, Debug)]
pub struct Budgeted<'a> {
    retry: Retry<'a>,
}

impl<'a> BackoffBuilder for Budgeted<'a> {
    type Backoff = Waits<'a>;

    fn build(self) -> Waits<'a> {
        let mut builder = self.retry.params.builder();
        if let Some(attempts) = self.retry.attempts {
            builder = builder.with_max_times(attempts.saturating_sub(1));
        }
        Waits {
            inner: builder.build(),
            deadline: self.retry.deadline,
            stop: self.retry.stop,
        }
    }
}

/// The waits of one retry loop: the policy's, ending with the budget.
#[derive(Debug)]
pub struct Waits<'a> {
    inner: ExponentialBackoff,
    deadline: Option<Instant>,
    stop: Option<(&'a AtomicBool, Duration)>,
}

impl Iterator for Waits<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if let Some((flag, grace)) = self.stop
            && flag.load(Ordering::SeqCst)
        {
            let end = now.checked_add(grace);
            self.deadline = match (self.deadline, end) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
            self.stop = None;
        }
        let wait = self.inner.next()?;
        match self.deadline {
            Some(deadline) if now >= deadline => None,
            Some(deadline) => Some(wait.min(deadline - now)),
            None => Some(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryParams = RetryParams {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(1_000),
    };

    fn waits(retry: &Retry<'_>, n: usize) -> Vec<Duration> {
        retry.backoff().build().take(n).collect()
    }

    #[test]
    fn waits_double_up_to_the_ceiling_with_at_most_as_much_again_of_jitter() {
        let w = waits(&Retry::new("t", P), 40);
        assert_eq!(w.len(), 40, "no budget: it does not end");
        let mut ceiling = P.base_delay;
        for (n, wait) in w.iter().enumerate() {
            assert!(
                *wait >= ceiling && *wait <= ceiling * 2,
                "wait {n}: {wait:?} not in [{ceiling:?}, {:?}]",
                ceiling * 2
            );
            ceiling = (ceiling * 2).min(P.max_delay);
        }
        let distinct: std::collections::BTreeSet<_> = w[10..].iter().collect();
        assert!(distinct.len() > 1, "jitter: equal retries wait differently");
    }

    #[test]
    fn attempts_count_the_first_call() {
        assert_eq!(waits(&Retry::new("t", P).attempts(4), 10).len(), 3);
        assert!(waits(&Retry::new("t", P).attempts(1), 10).is_empty());
    }

    #[test]
    fn a_deadline_ends_the_waits_and_cuts_the_last_one_short() {
        let soon = Retry::new("t", P).for_at_most(Duration::from_millis(50));
        let w = waits(&soon, 10);
        assert!(w.iter().all(|w| *w <= Duration::from_millis(50)), "{w:?}");
        let past = Retry::new("t", P).until(Some(Instant::now()));
        assert!(waits(&past, 10).is_empty());
    }

    #[test]
    fn a_stop_flag_ends_the_waits_after_its_grace() {
        let stop = AtomicBool::new(false);
        let retry = Retry::new("t", P).unless_stopped(&stop, Duration::ZERO);
        let mut before = retry.backoff().build();
        assert!(before.next().is_some());
        stop.store(true, Ordering::SeqCst);
        assert_eq!(before.next(), None);
        let graced = Retry::new("t", P).unless_stopped(&stop, Duration::from_secs(60));
        let w = waits(&graced, 5);
        assert_eq!(w.len(), 5, "within the grace it still retries");
        assert!(w.iter().all(|w| *w <= Duration::from_secs(60)));
    }
}
