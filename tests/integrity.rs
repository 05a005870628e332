//! "Confirmed" never lies and no server version is lost, case by case: each test is one of the
//! everyday sequences that once broke the promise (issue 9), run through a real FUSE mount
//! against a real loopback sshd, ending with the remote compared to the local tree and every
//! version the server held before ftpsync touched it found again on the server.

mod common;

use common::mirror_tree::{
    assert_mirrored, assert_mirrored_except, copies_holding, is_conflict_name, remote_root,
};
use common::{walk, Mount};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn conflict_names(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|(rel, _, _)| is_conflict_name(rel))
        .map(|(_, p, _)| p)
        .collect()
}

/// A mount whose uploads wait `secs` after the last change (the daily default is longer).
fn delayed(secs: &str) -> Mount {
    Mount::builder().arg("--writeback-delay").arg(secs).mount()
}

#[test]
fn a_move_into_a_directory_made_a_moment_before_reaches_the_server() {
    let m = delayed("1");
    fs::write(m.path("f"), b"moved into a new directory").expect("write");
    fs::create_dir(m.path("tree")).expect("mkdir");
    fs::write(m.path("tree/inner"), b"moved with its tree").expect("write");
    m.flush();
    // Within the write-back delay: the new parents are not on the server yet.
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::rename(m.path("f"), m.path("d/f")).expect("mv f d/");
    fs::create_dir_all(m.path("p/q")).expect("mkdir -p");
    fs::rename(m.path("tree"), m.path("p/q/tree")).expect("mv tree p/q/");
    m.flush();
    assert_mirrored(&m);
    let st = m.mirror_status();
    assert_eq!(st["pending"], 0, "{st}");
    // And verify --repair, asked now, keeps it so.
    let out = common::ftpsync(["verify".as_ref(), m.state.as_os_str(), "--repair".as_ref()]);
    out.assert_ok();
    m.flush();
    assert_mirrored(&m);
}

#[test]
fn a_rename_over_a_file_the_server_changed_keeps_the_servers_version() {
    let m = Mount::new();
    fs::write(m.path("x"), b"local x").expect("write");
    fs::write(m.path("c"), b"local c").expect("write");
    m.flush();
    let theirs = b"the server's own c, edited behind ftpsync's back";
    fs::write(remote_root(&m).join("c"), theirs).expect("server edit");
    fs::rename(m.path("x"), m.path("c")).expect("mv x c");
    m.flush();
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
}

#[test]
fn a_renamed_file_the_server_changed_is_sent_anew_and_the_servers_version_kept() {
    let m = Mount::new();
    fs::write(m.path("e"), b"local e").expect("write");
    m.flush();
    let theirs = b"the server's e, a different size";
    fs::write(remote_root(&m).join("e"), theirs).expect("server edit");
    fs::rename(m.path("e"), m.path("e2")).expect("mv e e2");
    m.flush();
    assert_eq!(
        fs::read(remote_root(&m).join("e2")).expect("e2"),
        b"local e"
    );
    assert_eq!(copies_holding(&remote_root(&m), theirs).len(), 1);
    assert_mirrored_except(&m, &is_conflict_name);
    let out = common::ftpsync(["verify".as_ref(), m.state.as_os_str()]);
    out.assert_ok();
}

#[test]
fn deleting_a_symlink_the_server_replaced_by_a_file_keeps_the_file() {
    let m = Mount::new();
    std::os::unix::fs::symlink("target-a", m.path("l")).expect("symlink");
    std::os::unix::fs::symlink("target-b", m.path("m")).expect("symlink");
    m.flush();
    let remote = remote_root(&m);
    fs::remove_file(remote.join("l")).expect("server rm");
    let theirs = b"a real file the server put where the link was";
    fs::write(remote.join("l"), theirs).expect("server write");
    fs::remove_file(remote.join("m")).expect("server rm");
    std::os::unix::fs::symlink("the-servers-target", remote.join("m")).expect("server ln");
    fs::remove_file(m.path("l")).expect("rm l");
    fs::remove_file(m.path("m")).expect("rm m");
    std::os::unix::fs::symlink("target-c", m.path("m")).expect("symlink");
    m.flush();
    assert_eq!(copies_holding(&remote, theirs).len(), 1);
    let kept_links: Vec<_> = conflict_names(&remote)
        .into_iter()
        .filter(|p| fs::read_link(p).is_ok_and(|t| t == Path::new("the-servers-target")))
        .collect();
    assert_eq!(kept_links.len(), 1, "{:?}", conflict_names(&remote));
    assert_mirrored_except(&m, &is_conflict_name);
}

#[test]
fn several_conflicts_on_one_file_within_a_second_each_keep_their_version() {
    let m = Mount::new();
    let long = "n".repeat(255);
    for name in ["f", long.as_str()] {
        fs::write(m.path(name), b"v0").expect("write");
    }
    m.flush();
    let remote = remote_root(&m);
    let start = Instant::now();
    let mut theirs = Vec::new();
    for round in 0..3 {
        for name in ["f", long.as_str()] {
            let t = format!("server version {round} of {}", name.len());
            fs::write(remote.join(name), &t).expect("server edit");
            theirs.push(t);
            fs::write(m.path(name), format!("local version {round}")).expect("write");
        }
        m.flush();
    }
    for t in &theirs {
        assert_eq!(
            copies_holding(&remote, t.as_bytes()).len(),
            1,
            "{t:?} lost ({:?} elapsed): {:?}",
            start.elapsed(),
            conflict_names(&remote)
        );
    }
    for c in conflict_names(&remote) {
        let name = c.file_name().expect("name").as_bytes().len();
        assert!(name <= 255, "{} bytes: {c:?}", name);
    }
    assert_mirrored_except(&m, &is_conflict_name);
}

#[test]
fn rename_exchange_leaves_a_file_named_like_its_old_helper_alone() {
    let m = Mount::new();
    fs::write(m.path("a"), b"first").expect("write");
    fs::write(m.path("b"), b"second").expect("write");
    fs::write(m.path("a.ftpsync-exchange"), b"a file of the user's").expect("write");
    m.flush();
    common::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE).expect("exchange");
    m.flush();
    assert_mirrored(&m);
    assert_eq!(fs::read(remote_root(&m).join("a")).expect("a"), b"second");
}

#[test]
fn an_upload_left_half_done_by_a_killed_daemon_is_cleaned_up() {
    let mut m = Mount::new();
    fs::write(m.path("kept"), b"kept").expect("write");
    m.flush();
    m.unmount();
    // What a kill -9 in mid-upload leaves: a temp name beside a path that is gone since.
    let leftover = remote_root(&m).join(".renamed.ftpsync-tmp-0123456789abcdef");
    fs::write(&leftover, b"half an upload").expect("plant");
    // And what a daemon killed while probing a new connection leaves.
    let probe = remote_root(&m).join(".probe.ftpsync-tmp-0123456789abcdef");
    fs::create_dir(&probe).expect("plant probe dir");
    std::os::unix::fs::symlink(probe.join("first"), probe.join("second")).expect("plant link");
    let out = common::ftpsync(["verify".as_ref(), m.state.as_os_str()]);
    assert!(
        !out.ok(),
        "verify calls a leftover temp file equal:\n{}",
        out.stdout
    );
    m.mount();
    m.flush();
    assert!(!leftover.exists(), "the leftover temp file is still there");
    assert!(
        !probe.exists(),
        "the probe's leftover directory is still there"
    );
    assert_mirrored(&m);
}

#[test]
fn attribute_changes_on_the_mount_root_do_not_stall_flush() {
    let m = Mount::new();
    fs::write(m.path("f"), b"x").expect("write");
    let times = fs::FileTimes::new().set_modified(std::time::SystemTime::now());
    fs::File::open(&m.mnt)
        .and_then(|d| d.set_times(times))
        .expect("touch MNT");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o750)).expect("chmod MNT");
    let out = m.flush_for(20);
    out.assert_ok();
    assert_mirrored(&m);
}

#[test]
fn flush_names_a_refused_path_and_fails_without_waiting_out_its_timeout() {
    // What is refused cannot drain at unmount: do not wait the default 30 s for it.
    let mut m = Mount::builder().arg("--drain-timeout").arg("1").mount();
    fs::create_dir(m.path("d")).expect("mkdir");
    m.flush();
    let outside = tempfile::tempdir().expect("tempdir");
    let remote_d = remote_root(&m).join("d");
    fs::remove_dir(&remote_d).expect("rm remote d");
    std::os::unix::fs::symlink(outside.path(), &remote_d).expect("plant");
    fs::write(m.path("d/refused.txt"), b"must not leave the root").expect("write");
    let start = Instant::now();
    let out = m.flush_for(120);
    assert!(!out.ok(), "flush succeeded through a planted symlink");
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "flush waited {:?} for a refusal only a person can clear",
        start.elapsed()
    );
    assert!(
        out.stderr.contains("d/refused.txt"),
        "flush does not name the refused path:\n{}",
        out.stderr
    );
    assert!(fs::read_dir(outside.path())
        .expect("outside")
        .next()
        .is_none());
    m.unmount();
}

#[test]
fn flush_fails_within_seconds_when_the_host_key_is_not_trusted() {
    let mut m = Mount::builder()
        .no_known_hosts()
        .arg("--drain-timeout")
        .arg("1")
        .mount();
    fs::write(m.path("f"), b"cannot be sent yet").expect("write");
    let start = Instant::now();
    let out = m.flush_for(120);
    assert!(!out.ok(), "flush succeeded with an untrusted host key");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "flush waited {:?} on a refusal only a person can clear",
        start.elapsed()
    );
    assert!(
        out.stderr.contains("ftpsync trust"),
        "flush does not say how to fix it:\n{}",
        out.stderr
    );
    m.unmount();
}

#[test]
fn a_directory_made_for_an_upload_that_never_finished_goes_with_its_local_rmdir() {
    let m = Mount::builder().arg("--bwlimit").arg("1M").mount();
    fs::create_dir_all(m.path("made/for")).expect("mkdir -p");
    fs::write(m.path("made/for/big.bin"), common::pattern(5, 8 << 20)).expect("write");
    // The upload has made the parents on the server and is sending bytes...
    m.wait_mirror_status(Duration::from_secs(30), "the upload under way", |s| {
        s["bytes_sent"].as_u64().unwrap_or(0) > 0
    });
    assert!(remote_root(&m).join("made/for").is_dir());
    // ...when the user takes the whole tree back: the upload is cancelled, and the
    // directories it made are ftpsync's to remove.
    fs::remove_dir_all(m.path("made")).expect("rm -r");
    m.flush();
    assert_mirrored(&m);
    assert!(!remote_root(&m).join("made").exists());
}

#[test]
fn a_temp_file_left_by_an_upload_the_connection_cut_is_gone_once_flush_returns() {
    let mut m = Mount::builder().arg("--bwlimit").arg("1M").mount();
    fs::write(m.path("cut.bin"), common::pattern(6, 8 << 20)).expect("write");
    m.wait_mirror_status(Duration::from_secs(30), "the upload under way", |s| {
        s["bytes_sent"].as_u64().unwrap_or(0) > 0
    });
    // The server dies mid-upload (its temp file stays, and the connection cannot remove it);
    // meanwhile the user deletes the file, so no upload of it comes again.
    m.sshd.as_mut().expect("sshd").stop();
    fs::remove_file(m.path("cut.bin")).expect("rm");
    let temps = |m: &Mount| -> Vec<PathBuf> {
        walk(&remote_root(m))
            .into_iter()
            .filter(|(rel, _, _)| rel.windows(12).any(|w| w == b"ftpsync-tmp-"))
            .map(|(_, p, _)| p)
            .collect()
    };
    assert_eq!(
        temps(&m).len(),
        1,
        "the cut upload's temp file is on the server"
    );
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_eq!(temps(&m), Vec::<PathBuf>::new(), "{}", m.log_tail());
    assert_mirrored(&m);
}

#[test]
fn a_tree_swapped_by_an_exchange_then_moved_on_reaches_the_server_whole() {
    let mut m = Mount::new();
    fs::create_dir_all(m.path("e/d/b")).expect("mkdir -p");
    fs::write(m.path("e/a"), b"in the tree").expect("write");
    fs::write(m.path("x"), b"a file to swap with").expect("write");
    fs::write(m.path("f"), b"renamed while the server is down").expect("write");
    m.flush();
    // A rename that needs the server holds back everything after it until the server is back;
    // by then the exchanged tree has moved on.
    m.sshd.as_mut().expect("sshd").stop();
    fs::rename(m.path("f"), m.path("g")).expect("mv");
    common::renameat2(&m.path("e"), &m.path("x"), libc::RENAME_EXCHANGE).expect("exchange");
    fs::create_dir(m.path("p")).expect("mkdir");
    fs::rename(m.path("x"), m.path("p/moved")).expect("mv");
    m.sshd.as_mut().expect("sshd").restart();
    // A connection whose server process was killed may take its I/O timeout (30 s) to fail.
    let out = m.flush_for(90);
    assert!(out.ok(), "{}\n{}", out.stderr, m.daemon_log());
    assert_mirrored(&m);
    assert!(remote_root(&m).join("p/moved/d/b").is_dir());
}

#[test]
fn a_tree_moved_under_a_name_the_server_took_and_moved_on_leaves_nothing_behind() {
    let m = delayed("1");
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/x"), b"in the moved tree").expect("write");
    m.flush();
    let theirs = b"the server's own f";
    fs::write(remote_root(&m).join("f"), theirs).expect("server edit");
    // Within the write-back delay: f becomes a directory here, the mirrored tree moves into
    // it (the server's f is kept aside for that), then on again.
    fs::create_dir(m.path("f")).expect("mkdir");
    fs::rename(m.path("d"), m.path("f/e")).expect("mv d f/e");
    fs::rename(m.path("f/e"), m.path("g")).expect("mv f/e g");
    m.flush();
    assert_mirrored_except(&m, &|p| is_conflict_name(p));
    assert_eq!(
        copies_holding(&remote_root(&m), theirs).len(),
        1,
        "the server's f is kept"
    );
}
