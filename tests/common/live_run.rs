//! `premem run` in the background, as a user starts it: its stdout read as
//! it comes (the dashboard's URL is its first line), stopped with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::premem;

pub struct LiveRun {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    /// The URL `premem run` printed, the token in it.
    pub dashboard: String,
}

impl LiveRun {
    /// `premem run <spec> --workdir <workdir>`; waits for the dashboard's
    /// URL.
    pub fn start(spec: &Path, workdir: &Path) -> LiveRun {
        let mut child = premem()
            .args([
                "run",
                spec.to_str().unwrap(),
                "--workdir",
                workdir.to_str().unwrap(),
            ])
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("premem run starts");
        let stdout = Arc::new(Mutex::new(vec![]));
        let lines = stdout.clone();
        let pipe = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut run = LiveRun {
            child,
            stdout,
            dashboard: String::new(),
        };
        run.dashboard = run.wait_for_line("dashboard: ", Duration::from_secs(120));
        run
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.lines().iter().find_map(|l| l.strip_prefix(prefix)) {
                return line.trim().to_string();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "premem run exited ({status}) before printing {prefix:?}: {:?}",
                    self.lines()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "no {prefix:?} in {timeout:?}: {:?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits for the run to end by itself; its exit status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "premem run still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C, as a user stops it, and its end.
    pub fn interrupt(&mut self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        self.wait(Duration::from_secs(120));
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
            let _ = self.wait_quietly(Duration::from_secs(60));
        }
    }
}

impl LiveRun {
    fn wait_quietly(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}
