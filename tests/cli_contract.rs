//! The CLI and status contract around a live mount (doc/CONTRACTS.md): the root's xattr names
//! the state dir, status and flush accept the mountpoint, a second daemon and a plain FTP
//! remote are refused.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::Command;

use common::sys::getxattr;
use common::Mount;

#[test]
fn root_xattr_names_state_dir() {
    let m = Mount::new();
    let v = getxattr(&m.mnt, "user.ftpsync.state_dir")
        .expect("getxattr user.ftpsync.state_dir on the root");
    assert_eq!(
        PathBuf::from(OsStr::from_bytes(&v))
            .canonicalize()
            .expect("canonicalize"),
        m.state.canonicalize().expect("canonicalize state")
    );
}

#[test]
fn status_and_flush_accept_the_mountpoint() {
    let m = Mount::new();
    fs::write(m.mnt.join("x"), b"via mountpoint").expect("write");
    let out = common::ftpsync([
        "flush".into(),
        m.mnt.clone().into_os_string(),
        "--timeout".into(),
        "30".into(),
    ]);
    out.assert_ok();
    let out = common::ftpsync([
        "status".into(),
        m.mnt.clone().into_os_string(),
        "--json".into(),
    ]);
    out.assert_ok();
    let st: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    common::assert_hash(&st, b"x", b"via mountpoint");
    assert_eq!(st["daemon"]["running"].as_bool(), Some(true), "{st}");
    assert_eq!(
        st["daemon"]["pid"].as_i64(),
        Some(i64::from(m.pid())),
        "{st}"
    );
    assert_eq!(
        PathBuf::from(st["state_dir"].as_str().expect("state_dir"))
            .canonicalize()
            .expect("canon"),
        m.state.canonicalize().expect("canon"),
    );
    // the human form works too
    common::ftpsync(["status".into(), m.state.clone().into_os_string()]).assert_ok();
}

#[test]
fn second_daemon_on_same_state_dir_is_refused() {
    let m = Mount::new();
    let other = m.root.join("mnt2");
    fs::create_dir(&other).expect("mkdir");
    let mut cmd = Command::new(common::BIN);
    cmd.arg("mount")
        .arg("--state-dir")
        .arg(&m.state)
        .arg(&m.local)
        .arg(common::REMOTE)
        .arg(&other);
    let out = common::run_with_timeout(cmd, common::MOUNT_WAIT);
    if out.ok() {
        let _ = common::fusermount(&["-u"], &other);
        panic!("a second daemon on the same state dir was accepted: {out:?}");
    }
    assert!(
        !common::is_ftpsync_mounted(&other),
        "second mount left behind"
    );
    // the first one still works
    fs::write(m.mnt.join("still"), b"alive").expect("write");
    m.flush();
    common::assert_hash(&m.status_json(), b"still", b"alive");
}

#[test]
fn plain_ftp_remote_is_refused() {
    let m = Mount::builder().prepare();
    for remote in [
        "ftp://test@127.0.0.1/remote",
        "ftps://test@127.0.0.1/remote",
    ] {
        let mut cmd = Command::new(common::BIN);
        cmd.arg("mount")
            .arg("--state-dir")
            .arg(&m.state)
            .arg(&m.local)
            .arg(remote)
            .arg(&m.mnt);
        let out = common::run_with_timeout(cmd, common::MOUNT_WAIT);
        if out.ok() {
            let _ = common::fusermount(&["-u"], &m.mnt);
        }
        assert!(!out.ok(), "{remote} was accepted: {out:?}");
        assert!(
            !common::is_ftpsync_mounted(&m.mnt),
            "{remote}: mounted anyway"
        );
    }
}
