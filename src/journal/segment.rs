//! The segment files: their names, their headers, and the directory that holds them, locked
//! for one writer. A segment is only ever published whole (temp file, fsync, rename), so a
//! header is never torn and only the tail of the last segment can be.

use super::codec::Decoder;
use super::{At, JournalError};
use crate::statedir::{self, Access};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, TryLockError};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"FTPSJNL\0";
const VERSION: u32 = 2;
pub(super) const FLAG_COMPACTED: u32 = 1;
pub(super) const HEADER_LEN: u64 = 32;
const SEGMENT_SUFFIX: &str = ".jnl";
const TMP_SUFFIX: &str = ".jnl.tmp";

#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) first_seq: u64,
    pub(super) path: PathBuf,
    /// Bytes of header and good records.
    pub(super) len: u64,
    pub(super) last_seq: Option<u64>,
}

pub(super) struct Active {
    pub(super) seg: Segment,
    /// Shared so `sync` can fdatasync without holding the append lock.
    pub(super) file: Arc<File>,
}

/// The journal directory, locked for one writer, and the segment files' life cycle.
pub(super) struct SegmentDir {
    pub(super) path: PathBuf,
    /// Holds the flock and is what the directory is fsync'd through.
    handle: File,
}

impl SegmentDir {
    pub(super) fn open(path: &Path) -> Result<SegmentDir, JournalError> {
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

    pub(super) fn fsync(&self) -> Result<(), JournalError> {
        self.handle.sync_all().at(&self.path)
    }

    /// Publishes a complete segment atomically: temp file, fsync, rename, fsync the dir.
    pub(super) fn create_segment(
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
    pub(super) fn remove_temp_files(&self) -> Result<bool, JournalError> {
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

pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:016}{SEGMENT_SUFFIX}")
}

pub(super) fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let digits = name.as_bytes().strip_suffix(SEGMENT_SUFFIX.as_bytes())?;
    if digits.len() != 16 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) flags: u32,
    pub(super) first_seq: u64,
}

impl Header {
    pub(super) fn compacted(&self) -> bool {
        self.flags & FLAG_COMPACTED != 0
    }
}

pub(super) fn header(first_seq: u64, flags: u32) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&flags.to_le_bytes());
    out[16..24].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(super) fn parse_header(
    path: &Path,
    bytes: &[u8],
    named_seq: u64,
) -> Result<Header, JournalError> {
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
pub(super) type Listing = Vec<(PathBuf, Header)>;

pub(super) fn list_headers(dir: &Path) -> Result<Listing, JournalError> {
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
