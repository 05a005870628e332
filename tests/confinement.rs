//! Nothing outside the roots, no privilege carried across (issue 10), through a real FUSE mount
//! and a real loopback sshd: what a second local user makes in the mount reaches the server
//! with no more power than the mirror gives.

mod common;

use common::mirror_tree::{assert_mirrored, remote_root};
use common::Mount;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn set_id_bits_a_second_user_sets_never_reach_the_server() {
    let m = Mount::builder().opt("allow_other").mount();
    fs::create_dir(m.path("open")).expect("mkdir");
    fs::set_permissions(m.path("open"), fs::Permissions::from_mode(0o777)).expect("chmod");
    let script = r#"
        set -e
        cd "$1/open"
        cp /bin/true t
        chmod 4755 t
        cp /bin/true g
        chmod 2755 g
        mkdir sg
        chmod 2775 sg
    "#;
    let mut cmd = Command::new("sh");
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    cmd.arg("-c").arg(script).arg("sh").arg(&m.mnt);
    common::run_with_timeout(cmd, Duration::from_secs(60)).assert_ok();
    // The mount itself keeps what the user asked for.
    let local_mode = |n: &str| fs::metadata(m.path(n)).expect("stat").permissions().mode();
    assert_eq!(local_mode("open/t") & 0o7777, 0o4755);
    m.flush();
    let remote = remote_root(&m).join("open");
    for (name, want) in [("t", 0o755), ("g", 0o755), ("sg", 0o775)] {
        let mode = fs::symlink_metadata(remote.join(name))
            .expect("remote entry")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o7777,
            want,
            "remote {name} has mode {:o}",
            mode & 0o7777
        );
    }
    assert_mirrored(&m);
    common::ftpsync(["verify".as_ref(), m.state.as_os_str()]).assert_ok();
}

/// The remote root moved away on the server and a symlink to elsewhere put in its place: the
/// next connection sees the root resolve elsewhere and refuses it; nothing lands there.
#[test]
fn a_remote_root_replaced_by_a_symlink_is_refused_not_followed() {
    let mut m = Mount::builder().arg("--drain-timeout").arg("1").mount();
    fs::write(m.path("before.txt"), b"sent before").expect("write");
    m.flush();
    m.unmount();
    let remote = remote_root(&m);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    fs::rename(&remote, remote.with_extension("moved")).expect("move the root away");
    std::os::unix::fs::symlink(elsewhere.path(), &remote).expect("plant");
    m.mount();
    fs::write(m.path("after.txt"), b"must not land elsewhere").expect("write");
    let start = std::time::Instant::now();
    let out = m.flush_for(60);
    assert!(!out.ok(), "flush succeeded through a symlinked root");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "flush waited {:?}",
        start.elapsed()
    );
    assert!(out.stderr.contains("symlink"), "{}", out.stderr);
    let landed: Vec<_> = fs::read_dir(elsewhere.path())
        .expect("elsewhere")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        landed.is_empty(),
        "written through the symlinked root: {landed:?}"
    );
    let audit = fs::read_to_string(m.state.join("audit.log")).expect("audit log");
    assert!(audit.contains("root_refused"), "not audited:\n{audit}");
    m.unmount();
}
