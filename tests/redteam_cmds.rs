//! Red team for the commands wing (status, verify, verify --repair, unmount, restore) and the
//! one display form of paths (`relpath::show`): hostile names through every command, and
//! server-side damage under `verify --repair`, on a real FUSE mount against a real loopback
//! sshd. Each test asserts the correct behaviour.
//!
//! Safety: no test here writes through a symlink: every file written is opened with
//! O_NOFOLLOW, and the symlinks planted on the server point at `..` or /etc only to check
//! that nothing is written through them (the parent of the remote root is compared before
//! and after).

mod common;

use common::mirror_tree::{assert_mirrored, assert_mirrored_except, is_conflict_name, remote_root};
use common::{ftpsync, put_nofollow, CmdOut, Mount};
use ftpsync::relpath::show;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The least-privilege server (exec refused, verification by read-back), as in redteam.rs.
fn builder() -> common::MountBuilder {
    Mount::builder().chroot()
}

fn cmd(args: &[&OsStr]) -> CmdOut {
    ftpsync(
        args.iter()
            .map(|a| a.to_os_string())
            .collect::<Vec<OsString>>(),
    )
}

fn verify(m: &Mount, extra: &[&str]) -> CmdOut {
    let mut args: Vec<&OsStr> = vec![OsStr::new("verify"), m.state.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    cmd(&args)
}

fn name(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Names each command must show exactly: two that differ only in invalid UTF-8 bytes (their
/// lossy forms are the same), and one that would forge a line of output if not escaped.
const LOOKALIKES: &[&[u8]] = &[b"\xff", b"\xfe", b"x\n  forged"];

/// Finding: `ftpsync status` (the human view) prints the hashes' names from the lossy UTF-8
/// text, not `relpath::show`: two files whose names differ only in invalid bytes both show as
/// U+FFFD, the same line: the one display form (`\xff`, exact) is not used.
#[test]
fn status_shows_names_that_are_not_utf8_exactly() {
    let m = builder().mount();
    for n in LOOKALIKES {
        put_nofollow(&m.path(name(n)), b"same");
    }
    m.flush();
    let out = cmd(&[OsStr::new("status"), m.state.as_os_str()]);
    out.assert_ok();
    for want in ["\\xff", "\\xfe", "x\\n  forged"] {
        assert!(
            out.stdout.contains(want),
            "status does not show {want:?} (relpath::show form):\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains('\u{fffd}'),
        "status shows a replacement character for a name:\n{}",
        out.stdout
    );
}

/// Finding: `ftpsync unmount` with changes left lists them from the lossy UTF-8 text,
/// deduplicated on it: two files whose names differ only in invalid bytes count as one path
/// ("1 path is not on the server yet" for two), and a newline in a name is printed raw, so a
/// name can forge lines of the list.
#[test]
fn unmount_counts_and_names_every_path_left_exactly() {
    let mut m = builder().arg("--drain-timeout").arg("1").mount();
    m.sshd.as_mut().expect("sshd").stop();
    for n in LOOKALIKES {
        put_nofollow(&m.path(name(n)), b"never reaches the server");
    }
    let out = cmd(&[
        OsStr::new("unmount"),
        m.state.as_os_str(),
        OsStr::new("--timeout"),
        OsStr::new("2"),
    ]);
    m.forget_unmounted();
    assert!(!out.ok(), "unmount with the server gone exited 0:\n{out:?}");
    assert!(
        out.stderr.contains("3 paths are not on the server yet"),
        "unmount miscounts what is left:\n{}",
        out.stderr
    );
    for want in ["  \\xff\n", "  \\xfe\n", "  x\\n  forged\n"] {
        assert!(
            out.stderr.contains(want),
            "unmount does not name {want:?} in the one display form:\n{}",
            out.stderr
        );
    }
}

/// Hostile names through verify, verify --json and restore: each found, each exact.
#[test]
fn verify_and_restore_round_trip_hostile_names() {
    let m = builder().mount();
    let long = vec![b'L'; 255];
    let mut names: Vec<&[u8]> = common::HOSTILE_NAMES.to_vec();
    names.extend([
        &long[..],
        b"...",
        b"..\n",
        b"-",
        b"--help",
        b"\xff",
        b"\xfe",
    ]);
    fs::create_dir(m.path("d")).expect("mkdir");
    for (i, n) in names.iter().enumerate() {
        put_nofollow(
            &m.path("d").join(name(n)),
            format!("file {i:04}").as_bytes(),
        );
    }
    m.flush();
    let out = verify(&m, &["--json"]);
    out.assert_ok();
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("verify --json");
    assert_eq!(doc["equal"], true, "{doc}");
    // Same size, other bytes, on the server: each must be found, by its exact name.
    let remote = remote_root(&m);
    for (i, n) in names.iter().enumerate() {
        put_nofollow(
            &remote.join("d").join(name(n)),
            format!("FILE {i:04}").as_bytes(),
        );
    }
    let out = verify(&m, &["--json"]);
    assert!(!out.ok());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("verify --json");
    let mut found: Vec<Vec<u8>> = doc["different"]
        .as_array()
        .expect("different")
        .iter()
        .map(|d| hex::decode(d["path_hex"].as_str().expect("path_hex")).expect("hex"))
        .collect();
    found.sort();
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| [b"d/", *n].concat()).collect();
    want.sort();
    assert_eq!(found, want, "verify --json: {doc}");
    let out = verify(&m, &[]);
    for n in &names {
        let line = format!("differs   {}: ", show(&[b"d/", *n].concat()));
        assert!(
            out.stdout.contains(&line),
            "no {line:?} in:\n{}",
            out.stdout
        );
    }
    let out = verify(&m, &["--repair"]);
    assert!(!out.ok());
    m.flush();
    verify(&m, &[]).assert_ok();
    assert_mirrored(&m);
    // Restore into an empty directory: every name back, byte for byte.
    let target = m.root.join("restored");
    fs::create_dir(&target).expect("mkdir target");
    let out = cmd(&[
        OsStr::new("restore"),
        OsStr::new("--state-dir"),
        m.state.as_os_str(),
        OsStr::new("--known-hosts"),
        m.sshd.as_ref().expect("sshd").known_hosts().as_os_str(),
        OsStr::new("--identity"),
        m.sshd.as_ref().expect("sshd").identity().as_os_str(),
        OsStr::new(&m.sshd.as_ref().expect("sshd").remote_url()),
        target.as_os_str(),
    ]);
    out.assert_ok();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            fs::read(target.join("d").join(name(n))).expect("restored"),
            format!("file {i:04}").as_bytes()
        );
    }
}

/// Gives `p` to the account the server runs as (the remote root's owner), as if it had made it.
fn server_owns(m: &Mount, p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::metadata(remote_root(m)).expect("stat remote root");
    std::os::unix::fs::lchown(p, Some(md.uid()), Some(md.gid()))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", p.display()));
}

/// Every entry beside the remote root (its parent), by name and kind: a write through a
/// planted symlink to `..` would show here.
fn beside_root(m: &Mount) -> Vec<(Vec<u8>, bool)> {
    let parent = remote_root(m).parent().expect("parent").to_path_buf();
    let mut v: Vec<(Vec<u8>, bool)> = fs::read_dir(&parent)
        .expect("read parent")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().as_bytes().to_vec(),
                e.file_type().expect("type").is_dir(),
            )
        })
        .collect();
    v.sort();
    v
}

/// verify --repair with the server's tree damaged: a file made a directory, a directory made
/// a file, a directory made a symlink to `..`, a file made a symlink to /etc/passwd. After
/// repair and flush the server equals the local tree and nothing was written beside the root.
#[test]
fn repair_mends_kinds_the_server_changed_without_writing_through_planted_links() {
    repair_mends_kinds(builder().mount());
}

/// The same against gesftpserver (the protocol draft's symlink order), verifying by read-back.
#[test]
fn repair_mends_kinds_the_server_changed_on_gesftpserver() {
    repair_mends_kinds(
        Mount::builder()
            .flavor(common::sshd::Flavor::Gesftp)
            .arg("--verify")
            .arg("readback")
            .mount(),
    );
}

fn repair_mends_kinds(m: Mount) {
    put_nofollow(&m.path("f1"), b"local f1");
    put_nofollow(&m.path("f2"), b"local f2");
    for d in ["d1", "d2"] {
        fs::create_dir(m.path(d)).expect("mkdir");
        put_nofollow(
            &m.path(format!("{d}/inner")),
            format!("local {d}/inner").as_bytes(),
        );
    }
    m.flush();
    let remote = remote_root(&m);
    let before = beside_root(&m);
    fs::remove_file(remote.join("f1")).expect("server rm f1");
    fs::create_dir(remote.join("f1")).expect("server mkdir f1");
    put_nofollow(
        &remote.join("f1/theirs"),
        b"the server's file in a dir where f1 was",
    );
    fs::remove_dir_all(remote.join("d1")).expect("server rm -r d1");
    put_nofollow(&remote.join("d1"), b"the server's file where d1 was");
    fs::remove_dir_all(remote.join("d2")).expect("server rm -r d2");
    std::os::unix::fs::symlink("..", remote.join("d2")).expect("server ln -s .. d2");
    fs::remove_file(remote.join("f2")).expect("server rm f2");
    std::os::unix::fs::symlink("/etc/passwd", remote.join("f2")).expect("server ln -s");
    // What the server's user made: theirs to remove.
    for p in ["f1", "f1/theirs", "d1", "d2", "f2"] {
        server_owns(&m, &remote.join(p));
    }
    let out = verify(&m, &["--repair"]);
    assert!(!out.ok(), "verify saw no damage:\n{out:?}");
    assert!(
        out.stderr.contains("repair:"),
        "the repair did not run:\n{out:?}"
    );
    m.flush();
    assert_eq!(
        beside_root(&m),
        before,
        "something was written beside the root"
    );
    let out = verify(&m, &[]);
    assert!(
        out.ok(),
        "verify after repair and flush:\n{out:?}\n{}",
        m.log_tail()
    );
    assert_mirrored_except(&m, &is_conflict_name);
}

/// A directory removed locally while the server had changed a file in it: the engine keeps
/// the server's version as a conflict copy, so the directory stays on the server holding it.
fn directory_kept_for_a_conflict_copy(m: &Mount) -> Vec<u8> {
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/f"), b"local d/f");
    put_nofollow(&m.path("d/g"), b"local d/g");
    m.flush();
    let theirs = b"the server's d/f, edited behind ftpsync's back".to_vec();
    put_nofollow(&remote_root(m).join("d/f"), &theirs);
    fs::remove_dir_all(m.path("d")).expect("rm -r d");
    m.flush();
    assert_eq!(
        common::mirror_tree::copies_holding(&remote_root(m), &theirs).len(),
        1,
        "the server's version was lost"
    );
    theirs
}

/// Finding: after that everyday sequence (the server edits d/f, the user removes d), flush
/// exits 0 but `verify` exits 1 for ever, reporting `extra d`: the directory holds only the
/// conflict copy ftpsync kept, which verify otherwise says does not count.
#[test]
fn verify_does_not_count_a_directory_kept_only_for_a_conflict_copy() {
    let m = builder().mount();
    directory_kept_for_a_conflict_copy(&m);
    let out = verify(&m, &[]);
    assert!(
        out.ok(),
        "verify counts the directory holding a kept conflict copy as a difference:\n{out:?}"
    );
}

/// Finding: `verify --repair` meeting that directory tries to rmdir it (the conflict copy is
/// not in its listing of what to remove), fails on "not empty", and gives up before asking
/// the daemon for anything: another difference found in the same run is never repaired.
#[test]
fn repair_is_not_stopped_by_a_directory_holding_a_conflict_copy() {
    let m = builder().mount();
    let theirs = directory_kept_for_a_conflict_copy(&m);
    put_nofollow(&m.path("other"), b"local other");
    m.flush();
    put_nofollow(&remote_root(&m).join("other"), b"LOCAL OTHER");
    let out = verify(&m, &["--repair"]);
    assert!(
        out.stderr.contains("repair:"),
        "verify --repair gave up:\n{out:?}"
    );
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("other")).expect("remote other"),
        b"local other",
        "the repair never sent `other`"
    );
    assert_eq!(
        common::mirror_tree::copies_holding(&remote_root(&m), &theirs).len(),
        1,
        "the repair lost the server's version"
    );
}

/// Finding: the one tree walker (local::walk) keeps a descriptor open for every directory it
/// has found and not listed yet: a directory with more subdirectories than the open-file
/// limit (1024 is the usual soft limit of a login session) fails `ftpsync verify` with "Too
/// many open files". Only `mount` raises the limit; the walk needs at most one descriptor per
/// level of depth.
#[test]
fn verify_walks_a_directory_wider_than_the_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let m = builder().mount();
    fs::create_dir(m.path("wide")).expect("mkdir");
    for i in 0..1100 {
        fs::create_dir(m.path(format!("wide/{i:04}"))).expect("mkdir");
    }
    m.flush();
    let mut c = std::process::Command::new(common::BIN);
    c.arg("verify").arg(&m.state);
    // SAFETY: setrlimit between fork and exec, async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = common::run_with_timeout(c, common::CMD_WAIT);
    assert!(out.ok(), "verify under a 1024 open-file limit:\n{out:?}");
}

/// Finding: `verify --repair` with no daemon running (it needs one to resend) first removes
/// from the server whatever it finds extra or in the way, and only then fails for want of the
/// daemon: half a repair, the removals audited, nothing sent. It must fail before touching
/// anything.
#[test]
fn repair_without_a_daemon_fails_before_removing_anything() {
    let mut m = builder().mount();
    put_nofollow(&m.path("kept"), b"local kept");
    m.flush();
    m.unmount();
    put_nofollow(&remote_root(&m).join("extra"), b"the server's own file");
    let out = verify(&m, &["--repair"]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains("mount running"),
        "no word of the missing daemon: {out:?}"
    );
    assert!(
        remote_root(&m).join("extra").exists(),
        "verify --repair removed `extra` though it could not repair: {out:?}"
    );
}

/// A repair's doubt follows a rename made before the daemon resent the path, across a kill -9:
/// the damaged file the server carried to the new name is sent again.
#[test]
fn a_repair_follows_a_rename_made_before_the_resend_and_survives_a_kill() {
    let mut m = builder().arg("--writeback-delay").arg("3").mount();
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/f"), b"local d/f");
    put_nofollow(&m.path("d/g"), b"local d/g");
    m.flush();
    put_nofollow(&remote_root(&m).join("d/f"), b"LOCAL D/F");
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(remote_root(&m).join("d/f"))
        .and_then(|f| f.set_modified(past))
        .expect("remote mtime");
    let out = verify(&m, &["--repair"]);
    assert!(out.stderr.contains("repair:"), "{out:?}");
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    m.kill9();
    m.remount();
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("e/f")).expect("remote e/f"),
        b"local d/f",
        "the damaged copy stands at the new name:\n{}",
        m.log_tail()
    );
    assert_mirrored(&m);
    verify(&m, &[]).assert_ok();
}

/// The same for files renamed themselves: a damaged file moved away, and a file moved over a
/// damaged one, right after `verify --repair`: no conflict copy of what the repair replaces.
#[test]
fn a_repair_follows_files_renamed_before_the_resend() {
    let m = builder().arg("--writeback-delay").arg("3").mount();
    for n in ["f", "t", "x"] {
        put_nofollow(&m.path(n), format!("local {n}").as_bytes());
    }
    m.flush();
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for n in ["f", "t"] {
        let p = remote_root(&m).join(n);
        put_nofollow(&p, format!("LOCAL {}", n.to_uppercase()).as_bytes());
        fs::File::options()
            .write(true)
            .open(&p)
            .and_then(|f| f.set_modified(past))
            .expect("remote mtime");
    }
    let out = verify(&m, &["--repair"]);
    assert!(out.stderr.contains("repair:"), "{out:?}");
    fs::rename(m.path("f"), m.path("g")).expect("mv f g");
    fs::rename(m.path("x"), m.path("t")).expect("mv x t");
    m.flush();
    assert_mirrored(&m);
    verify(&m, &[]).assert_ok();
}

/// Finding: verify leaves out every remote entry whose name holds `.ftpsync-conflict-`, even
/// one that is the user's own mirrored file (a name anyone may choose, or a conflict copy
/// restored and mirrored again): the file and a directory of that name show as `missing` for
/// ever, and --repair resends them to no effect.
#[test]
fn verify_compares_a_users_own_file_named_like_a_conflict_copy() {
    let m = builder().mount();
    put_nofollow(
        &m.path("notes.ftpsync-conflict-mine"),
        b"the user's own file",
    );
    fs::create_dir(m.path("old.ftpsync-conflict-20260101T000000Z-0badf00d")).expect("mkdir");
    put_nofollow(
        &m.path("old.ftpsync-conflict-20260101T000000Z-0badf00d/inner"),
        b"inside",
    );
    m.flush();
    assert_mirrored(&m);
    let out = verify(&m, &[]);
    assert!(out.ok(), "{out:?}");
}

/// A state dir whose control socket path is longer than a socket address holds (107 bytes):
/// every command that talks to the daemon still reaches it.
#[test]
fn every_command_reaches_a_daemon_whose_state_dir_path_is_long() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = builder().prepare();
    let long = m
        .root
        .join(format!("{}/{}", "s".repeat(100), "t".repeat(60)));
    fs::create_dir_all(&long).expect("mkdir long state dir");
    fs::set_permissions(&long, fs::Permissions::from_mode(0o700)).expect("chmod");
    m.state = long;
    m.mount();
    put_nofollow(&m.path("f\nnewline"), b"through a long socket path");
    m.flush();
    let st = common::status_json(&m.state);
    assert_eq!(st["daemon"]["running"], true, "{st}");
    assert!(!st["mirror"].is_null(), "{st}");
    verify(&m, &[]).assert_ok();
    put_nofollow(&remote_root(&m).join("extra"), b"x");
    let out = verify(&m, &["--repair"]);
    assert!(out.stderr.contains("repair:"), "{out:?}");
    m.flush();
    verify(&m, &[]).assert_ok();
    let out = cmd(&[OsStr::new("unmount"), m.state.as_os_str()]);
    out.assert_ok();
    m.forget_unmounted();
}

/// A local directory and mountpoint whose paths hold a newline and bytes that are not UTF-8:
/// mount, flush, status, verify and unmount all work, and name them exactly.
#[test]
fn a_local_dir_and_mountpoint_with_hostile_paths() {
    use std::os::unix::fs::PermissionsExt;
    let mut m = builder().prepare();
    m.local = m.root.join(name(b"loc\xffal\ndir"));
    m.mnt = m.root.join(name(b"mnt \xfe\"point\""));
    for d in [&m.local, &m.mnt] {
        fs::create_dir(d).expect("mkdir");
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    m.mount();
    put_nofollow(&m.path("f"), b"under a hostile path");
    m.flush();
    assert_mirrored(&m);
    let st = common::status_json(&m.state);
    assert_eq!(st["daemon"]["running"], true, "{st}");
    let out = cmd(&[OsStr::new("status"), m.state.as_os_str()]);
    out.assert_ok();
    verify(&m, &[]).assert_ok();
    let out = cmd(&[OsStr::new("unmount"), m.mnt.as_os_str()]);
    out.assert_ok();
    m.forget_unmounted();
    assert_eq!(
        fs::read(m.local.join("f")).expect("local f"),
        b"under a hostile path"
    );
}

/// A mirrored file replaced by a FIFO (not mirrored): the server's old file must go, as it
/// would for a deleted file; verify must not report it extra for ever.
#[test]
fn a_file_replaced_by_a_fifo_leaves_nothing_on_the_server() {
    let m = builder().mount();
    put_nofollow(&m.path("f"), b"a file, then a fifo");
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/g"), b"beneath a directory, then a fifo");
    m.flush();
    fs::remove_file(m.path("f")).expect("rm f");
    fs::remove_dir_all(m.path("d")).expect("rm -r d");
    for p in ["f", "d"] {
        let c = std::ffi::CString::new(m.path(p).as_os_str().as_bytes()).expect("path");
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {p}");
    }
    m.flush();
    assert!(
        !remote_root(&m).join("f").exists() && !remote_root(&m).join("d").exists(),
        "the server keeps what the FIFOs replaced:\n{}",
        m.log_tail()
    );
    let out = verify(&m, &[]);
    assert!(out.ok(), "{out:?}");
}

/// Finding: on a server without symlinks (rclone: a symlink NAME is kept as the file
/// NAME.rclonelink), a user's own file named `NAME.rclonelink` is uploaded as it is and then
/// reads back as the symlink NAME: beside a local symlink NAME the two overwrite each other
/// (the link file kept aside as a false conflict copy) and flush exits 0 calling both
/// confirmed; alone, verify (and restore) see a symlink where the file is. Such a file must be
/// refused (flush 1 naming it), the symlink kept.
#[test]
fn a_users_file_named_like_a_link_file_is_refused_on_a_server_without_symlinks() {
    let m = Mount::builder()
        .flavor(common::sshd::Flavor::Rclone)
        .arg("--verify")
        .arg("readback")
        .mount();
    std::os::unix::fs::symlink("target-x", m.path("n")).expect("ln -s");
    put_nofollow(&m.path("n.rclonelink"), b"the user's own notes, not a link");
    put_nofollow(
        &m.path("alone.rclonelink"),
        b"the user's own file, no link beside",
    );
    let out = m.flush_for(20);
    assert!(
        !out.ok(),
        "flush exit 0 while the server holds {:?} at n.rclonelink:\n{}",
        fs::read(remote_root(&m).join("n.rclonelink"))
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        m.log_tail()
    );
    for n in ["n.rclonelink", "alone.rclonelink"] {
        assert!(out.stderr.contains(n), "flush does not name {n}: {out:?}");
    }
    assert_eq!(
        fs::read(remote_root(&m).join("n.rclonelink"))
            .ok()
            .as_deref(),
        Some(&b"target-x"[..]),
        "the symlink n is not on the server: {out:?}\n{}",
        m.log_tail()
    );
    assert!(!remote_root(&m).join("alone.rclonelink").exists());
}

/// Finding: after `verify --repair` found the server's copy of a file wrong, `status --json`
/// goes on listing its hash as `confirmed: true` (from the manifest, whose doubt it ignores)
/// for as long as the resend cannot happen: here the server refuses writes.
#[test]
fn status_does_not_call_confirmed_what_a_repair_found_wrong() {
    use std::os::unix::fs::PermissionsExt;
    let m = builder().mount();
    put_nofollow(&m.path("f"), b"local f");
    m.flush();
    let remote = remote_root(&m);
    put_nofollow(&remote.join("f"), b"LOCAL F");
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(remote.join("f"))
        .and_then(|f| f.set_modified(past))
        .expect("remote mtime");
    fs::set_permissions(&remote, fs::Permissions::from_mode(0o555)).expect("chmod");
    let out = verify(&m, &["--repair"]);
    assert!(out.stderr.contains("repair:"), "{out:?}");
    let _ = m.flush_for(3);
    let xattr = |name: &str| common::sys::getxattr(&m.path("f"), name);
    let (state, sha256) = (xattr("user.ftpsync.state"), xattr("user.ftpsync.sha256"));
    let st = common::status_json(&m.state);
    let f = st["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .find(|h| common::entry_path(h) == b"f")
        .cloned()
        .expect("f in hashes");
    fs::set_permissions(&remote, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(f["confirmed"], false, "{st}");
    assert_ne!(
        state.as_deref(),
        Ok(&b"confirmed"[..]),
        "user.ftpsync.state"
    );
    assert!(
        sha256.is_err(),
        "user.ftpsync.sha256 vouches for {sha256:?}"
    );
    m.flush();
    assert_eq!(
        xattr("user.ftpsync.state").as_deref(),
        Ok(&b"confirmed"[..])
    );
    let want = common::sha256_hex(b"local f");
    assert_eq!(xattr("user.ftpsync.sha256"), Ok(want.into_bytes()));
    let st = common::status_json(&m.state);
    assert!(st["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .any(|h| common::entry_path(h) == b"f" && h["confirmed"] == true));
}
