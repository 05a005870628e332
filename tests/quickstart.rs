//! The README's Quick start, run as written (issue 11): its shell block is taken from
//! README.md itself and run line by line (`bash -eux`, every line must succeed) in a fresh
//! HOME, from that HOME (so `ftpsync mount docs` runs beside the directory ~/docs), against a
//! throwaway loopback sshd. Only what names the reader's world is replaced: `/home/me` by the
//! HOME, the example server by the test sshd, and the `yes` typed at `trust` by the
//! `--fingerprint` the README offers instead (a piped yes is refused: checked here too). Then
//! the server must hold the copied files, the mount must be gone, and the restore must equal
//! them. Once as root, once as `nobody` (when this machine lets an ordinary user mount FUSE:
//! fusermount3 setuid and /dev/fuse open to all; otherwise the test prints why it skips).

mod common;

use common::sshd::{Flavor, Sshd};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const README: &str = include_str!("../README.md");
const NOBODY: u32 = 65534;
/// The whole block: mount, flush, verify, unmount, restore.
const BLOCK_WAIT: Duration = Duration::from_secs(240);

/// The Quick start's shell block, as the README has it.
fn quick_start_block() -> String {
    let section = README
        .split("## Quick start against a real server")
        .nth(1)
        .expect("README has no Quick start section");
    let code = section
        .split("```sh\n")
        .nth(1)
        .and_then(|c| c.split("```").next())
        .expect("the Quick start has no sh block");
    code.to_string()
}

/// `text` with `from` replaced; the README must still say `from` (else the test would
/// silently run something else).
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the Quick start no longer says {from:?}: update tests/quickstart.rs\n{text}"
    );
    text.replace(from, to)
}

/// A user's fresh home: the login key in ~/.ssh and a few pictures in ~/Pictures/2026.
struct Home {
    _base: tempfile::TempDir,
    home: PathBuf,
    uid: u32,
}

impl Home {
    fn new(sshd: &Sshd, uid: u32) -> Home {
        let base = tempfile::Builder::new()
            .prefix("ftpsync-quickstart-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let home = base.path().canonicalize().expect("canonical").join("home");
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).expect("mkdir ~/.ssh");
        fs::copy(sshd.identity(), ssh.join("id_ed25519")).expect("copy the key");
        fs::set_permissions(ssh.join("id_ed25519"), fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        let pics = home.join("Pictures/2026/summer");
        fs::create_dir_all(&pics).expect("mkdir pictures");
        for (name, seed) in [
            ("Pictures/2026/a.jpg", 1),
            ("Pictures/2026/summer/b.jpg", 2),
        ] {
            fs::write(home.join(name), common::pattern(seed, 70_000)).expect("write picture");
        }
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(&home)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown -R {uid} {}", home.display());
        Home {
            _base: base,
            home,
            uid,
        }
    }

    /// `bash ARGS` as this user, with only HOME and PATH (ftpsync's directory first) set,
    /// from HOME.
    fn bash(&self, args: &[&str]) -> Command {
        let bin_dir = Path::new(common::BIN).parent().expect("binary's directory");
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.uid))
            .arg("--clear-groups")
            .arg("bash")
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display()),
            )
            .current_dir(&self.home);
        if self.uid == 0 {
            // Root's default state dir is /var/lib/ftpsync/NAME: keep the test's in its HOME.
            cmd.env("XDG_STATE_HOME", self.home.join(".local/state"));
        }
        cmd
    }
}

/// Detaches ~/docs if the block failed half way, so no mount outlives the test.
struct Unmounted(PathBuf);

impl Drop for Unmounted {
    fn drop(&mut self) {
        if common::is_ftpsync_mounted(&self.0) {
            let _ = common::fusermount(&["-uz"], &self.0);
        }
    }
}

fn run_quick_start(uid: u32) {
    common::become_subreaper();
    let sshd = Sshd::start(Flavor::Plain);
    let home = Home::new(&sshd, uid);
    let h = home.home.display().to_string();
    let script = quick_start_block();
    let script = substitute(&script, "/home/me", &h);
    let script = substitute(
        &script,
        "sftp://backup@files.example.org/data",
        &sshd.remote_url(),
    );
    let script = substitute(
        &script,
        "ftpsync trust docs ",
        &format!(
            "ftpsync trust docs --fingerprint {} ",
            sshd.host_fingerprint()
        ),
    );
    let docs = home.home.join("docs");
    let _guard = Unmounted(docs.clone());
    let out = common::run_with_timeout(home.bash(&["-eux", "-c", &script]), BLOCK_WAIT);
    out.assert_ok();
    assert!(
        out.stdout.contains("every change is confirmed"),
        "ftpsync unmount did not say everything is on the server:\n{}",
        out.stdout
    );
    assert!(!common::is_ftpsync_mounted(&docs), "~/docs still mounted");
    let remote = sshd.remote_root_on_disk();
    for (rel, seed) in [("2026/a.jpg", 1), ("2026/summer/b.jpg", 2)] {
        let want = common::pattern(seed, 70_000);
        assert_eq!(
            fs::read(remote.join(rel)).ok(),
            Some(want.clone()),
            "{rel} on the server"
        );
        assert_eq!(
            fs::read(home.home.join("docs-restored").join(rel)).ok(),
            Some(want),
            "{rel} restored"
        );
    }

    // `trust` with a yes on a pipe refuses, saying so and pointing to --fingerprint (the key
    // is already pinned in the profile's state dir: a fresh profile asks again).
    let profiles = home.home.join(".config/ftpsync");
    let other = profiles.join("other.toml");
    let text = fs::read_to_string(profiles.join("docs.toml")).expect("read the profile");
    let text = text.replace(&*docs.to_string_lossy(), &format!("{h}/other"));
    fs::write(&other, text).expect("write a second profile");
    let chown = Command::new("chown")
        .arg(format!("{uid}:{uid}"))
        .arg(&other)
        .status()
        .expect("chown");
    assert!(chown.success());
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::create_dir(home.home.join("other")).expect("mkdir ~/other");
    let piped = common::run_with_timeout(
        home.bash(&["-c", "yes | ftpsync trust other"]),
        common::CMD_WAIT,
    );
    assert!(!piped.ok(), "trust took a piped yes");
    for want in ["not a terminal", "--fingerprint"] {
        assert!(
            piped.stderr.contains(want),
            "{want:?} not in:\n{}",
            piped.stderr
        );
    }
}

#[test]
fn the_quick_start_works_as_written_for_root() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the Quick start test switches users and needs root");
        return;
    }
    run_quick_start(0);
}

/// Why an ordinary user cannot mount FUSE here, if they cannot: fusermount3 must be setuid
/// root, and /dev/fuse open to all (fuser opens it before trying fusermount3; distributions
/// make it 0666, some containers leave it 0600).
fn no_user_fuse() -> Option<String> {
    match fs::metadata("/usr/bin/fusermount3") {
        Ok(m) if m.permissions().mode() & 0o4000 != 0 => {}
        Ok(_) => return Some("/usr/bin/fusermount3 is not setuid root".into()),
        Err(e) => return Some(format!("no /usr/bin/fusermount3: {e}")),
    }
    match fs::metadata("/dev/fuse") {
        Ok(m) if m.permissions().mode() & 0o006 == 0o006 => None,
        Ok(m) => Some(format!(
            "/dev/fuse is mode {:o}, not read-write for other users",
            m.permissions().mode() & 0o777
        )),
        Err(e) => Some(format!("no /dev/fuse: {e}")),
    }
}

#[test]
fn the_quick_start_works_as_written_for_an_ordinary_user() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the Quick start test switches to nobody and needs root");
        return;
    }
    if let Some(why) = no_user_fuse() {
        eprintln!("skipped: an ordinary user cannot mount FUSE here: {why}");
        return;
    }
    run_quick_start(NOBODY);
}
