//! Makes one remote path equal to the local one, as it is now, and says what the remote then
//! holds. Never deletes or overwrites a remote entry that changed behind ftpsync's back: such
//! an entry is kept beside as a conflict copy (`remote::path::conflict_beside`).

use super::limits::Meter;
use crate::journal::Timestamp;
use crate::local::{self, borrow};
use crate::mirror::{Confirmed, FileMeta, OpenWriters};
use crate::remote::{
    Attrs, DirNews, ErrorKind, FileKind, RemoteError, RemoteStat, Transport, UploadReport,
};
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the engine knew of a path when the work started.
pub struct Known {
    /// The manifest's entries at and beneath the path.
    pub confirmed: Vec<(Vec<u8>, Confirmed)>,
    /// The manifest's entries for the path's ancestors.
    pub ancestors: Vec<(Vec<u8>, Confirmed)>,
    /// The latest Store of the file at the path.
    pub stored: Option<FileMeta>,
    /// Set when a newer change to the path makes this work pointless.
    pub cancel: Arc<AtomicBool>,
    /// Counts (and, under a bandwidth limit, paces) bytes read for uploads.
    pub meter: Arc<Meter>,
    /// Bytes of this path read for its upload so far (for status).
    pub sent: Arc<AtomicU64>,
    /// Entries whose making at this path started but was never confirmed (a crash, a lost
    /// connection): the remote may hold any of them, put there by us.
    pub intents: Vec<Confirmed>,
    /// The same for paths strictly beneath this one: when it goes, what they left goes too.
    pub intents_beneath: Vec<(Vec<u8>, Vec<Confirmed>)>,
    /// `verify --repair` found the remote wrong here: what the manifest vouches for is sent
    /// again.
    pub repair: bool,
    /// The files open for writing now (their hash comes when they are closed).
    pub writers: Arc<OpenWriters>,
    /// A closed file's hash is overdue: take it here rather than wait for a record that may
    /// never come.
    pub hash_here: bool,
}

/// The local file as the upload reads it: stops at once when a newer change arrives.
struct Cancellable<'a> {
    file: std::fs::File,
    cancel: &'a AtomicBool,
    meter: &'a Meter,
    sent: &'a AtomicU64,
}

impl Read for Cancellable<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("superseded by a newer change"));
        }
        let max = buf.len().min(self.meter.max_read());
        let n = self.file.read(&mut buf[..max])?;
        self.meter.account(n);
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Known {
    /// What the manifest vouches is on the remote at `path`, unless a repair doubts it.
    fn vouched(&self, path: &[u8]) -> Option<&Confirmed> {
        self.at(path).filter(|_| !self.repair)
    }

    fn at(&self, path: &[u8]) -> Option<&Confirmed> {
        self.confirmed
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c)
    }
}

/// The manifest change that the work makes true.
#[derive(Debug, PartialEq, Eq)]
pub enum Apply {
    Put(Confirmed),
    Remove,
    Nothing,
}

#[derive(Debug)]
pub struct Report {
    pub apply: Apply,
    pub uploaded: Option<UploadReport>,
    /// Remote files moved aside because they changed behind our back.
    pub conflicts: Vec<Vec<u8>>,
    /// A directory of ours above the path that the server had replaced (now kept aside): what
    /// the manifest says beneath it is gone from the server.
    pub replaced: Option<Vec<u8>>,
}

pub enum Outcome {
    Done(Box<Report>),
    /// The local file changed since its last hash and is open for writing: the Store its last
    /// close brings marks it again.
    OpenForWriting,
    /// The local file changed since its last hash and is closed: a hash is under way (the
    /// engine asks again, and takes the hash itself if none comes: `Known::hash_here`).
    NotReady,
}

type Result<T> = std::result::Result<T, RemoteError>;

fn done(apply: Apply) -> Outcome {
    Outcome::Done(Box::new(Report {
        apply,
        uploaded: None,
        conflicts: Vec::new(),
        replaced: None,
    }))
}

/// What a job writes in the manifest as it goes, before its outcome is known: what the server
/// may hold even if the job fails half-way.
pub trait Ledger {
    /// The making of this entry at the path is about to start (before any byte is sent, before
    /// a mkdir or a symlink whose answer a lost connection may take).
    fn intend(&self, entry: &Confirmed);
    /// A directory is being made on the server (a missing parent, or the job's own): ours
    /// once asked for, so a local rmdir takes it away again, even if the answer was lost.
    fn dir_news(&self, dir: &[u8], news: DirNews);
}

pub fn reconcile(
    t: &mut dyn Transport,
    root: BorrowedFd<'_>,
    path: &[u8],
    known: &Known,
    ledger: &dyn Ledger,
) -> Result<Outcome> {
    let local = match local::lookup_path(root, path) {
        Ok(found) => Some(found),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => None,
        Err(e) => {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!("local {}: {e}", crate::relpath::show(path)),
            ))
        }
    };
    let mut conflicts = Vec::new();
    let Some((fd, st)) = local else {
        return gone(t, root, path, known);
    };
    let mode = st.st_mode & 0o7777;
    if path.is_empty() {
        // The remote root is the server's, not ours: its mode and times are not mirrored.
        return Ok(done(Apply::Nothing));
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            if known.vouched(path) == Some(&Confirmed::Dir { mode }) {
                return Ok(done(Apply::Nothing));
            }
            clear_non_dir(t, path, known, &mut conflicts)?;
            let replaced = make_parents(t, path, &known.ancestors, &mut conflicts, &|d, n| {
                ledger.dir_news(d, n)
            })?;
            ledger.intend(&Confirmed::Dir { mode });
            t.mkdir(path, server_mode(mode))?;
            // Recorded at once, as a parent made on the way is: if the engine stops before
            // this work's end is taken in, the directory is still known to be ours.
            ledger.dir_news(path, DirNews::Made(mode));
            Ok(Outcome::Done(Box::new(Report {
                apply: Apply::Put(Confirmed::Dir { mode }),
                uploaded: None,
                conflicts,
                replaced,
            })))
        }
        libc::S_IFLNK => {
            let target = local::readlink(borrow(&fd))
                .map_err(|e| RemoteError::new(ErrorKind::Other, format!("local readlink: {e}")))?
                .into_vec();
            let want = Confirmed::Symlink {
                target: target.clone(),
            };
            // Already there as wanted: ours, made just before a lost connection took the
            // answer (and the record), or the same link made on the server. Nothing to keep.
            // The manifest's word is not enough, as for a file: a local change is when ftpsync
            // looks again at what the server holds.
            if lstat(t, path)?.is_some_and(|r| is_ours(Some(&want), &r)) {
                return Ok(done(if known.vouched(path) == Some(&want) {
                    Apply::Nothing
                } else {
                    Apply::Put(want)
                }));
            }
            clear_for_replacement(t, path, known, &mut conflicts)?;
            let replaced = make_parents(t, path, &known.ancestors, &mut conflicts, &|d, n| {
                ledger.dir_news(d, n)
            })?;
            ledger.intend(&want);
            t.symlink(path, &target)?;
            Ok(Outcome::Done(Box::new(Report {
                apply: Apply::Put(want),
                uploaded: None,
                conflicts,
                replaced,
            })))
        }
        libc::S_IFREG => file(t, root, (&fd, &st), path, known, ledger),
        // FIFOs, sockets and devices are not mirrored: what the server held for the entry
        // they replaced goes, as for a deleted one.
        _ => gone(t, root, path, known),
    }
}

/// Nothing mirrored stands at `path` locally (deleted, or an entry that is not mirrored): what
/// we put there goes (what the server changed is kept aside), and what an interrupted upload
/// of ours left.
fn gone(
    t: &mut dyn Transport,
    root: BorrowedFd<'_>,
    path: &[u8],
    known: &Known,
) -> Result<Outcome> {
    let mut conflicts = Vec::new();
    // A file or symlink a repair doubts is the wrong copy the user asked to replace: with
    // nothing local to replace it by any more (a rename took it), it goes, not aside.
    if known.repair && lstat(t, path)?.is_some_and(|r| r.kind != FileKind::Dir) {
        match t.remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    remove_subtree(t, &known.confirmed, &known.intents_beneath, &mut conflicts)?;
    let interrupted = remove_interrupted(t, root, path, known)?;
    let apply = if known.confirmed.is_empty() && !interrupted {
        Apply::Nothing
    } else {
        Apply::Remove
    };
    Ok(Outcome::Done(Box::new(Report {
        apply,
        uploaded: None,
        conflicts,
        replaced: None,
    })))
}

/// The mode an entry gets on the server: set-user-ID and set-group-ID never cross over (on the
/// server they would run as the SFTP account, whoever made the file here). The manifest keeps
/// the local mode, so `restore` can bring them back where it may.
pub fn server_mode(local: u32) -> u32 {
    local & !(libc::S_ISUID | libc::S_ISGID)
}

fn stamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    }
}

/// A regular file (`found`: its local descriptor and what fstat said of it).
fn file(
    t: &mut dyn Transport,
    root: BorrowedFd<'_>,
    found: (&std::os::fd::OwnedFd, &local::Stat),
    path: &[u8],
    known: &Known,
    ledger: &dyn Ledger,
) -> Result<Outcome> {
    let (fd, st) = found;
    let mut conflicts = Vec::new();
    let mtime = stamp(st.st_mtime, st.st_mtime_nsec);
    let mode = st.st_mode & 0o7777;
    // A file whose hash left the journal long ago has it in the manifest.
    let stored = known
        .stored
        .or_else(|| known.at(path).and_then(Confirmed::file).copied());
    let s = match stored.filter(|s| s.size == st.st_size as u64 && s.mtime == mtime) {
        Some(s) => s,
        None if known.writers.contains(st.st_ino) => return Ok(Outcome::OpenForWriting),
        None if known.hash_here => match hash_here(fd, st, path)? {
            Some(s) => s,
            None => return Ok(Outcome::NotReady),
        },
        None => return Ok(Outcome::NotReady),
    };
    let meta = FileMeta {
        size: s.size,
        sha256: s.sha256,
        mode,
        mtime,
        ino: st.st_ino,
        ctime: stamp(st.st_ctime, st.st_ctime_nsec),
    };
    let want = Confirmed::File(meta);
    let attrs = Attrs {
        mode: server_mode(mode),
        atime: st.st_atime,
        mtime: st.st_mtime,
    };
    if let Some(c) = known.vouched(path).and_then(Confirmed::file) {
        // The contents are there already: at most the attributes changed. They are set on our
        // copy only; one the server changed or removed meanwhile is dealt with below like any
        // other (kept aside, sent anew): a local change is when ftpsync looks again.
        if c.sha256 == s.sha256
            && c.size == s.size
            && lstat(t, path)?.is_some_and(|r| is_ours(known.at(path), &r))
        {
            if c.mode != mode || c.mtime.sec != mtime.sec {
                t.set_attrs(path, &attrs)?;
            }
            return Ok(done(Apply::Put(want)));
        }
    }
    if !known.intents.is_empty() {
        // What the interrupted upload left beside the target.
        let removed = remove_temps(t, root, path)?;
        if removed > 0 {
            log::info!(
                "removed {removed} leftover temporary files beside {}",
                crate::relpath::show(path)
            );
        }
    }
    let remote = lstat(t, path)?;
    if remote.as_ref().is_some_and(|r| {
        !is_ours(known.at(path), r) && r.kind == FileKind::File && r.size == s.size
    }) && t.hash(&[path])?.first() == Some(&Some(s.sha256))
    {
        // Our own upload whose manifest entry a crash lost: not a conflict, no need to resend.
        t.set_attrs(path, &attrs)?;
        return Ok(done(Apply::Put(want)));
    }
    clear_for_replacement(t, path, known, &mut conflicts)?;
    let replaced = make_parents(t, path, &known.ancestors, &mut conflicts, &|d, n| {
        ledger.dir_news(d, n)
    })?;
    let file = local::reopen_quietly(borrow(fd)).map_err(|e| {
        RemoteError::new(
            ErrorKind::Other,
            format!("local open {}: {e}", crate::relpath::show(path)),
        )
    })?;
    ledger.intend(&Confirmed::File(meta));
    let mut src = Cancellable {
        file,
        cancel: &known.cancel,
        meter: &known.meter,
        sent: &known.sent,
    };
    match t.upload(path, &mut src, s.size, &s.sha256, &attrs) {
        // A newer change cancelled it: that change marks the path again. Unless the connection
        // died meanwhile: then its temp file is left, and the engine must hear of it.
        Err(e) if known.cancel.load(Ordering::Relaxed) && e.kind() != ErrorKind::Transient => {
            Ok(Outcome::NotReady)
        }
        Ok(report) => Ok(Outcome::Done(Box::new(Report {
            apply: Apply::Put(want),
            uploaded: Some(report),
            conflicts,
            replaced,
        }))),
        Err(e) if e.kind() == ErrorKind::SourceChanged => Ok(Outcome::NotReady),
        Err(e) => Err(e),
    }
}

/// The hash of a closed local file whose Store never came, taken here; None if the file changed
/// meanwhile (its own Store follows then).
fn hash_here(fd: &std::os::fd::OwnedFd, st: &local::Stat, path: &[u8]) -> Result<Option<FileMeta>> {
    let local_err = |e: std::io::Error| {
        RemoteError::new(
            ErrorKind::Other,
            format!("local {}: {e}", crate::relpath::show(path)),
        )
    };
    log::warn!(
        "{}: no hash of its last version arrived; hashing it here (a lost hash record: please report it)",
        crate::relpath::show(path)
    );
    let file = local::reopen_quietly(borrow(fd)).map_err(local_err)?;
    let (sha256, size) = crate::hash::hash_file(&file).map_err(local_err)?;
    let after = local::fstat(borrow(fd)).map_err(local_err)?;
    let unchanged = after.st_size == st.st_size
        && after.st_mtime == st.st_mtime
        && after.st_mtime_nsec == st.st_mtime_nsec
        && size == st.st_size as u64;
    Ok(unchanged.then(|| FileMeta {
        size,
        sha256,
        mode: st.st_mode & 0o7777,
        mtime: stamp(st.st_mtime, st.st_mtime_nsec),
        ino: st.st_ino,
        ctime: stamp(st.st_ctime, st.st_ctime_nsec),
    }))
}

/// The local file is gone, and an upload of it was interrupted (a crash, a lost connection): what
/// that upload may have left goes too, its temp files and, when it landed before its record
/// was written, the file itself (recognised by the size and mtime it was sent with). Says
/// whether the file was there.
fn remove_interrupted(
    t: &mut dyn Transport,
    root: BorrowedFd<'_>,
    path: &[u8],
    known: &Known,
) -> Result<bool> {
    if known.intents.is_empty() {
        return Ok(false);
    }
    // Where no directory stands any more (made a symlink or a file since), nothing of the
    // upload is left: it went, or moved, with the directory.
    let dir = parent(path);
    if !dir.is_empty() && lstat(t, dir)?.is_none_or(|st| st.kind != FileKind::Dir) {
        return Ok(false);
    }
    // Only an upload writes a temp name; a directory or a symlink is made in one call.
    if known.intents.iter().any(|i| i.file().is_some()) {
        match remove_temps(t, root, path) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let Some(remote) = lstat(t, path)?.filter(|r| landed_from(&known.intents, r)) else {
        return Ok(false);
    };
    remove_landed(t, path, &remote)?;
    Ok(true)
}

/// Removes the temporary files that interrupted uploads to `path` left beside it; only its
/// own: those of its siblings may be in flight on other connections right now, and a local
/// file of that name is the user's.
fn remove_temps(t: &mut dyn Transport, root: BorrowedFd<'_>, path: &[u8]) -> Result<usize> {
    use crate::remote::path::{is_temp_name, temp_prefix};
    let prefix = temp_prefix(path);
    let dir = parent(path);
    let mut removed = 0;
    for (name, kind) in t.list(dir)? {
        let temp = crate::relpath::child_path(dir, &name);
        if kind == FileKind::File
            && is_temp_name(&name)
            && name.starts_with(&prefix)
            && local::lookup_path(root, &temp).is_err()
        {
            match t.remove_file(&temp) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                other => other?,
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// The remote entry at `path`; a missing parent directory means there is none.
pub(super) fn lstat(t: &mut dyn Transport, path: &[u8]) -> Result<Option<RemoteStat>> {
    match t.lstat(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        other => other,
    }
}

/// Makes `path`'s parent directories on the server. A file of ours where one of them belongs
/// (the local side made a directory of it) goes; one the server put there is kept aside, and
/// returned; a symlink there stays refused (it may be planted to lead a write out of the root).
/// `ancestors`: the manifest's entries for the path's ancestors.
pub(super) fn make_parents(
    t: &mut dyn Transport,
    path: &[u8],
    ancestors: &[(Vec<u8>, Confirmed)],
    conflicts: &mut Vec<Vec<u8>>,
    news: &dyn Fn(&[u8], DirNews),
) -> Result<Option<Vec<u8>>> {
    let Err(e) = t.mkdir_all(parent(path), &mut |d, n| news(d, n)) else {
        return Ok(None);
    };
    if !matches!(e.kind(), ErrorKind::Other | ErrorKind::NotFound) {
        return Err(e);
    }
    for a in crate::remote::path::ancestors(path) {
        let vouched = ancestors.iter().find(|(p, _)| p == a).map(|(_, c)| c);
        match lstat(t, a)? {
            Some(r) if r.kind == FileKind::Dir => continue,
            Some(r) if is_ours(vouched, &r) => {
                match t.remove_file(a) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                t.mkdir_all(parent(path), &mut |d, n| news(d, n))?;
                return Ok(None);
            }
            Some(r) if r.kind != FileKind::Symlink => {
                conflicts.push(move_aside(t, a)?);
                t.mkdir_all(parent(path), &mut |d, n| news(d, n))?;
                return Ok(Some(a.to_vec()));
            }
            _ => break,
        }
    }
    Err(e)
}

/// Whether the remote entry is what the manifest says we put there.
pub(super) fn is_ours(confirmed: Option<&Confirmed>, remote: &RemoteStat) -> bool {
    match confirmed {
        Some(Confirmed::File(f)) => {
            remote.kind == FileKind::File && remote.size == f.size && remote.mtime == f.mtime.sec
        }
        Some(Confirmed::Symlink { target }) => {
            remote.kind == FileKind::Symlink
                && remote.symlink_target.as_deref() == Some(target.as_slice())
        }
        Some(Confirmed::Dir { .. }) => remote.kind == FileKind::Dir,
        None => false,
    }
}

pub(super) fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Before something new is put at `path`: what we put there before goes if it is a directory
/// tree (a file or symlink of ours is replaced atomically by what comes); anything else, of any
/// kind, the server holds there is moved aside as a conflict copy.
fn clear_for_replacement(
    t: &mut dyn Transport,
    path: &[u8],
    known: &Known,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let intended_dir = known
        .intents
        .iter()
        .any(|i| matches!(i, Confirmed::Dir { .. }));
    let ours_dir = matches!(known.at(path), Some(Confirmed::Dir { .. }));
    if ours_dir || intended_dir {
        // Only a tree is taken apart: a file or symlink of ours is replaced by what comes.
        let confirmed = if ours_dir { &known.confirmed[..] } else { &[] };
        remove_subtree(t, confirmed, &known.intents_beneath, conflicts)?;
    }
    match lstat(t, path)? {
        // A directory whose making started (its answer lost, or the engine killed before its
        // record): ours, and it goes as one the manifest holds does; one the server filled
        // since is kept aside.
        Some(remote) if remote.kind == FileKind::Dir && intended_dir => {
            match remove_our_dir(t, path) {
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind().is_connection_wide() => return Err(e),
                Err(_) => conflicts.push(move_aside(t, path)?),
                Ok(()) => {}
            }
        }
        Some(remote) if remote.kind == FileKind::Dir || !ours_at(known, path, &remote) => {
            conflicts.push(move_aside(t, path)?);
        }
        _ => {}
    }
    Ok(())
}

/// Ours: what the manifest says we put there, or what an interrupted upload of ours did; under
/// a repair the user asked to replace whatever is there.
fn ours_at(known: &Known, path: &[u8], remote: &RemoteStat) -> bool {
    known.repair || is_ours(known.at(path), remote) || landed_from(&known.intents, remote)
}

/// Whether `remote` is one of the entries `intents` started making (a crash or a lost
/// connection took their record): a file by the size and the mtime it was sent with, a symlink
/// by its target, a directory by its kind.
pub(super) fn landed_from(intents: &[Confirmed], remote: &RemoteStat) -> bool {
    intents.iter().any(|i| match i {
        Confirmed::Dir { .. } => remote.kind == FileKind::Dir,
        other => is_ours(Some(other), remote),
    })
}

/// A directory is wanted at `path`: a file or symlink of ours there goes; anything else that is
/// not a directory is moved aside.
fn clear_non_dir(
    t: &mut dyn Transport,
    path: &[u8],
    known: &Known,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<()> {
    match lstat(t, path)? {
        Some(r) if r.kind == FileKind::Dir => Ok(()),
        Some(r) if ours_at(known, path, &r) => t.remove_file(path),
        Some(_) => move_aside(t, path).map(|c| conflicts.push(c)),
        None => Ok(()),
    }
}

/// Removes what we put at and beneath a path, deepest first: what the manifest says
/// (`confirmed`), and what makings of ours beneath it never had their record
/// (`intents_beneath`: a parent made as its answer was lost, say), else the directory above
/// could not go. An entry the manifest vouches for that is not what we put there (changed, or
/// replaced by another kind) is moved aside instead; a directory holding entries we did not
/// put there stays.
pub(super) fn remove_subtree(
    t: &mut dyn Transport,
    confirmed: &[(Vec<u8>, Confirmed)],
    intents_beneath: &[(Vec<u8>, Vec<Confirmed>)],
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<()> {
    enum Ours<'a> {
        Confirmed(&'a Confirmed),
        Intended(&'a [Confirmed]),
    }
    let mut all: Vec<(&[u8], Ours)> = confirmed
        .iter()
        .map(|(p, c)| (p.as_slice(), Ours::Confirmed(c)))
        .chain(
            intents_beneath
                .iter()
                .map(|(p, i)| (p.as_slice(), Ours::Intended(i))),
        )
        .collect();
    // A parent sorts before what is beneath it.
    all.sort_by(|a, b| a.0.cmp(b.0));
    for (p, ours) in all.into_iter().rev() {
        match ours {
            Ours::Confirmed(c) => {
                let dir = matches!(c, Confirmed::Dir { .. });
                let result = match lstat(t, p)? {
                    None => Ok(()),
                    Some(r) if !is_ours(Some(c), &r) => move_aside(t, p).map(|c| conflicts.push(c)),
                    Some(_) if dir => remove_our_dir(t, p),
                    Some(_) => t.remove_file(p),
                };
                removed(result, p, dir)?;
            }
            Ours::Intended(intents) => match lstat(t, p) {
                Ok(Some(r)) if landed_from(intents, &r) => remove_landed(t, p, &r)?,
                Err(e) if e.kind().is_connection_wide() => return Err(e),
                // Not there, or not what was being made: nothing of ours to take away.
                _ => {}
            },
        }
    }
    Ok(())
}

/// Removes `remote`, which an intent of ours made at `path` (its record never written).
fn remove_landed(t: &mut dyn Transport, path: &[u8], remote: &RemoteStat) -> Result<()> {
    let dir = remote.kind == FileKind::Dir;
    let result = if dir {
        remove_our_dir(t, path)
    } else {
        t.remove_file(path)
    };
    removed(result, path, dir)
}

/// The end of removing an entry of ours at `path`: one already gone is removed; a directory
/// the server filled since stays (what it holds is not ours), said in the log.
fn removed(result: Result<()>, path: &[u8], dir: bool) -> Result<()> {
    match result {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        // A lost connection is no foreign content: the work is retried, not forgotten.
        Err(e) if dir && !e.kind().is_connection_wide() => {
            log::warn!(
                "{}: remote directory not removed ({e}); it holds files ftpsync did not put there",
                crate::relpath::show(path)
            );
            Ok(())
        }
        other => other,
    }
}

/// Removes a directory of ours. One that is not empty may hold only what uploads cut by a lost
/// connection left (nothing beneath a directory is in flight while it is removed, and every
/// entry of ours went first): those temp files and symlinks go, and the rmdir is tried again.
/// Anything else in it keeps it.
pub(super) fn remove_our_dir(t: &mut dyn Transport, dir: &[u8]) -> Result<()> {
    let e = match t.remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => e,
        other => return other,
    };
    let mut cleared = false;
    for (name, kind) in t.list(dir)? {
        if !crate::remote::path::is_temp_name(&name) {
            return Err(e);
        }
        if matches!(kind, FileKind::File | FileKind::Symlink) {
            t.remove_file(&[dir, b"/", &name].concat())?;
            cleared = true;
        }
    }
    if cleared {
        t.remove_dir(dir)
    } else {
        Err(e)
    }
}

/// Renames a remote entry to a conflict name of its own (see `conflict_beside`), never over
/// anything, returning the new path.
pub(super) fn move_aside(t: &mut dyn Transport, path: &[u8]) -> Result<Vec<u8>> {
    let when = conflict_stamp(std::time::SystemTime::now());
    let aside = crate::remote::path::conflict_beside(path, &when);
    t.rename_noreplace(path, &aside)?;
    log::warn!(
        "remote {} changed behind ftpsync's back; kept as {}",
        crate::relpath::show(path),
        crate::relpath::show(&aside)
    );
    Ok(aside)
}

fn conflict_stamp(now: std::time::SystemTime) -> String {
    crate::utc::compact(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{MockNode, MockTransport};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn conflict_names_use_utc_calendar_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_072_000); // 2025-11-25T12:00:00Z
        assert_eq!(conflict_stamp(t), "20251125T120000Z");
        assert_eq!(conflict_stamp(UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn only_the_paths_own_temp_files_are_removed() {
        use crate::remote::path::temp_beside;
        let t = MockTransport::new();
        t.insert(
            b"d",
            MockNode::Dir {
                mode: 0o755,
                atime: 0,
                mtime: 0,
            },
        );
        let file = || MockNode::File {
            data: b"x".to_vec(),
            mode: 0o600,
            atime: 0,
            mtime: 0,
        };
        let (mine, sibling) = (temp_beside(b"d/a"), temp_beside(b"d/ab"));
        t.insert(&mine, file());
        t.insert(&sibling, file());
        t.insert(b"d/a", file());
        let mut t2 = t.clone();
        let local = tempfile::tempdir().expect("tempdir");
        let root = local::open_root(local.path()).expect("root");
        assert_eq!(remove_temps(&mut t2, borrow(&root), b"d/a").unwrap(), 1);
        assert!(t.get(&mine).is_none(), "its own leftover stays");
        assert!(
            t.get(&sibling).is_some(),
            "a sibling's upload in flight was removed"
        );
        assert!(t.get(b"d/a").is_some());
    }

    fn known(confirmed: Vec<(Vec<u8>, Confirmed)>, writers: Arc<OpenWriters>) -> Known {
        Known {
            confirmed,
            ancestors: Vec::new(),
            stored: None,
            cancel: Arc::default(),
            meter: Arc::new(Meter::new(None)),
            sent: Arc::default(),
            intents: Vec::new(),
            intents_beneath: Vec::new(),
            repair: false,
            writers,
            hash_here: false,
        }
    }

    struct NoLedger;

    impl Ledger for NoLedger {
        fn intend(&self, _: &Confirmed) {}
        fn dir_news(&self, _: &[u8], _: DirNews) {}
    }

    /// A file of `size` bytes sent with mtime 1000 s + `nsec` (the server keeps the seconds).
    fn sent_at_1000(size: u64, nsec: u32) -> FileMeta {
        FileMeta {
            size,
            sha256: [0; 32],
            mode: 0o644,
            mtime: Timestamp { sec: 1000, nsec },
            ino: 1,
            ctime: Timestamp { sec: 1000, nsec },
        }
    }

    fn run(t: &MockTransport, dir: &std::path::Path, path: &[u8], k: &Known) -> Outcome {
        let root = local::open_root(dir).expect("root");
        let mut t = t.clone();
        reconcile(&mut t, borrow(&root), path, k, &NoLedger).expect("reconcile")
    }

    /// A closed file whose Store never came is asked for again, then hashed here and sent; one
    /// open for writing waits for the Store its close brings.
    #[test]
    fn a_file_without_its_hash_waits_while_open_and_is_hashed_here_once_overdue() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"bytes no Store describes").expect("write");
        let ino = std::fs::metadata(dir.path().join("f")).expect("stat").ino();
        let t = MockTransport::new();
        let writers = Arc::new(OpenWriters::default());
        let mut k = known(Vec::new(), writers.clone());
        assert!(matches!(run(&t, dir.path(), b"f", &k), Outcome::NotReady));
        writers.opened(ino);
        k.hash_here = true;
        assert!(matches!(
            run(&t, dir.path(), b"f", &k),
            Outcome::OpenForWriting
        ));
        writers.closed(ino);
        let Outcome::Done(report) = run(&t, dir.path(), b"f", &k) else {
            panic!("an overdue hash is not taken here");
        };
        let Apply::Put(Confirmed::File(f)) = report.apply else {
            panic!("{:?}", report.apply);
        };
        assert_eq!(
            f.sha256,
            crate::hash::hash_file(&std::fs::File::open(dir.path().join("f")).expect("open"))
                .expect("hash")
                .0
        );
        assert!(
            matches!(t.get(b"f"), Some(MockNode::File { data, .. }) if data == b"bytes no Store describes")
        );
    }

    /// A local delete of a symlink the server replaced (by a file, or by a link elsewhere) keeps
    /// the server's entry aside; one still ours goes.
    #[test]
    fn deleting_keeps_what_the_server_changed_and_removes_what_is_ours() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = MockTransport::new();
        let link = |target: &[u8]| Confirmed::Symlink {
            target: target.to_vec(),
        };
        t.insert(
            b"a",
            MockNode::File {
                data: b"the server's".to_vec(),
                mode: 0o644,
                atime: 0,
                mtime: 0,
            },
        );
        t.insert(
            b"b",
            MockNode::Symlink {
                target: b"elsewhere".to_vec(),
            },
        );
        t.insert(
            b"c",
            MockNode::Symlink {
                target: b"ours".to_vec(),
            },
        );
        for (path, kept) in [(&b"a"[..], true), (b"b", true), (b"c", false)] {
            let k = known(vec![(path.to_vec(), link(b"ours"))], Arc::default());
            let Outcome::Done(report) = run(&t, dir.path(), path, &k) else {
                panic!("not done");
            };
            assert_eq!(report.apply, Apply::Remove);
            assert_eq!(report.conflicts.len(), usize::from(kept), "{path:?}");
            assert!(t.get(path).is_none());
            if let Some(copy) = report.conflicts.first() {
                assert!(
                    t.get(copy).is_some(),
                    "{path:?}: the server's entry is gone"
                );
            }
        }
    }

    /// Parents made for an upload are written down before the upload starts: should it fail,
    /// they are still known as ours.
    /// What a job told its ledger, in order.
    #[derive(Default)]
    struct Heard(std::sync::Mutex<Vec<String>>);

    impl Ledger for Heard {
        fn intend(&self, _: &Confirmed) {
            self.0.lock().expect("lock").push("intend".into());
        }
        fn dir_news(&self, dir: &[u8], news: DirNews) {
            let dir = String::from_utf8_lossy(dir);
            let told = match news {
                DirNews::Asking => format!("asking {dir}"),
                DirNews::Made(mode) => format!("{dir} {mode:o}"),
            };
            self.0.lock().expect("lock").push(told);
        }
    }

    /// A directory made on the server is intended before the mkdir (whose answer a lost
    /// connection may take) and recorded as soon as it is made, not only when the engine
    /// takes in the end of the work: an engine stopped in between (a crash) still knows it is
    /// ours, and a local rmdir takes it away (mock model test, soak seed 431430609).
    #[test]
    fn a_directory_made_is_recorded_at_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        let b = std::fs::Permissions::from_mode(0o750);
        std::fs::set_permissions(dir.path().join("a/b"), b).expect("chmod");
        let t = MockTransport::new();
        let k = known(Vec::new(), Arc::default());
        let root = local::open_root(dir.path()).expect("root");
        let heard = Heard::default();
        reconcile(&mut t.clone(), borrow(&root), b"a/b", &k, &heard).expect("reconcile");
        assert_eq!(
            *heard.0.lock().expect("lock"),
            ["asking a", "a 755", "intend", "a/b 750"]
        );
    }

    #[test]
    fn parents_made_for_an_upload_are_recorded_before_any_byte_is_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), b"new").expect("write");
        let t = MockTransport::new();
        let mut k = known(Vec::new(), Arc::default());
        k.hash_here = true;
        let root = local::open_root(dir.path()).expect("root");
        let heard = Heard::default();
        let mut conn = t.clone();
        reconcile(&mut conn, borrow(&root), b"a/b/f", &k, &heard).expect("reconcile");
        assert_eq!(
            *heard.0.lock().expect("lock"),
            ["asking a", "a 755", "asking a/b", "a/b 755", "intend"]
        );
    }

    /// A lost connection while a directory of ours is removed is the connection's failure,
    /// not a directory the server filled: the work is retried, the directory not forgotten
    /// (it would stay on the server, unknown to the manifest).
    #[test]
    fn a_lost_connection_while_removing_a_directory_is_no_foreign_content() {
        use crate::remote::path::temp_beside;
        let t = MockTransport::new();
        let dir = MockNode::Dir {
            mode: 0o755,
            atime: 0,
            mtime: 0,
        };
        t.insert(b"d", dir);
        let litter = temp_beside(b"d/big");
        let file = MockNode::File {
            data: b"half".to_vec(),
            mode: 0o600,
            atime: 0,
            mtime: 0,
        };
        t.insert(&litter, file);
        t.fail_path(&litter, 1, ErrorKind::Transient);
        let mut conn = t.clone();
        let confirmed = vec![(b"d".to_vec(), Confirmed::Dir { mode: 0o755 })];
        let removed = remove_subtree(&mut conn, &confirmed, &[], &mut Vec::new());
        assert!(
            removed.is_err_and(|e| e.kind() == ErrorKind::Transient),
            "the job must fail and be retried"
        );
        assert!(remove_subtree(&mut conn, &confirmed, &[], &mut Vec::new()).is_ok());
        assert!(t.get(b"d").is_none(), "removed on the retry");
    }

    /// A symlink already on the server as wanted (ours, its record lost with a connection)
    /// is taken as sent: no false conflict copy.
    #[test]
    fn a_symlink_already_there_as_wanted_is_no_conflict() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("target", dir.path().join("l")).expect("ln -s");
        let t = MockTransport::new();
        t.insert(
            b"l",
            MockNode::Symlink {
                target: b"target".to_vec(),
            },
        );
        let k = known(Vec::new(), Arc::default());
        let Outcome::Done(report) = run(&t, dir.path(), b"l", &k) else {
            panic!("not done");
        };
        assert_eq!(
            report.apply,
            Apply::Put(Confirmed::Symlink {
                target: b"target".to_vec()
            })
        );
        assert!(report.conflicts.is_empty(), "{:?}", report.conflicts);
        assert_eq!(
            t.nodes().len(),
            1,
            "nothing kept aside: {:?}",
            t.nodes().keys()
        );
    }

    /// A file whose upload landed just before a crash took its record, then deleted locally:
    /// the server's copy is ours (the size and mtime it was sent with), and goes.
    #[test]
    fn an_interrupted_upload_beneath_what_is_no_directory_any_more_leaves_nothing_to_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = MockTransport::new();
        let target = b"elsewhere".to_vec();
        t.insert(b"c", MockNode::Symlink { target });
        let mut k = known(Vec::new(), Arc::default());
        k.intents = vec![Confirmed::File(sent_at_1000(4, 5))];
        let Outcome::Done(report) = run(&t, dir.path(), b"c/e", &k) else {
            panic!("not done");
        };
        assert_eq!(report.apply, Apply::Nothing);
        assert!(t.get(b"c").is_some(), "the symlink stays");
    }

    #[test]
    fn a_deleted_file_whose_upload_landed_unrecorded_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = MockTransport::new();
        let sent = sent_at_1000(4, 5);
        t.insert(
            b"big",
            MockNode::File {
                data: b"sent".to_vec(),
                mode: 0o644,
                atime: 0,
                mtime: 1000,
            },
        );
        let mut k = known(Vec::new(), Arc::default());
        k.intents = vec![Confirmed::File(sent)];
        let Outcome::Done(report) = run(&t, dir.path(), b"big", &k) else {
            panic!("not done");
        };
        assert_eq!(report.apply, Apply::Remove);
        assert!(t.get(b"big").is_none(), "our unrecorded upload stays");
        t.insert(
            b"big",
            MockNode::File {
                data: b"theirs!".to_vec(),
                mode: 0o644,
                atime: 0,
                mtime: 2000,
            },
        );
        let Outcome::Done(report) = run(&t, dir.path(), b"big", &k) else {
            panic!("not done");
        };
        assert_eq!(report.apply, Apply::Nothing);
        assert!(
            t.get(b"big").is_some(),
            "a file of the server's is not ours to remove"
        );
    }

    /// A directory made as its answer was lost, gone locally since: it goes, and its parent is
    /// not listed for temp files (only an upload leaves those).
    #[test]
    fn a_deleted_directory_made_unrecorded_is_removed_without_a_listing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = MockTransport::new();
        for d in [b"d" as &[u8], b"d/e"] {
            t.insert(
                d,
                MockNode::Dir {
                    mode: 0o755,
                    atime: 0,
                    mtime: 0,
                },
            );
        }
        let mut k = known(Vec::new(), Arc::default());
        k.intents = vec![Confirmed::Dir { mode: 0o755 }];
        let Outcome::Done(report) = run(&t, dir.path(), b"d/e", &k) else {
            panic!("not done");
        };
        assert_eq!(report.apply, Apply::Remove);
        assert!(t.get(b"d/e").is_none(), "ours, gone locally");
        let listed: Vec<crate::remote::MockOp> = t
            .ops()
            .into_iter()
            .filter(|o| matches!(o, crate::remote::MockOp::List(_)))
            .collect();
        assert_eq!(listed, [], "no temp file to look for");
    }

    /// A file of ours, then a directory made in its place whose answer was lost, then a file
    /// again: the empty directory is ours and goes; no conflict copy of it is kept.
    #[test]
    fn a_file_put_where_an_intended_directory_replaced_a_file_of_ours_keeps_no_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"new").expect("write");
        let t = MockTransport::new();
        t.insert(
            b"f",
            MockNode::Dir {
                mode: 0o755,
                atime: 0,
                mtime: 0,
            },
        );
        let old = sent_at_1000(3, 0);
        let mut k = known(vec![(b"f".to_vec(), Confirmed::File(old))], Arc::default());
        k.intents = vec![Confirmed::Dir { mode: 0o755 }];
        k.hash_here = true;
        let Outcome::Done(report) = run(&t, dir.path(), b"f", &k) else {
            panic!("not done");
        };
        assert_eq!(report.conflicts, Vec::<Vec<u8>>::new());
        assert!(matches!(t.get(b"f"), Some(MockNode::File { data, .. }) if data == b"new"));
    }

    #[test]
    fn parents() {
        assert_eq!(parent(b"a/b/c"), b"a/b");
        assert_eq!(parent(b"a"), b"");
    }
}
