//! Servers no one here wrote (issue 10): the same tree of files, directories, symlinks
//! (relative, absolute, `..`-leading) and hostile names mirrored through a real FUSE mount to
//! each, ending with the remote equal to the local tree, `verify` clean, `restore` equal, and
//! nothing created outside the remote root. OpenSSH's behaviour is no evidence for them.
//! Servers: OpenSSH internal-sftp, gesftpserver (draft symlink order), proftpd's mod_sftp
//! (OpenSSH order, no exec) and `rclone serve sftp` (no symlinks: links are kept as rclone's
//! `NAME.rclonelink` files). `status` must name each one's symlink support rightly.

mod common;

use common::mirror_tree::{assert_mirrored, tree_filtered, tree_with_link_files};
use common::sshd::Flavor;
use common::{run_with_timeout, walk, Mount, BIN, CMD_WAIT, HOSTILE_NAMES};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The tree every server gets: plain files, a nested directory, hostile names, and symlinks of
/// every shape (never followed: their targets are names, nothing is written through them).
fn plant_tree(m: &Mount) {
    fs::create_dir_all(m.path("docs/deep/er")).expect("mkdir");
    fs::write(m.path("docs/readme.txt"), b"hello").expect("write");
    fs::write(m.path("docs/deep/er/data.bin"), common::pattern(7, 100_000)).expect("write");
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        let path = m.path("docs").join(OsStr::from_bytes(name));
        fs::write(&path, format!("hostile {i}")).expect("write hostile");
    }
    for (link, target) in [
        ("docs/rel", "readme.txt"),
        // Where a server that took the two paths the other way round would make a link, these
        // targets name no existing directory: the mistake fails instead of planting one there.
        ("docs/abs", "/nonexistent-ftpsync-test/abs"),
        ("docs/up", "../../nonexistent-ftpsync-test/up"),
        ("docs/deep/dotdot", ".."),
        ("docs/dangling", "no such file"),
    ] {
        std::os::unix::fs::symlink(target, m.path(link)).expect("symlink");
    }
}

/// The names directly in `dir` (none if it does not exist).
fn names(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn restore_into(m: &Mount, dir: &Path) {
    let sshd = m.sshd.as_ref().expect("sshd");
    let mut cmd = Command::new(BIN);
    cmd.arg("restore")
        .arg("--state-dir")
        .arg(&m.state)
        .arg("--identity")
        .arg(sshd.identity())
        .arg("--known-hosts")
        .arg(sshd.known_hosts())
        .arg(sshd.remote_url())
        .arg(dir);
    fs::create_dir_all(dir).expect("mkdir target");
    run_with_timeout(cmd, CMD_WAIT).assert_ok();
}

/// What `status` must say of the server's symlinks, from the probe at connect.
fn expected_symlinks(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Gesftp => "yes (protocol draft argument order)",
        Flavor::Rclone => "no",
        Flavor::Proftpd => "no (the server reads symlinks back changed)",
        _ => "yes (OpenSSH argument order)",
    }
}

fn assert_status_symlinks(m: &Mount, flavor: Flavor) {
    // The probe runs once connected; the line shows from then on.
    m.wait_mirror_status(CMD_WAIT, "the server's symlink capability", |s| {
        s["server"]["capabilities"]["symlinks"].is_string()
    });
    let out = common::ftpsync(["status".as_ref(), m.state.as_os_str()]);
    out.assert_ok();
    // rclone accepts a chmod and ignores it: every file gets its defaults.
    let permissions = if flavor == Flavor::Rclone {
        "ignored"
    } else {
        "kept"
    };
    // rclone has no fsync@openssh.com.
    let fsync = if flavor == Flavor::Rclone {
        "no (uploads are not forced to the server's disk)"
    } else {
        "yes"
    };
    for want in [
        format!("symlinks: {}", expected_symlinks(flavor)),
        format!("permissions: {permissions}"),
        format!("fsync: {fsync}"),
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim() == want),
            "status should say {want:?} for {flavor:?}:\n{}",
            out.stdout
        );
    }
}

fn mirrors_everything_to(flavor: Flavor) {
    let m = Mount::builder().flavor(flavor).mount();
    let sshd = m.sshd.as_ref().expect("sshd");
    let remote = sshd.remote_root_on_disk();
    // For rclone this is the directory it serves as `/`, the SFTP session's working directory;
    // for the others the account's home (checked below) is.
    let around = remote.parent().expect("parent").to_path_buf();
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let (around_before, home_before) = (names(&around), names(&home));

    plant_tree(&m);
    assert_status_symlinks(&m, flavor);
    m.flush();
    // The hash command where the server runs one over exec; reading back where it refuses exec.
    let verify = m.mirror_status()["server"]["capabilities"]["verify"].clone();
    let expected_exec = if std::path::Path::new("/usr/bin/openssl").exists() {
        "exec:openssl"
    } else {
        "exec:sha256sum"
    };
    let want = match flavor {
        Flavor::Plain | Flavor::Gesftp => expected_exec,
        _ => "readback",
    };
    assert_eq!(verify, want, "{flavor:?} uploads verified by {verify}");
    assert_mirrored(&m);
    common::ftpsync(["verify".as_ref(), m.state.as_os_str()]).assert_ok();

    let restored = m.root.join("restored");
    restore_into(&m, &restored);
    let none = |_: &[u8]| false;
    assert_eq!(
        tree_filtered(&m.local, &none),
        tree_filtered(&restored, &none)
    );

    // Nothing outside the root: not beside it, not in the account's home.
    assert_eq!(
        names(&around),
        around_before,
        "entries appeared beside the remote root"
    );
    assert_eq!(
        names(&home),
        home_before,
        "entries appeared in the account's home"
    );
    assert!(
        walk(&remote)
            .iter()
            .all(|(rel, _, _)| !rel.starts_with(b".probe")),
        "the capability probe left its directory behind"
    );
}

#[test]
fn gesftpserver_a_draft_order_server_gets_every_symlink_inside_the_root() {
    common::require_tool(common::sshd::GESFTPSERVER);
    mirrors_everything_to(Flavor::Gesftp);
}

#[test]
fn openssh_internal_sftp_gets_the_same_tree() {
    mirrors_everything_to(Flavor::Plain);
}

/// proftpd makes symlinks exactly as asked, but its SSH_FXP_READLINK answers a relative target
/// resolved against the link's directory (`rel -> readme.txt` reads back as
/// `/abs/root/docs/readme.txt`, `..` collapsed): ftpsync's probe finds that out and keeps
/// symlinks there as link files, which read back as made.
#[test]
fn proftpd_mod_sftp_gets_the_same_tree() {
    common::require_tool(common::sshd::PROFTPD);
    common::require_tool(&format!("{}/mod_sftp.so", common::sshd::PROFTPD_MODULES));
    mirrors_everything_to(Flavor::Proftpd);
}

/// A server that makes no symlinks gets them as `NAME.rclonelink` files.
#[test]
fn rclone_a_server_without_symlinks_gets_them_as_link_files() {
    common::require_tool(common::sshd::RCLONE);
    mirrors_everything_to(Flavor::Rclone);
}

/// The comparison the rclone test leans on: a tree with `NAME.rclonelink` files reads back
/// equal to the same tree with real symlinks, and a wrong target does not.
#[test]
fn link_files_read_back_as_the_symlinks_they_stand_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (links, files) = (dir.path().join("links"), dir.path().join("files"));
    for d in [&links, &files] {
        fs::create_dir_all(d.join("sub")).expect("mkdir");
    }
    std::os::unix::fs::symlink("../x y", links.join("sub/l")).expect("symlink");
    fs::write(files.join("sub/l.rclonelink"), "../x y").expect("write");
    let none = |_: &[u8]| false;
    let real = tree_filtered(&links, &none);
    assert_eq!(real, tree_with_link_files(&files, &none));
    fs::write(files.join("sub/l.rclonelink"), "elsewhere").expect("write");
    assert_ne!(real, tree_with_link_files(&files, &none));
}
