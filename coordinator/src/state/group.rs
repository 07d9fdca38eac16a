//! **Group.** Each job has a generation of trainer ranks. A rank that
//! registers while it is already a member, or while the group is running,
//! starts a new generation (a rank died and came back, or a new process took
//! its place): every rank regroups and resumes from the newest checkpoint. A
//! generation runs once all `world_size` ranks registered. A running rank
//! silent for longer than the rank TTL also starts a new generation.
//!
//! Only the member itself (it proves the current generation's member
//! secret, [`crate::membership`]) displaces a member still heard from: a
//! new process for its rank is refused as busy until the member has been
//! silent for the rank TTL ([`State::check_replacement`]), so a token
//! holder re-registering a rank over and over cannot stall the group.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Job, Phase, Refusal, Refused, State};

/// A trainer rank of the current generation.
#[derive(Clone, Debug)]
pub struct Member {
    pub ring_address: String,
    pub nccl_id: Vec<u8>,
    pub last_seen: Instant,
    pub step: u64,
    /// The group's tokens per second at its last step, as this rank
    /// reported it.
    pub tokens_per_s: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub generation: u64,
    pub members: BTreeMap<u32, Member>,
    /// Every rank registered: the generation trains.
    pub running: bool,
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
    /// Checkpoint, stop and report finishing: the early stop of
    /// `[advice] stop_when`.
    Finish,
}

impl Member {
    fn seen(now: Instant, step: u64) -> Member {
        Member {
            ring_address: String::new(),
            nccl_id: vec![],
            last_seen: now,
            step,
            tokens_per_s: None,
        }
    }
}

impl Group {
    /// The generation an earlier coordinator recorded. Its ranks may still
    /// be training it: each counts as alive at `now`, so one that never
    /// heartbeats again is noticed after the rank TTL.
    pub fn resumed(generation: u64, world_size: u32, now: Instant) -> Group {
        Group {
            generation,
            members: (0..world_size)
                .map(|rank| (rank, Member::seen(now, 0)))
                .collect(),
            running: true,
        }
    }

    /// Rank 0's NCCL id, empty until it sent one.
    fn nccl_id(&self) -> &[u8] {
        self.members.get(&0).map_or(&[], |m| m.nccl_id.as_slice())
    }

    /// Ready once every rank registered and, for NCCL, rank 0's id is known.
    fn rendezvous(&self, nccl: bool) -> Rendezvous {
        if !self.running || (nccl && self.nccl_id().is_empty()) {
            return Rendezvous::Waiting;
        }
        Rendezvous::Ready {
            ring_addresses: self
                .members
                .values()
                .map(|m| m.ring_address.clone())
                .collect(),
            nccl_id: self.nccl_id().to_vec(),
        }
    }
}

impl Job {
    fn regroup(&mut self, first: Option<(u32, Member)>) {
        self.group.generation += 1;
        self.group.members.clear();
        self.group.running = false;
        if let Some((rank, member)) = first {
            self.group.members.insert(rank, member);
        }
    }

    /// Adds a registered rank to the group, or starts the next generation
    /// with it (see the rules).
    fn join(&mut self, rank: u32, member: Member) {
        if self.group.running || self.group.members.contains_key(&rank) {
            tracing::info!(
                job = self.name,
                rank,
                generation = self.group.generation + 1,
                "rank (re)joined: new generation"
            );
            self.regroup(Some((rank, member)));
        } else {
            self.group.members.insert(rank, member);
        }
        if self.group.members.len() as u32 == self.world_size() {
            self.group.running = true;
            tracing::info!(
                job = self.name,
                generation = self.group.generation,
                "every rank registered"
            );
        }
    }
}

impl State {
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
            tokens_per_s: None,
        };
        job.join(rank, member);
        Ok(Registered {
            world_size: job.world_size(),
            generation: job.group.generation,
            spec_json: job.spec_json.clone(),
        })
    }

    /// Refuses, as busy, a registration for `rank` while its member of the
    /// current generation is still heard from (within the rank TTL), unless
    /// it is that member: `proven` is the generation whose member secret
    /// the registration presented.
    pub fn check_replacement(
        &self,
        job: &str,
        rank: u32,
        proven: Option<u64>,
        now: Instant,
    ) -> Refused<()> {
        let job = self.job(job)?;
        // An inactive job refuses the registration itself, for what it is.
        let Some(member) = job
            .group
            .members
            .get(&rank)
            .filter(|_| job.phase == Phase::Active)
        else {
            return Ok(());
        };
        let silent = now.saturating_duration_since(member.last_seen);
        if proven == Some(job.group.generation) || silent > self.timing.rank_ttl {
            return Ok(());
        }
        Err(Refusal::Busy(format!(
            "rank {rank} of job '{}' is held by a live member of generation {} (heard {:.1} s ago); another process takes the rank once it has been silent for {} s",
            job.name,
            job.group.generation,
            silent.as_secs_f64(),
            self.timing.rank_ttl.as_secs_f64()
        )))
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
        if generation == job.group.generation
            && let Some(member) = job.group.members.get_mut(&rank)
        {
            member.last_seen = now;
        }
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
        Ok(job.group.rendezvous(nccl.is_some()))
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
        if job.early_stop.is_some() && !job.trained {
            return Ok((Action::Finish, job.group.generation));
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
        let member = job
            .group
            .members
            .entry(rank)
            .or_insert_with(|| Member::seen(now, step));
        member.last_seen = now;
        member.step = step;
        Ok((Action::Continue, job.group.generation))
    }

    /// Notes the throughput a rank reported with its heartbeat (after
    /// [`State::heartbeat`] took it).
    pub fn note_throughput(&mut self, job: &str, rank: u32, tokens_per_s: Option<f64>) {
        let member = self
            .jobs
            .get_mut(job)
            .and_then(|job| job.group.members.get_mut(&rank));
        if let (Some(member), Some(rate)) = (member, tokens_per_s) {
            member.tokens_per_s = Some(rate);
        }
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
        if job.early_stop.is_some() && step <= job.total_steps {
            // The run ends here: its last checkpoint is this step's.
            job.total_steps = step;
        }
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
}
