//! The simulated evaluators of one client process: each with its own
//! connection, looping `LeaseTask` → (simulated work, renewals) → write the
//! result file → `CompleteTask`, timing every call at the client. In a soak
//! an evaluator may die holding a task (it comes back under a new name on a
//! new connection; its lease runs out) or stop renewing and complete after
//! its lease ran out; after the soak's time every evaluator finishes the
//! remaining tasks plainly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use premem_proto::v1::{self, Completion, JobState};
use premem_proto::{Client, ClientConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::BenchError;
use super::workload::{result_file, rows};

/// How the simulated evaluators behave.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    /// Simulated evaluation time of a task, uniform in this range of
    /// milliseconds (`(0, 0)`: none).
    pub work_ms: (u64, u64),
    /// Chance per task that its evaluator dies holding it.
    pub deaths: f64,
    /// Chance per task that its evaluator stops renewing and completes it
    /// after its lease ran out.
    pub expiries: f64,
    /// Seconds of the behaviour above; then every evaluator finishes the
    /// remaining tasks without it. `None`: no soak (every task exists from
    /// the start and no lease runs out: no task means none is left).
    pub soak_seconds: Option<f64>,
    pub seed: u64,
}

/// One client process's share of the evaluators.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientPlan {
    pub address: String,
    pub token: String,
    /// Where the runs are (`<dir>/<job>/run`).
    pub dir: PathBuf,
    pub jobs: Vec<String>,
    /// Evaluators `first..first + count`.
    pub first: usize,
    pub count: usize,
    pub lease_ttl_ms: u64,
    pub behaviour: Behaviour,
}

/// What one process's evaluators saw: latencies in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    pub lease_us: Vec<u32>,
    pub complete_us: Vec<u32>,
    pub renew_us: Vec<u32>,
    pub accepted: Vec<String>,
    pub duplicate: usize,
    pub expired: usize,
    pub deaths: usize,
    /// Completions sent after the lease ran out, on purpose.
    pub late: usize,
    /// CPU seconds of the client processes.
    pub cpu_seconds: f64,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.lease_us.extend(other.lease_us);
        self.complete_us.extend(other.complete_us);
        self.renew_us.extend(other.renew_us);
        self.accepted.extend(other.accepted);
        self.duplicate += other.duplicate;
        self.expired += other.expired;
        self.deaths += other.deaths;
        self.late += other.late;
        self.cpu_seconds += other.cpu_seconds;
    }
}

fn micros(since: Instant) -> u32 {
    since.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Connects every evaluator of `plan` (one GetStatus each), then calls
/// `ready` and waits for `go` before the evaluators start.
pub async fn run(
    plan: ClientPlan,
    ready: impl FnOnce(),
    go: impl Future<Output = ()>,
) -> Result<Tally, BenchError> {
    let config = ClientConfig::new(plan.address.clone(), plan.token.clone());
    let mut evaluators = Vec::with_capacity(plan.count);
    for e in plan.first..plan.first + plan.count {
        let mut client = premem_proto::client(&config)?;
        status(&mut client, &plan.jobs[0]).await?;
        evaluators.push(Evaluator {
            name: format!("bench-evaluator-{e}"),
            lives: 0,
            client,
            config: config.clone(),
            rng: StdRng::seed_from_u64(plan.behaviour.seed.wrapping_add(e as u64)),
            plan: plan.clone(),
        });
    }
    ready();
    go.await;
    let started = Instant::now();
    let handles: Vec<_> = evaluators
        .into_iter()
        .map(|e| tokio::spawn(e.work(started)))
        .collect();
    let mut tally = Tally::default();
    for handle in handles {
        let done = handle
            .await
            .map_err(|e| BenchError::Check(format!("an evaluator panicked: {e}")))??;
        tally.merge(done);
    }
    tally.cpu_seconds = super::cpu_seconds().unwrap_or(f64::NAN);
    Ok(tally)
}

pub async fn status(client: &mut Client, job: &str) -> Result<v1::JobStatus, BenchError> {
    Ok(client
        .get_status(v1::GetStatusRequest { job: job.into() })
        .await?
        .into_inner())
}

struct Evaluator {
    name: String,
    lives: u32,
    client: Client,
    config: ClientConfig,
    rng: StdRng,
    plan: ClientPlan,
}

/// What an evaluator does with a task it leased.
enum Fate {
    Finish,
    Die,
    Expire,
}

impl Evaluator {
    fn soaking(&self, started: Instant) -> bool {
        self.plan
            .behaviour
            .soak_seconds
            .is_some_and(|s| started.elapsed().as_secs_f64() < s)
    }

    async fn work(mut self, started: Instant) -> Result<Tally, BenchError> {
        let mut tally = Tally::default();
        // Evaluators that take time per task arrive spread over one such
        // time, as a fleet does, not all in the same millisecond.
        let (_, high) = self.plan.behaviour.work_ms;
        if high > 0 {
            let arrival = self.rng.random_range(0..=high);
            tokio::time::sleep(Duration::from_millis(arrival)).await;
        }
        loop {
            let asked = Instant::now();
            let reply = self
                .client
                .lease_task(v1::LeaseTaskRequest {
                    evaluator: self.name.clone(),
                })
                .await?
                .into_inner();
            tally.lease_us.push(micros(asked));
            let Some(task) = reply.task else {
                if self.plan.behaviour.soak_seconds.is_none() || self.all_done().await? {
                    return Ok(tally);
                }
                tokio::time::sleep(Duration::from_millis(reply.retry_after_ms.max(50))).await;
                continue;
            };
            match self.fate(started) {
                Fate::Finish => {
                    self.simulate_work(&task, &mut tally).await?;
                    self.complete(task, &mut tally).await?;
                }
                Fate::Die => self.die(&mut tally).await?,
                Fate::Expire => {
                    let ttl = Duration::from_millis(self.plan.lease_ttl_ms);
                    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
                    tally.late += 1;
                    self.complete(task, &mut tally).await?;
                }
            }
        }
    }

    fn fate(&mut self, started: Instant) -> Fate {
        if !self.soaking(started) {
            return Fate::Finish;
        }
        let draw: f64 = self.rng.random();
        let b = &self.plan.behaviour;
        if draw < b.deaths {
            Fate::Die
        } else if draw < b.deaths + b.expiries {
            Fate::Expire
        } else {
            Fate::Finish
        }
    }

    /// Every job is DONE.
    async fn all_done(&mut self) -> Result<bool, BenchError> {
        for job in self.plan.jobs.clone() {
            if status(&mut self.client, &job).await?.state != JobState::Done as i32 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sleeps the drawn evaluation time (none after the soak), renewing
    /// the lease every third of its TTL.
    async fn simulate_work(
        &mut self,
        task: &v1::Task,
        tally: &mut Tally,
    ) -> Result<(), BenchError> {
        let (low, high) = self.plan.behaviour.work_ms;
        if high == 0 {
            return Ok(());
        }
        let mut left = Duration::from_millis(self.rng.random_range(low..=high));
        let every = Duration::from_millis(self.plan.lease_ttl_ms / 3);
        while left > every {
            tokio::time::sleep(every).await;
            left -= every;
            let asked = Instant::now();
            self.client
                .renew_lease(v1::RenewLeaseRequest {
                    lease_id: task.lease_id.clone(),
                    task_id: task.task_id.clone(),
                })
                .await?;
            tally.renew_us.push(micros(asked));
        }
        tokio::time::sleep(left).await;
        Ok(())
    }

    /// Drops the connection and the task, and comes back under a new name.
    async fn die(&mut self, tally: &mut Tally) -> Result<(), BenchError> {
        tally.deaths += 1;
        self.lives += 1;
        self.client = premem_proto::client(&self.config)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = self.name.split("-life").next().unwrap_or_default();
        self.name = format!("{base}-life{}", self.lives);
        Ok(())
    }

    /// Writes the task's result file (atomically: a late evaluator may
    /// rewrite a file another's completion is reading) and completes it.
    async fn complete(&mut self, task: v1::Task, tally: &mut Tally) -> Result<(), BenchError> {
        let rows = rows(&task)?;
        let run = self.plan.dir.join(&task.job).join("run");
        let file = run.join(&task.result_file);
        let parent = file.parent().expect("a result file is in a directory");
        tokio::fs::create_dir_all(parent).await?;
        let staged = parent.join(format!(".{}.{}", self.name, task.lease_id));
        tokio::fs::write(&staged, result_file(&task, &rows)).await?;
        tokio::fs::rename(&staged, &file).await?;
        let asked = Instant::now();
        let completion = self
            .client
            .complete_task(v1::CompleteTaskRequest {
                lease_id: task.lease_id,
                task_id: task.task_id.clone(),
                rows,
            })
            .await?
            .into_inner()
            .completion();
        tally.complete_us.push(micros(asked));
        match completion {
            Completion::Accepted => tally.accepted.push(task.task_id),
            Completion::Duplicate => tally.duplicate += 1,
            Completion::Expired => tally.expired += 1,
            Completion::Unspecified => {
                return Err(BenchError::Check(format!(
                    "task {}: completion UNSPECIFIED",
                    task.task_id
                )));
            }
        }
        Ok(())
    }
}
