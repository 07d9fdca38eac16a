//! For tests (feature `testing`): the real tools `make test-tools` installs
//! into the workspace's `.venv-test/` — an MLflow tracking server started
//! on loopback and stopped when dropped, and TensorBoard's own event reader.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the server may take to answer /health (a cold start imports
/// MLflow and migrates its database: about 15 s on 2 busy cores).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// `.venv-test/bin/<name>` (the venv's `python`, `mlflow`); a failure
/// saying how to install it when it is missing.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-test/bin")).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test-tools` (it installs tests/tools/requirements.txt into .venv-test/)",
        path.display()
    );
    path
}

/// Every scalar of the event files in `dir` as TensorBoard's
/// `EventAccumulator` reads them: `{tag: [[step, value], ...]}`.
pub fn read_events(dir: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_events.py");
    let out = Command::new(venv_tool("python"))
        .arg(script)
        .arg(dir)
        .output()
        .expect("running read_events.py");
    assert!(
        out.status.success(),
        "read_events.py {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("read_events.py prints JSON")
}

/// A running `mlflow server`, stopped (its whole process group: it starts
/// uvicorn workers) when dropped.
pub struct MlflowServer {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl MlflowServer {
    /// Starts a server with a SQLite store in a temporary directory and
    /// waits until it answers `/health`.
    pub fn start() -> MlflowServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let child = spawn_mlflow(dir.path(), port);
        let mut server = MlflowServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        server.wait_healthy(port);
        server
    }

    fn wait_healthy(&mut self, port: u16) {
        let start = Instant::now();
        while !healthy(port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mlflow server exited ({status}) before answering /health; its stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "mlflow server gave no /health at {} in {START_TIMEOUT:?}; its stderr:\n{}",
                self.url,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET `endpoint` of the server's REST API (`runs/get`, …), straight,
    /// for checking what it holds; a failure names the URL and the answer.
    pub async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let url = format!("{}/api/2.0/mlflow/{endpoint}", self.url);
        let answer = reqwest::Client::new()
            .get(&url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"))
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Whether `GET /health` on 127.0.0.1:`port` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.lines().next().is_some_and(|l| l.contains(" 200"))
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        // The child leads its own process group (process_group(0) below).
        let group = -(self.child.id() as libc::pid_t);
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn spawn_mlflow(dir: &Path, port: u16) -> Child {
    let mlflow = venv_tool("mlflow");
    let log = |name: &str| File::create(dir.join(name)).expect("a log file");
    Command::new(&mlflow)
        .args([
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            "1",
        ])
        .arg("--backend-store-uri")
        .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
        .arg("--default-artifact-root")
        .arg(dir.join("artifacts"))
        // The job runner (a huey consumer) is not needed for tracking.
        .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        .current_dir(dir)
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", mlflow.display()))
}
