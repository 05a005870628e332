//! The journal: an append-only, versioned, durable intent log, one record per mutation of the
//! mirrored directory, written before the operation is acknowledged.
//!
//! On-disk format (all integers little-endian):
//! - Segments `dir/{first_seq:016}.jnl`. Header, 32 bytes: magic `FTPSJNL\0`, version u32 (2),
//!   flags u32, first_seq u64 (must equal the file name), CRC32 of those 24 bytes u32, zero
//!   u32. The CRC matters: a flipped "compacted" flag would make a segment supersede the
//!   segments before it.
//! - Records follow: payload length u32, CRC32 of (seq bytes ++ payload) u32, seq u64, payload.
//!   Payload: tag u8, then the fields in declaration order; byte strings are u32 length + bytes,
//!   `Option` a 0/1 byte then the value, `Timestamp` sec i64 + nsec u32. A payload over 64 MiB
//!   is corruption.
//! - Seqs are contiguous across segments, and a segment's first record carries its first_seq.
//! - Flags: 0, or 1 = compacted. `compact` writes a compacted segment: it opens with the live
//!   records (increasing, sparse, all below first_seq) and then continues contiguously from
//!   first_seq. It supersedes every segment named before it, so the rename that publishes it is
//!   the commit point and deleting the older files is mere cleanup.
//! - A segment is born as `*.jnl.tmp`, fsync'd, then renamed, so no header is ever torn: only
//!   the tail of the last segment can be, and replay drops that tail. A torn tail is the start
//!   of one record, cut short or zero from a sector boundary on; anything else (a good record
//!   after a bad one, a complete record with a wrong seq) is corruption and stops the replay.
//!
//! Lock order: `Journal::sync_lock` before `Journal::state`.
//!
//! The pieces: `record` (what a record says), `codec` (its bytes in a frame), `segment` (the
//! files and their headers), `scan` (reading them back, telling a torn tail from damage) and
//! `coalesce`. This file is the journal's face: the writer, and the types the rest of the crate
//! uses.

mod coalesce;
mod codec;
#[cfg(test)]
mod fuzz;
mod record;
mod scan;
mod segment;
#[cfg(test)]
mod tests;

use crate::statedir::{self, Access};
use codec::{encode_entries, seal_frame, unsealed_frame};
use scan::{scan, Scan, Torn};
use segment::{list_headers, Active, Segment, SegmentDir, FLAG_COMPACTED};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use coalesce::coalesce;
pub use record::{Entry, Record, Timestamp};

use parking_lot::Mutex;

#[derive(Debug, Default)]
pub struct Replay {
    pub entries: Vec<Entry>,
    pub next_seq: u64,
    /// Bytes of a torn tail dropped (`open`) or that would be dropped (`read`).
    pub torn_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O: {0}")]
    Io(#[from] io::Error),
    #[error("journal {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal segment {} is corrupt at offset {offset}: {reason}. The records from there on \
         cannot be trusted; to start without them, keep a copy and cut the file there \
         (`truncate -s {offset} {}`): the start-up reconciliation then compares the whole \
         local tree with the manifest and sends what differs",
        segment.display(),
        segment.display()
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("journal segment {} has a bad header: {reason}", segment.display())]
    BadHeader { segment: PathBuf, reason: String },
    #[error("journal {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    #[error("journal record rejected: {0}")]
    InvalidRecord(String),
    #[error("journal compaction rejected: {0}")]
    InvalidCompaction(String),
}

/// Attaches the file an I/O error happened on, so the user sees which one.
trait At<T> {
    fn at(self, path: &Path) -> Result<T, JournalError>;
}

impl<T> At<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, JournalError> {
        self.map_err(|source| JournalError::File {
            path: path.to_path_buf(),
            source,
        })
    }
}

pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Rotate to a new segment once the active one would grow past this.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// `read` races a live daemon; a few rescans absorb a rotation or checkpoint in between.
const READ_ATTEMPTS: usize = 8;

pub struct Journal {
    dir: SegmentDir,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Serialises fdatasync so that one sync can cover the appends of several callers.
    sync_lock: Mutex<()>,
    /// Highest seq known durable.
    synced_seq: AtomicU64,
    feed: Mutex<Option<crossbeam_channel::Sender<Entry>>>,
    #[cfg(test)]
    hooks: Hooks,
}

struct State {
    /// Oldest first.
    sealed: Vec<Segment>,
    active: Active,
    next_seq: u64,
}

#[cfg(test)]
#[derive(Default)]
struct Hooks {
    /// Makes the next append write only this many bytes.
    short_write: Mutex<Option<usize>>,
    fdatasyncs: AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir.path)
            .field("next_seq", &self.next_seq())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating dir 0700 if needed) the journal in `dir`, replays it, truncates a torn
    /// tail of the last segment (and fsyncs), and returns the live entries in seq order.
    pub fn open(dir: &Path) -> Result<(Journal, Replay), JournalError> {
        Self::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, options: Options) -> Result<(Journal, Replay), JournalError> {
        let segdir = SegmentDir::open(dir)?;
        let mut dir_changed = segdir.remove_temp_files()?;
        let listing = list_headers(dir)?;
        let scan = scan(&listing)?;
        for path in &scan.superseded {
            fs::remove_file(path).at(path)?;
            dir_changed = true;
        }
        let mut sealed = scan.segments;
        let active = match sealed.pop() {
            Some(seg) => reopen_active(seg, scan.torn.as_ref())?,
            None => segdir.create_segment(scan.next_seq, 0, &[], None)?,
        };
        if dir_changed {
            segdir.fsync()?;
        }
        let replay = Replay {
            entries: scan.entries,
            next_seq: scan.next_seq,
            torn_bytes: scan.torn.map_or(0, |t| t.bytes),
        };
        let journal = Journal {
            dir: segdir,
            segment_bytes: options.segment_bytes,
            state: Mutex::new(State {
                sealed,
                active,
                next_seq: replay.next_seq,
            }),
            sync_lock: Mutex::new(()),
            feed: Mutex::new(None),
            synced_seq: AtomicU64::new(replay.next_seq - 1),
            #[cfg(test)]
            hooks: Hooks::default(),
        };
        Ok((journal, replay))
    }

    /// Read-only replay for `ftpsync status` while a daemon may be appending: modifies nothing
    /// and reports the torn tail it would drop (a record being written right now looks torn).
    pub fn read(dir: &Path) -> Result<Replay, JournalError> {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh_replay()),
            other => other.at(dir)?,
        };
        let mut attempt = 1;
        loop {
            let outcome = list_headers(dir).map(|before| (scan(&before), before));
            let (result, before) = match outcome {
                Err(e) if attempt < READ_ATTEMPTS && is_not_found(&e) => {
                    attempt += 1;
                    continue;
                }
                other => other?,
            };
            // A changed listing means the daemon rotated, checkpointed or compacted under us:
            // whatever we read may mix two states, so read again.
            let stable = list_headers(dir).is_ok_and(|after| after == before);
            if stable || attempt >= READ_ATTEMPTS {
                return result.map(Scan::into_replay);
            }
            attempt += 1;
        }
    }

    /// Appends with a single write(2) to the active segment (no fsync) and returns the seq.
    /// A failed or short write truncates the segment back to the last good offset.
    pub fn append(&self, record: &Record) -> Result<u64, JournalError> {
        let mut frame = unsealed_frame(record)?;
        let mut st = self.state.lock();
        if self.should_rotate(&st, frame.len()) {
            self.rotate(&mut st)?;
        }
        let seq = st.next_seq;
        seal_frame(&mut frame, seq);
        self.write_frame(&st.active, &frame)?;
        st.active.seg.len += frame.len() as u64;
        st.active.seg.last_seq = Some(seq);
        st.next_seq += 1;
        // Sent under the append lock, so followers see records in seq order.
        if let Some(tx) = self.feed.lock().as_ref() {
            let _ = tx.send(Entry {
                seq,
                record: record.clone(),
            });
        }
        Ok(seq)
    }

    /// Every record appended from now on, in order: how the sync engine follows the journal
    /// without reading it back. One follower; a new call replaces the previous one.
    pub fn follow(&self) -> crossbeam_channel::Receiver<Entry> {
        let (tx, rx) = crossbeam_channel::unbounded();
        *self.feed.lock() = Some(tx);
        rx
    }

    /// Makes every record appended so far durable. Group commit: returns at once when a sync
    /// by another thread already covered everything appended before this call.
    pub fn sync(&self) -> Result<(), JournalError> {
        let target = self.last_appended();
        if self.synced_seq.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        let _serial = self.sync_lock.lock();
        if self.synced_seq.load(Ordering::Acquire) >= target {
            return Ok(());
        }
        // Earlier segments were fdatasync'd when they were sealed, so the active file is all
        // there is to flush; doing it outside `state` lets appends carry on meanwhile.
        let (file, path, upto) = {
            let st = self.state.lock();
            let active = &st.active;
            (
                Arc::clone(&active.file),
                active.seg.path.clone(),
                st.next_seq - 1,
            )
        };
        file.sync_data().at(&path)?;
        #[cfg(test)]
        self.hooks.fdatasyncs.fetch_add(1, Ordering::Relaxed);
        self.synced_seq.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// True when some appends are not yet synced.
    pub fn is_dirty(&self) -> bool {
        self.synced_seq.load(Ordering::Acquire) < self.last_appended()
    }

    /// Records with seq <= `upto` are applied: deletes every segment holding only such records.
    /// When that includes the active segment, a fresh empty one (carrying next_seq) replaces it.
    pub fn checkpoint(&self, upto: u64) -> Result<(), JournalError> {
        let mut st = self.state.lock();
        let mut removed = false;
        // Oldest first, so that a crash midway leaves a contiguous suffix of the log.
        while let Some(seg) = st.sealed.first().filter(|seg| fully_applied(seg, upto)) {
            fs::remove_file(&seg.path).at(&seg.path)?;
            st.sealed.remove(0);
            removed = true;
        }
        if st.sealed.is_empty() && st.active.seg.last_seq.is_some_and(|last| last <= upto) {
            self.replace_active(&mut st)?;
            removed = true;
        }
        if removed {
            self.dir.fsync()?;
        }
        Ok(())
    }

    /// Atomically replaces all segments with one holding exactly `live`, which keep their seqs;
    /// later appends continue from the current next seq.
    pub fn compact(&self, live: &[Entry]) -> Result<(), JournalError> {
        let mut st = self.state.lock();
        check_live(live, st.next_seq)?;
        let body = encode_entries(live)?;
        let last_live = live.last().map(|e| e.seq);
        let fresh = self
            .dir
            .create_segment(st.next_seq, FLAG_COMPACTED, &body, last_live)?;
        let old_active = std::mem::replace(&mut st.active, fresh);
        let mut old = std::mem::take(&mut st.sealed);
        old.push(old_active.seg);
        // The compacted segment is durable and supersedes these; a leftover is harmless and
        // the next open removes it, so a failed delete is only worth a warning.
        for seg in old.iter().filter(|seg| seg.path != st.active.seg.path) {
            if let Err(e) = fs::remove_file(&seg.path) {
                log::warn!(
                    "journal: cannot remove superseded {}: {e}",
                    seg.path.display()
                );
            }
        }
        self.dir.fsync()?;
        self.synced_seq.fetch_max(st.next_seq - 1, Ordering::AcqRel);
        Ok(())
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        let st = self.state.lock();
        st.sealed.iter().map(|seg| seg.len).sum::<u64>() + st.active.seg.len
    }

    pub fn next_seq(&self) -> u64 {
        self.state.lock().next_seq
    }

    fn last_appended(&self) -> u64 {
        self.state.lock().next_seq - 1
    }

    fn should_rotate(&self, st: &State, frame_len: usize) -> bool {
        // A segment must hold a record of its own range before it may be sealed: a compacted
        // segment with only live records shares its name with the next segment.
        let holds_own_record = st.next_seq > st.active.seg.first_seq;
        holds_own_record && st.active.seg.len + frame_len as u64 > self.segment_bytes
    }

    fn rotate(&self, st: &mut State) -> Result<(), JournalError> {
        let active = &st.active;
        // Sealed segments must be complete and durable: replay treats any flaw in them as
        // corruption, and `sync` only flushes the active file.
        active.file.set_len(active.seg.len).at(&active.seg.path)?;
        active.file.sync_data().at(&active.seg.path)?;
        let fresh = self.dir.create_segment(st.next_seq, 0, &[], None)?;
        let old = std::mem::replace(&mut st.active, fresh);
        st.sealed.push(old.seg);
        self.synced_seq.fetch_max(st.next_seq - 1, Ordering::AcqRel);
        Ok(())
    }

    /// Swaps the fully applied active segment for an empty one; the caller fsyncs the dir.
    fn replace_active(&self, st: &mut State) -> Result<(), JournalError> {
        let fresh = self.dir.create_segment(st.next_seq, 0, &[], None)?;
        let old = std::mem::replace(&mut st.active, fresh);
        // Same name when the old one was a compacted segment with no appends: the rename
        // already replaced it.
        if old.seg.path != st.active.seg.path {
            fs::remove_file(&old.seg.path).at(&old.seg.path)?;
        }
        self.synced_seq.fetch_max(st.next_seq - 1, Ordering::AcqRel);
        Ok(())
    }

    fn write_frame(&self, active: &Active, frame: &[u8]) -> Result<(), JournalError> {
        let offset = active.seg.len;
        let error = match self.write_at(&active.file, frame, offset) {
            Ok(n) if n == frame.len() => return Ok(()),
            Ok(n) => io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", frame.len()),
            ),
            Err(e) => e,
        };
        // A partial frame would end the log at replay and hide every later record.
        if let Err(e) = active.file.set_len(offset) {
            log::error!(
                "journal: cannot truncate {} back to {offset} after a failed append: {e}",
                active.seg.path.display()
            );
        }
        Err(error).at(&active.seg.path)
    }

    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        #[cfg(test)]
        if let Some(limit) = self.hooks.short_write.lock().take() {
            return file.write_at(&buf[..limit.min(buf.len())], offset);
        }
        file.write_at(buf, offset)
    }
}

fn fresh_replay() -> Replay {
    Replay {
        next_seq: 1,
        ..Replay::default()
    }
}

fn fully_applied(seg: &Segment, upto: u64) -> bool {
    seg.last_seq.is_none_or(|last| last <= upto)
}

fn is_not_found(e: &JournalError) -> bool {
    matches!(e, JournalError::File { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

fn reopen_active(seg: Segment, torn: Option<&Torn>) -> Result<Active, JournalError> {
    let file = statedir::open(&seg.path, Access::ReadWrite).at(&seg.path)?;
    if let Some(torn) = torn {
        log::warn!(
            "journal: dropping a torn tail of {} bytes at offset {} of {}: {}",
            torn.bytes,
            torn.offset,
            seg.path.display(),
            torn.reason
        );
        file.set_len(seg.len).at(&seg.path)?;
    }
    // Records a crashed writer left in the page cache become durable before they count as synced.
    file.sync_data().at(&seg.path)?;
    Ok(Active {
        seg,
        file: Arc::new(file),
    })
}

fn check_live(live: &[Entry], next_seq: u64) -> Result<(), JournalError> {
    let mut floor = 1;
    for entry in live {
        if entry.seq < floor || entry.seq >= next_seq {
            return Err(JournalError::InvalidCompaction(format!(
                "seq {} is out of order or not below next seq {next_seq}",
                entry.seq
            )));
        }
        floor = entry.seq + 1;
    }
    Ok(())
}
