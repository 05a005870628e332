//! DIR, the restore's target: whether a restore may write into it at all (empty, or holding
//! the marker of an unfinished restore of the same remote), and its directories, made before
//! the files arrive and given their modes and times after, never through a symlink.

use super::plan::{is_part_name, DirJob, Plan};
use super::{name_of, problem, Summary};
use crate::local::{self, SetTime};
use crate::remote::display_path;
use crate::remote::path::split_parent;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

fn is_dir(st: &local::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The local directory `rel` (relative to DIR), never through a symlink.
pub(super) fn open_dir(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
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
pub(super) fn prepare_dirs(root: BorrowedFd<'_>, plan: &Plan, s: &mut Summary) -> HashSet<Vec<u8>> {
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

/// Gives directories their modes and times, deepest first (after their contents, which would
/// change the mtime and may need the owner's write permission), and makes the renames into
/// them durable.
pub(super) fn finish_dirs(
    root: BorrowedFd<'_>,
    dirs: &[DirJob],
    failed: &HashSet<Vec<u8>>,
    s: &mut Summary,
) {
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
