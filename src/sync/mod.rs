//! The sync engine: follows the journal and makes the remote equal to the local directory,
//! each file confirmed by its SHA-256 before the manifest says the remote holds it.
//!
//! One planner thread owns the plan and the manifest: it takes in journal records, replays
//! renames of mirrored paths remotely, hands due paths to the workers, applies what they report
//! and checkpoints the journal. Workers (one SFTP connection each) reconcile one path at a
//! time; a path is never worked on by two workers at once.
//!
//! Lock order: `core` (the plan, what is in flight, failures) before `mirror` (the manifest and
//! live states); no code path takes `core` while it holds `mirror`.
//!
//! The rest of the engine, by seam: `replay.rs` (renames replayed on the server, the planner's
//! side) over `rename.rs` (the remote operations), `reconcile.rs` (one path made equal by a
//! worker), `startup.rs` (the local tree against the manifest), `sweep.rs` (ftpsync's own
//! leftovers on the server), `rebind.rs` (the manifest tied to its remote), `reporting.rs`
//! (status, why a flush stops, audit records), `plan.rs`, `stats.rs`, `limits.rs`.

#[cfg(test)]
mod engine_tests;
mod limits;
pub mod plan;
mod rebind;
mod reconcile;
mod rename;
mod replay;
mod reporting;
mod startup;
mod stats;
mod sweep;

use reporting::{describe_backlog, needs_person, server_report};

use crate::audit::Audit;
use crate::journal::{Entry, Journal};
use crate::local::{self, borrow};
use crate::mirror::{Confirmed, Live, Mirror};
use crate::relpath::{child_path, is_within, reroot, RelPath};
use crate::remote::{DirNews, ErrorKind, Reach, RemoteError, SessionInfo, Transport};
use crate::report::{self, with_paths, PathName};
use crossbeam_channel::{select, unbounded, Receiver, Sender};
use limits::{Meter, ReconnectGate};
use log::{error, info, warn};
use parking_lot::{Condvar, Mutex};
use plan::{Plan, RemoteRename};
pub use reconcile::server_mode;
use reconcile::{Apply, Known, Outcome};
use serde_json::{json, Value};
use stats::Stats;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Opens a connection to the remote (a real SFTP session, or a mock in tests).
pub type Connector = Arc<dyn Fn() -> Result<Box<dyn Transport>, RemoteError> + Send + Sync>;

#[derive(Clone)]
pub struct Options {
    /// The remote, as the audit log names it.
    pub server: String,
    pub connections: usize,
    /// How long after a file's last change its upload starts.
    pub writeback_delay: Duration,
    /// Upload bytes per second, for all workers together.
    pub bwlimit: Option<u64>,
    /// Where connections, refusals and every change made remotely are recorded.
    pub audit: Option<Arc<Audit>>,
}

struct Job {
    path: Vec<u8>,
    known: Known,
}

/// A worker's job writes what may already be on the server into the manifest as it goes.
struct JobLedger<'a> {
    engine: &'a Inner,
    path: &'a [u8],
}

impl reconcile::Ledger for JobLedger<'_> {
    fn intend(&self, entry: &Confirmed) {
        let written = self
            .engine
            .mirror
            .lock()
            .manifest
            .intend(self.path, entry.clone());
        if let Err(e) = written {
            error!("manifest: {e}");
        }
    }

    fn dir_news(&self, dir: &[u8], news: DirNews) {
        self.engine.dir_news(dir, news);
    }
}

struct Done {
    path: Vec<u8>,
    result: Result<Outcome, RemoteError>,
}

#[derive(Default)]
struct Core {
    plan: Plan,
    failures: BTreeMap<Vec<u8>, Failure>,
    connection: String,
    /// A host-key or authentication refusal: nothing is sent until it is fixed.
    halted: Option<String>,
    /// When the refusal was last met.
    halted_at: Option<Instant>,
    /// Set after a connection-wide failure: no dispatch before then.
    offline_until: Option<Instant>,
    offline_failures: u32,
    last_cause: Option<String>,
    confirmed: u64,
    bytes_sent: u64,
    conflicts: u64,
    flush_waiters: usize,
    stopping: bool,
    /// The start-up comparison of the local tree with the manifest has not finished.
    scanning: bool,
    /// Remote entries at start-up that ftpsync did not put there (the first 100).
    remote_only: Vec<Vec<u8>>,
    /// The journal seq of a rename being replayed remotely: until it is done, nothing after it
    /// counts as applied and a flush waits.
    replaying: Option<u64>,
    /// Directories where work that failed may have left a temp file (an upload cut by a lost
    /// connection cannot remove its own): swept once nothing is in flight. A flush waits.
    litter: std::collections::BTreeSet<Vec<u8>>,
    /// Closed files whose hash has not come yet, and how often they were found so.
    awaiting_hash: std::collections::HashMap<Vec<u8>, u32>,
    /// Per path in flight: how to make its worker give up, and how far its upload got.
    running: std::collections::HashMap<Vec<u8>, Running>,
    /// The upload rate and what was confirmed lately.
    stats: Stats,
    /// The last session made: server, host key, algorithms, login method.
    session: Option<SessionInfo>,
    /// How the first connection attempt ended: None until it did, then what went wrong if
    /// something did (for `mount` to tell the user at once).
    first_contact: Option<Result<(), RemoteError>>,
}

/// A path's latest failure.
struct Failure {
    reason: String,
    /// Only a person can clear it (a refusal, a permission): a flush stops waiting for it.
    needs_person: bool,
    /// Failures in a row, and when the last one happened.
    count: u32,
    last: Instant,
}

/// A path being worked on.
struct Running {
    /// Set to make the worker give up (a newer change arrived).
    cancel: Arc<AtomicBool>,
    /// Bytes of the file read for its upload so far.
    sent: Arc<AtomicU64>,
}

struct Inner {
    core: Mutex<Core>,
    cv: Condvar,
    mirror: Arc<Mutex<Mirror>>,
    writers: Arc<crate::mirror::OpenWriters>,
    journal: Arc<Journal>,
    root: OwnedFd,
    opts: Options,
    connect: Connector,
    /// Bytes read from local files for uploads (cancelled and retried ones included), paced
    /// by the bandwidth limit.
    meter: Arc<Meter>,
    gate: ReconnectGate,
    binder: rebind::Binder,
}

pub struct Engine {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// While a flush waits, how often an unreachable remote is tried again at the most.
const FLUSH_RETRY_EVERY: Duration = Duration::from_secs(2);
const HALTED_RETRY: Duration = Duration::from_secs(60);
/// How often leftover temporary files are looked for while the daemon runs (a lost connection
/// leaves one behind an upload).
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often a closed file is found without its hash before the engine takes it itself (after
/// about 8 s: 0.25 s doubling).
const HASH_OVERDUE: u32 = 5;

/// Exponential backoff with jitter, capped.
fn backoff(attempts: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempts.min(16));
    let base = base.min(cap);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

impl Engine {
    /// Starts the planner and workers. `replay` are the journal records not yet applied;
    /// `feed` delivers every record appended from now on.
    pub fn start(
        root: OwnedFd,
        journal: Arc<Journal>,
        mirror: Arc<Mutex<Mirror>>,
        feed: Receiver<Entry>,
        replay: Vec<Entry>,
        connect: Connector,
        opts: Options,
    ) -> std::io::Result<Engine> {
        let opts_bwlimit = opts.bwlimit;
        let writers = mirror.lock().writers.clone();
        let inner = Arc::new(Inner {
            core: Mutex::new(Core {
                connection: "connecting".into(),
                scanning: true,
                ..Core::default()
            }),
            cv: Condvar::new(),
            mirror,
            writers,
            journal,
            root,
            opts,
            connect,
            meter: Arc::new(Meter::new(opts_bwlimit)),
            gate: ReconnectGate::default(),
            binder: rebind::Binder::default(),
        });
        let (job_tx, job_rx) = unbounded::<Job>();
        let (done_tx, done_rx) = unbounded::<Done>();
        let mut threads = Vec::new();
        for i in 0..inner.opts.connections.max(1) {
            let (inner, jobs, done) = (inner.clone(), job_rx.clone(), done_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sync-{i}"))
                    .spawn(move || inner.worker(&jobs, &done))?,
            );
        }
        let planner = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("sync-plan".into())
                .spawn(move || planner.plan_loop(&feed, replay, &job_tx, &done_rx))?,
        );
        Ok(Engine {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// Waits until every change journaled before the call is confirmed on the remote.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        let target = self.inner.journal.next_seq().saturating_sub(1);
        let deadline = Instant::now() + timeout;
        let mut core = self.inner.core.lock();
        core.flush_waiters += 1;
        core.plan.expedite();
        let began = Instant::now();
        let mut retry_at = began;
        let result = loop {
            // Someone waits: the remote is tried again at least every few seconds, not after
            // the backoff an outage built up (which may be longer than the flush's patience).
            if Instant::now() >= retry_at {
                core.offline_until = core.offline_until.map(|_| Instant::now());
                self.inner.gate.reset();
                self.inner.cv.notify_all();
                retry_at = Instant::now() + FLUSH_RETRY_EVERY;
            }
            if !core.scanning
                && core.plan.consumed() >= target
                && core.plan.is_idle()
                && core.replaying.is_none()
                && core.litter.is_empty()
            {
                break Ok(());
            }
            if let Some(why) = needs_person(&core, began) {
                break Err(why);
            }
            let woken = self.inner.cv.wait_until(&mut core, deadline.min(retry_at));
            if woken.timed_out() && Instant::now() >= deadline {
                break Err(format!("timed out: {}", describe_backlog(&core)));
            }
        };
        core.flush_waiters -= 1;
        drop(core);
        if result.is_ok() {
            // So that status, right after, shows no confirmed record as pending.
            self.inner.checkpoint();
        }
        result
    }

    /// The seq of the last journal record the planner took in (for the test harness).
    #[cfg(test)]
    pub(crate) fn consumed(&self) -> u64 {
        self.inner.core.lock().plan.consumed()
    }

    /// Sends these paths again whatever the manifest says (`verify` found them wrong on the
    /// remote). The doubt is durable before this returns: a restart still resends them.
    pub fn repair(&self, paths: Vec<Vec<u8>>) -> std::io::Result<()> {
        let mut core = self.inner.core.lock();
        let mut mirror = self.inner.mirror.lock();
        for p in &paths {
            mirror.manifest.doubt(p)?;
        }
        mirror.manifest.sync()?;
        drop(mirror);
        let since = core.plan.consumed() + 1;
        for p in paths {
            core.plan.mark(&p, since, Instant::now());
        }
        self.inner.cv.notify_all();
        Ok(())
    }

    /// Waits (at most `timeout`) for the first connection attempt; returns its failure if it
    /// failed for a reason the user must act on (not a server merely unreachable yet).
    pub fn first_contact(&self, timeout: Duration) -> Option<RemoteError> {
        let deadline = Instant::now() + timeout;
        let mut core = self.inner.core.lock();
        while core.first_contact.is_none() {
            if self.inner.cv.wait_until(&mut core, deadline).timed_out() {
                return None;
            }
        }
        match &core.first_contact {
            Some(Err(e)) if e.kind().reach() != Reach::Offline => Some(e.clone()),
            _ => None,
        }
    }

    /// Drains for at most `timeout`, then stops; what is left stays in the journal.
    pub fn shutdown(&self, timeout: Duration) {
        // A refused host key or login will not fix itself while we wait.
        let refused = self.inner.core.lock().halted.is_some();
        let timeout = if refused { Duration::ZERO } else { timeout };
        if let Err(left) = self.flush(timeout) {
            warn!("unmount: not everything reached the remote ({left}); the next mount carries on");
        }
        self.inner.core.lock().stopping = true;
        self.inner.cv.notify_all();
        for t in self.threads.lock().drain(..) {
            if t.join().is_err() {
                error!("a sync thread panicked");
            }
        }
    }
}

impl Inner {
    fn plan_loop(
        &self,
        feed: &Receiver<Entry>,
        replay: Vec<Entry>,
        jobs: &Sender<Job>,
        done: &Receiver<Done>,
    ) {
        let mut conn: Option<Box<dyn Transport>> = None;
        self.bind_at_start(&mut conn);
        let applied = self.mirror.lock().manifest.applied_seq();
        self.core.lock().plan.resume_after(applied);
        for e in replay.iter().filter(|e| e.seq > applied) {
            self.take_in(e, &mut conn, done);
        }
        self.scan_local();
        // Uploads a crash or an outage interrupted (adopt what arrived, clear their temp files),
        // and repairs a verify asked for.
        let interrupted: Vec<Vec<u8>> = {
            let mirror = self.mirror.lock();
            let m = &mirror.manifest;
            m.intents().chain(m.doubts()).cloned().collect()
        };
        let mut core = self.core.lock();
        let since = core.plan.consumed() + 1;
        for p in interrupted {
            core.plan.mark(&p, since, Instant::now());
        }
        drop(core);
        // Before any upload starts (no temp name is then in flight), and before a flush may
        // call the start-up done.
        self.survey_remote(&mut conn, true);
        self.core.lock().scanning = false;
        let mut last_checkpoint = Instant::now();
        let mut last_sweep = Instant::now();
        loop {
            let wait = self.next_wake();
            select! {
                recv(feed) -> e => if let Ok(e) = e { self.take_in(&e, &mut conn, done) },
                recv(done) -> d => if let Ok(d) = d { self.finish(d) },
                default(wait) => {}
            }
            while let Ok(e) = feed.try_recv() {
                self.take_in(&e, &mut conn, done);
            }
            while let Ok(d) = done.try_recv() {
                self.finish(d);
            }
            self.dispatch(jobs);
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                self.checkpoint();
                last_checkpoint = Instant::now();
            }
            if last_sweep.elapsed() >= SWEEP_EVERY && self.quiet_and_online() {
                self.survey_remote(&mut conn, false);
                last_sweep = Instant::now();
            }
            if self.litter_due() {
                self.sweep_litter(&mut conn);
            }
            self.cv.notify_all();
            let mut core = self.core.lock();
            core.stats.sample(Instant::now(), self.meter.sent());
            if core.stopping {
                break;
            }
        }
        self.checkpoint();
    }

    /// Nothing in flight and the remote reachable: a sweep neither races an upload nor waits
    /// out a reconnect backoff.
    fn quiet_and_online(&self) -> bool {
        let core = self.core.lock();
        core.plan.in_flight() == 0 && core.halted.is_none() && core.offline_failures == 0
    }

    /// How long the planner may sleep: until the next path is due (or the remote is worth
    /// trying again), at most until the next checkpoint.
    fn next_wake(&self) -> Duration {
        let core = self.core.lock();
        let now = Instant::now();
        // With every connection busy, only the end of some work (which wakes the planner)
        // lets more start.
        let due = match core.plan.next_due(now) {
            Some(_) if core.plan.in_flight() >= self.opts.connections * 2 => CHECKPOINT_EVERY,
            Some(d) => d.saturating_duration_since(now),
            None => CHECKPOINT_EVERY,
        };
        let due = match core.offline_until {
            Some(t) if t > now => due.max(t - now),
            _ => due,
        };
        due.clamp(Duration::from_millis(5), CHECKPOINT_EVERY)
    }

    fn take_in(&self, e: &Entry, conn: &mut Option<Box<dyn Transport>>, done: &Receiver<Done>) {
        let rename = {
            let mut core = self.core.lock();
            let mut mirror = self.mirror.lock();
            let r = core
                .plan
                .consume(e, &mirror.manifest, self.opts.writeback_delay);
            log::debug!(
                "journal #{} {} {}{}",
                e.seq,
                e.record.op(),
                crate::relpath::show(e.record.path()),
                if r.is_some() {
                    " (replayed remotely)"
                } else {
                    ""
                }
            );
            let path = e.record.path().to_vec();
            // A newer version (or a delete) makes an upload in flight pointless.
            if let crate::journal::Record::Store { .. } = e.record {
                core.awaiting_hash.remove(&path);
            }
            if matches!(
                e.record,
                crate::journal::Record::Store { .. }
                    | crate::journal::Record::Unlink { .. }
                    | crate::journal::Record::Rmdir { .. }
            ) {
                if let Some(r) = core.running.get(&path) {
                    r.cancel.store(true, Ordering::Relaxed);
                }
            }
            if r.is_none()
                && !matches!(
                    e.record,
                    crate::journal::Record::Create { .. } | crate::journal::Record::Dirty { .. }
                )
            {
                mirror.live.insert(path, Live::Pending);
            }
            r
        };
        if let Some(r) = rename {
            self.replay_rename(&r, conn, done);
        }
    }

    /// Sleeps until `at`, or until the engine stops (an unmount must not wait out a reconnect
    /// backoff); says whether it stopped.
    fn sleep_until(&self, at: Instant) -> bool {
        let mut core = self.core.lock();
        while !core.stopping && Instant::now() < at {
            self.cv.wait_until(&mut core, at);
        }
        core.stopping
    }

    /// Waits `wait`, or less: until the engine stops, or a flush asks to try the remote now.
    fn pause(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut core = self.core.lock();
        while !core.stopping && core.offline_until.is_some_and(|t| t > Instant::now()) {
            if self.cv.wait_until(&mut core, deadline).timed_out() {
                return;
            }
        }
    }

    /// The thread's connection, made if there is none: after failures, only once the shared
    /// reconnect gate opens (waiting for it, unless the engine stops meanwhile).
    fn connection<'a>(
        &self,
        conn: &'a mut Option<Box<dyn Transport>>,
    ) -> Result<&'a mut Box<dyn Transport>, RemoteError> {
        if conn.is_none() {
            while let Some(at) = self.gate.enter() {
                if self.sleep_until(at) {
                    return Err(RemoteError::new(ErrorKind::Transient, "stopping"));
                }
            }
            match (self.connect)().and_then(|c| self.bind_connection(c)) {
                Ok(c) => {
                    self.gate.reset();
                    let session = c.session();
                    if let Some(s) = &session {
                        self.audit(
                            "connect",
                            serde_json::to_value(server_report(s)).unwrap_or_default(),
                        );
                    }
                    let mut core = self.core.lock();
                    core.session = session;
                    core.first_contact.get_or_insert(Ok(()));
                    self.cv.notify_all();
                    // Until a failure says otherwise (a job's outcome updates it).
                    if core.halted.is_none() && core.offline_failures == 0 {
                        core.connection = "connected".into();
                    }
                    drop(core);
                    *conn = Some(c);
                }
                Err(e) => {
                    self.gate.failed();
                    self.audit_refusal(&e);
                    self.core.lock().first_contact.get_or_insert(Err(e.clone()));
                    self.cv.notify_all();
                    return Err(e);
                }
            }
        }
        conn.as_mut()
            .ok_or_else(|| RemoteError::new(ErrorKind::Transient, "no connection"))
    }

    fn dispatch(&self, jobs: &Sender<Job>) {
        let mut core = self.core.lock();
        let now = Instant::now();
        if core.stopping && core.flush_waiters == 0 {
            return;
        }
        if core.offline_until.is_some_and(|t| t > now) {
            return;
        }
        let mut limit = (self.opts.connections * 2).saturating_sub(core.plan.in_flight());
        if core.halted.is_some() || core.offline_failures > 0 {
            // One path probes the remote; the rest follow once it succeeds. A refusal stays
            // shown until then, and is probed now and then: the user may have fixed it.
            limit = limit.min(1);
            if core.halted.is_some() {
                core.offline_until = Some(now + HALTED_RETRY);
            }
        }
        let paths = core.plan.take_due(now, limit);
        let subtrees: Vec<(Vec<u8>, u64)> = paths
            .iter()
            .filter_map(|p| core.plan.take_subtree(p).map(|since| (p.clone(), since)))
            .collect();
        self.send_jobs(&mut core, paths, jobs);
        drop(core);
        for (root, since) in subtrees {
            self.mark_local_beneath(&root, since);
        }
    }

    fn send_jobs(&self, core: &mut Core, paths: Vec<Vec<u8>>, jobs: &Sender<Job>) {
        let mut mirror = self.mirror.lock();
        for path in paths {
            let confirmed: Vec<(Vec<u8>, Confirmed)> = mirror
                .manifest
                .subtree(&path)
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect();
            let ancestors = crate::remote::path::ancestors(&path)
                .filter_map(|a| mirror.manifest.get(a).map(|c| (a.to_vec(), c.clone())))
                .collect();
            let stored = core.plan.hashes.get(&path).copied();
            let intents = mirror.manifest.intents_of(&path).to_vec();
            let intents_beneath = mirror.manifest.intents_beneath(&path);
            let cancel = Arc::new(AtomicBool::new(false));
            let sent = Arc::new(AtomicU64::new(0));
            core.running.insert(
                path.clone(),
                Running {
                    cancel: cancel.clone(),
                    sent: sent.clone(),
                },
            );
            let repair = mirror.manifest.doubted(&path);
            let hash_here = core
                .awaiting_hash
                .get(&path)
                .is_some_and(|&n| n >= HASH_OVERDUE);
            mirror.live.insert(path.clone(), Live::Uploading);
            let _ = jobs.send(Job {
                path,
                known: Known {
                    confirmed,
                    ancestors,
                    stored,
                    cancel,
                    meter: self.meter.clone(),
                    sent,
                    intents,
                    intents_beneath,
                    repair,
                    writers: self.writers.clone(),
                    hash_here,
                },
            });
        }
    }

    fn worker(&self, jobs: &Receiver<Job>, done: &Sender<Done>) {
        let mut conn: Option<Box<dyn Transport>> = None;
        for job in jobs.iter() {
            let ledger = JobLedger {
                engine: self,
                path: &job.path,
            };
            let result = self.connection(&mut conn).and_then(|t| {
                reconcile::reconcile(
                    t.as_mut(),
                    borrow(&self.root),
                    &job.path,
                    &job.known,
                    &ledger,
                )
            });
            if result
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::Transient)
            {
                conn = None;
            }
            if done
                .send(Done {
                    path: job.path,
                    result,
                })
                .is_err()
            {
                return;
            }
            if self.core.lock().stopping && jobs.is_empty() {
                return;
            }
        }
    }

    fn finish(&self, d: Done) {
        // The audit log's file I/O stays outside the engine's locks.
        if let Ok(Outcome::Done(report)) = &d.result {
            self.audit_outcome(&d.path, report);
            if let Some(dir) = &report.replaced {
                self.forget_replaced(dir);
            }
        }
        let mut core = self.core.lock();
        core.running.remove(&d.path);
        let mut mirror = self.mirror.lock();
        match d.result {
            Ok(Outcome::Done(report)) => {
                core.awaiting_hash.remove(&d.path);
                let written = match report.apply {
                    Apply::Put(c) => mirror.manifest.put(&d.path, c),
                    Apply::Remove => mirror.manifest.remove(&d.path),
                    Apply::Nothing => mirror.manifest.settle(&d.path),
                };
                if let Err(e) = written {
                    error!("manifest: {e}");
                }
                if let Some(u) = &report.uploaded {
                    core.confirmed += 1;
                    core.bytes_sent += u.bytes;
                    core.stats
                        .confirmed(Instant::now(), std::time::SystemTime::now(), u.bytes);
                }
                // The hash is in the manifest now, unless a newer Store came in meanwhile.
                let confirmed_sha = mirror
                    .manifest
                    .get(&d.path)
                    .and_then(Confirmed::file)
                    .map(|f| f.sha256);
                if core.plan.hashes.get(&d.path).map(|s| s.sha256) == confirmed_sha {
                    core.plan.hashes.remove(&d.path);
                }
                core.conflicts += report.conflicts.len() as u64;
                mirror.live.remove(&d.path);
                core.failures.remove(&d.path);
                core.plan.finish(&d.path, None, false);
                core.offline_until = None;
                core.offline_failures = 0;
                core.halted = None;
                core.connection = "connected".into();
            }
            Ok(Outcome::OpenForWriting) => {
                core.awaiting_hash.remove(&d.path);
                mirror.live.remove(&d.path);
                core.plan.finish(&d.path, None, false);
                core.connection = "connected".into();
            }
            Ok(Outcome::NotReady) => {
                mirror.live.insert(d.path.clone(), Live::Pending);
                // Asked again until its hash comes, or taken here once overdue: a Store that
                // never comes must not leave the path waiting for ever.
                let n = core.awaiting_hash.entry(d.path.clone()).or_insert(0);
                *n += 1;
                let retry = Duration::from_millis(250 << (*n).min(6));
                core.plan.finish(&d.path, Some(retry), false);
                core.connection = "connected".into();
            }
            Err(e) => {
                drop(mirror);
                self.failed(&mut core, &d.path, e);
            }
        }
    }

    /// A failure of the whole connection rather than of one path: the remote unreachable or
    /// full (tried again with backoff), or refusing us (halted until a person acts, probed now
    /// and then). Returns how long to wait; None for a failure of the path itself.
    fn connection_failure(core: &mut Core, e: &RemoteError) -> Option<Duration> {
        match e.kind().reach() {
            Reach::Offline => {
                Self::offline(core, e);
                Some(backoff(core.offline_failures, Duration::from_secs(60)))
            }
            Reach::Halt => {
                if core.halted.is_none() {
                    error!("uploads stopped: {e}");
                }
                core.halted = Some(e.to_string());
                core.halted_at = Some(Instant::now());
                core.offline_until = Some(Instant::now() + HALTED_RETRY);
                Some(HALTED_RETRY)
            }
            _ => None,
        }
    }

    fn failed(&self, core: &mut Core, path: &[u8], e: RemoteError) {
        let attempts = core.plan.attempts(path);
        core.litter.insert(reconcile::parent(path).to_vec());
        if let Some(retry) = Self::connection_failure(core, &e) {
            return core.plan.finish(path, Some(retry), false);
        }
        warn!("{}: {e}", crate::relpath::show(path));
        if matches!(e.kind(), ErrorKind::VerifyMismatch | ErrorKind::Refused) {
            let event = match e.kind() {
                ErrorKind::Refused => "refused",
                _ => "verify_mismatch",
            };
            self.audit(
                event,
                with_paths(&[("path", path)], json!({"reason": e.message()})),
            );
        }
        let needs_person = e.kind().reach() == Reach::PathNeedsPerson;
        let count = core.failures.get(path).map_or(0, |f| f.count) + 1;
        core.failures.insert(
            path.to_vec(),
            Failure {
                reason: e.to_string(),
                needs_person,
                count,
                last: Instant::now(),
            },
        );
        self.mirror
            .lock()
            .live
            .insert(path.to_vec(), Live::Failed(e.to_string()));
        let retry = backoff(attempts, Duration::from_secs(300));
        // A flush waits for one retry of what needs a person: soon, not after the usual backoff.
        let retry = if core.flush_waiters > 0 && needs_person {
            retry.min(Duration::from_secs(1))
        } else {
            retry
        };
        core.plan.finish(path, Some(retry), true);
    }

    /// A failure of the whole connection: pause dispatching, log once per cause.
    fn offline(core: &mut Core, e: &RemoteError) {
        core.offline_failures += 1;
        let cause = format!("{:?}", e.kind());
        if core.last_cause.as_deref() != Some(cause.as_str()) {
            warn!("remote unavailable, retrying with backoff: {e}");
            core.last_cause = Some(cause);
        }
        core.connection = format!("retrying: {e}");
        core.offline_until =
            Some(Instant::now() + backoff(core.offline_failures, Duration::from_secs(60)));
    }

    fn checkpoint(&self) {
        let applied = {
            let core = self.core.lock();
            let applied = core.plan.applied();
            core.replaying.map_or(applied, |seq| applied.min(seq - 1))
        };
        let mut mirror = self.mirror.lock();
        if applied <= mirror.manifest.applied_seq() {
            return;
        }
        let synced = mirror
            .manifest
            .set_applied(applied)
            .and_then(|()| mirror.manifest.sync());
        drop(mirror);
        match synced {
            Ok(()) => {
                if let Err(e) = self.journal.checkpoint(applied) {
                    warn!("journal checkpoint: {e}");
                }
            }
            Err(e) => error!("manifest sync: {e}"),
        }
        if let Some(a) = &self.opts.audit {
            a.sync();
        }
    }
}
