//! Model-based test of the mirror (issue 9): random sequences of operations through a real
//! FUSE mount, mirrored to a real loopback OpenSSH sshd, checked against an in-memory model.
//!
//! What it proves, after every `ftpsync flush` that exits 0:
//! - the mount equals the model (kind, bytes, permission bits, symlink targets, root mode);
//! - the server equals the model at every path (mode without set-id bits), except where the
//!   server made its own version behind ftpsync's back and the local side has not changed
//!   that path since: ftpsync leaves such an entry alone. This "taint" travels with renames
//!   of the entry or of its ancestors; a local change of the path ends it;
//! - every server version survives somewhere on the server (at its path or in a conflict
//!   copy, any name holding `.ftpsync-conflict-`), unless the server itself later overwrote
//!   or removed it;
//! - no temporary upload name is left and nothing appeared outside the remote root.
//!
//! And flush exits 0 within a generous timeout: nothing in the mix needs a person.
//!
//! The mix: create, overwrite, pwrite, append, truncate, mkdir, rmdir, rm -r, unlink, chmod,
//! symlink, rename (files and trees, to new names, into a directory made a moment before,
//! over existing names), RENAME_EXCHANGE, touch/chmod of the mount root, pauses around the
//! write-back delay, flushes, server edits (modify, delete, file to symlink and back,
//! retarget, create at a name the local side may make later), daemon kill -9 and remount,
//! clean remounts, sshd restarts.
//!
//! Server edits are made only while the engine has nothing pending or in flight: SFTP has no
//! compare-and-swap, so an edit landing between ftpsync's check of a path and its rename over
//! it is a race no client can close; the test does not blame ftpsync for it. A server edit of
//! a file always changes its size: SFTP v3 shows ftpsync only size and whole-second mtime.
//!
//! tests/model-regressions.txt (failing seeds, and minimal traces as `script:` lines) is
//! replayed first; a failure prints the trace, the divergent paths and the line to add there.
//!
//! Safety: every file is opened with O_NOFOLLOW, symlink targets are relative names inside
//! the tree (never `..`, never absolute) or dangling names, and only 127.0.0.1 is used.
//!
//! Knobs (environment): MODEL_SEED (one seed, no regressions), MODEL_SECONDS (no new random
//! seed starts after this many seconds from the test's start, regressions included; default
//! 100), MODEL_OPS (operations per episode, default 60),
//! MODEL_SERVER_EDITS / MODEL_KILLS / MODEL_RESTARTS / MODEL_SETID (set-id modes in chmod) /
//! MODEL_ROOT (touch and chmod of the mount root) / MODEL_EXCHANGE (RENAME_EXCHANGE) /
//! MODEL_NEW_PARENT (renames into a directory the server may not have yet: off, each mkdir
//! settles first): 0 switches that part of the mix off;
//! MODEL_DELAY_MS (write-back delay; default drawn per seed), MODEL_FLUSH_SECS (default 45),
//! MODEL_STEP_SECS (a local step hanging longer fails, default 60), MODEL_KEEP_GOING=1 (go on
//! after a failing seed), MODEL_REGRESSIONS=0 (skip tests/model-regressions.txt),
//! MODEL_SHRINK=1 (shrink a failing trace), MODEL_TRACE (operations shown, default 40),
//! MODEL_SCRIPT (replay a hand-written trace instead, see `ops::parse_script`), MODEL_LOG
//! (RUST_LOG for the daemon), MODEL_VERIFY (the daemon's --verify, default
//! readback: see `verify_mode`). A failing seed's daemon and sshd logs are kept in
//! $TMPDIR/ftpsync-model-SEED/.
//! The last line printed is `MODEL-COUNTS ...`, summed by scripts/soak.sh.

mod common;
#[path = "model/ops.rs"]
mod ops;
#[path = "model/oracle.rs"]
mod oracle;
#[path = "model/server.rs"]
mod server;
#[path = "model/tree.rs"]
mod tree;

use common::Mount;
use ops::{Mix, Op};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tree::Tree;

/// xorshift64*: small, seedable, the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn env_flag(name: &str, default: bool) -> bool {
    env_u64(name).map_or(default, |v| v != 0)
}

/// One episode's settings: a seed and the mix. With the seed, they reproduce its operations.
#[derive(Clone, Copy, Debug)]
struct Config {
    seed: u64,
    ops: usize,
    mix: Mix,
}

impl Config {
    fn new(seed: u64, ops: usize, edits: bool, kills: bool, restarts: bool) -> Config {
        let delay_ms = env_u64("MODEL_DELAY_MS").unwrap_or([200, 400, 700][(seed % 3) as usize]);
        Config {
            seed,
            ops,
            mix: Mix {
                server_edits: edits,
                kills,
                restarts,
                setid: env_flag("MODEL_SETID", true),
                root: env_flag("MODEL_ROOT", true),
                exchange: env_flag("MODEL_EXCHANGE", true),
                new_parent: env_flag("MODEL_NEW_PARENT", true),
                delay_ms,
            },
        }
    }

    fn from_env(seed: u64) -> Config {
        Config::new(
            seed,
            env_u64("MODEL_OPS").unwrap_or(60) as usize,
            env_flag("MODEL_SERVER_EDITS", true),
            env_flag("MODEL_KILLS", true),
            env_flag("MODEL_RESTARTS", true),
        )
    }

    fn rerun(&self) -> String {
        let b = |v: bool| u8::from(v);
        format!(
            "MODEL_SEED={} MODEL_OPS={} MODEL_SERVER_EDITS={} MODEL_KILLS={} MODEL_RESTARTS={} \
             MODEL_SETID={} MODEL_ROOT={} MODEL_EXCHANGE={} MODEL_NEW_PARENT={} MODEL_DELAY_MS={} \
             cargo test --test model -- --nocapture",
            self.seed,
            self.ops,
            b(self.mix.server_edits),
            b(self.mix.kills),
            b(self.mix.restarts),
            b(self.mix.setid),
            b(self.mix.root),
            b(self.mix.exchange),
            b(self.mix.new_parent),
            self.mix.delay_ms
        )
    }

    /// The line kept in tests/model-regressions.txt.
    fn regression_line(&self) -> String {
        let b = |v: bool| u8::from(v);
        format!(
            "{} ops={} edits={} kills={} restarts={} setid={} root={} exchange={} new_parent={} \
             delay={}",
            self.seed,
            self.ops,
            b(self.mix.server_edits),
            b(self.mix.kills),
            b(self.mix.restarts),
            b(self.mix.setid),
            b(self.mix.root),
            b(self.mix.exchange),
            b(self.mix.new_parent),
            self.mix.delay_ms
        )
    }
}

/// What the soak script sums.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    episodes: u64,
    ops: u64,
    flushes: u64,
    kills: u64,
    sshd_restarts: u64,
    server_edits: u64,
    divergences: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.episodes += o.episodes;
        self.ops += o.ops;
        self.flushes += o.flushes;
        self.kills += o.kills;
        self.sshd_restarts += o.sshd_restarts;
        self.server_edits += o.server_edits;
        self.divergences += o.divergences;
    }
}

/// Kills the daemon when a local step hangs, so the blocked system call returns (ENOTCONN)
/// and the test reports instead of hanging the suite.
struct Watchdog {
    step: Mutex<Option<(Instant, String)>>,
    pid: AtomicI32,
    fired: AtomicBool,
    limit: Duration,
}

impl Watchdog {
    fn start(limit: Duration) -> Arc<Watchdog> {
        let w = Arc::new(Watchdog {
            step: Mutex::new(None),
            pid: AtomicI32::new(0),
            fired: AtomicBool::new(false),
            limit,
        });
        let weak = Arc::downgrade(&w);
        std::thread::spawn(move || {
            while let Some(w) = weak.upgrade() {
                w.tick();
                drop(w);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        w
    }

    fn tick(&self) {
        let step = self.step.lock().expect("watchdog lock");
        let Some((since, what)) = step.as_ref() else {
            return;
        };
        let pid = self.pid.load(Ordering::SeqCst);
        if since.elapsed() > self.limit && pid > 0 && !self.fired.swap(true, Ordering::SeqCst) {
            eprintln!(
                "model: step `{what}` hung for {:?}; killing daemon {pid} so it returns",
                self.limit
            );
            // SAFETY: kill(2) on the daemon pid this test mounted.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    fn begin(&self, what: String) {
        *self.step.lock().expect("watchdog lock") = Some((Instant::now(), what));
    }

    fn end(&self) {
        *self.step.lock().expect("watchdog lock") = None;
    }
}

/// A failing episode: what diverged, and the operations that led there.
struct Failure {
    config: Config,
    /// The hand-written trace this episode replayed (a `script:` regression), if any.
    script: Option<String>,
    /// The operations made, the failing one last.
    done: Vec<Op>,
    what: Vec<String>,
    log_tail: String,
}

impl Failure {
    /// The first word of the first divergence ("server", "mount", "flush", ...): a shrunk
    /// trace must keep failing the same way.
    fn class(&self) -> String {
        let first = self.what.first().cloned().unwrap_or_default();
        first
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The seed's line for tests/model-regressions.txt, cut right after the failing
    /// operation (the draws are deterministic, so the prefix is the same).
    fn regression_line(&self) -> String {
        if let Some(script) = &self.script {
            return format!("script: {script}");
        }
        Config {
            ops: self.done.len(),
            ..self.config
        }
        .regression_line()
    }

    fn report(&self, shown: usize) -> String {
        let from = self.done.len().saturating_sub(shown);
        let ops: Vec<String> = self.done[from..]
            .iter()
            .enumerate()
            .map(|(i, op)| format!("  #{:<3} {}", from + i, op.show()))
            .collect();
        format!(
            "model: {} FAILED at op #{} of {}\n\
             rerun: {}\n\
             regression line: {}\n\
             last {} operations:\n{}\n\
             divergences ({}):\n  {}\n\
             daemon log (tail):\n{}",
            self.script
                .as_ref()
                .map_or_else(|| format!("seed {}", self.config.seed), |_| "script".into()),
            self.done.len().saturating_sub(1),
            self.config.ops,
            self.script.as_ref().map_or_else(
                || self.config.rerun(),
                |s| format!("MODEL_SCRIPT='{s}' cargo test --test model -- --nocapture")
            ),
            self.regression_line(),
            ops.len(),
            ops.join("\n"),
            self.what.len(),
            self.what
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  "),
            self.log_tail
        )
    }
}

/// One mount, one sshd, one model, and the operations made on them.
struct Episode {
    config: Config,
    m: Mount,
    t: Tree,
    remote: PathBuf,
    outside: oracle::Outside,
    counts: Counts,
    watchdog: Arc<Watchdog>,
    flush_secs: u64,
}

/// How the daemon checks uploads: read-back unless MODEL_VERIFY says otherwise. Exec runs the
/// hash command through root's login shell, whose start-up here (pyenv's rehash, under a lock
/// that a killed sshd child can leave behind) can take a minute: that would test the machine,
/// and this test's sshd restarts would kill such shells mid-lock for everyone else.
fn verify_mode() -> String {
    std::env::var("MODEL_VERIFY").unwrap_or_else(|_| "readback".into())
}

fn home_of_root() -> PathBuf {
    // SAFETY: getpwuid(0) returns a pointer into static storage or null; read at once.
    unsafe {
        let pw = libc::getpwuid(0);
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return PathBuf::from("/root");
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        PathBuf::from(dir.to_string_lossy().into_owned())
    }
}

impl Episode {
    fn start(config: Config, watchdog: Arc<Watchdog>) -> Episode {
        let delay = format!("{}", config.mix.delay_ms as f64 / 1000.0);
        let mut builder = Mount::builder();
        if let Ok(level) = std::env::var("MODEL_LOG") {
            builder = builder.env("RUST_LOG", &level);
        }
        let mut m = builder
            .arg("--writeback-delay")
            .arg(&delay)
            // A stuck path must not keep a remount waiting beyond the harness's patience.
            .arg("--drain-timeout")
            .arg("3")
            .arg("--verify")
            .arg(&verify_mode())
            .prepare();
        let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
        let outside = oracle::Outside::new(&remote, &home_of_root());
        m.mount();
        watchdog.pid.store(m.pid(), Ordering::SeqCst);
        watchdog.fired.store(false, Ordering::SeqCst);
        let root_mode = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&m.mnt).expect("stat mount root").mode() & 0o7777
        };
        Episode {
            config,
            m,
            t: Tree::new(root_mode),
            remote,
            outside,
            counts: Counts {
                episodes: 1,
                ..Counts::default()
            },
            watchdog,
            flush_secs: env_u64("MODEL_FLUSH_SECS").unwrap_or(45),
        }
    }

    /// Makes one operation; `Err` holds the divergences.
    fn step(&mut self, index: usize, op: &Op) -> Result<(), Vec<String>> {
        self.counts.ops += 1;
        match op {
            Op::Pause { millis } => std::thread::sleep(Duration::from_millis(*millis)),
            Op::Flush => self.flush_and_check()?,
            Op::ServerEdit {
                path,
                kind,
                token,
                len,
            } => self.server_edit(index, path, kind, token, *len)?,
            Op::KillAndRemount => {
                self.m.kill9();
                self.remount();
                self.counts.kills += 1;
            }
            Op::Remount => self.remount(),
            Op::RestartSshd => {
                self.m.sshd.as_mut().expect("sshd").restart();
                self.counts.sshd_restarts += 1;
            }
            local => {
                if !ops::applicable(&self.t, local) {
                    return Ok(());
                }
                self.watchdog.begin(local.show());
                let r = ops::apply_local(&self.m.mnt, &mut self.t, local);
                self.watchdog.end();
                if r.is_ok() && matches!(local, Op::Mkdir { .. }) && !self.config.mix.new_parent {
                    self.wait_idle()?;
                }
                if let Err(e) = r {
                    let hung = if self.watchdog.fired.load(Ordering::SeqCst) {
                        " (it hung: the watchdog killed the daemon)"
                    } else {
                        ""
                    };
                    return Err(vec![format!("mount: `{}` failed: {e}{hung}", local.show())]);
                }
            }
        }
        Ok(())
    }

    /// Copies the daemon's, its audit and sshd's logs where a post-mortem can read them (the mount's
    /// own directories go with the episode).
    fn keep_logs(&self) -> String {
        let dir = std::env::temp_dir().join(format!("ftpsync-model-{}", self.config.seed));
        let _ = std::fs::create_dir_all(&dir);
        let sshd = self.m.sshd.as_ref().expect("sshd").log_path();
        for (from, to) in [
            (self.m.state.join("ftpsync.log"), "ftpsync.log"),
            (self.m.state.join("audit.log"), "audit.log"),
            (sshd, "sshd.log"),
        ] {
            let _ = std::fs::copy(from, dir.join(to));
        }
        dir.display().to_string()
    }

    fn remount(&mut self) {
        self.m.remount();
        self.watchdog.pid.store(self.m.pid(), Ordering::SeqCst);
        self.watchdog.fired.store(false, Ordering::SeqCst);
    }

    fn flush_and_check(&mut self) -> Result<(), Vec<String>> {
        self.counts.flushes += 1;
        let started = Instant::now();
        let out = self.m.flush_for(self.flush_secs);
        if !out.ok() {
            return Err(vec![format!(
                "flush: exit {:?} after {:.1}s (timeout {}s)\nstdout: {}\nstderr: {}",
                out.status.code(),
                started.elapsed().as_secs_f64(),
                self.flush_secs,
                out.stdout.trim(),
                out.stderr.trim()
            )]);
        }
        let mut d = oracle::check_mount(&self.m.mnt, &self.t);
        d.extend(oracle::check_server(&self.remote, &self.t));
        d.extend(self.outside.check());
        if d.is_empty() {
            Ok(())
        } else {
            Err(d)
        }
    }

    /// Waits until the engine has nothing pending or in flight (see the header), flushing
    /// if it does not get there by itself.
    fn wait_idle(&mut self) -> Result<(), Vec<String>> {
        let deadline = Instant::now() + Duration::from_millis(self.config.mix.delay_ms + 3000);
        while Instant::now() < deadline {
            if is_idle(&self.m.status_json()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.flush_and_check()
    }

    fn server_edit(
        &mut self,
        index: usize,
        path: &str,
        kind: &ops::ServerEditKind,
        token: &str,
        len: usize,
    ) -> Result<(), Vec<String>> {
        self.wait_idle()?;
        match server::edit(&self.remote, &mut self.t, path, kind, token, len, index) {
            Ok(true) => self.counts.server_edits += 1,
            Ok(false) => {}
            Err(e) => return Err(vec![format!("server edit {kind:?} of {path}: {e}")]),
        }
        Ok(())
    }
}

/// Nothing journaled waits to be applied, hashed or uploaded.
fn is_idle(st: &serde_json::Value) -> bool {
    let zero = |v: &serde_json::Value| v.as_u64() == Some(0);
    let m = &st["mirror"];
    !m.is_null()
        && zero(&m["pending"])
        && zero(&m["in_flight"])
        && zero(&st["daemon"]["pending_hashes"])
        && st["pending"].as_array().is_some_and(Vec::is_empty)
}

/// Runs one episode: the operations drawn from the seed, or `replay` (a shrunk trace).
fn run(
    config: Config,
    replay: Option<&[Op]>,
    watchdog: &Arc<Watchdog>,
) -> (Counts, Option<Failure>) {
    run_as(config, replay, None, watchdog)
}

/// `run`, naming the hand-written trace the operations came from.
fn run_as(
    config: Config,
    replay: Option<&[Op]>,
    script: Option<&str>,
    watchdog: &Arc<Watchdog>,
) -> (Counts, Option<Failure>) {
    let start = catch_unwind(AssertUnwindSafe(|| {
        Episode::start(config, watchdog.clone())
    }));
    let mut ep = match start {
        Ok(ep) => ep,
        Err(p) => {
            let failure = Failure {
                config,
                script: script.map(str::to_string),
                done: Vec::new(),
                what: vec![format!(
                    "harness: the episode did not start: {}",
                    panic_text(&p)
                )],
                log_tail: String::new(),
            };
            let counts = Counts {
                episodes: 1,
                divergences: 1,
                ..Counts::default()
            };
            return (counts, Some(failure));
        }
    };
    let mut rng = Rng::new(config.seed);
    let mut done: Vec<Op> = Vec::new();
    let mut queue: Vec<Op> = replay.map(|r| r.to_vec()).unwrap_or_default();
    queue.reverse();
    let mut tokens = 0u64;
    let token_seed = config.seed;
    let mut result = Ok(());
    loop {
        let op = if replay.is_some() {
            match queue.pop() {
                Some(op) => op,
                None => break,
            }
        } else {
            if queue.is_empty() {
                if done.len() >= config.ops {
                    break;
                }
                let mut next_token = || {
                    tokens += 1;
                    format!(
                        "{:016x}",
                        Rng::new(token_seed ^ tokens.rotate_left(32)).next_u64()
                    )
                };
                queue = ops::draw(&ep.t, &mut rng, &config.mix, &mut next_token);
                queue.reverse();
            }
            queue.pop().expect("drawn")
        };
        done.push(op.clone());
        let index = done.len() - 1;
        result = catch_unwind(AssertUnwindSafe(|| ep.step(index, &op)))
            .unwrap_or_else(|p| Err(vec![format!("harness: {}", panic_text(&p))]));
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() && done.last() != Some(&Op::Flush) {
        done.push(Op::Flush);
        result = catch_unwind(AssertUnwindSafe(|| ep.flush_and_check()))
            .unwrap_or_else(|p| Err(vec![format!("harness: {}", panic_text(&p))]));
    }
    let mut counts = ep.counts;
    let failure = result.err().map(|what| {
        counts.divergences += 1;
        Failure {
            config,
            script: script.map(str::to_string),
            done,
            what,
            log_tail: format!("{}\nfull logs kept in {}", ep.m.log_tail(), ep.keep_logs()),
        }
    });
    (counts, failure)
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Delta debugging by hand's rule: drop chunks of the trace while it keeps failing the same
/// way, halving the chunk each round; bounded by MODEL_SHRINK_SECS.
fn shrink(f: &Failure, watchdog: &Arc<Watchdog>) -> Vec<Op> {
    let budget = Duration::from_secs(env_u64("MODEL_SHRINK_SECS").unwrap_or(900));
    let started = Instant::now();
    let class = f.class();
    let mut ops = f.done.clone();
    let mut chunk = ops.len() / 2;
    while chunk >= 1 && started.elapsed() < budget {
        let mut i = 0;
        let mut removed_any = false;
        while i < ops.len() && started.elapsed() < budget {
            let mut candidate = ops.clone();
            candidate.drain(i..(i + chunk).min(candidate.len()));
            let (_, failed) = run(f.config, Some(&candidate), watchdog);
            if failed.is_some_and(|g| g.class() == class) {
                eprintln!("model: shrink: {} operations still fail", candidate.len());
                ops = candidate;
                removed_any = true;
            } else {
                i += chunk;
            }
        }
        if !removed_any {
            chunk /= 2;
        }
    }
    ops
}

/// Seeds kept in tests/model-regressions.txt (`SEED ops=N edits=0|1 kills=0|1 restarts=0|1
/// setid=0|1 root=0|1 exchange=0|1 new_parent=0|1 delay=MS  # why`), skipping those that need a part of the mix the environment switched off.
fn regressions() -> Vec<Planned> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/model-regressions.txt");
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            if let Some(script) = l.strip_prefix("script:") {
                return planned_script(script.trim());
            }
            let mut words = l.split_whitespace();
            let seed: u64 = words.next()?.parse().ok()?;
            let mut kv = std::collections::HashMap::new();
            for w in words {
                let (k, v) = w.split_once('=')?;
                kv.insert(k.to_string(), v.parse::<u64>().ok()?);
            }
            let get = |k: &str, d: u64| kv.get(k).copied().unwrap_or(d);
            let mut c = Config::new(
                seed,
                get("ops", 60) as usize,
                get("edits", 1) != 0,
                get("kills", 1) != 0,
                get("restarts", 1) != 0,
            );
            c.mix.delay_ms = get("delay", c.mix.delay_ms);
            c.mix.setid = get("setid", 1) != 0;
            c.mix.root = get("root", 1) != 0;
            c.mix.exchange = get("exchange", 1) != 0;
            c.mix.new_parent = get("new_parent", 1) != 0;
            allowed_by_env(&c.mix).then_some(Planned {
                config: c,
                script: None,
            })
        })
        .collect()
}

/// An episode to run: drawn from a seed, or replaying a hand-written trace.
struct Planned {
    config: Config,
    script: Option<(String, Vec<Op>)>,
}

/// Whether the environment leaves on every part of the mix that `mix` uses.
fn allowed_by_env(mix: &Mix) -> bool {
    let allowed = |name: &str, on: bool| !on || env_flag(name, true);
    allowed("MODEL_SERVER_EDITS", mix.server_edits)
        && allowed("MODEL_SETID", mix.setid)
        && allowed("MODEL_ROOT", mix.root)
        && allowed("MODEL_EXCHANGE", mix.exchange)
        && allowed("MODEL_NEW_PARENT", mix.new_parent)
        && allowed("MODEL_KILLS", mix.kills)
        && allowed("MODEL_RESTARTS", mix.restarts)
}

/// A `script:` regression, with the parts of the mix its operations use (so that, say,
/// MODEL_SERVER_EDITS=0 skips one with a server edit).
fn planned_script(script: &str) -> Option<Planned> {
    let ops = ops::parse_script(script).unwrap_or_else(|e| panic!("model-regressions.txt: {e}"));
    let any = |f: &dyn Fn(&Op) -> bool| ops.iter().any(f);
    let mut config = Config::from_env(0);
    config.ops = ops.len();
    config.mix.server_edits = any(&|o| matches!(o, Op::ServerEdit { .. }));
    config.mix.kills = any(&|o| matches!(o, Op::KillAndRemount));
    config.mix.restarts = any(&|o| matches!(o, Op::RestartSshd));
    config.mix.root = any(&|o| matches!(o, Op::TouchRoot | Op::ChmodRoot { .. }));
    config.mix.exchange = any(&|o| matches!(o, Op::Exchange { .. }));
    config.mix.setid = any(&|o| matches!(o, Op::Chmod { mode, .. } if mode & 0o6000 != 0));
    // Scripts say where they pause; a mkdir settles only when they say so.
    config.mix.new_parent = true;
    allowed_by_env(&config.mix).then(|| Planned {
        config,
        script: Some((script.to_string(), ops)),
    })
}

/// Replays a hand-written trace (see `ops::parse_script`) with the mix's settings from the
/// environment: for confirming a minimal repro.
fn run_script(script: &str, watchdog: &Arc<Watchdog>) {
    let ops = ops::parse_script(script).unwrap_or_else(|e| panic!("MODEL_SCRIPT: {e}"));
    let config = Config::from_env(0);
    let (_, failure) = run_as(config, Some(&ops), Some(script), watchdog);
    if let Some(f) = failure {
        panic!("{}", f.report(ops.len() + 1));
    }
}

fn clock_seed() -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    (n ^ (u64::from(std::process::id()) << 32)) % 1_000_000_000
}

#[test]
fn random_operations_mirror_to_the_server_and_lose_no_server_version() {
    common::require_tool("fusermount3");
    let one_seed = env_u64("MODEL_SEED");
    let keep_going = env_flag("MODEL_KEEP_GOING", false);
    let budget = Duration::from_secs(env_u64("MODEL_SECONDS").unwrap_or(100));
    let shown = env_u64("MODEL_TRACE").unwrap_or(40) as usize;
    let watchdog = Watchdog::start(Duration::from_secs(
        env_u64("MODEL_STEP_SECS").unwrap_or(60),
    ));
    let mut plan: Vec<Planned> = if env_flag("MODEL_REGRESSIONS", one_seed.is_none()) {
        regressions()
    } else {
        Vec::new()
    };
    if let Some(s) = one_seed {
        plan.push(Planned {
            config: Config::from_env(s),
            script: None,
        });
    }
    if let Ok(script) = std::env::var("MODEL_SCRIPT") {
        return run_script(&script, &watchdog);
    }
    let started = Instant::now();
    let mut total = Counts::default();
    let mut seeds = Vec::new();
    let mut failures = Vec::new();
    let mut next_seed = clock_seed();
    loop {
        let Planned { config, script } = if !plan.is_empty() {
            plan.remove(0)
        } else if one_seed.is_none() && started.elapsed() < budget {
            next_seed += 1;
            Planned {
                config: Config::from_env(next_seed),
                script: None,
            }
        } else {
            break;
        };
        let (counts, failure) = match &script {
            Some((text, ops)) => {
                eprintln!("model: script {text}");
                run_as(config, Some(ops), Some(text), &watchdog)
            }
            None => {
                eprintln!(
                    "model: seed {} ({:?}); rerun: {}",
                    config.seed,
                    config.mix,
                    config.rerun()
                );
                seeds.push(config.seed);
                run(config, None, &watchdog)
            }
        };
        total.add(&counts);
        if let Some(f) = failure {
            eprintln!("{}", f.report(shown));
            if env_flag("MODEL_SHRINK", false) {
                let small = shrink(&f, &watchdog);
                eprintln!(
                    "model: seed {} shrunk to {} operations:",
                    config.seed,
                    small.len()
                );
                for (i, op) in small.iter().enumerate() {
                    eprintln!("  #{i:<3} {}", op.show());
                }
            }
            failures.push(f.regression_line());
            if !keep_going {
                break;
            }
        }
    }
    println!(
        "MODEL-COUNTS episodes={} ops={} flushes={} kills={} sshd_restarts={} server_edits={} \
         divergences={} seconds={} seeds={}",
        total.episodes,
        total.ops,
        total.flushes,
        total.kills,
        total.sshd_restarts,
        total.server_edits,
        total.divergences,
        started.elapsed().as_secs(),
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        failures.is_empty(),
        "{} seed(s) diverged (details above); keep them in tests/model-regressions.txt:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
