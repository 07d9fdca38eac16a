//! Watching jobs until they end, with a live progress display: one job
//! (`premem run`) or many (`premem sweep`, `premem curate`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use premem_core::JobSpec;
use premem_proto::v1;
use tonic::Code;

use crate::client::{Jobs, UNREACHABLE_LIMIT, state_of, terminal};

/// Prints a job's status: one line, then a table of its checkpoints.
pub fn print_status(status: &v1::JobStatus) {
    let state = v1::JobState::try_from(status.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "job '{}': {state}{}; step {}/{}; ranks {}/{} (generation {}); tasks {} done, {} leased, {} pending; output {}",
        status.job,
        if status.message.is_empty() {
            String::new()
        } else {
            format!(" ({})", status.message)
        },
        status.step,
        status.total_steps,
        status.ranks_alive,
        status.world_size,
        status.generation,
        status.tasks_done,
        status.tasks_leased,
        status.tasks_pending,
        status.output
    );
    print_checkpoints(&status.checkpoints);
    if !status.stopped_early.is_empty() {
        println!("{}", status.stopped_early);
    }
    for line in &status.advice {
        println!("advice: {line}");
    }
}

/// The table of a job's checkpoints.
fn print_checkpoints(checkpoints: &[v1::CheckpointStatus]) {
    let pct = |v: Option<f64>| v.map_or("     -".to_string(), |v| format!("{:5.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("     -".to_string(), |v| format!("{v:6.3}"));
    if checkpoints.is_empty() {
        return;
    }
    println!("    step  tasks    P-M  train   test  memorized  test-ppl  distinct");
    for c in checkpoints {
        println!(
            "{:>8} {:>3}/{:<3} {} {} {}     {}    {}    {}",
            c.step,
            c.tasks_done,
            c.tasks_total,
            pct(c.pm_accuracy),
            pct(c.train_accuracy),
            pct(c.test_accuracy),
            pct(c.memorized_fraction),
            num(c.test_perplexity),
            pct(c.distinct_fraction)
        );
    }
}

/// Two progress bars, `{prefix} [bar] pos/len {msg}`, or plain log lines
/// every 10 s where the bars are hidden (no terminal).
struct Bars {
    bars: indicatif::MultiProgress,
    top: indicatif::ProgressBar,
    bottom: indicatif::ProgressBar,
    last_log: Instant,
}

impl Bars {
    fn new(top: &str, top_len: u64, bottom: &str) -> Bars {
        let bars = indicatif::MultiProgress::new();
        let style =
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> ");
        let top_bar = bars.add(indicatif::ProgressBar::new(top_len).with_style(style.clone()));
        top_bar.set_prefix(top.to_string());
        let bottom_bar = bars.add(indicatif::ProgressBar::new(0).with_style(style));
        bottom_bar.set_prefix(bottom.to_string());
        Bars {
            bars,
            top: top_bar,
            bottom: bottom_bar,
            last_log: Instant::now(),
        }
    }

    /// Prints `line()` when the bars are hidden and 10 s passed since the last.
    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.bars.is_hidden() && self.last_log.elapsed() > Duration::from_secs(10) {
            self.last_log = Instant::now();
            eprintln!("{}", line());
        }
    }

    fn finish(&self) {
        self.top.finish_and_clear();
        self.bottom.finish_and_clear();
    }
}

/// How many jobs of a watch are in which state, and their tasks.
struct Tally {
    ended: usize,
    training: usize,
    evaluating: usize,
    failed: usize,
    tasks_done: u64,
    tasks_total: u64,
}

impl Tally {
    fn of(statuses: &BTreeMap<String, v1::JobStatus>) -> Tally {
        let count =
            |state: v1::JobState| statuses.values().filter(|s| state_of(s) == state).count();
        Tally {
            ended: statuses.values().filter(|s| terminal(state_of(s))).count(),
            training: count(v1::JobState::Training),
            evaluating: count(v1::JobState::Evaluating),
            failed: count(v1::JobState::Failed),
            tasks_done: statuses.values().map(|s| s.tasks_done as u64).sum(),
            tasks_total: statuses
                .values()
                .flat_map(|s| s.checkpoints.iter())
                .map(|c| c.tasks_total as u64)
                .sum(),
        }
    }
}

impl Tally {
    /// Ended runs and their states on the top bar, tasks on the bottom one.
    fn show(&self, bars: &mut Bars, what: &str, runs: usize, reachable: bool) {
        bars.top.set_position(self.ended as u64);
        bars.top.set_message(format!(
            "{} training, {} evaluating, {} failed{}",
            self.training,
            self.evaluating,
            self.failed,
            if reachable {
                ""
            } else {
                "; coordinator unreachable"
            }
        ));
        bars.bottom.set_length(self.tasks_total);
        bars.bottom.set_position(self.tasks_done);
        bars.log(|| {
            format!(
                "{what}: {}/{runs} ended ({} training, {} evaluating, {} failed); tasks {}/{}",
                self.ended,
                self.training,
                self.evaluating,
                self.failed,
                self.tasks_done,
                self.tasks_total
            )
        });
    }
}

impl Jobs {
    /// Waits until every job of `specs` ended, showing progress; resubmits a
    /// job the coordinator does not know (it lost its state) and waits out
    /// a coordinator that restarts. `tick` runs every round (restarting
    /// local workers). Returns the final statuses by job name.
    pub fn wait(
        &mut self,
        what: &str,
        specs: &[JobSpec],
        stop: &AtomicBool,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<BTreeMap<String, v1::JobStatus>> {
        let mut bars = Bars::new(what, specs.len() as u64, "evaluate");
        let mut statuses: BTreeMap<String, v1::JobStatus> = BTreeMap::new();
        let mut unreachable_since: Option<Instant> = None;
        let outcome = loop {
            if stop.load(Ordering::SeqCst) {
                break Err(anyhow::anyhow!(
                    "interrupted; run the same command again to resume"
                ));
            }
            if let Err(e) = tick() {
                break Err(e);
            }
            let reachable = match self.poll(specs, &mut statuses) {
                Ok(reachable) => reachable,
                Err(e) => break Err(e),
            };
            if reachable {
                unreachable_since = None;
            } else if unreachable_since.get_or_insert_with(Instant::now).elapsed()
                > UNREACHABLE_LIMIT
            {
                break Err(anyhow::anyhow!(
                    "the coordinator at {} was unreachable for {:?}",
                    self.address,
                    UNREACHABLE_LIMIT
                ));
            }
            let t = Tally::of(&statuses);
            t.show(&mut bars, what, specs.len(), reachable);
            if t.ended == specs.len() {
                break Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        bars.finish();
        outcome.map(|()| statuses)
    }

    /// Asks for the status of every job of `specs` that has not ended;
    /// returns false when the coordinator is unreachable.
    fn poll(
        &mut self,
        specs: &[JobSpec],
        statuses: &mut BTreeMap<String, v1::JobStatus>,
    ) -> Result<bool> {
        for spec in specs {
            let name = &spec.run.name;
            if statuses.get(name).is_some_and(|s| terminal(state_of(s))) {
                continue;
            }
            match self.status(name) {
                Ok(status) => {
                    statuses.insert(name.clone(), status);
                }
                Err(s) if s.code() == Code::NotFound => {
                    tracing::warn!(
                        job = name,
                        "the coordinator does not know the job: submitting it again"
                    );
                    self.submit(spec)?;
                }
                // Unknown: the connection broke mid-call (a restart).
                Err(s) if matches!(s.code(), Code::Unavailable | Code::Unknown) => {
                    return Ok(false);
                }
                Err(s) => break_with(statuses, name, &s),
            }
        }
        Ok(true)
    }

    /// Watches one job until it ends, with a training and an evaluation
    /// bar; `tick` runs every round (restarting local workers). A stop
    /// request ends the watch and leaves the job to resume. Returns its
    /// final status.
    pub fn watch_job(
        &mut self,
        job: &str,
        stop: &AtomicBool,
        tick: &mut dyn FnMut() -> Result<()>,
    ) -> Result<v1::JobStatus> {
        let mut bars = Bars::new("train", 1, "evaluate");
        let outcome = loop {
            if stop.load(Ordering::SeqCst) {
                // Not cancelled: the trainers checkpoint as they stop, and
                // the same command resumes the job (issue 39, item 6).
                break Err(anyhow::anyhow!(
                    "interrupted; run the same command again to resume"
                ));
            }
            if let Err(e) = tick() {
                break Err(e);
            }
            let status = match self.status(job) {
                Ok(status) => status,
                Err(e) => {
                    tracing::warn!(error = %e.message(), "coordinator status");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            };
            show_job(&mut bars, &status);
            if terminal(state_of(&status)) {
                break Ok(status);
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        bars.finish();
        outcome
    }
}

/// One job's progress: steps and ranks; evaluation tasks and the newest
/// P-M (and test) accuracy.
fn show_job(bars: &mut Bars, status: &v1::JobStatus) {
    bars.top.set_length(status.total_steps.max(1));
    bars.top.set_position(status.step);
    bars.top.set_message(format!(
        "ranks {}/{} gen {}",
        status.ranks_alive, status.world_size, status.generation
    ));
    let total: u32 = status.checkpoints.iter().map(|c| c.tasks_total).sum();
    bars.bottom.set_length(total as u64);
    bars.bottom.set_position(status.tasks_done as u64);
    let newest = status
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.pm_accuracy.is_some());
    bars.bottom.set_message(match newest {
        Some(c) => format!(
            "P-M {:.1}% at step {}{}",
            c.pm_accuracy.unwrap_or(0.0) * 100.0,
            c.step,
            c.test_accuracy
                .map_or(String::new(), |t| format!(", test {:.1}%", t * 100.0))
        ),
        None => format!("{} leased", status.tasks_leased),
    });
    bars.log(|| {
        format!(
            "step {}/{}, tasks {}/{total}{}",
            status.step,
            status.total_steps,
            status.tasks_done,
            newest.map_or(String::new(), |c| format!(
                ", P-M {:.1}% at step {}",
                c.pm_accuracy.unwrap_or(0.0) * 100.0,
                c.step
            ))
        )
    });
}

/// A status error other than unreachable/unknown: the job counts as failed
/// with that message.
fn break_with(statuses: &mut BTreeMap<String, v1::JobStatus>, name: &str, s: &tonic::Status) {
    statuses.insert(
        name.to_string(),
        v1::JobStatus {
            job: name.to_string(),
            state: v1::JobState::Failed as i32,
            message: format!("status: {} ({:?})", s.message(), s.code()),
            ..Default::default()
        },
    );
}
