//! premem against a real S3-compatible server (s3s-fs, with signature V4
//! authentication, started in this process on loopback): a run whose
//! checkpoints, evaluation results and report live in `s3://`; a training
//! run stopped by SIGTERM and resumed from S3, bit-identical to one never
//! interrupted; and wrong credentials refused at the start, naming the
//! bucket, without printing the secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{files_under, job_spec, premem, synth_task, text};

const BUCKET: &str = "premem-test";
const KEY: &str = "premem-test-key";
const SECRET: &str = "premem-test-secret-3f9a1c";

/// An S3 server over a local directory (one sub-directory per bucket).
struct S3Server {
    port: u16,
    root: PathBuf,
    _runtime: tokio::runtime::Runtime,
}

impl S3Server {
    fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let service = {
            let fs = s3s_fs::FileSystem::new(root).unwrap();
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY, SECRET));
            builder.build()
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            port,
            root: root.to_path_buf(),
            _runtime: runtime,
        }
    }

    /// The server's file for `s3://BUCKET/<key>`.
    fn file(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// `premem` with this server's endpoint and the given secret key.
    fn premem(&self, secret: &str) -> Command {
        let mut cmd = premem();
        for var in [
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_REGION",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_REGION", "us-east-1")
            .env("OMP_NUM_THREADS", "1")
            .env("PREMEM_TOKEN", common::cluster::TOKEN);
        cmd
    }
}

/// A job over the synthetic task writing to `s3://BUCKET/<key>`, with a
/// test split, small evaluation and a 1-rank, 1-evaluator cluster.
fn s3_job(dir: &Path, key: &str, epochs: u32) -> PathBuf {
    let output = format!("s3://{BUCKET}/{key}");
    let spec = job_spec(
        dir,
        Path::new(&output),
        &format!("epochs = {epochs}"),
        "every_epoch = false\nevery_steps = 8\nkeep_resume_states = 2\nbaselines = false",
    );
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "[train]\n",
        &format!(
            "[data.test]\npath = \"{}\"\nformat = \"gsm8k\"\n\n[train]\n",
            dir.join("data/test.jsonl").display()
        ),
    ) + "\n[eval]\nlimit = 4\nsamples = 2\nmax_new_tokens = 12\ntask_examples = 4\nbatch_size = 4\n\n[cluster]\ntrainers = 1\nevaluators = 1\n";
    // One spec file per key.
    let path = dir.join(format!("job-{}.toml", key.replace('/', "-")));
    std::fs::write(&path, text).unwrap();
    path
}

/// The text of every `.log` file under `dir`.
fn all_logs(dir: &Path) -> String {
    files_under(dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

#[test]
fn a_run_keeps_checkpoints_results_and_report_in_s3_and_resumes_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let s3 = S3Server::start(&dir.join("s3"));

    // A whole run: train, evaluate every checkpoint, report, all in S3.
    let spec = s3_job(dir, "runs/a", 2);
    let work = dir.join("work-a");
    let out = s3
        .premem(SECRET)
        .args([
            "run",
            spec.to_str().unwrap(),
            "--workdir",
            work.to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
            "--report",
            &format!("s3://{BUCKET}/reports/a"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // 64 examples, batch 8: 8 steps per epoch, a checkpoint every 8 steps.
    for step in [8, 16] {
        let checkpoint = format!("runs/a/checkpoints/step-{step:08}");
        for file in ["MANIFEST.json", "model.safetensors", "config.json"] {
            assert!(
                s3.file(&format!("{checkpoint}/{file}")).is_file(),
                "{checkpoint}/{file} missing"
            );
        }
        for split in ["train", "test"] {
            let results = s3.file(&format!(
                "runs/a/results/step-{step:08}/{split}-0000.parquet"
            ));
            let rows = premem_core::data::results::read_parquet(&results).unwrap();
            assert_eq!(rows.len(), 4, "{}", results.display());
        }
    }
    for file in [
        "report.md",
        "report.html",
        "examples.parquet",
        "provenance.json",
    ] {
        assert!(
            s3.file(&format!("reports/a/{file}")).is_file(),
            "report file {file} missing"
        );
    }
    assert!(stdout.contains(&format!("s3://{BUCKET}/reports/a/report.html")));
    // The secret is in no output and no log.
    let logs = all_logs(&work);
    assert!(!logs.is_empty(), "no logs in {}", work.display());
    for (what, body) in [("stdout", &stdout), ("stderr", &stderr), ("logs", &logs)] {
        assert!(!body.contains(SECRET), "the secret key is in the {what}");
    }

    // The same report read back from S3 by `premem report`.
    let out = s3
        .premem(SECRET)
        .args([
            "report",
            &format!("s3://{BUCKET}/runs/a"),
            "--out",
            dir.join("report-a").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.join("report-a/examples.parquet")).unwrap(),
        std::fs::read(s3.file("reports/a/examples.parquet")).unwrap()
    );

    // Training stopped by SIGTERM after a checkpoint and resumed from S3
    // ends bit-identical to the same training never interrupted.
    let whole = s3_job(dir, "runs/whole", 6);
    let out = s3
        .premem(SECRET)
        .args([
            "train",
            "--config",
            whole.to_str().unwrap(),
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let resumed = s3_job(dir, "runs/resumed", 6);
    let child = s3
        .premem(SECRET)
        .args([
            "train",
            "--config",
            resumed.to_str().unwrap(),
            "--no-progress",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = s3.file("runs/resumed/resume/step-00000008/MANIFEST.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.is_file() {
        assert!(Instant::now() < deadline, "no resume state in S3");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted at step"), "{stderr}");
    let out = s3
        .premem(SECRET)
        .args([
            "train",
            "--config",
            resumed.to_str().unwrap(),
            "--no-progress",
            "--resume",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("resumed from step"),
        "{}",
        text(&out.stdout)
    );
    let last = |key: &str| {
        std::fs::read(s3.file(&format!(
            "{key}/checkpoints/step-00000048/model.safetensors"
        )))
        .unwrap()
    };
    assert!(
        last("runs/whole") == last("runs/resumed"),
        "weights differ after SIGTERM + resume from S3"
    );
}

#[test]
fn wrong_credentials_fail_at_the_start_naming_the_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let s3 = S3Server::start(&dir.join("s3"));
    let spec = s3_job(dir, "runs/denied", 2);
    let wrong = "not-the-secret-8d2e";

    // `premem run`: the coordinator refuses the job at submission.
    let started = Instant::now();
    let out = s3
        .premem(wrong)
        .args([
            "run",
            spec.to_str().unwrap(),
            "--workdir",
            dir.join("work").to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
            "--no-report",
        ])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("bucket '{BUCKET}'")) && stderr.contains("cannot write"),
        "{stderr}"
    );
    assert!(!stderr.contains(wrong) && !text(&out.stdout).contains(wrong));
    assert!(
        !all_logs(&dir.join("work")).contains(wrong),
        "the secret is in a log"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    // Nothing was trained or written.
    assert!(!s3.file("runs/denied").exists());

    // `premem train` alone: refused before the first step.
    let out = s3
        .premem(wrong)
        .args(["train", "--config", spec.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("bucket '{BUCKET}'")), "{stderr}");
    assert!(!stderr.contains(wrong));
    assert!(!s3.file("runs/denied").exists());
}

/// Issue 18, finding 10: an endpoint that accepts connections and never
/// answers fails the start within the store timeout, naming the bucket
/// (before: object_store's retries stalled it for 181 s).
#[test]
fn an_endpoint_that_never_answers_fails_within_the_store_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    synth_task(dir);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, reading nothing, answering nothing.
    std::thread::spawn(move || {
        let mut held = vec![];
        for socket in listener.incoming() {
            held.push(socket);
        }
    });
    let spec = s3_job(dir, "runs/silent", 1);
    let started = Instant::now();
    let out = premem()
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("PREMEM_STORE_TIMEOUT", "3")
        .args(["train", "--config", spec.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(BUCKET), "{stderr}");
    assert!(
        elapsed < Duration::from_secs(30),
        "took {elapsed:?}: {stderr}"
    );
    // A timeout that is not a number is named.
    let out = premem()
        .env("PREMEM_STORE_TIMEOUT", "soon")
        .args(["train", "--config", spec.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("PREMEM_STORE_TIMEOUT=\"soon\""),
        "{}",
        text(&out.stderr)
    );
}
