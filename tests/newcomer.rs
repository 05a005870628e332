//! The newcomer's first minutes (issue 11): `mount` says at once why the server cannot be used
//! (an unknown host key, a refused key, a missing remote root) and how to fix it, still mounts
//! (writes stay local) unless `--require-remote`, and `flush` then exits 1 within seconds
//! instead of waiting for nothing. A real FUSE mount and a real loopback sshd.

mod common;

use common::Mount;
use std::fs;
use std::time::{Duration, Instant};

/// Mounts, checks `mount`'s stderr says `why` and `fix`, and that a flush fails fast, naming it.
fn says_why_and_flush_fails_fast(mut m: Mount, why: &str, fix: &str) {
    let out = m.mount();
    for want in [why, fix] {
        assert!(
            out.stderr.contains(want),
            "mount does not say {want:?}:\n{}",
            out.stderr
        );
    }
    fs::write(m.path("f"), b"written while the server cannot be used").expect("write");
    let start = Instant::now();
    let flushed = m.flush_for(120);
    assert!(!flushed.ok(), "flush succeeded");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "flush waited {:?}",
        start.elapsed()
    );
    assert!(flushed.stderr.contains(fix), "{}", flushed.stderr);
    assert_eq!(
        fs::read(m.path("f")).expect("read back"),
        b"written while the server cannot be used"
    );
    m.unmount();
}

fn offline_ok() -> common::MountBuilder {
    Mount::builder().arg("--drain-timeout").arg("1")
}

#[test]
fn an_unknown_host_key_is_named_with_the_trust_command() {
    let m = offline_ok().no_known_hosts().prepare();
    says_why_and_flush_fails_fast(m, "host key", "ftpsync trust");
}

#[test]
fn a_missing_remote_root_is_named_with_how_to_make_it() {
    let mut m = offline_ok().prepare();
    let sshd = m.sshd.as_ref().expect("sshd");
    let missing = format!("{}/not-made-yet", sshd.remote_url());
    m.use_remote(missing);
    says_why_and_flush_fails_fast(m, "not-made-yet", "mkdir -p");
}

#[test]
fn a_refused_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stranger = dir.path().join("id_stranger");
    common::sshd::keygen(&stranger, "");
    let m = offline_ok().identity(&stranger).prepare();
    says_why_and_flush_fails_fast(m, "id_stranger", "authorized");
}

#[test]
fn require_remote_refuses_to_mount_and_says_why() {
    let m = offline_ok()
        .no_known_hosts()
        .arg("--require-remote")
        .prepare();
    let out = common::run_with_timeout(m.mount_command(), common::MOUNT_WAIT);
    assert!(!out.ok(), "mounted although --require-remote");
    assert!(out.stderr.contains("ftpsync trust"), "{}", out.stderr);
    assert!(!common::is_ftpsync_mounted(&m.mnt), "mounted anyway");
}

/// On a terminal (here a pseudo-terminal made by script(1)), a flush that waits says what for.
#[test]
fn a_flush_on_a_terminal_shows_what_it_waits_for() {
    let m = Mount::builder().arg("--bwlimit").arg("1M").mount();
    fs::write(m.path("slow.bin"), common::pattern(9, 4 << 20)).expect("write");
    let flush = format!(
        "{} flush {}",
        common::BIN,
        shell_words::quote(&m.mnt.to_string_lossy())
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &flush, "/dev/null"]);
    let out = common::run_with_timeout(cmd, Duration::from_secs(60));
    out.assert_ok();
    for want in ["flush: 1 path left", "to send", "remote: connected"] {
        assert!(out.stdout.contains(want), "no {want:?} in:\n{}", out.stdout);
    }
}
