//! Prometheus metrics of the coordinator, served as text on `/metrics`.
//! Gauges are set from the state at each scrape; counters and the lease
//! latency histogram are updated as requests come.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::{Completed, State};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub job: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    ranks_alive: Family<JobLabel, Gauge>,
    generation: Family<JobLabel, Gauge>,
    step: Family<JobLabel, Gauge>,
    tasks: Family<TaskLabel, Gauge>,
    pm_accuracy: Family<JobLabel, Gauge<f64, AtomicU64>>,
    test_accuracy: Family<JobLabel, Gauge<f64, AtomicU64>>,
    pub rows_total: Counter,
    completions: Family<OutcomeLabel, Counter>,
    pub lease_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("premem");
        let m = Metrics {
            registry: Registry::default(),
            ranks_alive: Family::default(),
            generation: Family::default(),
            step: Family::default(),
            tasks: Family::default(),
            pm_accuracy: Family::default(),
            test_accuracy: Family::default(),
            rows_total: Counter::default(),
            completions: Family::default(),
            lease_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
        };
        registry.register(
            "ranks_alive",
            "Trainer ranks of the running generation",
            m.ranks_alive.clone(),
        );
        registry.register(
            "generation",
            "Trainer group generation (grows when ranks are lost and rejoin)",
            m.generation.clone(),
        );
        registry.register("step", "Optimizer steps trained", m.step.clone());
        registry.register(
            "tasks",
            "Evaluation tasks by state (pending, leased, done)",
            m.tasks.clone(),
        );
        registry.register(
            "pm_accuracy",
            "Pre-memorization train accuracy at the newest fully evaluated checkpoint",
            m.pm_accuracy.clone(),
        );
        registry.register(
            "test_accuracy",
            "Test accuracy at the newest fully evaluated checkpoint",
            m.test_accuracy.clone(),
        );
        registry.register(
            "result_rows",
            "Per-example result rows accepted",
            m.rows_total.clone(),
        );
        registry.register(
            "completions",
            "Task completions by outcome (accepted, duplicate, expired)",
            m.completions.clone(),
        );
        registry.register(
            "lease_seconds",
            "Time to hand out a lease, in seconds",
            m.lease_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn count_completion(&self, completed: Completed) {
        let outcome = match completed {
            Completed::Accepted => "accepted",
            Completed::Duplicate => "duplicate",
            Completed::Expired => "expired",
        };
        self.completions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text exposition, gauges refreshed from `state`.
    pub fn render(&self, state: &Mutex<State>) -> String {
        {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            for job in state.jobs.values() {
                let label = JobLabel {
                    job: job.name.clone(),
                };
                let alive = if job.group.running {
                    job.group.members.len()
                } else {
                    0
                };
                self.ranks_alive.get_or_create(&label).set(alive as i64);
                self.generation
                    .get_or_create(&label)
                    .set(job.group.generation as i64);
                self.step.get_or_create(&label).set(job.step() as i64);
                for (name, count) in [
                    ("pending", job.pending_tasks()),
                    ("leased", job.leased_tasks()),
                    ("done", job.done_tasks()),
                ] {
                    self.tasks
                        .get_or_create(&TaskLabel {
                            job: job.name.clone(),
                            state: name.into(),
                        })
                        .set(count as i64);
                }
                if let Some(pm) = job.pm_by_step.values().last().and_then(|p| p.pm) {
                    self.pm_accuracy.get_or_create(&label).set(pm);
                }
                if let Some(test) = job.test.values().last() {
                    self.test_accuracy.get_or_create(&label).set(test.accuracy);
                }
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}
