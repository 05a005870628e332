//! A record's bytes: the frame (length, CRC32, seq) around its payload, and the payload's
//! encoding. Decoding trusts no length it reads: every one is checked against the bytes that
//! are there, since a damaged segment must be refused, not make us allocate or panic.

use super::record::is_valid_rel_path;
use super::{Entry, JournalError, Record, Timestamp};
use crate::relpath::RelPath;

pub(super) const FRAME_HEADER_LEN: usize = 16;
pub(super) const MAX_PAYLOAD: usize = 64 << 20;

pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) record: Record,
    pub(super) len: usize,
}

/// Parses the frame at the start of `buf`; the reason says why it is not a good record.
pub(super) fn parse_frame(buf: &[u8]) -> Result<Frame, String> {
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
pub(super) fn unsealed_frame(record: &Record) -> Result<Vec<u8>, JournalError> {
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

pub(super) fn seal_frame(frame: &mut [u8], seq: u64) {
    frame[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&frame[8..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn encode_entries(entries: &[Entry]) -> Result<Vec<u8>, JournalError> {
    let mut body = Vec::new();
    for entry in entries {
        let mut frame = unsealed_frame(&entry.record)?;
        seal_frame(&mut frame, entry.seq);
        body.extend_from_slice(&frame);
    }
    Ok(body)
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

pub(super) struct Encoder<'a>(pub(super) &'a mut Vec<u8>);

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

pub(super) fn encode_payload(record: &Record, e: &mut Encoder<'_>) {
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
pub(super) struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
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
    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
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
pub(super) fn decode_payload(payload: &[u8]) -> Result<Record, String> {
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
