//! Tests of the writer and the check together: the chain written, then damaged as damage or an
//! editor would, then checked.

use super::*;
use crate::statedir::{AUDIT_HEAD, AUDIT_LOCK, AUDIT_LOG};
use serde_json::json;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

fn fill(a: &Audit, n: usize) {
    for i in 0..n {
        a.record(
            "confirmed",
            json!({ "path": format!("dir/file{i}.txt"), "size": i }),
        );
    }
}

/// A state dir holding `n` lines in audit.log alone.
pub(crate) fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    fill(&Audit::open(d.path()).unwrap(), n);
    let log = d.path().join(AUDIT_LOG);
    (d, log)
}

pub(crate) fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

pub(crate) fn rewrite(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn broken(dir: &Path) -> Break {
    let r = check(dir).unwrap();
    match r.first_break {
        Some(b) => b,
        None => panic!("intact: {}", r.summary()),
    }
}

fn intact(dir: &Path) -> CheckReport {
    let r = check(dir).unwrap();
    assert!(r.intact(), "{}", r.summary());
    r
}

#[test]
fn line_format() {
    let (d, log) = log_of(2);
    let l = lines(&log);
    assert_eq!(l.len(), 2);
    let first: Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(first["prev"], GENESIS);
    assert_eq!(first["event"], "confirmed");
    assert_eq!(first["path"], "dir/file0.txt");
    let time = first["time"].as_str().unwrap();
    assert_eq!(time.len(), "2026-11-25T23:03:47.123Z".len(), "{time}");
    assert!(crate::utc::parse_rfc3339(time).is_some());
    assert!(l[0].starts_with("{\"time\":") && l[0].contains("\"event\":"));
    let second: Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(second["prev"], sha256_hex(l[0].as_bytes()));
    let r = intact(d.path());
    assert_eq!((r.lines, r.files, r.starts_after_rotation), (2, 1, false));
}

#[test]
fn chain_intact_after_many_appends() {
    let (d, _) = log_of(500);
    assert_eq!(intact(d.path()).lines, 500);
    let head = read_head(d.path()).unwrap().unwrap();
    assert_eq!(head.lines, 500);
}

#[test]
fn chain_continues_across_rotations() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::open_with(d.path(), 2000, 100).unwrap();
    fill(&a, 300);
    let r = intact(d.path());
    assert_eq!(r.lines, 300);
    assert!(r.files > 5, "{r:?}");
    assert!(!r.starts_after_rotation);
    for (_, p) in rotated_files(d.path()).unwrap() {
        assert!(fs::metadata(&p).unwrap().len() <= 2000);
    }
    // The first line of each file carries the hash of the last line of the one before.
    let first = lines(&d.path().join(AUDIT_LOG))[0].clone();
    let before = lines(&d.path().join("audit.log.1")).pop().unwrap();
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["prev"], sha256_hex(before.as_bytes()));
}

#[test]
fn rotation_keeps_only_keep_files() {
    let d = tempfile::tempdir().unwrap();
    fill(&Audit::open_with(d.path(), 1000, 3).unwrap(), 300);
    let rotated = rotated_files(d.path()).unwrap();
    assert_eq!(rotated.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    let r = intact(d.path());
    assert!(r.starts_after_rotation, "{r:?}");
    assert_eq!(r.files, 4);
    assert!(r.summary().contains("rotated away"));
}

#[test]
fn editing_a_middle_line_is_named() {
    let (d, log) = log_of(10);
    let mut l = lines(&log);
    l[4] = l[4].replace("file4", "file5");
    rewrite(&log, &l);
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 6), "{b}");
    assert!(b.problem.contains("line 5 was edited"), "{b}");
    assert!(b.to_string().starts_with("audit.log line 6: "), "{b}");
}

#[test]
fn deleting_a_middle_line_is_named() {
    let (d, log) = log_of(10);
    let mut l = lines(&log);
    l.remove(4);
    rewrite(&log, &l);
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 5), "{b}");
    assert!(b.problem.contains("removed"), "{b}");
}

#[test]
fn editing_the_last_line_is_named() {
    let (d, log) = log_of(10);
    let mut l = lines(&log);
    l[9] = l[9].replace("file9", "fileX");
    rewrite(&log, &l);
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 10), "{b}");
    assert!(b.problem.contains("edited"), "{b}");
}

#[test]
fn deleting_the_last_lines_is_named() {
    for keep in [9, 5, 0] {
        let (d, log) = log_of(10);
        let mut l = lines(&log);
        l.truncate(keep);
        rewrite(&log, &l);
        let b = broken(d.path());
        assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 10), "{b}");
        assert!(b.problem.contains("removed from its end"), "{b}");
    }
}

#[test]
fn garbage_lines_are_named() {
    for garbage in ["garbage", "", "{\"time\":\"x\",\"event\":\"y\"}", "[1,2]"] {
        let (d, log) = log_of(5);
        let mut l = lines(&log);
        l.insert(2, garbage.to_string());
        rewrite(&log, &l);
        let b = broken(d.path());
        assert_eq!(
            (b.file.as_str(), b.line),
            (AUDIT_LOG, 3),
            "{garbage:?}: {b}"
        );
    }
}

#[test]
fn a_cut_last_line_is_named() {
    let (d, log) = log_of(5);
    let text = fs::read(&log).unwrap();
    fs::write(&log, &text[..text.len() - 10]).unwrap();
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 5), "{b}");
    assert!(b.problem.contains("incomplete"), "{b}");
}

#[test]
fn breaks_in_rotated_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    fill(&Audit::open_with(d.path(), 1000, 100).unwrap(), 60);
    let two = d.path().join("audit.log.2");
    let mut l = lines(&two);
    l[1] = l[1].replace("file", "elif");
    rewrite(&two, &l);
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), ("audit.log.2", 3), "{b}");

    let d = tempfile::tempdir().unwrap();
    fill(&Audit::open_with(d.path(), 1000, 100).unwrap(), 60);
    fs::remove_file(d.path().join("audit.log.2")).unwrap();
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), ("audit.log.1", 1), "{b}");
    assert!(b.problem.contains("audit.log.3 line"), "{b}");
}

#[test]
fn a_missing_head_is_a_break() {
    let (d, _) = log_of(3);
    fs::remove_file(d.path().join(AUDIT_HEAD)).unwrap();
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 3), "{b}");
    assert!(b.problem.contains("audit.head is missing"), "{b}");
    // An empty log needs no head.
    let d = tempfile::tempdir().unwrap();
    Audit::open(d.path()).unwrap();
    assert_eq!(intact(d.path()).lines, 0);
}

#[test]
fn later_appends_keep_a_removed_tail_visible() {
    let (d, log) = log_of(10);
    let mut l = lines(&log);
    l.truncate(8);
    rewrite(&log, &l);
    fill(&Audit::open(d.path()).unwrap(), 3);
    let b = broken(d.path());
    assert_eq!((b.file.as_str(), b.line), (AUDIT_LOG, 9), "{b}");
}

#[test]
fn a_head_left_behind_by_a_crash_is_not_a_break() {
    let (d, _) = log_of(5);
    let head = fs::read(d.path().join(AUDIT_HEAD)).unwrap();
    let a = Audit::open(d.path()).unwrap();
    fill(&a, 3);
    fs::write(d.path().join(AUDIT_HEAD), head).unwrap();
    assert_eq!(intact(d.path()).after_head, 3);
    fill(&a, 1);
    let r = intact(d.path());
    assert_eq!((r.lines, r.after_head), (9, 0));
    assert_eq!(read_head(d.path()).unwrap().unwrap().lines, 9);
}

#[test]
fn an_interrupted_write_is_dropped_on_the_next_append() {
    let (d, log) = log_of(4);
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"{\"time\":\"2026-11-").unwrap();
    fill(&Audit::open(d.path()).unwrap(), 2);
    assert_eq!(intact(d.path()).lines, 6);
}

#[test]
fn a_write_cut_short_right_after_a_rotation_is_dropped_too() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::open_with(d.path(), 2000, 100).unwrap();
    fill(&a, 40);
    // Rotate by hand, as the writer does, and cut the first write to the new file short.
    let log = d.path().join(AUDIT_LOG);
    let n = rotated_files(d.path()).unwrap().len();
    for i in (1..=n).rev() {
        let from = d.path().join(format!("{AUDIT_LOG}.{i}"));
        fs::rename(&from, d.path().join(format!("{AUDIT_LOG}.{}", i + 1))).unwrap();
    }
    let whole = intact(d.path()).lines;
    fs::rename(&log, d.path().join(format!("{AUDIT_LOG}.1"))).unwrap();
    fs::write(&log, b"{\"time\":\"2026-11-").unwrap();
    fill(&a, 2);
    assert_eq!(intact(d.path()).lines, whole + 2);
}

#[test]
fn two_writers_keep_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::open_with(d.path(), 4000, 100).unwrap();
    let b = Audit::open_with(d.path(), 4000, 100).unwrap();
    for i in 0..50 {
        a.record("a", json!({ "i": i }));
        b.record("b", json!({ "i": i }));
    }
    assert_eq!(intact(d.path()).lines, 100);

    let writers: Vec<_> = (0..2)
        .map(|w| {
            let a = Arc::new(Audit::open_with(d.path(), 4000, 100).unwrap());
            std::thread::spawn(move || {
                let threads: Vec<_> = (0..2)
                    .map(|t| {
                        let a = a.clone();
                        std::thread::spawn(move || {
                            for i in 0..100 {
                                a.record("t", json!({ "w": w, "t": t, "i": i }));
                            }
                        })
                    })
                    .collect();
                threads.into_iter().for_each(|t| t.join().unwrap());
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let r = intact(d.path());
    assert_eq!(r.lines, 500);
    assert!(r.files > 1 && !r.starts_after_rotation, "{r:?}");
}

#[test]
fn files_are_0600_and_shared_dirs_refused() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::open_with(d.path(), 500, 5).unwrap();
    fill(&a, 20);
    a.sync();
    let mut names = vec![AUDIT_LOG, AUDIT_HEAD, AUDIT_LOCK, "audit.log.1"];
    names.sort();
    for name in names {
        let mode = fs::metadata(d.path().join(name)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{name}");
    }
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let e = Audit::open(d.path()).err().unwrap();
    assert!(e.to_string().contains("writable by group or others"), "{e}");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let log = d.path().join(AUDIT_LOG);
    fs::set_permissions(&log, fs::Permissions::from_mode(0o620)).unwrap();
    let e = Audit::open(d.path()).err().unwrap();
    assert!(e.to_string().contains("audit.log"), "{e}");
}

#[test]
fn a_missing_state_dir_is_created_private() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("a/b");
    Audit::open(&state).unwrap();
    assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn write_errors_do_not_reach_the_caller() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::open(d.path()).unwrap();
    fs::remove_file(d.path().join(AUDIT_LOG)).unwrap();
    fs::create_dir(d.path().join(AUDIT_LOG)).unwrap();
    a.record("lost", json!({}));
    a.record("lost too", json!({}));
    assert_eq!(a.inner.lock().errors.len(), 1);
    fs::remove_dir(d.path().join(AUDIT_LOG)).unwrap();
    a.record("kept", json!({}));
    assert!(a.inner.lock().errors.is_empty());
    intact(d.path());
}

#[test]
fn reserved_keys_are_renamed() {
    let (d, log) = log_of(0);
    let a = Audit::open(d.path()).unwrap();
    a.record(
        "x",
        json!({ "time": 1, "prev": "forged", "event": "other", "time_": 2 }),
    );
    a.record("y", json!("not an object"));
    let l = lines(&log);
    let v: Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(v["event"], "x");
    assert_eq!(v["prev"], GENESIS);
    assert_eq!((&v["time_"], &v["time__"]), (&json!(2), &json!(1)));
    assert_eq!(
        (&v["prev_"], &v["event_"]),
        (&json!("forged"), &json!("other"))
    );
    assert!(l[0].ends_with(&format!(",\"prev\":\"{GENESIS}\"}}")));
    let v: Value = serde_json::from_str(&l[1]).unwrap();
    assert_eq!(v["value"], "not an object");
    intact(d.path());
}
