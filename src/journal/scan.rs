//! Reading the segments back, at start-up and for `ftpsync status`, without modifying
//! anything: the records in seq order, and where they stop. A crash may leave a torn tail, which
//! replay drops; any other flaw is damage that must stop the replay, since dropping it would
//! silently lose the records after it.

use super::codec::{parse_frame, FRAME_HEADER_LEN, MAX_PAYLOAD};
use super::segment::{parse_header, Header, Listing, Segment, HEADER_LEN};
use super::{At, Entry, JournalError, Replay};
use crate::statedir;
use std::path::{Path, PathBuf};

pub(super) struct Torn {
    pub(super) offset: u64,
    pub(super) bytes: u64,
    pub(super) reason: String,
}

pub(super) struct Scan {
    pub(super) entries: Vec<Entry>,
    pub(super) next_seq: u64,
    /// Retained segments, oldest first; `len` stops before a torn tail.
    pub(super) segments: Vec<Segment>,
    /// Segments older than the newest compacted one.
    pub(super) superseded: Vec<PathBuf>,
    /// In the last segment only.
    pub(super) torn: Option<Torn>,
}

impl Scan {
    pub(super) fn into_replay(self) -> Replay {
        Replay {
            entries: self.entries,
            next_seq: self.next_seq,
            torn_bytes: self.torn.map_or(0, |t| t.bytes),
        }
    }
}

/// Reads the segments of `listing` without modifying anything.
pub(super) fn scan(listing: &Listing) -> Result<Scan, JournalError> {
    let start = listing
        .iter()
        .rposition(|(_, h)| h.compacted())
        .unwrap_or(0);
    let mut out = Scan {
        entries: Vec::new(),
        next_seq: 1,
        segments: Vec::new(),
        superseded: listing[..start].iter().map(|(p, _)| p.clone()).collect(),
        torn: None,
    };
    let retained = &listing[start..];
    let mut seqs = SeqCheck::default();
    for (i, (path, listed)) in retained.iter().enumerate() {
        let is_last = i + 1 == retained.len();
        let segment = scan_segment(path, listed, i == 0, &mut seqs, &mut out.entries)?;
        if let Some(bad) = segment.bad {
            let torn = bad.torn_tail.filter(|_| is_last);
            let Some(bytes) = torn else {
                return Err(JournalError::Corrupt {
                    segment: path.clone(),
                    offset: bad.offset,
                    reason: bad.reason,
                });
            };
            out.torn = Some(Torn {
                offset: bad.offset,
                bytes,
                reason: bad.reason,
            });
        }
        out.segments.push(segment.seg);
    }
    if !retained.is_empty() {
        out.next_seq = seqs.expected;
    }
    Ok(out)
}

struct ScannedSegment {
    seg: Segment,
    /// Where the records stop, if they stop before the end of the file.
    bad: Option<Bad>,
}

/// The first offset of a segment that does not hold the next good record.
struct Bad {
    offset: u64,
    reason: String,
    /// `Some(bytes to drop)` when what is there from `offset` on is what a crash leaves.
    torn_tail: Option<u64>,
}

fn scan_segment(
    path: &Path,
    listed: &Header,
    is_first: bool,
    seqs: &mut SeqCheck,
    entries: &mut Vec<Entry>,
) -> Result<ScannedSegment, JournalError> {
    let bytes = statedir::read(path).at(path)?;
    let header = parse_header(path, &bytes, listed.first_seq)?;
    if header != *listed {
        return Err(JournalError::BadHeader {
            segment: path.to_path_buf(),
            reason: "header changed while reading".into(),
        });
    }
    seqs.begin(&header, is_first)
        .map_err(|reason| JournalError::Corrupt {
            segment: path.to_path_buf(),
            offset: 0,
            reason,
        })?;
    let mut offset = HEADER_LEN as usize;
    let mut last_seq = None;
    let mut bad = None;
    while offset < bytes.len() {
        match parse_frame(&bytes[offset..]).and_then(|f| seqs.accept(f.seq).map(|()| f)) {
            Ok(frame) => {
                last_seq = Some(frame.seq);
                offset += frame.len;
                entries.push(Entry {
                    seq: frame.seq,
                    record: frame.record,
                });
            }
            Err(reason) => {
                bad = Some(classify_tail(&bytes, offset, reason, seqs));
                break;
            }
        }
    }
    let seg = Segment {
        first_seq: header.first_seq,
        path: path.to_path_buf(),
        len: offset as u64,
        last_seq,
    };
    Ok(ScannedSegment { seg, bad })
}

/// Tells a torn tail from damage, for the bytes from `offset` (where a record failed) to the
/// end of the segment. A crash only ever cuts the end of the log: it leaves the start of one
/// record, possibly followed by zeros (a file's new length can reach the disk before its
/// data). Anything else is damage, and so is any good record with a later seq further on:
/// dropping the tail would silently lose it.
fn classify_tail(bytes: &[u8], offset: usize, reason: String, seqs: &SeqCheck) -> Bad {
    let rest = &bytes[offset..];
    let mut bad = Bad {
        offset: offset as u64,
        reason,
        torn_tail: None,
    };
    if let Some(at) = later_record(rest, seqs) {
        bad.reason = format!(
            "{}, yet a good record follows at offset {}",
            bad.reason,
            offset + at
        );
    } else if is_cut_short(bytes, offset) {
        bad.torn_tail = Some(rest.len() as u64);
    } else {
        bad.reason = format!(
            "{} (a complete record or other bytes, not one cut short by a crash)",
            bad.reason
        );
    }
    bad
}

/// Whether the bytes from `offset` to the end of a segment, where no record parses, are the
/// start of one frame that a crash cut short: the file ends inside it (or inside its header),
/// or its unwritten rest reads as zeros from a sector boundary on (the new length reached the
/// disk before the data). A frame whose checksum holds is complete, so it was not cut.
fn is_cut_short(bytes: &[u8], offset: usize) -> bool {
    let rest = &bytes[offset..];
    let written = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    // Too short to judge: a record header cut short.
    let Some(len) = rest
        .first_chunk::<4>()
        .filter(|_| rest.len() >= FRAME_HEADER_LEN)
    else {
        return true;
    };
    let len = u32::from_le_bytes(*len) as usize;
    if written == 0 {
        return true;
    }
    if len > MAX_PAYLOAD || is_sealed(rest, len) {
        return false;
    }
    let end = FRAME_HEADER_LEN + len;
    let zeros_from = (offset + written).next_multiple_of(SECTOR);
    rest.len() < end || zeros_from < offset + end
}

/// Unwritten file data reads as zeros in whole sectors at least.
pub(super) const SECTOR: usize = 512;

/// Whether `frame` holds `len` payload bytes and its checksum matches them.
fn is_sealed(frame: &[u8], len: usize) -> bool {
    let (Some(crc), Some(sealed)) = (frame.get(4..8), frame.get(8..FRAME_HEADER_LEN + len)) else {
        return false;
    };
    crc == crc32fast::hash(sealed).to_le_bytes()
}

/// The offset in `rest` (past its first byte) of a good record that could come later in this
/// log. Frames whose seq cannot follow are skipped before their CRC is computed, so a long
/// damaged tail is scanned in linear time.
fn later_record(rest: &[u8], seqs: &SeqCheck) -> Option<usize> {
    let last_start = rest.len().checked_sub(FRAME_HEADER_LEN)?;
    (1..=last_start).find(|&at| {
        let frame = &rest[at..];
        let seq = frame[8..]
            .first_chunk::<8>()
            .map_or(0, |b| u64::from_le_bytes(*b));
        seqs.may_follow(seq, frame.len() as u64) && parse_frame(frame).is_ok()
    })
}

/// Enforces the seq rules: contiguous, except the sparse live prefix of a compacted segment.
#[derive(Default)]
struct SeqCheck {
    expected: u64,
    /// Seqs below this may skip (the live prefix of a compacted segment); 0 = none.
    sparse_below: u64,
    sparse_floor: u64,
}

impl SeqCheck {
    fn begin(&mut self, header: &Header, is_first: bool) -> Result<(), String> {
        if !is_first && header.first_seq != self.expected {
            return Err(format!(
                "segment starts at seq {} but the previous one ends before {} (missing segment?)",
                header.first_seq, self.expected
            ));
        }
        self.expected = header.first_seq;
        self.sparse_below = if header.compacted() {
            header.first_seq
        } else {
            0
        };
        self.sparse_floor = 1;
        Ok(())
    }

    fn accept(&mut self, seq: u64) -> Result<(), String> {
        if seq < self.sparse_below && seq >= self.sparse_floor {
            self.sparse_floor = seq + 1;
            return Ok(());
        }
        if seq != self.expected {
            return Err(format!("seq {seq} where {} was expected", self.expected));
        }
        self.expected += 1;
        self.sparse_below = 0;
        Ok(())
    }

    /// Whether a record after the one that failed could carry `seq`, with `room` bytes left
    /// for it and the records before it.
    fn may_follow(&self, seq: u64, room: u64) -> bool {
        let lowest = if self.sparse_below != 0 {
            self.sparse_floor
        } else {
            self.expected + 1
        };
        let highest = self.expected.saturating_add(room / FRAME_HEADER_LEN as u64);
        (lowest..=highest).contains(&seq)
    }
}
