//! The filesystem logic: local operations on the backing directory, each one journaled, and
//! hash-on-close. Returns plain results; `crate::fuse` turns them into kernel replies.
//!
//! Lock order: `tree`, then a node's `track`, then `handles`/`dirs`/`backing`/`recheck`. Every
//! operation that changes the namespace runs its syscall and appends its journal record under
//! the `tree` lock, so the journal is a serial history of the backing tree.

mod hash_on_close;
mod hasher;
pub mod recover;
#[cfg(test)]
mod tests;
mod tree;
mod writers;
mod xattr;

use crate::hash::{self, Sha256Hash};
use crate::journal::{Journal, Record, Timestamp};
use crate::local::{self, borrow, SetTime};
use crate::mirror::{Mirror, OpenWriters};
use fuser::{BackingId, Errno, FileAttr, FileType, FopenFlags};
use hasher::HashQueue;
use log::{error, warn};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
pub use tree::ROOT;
use tree::{Ref, Track, Tree};
pub use writers::{OpenForWriting, OPEN_LISTED};
pub use xattr::STATE_DIR_XATTR;

pub type R<T> = Result<T, Errno>;

/// How long after a close with other descriptors still open (or an fsync) a file is hashed:
/// the release that usually follows at once then hashes it a single time.
const CLOSE_GRACE: Duration = Duration::from_millis(100);
const FSYNC_GRACE: Duration = Duration::from_secs(1);

pub struct Options {
    /// Try kernel passthrough for opened files (needs CAP_SYS_ADMIN).
    pub passthrough: bool,
    pub state_dir: PathBuf,
}

/// Who made a request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// The result of an open or create.
pub struct Opened {
    pub fh: u64,
    pub flags: FopenFlags,
    pub backing: Option<Arc<BackingId>>,
}

pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// Registers an open file for kernel passthrough (a `ReplyOpen::open_backing`).
pub type Register<'a> = &'a dyn Fn(&File) -> io::Result<BackingId>;

struct Handle {
    ino: u64,
    file: File,
    writable: bool,
    /// The backing file's inode number, while this handle counts in `Fs::writers`.
    writer_ino: Option<u64>,
    track: Arc<Mutex<Track>>,
    _backing: Option<Arc<BackingId>>,
}

pub struct Fs {
    tree: Mutex<Tree>,
    /// What the remote holds, for the `user.ftpsync.*` attributes and the start-up scan.
    mirror: Arc<Mutex<Mirror>>,
    /// Files open for writing, which the engine must not hash behind our back.
    writers: Arc<OpenWriters>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Vec<local::DirEntry>>>,
    backing: Mutex<HashMap<u64, Weak<BackingId>>>,
    recheck: Mutex<HashMap<u64, Recheck>>,
    next_fh: AtomicU64,
    journal: Arc<Journal>,
    hashq: HashQueue,
    passthrough: AtomicBool,
    journal_failed: AtomicBool,
    opts: Options,
}

fn io_err(e: io::Error) -> Errno {
    Errno::from(e)
}

fn cname(name: &OsStr) -> R<CString> {
    local::component(name).map_err(io_err)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nsec = u32::try_from(nsec).unwrap_or(0);
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(u64::from(nsec))
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn dirent_type(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub fn attr(ino: u64, st: &local::Stat) -> FileAttr {
    FileAttr {
        ino: fuser::INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

type Version = (i64, i64, i64, i64, i64);

/// When a file written through passthrough is looked at again after its hash.
const RECHECK_AFTER: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(600),
];

struct Recheck {
    version: Version,
    next: Instant,
    step: usize,
}

/// What identifies one version of a file's contents cheaply.
fn version(st: &local::Stat) -> Version {
    (
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
    )
}

fn stamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp {
        sec,
        nsec: u32::try_from(nsec).unwrap_or(0),
    }
}

fn is_writable(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Fs {
    pub fn new(
        root: OwnedFd,
        journal: Arc<Journal>,
        mirror: Arc<Mutex<Mirror>>,
        opts: Options,
    ) -> io::Result<Fs> {
        let st = local::fstat(borrow(&root))?;
        let writers = mirror.lock().writers.clone();
        Ok(Fs {
            mirror,
            writers,
            tree: Mutex::new(Tree::new(root, &st)),
            handles: RwLock::default(),
            dirs: Mutex::default(),
            backing: Mutex::default(),
            recheck: Mutex::default(),
            next_fh: AtomicU64::new(1),
            journal,
            hashq: HashQueue::default(),
            passthrough: AtomicBool::new(opts.passthrough),
            journal_failed: AtomicBool::new(false),
            opts,
        })
    }

    pub fn passthrough_wanted(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// The kernel refused passthrough: use the daemon's read/write path from now on.
    pub fn disable_passthrough(&self) {
        self.passthrough.store(false, Ordering::Relaxed);
    }

    /// Appends to the journal. Called with the tree lock held (the `_t` witness), so records
    /// follow the order in which the backing tree changed.
    fn log(&self, _t: &Tree, rec: Record) {
        if let Err(e) = self.journal.append(&rec) {
            // The change is already on disk; the next start's reconciliation finds it again.
            if !self.journal_failed.swap(true, Ordering::Relaxed) {
                error!(
                    "journal append failed ({e}); changes will be found by the next start-up scan"
                );
            }
        }
    }

    /// An fsync's promise covers the journal too: if it cannot be made durable, the caller gets
    /// EIO, and the log says why.
    fn sync_journal(&self) -> R<()> {
        self.journal.sync().map_err(|e| {
            error!("journal sync failed ({e}); fsync answered EIO");
            Errno::EIO
        })
    }

    fn node_fd(&self, ino: u64) -> R<Arc<OwnedFd>> {
        self.tree.lock().fd(ino).map_err(io_err)
    }

    /// The node's descriptor and content tracking, in one lock.
    fn node(&self, ino: u64) -> R<(Arc<OwnedFd>, Arc<Mutex<Track>>, u32)> {
        let mut t = self.tree.lock();
        let fd = t.fd(ino).map_err(io_err)?;
        let n = t.get(ino).ok_or(Errno::ESTALE)?;
        Ok((fd, n.track.clone(), n.kind))
    }

    fn handle(&self, fh: u64) -> R<Arc<Handle>> {
        self.handles.read().get(&fh).cloned().ok_or(Errno::EBADF)
    }

    fn creds(&self, c: &Caller) -> R<local::Creds> {
        let groups = if c.uid == 0 {
            Vec::new()
        } else {
            local::groups_of(c.pid)
        };
        local::Creds::switch(c.uid, c.gid, &groups).map_err(io_err)
    }

    // ---- names ----

    pub fn lookup(&self, parent: u64, name: &OsStr) -> R<FileAttr> {
        let c = cname(name)?;
        let pfd = self.node_fd(parent)?;
        let (fd, st) = local::lookup(borrow(&pfd), &c).map_err(io_err)?;
        let ino = self.tree.lock().insert(parent, name, fd, &st, Ref::Lookup);
        Ok(attr(ino, &st))
    }

    pub fn forget(&self, ino: u64, count: u64) {
        self.tree.lock().drop_ref(ino, Ref::Lookup, count);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> R<FileAttr> {
        if let Some(h) = fh.and_then(|fh| self.handle(fh).ok()) {
            let st = local::fstat(h.file.as_fd()).map_err(io_err)?;
            return Ok(attr(ino, &st));
        }
        let fd = self.node_fd(ino)?;
        let st = local::fstat(borrow(&fd)).map_err(io_err)?;
        Ok(attr(ino, &st))
    }

    /// Creates a node with the caller's credentials, then journals it.
    fn make(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mk: impl FnOnce(std::os::fd::BorrowedFd<'_>, &CStr) -> io::Result<()>,
        rec: impl FnOnce(Vec<u8>) -> Record,
    ) -> R<FileAttr> {
        let c = cname(name)?;
        let pfd = self.node_fd(parent)?;
        let mut t = self.tree.lock();
        {
            let _as_caller = self.creds(caller)?;
            mk(borrow(&pfd), &c).map_err(io_err)?;
        }
        let (fd, st) = local::lookup(borrow(&pfd), &c).map_err(io_err)?;
        let ino = t.insert(parent, name, fd, &st, Ref::Lookup);
        if let Some(path) = t.child_path(parent, name) {
            self.log(&t, rec(path));
        }
        Ok(attr(ino, &st))
    }

    pub fn mkdir(&self, caller: &Caller, parent: u64, name: &OsStr, mode: u32) -> R<FileAttr> {
        self.make(
            caller,
            parent,
            name,
            |d, c| local::mkdir(d, c, mode),
            |path| Record::Mkdir { path, mode },
        )
    }

    pub fn mknod(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
    ) -> R<FileAttr> {
        self.make(
            caller,
            parent,
            name,
            |d, c| local::mknod(d, c, mode, rdev),
            |path| Record::Mknod { path, mode, rdev },
        )
    }

    pub fn symlink(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> R<FileAttr> {
        self.make(
            caller,
            parent,
            name,
            |d, c| local::symlink(d, c, target),
            |path| Record::Symlink {
                path,
                target: target.as_bytes().to_vec(),
            },
        )
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> R<FileAttr> {
        let c = cname(newname)?;
        let mut t = self.tree.lock();
        let fd = t.fd(ino).map_err(io_err)?;
        let pfd = t.fd(newparent).map_err(io_err)?;
        local::link(borrow(&fd), borrow(&pfd), &c).map_err(io_err)?;
        let st = local::fstat(borrow(&fd)).map_err(io_err)?;
        let existing = t.path(ino);
        t.add_name(ino, newparent, newname);
        t.take(ino, Ref::Lookup);
        if let (Some(existing), Some(path)) = (existing, t.child_path(newparent, newname)) {
            self.log(&t, Record::Link { existing, path });
        }
        Ok(attr(ino, &st))
    }

    /// Before a name goes: keep the descriptor of an inode known by no other name, which the
    /// kernel may still use (an open file, a cwd) and which could not be found again.
    fn hold_if_last_name(&self, t: &mut Tree, parent: u64, name: &OsStr) {
        if let Some(ino) = t.child(parent, name) {
            if t.get(ino).is_some_and(|n| n.names.len() == 1) {
                t.hold_fd(ino);
            }
        }
    }

    fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> R<()> {
        let c = cname(name)?;
        let mut t = self.tree.lock();
        let pfd = t.fd(parent).map_err(io_err)?;
        self.hold_if_last_name(&mut t, parent, name);
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        local::unlink(borrow(&pfd), &c, flags).map_err(io_err)?;
        if let Some(path) = t.child_path(parent, name) {
            let rec = if dir {
                Record::Rmdir { path }
            } else {
                Record::Unlink { path }
            };
            self.log(&t, rec);
        }
        t.remove_name(parent, name);
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> R<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> R<()> {
        self.remove(parent, name, true)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> R<()> {
        let (c, nc) = (cname(name)?, cname(newname)?);
        let mut t = self.tree.lock();
        let pfd = t.fd(parent).map_err(io_err)?;
        let npfd = t.fd(newparent).map_err(io_err)?;
        if flags & libc::RENAME_EXCHANGE == 0 {
            self.hold_if_last_name(&mut t, newparent, newname);
        }
        local::rename(borrow(&pfd), &c, borrow(&npfd), &nc, flags).map_err(io_err)?;
        if let (Some(from), Some(to)) =
            (t.child_path(parent, name), t.child_path(newparent, newname))
        {
            self.log(&t, Record::Rename { from, to, flags });
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        t.rename(parent, name, newparent, newname, exchange);
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> R<Vec<u8>> {
        let fd = self.node_fd(ino)?;
        let target = local::readlink(borrow(&fd)).map_err(io_err)?;
        Ok(target.as_bytes().to_vec())
    }

    // ---- attributes ----

    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
        fh: Option<u64>,
    ) -> R<FileAttr> {
        let (fd, track, _) = self.node(ino)?;
        let handle = fh.and_then(|fh| self.handle(fh).ok());
        let fd = borrow(&fd);
        // chown before chmod: chown clears set-user-ID bits, and a mode sent with it is final.
        if uid.is_some() || gid.is_some() {
            local::chown(fd, uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)).map_err(io_err)?;
        }
        if let Some(m) = mode {
            match &handle {
                Some(h) => {
                    use std::os::unix::fs::PermissionsExt;
                    h.file
                        .set_permissions(std::fs::Permissions::from_mode(m))
                        .map_err(io_err)?
                }
                None => local::chmod(fd, m).map_err(io_err)?,
            }
        }
        if let Some(s) = size {
            match handle.as_ref().filter(|h| h.writable) {
                Some(h) => h.file.set_len(s).map_err(io_err)?,
                None => local::truncate(fd, s).map_err(io_err)?,
            }
            let mut tr = track.lock();
            if s == 0 {
                tr.inc.reset();
            } else {
                tr.inc.invalidate();
            }
        }
        if atime.is_some() || mtime.is_some() {
            let (a, m) = (
                atime.unwrap_or(SetTime::Omit),
                mtime.unwrap_or(SetTime::Omit),
            );
            local::utimens(fd, a, m).map_err(io_err)?;
        }
        let st = local::fstat(fd).map_err(io_err)?;
        let mut t = self.tree.lock();
        if let Some(path) = t.path(ino) {
            if mode.is_some()
                || uid.is_some()
                || gid.is_some()
                || atime.is_some()
                || mtime.is_some()
            {
                let rec = Record::SetAttr {
                    path,
                    mode: mode.map(|_| st.st_mode & 0o7777),
                    uid: uid.map(|_| st.st_uid),
                    gid: gid.map(|_| st.st_gid),
                    size: None,
                    atime: atime.map(|_| stamp(st.st_atime, st.st_atime_nsec)),
                    mtime: mtime.map(|_| stamp(st.st_mtime, st.st_mtime_nsec)),
                };
                self.log(&t, rec);
            }
        }
        if size.is_some() {
            self.mark_dirty(&t, ino, &track);
        }
        // A new mtime of a closed file needs a Store that says so (its hash travels with its
        // size and mtime), as new contents do: the engine waits for one.
        let restamped = mtime.is_some() && st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if (size.is_some() || restamped) && track.lock().writers == 0 {
            self.schedule_hash(&mut t, ino, Instant::now());
        }
        Ok(attr(ino, &st))
    }

    /// Journals that a file's contents may change, once per dirty period.
    fn mark_dirty(&self, t: &Tree, ino: u64, track: &Mutex<Track>) {
        let mut tr = track.lock();
        if tr.dirty {
            return;
        }
        tr.dirty = true;
        drop(tr);
        if let Some(path) = t.path(ino) {
            self.log(t, Record::Dirty { path });
        }
    }

    fn schedule_hash(&self, t: &mut Tree, ino: u64, at: Instant) {
        // The pin keeps the node (and so its path) until the job has run.
        if self.hashq.schedule(ino, at) {
            t.take(ino, Ref::Pin);
        }
    }

    // ---- files ----

    pub fn open(&self, ino: u64, flags: i32, register: Register<'_>) -> R<Opened> {
        let (fd, _, kind) = self.node(ino)?;
        if kind != libc::S_IFREG {
            // Devices and FIFOs are opened by the kernel itself; only files come here.
            return Err(Errno::EINVAL);
        }
        let file = local::reopen(borrow(&fd), flags).map_err(io_err)?;
        self.opened(ino, file, flags, false, register)
    }

    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        register: Register<'_>,
    ) -> R<(FileAttr, Opened)> {
        let c = cname(name)?;
        let pfd = self.node_fd(parent)?;
        let mut t = self.tree.lock();
        let created = {
            let _as_caller = self.creds(caller)?;
            match local::create(borrow(&pfd), &c, flags | libc::O_EXCL, mode) {
                Ok(f) => Ok((f, true)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                    local::create(borrow(&pfd), &c, flags, mode).map(|f| (f, false))
                }
                Err(e) => Err(e),
            }
        };
        let (file, created) = created.map_err(io_err)?;
        let pathfd = local::path_handle(&file).map_err(io_err)?;
        let st = local::fstat(file.as_fd()).map_err(io_err)?;
        let ino = t.insert(parent, name, pathfd, &st, Ref::Lookup);
        if created {
            if let Some(path) = t.child_path(parent, name) {
                self.log(&t, Record::Create { path, mode });
            }
            if let Some(n) = t.get(ino) {
                n.track.lock().dirty = true;
            }
        }
        drop(t);
        let opened = self.opened(ino, file, flags, true, register)?;
        Ok((attr(ino, &st), opened))
    }

    /// Registers an open file: write tracking, passthrough, the handle table.
    fn opened(
        &self,
        ino: u64,
        file: File,
        flags: i32,
        fresh: bool,
        register: Register<'_>,
    ) -> R<Opened> {
        let writable = is_writable(flags);
        let backing = if self.passthrough_wanted() {
            self.backing_for(ino, &file, register)
        } else {
            None
        };
        let mut t = self.tree.lock();
        let track = t.get(ino).ok_or(Errno::ESTALE)?.track.clone();
        t.take(ino, Ref::Open);
        let mut writer_ino = None;
        if writable {
            let md = file.metadata();
            let size = md.as_ref().map_or(u64::MAX, |m| m.len());
            if let Ok(md) = &md {
                let backing_ino = std::os::unix::fs::MetadataExt::ino(md);
                self.writers.opened(backing_ino);
                writer_ino = Some(backing_ino);
            }
            let mut tr = track.lock();
            tr.writers += 1;
            tr.passthrough |= backing.is_some();
            // Incremental hashing needs every byte to pass through us, in order, from 0.
            if tr.writers == 1 && backing.is_none() && size == 0 {
                tr.inc.reset();
            } else {
                tr.inc.invalidate();
            }
            drop(tr);
            if !fresh {
                self.mark_dirty(&t, ino, &track);
            }
        }
        drop(t);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut fopen = FopenFlags::empty();
        if !writable {
            // Nothing to hash after a read-only close: skip the FLUSH round trip.
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        if backing.is_none() {
            // The mount owns its directory: cached pages stay valid across opens.
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        let handle = Handle {
            ino,
            file,
            writable,
            writer_ino,
            track,
            _backing: backing.clone(),
        };
        self.handles.write().insert(fh, Arc::new(handle));
        Ok(Opened {
            fh,
            flags: fopen,
            backing,
        })
    }

    /// One backing id per inode, shared by its open passthrough handles (the kernel requires it).
    fn backing_for(&self, ino: u64, file: &File, register: Register<'_>) -> Option<Arc<BackingId>> {
        let mut b = self.backing.lock();
        if let Some(id) = b.get(&ino).and_then(Weak::upgrade) {
            return Some(id);
        }
        match register(file) {
            Ok(id) => {
                let id = Arc::new(id);
                b.insert(ino, Arc::downgrade(&id));
                Some(id)
            }
            Err(e) => {
                warn!("kernel passthrough unavailable ({e}); using the daemon's read/write path");
                self.disable_passthrough();
                None
            }
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> R<Vec<u8>> {
        let h = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match h.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> R<u32> {
        let h = self.handle(fh)?;
        h.file.write_all_at(data, offset).map_err(io_err)?;
        let mut tr = h.track.lock();
        tr.inc.write(offset, data);
        if !tr.dirty {
            drop(tr);
            let t = self.tree.lock();
            self.mark_dirty(&t, h.ino, &h.track);
        }
        u32::try_from(data.len()).map_err(|_| Errno::EINVAL)
    }

    /// A close(2) of a descriptor: hash soon, unless the release that normally follows does it.
    pub fn flush(&self, ino: u64, fh: u64) -> R<()> {
        let h = self.handle(fh)?;
        if h.writable && h.track.lock().dirty {
            let mut t = self.tree.lock();
            self.schedule_hash(&mut t, ino, Instant::now() + CLOSE_GRACE);
        }
        Ok(())
    }

    pub fn release(&self, ino: u64, fh: u64) -> R<()> {
        let Some(h) = self.handles.write().remove(&fh) else {
            return Err(Errno::EBADF);
        };
        let mut t = self.tree.lock();
        if h.writable {
            let mut tr = h.track.lock();
            tr.writers = tr.writers.saturating_sub(1);
            let hash_now = tr.writers == 0 && tr.dirty;
            drop(tr);
            if let Some(w) = h.writer_ino {
                self.writers.closed(w);
            }
            if hash_now {
                self.schedule_hash(&mut t, ino, Instant::now());
            }
        }
        t.drop_ref(ino, Ref::Open, 1);
        drop(t);
        drop(h);
        let mut b = self.backing.lock();
        if b.get(&ino).is_some_and(|w| w.strong_count() == 0) {
            b.remove(&ino);
        }
        Ok(())
    }

    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> R<()> {
        let h = self.handle(fh)?;
        if datasync {
            h.file.sync_data().map_err(io_err)?;
        } else {
            h.file.sync_all().map_err(io_err)?;
        }
        self.sync_journal()?;
        if h.writable && h.track.lock().dirty {
            let mut t = self.tree.lock();
            self.schedule_hash(&mut t, ino, Instant::now() + FSYNC_GRACE);
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> R<()> {
        let h = self.handle(fh)?;
        let (off, len) = (to_off(offset)?, to_off(length)?);
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::fallocate(h.file.as_raw_fd(), mode, off, len) };
        if r < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        self.contents_changed(&h);
        Ok(())
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> R<i64> {
        let h = self.handle(fh)?;
        // SAFETY: plain syscall; the handle's own position is never used for I/O (pread/pwrite).
        let r = unsafe { libc::lseek(h.file.as_raw_fd(), offset, whence) };
        if r < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        Ok(r)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> R<u32> {
        let (hi, ho) = (self.handle(fh_in)?, self.handle(fh_out)?);
        let (mut oi, mut oo) = (to_off(offset_in)?, to_off(offset_out)?);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: plain syscall on open descriptors with valid offset pointers.
        let n = unsafe {
            libc::copy_file_range(
                hi.file.as_raw_fd(),
                &mut oi,
                ho.file.as_raw_fd(),
                &mut oo,
                len,
                0,
            )
        };
        if n < 0 {
            return Err(io_err(io::Error::last_os_error()));
        }
        self.contents_changed(&ho);
        u32::try_from(n).map_err(|_| Errno::EINVAL)
    }

    /// Bytes changed in a way incremental hashing cannot follow.
    fn contents_changed(&self, h: &Handle) {
        h.track.lock().inc.invalidate();
        let t = self.tree.lock();
        self.mark_dirty(&t, h.ino, &h.track);
    }

    // ---- directories ----

    pub fn opendir(&self, ino: u64) -> R<u64> {
        let fd = self.node_fd(ino)?;
        let entries = local::list_dir(borrow(&fd)).map_err(io_err)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, entries);
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// Re-reads the listing when a reader starts over (rewinddir), so it sees new entries.
    fn dir_entries(&self, ino: u64, fh: u64, offset: u64) -> R<Vec<(u64, OsStrBuf, u8)>> {
        if offset == 0 {
            let fd = self.node_fd(ino)?;
            let fresh = local::list_dir(borrow(&fd)).map_err(io_err)?;
            self.dirs.lock().insert(fh, fresh);
        }
        let dirs = self.dirs.lock();
        let entries = dirs.get(&fh).ok_or(Errno::EBADF)?;
        // Offsets 1 and 2 are "." and ".."; entry i has offset i + 3.
        Ok(entries
            .iter()
            .enumerate()
            .skip((offset.saturating_sub(2)) as usize)
            .map(|(i, e)| (i as u64 + 3, e.name.clone(), e.kind))
            .collect())
    }

    /// Plain readdir: `add(ino, next_offset, kind, name)` returns true when the buffer is full.
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> R<()> {
        let parent = self.parent_of(ino);
        for (off, name, ino) in [(1, ".", ino), (2, "..", parent)] {
            if offset < off && add(ino, off, FileType::Directory, OsStr::new(name)) {
                return Ok(());
            }
        }
        for (off, name, kind) in self.dir_entries(ino, fh, offset)? {
            let child = self.tree.lock().child(ino, &name).unwrap_or(u64::MAX);
            if add(child, off, dirent_type(kind), &name) {
                break;
            }
        }
        Ok(())
    }

    /// readdirplus: every entry added counts as a lookup (except "." and "..").
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &OsStr, &FileAttr) -> bool,
    ) -> R<()> {
        let dots = [(1, ".", ino), (2, "..", self.parent_of(ino))];
        for (off, name, dino) in dots {
            if offset >= off {
                continue;
            }
            let a = self.getattr(dino, None)?;
            if add(off, OsStr::new(name), &a) {
                return Ok(());
            }
        }
        let dfd = self.node_fd(ino)?;
        for (off, name, _) in self.dir_entries(ino, fh, offset)? {
            let Ok(c) = local::component(&name) else {
                continue;
            };
            // Gone since the listing was taken: skip it, as a local readdir would.
            let Ok((fd, st)) = local::lookup(borrow(&dfd), &c) else {
                continue;
            };
            let child = self.tree.lock().insert(ino, &name, fd, &st, Ref::Lookup);
            if add(off, &name, &attr(child, &st)) {
                self.forget(child, 1);
                break;
            }
        }
        Ok(())
    }

    fn parent_of(&self, ino: u64) -> u64 {
        let t = self.tree.lock();
        t.get(ino)
            .and_then(|n| n.names.first().map(|(p, _)| *p))
            .unwrap_or(ROOT)
    }

    pub fn fsyncdir(&self, ino: u64) -> R<()> {
        let fd = self.node_fd(ino)?;
        let dir = local::reopen(borrow(&fd), libc::O_RDONLY | libc::O_DIRECTORY).map_err(io_err)?;
        dir.sync_all().map_err(io_err)?;
        self.sync_journal()
    }

    pub fn statfs(&self) -> R<libc::statvfs> {
        let fd = self.node_fd(ROOT)?;
        local::statfs(borrow(&fd)).map_err(io_err)
    }

    /// access(2) for the caller, from the inode's mode bits (used without default_permissions).
    pub fn access(&self, caller: &Caller, ino: u64, mask: i32) -> R<()> {
        let fd = self.node_fd(ino)?;
        let st = local::fstat(borrow(&fd)).map_err(io_err)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let mode = st.st_mode;
        let granted = if caller.uid == 0 {
            // Root may read and write anything, and execute what anyone may execute.
            let x = if mode & 0o111 != 0 || mode & libc::S_IFMT == libc::S_IFDIR {
                1
            } else {
                0
            };
            6 | x
        } else if caller.uid == st.st_uid {
            (mode >> 6) & 7
        } else if caller.gid == st.st_gid || local::groups_of(caller.pid).contains(&st.st_gid) {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if (mask as u32) & !granted & 7 != 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// Rewrites the journal without superseded records; returns its new size. Holds the tree
    /// lock throughout, so no record is appended between the read and the rewrite.
    pub fn compact_journal(&self) -> u64 {
        let _t = self.tree.lock();
        let dir = self.opts.state_dir.join(crate::statedir::JOURNAL);
        let result = Journal::read(&dir).and_then(|replay| {
            let live = crate::journal::coalesce(&replay.entries);
            if live.len() < replay.entries.len() {
                self.journal.compact(&live)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            warn!("journal compaction: {e}");
        }
        self.journal.size_bytes()
    }
}

type OsStrBuf = std::ffi::OsString;

fn to_off(v: u64) -> R<i64> {
    i64::try_from(v).map_err(|_| Errno::EINVAL)
}
