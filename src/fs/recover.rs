//! What start-up must hash again: files the journal left dirty (created or opened for writing,
//! with no Store after: a daemon killed between a close and its hash), and files whose
//! contents no longer match their last Store (changed while unmounted, or never seen).

use super::hash_on_close::hash_stable;
use super::hash_on_close::store_record;
use super::{io_err, Fs, ROOT};
use crate::journal::{Entry, Record, Timestamp};
use crate::local::{self, borrow};
use crate::relpath::show;
use crate::replay::PathMap;
use log::warn;
use parking_lot::Mutex;
use std::os::fd::OwnedFd;

/// What the journal last said about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// Its contents may have changed since the last Store (or it never had one).
    Dirty,
    /// Hashed when the file looked like this.
    Stored(Seen),
    /// Hashed, then its metadata changed through the mount: ctime moved with no new contents.
    Touched(Seen),
}

/// What a scan can see of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub ino: u64,
}

impl Seen {
    pub fn of(st: &crate::local::Stat) -> Seen {
        let ts = |sec, nsec: i64| Timestamp {
            sec,
            nsec: u32::try_from(nsec).unwrap_or(0),
        };
        Seen {
            size: st.st_size as u64,
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
        }
    }
}

/// The journal replayed: each path (as it is after the whole log) and what is known of it.
pub fn known_files(baseline: PathMap<Known>, entries: &[Entry]) -> PathMap<Known> {
    let mut m = baseline;
    for e in entries {
        match &e.record {
            Record::Create { path, .. } | Record::Dirty { path } => {
                m.insert(path.clone(), Known::Dirty);
            }
            Record::Store {
                path,
                size,
                mtime,
                ctime,
                ino,
                ..
            } => {
                let seen = Seen {
                    size: *size,
                    mtime: *mtime,
                    ctime: *ctime,
                    ino: *ino,
                };
                m.insert(path.clone(), Known::Stored(seen));
            }
            // Metadata changed through the mount after the hash: ctime moved, contents did not.
            Record::SetAttr { path, mtime, .. } => touch(&mut m, path, *mtime),
            Record::SetXattr { path, .. } | Record::RemoveXattr { path, .. } => {
                touch(&mut m, path, None)
            }

            other => m.follow(other),
        }
    }
    m
}

fn touch(m: &mut PathMap<Known>, path: &[u8], mtime: Option<Timestamp>) {
    if let Some(Known::Stored(mut seen) | Known::Touched(mut seen)) = m.get(path).copied() {
        seen.mtime = mtime.unwrap_or(seen.mtime);
        m.insert(path.to_vec(), Known::Touched(seen));
    }
}

/// Whether a file found on disk must be hashed again (a renamed file's ctime moved too: it is
/// hashed once more, which costs a read and loses nothing).
pub fn needs_hash(known: Option<&Known>, now: &Seen) -> bool {
    match known {
        Some(Known::Stored(then)) => then != now,
        Some(Known::Touched(then)) => {
            (then.size, then.mtime, then.ino) != (now.size, now.mtime, now.ino)
        }
        _ => true,
    }
}

impl Fs {
    /// Before the mount goes live: hashes every regular file whose contents the journal does
    /// not vouch for (left dirty by a killed daemon, changed while unmounted, or never seen).
    /// Returns how many were hashed.
    pub fn recover(&self, entries: &[crate::journal::Entry]) -> usize {
        let known = known_files(self.confirmed_baseline(), entries);
        let Ok(root) = self
            .node_fd(ROOT)
            .and_then(|r| r.try_clone().map_err(io_err))
        else {
            return 0;
        };
        let mut hashed = 0;
        for found in local::walk(root, Vec::new()) {
            let e = match found {
                Ok(e) => e,
                Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => {
                    warn!("start-up scan: {}: {}", show(&e.path), e.error);
                    continue;
                }
            };
            if e.st.st_mode & libc::S_IFMT == libc::S_IFREG
                && needs_hash(known.get(&e.path), &Seen::of(&e.st))
            {
                hashed += usize::from(self.store_scanned(&e.fd, e.path));
            }
        }
        hashed
    }

    /// What the manifest vouches for: files confirmed on the remote, as they looked when hashed.
    fn confirmed_baseline(&self) -> crate::replay::PathMap<Known> {
        let mut base = crate::replay::PathMap::default();
        for (path, c) in self.mirror.lock().manifest.iter() {
            if let Some(f) = c.file() {
                let seen = Seen {
                    size: f.size,
                    mtime: f.mtime,
                    ctime: f.ctime,
                    ino: f.ino,
                };
                base.insert(path.clone(), Known::Stored(seen));
            }
        }
        base
    }

    /// Hashes a file found by the start-up scan and journals its Store.
    fn store_scanned(&self, fd: &OwnedFd, path: Vec<u8>) -> bool {
        let result =
            local::reopen_quietly(borrow(fd)).and_then(|f| hash_stable(&f, &Mutex::default()));
        match result {
            Ok(Some((sha256, st))) => {
                let t = self.tree.lock();
                self.log(&t, store_record(path, sha256, &st));
                true
            }
            Ok(None) => {
                warn!("{} changed while being hashed at start-up", show(&path));
                false
            }
            Err(e) => {
                warn!("cannot hash {} at start-up: {e}", show(&path));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn t(sec: i64) -> Timestamp {
        Timestamp { sec, nsec: 0 }
    }

    fn seen(size: u64, mtime: i64, ctime: i64) -> Seen {
        Seen {
            size,
            mtime: t(mtime),
            ctime: t(ctime),
            ino: 7,
        }
    }

    fn run(records: Vec<Record>) -> PathMap<Known> {
        let entries: Vec<Entry> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| Entry {
                seq: i as u64 + 1,
                record,
            })
            .collect();
        known_files(PathMap::default(), &entries)
    }

    fn store(path: &str, s: Seen) -> Record {
        Record::Store {
            path: p(path),
            size: s.size,
            sha256: [0; 32],
            mtime: s.mtime,
            mode: 0o644,
            ctime: s.ctime,
            ino: s.ino,
        }
    }

    fn utimens(path: &str, mtime: i64) -> Record {
        Record::SetAttr {
            path: p(path),
            mode: None,
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: Some(t(mtime)),
        }
    }

    #[test]
    fn dirty_until_stored_and_dirty_again_after() {
        let m = run(vec![
            Record::Create {
                path: p("a"),
                mode: 0o644,
            },
            store("a", seen(3, 10, 10)),
            Record::Dirty { path: p("a") },
            Record::Create {
                path: p("b"),
                mode: 0o644,
            },
            store("b", seen(1, 5, 5)),
        ]);
        assert_eq!(m.get(b"a"), Some(&Known::Dirty));
        assert!(!needs_hash(m.get(b"b"), &seen(1, 5, 5)));
        assert!(needs_hash(m.get(b"b"), &seen(2, 5, 5)), "size changed");
        assert!(needs_hash(m.get(b"b"), &seen(1, 6, 5)), "mtime changed");
        assert!(
            needs_hash(m.get(b"b"), &seen(1, 5, 9)),
            "rewritten, mtime put back"
        );
        assert!(needs_hash(m.get(b"c"), &seen(0, 0, 0)), "never seen");
    }

    #[test]
    fn renames_carry_what_is_known_and_metadata_changes_forgive_ctime() {
        let m = run(vec![
            store("d/x", seen(4, 1, 1)),
            Record::Rename {
                from: p("d"),
                to: p("e"),
                flags: 0,
            },
            utimens("e/x", 99),
        ]);
        assert!(!needs_hash(m.get(b"e/x"), &seen(4, 99, 123)));
        assert!(needs_hash(m.get(b"e/x"), &seen(4, 98, 123)));
        assert!(m.get(b"d/x").is_none());
    }
}
