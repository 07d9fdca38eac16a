//! `premem coordinator` as an operator starts it: a short token is refused,
//! a plain-text listener on a non-loopback address is warned about
//! (issue 18, finding 14), and role tokens and `--allow-prefix` limit what
//! each token holder can make it do (finding 8); `premem status` into a
//! closed pipe and `premem run` over a workdir in use (issue 39, items 10
//! and 8).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{job_spec, premem, synth_task, text};

#[test]
fn a_short_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = premem()
        .env("PREMEM_TOKEN", "x")
        .args(["coordinator", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the cluster token has 1 characters; the coordinator needs at least 16"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "state created before the refusal"
    );
}

#[test]
fn listening_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let address = dir.path().join("address");
    let child = premem()
        .env("PREMEM_TOKEN", common::cluster::TOKEN)
        .env("RUST_LOG", "warn")
        .args(["coordinator", "--listen", "0.0.0.0:0", "--state"])
        .arg(dir.path().join("state"))
        .arg("--address-file")
        .arg(&address)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_address(&address);
    // SAFETY: a signal to this test's own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
}

/// Waits for the coordinator's `--address-file`.
fn wait_for_address(address: &std::path::Path) -> String {
    let started = Instant::now();
    while !address.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the coordinator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(address).unwrap()
}

#[test]
fn role_tokens_and_allowed_prefixes_limit_what_a_token_holder_can_do() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = |name: &str, value: &str| {
        let file = root.join(name);
        std::fs::write(&file, format!("{value}\n")).unwrap();
        file
    };
    let (submit, trainer) = ("submit-token-0123456789", "trainer-token-0123456789");
    let short = premem()
        .env_remove("PREMEM_TOKEN")
        .args([
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--trainer-token-file",
        ])
        .arg(token("short", "abc"))
        .output()
        .unwrap();
    let stderr = text(&short.stderr);
    assert!(!short.status.success(), "{stderr}");
    assert!(
        stderr.contains("token of --trainer-token-file has 3 characters"),
        "{stderr}"
    );

    let address = root.join("address");
    let child = premem()
        .env_remove("PREMEM_TOKEN")
        .args(["coordinator", "--listen", "127.0.0.1:0", "--state"])
        .arg(root.join("state"))
        .arg("--submit-token-file")
        .arg(token("submit", submit))
        .arg("--trainer-token-file")
        .arg(token("trainer", trainer))
        .arg("--allow-prefix")
        .arg(root.join("jobs"))
        .arg("--address-file")
        .arg(&address)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _coordinator = Killed(child);
    let address = wait_for_address(&address);
    let jobs = root.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    synth_task(&jobs);
    let inside = job_spec(&jobs, &jobs.join("run"), "", "");
    let outside = jobs.join("outside.toml");
    let text_of = std::fs::read_to_string(&inside).unwrap();
    // Beside the allowed prefix, not under it.
    let elsewhere = root.join("elsewhere").join("run");
    let escape = text_of.replace(
        jobs.join("run").to_str().unwrap(),
        elsewhere.to_str().unwrap(),
    );
    std::fs::write(&outside, escape).unwrap();
    let submit_as = |token: &str, spec: &std::path::Path| {
        premem()
            .env("PREMEM_TOKEN", token)
            .env("PREMEM_COORDINATOR", &address)
            .args(["submit", "--config", spec.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let as_trainer = submit_as(trainer, &inside);
    let stderr = text(&as_trainer.stderr);
    assert!(!as_trainer.status.success(), "{stderr}");
    assert!(
        stderr.contains("SubmitJob needs a token with the submit role"),
        "{stderr}"
    );
    let escaping = submit_as(submit, &outside);
    let stderr = text(&escaping.stderr);
    assert!(!escaping.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "run.output '{}' is not under an allowed prefix",
            elsewhere.display()
        )),
        "{stderr}"
    );
    let accepted = submit_as(submit, &inside);
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    status_into_a_closed_pipe(&address, submit);
}

/// A child process killed and reaped when dropped, a failed assertion
/// included (an orphan would hold the test's output open).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `premem status … | head -1` (issue 39, item 10): the reader is gone
/// before premem writes; premem ends quietly, as other writers to a
/// closed pipe do, instead of panicking in `println!`.
fn status_into_a_closed_pipe(address: &str, token: &str) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = premem()
        .env("PREMEM_TOKEN", token)
        .env("PREMEM_COORDINATOR", address)
        .args(["status", "--job", "test"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// A second `premem run` over a workdir in use (issue 39, item 8) is
/// refused before it touches the first one's files: its
/// `coordinator.address` stays, its log gets nothing.
#[test]
fn a_workdir_in_use_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    synth_task(dir.path());
    let spec = job_spec(dir.path(), &dir.path().join("run"), "", "");
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(workdir.join("logs")).unwrap();
    std::fs::write(workdir.join("coordinator.address"), "http://first\n").unwrap();
    std::fs::write(workdir.join("logs/coordinator.log"), "first\n").unwrap();
    // The first run's lock, held as `premem run` holds it.
    let lock = std::fs::File::create(workdir.join("premem.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = premem()
        .args(["run", spec.to_str().unwrap(), "--workdir"])
        .arg(&workdir)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is in use by another premem run, sweep or curate"),
        "{stderr}"
    );
    let read = |file: &str| std::fs::read_to_string(workdir.join(file)).unwrap();
    assert_eq!(read("coordinator.address"), "http://first\n");
    assert_eq!(read("logs/coordinator.log"), "first\n");
}
