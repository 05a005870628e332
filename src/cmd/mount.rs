//! The mount daemon's life: prepare, (daemonize), recover, mount, serve, drain, exit.

use crate::audit::Audit;
use crate::config::{is_root, MountConfig};
use crate::fs::{Fs, Options};
use crate::fuse::FuseFs;
use crate::journal::Journal;
use crate::logfile::{self, RotatingLog};
use crate::mirror::Mirror;
use crate::remote::ConnectOptions;
use crate::statedir::{self, Access};
use crate::statedir::{DAEMON_LOCK, LOG_FILE, PID_FILE};
use crate::sync::{Connector, Engine, Options as SyncOptions};
use crate::{control, daemons, layout, local, mounts};
use anyhow::{anyhow, bail, Context, Result};
use fuser::{MountOption, SessionACL};
use log::{error, info, warn};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::daemons::state_dir_locked;
/// Compact the journal once it has grown past this many bytes since the last compaction.
const COMPACT_BYTES: u64 = 64 << 20;
/// How long `mount` waits for the first connection before going live without it.
const FIRST_CONTACT_WAIT: Duration = Duration::from_secs(5);

/// Mounts; returns when the mount ends (foreground) or once it is live (daemon parent).
pub fn mount(cfg: MountConfig, verbosity: log::LevelFilter) -> Result<()> {
    // All before the fork, so that `ftpsync mount` itself exits 1 saying why.
    require_dir("local directory", &cfg.local_dir)?;
    let detached = clear_stale_mount(&cfg)?;
    require_dir("mountpoint", &cfg.mountpoint)?;
    layout::check(&cfg.local_dir, &cfg.mountpoint, &cfg.state_dir)?;
    // Opened before mounting: with a shadow mount this is the only way to the files beneath.
    let root = local::open_root(&cfg.local_dir)
        .with_context(|| format!("cannot open {}", cfg.local_dir.display()))?;
    refuse_or_await_other_daemon(&cfg, &root)?;
    prepare_state_dir(&cfg.state_dir)?;
    let connect_opts = cfg.connect_options();
    connect_opts
        .check_secret_files()
        .map_err(anyhow::Error::msg)?;
    let start = Start {
        connect_opts,
        root,
        detached,
    };
    if cfg.foreground {
        let mut start = start;
        start
            .connect_opts
            .ask_for_missing_secrets()
            .context("cannot ask for the passphrase")?;
        init_logging(verbosity, None)?;
        return serve(cfg, start, &mut None);
    }
    daemonize(cfg, start, verbosity)
}

/// What the checks before the fork hand to the daemon.
struct Start {
    connect_opts: ConnectOptions,
    /// The local directory, opened before anything is mounted.
    root: OwnedFd,
    /// The stale mount detached on the way, to be logged once the log is open.
    detached: Option<String>,
}

fn require_dir(what: &str, dir: &Path) -> Result<()> {
    let md = std::fs::metadata(dir).with_context(|| format!("{what} {}", dir.display()))?;
    if !md.is_dir() {
        bail!("{what} {} is not a directory", dir.display());
    }
    Ok(())
}

/// Detaches the dead mount a SIGKILLed daemon of this mirror left on the mountpoint, so that a
/// restart needs no hand at `fusermount3 -uz`; refuses, untouched, any other mount in the way
/// that would make this one fail or stack (see [`mounts::verdict`]). Returns what it did.
fn clear_stale_mount(cfg: &MountConfig) -> Result<Option<String>> {
    let mnt = &cfg.mountpoint;
    let entries =
        mounts::mounted_on(&mountinfo_path(mnt)).context("reading /proc/self/mountinfo")?;
    let dead = std::fs::metadata(mnt).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    let locked = state_dir_locked(&cfg.state_dir);
    match mounts::verdict(mnt, entries.last(), dead, &fsname(cfg), locked) {
        mounts::Verdict::Go => Ok(None),
        mounts::Verdict::Refuse(why) => match daemons::Daemon::of_mount(mnt) {
            Some(d) if !dead => bail!("{why}; it is served by {d}"),
            _ => bail!("{why}"),
        },
        mounts::Verdict::Detach => {
            let status = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(mnt)
                .status()
                .context("cannot run fusermount3 to detach the stale mount")?;
            if !status.success() {
                bail!(
                    "{} is a dead mount left by a killed ftpsync daemon, and fusermount3 -uz \
                     could not detach it ({status})",
                    mnt.display()
                );
            }
            let note = format!(
                "detached the stale mount left by a killed daemon at {}",
                mnt.display()
            );
            eprintln!("ftpsync: {note}");
            Ok(Some(note))
        }
    }
}

/// The mountpoint as /proc/self/mountinfo spells it: canonical. A dead mount cannot be
/// resolved itself (ENOTCONN), so then its parent is, and its name appended.
fn mountinfo_path(mnt: &Path) -> std::path::PathBuf {
    if let Ok(c) = std::fs::canonicalize(mnt) {
        return c;
    }
    match (mnt.parent().map(std::fs::canonicalize), mnt.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => mnt.to_path_buf(),
    }
}

/// Creates the state dir 0700, refusing one that is not the mounting user's own, or holds a
/// symbolic link or someone else's file (see [`statedir::prepare`]).
pub fn prepare_state_dir(dir: &Path) -> Result<()> {
    statedir::prepare(dir).with_context(|| format!("state dir {}", dir.display()))
}

fn init_logging(level: log::LevelFilter, file: Option<RotatingLog>) -> Result<()> {
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    // fuser warns when it unmounts after fusermount3 -u already did: expected, not news.
    b.filter_module("fuser::session", log::LevelFilter::Error);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    if let Some(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    b.try_init().map_err(|e| anyhow!("logging: {e}"))
}

/// Forks; the parent waits on a pipe until the child reports the mount live (or why not).
fn daemonize(cfg: MountConfig, start: Start, level: log::LevelFilter) -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    let (rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet in this process, so fork is safe.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            drop(rd);
            let code = daemon_child(cfg, start, level, wr);
            std::process::exit(code);
        }
        _ => {
            drop(wr);
            parent_wait(rd, &cfg.state_dir)
        }
    }
}

fn parent_wait(mut rd: File, state_dir: &Path) -> Result<()> {
    let mut msg = String::new();
    let _ = rd.read_to_string(&mut msg);
    match msg.strip_prefix("ok") {
        Some(problem) => {
            if let Some(p) = problem.strip_prefix('\n') {
                eprintln!(
                    "ftpsync: mounted, but nothing reaches the server until this is fixed \
                     (writes stay local meanwhile):\n{p}"
                );
            }
            Ok(())
        }
        None if msg.is_empty() => bail!(
            "the daemon exited before the mount was live; see {}",
            state_dir.join(LOG_FILE).display()
        ),
        None => bail!("{}", msg.trim_end()),
    }
}

fn daemon_child(cfg: MountConfig, start: Start, level: log::LevelFilter, wr: File) -> i32 {
    // Standard error follows the log through rotations: panics land there too.
    let log = RotatingLog::open(
        &cfg.state_dir.join(LOG_FILE),
        logfile::MAX_BYTES,
        logfile::KEEP,
    )
    .and_then(|log| log.redirect(libc::STDERR_FILENO));
    let detached = log.map_err(anyhow::Error::from).and_then(|log| {
        detach()?;
        init_logging(level, Some(log))
    });
    let mut notify = Some(wr);
    let result = detached.and_then(|()| serve(cfg, start, &mut notify));
    match result {
        Ok(()) => 0,
        Err(e) => {
            error!("{e:#}");
            // Still there only if the failure came before the mount went live.
            if let Some(mut w) = notify.take() {
                let _ = write!(w, "{e:#}");
            }
            1
        }
    }
}

/// New session, no controlling terminal, stdin and stdout to /dev/null (stderr is the log).
fn detach() -> Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: setsid/dup2/chdir on valid descriptors and a static path.
    unsafe {
        libc::setsid();
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::chdir(c"/".as_ptr());
    }
    Ok(())
}

/// Blocks the signals that end the daemon in every thread (all threads inherit this mask),
/// so that one thread can wait for them and unmount cleanly.
fn block_exit_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn lock_state_dir(dir: &Path) -> Result<File> {
    let f = statedir::open(&dir.join(DAEMON_LOCK), Access::Keep)?;
    // SAFETY: flock on an open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let other = daemons::Daemon::of_state_dir(dir).unwrap_or_default();
        bail!("the state dir {} is in use by {other}", dir.display());
    }
    Ok(f)
}

/// Claims the local directory for this daemon's life (see [`daemons`]): a second daemon
/// mirroring the same folder, through any state dir, is refused naming this one.
fn claim_local_dir(cfg: &MountConfig, root: &OwnedFd) -> Result<File> {
    let dir = &cfg.local_dir;
    match daemons::claim_local_dir(root.as_fd()) {
        Ok(Some(claim)) => Ok(claim),
        Ok(None) => bail!(
            "{} is already mirrored by {}",
            dir.display(),
            daemons::Daemon::of_local_dir(dir)
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open {} to claim it", dir.display())),
    }
}

/// How much longer than its drain timeout a draining daemon is waited for (it also syncs
/// its journal and closes its connections).
const DRAIN_SLACK: Duration = Duration::from_secs(10);

/// Before the fork: another daemon on this state dir or this local directory is refused,
/// named, while it is mounted; once unmounted it is only draining its uploads, so this mount
/// says so and waits for it (bounded by its drain timeout), then takes over.
fn refuse_or_await_other_daemon(cfg: &MountConfig, root: &OwnedFd) -> Result<()> {
    let local = &cfg.local_dir;
    if daemons::live_mount_at(local) && cfg.mountpoint != *local {
        let other = daemons::Daemon::of_mount(local).unwrap_or_default();
        bail!(
            "{} is itself a live ftpsync mount, served by {other}: it is mirrored already; \
             unmount it first (ftpsync unmount {})",
            local.display(),
            local.display()
        );
    }
    let other = match daemons::Daemon::of_state_dir(&cfg.state_dir) {
        Some(d) => d,
        None if daemons::local_dir_claimed(root.as_fd()) => daemons::Daemon::of_local_dir(local),
        None => return Ok(()),
    };
    let unmount_hint = other.mountpoint.as_ref().map_or_else(String::new, |m| {
        format!(" (ftpsync unmount {})", m.display())
    });
    // Waited for only when known to be an ftpsync daemon whose mount is gone.
    let draining = other.state_dir.is_some() && !other.mounted();
    let Some(pid) = other.pid.filter(|_| draining) else {
        bail!(
            "{} is already mirrored by {other}; unmount it first{unmount_hint}",
            local.display()
        );
    };
    let wait = other.drain_timeout.unwrap_or(Duration::ZERO) + DRAIN_SLACK;
    eprintln!(
        "ftpsync: daemon pid {pid} is still draining {} after its unmount; waiting up to {} s \
         for it to exit ({other})",
        pending_words(other.state_dir.as_deref()),
        wait.as_secs()
    );
    if !daemons::wait_exit(pid, wait) {
        bail!(
            "daemon pid {pid} is still running {} s after its unmount (see `ftpsync status {}`); \
             wait for it to exit, or stop it with `kill {pid}` (what it has not sent stays \
             journaled for the next mount)",
            wait.as_secs(),
            other
                .state_dir
                .as_ref()
                .map_or_else(|| "STATE_DIR".into(), |d| d.display().to_string())
        );
    }
    eprintln!("ftpsync: daemon pid {pid} has exited; mounting");
    Ok(())
}

/// "N uploads" a daemon still has, as its control socket reports them ("its uploads" when it
/// does not answer).
fn pending_words(state_dir: Option<&Path>) -> String {
    let reply = state_dir.and_then(|d| {
        control::call_within(d, &control::Request::Status, Some(Duration::from_secs(2))).ok()
    });
    match reply.and_then(|r| r.mirror) {
        Some(m) => {
            let count = m.paths_left();
            format!("{count} upload{}", if count == 1 { "" } else { "s" })
        }
        None => "its uploads".into(),
    }
}

/// Runs the mount until it ends. `notify` (the daemon's pipe to its parent) gets "ok" and is
/// closed once the mount is live.
fn serve(cfg: MountConfig, start: Start, notify: &mut Option<File>) -> Result<()> {
    let Start {
        connect_opts,
        root,
        detached,
    } = start;
    let signals = block_exit_signals();
    let _lock = lock_state_dir(&cfg.state_dir)?;
    let _claim = claim_local_dir(&cfg, &root)?;
    if let Some(note) = detached {
        warn!("{note}");
    }
    cfg.record().context("writing the mount record")?;
    local::raise_nofile_limit();
    // SAFETY: umask cannot fail. The kernel already applied the caller's umask to every mode.
    unsafe { libc::umask(0) };

    let (journal, replay) = Journal::open(&cfg.state_dir.join(crate::statedir::JOURNAL))
        .with_context(|| format!("journal in {}", cfg.state_dir.display()))?;
    if replay.torn_bytes > 0 {
        warn!(
            "journal: dropped a torn tail of {} bytes (a record cut short by a crash)",
            replay.torn_bytes
        );
    }
    let journal = Arc::new(journal);
    let mirror = Arc::new(Mutex::new(
        Mirror::open(&cfg.state_dir).context("manifest")?,
    ));
    let audit = Arc::new(Audit::open(&cfg.state_dir).context("audit log")?);
    // Subscribed before the start-up scan, so the engine also sees the hashes it journals.
    let feed = journal.follow();
    let engine_root = root.try_clone()?;
    let opts = Options {
        passthrough: cfg.options.passthrough.unwrap_or(true) && is_root(),
        state_dir: cfg.state_dir.clone(),
    };
    let fs = Arc::new(Fs::new(root, journal.clone(), mirror.clone(), opts)?);
    let rehashed = fs.recover(&replay.entries);
    info!(
        "journal: {} records replayed; start-up scan hashed {} files",
        replay.entries.len(),
        rehashed
    );
    if journal.size_bytes() >= COMPACT_BYTES {
        fs.compact_journal();
    }
    let engine = Arc::new(Engine::start(
        engine_root,
        journal.clone(),
        mirror,
        feed,
        replay.entries,
        connector(connect_opts, cfg.state_dir.clone()),
        SyncOptions {
            connections: cfg.mirror.connections,
            writeback_delay: cfg.mirror.writeback_delay,
            bwlimit: cfg.mirror.bwlimit,
            audit: Some(audit),
            server: cfg.remote.to_string(),
        },
    )?);
    let hasher = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("hasher".into())
            .spawn(move || fs.hash_worker())?
    };
    spawn_flusher(fs.clone(), journal.clone())?;
    control::serve(&cfg.state_dir, fs.clone(), engine.clone()).context("control socket")?;

    let problem = engine.first_contact(FIRST_CONTACT_WAIT);
    if let Some(e) = &problem {
        warn!("the remote cannot be used until this is fixed: {e}");
        if cfg.mirror.require_remote {
            engine.shutdown(Duration::ZERO);
            bail!("not mounted (--require-remote): {e}");
        }
    }
    let ended = mount_and_run(&cfg, &fs, signals, notify, problem.map(|e| e.to_string()));
    info!("unmounted; finishing hash jobs and uploads");
    fs.stop_hashing();
    if hasher.join().is_err() {
        error!("hasher thread panicked");
    }
    engine.shutdown(cfg.mirror.drain_timeout);
    journal.sync().context("journal sync at exit")?;
    let _ = std::fs::remove_file(cfg.state_dir.join(PID_FILE));
    let _ = std::fs::remove_file(control::socket_path(&cfg.state_dir));
    ended?;
    info!("clean exit");
    Ok(())
}

/// Opens SFTP connections for the engine's workers. A refused host key comes with the command
/// that pins the key the server now presents.
fn connector(opts: ConnectOptions, state_dir: std::path::PathBuf) -> Connector {
    let warned = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move || {
        let c = crate::remote::open(&opts)
            .map_err(|e| crate::remote::explain_refusal(e, &opts.remote, &state_dir))?;
        if let Some(s) = c.session() {
            if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn_about(&opts.remote.to_string(), &s);
            }
            info!(
                "connected to {} ({} {}; {}; symlinks: {})",
                opts.remote,
                s.host_key.key_type,
                s.host_key.fingerprint,
                s.negotiated,
                s.symlinks.describe()
            );
        }
        Ok(c)
    })
}

/// What a server lacks that a user should know, said once per daemon.
fn warn_about(remote: &str, s: &crate::remote::SessionInfo) {
    if !s.modes {
        log::warn!(
            "{remote} ignores the permission bits it is asked to set: files arrive there with \
             its own defaults, whatever their mode here (verify shows the difference)"
        );
    }
    if !s.fsync {
        log::warn!(
            "{remote} lacks fsync@openssh.com: uploads are confirmed by their hash but not \
             forced to the server's disk (a server crash may lose the last ones)"
        );
    }
}

/// Mounts, reports the mount live, and serves it until it is unmounted.
/// `problem`: what the first connection found that the user must fix, said to the parent
/// (which prints it) along with the news that the mount is live.
fn mount_and_run(
    cfg: &MountConfig,
    fs: &Arc<Fs>,
    signals: libc::sigset_t,
    notify: &mut Option<File>,
    problem: Option<String>,
) -> Result<()> {
    let mut session =
        fuser::Session::new(FuseFs::new(fs.clone()), &cfg.mountpoint, &fuser_config(cfg))
            .with_context(|| format!("cannot mount on {}", cfg.mountpoint.display()))?;
    let pid_file = cfg.state_dir.join(PID_FILE);
    statedir::open(&pid_file, Access::Replace)?
        .write_all(format!("{}\n", std::process::id()).as_bytes())?;
    info!(
        "mounted {} on {} (mirror to {}, passthrough {})",
        cfg.local_dir.display(),
        cfg.mountpoint.display(),
        cfg.remote,
        if fs.passthrough_wanted() { "on" } else { "off" }
    );
    if let Some(mut w) = notify.take() {
        let _ = w.write_all(b"ok");
        if let Some(p) = problem {
            let _ = write!(w, "\n{p}");
        }
    }
    notify_systemd("READY=1");
    let mut unmounter = session.unmount_callable();
    let mountpoint = cfg.mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits on the set blocked above.
            unsafe { libc::sigwait(&signals, &mut sig) };
            info!("signal {sig}: unmounting");
            if let Err(e) = unmounter.unmount() {
                // Busy: detach it like libfuse does, so the daemon does not outlive its signal.
                warn!("unmount failed ({e}); detaching the mount lazily");
                let lazy = std::process::Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&mountpoint)
                    .status();
                if !lazy.is_ok_and(|s| s.success()) {
                    error!("lazy unmount of {} failed too", mountpoint.display());
                }
            }
        })?;
    session.run().context("FUSE session")
}

/// Tells systemd about the daemon (`Type=notify` units): READY=1 once the mount is live, so that
/// units ordered after ours find it mounted. Does nothing outside systemd.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let addr = match path.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name),
        _ => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        warn!(
            "cannot notify systemd ({state}) at {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// The mount's source as mount(8) and /proc/self/mountinfo show it.
fn fsname(cfg: &MountConfig) -> String {
    cfg.options
        .fsname
        .clone()
        .unwrap_or_else(|| format!("ftpsync:{}", cfg.local_dir.display()))
}

fn fuser_config(cfg: &MountConfig) -> fuser::Config {
    let o = &cfg.options;
    let mut c = fuser::Config::default();
    c.mount_options = vec![
        MountOption::FSName(fsname(cfg)),
        // fuser's mount(2) path (root) drops Subtype; the kernel takes it as a plain option,
        // so /proc/mounts shows fuse.ftpsync as mount -t fuse.ftpsync and fstab expect.
        MountOption::CUSTOM("subtype=ftpsync".into()),
    ];
    if o.default_permissions {
        c.mount_options.push(MountOption::DefaultPermissions);
    }
    if o.read_only {
        c.mount_options.push(MountOption::RO);
    }
    c.mount_options
        .extend(o.flags.iter().filter_map(|f| kernel_flag(f)));
    c.acl = if o.allow_other {
        SessionACL::All
    } else if o.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    c.n_threads = Some(o.threads);
    c.clone_fd = true;
    c
}

/// The generic mount flags, which the kernel takes as flags, not as FUSE options.
fn kernel_flag(name: &str) -> Option<MountOption> {
    Some(match name {
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "dirsync" => MountOption::DirSync,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        _ => return None,
    })
}

/// Once a second: makes the journal durable, rechecks files written through mappings, and
/// keeps the journal bounded.
fn spawn_flusher(fs: Arc<Fs>, journal: Arc<Journal>) -> Result<()> {
    std::thread::Builder::new()
        .name("journal-sync".into())
        .spawn(move || {
            let mut compacted_at = journal.size_bytes();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if journal.is_dirty() {
                    if let Err(e) = journal.sync() {
                        error!("journal sync: {e}");
                    }
                }
                fs.recheck_mapped(false);
                if journal.size_bytes() >= compacted_at + COMPACT_BYTES {
                    compacted_at = fs.compact_journal();
                }
            }
        })?;
    Ok(())
}
