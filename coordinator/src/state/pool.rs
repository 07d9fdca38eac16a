//! **Pool.** Trainers started without a job ask for a rank
//! ([`State::assign`]). Jobs are packed onto the idle pool trainers in
//! submission order: a job of world size w starts once w of them are idle (a
//! smaller job further back may start first); a started job's missing ranks
//! go to the next trainer that asks. A pool trainer silent for the rank TTL
//! loses its rank. A job that a trainer started for it (`--job/--rank`)
//! joined is left to such trainers. After a restart the coordinator hands
//! out no rank for one rank TTL, so that running pool trainers reclaim
//! theirs by their heartbeats first.

use std::time::{Duration, Instant};

use super::{Job, Phase, Refusal, Refused, State};

/// How long a pool trainer that asked for a rank counts as idle (at most
/// the rank TTL): trainers ask every few hundred milliseconds.
const POOL_IDLE_TTL: Duration = Duration::from_secs(10);

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

impl Job {
    /// The job takes pool trainers.
    fn wants_pool_trainers(&self) -> bool {
        self.phase == Phase::Active && !self.trained && !self.dedicated
    }

    fn free_rank(&self) -> Option<u32> {
        (0..self.world_size()).find(|r| !self.assigned.contains_key(r))
    }
}

impl State {
    /// The coordinator restarted at `now`: while a restored job still
    /// trains, its pool trainers reclaim their ranks by their heartbeats
    /// before any rank is handed out again. A trained job's ranks are
    /// forgotten.
    pub fn hold_ranks_after_restart(&mut self, now: Instant) {
        // Ranks of a trained job have finished: none is alive (they were
        // counted, and shown, as alive forever).
        for job in self.jobs.values_mut().filter(|j| j.trained) {
            job.group.members.clear();
        }
        let unfinished = self
            .jobs
            .values()
            .any(|j| j.phase == Phase::Active && !j.trained);
        if unfinished {
            self.assign_after = Some(now + self.timing.rank_ttl);
        }
    }

    /// Notes who runs `rank` of `job`: a pool trainer (`trainer` non-empty)
    /// is seen, and adopts a rank nobody holds (its coordinator restarted);
    /// a trainer started for the job (`trainer` empty) makes the job
    /// dedicated. A rank another pool trainer holds is refused.
    pub(super) fn claim(
        &mut self,
        job: &str,
        rank: u32,
        trainer: &str,
        now: Instant,
    ) -> Refused<()> {
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
        let Some((job, rank)) = self.rank_to_assign(now) else {
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

    /// The rank an idle pool trainer gets: a missing rank of a started job
    /// first, then rank 0 of the first job whose ranks all fit on the idle
    /// trainers.
    fn rank_to_assign(&self, now: Instant) -> Option<(String, u32)> {
        let idle_ttl = self.timing.rank_ttl.min(POOL_IDLE_TTL);
        let idle = self
            .pool
            .values()
            .filter(|p| {
                p.assignment.is_none() && now.saturating_duration_since(p.last_seen) <= idle_ttl
            })
            .count();
        let started = self.order.iter().find_map(|name| {
            let job = &self.jobs[name];
            (job.wants_pool_trainers() && !job.assigned.is_empty())
                .then(|| job.free_rank().map(|r| (name.clone(), r)))
                .flatten()
        });
        started.or_else(|| {
            self.order.iter().find_map(|name| {
                let job = &self.jobs[name];
                (job.wants_pool_trainers()
                    && job.assigned.is_empty()
                    && idle >= job.world_size() as usize)
                    .then(|| (name.clone(), 0))
            })
        })
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
}
