//! `ftpsync status` and `ftpsync flush`: what the journal holds, read without disturbing a
//! running daemon, and a wait for the daemon to settle.

use crate::config::MountConfig;
use crate::control::{self, OpenFiles, PathName, Request};
use crate::fs::show;
use crate::hash::to_hex;
use crate::journal::{Journal, Record};
use crate::mirror::Manifest;
use crate::progress::human_bytes;
use crate::replay::PathMap;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use crate::daemons::resolve_state_dir;

fn path_json(p: &[u8]) -> (String, String) {
    let n = PathName::of(p);
    (n.path, n.path_hex)
}

fn hash_json(p: &[u8], size: u64, sha256: &str, seq: u64, confirmed: bool) -> Value {
    let (path, path_hex) = path_json(p);
    json!({"path": path, "path_hex": path_hex, "size": size, "sha256": sha256,
           "seq": seq, "confirmed": confirmed})
}

/// How long a status query waits for the daemon to answer.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// The mount's record in the state dir (null before the first mount).
fn mount_json(state_dir: &Path) -> Value {
    match MountConfig::recorded(state_dir) {
        Ok(c) => json!({
            "mountpoint": c.mountpoint.to_string_lossy(),
            "local_dir": c.local_dir.to_string_lossy(),
            "remote": c.remote.to_string(),
        }),
        Err(_) => Value::Null,
    }
}

/// What the daemon reports, cheaply (no journal, no manifest read): the part of the status
/// document that `--watch` and the Prometheus output show.
pub fn live(state_dir: &Path) -> Value {
    let pid = crate::daemons::pid_of(state_dir);
    let reply =
        pid.and_then(|_| control::call_within(state_dir, &Request::Status, Some(STATUS_WAIT)).ok());
    let (pending_hashes, errors, mirror, open) = reply.map_or((None, None, None, None), |r| {
        (
            r.pending_hashes,
            r.errors_answered,
            r.mirror,
            r.open_for_writing,
        )
    });
    json!({
        "state_dir": state_dir.to_string_lossy(),
        "mount": mount_json(state_dir),
        "daemon": {
            "running": pid.is_some(),
            "pid": pid,
            "pending_hashes": pending_hashes,
            "errors_answered": errors,
            "open_for_writing": open,
        },
        "mirror": mirror,
    })
}

/// The status document (see doc/CONTRACTS.md).
pub fn collect(state_dir: &Path) -> Result<Value> {
    let replay = Journal::read(&state_dir.join("journal"))
        .with_context(|| format!("reading the journal in {}", state_dir.display()))?;
    // The latest hash of each file: what the remote confirmed (the manifest already reflects
    // every rename the engine replayed), overlaid with the hashes journaled since its
    // checkpoint, each under the name it has after the later records.
    let manifest = Manifest::open(state_dir).context("reading the manifest")?;
    let applied = manifest.applied_seq();
    let mut journaled: PathMap<(u64, String, u64)> = PathMap::default();
    let mut pending = Vec::new();
    for e in replay.entries.iter().filter(|e| e.seq > applied) {
        let (path, path_hex) = path_json(e.record.path());
        match &e.record {
            Record::Store {
                size,
                sha256,
                path: p,
                ..
            } => journaled.insert(p.clone(), (*size, to_hex(sha256), e.seq)),
            other => journaled.follow(other),
        }
        pending
            .push(json!({"seq": e.seq, "op": e.record.op(), "path": path, "path_hex": path_hex}));
    }
    let mut hashes: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
    for (p, c) in manifest.iter() {
        if let Some(f) = c.file() {
            hashes.insert(p.clone(), hash_json(p, f.size, &to_hex(&f.sha256), 0, true));
        }
    }
    for (p, (size, sha256, seq)) in journaled {
        hashes.insert(p.clone(), hash_json(&p, size, &sha256, seq, false));
    }
    let hashes: Vec<Value> = hashes.into_values().collect();
    let mut doc = live(state_dir);
    doc["journal"] = json!({
        "records": pending.len(),
        "applied_seq": applied,
        "next_seq": replay.next_seq,
        "torn_bytes": replay.torn_bytes,
    });
    doc["pending"] = Value::Array(pending);
    doc["hashes"] = Value::Array(hashes);
    Ok(doc)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

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
fn human_live(v: &Value, out: &mut String) {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mount = &v["mount"];
    if mount.is_object() {
        let (mnt, local) = (text(&mount["mountpoint"]), text(&mount["local_dir"]));
        let local = if mnt == local {
            "mounted over itself".to_string()
        } else {
            format!("local {local}")
        };
        let _ = writeln!(
            out,
            "mount:    {} ({local}, mirrored to {})",
            mnt.escape_debug(),
            text(&mount["remote"])
        );
    }
    let d = &v["daemon"];
    match d["pid"].as_u64() {
        Some(pid) if v["mirror"].is_object() => {
            let _ = writeln!(
                out,
                "daemon:   running (pid {pid}), {} waiting to be hashed",
                plural(n(&d["pending_hashes"]), "file", "files")
            );
        }
        Some(pid) => {
            let _ = writeln!(out, "daemon:   running (pid {pid}) but not answering");
        }
        None => {
            let _ = writeln!(out, "daemon:   not running");
        }
    }
    let _ = writeln!(out, "state:    {}", text(&v["state_dir"]).escape_debug());
    let m = &v["mirror"];
    if !m.is_object() {
        return;
    }
    let _ = writeln!(out, "remote:   {}", text(&m["connection"]));
    let srv = &m["server"];
    if srv.is_object() {
        let a = &srv["algorithms"];
        let _ = writeln!(
            out,
            "server:   {} ({} {}), logged in with {}",
            text(&srv["remote"]),
            text(&srv["host_key"]["type"]),
            text(&srv["host_key"]["fingerprint"]),
            text(&srv["auth"])
        );
        let _ = writeln!(
            out,
            "          kex {}, host key {}, cipher {}, mac {}",
            text(&a["kex"]),
            text(&a["host_key"]),
            text(&a["cipher"][0]),
            text(&a["mac"][0])
        );
        let caps = &srv["capabilities"];
        let _ = writeln!(out, "          symlinks: {}", text(&caps["symlinks"]));
        let _ = writeln!(out, "          permissions: {}", text(&caps["permissions"]));
        let fsync = if caps["fsync"] == serde_json::Value::Bool(false) {
            "no (uploads are not forced to the server's disk)"
        } else {
            "yes"
        };
        let _ = writeln!(out, "          fsync: {fsync}");
        let _ = writeln!(out, "          verify: {}", text(&caps["verify"]));
    }
    let (waiting, in_flight, bytes) =
        (n(&m["pending"]), n(&m["in_flight"]), n(&m["pending_bytes"]));
    let rate = n(&m["upload_rate"]);
    let mut line = format!(
        "{} ({})",
        plural(waiting + in_flight, "path", "paths"),
        human_bytes(bytes)
    );
    if in_flight > 0 {
        let _ = write!(line, ", {in_flight} in flight");
    }
    if waiting + in_flight == 0 {
        line = "nothing to upload".to_string();
    } else if rate > 0 {
        let _ = write!(line, ", uploading at {}/s", human_bytes(rate));
        if let Some(eta) = m["eta_seconds"].as_f64() {
            let _ = write!(line, ", about {} left", duration_words(eta));
        }
    } else if bytes > 0 {
        let _ = write!(
            line,
            ", nothing sent in the last {} s",
            n(&m["rate_window_seconds"])
        );
    }
    let _ = writeln!(out, "pending:  {line}");
    human_open(&d["open_for_writing"], out);
    let hour = &m["confirmed_last_hour"];
    let _ = write!(
        out,
        "confirmed in the last hour: {} ({})",
        plural(n(&hour["files"]), "file", "files"),
        human_bytes(n(&hour["bytes"]))
    );
    match m["last_confirmed_unix"].as_f64() {
        Some(t) => {
            let when = std::time::UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
            let _ = writeln!(out, ", the last at {}", crate::utc::readable(when));
        }
        None => out.push('\n'),
    }
    let oldest = &m["oldest_pending"];
    if oldest.is_object() {
        let _ = writeln!(
            out,
            "oldest pending change: {} ago ({})",
            duration_words(oldest["age_seconds"].as_f64().unwrap_or(0.0)),
            text(&oldest["path"]).escape_debug()
        );
    }
    let failures = m["failures"].as_array().cloned().unwrap_or_default();
    if failures.is_empty() {
        let _ = writeln!(out, "failures: none");
    } else {
        let _ = writeln!(
            out,
            "failures: {} (retried with backoff)",
            plural(failures.len() as u64, "path", "paths")
        );
        for f in &failures {
            let _ = writeln!(
                out,
                "  {}: {}",
                text(&f["path"]).escape_debug(),
                text(&f["reason"])
            );
        }
    }
    let _ = writeln!(
        out,
        "this run: {} confirmed ({}), {} sent, {} kept aside, {} mirrored",
        plural(n(&m["confirmed"]), "file", "files"),
        human_bytes(n(&m["bytes_confirmed"])),
        human_bytes(n(&m["bytes_sent"])),
        plural(n(&m["conflicts"]), "conflict", "conflicts"),
        plural(n(&m["mirrored_paths"]), "path", "paths")
    );
}

/// How many of the daemon's open-for-writing paths the human view names.
const OPEN_SHOWN: usize = 5;

/// Files open for writing, which no flush covers until they are closed; nothing when none.
fn human_open(open: &Value, out: &mut String) {
    let Ok(open) = serde_json::from_value::<OpenFiles>(open.clone()) else {
        return;
    };
    if open.count == 0 {
        return;
    }
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
fn human_journal(v: &Value, out: &mut String) {
    let j = &v["journal"];
    let _ = writeln!(
        out,
        "journal:  {} records pending, next seq {}",
        j["records"], j["next_seq"]
    );
    if j["torn_bytes"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            out,
            "          a torn tail of {} bytes will be dropped at the next mount",
            j["torn_bytes"]
        );
    }
    let pending = v["pending"].as_array().cloned().unwrap_or_default();
    let mut by_op: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pending {
        *by_op
            .entry(p["op"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let summary: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(out, "          {}", summary.join(", "));
    human_hashes(
        v["hashes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        out,
    );
}

/// How many hashes the human view lists.
const HASHES_SHOWN: usize = 10;

/// The hashes the human view lists, and a heading that says which they are. Only hashes
/// journaled since the last checkpoint carry an order (their seq); confirmed ones (seq 0, from
/// the manifest) carry none, so after the latest journaled they come in path order, and the
/// heading says exactly that rather than promising "latest".
fn hashes_to_show(hashes: &[Value]) -> (String, Vec<&Value>) {
    let mut shown: Vec<&Value> = hashes.iter().collect();
    // Stable: confirmed ones keep the document's path order.
    shown.sort_by_key(|h| std::cmp::Reverse(h["seq"].as_u64().unwrap_or(0)));
    shown.truncate(HASHES_SHOWN);
    let n = hashes.len();
    let journaled = shown
        .iter()
        .filter(|h| h["seq"].as_u64().unwrap_or(0) > 0)
        .count();
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

fn human_hashes(hashes: &[Value], out: &mut String) {
    let (heading, shown) = hashes_to_show(hashes);
    let _ = writeln!(out, "{heading}");
    for h in &shown {
        let path = h["path"].as_str().unwrap_or("");
        let _ = writeln!(
            out,
            "  {}  {:>12}  {}",
            h["sha256"].as_str().unwrap_or(""),
            h["size"],
            path.escape_debug()
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
fn mount_label(v: &Value, state_dir: &Path) -> String {
    v["mount"]["mountpoint"]
        .as_str()
        .map_or_else(|| state_dir.to_string_lossy().into_owned(), str::to_string)
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
fn flush_waits_for(mirror: &Value) -> String {
    let n = |k: &str| mirror[k].as_u64().unwrap_or(0);
    let paths = n("pending") + n("in_flight");
    let mut line = format!("flush: {} left", plural(paths, "path", "paths"));
    if n("pending_bytes") > 0 {
        let _ = write!(line, ", {} to send", human_bytes(n("pending_bytes")));
        if n("upload_rate") > 0 {
            let _ = write!(line, " at {}/s", human_bytes(n("upload_rate")));
        }
    }
    if let Some(path) = mirror["oldest_pending"]["path"].as_str() {
        let age = mirror["oldest_pending"]["age_seconds"]
            .as_f64()
            .unwrap_or(0.0);
        let _ = write!(line, "; oldest {path} ({age:.0} s)");
    }
    if let Some(c) = mirror["connection"].as_str() {
        let _ = write!(line, "; remote: {c}");
    }
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

    fn open_files(count: usize, paths: &[&[u8]]) -> OpenFiles {
        OpenFiles {
            count,
            paths: paths.iter().map(|p| PathName::of(p)).collect(),
        }
    }

    #[test]
    fn a_waiting_flush_says_what_is_left_how_fast_and_the_oldest_path() {
        let mirror = json!({"pending": 2, "in_flight": 1, "pending_bytes": 12 << 20,
            "upload_rate": 2 << 20, "connection": "connected",
            "oldest_pending": {"path": "big.bin", "age_seconds": 14.2}});
        assert_eq!(
            flush_waits_for(&mirror),
            "flush: 3 paths left, 12.0 MiB to send at 2.0 MiB/s; oldest big.bin (14 s); \
             remote: connected"
        );
        let offline = json!({"pending": 1, "in_flight": 0, "pending_bytes": 0,
            "connection": "retrying: connection refused", "oldest_pending": null});
        assert_eq!(
            flush_waits_for(&offline),
            "flush: 1 path left; remote: retrying: connection refused"
        );
    }

    #[test]
    fn a_flush_names_each_open_file_on_a_line_of_its_own_then_counts_them() {
        assert_eq!(open_report(&OpenFiles::default()), "");
        let text = open_report(&open_files(3, &[b"a/b", b"new\nline"]));
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

    #[test]
    fn the_human_view_shows_how_many_files_are_open_for_writing_and_the_first() {
        let mut out = String::new();
        human_open(&json!({"count": 0, "paths": []}), &mut out);
        human_open(&Value::Null, &mut out);
        assert_eq!(out, "");
        let paths: Vec<Vec<u8>> = (0..7).map(|i| format!("f{i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        let open = serde_json::to_value(open_files(7, &refs)).unwrap();
        human_open(&open, &mut out);
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
        let doc = json!({
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
        human_live(&doc, &mut out);
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
        let mut m = doc.clone();
        m["mirror"]["upload_rate"] = json!(0);
        m["mirror"]["eta_seconds"] = Value::Null;
        let mut out = String::new();
        human_live(&m, &mut out);
        assert!(
            out.contains(
                "pending:  12 paths (3.4 MiB), 2 in flight, nothing sent in the last 10 s\n"
            ),
            "{out}"
        );
        m["mirror"]["pending"] = json!(0);
        m["mirror"]["in_flight"] = json!(0);
        let mut out = String::new();
        human_live(&m, &mut out);
        assert!(out.contains("pending:  nothing to upload\n"), "{out}");
        m["mirror"] = Value::Null;
        m["daemon"] = json!({"running": false, "pid": null});
        let mut out = String::new();
        human_live(&m, &mut out);
        assert!(!out.contains("pending:"), "{out}");
        assert!(out.contains("daemon:   not running\n"), "{out}");
    }

    #[test]
    fn the_human_view_lists_the_hashes_its_heading_names() {
        let h = |path: &str, seq: u64| {
            json!({"path": path, "sha256": format!("{path}-sum"), "size": 1, "seq": seq,
                   "confirmed": seq == 0})
        };
        // Sorted by path, as collect() writes them: two journaled since the checkpoint.
        let mut hashes: Vec<Value> = (0..11).map(|i| h(&format!("f{i:02}"), 0)).collect();
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

        let confirmed: Vec<Value> = (0..12).map(|i| h(&format!("f{i:02}"), 0)).collect();
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
