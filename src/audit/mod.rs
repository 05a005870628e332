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
//!
//! `writer` appends (the daemon's part), `check` verifies the chain, `print` shows the log to
//! people; what all three read of the files (the head, the lines, the rotated names) is here.

mod check;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

pub use check::{check, Break, CheckReport};
pub use writer::Audit;

use crate::statedir;
use crate::statedir::{AUDIT_HEAD, AUDIT_LOG};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
pub const DEFAULT_KEEP: usize = 10;
/// The `prev` of the first line ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Keys every line has; a caller's field of the same name is renamed (`time_`), never obeyed.
pub(crate) const RESERVED: [&str; 3] = ["time", "event", "prev"];

/// What `audit.head` holds: the newest line's number in `audit.log` and its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Head {
    lines: u64,
    last: String,
}

/// Calls `f` with each line (without its newline) and whether it had one.
pub(crate) fn for_each_line(file: File, mut f: impl FnMut(&[u8], bool)) -> io::Result<()> {
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
    let prefix = format!("{AUDIT_LOG}.");
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

/// None when there is no head file.
fn read_head(dir: &Path) -> io::Result<Option<Head>> {
    let text = match statedir::read(&dir.join(AUDIT_HEAD)) {
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

/// All log files, oldest first, with the names people see.
pub(crate) fn log_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<(String, PathBuf)> = rotated_files(dir)?
        .into_iter()
        .rev()
        .map(|(n, p)| (format!("{AUDIT_LOG}.{n}"), p))
        .collect();
    let current = dir.join(AUDIT_LOG);
    if current.exists() {
        files.push((AUDIT_LOG.to_string(), current));
    }
    Ok(files)
}

pub(crate) fn parse_record(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}
