//! The journal's unit tests: through its public face (append, replay, rotation, checkpoint,
//! compaction, group commit) and its behaviour on torn and damaged segments.

use super::codec::parse_frame;
use super::scan::SECTOR;
use super::segment::{parse_segment_name, segment_name, HEADER_LEN};
use super::*;
use tempfile::TempDir;

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

pub(super) fn store(path: &[u8], fill: u8) -> Record {
    Record::Store {
        path: path.to_vec(),
        size: u64::from(fill),
        sha256: [fill; 32],
        mtime: ts(1_700_000_000, 5),
        mode: 0o100644,
        ctime: ts(1_700_000_001, 6),
        ino: 42,
    }
}

/// Every variant, with paths that are not UTF-8 and contain newlines.
fn every_variant() -> Vec<Record> {
    let odd = b"d\xff\xfe/new\nline \xc3(".to_vec();
    vec![
        Record::Create {
            path: odd.clone(),
            mode: 0o100600,
        },
        Record::Dirty { path: odd.clone() },
        Record::Store {
            path: odd.clone(),
            size: u64::MAX,
            sha256: [0xab; 32],
            mtime: ts(-1, 999_999_999),
            mode: 0o100644,
            ctime: ts(0, 1),
            ino: u64::MAX,
        },
        Record::Mkdir {
            path: b"dir\n".to_vec(),
            mode: 0o40755,
        },
        Record::Mknod {
            path: b"fifo".to_vec(),
            mode: 0o10644,
            rdev: 0x0102_0304_0506_0708,
        },
        Record::Symlink {
            path: b"ln".to_vec(),
            target: b"../../\xff/etc/passwd\n".to_vec(),
        },
        Record::Link {
            existing: odd.clone(),
            path: b"hard\x80link".to_vec(),
        },
        Record::Unlink { path: odd.clone() },
        Record::Rmdir {
            path: b"dir\n".to_vec(),
        },
        Record::Rename {
            from: b"a/b".to_vec(),
            to: b"c\n/\xfe".to_vec(),
            flags: 2,
        },
        Record::SetAttr {
            path: odd.clone(),
            mode: Some(0o600),
            uid: None,
            gid: Some(100),
            size: Some(0),
            atime: None,
            mtime: Some(ts(i64::MIN, 0)),
        },
        Record::SetAttr {
            path: Vec::new(),
            mode: None,
            uid: Some(0),
            gid: None,
            size: None,
            atime: Some(ts(i64::MAX, u32::MAX)),
            mtime: None,
        },
        Record::SetXattr {
            path: odd.clone(),
            name: b"user.\xffx".to_vec(),
            value: vec![0, 1, 2, 255, b'\n'],
        },
        Record::RemoveXattr {
            path: odd,
            name: b"user.x".to_vec(),
        },
    ]
}

fn small(segment_bytes: u64) -> Options {
    Options { segment_bytes }
}

/// Other tests in this process fork children (sh, sha256sum); for the instant between a
/// fork and its exec, a child shares our just-closed lock's file description.
fn open(dir: &Path) -> (Journal, Replay) {
    for _ in 0..200 {
        match Journal::open(dir) {
            Err(JournalError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => return other.unwrap(),
        }
    }
    panic!("journal {} stays locked", dir.display());
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

pub(super) fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

pub(super) fn entry(seq: u64, record: Record) -> Entry {
    Entry { seq, record }
}

fn append_all(j: &Journal, records: &[Record]) -> Vec<Entry> {
    records
        .iter()
        .map(|r| entry(j.append(r).unwrap(), r.clone()))
        .collect()
}

#[test]
fn journal_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Journal>();
}

#[test]
fn every_variant_round_trips_through_the_codec_and_the_disk() {
    for record in every_variant() {
        let mut frame = unsealed_frame(&record).unwrap();
        seal_frame(&mut frame, 42);
        let parsed = parse_frame(&frame).unwrap();
        assert_eq!((parsed.seq, parsed.len), (42, frame.len()));
        assert_eq!(parsed.record, record);
    }
    let dir = TempDir::new().unwrap();
    let written = append_all(&open(dir.path()).0, &every_variant());
    let (_j, replay) = open(dir.path());
    assert_eq!(replay.entries, written);
    assert_eq!(
        seqs(&written),
        (1..=every_variant().len() as u64).collect::<Vec<_>>()
    );
}

#[test]
fn op_names_and_primary_paths() {
    let names: Vec<&str> = every_variant().iter().map(Record::op).collect();
    assert_eq!(
        names,
        [
            "create",
            "dirty",
            "store",
            "mkdir",
            "mknod",
            "symlink",
            "link",
            "unlink",
            "rmdir",
            "rename",
            "setattr",
            "setattr",
            "setxattr",
            "removexattr"
        ]
    );
    let rename = Record::Rename {
        from: b"a".to_vec(),
        to: b"b".to_vec(),
        flags: 0,
    };
    assert_eq!(rename.path(), b"b");
    let link = Record::Link {
        existing: b"a".to_vec(),
        path: b"c".to_vec(),
    };
    assert_eq!(link.path(), b"c");
}

#[test]
fn escaping_or_malformed_paths_are_rejected() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    for bad in [
        &b"/abs"[..],
        b"../x",
        b"a/../b",
        b"a/./b",
        b".",
        b"a//b",
        b"a/",
        b"a\0b",
    ] {
        let err = j.append(&Record::Dirty { path: bad.to_vec() }).unwrap_err();
        assert!(matches!(err, JournalError::InvalidRecord(_)), "{bad:?}");
        let link = Record::Link {
            existing: bad.to_vec(),
            path: b"ok".to_vec(),
        };
        assert!(j.append(&link).is_err(), "{bad:?}");
    }
    assert_eq!(j.next_seq(), 1);
    assert_eq!(j.size_bytes(), HEADER_LEN);
}

#[test]
fn empty_dir_is_a_fresh_journal_created_0700() {
    let dir = TempDir::new().unwrap();
    let jdir = dir.path().join("state/journal");
    let (j, replay) = open(&jdir);
    assert!(replay.entries.is_empty());
    assert_eq!((replay.next_seq, replay.torn_bytes), (1, 0));
    assert_eq!(
        j.append(&Record::Dirty {
            path: b"x".to_vec()
        })
        .unwrap(),
        1
    );
    let mode = fs::metadata(&jdir).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
}

#[test]
fn replay_after_reopen_continues_seqs() {
    let dir = TempDir::new().unwrap();
    let first = append_all(&open(dir.path()).0, &every_variant()[..5]);
    let (j, replay) = open(dir.path());
    assert_eq!(replay.entries, first);
    assert_eq!(replay.next_seq, 6);
    assert_eq!(j.append(&store(b"z", 1)).unwrap(), 6);
    drop(j);
    let (_, replay) = open(dir.path());
    assert_eq!(seqs(&replay.entries), [1, 2, 3, 4, 5, 6]);
}

#[test]
fn seqs_stay_contiguous_across_rotation() {
    let dir = TempDir::new().unwrap();
    let records: Vec<Record> = (0..40u8).map(|i| store(b"f", i)).collect();
    let written = {
        let (j, _) = Journal::open_with(dir.path(), small(300)).unwrap();
        let written = append_all(&j, &records);
        assert_eq!(j.size_bytes(), total_len(dir.path()));
        written
    };
    let files = segment_files(dir.path());
    assert!(files.len() > 5, "expected rotation, got {files:?}");
    for file in &files {
        assert!(fs::metadata(file).unwrap().len() <= 300);
    }
    let (j, replay) = Journal::open_with(dir.path(), small(300)).unwrap();
    assert_eq!(replay.entries, written);
    assert_eq!(j.append(&store(b"g", 0)).unwrap(), 41);
}

fn total_len(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

/// One segment with three records; returns its bytes and where the last record starts.
fn three_record_segment() -> (Vec<u8>, usize, Vec<Entry>) {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    let written = append_all(&j, &every_variant()[..2]);
    let last_start = j.size_bytes() as usize;
    j.append(&every_variant()[2]).unwrap();
    drop(j);
    let bytes = fs::read(dir.path().join(segment_name(1))).unwrap();
    (bytes, last_start, written)
}

fn reopen_after_damage(contents: &[u8], good: &[Entry], torn: u64) {
    let dir = TempDir::new().unwrap();
    let seg = dir.path().join(segment_name(1));
    fs::write(&seg, contents).unwrap();
    let (j, replay) = open(dir.path());
    assert_eq!(replay.entries, good);
    assert_eq!(replay.torn_bytes, torn);
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        contents.len() as u64 - torn
    );
    let next = store(b"after", 9);
    assert_eq!(j.append(&next).unwrap(), 3);
    drop(j);
    let (_, replay) = open(dir.path());
    let mut expected = good.to_vec();
    expected.push(entry(3, next));
    assert_eq!(replay.entries, expected);
    assert_eq!(replay.torn_bytes, 0);
}

#[test]
fn torn_tail_at_every_offset_is_dropped_and_log_continues() {
    let (bytes, last_start, good) = three_record_segment();
    for cut in last_start..bytes.len() {
        reopen_after_damage(&bytes[..cut], &good, (cut - last_start) as u64);
    }
}

#[test]
fn what_a_crash_leaves_after_the_last_record_is_dropped() {
    let (bytes, last_start, good) = three_record_segment();
    let intact = &bytes[..last_start];
    // A record that crosses a sector boundary, cut there, the file longer than it.
    let long = Record::Symlink {
        path: b"l".to_vec(),
        target: vec![b't'; 2 * SECTOR],
    };
    let mut long = unsealed_frame(&long).unwrap();
    seal_frame(&mut long, 3);
    let cut_then_zeros = [&long[..SECTOR - last_start], &[0u8; 4 * SECTOR][..]].concat();
    let short = [0xde, 0xad, 0xbe, 0xef, 1];
    for tail in [&[0u8; 40][..], &[0x40, 0, 0, 0, 1], &short, &cut_then_zeros] {
        let contents = [intact, tail].concat();
        reopen_after_damage(&contents, &good, tail.len() as u64);
    }
}

/// Writes `contents` as the only segment and expects `read` and `open` to refuse it as
/// corrupt at `offset`, leaving the file as it was.
fn assert_corrupt_at(contents: &[u8], offset: usize) {
    let dir = TempDir::new().unwrap();
    let seg = dir.path().join(segment_name(1));
    fs::write(&seg, contents).unwrap();
    for err in [
        Journal::read(dir.path()).unwrap_err(),
        Journal::open(dir.path()).unwrap_err(),
    ] {
        match &err {
            JournalError::Corrupt {
                segment,
                offset: at,
                ..
            } => assert_eq!((segment, *at), (&seg, offset as u64), "{err}"),
            other => panic!("expected Corrupt, got {other}"),
        }
        let shown = err.to_string();
        assert!(shown.contains("truncate -s"), "{shown}");
    }
    assert_eq!(fs::read(&seg).unwrap(), contents);
}

#[test]
fn flipped_byte_in_the_middle_of_the_last_segment_is_corrupt_not_torn() {
    let (bytes, last_start, _) = three_record_segment();
    let first = HEADER_LEN as usize;
    let second = first + parse_frame(&bytes[first..]).unwrap().len;
    for at in [
        second + 2,
        second + 6,
        second + 10,
        second + 20,
        last_start - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x10;
        assert_corrupt_at(&damaged, second);
    }
}

#[test]
fn damage_that_no_crash_leaves_at_the_end_is_corrupt() {
    let (bytes, last_start, _) = three_record_segment();
    let intact = &bytes[..last_start];
    let mut flipped = bytes.clone();
    flipped[bytes.len() - 3] ^= 0x01;
    assert_corrupt_at(&flipped, last_start);
    let absurd_len = [0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
    assert_corrupt_at(&[intact, &absurd_len].concat(), last_start);
    let mut wrong_seq = unsealed_frame(&store(b"x", 1)).unwrap();
    seal_frame(&mut wrong_seq, 7);
    assert_corrupt_at(&[intact, &wrong_seq].concat(), last_start);
    let garbage = [
        0x05, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    ];
    assert_corrupt_at(&[&bytes[..], &garbage].concat(), bytes.len());
}

fn three_segments(dir: &Path) -> Vec<PathBuf> {
    let (j, _) = Journal::open_with(dir, small(200)).unwrap();
    for i in 0..12u8 {
        j.append(&store(b"file", i)).unwrap();
    }
    drop(j);
    let files = segment_files(dir);
    assert!(files.len() >= 3, "{files:?}");
    files
}

#[test]
fn flipped_byte_in_an_earlier_segment_is_a_hard_error() {
    let dir = TempDir::new().unwrap();
    let files = three_segments(dir.path());
    let mut bytes = fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2 + HEADER_LEN as usize / 2;
    bytes[middle] ^= 0x40;
    fs::write(&files[0], &bytes).unwrap();
    let before = fs::read(&files[0]).unwrap();
    for err in [
        Journal::read(dir.path()).unwrap_err(),
        Journal::open(dir.path()).unwrap_err(),
    ] {
        match err {
            JournalError::Corrupt {
                segment, offset, ..
            } => {
                assert_eq!(segment, files[0]);
                assert!(offset >= HEADER_LEN && offset as usize <= middle);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
    }
    assert_eq!(fs::read(&files[0]).unwrap(), before);
    assert_eq!(segment_files(dir.path()), files);
}

#[test]
fn missing_middle_segment_is_a_hard_error() {
    let dir = TempDir::new().unwrap();
    let files = three_segments(dir.path());
    fs::remove_file(&files[1]).unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { segment, .. } if segment == files[2]));
}

#[test]
fn bad_header_is_a_hard_error() {
    let dir = TempDir::new().unwrap();
    let files = three_segments(dir.path());
    let last = files.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    bytes[0] = b'X';
    fs::write(last, &bytes).unwrap();
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::BadHeader { segment, .. } if &segment == last));
}

#[test]
fn read_reports_torn_tail_without_modifying_anything() {
    let (bytes, last_start, good) = three_record_segment();
    let dir = TempDir::new().unwrap();
    let seg = dir.path().join(segment_name(1));
    let cut = &bytes[..bytes.len() - 3];
    fs::write(&seg, cut).unwrap();
    fs::write(dir.path().join("0000000000000009.jnl.tmp"), b"x").unwrap();
    let listing = segment_files(dir.path());
    let replay = Journal::read(dir.path()).unwrap();
    assert_eq!(replay.entries, good);
    assert_eq!(replay.next_seq, 3);
    assert_eq!(replay.torn_bytes, (cut.len() - last_start) as u64);
    assert_eq!(fs::read(&seg).unwrap(), cut);
    assert_eq!(segment_files(dir.path()), listing);

    let missing = dir.path().join("nope");
    let replay = Journal::read(&missing).unwrap();
    assert_eq!((replay.next_seq, replay.entries.len()), (1, 0));
    assert!(!missing.exists());
}

#[test]
fn read_works_while_a_journal_is_open() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    let written = append_all(&j, &every_variant());
    let replay = Journal::read(dir.path()).unwrap();
    assert_eq!(replay.entries, written);
    assert_eq!(replay.torn_bytes, 0);
}

#[test]
fn second_writer_is_refused() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    assert!(matches!(
        Journal::open(dir.path()).unwrap_err(),
        JournalError::Locked { .. }
    ));
    drop(j);
    open(dir.path());
}

#[test]
fn follower_sees_every_later_append_in_order() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    j.append(&store(b"before", 1)).unwrap();
    let rx = j.follow();
    let seqs: Vec<u64> = (0..5u8)
        .map(|i| j.append(&store(b"f", i)).unwrap())
        .collect();
    let got: Vec<Entry> = rx.try_iter().collect();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(got[4].record, store(b"f", 4));
}

#[test]
fn checkpoint_deletes_only_fully_applied_segments() {
    let dir = TempDir::new().unwrap();
    let (j, _) = Journal::open_with(dir.path(), small(400)).unwrap();
    for i in 0..12u8 {
        j.append(&store(b"file", i)).unwrap();
    }
    let files = segment_files(dir.path());
    let firsts: Vec<u64> = files
        .iter()
        .map(|f| parse_segment_name(f.file_name().unwrap()).unwrap())
        .collect();
    assert!(firsts.len() >= 3 && firsts[0] == 1, "{firsts:?}");
    // Everything in the first segment plus part of the second is applied.
    j.checkpoint(firsts[1]).unwrap();
    assert_eq!(segment_files(dir.path()), files[1..]);
    assert_eq!(j.size_bytes(), total_len(dir.path()));
    j.checkpoint(firsts[1]).unwrap();
    assert_eq!(segment_files(dir.path()), files[1..]);
    drop(j);

    let (j, replay) = Journal::open_with(dir.path(), small(200)).unwrap();
    assert_eq!(seqs(&replay.entries), (firsts[1]..=12).collect::<Vec<_>>());
    j.checkpoint(12).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join(segment_name(13))]
    );
    drop(j);
    let (j, replay) = open(dir.path());
    assert!(replay.entries.is_empty());
    assert_eq!(replay.next_seq, 13);
    assert_eq!(j.append(&store(b"x", 1)).unwrap(), 13);
}

#[test]
fn compact_then_reopen_gives_exactly_the_live_entries() {
    let dir = TempDir::new().unwrap();
    let (j, _) = Journal::open_with(dir.path(), small(200)).unwrap();
    let written = append_all(&j, &(0..10u8).map(|i| store(b"f", i)).collect::<Vec<_>>());
    assert!(segment_files(dir.path()).len() > 1);
    let live: Vec<Entry> = [1, 4, 8].iter().map(|&i| written[i].clone()).collect();
    j.compact(&live).unwrap();
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join(segment_name(11))]
    );
    assert_eq!(j.size_bytes(), total_len(dir.path()));
    assert!(!j.is_dirty());
    let after = store(b"g", 1);
    assert_eq!(j.append(&after).unwrap(), 11);
    drop(j);

    let (j, replay) = Journal::open_with(dir.path(), small(200)).unwrap();
    let mut expected = live.clone();
    expected.push(entry(11, after));
    assert_eq!(replay.entries, expected);
    assert_eq!(replay.next_seq, 12);
    // Compacting to nothing still remembers where seqs are.
    j.compact(&[]).unwrap();
    drop(j);
    let (j, replay) = open(dir.path());
    assert!(replay.entries.is_empty());
    assert_eq!(j.append(&store(b"h", 1)).unwrap(), 12);
}

#[test]
fn compacted_segment_with_only_live_records_rotates_and_checkpoints_safely() {
    let dir = TempDir::new().unwrap();
    let (j, _) = Journal::open_with(dir.path(), small(150)).unwrap();
    let written = append_all(&j, &(0..6u8).map(|i| store(b"f", i)).collect::<Vec<_>>());
    j.compact(&written[2..]).unwrap();
    // The compacted segment is already past the limit, yet must not be sealed while it
    // shares its name with the next segment.
    let more = append_all(&j, &(0..4u8).map(|i| store(b"g", i)).collect::<Vec<_>>());
    drop(j);
    let (j, replay) = Journal::open_with(dir.path(), small(150)).unwrap();
    assert_eq!(replay.entries, [&written[2..], &more[..]].concat());
    j.compact(&written[5..]).unwrap();
    j.checkpoint(6).unwrap();
    drop(j);
    let (_, replay) = open(dir.path());
    assert!(replay.entries.is_empty());
    assert_eq!(replay.next_seq, 11);
}

#[test]
fn crash_before_old_segments_are_deleted_still_yields_the_compacted_state() {
    let dir = TempDir::new().unwrap();
    let (j, _) = Journal::open_with(dir.path(), small(200)).unwrap();
    let written = append_all(&j, &(0..10u8).map(|i| store(b"f", i)).collect::<Vec<_>>());
    let old: Vec<(PathBuf, Vec<u8>)> = segment_files(dir.path())
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let live = vec![written[3].clone()];
    j.compact(&live).unwrap();
    drop(j);
    for (path, bytes) in &old {
        fs::write(path, bytes).unwrap();
    }
    assert_eq!(Journal::read(dir.path()).unwrap().entries, live);
    let (_, replay) = open(dir.path());
    assert_eq!(replay.entries, live);
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join(segment_name(11))]
    );
}

#[test]
fn compact_rejects_unordered_or_future_seqs() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    let written = append_all(&j, &every_variant()[..3]);
    let unordered = [written[1].clone(), written[0].clone()];
    let future = [entry(4, store(b"x", 1))];
    for live in [&unordered[..], &future] {
        let err = j.compact(live).unwrap_err();
        assert!(matches!(err, JournalError::InvalidCompaction(_)));
    }
    drop(j);
    assert_eq!(open(dir.path()).1.entries, written);
}

#[test]
fn concurrent_appends_get_unique_contiguous_seqs() {
    let dir = TempDir::new().unwrap();
    let (j, _) = Journal::open_with(dir.path(), small(4096)).unwrap();
    let j = Arc::new(j);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                (0..250u32)
                    .map(|i| {
                        let path = format!("t{t}/f{i}").into_bytes();
                        let record = Record::Dirty { path };
                        let seq = j.append(&record).unwrap();
                        if i % 50 == 0 {
                            j.sync().unwrap();
                        }
                        entry(seq, record)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Entry> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by_key(|e| e.seq);
    assert_eq!(seqs(&all), (1..=1000).collect::<Vec<_>>());
    drop(j);
    let (_, replay) = Journal::open_with(dir.path(), small(4096)).unwrap();
    assert_eq!(replay.entries, all);
}

#[test]
fn short_write_is_truncated_away_and_costs_no_seq() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    j.append(&store(b"a", 1)).unwrap();
    let good_len = j.size_bytes();
    *j.hooks.short_write.lock() = Some(7);
    assert!(j.append(&store(b"b", 2)).is_err());
    let seg = dir.path().join(segment_name(1));
    assert_eq!(fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(j.size_bytes(), good_len);
    assert_eq!(j.append(&store(b"c", 3)).unwrap(), 2);
    drop(j);
    let (_, replay) = open(dir.path());
    assert_eq!(
        replay.entries,
        [entry(1, store(b"a", 1)), entry(2, store(b"c", 3))]
    );
    assert_eq!(replay.torn_bytes, 0);
}

#[test]
fn sync_clears_dirty_and_skips_when_already_covered() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    assert!(!j.is_dirty());
    j.sync().unwrap();
    assert_eq!(j.hooks.fdatasyncs.load(Ordering::Relaxed), 0);
    j.append(&store(b"a", 1)).unwrap();
    j.append(&store(b"a", 2)).unwrap();
    assert!(j.is_dirty());
    j.sync().unwrap();
    j.sync().unwrap();
    assert!(!j.is_dirty());
    assert_eq!(j.hooks.fdatasyncs.load(Ordering::Relaxed), 1);
    j.append(&store(b"a", 3)).unwrap();
    assert!(j.is_dirty());
    j.sync().unwrap();
    assert_eq!(j.hooks.fdatasyncs.load(Ordering::Relaxed), 2);
}

#[test]
fn sync_waiting_behind_a_covering_sync_does_not_sync_again() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    let j = Arc::new(j);
    j.append(&store(b"a", 1)).unwrap();
    let in_progress = j.sync_lock.lock();
    let waiter = {
        let j = Arc::clone(&j);
        std::thread::spawn(move || j.sync().unwrap())
    };
    // Let the waiter pass the lock-free check and queue on the lock behind the "other" sync.
    std::thread::sleep(std::time::Duration::from_millis(100));
    j.synced_seq.fetch_max(1, Ordering::AcqRel);
    drop(in_progress);
    waiter.join().unwrap();
    assert_eq!(j.hooks.fdatasyncs.load(Ordering::Relaxed), 0);
}

#[test]
fn compacted_segment_allows_sparse_seqs_only_before_its_own() {
    let dir = TempDir::new().unwrap();
    let (j, _) = open(dir.path());
    let written = append_all(&j, &(0..10u8).map(|i| store(b"f", i)).collect::<Vec<_>>());
    let live = vec![written[1].clone(), written[6].clone()];
    j.compact(&live).unwrap();
    let after = entry(j.append(&store(b"g", 1)).unwrap(), store(b"g", 1));
    drop(j);
    let mut stale = unsealed_frame(&store(b"x", 1)).unwrap();
    seal_frame(&mut stale, 9);
    let seg = dir.path().join(segment_name(11));
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&stale);
    fs::write(&seg, &bytes).unwrap();
    let err = Journal::read(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    bytes.truncate(bytes.len() - stale.len());
    fs::write(&seg, &bytes).unwrap();
    let (_, replay) = open(dir.path());
    assert_eq!(replay.entries, [&live[..], &[after]].concat());
}
