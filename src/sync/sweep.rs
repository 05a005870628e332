//! ftpsync's own leftovers on the server: temp files of uploads a lost connection or a kill cut,
//! swept once nothing is in flight, and the start-up survey that also reports what the server
//! holds that ftpsync did not put there.

use super::*;

impl Inner {
    /// Litter to sweep, nothing in flight (no upload's temp file is then alive), and no
    /// reconnect backoff or refusal to wait out.
    pub(super) fn litter_due(&self) -> bool {
        let core = self.core.lock();
        !core.litter.is_empty()
            && core.plan.in_flight() == 0
            && core.halted.is_none()
            && core.offline_until.is_none_or(|t| t <= Instant::now())
    }

    /// A directory that cannot be swept (unreadable, or no directory any more) is given up
    /// alone: the others are swept all the same. A lost connection puts back what is left.
    pub(super) fn sweep_litter(&self, conn: &mut Option<Box<dyn Transport>>) {
        // The directories stay listed until swept: a flush waits for the sweep to end.
        let mut dirs = self.core.lock().litter.clone();
        let swept = self.connection(conn).and_then(|t| {
            while let Some(d) = dirs.pop_first() {
                match self.sweep_dir(t.as_mut(), &d) {
                    Ok(()) => {}
                    Err(e) if e.kind().is_connection_wide() => {
                        dirs.insert(d);
                        return Err(e);
                    }
                    Err(e) => warn!(
                        "leftover temporary files not swept in {}: {e}",
                        crate::relpath::show(&d)
                    ),
                }
            }
            Ok(())
        });
        let mut core = self.core.lock();
        // What was swept (or given up) goes; what is left waits for the connection.
        core.litter.retain(|d| dirs.contains(d));
        match swept {
            Ok(()) => {
                core.offline_until = None;
                core.offline_failures = 0;
            }
            Err(e) => {
                if Self::connection_failure(&mut core, &e).is_some() {
                    *conn = None;
                } else {
                    warn!("leftover temporary files not swept: {e}");
                    core.litter.clear();
                }
            }
        }
        self.cv.notify_all();
    }

    /// Removes the temp files (and symlinks) in `dir` that no upload of ours is writing (none
    /// is in flight) and that are no user's file of that name.
    pub(super) fn sweep_dir(&self, t: &mut dyn Transport, dir: &[u8]) -> Result<(), RemoteError> {
        let entries = match t.list(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for (name, kind) in entries {
            let path = child_path(dir, &name);
            // A symlink is made under a temp name too (unlinking one never follows it).
            let swept = matches!(
                kind,
                crate::remote::FileKind::File | crate::remote::FileKind::Symlink
            );
            if swept && self.is_litter(&name, &path) {
                match t.remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A temp-named entry that is neither mirrored nor a local file of that name (a user's own
    /// file may have a temp-like name: it is mirrored, never swept).
    pub(super) fn is_litter(&self, name: &[u8], path: &[u8]) -> bool {
        crate::remote::path::is_temp_name(name)
            && self.mirror.lock().manifest.get(path).is_none()
            && local::lookup_path(borrow(&self.root), path).is_err()
    }

    /// Lists the remote directories we manage and removes the temporary files that interrupted
    /// uploads left there (called only while nothing is in flight: then no temp name is an
    /// upload under way). At start-up (`report`), also reports what is there that we did not
    /// put there. That is left alone: the local side is authoritative, but nothing is deleted
    /// that ftpsync did not create.
    pub(super) fn survey_remote(&self, conn: &mut Option<Box<dyn Transport>>, report: bool) {
        let dirs: Vec<Vec<u8>> = std::iter::once(Vec::new())
            .chain(
                self.mirror
                    .lock()
                    .manifest
                    .iter()
                    .filter(|(_, c)| matches!(c, Confirmed::Dir { .. }))
                    .map(|(p, _)| p.clone()),
            )
            .collect();
        let t = match self.connection(conn) {
            Ok(t) => t,
            Err(e) => return info!("remote directories not surveyed: {e}"),
        };
        let mut found = Vec::new();
        let mut swept = 0;
        for dir in dirs {
            let entries = match t.list(&dir) {
                Ok(e) => e,
                Err(e) => return info!("remote directories not surveyed: {e}"),
            };
            for (name, kind) in entries {
                let path = child_path(&dir, &name);
                // Probes make their directories in the root only, and under their own name: a
                // directory elsewhere whose name looks like a temp is the server's.
                let probe_dir =
                    dir.is_empty() && name.starts_with(&crate::remote::path::temp_prefix(b"probe"));
                if self.is_litter(&name, &path)
                    && (kind != crate::remote::FileKind::Dir || probe_dir)
                {
                    let removed = match kind {
                        // A symlink is made under a temp name too (unlinking one never
                        // follows it).
                        crate::remote::FileKind::File | crate::remote::FileKind::Symlink => {
                            t.remove_file(&path).is_ok()
                        }
                        // A capability probe's directory, left by a daemon killed while
                        // connecting: only at start-up, when no other connection probes.
                        crate::remote::FileKind::Dir if report => remove_tree(t.as_mut(), &path),
                        _ => false,
                    };
                    swept += usize::from(removed);
                    continue;
                }
                let ours = self.mirror.lock().manifest.get(&path).is_some()
                    || local::lookup_path(borrow(&self.root), &path).is_ok()
                    || crate::remote::path::is_conflict_name(&name);
                if report && !ours {
                    found.push(path);
                }
            }
        }
        if swept > 0 {
            info!("removed {swept} temporary files that interrupted uploads left on the remote");
        }
        if found.is_empty() {
            return;
        }
        let shown: Vec<String> = found
            .iter()
            .take(10)
            .map(|p| crate::relpath::show(p))
            .collect();
        warn!(
            "{} remote entries that ftpsync did not put there are left alone: {}{}",
            found.len(),
            shown.join(", "),
            if found.len() > 10 { ", ..." } else { "" }
        );
        found.truncate(100);
        self.core.lock().remote_only = found;
    }
}

/// Removes a directory of ftpsync's own and what it holds (files and links only); says
/// whether it went.
pub(super) fn remove_tree(t: &mut dyn Transport, dir: &[u8]) -> bool {
    let entries = t.list(dir).unwrap_or_default();
    for (name, kind) in entries {
        if kind != crate::remote::FileKind::Dir {
            let _ = t.remove_file(&child_path(dir, &name));
        }
    }
    t.remove_dir(dir).is_ok()
}
