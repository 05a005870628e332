//! The transfer: symlinks recreated, then files downloaded by one worker per connection, each
//! to its part name, verified, and renamed into place only when it is whole and right, so that
//! an interrupted run leaves nothing half-written under a real name.

use super::plan::{walk, FileJob, LinkJob};
use super::target::{finish_dirs, open_dir, prepare_dirs};
use super::{name_of, problem, server_mode, Connect, Expected, Summary};
use crate::local::{self, SetTime};
use crate::progress::Progress;
use crate::remote::path::split_parent;
use crate::remote::{ErrorKind, Transport};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

/// Tries per file when the connection drops or the file changes on the server while read.
const ATTEMPTS: u32 = 3;

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
