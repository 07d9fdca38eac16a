//! A coordinator and its workers as child processes of this one, on
//! loopback: the cluster of `premem run`, `premem sweep` and `premem curate`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use premem_proto::{Role, TOKEN_ENV};

use crate::local_tokens::RoleTokens;
use crate::process::cores;

/// A child process of `premem run`, restarted when it dies.
struct Member {
    name: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Child,
    restarts: u32,
}

/// How many times `premem run` restarts each child process (the
/// coordinator, each worker) before it gives up, unless told otherwise.
pub const MAX_RESTARTS: u32 = 3;

/// How a [`LocalCluster`] starts and supervises its processes.
pub struct ClusterOptions<'a> {
    /// Serve the coordinator's metrics and dashboard at this address
    /// (default: a free loopback port).
    pub metrics_listen: Option<&'a str>,
    /// Restarts of each child process before supervision gives up.
    pub max_restarts: u32,
    /// The coordinator's evaluation lease TTL in seconds (its default when
    /// `None`).
    pub lease_ttl: Option<f64>,
    /// The coordinator's rank TTL in seconds: how long a trainer rank may
    /// go without a heartbeat before its group regroups.
    pub rank_ttl: f64,
}

/// Local workers heartbeat every 2 s: notice a dead one sooner than the
/// coordinator's default, and wait less before reassigning ranks after a
/// restart.
pub const LOCAL_RANK_TTL: f64 = 15.0;

impl Default for ClusterOptions<'_> {
    fn default() -> Self {
        ClusterOptions {
            metrics_listen: None,
            max_restarts: MAX_RESTARTS,
            lease_ttl: None,
            rank_ttl: LOCAL_RANK_TTL,
        }
    }
}

fn spawn(args: &[String], log: &Path, env: &[(&str, String)]) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut command = Process::new(std::env::current_exe().context("finding this binary")?);
    command.args(args);
    if env.iter().any(|(k, _)| *k == TOKEN_ENV) {
        // The token given is the one it reads, not a file of this user's.
        command.env_remove("PREMEM_TOKEN_FILE");
    }
    command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; the child dies with this process.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", args.join(" ")))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn terminate(child: &mut Child) {
    // SAFETY: sending a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A coordinator and its workers as child processes of this one, on
/// loopback: `premem run`, `premem sweep` and `premem curate`.
pub struct LocalCluster {
    pub address: String,
    /// The dashboard's URL, a read-only token in it (the coordinator
    /// serves on loopback unless told otherwise).
    pub dashboard: Option<String>,
    /// A token for each role: the children hold their role's.
    pub tokens: RoleTokens,
    pub logs: PathBuf,
    coordinator: Coordinator,
    members: Vec<Member>,
    max_restarts: u32,
    /// Held while this cluster lives ([`lock_workdir`]).
    _workdir_lock: std::fs::File,
}

/// The lock file of a workdir: one `premem run`, `sweep` or `curate` at a
/// time uses it.
pub const WORKDIR_LOCK: &str = "premem.lock";

/// Takes `workdir`'s lock (an exclusive lock on [`WORKDIR_LOCK`], released
/// when the process ends however it ends), before anything of the workdir
/// is touched: a second command over the same workdir is refused instead
/// of deleting the first one's `coordinator.address` and writing into its
/// log (issue 39, item 8).
fn lock_workdir(workdir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(workdir).with_context(|| format!("creating {}", workdir.display()))?;
    let path = workdir.join(WORKDIR_LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the workdir {} is in use by another premem run, sweep or curate (it holds {}); wait for it to end, or give this one another --workdir",
            workdir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The coordinator child: restarted on its address and state when it dies,
/// so the workers, which know only that address, carry on.
struct Coordinator {
    child: Child,
    launch: Launch,
    restarts: u32,
    max_restarts: u32,
}

/// Where the coordinator child serves.
struct Addresses {
    grpc: String,
    http: Option<String>,
}

/// How the coordinator child starts.
struct Launch {
    /// Its arguments without `--listen`.
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    address_file: PathBuf,
}

impl Launch {
    /// Starts `premem coordinator --listen <listen> <args>` and waits until
    /// it writes the addresses it serves: gRPC, and HTTP when it has one.
    fn start(&self, listen: &str) -> Result<(Child, Addresses)> {
        let _ = std::fs::remove_file(&self.address_file);
        let mut args = vec!["coordinator".to_string(), "--listen".into(), listen.into()];
        args.extend(self.args.iter().cloned());
        let mut child = spawn(&args, &self.log, &self.env)?;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.address_file) {
                let mut lines = text.lines().map(|l| l.trim().to_string());
                let grpc = lines.next().unwrap_or_default();
                return Ok((
                    child,
                    Addresses {
                        grpc,
                        http: lines.next(),
                    },
                ));
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the coordinator exited ({status}) before listening; its log ({}):\n{}",
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                terminate(&mut child);
                bail!(
                    "the coordinator did not start within 60 s; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Coordinator {
    /// Restarts the coordinator if it died, on `address` (its jobs come back
    /// from its state); fails after `max_restarts` restarts.
    fn supervise(&mut self, address: &str) -> Result<()> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(());
        };
        let log = &self.launch.log;
        if self.restarts >= self.max_restarts {
            bail!(
                "the coordinator exited ({status}) after {} restart(s); its log ({}):\n{}",
                self.restarts,
                log.display(),
                log_tail(log)
            );
        }
        self.restarts += 1;
        tracing::warn!(%status, restart = self.restarts, "restarting the coordinator");
        // The address file holds a URL; --listen takes host:port.
        let listen = address.split_once("://").map_or(address, |(_, rest)| rest);
        let (child, again) = self.launch.start(listen)?;
        self.child = child;
        let again = again.grpc;
        if again != address {
            bail!("the restarted coordinator serves {again}, not {address}");
        }
        Ok(())
    }
}

impl LocalCluster {
    /// Starts a coordinator whose state lives in `workdir/state` (a second
    /// start over the same workdir resumes its jobs); logs go to
    /// `workdir/logs`.
    pub fn start(workdir: &Path, metrics_listen: Option<&str>) -> Result<LocalCluster> {
        let options = ClusterOptions {
            metrics_listen,
            ..ClusterOptions::default()
        };
        LocalCluster::start_with(workdir, &options)
    }

    /// As [`LocalCluster::start`], with `options`.
    pub fn start_with(workdir: &Path, options: &ClusterOptions) -> Result<LocalCluster> {
        let workdir_lock = lock_workdir(workdir)?;
        let logs = workdir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let (tokens, token_args) = RoleTokens::create(&workdir.join("tokens"))?;
        let address_file = workdir.join("coordinator.address");
        let mut args = vec![
            "--state".to_string(),
            workdir.join("state").to_string_lossy().into_owned(),
            "--address-file".into(),
            address_file.to_string_lossy().into_owned(),
            "--rank-ttl".into(),
            options.rank_ttl.to_string(),
            // Restarts take the state's lease back under this name.
            "--lease-owner".into(),
            format!("premem-run-{}", std::process::id()),
        ];
        let http = options.metrics_listen.unwrap_or("127.0.0.1:0");
        args.extend(["--metrics-listen".into(), http.to_string()]);
        if let Some(ttl) = options.lease_ttl {
            args.extend(["--lease-ttl".into(), ttl.to_string()]);
        }
        args.extend(token_args);
        // $PREMEM_TOKEN, when set, stays the cluster token: the user's
        // `premem status` works with it.
        let mut launch = Launch {
            args,
            env: vec![],
            log: logs.join("coordinator.log"),
            address_file,
        };
        let (child, addresses) = launch.start("127.0.0.1:0")?;
        // A restart serves HTTP where the first start did: the URL printed stays good.
        if let Some(http) = &addresses.http {
            let bound = http.trim_start_matches("http://").to_string();
            if let Some(at) = launch.args.iter().position(|a| a == "--metrics-listen") {
                launch.args[at + 1] = bound;
            }
        }
        let dashboard = addresses
            .http
            .map(|http| format!("{http}/dashboard?token={}", tokens.read));
        Ok(LocalCluster {
            address: addresses.grpc,
            dashboard,
            tokens,
            logs,
            coordinator: Coordinator {
                child,
                launch,
                restarts: 0,
                max_restarts: options.max_restarts,
            },
            members: vec![],
            max_restarts: options.max_restarts,
            _workdir_lock: workdir_lock,
        })
    }

    /// Prints where the dashboard is (stdout, so that a script can read it).
    pub fn print_dashboard(&self) {
        if let Some(url) = &self.dashboard {
            println!("dashboard: {url}");
        }
    }

    /// The environment of a worker of `role`: its role's token, the
    /// coordinator, and `threads` OpenMP threads (one machine for every
    /// process), unless OMP_NUM_THREADS is set for this process.
    fn env(&self, role: Role, threads: usize) -> Vec<(&'static str, String)> {
        let threads = std::env::var("OMP_NUM_THREADS")
            .ok()
            .filter(|t| t.parse::<usize>().is_ok_and(|t| t > 0))
            .unwrap_or_else(|| threads.max(1).to_string());
        vec![
            (TOKEN_ENV, self.tokens.of(role).to_string()),
            ("PREMEM_COORDINATOR", self.address.clone()),
            ("OMP_NUM_THREADS", threads),
        ]
    }

    /// Starts a worker (`premem <args>`) of `role`, logging to
    /// `logs/<log>.log`.
    pub fn add(
        &mut self,
        (name, role): (&str, Role),
        log: &str,
        args: Vec<String>,
        threads: usize,
    ) -> Result<()> {
        let log = self.logs.join(format!("{log}.log"));
        let env = self.env(role, threads);
        self.members.push(Member {
            name: name.to_string(),
            child: spawn(&args, &log, &env)?,
            env,
            args,
            log,
            restarts: 0,
        });
        Ok(())
    }

    /// Starts `count` pool trainers sharing the machine's cores.
    pub fn add_pool_trainers(&mut self, count: usize) -> Result<()> {
        let threads = cores() / count.max(1);
        for i in 0..count {
            let args = vec![
                "trainer".to_string(),
                "--name".into(),
                format!("trainer-{i}"),
                "--no-progress".into(),
            ];
            self.add(
                (&format!("pool trainer {i}"), Role::Trainer),
                &format!("trainer-{i}"),
                args,
                threads,
            )?;
        }
        Ok(())
    }

    pub fn add_evaluators(&mut self, count: usize, cache_dir: &Path) -> Result<()> {
        for i in 0..count {
            let args = vec![
                "evaluator".to_string(),
                "--name".into(),
                format!("evaluator-{i}"),
                "--cache-dir".into(),
                cache_dir.to_string_lossy().into_owned(),
            ];
            self.add(
                (&format!("evaluator {i}"), Role::Evaluator),
                &format!("evaluator-{i}"),
                args,
                1,
            )?;
        }
        Ok(())
    }

    /// Restarts the coordinator and workers that died (a trainer of one job
    /// that exited successfully is done); fails after `max_restarts`
    /// restarts of one.
    pub fn supervise(&mut self) -> Result<()> {
        self.coordinator.supervise(&self.address)?;
        for member in self.members.iter_mut() {
            if let Some(status) = member.child.try_wait()? {
                let trainer_done = member.name.starts_with("trainer rank") && status.success();
                if trainer_done {
                    continue;
                }
                if member.restarts >= self.max_restarts {
                    bail!(
                        "{} exited ({status}) after {} restart(s); its log ({}):\n{}",
                        member.name,
                        member.restarts,
                        member.log.display(),
                        log_tail(&member.log)
                    );
                }
                member.restarts += 1;
                tracing::warn!(member = member.name, %status, restart = member.restarts, "restarting");
                member.child = spawn(&member.args, &member.log, &member.env)?;
            }
        }
        Ok(())
    }

    /// Stops the workers, then the coordinator.
    pub fn stop(mut self) {
        for member in self.members.iter_mut() {
            terminate(&mut member.child);
        }
        terminate(&mut self.coordinator.child);
    }
}

/// `premem report <location> --out <out>` in a child process; `out` is a
/// local directory or an object-store URL.
pub fn write_report(location: &str, out: &str) -> Result<()> {
    let status = Process::new(std::env::current_exe()?)
        .args(["report", location, "--out", out])
        .status()
        .context("running premem report")?;
    if !status.success() {
        bail!("premem report failed ({status})");
    }
    println!("report: {}/report.html", out.trim_end_matches('/'));
    Ok(())
}
