//! `ftpsync flush` and files still open for writing, over a real FUSE mount and a real OpenSSH
//! sshd. A file open for writing has no hash of its current bytes, so a flush cannot cover it:
//! the flush names it on stderr (and `status` shows it) but exits 0 when everything closed is
//! confirmed; `--require-closed` makes it exit 1. Once the file is closed, a flush confirms it,
//! names it no more, and the server holds its bytes.

mod common;

use common::{ftpsync, CmdOut, Mount};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Created (or truncated) for writing, never through a symlink.
fn create_nofollow(path: &Path) -> File {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

fn write_nofollow(path: &Path, data: &[u8]) {
    create_nofollow(path)
        .write_all(data)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn flush(m: &Mount, extra: &[&str]) -> CmdOut {
    let state = m.state.as_os_str();
    let mut args = vec![
        OsStr::new("flush"),
        state,
        "--timeout".as_ref(),
        "30".as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    ftpsync(args)
}

const OPEN_LINE: &str = "still open for writing, not covered by this flush: ";

/// The paths a flush named as open for writing, in the order printed.
fn named_open(out: &CmdOut) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|l| l.split_once(OPEN_LINE).map(|(_, p)| p.to_string()))
        .collect()
}

/// The `hashes` entry of status for `path`.
fn hash_entry(m: &Mount, path: &str) -> Value {
    let st = m.status_json();
    st["hashes"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["path"] == path).cloned())
        .unwrap_or_else(|| panic!("no hash of {path} in status: {st}"))
}

#[test]
fn flush_names_files_open_for_writing_and_covers_them_once_closed() {
    let mut m = Mount::new();
    let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
    fs::create_dir(m.mnt.join("logs")).expect("mkdir");
    write_nofollow(&m.mnt.join("closed.txt"), b"closed before the flush");
    let mut log = create_nofollow(&m.mnt.join("logs/app.log"));
    log.write_all(b"first part").expect("write");
    // A name with a newline: one stderr line per file all the same, the bytes exact in JSON.
    let odd = b"new\nline.tmp";
    let odd_file = create_nofollow(&m.mnt.join(OsStr::from_bytes(odd)));

    let out = flush(&m, &[]);
    out.assert_ok();
    assert_eq!(
        named_open(&out),
        ["logs/app.log", "new\\nline.tmp"],
        "flush must name each file still open for writing\n{out:?}"
    );
    assert!(
        out.stderr.contains("2 files still open for writing"),
        "no count line\n{out:?}"
    );
    assert_eq!(
        fs::read(remote.join("closed.txt")).expect("closed file on the server"),
        b"closed before the flush"
    );
    // What the server holds of the open file is not asserted: spawning `ftpsync flush` closed
    // this process's copies of its descriptors at exec, a FUSE FLUSH, after which ftpsync
    // hashes and may send the file as it stands (the `--help` of flush says so).

    let daemon = &m.status_json()["daemon"];
    let open = &daemon["open_for_writing"];
    assert_eq!(open["count"], 2, "status: {daemon}");
    assert_eq!(open["paths"][0]["path"], "logs/app.log", "status: {daemon}");
    assert_eq!(
        open["paths"][1]["path_hex"],
        hex::encode(odd),
        "status: {daemon}"
    );
    let human = ftpsync([OsStr::new("status"), m.state.as_os_str()]);
    human.assert_ok();
    assert!(
        human.stdout.contains("open:     2 files open for writing")
            && human.stdout.contains("logs/app.log"),
        "human status:\n{}",
        human.stdout
    );

    let local = flush(&m, &["--local"]);
    local.assert_ok();
    assert_eq!(named_open(&local), ["logs/app.log", "new\\nline.tmp"]);
    let strict = flush(&m, &["--require-closed"]);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    assert_eq!(named_open(&strict), ["logs/app.log", "new\\nline.tmp"]);

    log.write_all(b", second part").expect("write");
    drop(log);
    drop(odd_file);
    let out = flush(&m, &["--require-closed"]);
    out.assert_ok();
    assert!(
        !out.stderr.contains("open for writing"),
        "closed files named as open\n{out:?}"
    );
    assert_eq!(
        fs::read(remote.join("logs/app.log")).expect("log on the server"),
        b"first part, second part"
    );
    assert_eq!(hash_entry(&m, "logs/app.log")["confirmed"], true);
    assert_eq!(m.status_json()["daemon"]["open_for_writing"]["count"], 0);
    m.unmount();
}
