//! `ftpsync audit --check`: walks the chain over every file, oldest first, and compares its end
//! with `audit.head`. It names the first line where the chain breaks and the likely causes, since
//! the person reading it has to decide whether that was a crash, damage or an edit.

use super::{for_each_line, log_files, parse_record, read_head, sha256_hex, Head, GENESIS};
use crate::statedir::{self, Access};
use crate::statedir::{AUDIT_HEAD, AUDIT_LOCK, AUDIT_LOG};
use anyhow::Context;
use serde_json::Value;
use std::path::Path;

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
        if file == AUDIT_LOG {
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
                        "{AUDIT_HEAD} is missing, so the end of the log cannot be vouched for: \
                         lines here or after it may have been edited or removed"
                    ),
                );
            }
            return;
        };
        match &self.anchor {
            Some(a) if a.file == AUDIT_LOG && a.line < head.lines => {
                let (line, gone) = (a.line, head.lines - a.line);
                self.fail(
                    AUDIT_LOG,
                    line,
                    format!(
                        "{AUDIT_HEAD} records this line as line {}: {gone} lines before it \
                         were removed from the start of {AUDIT_LOG}",
                        head.lines
                    ),
                )
            }
            Some(a) if a.file == AUDIT_LOG && a.line > head.lines => {
                let (line, added) = (a.line, a.line - head.lines);
                self.fail(
                    AUDIT_LOG,
                    line,
                    format!(
                        "{AUDIT_HEAD} records this line as line {}: {added} lines were inserted \
                         before it",
                        head.lines
                    ),
                )
            }
            Some(_) => {}
            None if self.current_lines >= head.lines && head.lines > 0 => self.fail(
                AUDIT_LOG,
                head.lines,
                format!(
                    "does not match {AUDIT_HEAD}, which records this line's hash: the line was \
                     edited or replaced"
                ),
            ),
            None => self.fail(
                AUDIT_LOG,
                head.lines,
                format!(
                    "missing: {AUDIT_HEAD} records {} lines and {AUDIT_LOG} ends after line \
                     {}: lines were removed from its end (or never reached the disk before a \
                     crash)",
                    head.lines, self.current_lines
                ),
            ),
        }
    }
}

/// Verifies the chain over all files, oldest first.
pub fn check(state_dir: &Path) -> anyhow::Result<CheckReport> {
    // Shared with other checks, exclusive with writers: a rotation mid-check is no break.
    let lock = statedir::open(&state_dir.join(AUDIT_LOCK), Access::Read).ok();
    if let Some(l) = &lock {
        l.lock_shared()
            .with_context(|| format!("locking {}", state_dir.join(AUDIT_LOCK).display()))?;
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
        Err(e) => walk.fail(AUDIT_HEAD, 1, format!("unreadable: {e}")),
    }
    Ok(walk.report)
}
