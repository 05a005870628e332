//! Test-only kit (compiled for the crate's unit tests only, never into the binary): the real
//! sync engine over the in-memory [`MockTransport`], fed by the real filesystem layer driven
//! without a kernel, with a temp backing directory, journal and manifest.
//!
//! [`Harness`] starts them as `run.rs` does (journal, manifest, `Fs`, start-up recovery, the
//! hasher thread, `Engine::start`), offers the operations `fuse.rs` would call, by path, and
//! `flush` as the control socket does it (hashes settled, then the engine's own wait). Every
//! connection the engine makes goes through a shared [`faults::Faults`] plan. `restart`
//! drops the engine, the filesystem and the journal and starts them again on the same state
//! dir and backing directory, as a new daemon would after the old one died.

pub mod faults;
mod model;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::fs::{Caller, Fs, ROOT};
use crate::journal::{Entry, Journal, Record};
use crate::local::SetTime;
use crate::mirror::Mirror;
use crate::remote::{MockNode, MockTransport, Transport};
use crate::sync::{Connector, Engine, Options};
use faults::Faults;

/// The engine's remote as the audit log and the manifest's binding name it.
const SERVER: &str = "sftp://mock@localhost/mirror";

const CALLER: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

/// What a harness's engine is started with.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub connections: usize,
    pub writeback_delay: Duration,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            connections: 2,
            writeback_delay: Duration::ZERO,
        }
    }
}

/// The journal's records as they were appended, and a wake-up for each.
#[derive(Default)]
struct Records {
    list: Mutex<Vec<Entry>>,
    cv: parking_lot::Condvar,
}

/// One daemon's worth of running parts: dropped and made again by `restart`.
struct Daemon {
    fs: Arc<Fs>,
    engine: Engine,
    journal: Arc<Journal>,
    mirror: Arc<Mutex<Mirror>>,
    hasher: Option<JoinHandle<()>>,
    /// Dropped to cut the engine off the journal: its planner then wakes at once to stop.
    cut: crossbeam_channel::Sender<()>,
    /// The journal's records on their way to the engine, when a test holds them back.
    feed: Arc<Mutex<Feed>>,
}

/// The engine's end of the journal: records pass at once, or wait in `held` while a test
/// makes the engine lag behind the filesystem.
struct Feed {
    tx: crossbeam_channel::Sender<Entry>,
    held: Option<std::collections::VecDeque<Entry>>,
}

impl Feed {
    fn pass(&mut self, e: Entry) -> bool {
        match &mut self.held {
            Some(q) => {
                q.push_back(e);
                true
            }
            None => self.tx.send(e).is_ok(),
        }
    }
}

pub struct Harness {
    /// The backing directory (`local/`) and the state dir (`state/`).
    dir: tempfile::TempDir,
    /// The server every connection talks to.
    pub server: MockTransport,
    /// What the connections fail.
    pub faults: Faults,
    setup: Setup,
    daemon: Option<Daemon>,
    /// Every journal record appended while the harness ran, across restarts.
    records: Arc<Records>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["local", "state"] {
            std::fs::create_dir(dir.path().join(sub)).expect("harness dirs");
        }
        let mut h = Harness {
            dir,
            server: MockTransport::new(),
            faults: Faults::default(),
            setup,
            daemon: None,
            records: Arc::default(),
        };
        h.start();
        h
    }

    pub fn local_dir(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&mut self) {
        let state = self.state_dir();
        let (journal, replay) = Journal::open(&state.join("journal")).expect("journal");
        let journal = Arc::new(journal);
        let mirror = Arc::new(Mutex::new(Mirror::open(&state).expect("manifest")));
        let (cut, cut_rx) = crossbeam_channel::bounded(0);
        let (tx, engine_feed) = crossbeam_channel::unbounded();
        let feed = Arc::new(Mutex::new(Feed { tx, held: None }));
        self.tee(journal.follow(), cut_rx, feed.clone());
        let root = crate::local::open_root(&self.local_dir()).expect("backing dir");
        let engine_root = root.try_clone().expect("dup root");
        let opts = crate::fs::Options {
            passthrough: false,
            state_dir: state,
        };
        let fs = Arc::new(Fs::new(root, journal.clone(), mirror.clone(), opts).expect("fs"));
        fs.recover(&replay.entries);
        let (server, faults) = (self.server.clone(), self.faults.clone());
        let connect: Connector = Arc::new(move || {
            faults.connect()?;
            Ok(Box::new(faults.wrap(server.clone())) as Box<dyn Transport>)
        });
        let engine = Engine::start(
            engine_root,
            journal.clone(),
            mirror.clone(),
            engine_feed,
            replay.entries,
            connect,
            Options {
                server: SERVER.into(),
                connections: self.setup.connections,
                writeback_delay: self.setup.writeback_delay,
                bwlimit: None,
                audit: None,
            },
        )
        .expect("engine");
        let hasher = {
            let fs = fs.clone();
            std::thread::spawn(move || fs.hash_worker())
        };
        self.daemon = Some(Daemon {
            fs,
            engine,
            journal,
            mirror,
            hasher: Some(hasher),
            cut,
            feed,
        });
    }

    /// Passes the journal's records on to the engine, keeping a copy (the journal has one
    /// follower), until the journal or `cut` goes.
    fn tee(
        &self,
        journal: crossbeam_channel::Receiver<Entry>,
        cut: crossbeam_channel::Receiver<()>,
        feed: Arc<Mutex<Feed>>,
    ) {
        let records = self.records.clone();
        std::thread::spawn(move || loop {
            crossbeam_channel::select! {
                recv(journal) -> e => {
                    let Ok(e) = e else { return };
                    records.list.lock().push(e.clone());
                    records.cv.notify_all();
                    if !feed.lock().pass(e) {
                        return;
                    }
                }
                recv(cut) -> _ => return,
            }
        });
    }

    /// From now on the engine hears of no journal record until `release`: it lags behind the
    /// filesystem (the local tree changes under work it plans from older records).
    pub fn hold_feed(&self) {
        self.daemon()
            .feed
            .lock()
            .held
            .get_or_insert_with(Default::default);
    }

    /// Lets `n` held records through (all of them, and the feed flow again, if None).
    pub fn release_feed(&self, n: Option<usize>) {
        let mut f = self.daemon().feed.lock();
        let Some(mut q) = f.held.take() else {
            return;
        };
        let all = n.is_none();
        let n = n.unwrap_or(q.len()).min(q.len());
        for e in q.drain(..n) {
            let _ = f.tx.send(e);
        }
        if !all {
            f.held = Some(q);
        }
    }

    /// Whether records are being held back from the engine.
    pub fn feed_held(&self) -> bool {
        self.daemon().feed.lock().held.is_some()
    }

    /// Waits until the engine took in every record fed to it and has nothing waiting or in
    /// flight, polling: the engine has no wait for that short of a flush, which also waits for
    /// the records held back.
    pub fn wait_engine_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            // Records still on their way from the journal are counted as fed until they are
            // held: looked at afresh each time.
            let fed = {
                let f = self.daemon().feed.lock();
                let held = f.held.as_ref().map_or(0, |q| q.len() as u64);
                self.daemon().journal.next_seq().saturating_sub(1 + held)
            };
            let s = self.status();
            if self.engine().consumed() >= fed && s.pending == 0 && s.in_flight == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the engine stays busy: {s:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the harness runs")
    }

    pub fn fs(&self) -> &Fs {
        &self.daemon().fs
    }

    pub fn engine(&self) -> &Engine {
        &self.daemon().engine
    }

    /// Stops the engine (nothing drained: what is left stays journaled) and the filesystem.
    fn stop(&mut self) {
        let Some(mut d) = self.daemon.take() else {
            return;
        };
        // What is journaled from now on is the next engine's to replay; the planner, cut off,
        // wakes at once to stop.
        drop(d.cut);
        d.feed.lock().tx = crossbeam_channel::bounded(0).0;
        d.engine.shutdown(Duration::ZERO);
        d.fs.stop_hashing();
        if let Some(h) = d.hasher.take() {
            h.join().expect("hasher thread");
        }
        d.journal.sync().expect("journal sync");
    }

    /// A new daemon on the same state dir, backing directory and server, without the old one
    /// draining first (what it had not done stays for the new one, as after a kill). Open file
    /// handles do not survive it.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// What `ftpsync flush` does: every closed file hashed, then every change journaled
    /// before confirmed on the server (or why not).
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        if !self.fs().settle(timeout) {
            return Err(format!(
                "{} files still being hashed",
                self.fs().pending_hashes()
            ));
        }
        self.engine()
            .flush(deadline.saturating_duration_since(Instant::now()))
    }

    /// The journal records appended so far, oldest first.
    pub fn records(&self) -> Vec<Record> {
        let last = self.daemon().journal.next_seq().saturating_sub(1);
        let mut list = self.records.list.lock();
        while list.last().map_or(0, |e| e.seq) < last {
            let passed = self.records.cv.wait_for(&mut list, Duration::from_secs(10));
            assert!(!passed.timed_out(), "journal records reach the harness");
        }
        list.iter().map(|e| e.record.clone()).collect()
    }

    /// The server's tree: path → entry (the root marker included).
    pub fn server_tree(&self) -> BTreeMap<Vec<u8>, MockNode> {
        self.server.nodes()
    }

    /// The server's file at `path`, if a file is there.
    pub fn server_file(&self, path: &str) -> Option<Vec<u8>> {
        match self.server.get(path.as_bytes()) {
            Some(MockNode::File { data, .. }) => Some(data),
            _ => None,
        }
    }

    /// What the mirror says of a path: `pending`, `uploading`, `confirmed`, `failed: ...`.
    pub fn state_of(&self, path: &str) -> Option<String> {
        self.daemon().mirror.lock().state_of(path.as_bytes())
    }

    /// What the manifest says the server holds.
    pub fn manifest(&self) -> Vec<(Vec<u8>, crate::mirror::Confirmed)> {
        let m = self.daemon().mirror.lock();
        m.manifest
            .iter()
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }

    /// The paths whose making the manifest says started and was never confirmed.
    pub fn intents(&self) -> Vec<Vec<u8>> {
        let m = self.daemon().mirror.lock();
        let mut paths: Vec<Vec<u8>> = m.manifest.intents().cloned().collect();
        paths.sort();
        paths
    }

    /// What a daemon killed mid-upload leaves: the upload of the local file at `path` intended
    /// in the manifest (as the engine records it before sending a byte) and landed on the
    /// server with the local bytes and mtime, its end never taken in.
    pub fn landed_unrecorded(&self, path: &str) {
        use std::os::unix::fs::MetadataExt;
        let local = self.local_path(path);
        let md = std::fs::symlink_metadata(&local).expect("the local file");
        let data = std::fs::read(&local).expect("the local file");
        let ts = |sec: i64, nsec: i64| crate::journal::Timestamp {
            sec,
            nsec: nsec as u32,
        };
        let meta = crate::mirror::FileMeta {
            size: md.len(),
            sha256: sha256(&data),
            mode: md.mode() & 0o7777,
            mtime: ts(md.mtime(), md.mtime_nsec()),
            ino: md.ino(),
            ctime: ts(md.ctime(), md.ctime_nsec()),
        };
        self.daemon()
            .mirror
            .lock()
            .manifest
            .intend(path.as_bytes(), crate::mirror::Confirmed::File(meta))
            .expect("intent");
        self.server.insert(
            path.as_bytes(),
            MockNode::File {
                data,
                mode: md.mode() & 0o777,
                atime: md.atime(),
                mtime: md.mtime(),
            },
        );
    }

    /// The engine's status (see doc/CONTRACTS.md).
    pub fn status(&self) -> crate::report::Mirror {
        self.engine().status()
    }

    // ---- the filesystem, by path, as the kernel would call it ----

    /// The inode of `path` (looked up component by component from the root).
    pub fn ino(&self, path: &str) -> crate::fs::R<u64> {
        let mut ino = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            ino = self.fs().lookup(ino, OsStr::new(c))?.ino.0;
        }
        Ok(ino)
    }

    fn parent_and_name<'a>(&self, path: &'a str) -> crate::fs::R<(u64, &'a OsStr)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok((self.ino(dir)?, OsStr::new(name)))
    }

    /// Creates (or truncates) `path` and opens it for writing: (inode, handle).
    pub fn create(&self, path: &str, mode: u32) -> crate::fs::R<(u64, u64)> {
        let (parent, name) = self.parent_and_name(path)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let (attr, opened) = self
            .fs()
            .create(&CALLER, parent, name, mode, flags, &no_backing)?;
        Ok((attr.ino.0, opened.fh))
    }

    /// Opens an existing file: (inode, handle).
    pub fn open(&self, path: &str, flags: i32) -> crate::fs::R<(u64, u64)> {
        let ino = self.ino(path)?;
        Ok((ino, self.fs().open(ino, flags, &no_backing)?.fh))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> crate::fs::R<()> {
        self.fs().write(fh, offset, data).map(drop)
    }

    /// close(2) and the release after it.
    pub fn close(&self, ino: u64, fh: u64) -> crate::fs::R<()> {
        self.fs().flush(ino, fh)?;
        self.fs().release(ino, fh)
    }

    /// Creates or overwrites `path` with `data` and closes it.
    pub fn write_file(&self, path: &str, data: &[u8]) -> crate::fs::R<()> {
        let (ino, fh) = self.create(path, 0o644)?;
        self.write(fh, 0, data)?;
        self.close(ino, fh)
    }

    /// Writes `data` at `offset` of an existing file and closes it.
    pub fn pwrite(&self, path: &str, offset: u64, data: &[u8]) -> crate::fs::R<()> {
        let (ino, fh) = self.open(path, libc::O_WRONLY)?;
        self.write(fh, offset, data)?;
        self.close(ino, fh)
    }

    pub fn append(&self, path: &str, data: &[u8]) -> crate::fs::R<()> {
        let (ino, fh) = self.open(path, libc::O_WRONLY | libc::O_APPEND)?;
        let size = self.fs().getattr(ino, Some(fh))?.size;
        self.write(fh, size, data)?;
        self.close(ino, fh)
    }

    pub fn truncate(&self, path: &str, size: u64) -> crate::fs::R<()> {
        let ino = self.ino(path)?;
        self.fs()
            .setattr(ino, None, None, None, Some(size), None, None, None)
            .map(drop)
    }

    pub fn chmod(&self, path: &str, mode: u32) -> crate::fs::R<()> {
        let ino = self.ino(path)?;
        self.fs()
            .setattr(ino, Some(mode), None, None, None, None, None, None)
            .map(drop)
    }

    /// Sets the mtime (whole seconds).
    pub fn touch(&self, path: &str, sec: i64) -> crate::fs::R<()> {
        let ino = self.ino(path)?;
        let t = SetTime::At(sec, 0);
        self.fs()
            .setattr(ino, None, None, None, None, None, Some(t), None)
            .map(drop)
    }

    pub fn mkdir(&self, path: &str, mode: u32) -> crate::fs::R<()> {
        let (parent, name) = self.parent_and_name(path)?;
        self.fs().mkdir(&CALLER, parent, name, mode).map(drop)
    }

    pub fn rmdir(&self, path: &str) -> crate::fs::R<()> {
        let (parent, name) = self.parent_and_name(path)?;
        self.fs().rmdir(parent, name)
    }

    pub fn unlink(&self, path: &str) -> crate::fs::R<()> {
        let (parent, name) = self.parent_and_name(path)?;
        self.fs().unlink(parent, name)
    }

    pub fn symlink(&self, path: &str, target: &str) -> crate::fs::R<()> {
        let (parent, name) = self.parent_and_name(path)?;
        self.fs()
            .symlink(&CALLER, parent, name, OsStr::new(target))
            .map(drop)
    }

    pub fn rename(&self, from: &str, to: &str) -> crate::fs::R<()> {
        let (p, n) = self.parent_and_name(from)?;
        let (np, nn) = self.parent_and_name(to)?;
        self.fs().rename(p, n, np, nn, 0)
    }

    /// `renameat2(.., RENAME_EXCHANGE)`: the two entries swap places.
    pub fn exchange(&self, a: &str, b: &str) -> crate::fs::R<()> {
        let (p, n) = self.parent_and_name(a)?;
        let (np, nn) = self.parent_and_name(b)?;
        self.fs().rename(p, n, np, nn, libc::RENAME_EXCHANGE)
    }

    /// The backing directory's file at `path`, read behind the filesystem's back.
    pub fn local_file(&self, path: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.local_dir().join(path))
    }

    /// Where the backing directory's `path` is.
    pub fn local_path(&self, path: &str) -> PathBuf {
        self.local_dir()
            .join(Path::new(OsStr::from_bytes(path.as_bytes())))
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.faults.clear();
        self.faults.resume();
        self.stop();
    }
}

/// Kernel passthrough is never offered to the harness (`Options::passthrough` is off).
fn no_backing(_: &std::fs::File) -> std::io::Result<fuser::BackingId> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}
