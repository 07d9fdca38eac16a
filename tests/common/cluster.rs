//! A local cluster for end-to-end tests: a coordinator, trainer ranks and
//! evaluators as real `premem` processes on loopback, each killable.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::premem;

pub const TOKEN: &str = "test-token-0123456789";

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    pub coordinator: Option<Child>,
    pub children: BTreeMap<String, Child>,
}

impl Cluster {
    /// Starts a coordinator with short lease and rank TTLs.
    pub fn start(dir: &Path) -> Cluster {
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            port: free_port(),
            coordinator: None,
            children: BTreeMap::new(),
        };
        cluster.start_coordinator();
        cluster
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn command(&self, name: &str) -> std::process::Command {
        let mut cmd = premem();
        cmd.env("PREMEM_TOKEN", TOKEN)
            .env("PREMEM_COORDINATOR", self.address())
            .env("RUST_LOG", "info")
            // The same numerics whatever the machine's core count.
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(self.log(name))
            .stderr(self.log(name));
        cmd
    }

    pub fn start_coordinator(&mut self) {
        let child = self
            .command("coordinator")
            .args([
                "coordinator",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--state",
                self.dir.join("state").to_str().unwrap(),
                "--lease-ttl",
                "3",
                "--rank-ttl",
                "20",
                // Restarted by the tests under the same name.
                "--lease-owner",
                "test-cluster",
            ])
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        self.wait_for("coordinator listening", || {
            self.log_text("coordinator")
                .contains("coordinator listening")
        });
    }

    pub fn kill_coordinator(&mut self) {
        let mut child = self.coordinator.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        // The next start appends to the same log: forget the old readiness line.
        let log = self.dir.join("coordinator.log");
        let old = std::fs::read_to_string(&log).unwrap_or_default();
        std::fs::write(&log, "").unwrap();
        std::fs::write(self.dir.join("coordinator.old.log"), old).unwrap();
    }

    /// Runs a short-lived `premem` command against the coordinator.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = premem();
        cmd.env("PREMEM_TOKEN", TOKEN)
            .env("PREMEM_COORDINATOR", self.address())
            .args(args)
            .output()
            .unwrap()
    }

    pub fn submit(&self, spec: &Path) {
        let out = self.cli(&["submit", "--config", spec.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "submit failed: {}",
            super::text(&out.stderr)
        );
    }

    pub fn status(&self, job: &str) -> String {
        let out = self.cli(&["status", "--job", job]);
        super::text(&out.stdout) + &super::text(&out.stderr)
    }

    pub fn start_trainer(&mut self, job: &str, rank: u32) {
        let name = format!("trainer-{rank}");
        let child = self
            .command(&name)
            .args([
                "trainer",
                "--job",
                job,
                "--rank",
                &rank.to_string(),
                "--heartbeat",
                "0.5",
            ])
            .spawn()
            .unwrap();
        self.children.insert(name, child);
    }

    /// A pool trainer: takes whatever rank the coordinator assigns.
    pub fn start_pool_trainer(&mut self, name: &str) {
        let child = self
            .command(name)
            .args(["trainer", "--name", name, "--heartbeat", "0.5"])
            .spawn()
            .unwrap();
        self.children.insert(name.to_string(), child);
    }

    /// Any `premem` command against the coordinator, as a child named `name`.
    pub fn start_cli(&mut self, name: &str, args: &[&str]) {
        let child = self.command(name).args(args).spawn().unwrap();
        self.children.insert(name.to_string(), child);
    }

    pub fn start_evaluator(&mut self, name: &str) {
        self.start_evaluator_with(name, &[]);
    }

    /// An evaluator with `extra` arguments.
    pub fn start_evaluator_with(&mut self, name: &str, extra: &[&str]) {
        let child = self
            .command(name)
            .args([
                "evaluator",
                "--name",
                name,
                "--cache-dir",
                self.dir.join(format!("cache-{name}")).to_str().unwrap(),
                "--device",
                "cpu",
            ])
            .args(extra)
            .spawn()
            .unwrap();
        self.children.insert(name.to_string(), child);
    }

    /// SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let mut child = self.children.remove(name).expect("running child");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for a child to exit; panics (with its log) unless it succeeds.
    pub fn wait_success(&mut self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let child = self.children.get_mut(name).expect("running child");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "{name} failed ({status}):\n{}",
                    self.log_text(name)
                );
                self.children.remove(name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not finish in {timeout:?}:\n{}",
                self.log_text(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; coordinator log:\n{}",
                self.log_text("coordinator")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `premem status` reports the job done.
    pub fn wait_done(&self, job: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let status = self.status(job);
            if status.contains(": done") {
                return status;
            }
            assert!(
                !status.contains(": failed"),
                "job failed: {status}\n{}",
                self.log_text("coordinator")
            );
            assert!(Instant::now() < deadline, "job not done: {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut().chain(self.coordinator.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
