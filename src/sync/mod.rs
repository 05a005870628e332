//! The sync engine: follows the journal and makes the remote equal to the local directory,
//! each file confirmed by its SHA-256 before the manifest says the remote holds it.
//!
//! One planner thread owns the plan and the manifest: it takes in journal records, replays
//! renames of mirrored paths remotely, hands due paths to the workers, applies what they report
//! and checkpoints the journal. Workers (one SFTP connection each) reconcile one path at a
//! time; a path is never worked on by two workers at once.

#[cfg(test)]
mod engine_tests;
mod limits;
pub mod plan;
mod rebind;
mod reconcile;
mod rename;
mod stats;

use crate::audit::{path_value, Audit};
use crate::journal::{Entry, Journal};
use crate::local::{self, borrow};
use crate::mirror::{Confirmed, Live, Mirror};
use crate::relpath::is_within;
use crate::relpath::{child_path, RelPath};
use crate::remote::{ErrorKind, Reach, RemoteError, SessionInfo, Transport};
use crate::report::{self, PathName};
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
    mirror: &'a Mutex<Mirror>,
    path: &'a [u8],
}

impl reconcile::Ledger for JobLedger<'_> {
    fn intend(&self, meta: &crate::mirror::FileMeta) {
        if let Err(e) = self.mirror.lock().manifest.intend(self.path, *meta) {
            error!("manifest: {e}");
        }
    }

    fn made_dir(&self, dir: &[u8], mode: u32) {
        record_made_dir(self.mirror, dir, mode);
    }
}

/// Forgets the manifest's entries strictly beneath `dir` (the directory's own entry, made anew
/// by ftpsync a moment ago, stays) and returns them.
fn forget_beneath(mirror: &Mutex<Mirror>, dir: &[u8]) -> Vec<(Vec<u8>, Confirmed)> {
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

/// A directory ftpsync made on the server as a parent is recorded at once: if the work that
/// made it fails, or its local twin goes before its own turn comes, it is still ours to remove.
fn record_made_dir(mirror: &Mutex<Mirror>, dir: &[u8], mode: u32) {
    if let Err(e) = mirror.lock().manifest.put(dir, Confirmed::Dir { mode }) {
        error!("manifest: {e}");
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

    /// The mirror's state for `ftpsync status` (see doc/CONTRACTS.md). Cheap: a pass over the
    /// pending paths; the rate and the last hour come from small bounded records.
    pub fn status(&self) -> report::Mirror {
        let mut core = self.inner.core.lock();
        let now = Instant::now();
        let sent = self.inner.meter.sent();
        core.stats.sample(now, sent);
        let core = &*core;
        let mirror = self.inner.mirror.lock();
        let size = |p: &[u8]| core.plan.hashes.get(p).map_or(0, |s| s.size);
        // Waiting files count in full, files being uploaded less what was already read (a path
        // changed again while in flight is sent again in full).
        let waiting: u64 = core.plan.pending_paths().map(|p| size(p)).sum();
        let sending: u64 = core
            .running
            .iter()
            .filter(|(p, _)| !core.plan.is_waiting(p))
            .map(|(p, r)| size(p).saturating_sub(r.sent.load(Ordering::Relaxed)))
            .sum();
        let pending_bytes = waiting + sending;
        let rate = core.stats.rate(now, sent);
        let last_hour = core.stats.last_hour(now);
        let last_confirmed = core.stats.last_confirmed();
        report::Mirror {
            connection: core
                .halted
                .clone()
                .map_or(core.connection.clone(), |h| format!("halted: {h}")),
            connected: core.halted.is_none() && core.connection == "connected",
            halted: core.halted.is_some(),
            pending: core.plan.waiting_only() as u64,
            pending_bytes,
            in_flight: core.plan.in_flight() as u64,
            upload_rate: rate.round() as u64,
            rate_window_seconds: stats::RATE_WINDOW.as_secs(),
            eta_seconds: (pending_bytes > 0 && rate >= 1.0)
                .then(|| (pending_bytes as f64 / rate).ceil() as u64),
            oldest_pending: core.plan.oldest().map(|(p, since)| report::Oldest {
                name: PathName::of(p),
                age_seconds: (now.saturating_duration_since(since).as_secs_f64() * 10.0).round()
                    / 10.0,
            }),
            confirmed: core.confirmed,
            bytes_sent: sent,
            bytes_confirmed: core.bytes_sent,
            confirmed_last_hour: report::LastHour {
                files: last_hour.files,
                bytes: last_hour.bytes,
            },
            last_confirmed: last_confirmed.map(crate::utc::rfc3339),
            last_confirmed_unix: last_confirmed
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as f64 / 1000.0),
            conflicts: core.conflicts,
            mirrored_paths: mirror.manifest.len() as u64,
            applied_seq: mirror.manifest.applied_seq(),
            failures: core
                .failures
                .iter()
                .map(|(p, f)| report::Failure {
                    name: PathName::of(p),
                    reason: f.reason.clone(),
                })
                .collect(),
            remote_only: core
                .remote_only
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            server: core.session.as_ref().map(server_report),
            bwlimit: self.inner.opts.bwlimit,
        }
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

fn server_report(s: &SessionInfo) -> report::Server {
    let n = &s.negotiated;
    report::Server {
        remote: s.server.clone(),
        host_key: report::HostKey {
            key_type: s.host_key.key_type.clone(),
            fingerprint: s.host_key.fingerprint.clone(),
        },
        auth: s.auth.clone(),
        capabilities: report::Capabilities {
            symlinks: s.symlinks.describe().to_string(),
            permissions: if s.modes { "kept" } else { "ignored" }.to_string(),
            fsync: s.fsync,
            verify: s.verify.to_string(),
        },
        algorithms: report::Algorithms {
            kex: n.kex.clone(),
            host_key: n.host_key.clone(),
            cipher: [n.cipher_cs.clone(), n.cipher_sc.clone()],
            mac: [n.mac_cs.clone(), n.mac_sc.clone()],
        },
    }
}

/// Why waiting on is pointless, if it is: the remote refused us (host key, login) again since
/// the flush began, or all that is left are paths that failed for a reason only a person can
/// clear, each retried once since then.
fn needs_person(core: &Core, began: Instant) -> Option<String> {
    if let (Some(why), Some(at)) = (&core.halted, core.halted_at) {
        if at >= began {
            return Some(format!("uploads are stopped: {why}"));
        }
    }
    let is_stuck = |p: &Vec<u8>| {
        core.failures
            .get(p)
            .is_some_and(|f| f.needs_person && f.count >= 2 && f.last >= began)
    };
    if !core.plan.outstanding().all(is_stuck) {
        return None;
    }
    let stuck: Vec<String> = core
        .failures
        .iter()
        .filter(|(p, _)| is_stuck(p))
        .map(|(p, f)| format!("\n  {}: {}", crate::relpath::show(p), f.reason))
        .collect();
    if stuck.is_empty() {
        return None;
    }
    Some(format!(
        "{} paths fail for a reason only you can clear (retried since the flush began):{}",
        stuck.len(),
        stuck.iter().take(20).cloned().collect::<String>()
    ))
}

fn describe_backlog(core: &Core) -> String {
    let mut s = format!(
        "{} paths pending, {} in flight, {} directories to clear of temp files; connection: {}",
        core.plan.pending(),
        core.plan.in_flight(),
        core.litter.len(),
        core.halted
            .clone()
            .map_or(core.connection.clone(), |h| format!("halted: {h}"))
    );
    for (p, f) in core.failures.iter().take(20) {
        let why = &f.reason;
        s.push_str(&format!("\n  {}: {why}", crate::relpath::show(p)));
    }
    s
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

    /// Litter to sweep, nothing in flight (no upload's temp file is then alive), and no
    /// reconnect backoff or refusal to wait out.
    fn litter_due(&self) -> bool {
        let core = self.core.lock();
        !core.litter.is_empty()
            && core.plan.in_flight() == 0
            && core.halted.is_none()
            && core.offline_until.is_none_or(|t| t <= Instant::now())
    }

    /// A directory that cannot be swept (unreadable, or no directory any more) is given up
    /// alone: the others are swept all the same. A lost connection puts back what is left.
    fn sweep_litter(&self, conn: &mut Option<Box<dyn Transport>>) {
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
    fn sweep_dir(&self, t: &mut dyn Transport, dir: &[u8]) -> Result<(), RemoteError> {
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
    fn is_litter(&self, name: &[u8], path: &[u8]) -> bool {
        crate::remote::path::is_temp_name(name)
            && self.mirror.lock().manifest.get(path).is_none()
            && local::lookup_path(borrow(&self.root), path).is_err()
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

    /// Replays a rename of mirrored paths once nothing at, beneath or above either path is in
    /// flight, retrying through outages: later records wait for it (they may depend on it).
    fn replay_rename(
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

    fn replay_until_done(&self, r: &RemoteRename, conn: &mut Option<Box<dyn Transport>>) {
        let ends = rename::Ends::of(r, &self.mirror.lock());
        loop {
            if self.core.lock().stopping {
                return;
            }
            let mut conflicts = Vec::new();
            let result = self
                .connection(conn)
                .and_then(|t| rename::replay(t.as_mut(), r, &ends, &self.mirror, &mut conflicts));
            self.kept_aside(&conflicts);
            let e = match result {
                Ok(rename::Replayed::Moved { again, replaced }) => {
                    self.move_litter(r);
                    self.audit(
                        "rename",
                        json!({"from": path_value(&r.from), "to": path_value(&r.to),
                               "exchange": r.exchange}),
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
    fn mark_unmatched_beneath(&self, r: &RemoteRename) {
        let marks = self.unmatched_beneath(&r.to);
        let mut core = self.core.lock();
        for p in marks {
            core.plan.mark(&p, r.seq, Instant::now());
        }
    }

    /// Temp files left in a directory that was moved on the server moved with it.
    fn move_litter(&self, r: &RemoteRename) {
        let mut core = self.core.lock();
        let moved: Vec<Vec<u8>> = core
            .litter
            .iter()
            .filter(|d| is_within(d, &r.from))
            .cloned()
            .collect();
        for d in moved {
            core.litter.remove(&d);
            core.litter.insert(rename::reroot(&d, &r.from, &r.to));
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

    /// Conflict copies made outside a worker's reconcile: counted and audited like theirs.
    fn kept_aside(&self, copies: &[Vec<u8>]) {
        for copy in copies {
            self.audit("conflict_kept", json!({"copy": path_value(copy)}));
        }
        self.core.lock().conflicts += copies.len() as u64;
    }

    /// A rename that could not be replayed remotely: what stands locally at both names is sent
    /// anew (the hashes the manifest held follow the files to their new names, so no Store need
    /// come), and what is left of ours at the old names goes.
    fn resend(&self, r: &RemoteRename, ends: &rename::Ends) {
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
    fn send_again(&self, r: &RemoteRename, ends: &rename::Ends, again: &[Vec<u8>]) {
        for new in again {
            let old = rename::reroot(new, &r.to, &r.from);
            self.seed_hashes(&ends.from, &old, new);
            self.core.lock().plan.mark_subtree(new, r.seq);
        }
    }

    /// What stood in the way of a directory of ours (kept aside now: the server replaced it,
    /// or put something there) holds nothing of what the manifest said beneath it: all that
    /// stands there locally is sent anew.
    fn forget_replaced(&self, dir: &[u8]) {
        let forgotten = forget_beneath(&self.mirror, dir);
        self.resend_replaced(dir, &forgotten);
    }

    /// The files the manifest held beneath `dir` (`forgotten`) are sent anew, with the hashes
    /// it held for them; so is everything that stands beneath `dir` locally.
    fn resend_replaced(&self, dir: &[u8], forgotten: &[(Vec<u8>, Confirmed)]) {
        self.seed_hashes(forgotten, dir, dir);
        let mut core = self.core.lock();
        let since = core.plan.consumed() + 1;
        core.plan.mark_subtree(dir, since);
    }

    /// The hashes the manifest held for the files at and beneath `old` (`entries`) stand for
    /// them at and beneath `new` now, unless a newer Store came.
    fn seed_hashes(&self, entries: &[(Vec<u8>, Confirmed)], old: &[u8], new: &[u8]) {
        let mut core = self.core.lock();
        for (p, c) in entries.iter().filter(|(p, _)| is_within(p, old)) {
            if let Confirmed::File(f) = c {
                let moved = rename::reroot(p, old, new);
                if core.plan.hashes.get(&moved).is_none() {
                    core.plan.hashes.insert(moved, *f);
                }
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

    fn audit(&self, event: &str, fields: Value) {
        if let Some(a) = &self.opts.audit {
            a.record(event, fields);
        }
    }

    /// A refused host key, algorithm set or login: each attempt is audited.
    fn audit_refusal(&self, e: &RemoteError) {
        let server = &self.opts.server;
        match (e.kind(), e.host_key_refusal()) {
            (ErrorKind::HostKey, Some((key, problem))) => self.audit(
                "host_key_refused",
                json!({"server": server, "problem": format!("{problem:?}").to_lowercase(),
                       "key_type": key.key_type, "fingerprint": key.fingerprint,
                       "reason": e.message()}),
            ),
            (ErrorKind::HostKey, None) => self.audit(
                "algorithms_refused",
                json!({"server": server, "reason": e.message()}),
            ),
            (ErrorKind::RootUnusable, _) => self.audit(
                "root_refused",
                json!({"server": server, "reason": e.message()}),
            ),
            (ErrorKind::Auth, _) => self.audit(
                "auth_failed",
                json!({"server": server, "reason": e.message()}),
            ),
            _ => {}
        }
    }

    /// What a finished reconcile changed on the remote.
    fn audit_outcome(&self, path: &[u8], report: &reconcile::Report) {
        for copy in &report.conflicts {
            self.audit("conflict_kept", json!({"copy": path_value(copy)}));
        }
        let p = path_value(path);
        match (&report.apply, &report.uploaded) {
            (Apply::Put(_), Some(u)) => self.audit(
                "confirmed",
                json!({"path": p, "size": u.bytes, "sha256": hex::encode(u.sha256),
                       "verified_by": u.verified_by.to_string()}),
            ),
            (Apply::Put(Confirmed::File(f)), None) => self.audit(
                "confirmed",
                json!({"path": p, "size": f.size, "sha256": hex::encode(f.sha256),
                       "verified_by": "the remote copy already there"}),
            ),
            (Apply::Put(Confirmed::Dir { mode }), None) => {
                self.audit("mkdir", json!({"path": p, "mode": format!("{mode:o}")}))
            }
            (Apply::Put(Confirmed::Symlink { target }), None) => {
                self.audit("symlink", json!({"path": p, "target": path_value(target)}))
            }
            (Apply::Remove, _) => self.audit("delete", json!({"path": p})),
            (Apply::Nothing, _) => {}
        }
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
                mirror: &self.mirror,
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
                json!({"path": path_value(path), "reason": e.message()}),
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

    /// Start-up reconciliation: marks every path where the local tree and the manifest
    /// disagree, so even changes whose journal records were lost converge.
    fn scan_local(&self) {
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
    fn unmatched_beneath(&self, top: &[u8]) -> Vec<Vec<u8>> {
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

    /// Lists the remote directories we manage and removes the temporary files that interrupted
    /// uploads left there (called only while nothing is in flight: then no temp name is an
    /// upload under way). At start-up (`report`), also reports what is there that we did not
    /// put there. That is left alone: the local side is authoritative, but nothing is deleted
    /// that ftpsync did not create.
    fn survey_remote(&self, conn: &mut Option<Box<dyn Transport>>, report: bool) {
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

    /// A mark covering a subtree is being worked on: everything beneath `root` locally now is
    /// marked too (its work waits for the root's).
    fn mark_local_beneath(&self, root: &[u8], seq: u64) {
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

/// Removes a directory of ftpsync's own and what it holds (files and links only); says
/// whether it went.
fn remove_tree(t: &mut dyn Transport, dir: &[u8]) -> bool {
    let entries = t.list(dir).unwrap_or_default();
    for (name, kind) in entries {
        if kind != crate::remote::FileKind::Dir {
            let _ = t.remove_file(&child_path(dir, &name));
        }
    }
    t.remove_dir(dir).is_ok()
}

/// Whether the manifest already describes this local entry (size and mtime for files).
fn matches_manifest(c: Option<&Confirmed>, fd: &OwnedFd, st: &local::Stat) -> bool {
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
