//! The state dir and the mount's directories (issue 10, items 4 and 5), with real commands:
//! a state dir someone else owns, or holding planted symlinks, is refused before anything in
//! it is written; a mountpoint, state dir and local directory that nest (through `..`, a
//! symlink, or plainly) are refused before the daemon starts.

mod common;

use common::{is_ftpsync_mounted, run_with_timeout, BIN, REMOTE};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The unprivileged second user (nobody) that owns the hostile state dir.
const OTHER_UID: u32 = 65534;

/// A base directory (0755, so the second user can reach what it owns inside) for one test.
fn base() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("ftpsync-statedir-")
        .tempdir()
        .expect("temp base");
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).expect("chmod base");
    let root = t.path().canonicalize().expect("canonical base");
    (t, root)
}

fn mkdir(p: &Path) -> PathBuf {
    fs::create_dir_all(p).expect("mkdir");
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p.to_path_buf()
}

/// `ftpsync mount --state-dir STATE LOCAL REMOTE [MNT]`, never reaching a server.
fn mount_cmd(state: &Path, local: &Path, mnt: Option<&Path>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--state-dir")
        .arg(state)
        .args(["--drain-timeout", "0"])
        .arg(local)
        .arg(REMOTE);
    if let Some(m) = mnt {
        cmd.arg(m);
    }
    cmd
}

/// Our daemons started with `--state-dir STATE` (the temp path is unique to the test).
fn daemons_of(state: &Path) -> Vec<i32> {
    let want = state.as_os_str().as_encoded_bytes();
    let exe = fs::canonicalize(BIN).expect("canonical binary");
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = fs::read_link(entry.path().join("exe")).is_ok_and(|e| e == exe);
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ours && cmdline.split(|&b| b == 0).any(|a| a == want) {
            pids.push(pid);
        }
    }
    pids
}

/// Undoes a mount that should have been refused (today's code takes some, and may hang in
/// its own mount), without touching anything beneath it: its daemon is killed by pid and the
/// mount detached.
fn undo_wrongful_mount(mnt: &Path, state: &Path) {
    for pid in daemons_of(state) {
        // SAFETY: kill(2) on a daemon this test started, found by its unique state dir.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if is_ftpsync_mounted(mnt) {
        let _ = common::fusermount(&["-uz"], mnt);
    }
}

/// Runs a mount that must be refused, quickly and with a message containing every `want`.
fn assert_refused(cmd: Command, mnt: &Path, state: &Path, want: &[&str]) -> String {
    let start = Instant::now();
    let run = std::panic::AssertUnwindSafe(|| run_with_timeout(cmd, Duration::from_secs(15)));
    let out = std::panic::catch_unwind(run);
    let took = start.elapsed();
    let mounted = is_ftpsync_mounted(mnt);
    undo_wrongful_mount(mnt, state);
    let out = out.unwrap_or_else(|_| panic!("mount neither refused nor returned in {took:?}"));
    assert!(
        !out.ok() && !mounted,
        "mount was not refused (exit {:?}, mounted {mounted}): {}\nstderr:\n{}",
        out.status,
        out.cmdline,
        out.stderr
    );
    for w in want {
        assert!(
            out.stderr.contains(w),
            "refusal lacks {w:?}:\n{}",
            out.stderr
        );
    }
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");
    out.stderr
}

/// Bytes and mode of a file, to show it untouched.
fn snapshot(p: &Path) -> (Vec<u8>, u32, u32) {
    let md = fs::metadata(p).expect("stat target");
    (
        fs::read(p).expect("read target"),
        md.mode() & 0o7777,
        md.uid(),
    )
}

/// A target file the test owns, that a planted symlink points at.
fn target(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("precious {name}\n")).expect("write target");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod target");
    p
}

/// Plants `name -> to` in `dir`, the link owned by `uid`.
fn plant(dir: &Path, name: &str, to: &Path, uid: u32) {
    let link = dir.join(name);
    std::os::unix::fs::symlink(to, &link).expect("plant symlink");
    std::os::unix::fs::lchown(&link, Some(uid), Some(uid)).expect("lchown symlink");
}

#[test]
fn a_state_dir_another_user_owns_with_planted_symlinks_is_refused_untouched() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    let targets = mkdir(&root.join("targets"));
    let journal_target = mkdir(&targets.join("journal-dir"));
    fs::write(journal_target.join("inside"), b"keep").expect("write");
    let state = mkdir(&root.join("state"));
    std::os::unix::fs::chown(&state, Some(OTHER_UID), Some(OTHER_UID)).expect("chown state");
    let mut watched = Vec::new();
    for name in ["mount.tmp", "ftpsync.log", "audit.log", "manifest.log"] {
        let t = target(&targets, name);
        plant(&state, name, &t, OTHER_UID);
        watched.push(t);
    }
    plant(&state, "journal", &journal_target, OTHER_UID);
    watched.push(journal_target.join("inside"));
    let before: Vec<_> = watched.iter().map(|p| snapshot(p)).collect();
    let dir_mode = fs::metadata(&journal_target).expect("stat").mode();

    let err = assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &[&state.to_string_lossy(), "owned by", "65534"],
    );
    let after: Vec<_> = watched.iter().map(|p| snapshot(p)).collect();
    assert_eq!(
        before, after,
        "a planted symlink's target changed; refusal: {err}"
    );
    assert_eq!(
        fs::read_dir(&journal_target).expect("list").count(),
        1,
        "something was created through the journal symlink"
    );
    assert_eq!(
        fs::metadata(&journal_target).expect("stat").mode(),
        dir_mode
    );
    for name in [
        "mount.tmp",
        "ftpsync.log",
        "audit.log",
        "manifest.log",
        "journal",
    ] {
        let md = fs::symlink_metadata(state.join(name)).expect("planted link still there");
        assert!(md.file_type().is_symlink(), "{name} replaced");
    }
}

#[test]
fn a_planted_symlink_in_our_own_state_dir_is_refused_untouched() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    let targets = mkdir(&root.join("targets"));
    let state = root.join("state");
    fs::create_dir(&state).expect("mkdir state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    let t = target(&targets, "victim");
    plant(&state, "ftpsync.log", &t, 0);
    let before = snapshot(&t);
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &[
            &state.join("ftpsync.log").to_string_lossy(),
            "symbolic link",
        ],
    );
    assert_eq!(snapshot(&t), before, "the log's symlink target changed");
}

#[test]
fn a_file_in_the_state_dir_owned_by_another_user_is_refused() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    let state = root.join("state");
    fs::create_dir(&state).expect("mkdir state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    let planted = state.join("manifest.log");
    fs::write(&planted, b"").expect("write");
    std::os::unix::fs::chown(&planted, Some(OTHER_UID), Some(OTHER_UID)).expect("chown");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &[&planted.to_string_lossy(), "owned by", "65534"],
    );
}

#[test]
fn a_mountpoint_inside_the_local_dir_is_refused_quickly() {
    let (_t, root) = base();
    let local = mkdir(&root.join("local"));
    let mnt = mkdir(&local.join("sub"));
    let state = root.join("state");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["mountpoint", "inside", &local.to_string_lossy()],
    );
}

#[test]
fn a_local_dir_inside_the_mountpoint_is_refused() {
    let (_t, root) = base();
    let mnt = mkdir(&root.join("mnt"));
    let local = mkdir(&mnt.join("local"));
    let state = root.join("state");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["inside", &mnt.to_string_lossy()],
    );
}

#[test]
fn a_state_dir_inside_the_local_dir_through_dotdot_is_refused() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    mkdir(&root.join("x"));
    let state = root.join("x/../local/st");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["state dir", "inside", &local.to_string_lossy()],
    );
    assert!(
        !local.join("st").exists(),
        "the state dir was made in LOCAL_DIR"
    );
}

#[test]
fn a_state_dir_under_a_symlink_to_the_local_dir_is_refused() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    std::os::unix::fs::symlink(&local, root.join("L")).expect("symlink");
    let state = root.join("L/st");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["state dir", "inside"],
    );
    assert!(
        !local.join("st").exists(),
        "the state dir was made in LOCAL_DIR"
    );
}

#[test]
fn a_state_dir_inside_the_mountpoint_or_holding_it_is_refused() {
    let (_t, root) = base();
    let local = mkdir(&root.join("local"));
    let mnt = mkdir(&root.join("mnt"));
    let state = mkdir(&mnt.join("st"));
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["state dir", "inside", &mnt.to_string_lossy()],
    );
    // The other way round: the mountpoint inside the state dir.
    let state = mkdir(&root.join("state2"));
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    let mnt = mkdir(&state.join("mnt"));
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["inside", &state.to_string_lossy()],
    );
}

/// Unmounts a bind mount the test made, also when the test fails.
struct BindMount(PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_state_dir_in_a_bind_mount_of_the_local_dir_is_refused() {
    let (_t, root) = base();
    let (local, mnt) = (mkdir(&root.join("local")), mkdir(&root.join("mnt")));
    let alias = mkdir(&root.join("alias"));
    let bound = Command::new("mount")
        .arg("--bind")
        .arg(&local)
        .arg(&alias)
        .status()
        .expect("run mount --bind");
    assert!(bound.success(), "mount --bind {local:?} {alias:?}");
    let _bind = BindMount(alias.clone());
    // Canonical paths do not show it: only the device and inode of the ancestors do.
    let state = alias.join("st");
    assert_refused(
        mount_cmd(&state, &local, Some(&mnt)),
        &mnt,
        &state,
        &["state dir", "inside", &local.to_string_lossy()],
    );
    assert!(
        !local.join("st").exists(),
        "the state dir was made in LOCAL_DIR"
    );
}
