//! Escape-proof operations on the backing directory.
//!
//! Every inode is held as an `O_PATH | O_NOFOLLOW` descriptor, and every operation is relative
//! to one: names are single components opened with `O_NOFOLLOW`, so no path a hostile file name
//! or a planted symlink can steer ever leaves the backing root, and the daemon never goes
//! through its own mount (which may sit on top of the backing directory).
//!
//! Where Linux offers no `*at` form that works on an `O_PATH` descriptor (chmod, truncate,
//! reopening for I/O), the descriptor's `/proc/self/fd/N` magic link is used: it names exactly
//! that inode and cannot be redirected by anything in the tree.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::relpath::{child_path, RelPath};

/// `stat` of a backing inode.
pub type Stat = libc::stat;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_fd(ret: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a non-negative return of an fd-creating syscall is a fresh descriptor we own.
    cvt(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A single path component: never empty, ".", "..", nor containing '/' or NUL.
pub fn component(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if bytes.len() > 255 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

const EMPTY: &CStr = c"";

/// The magic link naming exactly the inode behind `fd`.
pub fn proc_path(fd: RawFd) -> CString {
    // Formatting an integer never yields a NUL byte.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// Opens a directory as the root of everything else.
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C string; flags request a path-only descriptor.
    let fd = cvt_fd(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    Ok(fd)
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: AT_EMPTY_PATH stats the descriptor itself (O_PATH included, symlinks too).
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// Opens `name` in `dir` as a path-only handle, never following a symlink.
pub fn lookup(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<(OwnedFd, Stat)> {
    // SAFETY: valid C string and descriptor.
    let fd = cvt_fd(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    let st = fstat(borrow(&fd))?;
    Ok((fd, st))
}

pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// Reopens the inode behind a path-only handle for I/O. `flags` are the application's open
/// flags; creation flags are dropped (the inode exists) and symlinks are never opened.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    let keep = !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW);
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid C string.
    let f = cvt_fd(unsafe { libc::open(p.as_ptr(), (flags & keep) | libc::O_CLOEXEC) })?;
    Ok(File::from(f))
}

/// Reopens a file for reading by ftpsync itself (hashing, uploading): without touching its
/// atime where the kernel allows (the owner, or CAP_FOWNER), so the mirror's reads do not
/// show through the mount.
pub fn reopen_quietly(fd: BorrowedFd<'_>) -> io::Result<File> {
    match reopen(fd, libc::O_RDONLY | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => reopen(fd, libc::O_RDONLY),
        other => other,
    }
}

/// A path-only handle on the same inode as an open file.
pub fn path_handle(file: &File) -> io::Result<OwnedFd> {
    let p = proc_path(file.as_raw_fd());
    // SAFETY: valid C string.
    cvt_fd(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })
}

/// Creates and opens a regular file; fails with EEXIST rather than follow anything there.
pub fn create(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<File> {
    let flags = (flags & !libc::O_NOCTTY) | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid C string and descriptor.
    let fd = cvt_fd(unsafe {
        libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint)
    })?;
    Ok(File::from(fd))
}

pub fn mkdir(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid C string and descriptor.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknod(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid C string and descriptor.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlink(dir: BorrowedFd<'_>, name: &CStr, target: &OsStr) -> io::Result<()> {
    let t =
        CString::new(target.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C strings and descriptor.
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn readlink(fd: BorrowedFd<'_>) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is as long as we say; AT_EMPTY_PATH-style empty name reads the link itself.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

pub fn unlink(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: valid C string and descriptor.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn rename(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid C strings and descriptors.
    cvt(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Makes a new name for the inode behind `fd`.
pub fn link(fd: BorrowedFd<'_>, new_dir: BorrowedFd<'_>, new: &CStr) -> io::Result<()> {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the magic link works for everyone.
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid C strings and descriptors.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

pub fn chmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    // SAFETY: valid C string.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// `u32::MAX` leaves the id unchanged, as with chown(2)'s -1.
pub fn chown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: empty name with AT_EMPTY_PATH changes the descriptor's inode itself.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn truncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::truncate(p.as_ptr(), size) }).map(drop)
}

/// A time to set: a value, "now", or leave unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, u32),
}

impl SetTime {
    fn timespec(self) -> libc::timespec {
        match self {
            SetTime::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            SetTime::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            SetTime::At(sec, nsec) => libc::timespec {
                tv_sec: sec,
                tv_nsec: i64::from(nsec),
            },
        }
    }
}

pub fn utimens(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> io::Result<()> {
    let times = [atime.timespec(), mtime.timespec()];
    // SAFETY: two timespecs as utimensat expects; empty name acts on the descriptor itself.
    cvt(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Sets the times of `name` in `dir` itself, never of what it points to: for symlinks, whose
/// own times an fd cannot reach (O_PATH descriptors do not take AT_EMPTY_PATH times).
pub fn utimens_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: SetTime,
    mtime: SetTime,
) -> io::Result<()> {
    let times = [atime.timespec(), mtime.timespec()];
    // SAFETY: valid C string, two timespecs; AT_SYMLINK_NOFOLLOW acts on a symlink itself.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn statfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the struct on success.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

/// Where an xattr call must aim: symlinks are reached through their parent directory with
/// the `l*` calls (a magic link to a symlink cannot be used without following it).
pub struct XattrTarget {
    path: CString,
    nofollow: bool,
}

impl XattrTarget {
    pub fn inode(fd: BorrowedFd<'_>) -> Self {
        XattrTarget {
            path: proc_path(fd.as_raw_fd()),
            nofollow: false,
        }
    }

    pub fn symlink(parent: BorrowedFd<'_>, name: &CStr) -> Self {
        let mut p = proc_path(parent.as_raw_fd()).into_bytes();
        p.push(b'/');
        p.extend_from_slice(name.to_bytes());
        XattrTarget {
            path: CString::new(p).unwrap_or_default(),
            nofollow: true,
        }
    }

    pub fn get(&self, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        let (p, n, b, l) = (
            self.path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        // SAFETY: valid C strings; buffer length matches.
        let r = unsafe {
            if self.nofollow {
                libc::lgetxattr(p, n, b, l)
            } else {
                libc::getxattr(p, n, b, l)
            }
        };
        ssize(r)
    }

    pub fn list(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (p, b, l) = (self.path.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: valid C string; buffer length matches.
        let r = unsafe {
            if self.nofollow {
                libc::llistxattr(p, b, l)
            } else {
                libc::listxattr(p, b, l)
            }
        };
        ssize(r)
    }

    pub fn set(&self, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
        let (p, n, v, l) = (
            self.path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
        );
        // SAFETY: valid C strings; value length matches.
        let r = unsafe {
            if self.nofollow {
                libc::lsetxattr(p, n, v, l, flags)
            } else {
                libc::setxattr(p, n, v, l, flags)
            }
        };
        cvt(r).map(drop)
    }

    pub fn remove(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: valid C strings.
        let r = unsafe {
            if self.nofollow {
                libc::lremovexattr(self.path.as_ptr(), name.as_ptr())
            } else {
                libc::removexattr(self.path.as_ptr(), name.as_ptr())
            }
        };
        cvt(r).map(drop)
    }
}

fn ssize(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One entry of a directory listing.
pub struct DirEntry {
    pub name: OsString,
    pub kind: u8,
}

/// Lists a directory (without "." and "..") from a path-only handle.
pub fn list_dir(fd: BorrowedFd<'_>) -> io::Result<Vec<DirEntry>> {
    // SAFETY: openat on "." of the directory handle gives a readable descriptor of it.
    let dfd = cvt(unsafe {
        libc::openat(
            fd.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: dfd is a fresh directory descriptor; fdopendir takes ownership of it.
    let dir = unsafe { libc::fdopendir(dfd) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so dfd is still ours to close.
        unsafe { libc::close(dfd) };
        return Err(e);
    }
    let mut out = Vec::new();
    let result = loop {
        // readdir signals errors only through errno.
        // SAFETY: errno location is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dir is a valid open DIR stream.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error() == Some(0) {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated.
        let (name, kind) = unsafe { (CStr::from_ptr((*ent).d_name.as_ptr()), (*ent).d_type) };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            out.push(DirEntry {
                name: OsStr::from_bytes(bytes).to_owned(),
                kind,
            });
        }
    };
    // SAFETY: dir is valid and closed exactly once.
    unsafe { libc::closedir(dir) };
    result.map(|()| out)
}

/// An entry met by [`walk`]: its path, a path-only handle opened without following a symlink,
/// and what fstat says of it.
pub struct Walked {
    pub path: RelPath,
    pub fd: OwnedFd,
    pub st: Stat,
}

impl Walked {
    pub fn is_dir(&self) -> bool {
        self.st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// Why [`walk`] could not give an entry, and its path: a directory that cannot be listed, an
/// entry gone since its directory was listed, a name no path component can carry.
pub struct WalkError {
    pub path: RelPath,
    pub error: io::Error,
}

/// The tree beneath a directory, depth first, every directory given before what it holds:
/// each entry is opened relative to its parent's handle with O_NOFOLLOW, so the walk never
/// follows a symlink and never leaves the tree, whatever is renamed meanwhile. An error is
/// given with its path and the walk goes on: each caller says what an error means to it.
/// A directory is listed right after it is given, so the walk holds one descriptor per level
/// of depth, however wide a directory is (a handle per directory found and not yet listed ran
/// out of descriptors beneath a directory of a thousand subdirectories).
pub struct Walk {
    /// The directory given last (or the start), listed before anything else is given.
    next_dir: Option<(OwnedFd, RelPath)>,
    /// The directories being given, outermost first, each with its entries not given yet
    /// (last first).
    open: Vec<(OwnedFd, RelPath, Vec<DirEntry>)>,
}

/// Walks what is beneath `dir`, whose path is `prefix` (empty for the root).
pub fn walk(dir: OwnedFd, prefix: RelPath) -> Walk {
    Walk {
        next_dir: Some((dir, prefix)),
        open: Vec::new(),
    }
}

/// Opens `e`, listed in `dir` (whose path is `prefix`); for a directory, a second handle to
/// list it by.
#[allow(clippy::type_complexity)]
fn open_listed(
    dir: &OwnedFd,
    prefix: &[u8],
    e: &DirEntry,
) -> Result<(Walked, Option<(OwnedFd, RelPath)>), WalkError> {
    let path = child_path(prefix, e.name.as_bytes());
    let opened = component(&e.name)
        .and_then(|c| lookup(borrow(dir), &c))
        .and_then(|(fd, st)| {
            let w = Walked {
                path: path.clone(),
                fd,
                st,
            };
            let list = if w.is_dir() {
                Some((w.fd.try_clone()?, path.clone()))
            } else {
                None
            };
            Ok((w, list))
        });
    opened.map_err(|error| WalkError { path, error })
}

impl Iterator for Walk {
    type Item = Result<Walked, WalkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some((dir, prefix)) = self.next_dir.take() {
            match list_dir(borrow(&dir)) {
                Ok(mut entries) => {
                    entries.reverse();
                    self.open.push((dir, prefix, entries));
                }
                Err(error) => {
                    return Some(Err(WalkError {
                        path: prefix,
                        error,
                    }))
                }
            }
        }
        loop {
            let (dir, prefix, entries) = self.open.last_mut()?;
            let Some(e) = entries.pop() else {
                self.open.pop();
                continue;
            };
            return Some(open_listed(dir, prefix, &e).map(|(w, list)| {
                self.next_dir = list;
                w
            }));
        }
    }
}

/// Opens a descendant of `root` by relative path, one component at a time, never following a
/// symlink and never leaving `root`. The empty path is `root` itself.
pub fn lookup_path(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<(OwnedFd, Stat)> {
    let mut cur: Option<OwnedFd> = None;
    for part in rel.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        let name = component(OsStr::from_bytes(part))?;
        let dir = cur.as_ref().map_or(root, borrow);
        cur = Some(lookup(dir, &name)?.0);
    }
    let fd = match cur {
        Some(fd) => fd,
        None => root.try_clone_to_owned()?,
    };
    let st = fstat(borrow(&fd))?;
    Ok((fd, st))
}

/// Per-thread filesystem credentials, so that what the backing filesystem creates for a caller
/// gets that caller's owner, group (including set-group-ID directory inheritance) and permission
/// checks, exactly as a local filesystem would. Restored on drop.
pub struct Creds {
    active: bool,
}

impl Creds {
    /// Switches this thread to `uid`/`gid` with supplementary `groups` (no-op for root).
    pub fn switch(uid: u32, gid: u32, groups: &[u32]) -> io::Result<Creds> {
        // SAFETY: geteuid has no failure mode.
        if uid == 0 || unsafe { libc::geteuid() } != 0 {
            return Ok(Creds { active: false });
        }
        // Raw syscalls: the glibc wrappers for setgroups apply to every thread of the process.
        // SAFETY: plain syscalls on this thread's credentials.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::syscall(libc::SYS_setfsgid, gid);
            libc::syscall(libc::SYS_setfsuid, uid);
        }
        Ok(Creds { active: true })
    }
}

impl Drop for Creds {
    fn drop(&mut self) {
        if self.active {
            // SAFETY: restores root's credentials on this thread; capabilities come back with fsuid 0.
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<u32>());
            }
        }
    }
}

/// The supplementary groups of a process, from /proc (empty if it is gone).
pub fn groups_of(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Raises the open-file limit as far as allowed: one path handle is kept per cached inode.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(lim.rlim_max);
        let want = nr_open.min(1 << 20);
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
