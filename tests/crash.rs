//! Crash safety: SIGKILL of the daemon mid-copy, journal replay on remount,
//! and torn journal tails.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{hashes_of, pattern, sha256_file, sha256_hex, status_json, Mount};

const FILES: usize = 300;

fn size_of(i: usize) -> usize {
    match i % 8 {
        0 => 0,
        1 => 1,
        2 => 4095,
        3 => 4096,
        4 => 65_537,
        5 => 1 << 20,
        _ => (i * 7919 * 37) % (1 << 20),
    }
}

fn name_of(i: usize) -> String {
    format!("copy/d{}/f{i:03}.bin", i % 10)
}

fn content_of(i: usize) -> Vec<u8> {
    pattern(i as u64 + 77, size_of(i))
}

/// What the copy thread has done, as acknowledged by the kernel.
#[derive(Default)]
struct Progress {
    /// Files whose close returned.
    done: Mutex<Vec<usize>>,
    /// The file being copied (usize::MAX before the first).
    current: AtomicUsize,
    /// Bytes of `current` whose write(2) returned.
    acked: AtomicUsize,
    /// Pause (file index, after this many bytes): tell `paused`, wait for `resume`.
    pause: Option<Pause>,
}

/// Where the copy stops for the kill: (file index, bytes written, tell, wait).
type Pause = (usize, usize, mpsc::Sender<()>, Mutex<mpsc::Receiver<()>>);

/// Copies files `range` into `root` one by one (create, write in 64 KiB
/// chunks, close), recording progress. Stops at the first error and returns it.
fn copy_files(root: &Path, range: std::ops::Range<usize>, prog: &Progress) -> Result<(), String> {
    for i in range {
        let p = root.join(name_of(i));
        let data = content_of(i);
        prog.acked.store(0, Ordering::SeqCst);
        prog.current.store(i, Ordering::SeqCst);
        let res = (|| -> std::io::Result<()> {
            fs::create_dir_all(p.parent().expect("parent"))?;
            let mut f = fs::File::create(&p)?;
            for chunk in data.chunks(64 * 1024) {
                f.write_all(chunk)?;
                let acked = prog.acked.fetch_add(chunk.len(), Ordering::SeqCst) + chunk.len();
                if let Some((at, after, paused, resume)) = &prog.pause {
                    if *at == i && acked == *after {
                        let _ = paused.send(());
                        let _ = resume.lock().expect("lock").recv();
                    }
                }
            }
            // close(2) explicitly: its error (FUSE flush) counts, std's drop ignores it
            let fd = f.into_raw_fd();
            // SAFETY: we own fd and close it once.
            if unsafe { libc::close(fd) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })();
        match res {
            Ok(()) => prog.done.lock().expect("lock").push(i),
            Err(e) => return Err(format!("file {i}: {e} (errno {:?})", e.raw_os_error())),
        }
    }
    Ok(())
}

/// Checks, after a flush, that each file in `must` is in LOCAL with its
/// expected content and has a `hashes` entry with its on-disk SHA-256; and
/// that every other file present in LOCAL under copy/ is hashed as on disk too.
fn check_hashes_against_disk(m: &Mount, must: &[usize]) {
    let st = m.status_json();
    let hashes = hashes_of(&st);
    let mut errors = Vec::new();
    for &i in must {
        let rel = name_of(i);
        let p = m.local.join(&rel);
        let disk = match fs::read(&p) {
            Ok(d) => d,
            Err(e) => {
                errors.push(format!(
                    "{rel}: completed before the kill but unreadable in LOCAL: {e}"
                ));
                continue;
            }
        };
        if disk != content_of(i) {
            errors.push(format!(
                "{rel}: completed before the kill but LOCAL holds {} bytes (sha {}), want {} bytes",
                disk.len(),
                sha256_hex(&disk),
                size_of(i)
            ));
        }
        let want = (disk.len() as u64, sha256_hex(&disk));
        match hashes.get(rel.as_bytes()) {
            None => errors.push(format!(
                "{rel}: completed before the kill, no `hashes` entry"
            )),
            Some(got) if *got != want => errors.push(format!(
                "{rel}: completed before the kill, hashes has {got:?}, disk {want:?}"
            )),
            _ => {}
        }
    }
    // Files present in LOCAL that were not known complete (the one in flight):
    // the remount's reconciliation must have hashed what is on disk.
    let mut others = Vec::new();
    for i in 0..FILES {
        if must.contains(&i) {
            continue;
        }
        let rel = name_of(i);
        let p = m.local.join(&rel);
        if let Ok(md) = fs::symlink_metadata(&p) {
            let want = (md.len(), sha256_file(&p));
            match hashes.get(rel.as_bytes()) {
                None => others.push(format!(
                    "{rel} ({} bytes on disk): no `hashes` entry",
                    md.len()
                )),
                Some(got) if *got != want => {
                    others.push(format!("{rel}: hashes has {got:?}, disk {want:?}"))
                }
                _ => {}
            }
        }
    }
    assert!(
        errors.is_empty(),
        "after kill -9 + remount + flush, {} problem(s) with files whose copy had completed:\n  {}\nlog:\n{}",
        errors.len(),
        errors.join("\n  "),
        m.log_tail()
    );
    // A file in flight at the kill may exist in LOCAL with no journal record
    // at all (killed between the backing create and its record): only the
    // start-up reconciliation of the local tree can find it. That is tested
    // deterministically by hash_on_close::preexisting_files_are_hashed_on_first_mount
    // and offline_changes_are_rehashed_on_remount; here it depends on where the
    // kill lands, so it is reported, not asserted.
    if !others.is_empty() {
        eprintln!(
            "note: {} file(s) left in flight at the kill are not hashed as on disk:\n  {}",
            others.len(),
            others.join("\n  ")
        );
    }
}

#[test]
fn kill9_mid_copy_then_replay() {
    kill9_mid_copy_in("passthrough");
}

#[test]
fn kill9_mid_copy_then_replay_nopassthrough() {
    kill9_mid_copy_in("nopassthrough");
}

fn kill9_mid_copy_in(mode: &str) {
    let mut m = Mount::builder().opt(mode).mount();
    // the thread copies a third of the files, then pauses in the middle of a
    // 1 MiB file (created, 512 KiB written and acknowledged, not closed);
    // the daemon is killed there and the copy resumes into the dead mount
    let target = FILES / 3;
    let pause_file = (target..FILES)
        .find(|&i| size_of(i) == 1 << 20)
        .expect("a 1 MiB file");
    let half = 512 * 1024;
    let (paused_tx, paused_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let prog = Arc::new(Progress {
        current: AtomicUsize::new(usize::MAX),
        pause: Some((pause_file, half, paused_tx, Mutex::new(resume_rx))),
        ..Default::default()
    });
    let (tx, rx) = mpsc::channel();
    {
        let (root, prog) = (m.mnt.clone(), prog.clone());
        std::thread::spawn(move || {
            let r = copy_files(&root, 0..FILES, &prog);
            let _ = tx.send(r);
        });
    }
    paused_rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the copy did not reach the pause point in 300 s");
    m.kill9();
    resume_tx.send(()).expect("resume the copy");
    let copy_result = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the copy thread did not end within 60 s after the daemon was killed");
    let completed: Vec<usize> = prog.done.lock().expect("lock").clone();
    let in_flight = prog.current.load(Ordering::SeqCst);
    let acked = prog.acked.load(Ordering::SeqCst);
    // With passthrough the kernel writes straight to the backing file, so the
    // rest of the file in flight may still be written after the kill; its
    // close (FUSE flush) fails, unless the kernel skips the flush.
    assert!(
        completed.len() == pause_file || completed.len() == pause_file + 1,
        "{} files completed, the copy paused in file {pause_file}",
        completed.len()
    );
    if in_flight == pause_file {
        assert!(
            acked >= half,
            "acknowledged bytes of the file in flight: {acked}"
        );
    }
    if mode == "nopassthrough" {
        assert_eq!(
            (completed.len(), in_flight, acked),
            (pause_file, pause_file, half),
            "(completed, in flight, acked): I/O through a dead daemon succeeded"
        );
    }
    match &copy_result {
        Err(e) => {
            // ENOTCONN for new requests, ECONNABORTED for ones in flight
            assert!(
                ["Some(107)", "Some(103)"].iter().any(|c| e.contains(c)),
                "copy failed with an unexpected error after the kill: {e}"
            );
        }
        Ok(()) => eprintln!(
            "note: the copy finished ({} files) before the kill took effect",
            completed.len()
        ),
    }
    eprintln!(
        "killed the daemon after {} completed files, file {in_flight} in flight with {acked} bytes acknowledged; \
         copy ended with {copy_result:?}",
        completed.len(),
    );

    // a dead daemon is reported as such, whatever its pid file says
    let st = m.status_json();
    assert_eq!(
        st["daemon"]["running"].as_bool(),
        Some(false),
        "status after kill -9 still says the daemon runs: {}",
        st["daemon"]
    );

    // fusermount3 -uz the dead mount, remount on the same local + state dir
    m.remount();
    m.flush();
    check_hashes_against_disk(&m, &completed);

    // The file in flight had its create and `acked` bytes of writes
    // acknowledged: it was left dirty, so the remount must have rehashed it.
    if copy_result.is_err() && acked > 0 {
        let rel = name_of(in_flight);
        let disk = fs::read(m.local.join(&rel)).unwrap_or_else(|e| {
            panic!("{rel}: acknowledged create + {acked} bytes, gone from LOCAL: {e}")
        });
        assert!(
            disk.len() >= acked && disk[..acked] == content_of(in_flight)[..acked],
            "{rel}: {acked} acknowledged bytes not all in LOCAL ({} bytes there)",
            disk.len()
        );
        common::assert_hash(&m.status_json(), rel.as_bytes(), &disk);
    }

    // the mirror carries on: finish the copy through the new mount
    let rest: Vec<usize> = (0..FILES).filter(|i| !completed.contains(i)).collect();
    let prog2 = Progress::default();
    for &i in &rest {
        copy_files(&m.mnt, i..i + 1, &prog2)
            .unwrap_or_else(|e| panic!("copy through the remounted fs: {e}"));
    }
    m.flush();
    let all: Vec<usize> = (0..FILES).collect();
    check_hashes_against_disk(&m, &all);
    m.unmount();
}

#[test]
fn kill9_after_close_before_flush() {
    // Closed files are acknowledged: killed before anyone asked for a flush,
    // they must still be hashed after the remount.
    let mut m = Mount::new();
    let mut written = BTreeMap::new();
    for i in 0..50 {
        let rel = format!("k/f{i:02}");
        let data = pattern(i + 500, (i as usize * 10_007) % 200_000);
        fs::create_dir_all(m.mnt.join("k")).expect("mkdir");
        fs::write(m.mnt.join(&rel), &data).expect("write");
        written.insert(rel, data);
    }
    m.kill9();
    m.remount();
    m.flush();
    let st = m.status_json();
    for (rel, data) in &written {
        assert_eq!(
            &fs::read(m.local.join(rel)).expect("read backing"),
            data,
            "{rel}: LOCAL content"
        );
        common::assert_hash(&st, rel.as_bytes(), data);
    }
    m.unmount();
}

/// Writes a few files, flushes and unmounts cleanly; returns the mount (not
/// mounted) and the status taken afterwards.
fn clean_journal() -> (Mount, serde_json::Value, Vec<(String, Vec<u8>)>) {
    // No remote: nothing is confirmed, so nothing is checkpointed away and the records stay.
    let mut m = Mount::builder().no_remote().mount();
    let mut files = Vec::new();
    for i in 0..5 {
        let rel = format!("t{i}.txt");
        let data = format!("torn tail test file {i}\n")
            .repeat(i + 1)
            .into_bytes();
        fs::write(m.mnt.join(&rel), &data).expect("write");
        m.flush();
        files.push((rel, data));
    }
    m.unmount();
    let st = status_json(&m.state);
    assert_eq!(
        st["journal"]["torn_bytes"].as_u64(),
        Some(0),
        "clean journal reports torn bytes: {st}"
    );
    assert_eq!(
        st["daemon"]["running"].as_bool(),
        Some(false),
        "daemon still running: {st}"
    );
    for (rel, data) in &files {
        common::assert_hash(&st, rel.as_bytes(), data);
    }
    (m, st, files)
}

fn records(st: &serde_json::Value) -> u64 {
    st["journal"]["records"]
        .as_u64()
        .unwrap_or_else(|| panic!("status without journal.records: {st}"))
}

fn torn(st: &serde_json::Value) -> u64 {
    st["journal"]["torn_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("status without journal.torn_bytes: {st}"))
}

fn last_segment(m: &Mount) -> std::path::PathBuf {
    let segs = m.journal_segments();
    let last = segs
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no journal segments in {}",
                m.state.join("journal").display()
            )
        })
        .clone();
    let len = fs::metadata(&last).expect("segment").len();
    assert!(
        len >= 16,
        "last segment {} is (nearly) empty: {len} bytes",
        last.display()
    );
    last
}

/// Remounts, unmounts, and checks the journal reads clean again with at
/// least `min_records` records and the given hashes.
fn remount_and_check_repaired(
    m: &mut Mount,
    min_records: u64,
    keep: &BTreeMap<Vec<u8>, (u64, String)>,
) {
    m.mount();
    let live = m.status_json();
    assert!(
        records(&live) >= min_records,
        "records after remount: {live}"
    );
    m.unmount();
    let st = status_json(&m.state);
    assert_eq!(torn(&st), 0, "torn tail still there after a remount: {st}");
    let h = hashes_of(&st);
    for (k, v) in keep {
        assert_eq!(
            h.get(k),
            Some(v),
            "hash of {:?} changed or vanished across the repair",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
fn torn_tail_garbage_appended() {
    let (mut m, st0, _files) = clean_journal();
    let seg = last_segment(&m);
    let len0 = fs::metadata(&seg).expect("segment").len();
    let garbage = [
        0xA5u8, 0x00, 0xFF, 0x13, 0x37, 0x42, 0x00, 0x01, 0x99, 0x7E, 0xEE, 0x00, 0x5A,
    ];
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open segment")
        .write_all(&garbage)
        .expect("append garbage");

    let st1 = status_json(&m.state);
    assert!(torn(&st1) > 0, "garbage tail not reported as torn: {st1}");
    assert!(
        torn(&st1) <= garbage.len() as u64,
        "torn_bytes {} exceeds the {} garbage bytes appended: {st1}",
        torn(&st1),
        garbage.len()
    );
    assert_eq!(
        records(&st1),
        records(&st0),
        "records before the torn tail: {st1}"
    );
    assert_eq!(
        hashes_of(&st1),
        hashes_of(&st0),
        "hashes changed by a garbage tail"
    );
    assert_eq!(
        fs::metadata(&seg).expect("segment").len(),
        len0 + garbage.len() as u64,
        "`status` (read-only) modified the journal"
    );

    remount_and_check_repaired(&mut m, records(&st0), &hashes_of(&st0));
    // the good records are intact, the garbage is gone from where it was
    let data = fs::read(&seg).expect("read segment");
    assert!(
        data.len() as u64 >= len0,
        "segment shrank below its good records"
    );
    assert!(
        !data[len0 as usize..].starts_with(&garbage),
        "garbage still at the end of the good records"
    );
}

#[test]
fn torn_tail_truncated_record() {
    let (mut m, st0, _files) = clean_journal();
    let seg = last_segment(&m);
    let len0 = fs::metadata(&seg).expect("segment").len();
    let cut = 3;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment")
        .set_len(len0 - cut)
        .expect("truncate segment");

    let st1 = status_json(&m.state);
    assert!(
        torn(&st1) > 0,
        "truncated record not reported as torn: {st1}"
    );
    assert_eq!(
        records(&st1),
        records(&st0) - 1,
        "exactly the last record is lost: {st1}"
    );
    let (h0, h1) = (hashes_of(&st0), hashes_of(&st1));
    let kept: BTreeMap<_, _> = h1
        .iter()
        .filter(|(k, v)| h0.get(*k) == Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(
        kept.len() + 1 >= h0.len(),
        "more than the last record's hash was lost: before {h0:?}, after {h1:?}"
    );
    assert_eq!(
        fs::metadata(&seg).expect("segment").len(),
        len0 - cut,
        "`status` (read-only) modified the journal"
    );

    remount_and_check_repaired(&mut m, records(&st0) - 1, &kept);
}

/// A flipped byte in the middle of the last segment is damage, not a torn tail: the start
/// stops, naming the segment and offset and how to go on, and touches nothing; cutting the
/// segment there as the message says lets the next start reconcile every file.
#[test]
fn damage_in_the_middle_of_the_last_segment_stops_the_start() {
    let (mut m, _st0, files) = clean_journal();
    let seg = last_segment(&m);
    let mut bytes = fs::read(&seg).expect("read segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&seg, &bytes).expect("damage segment");

    let out = common::run_with_timeout(m.mount_command(), common::CMD_WAIT);
    let said = format!("{}\n{}\n{}", out.stdout, out.stderr, m.log_tail());
    assert!(!out.ok(), "mount started over a damaged journal:\n{said}");
    assert!(
        !common::is_ftpsync_mounted(&m.mnt),
        "damaged journal, yet mounted"
    );
    assert!(
        said.contains(&seg.display().to_string()),
        "segment not named:\n{said}"
    );
    let offset: u64 = said
        .split("corrupt at offset ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset named:\n{said}"));
    assert!(
        offset <= middle as u64,
        "offset {offset} past the damage at {middle}"
    );
    assert!(
        said.contains("truncate -s"),
        "no way forward given:\n{said}"
    );
    assert_eq!(
        fs::read(&seg).expect("segment"),
        bytes,
        "the refused start modified the journal"
    );

    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(offset))
        .expect("cut the segment");
    m.mount();
    m.flush();
    let st = m.status_json();
    for (rel, data) in &files {
        common::assert_hash(&st, rel.as_bytes(), data);
    }
    m.unmount();
}

#[test]
fn lost_journal_tail_converges_after_remount() {
    // DESIGN: start-up reconciles the local tree, so even a lost journal tail
    // converges. Cut the last record, remount, flush: every file is hashed.
    let (mut m, _st0, files) = clean_journal();
    let seg = last_segment(&m);
    let len0 = fs::metadata(&seg).expect("segment").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment")
        .set_len(len0 - 3)
        .expect("truncate");
    m.mount();
    m.flush();
    let st = m.status_json();
    for (rel, data) in &files {
        common::assert_hash(&st, rel.as_bytes(), data);
    }
    m.unmount();
}

#[test]
fn sigterm_unmounts_cleanly() {
    let mut m = Mount::new();
    let data = pattern(4242, 500_000);
    fs::write(m.mnt.join("before-term.bin"), &data).expect("write");
    m.sigterm();
    // what was closed before the signal is hashed in the journal
    common::assert_hash(&status_json(&m.state), b"before-term.bin", &data);
    m.mount();
    assert_eq!(fs::read(m.mnt.join("before-term.bin")).expect("read"), data);
    m.unmount();
}

#[test]
fn a_restart_after_kill9_detaches_its_own_dead_mount() {
    let mut m = Mount::new();
    let data = pattern(7070, 300_000);
    fs::create_dir_all(m.mnt.join("d")).expect("mkdir");
    fs::write(m.mnt.join("d/before-kill.bin"), &data).expect("write");
    m.kill9();
    let dead = fs::metadata(&m.mnt).expect_err("a dead FUSE mount answers nothing");
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN), "{dead}");
    // No detach_dead(): the restart itself must clear its own dead mount.
    m.forget_dead_mount();
    m.mount();
    let log = m.daemon_log();
    assert!(
        log.contains("detached the stale mount left by a killed daemon at"),
        "{log}"
    );
    assert_eq!(
        common::mount_fstypes(&m.mnt),
        ["fuse.ftpsync"],
        "the new mount is the only one, not stacked on the dead one"
    );
    m.flush();
    common::mirror_tree::assert_mirrored(&m);
    m.unmount();
}

#[test]
fn a_live_mount_of_another_mirror_on_the_mountpoint_is_never_detached() {
    let m = Mount::builder().no_remote().mount();
    fs::write(m.mnt.join("mine"), b"first mount").expect("write");
    let (local, state) = (m.root.join("local2"), m.root.join("state2"));
    fs::create_dir(&local).expect("mkdir");
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.arg("mount")
        .arg("--state-dir")
        .arg(&state)
        .args(["--drain-timeout", "0"])
        .arg(&local)
        .arg(common::REMOTE)
        .arg(&m.mnt);
    let out = common::run_with_timeout(cmd, common::MOUNT_WAIT);
    let stacked = common::mount_fstypes(&m.mnt).len() > 1;
    if stacked {
        // Today's code mounts on top: take the second mount away again, the first stays.
        let pid = fs::read_to_string(state.join("ftpsync.pid")).unwrap_or_default();
        common::fusermount_u(&m.mnt);
        if let Ok(pid) = pid.trim().parse::<i32>() {
            common::wait_daemon(pid, common::EXIT_WAIT);
        }
    }
    assert!(
        !out.ok() && !stacked,
        "a second mount went onto a live one: {}\nstderr:\n{}",
        out.cmdline,
        out.stderr
    );
    let mnt = m.mnt.to_string_lossy();
    assert!(
        out.stderr.contains(&*mnt) && out.stderr.contains("fuse.ftpsync"),
        "the refusal names neither the mountpoint nor the live mount:\n{}",
        out.stderr
    );
    assert_eq!(
        fs::read(m.mnt.join("mine")).expect("the first mount still serves"),
        b"first mount"
    );
    assert_eq!(common::mount_fstypes(&m.mnt), ["fuse.ftpsync"]);
}
