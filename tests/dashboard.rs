//! The dashboard in a real browser: `premem run` of a small job prints the
//! dashboard's URL; Debian's Chromium (headless, driven by chromedriver)
//! opens it, waits for the first checkpoint's P-M to appear and checks
//! what the page shows. Without the token the page answers 401.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::free_port;
use common::live_run::LiveRun;
use common::{spec, synth_task};
use fantoccini::{Client, ClientBuilder, Locator};

/// Long enough (40 epochs of 8 steps) that training is still going when the
/// first checkpoint's P-M appears; the test stops it then.
const TAIL: &str = "every_epoch = true\nbaselines = false\n\n[eval]\nlimit = 8\nsamples = 2\nmax_new_tokens = 12\ntask_examples = 4\nbatch_size = 4\n\n[cluster]\ntrainers = 1\nevaluators = 1\n";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; `make test-tools` installs it)");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }

    /// A headless Chromium session with the flags this machine's closed
    /// network needs.
    async fn session(&self, profile: &std::path::Path) -> Client {
        let options = serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status line of a plain GET of `url` (no token, no cookie).
fn status_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut stream = TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// The text of the element `css`, polled until `done` holds it.
async fn wait_text(
    c: &Client,
    css: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
            && done(&text)
        {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "{css}: not there in {timeout:?}:\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_first_checkpoints_pm_live() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let job = spec(dir, "live", "epochs = 40", TAIL);
    let mut run = LiveRun::start(&job, &dir.join("work"));
    let (base, token) = run
        .dashboard
        .split_once("?token=")
        .expect("the URL holds the token");
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/dashboard"),
        "{base}"
    );
    assert!(status_of(base).contains(" 401"), "{}", status_of(base));
    let api = base.replace("/dashboard", "/api/overview");
    assert!(status_of(&api).contains(" 401"), "{}", status_of(&api));
    assert!(!token.is_empty());
    the_dashboards_token_only_reads(&dir.join("work"), token);

    let driver = Driver::start();
    let c = driver.session(&dir.join("chromium-profile")).await;
    c.goto(&run.dashboard).await.unwrap();
    let pm = r#"[data-testid="pm-latest"][data-job="live"]"#;
    let shown = wait_text(&c, pm, Duration::from_secs(300), |t| t.ends_with(" %")).await;
    let value: f64 = shown.trim_end_matches(" %").parse().expect("a percentage");
    assert!((0.0..=100.0).contains(&value), "{shown}");
    // The token left the address bar for the cookie.
    assert!(!c.current_url().await.unwrap().as_str().contains("token="));
    let state = wait_text(
        &c,
        r#"[data-testid="state"][data-job="live"]"#,
        Duration::from_secs(10),
        |t| !t.is_empty(),
    )
    .await;
    assert!(
        ["training", "evaluating"].contains(&state.as_str()),
        "{state}"
    );
    let page = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in ["premem", "live", "evaluator-0"] {
        assert!(
            page.contains(expected),
            "no {expected:?} on the page:\n{page}"
        );
    }
    let test = wait_text(
        &c,
        r#"[data-testid="test-latest"][data-job="live"]"#,
        Duration::from_secs(10),
        |t| !t.is_empty(),
    )
    .await;
    assert!(test.ends_with(" %") || test == "—", "{test}");
    let charts = c.find_all(Locator::Css(".job-card canvas")).await.unwrap();
    assert!(
        charts.len() >= 2,
        "the line chart and the heatmap draw on canvases"
    );
    std::fs::write(dir.join("dashboard.png"), c.screenshot().await.unwrap()).unwrap();
    c.close().await.unwrap();
    run.interrupt();
}

/// `premem run` gives each child its role's token and the dashboard's URL
/// a read-only one (issue 39, item 14: the cluster token, which may do
/// everything, was in every child and in the URL): it reads the job's
/// status, and cancelling with it is refused. The four tokens are
/// distinct, in files only their owner reads.
fn the_dashboards_token_only_reads(work: &std::path::Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let address = std::fs::read_to_string(work.join("coordinator.address")).unwrap();
    let address = address.lines().next().unwrap();
    let with_token = |command: &str| {
        common::premem()
            .env("PREMEM_TOKEN", token)
            .env("PREMEM_COORDINATOR", address)
            .args([command, "--job", "live"])
            .output()
            .unwrap()
    };
    let status = with_token("status");
    assert!(status.status.success(), "{}", common::text(&status.stderr));
    let cancel = with_token("cancel");
    let stderr = common::text(&cancel.stderr);
    assert!(!cancel.status.success(), "{stderr}");
    assert!(
        stderr.contains("needs a token with the submit role"),
        "{stderr}"
    );
    let mut tokens = std::collections::BTreeSet::new();
    for role in ["submit", "read", "trainer", "evaluator"] {
        let file = work.join("tokens").join(role);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{role}");
        tokens.insert(std::fs::read_to_string(&file).unwrap());
    }
    assert_eq!(tokens.len(), 4);
    assert!(tokens.contains(&format!("{token}\n")));
}
