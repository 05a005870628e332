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

use crate::statedir::{self, Access};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, TryLockError};
use std::io::{self, Read};
use std::ops::Bound;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// A path relative to the mirrored root, raw bytes (may be invalid UTF-8, may contain newlines):
/// components separated by b'/', no leading '/', never "." or ".." components. Empty = the root.
pub type RelPath = Vec<u8>;

/// `dir/name`, where the empty `dir` is the root.
pub fn child_path(dir: &[u8], name: &[u8]) -> RelPath {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// New regular file (content dirty).
    Create {
        path: RelPath,
        mode: u32,
    },
    /// Regular file opened for writing.
    Dirty {
        path: RelPath,
    },
    /// Content hashed on close. `ctime` and `ino` let a start-up scan tell an unchanged file
    /// from one rewritten behind the mount with its size and mtime put back.
    Store {
        path: RelPath,
        size: u64,
        sha256: [u8; 32],
        mtime: Timestamp,
        mode: u32,
        ctime: Timestamp,
        ino: u64,
    },
    Mkdir {
        path: RelPath,
        mode: u32,
    },
    Mknod {
        path: RelPath,
        mode: u32,
        rdev: u64,
    },
    Symlink {
        path: RelPath,
        target: Vec<u8>,
    },
    Link {
        existing: RelPath,
        path: RelPath,
    },
    Unlink {
        path: RelPath,
    },
    Rmdir {
        path: RelPath,
    },
    /// `flags` are renameat2 flags (RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2).
    Rename {
        from: RelPath,
        to: RelPath,
        flags: u32,
    },
    SetAttr {
        path: RelPath,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
    SetXattr {
        path: RelPath,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: RelPath,
        name: Vec<u8>,
    },
}

impl Record {
    pub fn op(&self) -> &'static str {
        match self {
            Record::Create { .. } => "create",
            Record::Dirty { .. } => "dirty",
            Record::Store { .. } => "store",
            Record::Mkdir { .. } => "mkdir",
            Record::Mknod { .. } => "mknod",
            Record::Symlink { .. } => "symlink",
            Record::Link { .. } => "link",
            Record::Unlink { .. } => "unlink",
            Record::Rmdir { .. } => "rmdir",
            Record::Rename { .. } => "rename",
            Record::SetAttr { .. } => "setattr",
            Record::SetXattr { .. } => "setxattr",
            Record::RemoveXattr { .. } => "removexattr",
        }
    }

    /// The primary path: `to` for Rename, the new name for Link.
    pub fn path(&self) -> &[u8] {
        match self {
            Record::Create { path, .. }
            | Record::Dirty { path }
            | Record::Store { path, .. }
            | Record::Mkdir { path, .. }
            | Record::Mknod { path, .. }
            | Record::Symlink { path, .. }
            | Record::Link { path, .. }
            | Record::Unlink { path }
            | Record::Rmdir { path }
            | Record::SetAttr { path, .. }
            | Record::SetXattr { path, .. }
            | Record::RemoveXattr { path, .. } => path,
            Record::Rename { to, .. } => to,
        }
    }

    fn secondary_path(&self) -> Option<&[u8]> {
        match self {
            Record::Rename { from, .. } => Some(from),
            Record::Link { existing, .. } => Some(existing),
            _ => None,
        }
    }

    /// Every tree path the record names (a symlink target is data, not a path in the tree).
    fn paths(&self) -> impl Iterator<Item = &[u8]> + '_ {
        std::iter::once(self.path()).chain(self.secondary_path())
    }

    fn validate(&self) -> Result<(), JournalError> {
        match self.paths().find(|p| !is_valid_rel_path(p)) {
            Some(bad) => Err(JournalError::InvalidRecord(format!(
                "{} names an invalid relative path {:?}",
                self.op(),
                String::from_utf8_lossy(bad)
            ))),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub record: Record,
}

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

const MAGIC: &[u8; 8] = b"FTPSJNL\0";
const VERSION: u32 = 2;
const FLAG_COMPACTED: u32 = 1;
const HEADER_LEN: u64 = 32;
const FRAME_HEADER_LEN: usize = 16;
const MAX_PAYLOAD: usize = 64 << 20;
const SEGMENT_SUFFIX: &str = ".jnl";
const TMP_SUFFIX: &str = ".jnl.tmp";
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

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes of header and good records.
    len: u64,
    last_seq: Option<u64>,
}

struct Active {
    seg: Segment,
    /// Shared so `sync` can fdatasync without holding the append lock.
    file: Arc<File>,
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

/// The journal directory, locked for one writer, and the segment files' life cycle.
struct SegmentDir {
    path: PathBuf,
    /// Holds the flock and is what the directory is fsync'd through.
    handle: File,
}

impl SegmentDir {
    fn open(path: &Path) -> Result<SegmentDir, JournalError> {
        if let Some(parent) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .at(parent)?;
        }
        let handle = statedir::open_subdir(path).at(path)?;
        // Two writers would interleave seqs in one segment.
        match handle.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    dir: path.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(e).at(path),
        }
        Ok(SegmentDir {
            path: path.to_path_buf(),
            handle,
        })
    }

    fn fsync(&self) -> Result<(), JournalError> {
        self.handle.sync_all().at(&self.path)
    }

    /// Publishes a complete segment atomically: temp file, fsync, rename, fsync the dir.
    fn create_segment(
        &self,
        first_seq: u64,
        flags: u32,
        body: &[u8],
        last_seq: Option<u64>,
    ) -> Result<Active, JournalError> {
        let path = self.path.join(segment_name(first_seq));
        let tmp = self.path.join(format!("{first_seq:016}{TMP_SUFFIX}"));
        let file = statedir::create_temp(&tmp).at(&tmp)?;
        file.write_all_at(&header(first_seq, flags), 0).at(&tmp)?;
        file.write_all_at(body, HEADER_LEN).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        fs::rename(&tmp, &path).at(&path)?;
        self.fsync()?;
        let seg = Segment {
            first_seq,
            path,
            len: HEADER_LEN + body.len() as u64,
            last_seq,
        };
        Ok(Active {
            seg,
            file: Arc::new(file),
        })
    }

    /// Removes segments a crash left half-created; returns whether there were any.
    fn remove_temp_files(&self) -> Result<bool, JournalError> {
        let mut removed = false;
        for entry in fs::read_dir(&self.path).at(&self.path)? {
            let entry = entry.at(&self.path)?;
            if entry
                .file_name()
                .as_bytes()
                .ends_with(TMP_SUFFIX.as_bytes())
            {
                fs::remove_file(entry.path()).at(&entry.path())?;
                removed = true;
            }
        }
        Ok(removed)
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:016}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let digits = name.as_bytes().strip_suffix(SEGMENT_SUFFIX.as_bytes())?;
    if digits.len() != 16 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    flags: u32,
    first_seq: u64,
}

impl Header {
    fn compacted(&self) -> bool {
        self.flags & FLAG_COMPACTED != 0
    }
}

fn header(first_seq: u64, flags: u32) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

fn parse_header(path: &Path, bytes: &[u8], named_seq: u64) -> Result<Header, JournalError> {
    let bad = |reason: String| JournalError::BadHeader {
        segment: path.to_path_buf(),
        reason,
    };
    let mut dec = Decoder::new(bytes);
    let parsed = (|| {
        let fields = (dec.array::<8>()?, dec.u32()?, dec.u32()?, dec.u64()?);
        Ok::<_, String>((fields, dec.u32()?, dec.u32()?))
    })();
    let ((magic, version, flags, first_seq), crc, reserved) =
        parsed.map_err(|_| bad(format!("shorter than {HEADER_LEN} bytes")))?;
    if &magic != MAGIC {
        return Err(bad("not a journal segment (bad magic)".into()));
    }
    if version != VERSION {
        return Err(bad(format!(
            "unsupported version {version} (this ftpsync reads version {VERSION})"
        )));
    }
    if crc != crc32fast::hash(&bytes[..24]) || reserved != 0 {
        return Err(bad("damaged header (checksum mismatch)".into()));
    }
    if flags & !FLAG_COMPACTED != 0 {
        return Err(bad(format!("unknown flags {flags:#x}")));
    }
    if first_seq == 0 || first_seq != named_seq {
        return Err(bad(format!(
            "first seq {first_seq} does not match the name"
        )));
    }
    Ok(Header { flags, first_seq })
}

fn read_header(path: &Path, named_seq: u64) -> Result<Header, JournalError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize);
    statedir::open(path, Access::Read)
        .and_then(|f| f.take(HEADER_LEN).read_to_end(&mut bytes))
        .at(path)?;
    parse_header(path, &bytes, named_seq)
}

/// Segment files with their headers, oldest first.
type Listing = Vec<(PathBuf, Header)>;

fn list_headers(dir: &Path) -> Result<Listing, JournalError> {
    let mut named = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if let Some(seq) = parse_segment_name(&entry.file_name()) {
            named.push((seq, entry.path()));
        }
    }
    named.sort_unstable_by_key(|(seq, _)| *seq);
    named
        .into_iter()
        .map(|(seq, path)| read_header(&path, seq).map(|h| (path, h)))
        .collect()
}

struct Torn {
    offset: u64,
    bytes: u64,
    reason: String,
}

struct Scan {
    entries: Vec<Entry>,
    next_seq: u64,
    /// Retained segments, oldest first; `len` stops before a torn tail.
    segments: Vec<Segment>,
    /// Segments older than the newest compacted one.
    superseded: Vec<PathBuf>,
    /// In the last segment only.
    torn: Option<Torn>,
}

impl Scan {
    fn into_replay(self) -> Replay {
        Replay {
            entries: self.entries,
            next_seq: self.next_seq,
            torn_bytes: self.torn.map_or(0, |t| t.bytes),
        }
    }
}

/// Reads the segments of `listing` without modifying anything.
fn scan(listing: &Listing) -> Result<Scan, JournalError> {
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
const SECTOR: usize = 512;

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

struct Frame {
    seq: u64,
    record: Record,
    len: usize,
}

/// Parses the frame at the start of `buf`; the reason says why it is not a good record.
fn parse_frame(buf: &[u8]) -> Result<Frame, String> {
    let mut dec = Decoder::new(buf);
    let (len, crc, seq) = (|| Ok::<_, String>((dec.u32()?, dec.u32()?, dec.u64()?)))()
        .map_err(|_| format!("{} bytes, too short for a record header", buf.len()))?;
    let len = len as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("absurd payload length {len}"));
    }
    let end = FRAME_HEADER_LEN + len;
    if buf.len() < end {
        return Err(format!("record of {end} bytes cut short at {}", buf.len()));
    }
    if crc32fast::hash(&buf[8..end]) != crc {
        return Err("checksum mismatch".into());
    }
    let record = decode_payload(&buf[FRAME_HEADER_LEN..end])?;
    Ok(Frame {
        seq,
        record,
        len: end,
    })
}

/// The frame for `record` with seq and CRC left zero, so that encoding happens outside the lock.
fn unsealed_frame(record: &Record) -> Result<Vec<u8>, JournalError> {
    record.validate()?;
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    encode_payload(record, &mut Encoder(&mut buf));
    let payload_len = buf.len() - FRAME_HEADER_LEN;
    let len = u32::try_from(payload_len)
        .ok()
        .filter(|_| payload_len <= MAX_PAYLOAD)
        .ok_or_else(|| {
            JournalError::InvalidRecord(format!(
                "{} payload of {payload_len} bytes exceeds {MAX_PAYLOAD}",
                record.op()
            ))
        })?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

fn seal_frame(frame: &mut [u8], seq: u64) {
    frame[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_entries(entries: &[Entry]) -> Result<Vec<u8>, JournalError> {
    let mut body = Vec::new();
    for entry in entries {
        let mut frame = unsealed_frame(&entry.record)?;
        seal_frame(&mut frame, entry.seq);
        body.extend_from_slice(&frame);
    }
    Ok(body)
}

fn is_valid_rel_path(path: &[u8]) -> bool {
    path.is_empty()
        || (!path.contains(&0)
            && path
                .split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".."))
}

const TAG_CREATE: u8 = 1;
const TAG_DIRTY: u8 = 2;
const TAG_STORE: u8 = 3;
const TAG_MKDIR: u8 = 4;
const TAG_MKNOD: u8 = 5;
const TAG_SYMLINK: u8 = 6;
const TAG_LINK: u8 = 7;
const TAG_UNLINK: u8 = 8;
const TAG_RMDIR: u8 = 9;
const TAG_RENAME: u8 = 10;
const TAG_SETATTR: u8 = 11;
const TAG_SETXATTR: u8 = 12;
const TAG_REMOVEXATTR: u8 = 13;

struct Encoder<'a>(&'a mut Vec<u8>);

impl Encoder<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        // A string too long for u32 also makes the payload exceed MAX_PAYLOAD, which the
        // caller rejects, so the saturated length is never written.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(v);
    }
    fn timestamp(&mut self, t: Timestamp) {
        self.0.extend_from_slice(&t.sec.to_le_bytes());
        self.u32(t.nsec);
    }
    fn option<T: Copy>(&mut self, v: Option<T>, put: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
        }
    }
}

fn encode_payload(record: &Record, e: &mut Encoder<'_>) {
    match record {
        Record::Create { path, mode } => {
            e.u8(TAG_CREATE);
            e.bytes(path);
            e.u32(*mode);
        }
        Record::Dirty { path } => {
            e.u8(TAG_DIRTY);
            e.bytes(path);
        }
        Record::Store {
            path,
            size,
            sha256,
            mtime,
            mode,
            ctime,
            ino,
        } => {
            e.u8(TAG_STORE);
            e.bytes(path);
            e.u64(*size);
            e.0.extend_from_slice(sha256);
            e.timestamp(*mtime);
            e.u32(*mode);
            e.timestamp(*ctime);
            e.u64(*ino);
        }
        Record::Mkdir { path, mode } => {
            e.u8(TAG_MKDIR);
            e.bytes(path);
            e.u32(*mode);
        }
        Record::Mknod { path, mode, rdev } => {
            e.u8(TAG_MKNOD);
            e.bytes(path);
            e.u32(*mode);
            e.u64(*rdev);
        }
        Record::Symlink { path, target } => {
            e.u8(TAG_SYMLINK);
            e.bytes(path);
            e.bytes(target);
        }
        Record::Link { existing, path } => {
            e.u8(TAG_LINK);
            e.bytes(existing);
            e.bytes(path);
        }
        Record::Unlink { path } => {
            e.u8(TAG_UNLINK);
            e.bytes(path);
        }
        Record::Rmdir { path } => {
            e.u8(TAG_RMDIR);
            e.bytes(path);
        }
        Record::Rename { from, to, flags } => {
            e.u8(TAG_RENAME);
            e.bytes(from);
            e.bytes(to);
            e.u32(*flags);
        }
        Record::SetAttr {
            path,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } => {
            e.u8(TAG_SETATTR);
            e.bytes(path);
            e.option(*mode, Encoder::u32);
            e.option(*uid, Encoder::u32);
            e.option(*gid, Encoder::u32);
            e.option(*size, Encoder::u64);
            e.option(*atime, Encoder::timestamp);
            e.option(*mtime, Encoder::timestamp);
        }
        Record::SetXattr { path, name, value } => {
            e.u8(TAG_SETXATTR);
            e.bytes(path);
            e.bytes(name);
            e.bytes(value);
        }
        Record::RemoveXattr { path, name } => {
            e.u8(TAG_REMOVEXATTR);
            e.bytes(path);
            e.bytes(name);
        }
    }
}

/// Reads fields off a byte slice; every length is checked against what is left before use.
struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Decoder { rest: buf }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(format!(
                "field of {n} bytes overruns the {} left",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
    fn path(&mut self) -> Result<RelPath, String> {
        let path = self.bytes()?;
        if !is_valid_rel_path(&path) {
            return Err(format!(
                "invalid relative path {:?}",
                String::from_utf8_lossy(&path)
            ));
        }
        Ok(path)
    }
    fn timestamp(&mut self) -> Result<Timestamp, String> {
        let sec = i64::from_le_bytes(self.array()?);
        Ok(Timestamp {
            sec,
            nsec: self.u32()?,
        })
    }
    fn option<T>(
        &mut self,
        get: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => get(self).map(Some),
            other => Err(format!("option marker {other}")),
        }
    }
    fn finish(self) -> Result<(), String> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(format!("{n} trailing payload bytes")),
        }
    }
}

/// Field order in each struct literal is evaluation order, which must match `encode_payload`.
fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    let mut d = Decoder::new(payload);
    let record = match d.u8()? {
        TAG_CREATE => Record::Create {
            path: d.path()?,
            mode: d.u32()?,
        },
        TAG_DIRTY => Record::Dirty { path: d.path()? },
        TAG_STORE => Record::Store {
            path: d.path()?,
            size: d.u64()?,
            sha256: d.array()?,
            mtime: d.timestamp()?,
            mode: d.u32()?,
            ctime: d.timestamp()?,
            ino: d.u64()?,
        },
        TAG_MKDIR => Record::Mkdir {
            path: d.path()?,
            mode: d.u32()?,
        },
        TAG_MKNOD => Record::Mknod {
            path: d.path()?,
            mode: d.u32()?,
            rdev: d.u64()?,
        },
        TAG_SYMLINK => Record::Symlink {
            path: d.path()?,
            target: d.bytes()?,
        },
        TAG_LINK => Record::Link {
            existing: d.path()?,
            path: d.path()?,
        },
        TAG_UNLINK => Record::Unlink { path: d.path()? },
        TAG_RMDIR => Record::Rmdir { path: d.path()? },
        TAG_RENAME => Record::Rename {
            from: d.path()?,
            to: d.path()?,
            flags: d.u32()?,
        },
        TAG_SETATTR => Record::SetAttr {
            path: d.path()?,
            mode: d.option(Decoder::u32)?,
            uid: d.option(Decoder::u32)?,
            gid: d.option(Decoder::u32)?,
            size: d.option(Decoder::u64)?,
            atime: d.option(Decoder::timestamp)?,
            mtime: d.option(Decoder::timestamp)?,
        },
        TAG_SETXATTR => Record::SetXattr {
            path: d.path()?,
            name: d.bytes()?,
            value: d.bytes()?,
        },
        TAG_REMOVEXATTR => Record::RemoveXattr {
            path: d.path()?,
            name: d.bytes()?,
        },
        tag => return Err(format!("unknown record tag {tag}")),
    };
    d.finish()?;
    Ok(record)
}

/// Drops records made redundant, Coda-style, using only what the log itself proves:
/// - a Dirty or Store of a path whose next mention is a Store of the same path (Dirty records of
///   that very path in between do not count: they only say "being written again");
/// - any other record naming the path, one of its ancestors or one of its descendants in
///   between keeps the earlier record, since the later Store may then describe another file.
///
/// Order of the remaining entries is preserved.
pub fn coalesce(entries: &[Entry]) -> Vec<Entry> {
    let mut keep = vec![true; entries.len()];
    // Per path, the Dirty/Store records a later Store of the same path would supersede.
    let mut pending: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        match &entry.record {
            Record::Store { path, .. } => {
                forget_related(&mut pending, path, false);
                for superseded in pending.insert(path, vec![i]).unwrap_or_default() {
                    keep[superseded] = false;
                }
            }
            Record::Dirty { path } => {
                forget_related(&mut pending, path, false);
                pending.entry(path).or_default().push(i);
            }
            record => {
                for path in record.paths() {
                    forget_related(&mut pending, path, true);
                }
            }
        }
    }
    entries
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(entry, _)| entry.clone())
        .collect()
}

fn forget_related(pending: &mut BTreeMap<&[u8], Vec<usize>>, path: &[u8], including_self: bool) {
    if including_self {
        pending.remove(path);
    }
    for ancestor in ancestors(path) {
        pending.remove(ancestor);
    }
    let descendants: Vec<&[u8]> = if path.is_empty() {
        pending.keys().filter(|k| !k.is_empty()).copied().collect()
    } else {
        // Keys under "path/" sort between "path/" and "path0" ('0' follows '/').
        let lo = [path, b"/"].concat();
        let hi = [path, b"0"].concat();
        pending
            .range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
            .map(|(k, _)| *k)
            .collect()
    };
    for descendant in descendants {
        pending.remove(descendant);
    }
}

/// Proper ancestors, the root (empty path) included.
fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let root = (!path.is_empty()).then_some(&path[..0]);
    let inner = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i]);
    root.into_iter().chain(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tempfile::TempDir;

    fn ts(sec: i64, nsec: u32) -> Timestamp {
        Timestamp { sec, nsec }
    }

    fn store(path: &[u8], fill: u8) -> Record {
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

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn entry(seq: u64, record: Record) -> Entry {
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

    fn coalesced(records: Vec<Record>) -> Vec<u64> {
        let entries: Vec<Entry> = records
            .into_iter()
            .zip(1..)
            .map(|(r, seq)| entry(seq, r))
            .collect();
        seqs(&coalesce(&entries))
    }

    fn rename(from: &[u8], to: &[u8]) -> Record {
        Record::Rename {
            from: from.to_vec(),
            to: to.to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn coalesce_drops_a_superseded_store() {
        let records = vec![
            store(b"d/f", 1),
            store(b"other", 1),
            Record::Mkdir {
                path: b"d/fx".to_vec(),
                mode: 0o755,
            },
            store(b"d/f", 2),
        ];
        assert_eq!(coalesced(records), [2, 3, 4]);
    }

    #[test]
    fn coalesce_keeps_store_when_path_or_parent_is_renamed_between() {
        let of_path = vec![store(b"d/f", 1), rename(b"d/f", b"g"), store(b"d/f", 2)];
        assert_eq!(coalesced(of_path), [1, 2, 3]);
        let onto_path = vec![store(b"d/f", 1), rename(b"x", b"d/f"), store(b"d/f", 2)];
        assert_eq!(coalesced(onto_path), [1, 2, 3]);
        let of_parent = vec![store(b"d/f", 1), rename(b"d", b"e"), store(b"d/f", 2)];
        assert_eq!(coalesced(of_parent), [1, 2, 3]);
        let setattr_root = Record::SetAttr {
            path: Vec::new(),
            mode: Some(0o700),
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: None,
        };
        assert_eq!(
            coalesced(vec![store(b"d/f", 1), setattr_root, store(b"d/f", 2)]),
            [1, 2, 3]
        );
    }

    #[test]
    fn coalesce_keeps_store_when_a_descendant_is_touched_between() {
        let records = vec![
            store(b"d", 1),
            Record::Unlink {
                path: b"d/x".to_vec(),
            },
            store(b"d", 2),
        ];
        assert_eq!(coalesced(records), [1, 2, 3]);
    }

    #[test]
    fn coalesce_turns_dirty_then_store_into_store() {
        let dirty = |p: &[u8]| Record::Dirty { path: p.to_vec() };
        assert_eq!(coalesced(vec![dirty(b"f"), store(b"f", 1)]), [2]);
        // The usual rewrite: open, close, open, close.
        let rewrite = vec![dirty(b"f"), store(b"f", 1), dirty(b"f"), store(b"f", 2)];
        assert_eq!(coalesced(rewrite), [4]);
        // Still being written: nothing to drop.
        assert_eq!(coalesced(vec![store(b"f", 1), dirty(b"f")]), [1, 2]);
        let truncated = Record::SetAttr {
            path: b"f".to_vec(),
            mode: None,
            uid: None,
            gid: None,
            size: Some(0),
            atime: None,
            mtime: None,
        };
        assert_eq!(
            coalesced(vec![dirty(b"f"), truncated, store(b"f", 1)]),
            [1, 2, 3]
        );
    }

    #[test]
    fn coalesce_preserves_order_of_survivors() {
        let records: Vec<Record> = (0..20u8)
            .map(|i| store(format!("f{}", i % 3).as_bytes(), i))
            .collect();
        let kept = coalesced(records);
        assert_eq!(kept, [18, 19, 20]);
        let unique: BTreeSet<u64> = kept.iter().copied().collect();
        assert_eq!(unique.len(), kept.len());
    }
}

/// Property tests of the record codec and of replay over damaged segments, bounded in cases so
/// that they run in every `cargo test`; failures print the shrunk input and are kept as in
/// `remote::path::fuzz`.
#[cfg(test)]
mod fuzz {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};
    use tempfile::TempDir;

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
}
