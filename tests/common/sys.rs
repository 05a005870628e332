//! Thin syscall wrappers returning errno names, so that a test compares what the mount and a
//! plain directory answer (value or errno) without `std`'s own handling in between.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::EACCES => "EACCES",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ETXTBSY => "ETXTBSY",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::EROFS => "EROFS",
            libc::EMLINK => "EMLINK",
            libc::ERANGE => "ERANGE",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ENOTEMPTY => "ENOTEMPTY",
            libc::ELOOP => "ELOOP",
            libc::ENODATA => "ENODATA",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::ENOTCONN => "ENOTCONN",
            libc::EOVERFLOW => "EOVERFLOW",
            n => return write!(f, "errno {n}"),
        };
        f.write_str(n)
    }
}

pub type Res<T> = Result<T, Errno>;

pub fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

pub fn cvt(r: libc::c_int) -> Res<libc::c_int> {
    if r == -1 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

pub fn cvt_l(r: isize) -> Res<usize> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

pub fn cs(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

pub fn csb(b: &[u8]) -> CString {
    CString::new(b).expect("bytes without NUL")
}

/// An open file descriptor, closed on drop.
pub struct Fd(pub libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor.
        unsafe {
            libc::close(self.0);
        }
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fd")
    }
}

pub fn open(p: &Path, flags: libc::c_int, mode: u32) -> Res<Fd> {
    let c = cs(p);
    // SAFETY: valid C string; mode passed as the variadic third argument.
    cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) }).map(Fd)
}

/// Opens and closes at once: the result of the open alone.
pub fn open_close(p: &Path, flags: libc::c_int, mode: u32) -> Res<()> {
    open(p, flags, mode).map(drop)
}

pub fn write(fd: &Fd, data: &[u8]) -> Res<usize> {
    // SAFETY: buffer valid for data.len() bytes.
    cvt_l(unsafe { libc::write(fd.0, data.as_ptr().cast(), data.len()) })
}

pub fn pwrite(fd: &Fd, off: i64, data: &[u8]) -> Res<usize> {
    // SAFETY: buffer valid for data.len() bytes.
    cvt_l(unsafe { libc::pwrite(fd.0, data.as_ptr().cast(), data.len(), off) })
}

pub fn pread(fd: &Fd, off: i64, len: usize) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: buffer valid for len - got bytes at got.
        let n = cvt_l(unsafe {
            libc::pread(
                fd.0,
                buf[got..].as_mut_ptr().cast(),
                len - got,
                off + got as i64,
            )
        })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

pub fn fstat(fd: &Fd) -> Res<libc::stat> {
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstat(fd.0, &mut st) }).map(|_| st)
}

pub fn stat(p: &Path) -> Res<libc::stat> {
    let c = cs(p);
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::stat(c.as_ptr(), &mut st) }).map(|_| st)
}

pub fn lstat(p: &Path) -> Res<libc::stat> {
    let c = cs(p);
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::lstat(c.as_ptr(), &mut st) }).map(|_| st)
}

pub fn kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "chr",
        libc::S_IFBLK => "blk",
        libc::S_IFSOCK => "sock",
        _ => "?",
    }
}

/// The comparable part of a stat: no inode numbers, no times, no devices.
pub fn show_st(st: &libc::stat) -> String {
    let size = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // directory sizes are filesystem-specific
        "-".to_string()
    } else {
        st.st_size.to_string()
    };
    format!(
        "{} {:04o} size={} nlink={} uid={} gid={}",
        kind(st.st_mode),
        st.st_mode & 0o7777,
        size,
        st.st_nlink,
        st.st_uid,
        st.st_gid
    )
}

pub fn st_of(r: Res<libc::stat>) -> Res<String> {
    r.map(|s| show_st(&s))
}

pub fn read_all(p: &Path) -> Res<Vec<u8>> {
    let fd = open(p, libc::O_RDONLY, 0)?;
    pread(&fd, 0, 1 << 24)
}

pub fn write_file(p: &Path, data: &[u8]) -> Res<()> {
    let fd = open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644)?;
    let n = write(&fd, data)?;
    assert_eq!(n, data.len(), "short write");
    Ok(())
}

pub fn truncate(p: &Path, len: i64) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::truncate(c.as_ptr(), len) }).map(drop)
}

pub fn ftruncate(fd: &Fd, len: i64) -> Res<()> {
    // SAFETY: plain syscall on our fd.
    cvt(unsafe { libc::ftruncate(fd.0, len) }).map(drop)
}

pub fn chmod(p: &Path, mode: u32) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

pub fn fchmod(fd: &Fd, mode: u32) -> Res<()> {
    // SAFETY: plain syscall on our fd.
    cvt(unsafe { libc::fchmod(fd.0, mode) }).map(drop)
}

pub fn chown(p: &Path, uid: u32, gid: u32) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::chown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn fchown(fd: &Fd, uid: u32, gid: u32) -> Res<()> {
    // SAFETY: plain syscall on our fd.
    cvt(unsafe { libc::fchown(fd.0, uid, gid) }).map(drop)
}

pub fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

pub fn utimensat(p: &Path, times: [libc::timespec; 2], flags: libc::c_int) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string and a 2-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) }).map(drop)
}

pub fn futimens(fd: &Fd, times: [libc::timespec; 2]) -> Res<()> {
    // SAFETY: 2-element timespec array.
    cvt(unsafe { libc::futimens(fd.0, times.as_ptr()) }).map(drop)
}

pub fn mkdir(p: &Path, mode: u32) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

pub fn rmdir(p: &Path) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::rmdir(c.as_ptr()) }).map(drop)
}

pub fn unlink(p: &Path) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::unlink(c.as_ptr()) }).map(drop)
}

pub fn rename(a: &Path, b: &Path) -> Res<()> {
    let (ca, cb) = (cs(a), cs(b));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::rename(ca.as_ptr(), cb.as_ptr()) }).map(drop)
}

pub const RENAME_NOREPLACE: libc::c_uint = 1;
pub const RENAME_EXCHANGE: libc::c_uint = 2;

pub fn renameat2(a: &Path, b: &Path, flags: libc::c_uint) -> Res<()> {
    let (ca, cb) = (cs(a), cs(b));
    // SAFETY: raw renameat2(2) with valid C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    };
    if r == -1 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

pub fn symlink(target: &[u8], p: &Path) -> Res<()> {
    let (ct, cp) = (csb(target), cs(p));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::symlink(ct.as_ptr(), cp.as_ptr()) }).map(drop)
}

pub fn readlink(p: &Path) -> Res<Vec<u8>> {
    let c = cs(p);
    let mut buf = vec![0u8; 8192];
    // SAFETY: buffer valid for its length.
    let n = cvt_l(unsafe { libc::readlink(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn link(a: &Path, b: &Path) -> Res<()> {
    let (ca, cb) = (cs(a), cs(b));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) }).map(drop)
}

pub fn mkfifo(p: &Path, mode: u32) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkfifo(c.as_ptr(), mode) }).map(drop)
}

pub fn access(p: &Path, how: libc::c_int) -> Res<()> {
    let c = cs(p);
    // SAFETY: valid C string.
    cvt(unsafe { libc::access(c.as_ptr(), how) }).map(drop)
}

pub fn fallocate(fd: &Fd, mode: libc::c_int, off: i64, len: i64) -> Res<()> {
    // SAFETY: plain syscall on our fd.
    cvt(unsafe { libc::fallocate(fd.0, mode, off, len) }).map(drop)
}

pub fn copy_file_range(src: &Fd, soff: i64, dst: &Fd, doff: i64, len: usize) -> Res<usize> {
    let (mut so, mut d) = (soff, doff);
    // SAFETY: valid fds and offset pointers.
    cvt_l(unsafe { libc::copy_file_range(src.0, &mut so, dst.0, &mut d, len, 0) })
}

pub fn lseek(fd: &Fd, off: i64, whence: libc::c_int) -> Res<i64> {
    // SAFETY: plain syscall on our fd.
    let r = unsafe { libc::lseek(fd.0, off, whence) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

pub fn setxattr(p: &Path, name: &str, val: &[u8], flags: libc::c_int) -> Res<()> {
    let (c, n) = (cs(p), csb(name.as_bytes()));
    // SAFETY: valid C strings and a value buffer.
    cvt(unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn lsetxattr(p: &Path, name: &str, val: &[u8], flags: libc::c_int) -> Res<()> {
    let (c, n) = (cs(p), csb(name.as_bytes()));
    // SAFETY: valid C strings and a value buffer.
    cvt(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            val.as_ptr().cast(),
            val.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn getxattr_sized(p: &Path, name: &str, size: usize) -> Res<Vec<u8>> {
    let (c, n) = (cs(p), csb(name.as_bytes()));
    let mut buf = vec![0u8; size];
    // SAFETY: buffer valid for `size` bytes (null pointer when size is 0).
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let r = cvt_l(unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), ptr, size) })?;
    if size == 0 {
        return Ok(vec![0u8; r]); // length query: report the length via the vec
    }
    buf.truncate(r);
    Ok(buf)
}

pub fn getxattr(p: &Path, name: &str) -> Res<Vec<u8>> {
    getxattr_sized(p, name, 65536)
}

pub fn listxattr_user(p: &Path) -> Res<Vec<String>> {
    let c = cs(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer valid for its length.
    let n = cvt_l(unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| s.starts_with(b"user."))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn removexattr(p: &Path, name: &str) -> Res<()> {
    let (c, n) = (cs(p), csb(name.as_bytes()));
    // SAFETY: valid C strings.
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

pub fn statvfs(p: &Path) -> Res<libc::statvfs> {
    let c = cs(p);
    // SAFETY: zeroed statvfs is a valid out-buffer.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut s) }).map(|_| s)
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Bytes of a path component list joined onto root.
pub fn pj(root: &Path, name: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(name))
}
