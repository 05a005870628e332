//! The audit trail: an append-only JSON-lines log, in the state dir, of what ftpsync sent,
//! confirmed and trusted. Each line carries the SHA-256 of the line before it (`prev`), and
//! `audit.head` records the newest line, so `ftpsync audit --check` finds a line that was
//! edited, inserted or removed, the last one included.
//!
//! What the chain cannot do: it has no secret, so whoever can write the state dir can rewrite
//! the whole log and its head consistently. It catches partial edits, removals, truncation and
//! damage; a copy kept elsewhere is what catches a wholesale rewrite.
//!
//! Files, all 0600: `audit.log` (current), `audit.log.1`..`audit.log.N` (older, rotated by
//! size; the chain runs on across them), `audit.head`, and `audit.lock`. Appends lock
//! `audit.lock` rather than the log because rotation renames the log: a lock held on the
//! renamed file would not keep out a writer that opened the new one.
//!
//! Lock order: `Audit::inner` (threads of one process), then the flock on `audit.lock`
//! (processes: the daemon and one-shot commands).

use crate::statedir::{self, Access};
use anyhow::Context;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const AUDIT_FILE: &str = "audit.log";
pub const HEAD_FILE: &str = "audit.head";
pub const LOCK_FILE: &str = "audit.lock";
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
pub const DEFAULT_KEEP: usize = 10;
const HEAD_TMP: &str = "audit.head.tmp";
/// The `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Keys every line has; a caller's field of the same name is renamed (`time_`), never obeyed.
const RESERVED: [&str; 3] = ["time", "event", "prev"];
/// Distinct write errors remembered (each logged once) until a write succeeds again.
const MAX_REMEMBERED_ERRORS: usize = 32;

/// The audit log of one state dir. Share it through an `Arc`; every method takes `&self`.
pub struct Audit {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `audit.lock`, flocked for each append.
    lock: File,
    /// Appended since the last `sync`.
    dirty: bool,
    /// Errors already logged, so a full disk logs once, not once per event.
    errors: HashSet<String>,
}

/// What `audit.head` holds: the newest line's number in `audit.log` and its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Head {
    lines: u64,
    last: String,
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
        let lock = open_0600(&state_dir.join(LOCK_FILE), false)?;
        open_0600(&state_dir.join(AUDIT_FILE), true)?;
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

    fn record_at(&self, time: SystemTime, event: &str, fields: Value) {
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
        self.dir.join(AUDIT_FILE)
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
                self.dir.join(HEAD_FILE).display()
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
                    self.dir.join(HEAD_FILE).display()
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
            HEAD_FILE,
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

/// Calls `f` with each line (without its newline) and whether it had one.
fn for_each_line(file: File, mut f: impl FnMut(&[u8], bool)) -> io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        f(&line, complete);
    }
}

/// `audit.log.N` files in a directory, newest (smallest N) first.
fn rotated_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let prefix = format!("{AUDIT_FILE}.");
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix(&prefix))
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if n > 0 {
            found.push((n, entry.path()));
        }
    }
    found.sort();
    Ok(found)
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
    fs::rename(&tmp, dir.join(HEAD_FILE))
}

/// None when there is no head file.
fn read_head(dir: &Path) -> io::Result<Option<Head>> {
    let text = match statedir::read(&dir.join(HEAD_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a head record: {e}"),
        )
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
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

/// A path (raw bytes) as a JSON value: a string when UTF-8, else {"hex": "..."} so nothing is lost.
pub fn path_value(p: &[u8]) -> Value {
    match std::str::from_utf8(p) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => serde_json::json!({ "hex": hex::encode(p) }),
    }
}

/// The bytes `path_value` was made from.
pub fn path_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Object(m) if m.len() == 1 => hex::decode(m.get("hex")?.as_str()?).ok(),
        _ => None,
    }
}

/// All log files, oldest first, with the names people see.
fn log_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<(String, PathBuf)> = rotated_files(dir)?
        .into_iter()
        .rev()
        .map(|(n, p)| (format!("{AUDIT_FILE}.{n}"), p))
        .collect();
    let current = dir.join(AUDIT_FILE);
    if current.exists() {
        files.push((AUDIT_FILE.to_string(), current));
    }
    Ok(files)
}

/// Where the chain first fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// `audit.log`, `audit.log.3` or `audit.head`.
    pub file: String,
    /// 1-based.
    pub line: u64,
    pub problem: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}: {}", self.file, self.line, self.problem)
    }
}

/// What `check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Lines read, in all files.
    pub lines: u64,
    pub files: usize,
    /// The oldest line chains to a line no longer present: older files were rotated away
    /// (or the start of the log was removed, which the chain cannot tell apart).
    pub starts_after_rotation: bool,
    /// Lines after the one `audit.head` records: appends whose head update was lost in a
    /// crash. Valid links in the chain, but not vouched for by the head.
    pub after_head: u64,
    pub first_break: Option<Break>,
}

impl CheckReport {
    pub fn intact(&self) -> bool {
        self.first_break.is_none()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let mut s = match &self.first_break {
            None => format!(
                "audit log intact: {} in {}",
                plural(self.lines, "line"),
                plural(self.files as u64, "file")
            ),
            Some(b) => format!("audit log broken: {b}"),
        };
        if self.starts_after_rotation {
            s.push_str("; it starts after older lines that were rotated away");
        }
        if self.after_head > 0 {
            s.push_str(&format!(
                "; the last {} lines were written after audit.head's last update \
                 (an interrupted write), so their end is not vouched for",
                self.after_head
            ));
        }
        s
    }
}

fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Where the line `audit.head` records was found.
struct Anchor {
    file: String,
    line: u64,
}

/// The walk over all lines, oldest first.
#[derive(Default)]
struct Walk {
    report: CheckReport,
    /// The previous line: its file, number and hash.
    prev: Option<(String, u64, String)>,
    anchor_hash: Option<String>,
    anchor: Option<Anchor>,
    /// Lines in audit.log.
    current_lines: u64,
}

impl Walk {
    fn fail(&mut self, file: &str, line: u64, problem: String) {
        if self.report.first_break.is_none() {
            self.report.first_break = Some(Break {
                file: file.to_string(),
                line,
                problem,
            });
        }
    }

    fn line(&mut self, file: &str, n: u64, bytes: &[u8], complete: bool) {
        self.report.lines += 1;
        if file == AUDIT_FILE {
            self.current_lines = n;
        }
        let hash = sha256_hex(bytes);
        if !complete {
            self.fail(
                file,
                n,
                "incomplete (no newline at its end): a write was cut short, or the line was \
                 cut"
                .into(),
            );
        } else if let Err(problem) = self.link(file, bytes) {
            self.fail(file, n, problem);
        }
        if self.anchor_hash.as_deref() == Some(hash.as_str()) {
            self.anchor = Some(Anchor {
                file: file.to_string(),
                line: n,
            });
            self.report.after_head = 0;
        } else if self.anchor.is_some() {
            self.report.after_head += 1;
        }
        self.prev = Some((file.to_string(), n, hash));
    }

    /// Checks that this line is a record and chains to the one before.
    fn link(&mut self, file: &str, bytes: &[u8]) -> Result<(), String> {
        let prev = parse_record(bytes)
            .ok_or("not an audit record (not a JSON object): damaged, or inserted")?
            .get("prev")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or("has no \"prev\" hash: damaged, or inserted")?;
        match &self.prev {
            None if prev != GENESIS => {
                self.report.starts_after_rotation = true;
                Ok(())
            }
            None => Ok(()),
            Some((_, _, hash)) if *hash == prev => Ok(()),
            Some((pfile, pn, _)) if pfile == file => Err(format!(
                "its prev does not match the hash of line {pn}: line {pn} was edited, lines \
                 between them were removed, or this line's prev was altered"
            )),
            Some((pfile, pn, _)) => Err(format!(
                "its prev does not match the hash of {pfile} line {pn} (the last there): that \
                 line was edited, lines or files between them were removed, or this line's \
                 prev was altered"
            )),
        }
    }

    /// Compares the end of the log with `audit.head`.
    fn head(&mut self, head: Option<Head>) {
        let Some(head) = head else {
            if let Some((file, n, _)) = self.prev.clone() {
                self.fail(
                    &file,
                    n,
                    format!(
                        "{HEAD_FILE} is missing, so the end of the log cannot be vouched for: \
                         lines here or after it may have been edited or removed"
                    ),
                );
            }
            return;
        };
        match &self.anchor {
            Some(a) if a.file == AUDIT_FILE && a.line < head.lines => {
                let (line, gone) = (a.line, head.lines - a.line);
                self.fail(
                    AUDIT_FILE,
                    line,
                    format!(
                        "{HEAD_FILE} records this line as line {}: {gone} lines before it \
                         were removed from the start of {AUDIT_FILE}",
                        head.lines
                    ),
                )
            }
            Some(a) if a.file == AUDIT_FILE && a.line > head.lines => {
                let (line, added) = (a.line, a.line - head.lines);
                self.fail(
                    AUDIT_FILE,
                    line,
                    format!(
                        "{HEAD_FILE} records this line as line {}: {added} lines were inserted \
                         before it",
                        head.lines
                    ),
                )
            }
            Some(_) => {}
            None if self.current_lines >= head.lines && head.lines > 0 => self.fail(
                AUDIT_FILE,
                head.lines,
                format!(
                    "does not match {HEAD_FILE}, which records this line's hash: the line was \
                     edited or replaced"
                ),
            ),
            None => self.fail(
                AUDIT_FILE,
                head.lines,
                format!(
                    "missing: {HEAD_FILE} records {} lines and {AUDIT_FILE} ends after line \
                     {}: lines were removed from its end (or never reached the disk before a \
                     crash)",
                    head.lines, self.current_lines
                ),
            ),
        }
    }
}

fn parse_record(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Verifies the chain over all files, oldest first.
pub fn check(state_dir: &Path) -> anyhow::Result<CheckReport> {
    // Shared with other checks, exclusive with writers: a rotation mid-check is no break.
    let lock = statedir::open(&state_dir.join(LOCK_FILE), Access::Read).ok();
    if let Some(l) = &lock {
        l.lock_shared()
            .with_context(|| format!("locking {}", state_dir.join(LOCK_FILE).display()))?;
    }
    let files = log_files(state_dir).with_context(|| format!("reading {}", state_dir.display()))?;
    let head = read_head(state_dir);
    let mut walk = Walk {
        anchor_hash: head
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map(|h| h.last.clone()),
        ..Walk::default()
    };
    walk.report.files = files.len();
    for (name, path) in &files {
        let file = statedir::open(path, Access::Read)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut n = 0;
        for_each_line(file, |line, complete| {
            n += 1;
            walk.line(name, n, line, complete);
        })
        .with_context(|| format!("reading {}", path.display()))?;
    }
    match head {
        Ok(h) => walk.head(h),
        Err(e) => walk.fail(HEAD_FILE, 1, format!("unreadable: {e}")),
    }
    Ok(walk.report)
}

/// Prints lines readably (or as the raw JSON with `json`), only those at or after `since`.
/// Lines that are not records are always shown (flagged), since their time is unknown.
pub fn print(
    state_dir: &Path,
    since: Option<SystemTime>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let files = log_files(state_dir).with_context(|| format!("reading {}", state_dir.display()))?;
    for (name, path) in &files {
        let file = statedir::open(path, Access::Read)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut n = 0;
        let mut result = Ok(());
        for_each_line(file, |line, _| {
            n += 1;
            if result.is_ok() {
                result = print_line(name, n, line, since, json, out);
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
        result?;
    }
    Ok(())
}

fn print_line(
    file: &str,
    n: u64,
    line: &[u8],
    since: Option<SystemTime>,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Some(record) = parse_record(line) else {
        let text = String::from_utf8_lossy(line);
        return if json {
            let v = serde_json::json!({ "unreadable": text, "file": file, "line": n });
            writeln!(out, "{v}")
        } else {
            writeln!(
                out,
                "?  {file} line {n}: not an audit record: {}",
                quote(&text)
            )
        };
    };
    let time = record
        .get("time")
        .and_then(Value::as_str)
        .and_then(crate::utc::parse_rfc3339);
    if since.is_some_and(|s| time.is_some_and(|t| t < s)) {
        return Ok(());
    }
    if !json {
        return writeln!(out, "{}", readable(&record, time));
    }
    // serde_json never writes raw control bytes; re-encode a line that has some so they
    // cannot reach a terminal.
    if line.iter().any(|b| b.is_ascii_control()) {
        writeln!(out, "{}", Value::Object(record))
    } else {
        out.write_all(line)?;
        out.write_all(b"\n")
    }
}

/// `2026-11-25 23:03:47Z  confirmed      path=a/b.txt size=12 ...`
fn readable(record: &Map<String, Value>, time: Option<SystemTime>) -> String {
    let time = match time {
        Some(t) => crate::utc::readable(t),
        None => token(&record.get("time").map(text).unwrap_or_default()),
    };
    let event = token(&record.get("event").map(text).unwrap_or_default());
    let mut s = format!("{time}  {event:<14}");
    for (k, v) in record {
        if !RESERVED.contains(&k.as_str()) {
            s.push(' ');
            s.push_str(&token(k));
            s.push('=');
            s.push_str(&token(&text(v)));
        }
    }
    s
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as one whitespace-free token: quoted, with escapes, when it is empty, has
/// whitespace or characters that could move the cursor or reorder text (so a file name
/// holding a newline cannot forge a line of output), or starts with a quote.
fn token(s: &str) -> String {
    let plain =
        !s.is_empty() && !s.starts_with('"') && !s.chars().any(|c| c == ' ' || unsafe_char(c));
    if plain {
        s.to_string()
    } else {
        quote(s)
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if unsafe_char(c) => q.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Control characters, whitespace other than a plain space, and the invisible format
/// characters (bidi overrides, zero widths) that make text display as something else.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::OpenOptions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn fill(a: &Audit, n: usize) {
        for i in 0..n {
            a.record(
                "confirmed",
                json!({ "path": format!("dir/file{i}.txt"), "size": i }),
            );
        }
    }

    /// A state dir holding `n` lines in audit.log alone.
    fn log_of(n: usize) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        fill(&Audit::open(d.path()).unwrap(), n);
        let log = d.path().join(AUDIT_FILE);
        (d, log)
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
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
        let first = lines(&d.path().join(AUDIT_FILE))[0].clone();
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
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 6), "{b}");
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
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 5), "{b}");
        assert!(b.problem.contains("removed"), "{b}");
    }

    #[test]
    fn editing_the_last_line_is_named() {
        let (d, log) = log_of(10);
        let mut l = lines(&log);
        l[9] = l[9].replace("file9", "fileX");
        rewrite(&log, &l);
        let b = broken(d.path());
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 10), "{b}");
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
            assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 10), "{b}");
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
                (AUDIT_FILE, 3),
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
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 5), "{b}");
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
        fs::remove_file(d.path().join(HEAD_FILE)).unwrap();
        let b = broken(d.path());
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 3), "{b}");
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
        assert_eq!((b.file.as_str(), b.line), (AUDIT_FILE, 9), "{b}");
    }

    #[test]
    fn a_head_left_behind_by_a_crash_is_not_a_break() {
        let (d, _) = log_of(5);
        let head = fs::read(d.path().join(HEAD_FILE)).unwrap();
        let a = Audit::open(d.path()).unwrap();
        fill(&a, 3);
        fs::write(d.path().join(HEAD_FILE), head).unwrap();
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
        let log = d.path().join(AUDIT_FILE);
        let n = rotated_files(d.path()).unwrap().len();
        for i in (1..=n).rev() {
            let from = d.path().join(format!("{AUDIT_FILE}.{i}"));
            fs::rename(&from, d.path().join(format!("{AUDIT_FILE}.{}", i + 1))).unwrap();
        }
        let whole = intact(d.path()).lines;
        fs::rename(&log, d.path().join(format!("{AUDIT_FILE}.1"))).unwrap();
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
        let mut names = vec![AUDIT_FILE, HEAD_FILE, LOCK_FILE, "audit.log.1"];
        names.sort();
        for name in names {
            let mode = fs::metadata(d.path().join(name)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o600, "{name}");
        }
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = Audit::open(d.path()).err().unwrap();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let log = d.path().join(AUDIT_FILE);
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
        fs::remove_file(d.path().join(AUDIT_FILE)).unwrap();
        fs::create_dir(d.path().join(AUDIT_FILE)).unwrap();
        a.record("lost", json!({}));
        a.record("lost too", json!({}));
        assert_eq!(a.inner.lock().errors.len(), 1);
        fs::remove_dir(d.path().join(AUDIT_FILE)).unwrap();
        a.record("kept", json!({}));
        assert!(a.inner.lock().errors.is_empty());
        intact(d.path());
    }

    #[test]
    fn path_values_round_trip() {
        for p in [
            &b"a/b.txt"[..],
            b"caf\xc3\xa9",
            b"bad\xff\xfename",
            b"a\nb",
            b"",
        ] {
            let v = path_value(p);
            assert_eq!(path_bytes(&v).as_deref(), Some(p));
        }
        assert_eq!(path_value(b"\xff"), json!({ "hex": "ff" }));
        assert_eq!(path_value(b"x"), json!("x"));
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

    fn printed(dir: &Path, since: Option<SystemTime>, json: bool) -> String {
        let mut out = Vec::new();
        print(dir, since, json, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn print_filters_by_since() {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::open_with(d.path(), 600, 10).unwrap();
        let day = |n: u64| UNIX_EPOCH + Duration::from_secs(1_795_564_800 + n * 86_400);
        for n in 0..10 {
            a.record_at(day(n), "confirmed", json!({ "n": n }));
        }
        let out = printed(d.path(), Some(day(7)), false);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.starts_with("2026-12-02 00:00:00Z  confirmed      n=7\n"),
            "{out}"
        );
        assert_eq!(printed(d.path(), None, false).lines().count(), 10);
        let raw = printed(d.path(), Some(day(9)), true);
        let all = fs::read_to_string(d.path().join(AUDIT_FILE)).unwrap();
        assert!(all.ends_with(&raw), "{raw}");
    }

    #[test]
    fn print_is_one_line_per_event_whatever_the_names() {
        let d = tempfile::tempdir().unwrap();
        let a = Audit::open(d.path()).unwrap();
        let name = b"evil\n2026-11-25 23:03:47Z  confirmed      path=x\xff";
        a.record(
            "confirmed",
            json!({ "path": path_value(b"a\nb.txt"), "size": 12, "to": "my file", "bidi": "a\u{202e}b" }),
        );
        a.record("confirmed", json!({ "path": path_value(name) }));
        a.record(
            "trusted",
            json!({ "path": "plain/a.txt", "verified_by": "exec" }),
        );
        let out = printed(d.path(), None, false);
        let l: Vec<_> = out.lines().collect();
        assert_eq!(l.len(), 3, "{out}");
        assert!(l[0].contains(r#"path="a\nb.txt""#), "{}", l[0]);
        assert!(
            l[0].contains(r#"to="my file""#) && l[0].contains("size=12"),
            "{}",
            l[0]
        );
        assert!(l[0].contains(r#"bidi="a\u{202e}b""#), "{}", l[0]);
        assert!(l[1].contains("path={\"hex\":"), "{}", l[1]);
        assert!(
            l[2].ends_with("trusted        path=plain/a.txt verified_by=exec"),
            "{}",
            l[2]
        );
        assert_eq!(printed(d.path(), None, true).lines().count(), 3);
    }

    #[test]
    fn print_flags_lines_that_are_not_records() {
        let (d, log) = log_of(2);
        let mut l = lines(&log);
        l.insert(1, "junk \u{1b}[2J".to_string());
        rewrite(&log, &l);
        let out = printed(
            d.path(),
            Some(SystemTime::now() + Duration::from_secs(3600)),
            false,
        );
        assert_eq!(
            out,
            "?  audit.log line 2: not an audit record: \"junk \\u{001b}[2J\"\n"
        );
        let out = printed(d.path(), None, true);
        let v: Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
        assert_eq!((&v["file"], &v["line"]), (&json!("audit.log"), &json!(2)));
        assert!(!out.contains('\u{1b}'));
    }
}
