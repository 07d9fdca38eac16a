//! `premem coordinator` as an operator starts it: a short token is refused,
//! and a plain-text listener on a non-loopback address is warned about
//! (issue 18, finding 14).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{premem, text};

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
    let started = Instant::now();
    while !address.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the coordinator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: a signal to this test's own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
}
