//! Hashing on close: one worker takes closed files off the queue, hashes them (from the
//! incremental state when it saw every byte, else by reading), and journals a Store; files
//! written through passthrough are looked at again later, since their writes bypass us.

use super::*;

impl Fs {
    /// Runs hash jobs until `stop_hashing`; one thread is enough (SHA-256 runs near disk speed).
    pub fn hash_worker(&self) {
        while let Some(ino) = self.hashq.next() {
            self.hash_one(ino);
            self.tree.lock().drop_ref(ino, Ref::Pin, 1);
            self.hashq.done();
        }
    }

    fn hash_one(&self, ino: u64) {
        let (fd, track) = match self.node(ino) {
            Ok((fd, track, libc::S_IFREG)) => (fd, track),
            _ => return,
        };
        let file = match local::reopen_quietly(borrow(&fd)) {
            Ok(f) => f,
            Err(e) => return warn!("cannot open inode {ino} to hash it: {e}"),
        };
        match hash_stable(&file, &track) {
            Ok(Some((sha, st))) => self.store(ino, &track, sha, &st),
            // Changed while read: hash again once it has had a moment to settle.
            Ok(None) => {
                self.schedule_hash(&mut self.tree.lock(), ino, Instant::now() + CLOSE_GRACE)
            }
            Err(e) => warn!("cannot hash inode {ino}: {e}"),
        }
    }

    /// Journals a file's hash under each of its names (hard links share contents).
    fn store(&self, ino: u64, track: &Mutex<Track>, sha256: Sha256Hash, st: &local::Stat) {
        let mut t = self.tree.lock();
        let paths = t.paths(ino);
        if paths.is_empty() {
            return; // unlinked: nothing to mirror
        }
        let mut tr = track.lock();
        // Still open for writing: what we hashed may not be the final contents.
        let still_open = tr.writers > 0;
        let watch = !still_open && std::mem::take(&mut tr.passthrough);
        if !still_open {
            tr.dirty = false;
        }
        drop(tr);
        for path in paths {
            self.log(&t, store_record(path.clone(), sha256, st));
            if still_open {
                self.log(&t, Record::Dirty { path });
            }
        }
        if watch {
            self.watch_mapped(&mut t, ino, st);
        }
    }

    /// Keeps an eye on a file written through passthrough after its hash: writes through a
    /// mapping that outlived the release reach the backing file without telling us.
    fn watch_mapped(&self, t: &mut Tree, ino: u64, st: &local::Stat) {
        let entry = Recheck {
            version: version(st),
            next: Instant::now() + RECHECK_AFTER[0],
            step: 1,
        };
        if self.recheck.lock().insert(ino, entry).is_none() {
            t.take(ino, Ref::Pin);
        }
    }

    /// Re-stats watched files that are due (`all`: every one, without advancing its schedule)
    /// and hashes again those that changed.
    pub fn recheck_mapped(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<(u64, Version)> = self
            .recheck
            .lock()
            .iter()
            .filter(|(_, e)| all || e.next <= now)
            .map(|(ino, e)| (*ino, e.version))
            .collect();
        for (ino, seen) in due {
            let mut t = self.tree.lock();
            let track = t.get(ino).map(|n| n.track.clone());
            let node = track.and_then(|tr| t.fd(ino).ok().map(|fd| (fd, tr)));
            let changed = node
                .as_ref()
                .map(|(fd, _)| local::fstat(borrow(fd)).is_ok_and(|st| version(&st) != seen));
            let mut r = self.recheck.lock();
            let done = match (changed, r.get_mut(&ino)) {
                (Some(false), Some(e)) if e.step < RECHECK_AFTER.len() => {
                    if !all {
                        e.next = now + RECHECK_AFTER[e.step];
                        e.step += 1;
                    }
                    false
                }
                (Some(false), Some(_)) if all => false,
                _ => true,
            };
            if !done {
                continue;
            }
            r.remove(&ino);
            drop(r);
            if let (Some(true), Some((_, track))) = (changed, node) {
                self.mark_dirty(&t, ino, &track);
                self.schedule_hash(&mut t, ino, now);
            }
            t.drop_ref(ino, Ref::Pin, 1);
        }
    }

    /// Waits until every scheduled hash is done and journaled durably.
    pub fn settle(&self, timeout: Duration) -> bool {
        self.recheck_mapped(true);
        self.hashq.settle(timeout) && self.journal.sync().is_ok()
    }

    pub fn pending_hashes(&self) -> usize {
        self.hashq.len()
    }

    pub fn stop_hashing(&self) {
        self.hashq.stop();
    }
}

pub(super) fn store_record(path: Vec<u8>, sha256: Sha256Hash, st: &local::Stat) -> Record {
    Record::Store {
        path,
        size: st.st_size as u64,
        sha256,
        mtime: stamp(st.st_mtime, st.st_mtime_nsec),
        mode: st.st_mode & 0o7777,
        ctime: stamp(st.st_ctime, st.st_ctime_nsec),
        ino: st.st_ino,
    }
}

/// Hashes a file, from the incremental state when it saw every byte, else by reading it.
/// None when the file changed while being read.
pub(super) fn hash_stable(
    file: &File,
    track: &Mutex<Track>,
) -> io::Result<Option<(Sha256Hash, local::Stat)>> {
    let before = local::fstat(file.as_fd())?;
    if let Some(sha) = track.lock().inc.finish(before.st_size as u64) {
        return Ok(Some((sha, before)));
    }
    let (sha, n) = hash::hash_file(file)?;
    let after = local::fstat(file.as_fd())?;
    if version(&before) != version(&after) || n != after.st_size as u64 {
        return Ok(None);
    }
    Ok(Some((sha, after)))
}
