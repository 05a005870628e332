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

use crate::journal::child_path;
use crate::local::{self, SetTime};
use crate::mirror::{Confirmed, FileMeta, Manifest, MANIFEST_FILE};
use crate::progress::{human_bytes, Progress};
use crate::remote::path::split_parent;
use crate::remote::Remote;
use crate::remote::{
    self, display_path, ConnectOptions, ErrorKind, FileKind, RemoteStat, SecretSource, Transport,
};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Ends the name a file is downloaded to: `.NAME.ftpsync-part` beside NAME.
pub const PART_SUFFIX: &[u8] = b".ftpsync-part";
/// Longest file name (NAME_MAX).
const NAME_MAX: usize = 255;
/// Tries per file when the connection drops or the file changes on the server while read.
const ATTEMPTS: u32 = 3;
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

/// The part name for `name`, distinct from every name in `taken` (the directory's remote
/// names and the part names already given out there): `.NAME.ftpsync-part`, `-1`, `-2`...
/// appended on a clash; a name too long for that keeps a prefix and a hash of the whole.
pub fn part_name(name: &[u8], taken: &HashSet<Vec<u8>>) -> Vec<u8> {
    for n in 0u32.. {
        let tag = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let tail = PART_SUFFIX.len() + tag.len();
        let mut out = vec![b'.'];
        if 1 + name.len() + tail <= NAME_MAX {
            out.extend_from_slice(name);
        } else {
            let digest = hex::encode(&Sha256::digest(name)[..8]);
            let keep = NAME_MAX - 1 - tail - 1 - digest.len();
            out.extend_from_slice(&name[..keep]);
            out.push(b'~');
            out.extend_from_slice(digest.as_bytes());
        }
        out.extend_from_slice(PART_SUFFIX);
        out.extend_from_slice(tag.as_bytes());
        if !taken.contains(&out) {
            return out;
        }
    }
    Vec::new()
}

/// Whether a local name is one of our part names (left by an interrupted restore).
pub fn is_part_name(name: &[u8]) -> bool {
    let stem = match name.iter().rposition(|&b| b == b'-') {
        Some(i) if i + 1 < name.len() && name[i + 1..].iter().all(u8::is_ascii_digit) => &name[..i],
        _ => name,
    };
    name.starts_with(b".") && stem.len() > PART_SUFFIX.len() + 1 && stem.ends_with(PART_SUFFIX)
}

/// The marker a restore keeps in DIR, recording the remote, from its start until a run
/// completes with no problems: a DIR that is not empty is restored into only when it holds the
/// marker of the same remote. Its name has the form of ftpsync's temporary upload names
/// (`.NAME.ftpsync-tmp-<16 hex>`), which restore never takes from a server (it leaves them out
/// as interrupted uploads): no remote entry is ever restored over the marker or mistaken for it.
pub const MARKER: &[u8] = b".ftpsync-restore.ftpsync-tmp-0000000000000000";
/// Most of a marker read (it is two short lines).
const MARKER_MAX: u64 = 64 << 10;

/// What DIR held when a restore started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Nothing, or only the marker of a restore of another remote that got no further: a new
    /// restore, which writes its marker.
    Empty,
    /// What an unfinished restore of the same remote left, its marker included: resumed.
    Resumed,
}

fn marker_text(remote: &str) -> String {
    format!(
        "ftpsync restore into this directory is unfinished: run it again to complete it \
         (this file goes when a run completes with no problems)\nremote: {remote}\n"
    )
}

/// The remote the marker in `root` records; None when there is none (anything but a regular
/// file with a `remote:` line is no marker).
fn marker_remote(root: BorrowedFd<'_>) -> io::Result<Option<String>> {
    let (fd, st) = match local::lookup(root, &name_of(MARKER)?) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        found => found?,
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let mut text = Vec::new();
    local::reopen(fd.as_fd(), libc::O_RDONLY)?
        .take(MARKER_MAX)
        .read_to_end(&mut text)?;
    Ok(text
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"remote: "))
        .map(|r| String::from_utf8_lossy(r).into_owned()))
}

/// Whether a restore of `remote` may write into `root` (DIR, named `shown` in errors): only
/// when it is empty or holds the marker of an unfinished restore of the same remote, since a
/// restore replaces the files and symlinks in its way and removes stale part files.
pub fn check_target(root: BorrowedFd<'_>, shown: &Path, remote: &str) -> Result<Target> {
    let entries =
        local::list_dir(root).with_context(|| format!("cannot list {}", shown.display()))?;
    let others = entries
        .iter()
        .filter(|e| e.name.as_bytes() != MARKER)
        .count();
    let recorded = if others < entries.len() {
        marker_remote(root).with_context(|| {
            format!(
                "cannot read the restore marker {} in {}",
                display_path(MARKER),
                shown.display()
            )
        })?
    } else {
        None
    };
    match recorded {
        Some(r) if r == remote => Ok(Target::Resumed),
        Some(_) if others == 0 => Ok(Target::Empty),
        None if entries.is_empty() => Ok(Target::Empty),
        Some(r) => bail!(
            "{} holds an unfinished restore of {r}, not of {remote}; restore into an empty \
             directory, or finish that one",
            shown.display()
        ),
        None => bail!(
            "{} is not empty; restore into an empty directory, or into the one an unfinished \
             restore of this remote left (it holds the marker {}), which it resumes: a restore \
             replaces the files and symlinks in its way, so it refuses a directory it did not \
             start in",
            shown.display(),
            display_path(MARKER)
        ),
    }
}

fn sync_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    local::reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY).and_then(|d| d.sync_all())
}

/// Puts the marker of a restore of `remote` in `root` (0600, replacing another remote's),
/// durably, before anything else is written there.
pub fn write_marker(root: BorrowedFd<'_>, remote: &str) -> io::Result<()> {
    let name = name_of(MARKER)?;
    match local::unlink(root, &name, 0) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        _ => {}
    }
    let mut f = local::create(root, &name, libc::O_WRONLY | libc::O_EXCL, 0o600)?;
    f.write_all(marker_text(remote).as_bytes())?;
    f.sync_all()?;
    sync_dir(root)
}

/// Removes the marker once a run completed with no problems.
pub fn remove_marker(root: BorrowedFd<'_>) -> io::Result<()> {
    local::unlink(root, &name_of(MARKER)?, 0)?;
    sync_dir(root)
}

struct DirJob {
    rel: Vec<u8>,
    mode: u32,
    atime: i64,
    mtime: i64,
}

struct FileJob {
    rel: Vec<u8>,
    part: Vec<u8>,
    /// As listed: what is expected without a manifest.
    size: u64,
    mode: u32,
    mtime: i64,
    want: Option<FileMeta>,
}

struct LinkJob {
    rel: Vec<u8>,
    part: Vec<u8>,
    target: Vec<u8>,
    /// The server's times (whole seconds): the manifest keeps none for symlinks.
    atime: i64,
    mtime: i64,
}

/// Everything the remote holds that is to be restored, directories parents first.
#[derive(Default)]
struct Plan {
    dirs: Vec<DirJob>,
    files: Vec<FileJob>,
    links: Vec<LinkJob>,
    /// Each listed directory's remote names: stale part files are the others.
    names: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
}

fn kind_word(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "a file",
        FileKind::Dir => "a directory",
        FileKind::Symlink => "a symlink",
        FileKind::Other => "a device, FIFO or socket",
    }
}

fn confirmed_word(c: &Confirmed) -> &'static str {
    match c {
        Confirmed::File(_) => "a file",
        Confirmed::Dir { .. } => "a directory",
        Confirmed::Symlink { .. } => "a symlink",
    }
}

/// Lists the remote tree breadth first and decides what to restore.
fn walk(
    t: &mut Box<dyn Transport>,
    connect: &Connect<'_>,
    expected: Option<&Expected>,
    s: &mut Summary,
) -> Plan {
    let mut plan = Plan::default();
    let mut queue = VecDeque::from([Vec::new()]);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    while let Some(dir) = queue.pop_front() {
        let listed = match t.list_stat(&dir) {
            Err(e) if e.kind().needs_reconnect() => connect().and_then(|c| {
                *t = c;
                t.list_stat(&dir)
            }),
            r => r,
        };
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                s.problems
                    .push(problem(&dir, format!("not restored: cannot list it: {e}")));
                continue;
            }
        };
        let names: HashSet<Vec<u8>> = entries.iter().map(|(n, _)| n.clone()).collect();
        let mut taken = names.clone();
        let mut here = HashSet::new();
        for (name, st) in entries {
            let rel = child_path(&dir, &name);
            if !here.insert(name.clone()) {
                s.problems
                    .push(problem(&rel, "listed twice by the server; restored once"));
                continue;
            }
            if name_of(&name).is_err() {
                s.problems.push(problem(
                    &rel,
                    "refusing a remote name that is not a single file name (empty, '.', '..', \
                     a '/' or NUL in it, or longer than 255 bytes)",
                ));
                continue;
            }
            if remote::marker::is_marker(&rel) {
                continue;
            }
            seen.insert(rel.clone());
            if remote::path::is_temp_name(&name) {
                s.notes
                    .push(problem(&rel, "left out: an interrupted upload"));
                continue;
            }
            if let Some(job) = plan_entry(&mut plan, &mut taken, rel, &name, st, expected, s) {
                queue.push_back(job);
            }
        }
        plan.names.insert(dir, names);
    }
    if let Some(m) = expected {
        let mut missing: Vec<&Vec<u8>> = m
            .keys()
            .filter(|p| !seen.contains(*p) && plan.names.contains_key(split_parent(p).0))
            .collect();
        missing.sort();
        for p in missing {
            s.problems
                .push(problem(p, "in the manifest but missing on the remote"));
        }
    }
    plan
}

/// Plans one listed entry; returns its path when it is a directory to list next.
fn plan_entry(
    plan: &mut Plan,
    taken: &mut HashSet<Vec<u8>>,
    rel: Vec<u8>,
    name: &[u8],
    st: RemoteStat,
    expected: Option<&Expected>,
    s: &mut Summary,
) -> Option<Vec<u8>> {
    let want = expected.and_then(|m| m.get(&rel));
    let mut part = || {
        let p = part_name(name, taken);
        taken.insert(p.clone());
        p
    };
    let special = matches!(st.kind, FileKind::Dir | FileKind::File) && st.mode & UNVOUCHED != 0;
    if want.is_none() && special {
        s.notes.push(problem(
            &rel,
            format!(
                "restored without its setuid/setgid bits (mode {:o} on the server): no \
                 manifest vouches for them",
                st.mode & 0o7777
            ),
        ));
    }
    match (st.kind, want) {
        (FileKind::Dir, None | Some(Confirmed::Dir { .. })) => {
            let mode = match want {
                Some(Confirmed::Dir { mode }) => *mode & 0o7777,
                _ => server_mode(st.mode),
            };
            plan.dirs.push(DirJob {
                rel: rel.clone(),
                mode,
                atime: st.atime,
                mtime: st.mtime,
            });
            return Some(rel);
        }
        (FileKind::File, None | Some(Confirmed::File(_))) => plan.files.push(FileJob {
            part: part(),
            size: st.size,
            mode: server_mode(st.mode),
            mtime: st.mtime,
            want: want.and_then(Confirmed::file).copied(),
            rel,
        }),
        (FileKind::Symlink, None | Some(Confirmed::Symlink { .. })) => {
            let Some(target) = st.symlink_target.filter(|t| !t.is_empty()) else {
                s.problems.push(problem(
                    &rel,
                    "not restored: the server gave no target for this symlink",
                ));
                return None;
            };
            if let Some(Confirmed::Symlink { target: w }) = want {
                if *w != target {
                    s.problems.push(problem(
                        &rel,
                        format!(
                            "does not match the manifest: the remote symlink points to {}, \
                             the manifest says {}; not restored",
                            display_path(&target),
                            display_path(w)
                        ),
                    ));
                    return None;
                }
            }
            plan.links.push(LinkJob {
                part: part(),
                target,
                atime: st.atime,
                mtime: st.mtime,
                rel,
            });
        }
        (FileKind::Other, None) => s
            .notes
            .push(problem(&rel, "left out: a device, FIFO or socket")),
        (kind, Some(w)) => s.problems.push(problem(
            &rel,
            format!(
                "does not match the manifest: the remote holds {}, the manifest {}; not restored",
                kind_word(kind),
                confirmed_word(w)
            ),
        )),
    }
    None
}

fn is_dir(st: &local::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The local directory `rel` (relative to DIR), never through a symlink.
fn open_dir(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let (fd, st) = local::lookup_path(root, rel)?;
    if !is_dir(&st) {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(fd)
}

/// Makes the local directory `rel` (0700 while its contents arrive; its mode comes last), or
/// takes the one there, refusing anything else in the way.
fn ensure_dir(root: BorrowedFd<'_>, rel: &[u8]) -> Result<(), String> {
    let (parent, name) = split_parent(rel);
    let pfd = open_dir(root, parent).map_err(|e| format!("cannot open its parent: {e}"))?;
    let cname = name_of(name).map_err(|e| e.to_string())?;
    let found = match local::lookup(pfd.as_fd(), &cname) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            local::mkdir(pfd.as_fd(), &cname, 0o700).map_err(|e| format!("cannot mkdir: {e}"))?;
            local::lookup(pfd.as_fd(), &cname)
        }
        other => other,
    };
    let (fd, st) = found.map_err(|e| format!("cannot open: {e}"))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR if st.st_mode & 0o700 == 0o700 => Ok(()),
        // Left with its final mode by an earlier run: writable again until the end.
        libc::S_IFDIR => local::chmod(fd.as_fd(), (st.st_mode | 0o700) & 0o7777)
            .map_err(|e| format!("cannot chmod: {e}")),
        libc::S_IFLNK => Err("a local symlink is in the way (never followed): nothing \
                              restored beneath it"
            .into()),
        _ => {
            Err("a local file is in the way of this directory: nothing restored beneath it".into())
        }
    }
}

/// Removes the part files an interrupted restore left in a directory (names the remote does
/// not also hold).
fn remove_stale_parts(dir: BorrowedFd<'_>, remote_names: &HashSet<Vec<u8>>) -> io::Result<()> {
    for e in local::list_dir(dir)? {
        let name = e.name.as_bytes();
        if !is_part_name(name) || remote_names.contains(name) {
            continue;
        }
        let cname = name_of(name)?;
        if let Ok((_, st)) = local::lookup(dir, &cname) {
            if !is_dir(&st) {
                local::unlink(dir, &cname, 0)?;
            }
        }
    }
    Ok(())
}

/// Creates the directories (parents first) and clears stale part files; returns the
/// directories that could not be made, with everything beneath them left out.
fn prepare_dirs(root: BorrowedFd<'_>, plan: &Plan, s: &mut Summary) -> HashSet<Vec<u8>> {
    let mut failed: HashSet<Vec<u8>> = HashSet::new();
    let clean = |rel: &[u8], s: &mut Summary| {
        let names = plan.names.get(rel);
        let done = open_dir(root, rel)
            .and_then(|fd| remove_stale_parts(fd.as_fd(), names.unwrap_or(&HashSet::new())));
        if let Err(e) = done {
            s.problems
                .push(problem(rel, format!("cannot remove stale part files: {e}")));
        }
    };
    clean(b"", s);
    for d in &plan.dirs {
        if failed.contains(split_parent(&d.rel).0) {
            failed.insert(d.rel.clone());
            continue;
        }
        match ensure_dir(root, &d.rel) {
            Ok(()) => {
                s.dirs += 1;
                clean(&d.rel, s);
            }
            Err(why) => {
                s.problems.push(problem(&d.rel, why));
                failed.insert(d.rel.clone());
            }
        }
    }
    failed
}

/// A symlink recreated as it is: made under its part name, renamed over whatever non-directory
/// is there, then given the server's times. Ok(false) when it was already in place; one in
/// place with another mtime only gets its times (a re-run leaves a finished link untouched).
fn restore_link(root: BorrowedFd<'_>, job: &LinkJob) -> Result<bool, String> {
    let (parent, name) = split_parent(&job.rel);
    let dir = open_dir(root, parent).map_err(|e| format!("cannot open its directory: {e}"))?;
    let cname = name_of(name).map_err(|e| e.to_string())?;
    let made = match place_link(dir.as_fd(), &cname, job)? {
        Placed::There { mtime } if mtime == job.mtime => return Ok(false),
        Placed::There { .. } => false,
        Placed::Made => true,
    };
    // By name, not following: the link was just checked or put there by us in a directory
    // opened without following symlinks, and only its own times change.
    local::utimens_nofollow(
        dir.as_fd(),
        &cname,
        SetTime::At(job.atime, 0),
        SetTime::At(job.mtime, 0),
    )
    .map_err(|e| format!("cannot set the symlink's times: {e}"))?;
    Ok(made)
}

/// What `place_link` found or did.
enum Placed {
    /// The same symlink was there already, with this mtime.
    There {
        mtime: i64,
    },
    Made,
}

/// Puts the symlink at `cname` in `dir` unless one with the same target is there.
fn place_link(
    dir: BorrowedFd<'_>,
    cname: &std::ffi::CStr,
    job: &LinkJob,
) -> Result<Placed, String> {
    if let Ok((fd, st)) = local::lookup(dir, cname) {
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK
            && local::readlink(fd.as_fd()).is_ok_and(|t| t.as_bytes() == job.target.as_slice())
        {
            return Ok(Placed::There { mtime: st.st_mtime });
        }
    }
    let part = name_of(&job.part).map_err(|e| e.to_string())?;
    local::symlink(dir, &part, OsStr::from_bytes(&job.target))
        .map_err(|e| format!("cannot create the symlink: {e}"))?;
    local::rename(dir, &part, dir, cname, 0).map_err(|e| {
        let _ = local::unlink(dir, &part, 0);
        format!("cannot put the symlink in place: {e}")
    })?;
    Ok(Placed::Made)
}

/// How one file ended.
enum Done {
    Skipped,
    Downloaded { bytes: u64, verified: bool },
}

struct Failed {
    why: String,
    /// The connection is gone and could not be made again: this worker stops.
    connection_lost: bool,
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed {
            why,
            connection_lost: false,
        }
    }
}

/// What a file in place must look like to count as restored: size, mtime, mode.
fn in_place(dir: BorrowedFd<'_>, name: &std::ffi::CStr, job: &FileJob) -> bool {
    let (size, sec, nsec, mode) = match &job.want {
        Some(m) => (m.size, m.mtime.sec, m.mtime.nsec, m.mode & 0o7777),
        None => (job.size, job.mtime, 0, job.mode),
    };
    local::lookup(dir, name).is_ok_and(|(_, st)| {
        st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_size as u64 == size
            && st.st_mtime == sec
            && st.st_mtime_nsec == i64::from(nsec)
            && st.st_mode & 0o7777 == mode
    })
}

/// Downloads one file to its part name, verifies it, gives it mode and times, makes it
/// durable and renames it into place; retries on a lost connection (reconnecting) and on a
/// file that changed while it was read.
fn restore_file(
    t: &mut Box<dyn Transport>,
    connect: &Connect<'_>,
    root: BorrowedFd<'_>,
    job: &FileJob,
) -> Result<Done, Failed> {
    let (parent, name) = split_parent(&job.rel);
    let dir = open_dir(root, parent).map_err(|e| format!("cannot open its directory: {e}"))?;
    let cname = name_of(name).map_err(|e| e.to_string())?;
    if in_place(dir.as_fd(), &cname, job) {
        return Ok(Done::Skipped);
    }
    let part = name_of(&job.part).map_err(|e| e.to_string())?;
    let discard = || {
        let _ = local::unlink(dir.as_fd(), &part, 0);
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        // O_EXCL|O_NOFOLLOW: stale parts were removed before; anything here now is not ours.
        let mut file = local::create(dir.as_fd(), &part, libc::O_WRONLY | libc::O_EXCL, 0o600)
            .map_err(|e| format!("cannot create its part file: {e}"))?;
        let report = match t.download(&job.rel, &mut file) {
            Ok(r) => r,
            Err(e) => {
                drop(file);
                discard();
                let again = e.kind().needs_reconnect() || e.kind() == ErrorKind::SourceChanged;
                if !again || attempt >= ATTEMPTS {
                    return Err(e.to_string().into());
                }
                if e.kind().needs_reconnect() {
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                    *t = connect().map_err(|ce| Failed {
                        why: format!("{e}; and connecting again failed: {ce}"),
                        connection_lost: true,
                    })?;
                }
                continue;
            }
        };
        let kept = (|| {
            if let Some(m) = &job.want {
                if report.sha256 != m.sha256 || report.bytes != m.size {
                    return Err(format!(
                        "does not match the manifest: downloaded {} bytes with SHA-256 {}, the \
                         manifest has {} bytes with {}; not kept",
                        report.bytes,
                        hex::encode(report.sha256),
                        m.size,
                        hex::encode(m.sha256)
                    ));
                }
            }
            let (mode, mtime) = match &job.want {
                Some(m) => (m.mode, SetTime::At(m.mtime.sec, m.mtime.nsec)),
                None => (
                    server_mode(report.stat.mode),
                    SetTime::At(report.stat.mtime, 0),
                ),
            };
            let atime = SetTime::At(report.stat.atime, 0);
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| format!("cannot set its mode: {e}"))?;
            local::utimens(file.as_fd(), atime, mtime)
                .map_err(|e| format!("cannot set its times: {e}"))?;
            file.sync_all()
                .map_err(|e| format!("cannot fsync its part file: {e}"))?;
            drop(file);
            local::rename(dir.as_fd(), &part, dir.as_fd(), &cname, 0)
                .map_err(|e| format!("cannot put it in place: {e}"))
        })();
        if let Err(why) = kept {
            discard();
            return Err(why.into());
        }
        return Ok(Done::Downloaded {
            bytes: report.bytes,
            verified: job.want.is_some(),
        });
    }
}

/// One worker's share of the counts.
#[derive(Default)]
struct Tally {
    files: u64,
    bytes: u64,
    skipped: u64,
    verified: u64,
    problems: Vec<String>,
}

fn worker(
    mut t: Box<dyn Transport>,
    connect: &Connect<'_>,
    jobs: &crossbeam_channel::Receiver<FileJob>,
    root: BorrowedFd<'_>,
    progress: &Progress,
    total: u64,
) -> Tally {
    let mut tally = Tally::default();
    while let Ok(job) = jobs.recv() {
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            restore_file(&mut t, connect, root, &job)
        }));
        let Ok(done) = done else {
            // Its connection may be left mid-request: this worker stops, the others go on.
            tally.problems.push(problem(
                &job.rel,
                "not restored: the worker restoring it panicked (a bug; its part file, if any, \
                 goes at the next run)",
            ));
            return tally;
        };
        match done {
            Ok(Done::Skipped) => tally.skipped += 1,
            Ok(Done::Downloaded { bytes, verified }) => {
                tally.files += 1;
                tally.bytes += bytes;
                tally.verified += u64::from(verified);
            }
            Err(f) => {
                tally.problems.push(problem(&job.rel, &f.why));
                if f.connection_lost {
                    return tally;
                }
            }
        }
        progress.file_done(job.size, total);
    }
    tally
}

/// Opens `n` more connections at once; those that fail are left out (with a warning).
fn more_connections(connect: &Connect<'_>, n: usize) -> Vec<Box<dyn Transport>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|_| scope.spawn(connect)).collect();
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(t)) => Some(t),
                Ok(Err(e)) => {
                    log::warn!("going on with one connection fewer: {e}");
                    None
                }
                Err(_) => None,
            })
            .collect()
    })
}

/// Restores the remote tree beneath `root` over `connections` connections: `first` (already
/// made) and more from `connect`.
pub fn restore(
    root: BorrowedFd<'_>,
    expected: Option<&Expected>,
    first: Box<dyn Transport>,
    connect: &Connect<'_>,
    connections: usize,
) -> Summary {
    let start = Instant::now();
    let mut s = Summary {
        with_manifest: expected.is_some(),
        ..Summary::default()
    };
    let mut first = first;
    let mut plan = walk(&mut first, connect, expected, &mut s);
    let failed = prepare_dirs(root, &plan, &mut s);
    let outside = |rel: &[u8]| failed.contains(split_parent(rel).0);
    for link in plan.links.iter().filter(|l| !outside(&l.rel)) {
        match restore_link(root, link) {
            Ok(true) => s.symlinks += 1,
            Ok(false) => s.skipped += 1,
            Err(why) => s.problems.push(problem(&link.rel, why)),
        }
    }
    let mut files = std::mem::take(&mut plan.files);
    files.retain(|f| !outside(&f.rel));
    // Largest first, so that no connection is left with a big file at the end.
    files.sort_by_key(|f| std::cmp::Reverse(f.size));
    let total_files = files.len() as u64;
    let total_bytes = files.iter().map(|f| f.size).sum();
    // All connections before the progress bar, which a prompt for a second factor would garble.
    let wanted = connections.clamp(1, 64).min(files.len().max(1));
    let mut conns = vec![first];
    conns.extend(more_connections(connect, wanted - 1));
    let progress = Progress::new("restoring", total_files, total_bytes);
    let (tx, rx) = crossbeam_channel::unbounded();
    for f in files {
        let _ = tx.send(f);
    }
    drop(tx);
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|t| {
                let (rx, progress) = (&rx, &progress);
                scope.spawn(move || worker(t, connect, rx, root, progress, total_files))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Tally {
                    problems: vec!["a restore worker panicked: what it restored is not \
                                    counted and may be incomplete"
                        .into()],
                    ..Tally::default()
                })
            })
            .collect()
    });
    progress.finish();
    for t in tallies {
        s.files += t.files;
        s.bytes += t.bytes;
        s.skipped += t.skipped;
        s.verified += t.verified;
        s.problems.extend(t.problems);
    }
    s.unverified = s.files - s.verified;
    for f in rx.try_iter() {
        s.problems.push(problem(
            &f.rel,
            "not restored: every worker had stopped (lost connections or panics, above)",
        ));
    }
    finish_dirs(root, &plan.dirs, &failed, &mut s);
    s.elapsed = start.elapsed();
    s
}

/// Gives directories their modes and times, deepest first (after their contents, which would
/// change the mtime and may need the owner's write permission), and makes the renames into
/// them durable.
fn finish_dirs(root: BorrowedFd<'_>, dirs: &[DirJob], failed: &HashSet<Vec<u8>>, s: &mut Summary) {
    for d in dirs.iter().rev().filter(|d| !failed.contains(&d.rel)) {
        let done = open_dir(root, &d.rel).and_then(|fd| {
            sync_dir(fd.as_fd())?;
            local::chmod(fd.as_fd(), d.mode)?;
            local::utimens(fd.as_fd(), SetTime::At(d.atime, 0), SetTime::At(d.mtime, 0))
        });
        if let Err(e) = done {
            s.problems.push(problem(
                &d.rel,
                format!("cannot set its mode and times: {e}"),
            ));
        }
    }
    if let Err(e) = sync_dir(root) {
        s.problems
            .push(format!("cannot fsync the target directory: {e}"));
    }
}

/// The manifest in `state_dir`, or None (with a note) when the state dir has none.
fn load_manifest(state_dir: &Path) -> Result<Option<Expected>> {
    if !state_dir.is_dir() {
        bail!("state dir {} does not exist", state_dir.display());
    }
    if !state_dir.join(MANIFEST_FILE).is_file() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Timestamp;
    use crate::remote::{MockNode, MockOp, MockTransport};
    use std::os::unix::fs::MetadataExt;

    fn file(data: &[u8], mode: u32, mtime: i64) -> MockNode {
        MockNode::File {
            data: data.to_vec(),
            mode,
            atime: mtime,
            mtime,
        }
    }

    fn dir(mode: u32) -> MockNode {
        MockNode::Dir {
            mode,
            atime: 7,
            mtime: 1_000_000,
        }
    }

    fn link(t: &[u8]) -> MockNode {
        MockNode::Symlink { target: t.to_vec() }
    }

    fn tree() -> MockTransport {
        let m = MockTransport::new();
        m.insert(b"d", dir(0o555));
        m.insert(b"d/a\nb \"q\" \xff", file(b"hostile", 0o640, 1_600_000_001));
        m.insert(b"d/e", dir(0o700));
        m.insert(b"d/e/big", file(&vec![7u8; 3 << 20], 0o600, 1_600_000_002));
        m.insert(b"top", file(b"", 0o444, 1_600_000_003));
        m.insert(b"etc", link(b"/etc/passwd"));
        m.insert(b"d/up", link(b".."));
        m.insert(
            b".x.ftpsync-tmp-0123456789abcdef",
            file(b"partial", 0o600, 5),
        );
        m
    }

    fn connector(m: &MockTransport) -> impl Fn() -> remote::Result<Box<dyn Transport>> + Sync + '_ {
        move || Ok(Box::new(m.clone()) as Box<dyn Transport>)
    }

    fn run_over(m: &MockTransport, dir: &Path, expected: Option<&Expected>) -> Summary {
        let root = local::open_root(dir).unwrap();
        let connect = connector(m);
        let first = connect().unwrap();
        restore(root.as_fd(), expected, first, &connect, 3)
    }

    fn downloads(m: &MockTransport) -> usize {
        m.ops()
            .iter()
            .filter(|o| matches!(o, MockOp::Download(_)))
            .count()
    }

    fn manifest_of(m: &MockTransport) -> Expected {
        m.nodes()
            .into_iter()
            .filter(|(p, _)| !remote::path::is_temp_name(p))
            .map(|(p, n)| {
                let c = match n {
                    MockNode::Dir { mode, .. } => Confirmed::Dir { mode },
                    MockNode::Symlink { target } => Confirmed::Symlink { target },
                    MockNode::File {
                        data, mode, mtime, ..
                    } => Confirmed::File(FileMeta {
                        size: data.len() as u64,
                        sha256: Sha256::digest(&data).into(),
                        mode,
                        mtime: Timestamp {
                            sec: mtime,
                            nsec: 123_456_789,
                        },
                        ino: 1,
                        ctime: Timestamp { sec: 0, nsec: 0 },
                    }),
                };
                (p, c)
            })
            .collect()
    }

    fn path(dir: &Path, rel: &[u8]) -> PathBuf {
        dir.join(OsStr::from_bytes(rel))
    }

    #[test]
    fn restores_byte_exact_then_a_rerun_downloads_nothing() {
        let m = tree();
        let expected = manifest_of(&m);
        let out = tempfile::tempdir().unwrap();
        let s = run_over(&m, out.path(), Some(&expected));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!((s.files, s.symlinks, s.dirs, s.skipped), (3, 2, 2, 0));
        assert_eq!((s.verified, s.unverified), (3, 0));
        assert_eq!(s.notes.len(), 1, "the interrupted upload is left out");
        let f = path(out.path(), b"d/a\nb \"q\" \xff");
        assert_eq!(std::fs::read(&f).unwrap(), b"hostile");
        let md = std::fs::symlink_metadata(&f).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_001, 123_456_789));
        assert_eq!(
            std::fs::read_link(path(out.path(), b"etc")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_link(path(out.path(), b"d/up")).unwrap(),
            Path::new("..")
        );
        let d = std::fs::symlink_metadata(path(out.path(), b"d")).unwrap();
        assert_eq!((d.mode() & 0o7777, d.mtime()), (0o555, 1_000_000));
        assert_eq!(
            std::fs::metadata(path(out.path(), b"top")).unwrap().mode() & 0o7777,
            0o444
        );
        assert!(!path(out.path(), b".x.ftpsync-tmp-0123456789abcdef").exists());

        m.clear_ops();
        let again = run_over(&m, out.path(), Some(&expected));
        assert!(again.problems.is_empty(), "{:?}", again.problems);
        assert_eq!((again.files, again.skipped), (0, 5));
        assert_eq!(downloads(&m), 0);
    }

    #[test]
    fn without_a_manifest_hashes_are_computed_and_times_are_whole_seconds() {
        let m = tree();
        let out = tempfile::tempdir().unwrap();
        let s = run_over(&m, out.path(), None);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!((s.files, s.verified, s.unverified), (3, 0, 3));
        let md = std::fs::metadata(path(out.path(), b"d/e/big")).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec(), md.len()),
            (1_600_000_002, 0, 3 << 20)
        );
        m.clear_ops();
        assert_eq!(run_over(&m, out.path(), None).skipped, 5);
        assert_eq!(downloads(&m), 0);
    }

    #[test]
    fn a_file_changed_on_the_server_is_reported_and_not_kept() {
        let m = tree();
        let expected = manifest_of(&m);
        m.insert(b"top", file(b"evil", 0o444, 1_600_000_003));
        m.insert(b"d/e", link(b"/etc"));
        let out = tempfile::tempdir().unwrap();
        let s = run_over(&m, out.path(), Some(&expected));
        let all = s.problems.join("\n");
        assert!(
            all.contains("\"top\": does not match the manifest"),
            "{all}"
        );
        assert!(
            all.contains("\"d/e\": does not match the manifest: the remote holds a symlink"),
            "{all}"
        );
        assert_eq!(
            s.problems.len(),
            2,
            "nothing beneath the planted symlink: {all}"
        );
        assert!(std::fs::symlink_metadata(path(out.path(), b"top")).is_err());
        assert!(std::fs::symlink_metadata(path(out.path(), b"d/e")).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| is_part_name(n.as_bytes()))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn local_symlinks_are_never_written_through() {
        let m = tree();
        let out = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("top"), b"victim").unwrap();
        // Where the remote has a directory, a file, and where a part file will go.
        std::os::unix::fs::symlink(victim.path(), path(out.path(), b"d")).unwrap();
        std::os::unix::fs::symlink(victim.path().join("top"), path(out.path(), b"top")).unwrap();
        std::os::unix::fs::symlink(
            victim.path().join("part"),
            path(out.path(), b".etc.ftpsync-part"),
        )
        .unwrap();
        let s = run_over(&m, out.path(), None);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(
            s.problems[0].contains("local symlink is in the way"),
            "{:?}",
            s.problems
        );
        assert_eq!(std::fs::read(victim.path().join("top")).unwrap(), b"victim");
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read(path(out.path(), b"top")).unwrap(), b"");
        assert!(std::fs::symlink_metadata(path(out.path(), b"top"))
            .unwrap()
            .is_file());
        assert!(!path(out.path(), b".etc.ftpsync-part").exists());
    }

    #[test]
    fn resumes_after_an_interruption_and_retries_a_lost_connection() {
        let m = tree();
        let out = tempfile::tempdir().unwrap();
        // An earlier run got as far as a part file and the directories with final modes.
        std::fs::create_dir(path(out.path(), b"d")).unwrap();
        std::fs::write(path(out.path(), b".top.ftpsync-part"), b"half").unwrap();
        std::fs::set_permissions(
            path(out.path(), b"d"),
            std::fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        m.fail_path(b"d/e/big", 2, ErrorKind::Transient);
        let s = run_over(&m, out.path(), None);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.files, 3);
        assert!(!path(out.path(), b".top.ftpsync-part").exists());
        assert_eq!(
            std::fs::read(path(out.path(), b"d/e/big")).unwrap().len(),
            3 << 20
        );
    }

    fn listing(dir: &Path) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_an_empty_directory_or_one_an_unfinished_restore_of_the_same_remote_left_is_taken() {
        const R: &str = "sftp://u@h:22/data";
        let out = tempfile::tempdir().unwrap();
        let root = local::open_root(out.path()).unwrap();
        let check = |remote: &str| check_target(root.as_fd(), out.path(), remote);
        assert_eq!(check(R).unwrap(), Target::Empty);

        // Someone's own files: refused, whatever the remote, and left alone.
        std::fs::write(path(out.path(), b"notes.txt"), b"newer than the backup").unwrap();
        let e = format!("{:#}", check(R).unwrap_err());
        assert!(
            e.contains("is not empty; restore into an empty directory"),
            "{e}"
        );
        assert_eq!(listing(out.path()), [b"notes.txt".to_vec()]);
        // Nor does a symlink, or a file without a `remote:` line, named like the marker count.
        let marker = path(out.path(), MARKER);
        std::os::unix::fs::symlink("elsewhere", &marker).unwrap();
        assert!(check(R).is_err());
        std::fs::remove_file(&marker).unwrap();
        std::fs::write(&marker, b"not a marker").unwrap();
        assert!(check(R).is_err());
        std::fs::remove_file(&marker).unwrap();
        std::fs::remove_file(path(out.path(), b"notes.txt")).unwrap();

        // A run writes its marker (0600, naming the remote); what it leaves is resumed by a run
        // for the same remote only.
        write_marker(root.as_fd(), R).unwrap();
        let md = std::fs::symlink_metadata(&marker).unwrap();
        assert!(md.is_file());
        assert_eq!(md.mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&marker)
            .unwrap()
            .contains(&format!("\nremote: {R}\n")));
        std::fs::write(path(out.path(), b"restored"), b"x").unwrap();
        assert_eq!(check(R).unwrap(), Target::Resumed);
        let e = format!("{:#}", check("sftp://u@h:22/other").unwrap_err());
        assert!(
            e.contains(&format!("holds an unfinished restore of {R}, not of")),
            "{e}"
        );
        // Another remote's marker with nothing beside it: that restore wrote nothing.
        std::fs::remove_file(path(out.path(), b"restored")).unwrap();
        assert_eq!(check("sftp://u@h:22/other").unwrap(), Target::Empty);
        write_marker(root.as_fd(), "sftp://u@h:22/other").unwrap();
        assert_eq!(check("sftp://u@h:22/other").unwrap(), Target::Resumed);
        remove_marker(root.as_fd()).unwrap();
        assert!(listing(out.path()).is_empty());

        // Its name is one restore never takes from a server, nor removes as a part file.
        assert!(remote::path::is_temp_name(MARKER));
        assert!(!is_part_name(MARKER));
    }

    #[test]
    fn a_remote_entry_named_like_the_marker_never_lands_on_it() {
        let m = tree();
        m.insert(MARKER, file(b"from the server", 0o644, 5));
        let out = tempfile::tempdir().unwrap();
        let root = local::open_root(out.path()).unwrap();
        write_marker(root.as_fd(), "sftp://u@h:22/data").unwrap();
        let s = run_over(&m, out.path(), None);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!((s.files, s.skipped), (3, 0), "the marker is not counted");
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains(".ftpsync-restore.ftpsync-tmp-") && n.contains("left out")),
            "{:?}",
            s.notes
        );
        let text = std::fs::read_to_string(path(out.path(), MARKER)).unwrap();
        assert!(text.contains("remote: sftp://u@h:22/data"), "{text}");
        assert_eq!(
            check_target(root.as_fd(), out.path(), "sftp://u@h:22/data").unwrap(),
            Target::Resumed
        );
        assert_eq!(run_over(&m, out.path(), None).skipped, 5);
    }

    #[test]
    fn the_remote_roots_marker_is_not_restored_but_its_name_deeper_down_is() {
        let m = MockTransport::new();
        let mut raw = m.clone();
        remote::marker::write(&mut raw, &remote::marker::new_id().unwrap()).unwrap();
        m.insert(b"d", dir(0o755));
        m.insert(b"d/.ftpsync-root", file(b"a user's file", 0o644, 5));
        let out = tempfile::tempdir().unwrap();
        let s = run_over(&m, out.path(), None);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.files, 1, "only d/.ftpsync-root");
        assert!(!path(out.path(), remote::marker::MARKER).exists());
        assert!(path(out.path(), b"d/.ftpsync-root").exists());
    }

    #[test]
    fn setuid_and_setgid_bits_come_only_from_the_manifest() {
        let m = MockTransport::new();
        m.insert(b"bin", dir(0o2775));
        m.insert(b"bin/su", file(b"#!/bin/sh\n", 0o4755, 1_600_000_000));
        m.insert(b"bin/wall", file(b"#!/bin/sh\n", 0o2755, 1_600_000_000));
        m.insert(b"tmp", dir(0o1777));
        let mode = |dir: &Path, rel: &[u8]| {
            std::fs::symlink_metadata(path(dir, rel)).unwrap().mode() & 0o7777
        };

        let plain = tempfile::tempdir().unwrap();
        let s = run_over(&m, plain.path(), None);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(mode(plain.path(), b"bin/su"), 0o755);
        assert_eq!(mode(plain.path(), b"bin/wall"), 0o755);
        assert_eq!(mode(plain.path(), b"bin"), 0o775);
        assert_eq!(
            mode(plain.path(), b"tmp"),
            0o1777,
            "the sticky bit is no risk"
        );
        let dropped = s
            .notes
            .iter()
            .filter(|n| n.contains("setuid/setgid"))
            .count();
        assert_eq!(dropped, 3, "{:?}", s.notes);
        // What was restored that way counts as in place.
        assert_eq!(run_over(&m, plain.path(), None).skipped, 2);

        // The manifest vouches for them: restored as the mirror confirmed them.
        let vouched = tempfile::tempdir().unwrap();
        let s = run_over(&m, vouched.path(), Some(&manifest_of(&m)));
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(mode(vouched.path(), b"bin/su"), 0o4755);
        assert_eq!(mode(vouched.path(), b"bin/wall"), 0o2755);
        assert_eq!(mode(vouched.path(), b"bin"), 0o2775);
        assert!(
            !s.notes.iter().any(|n| n.contains("setuid")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn a_panicking_worker_fails_the_restore_and_keeps_the_others_counts() {
        let m = tree();
        let out = tempfile::tempdir().unwrap();
        let root = local::open_root(out.path()).unwrap();
        // One connection; the smallest file (restored last) loses it, and connecting again
        // panics.
        m.fail_path(b"top", 1, ErrorKind::Transient);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let connect = || -> remote::Result<Box<dyn Transport>> {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                panic!("injected panic while connecting again");
            }
            Ok(Box::new(m.clone()))
        };
        let first = connect().unwrap();
        let s = restore(root.as_fd(), None, first, &connect, 1);
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(
            s.problems[0].contains("\"top\": not restored: the worker restoring it panicked"),
            "{:?}",
            s.problems
        );
        assert_eq!(
            s.files, 2,
            "the files that worker restored are still counted"
        );
        assert!(std::fs::symlink_metadata(path(out.path(), b"top")).is_err());
    }

    #[test]
    fn part_names_are_distinct_bounded_and_recognised() {
        let mut taken = HashSet::new();
        assert_eq!(part_name(b"a", &taken), b".a.ftpsync-part");
        taken.insert(b".a.ftpsync-part".to_vec());
        assert_eq!(part_name(b"a", &taken), b".a.ftpsync-part-1");
        let long = vec![b'x'; 255];
        let p = part_name(&long, &HashSet::new());
        assert_eq!(p.len(), 255);
        assert!(is_part_name(&p));
        let mut other = long.clone();
        other[254] = b'y';
        assert_ne!(p, part_name(&other, &HashSet::new()));
        for yes in [&b".a.ftpsync-part"[..], b".a.ftpsync-part-12"] {
            assert!(is_part_name(yes));
        }
        for no in [
            &b"a.ftpsync-part"[..],
            b".ftpsync-part",
            b".a.ftpsync-part-x",
            b".a",
        ] {
            assert!(!is_part_name(no), "{:?}", String::from_utf8_lossy(no));
        }
    }
}
