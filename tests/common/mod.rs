//! Test harness: a real `ftpsync` mount over a real FUSE connection.
//!
//! Every `Mount` owns a fresh temporary base directory (mode 0755, so that tests
//! that switch users can still reach it) holding `local/` (the backing
//! directory), `mnt/` (the mountpoint), `state/` (the daemon's state dir) and
//! `plain/` (a plain directory on the same filesystem, for comparisons).
//! Nothing is shared between tests: no fixed paths, no fixed ports.
//!
//! Dropping a `Mount` always unmounts (`fusermount3 -u`, then `-uz`) and waits,
//! bounded, for the daemon to go away, also when the test panicked.
#![allow(dead_code)]

pub mod mirror_tree;
pub mod sshd;
pub mod sys;

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ftpsync");

/// The remote a mount names when the builder asks for no sshd (`no_remote()`): the FUSE side
/// must work (and journal) whether or not the remote is reachable.
pub const REMOTE: &str = "sftp://test@127.0.0.1:1/remote";

/// How long a daemon gets to go away after an unmount or a kill.
pub const EXIT_WAIT: Duration = Duration::from_secs(10);
/// How long `ftpsync mount` gets to return (it returns once the mount is live).
pub const MOUNT_WAIT: Duration = Duration::from_secs(30);
/// How long a one-shot `ftpsync status`/`flush` command gets.
pub const CMD_WAIT: Duration = Duration::from_secs(60);

/// Output of a command run with a deadline. Output goes to files, never to
/// pipes, so a daemon that inherits them cannot make us wait forever.
#[derive(Debug)]
pub struct CmdOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
}

impl CmdOut {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Panics with the full command, exit status and output unless it succeeded.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "command failed: {}\nexit: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion with a deadline, capturing stdout and stderr via
/// temp files. Kills it (SIGKILL) and panics past the deadline.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> CmdOut {
    let cmdline = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("tempfile for stdout");
    let mut err = tempfile::tempfile().expect("tempfile for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(st) => break st,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("command timed out after {timeout:?}: {cmdline}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let read_back = |f: &mut fs::File| {
        use std::io::Seek;
        let mut s = Vec::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut s).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    CmdOut {
        status,
        stdout: read_back(&mut out),
        stderr: read_back(&mut err),
        cmdline,
    }
}

/// Runs `ftpsync ARGS...` with the default deadline.
pub fn ftpsync<I, S>(args: I) -> CmdOut
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut cmd = Command::new(BIN);
    for a in args {
        cmd.arg(a.into());
    }
    run_with_timeout(cmd, CMD_WAIT)
}

/// File names that trip shells, quoting and UTF-8 assumptions; each must reach the other side
/// byte for byte.
pub const HOSTILE_NAMES: &[&[u8]] = &[
    b"it's \"quoted\"",
    b"$(touch pwned-by-name)",
    b"new\nline",
    b"-rf",
    b"back\\slash",
    b"\xff\xfeinvalid utf8",
    b" leading and trailing ",
    b"tab\there",
];

/// renameat2(2) on two absolute paths (`flags`: libc::RENAME_EXCHANGE, RENAME_NOREPLACE).
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let c =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: renameat2 with NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SHA-256 of a byte slice, lower-case hex.
/// Writes `bytes` to `p`, never following a symlink at `p` (tests plant hostile links; the
/// kernel would follow one out of the mount).
pub fn put_nofollow(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    f.write_all(bytes).expect("write");
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of a file's content, lower-case hex; streamed (some trees hold 64 MiB files).
pub fn sha256_file(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(h.finalize())
}

/// Every entry beneath `root` (symlinks not followed), each directory before its contents
/// and siblings in name order: (path relative to `root` as bytes, full path, lstat).
pub fn walk(root: &Path) -> Vec<(Vec<u8>, PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries.into_iter().rev() {
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
            if md.is_dir() {
                stack.push(p.clone());
            }
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.push((rel, p, md));
        }
    }
    out
}

/// A seeded xorshift64 for the random-sequence tests: the same seed, the same choices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), the same for the same seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Unescapes a path field of /proc/self/mountinfo (`\040` etc.).
fn unescape_mountinfo(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The fstypes of every mount whose mountpoint is `path`, innermost last.
pub fn mount_fstypes(path: &Path) -> Vec<String> {
    // Bytes: a mountpoint's path need not be UTF-8 (mountinfo escapes only space, tab,
    // newline and backslash).
    let info = fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    let mut found = Vec::new();
    for line in info.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if fields.len() < 5 || sep + 1 >= fields.len() {
            continue;
        }
        if unescape_mountinfo(fields[4]) == want {
            found.push(String::from_utf8_lossy(fields[sep + 1]).into_owned());
        }
    }
    found
}

/// The fstype an ftpsync mount shows in /proc/self/mountinfo.
pub const FSTYPE: &str = "fuse.ftpsync";

fn is_our_fstype(t: &str) -> bool {
    t == FSTYPE
}

/// True when an `ftpsync` FUSE mount sits on `path`.
pub fn is_ftpsync_mounted(path: &Path) -> bool {
    mount_fstypes(path).iter().any(|t| is_our_fstype(t))
}

/// True while `pid` is a live (not zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(_) => return false,
    };
    // state is the first field after the last ')'
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    state != "Z" && state != "X"
}

/// How a daemon ended, as far as the harness can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Reaped by us (the test process is the daemons' subreaper): exit code.
    Exited(i32),
    /// Reaped by us: killed by this signal.
    Signaled(i32),
    /// Gone, but reaped by someone else: exit status unknown.
    Unknown,
}

/// Makes this test process the subreaper of its orphaned descendants, so a
/// daemonized `ftpsync` becomes our child once its launcher exits: we can
/// then reap it and read its real exit status (and no zombie is left, even
/// where PID 1 does not reap).
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a process flag.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if r != 0 {
            eprintln!(
                "harness: PR_SET_CHILD_SUBREAPER failed ({}); daemon exit codes unknown",
                std::io::Error::last_os_error()
            );
        }
    });
}

/// Waits up to `timeout` for `pid` to end, reaping it when it is our child.
/// `None` if it is still alive at the deadline.
pub fn wait_daemon(pid: i32, timeout: Duration) -> Option<Ended> {
    let start = Instant::now();
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid on one specific pid with an out-pointer to a local.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(st) {
                Ended::Exited(libc::WEXITSTATUS(st))
            } else if libc::WIFSIGNALED(st) {
                Ended::Signaled(libc::WTERMSIG(st))
            } else {
                Ended::Unknown
            });
        }
        if r == -1 && !pid_alive(pid) {
            // not our child (or already reaped): only "gone" is known
            return Some(Ended::Unknown);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `pid` is gone or `timeout` passed; true if gone.
pub fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    wait_daemon(pid, timeout).is_some()
}

/// Runs `fusermount3 ARGS MNT`, returning whether it succeeded (and its stderr).
pub fn fusermount(args: &[&str], mnt: &Path) -> (bool, String) {
    let mut cmd = Command::new("fusermount3");
    cmd.args(args).arg(mnt);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    (out.ok(), out.stderr)
}

/// `fusermount3 -u MNT`, retried for up to 3 s while it fails with EBUSY:
/// with tests running in parallel, a child another thread is spawning can
/// hold a copy of our descriptors for a moment between fork and exec.
pub fn fusermount_u(mnt: &Path) -> (bool, String) {
    let start = Instant::now();
    loop {
        let (ok, err) = fusermount(&["-u"], mnt);
        if ok || !err.contains("busy") || start.elapsed() > Duration::from_secs(3) {
            return (ok, err);
        }
        eprintln!("harness: {} busy, retrying the unmount", mnt.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options for a test mount.
#[derive(Default, Debug, Clone)]
pub struct MountBuilder {
    opts: Vec<String>,
    shadow: bool,
    keep: bool,
    extra_env: Vec<(String, String)>,
    no_remote: bool,
    flavor: sshd::Flavor,
    extra_args: Vec<String>,
    no_known_hosts: bool,
    identity: Option<PathBuf>,
}

impl MountBuilder {
    /// Adds one `-o` option (e.g. `passthrough`, `nopassthrough`, `allow_other`).
    pub fn opt(mut self, o: &str) -> Self {
        self.opts.push(o.to_string());
        self
    }

    /// Shadow mode: mount over the local directory itself (no MOUNTPOINT argument).
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Keeps the temp base (local/state/...) after the test, for post-mortems.
    /// Also switched on for every mount by `FTPSYNC_TEST_KEEP=1`.
    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }

    /// No sshd: the mount names an unreachable remote (flush then cannot finish).
    pub fn no_remote(mut self) -> Self {
        self.no_remote = true;
        self
    }

    /// Mirror to the least-privilege sshd (chroot + ForceCommand internal-sftp).
    pub fn chroot(mut self) -> Self {
        self.flavor = sshd::Flavor::Chroot;
        self
    }

    /// Mirror to a server of this flavour.
    pub fn flavor(mut self, flavor: sshd::Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// The server's key is pinned nowhere but where `ftpsync trust` puts it (the state dir).
    pub fn no_known_hosts(mut self) -> Self {
        self.no_known_hosts = true;
        self
    }

    /// Logs in with this key instead of the harness's own.
    pub fn identity(mut self, key: &Path) -> Self {
        self.identity = Some(key.to_path_buf());
        self
    }

    /// Extra `ftpsync mount` arguments (e.g. `--writeback-delay 5`).
    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_string());
        self
    }

    /// Extra environment for the daemon (e.g. `RUST_LOG`).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.extra_env.push((k.to_string(), v.to_string()));
        self
    }

    /// Creates the directories without mounting, so a test can fill `local/`
    /// first (needed for shadow mounts); call `Mount::mount()` afterwards.
    pub fn prepare(self) -> Mount {
        become_subreaper();
        let base = tempfile::Builder::new()
            .prefix("ftpsync-test-")
            .tempdir()
            .expect("create temp base");
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).expect("chmod base");
        let root = base.path().canonicalize().expect("canonicalize base");
        let local = root.join("local");
        let state = root.join("state");
        let plain = root.join("plain");
        let mnt = if self.shadow {
            local.clone()
        } else {
            root.join("mnt")
        };
        for d in [&local, &state, &plain, &mnt] {
            fs::create_dir_all(d).expect("create test dir");
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod test dir");
        }
        let keep = self.keep || std::env::var_os("FTPSYNC_TEST_KEEP").is_some_and(|v| v == "1");
        let sshd = (!self.no_remote).then(|| sshd::Sshd::start(self.flavor));
        Mount {
            sshd,
            base: Some(base),
            root,
            local,
            mnt,
            state,
            plain,
            remote_url: None,
            builder: self,
            keep,
            pid: None,
            mounted: false,
            mounts_done: 0,
        }
    }

    /// Creates the directories and mounts.
    pub fn mount(self) -> Mount {
        let mut m = self.prepare();
        m.mount();
        m
    }
}

/// A live (or deliberately dead) ftpsync mount and its directories.
pub struct Mount {
    base: Option<tempfile::TempDir>,
    /// Canonical temp base holding everything below.
    pub root: PathBuf,
    /// The backing directory (LOCAL_DIR).
    pub local: PathBuf,
    /// The mountpoint (== `local` in shadow mode).
    pub mnt: PathBuf,
    /// The state dir.
    pub state: PathBuf,
    /// A plain directory on the same filesystem, never mounted over.
    pub plain: PathBuf,
    /// The loopback SFTP server the mount mirrors to (None with `no_remote()`).
    pub sshd: Option<sshd::Sshd>,
    /// Mirrors here instead of the sshd's own root (see `use_remote`).
    remote_url: Option<String>,
    builder: MountBuilder,
    keep: bool,
    pid: Option<i32>,
    mounted: bool,
    mounts_done: usize,
}

impl Mount {
    /// A default mount (no extra options).
    pub fn new() -> Mount {
        MountBuilder::default().mount()
    }

    pub fn builder() -> MountBuilder {
        MountBuilder::default()
    }

    /// The daemon pid read from `S/ftpsync.pid` at the last mount (until the
    /// harness has seen that daemon end).
    pub fn pid(&self) -> i32 {
        self.pid
            .expect("no daemon pid: not mounted, or the daemon already ended")
    }

    pub fn is_shadow(&self) -> bool {
        self.builder.shadow
    }

    /// Path inside the mount.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path inside the backing directory (bypassing the mount; in shadow mode
    /// this is the same path as `path()`, i.e. through the mount while mounted).
    pub fn local_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.local.join(rel)
    }

    /// The `ftpsync mount` command line for this fixture.
    pub fn mount_command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg("--state-dir").arg(&self.state);
        if !self.builder.opts.is_empty() {
            cmd.arg("-o").arg(self.builder.opts.join(","));
        }
        match &self.sshd {
            Some(sshd) => {
                let identity = self.builder.identity.clone();
                cmd.arg("--identity")
                    .arg(identity.unwrap_or_else(|| sshd.identity()));
                let known_hosts = if self.builder.no_known_hosts {
                    self.root.join("no-known-hosts")
                } else {
                    sshd.known_hosts()
                };
                cmd.arg("--known-hosts").arg(known_hosts);
                // Tests wait with flush, not with the clock, unless they ask for a delay.
                if !self
                    .builder
                    .extra_args
                    .iter()
                    .any(|a| a == "--writeback-delay")
                {
                    cmd.args(["--writeback-delay", "0"]);
                }
                cmd.args(&self.builder.extra_args);
                let url = self.remote_url.clone();
                cmd.arg(&self.local)
                    .arg(url.unwrap_or_else(|| sshd.remote_url()));
            }
            None => {
                // Nothing can be uploaded: do not wait for it at unmount.
                cmd.args(["--drain-timeout", "0"]);
                cmd.args(&self.builder.extra_args);
                cmd.arg(&self.local).arg(REMOTE);
            }
        }
        if !self.builder.shadow {
            cmd.arg(&self.mnt);
        }
        for (k, v) in &self.builder.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Mirrors to `url` from the next mount on (another root on the same sshd, say).
    pub fn use_remote(&mut self, url: String) {
        self.remote_url = Some(url);
    }

    /// Mounts (daemon mode) and checks the mount is live and is ours; returns what `mount`
    /// printed.
    pub fn mount(&mut self) -> CmdOut {
        assert!(!self.mounted, "mount(): already mounted");
        let start = Instant::now();
        let out = run_with_timeout(self.mount_command(), MOUNT_WAIT);
        self.mounts_done += 1;
        assert!(
            out.ok(),
            "ftpsync mount failed ({:?}): {}\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
            out.status,
            out.cmdline,
            out.stdout,
            out.stderr,
            self.log_tail()
        );
        // The contract: the parent returns 0 only once the mount is live.
        let types = mount_fstypes(&self.mnt);
        assert!(
            types.last().is_some_and(|t| is_our_fstype(t)),
            "ftpsync mount returned 0 after {:?} but /proc/self/mountinfo shows {:?} on {} \
             (want fuse.ftpsync on top)\nlog:\n{}",
            start.elapsed(),
            types,
            self.mnt.display(),
            self.log_tail()
        );
        self.mounted = true;
        let pidfile = self.state.join("ftpsync.pid");
        let pid_text = fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("mount is live but {} unreadable: {e}", pidfile.display()));
        let pid: i32 = pid_text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad pid file content {pid_text:?}: {e}"));
        assert!(
            pid_alive(pid),
            "daemon pid {pid} from pid file is not alive"
        );
        self.pid = Some(pid);
        out
    }

    /// Last lines of the daemon log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.state.join("ftpsync.log");
        match fs::read(&log) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                let lines: Vec<&str> = s.lines().collect();
                let from = lines.len().saturating_sub(40);
                lines[from..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", log.display()),
        }
    }

    /// `ftpsync flush S --timeout 30`, asserting success.
    /// `ftpsync flush`: every closed file hashed and, with a remote, confirmed there
    /// (`--local` without one: hashed and journaled durably).
    pub fn flush(&self) {
        let mut args = vec![
            OsString::from("flush"),
            self.state.clone().into_os_string(),
            "--timeout".into(),
            "30".into(),
        ];
        if self.sshd.is_none() {
            args.push("--local".into());
        }
        let out = ftpsync(args);
        assert!(
            out.ok(),
            "ftpsync flush failed ({:?})\nstdout:\n{}\nstderr:\n{}\nlog:\n{}",
            out.status,
            out.stdout,
            out.stderr,
            self.log_tail()
        );
    }

    /// `ftpsync flush STATE --timeout SECS` (not asserted).
    pub fn flush_for(&self, secs: u64) -> CmdOut {
        let mut cmd = Command::new(BIN);
        cmd.arg("flush")
            .arg(&self.state)
            .arg("--timeout")
            .arg(secs.to_string());
        run_with_timeout(cmd, Duration::from_secs(secs + 30))
    }

    /// `mirror` of `ftpsync status --json`.
    pub fn mirror_status(&self) -> serde_json::Value {
        let st = self.status_json();
        st.get("mirror")
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| panic!("status --json has no `mirror` object: {st}"))
    }

    /// Polls `status` until `pred` holds for the mirror object; panics with the last one after
    /// `timeout`.
    pub fn wait_mirror_status(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.mirror_status();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "status never showed {what} within {timeout:?}; last mirror status: {s}\nlog:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The whole daemon log.
    pub fn daemon_log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.state.join("ftpsync.log")).unwrap_or_default())
            .into_owned()
    }

    /// `ftpsync status S --json`, parsed. Works with or without a daemon.
    pub fn status_json(&self) -> serde_json::Value {
        status_json(&self.state)
    }

    /// `hashes` from status, as path bytes → (size, sha256 hex).
    pub fn hashes(&self) -> std::collections::BTreeMap<Vec<u8>, (u64, String)> {
        hashes_of(&self.status_json())
    }

    /// SIGKILLs the daemon and waits until it is gone. The FUSE mount stays in
    /// the mount table, dead (ENOTCONN), until `remount()` or drop.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        // SAFETY: plain kill(2) on a pid we read from the daemon's pid file.
        let r = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        match wait_daemon(pid, EXIT_WAIT) {
            None => panic!("daemon {pid} still alive {EXIT_WAIT:?} after SIGKILL"),
            Some(Ended::Signaled(libc::SIGKILL)) | Some(Ended::Unknown) => {}
            Some(other) => panic!("daemon {pid} ended with {other:?} instead of SIGKILL"),
        }
        // reaped: forget the pid, it may be reused
        self.pid = None;
    }

    /// Lazily detaches whatever is mounted on `mnt` (after a kill).
    pub fn detach_dead(&mut self) {
        let mut tries = 0;
        while is_ftpsync_mounted(&self.mnt) && tries < 5 {
            let (ok, err) = fusermount(&["-uz"], &self.mnt);
            if !ok {
                eprintln!("fusermount3 -uz {}: {err}", self.mnt.display());
            }
            tries += 1;
        }
        assert!(
            !is_ftpsync_mounted(&self.mnt),
            "{} still mounted after fusermount3 -uz",
            self.mnt.display()
        );
        self.mounted = false;
    }

    /// Forgets a dead mount left by `kill9()` without detaching it, so that the next
    /// `mount()` meets it as a restart after a crash does.
    pub fn forget_dead_mount(&mut self) {
        assert!(
            self.pid.is_none_or(|p| !pid_alive(p)),
            "forget_dead_mount(): the daemon is alive"
        );
        self.mounted = false;
    }

    /// `fusermount3 -u` without waiting for the daemon (it may still be draining); returns its
    /// pid. The harness forgets it: the next `mount()` is a remount during that drain.
    pub fn fusermount_u_no_wait(&mut self) -> i32 {
        let pid = self.pid();
        let (ok, err) = fusermount_u(&self.mnt);
        assert!(ok, "fusermount3 -u {} failed: {err}", self.mnt.display());
        self.mounted = false;
        self.pid = None;
        pid
    }

    /// The daemon ended by other means (`ftpsync unmount`): forget it and its mount.
    pub fn forget_unmounted(&mut self) {
        assert!(
            !is_ftpsync_mounted(&self.mnt),
            "forget_unmounted(): {} is still mounted",
            self.mnt.display()
        );
        if let Some(pid) = self.pid.take() {
            assert!(
                wait_pid_gone(pid, EXIT_WAIT),
                "forget_unmounted(): daemon {pid} is still running"
            );
        }
        self.mounted = false;
    }

    /// Mounts again on the same local and state dirs; a dead mount left by
    /// `kill9()` is detached first.
    pub fn remount(&mut self) {
        if self.mounted {
            if self.pid.is_some_and(pid_alive) {
                self.unmount();
            } else {
                self.detach_dead();
            }
        }
        self.mount();
    }

    /// `fusermount3 -u`; asserts the daemon exits cleanly: its pid goes away
    /// within `EXIT_WAIT` and it removed `S/ftpsync.pid` (clean exit does).
    pub fn unmount(&mut self) {
        assert!(self.mounted, "unmount(): not mounted");
        let pid = self.pid();
        let (ok, err) = fusermount_u(&self.mnt);
        assert!(ok, "fusermount3 -u {} failed: {err}", self.mnt.display());
        self.mounted = false;
        match wait_daemon(pid, EXIT_WAIT) {
            None => panic!(
                "daemon {pid} still running {EXIT_WAIT:?} after fusermount3 -u\nlog:\n{}",
                self.log_tail()
            ),
            Some(Ended::Exited(0)) | Some(Ended::Unknown) => self.pid = None,
            Some(other) => panic!(
                "daemon {pid} ended with {other:?} after fusermount3 -u, want exit 0\nlog:\n{}",
                self.log_tail()
            ),
        }
        assert!(
            !is_ftpsync_mounted(&self.mnt),
            "{} still in mountinfo after the daemon exited",
            self.mnt.display()
        );
        let pidfile = self.state.join("ftpsync.pid");
        assert!(
            !pidfile.exists(),
            "daemon {pid} exited but left {} behind: not a clean exit\nlog:\n{}",
            pidfile.display(),
            self.log_tail()
        );
    }

    /// SIGTERM to the daemon: it must unmount and exit cleanly (pid gone,
    /// mount gone, pid file removed).
    pub fn sigterm(&mut self) {
        let pid = self.pid();
        // SAFETY: plain kill(2) on the daemon's pid.
        let r = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            r,
            0,
            "kill -TERM {pid}: {}",
            std::io::Error::last_os_error()
        );
        match wait_daemon(pid, EXIT_WAIT) {
            None => panic!(
                "daemon {pid} still running {EXIT_WAIT:?} after SIGTERM\nlog:\n{}",
                self.log_tail()
            ),
            Some(Ended::Exited(0)) | Some(Ended::Unknown) => self.pid = None,
            Some(other) => panic!(
                "daemon {pid} ended with {other:?} after SIGTERM, want exit 0\nlog:\n{}",
                self.log_tail()
            ),
        }
        self.mounted = false;
        assert!(
            !is_ftpsync_mounted(&self.mnt),
            "daemon exited on SIGTERM but left {} mounted",
            self.mnt.display()
        );
        assert!(
            !self.state.join("ftpsync.pid").exists(),
            "daemon exited on SIGTERM but left its pid file: not a clean exit"
        );
    }

    /// Whether the harness currently believes a mount is in place.
    pub fn is_mounted(&self) -> bool {
        self.mounted
    }

    /// The segments in `S/journal/`, sorted by name (= by first seq).
    pub fn journal_segments(&self) -> Vec<PathBuf> {
        let dir = self.state.join("journal");
        let mut v: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
            .collect();
        v.sort();
        v
    }
}

impl Default for Mount {
    fn default() -> Self {
        Mount::new()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted || is_ftpsync_mounted(&self.mnt) {
            let (ok, _) = fusermount_u(&self.mnt);
            if !ok {
                let (ok2, err2) = fusermount(&["-uz"], &self.mnt);
                if !ok2 && is_ftpsync_mounted(&self.mnt) {
                    eprintln!("harness: cannot unmount {}: {err2}", self.mnt.display());
                }
            }
            self.mounted = false;
        }
        if let Some(pid) = self.pid.take() {
            if !wait_pid_gone(pid, EXIT_WAIT) {
                eprintln!(
                    "harness: daemon {pid} still alive {EXIT_WAIT:?} after unmount; killing it"
                );
                // SAFETY: kill(2) on the daemon's pid.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                wait_pid_gone(pid, EXIT_WAIT);
            }
        }
        if let Some(base) = self.base.take() {
            if self.keep
                || std::thread::panicking()
                    && std::env::var_os("FTPSYNC_TEST_KEEP_FAILED").is_some()
            {
                let p = base.keep();
                eprintln!("harness: kept test dirs at {}", p.display());
            }
        }
    }
}

/// `ftpsync status DIR --json`, parsed; panics on failure.
pub fn status_json(state: &Path) -> serde_json::Value {
    let out = ftpsync([
        OsString::from("status"),
        state.as_os_str().to_owned(),
        "--json".into(),
    ]);
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}):\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Decodes `path_hex` (falling back to `path`) of a status entry.
/// The `connection` field of a mirror status.
pub fn connection_of(mirror: &serde_json::Value) -> String {
    mirror
        .get("connection")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("mirror status without `connection`: {mirror}"))
        .to_string()
}

pub fn entry_path(e: &serde_json::Value) -> Vec<u8> {
    if let Some(h) = e.get("path_hex").and_then(|v| v.as_str()) {
        hex::decode(h).unwrap_or_else(|err| panic!("bad path_hex {h:?}: {err}"))
    } else {
        e.get("path")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("entry without path: {e}"))
            .as_bytes()
            .to_vec()
    }
}

/// `hashes` of a status document as path bytes → (size, sha256).
pub fn hashes_of(status: &serde_json::Value) -> std::collections::BTreeMap<Vec<u8>, (u64, String)> {
    let arr = status
        .get("hashes")
        .and_then(|v| v.as_array())
        .unwrap_or_else(|| panic!("status has no `hashes` array: {status}"));
    let mut m = std::collections::BTreeMap::new();
    for e in arr {
        let size = e
            .get("size")
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("hash entry without size: {e}"));
        let sha = e
            .get("sha256")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("hash entry without sha256: {e}"))
            .to_string();
        m.insert(entry_path(e), (size, sha));
    }
    m
}

/// Asserts `status` lists `rel` with the SHA-256 and size of `content`.
pub fn assert_hash(status: &serde_json::Value, rel: &[u8], content: &[u8]) {
    let hashes = hashes_of(status);
    let want = (content.len() as u64, sha256_hex(content));
    match hashes.get(rel) {
        Some(got) => assert_eq!(
            got,
            &want,
            "hash entry for {:?}: got (size, sha256) {:?}, want {:?}",
            String::from_utf8_lossy(rel),
            got,
            want
        ),
        None => panic!(
            "status `hashes` has no entry for {:?}; it has: {:?}",
            String::from_utf8_lossy(rel),
            hashes
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        ),
    }
}

/// Fails with a message pointing at scripts/test.sh unless `tool` is on PATH.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{tool}` is not installed; scripts/test.sh installs it (apt-get install ...)"
    );
}
