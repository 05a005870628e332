//! The planner's state: which paths must be made equal on the remote, since which journal
//! record, and when; the latest hash of every file; the renames to replay remotely.
//!
//! The journal says *which* paths changed; the local tree says what they are *now*. A dirty
//! path is reconciled to its current local state, so many changes to one path cost one
//! upload, a create then delete costs nothing, and replaying any suffix of the journal after a
//! crash converges. Only renames are replayed as operations (so a moved file or tree is not
//! sent again), in journal order, when nothing beneath them is in flight.

use crate::journal::{Entry, Record};
use crate::mirror::{Confirmed, FileMeta, Manifest};
use crate::relpath::{is_within, reroot, take_subtree};
use crate::replay::PathMap;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The oldest journal record this mark stands for: the checkpoint stays below it.
    since: u64,
    /// When the oldest change this mark stands for was seen (by this run of the daemon).
    marked: Instant,
    due: Instant,
    attempts: u32,
    /// Everything standing beneath the path locally when its work starts is to be reconciled
    /// too (it goes with the mark when a later rename moves it, so what is found is what then
    /// stands there, not what stood there when the mark was made).
    subtree: bool,
}

/// A rename to replay on the remote before anything else under either path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRename {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub exchange: bool,
    pub seq: u64,
}

#[derive(Default)]
pub struct Plan {
    /// The latest Store of each file not yet confirmed with that hash.
    pub hashes: PathMap<FileMeta>,
    dirty: BTreeMap<Vec<u8>, Mark>,
    in_flight: HashMap<Vec<u8>, Mark>,
    consumed: u64,
}

impl Plan {
    /// Takes in one journal record. Returns the rename to replay remotely, if it moves
    /// something the remote holds; the caller runs it before dispatching more work.
    pub fn consume(
        &mut self,
        e: &Entry,
        manifest: &Manifest,
        delay: Duration,
    ) -> Option<RemoteRename> {
        self.consumed = self.consumed.max(e.seq);
        let due = Instant::now() + delay;
        match &e.record {
            // Contents are uploaded once hashed: the Store that follows marks the path.
            Record::Create { .. } | Record::Dirty { .. } => {}
            Record::Store {
                path,
                size,
                sha256,
                mtime,
                mode,
                ctime,
                ino,
            } => {
                let s = FileMeta {
                    size: *size,
                    sha256: *sha256,
                    mtime: *mtime,
                    mode: *mode,
                    ctime: *ctime,
                    ino: *ino,
                };
                self.hashes.insert(path.clone(), s);
                self.mark(path, e.seq, due);
            }
            // Extended attributes are not mirrored, but a POSIX ACL change is a mode change.
            Record::Mkdir { path, .. }
            | Record::Mknod { path, .. }
            | Record::Symlink { path, .. }
            | Record::SetAttr { path, .. }
            | Record::SetXattr { path, .. }
            | Record::RemoveXattr { path, .. } => self.mark(path, e.seq, due),
            Record::Unlink { path } | Record::Rmdir { path } => {
                self.hashes.take_subtree(path);
                self.mark(path, e.seq, due);
            }
            Record::Link { existing, path } => {
                self.hashes.follow(&e.record);
                // A confirmed file's hash lives in the manifest only.
                let confirmed = manifest.get(existing).and_then(Confirmed::file).copied();
                if let (None, Some(s)) = (self.hashes.get(path), confirmed) {
                    self.hashes.insert(path.clone(), s);
                }
                self.mark(path, e.seq, due);
            }
            Record::Rename { from, to, flags } => {
                return self.rename(from, to, *flags, e.seq, manifest, due);
            }
        }
        None
    }

    fn rename(
        &mut self,
        from: &[u8],
        to: &[u8],
        flags: u32,
        seq: u64,
        manifest: &Manifest,
        due: Instant,
    ) -> Option<RemoteRename> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        self.hashes.rename(from, to, flags);
        self.move_marks(from, to, exchange);
        let remote_has = |p: &[u8]| manifest.subtree(p).next().is_some();
        if remote_has(from) || (exchange && remote_has(to)) {
            return Some(RemoteRename {
                from: from.to_vec(),
                to: to.to_vec(),
                exchange,
                seq,
            });
        }
        // Nothing to move remotely: what now stands at and beneath `to` is reconciled like any
        // change (work on it under its old names may have run already, the local tree being
        // ahead of the journal, and found nothing there), and so is `from` (an upload of it may
        // be in flight and land after the rename).
        self.mark(to, seq, due);
        if let Some(m) = self.dirty.get_mut(to) {
            m.subtree = true;
        }
        self.mark(from, seq, due);
        None
    }

    fn move_marks(&mut self, from: &[u8], to: &[u8], exchange: bool) {
        // Work in flight finishes at the old names; what now stands at the new ones must be
        // reconciled after it, or nothing would ever send it there.
        let in_flight: Vec<(Vec<u8>, Mark)> = self
            .in_flight
            .iter()
            .filter_map(|(p, m)| {
                let moved = |a: &[u8], b: &[u8]| is_within(p, a).then(|| (reroot(p, a, b), *m));
                moved(from, to).or_else(|| exchange.then(|| moved(to, from)).flatten())
            })
            .collect();
        let moved = take_subtree(&mut self.dirty, from);
        let replaced = take_subtree(&mut self.dirty, to);
        for (p, m) in in_flight {
            self.put_mark(p, m);
        }
        for (p, m) in moved {
            self.put_mark(reroot(&p, from, to), m);
        }
        for (p, m) in replaced {
            if exchange {
                self.put_mark(reroot(&p, to, from), m);
            } else {
                // Its record still counts for the checkpoint: keep it on the new occupant.
                self.put_mark(p, m);
            }
        }
    }

    fn put_mark(&mut self, path: Vec<u8>, m: Mark) {
        let e = self.dirty.entry(path).or_insert(m);
        e.since = e.since.min(m.since);
        e.marked = e.marked.min(m.marked);
        e.due = e.due.min(m.due);
        e.subtree |= m.subtree;
    }

    /// Path must be made equal on the remote, no earlier than `due`.
    pub fn mark(&mut self, path: &[u8], since: u64, due: Instant) {
        self.mark_at(path, since, due, Instant::now());
    }

    /// `mark`, the change having been seen at `now`.
    pub fn mark_at(&mut self, path: &[u8], since: u64, due: Instant, now: Instant) {
        let m = self.dirty.entry(path.to_vec()).or_insert(Mark {
            since,
            marked: now,
            due,
            attempts: 0,
            subtree: false,
        });
        m.since = m.since.min(since);
        m.marked = m.marked.min(now);
        // A new change pushes a waiting upload back: a burst of saves uploads once.
        m.due = m.due.max(due);
    }

    /// `mark`, and everything beneath `path` locally when its work starts.
    pub fn mark_subtree(&mut self, path: &[u8], since: u64) {
        let now = Instant::now();
        self.mark_at(path, since, now, now);
        if let Some(m) = self.dirty.get_mut(path) {
            m.subtree = true;
        }
    }

    /// For a path just taken by `take_due` whose mark covers its subtree: the mark's seq, once
    /// (the caller marks what stands beneath it now).
    pub fn take_subtree(&mut self, path: &[u8]) -> Option<u64> {
        let m = self.in_flight.get_mut(path)?;
        std::mem::take(&mut m.subtree).then_some(m.since)
    }

    /// Dirty paths that are due and not in flight, moved in flight (at most `limit`). Work on
    /// a path never overlaps work on its ancestors or descendants: a directory's removal must
    /// not race an upload's temp file inside it, nor an upload beneath it the replacement of the
    /// directory by a file. A path with work beneath it in flight waits, and so does everything
    /// due beneath it (a stream of uploads must not starve their directory).
    pub fn take_due(&mut self, now: Instant, limit: usize) -> Vec<Vec<u8>> {
        let mut ready: Vec<Vec<u8>> = Vec::new();
        for (p, m) in self.free(now) {
            if ready.len() == limit {
                break;
            }
            if m.due <= now && !ready.iter().any(|r| overlaps(p, r)) {
                ready.push(p.clone());
            }
        }
        for p in &ready {
            if let Some(m) = self.dirty.remove(p) {
                self.in_flight.insert(p.clone(), m);
            }
        }
        ready
    }

    /// Work on `path` ended: done, or to be tried again after `retry`. `blame` says whether
    /// the failure was the path's own (its backoff grows) or the connection's.
    pub fn finish(&mut self, path: &[u8], retry: Option<Duration>, blame: bool) {
        let Some(mut m) = self.in_flight.remove(path) else {
            return;
        };
        if let Some(after) = retry {
            m.attempts += u32::from(blame);
            m.due = Instant::now() + after;
            self.put_mark(path.to_vec(), m);
        }
    }

    pub fn attempts(&self, path: &[u8]) -> u32 {
        self.in_flight.get(path).map_or(0, |m| m.attempts)
    }

    /// Whether anything at, beneath or above `path` is being worked on (but the mount root's
    /// work, which never touches the server).
    pub fn busy_around(&self, path: &[u8]) -> bool {
        self.in_flight
            .keys()
            .any(|p| is_within(p, path) || (!p.is_empty() && is_within(path, p)))
    }

    /// Journal records up to this seq are fully reflected on the remote.
    pub fn applied(&self) -> u64 {
        let oldest = self
            .dirty
            .values()
            .chain(self.in_flight.values())
            .map(|m| m.since)
            .min();
        match oldest {
            Some(s) => s.saturating_sub(1).min(self.consumed),
            None => self.consumed,
        }
    }

    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Starts from a checkpoint: records up to `seq` are already applied.
    pub fn resume_after(&mut self, seq: u64) {
        self.consumed = self.consumed.max(seq);
    }

    /// Makes every waiting path due now (a flush does not wait out the write-back delay).
    pub fn expedite(&mut self) {
        let now = Instant::now();
        for m in self.dirty.values_mut() {
            m.due = m.due.min(now);
        }
    }

    /// When the next path becomes due that no work in flight holds back (the end of that work
    /// wakes the engine anyway).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.free(now).map(|(_, m)| m.due).min()
    }

    /// The dirty paths not in flight whose work overlaps no work in flight, in path order;
    /// a due path with work beneath it in flight also holds back everything beneath it.
    fn free(&self, now: Instant) -> impl Iterator<Item = (&Vec<u8>, &Mark)> {
        let mut held: Vec<&Vec<u8>> = Vec::new();
        self.dirty.iter().filter(move |(p, m)| {
            if self.in_flight.contains_key(*p) || held.iter().any(|h| overlaps(p, h)) {
                return false;
            }
            if self.in_flight.keys().any(|f| overlaps(p, f)) {
                if m.due <= now && self.in_flight.keys().any(|f| is_within(f, p)) {
                    held.push(p);
                }
                return false;
            }
            true
        })
    }

    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Paths waiting that are not in flight too (a path changed during its upload is both).
    pub fn waiting_only(&self) -> usize {
        self.dirty
            .keys()
            .filter(|p| !self.in_flight.contains_key(*p))
            .count()
    }

    /// Whether `path` waits to be worked on (it may also be in flight).
    pub fn is_waiting(&self, path: &[u8]) -> bool {
        self.dirty.contains_key(path)
    }

    pub fn pending_paths(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.dirty.keys()
    }

    /// Every path waiting or in flight.
    pub fn outstanding(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.dirty.keys().chain(self.in_flight.keys())
    }

    /// The path waiting longest for the remote (waiting or in flight), and since when: the
    /// oldest change it stands for that is not yet confirmed.
    pub fn oldest(&self) -> Option<(&[u8], Instant)> {
        self.dirty
            .iter()
            .chain(self.in_flight.iter())
            .min_by_key(|(_, m)| m.marked)
            .map(|(p, m)| (p.as_slice(), m.marked))
    }

    pub fn is_idle(&self) -> bool {
        self.dirty.is_empty() && self.in_flight.is_empty()
    }
}

/// Whether work on `a` and on `b` may touch the same remote entries: one is at or beneath the
/// other. The mount root's work never touches the server (the remote root is not ours to
/// change), so it overlaps nothing.
fn overlaps(a: &[u8], b: &[u8]) -> bool {
    !a.is_empty() && !b.is_empty() && (is_within(a, b) || is_within(b, a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Timestamp;

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn entry(seq: u64, record: Record) -> Entry {
        Entry { seq, record }
    }

    fn store(path: &str, fill: u8) -> Record {
        Record::Store {
            path: p(path),
            size: 1,
            sha256: [fill; 32],
            mtime: Timestamp { sec: 1, nsec: 0 },
            mode: 0o644,
            ctime: Timestamp { sec: 1, nsec: 0 },
            ino: 1,
        }
    }

    fn manifest() -> (tempfile::TempDir, Manifest) {
        let d = tempfile::tempdir().unwrap();
        let m = Manifest::open(d.path()).unwrap();
        (d, m)
    }

    #[test]
    fn many_stores_of_one_file_make_one_job_and_create_then_delete_is_one_noop_job() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        for (i, f) in [1u8, 2, 3].iter().enumerate() {
            plan.consume(&entry(i as u64 + 1, store("a", *f)), &m, Duration::ZERO);
        }
        plan.consume(
            &entry(
                4,
                Record::Create {
                    path: p("t"),
                    mode: 0o644,
                },
            ),
            &m,
            Duration::ZERO,
        );
        plan.consume(&entry(5, store("t", 9)), &m, Duration::ZERO);
        plan.consume(
            &entry(6, Record::Unlink { path: p("t") }),
            &m,
            Duration::ZERO,
        );
        assert_eq!(plan.hashes.get(b"a").map(|s| s.sha256[0]), Some(3));
        assert!(plan.hashes.get(b"t").is_none());
        assert_eq!(plan.take_due(Instant::now(), 10), [p("a"), p("t")]);
        assert_eq!(plan.applied(), 0, "nothing confirmed yet");
        plan.finish(b"a", None, false);
        assert_eq!(plan.applied(), 4, "t's mark stands for record 5");
        plan.finish(b"t", None, false);
        assert_eq!(plan.applied(), 6);
        assert!(plan.is_idle());
    }

    #[test]
    fn rename_of_unmirrored_path_moves_marks_and_of_mirrored_one_is_replayed() {
        let (_d, mut m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("d/x", 1)), &m, Duration::ZERO);
        let none = plan.consume(
            &entry(
                2,
                Record::Rename {
                    from: p("d"),
                    to: p("e"),
                    flags: 0,
                },
            ),
            &m,
            Duration::ZERO,
        );
        assert_eq!(none, None);
        assert_eq!(
            plan.pending_paths().cloned().collect::<Vec<_>>(),
            [p("d"), p("e"), p("e/x")]
        );
        assert!(plan.hashes.get(b"e/x").is_some());
        m.put(b"e", crate::mirror::Confirmed::Dir { mode: 0o755 })
            .unwrap();
        let r = plan.consume(
            &entry(
                3,
                Record::Rename {
                    from: p("e"),
                    to: p("f"),
                    flags: 0,
                },
            ),
            &m,
            Duration::ZERO,
        );
        assert_eq!(
            r,
            Some(RemoteRename {
                from: p("e"),
                to: p("f"),
                exchange: false,
                seq: 3
            })
        );
    }

    #[test]
    fn a_path_renamed_away_while_its_upload_is_in_flight_is_reconciled_again() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store(".doc.swp", 1)), &m, Duration::ZERO);
        assert_eq!(plan.take_due(Instant::now(), 10), [p(".doc.swp")]);
        let rename = Record::Rename {
            from: p(".doc.swp"),
            to: p("doc"),
            flags: 0,
        };
        assert_eq!(plan.consume(&entry(2, rename), &m, Duration::ZERO), None);
        plan.finish(b".doc.swp", None, false);
        assert_eq!(
            plan.take_due(Instant::now(), 10),
            [p(".doc.swp"), p("doc")],
            "the upload that landed at the old name is undone"
        );
    }

    #[test]
    fn a_directory_renamed_while_a_file_in_it_is_in_flight_gets_the_file_at_its_new_name() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("dir/f", 1)), &m, Duration::ZERO);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("dir/f")]);
        let rename = Record::Rename {
            from: p("dir"),
            to: p("moved"),
            flags: 0,
        };
        assert_eq!(plan.consume(&entry(2, rename), &m, Duration::ZERO), None);
        plan.finish(b"dir/f", None, false);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("dir"), p("moved")]);
        plan.finish(b"moved", None, false);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("moved/f")]);
        assert_eq!(plan.applied(), 0, "moved/f still stands for record 1");
    }

    #[test]
    fn in_flight_paths_are_not_dispatched_twice_and_retries_wait() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("a", 1)), &m, Duration::ZERO);
        assert_eq!(plan.take_due(Instant::now(), 10).len(), 1);
        plan.consume(&entry(2, store("a", 2)), &m, Duration::ZERO);
        assert!(
            plan.take_due(Instant::now(), 10).is_empty(),
            "a is in flight"
        );
        assert!(plan.busy_around(b""), "root covers everything");
        assert!(plan.busy_around(b"a/b"), "work on a parent counts");
        assert!(!plan.busy_around(b"b"));
        plan.finish(b"a", None, false);
        assert_eq!(
            plan.take_due(Instant::now(), 10),
            [p("a")],
            "the newer change runs next"
        );
        plan.finish(b"a", Some(Duration::from_secs(60)), true);
        assert!(plan.take_due(Instant::now(), 10).is_empty(), "retry waits");
        plan.expedite();
        assert_eq!(plan.take_due(Instant::now(), 10), [p("a")]);
    }

    /// What stands beneath a path marked with its subtree is found when the work starts: a
    /// later rename takes the mark along.
    #[test]
    fn a_subtree_mark_goes_with_a_later_rename_and_is_taken_once() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.mark_subtree(b"x", 7);
        let rename = Record::Rename {
            from: p("x"),
            to: p("y/z"),
            flags: 0,
        };
        assert_eq!(plan.consume(&entry(8, rename), &m, Duration::ZERO), None);
        let taken = plan.take_due(Instant::now(), 10);
        assert!(taken.contains(&p("y/z")), "{taken:?}");
        assert_eq!(plan.take_subtree(b"y/z"), Some(7));
        assert_eq!(plan.take_subtree(b"y/z"), None, "taken once");
    }

    /// The mount root's work never touches the server: it neither waits for nor holds back
    /// anything. A path held back is not due for the planner's wake-up either.
    #[test]
    fn the_root_holds_nothing_back_and_held_paths_do_not_wake_the_planner() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("d/big", 1)), &m, Duration::ZERO);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("d/big")]);
        let chmod = |path: &str| Record::SetAttr {
            path: p(path),
            mode: Some(0o700),
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: None,
        };
        plan.consume(&entry(2, chmod("")), &m, Duration::ZERO);
        plan.consume(&entry(3, chmod("d")), &m, Duration::ZERO);
        plan.consume(&entry(4, store("d/small", 1)), &m, Duration::ZERO);
        plan.consume(&entry(5, store("e", 1)), &m, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(plan.take_due(now, 10), [p(""), p("e")]);
        assert_eq!(
            plan.next_due(now),
            None,
            "d and d/small wait for d/big's end"
        );
    }

    #[test]
    fn a_directory_waits_for_work_beneath_it_and_holds_back_newer_work_there() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("d/big", 1)), &m, Duration::ZERO);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("d/big")]);
        plan.consume(
            &entry(2, Record::Rmdir { path: p("d") }),
            &m,
            Duration::ZERO,
        );
        plan.consume(&entry(3, store("d/other", 1)), &m, Duration::ZERO);
        plan.consume(&entry(4, store("e", 1)), &m, Duration::ZERO);
        assert_eq!(
            plan.take_due(Instant::now(), 10),
            [p("e")],
            "d waits for d/big, and d/other waits behind d"
        );
        plan.finish(b"d/big", None, false);
        assert_eq!(
            plan.take_due(Instant::now(), 10),
            [p("d")],
            "d/other waits for d"
        );
        plan.finish(b"d", None, false);
        assert_eq!(plan.take_due(Instant::now(), 10), [p("d/other")]);
    }

    #[test]
    fn writeback_delay_is_pushed_back_by_new_changes() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        plan.consume(&entry(1, store("a", 1)), &m, Duration::from_millis(0));
        plan.consume(&entry(2, store("a", 2)), &m, Duration::from_secs(30));
        assert!(plan.take_due(Instant::now(), 10).is_empty());
    }

    #[test]
    fn the_oldest_pending_change_is_kept_through_new_changes_retries_and_renames() {
        let (_d, m) = manifest();
        let mut plan = Plan::default();
        assert!(plan.oldest().is_none());
        // In the past: the rename below marks paths at the real now.
        let t0 = Instant::now() - Duration::from_secs(10);
        let (t1, t2, t3) = (
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(2),
            t0 + Duration::from_secs(3),
        );
        plan.mark_at(b"a", 1, t0, t0);
        plan.mark_at(b"b", 2, t1, t1);
        plan.mark_at(b"a", 3, t2, t2);
        assert_eq!(
            plan.oldest(),
            Some((&b"a"[..], t0)),
            "a newer change keeps the first time"
        );
        assert_eq!(plan.take_due(t3, 1), [p("a")]);
        assert_eq!(
            plan.oldest(),
            Some((&b"a"[..], t0)),
            "in flight still counts"
        );
        plan.finish(b"a", Some(Duration::ZERO), false);
        assert_eq!(
            plan.oldest(),
            Some((&b"a"[..], t0)),
            "a retry keeps its time"
        );
        assert_eq!(plan.take_due(Instant::now(), 1), [p("a")]);
        plan.mark_at(b"a", 4, t3, t3);
        plan.finish(b"a", None, false);
        assert_eq!(
            plan.oldest(),
            Some((&b"b"[..], t1)),
            "a's older change is confirmed"
        );
        let rename = Record::Rename {
            from: p("b"),
            to: p("c"),
            flags: 0,
        };
        assert_eq!(plan.consume(&entry(5, rename), &m, Duration::ZERO), None);
        assert_eq!(
            plan.oldest(),
            Some((&b"c"[..], t1)),
            "the mark moved with the file"
        );
        for path in [p("a"), p("b"), p("c")] {
            plan.mark_at(&path, 6, t0, t3);
        }
        let due: Vec<Vec<u8>> = plan.take_due(Instant::now() + Duration::from_secs(9), 9);
        for path in due {
            plan.finish(&path, None, false);
        }
        assert!(plan.oldest().is_none());
    }
}
