//! The kernel boundary: a thin `fuser::Filesystem` over `fs::Fs`. Each callback calls one
//! method and turns `Ok` into a reply and `Err(errno)` into `reply.error`.

use crate::fs::{Caller, Fs, Opened, XattrReply};
use crate::local::SetTime;
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use log::{debug, info};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The mount owns its directory, so the kernel may cache names and attributes for long.
const TTL: Duration = Duration::from_secs(60);
const GEN: Generation = Generation(0);

pub struct FuseFs {
    fs: Arc<Fs>,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs { fs }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            // fuser 0.18 builds a pre-1970 (sec, nsec) as EPOCH - (|sec| + nsec): undo that.
            Err(e) => {
                let d = e.duration();
                SetTime::At(-(d.as_secs() as i64), d.subsec_nanos())
            }
        },
    })
}

/// Errors answered to the kernel since the start; most are ordinary (ENOENT for a name looked
/// up that does not exist). `status` shows the count, the debug log each one.
static ERRORS_ANSWERED: AtomicU64 = AtomicU64::new(0);

pub fn errors_answered() -> u64 {
    ERRORS_ANSWERED.load(Ordering::Relaxed)
}

fn answered(e: Errno) -> Errno {
    ERRORS_ANSWERED.fetch_add(1, Ordering::Relaxed);
    debug!("answered the kernel {e:?}");
    e
}

macro_rules! reply {
    ($reply:ident, $res:expr, |$v:pat_param| $ok:expr) => {
        match $res {
            Ok($v) => $ok,
            Err(e) => $reply.error(answered(e)),
        }
    };
}

fn entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    reply!(reply, r, |a| reply.entry(&TTL, &a, GEN));
}

fn empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    reply!(reply, r, |()| reply.ok());
}

fn xattr(reply: ReplyXattr, r: Result<XattrReply, Errno>) {
    reply!(reply, r, |x| match x {
        XattrReply::Size(n) => reply.size(n),
        XattrReply::Data(d) => reply.data(&d),
    });
}

fn open_reply(reply: ReplyOpen, r: Result<Opened, Errno>) {
    reply!(reply, r, |o| match &o.backing {
        Some(id) => reply.opened_passthrough(FileHandle(o.fh), o.flags, id),
        None => reply.opened(FileHandle(o.fh), o.flags),
    });
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_CACHE_SYMLINKS;
        if let Err(missing) = config.add_capabilities(want) {
            debug!("kernel lacks {missing:?}");
        }
        if self.fs.passthrough_wanted() {
            // Passthrough needs a stack depth (our backing fs is one level below us).
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                info!("kernel passthrough not offered; using the daemon's read/write path");
                self.fs.disable_passthrough();
            }
        }
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.fs.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        reply!(reply, self.fs.getattr(ino.0, fh.map(|f| f.0)), |a| reply
            .attr(&TTL, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.fs.setattr(
            ino.0,
            mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            set_time(atime),
            set_time(mtime),
            fh.map(|f| f.0),
        );
        reply!(reply, r, |a| reply.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        reply!(reply, self.fs.readlink(ino.0), |t| reply.data(&t));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .fs
            .mknod(&caller(req), parent.0, name, mode, u64::from(rdev));
        entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, self.fs.mkdir(&caller(req), parent.0, name, mode));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self
            .fs
            .symlink(&caller(req), parent.0, link_name, target.as_os_str());
        entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let register = |f: &std::fs::File| reply.open_backing(f);
        let r = self.fs.open(ino.0, flags.0, &register);
        open_reply(reply, r);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply!(reply, self.fs.read(fh.0, offset, size), |d| reply.data(&d));
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply!(reply, self.fs.write(fh.0, offset, data), |n| reply
            .written(n));
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.flush(ino.0, fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.release(ino.0, fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(ino.0, fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply!(reply, self.fs.opendir(ino.0), |fh| reply
            .opened(FileHandle(fh), FopenFlags::empty()));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self
            .fs
            .readdir(ino.0, fh.0, offset, |child, off, kind, name| {
                reply.add(INodeNo(child), off, kind, name)
            });
        reply!(reply, r, |()| reply.ok());
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.fs.readdirplus(ino.0, fh.0, offset, |off, name, a| {
            reply.add(a.ino, off, name, &TTL, a, GEN)
        });
        reply!(reply, r, |()| reply.ok());
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply!(reply, self.fs.statfs(), |s| reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        ));
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.setxattr(ino.0, name, value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(reply, self.fs.getxattr(ino.0, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(reply, self.fs.listxattr(ino.0, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.fs.removexattr(ino.0, name));
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.fs.access(&caller(req), ino.0, mask.bits()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let register = |f: &std::fs::File| reply.open_backing(f);
        let r = self
            .fs
            .create(&caller(req), parent.0, name, mode, flags, &register);
        reply!(reply, r, |(a, o)| match &o.backing {
            Some(id) => reply.created_passthrough(&TTL, &a, GEN, FileHandle(o.fh), o.flags, id),
            None => reply.created(&TTL, &a, GEN, FileHandle(o.fh), o.flags),
        });
    }

    /// No ioctls: say "not a terminal" at once (Python's open() asks on every file) instead
    /// of fuser's logged ENOSYS.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(answered(Errno::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fallocate(fh.0, offset, length, mode));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        reply!(reply, self.fs.lseek(fh.0, offset, whence), |o| reply
            .offset(o));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let r = self
            .fs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len);
        reply!(reply, r, |n| reply.written(n));
    }
}
