//! `ftpsync status`: the status document for people (once, or `--watch`ed) and for machines
//! (`--json`, Prometheus text), read without disturbing a running daemon.

use crate::client::{collect, live};
use crate::progress::{human_bytes, plural};
use crate::relpath::show;
use crate::report::{HashEntry, Mirror, OpenFiles, Server, Status};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// 75 -> "75 s", 600 -> "10 min", 5400 -> "1 h 30 min", for people.
pub fn duration_words(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..90 => format!("{s} s"),
        90..5400 => format!("{} min", (s + 30) / 60),
        5400..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// The human view of the live part: mount, daemon, connection and server, what is pending and
/// how fast it goes, what was confirmed lately, the oldest pending change, failures.
fn human_live(v: &Status, out: &mut String) {
    if let Some(mount) = &v.mount {
        let local = if mount.mountpoint == mount.local_dir {
            "mounted over itself".to_string()
        } else {
            format!("local {}", mount.local_dir)
        };
        let _ = writeln!(
            out,
            "mount:    {} ({local}, mirrored to {})",
            mount.mountpoint.escape_debug(),
            mount.remote
        );
    }
    let d = &v.daemon;
    match d.pid {
        Some(pid) if v.mirror.is_some() => {
            let _ = writeln!(
                out,
                "daemon:   running (pid {pid}), {} waiting to be hashed",
                plural(d.pending_hashes.unwrap_or(0) as u64, "file", "files")
            );
        }
        Some(pid) => {
            let _ = writeln!(out, "daemon:   running (pid {pid}) but not answering");
        }
        None => {
            let _ = writeln!(out, "daemon:   not running");
        }
    }
    let _ = writeln!(out, "state:    {}", v.state_dir.escape_debug());
    let Some(m) = &v.mirror else {
        return;
    };
    let _ = writeln!(out, "remote:   {}", m.connection);
    if let Some(srv) = &m.server {
        human_server(srv, out);
    }
    let _ = writeln!(out, "pending:  {}", pending_line(m));
    human_open(d.open_for_writing.as_ref(), out);
    let hour = &m.confirmed_last_hour;
    let _ = write!(
        out,
        "confirmed in the last hour: {} ({})",
        plural(hour.files, "file", "files"),
        human_bytes(hour.bytes)
    );
    match m.last_confirmed_unix {
        Some(t) => {
            let when = std::time::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
            let _ = writeln!(out, ", the last at {}", crate::utc::readable(when));
        }
        None => out.push('\n'),
    }
    if let Some(oldest) = &m.oldest_pending {
        let _ = writeln!(
            out,
            "oldest pending change: {} ago ({})",
            duration_words(oldest.age_seconds),
            show(&oldest.name.bytes())
        );
    }
    if m.failures.is_empty() {
        let _ = writeln!(out, "failures: none");
    } else {
        let _ = writeln!(
            out,
            "failures: {} (retried with backoff)",
            plural(m.failures.len() as u64, "path", "paths")
        );
        for f in &m.failures {
            let _ = writeln!(out, "  {}: {}", show(&f.name.bytes()), f.reason);
        }
    }
    let _ = writeln!(
        out,
        "this run: {} confirmed ({}), {} sent, {} kept aside, {} mirrored",
        plural(m.confirmed, "file", "files"),
        human_bytes(m.bytes_confirmed),
        human_bytes(m.bytes_sent),
        plural(m.conflicts, "conflict", "conflicts"),
        plural(m.mirrored_paths, "path", "paths")
    );
}

/// The server, its host key, the login and what was negotiated and probed.
fn human_server(srv: &Server, out: &mut String) {
    let a = &srv.algorithms;
    let _ = writeln!(
        out,
        "server:   {} ({} {}), logged in with {}",
        srv.remote, srv.host_key.key_type, srv.host_key.fingerprint, srv.auth
    );
    let _ = writeln!(
        out,
        "          kex {}, host key {}, cipher {}, mac {}",
        a.kex, a.host_key, a.cipher[0], a.mac[0]
    );
    let caps = &srv.capabilities;
    let _ = writeln!(out, "          symlinks: {}", caps.symlinks);
    let _ = writeln!(out, "          permissions: {}", caps.permissions);
    let fsync = if caps.fsync {
        "yes"
    } else {
        "no (uploads are not forced to the server's disk)"
    };
    let _ = writeln!(out, "          fsync: {fsync}");
    let _ = writeln!(out, "          verify: {}", caps.verify);
}

/// "12 paths (3.4 MiB), 2 in flight, uploading at 5.1 MiB/s, about 1 s left".
fn pending_line(m: &Mirror) -> String {
    if m.paths_left() == 0 {
        return "nothing to upload".to_string();
    }
    let mut line = format!(
        "{} ({})",
        plural(m.paths_left(), "path", "paths"),
        human_bytes(m.pending_bytes)
    );
    if m.in_flight > 0 {
        let _ = write!(line, ", {} in flight", m.in_flight);
    }
    if m.upload_rate > 0 {
        let _ = write!(line, ", uploading at {}/s", human_bytes(m.upload_rate));
        if let Some(eta) = m.eta_seconds {
            let _ = write!(line, ", about {} left", duration_words(eta as f64));
        }
    } else if m.pending_bytes > 0 {
        let _ = write!(
            line,
            ", nothing sent in the last {} s",
            m.rate_window_seconds
        );
    }
    line
}

/// How many of the daemon's open-for-writing paths the human view names.
const OPEN_SHOWN: usize = 5;

/// Files open for writing, which no flush covers until they are closed; nothing when none.
fn human_open(open: Option<&OpenFiles>, out: &mut String) {
    let Some(open) = open.filter(|o| o.count > 0) else {
        return;
    };
    let _ = writeln!(
        out,
        "open:     {} open for writing (flush covers them once closed)",
        plural(open.count as u64, "file", "files")
    );
    for p in open.paths.iter().take(OPEN_SHOWN) {
        let _ = writeln!(out, "  {}", show(&p.bytes()));
    }
    let more = open.count.saturating_sub(OPEN_SHOWN);
    if more > 0 {
        let _ = writeln!(out, "  and {more} more");
    }
}

/// The journal and the latest hashes (the part only the one-shot view reads).
fn human_journal(v: &Status, out: &mut String) {
    if let Some(j) = &v.journal {
        let _ = writeln!(
            out,
            "journal:  {} records pending, next seq {}",
            j.records, j.next_seq
        );
        if j.torn_bytes > 0 {
            let _ = writeln!(
                out,
                "          a torn tail of {} bytes will be dropped at the next mount",
                j.torn_bytes
            );
        }
    }
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    for p in v.pending.iter().flatten() {
        *by_op.entry(&p.op).or_default() += 1;
    }
    let summary: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(out, "          {}", summary.join(", "));
    human_hashes(v.hashes.as_deref().unwrap_or_default(), out);
}

/// How many hashes the human view lists.
const HASHES_SHOWN: usize = 10;

/// The hashes the human view lists, and a heading that says which they are. Only hashes
/// journaled since the last checkpoint carry an order (their seq); confirmed ones (seq 0, from
/// the manifest) carry none, so after the latest journaled they come in path order, and the
/// heading says exactly that rather than promising "latest".
fn hashes_to_show(hashes: &[HashEntry]) -> (String, Vec<&HashEntry>) {
    let mut shown: Vec<&HashEntry> = hashes.iter().collect();
    // Stable: confirmed ones keep the document's path order.
    shown.sort_by_key(|h| std::cmp::Reverse(h.seq));
    shown.truncate(HASHES_SHOWN);
    let n = hashes.len();
    let journaled = shown.iter().filter(|h| h.seq > 0).count();
    let confirmed = shown.len() - journaled;
    let which = match (journaled, confirmed) {
        _ if shown.len() == n => String::new(),
        (0, c) => format!(", the first {c} by path"),
        (j, 0) => format!(", the {j} journaled last"),
        (j, c) => format!(", the {j} journaled last, then the first {c} confirmed by path"),
    };
    (
        format!("hashes:   {}{which}", plural(n as u64, "file", "files")),
        shown,
    )
}

fn human_hashes(hashes: &[HashEntry], out: &mut String) {
    let (heading, shown) = hashes_to_show(hashes);
    let _ = writeln!(out, "{heading}");
    for h in &shown {
        let _ = writeln!(
            out,
            "  {}  {:>12}  {}",
            h.sha256,
            h.size,
            show(&h.name.bytes())
        );
    }
    let more = hashes.len() - shown.len();
    if more > 0 {
        let _ = writeln!(out, "  and {more} more (ftpsync status --json lists all)");
    }
}

pub fn print(state_dir: &Path, as_json: bool) -> Result<()> {
    let v = collect(state_dir)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut out = String::new();
    human_live(&v, &mut out);
    human_journal(&v, &mut out);
    print!("{out}");
    Ok(())
}

/// Shows the live view every `every` until interrupted: redrawn in place on a terminal, as
/// blocks one after another otherwise.
pub fn watch(state_dir: &Path, every: Duration) -> Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut first = true;
    loop {
        let v = live(state_dir);
        let mut text = format!(
            "ftpsync status at {}, every {} s (Ctrl-C to stop)\n",
            crate::utc::readable(SystemTime::now()),
            every.as_secs_f64()
        );
        human_live(&v, &mut text);
        let frame = if tty {
            // Home, each line over the old one (clearing its rest), then clear what is below.
            let mut f = String::from(if first { "\x1b[2J\x1b[H" } else { "\x1b[H" });
            for line in text.lines() {
                f.push_str(line);
                f.push_str("\x1b[K\n");
            }
            f.push_str("\x1b[J");
            f
        } else if first {
            text
        } else {
            format!("\n{text}")
        };
        stdout.write_all(frame.as_bytes())?;
        stdout.flush()?;
        first = false;
        std::thread::sleep(every);
    }
}

/// The `mount` label: the mountpoint the daemon recorded, else the state dir.
fn mount_label(v: &Status, state_dir: &Path) -> String {
    v.mount.as_ref().map_or_else(
        || state_dir.to_string_lossy().into_owned(),
        |m| m.mountpoint.clone(),
    )
}

/// The Prometheus text format of the mount's live state.
pub fn prometheus_text(state_dir: &Path) -> String {
    let v = live(state_dir);
    crate::prometheus::render(&v, &mount_label(&v, state_dir))
}

/// Writes `bytes` to `path` through a temporary name beside it (never matching `*.prom`), so
/// a reader sees the old text or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes the Prometheus text to `path` every `every`, until killed. A first write that fails
/// is an error; later failures are reported and retried.
pub fn prometheus_file(state_dir: &Path, path: &Path, every: Duration) -> Result<()> {
    let mut written = false;
    loop {
        match write_atomically(path, prometheus_text(state_dir).as_bytes()) {
            Ok(()) => written = true,
            Err(e) if !written => {
                return Err(e).with_context(|| format!("writing {}", path.display()))
            }
            Err(e) => eprintln!("ftpsync: writing {}: {e}", path.display()),
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A document (or part) written as JSON, read as its type: the fixtures read like the
    /// contract.
    fn doc<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("a status document")
    }

    #[test]
    fn the_human_view_shows_how_many_files_are_open_for_writing_and_the_first() {
        let mut out = String::new();
        human_open(Some(&doc(json!({"count": 0, "paths": []}))), &mut out);
        human_open(None, &mut out);
        assert_eq!(out, "");
        let paths: Vec<Vec<u8>> = (0..7).map(|i| format!("f{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        human_open(Some(&OpenFiles::of(7, &refs)), &mut out);
        assert!(
            out.starts_with(
                "open:     7 files open for writing (flush covers them once closed)\n  f0\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("  f4\n  and 2 more\n"), "{out}");
    }

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(duration_words(0.4), "0 s");
        assert_eq!(duration_words(89.0), "89 s");
        assert_eq!(duration_words(600.0), "10 min");
        assert_eq!(duration_words(5400.0), "1 h 30 min");
        assert_eq!(duration_words(200_000.0), "2 d 7 h");
    }

    #[test]
    fn the_human_view_says_what_is_pending_how_fast_and_since_when() {
        let fixture = json!({
            "state_dir": "/s",
            "mount": {"mountpoint": "/mnt/x", "local_dir": "/home/u/x", "remote": "sftp://u@h/x"},
            "daemon": {"running": true, "pid": 7, "pending_hashes": 1},
            "mirror": {"connection": "connected", "pending": 10, "in_flight": 2,
                       "pending_bytes": 3_565_158, "upload_rate": 5_347_737, "eta_seconds": 1,
                       "rate_window_seconds": 10,
                       "oldest_pending": {"path": "a/b", "age_seconds": 4.2},
                       "confirmed_last_hour": {"files": 3, "bytes": 3072},
                       "last_confirmed_unix": 1_795_647_827.0,
                       "failures": [{"path": "c", "reason": "permission denied"}],
                       "confirmed": 3, "bytes_confirmed": 3072, "bytes_sent": 4096,
                       "conflicts": 0, "mirrored_paths": 5},
        });
        let mut out = String::new();
        human_live(&doc(fixture.clone()), &mut out);
        for want in [
            "mount:    /mnt/x (local /home/u/x, mirrored to sftp://u@h/x)\n",
            "daemon:   running (pid 7), 1 file waiting to be hashed\n",
            "pending:  12 paths (3.4 MiB), 2 in flight, uploading at 5.1 MiB/s, about 1 s left\n",
            "confirmed in the last hour: 3 files (3.0 KiB), the last at 2026-11-25 23:03:47Z\n",
            "oldest pending change: 4 s ago (a/b)\n",
            "failures: 1 path (retried with backoff)\n  c: permission denied\n",
        ] {
            assert!(out.contains(want), "no {want:?} in\n{out}");
        }
        let mut m = fixture;
        m["mirror"]["upload_rate"] = json!(0);
        m["mirror"]["eta_seconds"] = Value::Null;
        let mut out = String::new();
        human_live(&doc(m.clone()), &mut out);
        assert!(
            out.contains(
                "pending:  12 paths (3.4 MiB), 2 in flight, nothing sent in the last 10 s\n"
            ),
            "{out}"
        );
        m["mirror"]["pending"] = json!(0);
        m["mirror"]["in_flight"] = json!(0);
        let mut out = String::new();
        human_live(&doc(m.clone()), &mut out);
        assert!(out.contains("pending:  nothing to upload\n"), "{out}");
        m["mirror"] = Value::Null;
        m["daemon"] = json!({"running": false, "pid": null});
        let mut out = String::new();
        human_live(&doc(m.clone()), &mut out);
        assert!(!out.contains("pending:"), "{out}");
        assert!(out.contains("daemon:   not running\n"), "{out}");
    }

    #[test]
    fn the_human_view_lists_the_hashes_its_heading_names() {
        let h = |path: &str, seq: u64| {
            doc(
                json!({"path": path, "sha256": format!("{path}-sum"), "size": 1, "seq": seq,
                   "confirmed": seq == 0}),
            )
        };
        // Sorted by path, as collect() writes them: two journaled since the checkpoint.
        let mut hashes: Vec<HashEntry> = (0..11).map(|i| h(&format!("f{i:02}"), 0)).collect();
        hashes.push(h("late", 9));
        hashes.push(h("zz", 5));
        let mut out = String::new();
        human_hashes(&hashes, &mut out);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "hashes:   13 files, the 2 journaled last, then the first 8 confirmed by path",
            "{out}"
        );
        let listed: Vec<&str> = lines[1..11]
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            listed,
            ["late", "zz", "f00", "f01", "f02", "f03", "f04", "f05", "f06", "f07"],
            "{out}"
        );
        assert_eq!(
            lines[11], "  and 3 more (ftpsync status --json lists all)",
            "{out}"
        );
        assert_eq!(lines.len(), 12, "{out}");

        let confirmed: Vec<HashEntry> = (0..12).map(|i| h(&format!("f{i:02}"), 0)).collect();
        let mut out = String::new();
        human_hashes(&confirmed, &mut out);
        assert!(
            out.starts_with("hashes:   12 files, the first 10 by path\n  f00-sum"),
            "{out}"
        );

        let mut out = String::new();
        human_hashes(&confirmed[..1], &mut out);
        assert_eq!(out.lines().next(), Some("hashes:   1 file"), "{out}");
        assert!(!out.contains("latest"), "{out}");
    }
}
