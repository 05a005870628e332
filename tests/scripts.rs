//! The helper scripts, run as a user would: `scripts/sshd.sh --help` starts nothing, `--port N`
//! listens on N, and `--detach DIR` never deletes a directory it did not set up itself.
//! Needs root and openssh-server (as sshd.sh itself does). Every run is bounded by timeout(1)
//! so a script that wrongly starts a foreground server fails the test instead of hanging it.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

const SSHD_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sshd.sh");

/// Runs `bash scripts/sshd.sh ARGS`, killed after 30 s.
fn sshd_sh(args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["30", "bash", SSHD_SH])
        .args(args)
        .output()
        .expect("run timeout(1) bash scripts/sshd.sh")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A port the kernel just called free on 127.0.0.1.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The value of `KEY=` in a detached set-up's env file.
fn env_value(dir: &Path, key: &str) -> String {
    let env = fs::read_to_string(dir.join("env")).expect("read DIR/env");
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing in env:\n{env}"))
        .to_string()
}

/// Stops a detached sshd by its pid and waits until it is gone (it is not our child, so poll
/// kill(pid, 0); sshd exits on SIGTERM at once).
fn stop(pid: i32) {
    // SAFETY: kill(2) with a pid read from the set-up this test made.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd {pid} did not stop"
        );
        std::thread::yield_now();
    }
}

#[test]
fn help_prints_usage_and_starts_nothing() {
    let out = sshd_sh(&["--help"]);
    assert!(out.status.success(), "--help failed: {out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("usage: sshd.sh"), "{stdout}");
    assert!(
        stdout.contains("--port N") && stdout.contains("--detach DIR"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("(pid "),
        "--help started a server: {stdout}"
    );

    let bad = sshd_sh(&["--port", "seventy"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        text(&bad.stderr).contains("--port wants a number"),
        "{bad:?}"
    );
}

#[test]
fn detach_refuses_a_foreign_dir_and_honours_port() {
    let base = tempfile::tempdir().expect("temp dir");

    // Someone's data: refused, left exactly as it was.
    let foreign = base.path().join("data");
    fs::create_dir(&foreign).expect("mkdir");
    fs::write(foreign.join("precious.txt"), "keep me").expect("write");
    let out = sshd_sh(&["--detach", foreign.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("refusing to delete"), "{out:?}");
    assert_eq!(
        fs::read_to_string(foreign.join("precious.txt")).expect("read"),
        "keep me"
    );
    assert_eq!(
        fs::read_dir(&foreign).expect("ls").count(),
        1,
        "something was added"
    );

    // A fresh dir with --port: listens there and marks the dir as its own.
    let dir = base.path().join("sshd");
    let d = dir.to_str().expect("utf-8 path");
    let port = free_port();
    let out = sshd_sh(&["--detach", d, "--port", &port.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = env_value(&dir, "SSHD_PID").parse().expect("pid");
    assert!(env_value(&dir, "REMOTE_URL").contains(&format!("@127.0.0.1:{port}/")));
    assert!(dir.join(".ftpsync-sshd").is_file(), "no marker");

    // Its own earlier set-up: refused while its sshd runs, replaced once it stopped.
    let again = sshd_sh(&["--detach", d]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(text(&again.stderr).contains("still runs"), "{again:?}");
    stop(pid);
    let again = sshd_sh(&["--detach", d]);
    assert!(again.status.success(), "{again:?}");
    stop(env_value(&dir, "SSHD_PID").parse().expect("pid"));
}
