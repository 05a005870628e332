//! The manifest describes one remote (DESIGN invariant 9): a state dir used with another
//! remote root, two local directories whose state dirs used to collide, and a remote root
//! replaced on the server (while unmounted, or while mounted across an sshd restart) never
//! leave `flush` reporting success against a root that lacks the files. Each case ends with
//! the remote root equal to the local tree (SHA-256 of every file) after a flush that exits 0.

mod common;

use common::mirror_tree::{assert_mirrored, differences_in, ROOT_MARKER};
use common::sshd::{Flavor, Sshd};
use common::{run_with_timeout, Mount, BIN, CMD_WAIT};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A few files in a few directories, with fixed contents, modes and mtimes, so two trees
/// written by it are alike in everything the manifest records.
fn write_tree(root: &Path) {
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    for i in 0..12 {
        let dir = root.join(format!("d{}", i % 3));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("f{i}.txt"));
        fs::write(&path, format!("file {i}\n").repeat(i * 40 + 1)).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime))
            .expect("set mtime");
    }
}

fn assert_equal(local: &Path, remote: &Path, log: &str) {
    let diff = differences_in(local, remote, &|_| false);
    assert!(
        diff.is_empty(),
        "remote {} differs from local {} in {} paths:\n{}\ndaemon log:\n{log}",
        remote.display(),
        local.display(),
        diff.len(),
        diff.iter().take(30).cloned().collect::<Vec<_>>().join("\n"),
    );
    assert!(
        remote.join(OsStr::from_bytes(ROOT_MARKER)).is_file(),
        "no root marker in {}",
        remote.display()
    );
}

/// A second, empty root on the same server, and its URL.
fn second_root(sshd: &Sshd) -> (PathBuf, String) {
    let root = sshd.remote_root_on_disk().with_file_name("root2");
    fs::create_dir(&root).expect("mkdir root2");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod root2");
    let url = format!(
        "sftp://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        root.display()
    );
    (root, url)
}

/// Moves the remote root away and puts an empty directory in its place.
fn replace_root(sshd: &Sshd) {
    let root = sshd.remote_root_on_disk();
    fs::rename(&root, root.with_file_name("root.moved-away")).expect("move the root away");
    fs::create_dir(&root).expect("recreate the root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod root");
}

#[test]
fn a_state_dir_used_with_another_remote_root_sends_everything_there() {
    let mut m = Mount::new();
    write_tree(&m.mnt);
    m.flush();
    assert_mirrored(&m);
    m.unmount();

    let (root2, url) = second_root(m.sshd.as_ref().expect("sshd"));
    m.use_remote(url);
    m.mount();
    m.flush();
    assert_equal(&m.local, &root2, &m.log_tail());
    assert!(
        m.daemon_log().contains("the remote changed from"),
        "the rebinding is not logged:\n{}",
        m.log_tail()
    );
    let audit = fs::read_to_string(m.state.join("audit.log")).expect("audit log");
    assert!(audit.contains("\"rebind\""), "no rebind audit record");
    m.unmount();
}

#[test]
fn a_remote_root_replaced_while_unmounted_gets_everything_at_the_next_mount() {
    let mut m = Mount::new();
    write_tree(&m.mnt);
    m.flush();
    assert_mirrored(&m);
    m.unmount();

    replace_root(m.sshd.as_ref().expect("sshd"));
    m.mount();
    m.flush();
    assert_mirrored(&m);
    assert!(
        m.daemon_log().contains("marker (id "),
        "the replaced root is not logged:\n{}",
        m.log_tail()
    );
    m.unmount();
}

/// The check is made at each new connection: after an sshd restart, the next change
/// reconnects, finds the marker gone, and everything is sent again before flush returns.
#[test]
fn a_remote_root_replaced_while_mounted_gets_everything_after_the_next_connect() {
    let mut m = Mount::new();
    write_tree(&m.mnt);
    m.flush();
    assert_mirrored(&m);

    let sshd = m.sshd.as_mut().expect("sshd");
    sshd.stop();
    replace_root(sshd);
    sshd.restart();
    fs::write(
        m.path("after-restart.txt"),
        b"made after the root was replaced",
    )
    .expect("write");
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}

/// One local directory mounted without --state-dir: its state dir is the default one under
/// `xdg`.
struct DefaultMount {
    local: PathBuf,
    mnt: PathBuf,
    xdg: PathBuf,
}

impl DefaultMount {
    fn mount(&self, sshd: &Sshd, url: &str) {
        let mut cmd = Command::new(BIN);
        cmd.arg("mount")
            .arg("--identity")
            .arg(sshd.identity())
            .arg("--known-hosts")
            .arg(sshd.known_hosts())
            .args(["--writeback-delay", "0", "--drain-timeout", "5"])
            .arg(&self.local)
            .arg(url)
            .arg(&self.mnt)
            .env("XDG_STATE_HOME", &self.xdg);
        run_with_timeout(cmd, CMD_WAIT).assert_ok();
    }

    /// The state dir the running mount reports.
    fn state_dir(&self) -> PathBuf {
        let out = common::ftpsync([
            "status".into(),
            self.mnt.clone().into_os_string(),
            "--json".into(),
        ]);
        let st: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}\n{}", out.stdout, out.stderr));
        PathBuf::from(st["state_dir"].as_str().expect("state_dir"))
    }

    fn flush(&self) {
        common::ftpsync([
            "flush".into(),
            self.mnt.clone().into_os_string(),
            "--timeout".into(),
            "60".into(),
        ])
        .assert_ok();
    }

    fn unmount(&self, state: &Path) {
        let pid: i32 = fs::read_to_string(state.join("ftpsync.pid"))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let (ok, err) = common::fusermount_u(&self.mnt);
        assert!(ok, "unmount {}: {err}", self.mnt.display());
        assert!(
            common::wait_pid_gone(pid, Duration::from_secs(60)),
            "daemon {pid} still running"
        );
    }
}

/// A test that fails mid-way leaves no mount behind (the daemon exits within its drain time).
impl Drop for DefaultMount {
    fn drop(&mut self) {
        if common::is_ftpsync_mounted(&self.mnt) {
            let _ = common::fusermount_u(&self.mnt);
        }
    }
}

#[test]
fn directories_whose_state_dir_names_used_to_collide_get_their_own() {
    common::become_subreaper();
    let sshd = Sshd::start(Flavor::Plain);
    let base = tempfile::Builder::new()
        .prefix("ftpsync-test-")
        .tempdir()
        .expect("temp base");
    let base = base.path().canonicalize().expect("canonical base");
    let xdg = base.join("xdg");
    let mounts: Vec<DefaultMount> = ["x/a_b", "x/a/b"]
        .iter()
        .enumerate()
        .map(|(i, local)| DefaultMount {
            local: base.join(local),
            mnt: base.join(format!("mnt{i}")),
            xdg: xdg.clone(),
        })
        .collect();
    for m in &mounts {
        for d in [&m.local, &m.mnt] {
            fs::create_dir_all(d).expect("mkdir");
        }
        write_tree(&m.local);
    }
    let (root2, url2) = second_root(&sshd);
    let roots = [
        (sshd.remote_root_on_disk(), sshd.remote_url()),
        (root2, url2),
    ];
    let mut states = Vec::new();
    for (m, (root, url)) in mounts.iter().zip(&roots) {
        m.mount(&sshd, url);
        let state = m.state_dir();
        m.flush();
        assert_equal(
            &m.local,
            root,
            &fs::read_to_string(state.join("ftpsync.log")).unwrap_or_default(),
        );
        m.unmount(&state);
        assert!(
            state.starts_with(xdg.join("ftpsync")),
            "{}",
            state.display()
        );
        states.push(state);
    }
    assert_ne!(states[0], states[1], "both directories got one state dir");
}

/// The marker's name is reserved at the mount's root: a local file of that name is never sent
/// over the marker, and flush says so instead of reporting success.
#[test]
fn a_local_file_named_like_the_marker_is_refused_not_sent_over_it() {
    let m = Mount::new();
    fs::write(m.path("kept.txt"), b"an ordinary file").expect("write");
    m.flush();
    let remote = common::mirror_tree::remote_root(&m);
    let marker = remote.join(OsStr::from_bytes(ROOT_MARKER));
    let before = fs::read(&marker).expect("root marker");
    fs::write(m.path(OsStr::from_bytes(ROOT_MARKER)), b"mine").expect("write");
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d").join(OsStr::from_bytes(ROOT_MARKER)), b"deeper").expect("write");
    let out = m.flush_for(5);
    assert!(!out.ok(), "flush reported success with a refused file");
    assert!(out.stderr.contains("reserved"), "{}", out.stderr);
    assert_eq!(fs::read(&marker).expect("root marker"), before);
    assert_eq!(
        fs::read(remote.join("d").join(OsStr::from_bytes(ROOT_MARKER))).expect("deeper"),
        b"deeper"
    );
}

/// A root the login cannot write to (here: a read-only chroot data directory with one
/// writable directory in it) gets no marker: that is logged once, and the mirror goes on,
/// trusting its manifest on the URL and host key, across a remount too.
#[test]
fn a_root_where_no_marker_can_be_written_is_mirrored_all_the_same() {
    use std::os::unix::fs::MetadataExt;
    let mut m = Mount::builder().chroot().prepare();
    let remote = common::mirror_tree::remote_root(&m);
    let owner = fs::metadata(&remote).expect("remote root");
    fs::create_dir(remote.join("w")).expect("mkdir remote w");
    std::os::unix::fs::chown(remote.join("w"), Some(owner.uid()), Some(owner.gid()))
        .expect("chown remote w");
    fs::set_permissions(&remote, fs::Permissions::from_mode(0o555)).expect("chmod root");
    fs::create_dir(m.local.join("w")).expect("mkdir local w");
    fs::set_permissions(m.local.join("w"), fs::Permissions::from_mode(0o755)).expect("chmod w");
    m.mount();
    write_tree(&m.path("w"));
    m.flush();
    assert_eq!(
        differences_in(&m.local, &remote, &|_| false),
        Vec::<String>::new(),
        "{}",
        m.log_tail()
    );
    assert!(!remote.join(OsStr::from_bytes(ROOT_MARKER)).exists());
    assert!(
        m.daemon_log()
            .contains("cannot write the remote root's marker"),
        "{}",
        m.log_tail()
    );
    m.unmount();
    m.mount();
    fs::write(m.path("w/after.txt"), b"after the remount").expect("write");
    m.flush();
    assert!(
        !m.daemon_log().contains("no longer describes"),
        "the manifest was distrusted:\n{}",
        m.log_tail()
    );
    assert_eq!(
        differences_in(&m.local, &remote, &|_| false),
        Vec::<String>::new()
    );
    m.unmount();
}
