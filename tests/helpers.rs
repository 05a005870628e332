//! Profiles, the mount(8) helper, fstab and the systemd unit, for real: `mount -t fuse.ftpsync
//! PROFILE DIR` and an fstab line through the helper installed by `mount-helpers/install.sh`,
//! unmounted by `umount` and by `fusermount3 -u`; `ftpsync mount PROFILE`, `ftpsync trust
//! PROFILE`, the unit's foreground command; the errors of a missing or unsafe profile; what
//! install.sh refuses to replace.
//!
//! mount(8) looks for `mount.fuse.ftpsync` only in /sbin, /sbin/fs.d and /sbin/fs (compiled
//! into libmount) and removes PATH from the helper's environment: a helper "put on PATH" is
//! never found. Rather than writing into /sbin and /etc on a shared machine, the mount(8)
//! tests run install.sh and mount(8) in a private mount namespace where /usr/sbin (which /sbin
//! links to), /etc or /usr/local are writable overlays whose changes land in the test's temp
//! dir. install.sh there does what it does on a real machine, mount(8) finds the helper where
//! install.sh put it, and nothing outside the test changes, even if the test is killed.
//! Files under that namespace's mounts are reached through /proc/HOLDER/root.
//!
//! Profiles come from a temp dir named by FTPSYNC_CONFIG_DIR, never from /etc/ftpsync.

mod common;

use common::sshd::{Flavor, Sshd};
use common::{become_subreaper, run_with_timeout, wait_daemon, CmdOut, Ended, BIN, CMD_WAIT};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mount-helpers/install.sh");
const CONFIG_DIR_ENV: &str = "FTPSYNC_CONFIG_DIR";

/// One test's directories, its server and its profiles.
struct Setup {
    _base: tempfile::TempDir,
    root: PathBuf,
    local: PathBuf,
    mnt: PathBuf,
    state: PathBuf,
    /// The profiles' directory (FTPSYNC_CONFIG_DIR).
    cfg: PathBuf,
    /// Where install.sh installs.
    prefix: PathBuf,
    /// An empty working directory: no file there is named like a profile.
    cwd: PathBuf,
    sshd: Option<Sshd>,
}

impl Setup {
    fn new(with_sshd: bool) -> Setup {
        become_subreaper();
        let base = tempfile::Builder::new()
            .prefix("ftpsync-helpers-")
            .tempdir()
            .expect("temp dir");
        let root = base.path().canonicalize().expect("canonical temp dir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = |name: &str| {
            let d = root.join(name);
            fs::create_dir(&d).expect("mkdir");
            d
        };
        let s = Setup {
            local: dir("local"),
            mnt: dir("mnt"),
            state: root.join("state"),
            cfg: dir("cfg"),
            prefix: root.join("prefix"),
            cwd: dir("cwd"),
            sshd: with_sshd.then(|| Sshd::start(Flavor::Plain)),
            root,
            _base: base,
        };
        fs::set_permissions(&s.cfg, fs::Permissions::from_mode(0o700)).expect("chmod cfg");
        s
    }

    fn sshd(&self) -> &Sshd {
        self.sshd.as_ref().expect("this test has no sshd")
    }

    /// Writes profile `name` (0600): this setup's dirs and server, then `extra` lines.
    fn profile(&self, name: &str, pin_host_key: bool, extra: &str) -> PathBuf {
        let mut text = format!(
            "local_dir = {:?}\nstate_dir = {:?}\nmountpoint = {:?}\nwriteback_delay = 0\n",
            self.local, self.state, self.mnt
        );
        match &self.sshd {
            Some(sshd) => {
                text += &format!(
                    "remote = {:?}\nidentity = [{:?}]\ndrain_timeout = 10\n",
                    sshd.remote_url(),
                    sshd.identity()
                );
                if pin_host_key {
                    text += &format!("known_hosts = [{:?}]\n", sshd.known_hosts());
                }
            }
            None => text += &format!("remote = {:?}\ndrain_timeout = 0\n", common::REMOTE),
        }
        text += extra;
        let path = self.cfg.join(format!("{name}.toml"));
        fs::write(&path, text).expect("write profile");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod profile");
        path
    }

    /// `install.sh --prefix-only PREFIX` with the binary under test.
    fn install(&self) -> CmdOut {
        let mut cmd = Command::new(INSTALL);
        cmd.arg("--prefix-only")
            .arg(&self.prefix)
            .env("FTPSYNC_BIN", BIN);
        run_with_timeout(cmd, CMD_WAIT)
    }

    /// `program` with the profiles' directory set, run from the empty working directory.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env(CONFIG_DIR_ENV, &self.cfg).current_dir(&self.cwd);
        cmd
    }

    fn ftpsync(&self, args: &[&str]) -> CmdOut {
        let mut cmd = self.cmd(BIN);
        cmd.args(args);
        run_with_timeout(cmd, CMD_WAIT)
    }

    /// The daemon's pid, from the state dir.
    fn pid(&self) -> i32 {
        let pidfile = self.state.join("ftpsync.pid");
        let text = fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("{}: {e}\nlog:\n{}", pidfile.display(), self.log()));
        text.trim().parse().expect("pid")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.state.join("ftpsync.log")).unwrap_or_default()
    }

    /// Asserts that daemon `pid` exits 0 (after `what`) and removed its pid file.
    fn assert_clean_exit(&self, pid: i32, what: &str) {
        match wait_daemon(pid, common::EXIT_WAIT) {
            Some(Ended::Exited(0)) | Some(Ended::Unknown) => {}
            other => panic!("daemon {pid} after {what}: {other:?}\nlog:\n{}", self.log()),
        }
        assert!(
            !self.state.join("ftpsync.pid").exists(),
            "the daemon left its pid file after {what}: not a clean exit\nlog:\n{}",
            self.log()
        );
    }

    /// Asserts that `rel` reached the remote with `content`.
    fn assert_on_remote(&self, rel: &str, content: &[u8]) {
        let path = self.sshd().remote_root_on_disk().join(rel);
        let got = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{} not on the remote: {e}\nlog:\n{}",
                path.display(),
                self.log()
            )
        });
        assert_eq!(got, content, "{rel} on the remote differs");
    }
}

/// A private mount namespace, kept alive by a holder process, in which some directories are
/// writable overlays: what is written there lands in the test's temp dir, never in the real
/// directory. /run/systemd is hidden there, so no systemctl reaches the host's systemd.
struct Ns {
    holder: Child,
    /// Detached when the test ends, whatever happened.
    mounts: Vec<PathBuf>,
}

impl Ns {
    fn new(scratch: &Path, writable: &[&str]) -> Ns {
        for tool in ["unshare", "nsenter", "mount", "umount", "fusermount3"] {
            common::require_tool(tool);
        }
        let ready = scratch.join("ns.ready");
        let stderr = scratch.join("ns.stderr");
        let mut script =
            "set -e\n[ ! -d /run/systemd ] || mount -t tmpfs ftpsync-test /run/systemd\n"
                .to_string();
        for (i, dir) in writable.iter().enumerate() {
            let (up, work) = (
                scratch.join(format!("ns{i}.up")),
                scratch.join(format!("ns{i}.work")),
            );
            fs::create_dir(&up).expect("mkdir");
            fs::create_dir(&work).expect("mkdir");
            script += &format!(
                "mount -t overlay ftpsync-test -o lowerdir={dir},upperdir={},workdir={} {dir}\n",
                up.display(),
                work.display()
            );
        }
        script += &format!("touch {}\nexec sleep 3600\n", ready.display());
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("unshare");
        let start = Instant::now();
        while !ready.exists() {
            let exited = holder.try_wait().expect("try_wait").is_some();
            if exited || start.elapsed() > Duration::from_secs(10) {
                let _ = holder.kill();
                let _ = holder.wait();
                panic!(
                    "cannot set up overlays on {writable:?} in a private mount namespace: {}",
                    fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ns {
            holder,
            mounts: Vec::new(),
        }
    }

    /// install.sh ARGS run inside the namespace, with the binary under test.
    fn install(&self, s: &Setup, args: &[&Path]) -> CmdOut {
        let mut cmd = self.cmd(s, INSTALL);
        cmd.args(args).env("FTPSYNC_BIN", BIN);
        run_with_timeout(cmd, CMD_WAIT)
    }

    fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id())).unwrap_or_default()
    }

    /// `program` run inside the namespace.
    fn cmd(&self, s: &Setup, program: &str) -> Command {
        let mut cmd = s.cmd("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "--", program]);
        cmd
    }

    fn run(&self, s: &Setup, program: &str, args: &[&Path]) -> CmdOut {
        let mut cmd = self.cmd(s, program);
        cmd.args(args);
        run_with_timeout(cmd, CMD_WAIT)
    }

    /// `path` as seen inside the namespace.
    fn path(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(path.strip_prefix("/").unwrap())
    }

    /// The per-mount options of the topmost mount on `dir` inside the namespace.
    fn mount_options(&self, dir: &Path) -> Vec<String> {
        let want = dir.to_str().expect("utf-8 path");
        self.mountinfo()
            .lines()
            .rev()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|fields| fields.get(4) == Some(&want))
            .map(|fields| fields[5].split(',').map(String::from).collect())
            .unwrap_or_default()
    }

    /// Runs mount(8) inside the namespace with `args` and checks that profile `demo` is then
    /// mounted on `s.mnt` as fuse.ftpsync.
    fn mount_demo(&self, s: &Setup, args: &[&OsStr], env: Option<(&str, &Path)>) {
        let mut mount = self.cmd(s, "mount");
        mount.args(args);
        if let Some((k, v)) = env {
            mount.env(k, v);
        }
        run_with_timeout(mount, CMD_WAIT).assert_ok();
        assert_eq!(
            self.mounted(&s.mnt),
            Some(("fuse.ftpsync".into(), "demo".into())),
            "mountinfo in the namespace:\n{}",
            self.mountinfo()
        );
    }

    /// `mount -t fuse.ftpsync demo MNT -o OPTS` inside the namespace, checked.
    fn mount_t(&self, s: &Setup, opts: &str) {
        let args = ["-t", "fuse.ftpsync", "demo"].map(OsStr::new);
        let tail = ["-o", opts].map(OsStr::new);
        let all: Vec<&OsStr> = args
            .into_iter()
            .chain([s.mnt.as_os_str()])
            .chain(tail)
            .collect();
        self.mount_demo(s, &all, None);
    }

    /// (fstype, source) of the topmost mount on `dir` inside the namespace.
    fn mounted(&self, dir: &Path) -> Option<(String, String)> {
        let want = dir.to_str().expect("utf-8 path");
        self.mountinfo().lines().rev().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(4) == Some(&want))
                .then(|| (fields[sep + 1].to_string(), fields[sep + 2].to_string()))
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("nsenter")
                .args(["-t", &self.holder.id().to_string(), "-m", "--"])
                .args(["fusermount3", "-uz"])
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The program name and arguments of process `pid`.
fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

#[test]
fn mount_t_fuse_ftpsync_and_an_fstab_line_then_umount_and_fusermount3() {
    let s = Setup::new(true);
    s.profile("demo", true, "");
    let mut ns = Ns::new(&s.root, &["/usr/sbin", "/etc"]);
    ns.mounts.push(s.mnt.clone());

    // install.sh as root: the helper where mount(8) looks, the unit, /etc/ftpsync.
    let host_helper = fs::symlink_metadata("/sbin/mount.fuse.ftpsync")
        .ok()
        .map(|m| m.ino());
    let out = ns.install(&s, &[&s.prefix]);
    out.assert_ok();
    let bin = s.prefix.join("bin/ftpsync");
    for want in [
        format!("linked     /sbin/mount.fuse.ftpsync -> {}", bin.display()),
        "linked     /etc/systemd/system/ftpsync@.service".into(),
        "created    /etc/ftpsync (mode 0700)".into(),
    ] {
        assert!(
            out.stdout.contains(&want),
            "{want:?} not in:\n{}",
            out.stdout
        );
    }
    assert_eq!(
        fs::read_link(ns.path(p("/sbin/mount.fuse.ftpsync"))).ok(),
        Some(bin.clone())
    );
    assert_eq!(
        fs::symlink_metadata("/sbin/mount.fuse.ftpsync")
            .ok()
            .map(|m| m.ino()),
        host_helper,
        "install.sh in the test's namespace changed the machine's /sbin"
    );

    // mount(8) runs /sbin/mount.fuse.ftpsync, the symlink install.sh made, which mounts the
    // profile on the mountpoint given (over the profile's own `mountpoint`, also this one).
    let other = s.root.join("other-mnt");
    fs::create_dir(&other).expect("mkdir");
    fs::write(
        s.cfg.join("demo.toml"),
        fs::read_to_string(s.cfg.join("demo.toml"))
            .unwrap()
            .replace(
                &format!("mountpoint = {:?}", s.mnt),
                &format!("mountpoint = {other:?}"),
            ),
    )
    .unwrap();
    ns.mount_t(&s, "nodev,noatime,_netdev");
    assert_eq!(
        ns.mounted(&other),
        None,
        "the profile's mountpoint won over mount(8)'s"
    );
    assert!(
        !common::is_ftpsync_mounted(&s.mnt),
        "the mount is visible outside the test's namespace"
    );
    let pid = s.pid();
    assert_eq!(
        cmdline(pid).first().map(String::as_str),
        Some("/sbin/mount.fuse.ftpsync"),
        "mount(8) did not go through the helper: {:?}",
        cmdline(pid)
    );

    fs::write(
        ns.path(&s.mnt.join("one.txt")),
        b"through mount -t fuse.ftpsync",
    )
    .expect("write");
    let mut flush = ns.cmd(&s, BIN);
    flush.arg("flush").arg(&s.mnt);
    run_with_timeout(flush, CMD_WAIT).assert_ok();
    s.assert_on_remote("one.txt", b"through mount -t fuse.ftpsync");

    ns.run(&s, "umount", &[&s.mnt]).assert_ok();
    s.assert_clean_exit(pid, "umount");
    assert_eq!(ns.mounted(&s.mnt), None, "still mounted after umount");

    // An fstab line (LIBMOUNT_FSTAB: a temp fstab, not /etc/fstab): `mount DIR` finds it.
    // mount(8) drops noauto and x-*; _netdev and nofail reach ftpsync, which ignores them.
    let fstab = s.root.join("fstab");
    fs::write(
        &fstab,
        format!(
            "# as in mount-helpers/README.md\n\
             demo  {}  fuse.ftpsync  nodev,nosuid,_netdev,nofail,noauto,x-systemd.automount  0  0\n",
            s.mnt.display()
        ),
    )
    .unwrap();
    ns.mount_demo(&s, &[s.mnt.as_os_str()], Some(("LIBMOUNT_FSTAB", &fstab)));
    let opts = ns.mount_options(&s.mnt);
    assert!(
        opts.contains(&"nodev".to_string()) && opts.contains(&"nosuid".to_string()),
        "{opts:?}"
    );
    let pid = s.pid();
    fs::write(ns.path(&s.mnt.join("two.txt")), b"through fstab").expect("write");
    let mut flush = ns.cmd(&s, BIN);
    flush.arg("flush").arg(&s.mnt);
    run_with_timeout(flush, CMD_WAIT).assert_ok();
    s.assert_on_remote("two.txt", b"through fstab");
    s.assert_on_remote("one.txt", b"through mount -t fuse.ftpsync");

    ns.run(&s, "fusermount3", &[p("-u"), &s.mnt]).assert_ok();
    s.assert_clean_exit(pid, "fusermount3 -u");
    assert_eq!(
        ns.mounted(&s.mnt),
        None,
        "still mounted after fusermount3 -u"
    );
    ns.mounts.clear();
}

#[test]
fn without_the_sbin_helper_fuse3s_mount_fuse_runs_ftpsync_from_the_default_path() {
    // mount(8) falls back to /sbin/mount.fuse for any fuse.TYPE; it runs `TYPE SOURCE DIR -o
    // OPTS` through sh, whose PATH is its default one (mount(8) removed the caller's), so
    // ftpsync must sit in /usr/local/bin or the like, as with PREFIX=/usr/local.
    if Path::new("/sbin/mount.fuse.ftpsync").exists() {
        eprintln!(
            "skipped: /sbin/mount.fuse.ftpsync is installed on this machine and would be used"
        );
        return;
    }
    assert!(
        Path::new("/sbin/mount.fuse").exists(),
        "fuse3's /sbin/mount.fuse is missing (apt-get install fuse3)"
    );
    let s = Setup::new(false);
    s.profile("demo", false, "");
    let mut ns = Ns::new(&s.root, &["/usr/local"]);
    ns.mounts.push(s.mnt.clone());
    // The default PREFIX, but nothing outside it: no /sbin/mount.fuse.ftpsync.
    ns.install(&s, &[p("--prefix-only"), p("/usr/local")])
        .assert_ok();

    ns.mount_t(&s, "nosuid");
    let pid = s.pid();
    let argv = cmdline(pid);
    assert_eq!(
        argv.first().map(String::as_str),
        Some("ftpsync"),
        "not mount.fuse's form: {argv:?}"
    );
    assert!(argv.contains(&"-o".to_string()), "{argv:?}");
    fs::write(ns.path(&s.mnt.join("f.txt")), b"via mount.fuse").expect("write");
    assert_eq!(fs::read(s.local.join("f.txt")).unwrap(), b"via mount.fuse");

    ns.run(&s, "umount", &[&s.mnt]).assert_ok();
    s.assert_clean_exit(pid, "umount");
    ns.mounts.clear();
}

#[test]
fn ftpsync_mount_and_trust_by_profile_name_and_the_units_foreground_command() {
    let s = Setup::new(true);
    // Not pinned anywhere but where `trust` puts it: the profile's state dir.
    s.profile("demo", false, "");
    let fp = s.sshd().host_fingerprint();
    let out = s.ftpsync(&["trust", "demo", "--fingerprint", &fp]);
    out.assert_ok();
    let pinned = fs::read_to_string(s.state.join("known_hosts")).unwrap_or_default();
    assert!(
        pinned.contains(&format!("[127.0.0.1]:{}", s.sshd().port())),
        "trust demo pinned nothing in the profile's state dir: {pinned:?}\n{}",
        out.stdout
    );

    // A directory named like the profile does not hide it (the Quick start's own case, run
    // from the home holding ~/docs): the name is the profile, the directory is ./demo, and a
    // REMOTE after the name gets that said.
    fs::create_dir(s.cwd.join("demo")).unwrap();
    let out = s.ftpsync(&["mount", "demo", "sftp://x@127.0.0.1:1/r"]);
    assert!(
        !out.ok() && out.stderr.contains("write it as a path: ./demo"),
        "{}",
        out.stderr
    );

    // `ftpsync mount NAME`: everything from the profile, the mountpoint included.
    s.ftpsync(&["mount", "demo"]).assert_ok();
    fs::remove_dir(s.cwd.join("demo")).unwrap();
    assert!(
        common::is_ftpsync_mounted(&s.mnt),
        "not mounted at the profile's mountpoint"
    );
    let pid = s.pid();
    fs::write(s.mnt.join("a.txt"), b"ftpsync mount demo").unwrap();
    s.ftpsync(&["flush", s.mnt.to_str().unwrap()]).assert_ok();
    s.assert_on_remote("a.txt", b"ftpsync mount demo");
    let (ok, err) = common::fusermount_u(&s.mnt);
    assert!(ok, "fusermount3 -u: {err}");
    s.assert_clean_exit(pid, "fusermount3 -u");

    // ftpsync@.service runs `ftpsync mount -f --profile NAME` as Type=notify: READY=1 comes
    // once the mount is live, and SIGTERM (systemctl stop) unmounts and exits 0.
    let sock_path = s.root.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut daemon = s
        .cmd(BIN)
        .args(["mount", "-f", "--profile", "demo"])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(s.root.join("foreground.log")).unwrap())
        .spawn()
        .expect("ftpsync mount -f");
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
        let _ = daemon.kill();
        panic!(
            "no READY=1 from ftpsync mount -f: {e}\n{}",
            fs::read_to_string(s.root.join("foreground.log")).unwrap_or_default()
        )
    });
    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        common::is_ftpsync_mounted(&s.mnt),
        "READY=1 before the mount was live"
    );
    fs::write(s.mnt.join("b.txt"), b"under the unit's command").unwrap();
    s.ftpsync(&["flush", s.mnt.to_str().unwrap()]).assert_ok();
    s.assert_on_remote("b.txt", b"under the unit's command");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(st) = daemon.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > common::EXIT_WAIT {
            let _ = daemon.kill();
            panic!("ftpsync mount -f still running after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "ftpsync mount -f after SIGTERM: {status}");
    assert!(
        !common::is_ftpsync_mounted(&s.mnt),
        "still mounted after SIGTERM"
    );
}

#[test]
fn a_missing_or_unsafe_profile_is_refused_with_the_reason() {
    let s = Setup::new(false);
    let helper = s.root.join("mount.fuse.ftpsync");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let where_ = s.cfg.join("nosuch.toml").display().to_string();

    // Missing: the error names the file looked for, and where profiles live.
    for out in [
        s.ftpsync(&["mount", "nosuch"]),
        s.ftpsync(&["mount", "--profile", "nosuch", "/mnt"]),
        s.ftpsync(&["trust", "nosuch"]),
        run_with_timeout(
            {
                let mut c = s.cmd(&helper);
                c.args(["nosuch", s.mnt.to_str().unwrap(), "-o", "rw,_netdev"]);
                c
            },
            CMD_WAIT,
        ),
    ] {
        assert!(!out.ok(), "{}: succeeded", out.cmdline);
        for want in [
            "no profile 'nosuch'",
            &where_,
            "/etc/ftpsync",
            "~/.config/ftpsync",
        ] {
            assert!(
                out.stderr.contains(want),
                "{}: {want:?} not in:\n{}",
                out.cmdline,
                out.stderr
            );
        }
    }
    // Not a name at all.
    let out = s.ftpsync(&["mount", "--profile", "../cfg/x"]);
    assert!(
        !out.ok() && out.stderr.contains("not a profile name"),
        "{}",
        out.stderr
    );

    // A profile holding a secret is refused, naming the key and the right way, not the secret.
    s.profile("pw", false, "password = \"hunter2\"\n");
    let out = s.ftpsync(&["mount", "pw"]);
    assert!(!out.ok(), "a profile with a password mounted");
    assert!(
        out.stderr.contains("`password`") && out.stderr.contains("password_file"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("hunter2"),
        "the secret was printed: {}",
        out.stderr
    );

    // A profile others can read is refused, as ssh refuses such a key.
    let path = s.profile("open", false, "");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let out = s.ftpsync(&["mount", "open"]);
    assert!(
        !out.ok() && out.stderr.contains("too open"),
        "{}",
        out.stderr
    );
    assert!(!common::is_ftpsync_mounted(&s.mnt));
}

#[test]
fn install_is_idempotent_and_the_unit_verifies() {
    let s = Setup::new(false);
    let first = s.install();
    first.assert_ok();
    let bin = s.prefix.join("bin/ftpsync");
    for want in [
        format!("installed  {}", bin.display()),
        format!(
            "linked     {} -> {}",
            s.prefix.join("sbin/mount.fuse.ftpsync").display(),
            bin.display()
        ),
        "nothing installed outside".into(),
    ] {
        assert!(
            first.stdout.contains(&want),
            "{want:?} not in:\n{}",
            first.stdout
        );
    }
    let again = s.install();
    again.assert_ok();
    assert_eq!(
        again.stdout.matches("unchanged  ").count(),
        3,
        "a second install changed something:\n{}",
        again.stdout
    );
    let unit = s.prefix.join("lib/systemd/system/ftpsync@.service");
    let text = fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!(
            "ExecStart={} mount -f --profile %i",
            bin.display()
        )),
        "{text}"
    );

    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    };
    // A template verifies as an instance: a link to it, beside it.
    let units = s.root.join("units");
    fs::create_dir(&units).unwrap();
    fs::copy(&unit, units.join("ftpsync@.service")).unwrap();
    let instance = units.join("ftpsync@demo.service");
    std::os::unix::fs::symlink("ftpsync@.service", &instance).unwrap();
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(&instance);
    let out = run_with_timeout(cmd, CMD_WAIT);
    out.assert_ok();
    assert!(
        !out.stderr.contains("ftpsync@"),
        "systemd-analyze verify complained:\n{}",
        out.stderr
    );
}

#[test]
fn install_replaces_only_its_own_helper_and_unit_unless_forced() {
    let s = Setup::new(false);
    let ns = Ns::new(&s.root, &["/usr/sbin", "/etc"]);
    let host_helper = fs::symlink_metadata("/sbin/mount.fuse.ftpsync")
        .ok()
        .map(|m| m.ino());
    let (helper, unit) = (
        p("/sbin/mount.fuse.ftpsync"),
        p("/etc/systemd/system/ftpsync@.service"),
    );
    let bin = s.prefix.join("bin/ftpsync");
    let our_unit = s.prefix.join("lib/systemd/system/ftpsync@.service");
    let admins_unit = "[Service]\nExecStart=/opt/site/bin/ftpsync mount -f --profile %i\n";

    // The admin's own helper and unit, in the namespace's /sbin and /etc.
    fs::create_dir_all(ns.path(p("/etc/systemd/system"))).expect("mkdir");
    fs::write(ns.path(helper), "#!/bin/sh\n# the admin's own\n").expect("write");
    fs::write(ns.path(unit), admins_unit).expect("write");
    let out = ns.install(&s, &[&s.prefix]);
    assert!(!out.ok(), "install.sh replaced them:\n{}", out.stdout);
    for want in [
        "not installed, nothing changed",
        "/sbin/mount.fuse.ftpsync is a file this install did not put there",
        "/etc/systemd/system/ftpsync@.service is a file this install did not put there",
        "--force",
    ] {
        assert!(
            out.stderr.contains(want),
            "{want:?} not in:\n{}",
            out.stderr
        );
    }
    assert!(!bin.exists(), "install.sh went on before refusing");
    assert_eq!(
        fs::read_to_string(ns.path(helper)).unwrap(),
        "#!/bin/sh\n# the admin's own\n"
    );
    assert_eq!(fs::read_to_string(ns.path(unit)).unwrap(), admins_unit);

    // The helper of another install is not this one's either.
    fs::remove_file(ns.path(helper)).unwrap();
    std::os::unix::fs::symlink("/opt/other/bin/ftpsync", ns.path(helper)).unwrap();
    let out = ns.install(&s, &[&s.prefix]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains(&format!(
            "/sbin/mount.fuse.ftpsync is a symlink to /opt/other/bin/ftpsync, not to {}",
            bin.display()
        )),
        "{}",
        out.stderr
    );

    // --force replaces them, saying what went.
    let out = ns.install(&s, &[p("--force"), &s.prefix]);
    out.assert_ok();
    for want in [
        format!(
            "linked     /sbin/mount.fuse.ftpsync -> {} (--force: replaced a symlink to \
             /opt/other/bin/ftpsync)",
            bin.display()
        ),
        format!(
            "linked     /etc/systemd/system/ftpsync@.service -> {} (--force: replaced a file \
             of its own)",
            our_unit.display()
        ),
    ] {
        assert!(
            out.stdout.contains(&want),
            "{want:?} not in:\n{}",
            out.stdout
        );
    }
    assert_eq!(fs::read_link(ns.path(helper)).ok(), Some(bin.clone()));
    assert_eq!(fs::read_link(ns.path(unit)).ok(), Some(our_unit.clone()));

    // Its own links are its own: a second run, without --force, changes nothing.
    let out = ns.install(&s, &[&s.prefix]);
    out.assert_ok();
    assert_eq!(
        out.stdout.matches("unchanged  ").count(),
        5,
        "binary, both helpers, unit and its link:\n{}",
        out.stdout
    );

    // A copy of its own unit (or binary) is its own too: linked over without --force.
    fs::remove_file(ns.path(unit)).unwrap();
    fs::copy(&our_unit, ns.path(unit)).unwrap();
    fs::remove_file(ns.path(helper)).unwrap();
    fs::copy(&bin, ns.path(helper)).unwrap();
    let out = ns.install(&s, &[&s.prefix]);
    out.assert_ok();
    assert_eq!(
        out.stdout.matches("(replaced an identical file)").count(),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(fs::read_link(ns.path(helper)).ok(), Some(bin));
    assert_eq!(fs::read_link(ns.path(unit)).ok(), Some(our_unit));
    assert_eq!(
        fs::symlink_metadata("/sbin/mount.fuse.ftpsync")
            .ok()
            .map(|m| m.ino()),
        host_helper,
        "install.sh in the test's namespace changed the machine's /sbin"
    );
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(tool))
                .find(|f| f.is_file())
        })
        .ok_or(())
}
