//! Red team: a second local user against an `allow_other` mount made by root (real FUSE mount,
//! real loopback sshd). The other user must get exactly what the kernel's permission checks
//! give on a local filesystem: nothing of root's private files, not their mirror state, not
//! the control socket.

mod common;

use common::mirror_tree::remote_root;
use common::{run_with_timeout, CmdOut, Mount};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Runs `sh -c SCRIPT` as nobody (uid 65534), `$1` being `arg`.
fn as_nobody(script: &str, arg: &Path) -> CmdOut {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(arg);
    run_with_timeout(c, common::CMD_WAIT)
}

#[test]
fn another_user_gets_only_what_the_modes_give() {
    let m = Mount::builder().chroot().opt("allow_other").mount();
    fs::set_permissions(&m.root, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(m.path("secret"), b"root's secret").expect("write");
    fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::create_dir(m.path("private")).expect("mkdir");
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(m.path("private/inner"), b"inner").expect("write");
    fs::set_permissions(m.path("private/inner"), fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::create_dir(m.path("shared")).expect("mkdir");
    fs::set_permissions(m.path("shared"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    fs::write(m.path("shared/roots"), b"root's file in a sticky dir").expect("write");
    m.flush();
    // Root reads what nobody must not (so a refusal below is the kernel's, not a missing name).
    let mut c = Command::new("python3");
    c.args([
        "-c",
        "import os,sys; os.getxattr(sys.argv[1], 'user.ftpsync.sha256')",
    ])
    .arg(m.path("secret"));
    run_with_timeout(c, common::CMD_WAIT).assert_ok();
    for (what, script) in [
        ("read a 0600 file", "cat \"$1/secret\""),
        (
            "read the mirror state of a 0600 file",
            "python3 -c 'import os,sys; os.getxattr(sys.argv[1], \"user.ftpsync.sha256\")' \"$1/secret\"",
        ),
        ("list a 0700 directory", "ls \"$1/private\""),
        ("read beneath a 0700 directory", "cat \"$1/private/inner\""),
        ("remove root's file from a sticky directory", "rm -f \"$1/shared/roots\""),
        ("rename root's file in a sticky directory", "mv \"$1/shared/roots\" \"$1/shared/mine\""),
        ("write a 0600 file", "echo x >> \"$1/secret\""),
        ("chmod root's file", "chmod 666 \"$1/secret\""),
        ("hard-link root's 0600 file", "ln \"$1/secret\" \"$1/shared/link\""),
        (
            "set a mirror xattr",
            "python3 -c 'import os,sys; os.setxattr(sys.argv[1], \"user.ftpsync.state\", b\"confirmed\")' \"$1/shared/roots\"",
        ),
    ] {
        let out = as_nobody(script, &m.mnt);
        assert!(!out.ok(), "nobody could {what}: {out:?}");
    }
    // What the modes do give: a file of its own in the sticky directory, owned by it.
    let out = as_nobody("echo mine > \"$1/shared/mine\"", &m.mnt);
    out.assert_ok();
    assert_eq!(
        fs::metadata(m.local_path("shared/mine"))
            .expect("stat")
            .uid(),
        65534
    );
    // The control socket answers its owner only.
    // ... and the mirror state of its own file and of a file anyone may read.
    as_nobody(
        "python3 -c 'import os,sys; print(os.getxattr(sys.argv[1], \"user.ftpsync.state\"))' \"$1/shared/roots\"",
        &m.mnt,
    )
    .assert_ok();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        common::BIN,
        "flush",
    ])
    .arg(&m.state);
    let out = run_with_timeout(c, common::CMD_WAIT);
    assert!(!out.ok(), "nobody could flush root's mount: {out:?}");
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("secret")).expect("remote secret"),
        b"root's secret"
    );
    assert_eq!(
        fs::read(remote_root(&m).join("shared/roots")).expect("remote roots"),
        b"root's file in a sticky dir"
    );
    common::mirror_tree::assert_mirrored(&m);
}
