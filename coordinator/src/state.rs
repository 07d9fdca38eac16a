//! The coordinator's state: jobs, their trainer groups, evaluation tasks and
//! leases, and the live P-M accuracy. Plain data behind one lock, every
//! method a short synchronous transition that takes `now` as an argument, so
//! the lease rules are tested without a network or a clock.
//!
//! Rules, in one place:
//! - **Group.** Each job has a generation of trainer ranks. A rank that
//!   registers while it is already a member, or while the group is running,
//!   starts a new generation (a rank died and came back, or a new process
//!   took its place): every rank regroups and resumes from the newest
//!   checkpoint. A generation runs once all `world_size` ranks registered.
//!   A running rank silent for longer than the rank TTL also starts a new
//!   generation.
//! - **Tasks.** Every published checkpoint gets tasks of `eval.task_examples`
//!   examples of the train subset (P-M accuracy) and of the test split;
//!   identical for any number of evaluators.
//! - **Leases.** A task is leased to one evaluator for the lease TTL,
//!   renewed by `RenewLease`; when it runs out the task is pending again. A
//!   completion counts once: later ones are duplicates; one under an expired
//!   or unknown lease is ignored. Tasks are leased in the order their
//!   checkpoints were found, across jobs (train before test within one).
//! - **Pool.** Trainers started without a job ask for a rank
//!   ([`State::assign`]). Jobs are packed onto the idle pool trainers in
//!   submission order: a job of world size w starts once w of them are idle
//!   (a smaller job further back may start first); a started job's missing
//!   ranks go to the next trainer that asks. A pool trainer silent for the
//!   rank TTL loses its rank. A job that a trainer started for it
//!   (`--job/--rank`) joined is left to such trainers. After a restart the
//!   coordinator hands out no rank for one rank TTL, so that running pool
//!   trainers reclaim theirs by their heartbeats first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use premem_core::checkpoint::step_name;
use premem_core::pm::{CheckpointPm, Observation, PmTracker};
use premem_core::results::results_prefix;
use premem_core::spec::JobSpec;

use premem_core::Split;

/// A task's place in its job: tasks are leased in this order (oldest
/// checkpoint first, train before test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub step: u64,
    pub split: Split,
    pub index: u32,
}

impl TaskKey {
    pub fn id(&self, job: &str) -> String {
        format!(
            "{job}/{}/{}-{:04}",
            step_name(self.step),
            self.split.name(),
            self.index
        )
    }

    /// The result file, relative to the run.
    pub fn result_file(&self) -> String {
        format!(
            "{}/{}-{:04}.parquet",
            results_prefix(self.step),
            self.split.name(),
            self.index
        )
    }
}

/// Parses a task id made by [`TaskKey::id`] into the job and the key.
pub fn parse_task_id(id: &str) -> Option<(&str, TaskKey)> {
    let (rest, last) = id.rsplit_once('/')?;
    let (job, step) = rest.rsplit_once('/')?;
    let step = premem_core::checkpoint::parse_step_name(step)?;
    let (split, index) = last.split_once('-')?;
    let split = Split::from_name(split)?;
    if index.len() != 4 {
        return None;
    }
    Some((
        job,
        TaskKey {
            step,
            split,
            index: index.parse().ok()?,
        },
    ))
}

/// One example's row without preamble: what P-M accuracy needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: String,
    pub accuracy: f64,
    pub perplexity: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    Pending,
    Leased {
        lease: String,
        evaluator: String,
        expires: Instant,
    },
    Done,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub examples: Vec<String>,
    pub state: TaskState,
    pub attempts: u32,
    /// Rows of a done task.
    pub rows: Vec<Row>,
}

/// A trainer rank of the current generation.
#[derive(Clone, Debug)]
pub struct Member {
    pub ring_address: String,
    pub nccl_id: Vec<u8>,
    pub last_seen: Instant,
    pub step: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub generation: u64,
    pub members: BTreeMap<u32, Member>,
    /// Every rank registered: the generation trains.
    pub running: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    Active,
    Cancelled,
    Failed(String),
}

/// What a job's evaluation covers, fixed when the job is submitted.
#[derive(Clone, Debug)]
pub struct Examples {
    pub train: Vec<String>,
    pub test: Vec<String>,
}

pub struct Job {
    pub name: String,
    /// Ranks held by pool trainers: rank → trainer name.
    pub assigned: BTreeMap<u32, String>,
    /// A trainer started for this job (not from the pool) joined it.
    pub dedicated: bool,
    /// When each checkpoint's tasks were added: the leasing order.
    found: BTreeMap<u64, Instant>,
    pub spec: JobSpec,
    pub spec_json: String,
    pub examples: Examples,
    pub total_steps: u64,
    pub phase: Phase,
    pub group: Group,
    /// Rank 0 finished every step (or the final checkpoint is published).
    pub trained: bool,
    pub tasks: BTreeMap<TaskKey, Task>,
    pending: BTreeSet<TaskKey>,
    pm: PmTracker,
    /// P-M values of checkpoints pushed into the tracker, in order.
    pub pm_by_step: BTreeMap<u64, CheckpointPm>,
    pub test_accuracy: BTreeMap<u64, f64>,
}

/// How a completion was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completed {
    Accepted,
    Duplicate,
    Expired,
}

/// A refused request: the gRPC status it maps to and a message naming the
/// offending field.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    NotFound(String),
    Invalid(String),
    /// Valid, but not now (e.g. a superseded generation).
    Precondition(String),
    AlreadyExists(String),
}

pub type Refused<T> = Result<T, Refusal>;

/// How long a pool trainer that asked for a rank counts as idle (at most
/// the rank TTL): trainers ask every few hundred milliseconds.
const POOL_IDLE_TTL: Duration = Duration::from_secs(10);

/// Lease and liveness timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub rank_ttl: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_ttl: Duration::from_secs(30),
            rank_ttl: Duration::from_secs(60),
        }
    }
}

/// A leased task as the evaluator gets it.
#[derive(Clone, Debug)]
pub struct Leased {
    pub job: String,
    pub key: TaskKey,
    pub lease: String,
    pub examples: Vec<String>,
}

/// What registration tells a rank.
#[derive(Clone, Debug)]
pub struct Registered {
    pub world_size: u32,
    pub generation: u64,
    pub spec_json: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rendezvous {
    Waiting,
    Ready {
        ring_addresses: Vec<String>,
        nccl_id: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Regroup,
    Stop,
}

/// A pool trainer as the coordinator knows it.
#[derive(Clone, Debug)]
pub struct PoolTrainer {
    pub last_seen: Instant,
    /// (job, rank) it runs.
    pub assignment: Option<(String, u32)>,
}

/// The answer to a pool trainer.
#[derive(Clone, Debug, PartialEq)]
pub enum Assignment {
    Run { job: String, rank: u32 },
    Wait,
}

/// Everything the coordinator holds.
pub struct State {
    /// Pool trainers by name.
    pub pool: BTreeMap<String, PoolTrainer>,
    /// No ranks are assigned before this (set after a restart).
    pub assign_after: Option<Instant>,
    pub timing: Timing,
    /// Jobs in submission order of their names.
    pub jobs: BTreeMap<String, Job>,
    order: Vec<String>,
    leases: HashMap<String, (String, TaskKey)>,
    /// Accepted result rows, for the results/s metric.
    pub rows_accepted: u64,
    lease_counter: u64,
    lease_salt: u64,
}

impl Job {
    pub fn new(spec: JobSpec, spec_json: String, examples: Examples, total_steps: u64) -> Job {
        let pm = PmTracker::new(spec.eval.threshold, examples.train.iter().cloned());
        Job {
            name: spec.run.name.clone(),
            assigned: BTreeMap::new(),
            dedicated: false,
            found: BTreeMap::new(),
            spec,
            spec_json,
            examples,
            total_steps,
            phase: Phase::Active,
            group: Group {
                generation: 1,
                ..Group::default()
            },
            trained: false,
            tasks: BTreeMap::new(),
            pending: BTreeSet::new(),
            pm,
            pm_by_step: BTreeMap::new(),
            test_accuracy: BTreeMap::new(),
        }
    }

    pub fn world_size(&self) -> u32 {
        self.spec.cluster.trainers as u32
    }

    /// Checkpoint steps that have tasks.
    pub fn checkpoint_steps(&self) -> BTreeSet<u64> {
        self.tasks.keys().map(|k| k.step).collect()
    }

    /// Adds the tasks of a newly published checkpoint (no-op if known).
    /// Returns the new tasks' keys.
    pub fn add_checkpoint(&mut self, step: u64) -> Vec<TaskKey> {
        if !self.spec.eval.enabled || self.tasks.keys().any(|k| k.step == step) {
            return vec![];
        }
        let size = self.spec.eval.task_examples;
        self.found.insert(step, Instant::now());
        let mut added = vec![];
        for (split, ids) in [
            (Split::Train, &self.examples.train),
            (Split::Test, &self.examples.test),
        ] {
            for (index, chunk) in ids.chunks(size).enumerate() {
                let key = TaskKey {
                    step,
                    split,
                    index: index as u32,
                };
                self.tasks.insert(
                    key,
                    Task {
                        examples: chunk.to_vec(),
                        state: TaskState::Pending,
                        attempts: 0,
                        rows: vec![],
                    },
                );
                self.pending.insert(key);
                added.push(key);
            }
        }
        if step >= self.total_steps {
            self.trained = true;
        }
        added
    }

    /// Marks a task done with its rows (checked by the caller) and folds
    /// finished checkpoints into the P-M tracker, in step order.
    pub fn finish_task(&mut self, key: TaskKey, rows: Vec<Row>) {
        let task = self.tasks.get_mut(&key).expect("known task");
        task.state = TaskState::Done;
        task.rows = rows;
        self.pending.remove(&key);
        self.fold();
    }

    fn split_done(&self, step: u64, split: Split) -> Option<Vec<&Row>> {
        let mut rows = vec![];
        for (key, task) in self.tasks.range(
            TaskKey {
                step,
                split,
                index: 0,
            }..=TaskKey {
                step,
                split,
                index: u32::MAX,
            },
        ) {
            debug_assert_eq!((key.step, key.split), (step, split));
            if task.state != TaskState::Done {
                return None;
            }
            rows.extend(task.rows.iter());
        }
        Some(rows)
    }

    fn fold(&mut self) {
        for step in self.checkpoint_steps() {
            if !self.test_accuracy.contains_key(&step)
                && !self.examples.test.is_empty()
                && let Some(rows) = self.split_done(step, Split::Test)
            {
                let mean = rows.iter().map(|r| r.accuracy).sum::<f64>() / rows.len() as f64;
                self.test_accuracy.insert(step, mean);
            }
        }
        // P-M accuracy takes checkpoints in order: stop at the first whose
        // train tasks are not all done.
        let folded = self.pm_by_step.keys().next_back().copied();
        let steps: Vec<u64> = self
            .checkpoint_steps()
            .into_iter()
            .filter(|s| folded.is_none_or(|f| *s > f))
            .collect();
        for step in steps {
            let Some(rows) = self.split_done(step, Split::Train) else {
                break;
            };
            let observations: Vec<(String, Observation)> = rows
                .iter()
                .map(|r| {
                    (
                        r.id.clone(),
                        Observation {
                            accuracy: r.accuracy,
                            perplexity: r.perplexity,
                        },
                    )
                })
                .collect();
            let pushed = self
                .pm
                .push(step, observations.iter().map(|(id, o)| (id.as_str(), *o)));
            match pushed {
                Ok(pm) => {
                    self.pm_by_step.insert(step, pm);
                }
                Err(e) => {
                    // Rows were validated on completion; this is a bug.
                    tracing::error!(job = self.name, step, error = %e, "P-M aggregation");
                    break;
                }
            }
        }
    }

    pub fn done_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| t.state == TaskState::Done)
            .count()
    }

    pub fn leased_tasks(&self) -> usize {
        self.tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Leased { .. }))
            .count()
    }

    pub fn pending_tasks(&self) -> usize {
        self.pending.len()
    }

    /// Training finished and every task is done.
    /// Training finished, the final checkpoint has its tasks (it may be
    /// found after the ranks report finishing), and every task is done.
    pub fn complete(&self) -> bool {
        self.trained
            && self.pending.is_empty()
            && self.done_tasks() == self.tasks.len()
            && (!self.spec.eval.enabled
                || self
                    .tasks
                    .keys()
                    .next_back()
                    .is_some_and(|k| k.step >= self.total_steps))
    }

    /// Optimizer steps the group reports (the slowest rank).
    pub fn step(&self) -> u64 {
        if self.trained {
            return self.total_steps;
        }
        let newest = self.checkpoint_steps().last().copied().unwrap_or(0);
        self.group
            .members
            .values()
            .map(|m| m.step)
            .min()
            .unwrap_or(0)
            .max(newest)
    }

    fn regroup(&mut self, first: Option<(u32, Member)>) {
        self.group.generation += 1;
        self.group.members.clear();
        self.group.running = false;
        if let Some((rank, member)) = first {
            self.group.members.insert(rank, member);
        }
    }
}

impl State {
    pub fn new(timing: Timing) -> State {
        State {
            pool: BTreeMap::new(),
            assign_after: None,
            timing,
            jobs: BTreeMap::new(),
            order: vec![],
            leases: HashMap::new(),
            rows_accepted: 0,
            lease_counter: 0,
            lease_salt: rand::random(),
        }
    }

    /// Adds a job (a new submission, or one rebuilt after a restart).
    pub fn insert_job(&mut self, job: Job) -> Refused<bool> {
        if let Some(existing) = self.jobs.get(&job.name) {
            if existing.spec == job.spec {
                return Ok(false);
            }
            return Err(Refusal::AlreadyExists(format!(
                "job '{}' exists with another spec; give the run another name",
                job.name
            )));
        }
        self.order.push(job.name.clone());
        self.jobs.insert(job.name.clone(), job);
        Ok(true)
    }

    pub fn job(&self, name: &str) -> Refused<&Job> {
        self.jobs
            .get(name)
            .ok_or_else(|| Refusal::NotFound(format!("no job '{name}'")))
    }

    pub fn job_mut(&mut self, name: &str) -> Refused<&mut Job> {
        self.jobs
            .get_mut(name)
            .ok_or_else(|| Refusal::NotFound(format!("no job '{name}'")))
    }

    fn rank_in_range(job: &Job, rank: u32) -> Refused<()> {
        if rank >= job.world_size() {
            return Err(Refusal::Invalid(format!(
                "rank {rank} out of range: job '{}' has {} trainer rank(s) (0..{})",
                job.name,
                job.world_size(),
                job.world_size()
            )));
        }
        Ok(())
    }

    /// Notes who runs `rank` of `job`: a pool trainer (`trainer` non-empty)
    /// is seen, and adopts a rank nobody holds (its coordinator restarted);
    /// a trainer started for the job (`trainer` empty) makes the job
    /// dedicated. A rank another pool trainer holds is refused.
    fn claim(&mut self, job: &str, rank: u32, trainer: &str, now: Instant) -> Refused<()> {
        let j = self.job_mut(job)?;
        match j.assigned.get(&rank) {
            Some(holder) if holder != trainer => {
                return Err(Refusal::Precondition(format!(
                    "rank {rank} of job '{job}' is assigned to pool trainer '{holder}'{}",
                    if trainer.is_empty() {
                        String::new()
                    } else {
                        format!(", not to '{trainer}'")
                    }
                )));
            }
            Some(_) => {}
            None if trainer.is_empty() => j.dedicated = true,
            None => {
                j.assigned.insert(rank, trainer.to_string());
            }
        }
        if !trainer.is_empty() {
            let held = Some((job.to_string(), rank));
            if self.pool.get(trainer).is_some_and(|p| p.assignment != held) {
                self.release(trainer);
            }
            self.seen(trainer, now).assignment = held;
        }
        Ok(())
    }

    /// A pool trainer was heard from at `now` (added to the pool if new).
    fn seen(&mut self, trainer: &str, now: Instant) -> &mut PoolTrainer {
        let entry = self
            .pool
            .entry(trainer.to_string())
            .or_insert_with(|| PoolTrainer {
                last_seen: now,
                assignment: None,
            });
        entry.last_seen = now;
        entry
    }

    /// Frees the rank a pool trainer holds, if any.
    fn release(&mut self, trainer: &str) {
        let Some(entry) = self.pool.get_mut(trainer) else {
            return;
        };
        if let Some((job, rank)) = entry.assignment.take()
            && let Some(job) = self.jobs.get_mut(&job)
            && job.assigned.get(&rank).map(String::as_str) == Some(trainer)
        {
            job.assigned.remove(&rank);
        }
    }

    /// A pool trainer asks for a rank (see the module's rules).
    pub fn assign(&mut self, trainer: &str, now: Instant) -> Refused<Assignment> {
        if trainer.is_empty() || trainer.len() > 256 {
            return Err(Refusal::Invalid(
                "a pool trainer needs a name of 1 to 256 bytes".into(),
            ));
        }
        if let Some((job, rank)) = self.seen(trainer, now).assignment.clone() {
            let keep = self.jobs.get(&job).is_some_and(|j| {
                j.phase == Phase::Active
                    && !j.trained
                    && j.assigned.get(&rank).map(String::as_str) == Some(trainer)
            });
            if keep {
                return Ok(Assignment::Run { job, rank });
            }
            self.release(trainer);
        }
        if self.assign_after.is_some_and(|t| now < t) {
            return Ok(Assignment::Wait);
        }
        let idle_ttl = self.timing.rank_ttl.min(POOL_IDLE_TTL);
        let idle = self
            .pool
            .values()
            .filter(|p| {
                p.assignment.is_none() && now.saturating_duration_since(p.last_seen) <= idle_ttl
            })
            .count();
        let free_rank = |job: &Job| (0..job.world_size()).find(|r| !job.assigned.contains_key(r));
        let wants = |job: &Job| job.phase == Phase::Active && !job.trained && !job.dedicated;
        // Started jobs missing a rank first, then the first job that fits.
        let started = self.order.iter().find_map(|name| {
            let job = &self.jobs[name];
            (wants(job) && !job.assigned.is_empty())
                .then(|| free_rank(job).map(|r| (name.clone(), r)))
                .flatten()
        });
        let chosen = started.or_else(|| {
            self.order.iter().find_map(|name| {
                let job = &self.jobs[name];
                (wants(job) && job.assigned.is_empty() && idle >= job.world_size() as usize)
                    .then(|| (name.clone(), 0))
            })
        });
        let Some((job, rank)) = chosen else {
            return Ok(Assignment::Wait);
        };
        tracing::info!(job, rank, trainer, "rank assigned to a pool trainer");
        self.jobs
            .get_mut(&job)
            .expect("chosen from the jobs")
            .assigned
            .insert(rank, trainer.to_string());
        self.pool
            .get_mut(trainer)
            .expect("inserted above")
            .assignment = Some((job.clone(), rank));
        Ok(Assignment::Run { job, rank })
    }

    /// Pool trainers silent for longer than the rank TTL lose their rank and
    /// are forgotten. Returns their names.
    pub fn expire_pool(&mut self, now: Instant) -> Vec<String> {
        let ttl = self.timing.rank_ttl;
        let silent: Vec<String> = self
            .pool
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > ttl)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &silent {
            if let Some((job, rank)) = &self.pool[name].assignment {
                tracing::warn!(trainer = name, job, rank, "pool trainer silent: rank freed");
            }
            self.release(name);
            self.pool.remove(name);
        }
        silent
    }

    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        job: &str,
        rank: u32,
        trainer: &str,
        ring_address: String,
        nccl_id: Vec<u8>,
        now: Instant,
    ) -> Refused<Registered> {
        {
            let job = self.job_mut(job)?;
            Self::rank_in_range(job, rank)?;
            if job.phase != Phase::Active {
                return Err(Refusal::Precondition(format!(
                    "job '{}' is {:?}: nothing to train",
                    job.name, job.phase
                )));
            }
        }
        self.claim(job, rank, trainer, now)?;
        let job = self.job_mut(job)?;
        let member = Member {
            ring_address,
            nccl_id,
            last_seen: now,
            step: 0,
        };
        if job.group.running || job.group.members.contains_key(&rank) {
            tracing::info!(
                job = job.name,
                rank,
                generation = job.group.generation + 1,
                "rank (re)joined: new generation"
            );
            job.regroup(Some((rank, member)));
        } else {
            job.group.members.insert(rank, member);
        }
        if job.group.members.len() as u32 == job.world_size() {
            job.group.running = true;
            tracing::info!(
                job = job.name,
                generation = job.group.generation,
                "every rank registered"
            );
        }
        Ok(Registered {
            world_size: job.world_size(),
            generation: job.group.generation,
            spec_json: job.spec_json.clone(),
        })
    }

    /// `nccl`: the rank uses NCCL; rank 0 passes its ncclUniqueId (the
    /// others an empty one) and nobody is ready before rank 0's id is known.
    pub fn rendezvous(
        &mut self,
        job: &str,
        rank: u32,
        trainer: &str,
        generation: u64,
        nccl: Option<&[u8]>,
        now: Instant,
    ) -> Refused<Rendezvous> {
        Self::rank_in_range(self.job(job)?, rank)?;
        self.claim(job, rank, trainer, now)?;
        let job = self.job_mut(job)?;
        if generation != job.group.generation {
            return Err(Refusal::Precondition(format!(
                "generation {generation} of job '{}' was superseded by {}: register again",
                job.name, job.group.generation
            )));
        }
        if rank == 0
            && let Some(id) = nccl
        {
            if id.is_empty() {
                return Err(Refusal::Invalid(
                    "rank 0 of an NCCL group must send its nccl_unique_id".into(),
                ));
            }
            if let Some(member) = job.group.members.get_mut(&0) {
                member.nccl_id = id.to_vec();
            }
        }
        let id_known = job
            .group
            .members
            .get(&0)
            .is_some_and(|m| !m.nccl_id.is_empty());
        if !job.group.running || (nccl.is_some() && !id_known) {
            return Ok(Rendezvous::Waiting);
        }
        Ok(Rendezvous::Ready {
            ring_addresses: job
                .group
                .members
                .values()
                .map(|m| m.ring_address.clone())
                .collect(),
            nccl_id: job
                .group
                .members
                .get(&0)
                .map(|m| m.nccl_id.clone())
                .unwrap_or_default(),
        })
    }

    pub fn heartbeat(
        &mut self,
        job: &str,
        rank: u32,
        trainer: &str,
        generation: u64,
        step: u64,
        now: Instant,
    ) -> Refused<(Action, u64)> {
        Self::rank_in_range(self.job(job)?, rank)?;
        if let Err(refusal) = self.claim(job, rank, trainer, now) {
            // Another trainer holds the rank now: this one regroups, and
            // its registration is refused.
            tracing::warn!(
                job,
                rank,
                trainer,
                ?refusal,
                "heartbeat from a replaced trainer"
            );
            let generation = self.job(job)?.group.generation;
            return Ok((Action::Regroup, generation));
        }
        let job = self.job_mut(job)?;
        if job.phase == Phase::Cancelled {
            return Ok((Action::Stop, job.group.generation));
        }
        if generation < job.group.generation {
            return Ok((Action::Regroup, job.group.generation));
        }
        if generation > job.group.generation {
            // A coordinator restarted with an older record: the ranks are
            // running this generation, adopt it.
            job.group = Group {
                generation,
                members: BTreeMap::new(),
                running: true,
            };
        }
        let member = job.group.members.entry(rank).or_insert_with(|| Member {
            ring_address: String::new(),
            nccl_id: vec![],
            last_seen: now,
            step,
        });
        member.last_seen = now;
        member.step = step;
        Ok((Action::Continue, job.group.generation))
    }

    pub fn trainer_finished(
        &mut self,
        job: &str,
        rank: u32,
        generation: u64,
        step: u64,
    ) -> Refused<()> {
        let job = self.job_mut(job)?;
        Self::rank_in_range(job, rank)?;
        if step != job.total_steps {
            return Err(Refusal::Invalid(format!(
                "rank {rank} reports finishing at step {step}; job '{}' plans {} steps",
                job.name, job.total_steps
            )));
        }
        if generation == job.group.generation {
            job.group.members.remove(&rank);
        }
        job.trained = true;
        Ok(())
    }

    /// Ranks of running generations silent for longer than the rank TTL
    /// start a new generation. Returns the jobs regrouped.
    pub fn expire_ranks(&mut self, now: Instant) -> Vec<String> {
        let ttl = self.timing.rank_ttl;
        let mut regrouped = vec![];
        for job in self.jobs.values_mut() {
            if job.trained || job.phase != Phase::Active || !job.group.running {
                continue;
            }
            let silent: Vec<u32> = job
                .group
                .members
                .iter()
                .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > ttl)
                .map(|(&r, _)| r)
                .collect();
            if !silent.is_empty() {
                tracing::warn!(job = job.name, ranks = ?silent, "ranks silent: regrouping");
                job.regroup(None);
                regrouped.push(job.name.clone());
            }
        }
        regrouped
    }

    /// Leased tasks whose lease ran out become pending again.
    pub fn expire_leases(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        let leases = &mut self.leases;
        for job in self.jobs.values_mut() {
            let mut back = vec![];
            for (key, task) in job.tasks.iter_mut() {
                if let TaskState::Leased {
                    lease,
                    expires,
                    evaluator,
                } = &task.state
                    && *expires <= now
                {
                    tracing::info!(
                        job = job.name,
                        task = key.id(&job.name),
                        evaluator,
                        "lease expired"
                    );
                    leases.remove(lease);
                    task.state = TaskState::Pending;
                    back.push(*key);
                }
            }
            expired += back.len();
            job.pending.extend(back);
        }
        expired
    }

    fn new_lease_id(&mut self) -> String {
        self.lease_counter += 1;
        format!("{:016x}{:08x}", self.lease_salt, self.lease_counter)
    }

    /// Leases the first pending task of the oldest active job.
    pub fn lease(&mut self, evaluator: &str, now: Instant) -> Option<Leased> {
        let ttl = self.timing.lease_ttl;
        // The task whose checkpoint was found first (ties: job order).
        let name = self
            .order
            .iter()
            .filter(|name| {
                let job = &self.jobs[*name];
                job.phase == Phase::Active && !job.pending.is_empty()
            })
            .min_by_key(|name| {
                let job = &self.jobs[*name];
                let first = job.pending.first().expect("non-empty");
                job.found.get(&first.step).copied()
            })?;
        let name = name.clone();
        let lease = self.new_lease_id();
        let job = self.jobs.get_mut(&name).expect("ordered job exists");
        let key = job.pending.pop_first().expect("non-empty");
        let task = job.tasks.get_mut(&key).expect("pending task exists");
        task.state = TaskState::Leased {
            lease: lease.clone(),
            evaluator: evaluator.to_string(),
            expires: now + ttl,
        };
        self.leases.insert(lease.clone(), (name.clone(), key));
        Some(Leased {
            examples: task.examples.clone(),
            job: name,
            key,
            lease,
        })
    }

    /// Looks a task up by id.
    pub fn task(&self, task_id: &str) -> Refused<(&Job, TaskKey, &Task)> {
        let (name, key) = parse_task_id(task_id)
            .ok_or_else(|| Refusal::Invalid(format!("'{task_id}' is not a task id")))?;
        let job = self.job(name)?;
        let task = job
            .tasks
            .get(&key)
            .ok_or_else(|| Refusal::NotFound(format!("no task '{task_id}'")))?;
        Ok((job, key, task))
    }

    fn lease_valid(task: &Task, lease_id: &str, now: Instant) -> bool {
        matches!(&task.state, TaskState::Leased { lease, expires, .. } if lease == lease_id && *expires > now)
    }

    pub fn renew(&mut self, lease_id: &str, task_id: &str, now: Instant) -> Refused<bool> {
        let ttl = self.timing.lease_ttl;
        let (name, key) = {
            let (job, key, _) = self.task(task_id)?;
            (job.name.clone(), key)
        };
        let task = self
            .jobs
            .get_mut(&name)
            .and_then(|j| j.tasks.get_mut(&key))
            .expect("found above");
        if !Self::lease_valid(task, lease_id, now) {
            return Ok(false);
        }
        if let TaskState::Leased { expires, .. } = &mut task.state {
            *expires = now + ttl;
        }
        Ok(true)
    }

    /// Checks a completion's rows against its task: exactly one row per
    /// example of the task, with valid values. Returns the task's run and
    /// result file for the caller to check the file exists.
    pub fn check_rows(&self, task_id: &str, rows: &[Row]) -> Refused<(String, String)> {
        let (job, key, task) = self.task(task_id)?;
        let wanted: BTreeSet<&str> = task.examples.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        for row in rows {
            if !wanted.contains(row.id.as_str()) {
                return Err(Refusal::Invalid(format!(
                    "row for example '{}', which is not in task '{task_id}'",
                    row.id
                )));
            }
            if !seen.insert(row.id.as_str()) {
                return Err(Refusal::Invalid(format!(
                    "two rows for example '{}' in task '{task_id}'",
                    row.id
                )));
            }
            if !(0.0..=1.0).contains(&row.accuracy) {
                return Err(Refusal::Invalid(format!(
                    "example '{}': accuracy {} is not in [0, 1]",
                    row.id, row.accuracy
                )));
            }
            if row.perplexity.is_nan()
                || row.perplexity < 1.0 - 1e-9
                || row.perplexity.is_infinite()
            {
                return Err(Refusal::Invalid(format!(
                    "example '{}': perplexity {} is not a finite number ≥ 1",
                    row.id, row.perplexity
                )));
            }
        }
        if seen.len() != wanted.len() {
            let missing: Vec<&&str> = wanted.difference(&seen).take(5).collect();
            return Err(Refusal::Invalid(format!(
                "task '{task_id}' has {} examples, the report has rows for {} (missing e.g. {missing:?})",
                wanted.len(),
                seen.len()
            )));
        }
        Ok((job.spec.run.output.clone(), key.result_file()))
    }

    /// Takes a completion (rows already checked by [`State::check_rows`]).
    pub fn complete(
        &mut self,
        lease_id: &str,
        task_id: &str,
        rows: Vec<Row>,
        now: Instant,
    ) -> Refused<Completed> {
        let (name, key, state) = {
            let (job, key, task) = self.task(task_id)?;
            (job.name.clone(), key, task.state.clone())
        };
        match state {
            TaskState::Done => return Ok(Completed::Duplicate),
            TaskState::Leased {
                ref lease, expires, ..
            } if lease == lease_id && expires > now => {}
            _ => return Ok(Completed::Expired),
        }
        self.leases.remove(lease_id);
        self.rows_accepted += rows.len() as u64;
        self.jobs
            .get_mut(&name)
            .expect("found above")
            .finish_task(key, rows);
        Ok(Completed::Accepted)
    }

    /// Gives a task back after a failure; the job fails after
    /// `eval.max_attempts` failures of one task. Ignored for a stale lease.
    pub fn fail(
        &mut self,
        lease_id: &str,
        task_id: &str,
        message: &str,
        now: Instant,
    ) -> Refused<()> {
        let (name, key) = {
            let (job, key, task) = self.task(task_id)?;
            if !Self::lease_valid(task, lease_id, now) {
                return Ok(());
            }
            (job.name.clone(), key)
        };
        self.leases.remove(lease_id);
        let job = self.jobs.get_mut(&name).expect("found above");
        let max = job.spec.eval.max_attempts;
        let task = job.tasks.get_mut(&key).expect("found above");
        task.attempts += 1;
        task.state = TaskState::Pending;
        tracing::warn!(
            job = name,
            task = task_id,
            attempt = task.attempts,
            message,
            "task failed"
        );
        if task.attempts >= max {
            job.phase = Phase::Failed(format!(
                "task '{task_id}' failed {} times; last error: {message}",
                task.attempts
            ));
        } else {
            job.pending.insert(key);
        }
        Ok(())
    }

    pub fn cancel(&mut self, job: &str) -> Refused<()> {
        let job = self.job_mut(job)?;
        if job.phase == Phase::Active {
            job.phase = Phase::Cancelled;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
