//! A one-shot command's view of a mount: what its daemon answers on the control socket (the
//! live status, a flush) and what its state dir's journal and manifest hold. `status`,
//! `flush`, `verify` and `unmount` read a mount only through here, so none of them borrows
//! from another.

use crate::config::MountConfig;
use crate::control::{self, Request};
use crate::hash::to_hex;
use crate::journal::{Journal, Record};
use crate::mirror::Manifest;
use crate::progress::{human_bytes, plural};
use crate::relpath::show;
use crate::replay::PathMap;
use crate::report::{
    Daemon, HashEntry, JournalInfo, Mirror, MountRecord, OpenFiles, PathName, PendingRecord, Status,
};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// How long a status query waits for the daemon to answer.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// The mount's record in the state dir (None before the first mount).
fn mount_record(state_dir: &Path) -> Option<MountRecord> {
    let c = MountConfig::recorded(state_dir).ok()?;
    Some(MountRecord {
        mountpoint: c.mountpoint.to_string_lossy().into_owned(),
        local_dir: c.local_dir.to_string_lossy().into_owned(),
        remote: c.remote.to_string(),
    })
}

/// What the daemon reports, cheaply (no journal, no manifest read): the part of the status
/// document that `--watch` and the Prometheus output show.
pub fn live(state_dir: &Path) -> Status {
    let pid = crate::daemons::pid_of(state_dir);
    let reply =
        pid.and_then(|_| control::call_within(state_dir, &Request::Status, Some(STATUS_WAIT)).ok());
    let (pending_hashes, errors_answered, mirror, open_for_writing) =
        reply.map_or((None, None, None, None), |r| {
            (
                r.pending_hashes,
                r.errors_answered,
                r.mirror,
                r.open_for_writing,
            )
        });
    Status {
        state_dir: state_dir.to_string_lossy().into_owned(),
        mount: mount_record(state_dir),
        daemon: Daemon {
            running: pid.is_some(),
            pid,
            pending_hashes,
            errors_answered,
            open_for_writing,
        },
        mirror,
        ..Status::default()
    }
}

/// The status document (see doc/CONTRACTS.md).
pub fn collect(state_dir: &Path) -> Result<Status> {
    let replay = Journal::read(&state_dir.join(crate::statedir::JOURNAL))
        .with_context(|| format!("reading the journal in {}", state_dir.display()))?;
    // The latest hash of each file: what the remote confirmed (the manifest already reflects
    // every rename the engine replayed), overlaid with the hashes journaled since its
    // checkpoint, each under the name it has after the later records.
    let manifest = Manifest::open(state_dir).context("reading the manifest")?;
    let applied = manifest.applied_seq();
    let mut journaled: PathMap<(u64, String, u64)> = PathMap::default();
    let mut pending = Vec::new();
    for e in replay.entries.iter().filter(|e| e.seq > applied) {
        match &e.record {
            Record::Store {
                size,
                sha256,
                path: p,
                ..
            } => journaled.insert(p.clone(), (*size, to_hex(sha256), e.seq)),
            other => journaled.follow(other),
        }
        pending.push(PendingRecord {
            seq: e.seq,
            op: e.record.op().to_string(),
            name: PathName::of(e.record.path()),
        });
    }
    let hash = |p: &[u8], size: u64, sha256: String, seq: u64| HashEntry {
        name: PathName::of(p),
        size,
        sha256,
        seq,
        confirmed: seq == 0,
    };
    let mut hashes: BTreeMap<Vec<u8>, HashEntry> = BTreeMap::new();
    for (p, c) in manifest.iter() {
        if let Some(f) = c.file() {
            let mut entry = hash(p, f.size, to_hex(&f.sha256), 0);
            // verify --repair found the server's copy wrong: not confirmed until sent again.
            entry.confirmed = !manifest.doubted(p);
            hashes.insert(p.clone(), entry);
        }
    }
    for (p, (size, sha256, seq)) in journaled {
        let entry = hash(&p, size, sha256, seq);
        hashes.insert(p, entry);
    }
    Ok(Status {
        journal: Some(JournalInfo {
            records: pending.len(),
            applied_seq: applied,
            next_seq: replay.next_seq,
            torn_bytes: replay.torn_bytes,
        }),
        pending: Some(pending),
        hashes: Some(hashes.into_values().collect()),
        ..live(state_dir)
    })
}

/// What `ftpsync flush` asks for.
pub struct FlushRequest {
    pub timeout: Duration,
    /// Only hashed and journaled durably, not confirmed on the remote.
    pub local: bool,
    /// Files still open for writing at the end make the flush fail.
    pub require_closed: bool,
}

/// Waits for the daemon to hash every closed file and (unless `local`) for the remote to
/// confirm every change; names on stderr the files still open for writing, which it could
/// not cover.
pub fn flush(state_dir: &Path, req: &FlushRequest) -> Result<()> {
    let done = std::sync::atomic::AtomicBool::new(false);
    let reply = std::thread::scope(|s| {
        if std::io::stderr().is_terminal() {
            s.spawn(|| show_flush_progress(state_dir, &done));
        }
        let reply = control::call(
            state_dir,
            &Request::Flush {
                timeout_ms: req.timeout.as_millis() as u64,
                local: req.local,
            },
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reply
    })?;
    let open = reply.open_for_writing.unwrap_or_default();
    eprint!("{}", open_report(&open));
    if !reply.ok {
        bail!("flush failed: {}", reply.error.unwrap_or_default());
    }
    if req.require_closed && open.count > 0 {
        bail!(
            "{} still open for writing (--require-closed)",
            plural(open.count as u64, "file", "files")
        );
    }
    Ok(())
}

/// While a flush waits, on a terminal: what it waits for, from the daemon's status.
fn show_flush_progress(state_dir: &Path, done: &std::sync::atomic::AtomicBool) {
    let refresh = Duration::from_millis(500);
    let spinner = indicatif::ProgressBar::new_spinner();
    // The first line only after a moment: a flush with nothing to wait for prints nothing.
    std::thread::sleep(refresh);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let status = control::call_within(state_dir, &Request::Status, Some(refresh * 4));
        if let Some(mirror) = status.ok().and_then(|r| r.mirror) {
            spinner.set_message(flush_waits_for(&mirror));
        }
        spinner.tick();
        std::thread::sleep(refresh);
    }
    spinner.finish_and_clear();
}

/// "flush: 3 paths left, 12.0 MiB to send at 2.0 MiB/s; oldest big.bin (14 s); remote: ..."
fn flush_waits_for(m: &Mirror) -> String {
    let mut line = format!("flush: {} left", plural(m.paths_left(), "path", "paths"));
    if m.pending_bytes > 0 {
        let _ = write!(line, ", {} to send", human_bytes(m.pending_bytes));
        if m.upload_rate > 0 {
            let _ = write!(line, " at {}/s", human_bytes(m.upload_rate));
        }
    }
    if let Some(oldest) = &m.oldest_pending {
        let _ = write!(
            line,
            "; oldest {} ({:.0} s)",
            oldest.name.path, oldest.age_seconds
        );
    }
    let _ = write!(line, "; remote: {}", m.connection);
    line
}

/// One line per file open for writing, then how many there are; nothing when none.
fn open_report(open: &OpenFiles) -> String {
    let mut out = String::new();
    for p in &open.paths {
        let _ = writeln!(
            out,
            "ftpsync: still open for writing, not covered by this flush: {}",
            show(&p.bytes())
        );
    }
    if open.count == 0 {
        return out;
    }
    let unnamed = open.count.saturating_sub(open.paths.len());
    let unnamed = if unnamed > 0 {
        format!(" ({unnamed} not named)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "ftpsync: {} still open for writing{unnamed}: the server keeps an earlier version \
         (or none) of each until it is closed; flush again after that",
        plural(open.count as u64, "file", "files")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mirror(v: serde_json::Value) -> Mirror {
        serde_json::from_value(v).expect("a mirror status")
    }

    #[test]
    fn a_waiting_flush_says_what_is_left_how_fast_and_the_oldest_path() {
        let waiting = json!({"pending": 2, "in_flight": 1, "pending_bytes": 12 << 20,
            "upload_rate": 2 << 20, "connection": "connected",
            "oldest_pending": {"path": "big.bin", "age_seconds": 14.2}});
        assert_eq!(
            flush_waits_for(&mirror(waiting)),
            "flush: 3 paths left, 12.0 MiB to send at 2.0 MiB/s; oldest big.bin (14 s); \
             remote: connected"
        );
        let offline = json!({"pending": 1, "in_flight": 0, "pending_bytes": 0,
            "connection": "retrying: connection refused", "oldest_pending": null});
        assert_eq!(
            flush_waits_for(&mirror(offline)),
            "flush: 1 path left; remote: retrying: connection refused"
        );
    }

    #[test]
    fn a_flush_names_each_open_file_on_a_line_of_its_own_then_counts_them() {
        assert_eq!(open_report(&OpenFiles::default()), "");
        let text = open_report(&OpenFiles::of(3, &["a/b", "new\nline"]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            [
                "ftpsync: still open for writing, not covered by this flush: a/b",
                "ftpsync: still open for writing, not covered by this flush: new\\nline",
            ]
        );
        assert!(
            lines[2].starts_with("ftpsync: 3 files still open for writing (1 not named): "),
            "{text}"
        );
        assert_eq!(lines.len(), 3, "{text}");
    }
}
