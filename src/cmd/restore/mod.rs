//! `ftpsync restore REMOTE DIR`: pulls the remote tree into a local directory.
//!
//! Every file is hashed (SHA-256) as it streams in; with the mirror's manifest (its state dir)
//! the hash must be the one the mirror confirmed, or the file is reported and not kept. Each
//! file goes to a part name beside its target (`.NAME.ftpsync-part`), is fsync'd, verified,
//! given its mode and mtime, and only then renamed into place: so a file found in place with
//! the expected size, mtime and mode was verified by an earlier run, and a re-run after an
//! interruption skips it (and removes the part files the interruption left).
//!
//! Since a restore replaces the files and symlinks in its way, DIR must be empty or hold the
//! marker (`MARKER`) an unfinished restore of the same remote left: a run writes it before
//! anything else and removes it when it completes with no problems. Without the manifest's word
//! a mode loses its setuid and setgid bits.
//!
//! Nothing is written outside DIR: DIR is opened once, and every local operation is relative
//! to a directory descriptor beneath it, one validated name at a time, never following a
//! symlink (`local`). A symlink on the server is recreated as a symlink with its target as it
//! is, never followed on either side; a local symlink where the remote has a directory is
//! refused. Directories get their modes and mtimes after their contents.
//!
//! `target` guards DIR (the marker, the directories made before the files and finished after
//! them), `plan` lists the remote and decides what to restore, `fetch` downloads it over
//! several connections; this file holds the command and what the three share.

mod fetch;
mod plan;
mod target;
#[cfg(test)]
mod tests;

pub use fetch::restore;
pub use plan::{is_part_name, part_name, PART_SUFFIX};
pub use target::{check_target, remove_marker, write_marker, Target, MARKER};

use crate::local;
use crate::mirror::{Confirmed, Manifest};
use crate::progress::human_bytes;
use crate::remote::Remote;
use crate::remote::{self, display_path, ConnectOptions, SecretSource, Transport};
use crate::statedir::MANIFEST;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Setuid and setgid: taken only from the manifest, never from what the server reports.
const UNVOUCHED: u32 = 0o6000;

/// The mode a restore gives an entry the manifest has no word on: the server's permission bits,
/// without setuid and setgid (a server must not hand out a setuid binary to whoever restores).
fn server_mode(mode: u32) -> u32 {
    mode & 0o7777 & !UNVOUCHED
}

/// What `ftpsync restore` was asked to do.
pub struct Request {
    pub remote: Remote,
    pub dir: PathBuf,
    /// The mirror's state dir: its manifest verifies, its known_hosts pins (already in
    /// `connect`).
    pub state_dir: Option<PathBuf>,
    pub connect: ConnectOptions,
    pub connections: usize,
}

/// Opens one more connection to the remote.
pub type Connect<'a> = dyn Fn() -> remote::Result<Box<dyn Transport>> + Sync + 'a;

/// What the manifest says each path is.
pub type Expected = HashMap<Vec<u8>, Confirmed>;

/// What a restore did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files downloaded (and kept) and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub symlinks: u64,
    pub dirs: u64,
    /// Files and symlinks found already restored.
    pub skipped: u64,
    /// Downloaded files whose SHA-256 matched the manifest's, and those it has no word on.
    pub verified: u64,
    pub unverified: u64,
    /// Whether a manifest was used at all.
    pub with_manifest: bool,
    /// Remote entries deliberately left out (interrupted uploads, devices, FIFOs, sockets)
    /// or restored without the setuid/setgid bits no manifest vouched for.
    pub notes: Vec<String>,
    /// Everything that was not restored as it should be: the restore is incomplete.
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

fn problem(rel: &[u8], why: impl std::fmt::Display) -> String {
    format!("{}: {why}", display_path(rel))
}

fn name_of(name: &[u8]) -> io::Result<CString> {
    local::component(OsStr::from_bytes(name))
}

/// The manifest in `state_dir`, or None (with a note) when the state dir has none.
fn load_manifest(state_dir: &Path) -> Result<Option<Expected>> {
    if !state_dir.is_dir() {
        bail!("state dir {} does not exist", state_dir.display());
    }
    if !state_dir.join(MANIFEST).is_file() {
        eprintln!(
            "ftpsync: no manifest in {}: every SHA-256 is computed, none can be checked",
            state_dir.display()
        );
        return Ok(None);
    }
    let m = Manifest::open(state_dir)
        .with_context(|| format!("cannot read the manifest in {}", state_dir.display()))?;
    Ok(Some(
        m.iter().map(|(p, c)| (p.clone(), c.clone())).collect(),
    ))
}

/// `ftpsync restore`: restores, prints what it did, and fails if anything was not restored.
pub fn run(req: &Request) -> Result<()> {
    let md = std::fs::metadata(&req.dir).with_context(|| {
        format!(
            "target directory {} (create it, empty, first)",
            req.dir.display()
        )
    })?;
    if !md.is_dir() {
        bail!("{} is not a directory", req.dir.display());
    }
    let root =
        local::open_root(&req.dir).with_context(|| format!("cannot open {}", req.dir.display()))?;
    let remote_url = req.remote.to_string();
    let target = check_target(root.as_fd(), &req.dir, &remote_url)?;
    let expected = match &req.state_dir {
        Some(d) => load_manifest(d)?,
        None => None,
    };
    let hint_dir = req
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("STATE_DIR"));
    // Connections are made in parallel, unless each may ask on the terminal.
    let prompts = [
        &req.connect.passphrase,
        &req.connect.password,
        &req.connect.otp,
    ]
    .iter()
    .any(|s| matches!(s, Some(SecretSource::Prompt(_))));
    let one_at_a_time = parking_lot::Mutex::new(());
    let connect = || -> remote::Result<Box<dyn Transport>> {
        let _turn = prompts.then(|| one_at_a_time.lock());
        remote::open(&req.connect)
            .map_err(|e| crate::remote::explain_refusal(e, &req.remote, &hint_dir))
    };
    let first = connect().map_err(|e| {
        let e = if req.state_dir.is_none() && e.host_key_refusal().is_some() {
            e.hint("then give restore --state-dir STATE_DIR too")
        } else {
            e
        };
        anyhow::anyhow!("restore from {}: {e}", req.remote)
    })?;
    if target == Target::Empty {
        write_marker(root.as_fd(), &remote_url).with_context(|| {
            format!(
                "cannot write the restore marker {} in {}",
                display_path(MARKER),
                req.dir.display()
            )
        })?;
    }
    let s = restore(
        root.as_fd(),
        expected.as_ref(),
        first,
        &connect,
        req.connections,
    );
    for n in &s.notes {
        eprintln!("ftpsync: {n}");
    }
    for p in &s.problems {
        eprintln!("ftpsync: {p}");
    }
    print!("{}", report(&s));
    if !s.problems.is_empty() {
        bail!(
            "restore of {} into {} is incomplete: {} problems (listed above); run it again \
             once they are dealt with",
            req.remote,
            req.dir.display(),
            s.problems.len()
        );
    }
    remove_marker(root.as_fd()).with_context(|| {
        format!(
            "restore complete, but the marker {} in {} cannot be removed",
            display_path(MARKER),
            req.dir.display()
        )
    })
}

/// The summary printed at the end.
pub fn report(s: &Summary) -> String {
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(", {}/s", human_bytes((s.bytes as f64 / secs) as u64))
    } else {
        String::new()
    };
    let hashes = if s.with_manifest {
        format!(
            "SHA-256: {} checked against the manifest, {} not in it (computed only)",
            s.verified, s.unverified
        )
    } else {
        format!(
            "SHA-256: {} computed (no manifest to check them against)",
            s.files
        )
    };
    format!(
        "downloaded {} files ({}, {} bytes) in {secs:.1} s{rate}; {} symlinks, {} directories\n\
         skipped {} already restored\n{hashes}\nproblems: {}\n",
        s.files,
        human_bytes(s.bytes),
        s.bytes,
        s.symlinks,
        s.dirs,
        s.skipped,
        s.problems.len()
    )
}
