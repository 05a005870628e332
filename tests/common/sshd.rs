//! A real, throwaway OpenSSH sshd on 127.0.0.1 for the transport and mirror tests.
//!
//! `Sshd::start(Flavor::Plain)`: root logs in by key, `Subsystem sftp internal-sftp`, the
//! remote root is a temp dir, exec works (so verification can use a hash command).
//! `Sshd::start(Flavor::Chroot)`: a dedicated user without a shell, `ChrootDirectory` on a
//! root-owned path under /var/lib (sshd refuses one under /tmp) and `ForceCommand
//! internal-sftp`: the least-privilege server, where exec is refused.
//!
//! `Sshd::start(Flavor::KeyAndPassword)`: the chroot setup for another dedicated user whose
//! login needs the key *and* then the password (`AuthenticationMethods publickey,password`,
//! checked against /etc/shadow without PAM): a second factor after the key.
//!
//! `Sshd::start(Flavor::Rclone)` and `Sshd::start(Flavor::Proftpd)` run SFTP servers that are
//! not OpenSSH at all (`rclone serve sftp`, proftpd's mod_sftp) behind the same methods, so a
//! `Mount` mirrors to them like to any other flavour: servers no one here wrote (issue 10).
//!
//! Each server has its own temp dir (keys, config, log, known_hosts), its own free port, and is
//! killed with everything it spawned on drop, so tests may run in parallel.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
/// The unprivileged account of the chroot flavour (created once, shared by all tests).
pub const CHROOT_USER: &str = "ftpsync-sftp";
/// The account of the key-and-password flavour, and its password.
pub const TWO_FACTOR_USER: &str = "ftpsync-2fa";
pub const TWO_FACTOR_PASSWORD: &str = "pw-5e2b9c-second-factor";
/// Chroot directories live here: root-owned, 0755, not under /tmp.
pub const CHROOT_BASE: &str = "/var/lib/ftpsync-test";
/// How long sshd gets to start listening.
const START_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Plain,
    Chroot,
    KeyAndPassword,
    /// Like `Plain`, with Debian's gesftpserver as the sftp subsystem: a server no one here
    /// wrote, which takes SSH_FXP_SYMLINK's paths in the protocol draft's order.
    Gesftp,
    /// `rclone serve sftp`: its own SSH stack serving a directory as `/`; no exec, no symlinks
    /// (SSH_FXP_SYMLINK answers "operation unsupported"), any user name with a listed key.
    Rclone,
    /// proftpd with mod_sftp, logged in as root: no exec; SSH_FXP_SYMLINK in OpenSSH's order.
    Proftpd,
}

impl Flavor {
    /// Whether ftpsync keeps real symlinks there. Where the server makes none (rclone) or
    /// reads them back changed (proftpd), a link is kept in rclone's `--links` convention
    /// (`NAME.rclonelink` holding the target).
    pub fn has_symlinks(self) -> bool {
        !matches!(self, Flavor::Rclone | Flavor::Proftpd)
    }
}

/// The sftp server of the `Gesftp` flavour (package gesftpserver).
pub const GESFTPSERVER: &str = "/usr/libexec/gesftpserver";
/// The `Rclone` flavour's server (package rclone).
pub const RCLONE: &str = "/usr/bin/rclone";
/// The `Proftpd` flavour's server (package proftpd-core) and its SFTP module (package
/// proftpd-mod-crypto).
pub const PROFTPD: &str = "/usr/sbin/proftpd";
pub const PROFTPD_MODULES: &str = "/usr/lib/proftpd";

pub struct Sshd {
    flavor: Flavor,
    /// Keys, config, log, known_hosts and (plain) the remote root. Mode 0755 so the chroot
    /// user's sshd process can read authorized_keys.
    dir: tempfile::TempDir,
    /// The chroot (root-owned 0755) holding `data/`, for the chroot flavour.
    chroot: Option<tempfile::TempDir>,
    port: u16,
    extra_config: String,
    child: Option<Child>,
    /// Where this start's log lines begin.
    log_offset: u64,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates an ed25519 key pair without passphrase (or with one).
pub fn keygen(path: &Path, passphrase: &str) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "ftpsync-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path));
}

/// `SHA256:...` of a public key file, as `ssh-keygen -lf` prints it.
pub fn fingerprint(pub_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// Creates a test account once, under a lock shared by concurrently running test binaries,
/// with `password` ("*": none, key logins only).
fn ensure_user(user: &str, password: &str) {
    fs::create_dir_all(CHROOT_BASE).unwrap();
    fs::set_permissions(CHROOT_BASE, fs::Permissions::from_mode(0o755)).unwrap();
    let lock = fs::File::create(Path::new(CHROOT_BASE).join(".lock")).unwrap();
    lock.lock().unwrap();
    let exists = Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    if !exists {
        run(Command::new("useradd").args([
            "--system",
            "-M",
            "-d",
            "/",
            "-s",
            "/usr/sbin/nologin",
            user,
        ]));
    }
    // useradd leaves the account locked ('!'), and with UsePAM no sshd refuses even key
    // logins to a locked account: '*' means "no password" without "locked".
    let hash = if password == "*" {
        "*".to_string()
    } else {
        let out = Command::new("openssl")
            .args(["passwd", "-6", "-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(password.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    run(Command::new("usermod").args(["-p", &hash, user]));
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg(user).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (id("-u"), id("-g"))
}

impl Sshd {
    pub fn start(flavor: Flavor) -> Sshd {
        Sshd::start_with(flavor, "")
    }

    /// Starts with extra sshd_config lines (e.g. a weak-only algorithm list).
    pub fn start_with(flavor: Flavor, extra_config: &str) -> Sshd {
        fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("ftpsync-sshd-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let chroot = match flavor {
            Flavor::Plain | Flavor::Gesftp | Flavor::Rclone | Flavor::Proftpd => None,
            Flavor::Chroot => Some(make_chroot(CHROOT_USER, "*")),
            Flavor::KeyAndPassword => Some(make_chroot(TWO_FACTOR_USER, TWO_FACTOR_PASSWORD)),
        };
        let mut s = Sshd {
            flavor,
            dir,
            chroot,
            port: 0,
            extra_config: extra_config.to_string(),
            child: None,
            log_offset: 0,
        };
        keygen(&s.host_key(), "");
        keygen(&s.identity(), "");
        fs::write(s.path("authorized_keys"), "").unwrap();
        fs::set_permissions(s.path("authorized_keys"), fs::Permissions::from_mode(0o644)).unwrap();
        s.authorize(&s.identity().with_extension("pub"));
        if s.chroot.is_none() {
            fs::create_dir_all(s.remote_root_on_disk()).unwrap();
        }
        s.start_on_free_port();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn user(&self) -> &'static str {
        match self.flavor {
            Flavor::Plain | Flavor::Gesftp | Flavor::Proftpd => "root",
            // rclone checks the key only; the name is never looked up.
            Flavor::Rclone => "rclone",
            Flavor::Chroot => CHROOT_USER,
            Flavor::KeyAndPassword => TWO_FACTOR_USER,
        }
    }

    /// The client's private key (ed25519, 0600, no passphrase).
    pub fn identity(&self) -> PathBuf {
        self.path("id_ed25519")
    }

    /// A known_hosts file pinning this server's (first) host key as `[127.0.0.1]:PORT`.
    pub fn known_hosts(&self) -> PathBuf {
        self.path("known_hosts")
    }

    /// Adds a public key to the accepted ones. sshd and mod_sftp read them at each login;
    /// rclone only when it starts, so `restart()` it after this.
    pub fn authorize(&self, pub_key: &Path) {
        let mut keys = fs::read_to_string(self.path("authorized_keys")).unwrap();
        keys.push_str(&self.authorized_key_text(pub_key));
        fs::write(self.path("authorized_keys"), keys).unwrap();
    }

    /// A public key as this server reads it: mod_sftp only takes RFC 4716
    /// (`ssh-keygen -e`), the others OpenSSH's one-line form.
    fn authorized_key_text(&self, pub_key: &Path) -> String {
        if self.flavor != Flavor::Proftpd {
            return fs::read_to_string(pub_key).unwrap();
        }
        let out = Command::new("ssh-keygen")
            .arg("-e")
            .arg("-f")
            .arg(pub_key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen -e {}", pub_key.display());
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn host_key(&self) -> PathBuf {
        self.path("host_key")
    }

    /// The current host key's `SHA256:` fingerprint.
    pub fn host_fingerprint(&self) -> String {
        fingerprint(&self.host_key().with_extension("pub"))
    }

    /// The remote root as the client names it.
    pub fn remote_path(&self) -> String {
        match self.flavor {
            Flavor::Plain | Flavor::Gesftp | Flavor::Proftpd => {
                self.remote_root_on_disk().display().to_string()
            }
            Flavor::Chroot | Flavor::KeyAndPassword => "/data".into(),
            // rclone serves `served/` as `/`.
            Flavor::Rclone => "/root".into(),
        }
    }

    pub fn remote_url(&self) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user(),
            self.port,
            self.remote_path()
        )
    }

    /// Where the remote root is on this machine, for assertions.
    pub fn remote_root_on_disk(&self) -> PathBuf {
        match &self.chroot {
            Some(c) => c.path().join("data"),
            None if self.flavor == Flavor::Rclone => self.served().join("root"),
            None => self.path("root"),
        }
    }

    /// What rclone serves as `/`: only the remote root in it, so anything else appearing
    /// there was made outside the root.
    fn served(&self) -> PathBuf {
        self.path("served")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path("server.log")
    }

    /// The log written since the last (re)start.
    pub fn log(&self) -> String {
        let mut f = match fs::File::open(self.log_path()) {
            Ok(f) => f,
            Err(_) => return String::new(),
        };
        let _ = f.seek(SeekFrom::Start(self.log_offset));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }

    /// The server's config for `self.port` (rclone has none: its command line says it all).
    fn write_config(&self) {
        match self.flavor {
            Flavor::Rclone => {}
            Flavor::Proftpd => self.write_proftpd_config(),
            _ => self.write_sshd_config(),
        }
    }

    /// A private proftpd.conf: mod_sftp on 127.0.0.1 only, key logins as root, and nothing
    /// shared with a system proftpd (pid, scoreboard, control socket, logs all in our dir).
    fn write_proftpd_config(&self) {
        let c = format!(
            "ServerType standalone\n\
             DefaultAddress 127.0.0.1\n\
             Port {port}\n\
             # Without it proftpd listens on 0.0.0.0 whatever DefaultAddress says.\n\
             SocketBindTight on\n\
             UseIPv6 off\n\
             UseReverseDNS off\n\
             PidFile {dir}/proftpd.pid\n\
             ScoreboardFile {dir}/proftpd.scoreboard\n\
             DelayTable none\n\
             WtmpLog off\n\
             TransferLog none\n\
             SystemLog {log}\n\
             # mod_ctrls is built in and would listen on /run/proftpd.sock, shared with others.\n\
             <IfModule mod_ctrls.c>\n\
             \x20 ControlsEngine off\n\
             </IfModule>\n\
             AuthPAM off\n\
             RequireValidShell off\n\
             # Else root (listed in /etc/ftpusers) is refused.\n\
             UseFtpUsers off\n\
             RootLogin on\n\
             ModulePath {modules}\n\
             LoadModule mod_sftp.c\n\
             # The one listener speaks SSH: no plain FTP anywhere.\n\
             SFTPEngine on\n\
             SFTPHostKey {hk}\n\
             SFTPAuthorizedUserKeys file:{ak}\n\
             SFTPAuthMethods publickey\n\
             SFTPLog {log}\n\
             # Uploads land under a temp name and are renamed over the old file.\n\
             <Directory />\n\
             \x20 AllowOverwrite on\n\
             </Directory>\n",
            port = self.port,
            dir = self.dir.path().display(),
            log = self.log_path().display(),
            modules = PROFTPD_MODULES,
            hk = self.host_key().display(),
            ak = self.path("authorized_keys").display(),
        );
        fs::write(self.path("proftpd.conf"), c).unwrap();
    }

    fn write_sshd_config(&self) {
        let mut c = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {hk}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {ak}\n\
             AllowUsers {user}\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             LogLevel VERBOSE\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             Subsystem sftp {subsystem}\n\
             SetEnv HOME={home}\n",
            // The commands ftpsync runs over exec (its hash probe and hashes) go through the
            // account's shell, and bash then reads ~/.bashrc: on a machine whose root runs
            // `pyenv init` there, a rehash lock left by a killed session made every exec wait
            // 60 s. This server's own directory as HOME keeps the account's dotfiles out.
            home = self.dir.path().display(),
            port = self.port,
            hk = self.host_key().display(),
            pid = self.path("sshd.pid").display(),
            ak = self.path("authorized_keys").display(),
            user = self.user(),
            subsystem = match self.flavor {
                Flavor::Gesftp => GESFTPSERVER,
                _ => "internal-sftp",
            },
        );
        c.push_str(&self.extra_config);
        c.push('\n');
        if let Some(chroot) = &self.chroot {
            c.push_str(&format!(
                "Match User {}\n\
                 \x20   ChrootDirectory {}\n\
                 \x20   ForceCommand internal-sftp\n\
                 \x20   AllowTcpForwarding no\n\
                 \x20   X11Forwarding no\n",
                self.user(),
                chroot.path().display()
            ));
            if self.flavor == Flavor::KeyAndPassword {
                c.push_str(
                    "\x20   PasswordAuthentication yes\n\
                     \x20   AuthenticationMethods publickey,password\n",
                );
            }
        }
        fs::write(self.path("sshd_config"), c).unwrap();
    }

    fn write_known_hosts(&self) {
        let pub_key = fs::read_to_string(self.host_key().with_extension("pub")).unwrap();
        let mut f = pub_key.split_whitespace();
        let (kind, blob) = (f.next().unwrap(), f.next().unwrap());
        let line = format!("[127.0.0.1]:{} {kind} {blob}\n", self.port);
        fs::write(self.known_hosts(), line).unwrap();
    }

    fn start_on_free_port(&mut self) {
        for _ in 0..10 {
            self.port = free_port();
            self.write_config();
            self.write_known_hosts();
            if self.spawn() {
                return;
            }
        }
        panic!(
            "{} did not start on any port; log:\n{}",
            self.program(),
            self.log()
        );
    }

    /// The command running this flavour's server in the foreground on `self.port`, and the
    /// log line that says it listens.
    fn server_command(&self) -> (Command, String) {
        let port = self.port;
        match self.flavor {
            Flavor::Rclone => {
                let mut cmd = Command::new(RCLONE);
                cmd.args(["serve", "sftp"])
                    .arg(self.served())
                    .arg("--addr")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--key")
                    .arg(self.host_key())
                    .arg("--authorized-keys")
                    .arg(self.path("authorized_keys"))
                    // No user's rclone.conf: the served directory is all it knows.
                    .args(["--config", "/dev/null"]);
                (cmd, format!("SFTP server listening on 127.0.0.1:{port}"))
            }
            Flavor::Proftpd => {
                let mut cmd = Command::new(PROFTPD);
                cmd.arg("--nodaemon")
                    .arg("-c")
                    .arg(self.path("proftpd.conf"));
                // Logged once it has bound its port.
                (cmd, "standalone mode STARTUP".into())
            }
            _ => {
                let mut cmd = Command::new(SSHD);
                cmd.arg("-D")
                    .arg("-f")
                    .arg(self.path("sshd_config"))
                    .arg("-E")
                    .arg(self.log_path());
                (cmd, format!("Server listening on 127.0.0.1 port {port}"))
            }
        }
    }

    fn program(&self) -> &'static str {
        match self.flavor {
            Flavor::Rclone => RCLONE,
            Flavor::Proftpd => PROFTPD,
            _ => SSHD,
        }
    }

    /// Starts the server on `self.port`; false if the port was taken meanwhile.
    fn spawn(&mut self) -> bool {
        self.log_offset = fs::metadata(self.log_path()).map_or(0, |m| m.len());
        // rclone and proftpd log to stderr: into the same file, so `log()` has everything.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let (mut cmd, ready) = self.server_command();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program()));
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            if self.log().contains(&ready) {
                return true;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = self.log();
                assert!(
                    // rclone (Go) says it in lower case.
                    log.to_lowercase().contains("address already in use"),
                    "{} exited ({st}) on start; log:\n{log}",
                    self.program()
                );
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        panic!(
            "{} not listening after {START_WAIT:?}; log:\n{}",
            self.program(),
            self.log()
        );
    }

    /// Kills the server and every connection process it spawned (sshd's call setsid, so a
    /// process group kill would miss them): the server is gone, as after a crash.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut pids = descendants(child.id());
        pids.push(child.id());
        for pid in pids {
            // SAFETY: plain kill(2) on pids this server spawned.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = child.wait();
    }

    /// Stops and starts again on the same port with the same keys (retrying while the port is
    /// briefly busy).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_WAIT;
        while !self.spawn() {
            assert!(Instant::now() < deadline, "port {} stayed busy", self.port);
            sleep(Duration::from_millis(200));
        }
    }

    /// Restarts with a brand new host key; `known_hosts()` keeps the old one, so a client
    /// using it must see a changed key.
    pub fn swap_host_key(&mut self) {
        self.stop();
        keygen(&self.host_key(), "");
        self.restart();
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

fn make_chroot(user: &str, password: &str) -> tempfile::TempDir {
    ensure_user(user, password);
    let chroot = tempfile::Builder::new()
        .prefix("chroot-")
        .tempdir_in(CHROOT_BASE)
        .unwrap();
    // sshd demands a root-owned chroot that no one else can write.
    fs::set_permissions(chroot.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let data = chroot.path().join("data");
    fs::create_dir(&data).unwrap();
    let (uid, gid) = user_ids(user);
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    chroot
}

/// Every process descended from `root`, found through /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = ppid_of(pid) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Options for a direct transport connection to `sshd`: its pinned host key and its key, no
/// agent, short timeouts.
pub fn connect_options(sshd: &Sshd) -> ftpsync::remote::ConnectOptions {
    let mut o = ftpsync::remote::ConnectOptions::new(sshd.remote_url().parse().unwrap());
    o.known_hosts = vec![sshd.known_hosts()];
    o.identities = vec![sshd.identity()];
    o.use_agent = false;
    o.connect_timeout = Duration::from_secs(10);
    o.io_timeout = Duration::from_secs(30);
    o
}

/// A direct transport connection to `sshd` (the server's log in the panic if it fails).
pub fn connect(sshd: &Sshd) -> ftpsync::remote::Connection {
    ftpsync::remote::Connection::connect(&connect_options(sshd))
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()))
}
