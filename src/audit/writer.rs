//! Appending to the log: what the daemon and the one-shot commands call. An append must never
//! fail its caller (an audit problem is logged, the operation goes on), and must leave a chain
//! that `check` accepts even after a crash or a write cut short, so each append first settles
//! what the last one left.

use super::{
    for_each_line, read_head, rotated_files, sha256_hex, Head, DEFAULT_KEEP, DEFAULT_MAX_BYTES,
    GENESIS, RESERVED,
};
use crate::statedir::{self, Access};
use crate::statedir::{AUDIT_HEAD, AUDIT_LOCK, AUDIT_LOG};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const HEAD_TMP: &str = "audit.head.tmp";
/// Distinct write errors remembered (each logged once) until a write succeeds again.
const MAX_REMEMBERED_ERRORS: usize = 32;

/// The audit log of one state dir. Share it through an `Arc`; every method takes `&self`.
pub struct Audit {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    pub(super) inner: Mutex<Inner>,
}

pub(super) struct Inner {
    /// `audit.lock`, flocked for each append.
    lock: File,
    /// Appended since the last `sync`.
    dirty: bool,
    /// Errors already logged, so a full disk logs once, not once per event.
    pub(super) errors: HashSet<String>,
}

/// Where the next line goes.
struct Next {
    prev: String,
    /// Its number in `audit.log` (before any rotation this append does).
    line: u64,
}

impl Audit {
    /// Opens (creating, mode 0600) STATE_DIR/audit.log; rotation at 16 MiB, keeping 10 old files.
    pub fn open(state_dir: &Path) -> io::Result<Audit> {
        Audit::open_with(state_dir, DEFAULT_MAX_BYTES, DEFAULT_KEEP)
    }

    /// Same with explicit rotation limits (tests use tiny ones).
    pub fn open_with(state_dir: &Path, max_bytes: u64, keep: usize) -> io::Result<Audit> {
        // Anyone else able to write here could rewrite the trail without a trace.
        statedir::prepare(state_dir)?;
        let lock = open_0600(&state_dir.join(AUDIT_LOCK), false)?;
        open_0600(&state_dir.join(AUDIT_LOG), true)?;
        Ok(Audit {
            dir: state_dir.to_path_buf(),
            max_bytes,
            keep,
            inner: Mutex::new(Inner {
                lock,
                dirty: false,
                errors: HashSet::new(),
            }),
        })
    }

    /// Appends one event: `fields` is a JSON object (serde_json::json!({...})). Never fails the
    /// caller and never panics: a write error is logged with log::error! (once per distinct
    /// error, not per line) and the event is lost.
    pub fn record(&self, event: &str, fields: Value) {
        self.record_at(SystemTime::now(), event, fields);
    }

    /// `record`, stamped with `time` (tests write days past).
    pub(crate) fn record_at(&self, time: SystemTime, event: &str, fields: Value) {
        let mut inner = self.inner.lock();
        let result =
            Flock::exclusive(&inner.lock).and_then(|_held| self.append(time, event, fields));
        match result {
            Ok(()) => {
                inner.dirty = true;
                if !inner.errors.is_empty() {
                    inner.errors.clear();
                    log::warn!("audit log {}: writing again", self.log_path().display());
                }
            }
            Err(e) => self.report(&mut inner, &e.to_string(), &format!("event {event:?}")),
        }
    }

    /// fsync the current file, and the state dir so the head's rename and rotations last too
    /// (the engine calls it at its checkpoint, about once a second).
    pub fn sync(&self) {
        let mut inner = self.inner.lock();
        if !inner.dirty {
            return;
        }
        match self.sync_files() {
            Ok(()) => inner.dirty = false,
            Err(e) => self.report(&mut inner, &e.to_string(), "fsync"),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(AUDIT_LOG)
    }

    /// `what` names the first casualty only: the same error is logged once, not per line.
    fn report(&self, inner: &mut Inner, error: &str, what: &str) {
        if inner.errors.len() < MAX_REMEMBERED_ERRORS && inner.errors.insert(error.to_string()) {
            log::error!(
                "audit log {}: {what} failed: {error} (this error is logged once until a \
                 write succeeds)",
                self.log_path().display()
            );
        }
    }

    /// The log's data and the directory (the head's rename, rotations) reach the disk.
    fn sync_files(&self) -> io::Result<()> {
        open_0600(&self.log_path(), true)?.sync_data()?;
        File::open(&self.dir)?.sync_all()
    }

    /// One append; the caller holds the flock.
    fn append(&self, time: SystemTime, event: &str, fields: Value) -> io::Result<()> {
        let path = self.log_path();
        let log = open_0600(&path, true)?;
        let next = self.next(&log)?;
        let line = format_line(&crate::utc::rfc3339(time), event, fields, &next.prev)?;
        let len = log.metadata()?.len();
        let (log, number) = if len > 0 && len + line.len() as u64 + 1 > self.max_bytes {
            log.sync_data()?;
            drop(log);
            self.rotate()?;
            (open_0600(&path, true)?, 1)
        } else {
            (log, next.line)
        };
        write_line(&log, &line)?;
        write_head(
            &self.dir,
            &Head {
                lines: number,
                last: sha256_hex(&line),
            },
        )
    }

    /// Learns, from the files and under the flock, what the next line must chain to.
    fn next(&self, log: &File) -> io::Result<Next> {
        let head = read_head(&self.dir).unwrap_or_else(|e| {
            log::error!(
                "{}: {e}; treating it as missing",
                self.dir.join(AUDIT_HEAD).display()
            );
            None
        });
        let mut tail = Tail::read(log)?;
        if let Some(fragment) = tail.fragment.take() {
            self.settle_fragment(log, &mut tail, fragment, head.as_ref())?;
        }
        let in_current = tail.last.is_some();
        let last = match tail.last {
            Some(l) => Some(l),
            None => self.newest_rotated_last_line()?,
        };
        let actual = last
            .as_deref()
            .map_or_else(|| GENESIS.to_string(), sha256_hex);
        match head {
            Some(h) if h.last == actual => Ok(Next {
                prev: actual,
                line: if in_current {
                    h.lines.saturating_add(1)
                } else {
                    1
                },
            }),
            Some(h) => self.resume(&h, actual),
            None if last.is_none() => Ok(Next {
                prev: actual,
                line: 1,
            }),
            None => {
                log::error!(
                    "{} is missing: the audit log's last line cannot be vouched for; \
                     appending after it",
                    self.dir.join(AUDIT_HEAD).display()
                );
                Ok(Next {
                    prev: actual,
                    line: count_lines(&self.log_path(), None)?.0 + 1,
                })
            }
        }
    }

    /// A partial line at the end is what a write cut short leaves. It is dropped when the
    /// complete lines before it agree with the head (nothing else is wrong); otherwise it is
    /// kept, terminated, as evidence for `check`.
    fn settle_fragment(
        &self,
        log: &File,
        tail: &mut Tail,
        fragment: Vec<u8>,
        head: Option<&Head>,
    ) -> io::Result<()> {
        // Right after a rotation the current file has no whole line yet: what the head
        // vouches for is then the last line of the newest rotated file.
        let last = match &tail.last {
            Some(l) => Some(l.clone()),
            None => self.newest_rotated_last_line()?,
        };
        let complete_hash = last.as_deref().map(sha256_hex);
        let agrees = match head {
            Some(h) => complete_hash.as_deref() == Some(h.last.as_str()),
            None => complete_hash.is_none(),
        };
        if agrees {
            log.set_len(tail.complete_len)?;
            log::warn!(
                "{}: dropped {} bytes of an interrupted write at its end",
                self.log_path().display(),
                fragment.len()
            );
        } else {
            (&*log).write_all(b"\n")?;
            tail.last = Some(fragment);
        }
        Ok(())
    }

    /// The files do not end with the line the head records. If that line is still there,
    /// appends after it lost their head update (a crash) and nothing is wrong. If it is
    /// gone, the end of the log was edited or removed: the next line chains to the head's hash,
    /// so the break stays in the chain for `check` to name instead of being papered over.
    fn resume(&self, head: &Head, actual: String) -> io::Result<Next> {
        let (lines, mut found) = count_lines(&self.log_path(), Some(&head.last))?;
        if !found {
            if let Some(path) = self.rotated()?.first().map(|(_, p)| p.clone()) {
                found = count_lines(&path, Some(&head.last))?.1;
            }
        }
        if found {
            return Ok(Next {
                prev: actual,
                line: lines + 1,
            });
        }
        log::error!(
            "{}: the line {} records (line {}, sha256 {}) is not in the log: the log's end \
             was edited or removed; chaining the next line to it so `ftpsync audit --check` \
             reports the break",
            self.log_path().display(),
            AUDIT_HEAD,
            head.lines,
            head.last
        );
        Ok(Next {
            prev: head.last.clone(),
            line: lines + 1,
        })
    }

    fn newest_rotated_last_line(&self) -> io::Result<Option<Vec<u8>>> {
        match self.rotated()?.first() {
            Some((_, path)) => Ok(Tail::read(&statedir::open(path, Access::Read)?)?.last),
            None => Ok(None),
        }
    }

    /// Rotated files, newest (`.1`) first.
    fn rotated(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        rotated_files(&self.dir)
    }

    /// audit.log -> audit.log.1 -> ... -> audit.log.KEEP; older ones are removed.
    fn rotate(&self) -> io::Result<()> {
        for (n, path) in self.rotated()? {
            if n >= self.keep as u64 {
                fs::remove_file(path)?;
            }
        }
        crate::logfile::shift_numbered(&self.log_path(), self.keep)?;
        File::open(&self.dir)?.sync_all()
    }
}

/// An exclusive flock, released when dropped.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Flock<'a>> {
        file.lock()?;
        Ok(Flock(file))
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The end of a log file.
struct Tail {
    /// The last newline-terminated line, without its newline.
    last: Option<Vec<u8>>,
    /// Bytes up to and including the last newline.
    complete_len: u64,
    /// Bytes after the last newline.
    fragment: Option<Vec<u8>>,
}

impl Tail {
    fn read(file: &File) -> io::Result<Tail> {
        let len = file.metadata()?.len();
        let complete_len = rfind_newline(file, len)?.map_or(0, |p| p + 1);
        let fragment = (complete_len < len).then(|| read_range(file, complete_len, len));
        let last = if complete_len == 0 {
            None
        } else {
            let start = rfind_newline(file, complete_len - 1)?.map_or(0, |p| p + 1);
            Some(read_range(file, start, complete_len - 1)?)
        };
        Ok(Tail {
            last,
            complete_len,
            fragment: fragment.transpose()?,
        })
    }
}

/// The offset of the last newline before `end`.
fn rfind_newline(file: &File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 8192;
    let mut end = end;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

fn read_range(file: &File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// Complete lines in a file, and whether one of them hashes to `wanted`.
fn count_lines(path: &Path, wanted: Option<&str>) -> io::Result<(u64, bool)> {
    let file = match statedir::open(path, Access::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(e),
    };
    let (mut n, mut found) = (0, false);
    for_each_line(file, |line, complete| {
        if complete {
            n += 1;
            found |= wanted.is_some_and(|w| sha256_hex(line) == w);
        }
    })?;
    Ok((n, found))
}

/// The log (appended) or the lock, never through a symbolic link, 0600 when created.
fn open_0600(path: &Path, append: bool) -> io::Result<File> {
    let access = if append { Access::Append } else { Access::Keep };
    statedir::open(path, access)
}

fn write_line(log: &File, line: &[u8]) -> io::Result<()> {
    let before = log.metadata()?.len();
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    if let Err(e) = (&*log).write_all(&buf) {
        // Under the flock nobody else appended: cut back to the last whole line.
        let _ = log.set_len(before);
        return Err(e);
    }
    Ok(())
}

fn write_head(dir: &Path, head: &Head) -> io::Result<()> {
    let tmp = dir.join(HEAD_TMP);
    let mut f = statedir::create_temp(&tmp)?;
    let mut text = serde_json::to_vec(head)?;
    text.push(b'\n');
    f.write_all(&text)?;
    drop(f);
    fs::rename(&tmp, dir.join(AUDIT_HEAD))
}

/// `{"time":…,"event":…,<fields>,"prev":…}`: time and event first for people reading the raw
/// file, prev last.
fn format_line(time: &str, event: &str, fields: Value, prev: &str) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"time\":");
    serde_json::to_writer(&mut out, time)?;
    out.extend_from_slice(b",\"event\":");
    serde_json::to_writer(&mut out, event)?;
    for (k, v) in caller_fields(fields) {
        out.push(b',');
        serde_json::to_writer(&mut out, &k)?;
        out.push(b':');
        serde_json::to_writer(&mut out, &v)?;
    }
    out.extend_from_slice(b",\"prev\":");
    serde_json::to_writer(&mut out, prev)?;
    out.push(b'}');
    Ok(out)
}

/// The caller's fields as an object; a non-object goes under `value`; a reserved key gets
/// underscores appended until it is free.
fn caller_fields(fields: Value) -> Map<String, Value> {
    let map = match fields {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => Map::from_iter([("value".to_string(), other)]),
    };
    let (reserved, mut out): (Map<String, Value>, Map<String, Value>) = map
        .into_iter()
        .partition(|(k, _)| RESERVED.contains(&k.as_str()));
    for (mut k, v) in reserved {
        while RESERVED.contains(&k.as_str()) || out.contains_key(&k) {
            k.push('_');
        }
        out.insert(k, v);
    }
    out
}
