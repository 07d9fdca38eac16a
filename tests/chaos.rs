//! Issue 18's chaos test: a tiny job under `premem run` while a killer
//! SIGKILLs a random process of the run (the coordinator included) every
//! 2-4 s and SIGSTOPs an evaluator holding a task past its lease; the final
//! weights and every result row equal an undisturbed run's.
//!
//! The killer's seed is printed (and every action, to stderr); rerun one
//! with PREMEM_CHAOS_SEED=<seed>.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{all_rows, spec, synth_task};
use premem_core::spec::provenance::sha256_file;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

/// The coordinator's evaluation lease TTL in the test (seconds).
const LEASE_TTL: u64 = 2;
/// How long the stopped evaluator stays stopped: well past its lease.
const STOP_FOR: Duration = Duration::from_secs(3 * LEASE_TTL);
/// 64 examples, 8 a step: 80 epochs are 640 steps (training lasts well
/// past the killer's first kills), a checkpoint every 64.
const EPOCHS: u64 = 80;
const FINAL_STEP: u64 = EPOCHS * 8;
const EVERY_STEPS: u64 = 64;
/// Each task takes tens of ms: the killer, watching the logs every 10 ms,
/// catches an evaluator holding one.
const EVAL: &str =
    "[eval]\nlimit = 6\nsamples = 4\nmax_new_tokens = 48\ntask_examples = 2\nbatch_size = 2\n";
/// The coordinator's rank TTL in the test: a restarted rank waits up to
/// this long for its group (premem run's default is 15 s).
const RANK_TTL: u64 = 6;
/// The killer kills for this long at most, so that the run ends.
const CHAOS_WINDOW: Duration = Duration::from_secs(60);
const CALM_TIMEOUT: Duration = Duration::from_secs(120);
const CHAOS_TIMEOUT: Duration = Duration::from_secs(200);
/// What an evaluator logs when the coordinator ignores its report of a
/// task whose lease expired, or that another evaluator completed meanwhile.
const LATE_REPORT: [&str; 2] = ["completion ignored", "task was already completed"];

#[test]
fn a_run_under_chaos_ends_as_an_undisturbed_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let tail = format!(
        "every_epoch = false\nevery_steps = {EVERY_STEPS}\nbaselines = false\n\n{EVAL}\n[cluster]\ntrainers = 2\nevaluators = 2\n"
    );
    let job = spec(dir, "chaos", &format!("epochs = {EPOCHS}"), &tail);
    // The same spec (name and output) twice; the undisturbed run's output
    // is moved aside before the second run writes there again.
    let output = dir.join("chaos");
    let calm = dir.join("calm");
    let started = Instant::now();
    let mut run = start_run(&job, &calm);
    let status = wait_run(&mut run, &calm, CALM_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        status.success(),
        "undisturbed run: {status}\n{}",
        diagnostics(&calm)
    );
    eprintln!("chaos: the undisturbed run took {:?}", started.elapsed());
    let calm_output = dir.join("calm-output");
    std::fs::rename(&output, &calm_output).unwrap();

    let seed = std::env::var("PREMEM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("chaos: seed {seed} (rerun with PREMEM_CHAOS_SEED={seed})");
    let hit = dir.join("hit");
    let (status, report) = run_under_chaos(&job, &hit, seed);
    let context = || {
        let actions = report.actions.join("\n");
        format!("seed {seed}; actions:\n{actions}\n{}", diagnostics(&hit))
    };
    let status = status.unwrap_or_else(|e| panic!("{e}; {}", context()));
    assert!(
        status.success(),
        "premem run failed under chaos ({status}); {}",
        context()
    );
    report.assert_covered(&context);
    assert_same_outcome(&calm_output, &output, &context);
}

/// `premem run <job>` under `base` with the killer (seeded by `seed`) at
/// it: the run's exit (or why it did not end) and what the killer did.
fn run_under_chaos(job: &Path, base: &Path, seed: u64) -> (Result<ExitStatus, String>, Report) {
    let started = Instant::now();
    let mut run = start_run(job, base);
    let done = Arc::new(AtomicBool::new(false));
    let killer = Killer::new(seed, run.id(), base.join("work/logs"), done.clone());
    let killer = std::thread::spawn(move || killer.run());
    let status = wait_run(&mut run, base, CHAOS_TIMEOUT);
    // The killer continues a stopped evaluator before it returns.
    done.store(true, Ordering::SeqCst);
    let report = killer.join().expect("the killer panicked");
    eprintln!("chaos: the run under chaos took {:?}", started.elapsed());
    (status, report)
}

/// The final weights of the run in `hit` are the bytes of `calm`'s, and its
/// result rows are `calm`'s (every checkpoint's 6 train and 6 test
/// examples), none missing, none twice, none different.
fn assert_same_outcome(calm: &Path, hit: &Path, context: &dyn Fn() -> String) {
    let weights = |run: &Path| {
        let file = run.join(format!(
            "checkpoints/step-{FINAL_STEP:08}/model.safetensors"
        ));
        sha256_file(&file).unwrap_or_else(|e| panic!("{}: {e}; {}", file.display(), context()))
    };
    assert_eq!(
        weights(calm),
        weights(hit),
        "final weights differ; {}",
        context()
    );
    // all_rows panics on a row that appears twice.
    let (calm_rows, hit_rows) = (all_rows(calm), all_rows(hit));
    let checkpoints = (FINAL_STEP / EVERY_STEPS) as usize;
    let examples: BTreeSet<_> = calm_rows
        .keys()
        .map(|(step, split, id, _)| (step, split, id))
        .collect();
    assert_eq!(
        examples.len(),
        checkpoints * 12,
        "the undisturbed run's examples"
    );
    let missing: Vec<_> = calm_rows
        .keys()
        .filter(|k| !hit_rows.contains_key(*k))
        .collect();
    let extra: Vec<_> = hit_rows
        .keys()
        .filter(|k| !calm_rows.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "rows missing under chaos: {missing:?}; rows only under chaos: {extra:?}; {}",
        context()
    );
    let differ: Vec<_> = calm_rows
        .iter()
        .filter(|(k, row)| hit_rows[*k] != **row)
        .map(|(k, _)| k)
        .collect();
    assert!(
        differ.is_empty(),
        "rows that differ under chaos: {differ:?}; {}",
        context()
    );
}

/// `premem run <job>` with its workdir, evaluator cache, stdout and stderr
/// under `base`, a short lease and room for every restart chaos causes.
fn start_run(job: &Path, base: &Path) -> Child {
    std::fs::create_dir_all(base).unwrap();
    let path = |name: &str| base.join(name).to_string_lossy().into_owned();
    common::premem()
        .args(["run", job.to_str().unwrap(), "--no-report"])
        .args(["--workdir", &path("work"), "--cache-dir", &path("cache")])
        .args([
            "--max-restarts",
            "1000",
            "--lease-ttl",
            &LEASE_TTL.to_string(),
            "--rank-ttl",
            &RANK_TTL.to_string(),
        ])
        // The killer reads the evaluators' "leased task" lines.
        .env("RUST_LOG", "info")
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(File::create(base.join("run.out")).unwrap())
        .stderr(File::create(base.join("run.err")).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `premem run` to exit; past `timeout` kills it (its children
/// follow) and says so, with the logs.
fn wait_run(run: &mut Child, base: &Path, timeout: Duration) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = run.try_wait().unwrap() {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            let _ = run.wait();
            return Err(format!(
                "premem run ({}) did not finish within {timeout:?}\n{}",
                base.display(),
                diagnostics(base)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of `premem run`'s stderr and of every log in its workdir.
fn diagnostics(base: &Path) -> String {
    let mut files = vec![base.join("run.err")];
    let mut logs: Vec<PathBuf> = std::fs::read_dir(base.join("work/logs"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    logs.sort();
    files.extend(logs);
    let mut text = String::new();
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        text += &format!("--- {} (last 25 lines)\n{tail}\n", file.display());
    }
    text
}

/// A live child process of `premem run`: its pid and role (`coordinator`,
/// `trainer-<rank>`, or the evaluator's name, which is its log's name).
#[derive(Clone, Debug)]
struct Member {
    pid: i32,
    name: String,
}

/// The live (not zombie) children of `parent`, from /proc.
fn members(parent: u32) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    let mut found: Vec<Member> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let (state, ppid) = (*fields.first()?, fields.get(1)?.parse::<u32>().ok()?);
            if ppid != parent || state == "Z" {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some(Member {
                pid,
                name: role(&args)?,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// `coordinator`, `trainer-<rank>` or the evaluator's `--name`.
fn role(args: &[String]) -> Option<String> {
    let after = |flag: &str| {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).cloned()
    };
    match args.get(1)?.as_str() {
        "coordinator" => Some("coordinator".into()),
        "trainer" => Some(format!("trainer-{}", after("--rank")?)),
        "evaluator" => after("--name"),
        _ => None,
    }
}

fn signal(member: &Member, signal: i32) {
    // SAFETY: a signal to a child of this test's own `premem run`.
    unsafe { libc::kill(member.pid, signal) };
}

/// The killer's SIGSTOP of an evaluator: watching for one that holds a
/// task (the log lengths of the evaluator processes seen, by name and
/// pid: only lines written since count, an older "leased task" may be a
/// killed process's), stopped until a time, or over.
enum Stop {
    Watching(Vec<(Member, usize)>),
    Stopped(Member, Instant),
    Over,
}

/// What the killer did.
struct Report {
    actions: Vec<String>,
    /// The stopped evaluator's log and its length at the stop.
    stopped: Option<(PathBuf, usize)>,
}

impl Report {
    /// Every kind of process was killed at least once, and an evaluator
    /// was stopped holding a task, whose late report was ignored.
    fn assert_covered(&self, context: &dyn Fn() -> String) {
        for kind in ["coordinator", "trainer-", "evaluator-"] {
            assert!(
                self.actions
                    .iter()
                    .any(|a| a.starts_with(&format!("SIGKILL {kind}"))),
                "the killer never killed a {kind}* process (the run ended too soon for the test); {}",
                context()
            );
        }
        let (log, offset) = self
            .stopped
            .clone()
            .unwrap_or_else(|| panic!("no evaluator was stopped holding a task; {}", context()));
        let after = read_from(&log, offset);
        for line in after
            .lines()
            .filter(|l| LATE_REPORT.iter().any(|r| l.contains(r)))
        {
            eprintln!("chaos: the stopped evaluator then: {line}");
        }
        assert!(
            LATE_REPORT.iter().any(|l| after.contains(l)),
            "the stopped evaluator logged none of {LATE_REPORT:?} after it went on ({}):\n{after}\n{}",
            log.display(),
            context()
        );
    }
}

/// `path`'s text from byte `offset` on (empty if unreadable).
fn read_from(path: &Path, offset: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset as u64)).is_ok()
    {
        let mut bytes = vec![];
        let _ = file.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// Whether `text` (an evaluator's log) has a "leased task" line after its
/// last "task done" or "task failed".
fn holds_task(text: &str) -> bool {
    let leased = text.rfind("leased task");
    let ended = [text.rfind("task done"), text.rfind("task failed")]
        .into_iter()
        .flatten()
        .max();
    leased.is_some_and(|l| ended.is_none_or(|e| e < l))
}

/// Every 2-4 s for [`CHAOS_WINDOW`], SIGKILLs a random child of `premem run` (the first three:
/// a trainer rank, then the coordinator and an evaluator in a random
/// order); meanwhile SIGSTOPs the first evaluator seen holding a task for
/// [`STOP_FOR`], then SIGCONTs it (and spares it from then on, so that its
/// late report shows in its log).
struct Killer {
    rng: StdRng,
    run_pid: u32,
    logs: PathBuf,
    done: Arc<AtomicBool>,
    started: Instant,
    first_kinds: Vec<&'static str>,
    stop: Stop,
    spared: Option<String>,
    report: Report,
}

impl Killer {
    fn new(seed: u64, run_pid: u32, logs: PathBuf, done: Arc<AtomicBool>) -> Killer {
        let mut rng = StdRng::seed_from_u64(seed);
        // Popped from the end: a trainer first, while training surely runs.
        let mut first_kinds = vec!["coordinator", "evaluator-"];
        first_kinds.shuffle(&mut rng);
        first_kinds.push("trainer-");
        Killer {
            rng,
            run_pid,
            logs,
            done,
            started: Instant::now(),
            first_kinds,
            stop: Stop::Watching(vec![]),
            spared: None,
            report: Report {
                actions: vec![],
                stopped: None,
            },
        }
    }

    fn note(&mut self, action: String) {
        eprintln!(
            "chaos {:6.1}s: {action}",
            self.started.elapsed().as_secs_f64()
        );
        self.report.actions.push(action);
    }

    fn run(mut self) -> Report {
        while self.pause() {
            if self.started.elapsed() < CHAOS_WINDOW {
                self.kill_one();
            } else if !self.report.actions.iter().any(|a| a == "chaos over") {
                self.note("chaos over".into());
            }
        }
        if let Stop::Stopped(member, _) = &self.stop {
            signal(member, libc::SIGCONT);
            let name = member.name.clone();
            self.note(format!("SIGCONT {name} (the run is over)"));
        }
        self.report
    }

    /// Sleeps 2-4 s, watching for an evaluator to stop or continue; false
    /// once the run is over.
    fn pause(&mut self) -> bool {
        let until = Instant::now() + Duration::from_millis(self.rng.random_range(2000..4000));
        while Instant::now() < until {
            if self.done.load(Ordering::SeqCst) {
                return false;
            }
            self.tick_stop();
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.done.load(Ordering::SeqCst)
    }

    fn tick_stop(&mut self) {
        match std::mem::replace(&mut self.stop, Stop::Over) {
            Stop::Watching(seen) => self.stop = self.watch(seen),
            Stop::Stopped(member, until) if Instant::now() >= until => {
                signal(&member, libc::SIGCONT);
                self.note(format!("SIGCONT {} (pid {})", member.name, member.pid));
            }
            other => self.stop = other,
        }
    }

    /// SIGSTOPs an evaluator whose log shows it holding a task, if it
    /// still does once stopped (it cannot log the task's end then).
    fn watch(&mut self, seen: Vec<(Member, usize)>) -> Stop {
        let mut now_seen = vec![];
        for member in members(self.run_pid) {
            if !member.name.starts_with("evaluator-") {
                continue;
            }
            let known = seen
                .iter()
                .find(|(m, _)| m.pid == member.pid && m.name == member.name);
            let start = known.map_or_else(|| self.log_len(&member), |(_, start)| *start);
            let log = self.log_path(&member);
            if holds_task(&read_from(&log, start)) {
                signal(&member, libc::SIGSTOP);
                if holds_task(&read_from(&log, start)) {
                    return self.stopped(member);
                }
                signal(&member, libc::SIGCONT);
            }
            now_seen.push((member, start));
        }
        Stop::Watching(now_seen)
    }

    fn stopped(&mut self, member: Member) -> Stop {
        self.note(format!(
            "SIGSTOP {} (pid {}) holding a task, for {STOP_FOR:?}",
            member.name, member.pid
        ));
        self.report.stopped = Some((self.log_path(&member), self.log_len(&member)));
        self.spared = Some(member.name.clone());
        Stop::Stopped(member, Instant::now() + STOP_FOR)
    }

    fn kill_one(&mut self) {
        let live: Vec<Member> = members(self.run_pid)
            .into_iter()
            .filter(|m| Some(&m.name) != self.spared.as_ref())
            .filter(|m| !matches!(&self.stop, Stop::Stopped(s, _) if s.pid == m.pid))
            .collect();
        let kind = self.first_kinds.last().copied().unwrap_or("");
        let of_kind: Vec<&Member> = live.iter().filter(|m| m.name.starts_with(kind)).collect();
        let Some(victim) = of_kind.choose(&mut self.rng).map(|m| (*m).clone()) else {
            self.note(format!("no live {kind}* process to kill"));
            return;
        };
        if !kind.is_empty() {
            self.first_kinds.pop();
        }
        signal(&victim, libc::SIGKILL);
        self.note(format!("SIGKILL {} (pid {})", victim.name, victim.pid));
    }

    fn log_path(&self, member: &Member) -> PathBuf {
        self.logs.join(format!("{}.log", member.name))
    }

    fn log_len(&self, member: &Member) -> usize {
        std::fs::metadata(self.log_path(member)).map_or(0, |m| m.len() as usize)
    }
}
