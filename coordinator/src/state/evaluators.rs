//! **Evaluators.** What each evaluator has done, as the dashboard shows the
//! fleet: leases taken, tasks done and failed, rows, when it was last heard
//! from, and its recent rate. Updated by [`super::leases`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window of the tasks-per-minute rate.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// An evaluator silent for this many lease TTLs while holding no lease has
/// left the fleet (evaluators poll well within one TTL).
const FORGET_AFTER_TTLS: u32 = 10;

#[derive(Clone, Debug)]
pub struct EvaluatorStats {
    pub last_seen: Instant,
    pub leases_taken: u64,
    pub tasks_done: u64,
    pub rows: u64,
    pub failures: u64,
    /// Completions within the last [`RATE_WINDOW`].
    recent: VecDeque<Instant>,
}

impl EvaluatorStats {
    fn new(now: Instant) -> EvaluatorStats {
        EvaluatorStats {
            last_seen: now,
            leases_taken: 0,
            tasks_done: 0,
            rows: 0,
            failures: 0,
            recent: VecDeque::new(),
        }
    }

    /// Tasks completed per minute over the last minute (or since the
    /// evaluator's first completion, when that is sooner).
    pub fn tasks_per_min(&self, now: Instant) -> f64 {
        let recent = self
            .recent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= RATE_WINDOW)
            .count();
        recent as f64 / RATE_WINDOW.as_secs_f64() * 60.0
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RATE_WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

/// What happened with an evaluator.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// It asked for work (with or without a task handed out).
    Polled {
        leased: bool,
    },
    Completed {
        rows: u64,
    },
    Failed,
}

impl super::State {
    /// Records `event` of `evaluator` at `now`.
    pub fn note_evaluator(&mut self, evaluator: &str, event: Event, now: Instant) {
        if evaluator.is_empty() {
            return;
        }
        let stats = self
            .evaluators
            .entry(evaluator.to_string())
            .or_insert_with(|| EvaluatorStats::new(now));
        stats.last_seen = now;
        match event {
            Event::Polled { leased } => stats.leases_taken += u64::from(leased),
            Event::Completed { rows } => {
                stats.tasks_done += 1;
                stats.rows += rows;
                stats.recent.push_back(now);
            }
            Event::Failed => stats.failures += 1,
        }
        stats.forget_old(now);
    }

    /// Forgets the evaluators that left the fleet: silent for
    /// [`FORGET_AFTER_TTLS`] lease TTLs and holding no lease. One that comes
    /// back starts afresh. A fleet whose evaluators die and come back under
    /// new names would otherwise grow this map for ever. Returns how many
    /// were forgotten.
    pub fn forget_evaluators(&mut self, now: Instant) -> usize {
        let silence = self.timing.lease_ttl * FORGET_AFTER_TTLS;
        let before = self.evaluators.len();
        let queue = &self.queue;
        self.evaluators.retain(|name, e| {
            now.saturating_duration_since(e.last_seen) < silence || queue.held_by(name) > 0
        });
        before - self.evaluators.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{State, Timing};

    #[test]
    fn counts_and_rate_over_the_last_minute() {
        let mut state = State::new(Timing::default());
        let t0 = Instant::now();
        state.note_evaluator("e", Event::Polled { leased: true }, t0);
        state.note_evaluator("e", Event::Completed { rows: 16 }, t0);
        state.note_evaluator("e", Event::Polled { leased: false }, t0);
        state.note_evaluator("e", Event::Failed, t0 + Duration::from_secs(30));
        let later = t0 + Duration::from_secs(50);
        state.note_evaluator("e", Event::Completed { rows: 8 }, later);
        let e = &state.evaluators["e"];
        assert_eq!(
            (e.leases_taken, e.tasks_done, e.rows, e.failures),
            (1, 2, 24, 1)
        );
        assert_eq!(e.tasks_per_min(later), 2.0);
        // A minute after the first completion only the second counts.
        assert_eq!(e.tasks_per_min(t0 + Duration::from_secs(61)), 1.0);
        assert_eq!(e.last_seen, later);
        state.note_evaluator("", Event::Failed, later);
        assert_eq!(state.evaluators.len(), 1);
    }

    #[test]
    fn evaluators_silent_for_ten_lease_ttls_and_holding_nothing_are_forgotten() {
        let timing = Timing {
            lease_ttl: Duration::from_secs(10),
            ..Timing::default()
        };
        let mut state = State::new(timing);
        let t0 = Instant::now();
        state.note_evaluator("gone", Event::Polled { leased: false }, t0);
        state.note_evaluator("quiet", Event::Polled { leased: false }, t0);
        let t1 = t0 + Duration::from_secs(50);
        state.note_evaluator("quiet", Event::Completed { rows: 1 }, t1);
        assert_eq!(state.forget_evaluators(t0 + Duration::from_secs(99)), 0);
        assert_eq!(state.forget_evaluators(t0 + Duration::from_secs(100)), 1);
        assert!(!state.evaluators.contains_key("gone"));
        assert_eq!(state.forget_evaluators(t1 + Duration::from_secs(100)), 1);
        assert!(state.evaluators.is_empty());
    }
}
