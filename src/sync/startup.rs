//! The local tree against the manifest: at start-up over the whole tree (so even changes whose
//! journal records were lost converge), and beneath a subtree a rename or a mark covers.

use super::*;

impl Inner {
    /// Start-up reconciliation: marks every path where the local tree and the manifest
    /// disagree, so even changes whose journal records were lost converge.
    pub(super) fn scan_local(&self) {
        let since = self.core.lock().plan.consumed() + 1;
        let marks = self.unmatched_beneath(&[]);
        if !marks.is_empty() {
            info!(
                "start-up reconciliation: {} paths differ from the remote's manifest",
                marks.len()
            );
        }
        let mut core = self.core.lock();
        for p in marks {
            core.plan.mark(&p, since, Instant::now());
        }
    }

    /// The paths at and beneath `top` ("" for the whole tree) where the local tree and the
    /// manifest disagree.
    pub(super) fn unmatched_beneath(&self, top: &[u8]) -> Vec<Vec<u8>> {
        let mut seen = std::collections::HashSet::new();
        let mut marks = Vec::new();
        let mirror = self.mirror.lock();
        let start = if top.is_empty() {
            self.root.try_clone().ok()
        } else {
            local::lookup_path(borrow(&self.root), top)
                .ok()
                .and_then(|(fd, st)| {
                    if !matches_manifest(mirror.manifest.get(top), &fd, &st) {
                        marks.push(top.to_vec());
                    }
                    seen.insert(top.to_vec());
                    (st.st_mode & libc::S_IFMT == libc::S_IFDIR).then_some(fd)
                })
        };
        // An entry that cannot be read now is left to its journal records.
        for e in start
            .into_iter()
            .flat_map(|fd| local::walk(fd, top.to_vec()).flatten())
        {
            if !matches_manifest(mirror.manifest.get(&e.path), &e.fd, &e.st) {
                marks.push(e.path.clone());
            }
            seen.insert(e.path);
        }
        marks.extend(
            mirror
                .manifest
                .subtree(top)
                .filter(|(p, _)| !seen.contains(*p))
                .map(|(p, _)| p.clone()),
        );
        marks
    }

    /// A mark covering a subtree is being worked on: everything beneath `root` locally now is
    /// marked too (its work waits for the root's).
    pub(super) fn mark_local_beneath(&self, root: &[u8], seq: u64) {
        let Ok((fd, st)) = local::lookup_path(borrow(&self.root), root) else {
            return;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return;
        }
        // What cannot be read now is marked all the same: its work will find out.
        let paths: Vec<RelPath> = local::walk(fd, root.to_vec())
            .map(|found| found.map_or_else(|e| e.path, |e| e.path))
            .filter(|p| p != root)
            .collect();
        let mut core = self.core.lock();
        for p in &paths {
            core.plan.mark(p, seq, Instant::now());
        }
    }
}

/// Whether the manifest already describes this local entry (size and mtime for files).
pub(super) fn matches_manifest(c: Option<&Confirmed>, fd: &OwnedFd, st: &local::Stat) -> bool {
    let mode = st.st_mode & 0o7777;
    match (c, st.st_mode & libc::S_IFMT) {
        (Some(Confirmed::File(f)), libc::S_IFREG) => {
            f.size == st.st_size as u64
                && f.mtime.sec == st.st_mtime
                && i64::from(f.mtime.nsec) == st.st_mtime_nsec
                && f.mode == mode
        }
        (Some(Confirmed::Dir { mode: m }), libc::S_IFDIR) => *m == mode,
        (Some(Confirmed::Symlink { target }), libc::S_IFLNK) => local::readlink(borrow(fd))
            .is_ok_and(|t| {
                std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()) == target.as_slice()
            }),
        // FIFOs and devices are not mirrored: nothing to do.
        (None, libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK) => true,
        _ => false,
    }
}
