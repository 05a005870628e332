//! Restores over the in-memory server: byte-exact results, re-runs, damage on the server,
//! hostile names and local symlinks, the target's marker and the setuid rule.

use super::*;
use crate::journal::Timestamp;
use crate::mirror::FileMeta;
use crate::remote::{ErrorKind, MockNode, MockOp, MockTransport};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn file(data: &[u8], mode: u32, mtime: i64) -> MockNode {
    MockNode::File {
        data: data.to_vec(),
        mode,
        atime: mtime,
        mtime,
    }
}

fn dir(mode: u32) -> MockNode {
    MockNode::Dir {
        mode,
        atime: 7,
        mtime: 1_000_000,
    }
}

fn link(t: &[u8]) -> MockNode {
    MockNode::Symlink { target: t.to_vec() }
}

fn tree() -> MockTransport {
    let m = MockTransport::new();
    m.insert(b"d", dir(0o555));
    m.insert(b"d/a\nb \"q\" \xff", file(b"hostile", 0o640, 1_600_000_001));
    m.insert(b"d/e", dir(0o700));
    m.insert(b"d/e/big", file(&vec![7u8; 3 << 20], 0o600, 1_600_000_002));
    m.insert(b"top", file(b"", 0o444, 1_600_000_003));
    m.insert(b"etc", link(b"/etc/passwd"));
    m.insert(b"d/up", link(b".."));
    m.insert(
        b".x.ftpsync-tmp-0123456789abcdef",
        file(b"partial", 0o600, 5),
    );
    m
}

fn connector(m: &MockTransport) -> impl Fn() -> remote::Result<Box<dyn Transport>> + Sync + '_ {
    move || Ok(Box::new(m.clone()) as Box<dyn Transport>)
}

fn run_over(m: &MockTransport, dir: &Path, expected: Option<&Expected>) -> Summary {
    let root = local::open_root(dir).unwrap();
    let connect = connector(m);
    let first = connect().unwrap();
    restore(root.as_fd(), expected, first, &connect, 3)
}

fn downloads(m: &MockTransport) -> usize {
    m.ops()
        .iter()
        .filter(|o| matches!(o, MockOp::Download(_)))
        .count()
}

fn manifest_of(m: &MockTransport) -> Expected {
    m.nodes()
        .into_iter()
        .filter(|(p, _)| !remote::path::is_temp_name(p))
        .map(|(p, n)| {
            let c = match n {
                MockNode::Dir { mode, .. } => Confirmed::Dir { mode },
                MockNode::Symlink { target } => Confirmed::Symlink { target },
                MockNode::File {
                    data, mode, mtime, ..
                } => Confirmed::File(FileMeta {
                    size: data.len() as u64,
                    sha256: Sha256::digest(&data).into(),
                    mode,
                    mtime: Timestamp {
                        sec: mtime,
                        nsec: 123_456_789,
                    },
                    ino: 1,
                    ctime: Timestamp { sec: 0, nsec: 0 },
                }),
            };
            (p, c)
        })
        .collect()
}

fn path(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}

#[test]
fn restores_byte_exact_then_a_rerun_downloads_nothing() {
    let m = tree();
    let expected = manifest_of(&m);
    let out = tempfile::tempdir().unwrap();
    let s = run_over(&m, out.path(), Some(&expected));
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!((s.files, s.symlinks, s.dirs, s.skipped), (3, 2, 2, 0));
    assert_eq!((s.verified, s.unverified), (3, 0));
    assert_eq!(s.notes.len(), 1, "the interrupted upload is left out");
    let f = path(out.path(), b"d/a\nb \"q\" \xff");
    assert_eq!(std::fs::read(&f).unwrap(), b"hostile");
    let md = std::fs::symlink_metadata(&f).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_001, 123_456_789));
    assert_eq!(
        std::fs::read_link(path(out.path(), b"etc")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(path(out.path(), b"d/up")).unwrap(),
        Path::new("..")
    );
    let d = std::fs::symlink_metadata(path(out.path(), b"d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.mtime()), (0o555, 1_000_000));
    assert_eq!(
        std::fs::metadata(path(out.path(), b"top")).unwrap().mode() & 0o7777,
        0o444
    );
    assert!(!path(out.path(), b".x.ftpsync-tmp-0123456789abcdef").exists());

    m.clear_ops();
    let again = run_over(&m, out.path(), Some(&expected));
    assert!(again.problems.is_empty(), "{:?}", again.problems);
    assert_eq!((again.files, again.skipped), (0, 5));
    assert_eq!(downloads(&m), 0);
}

#[test]
fn without_a_manifest_hashes_are_computed_and_times_are_whole_seconds() {
    let m = tree();
    let out = tempfile::tempdir().unwrap();
    let s = run_over(&m, out.path(), None);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!((s.files, s.verified, s.unverified), (3, 0, 3));
    let md = std::fs::metadata(path(out.path(), b"d/e/big")).unwrap();
    assert_eq!(
        (md.mtime(), md.mtime_nsec(), md.len()),
        (1_600_000_002, 0, 3 << 20)
    );
    m.clear_ops();
    assert_eq!(run_over(&m, out.path(), None).skipped, 5);
    assert_eq!(downloads(&m), 0);
}

#[test]
fn a_file_changed_on_the_server_is_reported_and_not_kept() {
    let m = tree();
    let expected = manifest_of(&m);
    m.insert(b"top", file(b"evil", 0o444, 1_600_000_003));
    m.insert(b"d/e", link(b"/etc"));
    let out = tempfile::tempdir().unwrap();
    let s = run_over(&m, out.path(), Some(&expected));
    let all = s.problems.join("\n");
    assert!(
        all.contains("\"top\": does not match the manifest"),
        "{all}"
    );
    assert!(
        all.contains("\"d/e\": does not match the manifest: the remote holds a symlink"),
        "{all}"
    );
    assert_eq!(
        s.problems.len(),
        2,
        "nothing beneath the planted symlink: {all}"
    );
    assert!(std::fs::symlink_metadata(path(out.path(), b"top")).is_err());
    assert!(std::fs::symlink_metadata(path(out.path(), b"d/e")).is_err());
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| is_part_name(n.as_bytes()))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn local_symlinks_are_never_written_through() {
    let m = tree();
    let out = tempfile::tempdir().unwrap();
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("top"), b"victim").unwrap();
    // Where the remote has a directory, a file, and where a part file will go.
    std::os::unix::fs::symlink(victim.path(), path(out.path(), b"d")).unwrap();
    std::os::unix::fs::symlink(victim.path().join("top"), path(out.path(), b"top")).unwrap();
    std::os::unix::fs::symlink(
        victim.path().join("part"),
        path(out.path(), b".etc.ftpsync-part"),
    )
    .unwrap();
    let s = run_over(&m, out.path(), None);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(
        s.problems[0].contains("local symlink is in the way"),
        "{:?}",
        s.problems
    );
    assert_eq!(std::fs::read(victim.path().join("top")).unwrap(), b"victim");
    assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read(path(out.path(), b"top")).unwrap(), b"");
    assert!(std::fs::symlink_metadata(path(out.path(), b"top"))
        .unwrap()
        .is_file());
    assert!(!path(out.path(), b".etc.ftpsync-part").exists());
}

#[test]
fn resumes_after_an_interruption_and_retries_a_lost_connection() {
    let m = tree();
    let out = tempfile::tempdir().unwrap();
    // An earlier run got as far as a part file and the directories with final modes.
    std::fs::create_dir(path(out.path(), b"d")).unwrap();
    std::fs::write(path(out.path(), b".top.ftpsync-part"), b"half").unwrap();
    std::fs::set_permissions(
        path(out.path(), b"d"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    m.fail_path(b"d/e/big", 2, ErrorKind::Transient);
    let s = run_over(&m, out.path(), None);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.files, 3);
    assert!(!path(out.path(), b".top.ftpsync-part").exists());
    assert_eq!(
        std::fs::read(path(out.path(), b"d/e/big")).unwrap().len(),
        3 << 20
    );
}

fn listing(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

#[test]
fn only_an_empty_directory_or_one_an_unfinished_restore_of_the_same_remote_left_is_taken() {
    const R: &str = "sftp://u@h:22/data";
    let out = tempfile::tempdir().unwrap();
    let root = local::open_root(out.path()).unwrap();
    let check = |remote: &str| check_target(root.as_fd(), out.path(), remote);
    assert_eq!(check(R).unwrap(), Target::Empty);

    // Someone's own files: refused, whatever the remote, and left alone.
    std::fs::write(path(out.path(), b"notes.txt"), b"newer than the backup").unwrap();
    let e = format!("{:#}", check(R).unwrap_err());
    assert!(
        e.contains("is not empty; restore into an empty directory"),
        "{e}"
    );
    assert_eq!(listing(out.path()), [b"notes.txt".to_vec()]);
    // Nor does a symlink, or a file without a `remote:` line, named like the marker count.
    let marker = path(out.path(), MARKER);
    std::os::unix::fs::symlink("elsewhere", &marker).unwrap();
    assert!(check(R).is_err());
    std::fs::remove_file(&marker).unwrap();
    std::fs::write(&marker, b"not a marker").unwrap();
    assert!(check(R).is_err());
    std::fs::remove_file(&marker).unwrap();
    std::fs::remove_file(path(out.path(), b"notes.txt")).unwrap();

    // A run writes its marker (0600, naming the remote); what it leaves is resumed by a run
    // for the same remote only.
    write_marker(root.as_fd(), R).unwrap();
    let md = std::fs::symlink_metadata(&marker).unwrap();
    assert!(md.is_file());
    assert_eq!(md.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&marker)
        .unwrap()
        .contains(&format!("\nremote: {R}\n")));
    std::fs::write(path(out.path(), b"restored"), b"x").unwrap();
    assert_eq!(check(R).unwrap(), Target::Resumed);
    let e = format!("{:#}", check("sftp://u@h:22/other").unwrap_err());
    assert!(
        e.contains(&format!("holds an unfinished restore of {R}, not of")),
        "{e}"
    );
    // Another remote's marker with nothing beside it: that restore wrote nothing.
    std::fs::remove_file(path(out.path(), b"restored")).unwrap();
    assert_eq!(check("sftp://u@h:22/other").unwrap(), Target::Empty);
    write_marker(root.as_fd(), "sftp://u@h:22/other").unwrap();
    assert_eq!(check("sftp://u@h:22/other").unwrap(), Target::Resumed);
    remove_marker(root.as_fd()).unwrap();
    assert!(listing(out.path()).is_empty());

    // Its name is one restore never takes from a server, nor removes as a part file.
    assert!(remote::path::is_temp_name(MARKER));
    assert!(!is_part_name(MARKER));
}

#[test]
fn a_remote_entry_named_like_the_marker_never_lands_on_it() {
    let m = tree();
    m.insert(MARKER, file(b"from the server", 0o644, 5));
    let out = tempfile::tempdir().unwrap();
    let root = local::open_root(out.path()).unwrap();
    write_marker(root.as_fd(), "sftp://u@h:22/data").unwrap();
    let s = run_over(&m, out.path(), None);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!((s.files, s.skipped), (3, 0), "the marker is not counted");
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains(".ftpsync-restore.ftpsync-tmp-") && n.contains("left out")),
        "{:?}",
        s.notes
    );
    let text = std::fs::read_to_string(path(out.path(), MARKER)).unwrap();
    assert!(text.contains("remote: sftp://u@h:22/data"), "{text}");
    assert_eq!(
        check_target(root.as_fd(), out.path(), "sftp://u@h:22/data").unwrap(),
        Target::Resumed
    );
    assert_eq!(run_over(&m, out.path(), None).skipped, 5);
}

#[test]
fn the_remote_roots_marker_is_not_restored_but_its_name_deeper_down_is() {
    let m = MockTransport::new();
    let mut raw = m.clone();
    remote::marker::write(&mut raw, &remote::marker::new_id().unwrap()).unwrap();
    m.insert(b"d", dir(0o755));
    m.insert(b"d/.ftpsync-root", file(b"a user's file", 0o644, 5));
    let out = tempfile::tempdir().unwrap();
    let s = run_over(&m, out.path(), None);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.files, 1, "only d/.ftpsync-root");
    assert!(!path(out.path(), remote::marker::MARKER).exists());
    assert!(path(out.path(), b"d/.ftpsync-root").exists());
}

#[test]
fn setuid_and_setgid_bits_come_only_from_the_manifest() {
    let m = MockTransport::new();
    m.insert(b"bin", dir(0o2775));
    m.insert(b"bin/su", file(b"#!/bin/sh\n", 0o4755, 1_600_000_000));
    m.insert(b"bin/wall", file(b"#!/bin/sh\n", 0o2755, 1_600_000_000));
    m.insert(b"tmp", dir(0o1777));
    let mode =
        |dir: &Path, rel: &[u8]| std::fs::symlink_metadata(path(dir, rel)).unwrap().mode() & 0o7777;

    let plain = tempfile::tempdir().unwrap();
    let s = run_over(&m, plain.path(), None);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(mode(plain.path(), b"bin/su"), 0o755);
    assert_eq!(mode(plain.path(), b"bin/wall"), 0o755);
    assert_eq!(mode(plain.path(), b"bin"), 0o775);
    assert_eq!(
        mode(plain.path(), b"tmp"),
        0o1777,
        "the sticky bit is no risk"
    );
    let dropped = s
        .notes
        .iter()
        .filter(|n| n.contains("setuid/setgid"))
        .count();
    assert_eq!(dropped, 3, "{:?}", s.notes);
    // What was restored that way counts as in place.
    assert_eq!(run_over(&m, plain.path(), None).skipped, 2);

    // The manifest vouches for them: restored as the mirror confirmed them.
    let vouched = tempfile::tempdir().unwrap();
    let s = run_over(&m, vouched.path(), Some(&manifest_of(&m)));
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(mode(vouched.path(), b"bin/su"), 0o4755);
    assert_eq!(mode(vouched.path(), b"bin/wall"), 0o2755);
    assert_eq!(mode(vouched.path(), b"bin"), 0o2775);
    assert!(
        !s.notes.iter().any(|n| n.contains("setuid")),
        "{:?}",
        s.notes
    );
}

#[test]
fn a_panicking_worker_fails_the_restore_and_keeps_the_others_counts() {
    let m = tree();
    let out = tempfile::tempdir().unwrap();
    let root = local::open_root(out.path()).unwrap();
    // One connection; the smallest file (restored last) loses it, and connecting again
    // panics.
    m.fail_path(b"top", 1, ErrorKind::Transient);
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let connect = || -> remote::Result<Box<dyn Transport>> {
        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
            panic!("injected panic while connecting again");
        }
        Ok(Box::new(m.clone()))
    };
    let first = connect().unwrap();
    let s = restore(root.as_fd(), None, first, &connect, 1);
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(
        s.problems[0].contains("\"top\": not restored: the worker restoring it panicked"),
        "{:?}",
        s.problems
    );
    assert_eq!(
        s.files, 2,
        "the files that worker restored are still counted"
    );
    assert!(std::fs::symlink_metadata(path(out.path(), b"top")).is_err());
}
