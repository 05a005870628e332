//! Property tests of the record codec and of replay over damaged segments, bounded in cases so
//! that they run in every `cargo test`; failures print the shrunk input and are kept as in
//! `remote::path::fuzz`.

use crate::relpath::{child_path, RelPath};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use tempfile::TempDir;

use super::coalesce::ancestors;
use super::codec::{
    decode_payload, encode_payload, parse_frame, Encoder, Frame, FRAME_HEADER_LEN, MAX_PAYLOAD,
};
use super::record::is_valid_rel_path;
use super::scan::SECTOR;
use super::segment::{header, segment_name, HEADER_LEN};
use super::*;
use crate::remote::path::fuzz::{config, hostile_path, valid_name, valid_rel, Bytes};

/// Measures the largest single allocation a closure makes on this thread, so a test can
/// see that no length read from disk sizes an allocation before it is checked against the
/// bytes that are there. Installed for the whole test binary: outside `during` it costs
/// one thread-local read per allocation.
mod largest_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        /// `Some(largest so far)` while measuring on this thread.
        static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn note(size: usize) {
        // try_with: the allocator may be called while this thread's locals are torn down.
        let _ = LARGEST.try_with(|largest| {
            if let Some(max) = largest.get() {
                largest.set(Some(max.max(size)));
            }
        });
    }

    struct Counting;

    // SAFETY: every call goes to the system allocator unchanged; sizes are only observed.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            System.realloc(ptr, layout, new_size)
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// `f`'s result and the largest single allocation (or reallocation) it made.
    pub(super) fn during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST.with(|largest| largest.set(Some(0)));
        let out = f();
        (out, LARGEST.with(|largest| largest.take()).unwrap_or(0))
    }
}

/// What decoding `input_len` bytes may allocate at once: copies of the input and error
/// messages quoting it (escaped), never anything sized by a length field.
fn alloc_bound(input_len: usize) -> usize {
    16 * input_len + 64 * 1024
}

fn rel_path() -> impl Strategy<Value = RelPath> {
    prop_oneof![1 => Just(Vec::new()), 9 => valid_rel().prop_map(|p| p.0)]
}

/// Symlink targets, xattr names and values: any bytes, now and then long.
fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => vec(any::<u8>(), 0..24), 1 => vec(any::<u8>(), 0..3000)]
}

fn time() -> impl Strategy<Value = Timestamp> {
    (any::<i64>(), any::<u32>()).prop_map(|(sec, nsec)| Timestamp { sec, nsec })
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        (rel_path(), any::<u32>()).prop_map(|(path, mode)| Record::Create { path, mode }),
        rel_path().prop_map(|path| Record::Dirty { path }),
        (
            rel_path(),
            any::<u64>(),
            any::<[u8; 32]>(),
            time(),
            any::<u32>(),
            time(),
            any::<u64>()
        )
            .prop_map(|(path, size, sha256, mtime, mode, ctime, ino)| {
                Record::Store {
                    path,
                    size,
                    sha256,
                    mtime,
                    mode,
                    ctime,
                    ino,
                }
            }),
        (rel_path(), any::<u32>()).prop_map(|(path, mode)| Record::Mkdir { path, mode }),
        (rel_path(), any::<u32>(), any::<u64>()).prop_map(|(path, mode, rdev)| Record::Mknod {
            path,
            mode,
            rdev
        }),
        (rel_path(), blob()).prop_map(|(path, target)| Record::Symlink { path, target }),
        (rel_path(), rel_path()).prop_map(|(existing, path)| Record::Link { existing, path }),
        rel_path().prop_map(|path| Record::Unlink { path }),
        rel_path().prop_map(|path| Record::Rmdir { path }),
        (rel_path(), rel_path(), any::<u32>()).prop_map(|(from, to, flags)| Record::Rename {
            from,
            to,
            flags
        }),
        (
            rel_path(),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            option::of(any::<u64>()),
            option::of(time()),
            option::of(time())
        )
            .prop_map(|(path, mode, uid, gid, size, atime, mtime)| {
                Record::SetAttr {
                    path,
                    mode,
                    uid,
                    gid,
                    size,
                    atime,
                    mtime,
                }
            }),
        (rel_path(), blob(), blob()).prop_map(|(path, name, value)| Record::SetXattr {
            path,
            name,
            value
        }),
        (rel_path(), blob()).prop_map(|(path, name)| Record::RemoveXattr { path, name }),
    ]
}

fn frame(record: &Record, seq: u64) -> Vec<u8> {
    let mut frame = unsealed_frame(record).unwrap();
    seal_frame(&mut frame, seq);
    frame
}

/// Lengths a corrupt field may claim: huge, just over or at the limit, or anything.
fn claimed_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        select(vec![
            u32::MAX,
            i32::MAX as u32,
            MAX_PAYLOAD as u32 + 1,
            MAX_PAYLOAD as u32,
            0
        ]),
        any::<u32>(),
        0..64u32,
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte (the mask is never 0).
    Flip(Index, u8),
    /// Overwrite 4 bytes with a length, as if a length field said it.
    Claim(Index, u32),
    Truncate(Index),
    Append(Bytes),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<Index>(), claimed_len()).prop_map(|(at, len)| Mutation::Claim(at, len)),
        any::<Index>().prop_map(Mutation::Truncate),
        vec(any::<u8>(), 1..40).prop_map(|b| Mutation::Append(Bytes(b))),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        match m {
            Mutation::Flip(at, mask) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
            Mutation::Claim(at, len) if bytes.len() >= 4 => {
                let at = at.index(bytes.len() - 3);
                bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            Mutation::Append(more) => bytes.extend_from_slice(&more.0),
            _ => {}
        }
    }
}

/// `payload` framed with a correct length and CRC, so what it holds reaches the decoder.
fn reseal(payload: &[u8], seq: u64) -> Vec<u8> {
    let mut frame = vec![0u8; FRAME_HEADER_LEN];
    frame.extend_from_slice(payload);
    frame[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    seal_frame(&mut frame, seq);
    frame
}

/// A frame `parse_frame` accepted must be exactly how its record is encoded: then it can
/// only be a record that was written (or a CRC collision), and no two byte strings decode
/// to one record.
fn check_parsed(buf: &[u8], parsed: Result<Frame, String>) -> Result<(), TestCaseError> {
    if let Ok(f) = parsed {
        prop_assert!(f.len <= buf.len());
        prop_assert_eq!(frame(&f.record, f.seq), buf[..f.len].to_vec());
    }
    Ok(())
}

/// One segment file as laid out for a test: its bytes and where each frame ends.
struct Laid {
    first_seq: u64,
    bytes: Vec<u8>,
    /// Offsets of the end of the header and of each frame.
    bounds: Vec<usize>,
}

/// `n` records laid out as the journal writes them: segments of seqs 1.., split before the
/// records at `cuts`, the last one possibly empty (as after a rotation). Returns each
/// segment's bytes and frame boundaries, and the entries.
fn lay_out(records: &[Record], cuts: &[Index], empty_tail: bool) -> (Vec<Laid>, Vec<Entry>) {
    let entries: Vec<Entry> = (1..)
        .zip(records)
        .map(|(seq, r)| Entry {
            seq,
            record: r.clone(),
        })
        .collect();
    let mut starts: Vec<usize> = cuts.iter().map(|c| c.index(records.len().max(1))).collect();
    starts.push(0);
    starts.sort_unstable();
    starts.dedup();
    if empty_tail && !records.is_empty() {
        starts.push(records.len());
    }
    let mut segments = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(records.len());
        let first_seq = start as u64 + 1;
        let mut bytes = header(first_seq, 0).to_vec();
        let mut bounds = vec![bytes.len()];
        for e in &entries[start..end] {
            bytes.extend_from_slice(&frame(&e.record, e.seq));
            bounds.push(bytes.len());
        }
        segments.push(Laid {
            first_seq,
            bytes,
            bounds,
        });
    }
    (segments, entries)
}

fn write_segments(dir: &Path, segments: &[Laid]) {
    for seg in segments {
        fs::write(dir.join(segment_name(seg.first_seq)), &seg.bytes).unwrap();
    }
}

/// What a crash can leave of the last segment, after its header: the file cut anywhere,
/// then maybe zeros from the next sector boundary on.
#[derive(Debug, Clone)]
struct Crash {
    cut: Index,
    zeros: usize,
}

fn crash() -> impl Strategy<Value = Crash> {
    (
        any::<Index>(),
        prop_oneof![2 => Just(0), 1 => 1..3 * SECTOR],
    )
        .prop_map(|(cut, zeros)| Crash { cut, zeros })
}

/// Damage to the tail of the last segment, after its header.
#[derive(Debug, Clone)]
enum TailDamage {
    Crash(Crash),
    Garbage(Bytes),
    /// A frame header claiming this payload length for the next seq, then these bytes.
    HugeLength(u32, Bytes),
    /// XOR these bytes of the records (masks never 0).
    Flip(Vec<(Index, u8)>),
}

fn tail_damage() -> impl Strategy<Value = TailDamage> {
    prop_oneof![
        crash().prop_map(TailDamage::Crash),
        vec(any::<u8>(), 1..64).prop_map(|b| TailDamage::Garbage(Bytes(b))),
        (claimed_len(), vec(any::<u8>(), 0..64))
            .prop_map(|(len, b)| TailDamage::HugeLength(len, Bytes(b))),
        vec((any::<Index>(), 1..=255u8), 1..4).prop_map(TailDamage::Flip),
    ]
}

/// How the journal must read a damaged segment.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Dropped as a torn tail.
    Torn,
    /// Refused as corrupt where the good records end.
    Corrupt,
    /// Either (damage to the last record alone can look like a cut).
    Either,
}

/// What survives damage: how many records stay readable, the length of those good bytes,
/// and how the rest must be read.
struct Damaged {
    kept: usize,
    good_len: usize,
    verdict: Verdict,
}

/// Applies `damage` to a segment and says what must survive it.
fn damage_tail(seg: &mut Laid, damage: &TailDamage, next_seq: u64) -> Damaged {
    let (bytes, bounds) = (&mut seg.bytes, &seg.bounds);
    let intact = |end: usize| bounds.iter().filter(|&&b| b <= end).count() - 1;
    let records_at = HEADER_LEN as usize;
    let all = bounds.len() - 1;
    let (kept, verdict) = match damage {
        TailDamage::Crash(Crash { cut, zeros }) => {
            let mut at = records_at + cut.index(bytes.len() - records_at + 1);
            if *zeros > 0 {
                // Sectors reach the disk whole.
                at = (at / SECTOR * SECTOR).max(records_at);
            }
            bytes.truncate(at);
            bytes.resize(at + zeros, 0);
            (intact(at), Verdict::Torn)
        }
        TailDamage::Garbage(garbage) => {
            bytes.extend_from_slice(&garbage.0);
            (all, Verdict::Either)
        }
        TailDamage::HugeLength(len, rest) => {
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
            bytes.extend_from_slice(&next_seq.to_le_bytes());
            bytes.extend_from_slice(&rest.0);
            (all, Verdict::Either)
        }
        TailDamage::Flip(flips) => {
            let mut hit = vec![false; all];
            if bytes.len() > records_at {
                for (at, mask) in flips {
                    let at = records_at + at.index(bytes.len() - records_at);
                    bytes[at] ^= mask;
                    hit[intact(at)] = true;
                }
            }
            let first = hit.iter().position(|&h| h).unwrap_or(all);
            // A good record after the damage: dropping the tail would lose it.
            let lost = hit[first..].iter().any(|&h| !h);
            (
                first,
                if lost {
                    Verdict::Corrupt
                } else {
                    Verdict::Either
                },
            )
        }
    };
    Damaged {
        kept,
        good_len: bounds[kept],
        verdict,
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Any sequence of records, framed at any seqs, decodes back exactly, frame by frame,
    /// whatever follows the last frame.
    #[test]
    fn records_round_trip(
        records in vec(record(), 1..6),
        first_seq in prop_oneof![1..1000u64, any::<u64>().prop_map(|s| s >> 1)],
        after in vec(any::<u8>(), 0..32),
    ) {
        let mut buf = Vec::new();
        for (seq, record) in (first_seq..).zip(&records) {
            buf.extend_from_slice(&frame(record, seq));
        }
        let body_len = buf.len();
        buf.extend_from_slice(&after);
        let mut offset = 0;
        for (seq, record) in (first_seq..).zip(&records) {
            let parsed = parse_frame(&buf[offset..]).unwrap();
            prop_assert_eq!(parsed.seq, seq);
            prop_assert_eq!(&parsed.record, record);
            offset += parsed.len;
            let payload_len = parsed.len - FRAME_HEADER_LEN;
            let payload = &buf[offset - payload_len..offset];
            prop_assert_eq!(&decode_payload(payload).unwrap(), record);
        }
        prop_assert_eq!(offset, body_len);
    }

    /// Mutated encodings (bit flips, lengths overwritten with huge claims, truncation,
    /// appended bytes) never panic, never allocate by a claimed length, and decode only to
    /// a record whose encoding is exactly those bytes. Resealing with a good CRC puts the
    /// hostile payload past the checksum, into the field decoder.
    #[test]
    fn mutated_frames_decode_only_to_what_encodes_to_them(
        record in record(),
        seq in any::<u64>(),
        mutations in vec(mutation(), 1..5),
        resealed in any::<bool>(),
    ) {
        let good = frame(&record, seq);
        let mut buf = if resealed {
            good[FRAME_HEADER_LEN..].to_vec()
        } else {
            good.clone()
        };
        mutate(&mut buf, &mutations);
        if resealed {
            let (decoded, largest) = largest_alloc::during(|| decode_payload(&buf));
            prop_assert!(largest <= alloc_bound(buf.len()), "{} bytes allocated", largest);
            if let Ok(r) = &decoded {
                let mut again = Vec::new();
                encode_payload(r, &mut Encoder(&mut again));
                prop_assert_eq!(&again, &buf);
            }
            buf = reseal(&buf, seq);
            let parsed = parse_frame(&buf);
            prop_assert_eq!(parsed.is_ok(), decoded.is_ok());
        }
        let (parsed, largest) = largest_alloc::during(|| parse_frame(&buf));
        prop_assert!(largest <= alloc_bound(buf.len()), "{} bytes allocated", largest);
        check_parsed(&buf, parsed)?;
    }

    /// Frame headers claiming any length (up to 4 GiB) over a few bytes, and plain
    /// garbage, are refused without panicking or allocating by the claim.
    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_by_a_claimed_length(
        len in claimed_len(),
        crc in any::<u32>(),
        seq in any::<u64>(),
        tail in vec(any::<u8>(), 0..256),
        raw in any::<bool>(),
    ) {
        let buf = if raw {
            tail
        } else {
            [&len.to_le_bytes()[..], &crc.to_le_bytes(), &seq.to_le_bytes(), &tail].concat()
        };
        let (parsed, largest) = largest_alloc::during(|| parse_frame(&buf));
        prop_assert!(largest <= alloc_bound(buf.len()), "{} bytes allocated", largest);
        check_parsed(&buf, parsed)?;
        let (decoded, largest) = largest_alloc::during(|| decode_payload(&buf));
        prop_assert!(largest <= alloc_bound(buf.len()), "{} bytes allocated", largest);
        if let Ok(r) = decoded {
            let mut again = Vec::new();
            encode_payload(&r, &mut Encoder(&mut again));
            prop_assert_eq!(again, buf);
        }
    }
}

proptest! {
    // Each case decodes the payload once per byte: quadratic in its length.
    #![proptest_config(config(256))]

    /// Every single-byte change of a payload is refused or decodes to a record that
    /// encodes to exactly the changed bytes; every strict prefix and every extension is
    /// refused.
    #[test]
    fn every_byte_of_a_payload_is_checked(
        record in record(),
        mask in 1..=255u8,
        extra in any::<u8>(),
    ) {
        let mut payload = Vec::new();
        encode_payload(&record, &mut Encoder(&mut payload));
        for at in 0..payload.len() {
            let mut changed = payload.clone();
            changed[at] ^= mask;
            if let Ok(r) = decode_payload(&changed) {
                let mut again = Vec::new();
                encode_payload(&r, &mut Encoder(&mut again));
                prop_assert_eq!(again, changed, "byte {} ^ {:#x}", at, mask);
            }
            prop_assert!(decode_payload(&payload[..at]).is_err(), "prefix of {} bytes", at);
        }
        payload.push(extra);
        prop_assert!(decode_payload(&payload).is_err());
    }
}

proptest! {
    #![proptest_config(config(2048))]

    /// The journal accepts exactly the paths the remote accepts (the root included), so a
    /// journaled path can always be mirrored; both see the same ancestors; `child_path`
    /// builds what `split_parent` takes apart.
    #[test]
    fn journal_and_remote_agree_on_paths(
        p in hostile_path(),
        dir in rel_path(),
        name in valid_name(),
    ) {
        use crate::remote::path;
        let p = &p.0;
        let valid = is_valid_rel_path(p);
        prop_assert_eq!(valid, path::validate(p, true).is_ok());
        prop_assert_eq!(unsealed_frame(&Record::Dirty { path: p.clone() }).is_ok(), valid);
        let rename = Record::Rename { from: p.clone(), to: b"ok".to_vec(), flags: 0 };
        prop_assert_eq!(unsealed_frame(&rename).is_ok(), valid);
        let ours: Vec<&[u8]> = ancestors(p).collect();
        let theirs: Vec<&[u8]> = path::ancestors(p).collect();
        if p.is_empty() {
            prop_assert!(ours.is_empty());
        } else {
            prop_assert_eq!(ours[0], b"");
            prop_assert_eq!(&ours[1..], &theirs[..]);
        }
        let child = child_path(&dir, &name);
        prop_assert!(is_valid_rel_path(&child));
        prop_assert_eq!(path::split_parent(&child), (&dir[..], &name[..]));
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A valid journal whose last segment has a damaged tail reads back exactly the records
    /// before the damage and reports the rest as torn bytes when a crash could have left
    /// it, and is refused as corrupt at the damage when a good record follows it; reading
    /// modifies nothing and allocates no more than the files' size.
    #[test]
    fn damaged_tail_reads_back_a_prefix(
        records in vec(record(), 0..10),
        cuts in vec(any::<Index>(), 0..3),
        empty_tail in any::<bool>(),
        damage in tail_damage(),
    ) {
        let (mut segments, entries) = lay_out(&records, &cuts, empty_tail);
        let last = segments.last_mut().unwrap();
        let damaged = damage_tail(last, &damage, entries.len() as u64 + 1);
        let kept = (last.first_seq - 1) as usize + damaged.kept;
        let torn = (last.bytes.len() - damaged.good_len) as u64;
        let last_path = segment_name(last.first_seq);
        let dir = TempDir::new().unwrap();
        write_segments(dir.path(), &segments);
        let total: usize = segments.iter().map(|seg| seg.bytes.len()).sum();
        let (replay, largest) = largest_alloc::during(|| Journal::read(dir.path()));
        prop_assert!(largest <= alloc_bound(total), "{} bytes allocated", largest);
        match replay {
            Ok(replay) => {
                prop_assert!(damaged.verdict != Verdict::Corrupt, "{:?}", replay);
                prop_assert_eq!(&replay.entries, &entries[..kept].to_vec());
                prop_assert_eq!(replay.next_seq, kept as u64 + 1);
                prop_assert_eq!(replay.torn_bytes, torn);
            }
            Err(JournalError::Corrupt { segment, offset, .. }) => {
                prop_assert!(damaged.verdict != Verdict::Torn, "refused a torn tail");
                prop_assert_eq!(segment, dir.path().join(last_path));
                prop_assert_eq!(offset, damaged.good_len as u64);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
        for seg in &segments {
            let path = dir.path().join(segment_name(seg.first_seq));
            prop_assert_eq!(&fs::read(path).unwrap(), &seg.bytes);
        }
    }

    /// Damage anywhere, headers and earlier segments included, is refused as corrupt or
    /// reads back a prefix of the records written, each under its own seq. (A damaged
    /// header fails its checksum: a flipped "compacted" flag cannot make a segment
    /// supersede the ones before it.)
    #[test]
    fn damage_anywhere_never_invents_records(
        records in vec(record(), 1..10),
        cuts in vec(any::<Index>(), 0..3),
        which in any::<Index>(),
        mutations in vec(mutation(), 1..4),
    ) {
        let (mut segments, entries) = lay_out(&records, &cuts, false);
        let which = which.index(segments.len());
        let is_last = which + 1 == segments.len();
        mutate(&mut segments[which].bytes, &mutations);
        let dir = TempDir::new().unwrap();
        write_segments(dir.path(), &segments);
        match Journal::read(dir.path()) {
            Err(JournalError::Corrupt { .. } | JournalError::BadHeader { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {}", other),
            Ok(replay) => {
                let mut last_seq = 0;
                for e in &replay.entries {
                    prop_assert!(e.seq > last_seq);
                    prop_assert_eq!(e, &entries[e.seq as usize - 1]);
                    last_seq = e.seq;
                }
                let kept = replay.entries.len();
                prop_assert!(is_last || kept == entries.len(), "{:?}", replay);
                prop_assert_eq!(&replay.entries, &entries[..kept].to_vec());
                prop_assert_eq!(replay.next_seq, kept as u64 + 1);
            }
        }
    }
}

fn unlink(path: &[u8]) -> Record {
    Record::Unlink {
        path: path.to_vec(),
    }
}

#[test]
fn a_flipped_compacted_flag_is_refused_not_obeyed() {
    let dir = TempDir::new().unwrap();
    let first = [
        header(1, 0).to_vec(),
        frame(&unlink(b"a"), 1),
        frame(&unlink(b"b"), 2),
    ]
    .concat();
    let mut second = [header(3, 0).to_vec(), frame(&unlink(b"c"), 3)].concat();
    second[12] |= FLAG_COMPACTED as u8;
    fs::write(dir.path().join(segment_name(1)), &first).unwrap();
    fs::write(dir.path().join(segment_name(3)), &second).unwrap();
    let err = Journal::read(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::BadHeader { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(Journal::open(dir.path()).is_err());
    for seq in [1, 3] {
        assert!(
            dir.path().join(segment_name(seq)).exists(),
            "a segment was deleted"
        );
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// `Journal::open` on a directory whose last segment has a torn tail: replays the
    /// records before the damage, reports and truncates the torn bytes, and the log goes on
    /// from the next seq.
    #[test]
    fn open_drops_a_torn_tail_and_continues(
        records in vec(record(), 1..8),
        cuts in vec(any::<Index>(), 0..2),
        crash in crash(),
        next in record(),
    ) {
        let (mut segments, entries) = lay_out(&records, &cuts, false);
        let last = segments.last_mut().unwrap();
        let last_path = segment_name(last.first_seq);
        let damaged = damage_tail(last, &TailDamage::Crash(crash), entries.len() as u64 + 1);
        let (kept, good_len) = (damaged.kept, damaged.good_len);
        let kept = (last.first_seq - 1) as usize + kept;
        let torn = (last.bytes.len() - good_len) as u64;
        let dir = TempDir::new().unwrap();
        write_segments(dir.path(), &segments);
        let (journal, replay) = Journal::open(dir.path()).unwrap();
        prop_assert_eq!(&replay.entries, &entries[..kept].to_vec());
        prop_assert_eq!(replay.torn_bytes, torn);
        let last_len = fs::metadata(dir.path().join(&last_path)).unwrap().len();
        prop_assert_eq!(last_len, good_len as u64);
        prop_assert_eq!(journal.append(&next).unwrap(), kept as u64 + 1);
        drop(journal);
        let replay = Journal::read(dir.path()).unwrap();
        let mut expected = entries[..kept].to_vec();
        expected.push(Entry { seq: kept as u64 + 1, record: next });
        prop_assert_eq!(replay.entries, expected);
        prop_assert_eq!(replay.torn_bytes, 0);
    }
}
