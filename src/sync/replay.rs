//! Renames replayed on the server in journal order: the planner's side (when, what to resend
//! when a replay cannot be done, what the manifest forgets or carries along); the remote
//! operations themselves are in `rename.rs`.

use super::*;

impl Inner {
    /// Replays a rename of mirrored paths once nothing at, beneath or above either path is in
    /// flight, retrying through outages: later records wait for it (they may depend on it).
    pub(super) fn replay_rename(
        &self,
        r: &RemoteRename,
        conn: &mut Option<Box<dyn Transport>>,
        done: &Receiver<Done>,
    ) {
        // An upload beneath either path would finish at its old name (its mark has moved to
        // the new one already): cut short, rather than stopping the whole mirror meanwhile.
        for (p, running) in &self.core.lock().running {
            if is_within(p, &r.from) || is_within(p, &r.to) {
                running.cancel.store(true, Ordering::Relaxed);
            }
        }
        // Work on a parent of either end must end first too: a removal of the target's parent
        // would undo the parents the replay makes, and forget what it put beneath them.
        while {
            let core = self.core.lock();
            core.plan.busy_around(&r.from) || core.plan.busy_around(&r.to)
        } {
            if let Ok(d) = done.recv_timeout(Duration::from_millis(100)) {
                self.finish(d);
            }
        }
        self.core.lock().replaying = Some(r.seq);
        self.replay_until_done(r, conn);
        self.core.lock().replaying = None;
    }

    pub(super) fn replay_until_done(
        &self,
        r: &RemoteRename,
        conn: &mut Option<Box<dyn Transport>>,
    ) {
        let ends = rename::Ends::of(r, &self.mirror.lock());
        loop {
            if self.core.lock().stopping {
                return;
            }
            let mut conflicts = Vec::new();
            let news = |dir: &[u8], news| self.dir_news(dir, news);
            let result = self.connection(conn).and_then(|t| {
                rename::replay(t.as_mut(), r, &ends, &self.mirror, &news, &mut conflicts)
            });
            self.kept_aside(&conflicts);
            let e = match result {
                Ok(rename::Replayed::Moved { again, replaced }) => {
                    self.move_litter(r);
                    self.audit(
                        "rename",
                        with_paths(
                            &[("from", &r.from), ("to", &r.to)],
                            json!({"exchange": r.exchange}),
                        ),
                    );
                    if let Some(aside) = replaced {
                        self.resend_replaced(&aside.dir, &aside.forgotten);
                    }
                    self.send_again(r, &ends, &again);
                    return self.mark_unmatched_beneath(r);
                }
                Ok(rename::Replayed::Resend) => return self.resend(r, &ends),
                Err(e) => e,
            };
            let wait = Self::connection_failure(&mut self.core.lock(), &e);
            // A flush waiting on this thread's progress must see the refusal now.
            self.cv.notify_all();
            let Some(wait) = wait else {
                warn!(
                    "remote rename {} -> {} failed ({e}); sending both anew instead",
                    crate::relpath::show(&r.from),
                    crate::relpath::show(&r.to)
                );
                return self.resend(r, &ends);
            };
            *conn = None;
            self.pause(wait);
        }
    }

    /// What stands locally beneath a directory just moved on the server and differs from what
    /// the manifest moved with it: work on it may have run before this rename was taken in,
    /// found the old path empty and done nothing (the engine lags behind the filesystem), and
    /// no mark is left to carry over.
    pub(super) fn mark_unmatched_beneath(&self, r: &RemoteRename) {
        let marks = self.unmatched_beneath(&r.to);
        let mut core = self.core.lock();
        for p in marks {
            core.plan.mark(&p, r.seq, Instant::now());
        }
    }

    /// Temp files left in a directory that was moved on the server moved with it.
    pub(super) fn move_litter(&self, r: &RemoteRename) {
        let mut core = self.core.lock();
        let moved: Vec<Vec<u8>> = core
            .litter
            .iter()
            .filter(|d| is_within(d, &r.from))
            .cloned()
            .collect();
        for d in moved {
            core.litter.remove(&d);
            core.litter.insert(reroot(&d, &r.from, &r.to));
        }
    }

    /// Conflict copies made outside a worker's reconcile: counted and audited like theirs.
    pub(super) fn kept_aside(&self, copies: &[Vec<u8>]) {
        for copy in copies {
            self.audit("conflict_kept", with_paths(&[("copy", copy)], json!({})));
        }
        self.core.lock().conflicts += copies.len() as u64;
    }

    /// A rename that could not be replayed remotely: what stands locally at both names is sent
    /// anew (the hashes the manifest held follow the files to their new names, so no Store need
    /// come), and what is left of ours at the old names goes.
    pub(super) fn resend(&self, r: &RemoteRename, ends: &rename::Ends) {
        self.seed_hashes(&ends.from, &r.from, &r.to);
        if r.exchange {
            self.seed_hashes(&ends.to, &r.to, &r.from);
        }
        let mut core = self.core.lock();
        for (p, _) in ends.from.iter().chain(&ends.to) {
            core.plan.mark(p, r.seq, Instant::now());
        }
        core.plan.mark_subtree(&r.to, r.seq);
        core.plan.mark_subtree(&r.from, r.seq);
    }

    /// After a directory moved on the server: the entries beneath it that the server did not
    /// hold as we put them (`again`, by their new names) are sent anew.
    pub(super) fn send_again(&self, r: &RemoteRename, ends: &rename::Ends, again: &[Vec<u8>]) {
        for new in again {
            let old = reroot(new, &r.to, &r.from);
            self.seed_hashes(&ends.from, &old, new);
            self.core.lock().plan.mark_subtree(new, r.seq);
        }
    }

    /// What stood in the way of a directory of ours (kept aside now: the server replaced it,
    /// or put something there) holds nothing of what the manifest said beneath it: all that
    /// stands there locally is sent anew.
    pub(super) fn forget_replaced(&self, dir: &[u8]) {
        let forgotten = forget_beneath(&self.mirror, dir);
        self.resend_replaced(dir, &forgotten);
    }

    /// The files the manifest held beneath `dir` (`forgotten`) are sent anew, with the hashes
    /// it held for them; so is everything that stands beneath `dir` locally.
    pub(super) fn resend_replaced(&self, dir: &[u8], forgotten: &[(Vec<u8>, Confirmed)]) {
        self.seed_hashes(forgotten, dir, dir);
        let mut core = self.core.lock();
        let since = core.plan.consumed() + 1;
        core.plan.mark_subtree(dir, since);
    }

    /// The hashes the manifest held for the files at and beneath `old` (`entries`) stand for
    /// them at and beneath `new` now, unless a newer Store came.
    pub(super) fn seed_hashes(&self, entries: &[(Vec<u8>, Confirmed)], old: &[u8], new: &[u8]) {
        let mut core = self.core.lock();
        for (p, c) in entries.iter().filter(|(p, _)| is_within(p, old)) {
            if let Confirmed::File(f) = c {
                let moved = reroot(p, old, new);
                if core.plan.hashes.get(&moved).is_none() {
                    core.plan.hashes.insert(moved, *f);
                }
            }
        }
    }
}

/// Forgets the manifest's entries strictly beneath `dir` (the directory's own entry, made anew
/// by ftpsync a moment ago, stays) and returns them.
pub(super) fn forget_beneath(mirror: &Mutex<Mirror>, dir: &[u8]) -> Vec<(Vec<u8>, Confirmed)> {
    let mut m = mirror.lock();
    let beneath: Vec<(Vec<u8>, Confirmed)> = m
        .manifest
        .subtree(dir)
        .filter(|(p, _)| p.as_slice() != dir)
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect();
    for (p, _) in &beneath {
        // One removal per topmost entry: it takes what is beneath it along.
        let topmost = !beneath.iter().any(|(a, _)| a != p && is_within(p, a));
        if topmost {
            if let Err(e) = m.manifest.remove(p) {
                error!("manifest: {e}");
            }
        }
    }
    beneath
}
