//! Unmounting that tells the truth, and one daemon per folder (issue 11). `ftpsync unmount`
//! flushes, unmounts and waits for the daemon: with the server up it returns 0 once the
//! pending uploads are confirmed (the mounts here have `--drain-timeout 0`, so only its own
//! flush can have sent them); with the server down it returns 1 after its timeout, naming
//! what is left, which the next mount then sends. A second mount of a folder already mirrored,
//! through another state dir and mountpoint, is refused naming the first daemon's pid; a
//! remount right after `fusermount3 -u` says it waits for the old daemon's drain, and does. A
//! busy mount is left mounted, with the hint to find who holds it.
//! A real FUSE mount and a real loopback sshd.

mod common;

use common::{Mount, BIN, CMD_WAIT, MOUNT_WAIT};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn unmount(target: &Path, timeout_secs: u64) -> common::CmdOut {
    let mut cmd = Command::new(BIN);
    cmd.arg("unmount")
        .arg(target)
        .arg("--timeout")
        .arg(timeout_secs.to_string());
    common::run_with_timeout(cmd, CMD_WAIT + Duration::from_secs(timeout_secs))
}

fn remote_file(m: &Mount, rel: &str) -> Option<Vec<u8>> {
    let sshd = m.sshd.as_ref().expect("sshd");
    fs::read(sshd.remote_root_on_disk().join(rel)).ok()
}

#[test]
fn unmount_returns_once_pending_uploads_are_confirmed() {
    // Uploads wait 3 s after the last change, and the daemon drains nothing at unmount: only
    // the flush `ftpsync unmount` does first can put these files on the server.
    let mut m = Mount::builder()
        .arg("--writeback-delay")
        .arg("3")
        .arg("--drain-timeout")
        .arg("0")
        .mount();
    for i in 0..5 {
        fs::write(m.path(format!("f{i}")), format!("pending {i}")).expect("write");
    }
    let pid = m.pid();
    let out = unmount(&m.mnt, 60);
    out.assert_ok();
    assert!(
        out.stdout.contains("every change is confirmed"),
        "{}",
        out.stdout
    );
    assert!(!common::pid_alive(pid), "daemon {pid} outlived the unmount");
    assert!(!common::is_ftpsync_mounted(&m.mnt), "still mounted");
    m.forget_unmounted();
    for i in 0..5 {
        assert_eq!(
            remote_file(&m, &format!("f{i}")).as_deref(),
            Some(format!("pending {i}").as_bytes()),
            "f{i} not on the server after unmount returned 0"
        );
    }
}

#[test]
fn unmount_with_the_server_down_names_what_is_left_and_the_next_mount_sends_it() {
    let mut m = Mount::builder().arg("--drain-timeout").arg("1").mount();
    m.sshd.as_mut().expect("sshd").stop();
    fs::write(
        m.path("left-behind.txt"),
        b"written while the server is down",
    )
    .expect("write");
    let pid = m.pid();
    let start = Instant::now();
    let out = unmount(&m.mnt, 3);
    let took = start.elapsed();
    assert!(
        !out.ok(),
        "unmount exited 0 with the server down:\n{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(30), "unmount took {took:?}");
    for want in ["left-behind.txt", "next mount", "journal"] {
        assert!(out.stderr.contains(want), "no {want:?} in:\n{}", out.stderr);
    }
    assert!(!common::pid_alive(pid), "daemon {pid} outlived the unmount");
    m.forget_unmounted();
    assert_eq!(remote_file(&m, "left-behind.txt"), None);

    m.sshd.as_mut().expect("sshd").restart();
    m.mount();
    m.flush();
    assert_eq!(
        remote_file(&m, "left-behind.txt").as_deref(),
        Some(&b"written while the server is down"[..])
    );
}

/// `ftpsync mount` of `m`'s local dir with another state dir, onto `mountpoint`.
fn second_mount(m: &Mount, mountpoint: &Path) -> common::CmdOut {
    let sshd = m.sshd.as_ref().expect("sshd");
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--state-dir")
        .arg(m.root.join("state2"))
        .arg("--identity")
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(sshd.known_hosts())
        .arg(&m.local)
        .arg(sshd.remote_url())
        .arg(mountpoint);
    common::run_with_timeout(cmd, MOUNT_WAIT)
}

#[test]
fn a_second_mirror_of_the_same_folder_is_refused_naming_the_first_daemon() {
    let m = Mount::new();
    let mnt2 = m.root.join("mnt2");
    fs::create_dir(&mnt2).expect("mkdir mnt2");
    let out = second_mount(&m, &mnt2);
    assert!(!out.ok(), "a second daemon mirrors the same folder");
    assert!(!common::is_ftpsync_mounted(&mnt2), "mounted anyway");
    let pid = format!("pid {}", m.pid());
    for want in [
        pid.as_str(),
        &*m.state.to_string_lossy(),
        "already mirrored",
    ] {
        assert!(out.stderr.contains(want), "no {want:?} in:\n{}", out.stderr);
    }
    // The same mount again, onto its own live mountpoint: refused, naming the daemon too.
    let again = common::run_with_timeout(m.mount_command(), MOUNT_WAIT);
    assert!(!again.ok(), "mounted twice on one mountpoint");
    assert!(again.stderr.contains(&pid), "{}", again.stderr);
}

#[test]
fn a_second_mirror_of_a_shadow_mounted_folder_is_refused_naming_the_first_daemon() {
    let m = Mount::builder().shadow().mount();
    let mnt2 = m.root.join("mnt2");
    fs::create_dir(&mnt2).expect("mkdir mnt2");
    let out = second_mount(&m, &mnt2);
    assert!(
        !out.ok(),
        "a second daemon mirrors the shadow-mounted folder"
    );
    assert!(!common::is_ftpsync_mounted(&mnt2), "mounted anyway");
    let pid = format!("pid {}", m.pid());
    assert!(out.stderr.contains(&pid), "{}", out.stderr);
}

/// A mount (drain timeout 4 s) whose server is down, holding one journaled file, just
/// unmounted with `fusermount3 -u`: its daemon (the pid returned) is draining.
fn unmounted_while_the_server_is_down() -> (Mount, i32) {
    let mut m = Mount::builder().arg("--drain-timeout").arg("4").mount();
    m.sshd.as_mut().expect("sshd").stop();
    fs::write(m.path("draining.txt"), b"pending when unmounted").expect("write");
    // Hashed and journaled, so the old daemon has an upload to drain.
    common::ftpsync([
        "flush".as_ref(),
        m.state.as_os_str(),
        "--local".as_ref(),
        "--timeout".as_ref(),
        "30".as_ref(),
    ])
    .assert_ok();
    let old = m.fusermount_u_no_wait();
    assert!(
        common::pid_alive(old),
        "the old daemon did not drain at all"
    );
    (m, old)
}

/// The mount said it waits for the draining daemon `old`, and mounted only once it was gone.
fn said_it_waited_for(out: &common::CmdOut, old: i32) {
    let says = format!("pid {old} is still draining");
    assert!(
        out.stderr.contains(&says),
        "no {says:?} in:\n{}",
        out.stderr
    );
    assert!(
        !common::pid_alive(old),
        "mounted while daemon {old} still runs"
    );
}

#[test]
fn a_remount_during_the_drain_says_it_waits_for_the_old_daemon_then_mounts() {
    let (mut m, old) = unmounted_while_the_server_is_down();
    let out = m.mount();
    said_it_waited_for(&out, old);
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_eq!(
        remote_file(&m, "draining.txt").as_deref(),
        Some(&b"pending when unmounted"[..])
    );
}

#[test]
fn unmount_of_a_busy_mount_unmounts_nothing_and_says_who_to_look_for() {
    let mut m = Mount::new();
    fs::write(m.path("f"), b"confirmed before the refusal").expect("write");
    // A process whose working directory is in the mount keeps it busy.
    let mut busy = Command::new("sleep")
        .arg("60")
        .current_dir(&m.mnt)
        .spawn()
        .expect("spawn sleep in the mount");
    let out = unmount(&m.mnt, 30);
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(!out.ok(), "unmount exited 0 on a busy mount");
    assert!(out.stderr.contains("fuser -vm"), "{}", out.stderr);
    assert!(common::is_ftpsync_mounted(&m.mnt), "unmounted anyway");
    assert!(common::pid_alive(m.pid()), "the daemon went away");
    assert_eq!(
        remote_file(&m, "f").as_deref(),
        Some(&b"confirmed before the refusal"[..])
    );
    m.unmount();
}

#[test]
fn a_mount_of_the_folder_through_another_state_dir_also_waits_for_the_drain() {
    let (mut m, old) = unmounted_while_the_server_is_down();
    // Found through the folder's lock alone: the other state dir knows nothing of it.
    let out = second_mount(&m, &m.mnt);
    out.assert_ok();
    said_it_waited_for(&out, old);
    assert!(
        out.stderr.contains(&*m.state.to_string_lossy()),
        "the old daemon's state dir is not named:\n{}",
        out.stderr
    );
    m.sshd.as_mut().expect("sshd").restart();
    unmount(&m.mnt, 60).assert_ok();
    assert_eq!(
        remote_file(&m, "draining.txt").as_deref(),
        Some(&b"pending when unmounted"[..])
    );
}
