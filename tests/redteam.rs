//! Red team for the issue-9 change: each test is one way "confirmed" still lies, a server
//! version is lost, flush or unmount hangs, found by attacking the rename replay, conflict
//! handling and temp sweep through a real mount against a real loopback sshd. Each asserts
//! the correct behaviour, so it fails until the engine is fixed.
//!
//! Safety: no test here writes through a symlink; files written are opened with O_NOFOLLOW.

mod common;

use common::mirror_tree::{
    assert_mirrored, assert_mirrored_except, copies_holding, is_conflict_name, remote_root,
    ROOT_MARKER,
};
use common::{put_nofollow, walk, Mount, Rng};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The least-privilege server (exec refused, verification by read-back). Used throughout: on
/// this machine a stale pyenv lock makes every exec through the plain sshd's login shell
/// wait 60 s (`~/.bashrc` runs `pyenv rehash`), which has nothing to do with ftpsync.
fn builder() -> common::MountBuilder {
    Mount::builder().chroot()
}

fn plain() -> Mount {
    builder().mount()
}

fn delayed(secs: &str) -> Mount {
    builder().arg("--writeback-delay").arg(secs).mount()
}

fn xattr_state(p: &Path) -> String {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let name = CString::new("user.ftpsync.state").expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: lgetxattr into a buffer we own, with its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return format!("(no xattr: {})", std::io::Error::last_os_error());
    }
    String::from_utf8_lossy(&buf[..n as usize]).into_owned()
}

/// Finding: a directory rename is replayed as one remote rename after checking only that the
/// directory itself is still a directory: a file inside it that the server changed is carried
/// to the new name and the manifest vouches for it with the local hash. flush 0, xattr
/// "confirmed", the server holds the server's bytes there and the local bytes nowhere.
#[test]
fn renaming_a_directory_does_not_vouch_for_a_file_the_server_changed_inside_it() {
    let m = plain();
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/f"), b"local f");
    m.flush();
    let theirs = b"the server's f, edited behind ftpsync's back";
    put_nofollow(&remote_root(&m).join("d/f"), theirs);
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    m.flush();
    let state = xattr_state(&m.path("e/f"));
    let on_server = fs::read(remote_root(&m).join("e/f")).expect("remote e/f");
    assert_eq!(
        String::from_utf8_lossy(&on_server),
        "local f",
        "xattr of e/f says {state:?} but the server holds other bytes"
    );
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

/// Finding: the same through RENAME_EXCHANGE of two directories.
#[test]
fn exchanging_two_directories_does_not_vouch_for_files_the_server_changed_inside() {
    let m = plain();
    for d in ["a", "b"] {
        fs::create_dir(m.path(d)).expect("mkdir");
        put_nofollow(&m.path(format!("{d}/f")), format!("local {d}/f").as_bytes());
    }
    m.flush();
    let theirs = b"the server's a/f, a different length";
    put_nofollow(&remote_root(&m).join("a/f"), theirs);
    common::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE).expect("exchange");
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("b/f")).expect("remote b/f"),
        b"local a/f",
        "xattr of b/f says {:?}",
        xattr_state(&m.path("b/f"))
    );
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

/// Finding: a user's own file whose name looks like an upload temp
/// (`.NAME.ftpsync-tmp-<16 hex>`) is mirrored and confirmed, then deleted from the server by
/// the start-up temp sweep; the manifest still vouches for it, flush exits 0.
#[test]
fn a_users_file_named_like_a_temp_is_not_swept_from_the_server() {
    let mut m = plain();
    let name = ".notes.ftpsync-tmp-0123456789abcdef";
    put_nofollow(
        &m.path(name),
        b"the user's own file, not an upload in progress",
    );
    m.flush();
    assert!(remote_root(&m).join(name).exists(), "never uploaded");
    m.unmount();
    m.mount();
    m.flush();
    let state = xattr_state(&m.path(name));
    assert!(
        remote_root(&m).join(name).exists(),
        "the server copy is gone while the xattr says {state:?}"
    );
    assert_mirrored(&m);
}

/// Finding: the parent a replayed rename makes on the server (mkdir_all in move_entry) is in
/// no manifest: when the local directory goes again before its own upload, nothing removes
/// it and flush reports the mirror equal with an extra directory on the server.
#[test]
fn a_directory_made_only_for_a_replayed_rename_goes_with_the_local_one() {
    let m = delayed("2");
    put_nofollow(&m.path("f"), b"moves in and out again");
    m.flush();
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::rename(m.path("f"), m.path("d/f")).expect("mv f d/");
    fs::rename(m.path("d/f"), m.path("f")).expect("mv d/f .");
    fs::remove_dir(m.path("d")).expect("rmdir");
    m.flush();
    assert_mirrored(&m);
}

/// Finding (variant): the same directory, when a file takes its name, is moved aside as a
/// "conflict copy" of the server's, though ftpsync made it.
#[test]
fn a_directory_made_for_a_replayed_rename_is_not_kept_as_a_conflict() {
    let m = delayed("2");
    put_nofollow(&m.path("f"), b"moves in and out again");
    m.flush();
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::rename(m.path("f"), m.path("d/f")).expect("mv f d/");
    fs::rename(m.path("d/f"), m.path("f")).expect("mv d/f .");
    fs::remove_dir(m.path("d")).expect("rmdir");
    put_nofollow(&m.path("d"), b"now a file");
    m.flush();
    assert_mirrored(&m);
}

/// Guard (passes today; suspected from the code, not confirmed): `touch` of a confirmed file
/// (mtime only, no write) must not leave the engine waiting for a Store that never comes
/// (the awaiting_hash / hash_here path) nor log a lost hash record.
#[test]
fn touching_a_confirmed_file_is_mirrored_promptly_without_a_lost_hash_warning() {
    let m = plain();
    put_nofollow(&m.path("f"), b"touched later");
    m.flush();
    let old = std::time::SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(m.path("f"))
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(old)))
        .expect("touch -d yesterday f");
    let start = Instant::now();
    m.flush();
    let took = start.elapsed();
    assert_mirrored(&m);
    let log = m.daemon_log();
    assert!(
        !log.contains("no hash of its last version arrived"),
        "a plain touch is reported as a lost hash record:\n{}",
        m.log_tail()
    );
    assert!(took < Duration::from_secs(5), "flush took {took:?}");
}

/// Finding: the same with a file the server deleted inside the renamed directory: the
/// manifest vouches for `e/f` ("confirmed", flush 0) though the server holds no copy at all.
#[test]
fn renaming_a_directory_does_not_vouch_for_a_file_the_server_deleted_inside_it() {
    let m = plain();
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/f"), b"local f");
    put_nofollow(&m.path("d/g"), b"local g");
    m.flush();
    fs::remove_file(remote_root(&m).join("d/f")).expect("server rm");
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    m.flush();
    let state = xattr_state(&m.path("e/f"));
    assert!(
        remote_root(&m).join("e/f").exists(),
        "e/f is missing on the server while its xattr says {state:?}"
    );
    assert_mirrored(&m);
}

/// Finding: flush returns 0 while the planner is still replaying a directory rename (here:
/// retrying against a server that is down): `consume` counts the Rename record as consumed and
/// adds no mark for a replayed rename, so the plan looks idle and flush's first check passes
/// (then checkpoints the Rename record away). A file rename is covered by the record that
/// follows it; a directory rename is the last record.
#[test]
fn flush_does_not_succeed_while_a_rename_has_not_reached_the_server() {
    let mut m = builder().arg("--drain-timeout").arg("1").mount();
    fs::create_dir(m.path("a")).expect("mkdir");
    fs::create_dir(m.path("a/sub")).expect("mkdir");
    m.flush();
    m.sshd.as_mut().expect("sshd").stop();
    fs::rename(m.path("a"), m.path("b")).expect("mv a b");
    std::thread::sleep(Duration::from_secs(2));
    let out = m.flush_for(5);
    eprintln!("flush said: {}{}", out.stdout, out.stderr);
    let remote = remote_root(&m);
    assert!(
        !out.ok(),
        "flush exited 0 with the server down; the server holds a: {}, b: {}\n{}",
        remote.join("a").exists(),
        remote.join("b").exists(),
        out.stderr
    );
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_mirrored(&m);
}

/// Finding: a rename replay retries a dead server on the planner thread with backoff sleeps
/// of up to a minute and does not look at `stopping` while it sleeps: an unmount with a short
/// drain timeout waits for that sleep.
#[test]
fn unmount_is_not_held_by_a_rename_retrying_a_dead_server() {
    let mut m = builder().arg("--drain-timeout").arg("1").mount();
    put_nofollow(&m.path("a"), b"renamed while the server is down");
    m.flush();
    m.sshd.as_mut().expect("sshd").stop();
    fs::rename(m.path("a"), m.path("b")).expect("mv a b");
    // Long enough for the backoff to be inside its 32-40 s sleep (1+2+4+8+16 s before it).
    std::thread::sleep(Duration::from_secs(45));
    let start = Instant::now();
    let pid = m.pid();
    let (ok, err) = common::fusermount_u(&m.mnt);
    assert!(ok, "fusermount3 -u: {err}");
    let gone = common::wait_pid_gone(pid, Duration::from_secs(60));
    let took = start.elapsed();
    assert!(gone, "daemon still there a minute after the unmount");
    assert!(
        took < Duration::from_secs(8),
        "the daemon took {took:?} to exit with --drain-timeout 1"
    );
}

/// Finding: a refused host key met by a rename replay is never recorded as a halt (replay_rename
/// only calls note_offline and keeps retrying on the planner thread, so no worker runs to meet
/// it): flush waits out its whole timeout instead of stopping at once and naming the refusal.
#[test]
fn flush_stops_at_once_on_a_changed_host_key_while_a_rename_waits() {
    let mut m = builder().arg("--drain-timeout").arg("1").mount();
    put_nofollow(&m.path("a"), b"renamed after the key changed");
    m.flush();
    m.sshd.as_mut().expect("sshd").swap_host_key();
    let new_fp = m.sshd.as_ref().expect("sshd").host_fingerprint();
    fs::rename(m.path("a"), m.path("b")).expect("mv a b");
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let out = m.flush_for(40);
    let took = start.elapsed();
    assert!(!out.ok(), "flush succeeded against a changed host key");
    assert!(
        took < Duration::from_secs(20) && out.stderr.contains("stopped"),
        "flush took {took:?} and said:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains(&new_fp), "{}", out.stderr);
}

/// Finding: a confirmed directory the server replaced by a file blocks every upload beneath
/// it: nothing marks the directory itself, so the server's file is never kept aside and the
/// directory never made again; flush fails "for a reason only you can clear" for ever,
/// though ftpsync can clear it itself (a conflict copy of the file, as for any other kind).
#[test]
fn a_directory_the_server_replaced_by_a_file_is_kept_aside_and_made_again() {
    let m = plain();
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/old"), b"old");
    m.flush();
    let remote = remote_root(&m);
    fs::remove_dir_all(remote.join("d")).expect("server rm -r");
    let theirs = b"the server's file where the directory was";
    put_nofollow(&remote.join("d"), theirs);
    put_nofollow(&m.path("d/new"), b"written into the local directory");
    let out = m.flush_for(30);
    assert!(out.ok(), "flush: {}", out.stderr);
    assert_eq!(copies_holding(&remote, theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

/// Guard (passes today): touch through a path (utimensat, no open) of a confirmed file.
#[test]
fn utimensat_on_a_confirmed_file_is_mirrored_promptly() {
    let m = plain();
    put_nofollow(&m.path("f"), b"touched later");
    m.flush();
    let c = CString::new(m.path("f").as_os_str().as_bytes()).expect("path");
    let t = libc::timespec {
        tv_sec: 1_000_000_000,
        tv_nsec: 0,
    };
    // SAFETY: valid C string and a two-element timespec array; AT_SYMLINK_NOFOLLOW.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0);
    let start = Instant::now();
    m.flush();
    let took = start.elapsed();
    assert_mirrored(&m);
    assert!(
        !m.daemon_log()
            .contains("no hash of its last version arrived"),
        "{}",
        m.log_tail()
    );
    assert!(took < Duration::from_secs(5), "flush took {took:?}");
}

/// Guard (exchange of a file and a directory, both confirmed).
#[test]
fn exchanging_a_file_and_a_directory_is_mirrored() {
    let m = plain();
    put_nofollow(&m.path("a"), b"a file");
    fs::create_dir(m.path("b")).expect("mkdir");
    put_nofollow(&m.path("b/x"), b"inside b");
    m.flush();
    common::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE).expect("exchange");
    m.flush();
    assert_mirrored(&m);
}

/// Finding (timing-dependent, so tried at several delays): kill -9 in the middle of an
/// exchange replay (its three remote renames are recorded in the manifest only after each is
/// done): after the remount the replay finds the server's `a` with no manifest entry and keeps
/// ftpsync's own directory aside as a "conflict copy" of a server version that never existed.
#[test]
fn kill9_during_an_exchange_leaves_no_false_conflict_copy() {
    let mut m = plain();
    for d in ["a", "b"] {
        fs::create_dir(m.path(d)).expect("mkdir");
        put_nofollow(&m.path(format!("{d}/f")), d.as_bytes());
    }
    m.flush();
    for delay_us in (0..30u64).map(|i| i * 400) {
        common::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE).expect("exchange");
        std::thread::sleep(Duration::from_micros(delay_us));
        m.kill9();
        m.remount();
        m.flush();
        let conflicts: Vec<_> = walk(&remote_root(&m))
            .into_iter()
            .filter(|(rel, _, _)| is_conflict_name(rel))
            .map(|(rel, _, _)| String::from_utf8_lossy(&rel).into_owned())
            .collect();
        assert!(
            conflicts.is_empty(),
            "kill -9 {delay_us} us after the exchange: false conflict copies {conflicts:?}"
        );
        assert_mirrored(&m);
    }
}

// ---------------------------------------------------------------------------------------------
// Random sequences: local operations through the mount within the write-back delay,
// interleaved with server-side edits, then flush; the remote must equal the local tree except
// where the server's own unseen edits stand, and every server version must survive.
// ---------------------------------------------------------------------------------------------

const NAMES: &[&str] = &["a", "b", "c", "d"];
/// Symlink targets that name nothing, ever: nothing is written through a link.
const NOWHERE: &str = "no-such-target";

fn random_path(r: &mut Rng) -> String {
    let n = NAMES[r.below(NAMES.len())];
    if r.below(2) == 0 {
        n.to_string()
    } else {
        format!("{}/{n}", NAMES[r.below(NAMES.len())])
    }
}

#[derive(Clone, Copy, Default)]
struct Knobs {
    no_chmod: bool,
    kill: bool,
    sshd: bool,
    server_new: bool,
    /// Pauses of 0.7 to 1.3 s (around the 1 s write-back delay) between some steps.
    pauses: bool,
}

impl Knobs {
    /// From the environment (REDTEAM_NO_CHMOD, REDTEAM_KILL, REDTEAM_SSHD, REDTEAM_SERVER_NEW).
    fn from_env() -> Knobs {
        let on = |k: &str| std::env::var_os(k).is_some();
        Knobs {
            no_chmod: on("REDTEAM_NO_CHMOD"),
            kill: on("REDTEAM_KILL"),
            sshd: on("REDTEAM_SSHD"),
            server_new: on("REDTEAM_SERVER_NEW"),
            pauses: on("REDTEAM_PAUSES"),
        }
    }
}

fn server_op(
    r: &mut Rng,
    remote: &Path,
    step: usize,
    theirs: &mut Vec<Vec<u8>>,
    deleted: &mut Vec<String>,
    k: Knobs,
) {
    let p = random_path(r);
    let full = remote.join(&p);
    let Ok(md) = fs::symlink_metadata(&full) else {
        // A new file of the server's own, where its parent directory stands.
        let parent_is_dir = full
            .parent()
            .and_then(|d| fs::symlink_metadata(d).ok())
            .is_some_and(|md| md.is_dir());
        if k.server_new && parent_is_dir && r.below(2) == 0 {
            let c = format!("server's new file {step} at {p}");
            if std::env::var_os("REDTEAM_TRACE").is_some() {
                eprintln!("step {step}: server creates {p}");
            }
            put_nofollow(&full, c.as_bytes());
            theirs.push(c.into_bytes());
        }
        return;
    };
    if !md.is_file() {
        return;
    }
    // The server replacing its own earlier version loses nothing of ftpsync's doing.
    if let Ok(old) = fs::read(&full) {
        theirs.retain(|t| *t != old);
    }
    if std::env::var_os("REDTEAM_TRACE").is_some() {
        eprintln!("step {step}: server op on {p}");
    }
    match r.below(3) {
        0 => {
            let c = format!("server version {step} of {p}, {}", "x".repeat(r.below(40)));
            put_nofollow(&full, c.as_bytes());
            theirs.push(c.into_bytes());
        }
        1 => {
            let _ = fs::remove_file(&full);
            deleted.push(p);
        }
        _ => {
            let _ = fs::remove_file(&full);
            let _ = std::os::unix::fs::symlink(format!("{NOWHERE}-server"), &full);
            deleted.push(p);
        }
    }
}

fn local_op(r: &mut Rng, m: &Mount, step: usize, k: Knobs) {
    let p = random_path(r);
    let q = random_path(r);
    let (pp, qp) = (m.path(&p), m.path(&q));
    let ops = if k.no_chmod { 8 } else { 9 };
    let op = r.below(ops);
    let res = match op {
        0 | 1 => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&pp)
            .and_then(|mut f| {
                f.write_all(format!("local {step} {p} {}", "y".repeat(r.below(30))).as_bytes())
            }),
        2 => fs::create_dir(&pp),
        3 | 4 => fs::rename(&pp, &qp),
        // Whether the exchange was possible does not matter: the model reads the tree back.
        5 => {
            let _ = common::renameat2(&pp, &qp, libc::RENAME_EXCHANGE);
            Ok(())
        }
        6 => match fs::symlink_metadata(&pp) {
            Ok(md) if md.is_dir() => fs::remove_dir_all(&pp),
            Ok(_) => fs::remove_file(&pp),
            Err(e) => Err(e),
        },
        7 => std::os::unix::fs::symlink(format!("{NOWHERE}-{step}"), &pp),
        _ => {
            use std::os::unix::fs::PermissionsExt;
            match fs::symlink_metadata(&pp) {
                Ok(md) if md.is_file() => fs::set_permissions(
                    &pp,
                    fs::Permissions::from_mode(0o600 + (step as u32 % 2) * 0o40),
                ),
                _ => Ok(()),
            }
        }
    };
    if std::env::var_os("REDTEAM_TRACE").is_some() {
        eprintln!("step {step}: local op {op} {p} {q}: {res:?}");
    }
}

fn check_random(m: &Mount, seed: u64, theirs: &[Vec<u8>], deleted: &[String]) {
    use common::mirror_tree::tree_filtered;
    let remote = remote_root(m);
    let local = tree_filtered(&m.local, &is_conflict_name);
    let remote_tree = tree_filtered(&remote, &|p| is_conflict_name(p) || p == ROOT_MARKER);
    let mut bad = Vec::new();
    for (k, v) in &local {
        let shown = String::from_utf8_lossy(k).into_owned();
        match remote_tree.get(k) {
            Some(rv) if rv == v => {}
            Some(_) => {
                let servers = fs::read(remote.join(&shown)).is_ok_and(|b| theirs.contains(&b))
                    || fs::read_link(remote.join(&shown)).is_ok_and(|t| {
                        t.as_os_str()
                            .as_bytes()
                            .starts_with(b"no-such-target-server")
                    });
                if !servers {
                    bad.push(format!(
                        "{shown}: local {v}, remote {:?}",
                        remote_tree.get(k)
                    ));
                }
            }
            None if deleted.contains(&shown) => {}
            None => bad.push(format!("{shown}: local {v}, missing on the remote")),
        }
    }
    for (k, v) in &remote_tree {
        let shown = String::from_utf8_lossy(k).into_owned();
        if !local.contains_key(k) {
            let full = remote.join(&shown);
            let servers = fs::read(&full).is_ok_and(|b| theirs.contains(&b))
                || fs::read_link(&full).is_ok_and(|t| t.as_os_str().as_bytes().starts_with(b"no-such-target-server"))
                // A directory kept for the server's entries (or conflict copies) in it.
                || (v.starts_with("dir") && walk(&full).iter().any(|(rel, p, md)| {
                    is_conflict_name(rel) || (md.is_file() && fs::read(p).is_ok_and(|b| theirs.contains(&b)))
                }));
            if !servers {
                bad.push(format!("{shown}: only on the remote ({v})"));
            }
        }
    }
    for (rel, _, _) in walk(&remote) {
        let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(&rel);
        if name
            .windows(b".ftpsync-tmp-".len())
            .any(|w| w == b".ftpsync-tmp-")
        {
            bad.push(format!("temp left: {}", String::from_utf8_lossy(&rel)));
        }
    }
    let everything: Vec<Vec<u8>> = walk(&remote)
        .into_iter()
        .filter(|(_, _, md)| md.is_file())
        .filter_map(|(_, p, _)| fs::read(p).ok())
        .collect();
    for t in theirs {
        if !everything.contains(t) {
            bad.push(format!(
                "server version lost: {:?}",
                String::from_utf8_lossy(t)
            ));
        }
    }
    if !bad.is_empty() && std::env::var_os("REDTEAM_TRACE").is_some() {
        let ls = std::process::Command::new("ls")
            .arg("-laR")
            .arg(&remote)
            .output()
            .expect("ls");
        eprintln!("remote:\n{}", String::from_utf8_lossy(&ls.stdout));
    }
    assert!(
        bad.is_empty(),
        "seed {seed}: {} problems after flush 0:\n{}\nlog:\n{}",
        bad.len(),
        bad.join("\n"),
        m.log_tail()
    );
}

fn random_run(seed: u64, steps: usize, k: Knobs) {
    let mut m = delayed("1");
    let mut r = Rng::new(seed);
    let remote = remote_root(&m);
    let (mut theirs, mut deleted) = (Vec::new(), Vec::new());
    for step in 0..steps {
        match r.below(10) {
            0 | 1 => server_op(&mut r, &remote, step, &mut theirs, &mut deleted, k),
            5 if k.pauses && r.below(2) == 0 => {
                let ms = 700 + r.below(600) as u64;
                if std::env::var_os("REDTEAM_TRACE").is_some() {
                    eprintln!("step {step}: pause {ms} ms");
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
            4 if k.sshd && r.below(3) == 0 => {
                if std::env::var_os("REDTEAM_TRACE").is_some() {
                    eprintln!("step {step}: sshd restart");
                }
                m.sshd.as_mut().expect("sshd").restart();
            }
            3 if k.kill && r.below(3) == 0 => {
                if std::env::var_os("REDTEAM_TRACE").is_some() {
                    eprintln!("step {step}: kill -9, remount");
                }
                m.kill9();
                m.remount();
            }
            2 => {
                if std::env::var_os("REDTEAM_TRACE").is_some() {
                    eprintln!("step {step}: flush");
                }
                let out = m.flush_for(30);
                assert!(
                    out.ok(),
                    "seed {seed} step {step}: flush failed: {}\n{}",
                    out.stderr,
                    m.log_tail()
                );
                check_random(&m, seed, &theirs, &deleted);
            }
            _ => local_op(&mut r, &m, step, k),
        }
    }
    let out = m.flush_for(30);
    assert!(
        out.ok(),
        "seed {seed}: flush failed: {}\n{}",
        out.stderr,
        m.log_tail()
    );
    check_random(&m, seed, &theirs, &deleted);
}

/// Random sequences (60 steps each; REDTEAM_SEEDS=1,2,... picks others). Seed 31 fails today
/// (see chmod_of_a_file_the_server_deleted_sends_it_again); a failure prints the seed and every
/// difference. REDTEAM_NO_CHMOD=1 leaves chmod out, to look past that bug.
#[test]
fn random_sequences_with_server_edits_keep_the_promise() {
    let seeds: Vec<u64> = std::env::var("REDTEAM_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| [31, 1, 2, 3, 4, 5, 6].to_vec());
    for seed in seeds {
        random_run(seed, 60, Knobs::from_env());
    }
}

/// Finding (seed 311, reproduced 4 of 4 runs; not yet shrunk): with kill -9, sshd restarts
/// and files the server creates itself, flush exits 0 and the local file `c` is "confirmed"
/// while the server holds at `c` a symlink that was local `c` long before. The audit log of
/// the last flush: conflict_kept c (the server's own new file), symlink c, ... confirmed c
/// (29 bytes), and a second conflict_kept a.ftpsync-conflict-… that is NOT on the server
/// afterwards, nor is the uploaded `c`: the server ends with `c -> no-such-target-17` (made by
/// ftpsync at the step-54 flush) and the server's `a` symlink. The last steps are: flush;
/// `mv a c` (a file over the confirmed symlink c); the server replaces `a` by a symlink; flush.
/// Not yet root-caused. REDTEAM_TRACE=1 prints the operations and the remote listing.
#[test]
fn random_sequence_seed_311_with_kills_restarts_and_server_files() {
    let k = Knobs {
        no_chmod: true,
        kill: true,
        sshd: true,
        server_new: true,
        pauses: false,
    };
    random_run(311, 60, k);
}

/// Finding (seed 31 of the random test): a local chmod of a confirmed file the server deleted
/// meanwhile: reconcile sees the local hash equal to the manifest's and only sets attributes
/// remotely; that fails with "does not exist" for ever (never an upload), flush times out.
#[test]
fn chmod_of_a_file_the_server_deleted_sends_it_again() {
    use std::os::unix::fs::PermissionsExt;
    let m = plain();
    put_nofollow(&m.path("a"), b"deleted on the server, then chmod locally");
    m.flush();
    fs::remove_file(remote_root(&m).join("a")).expect("server rm");
    fs::set_permissions(m.path("a"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = m.flush_for(20);
    assert!(out.ok(), "flush: {}", out.stderr);
    assert_mirrored(&m);
}

/// Finding: a local chmod of a confirmed file the server edited meanwhile: the same shortcut
/// sets the mode on the server's version and records the path as confirmed with the local
/// hash: flush 0, xattr "confirmed", the server holds the server's bytes.
#[test]
fn chmod_of_a_file_the_server_changed_does_not_confirm_the_servers_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let m = plain();
    put_nofollow(&m.path("a"), b"local a");
    m.flush();
    let theirs = b"the server's a, edited behind ftpsync's back";
    put_nofollow(&remote_root(&m).join("a"), theirs);
    fs::set_permissions(m.path("a"), fs::Permissions::from_mode(0o600)).expect("chmod");
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("a")).expect("remote a"),
        b"local a",
        "xattr says {:?}",
        xattr_state(&m.path("a"))
    );
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

/// Guard: hostile names (newline, invalid UTF-8, quotes, 255 bytes) through the rename replay,
/// an exchange and a conflict on a rename over a server-changed file.
#[test]
fn hostile_names_through_renames_exchanges_and_conflicts() {
    use std::ffi::OsStr;
    let m = plain();
    let long = vec![b'L'; 255];
    let mut names: Vec<&[u8]> = common::HOSTILE_NAMES.to_vec();
    names.push(&long);
    fs::create_dir(m.path("d")).expect("mkdir");
    for (i, n) in names.iter().enumerate() {
        put_nofollow(
            &m.path("d").join(OsStr::from_bytes(n)),
            format!("file {i}").as_bytes(),
        );
    }
    put_nofollow(&m.path("over"), b"local over");
    m.flush();
    // The server changes the 255-byte file; a local file is then renamed over it.
    let theirs = b"the server's long-named file";
    put_nofollow(
        &remote_root(&m).join("d").join(OsStr::from_bytes(&long)),
        theirs,
    );
    fs::rename(m.path("over"), m.path("d").join(OsStr::from_bytes(&long))).expect("mv over");
    common::renameat2(
        &m.path("d").join(OsStr::from_bytes(names[0])),
        &m.path("d").join(OsStr::from_bytes(names[2])),
        libc::RENAME_EXCHANGE,
    )
    .expect("exchange");
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    m.flush();
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

/// Guard (passes today): an attempt at shrinking seed 311 — a file renamed over a confirmed
/// symlink while the server replaces the file's old name by a symlink of its own. The seed's
/// failure needs more of its history (kill -9, sshd restarts).
#[test]
fn rename_over_a_symlink_while_the_server_replaces_the_source() {
    // Long enough that the server's edit below lands before the rename is replayed, even on a
    // loaded machine (a 1 s delay lost that race in CI).
    let m = delayed("4");
    put_nofollow(&m.path("a"), b"local a, renamed over the link");
    std::os::unix::fs::symlink("no-such-target-17", m.path("c")).expect("ln -s");
    let remote = remote_root(&m);
    // The server's own files at both names, before ftpsync sent either.
    put_nofollow(&remote.join("a"), b"server's new file at a");
    put_nofollow(&remote.join("c"), b"server's new file at c");
    m.flush();
    fs::rename(m.path("a"), m.path("c")).expect("mv a c");
    fs::remove_file(remote.join("a")).expect("server rm");
    std::os::unix::fs::symlink("no-such-target-server", remote.join("a")).expect("server ln");
    m.flush();
    let ls = std::process::Command::new("ls")
        .arg("-la")
        .arg(&remote)
        .output()
        .expect("ls");
    let listing = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert_eq!(
        fs::read(remote.join("c")).ok().as_deref(),
        Some(&b"local a, renamed over the link"[..]),
        "xattr of c: {:?}; remote:\n{listing}",
        xattr_state(&m.path("c"))
    );
    assert!(
        fs::read_link(remote.join("a")).is_ok() || listing.contains("a.ftpsync-conflict-"),
        "{listing}"
    );
}

/// Waits (polling: nothing to flush) until the daemon log holds `needle`.
fn wait_log(m: &Mount, needle: &str, secs: u64) {
    assert!(
        log_within(m, needle, secs),
        "no {needle:?} in the log:\n{}",
        m.log_tail()
    );
}

/// Whether the daemon log holds `needle` within `secs`.
fn log_within(m: &Mount, needle: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !m.daemon_log().contains(needle) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Finding: a capability probe's directory the probe could not remove (here: the server put
/// a directory in it mid-probe) is retried by the next probe of the process with `readdir`,
/// which follows a symlink: when the server meanwhile replaced it by a symlink to a directory
/// outside the remote root, every file there is unlinked through it.
#[test]
fn a_probe_directory_left_behind_then_replaced_by_a_symlink_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut m = builder().prepare();
    let root = remote_root(&m);
    let outside = root.parent().expect("chroot").join("victim");
    fs::create_dir(&outside).expect("mkdir victim");
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o777)).expect("chmod victim");
    put_nofollow(&outside.join("keep"), b"outside the remote root");
    // Races the first probes: a directory put in a probe's directory keeps it from going.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for e in fs::read_dir(&root).into_iter().flatten().flatten() {
                    let name = e.file_name();
                    if name.as_bytes().starts_with(b".probe.ftpsync-tmp-")
                        && fs::create_dir(e.path().join("block")).is_ok()
                    {
                        return Some(e.path());
                    }
                }
            }
            None
        })
    };
    m.mount();
    // The poller can lose the race on a loaded machine; each new connection probes again.
    let needle = "cannot remove the probe directory";
    for _ in 0..5 {
        if log_within(&m, needle, 6) || poller.is_finished() {
            break;
        }
        m.sshd.as_mut().expect("sshd").restart();
    }
    wait_log(&m, needle, 30);
    stop.store(true, Ordering::Relaxed);
    let probe_dir = poller.join().expect("poller").expect("a probe directory");
    fs::remove_dir(probe_dir.join("block")).expect("rmdir block");
    fs::remove_dir(&probe_dir).expect("rmdir probe dir");
    std::os::unix::fs::symlink("../victim", &probe_dir).expect("plant symlink");
    // A new connection probes again.
    m.sshd.as_mut().expect("sshd").restart();
    put_nofollow(&m.path("f"), b"after the restart");
    m.flush();
    assert!(
        outside.join("keep").exists(),
        "a file outside the remote root was removed through {}:\n{}",
        probe_dir.display(),
        m.log_tail()
    );
}

/// Finding: a rename is replayed on the server as soon as nothing at or beneath its two paths
/// is in flight, but the removal of an ancestor may be: its job's rmdir then fails (the moved
/// entry is inside) and its Apply::Remove drops the whole subtree from the manifest, with the
/// entry the replay had just recorded there. The server keeps it for ever: a later local
/// delete of it removes nothing, and flush says all is mirrored.
#[test]
fn a_rename_into_a_directory_whose_removal_is_in_flight_stays_known() {
    let m = delayed("5");
    fs::create_dir(m.path("x")).expect("mkdir x");
    const N: usize = 2000;
    for i in 0..N {
        put_nofollow(&m.path(format!("x/f{i}")), b"one of many");
    }
    put_nofollow(&m.path("a"), b"moved into the new x");
    m.flush();
    fs::remove_dir_all(m.path("x")).expect("rm -r x");
    // A flush makes all due at once: x's job removes the lot, the files' wait for it.
    let state = m.state.clone();
    let flushing = std::thread::spawn(move || {
        common::ftpsync([
            std::ffi::OsString::from("flush"),
            state.into_os_string(),
            "--timeout".into(),
            "60".into(),
        ])
    });
    let remote_x = remote_root(&m).join("x");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_dir(&remote_x).map_or(0, |d| d.count()) >= N {
        assert!(Instant::now() < deadline, "x's removal never began");
        std::thread::sleep(Duration::from_millis(5));
    }
    fs::create_dir(m.path("x")).expect("mkdir x again");
    fs::rename(m.path("a"), m.path("x/y")).expect("mv a x/y");
    flushing.join().expect("flush thread").assert_ok();
    m.flush();
    fs::remove_file(m.path("x/y")).expect("rm x/y");
    m.flush();
    assert_mirrored(&m);
}

/// The remote files and symlinks whose name is an upload temp's (not a capability probe's
/// directory, there only while a connection is made). Entries that vanish while it looks
/// (the engine is running) are skipped.
fn remote_temps(m: &Mount) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![remote_root(m)];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let name = e.file_name();
            if kind.is_dir() {
                dirs.push(e.path());
            } else if name.as_bytes().starts_with(b".")
                && name.as_bytes().windows(13).any(|w| w == b".ftpsync-tmp-")
            {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Finding: the temp sweep takes all directories at once and gives up on all of them at the
/// first that cannot be listed (one the server made unreadable, or turned into a file): the
/// temp file an upload cut by a lost connection left in another directory stays on the server,
/// and flush returns 0.
#[test]
fn one_unlistable_directory_does_not_keep_the_temp_sweep_from_the_others() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = slow();
    for d in ["a_locked", "b"] {
        fs::create_dir(m.path(d)).expect("mkdir");
    }
    m.flush();
    let locked = remote_root(&m).join("a_locked");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod 000");
    put_nofollow(&m.path("a_locked/f"), b"refused by the server");
    put_nofollow(&m.path("b/big"), &common::pattern(7, 64 << 20));
    // The connection dies while b/big is being sent (its temp file is there), once
    // a_locked/f has failed.
    wait_for_upload(&m, Duration::from_secs(60), |m| {
        m.daemon_log().contains("a_locked/f:")
    });
    m.sshd.as_mut().expect("sshd").stop();
    assert!(
        !remote_temps(&m).is_empty(),
        "b/big was sent before the server died"
    );
    // Its retry would clear its own temp files: only the sweep is left to.
    fs::remove_file(m.path("b/big")).expect("rm b/big");
    m.sshd.as_mut().expect("sshd").restart();
    // a_locked/f fails again; the sweep meets a_locked unreadable.
    let _ = m.flush_for(60);
    wait_log(&m, "leftover temporary files not swept", 60);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    m.flush();
    assert_eq!(remote_temps(&m), Vec::<std::path::PathBuf>::new());
    assert_mirrored(&m);
}

/// Finding: the start-up sweep takes any temp-named directory it meets, in any mirrored
/// directory, for a capability probe's and deletes the files in it, though only the root ever
/// holds probe directories (`.probe.ftpsync-tmp-<hex>`): a directory of the server's whose name
/// merely looks like a temp loses its files at the next mount.
#[test]
fn the_start_up_sweep_takes_only_probe_directories_at_the_root() {
    let mut m = plain();
    fs::create_dir(m.path("sub")).expect("mkdir sub");
    put_nofollow(&m.path("sub/f"), b"mirrored");
    m.flush();
    let theirs = remote_root(&m).join("sub/.album.ftpsync-tmp-0123456789abcdef");
    fs::create_dir(&theirs).expect("server mkdir");
    // Writable by the server's account, as one of its own would be.
    fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    put_nofollow(&theirs.join("photo"), b"the server's only copy");
    m.unmount();
    m.mount();
    m.flush();
    assert!(
        theirs.join("photo").exists(),
        "the server's file was swept:\n{}",
        m.log_tail()
    );
}

/// Finding: a symlink is made under a temp name and renamed into place; when the connection
/// dies between the two, the temp symlink stays. Neither sweep takes it (both remove temp
/// *files* only): it is on the server for good after flush returned 0, and after a remount.
#[test]
fn a_temp_symlink_left_by_a_lost_connection_is_swept() {
    let mut m = delayed("0");
    fs::create_dir(m.path("links")).expect("mkdir");
    m.flush();
    let remote_links = remote_root(&m).join("links");
    let temp_links = |m: &Mount| -> Vec<std::path::PathBuf> {
        remote_temps(m)
            .into_iter()
            .filter(|p| p.symlink_metadata().is_ok_and(|s| s.is_symlink()))
            .collect()
    };
    let mut left = Vec::new();
    for round in 0..8 {
        for i in 0..400 {
            std::os::unix::fs::symlink(
                format!("target-{i}"),
                m.path(format!("links/l{round}-{i}")),
            )
            .expect("ln -s");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while fs::read_dir(&remote_links).map_or(0, |d| d.count()) < 20 {
            assert!(
                Instant::now() < deadline,
                "no symlink made:\n{}",
                m.log_tail()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        m.sshd.as_mut().expect("sshd").stop();
        left = temp_links(&m);
        m.sshd.as_mut().expect("sshd").restart();
        m.flush();
        if !left.is_empty() {
            break;
        }
    }
    assert!(
        !left.is_empty(),
        "the connection never died between symlink and rename"
    );
    assert_eq!(
        temp_links(&m),
        Vec::<std::path::PathBuf>::new(),
        "after a flush"
    );
    m.unmount();
    m.mount();
    m.flush();
    assert_eq!(
        temp_links(&m),
        Vec::<std::path::PathBuf>::new(),
        "after a remount"
    );
    assert_mirrored(&m);
}

/// Uploads at 16 MiB/s, at once.
fn slow() -> Mount {
    builder()
        .arg("--writeback-delay")
        .arg("0")
        .arg("--bwlimit")
        .arg("16M")
        .mount()
}

/// Leaves a temp file of `rel` (a 64 MiB upload, at `slow`'s rate, cut by the server's death) in the remote
/// copy of its directory, then deletes `rel` locally so that no retry of its own clears it;
/// the server is back up on return.
fn cut_upload_then_delete(m: &mut Mount, rel: &str) {
    put_nofollow(&m.path(rel), &common::pattern(11, 64 << 20));
    wait_for_upload(m, Duration::from_secs(60), |_| true);
    m.sshd.as_mut().expect("sshd").stop();
    assert!(
        !remote_temps(m).is_empty(),
        "the upload ended before the server died"
    );
    fs::remove_file(m.path(rel)).expect("rm");
}

/// Finding: a directory removed locally whose remote copy holds a temp file an upload cut by
/// a lost connection left stays on the server (its rmdir fails, "it holds files ftpsync did
/// not put there") though the manifest forgets it; the sweep then takes the temp file, and
/// flush returns 0 with the empty directory left on the server for good.
#[test]
fn a_directory_holding_only_a_cut_uploads_temp_file_is_removed_with_the_local_one() {
    let mut m = slow();
    fs::create_dir(m.path("b")).expect("mkdir");
    m.flush();
    cut_upload_then_delete(&mut m, "b/big");
    fs::remove_dir(m.path("b")).expect("rmdir");
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_mirrored(&m);
}

/// Finding (variant): the same directory, when a rename takes its name, is kept aside as the
/// server's conflict copy, holding nothing but ftpsync's own temp file (never swept there).
#[test]
fn a_directory_holding_only_a_cut_uploads_temp_file_is_not_kept_as_a_conflict() {
    let mut m = slow();
    fs::create_dir(m.path("a")).expect("mkdir");
    fs::create_dir(m.path("b")).expect("mkdir");
    put_nofollow(&m.path("a/x"), b"moves over b");
    m.flush();
    cut_upload_then_delete(&mut m, "b/big");
    fs::rename(m.path("a"), m.path("b")).expect("mv a b");
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_mirrored(&m);
}

/// A slow mount whose 128 MiB upload of d/big (of pattern `seed`) has begun on the server.
fn long_upload_under_way(seed: u64) -> Mount {
    let m = slow();
    fs::create_dir(m.path("d")).expect("mkdir");
    m.flush();
    put_nofollow(&m.path("d/big"), &common::pattern(seed, 128 << 20));
    wait_for_upload(&m, Duration::from_secs(30), |_| true);
    m
}

/// Waits until an upload's temp file is on the server and `also` holds.
fn wait_for_upload(m: &Mount, within: Duration, also: impl Fn(&Mount) -> bool) {
    let deadline = Instant::now() + within;
    while remote_temps(m).is_empty() || !also(m) {
        assert!(
            Instant::now() < deadline,
            "no upload seen:\n{}",
            m.log_tail()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls until `path` exists on the server's disk, or `within` passed.
fn arrives_within(path: &std::path::Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finding (not fixed: the hold is what keeps a stream of uploads from starving their
/// directory; telling a harmless directory job from a removal at dispatch time is the fix):
/// a chmod of a directory while a long upload beneath it runs holds back every later change
/// beneath it, however small, until that upload ends; of the mount root, every change
/// anywhere. Here a 4-byte file waits out a 128 MiB upload at 16 MiB/s.
#[test]
#[ignore = "starvation by design of Plan::take_due's hold; see the comment"]
fn a_chmod_of_a_directory_does_not_hold_small_files_behind_a_long_upload_beneath_it() {
    use std::os::unix::fs::PermissionsExt;
    let m = long_upload_under_way(3);
    fs::set_permissions(m.path("d"), fs::Permissions::from_mode(0o750)).expect("chmod d");
    put_nofollow(&m.path("d/small"), b"tiny");
    let small = remote_root(&m).join("d/small");
    arrives_within(&small, Duration::from_secs(3));
    let big_done = remote_root(&m).join("d/big").exists();
    assert!(
        small.exists() || big_done,
        "d/small still waits behind d/big 3 s after it was written"
    );
    m.flush();
}

/// Finding: renaming a directory while a long upload beneath it runs stopped the whole mirror
/// until that upload ended: the planner waits in `replay_rename` for the upload, taking in
/// and dispatching nothing meanwhile. Here a 4-byte file elsewhere waited out a 128 MiB upload
/// at 16 MiB/s.
#[test]
fn renaming_a_directory_during_a_long_upload_beneath_it_does_not_stop_the_mirror() {
    let m = long_upload_under_way(5);
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    put_nofollow(&m.path("elsewhere"), b"tiny");
    let small = remote_root(&m).join("elsewhere");
    arrives_within(&small, Duration::from_secs(3));
    let big_done = !remote_root(&m).join("d").exists();
    assert!(
        small.exists() || big_done,
        "`elsewhere` still waits 3 s after it was written, behind d/big's upload"
    );
    m.flush();
    assert_mirrored(&m);
}
