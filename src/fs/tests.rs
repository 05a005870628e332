//! The filesystem layer without a kernel: the calls `fuse.rs` makes, and the journal records
//! they leave (through `crate::testkit::Harness`, whose engine follows the same journal).

use crate::journal::Record;
use crate::testkit::{sha256, Harness};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn stores_of(h: &Harness, path: &str) -> Vec<(u64, [u8; 32])> {
    h.records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Store {
                path: p,
                size,
                sha256,
                ..
            } if p == path.as_bytes() => Some((size, sha256)),
            _ => None,
        })
        .collect()
}

fn settle(h: &Harness) {
    assert!(h.fs().settle(PATIENCE), "hashes settle");
}

#[test]
fn create_write_release_journals_a_store_with_the_right_sha256() {
    let h = Harness::new();
    let (ino, fh) = h.create("f", 0o640).expect("create");
    h.write(fh, 0, b"hello ").expect("write");
    h.write(fh, 6, b"world").expect("write");
    h.close(ino, fh).expect("release");
    settle(&h);
    assert_eq!(stores_of(&h, "f"), vec![(11, sha256(b"hello world"))]);
    let records = h.records();
    assert!(
        matches!(&records[0], Record::Create { path, mode: 0o640 } if path == b"f"),
        "{records:?}"
    );
    // The Store says what the file looks like now: its mode and mtime.
    let store = records
        .iter()
        .find(|r| matches!(r, Record::Store { .. }))
        .expect("a store");
    let md = std::fs::metadata(h.local_path("f")).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert!(
        matches!(store, Record::Store { mode: 0o640, mtime, .. } if mtime.sec == md.mtime()),
        "{store:?}"
    );
}

#[test]
fn a_file_open_for_writing_is_not_hashed_or_sent_until_its_release() {
    let h = Harness::new();
    let (ino, fh) = h.create("open", 0o644).expect("create");
    h.write(fh, 0, b"first").expect("write");
    settle(&h);
    h.flush(PATIENCE)
        .expect("a flush skips files open for writing");
    assert_eq!(stores_of(&h, "open"), vec![], "no hash while open");
    assert_eq!(h.server_file("open"), None, "nothing sent while open");
    h.write(fh, 5, b" second").expect("write");
    h.close(ino, fh).expect("release");
    h.flush(PATIENCE).expect("flush");
    assert_eq!(stores_of(&h, "open"), vec![(12, sha256(b"first second"))]);
    assert_eq!(h.server_file("open").as_deref(), Some(&b"first second"[..]));
}

#[test]
fn a_close_with_another_writer_left_sends_what_it_closed_and_keeps_the_file_dirty() {
    let h = Harness::new();
    h.write_file("f", b"v1").expect("write");
    h.flush(PATIENCE).expect("flush");
    let (ino, a) = h.open("f", libc::O_WRONLY).expect("open a");
    let (_, b) = h.open("f", libc::O_WRONLY).expect("open b");
    h.write(a, 0, b"v2").expect("write");
    h.close(ino, a).expect("release a");
    h.flush(PATIENCE)
        .expect("a flush skips files open for writing");
    // The close hashes what it closed, and says that is not final: the other writer may go on.
    let last = h.records().into_iter().rev().find(|r| r.path() == b"f");
    assert_eq!(last.as_ref().map(Record::op), Some("dirty"), "{last:?}");
    assert_eq!(stores_of(&h, "f").last(), Some(&(2, sha256(b"v2"))));
    assert_eq!(h.server_file("f").as_deref(), Some(&b"v2"[..]));
    h.write(b, 2, b"+").expect("write");
    h.close(ino, b).expect("release b");
    h.flush(PATIENCE).expect("flush");
    assert_eq!(stores_of(&h, "f").last(), Some(&(3, sha256(b"v2+"))));
    assert_eq!(h.server_file("f").as_deref(), Some(&b"v2+"[..]));
}

#[test]
fn namespace_operations_journal_their_records() {
    let h = Harness::new();
    h.mkdir("d", 0o700).expect("mkdir");
    h.write_file("d/f", b"x").expect("write");
    h.symlink("d/l", "f").expect("symlink");
    h.rename("d/f", "g").expect("rename");
    h.chmod("g", 0o600).expect("chmod");
    h.unlink("d/l").expect("unlink");
    h.rmdir("d").expect("rmdir");
    let ops: Vec<Record> = h
        .records()
        .into_iter()
        .filter(|r| !matches!(r, Record::Store { .. } | Record::Create { .. }))
        .collect();
    let expected = [
        Record::Mkdir {
            path: b"d".to_vec(),
            mode: 0o700,
        },
        Record::Symlink {
            path: b"d/l".to_vec(),
            target: b"f".to_vec(),
        },
        Record::Rename {
            from: b"d/f".to_vec(),
            to: b"g".to_vec(),
            flags: 0,
        },
    ];
    assert_eq!(ops[..3], expected[..], "{ops:?}");
    assert!(
        matches!(&ops[3], Record::SetAttr { path, mode: Some(0o600), .. } if path == b"g"),
        "{ops:?}"
    );
    assert_eq!(
        ops[4..],
        [
            Record::Unlink {
                path: b"d/l".to_vec()
            },
            Record::Rmdir {
                path: b"d".to_vec()
            }
        ]
    );
    assert_eq!(h.local_file("g").expect("read"), b"x");
}

#[test]
fn a_truncate_journals_dirty_then_a_store_of_the_new_contents() {
    let h = Harness::new();
    h.write_file("f", b"0123456789").expect("write");
    settle(&h);
    h.truncate("f", 4).expect("truncate");
    settle(&h);
    let tail: Vec<&'static str> = h.records().iter().rev().take(2).map(Record::op).collect();
    assert_eq!(tail, ["store", "dirty"]);
    assert_eq!(stores_of(&h, "f").last(), Some(&(4, sha256(b"0123"))));
}

#[test]
fn append_pwrite_and_a_new_mtime_each_journal_a_store_of_what_the_file_is_now() {
    let h = Harness::new();
    h.write_file("f", b"abc").expect("write");
    h.append("f", b"def").expect("append");
    settle(&h);
    assert_eq!(stores_of(&h, "f").last(), Some(&(6, sha256(b"abcdef"))));
    h.pwrite("f", 1, b"XY").expect("pwrite");
    settle(&h);
    assert_eq!(stores_of(&h, "f").last(), Some(&(6, sha256(b"aXYdef"))));
    let before = stores_of(&h, "f").len();
    h.touch("f", 1_000_000).expect("utimens");
    settle(&h);
    let last = h.records().into_iter().rev().find(|r| r.op() == "store");
    assert!(
        matches!(&last, Some(Record::Store { mtime, .. }) if mtime.sec == 1_000_000),
        "{last:?}"
    );
    assert_eq!(stores_of(&h, "f").len(), before + 1);
}
