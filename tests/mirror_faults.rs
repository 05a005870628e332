//! The mirror under load and under faults, end to end: a real FUSE mount, a real OpenSSH sshd
//! on 127.0.0.1, real faults (SIGKILL of the daemon, a killed and restarted sshd, a full tmpfs
//! as the remote root, a swapped host key, a remote file edited behind ftpsync's back, files
//! changed while unmounted), and the remote tree on disk compared with the local one.
//!
//! Every test here fails if the feature it names breaks: nothing is skipped, no bound is
//! tight enough to be flaky on a loaded 2-core machine.

mod common;

use common::mirror_tree::{
    assert_mirrored, assert_mirrored_except, is_conflict_name, remote_root, tree_filtered,
};

use common::{connection_of, Mount};
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A seed for the random choices of a test: `FTPSYNC_TEST_SEED` or the clock (printed, so a
/// failing run can be repeated).
fn seed() -> u64 {
    let s = std::env::var("FTPSYNC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    eprintln!("seed: FTPSYNC_TEST_SEED={s}");
    s
}

/// xorshift64*: enough randomness for choosing kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Writes `len` bytes of a deterministic pattern quickly: a 1 MiB pseudo-random block, each
/// copy stamped with its index and the seed, so no two MiB are alike.
fn write_big(path: &Path, seed: u64, len: usize) {
    let block = common::pattern(seed, 1 << 20);
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut chunk = block.clone();
    let mut done = 0;
    let mut i = 0u64;
    while done < len {
        chunk[..8].copy_from_slice(&(i ^ seed).to_le_bytes());
        let n = (len - done).min(chunk.len());
        f.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        done += n;
        i += 1;
    }
}

/// Writes a whole file and closes it, reporting an error of the close too (Rust's `Drop`
/// would swallow it): only a file whose close returned 0 counts as written.
fn write_file_checked(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(data)?;
    let fd = f.into_raw_fd();
    // SAFETY: we own `fd` (taken from the File) and close it exactly once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Names of the entries in `dir` (recursive, relative) for which `pred` holds.
fn find_names(dir: &Path, pred: &dyn Fn(&[u8]) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if pred(e.file_name().as_bytes()) {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

fn is_temp_name(name: &[u8]) -> bool {
    name.starts_with(b".")
        && name
            .windows(b".ftpsync-tmp-".len())
            .any(|w| w == b".ftpsync-tmp-")
}

// ---------------------------------------------------------------------------------------------
// 1. A big tree (2,000 files, two of 64 MiB) on both sshd flavours
// ---------------------------------------------------------------------------------------------

/// Builds the source tree in a plain directory: 2,000 regular files over three levels of
/// directories (sizes 0..24 KiB, some with unusual modes and old mtimes), two 64 MiB files,
/// symlinks (relative, absolute, dangling), an empty directory and a 0700 directory.
fn build_big_tree(src: &Path) {
    const FILES: usize = 2000;
    for i in 0..FILES {
        let dir = src.join(format!("a{}/b{}/c{}", i % 10, i % 7, i % 3));
        fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join(format!("f{i:04}.dat"));
        let len = (i * 7919) % (24 << 10);
        fs::write(&p, common::pattern(i as u64, len)).expect("write");
        if i % 13 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        if i % 17 == 0 {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        if i % 11 == 0 {
            set_mtime(&p, 1_000_000_000 + i as i64 * 3600);
        }
    }
    // The 2,000 files include the two big ones.
    fs::remove_file(src.join("a0/b0/c0/f0000.dat")).expect("rm");
    fs::remove_file(src.join("a1/b1/c1/f0001.dat")).expect("rm");
    write_big(&src.join("a0/big-one.bin"), 1, 64 << 20);
    write_big(&src.join("a1/b1/big-two.bin"), 2, 64 << 20);
    fs::set_permissions(
        src.join("a1/b1/big-two.bin"),
        fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("b0/c0/f0070.dat", src.join("a0/rel-link")).expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs-link")).expect("symlink");
    std::os::unix::fs::symlink("nowhere/at/all", src.join("a2/dangling")).expect("symlink");
    fs::create_dir_all(src.join("empty/dir")).expect("mkdir");
    fs::create_dir(src.join("private")).expect("mkdir");
    fs::write(src.join("private/secret"), b"0700 dir").expect("write");
    fs::set_permissions(src.join("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
}

fn set_mtime(p: &Path, sec: i64) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("cstring");
    let t = libc::timespec {
        tv_sec: sec,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(r, 0, "utimensat: {}", std::io::Error::last_os_error());
}

fn big_tree_reaches_the_remote(mut m: Mount) {
    let started = Instant::now();
    let src = m.plain.join("src");
    build_big_tree(&src);
    let built = started.elapsed();
    // Copied in through the mount, keeping modes and mtimes (cp -a: create, write, chmod,
    // utimens, symlink, mkdir).
    let out = common::run_with_timeout(
        {
            let mut c = Command::new("cp");
            c.arg("-a").arg(&src).arg(m.path("tree"));
            c
        },
        Duration::from_secs(120),
    );
    out.assert_ok();
    let copied = started.elapsed();
    let regular = find_names(&m.local, &|n| n.ends_with(b".dat") || n.ends_with(b".bin"));
    assert_eq!(regular.len(), 2000, "the tree holds 2,000 data files");
    let out = m.flush_for(60);
    assert!(
        out.ok(),
        "flush failed\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
        out.stdout,
        out.stderr,
        m.log_tail()
    );
    let flushed = started.elapsed();
    eprintln!(
        "build {:.1}s, cp -a through the mount {:.1}s, flush {:.1}s",
        built.as_secs_f64(),
        (copied - built).as_secs_f64(),
        (flushed - copied).as_secs_f64()
    );
    assert_mirrored(&m);
    let big = remote_root(&m).join("tree/a0/big-one.bin");
    assert_eq!(fs::metadata(&big).expect("remote big file").len(), 64 << 20);
    // A clean run (no fault) reports no failure: nothing was retried or refused.
    let log = m.daemon_log();
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        complaints.is_empty(),
        "{} warnings or errors in the daemon log of a fault-free copy, e.g.:\n{}",
        complaints.len(),
        complaints[..complaints.len().min(10)].join("\n")
    );
    m.unmount();
}

#[test]
fn big_tree_2000_files_two_of_64mib_exec_verify() {
    big_tree_reaches_the_remote(Mount::new());
}

#[test]
fn big_tree_2000_files_two_of_64mib_readback_verify_in_chroot() {
    big_tree_reaches_the_remote(Mount::builder().chroot().mount());
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 of the daemon at random points of a 500-file copy, 10 times
// ---------------------------------------------------------------------------------------------

const COPY_FILES: usize = 500;

/// File `i` of round `round`: rounds reuse four directories, so later rounds overwrite files
/// that earlier rounds (and their interrupted uploads) left behind.
fn copy_target(root: &Path, round: usize, i: usize) -> (PathBuf, Vec<u8>) {
    let p = root.join(format!(
        "set{}/d{}/e{}/f{i:03}.dat",
        round % 4,
        i % 10,
        i % 3
    ));
    let len = (i * 613 + round * 4099) % (48 << 10);
    (p, common::pattern((round * 100_000 + i) as u64, len))
}

/// Copies files `from..COPY_FILES` of `round` into the mount; returns the index of the first
/// file that could not be written (the daemon died), or COPY_FILES. An error before `killed`
/// is set is a real failure.
fn copy_files(
    mnt: &Path,
    round: usize,
    from: usize,
    progress: &AtomicUsize,
    killed: &AtomicBool,
) -> usize {
    for i in from..COPY_FILES {
        let (p, data) = copy_target(mnt, round, i);
        let r = fs::create_dir_all(p.parent().expect("parent"))
            .and_then(|()| write_file_checked(&p, &data));
        if let Err(e) = r {
            assert!(
                killed.load(Ordering::SeqCst),
                "writing {} failed while the daemon was alive: {e}",
                p.display()
            );
            return i;
        }
        progress.store(i + 1, Ordering::SeqCst);
    }
    COPY_FILES
}

#[test]
fn kill_9_ten_times_during_a_500_file_copy_loses_nothing() {
    let mut m = Mount::new();
    let mut rng = Rng(seed());
    let mut kills_mid_copy = 0;
    for round in 0..10 {
        let kill_after = rng.below(COPY_FILES as u64) as usize;
        let progress = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let writer = {
            let (mnt, progress, killed) = (m.mnt.clone(), progress.clone(), killed.clone());
            std::thread::spawn(move || copy_files(&mnt, round, 0, &progress, &killed))
        };
        let start = Instant::now();
        while progress.load(Ordering::SeqCst) < kill_after
            && !writer.is_finished()
            && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::yield_now();
        }
        // Sometimes also let the uploads get going before the kill.
        if rng.below(3) == 0 {
            sleep(Duration::from_millis(rng.below(300)));
        }
        killed.store(true, Ordering::SeqCst);
        m.kill9();
        let stopped_at = writer.join().expect("writer thread");
        if stopped_at < COPY_FILES {
            kills_mid_copy += 1;
        }
        eprintln!(
            "round {round}: killed after {} files written, copy stopped at {stopped_at}",
            progress.load(Ordering::SeqCst)
        );
        // fusermount3 -uz on the dead mount, then a new daemon on the same state dir.
        m.remount();
        // What the dead daemon could not take is simply written again, as an application would.
        let never = AtomicBool::new(false);
        let done = copy_files(&m.mnt, round, stopped_at, &AtomicUsize::new(0), &never);
        assert_eq!(done, COPY_FILES);
    }
    assert!(
        kills_mid_copy >= 5,
        "only {kills_mid_copy} of 10 kills landed during the copy"
    );
    let out = m.flush_for(120);
    assert!(
        out.ok(),
        "final flush failed\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
        out.stdout,
        out.stderr,
        m.log_tail()
    );
    // Every file holds what the last round that wrote it wrote (nothing lost locally either).
    for round in 6..10 {
        for i in 0..COPY_FILES {
            let (p, data) = copy_target(&m.local, round, i);
            assert_eq!(fs::read(&p).expect("local file"), data, "{}", p.display());
        }
    }
    assert_mirrored(&m);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// 3. sshd killed mid-upload, restarted 20 s later
// ---------------------------------------------------------------------------------------------

#[test]
fn sshd_killed_mid_upload_mount_keeps_working_and_the_remote_converges_after_restart() {
    let mut m = Mount::new();
    fs::write(m.path("before.txt"), b"confirmed before the outage").expect("write");
    m.flush();
    let remote = remote_root(&m);
    // A big file: its upload takes long enough to be cut.
    write_big(&m.path("big.bin"), 7, 256 << 20);
    let start = Instant::now();
    let temp = loop {
        let found: Vec<PathBuf> = find_names(&remote, &|n| is_temp_name(n))
            .into_iter()
            .filter(|p| fs::metadata(p).is_ok_and(|md| md.len() > 0))
            .collect();
        if let Some(t) = found.into_iter().next() {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the upload of big.bin never started (no temp file on the remote)\nlog:\n{}",
            m.log_tail()
        );
        sleep(Duration::from_millis(20));
    };
    let sent = fs::metadata(&temp).map_or(0, |md| md.len());
    assert!(sent < 256 << 20, "upload already complete before the kill");
    m.sshd.as_mut().expect("sshd").stop();
    let down_at = Instant::now();
    eprintln!("sshd killed with {sent} bytes of big.bin sent");

    // The mount keeps working: 100 small files written and read back, a directory listed.
    fs::create_dir(m.path("during")).expect("mkdir during the outage");
    let t = Instant::now();
    for i in 0..100 {
        write_file_checked(
            &m.path(format!("during/f{i:03}.txt")),
            format!("written while sshd is down, #{i}\n").as_bytes(),
        )
        .expect("write during the outage");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "100 small writes took {took:?} while sshd was down: the mount waits on the network"
    );
    for i in (0..100).step_by(9) {
        assert_eq!(
            fs::read_to_string(m.path(format!("during/f{i:03}.txt"))).expect("read"),
            format!("written while sshd is down, #{i}\n")
        );
    }
    assert_eq!(
        fs::read_dir(m.path("during")).expect("readdir").count(),
        100
    );
    assert_eq!(
        common::sha256_file(&m.path("big.bin")),
        common::sha256_file(&m.local.join("big.bin"))
    );
    eprintln!("100 writes during the outage: {took:?}");

    // flush cannot succeed, says so within its timeout, and names the state.
    let t = Instant::now();
    let out = m.flush_for(2);
    let flush_took = t.elapsed();
    assert!(
        !out.ok(),
        "flush --timeout 2 claimed success while sshd was down:\n{}",
        out.stdout
    );
    assert!(
        flush_took < Duration::from_secs(15),
        "flush --timeout 2 took {flush_took:?}"
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("pending") && said.contains("connection"),
        "flush's failure does not name what is pending and the connection state:\n{said}"
    );
    let st = m.wait_mirror_status(Duration::from_secs(30), "a lost connection", |s| {
        !connection_of(s).starts_with("connected")
    });
    eprintln!("flush said: {said}\nstatus during the outage: {st}");
    assert!(
        st["pending"].as_u64().unwrap_or(0) > 0,
        "status shows nothing pending during the outage: {st}"
    );

    // Back 20 s after it went down.
    let wait = Duration::from_secs(20).saturating_sub(down_at.elapsed());
    sleep(wait);
    m.sshd.as_mut().expect("sshd").restart();
    let t = Instant::now();
    let out = m.flush_for(30);
    assert!(
        out.ok(),
        "flush after the restart failed\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
        out.stdout,
        out.stderr,
        m.log_tail()
    );
    eprintln!("converged {:?} after the restart", t.elapsed());
    assert_mirrored(&m);
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// 4. The remote root is a small tmpfs that fills up
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted on a directory for the life of the guard (lazily unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "cannot mount a tmpfs on {} (tests run as root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_remote_disk_writes_go_on_status_reports_it_and_the_remote_converges_once_freed() {
    // The sshd is started, then its (empty) remote root becomes a 16 MiB tmpfs before mounting.
    let mut m = Mount::builder().prepare();
    let remote = remote_root(&m);
    let tmpfs = Tmpfs::mount(&remote, "16m");
    m.mount();
    fs::write(m.path("first.txt"), b"fits easily").expect("write");
    m.flush();
    assert_mirrored(&m);

    // Someone else fills the remote disk: 15 MiB of 16, so no 1 MiB file fits.
    let filler = remote.join("filler.bin");
    write_big(&filler, 99, 15 << 20);
    // Local writes go on at local speed.
    let t = Instant::now();
    for i in 0..8 {
        write_big(&m.path(format!("big{i}.bin")), 100 + i, 1 << 20);
    }
    for i in 0..20 {
        fs::write(m.path(format!("small{i}.txt")), format!("small {i}")).expect("write");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "local writes took {took:?} with the remote disk full"
    );
    assert_eq!(
        fs::read(m.path("big3.bin")).expect("read").len(),
        1 << 20,
        "local file readable"
    );

    // flush fails and status tells why: the remote disk is full, being retried.
    let out = m.flush_for(3);
    assert!(!out.ok(), "flush succeeded with a full remote disk");
    let st = m.wait_mirror_status(Duration::from_secs(30), "a full-disk failure", |s| {
        let text = s.to_string().to_lowercase();
        text.contains("space") || text.contains("full") || text.contains("quota")
    });
    eprintln!("flush said: {}{}\nstatus: {st}", out.stdout, out.stderr);
    let conn = connection_of(&st);
    assert!(
        conn.contains("retrying") || !st["failures"].as_array().is_none_or(|f| f.is_empty()),
        "a full disk is neither a retrying connection nor a listed failure: {st}"
    );
    assert!(
        st["pending"].as_u64().unwrap_or(0) > 0,
        "nothing pending with a full disk: {st}"
    );
    // No half file under a real name, and the files that could not fit are not there.
    for i in 0..8 {
        let p = remote.join(format!("big{i}.bin"));
        if let Ok(md) = fs::metadata(&p) {
            assert_eq!(
                common::sha256_file(&p),
                common::sha256_file(&m.local.join(format!("big{i}.bin"))),
                "a partial big{i}.bin (size {}) under its real name",
                md.len()
            );
        }
    }
    // Logged once per cause, not once per file (checked at the end).
    sleep(Duration::from_secs(3));
    let log = m.daemon_log();
    let full_lines: Vec<String> = log
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("no space") || l.contains("disk full") || l.contains("quota")
        })
        .map(str::to_string)
        .collect();

    // Space is freed: the remote converges.
    fs::remove_file(&filler).expect("remove the filler");
    let out = m.flush_for(60);
    assert!(
        out.ok(),
        "flush after freeing space failed\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
        out.stdout,
        out.stderr,
        m.log_tail()
    );
    assert_mirrored(&m);
    let st = m.mirror_status();
    assert!(
        connection_of(&st).starts_with("connected"),
        "converged but status still says {st}"
    );
    assert!(
        !full_lines.is_empty(),
        "the full disk is not in the daemon log:\n{}",
        m.log_tail()
    );
    assert!(
        full_lines.len() <= 3,
        "a full disk logged {} times (want once per cause, not per file or per retry):\n{}",
        full_lines.len(),
        full_lines.join("\n")
    );
    m.unmount();
    drop(tmpfs);
}

// ---------------------------------------------------------------------------------------------
// 5. A changed host key
// ---------------------------------------------------------------------------------------------

#[test]
fn changed_host_key_stops_uploads_names_the_new_fingerprint_and_writes_go_on() {
    // Nothing can be drained at unmount: do not wait the default 30 s for it.
    let mut m = Mount::builder().arg("--drain-timeout").arg("2").mount();
    fs::write(
        m.path("before.txt"),
        b"sent while the key was the pinned one",
    )
    .expect("write");
    m.flush();
    assert_mirrored(&m);
    let remote = remote_root(&m);
    let before = tree_filtered(&remote, &|_| false);
    let old_fp = m.sshd.as_ref().expect("sshd").host_fingerprint();
    m.sshd.as_mut().expect("sshd").swap_host_key();
    let new_fp = m.sshd.as_ref().expect("sshd").host_fingerprint();
    assert_ne!(old_fp, new_fp);

    // Writes go on locally.
    let t = Instant::now();
    for i in 0..50 {
        fs::write(
            m.path(format!("after{i}.txt")),
            format!("after the swap {i}"),
        )
        .expect("write");
    }
    fs::write(m.path("before.txt"), b"changed after the swap").expect("overwrite");
    fs::create_dir(m.path("newdir")).expect("mkdir");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "local writes took {took:?} with the host key refused"
    );

    // flush fails, naming the new key.
    let out = m.flush_for(5);
    assert!(
        !out.ok(),
        "flush succeeded against a server with a changed host key"
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    eprintln!("flush said: {said}");
    let st = m.wait_mirror_status(Duration::from_secs(60), "the new fingerprint", |s| {
        connection_of(s).contains(&new_fp)
    });
    eprintln!("status: {st}");
    assert!(
        said.contains(&new_fp),
        "flush's failure does not name the new fingerprint {new_fp}:\n{said}"
    );
    let log = m.daemon_log();
    assert!(
        log.contains(&new_fp),
        "the daemon log does not name the new fingerprint {new_fp}:\n{}",
        m.log_tail()
    );

    // Nothing more reached the server: the remote tree is exactly as before the swap.
    sleep(Duration::from_secs(2));
    let after = tree_filtered(&remote, &|_| false);
    assert_eq!(
        before,
        after,
        "the remote changed although its host key was refused\nlog:\n{}",
        m.log_tail()
    );
    let sshd_log = m.sshd.as_ref().expect("sshd").log();
    assert!(
        !sshd_log.contains("Accepted publickey"),
        "the client authenticated to the server with the changed key:\n{sshd_log}"
    );
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// 6. A remote file changed behind ftpsync's back
// ---------------------------------------------------------------------------------------------

/// `NAME.ftpsync-conflict-YYYYMMDDTHHMMSSZ` copies of `name` in `dir`.
fn conflict_copies(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}.ftpsync-conflict-");
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read remote dir")
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            // <YYYYMMDDTHHMMSSZ>-<8 hex>: the time, and what keeps copies of one second apart.
            n.strip_prefix(&prefix).is_some_and(|rest| {
                let Some((stamp, unique)) = rest.split_once('-') else {
                    return false;
                };
                stamp.len() == 16
                    && stamp.as_bytes()[8] == b'T'
                    && stamp.ends_with('Z')
                    && stamp[..8].bytes().all(|b| b.is_ascii_digit())
                    && stamp[9..15].bytes().all(|b| b.is_ascii_digit())
                    && unique.len() == 8
                    && unique.bytes().all(|b| b.is_ascii_hexdigit())
            })
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

#[test]
fn remote_file_changed_behind_our_back_is_kept_as_a_conflict_copy() {
    let mut m = Mount::new();
    fs::create_dir(m.path("docs")).expect("mkdir");
    fs::write(m.path("docs/report.txt"), b"version 1 from the mount").expect("write");
    fs::write(m.path("docs/same-size.txt"), b"0123456789").expect("write");
    m.flush();
    assert_mirrored(&m);
    let remote = remote_root(&m).join("docs");

    // Someone edits the remote copies: one gets another size, one keeps its size but gets
    // another mtime.
    let theirs = b"edited on the server by someone else, longer than before".to_vec();
    fs::write(remote.join("report.txt"), &theirs).expect("remote edit");
    let theirs2 = b"abcdefghij".to_vec();
    fs::write(remote.join("same-size.txt"), &theirs2).expect("remote edit");
    set_mtime(&remote.join("same-size.txt"), 1_000_000_000);

    // Then the local files change and are flushed.
    let ours = b"version 2 from the mount".to_vec();
    fs::write(m.path("docs/report.txt"), &ours).expect("local edit");
    let ours2 = b"9876543210".to_vec();
    fs::write(m.path("docs/same-size.txt"), &ours2).expect("local edit");
    m.flush();

    for (name, theirs, ours) in [
        ("report.txt", &theirs, &ours),
        ("same-size.txt", &theirs2, &ours2),
    ] {
        assert_eq!(
            &fs::read(remote.join(name)).expect("remote file"),
            ours,
            "the new local version of {name} is not in place on the remote"
        );
        let copies = conflict_copies(&remote, name);
        assert_eq!(
            copies.len(),
            1,
            "want exactly one {name}.ftpsync-conflict-<YYYYMMDDTHHMMSSZ>-<8 hex> on the remote, got {:?}\n\
             remote dir: {:?}\nlog:\n{}",
            copies,
            fs::read_dir(&remote)
                .expect("readdir")
                .flatten()
                .map(|e| e.file_name())
                .collect::<Vec<_>>(),
            m.log_tail()
        );
        assert_eq!(
            &fs::read(&copies[0]).expect("conflict copy"),
            theirs,
            "the conflict copy of {name} does not hold the server's version"
        );
    }
    // Reported: counted in status and named in the log.
    let st = m.mirror_status();
    assert!(
        st["conflicts"].as_u64().unwrap_or(0) >= 2,
        "status does not count the conflicts: {st}"
    );
    let log = m.daemon_log();
    assert!(
        log.contains("ftpsync-conflict-"),
        "the daemon log does not report the conflict copies:\n{}",
        m.log_tail()
    );
    // Everything else is mirrored; the conflict copies are the only extra remote files, and
    // the local side never sees them.
    assert_mirrored_except(&m, &is_conflict_name);
    assert!(find_names(&m.local, &is_conflict_name).is_empty());
    m.unmount();
}

// ---------------------------------------------------------------------------------------------
// 7. Start-up reconciliation of changes made while unmounted
// ---------------------------------------------------------------------------------------------

#[test]
fn changes_made_while_unmounted_are_mirrored_after_the_next_mount() {
    let mut m = Mount::new();
    fs::create_dir(m.path("d")).expect("mkdir");
    for name in [
        "edit-size",
        "edit-same-size",
        "delete-me",
        "chmod-me",
        "keep",
    ] {
        fs::write(m.path(format!("d/{name}")), format!("original {name:>14}")).expect("write");
    }
    fs::create_dir(m.path("old-dir")).expect("mkdir");
    fs::write(
        m.path("old-dir/inside"),
        b"in a dir deleted while unmounted",
    )
    .expect("write");
    // A bulk of unchanged files, so that the start-up comparison has real work to do.
    for i in 0..3000 {
        let dir = m.path(format!("bulk/b{}/c{}", i % 20, i % 7));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(format!("f{i}")), format!("bulk file {i}")).expect("write");
    }
    m.flush();
    assert_mirrored(&m);
    m.unmount();

    // Behind the daemon's back, in the backing directory.
    let local = m.local.clone();
    let l = |rel: &str| local.join(rel);
    fs::write(l("d/edit-size"), b"edited while unmounted, now longer").expect("edit");
    let same = fs::read(l("d/edit-same-size")).expect("read");
    let mut changed = same.clone();
    changed[0] ^= 0x20;
    fs::write(l("d/edit-same-size"), &changed).expect("edit same size");
    fs::remove_file(l("d/delete-me")).expect("delete");
    fs::set_permissions(l("d/chmod-me"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(l("d/added"), b"added while unmounted").expect("add");
    fs::create_dir_all(l("new-dir/sub")).expect("mkdir");
    fs::write(l("new-dir/sub/file"), b"new dir tree").expect("add");
    fs::remove_dir_all(l("old-dir")).expect("rm -r");
    fs::remove_file(l("bulk/b19/c3/f2999")).expect("delete in the bulk");

    // A flush right after the mount returns covers what the start-up comparison finds.
    m.mount();
    m.flush();
    assert_mirrored(&m);
    let remote = remote_root(&m);
    assert!(!remote.join("d/delete-me").exists());
    assert!(!remote.join("old-dir").exists());
    assert_eq!(
        fs::read(remote.join("d/edit-same-size")).expect("remote"),
        changed
    );
    m.unmount();

    // Only a deletion while unmounted: no journal record says anything changed, so only the
    // start-up comparison can find it, and the first flush must wait for that comparison.
    fs::remove_file(l("bulk/b0/c0/f0")).expect("delete");
    m.mount();
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}

#[test]
fn a_remote_only_file_is_left_alone() {
    // The issue: "a file only on the remote and not in the manifest is left alone".
    let mut m = Mount::new();
    let remote = remote_root(&m);
    fs::write(remote.join("theirs.txt"), b"put there by someone else").expect("write");
    fs::write(m.path("ours.txt"), b"ours").expect("write");
    m.flush();
    m.unmount();
    fs::write(m.local.join("ours.txt"), b"ours, edited while unmounted").expect("edit");
    m.mount();
    m.flush();
    assert_eq!(
        fs::read(remote.join("theirs.txt")).expect("the remote-only file is still there"),
        b"put there by someone else"
    );
    assert_mirrored_except(&m, &|p| p == b"theirs.txt");
    // ... and reported (the start-up reconciliation saw it beside what it manages).
    let log = m.daemon_log();
    let st = m.status_json().to_string();
    assert!(
        log.contains("theirs.txt") || st.contains("theirs.txt"),
        "the remote-only file is reported neither in the daemon log nor in status\nlog:\n{}\nstatus: {st}",
        m.log_tail()
    );
    m.unmount();
}

/// `cp -a` (coreutils 9) gives a copied directory its final mode by setting the
/// `system.posix_acl_access` xattr, not by chmod: the mode change must reach the remote.
#[test]
fn mode_set_through_the_posix_acl_xattr_is_mirrored() {
    let mut m = Mount::new();
    let d = m.path("dir");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).expect("chmod");
    m.flush();
    assert_mirrored(&m);
    // user::rwx group::r-x other::r-x, exactly the bytes cp -a sends for a 0755 directory.
    let acl: [u8; 28] = [
        2, 0, 0, 0, 1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff, 0x20,
        0, 5, 0, 0xff, 0xff, 0xff, 0xff,
    ];
    let c = std::ffi::CString::new(d.as_os_str().as_bytes()).expect("cstring");
    let name = c"system.posix_acl_access";
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), acl.as_ptr().cast(), acl.len(), 0) };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    assert_eq!(
        fs::metadata(&d).expect("stat").mode() & 0o7777,
        0o755,
        "the ACL set the mode locally"
    );
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}
