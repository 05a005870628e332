//! Which running daemon holds a mirror, so that a refusal can name it (pid, state dir,
//! mountpoint) and a command can wait for it to end.
//!
//! A daemon holds two flocks for its whole life, draining included: its state dir's `lock`
//! file, and its local directory itself (taken on a handle opened beneath the directory
//! handle it opened before mounting, so a shadow mount does not hide it). The second one is
//! what makes a second mirror of the same folder visible even when it was given another state
//! dir and another mountpoint: the kernel's lock table (/proc/locks) then names the holder's
//! pid.

use crate::config::MountConfig;
use crate::fs::STATE_DIR_XATTR;
use crate::mounts;
use crate::statedir::{self, Access};
use crate::statedir::{DAEMON_LOCK, PID_FILE};
use anyhow::{bail, Result};
use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether a daemon holds the state dir's lock right now.
pub fn state_dir_locked(dir: &Path) -> bool {
    let Ok(f) = statedir::open(&dir.join(DAEMON_LOCK), Access::Read) else {
        return false;
    };
    !try_flock(f.as_fd(), libc::LOCK_SH)
}

/// The daemon's pid, if one holds the state dir's lock (a pid file alone could be stale, or
/// name a zombie or a reused pid).
pub fn pid_of(state_dir: &Path) -> Option<u32> {
    if !state_dir_locked(state_dir) {
        return None;
    }
    read_pid(state_dir)
}

fn read_pid(state_dir: &Path) -> Option<u32> {
    let text = statedir::read(&state_dir.join(PID_FILE)).ok()?;
    String::from_utf8_lossy(&text).trim().parse().ok()
}

/// A state dir given directly, or the one a mountpoint's daemon reports.
pub fn resolve_state_dir(target: &Path) -> Result<PathBuf> {
    if target.join(crate::statedir::JOURNAL).is_dir() || target.join(PID_FILE).exists() {
        return Ok(target.to_path_buf());
    }
    match state_dir_xattr(target) {
        Some(dir) => Ok(dir),
        None => bail!(
            "{} is neither an ftpsync state dir nor a live ftpsync mount",
            target.display()
        ),
    }
}

/// The state dir a live mount reports through its root's extended attribute.
fn state_dir_xattr(mountpoint: &Path) -> Option<PathBuf> {
    let c = CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let name = CString::new(STATE_DIR_XATTR).ok()?;
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
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// flock(2) without waiting; true when taken. A lock taken is dropped with the descriptor.
fn try_flock(fd: BorrowedFd<'_>, how: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we hold.
    unsafe { libc::flock(fd.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

/// A fresh open of the directory `root` (an O_PATH handle) is: a descriptor flock accepts, of
/// the very directory the daemon works beneath (`.` never crosses onto a mount over it).
fn open_dir(root: BorrowedFd<'_>) -> std::io::Result<File> {
    // SAFETY: openat on a directory handle we hold with a static name; the result is ours.
    let fd = unsafe {
        libc::openat(
            root.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The daemon's claim on its local directory, held until it exits. None when another process
/// holds it (see [`holder_of_local_dir`]).
pub fn claim_local_dir(root: BorrowedFd<'_>) -> std::io::Result<Option<File>> {
    let f = open_dir(root)?;
    Ok(try_flock(f.as_fd(), libc::LOCK_EX).then_some(f))
}

/// Whether some daemon has claimed the local directory `root` is a handle of.
pub fn local_dir_claimed(root: BorrowedFd<'_>) -> bool {
    open_dir(root).is_ok_and(|f| !try_flock(f.as_fd(), libc::LOCK_SH))
}

/// The pid holding a flock on the directory with inode `ino` (from /proc/locks), preferring
/// one that has `dir` open (a lock table line names a device and inode only).
pub fn holder_of_local_dir(dir: &Path) -> Option<u32> {
    let ino = std::fs::metadata(dir).ok()?.ino();
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let pids = flock_holders(&text, ino);
    let canonical = std::fs::canonicalize(dir).ok();
    pids.iter()
        .copied()
        .find(|&pid| canonical.as_deref().is_some_and(|d| has_open(pid, d)))
        .or_else(|| pids.first().copied())
}

/// Pids of the FLOCK lines of a /proc/locks text on inode `ino` (waiters, `->`, left out).
fn flock_holders(text: &str, ino: u64) -> Vec<u32> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let file_ino = f.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
            (file_ino == ino).then(|| f.get(4)?.parse().ok())?
        })
        .collect()
}

/// The paths process `pid` holds open (empty when we may not look).
fn open_paths(pid: u32) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect()
}

fn has_open(pid: u32, path: &Path) -> bool {
    open_paths(pid).iter().any(|p| p == path)
}

/// The state dir of daemon `pid`: the one whose lock file it holds open and whose pid file
/// names it. None when we may not look at its descriptors (another user's daemon).
pub fn state_dir_of_pid(pid: u32) -> Option<PathBuf> {
    open_paths(pid).into_iter().find_map(|p| {
        let dir = p.parent()?;
        (p.file_name()? == DAEMON_LOCK && read_pid(dir) == Some(pid)).then(|| dir.to_path_buf())
    })
}

/// Whether a live (answering) ftpsync mount is on top of `mountpoint`.
pub fn live_mount_at(mountpoint: &Path) -> bool {
    let Ok(canonical) = std::fs::canonicalize(mountpoint) else {
        return false;
    };
    mounts::mounted_on(&canonical)
        .ok()
        .and_then(|m| m.last().map(|e| e.fstype == mounts::FSTYPE))
        .unwrap_or(false)
}

/// A running daemon, as much as can be learnt of it.
#[derive(Debug, Clone, Default)]
pub struct Daemon {
    pub pid: Option<u32>,
    pub state_dir: Option<PathBuf>,
    /// Where it mounted (its mount record), whether or not still mounted there.
    pub mountpoint: Option<PathBuf>,
    pub local_dir: Option<PathBuf>,
    pub drain_timeout: Option<Duration>,
}

impl Daemon {
    /// The daemon of `state_dir`, if one holds it.
    pub fn of_state_dir(state_dir: &Path) -> Option<Daemon> {
        state_dir_locked(state_dir).then(|| Daemon::described(read_pid(state_dir), state_dir))
    }

    /// The daemon serving the live mount at `mountpoint`, if it says which state dir it uses.
    pub fn of_mount(mountpoint: &Path) -> Option<Daemon> {
        let dir = state_dir_xattr(mountpoint)?;
        Some(Daemon::described(read_pid(&dir), &dir))
    }

    /// The daemon that claimed the local directory at `dir`.
    pub fn of_local_dir(dir: &Path) -> Daemon {
        let pid = holder_of_local_dir(dir);
        match pid.and_then(state_dir_of_pid) {
            Some(state_dir) => Daemon::described(pid, &state_dir),
            None => Daemon {
                pid,
                ..Daemon::default()
            },
        }
    }

    fn described(pid: Option<u32>, state_dir: &Path) -> Daemon {
        let record = MountConfig::recorded(state_dir).ok();
        Daemon {
            pid,
            state_dir: Some(state_dir.to_path_buf()),
            mountpoint: record.as_ref().map(|r| r.mountpoint.clone()),
            local_dir: record.as_ref().map(|r| r.local_dir.clone()),
            drain_timeout: record.map(|r| r.mirror.drain_timeout),
        }
    }

    /// Whether its mount is still live (else it is draining after an unmount, or starting).
    pub fn mounted(&self) -> bool {
        self.mountpoint.as_deref().is_some_and(live_mount_at)
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.state_dir) {
            (Some(pid), Some(_)) => write!(f, "ftpsync daemon pid {pid}")?,
            // Found by its lock alone: the lock table names the holder, not what it is.
            (Some(pid), None) => write!(
                f,
                "pid {pid} (an ftpsync daemon whose state dir cannot be seen from here, or \
                 another program locking the folder)"
            )?,
            (None, _) => write!(f, "an ftpsync daemon (pid unknown)")?,
        }
        let mut parts = Vec::new();
        if let Some(l) = &self.local_dir {
            parts.push(format!("local dir {}", l.display()));
        }
        if let Some(m) = &self.mountpoint {
            parts.push(format!("mountpoint {}", m.display()));
        }
        if let Some(s) = &self.state_dir {
            parts.push(format!("state dir {}", s.display()));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Waits until process `pid` has exited, up to `timeout`; true once it is gone. Works for any
/// process we may see (pidfd), not only our children.
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    let Ok(fd) = libc::c_int::try_from(fd) else {
        return true;
    };
    if fd < 0 {
        // ESRCH: no such process any more.
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd, its count, a timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return true;
        }
        let interrupted =
            r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        if !interrupted || left.is_zero() {
            return false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_table_lines_name_flock_holders_of_an_inode() {
        let text = "1: FLOCK  ADVISORY  WRITE 4321 fd:01:1234567 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 99 fd:01:1234567 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 77 fd:01:1234567 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 55 00:2a:7 0 EOF\n";
        assert_eq!(flock_holders(text, 1234567), vec![4321]);
        assert_eq!(flock_holders(text, 7), vec![55]);
        assert!(flock_holders(text, 8).is_empty());
    }

    #[test]
    fn a_claimed_directory_is_seen_as_claimed_and_its_holder_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::local::open_root(dir.path()).unwrap();
        assert!(!local_dir_claimed(root.as_fd()));
        let claim = claim_local_dir(root.as_fd()).unwrap().expect("claimed");
        assert!(local_dir_claimed(root.as_fd()));
        assert!(claim_local_dir(root.as_fd()).unwrap().is_none());
        assert_eq!(holder_of_local_dir(dir.path()), Some(std::process::id()));
        drop(claim);
        assert!(!local_dir_claimed(root.as_fd()));
    }

    #[test]
    fn waiting_for_a_process_that_ended_returns_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        assert!(wait_exit(pid, Duration::from_secs(5)));
        let _ = child.wait();
        let mut sleeper = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!wait_exit(sleeper.id(), Duration::from_millis(100)));
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}
