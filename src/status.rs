//! `ftpsync status` and `ftpsync flush`: what the journal holds, read without disturbing a
//! running daemon, and a wait for the daemon to settle.

use crate::control::{self, Request};
use crate::fs::STATE_DIR_XATTR;
use crate::hash::to_hex;
use crate::journal::{Journal, Record};
use crate::mirror::Manifest;
use crate::replay::PathMap;
use crate::run::{self, PID_FILE};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A state dir given directly, or the one a mountpoint's daemon reports.
pub fn resolve_state_dir(target: &Path) -> Result<PathBuf> {
    if target.join("journal").is_dir() || target.join(PID_FILE).exists() {
        return Ok(target.to_path_buf());
    }
    let c = CString::new(target.as_os_str().as_bytes())?;
    let name = CString::new(STATE_DIR_XATTR)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings; the buffer length is passed.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        bail!(
            "{} is neither an ftpsync state dir nor a live ftpsync mount",
            target.display()
        );
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(
        <std::ffi::OsString as OsStringExt>::from_vec(buf),
    ))
}

/// The daemon's pid, if one holds the state dir's lock (a pid file alone could be stale, or
/// name a zombie or a reused pid).
fn daemon_pid(state_dir: &Path) -> Option<u32> {
    if !run::state_dir_locked(state_dir) {
        return None;
    }
    std::fs::read_to_string(state_dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn path_json(p: &[u8]) -> (String, String) {
    (String::from_utf8_lossy(p).into_owned(), hex::encode(p))
}

fn hash_json(p: &[u8], size: u64, sha256: &str, seq: u64, confirmed: bool) -> Value {
    let (path, path_hex) = path_json(p);
    json!({"path": path, "path_hex": path_hex, "size": size, "sha256": sha256,
           "seq": seq, "confirmed": confirmed})
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
    let pid = daemon_pid(state_dir);
    let live = pid.and_then(|_| control::call(state_dir, &Request::Status).ok());
    let (pending_hashes, mirror) = live.map_or((None, None), |r| (r.pending_hashes, r.mirror));
    Ok(json!({
        "state_dir": state_dir,
        "daemon": {
            "running": pid.is_some(),
            "pid": pid,
            "pending_hashes": pending_hashes,
        },
        "mirror": mirror,
        "journal": {
            "records": pending.len(),
            "applied_seq": applied,
            "next_seq": replay.next_seq,
            "torn_bytes": replay.torn_bytes,
        },
        "pending": pending,
        "hashes": hashes,
    }))
}

pub fn print(state_dir: &Path, as_json: bool) -> Result<()> {
    let v = collect(state_dir)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let d = &v["daemon"];
    match d["pid"].as_u64() {
        Some(pid) => println!(
            "daemon:   running (pid {pid}), {} files waiting to be hashed",
            d["pending_hashes"]
        ),
        None => println!("daemon:   not running"),
    }
    println!("state:    {}", state_dir.display());
    let m = &v["mirror"];
    if !m.is_null() {
        println!("remote:   {}", m["connection"].as_str().unwrap_or("?"));
        let srv = &m["server"];
        if !srv.is_null() {
            let a = &srv["algorithms"];
            println!(
                "server:   {} ({} {}), logged in with {}",
                srv["remote"].as_str().unwrap_or("?"),
                srv["host_key"]["type"].as_str().unwrap_or("?"),
                srv["host_key"]["fingerprint"].as_str().unwrap_or("?"),
                srv["auth"].as_str().unwrap_or("?")
            );
            println!(
                "          kex {}, host key {}, cipher {}, mac {}",
                a["kex"].as_str().unwrap_or("?"),
                a["host_key"].as_str().unwrap_or("?"),
                a["cipher"][0].as_str().unwrap_or("?"),
                a["mac"][0].as_str().unwrap_or("?")
            );
        }
        println!(
            "mirror:   {} paths pending ({} bytes), {} in flight, {} files confirmed this run ({} bytes sent), {} conflicts kept aside",
            m["pending"], m["pending_bytes"], m["in_flight"], m["confirmed"], m["bytes_sent"], m["conflicts"]
        );
        for f in m["failures"].as_array().into_iter().flatten() {
            println!(
                "  failing: {}: {}",
                f["path"].as_str().unwrap_or("?").escape_debug(),
                f["reason"].as_str().unwrap_or("?")
            );
        }
    }
    let j = &v["journal"];
    println!(
        "journal:  {} records pending, next seq {}",
        j["records"], j["next_seq"]
    );
    if j["torn_bytes"].as_u64().unwrap_or(0) > 0 {
        println!(
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
    println!("          {}", summary.join(", "));
    let hashes = v["hashes"].as_array().cloned().unwrap_or_default();
    println!("hashes:   {} files (latest shown)", hashes.len());
    let mut recent = hashes.clone();
    recent.sort_by_key(|h| std::cmp::Reverse(h["seq"].as_u64()));
    for h in recent.iter().take(10) {
        let path = h["path"].as_str().unwrap_or("");
        println!(
            "  {}  {:>12}  {}",
            h["sha256"].as_str().unwrap_or(""),
            h["size"],
            path.escape_debug()
        );
    }
    Ok(())
}

/// Waits for the daemon to hash every closed file and (unless `local`) for the remote to
/// confirm every change.
pub fn flush(state_dir: &Path, timeout: Duration, local: bool) -> Result<()> {
    let reply = control::call(
        state_dir,
        &Request::Flush {
            timeout_ms: timeout.as_millis() as u64,
            local,
        },
    )?;
    if !reply.ok {
        bail!(
            "flush did not finish within {}s: {}",
            timeout.as_secs(),
            reply.error.unwrap_or_default()
        );
    }
    Ok(())
}
