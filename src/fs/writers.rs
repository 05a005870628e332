//! Which files are open for writing right now: a flush cannot cover them (their current bytes
//! have no hash yet), so `ftpsync flush` and `status` name them.

use super::Fs;
use std::collections::BTreeSet;

/// How many paths a listing names; its count covers them all.
pub const OPEN_LISTED: usize = 100;

/// The paths of the files open for writing: how many, and the first in byte order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenForWriting {
    pub count: usize,
    pub paths: Vec<Vec<u8>>,
}

impl Fs {
    /// Every name of every file with a handle open for writing (a hard-linked file has several;
    /// an unlinked one has none and is not mirrored), at most `limit` of them listed. Costs
    /// one pass over the open handles: their number is bounded by the descriptors the kernel
    /// lets applications hold, not by the size of the tree.
    pub fn open_for_writing(&self, limit: usize) -> OpenForWriting {
        // The handles lock is let go before the tree lock is taken: no order to keep.
        let inos: BTreeSet<u64> = self
            .handles
            .read()
            .values()
            .filter(|h| h.writable)
            .map(|h| h.ino)
            .collect();
        let t = self.tree.lock();
        let mut paths: Vec<Vec<u8>> = inos.into_iter().flat_map(|ino| t.paths(ino)).collect();
        drop(t);
        paths.sort_unstable();
        let count = paths.len();
        paths.truncate(limit);
        OpenForWriting { count, paths }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Caller, Options, Register, ROOT};
    use crate::journal::Journal;
    use crate::local;
    use crate::mirror::Mirror;
    use parking_lot::Mutex;
    use std::ffi::OsStr;
    use std::sync::Arc;

    fn fs_in(dir: &std::path::Path) -> Fs {
        let (local_dir, state) = (dir.join("local"), dir.join("state"));
        std::fs::create_dir(&local_dir).unwrap();
        std::fs::create_dir(&state).unwrap();
        let root = local::open_root(&local_dir).unwrap();
        let (journal, _) = Journal::open(&state.join(crate::statedir::JOURNAL)).unwrap();
        let mirror = Mirror::open(&state).unwrap();
        let opts = Options {
            passthrough: false,
            state_dir: state,
        };
        Fs::new(root, Arc::new(journal), Arc::new(Mutex::new(mirror)), opts).unwrap()
    }

    fn me() -> Caller {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Caller {
            uid,
            gid,
            pid: std::process::id(),
        }
    }

    const NO_PASSTHROUGH: Register<'static> = &|_| Err(std::io::Error::other("not wanted"));

    fn create(fs: &Fs, parent: u64, name: &str, flags: i32) -> (u64, u64) {
        let (attr, opened) = fs
            .create(
                &me(),
                parent,
                OsStr::new(name),
                0o644,
                flags,
                NO_PASSTHROUGH,
            )
            .unwrap();
        (attr.ino.0, opened.fh)
    }

    fn listed(fs: &Fs, limit: usize) -> (usize, Vec<String>) {
        let o = fs.open_for_writing(limit);
        let names = o.paths.iter().map(|p| crate::relpath::show(p)).collect();
        (o.count, names)
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_the_names_of_files_open_for_writing_as_they_are_now() {
        let dir = tempfile::tempdir().unwrap();
        let fs = fs_in(dir.path());
        let d = fs.mkdir(&me(), ROOT, OsStr::new("d"), 0o755).unwrap().ino.0;
        let (a, fa) = create(&fs, d, "a", libc::O_WRONLY);
        let (_, fb) = create(&fs, ROOT, "b", libc::O_RDWR);
        let (c, fc) = create(&fs, ROOT, "c", libc::O_WRONLY);
        fs.release(c, fc).unwrap();
        let read_only = fs.open(c, libc::O_RDONLY, NO_PASSTHROUGH).unwrap().fh;
        assert_eq!(listed(&fs, OPEN_LISTED), (2, names(&["b", "d/a"])));
        assert_eq!(
            listed(&fs, 1),
            (2, names(&["b"])),
            "the count covers the unlisted"
        );

        fs.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"), 0)
            .unwrap();
        fs.link(a, ROOT, OsStr::new("a2")).unwrap();
        assert_eq!(listed(&fs, OPEN_LISTED), (3, names(&["a2", "b", "e/a"])));

        fs.unlink(ROOT, OsStr::new("a2")).unwrap();
        fs.unlink(d, OsStr::new("a")).unwrap();
        assert_eq!(
            listed(&fs, OPEN_LISTED),
            (1, names(&["b"])),
            "an unlinked file is not mirrored: nothing to name"
        );
        for (ino, fh) in [(a, fa), (c, read_only)] {
            fs.release(ino, fh).unwrap();
        }
        let b = fs.lookup(ROOT, OsStr::new("b")).unwrap().ino.0;
        fs.release(b, fb).unwrap();
        assert_eq!(listed(&fs, OPEN_LISTED), (0, names(&[])));
    }
}
