//! `ftpsync restore`, end to end: a tree mirrored through a real FUSE mount to a real OpenSSH
//! sshd, then pulled back into empty directories and compared with the local side.

mod common;

use common::mirror_tree::assert_mirrored;
use common::{run_with_timeout, sha256_file, walk, CmdOut, Mount, BIN, CMD_WAIT};
use ftpsync::cmd::restore::MARKER;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `ftpsync restore` for the mount's remote into `dir`, with its state dir (manifest and pins)
/// unless `manifest` is false.
fn restore_cmd(m: &Mount, dir: &Path, manifest: bool, extra: &[&str]) -> Command {
    let sshd = m.sshd.as_ref().expect("sshd");
    let mut cmd = Command::new(BIN);
    cmd.arg("restore");
    if manifest {
        cmd.arg("--state-dir").arg(&m.state);
    }
    cmd.arg("--identity")
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(sshd.known_hosts())
        .args(extra)
        .arg(sshd.remote_url())
        .arg(dir);
    cmd
}

fn restore(m: &Mount, dir: &Path, manifest: bool, extra: &[&str]) -> CmdOut {
    fs::create_dir_all(dir).expect("mkdir target");
    run_with_timeout(restore_cmd(m, dir, manifest, extra), CMD_WAIT)
}

/// The number before `what` in the restore summary ("downloaded 12 files", "skipped 3 already
/// restored").
fn count(out: &CmdOut, prefix: &str, suffix: &str) -> u64 {
    out.stdout
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let after = rest[digits..].trim_start();
            (digits > 0 && after.starts_with(suffix)).then(|| rest[..digits].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no '{prefix}N {suffix}' in the summary:\n{out:#?}"))
}

/// Whether a name beneath a restore's target is the restore's own (a part file, its marker).
fn restored_name(name: &[u8]) -> bool {
    !name.ends_with(b".ftpsync-part") && name != MARKER
}

/// Regular files beneath `root` while a restore is writing there (entries may come and go).
fn files_now(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_now(&e.path()),
            Ok(t) if t.is_file() && restored_name(e.file_name().as_bytes()) => 1,
            _ => 0,
        })
        .sum()
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [t, t].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", p.display());
}

/// Everything a restore must reproduce: type, size, SHA-256, permission bits, mtime to the
/// nanosecond (the manifest's), symlink targets as bytes.
fn tree(root: &Path) -> BTreeMap<Vec<u8>, String> {
    walk(root)
        .into_iter()
        .map(|(rel, p, md)| {
            let desc = if md.file_type().is_symlink() {
                let t = fs::read_link(&p).expect("readlink");
                format!("link {:?}", t.as_os_str().as_bytes())
            } else if md.is_dir() {
                format!("dir {:o}", md.mode() & 0o7777)
            } else {
                format!(
                    "file {} {} {:o} {}.{:09}",
                    md.len(),
                    sha256_file(&p),
                    md.mode() & 0o7777,
                    md.mtime(),
                    md.mtime_nsec()
                )
            };
            (rel, desc)
        })
        .collect()
}

fn assert_same_tree(want: &Path, got: &Path) {
    let (a, b) = (tree(want), tree(got));
    let diff: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{:?}: want {v}, got {:?}",
                String::from_utf8_lossy(k),
                b.get(k)
            )
        })
        .chain(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| format!("{:?}: only in the restore", String::from_utf8_lossy(k))),
        )
        .collect();
    assert!(
        diff.is_empty(),
        "{} differences between {} and {}:\n{}",
        diff.len(),
        want.display(),
        got.display(),
        diff.iter().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn part_files(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|(rel, _, _)| rel.windows(13).any(|w| w == b".ftpsync-part"))
        .map(|(_, p, _)| p)
        .collect()
}

/// Fills the mount with `files` regular files (hostile names, three of 6 MiB, varied modes,
/// nanosecond mtimes), ten symlinks (absolute, "..", dangling, a newline in the target) and
/// directories with modes 0555 and 0700. Returns the number of regular files.
fn fill(mnt: &Path, files: usize) -> usize {
    let modes = [0o644, 0o600, 0o755, 0o444, 0o640];
    fs::create_dir(mnt.join("hostile")).expect("mkdir");
    let mut n = 0;
    for (i, name) in common::HOSTILE_NAMES.iter().enumerate() {
        let p = mnt.join("hostile").join(OsStr::from_bytes(name));
        fs::write(&p, format!("hostile {i}")).expect("write hostile name");
        n += 1;
    }
    let long = vec![b'L'; 255];
    fs::write(mnt.join("hostile").join(OsStr::from_bytes(&long)), b"long").expect("long");
    n += 1;
    for i in 0..3u64 {
        fs::write(mnt.join(format!("big{i}.bin")), common::pattern(i, 6 << 20)).expect("big");
        n += 1;
    }
    let mut i = 0;
    while n < files {
        let dir = mnt.join(format!("t{}/u{}", i % 8, i % 4));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(format!("f{i}.dat"));
        fs::write(&p, common::pattern(1000 + i as u64, (i * 37) % 5000)).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(modes[i % modes.len()])).expect("chmod");
        if i % 3 == 0 {
            set_mtime(
                &p,
                1_500_000_000 + i as i64,
                (i as i64 * 1000 + 7) % 1_000_000_000,
            );
        }
        i += 1;
        n += 1;
    }
    let links: [(&[u8], &[u8]); 10] = [
        (b"passwd", b"/etc/passwd"),
        (b"up", b".."),
        (b"t0/up2", b"../.."),
        (b"t1/sibling", b"../t0"),
        (b"t2/u2/dangling", b"no/such/target"),
        (b"hostile/nl-link", b"a\nb"),
        (b"hostile/quote-link", b"it's \"quoted\""),
        (b"t3/abs-dir", b"/etc"),
        (b"t4/self", b"."),
        (b"t5/u1/rel", b"f5.dat"),
    ];
    for (link, target) in links {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), mnt.join(OsStr::from_bytes(link)))
            .expect("symlink");
    }
    fs::set_permissions(mnt.join("t6/u2"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(mnt.join("t7"), fs::Permissions::from_mode(0o555)).expect("chmod");
    n
}

/// Regular files (not part files, not the marker) and symlinks in place under `root`, with
/// inode and ctime.
fn in_place(root: &Path) -> BTreeMap<Vec<u8>, (u64, i64, i64)> {
    walk(root)
        .into_iter()
        .filter(|(rel, _, md)| {
            !md.is_dir() && !rel.windows(13).any(|w| w == b".ftpsync-part") && rel != MARKER
        })
        .map(|(rel, _, md)| (rel, (md.ino(), md.ctime(), md.ctime_nsec())))
        .collect()
}

#[test]
fn a_mirrored_tree_of_2000_files_restores_identical_and_resumes_after_kill_9() {
    let mut m = Mount::new();
    let start = Instant::now();
    let files = fill(&m.mnt, 2000);
    m.flush();
    assert_mirrored(&m);
    eprintln!("mirrored {files} files in {:?}", start.elapsed());

    // Into an empty directory, all at once.
    let full = m.plain.join("full");
    let start = Instant::now();
    let out = restore(&m, &full, true, &[]);
    let took = start.elapsed();
    out.assert_ok();
    eprintln!("restore of {files} files: {took:?}\n{}", out.stdout);
    assert_eq!(
        count(&out, "downloaded ", "files"),
        files as u64,
        "{out:#?}"
    );
    assert_eq!(count(&out, "skipped ", "already restored"), 0);
    assert!(out.stdout.contains(&format!(
        "SHA-256: {files} checked against the manifest, 0 not"
    )));
    assert_same_tree(&m.local, &full);
    assert!(part_files(&full).is_empty());

    // Interrupted: one connection, killed with SIGKILL once a good share is in place.
    let resumed = m.plain.join("resumed");
    fs::create_dir(&resumed).expect("mkdir");
    let mut child = restore_cmd(&m, &resumed, true, &["--connections", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn restore");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let placed = files_now(&resumed);
        if placed >= files / 4 {
            break;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the restore finished before it could be interrupted ({placed} files seen)"
        );
        assert!(Instant::now() < deadline, "the restore made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let before = in_place(&resumed);
    let files_before = walk(&resumed)
        .iter()
        .filter(|(rel, _, md)| {
            md.is_file() && !rel.windows(13).any(|w| w == b".ftpsync-part") && rel != MARKER
        })
        .count() as u64;
    eprintln!(
        "killed with {files_before} files and {} symlinks in place, {} part files",
        before.len() as u64 - files_before,
        part_files(&resumed).len()
    );
    assert!(files_before >= files as u64 / 4 && files_before < files as u64);
    assert!(
        resumed.join(OsStr::from_bytes(MARKER)).is_file(),
        "the interrupted run left no marker: a re-run would refuse the directory"
    );

    let out = restore(&m, &resumed, true, &[]);
    out.assert_ok();
    eprintln!("re-run:\n{}", out.stdout);
    assert_eq!(
        count(&out, "downloaded ", "files"),
        files as u64 - files_before,
        "only what was missing is downloaded: {out:#?}"
    );
    assert_eq!(
        count(&out, "skipped ", "already restored"),
        before.len() as u64,
        "every file and symlink in place is skipped"
    );
    let after = in_place(&resumed);
    for (rel, id) in &before {
        assert_eq!(
            after.get(rel),
            Some(id),
            "{:?} was touched again (inode, ctime)",
            String::from_utf8_lossy(rel)
        );
    }
    assert!(
        part_files(&resumed).is_empty(),
        "stale part files are removed"
    );
    assert_same_tree(&m.local, &resumed);
    assert!(
        !resumed.join(OsStr::from_bytes(MARKER)).exists(),
        "a complete run removes its marker"
    );
    m.unmount();
}

/// Against the least-privilege server (chroot, ForceCommand internal-sftp: no exec).
#[test]
fn a_remote_file_altered_behind_the_mirrors_back_is_reported_and_not_kept() {
    let mut m = Mount::builder().chroot().mount();
    fs::create_dir(m.mnt.join("docs")).expect("mkdir");
    for i in 0..20 {
        fs::write(m.mnt.join(format!("docs/f{i}")), format!("document {i}")).expect("write");
    }
    m.flush();
    let remote = common::mirror_tree::remote_root(&m);
    // Same size, other bytes, mtime kept: only the hash can tell.
    let victim = remote.join("docs/f7");
    let md = fs::metadata(&victim).expect("remote file");
    fs::write(&victim, b"DOCUMENT 7").expect("alter the remote copy");
    set_mtime(&victim, md.mtime(), 0);

    let target = m.plain.join("out");
    let out = restore(&m, &target, true, &[]);
    assert!(!out.ok(), "an altered file must fail the restore: {out:#?}");
    assert!(
        out.stderr
            .contains("\"docs/f7\": does not match the manifest"),
        "{out:#?}"
    );
    assert_eq!(count(&out, "downloaded ", "files"), 19);
    assert_eq!(count(&out, "problems: ", ""), 1);
    assert!(
        fs::symlink_metadata(target.join("docs/f7")).is_err(),
        "not kept"
    );
    assert!(part_files(&target).is_empty());
    assert_eq!(
        fs::read(target.join("docs/f3")).expect("restored"),
        b"document 3"
    );

    // Without a manifest there is nothing to check against: the hash is computed, the server's
    // copy restored as it is.
    let plain = m.plain.join("no-manifest");
    let out = restore(&m, &plain, false, &[]);
    out.assert_ok();
    assert!(
        out.stdout.contains("SHA-256: 20 computed (no manifest"),
        "{out:#?}"
    );
    assert_eq!(
        fs::read(plain.join("docs/f7")).expect("restored"),
        b"DOCUMENT 7"
    );
    // An incomplete run keeps its marker (a re-run resumes); a complete one leaves none.
    assert!(target.join(OsStr::from_bytes(MARKER)).is_file());
    assert!(!plain.join(OsStr::from_bytes(MARKER)).exists());

    // A directory no restore started in is refused, and nothing in it changes: a restore
    // would replace the newer local copy.
    let own = m.plain.join("own");
    fs::create_dir_all(own.join("docs")).expect("mkdir");
    fs::write(own.join("docs/f3"), b"my newer edit").expect("write");
    let before = tree(&own);
    let out = restore(&m, &own, false, &[]);
    assert!(!out.ok(), "restored into a directory with files: {out:#?}");
    assert!(
        out.stderr
            .contains("is not empty; restore into an empty directory"),
        "{out:#?}"
    );
    assert_eq!(tree(&own), before);

    // A server whose key is pinned nowhere is refused, with the command that pins it.
    let sshd = m.sshd.as_ref().expect("sshd");
    let mut cmd = Command::new(BIN);
    cmd.args(["restore", "--identity"])
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(m.root.join("nothing-pinned"))
        .arg("--state-dir")
        .arg(&m.state)
        .arg(sshd.remote_url())
        .arg(m.plain.join("refused"));
    fs::create_dir(m.plain.join("refused")).expect("mkdir");
    let out = run_with_timeout(cmd, CMD_WAIT);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("ftpsync trust") && out.stderr.contains(&sshd.host_fingerprint()),
        "{out:#?}"
    );
    assert_eq!(
        fs::read_dir(m.plain.join("refused")).expect("dir").count(),
        0
    );
    m.unmount();
}

#[test]
fn hostile_symlinks_are_restored_as_symlinks_and_never_written_through() {
    let mut m = Mount::new();
    let outside = tempfile::tempdir().expect("victim dir");
    fs::write(outside.path().join("secret"), b"outside the remote root").expect("write");
    fs::write(outside.path().join("victim"), b"victim").expect("write");
    let victim_before = tree(outside.path());
    let passwd_before = sha256_file(Path::new("/etc/passwd"));

    std::os::unix::fs::symlink("/etc/passwd", m.mnt.join("passwd")).expect("symlink");
    std::os::unix::fs::symlink("..", m.mnt.join("up")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("victim"), m.mnt.join("victim-link"))
        .expect("symlink");
    fs::create_dir(m.mnt.join("sub")).expect("mkdir");
    fs::write(m.mnt.join("sub/inner"), b"inner").expect("write");
    fs::write(m.mnt.join("f"), b"plain file").expect("write");
    fs::create_dir(m.mnt.join("planted")).expect("mkdir");
    fs::write(m.mnt.join("planted/x"), b"x").expect("write");
    m.flush();

    // On the server, behind the mirror's back: a directory swapped for a symlink out of the
    // remote root.
    let remote = common::mirror_tree::remote_root(&m);
    fs::remove_dir_all(remote.join("planted")).expect("rm");
    std::os::unix::fs::symlink(outside.path(), remote.join("planted")).expect("plant");
    // Times far from now on a directory with contents and on a symlink: a restore must give
    // them back (whole seconds, from the server's listing: the manifest keeps no times for
    // either), set after the directory's contents are written.
    const SUB_MTIME: i64 = 1_400_000_000;
    const LINK_MTIME: i64 = 1_400_000_001;
    set_mtime(&remote.join("sub"), SUB_MTIME, 0);
    set_mtime(&remote.join("passwd"), LINK_MTIME, 0);

    // Locally, in the target: symlinks where the restore will write a directory, a file and a
    // part file.
    // As if planted after an interrupted run, whose marker lets the restore resume there.
    let target = m.plain.join("out");
    fs::create_dir(&target).expect("mkdir");
    let sshd = m.sshd.as_ref().expect("sshd");
    fs::write(
        target.join(OsStr::from_bytes(MARKER)),
        format!("remote: {}\n", sshd.remote_url()),
    )
    .expect("marker");
    std::os::unix::fs::symlink(outside.path(), target.join("sub")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("victim"), target.join("f")).expect("symlink");
    std::os::unix::fs::symlink(outside.path().join("part"), target.join(".f.ftpsync-part"))
        .expect("symlink");

    let out = restore(&m, &target, true, &[]);
    assert!(!out.ok(), "{out:#?}");
    assert!(
        out.stderr
            .contains("\"sub\": a local symlink is in the way"),
        "{out:#?}"
    );
    assert!(
        out.stderr.contains(
            "\"planted\": does not match the manifest: the remote holds a symlink, the \
             manifest a directory"
        ),
        "{out:#?}"
    );
    assert_eq!(count(&out, "problems: ", ""), 2, "{out:#?}");

    // Without the manifest the planted link is restored as the symlink it is.
    let plain = m.plain.join("plain");
    let out2 = restore(&m, &plain, false, &[]);
    out2.assert_ok();

    for dir in [&target, &plain] {
        let link = |name: &str| fs::read_link(dir.join(name)).expect("a symlink");
        assert_eq!(link("passwd"), Path::new("/etc/passwd"));
        assert_eq!(link("up"), Path::new(".."));
        assert_eq!(link("victim-link"), outside.path().join("victim"));
        let f = fs::symlink_metadata(dir.join("f")).expect("f");
        assert!(
            f.is_file(),
            "the local symlink at f was replaced, not followed"
        );
        assert_eq!(fs::read(dir.join("f")).expect("read"), b"plain file");
        assert!(!dir.join(".f.ftpsync-part").exists());
    }
    assert_eq!(
        fs::read_link(plain.join("planted")).expect("link"),
        outside.path()
    );
    let mtime = |p: &Path| fs::symlink_metadata(p).expect("lstat").mtime();
    assert_eq!(mtime(&plain.join("sub")), SUB_MTIME, "directory mtime");
    for dir in [&target, &plain] {
        assert_eq!(mtime(&dir.join("passwd")), LINK_MTIME, "symlink mtime");
    }
    assert_eq!(fs::read(plain.join("sub/inner")).expect("read"), b"inner");
    assert_eq!(
        tree(outside.path()),
        victim_before,
        "nothing written outside"
    );
    assert_eq!(sha256_file(Path::new("/etc/passwd")), passwd_before);
    assert!(!walk(&target)
        .iter()
        .any(|(rel, _, _)| rel.ends_with(b"secret")));
    m.unmount();
}
