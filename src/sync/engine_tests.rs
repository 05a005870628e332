//! The engine as a whole, through the seams: the real planner and workers over the mock
//! server, fed by the real filesystem layer (see `crate::testkit`), with failures injected into
//! the connections. What each test proves is in its name.

use crate::remote::{path::is_temp_name, ErrorKind, MockNode};
use crate::testkit::faults::{Op, Rule};
use crate::testkit::{Harness, Setup};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn temp_names(h: &Harness) -> Vec<String> {
    h.server_tree()
        .keys()
        .filter(|p| p.split(|&b| b == b'/').any(is_temp_name))
        .map(|p| crate::relpath::show(p))
        .collect()
}

#[test]
fn a_closed_file_is_confirmed_with_its_bytes_and_mode() {
    let h = Harness::new();
    h.mkdir("d", 0o750).expect("mkdir");
    h.write_file("d/f", b"hello").expect("write");
    h.chmod("d/f", 0o600).expect("chmod");
    h.flush(PATIENCE).expect("flush");
    match h.server.get(b"d/f") {
        Some(MockNode::File { data, mode, .. }) => {
            assert_eq!(data, b"hello");
            assert_eq!(mode, 0o600);
        }
        other => panic!("server holds {other:?} at d/f"),
    }
    assert!(matches!(
        h.server.get(b"d"),
        Some(MockNode::Dir { mode: 0o750, .. })
    ));
    assert_eq!(h.state_of("d/f").as_deref(), Some("confirmed"));
}

#[test]
fn a_connection_lost_mid_upload_is_retried_and_ends_confirmed() {
    let h = Harness::new();
    h.faults.add(
        Rule::fail(ErrorKind::Transient)
            .on(Op::Upload)
            .at(b"big")
            .times(2),
    );
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    h.write_file("big", &data).expect("write");
    h.flush(PATIENCE).expect("flush after a lost connection");
    assert_eq!(h.faults.injected(), 2, "the upload was cut twice");
    assert_eq!(h.server_file("big").as_deref(), Some(&data[..]));
    assert_eq!(h.state_of("big").as_deref(), Some("confirmed"));
    assert_eq!(
        temp_names(&h),
        Vec::<String>::new(),
        "the cut upload's temp file is swept"
    );
}

#[test]
fn a_full_server_halts_uploads_and_flush_reports_it() {
    let h = Harness::new();
    h.faults
        .add(Rule::fail(ErrorKind::NoSpace).on(Op::Upload).always());
    h.write_file("f", b"data").expect("write");
    let e = h
        .flush(Duration::from_secs(3))
        .expect_err("no false success while the server is full");
    assert!(e.contains("no space"), "flush names the cause: {e}");
    assert_eq!(h.server_file("f"), None);
    assert_ne!(h.state_of("f").as_deref(), Some("confirmed"));
    // Room again: the next flush gets it there.
    h.faults.clear();
    h.flush(PATIENCE).expect("flush once there is room");
    assert_eq!(h.server_file("f").as_deref(), Some(&b"data"[..]));
}

#[test]
fn a_permission_error_leaves_that_path_failing_and_named_while_others_are_confirmed() {
    let h = Harness::new();
    h.faults.add(
        Rule::fail(ErrorKind::Permission)
            .on(Op::Upload)
            .at(b"locked")
            .always(),
    );
    h.write_file("locked", b"no").expect("write");
    h.write_file("free", b"yes").expect("write");
    h.mkdir("dir", 0o755).expect("mkdir");
    h.write_file("dir/also", b"yes").expect("write");
    let e = h.flush(PATIENCE).expect_err("flush cannot succeed");
    assert!(
        e.contains("locked") && e.contains("permission denied"),
        "{e}"
    );
    assert!(!e.contains("free") && !e.contains("also"), "{e}");
    assert_eq!(h.server_file("free").as_deref(), Some(&b"yes"[..]));
    assert_eq!(h.server_file("dir/also").as_deref(), Some(&b"yes"[..]));
    assert_eq!(h.server_file("locked"), None);
    let state = h.state_of("locked").unwrap_or_default();
    assert!(state.starts_with("failed: "), "{state}");
    let failures = h.status().failures;
    assert_eq!(failures.len(), 1, "{failures:?}");
}

#[test]
fn a_host_key_failure_halts_everything_until_it_is_fixed() {
    let h = Harness::new();
    h.write_file("before", b"1").expect("write");
    h.flush(PATIENCE).expect("first flush");
    let uploads = |h: &Harness| {
        h.server
            .ops()
            .iter()
            .filter(|op| matches!(op, crate::remote::MockOp::Upload(_)))
            .count()
    };
    h.faults.add(Rule::fail(ErrorKind::HostKey).always());
    h.faults
        .add(Rule::fail(ErrorKind::HostKey).on(Op::Connect).always());
    let sent = uploads(&h);
    h.write_file("a", b"2").expect("write");
    h.write_file("b", b"3").expect("write");
    let e = h.flush(PATIENCE).expect_err("halted");
    assert!(e.contains("uploads are stopped"), "{e}");
    assert!(e.contains("host key"), "{e}");
    assert!(h.status().halted);
    assert_eq!(uploads(&h), sent, "nothing reached the server");
    h.faults.clear();
    h.flush(PATIENCE).expect("flush once the key is fixed");
    assert_eq!(h.server_file("a").as_deref(), Some(&b"2"[..]));
    assert_eq!(h.server_file("b").as_deref(), Some(&b"3"[..]));
    assert!(!h.status().halted);
}

#[test]
fn a_restart_carries_on_with_what_the_old_engine_left() {
    let mut h = Harness::new();
    h.faults
        .add(Rule::fail(ErrorKind::Transient).on(Op::Upload).always());
    h.write_file("f", b"kept").expect("write");
    h.mkdir("d", 0o755).expect("mkdir");
    h.write_file("d/g", b"kept too").expect("write");
    assert!(
        h.flush(Duration::from_millis(500)).is_err(),
        "the server is away"
    );
    h.restart();
    h.faults.clear();
    h.flush(PATIENCE).expect("flush after the restart");
    assert_eq!(h.server_file("f").as_deref(), Some(&b"kept"[..]));
    assert_eq!(h.server_file("d/g").as_deref(), Some(&b"kept too"[..]));
    assert_eq!(temp_names(&h), Vec::<String>::new());
}

#[test]
fn a_server_edit_is_kept_as_a_conflict_copy_when_the_local_file_changes() {
    let h = Harness::new();
    h.write_file("f", b"ours").expect("write");
    h.flush(PATIENCE).expect("flush");
    h.server.insert(
        b"f",
        MockNode::File {
            data: b"theirs, longer".to_vec(),
            mode: 0o644,
            atime: 0,
            mtime: 1,
        },
    );
    h.write_file("f", b"ours again").expect("write");
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.server_file("f").as_deref(), Some(&b"ours again"[..]));
    let kept: Vec<_> = h
        .server_tree()
        .into_iter()
        .filter(|(p, _)| crate::remote::path::is_conflict_name(p))
        .collect();
    assert_eq!(kept.len(), 1, "one conflict copy");
    assert!(
        matches!(&kept[0].1, MockNode::File { data, .. } if data == b"theirs, longer"),
        "{kept:?}"
    );
}

/// Lets the engine hear of the records held since the first `seen` up to the rename, waits
/// until it has worked them off (finding the local tree already renamed), then lets the rest
/// through.
fn release_all_but_the_rename(h: &Harness, seen: usize) {
    let held = &h.records()[seen..];
    let upto = held
        .iter()
        .position(|r| r.op() == "rename")
        .expect("a rename");
    h.release_feed(Some(upto));
    h.wait_engine_idle(PATIENCE);
    h.release_feed(None);
}

/// The engine lags behind the filesystem: a symlink is made in a mirrored directory and the
/// directory renamed before the engine hears of the rename. The work on the symlink's old
/// path finds nothing there; the rename, replayed on the server, must still bring the symlink
/// to its new path.
#[test]
fn an_entry_made_in_a_directory_renamed_before_the_engine_heard_of_it_reaches_the_server() {
    let h = Harness::new();
    h.mkdir("a", 0o755).expect("mkdir");
    h.flush(PATIENCE).expect("flush");
    let seen = h.records().len();
    h.hold_feed();
    h.symlink("a/e", "target").expect("symlink");
    h.write_file("a/f", b"file").expect("write");
    assert!(h.fs().settle(PATIENCE));
    h.rename("a", "c").expect("rename");
    release_all_but_the_rename(&h, seen);
    h.flush(PATIENCE).expect("flush");
    assert!(
        matches!(h.server.get(b"c/e"), Some(MockNode::Symlink { target }) if target == b"target"),
        "{:?}",
        h.server_tree()
            .keys()
            .map(|k| crate::relpath::show(k))
            .collect::<Vec<_>>()
    );
    assert_eq!(h.server_file("c/f").as_deref(), Some(&b"file"[..]));
}

/// The same with a directory the server never had: made, filled and renamed before the engine
/// heard of the rename.
#[test]
fn a_new_tree_renamed_before_the_engine_heard_of_it_reaches_the_server_whole() {
    let h = Harness::new();
    h.flush(PATIENCE).expect("flush");
    let seen = h.records().len();
    h.hold_feed();
    h.mkdir("x", 0o755).expect("mkdir");
    h.write_file("x/f", b"file").expect("write");
    h.symlink("x/l", "f").expect("symlink");
    assert!(h.fs().settle(PATIENCE));
    h.rename("x", "y").expect("rename");
    release_all_but_the_rename(&h, seen);
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.server_file("y/f").as_deref(), Some(&b"file"[..]));
    assert!(matches!(
        h.server.get(b"y/l"),
        Some(MockNode::Symlink { .. })
    ));
}

/// A rename is replayed on the server only once work on the paths above its ends is done: a
/// removal of the target's parent in flight (the directory is gone locally by then) must not
/// interleave with the replay, which remakes that parent, or its end forgets what the replay
/// put beneath it and the server keeps it for ever.
#[test]
fn a_rename_waits_for_work_in_flight_on_a_parent_of_its_ends() {
    let h = Harness::new();
    h.mkdir("a", 0o755).expect("mkdir");
    h.write_file("a/d", b"moved").expect("write");
    h.mkdir("b", 0o755).expect("mkdir");
    h.flush(PATIENCE).expect("flush");
    let seen = h.records().len();
    h.hold_feed();
    h.chmod("b", 0o700).expect("chmod");
    h.rename("a/d", "b/c").expect("rename");
    h.unlink("b/c").expect("unlink");
    h.rmdir("b").expect("rmdir");
    assert_eq!(h.records().len(), seen + 4);
    // The work on b (removing it: it is gone locally) is held at its rmdir on the server.
    h.faults.pause(Op::RemoveDir, b"b");
    h.faults.pause(Op::Rename, b"a/d");
    h.release_feed(Some(1));
    assert!(
        h.faults.wait_blocked(1, PATIENCE),
        "the removal of b starts"
    );
    h.release_feed(Some(1));
    assert!(
        !h.faults.wait_blocked(2, Duration::from_millis(300)),
        "the rename was replayed while the removal of its target's parent was in flight"
    );
    h.faults.resume();
    h.release_feed(None);
    h.flush(PATIENCE).expect("flush");
    let left = server_names(&h, |k| k.starts_with('a') || k.starts_with('b'));
    assert_eq!(left, ["a"], "only a is left on the server");
}

/// A symlink the server replaced behind our back, then removed and made again locally as it
/// was (the engine hears of both at once): the local side touched it, so the server's version
/// is kept aside and the symlink sent again, as for a file.
#[test]
fn a_symlink_made_again_as_it_was_replaces_what_the_server_put_there() {
    let h = Harness::new();
    h.symlink("c", "e").expect("symlink");
    h.flush(PATIENCE).expect("flush");
    let theirs = MockNode::File {
        data: b"the server's".to_vec(),
        mode: 0o644,
        atime: 0,
        mtime: 1,
    };
    h.server.insert(b"c", theirs.clone());
    h.hold_feed();
    h.unlink("c").expect("unlink");
    h.symlink("c", "e").expect("symlink");
    h.release_feed(None);
    h.flush(PATIENCE).expect("flush");
    assert!(
        matches!(h.server.get(b"c"), Some(MockNode::Symlink { target }) if target == b"e"),
        "{:?}",
        h.server.get(b"c")
    );
    let kept: Vec<_> = h
        .server_tree()
        .into_iter()
        .filter(|(p, n)| crate::remote::path::is_conflict_name(p) && *n == theirs)
        .collect();
    assert_eq!(kept.len(), 1, "the server's version is kept aside");
}

/// A daemon killed after an upload reached the server but before its end was taken in leaves
/// an intent in the manifest, by which the restarted engine knows the server's file as its
/// own. A rename of its directory, replayed on the server, moves the file: the intent must
/// move with it, or a local unlink at the new path finds a file nobody vouches for and leaves
/// it on the server for ever. Found by the mock model test with RENAME_EXCHANGE in the mix
/// (seed 979337390: a restart between the upload of b/e and its end, then `rename b -> e` and
/// `unlink e/e`; e/e stayed on the server after flushes that succeeded).
#[test]
fn an_unrecorded_upload_moved_by_a_rename_is_still_ours_to_remove() {
    let mut h = Harness::new();
    h.mkdir("b", 0o755).expect("mkdir");
    h.flush(PATIENCE).expect("flush");
    h.hold_feed();
    h.write_file("b/e", b"ours").expect("write");
    assert!(h.fs().settle(PATIENCE));
    h.landed_unrecorded("b/e");
    h.rename("b", "e").expect("rename");
    h.unlink("e/e").expect("unlink");
    h.restart();
    h.flush(PATIENCE).expect("flush");
    let left = server_names(&h, |k| k.starts_with('b') || k.starts_with('e'));
    assert_eq!(left, ["e"], "our own upload stays on the server");
}

#[test]
fn a_directory_or_symlink_made_as_the_connection_dropped_goes_when_its_local_twin_does() {
    let h = Harness::new();
    h.mkdir("a", 0o755).expect("mkdir");
    h.flush(PATIENCE).expect("flush");
    for (op, path) in [(Op::Mkdir, b"a/e" as &[u8]), (Op::Symlink, b"a/s")] {
        h.faults.add(
            Rule::fail(ErrorKind::Transient)
                .on(op)
                .at(path)
                .answer_lost(),
        );
        h.faults.pause(op, path);
    }
    h.mkdir("a/e", 0o755).expect("mkdir");
    h.symlink("a/s", "dangling").expect("symlink");
    assert!(h.faults.wait_blocked(2, PATIENCE), "both makes under way");
    // Gone locally before the engine hears whether the server made them.
    h.rmdir("a/e").expect("rmdir");
    h.unlink("a/s").expect("unlink");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 2, "both answers were lost");
    let left = server_names(&h, |k| k.starts_with("a/"));
    assert_eq!(left, Vec::<String>::new(), "made by us, gone locally");
}

/// The server's paths, as shown, that `keep` keeps.
fn server_names(h: &Harness, keep: impl Fn(&str) -> bool) -> Vec<String> {
    h.server_tree()
        .keys()
        .map(|k| crate::relpath::show(k))
        .filter(|k| keep(k))
        .collect()
}

/// A harness whose mkdir jobs wait two seconds: a move, replayed as soon as it is taken in,
/// comes first and makes its new parent on the server itself.
fn delayed() -> Harness {
    Harness::with(Setup {
        writeback_delay: Duration::from_secs(2),
        ..Setup::default()
    })
}

/// `mkdir TOP; write TOP/F; flush; mkdir TOP/Q; mv TOP/F TOP/Q/F`: the move's replay makes
/// TOP/Q on the server, and the answer is lost. The call is held until `h.faults.resume()`,
/// so the test changes the local tree before the engine hears whether the server made it.
fn moving_into_a_parent_whose_answer_is_lost(h: &Harness, top: &str, f: &str, q: &str) {
    h.mkdir(top, 0o755).expect("mkdir");
    h.write_file(&format!("{top}/{f}"), b"moved")
        .expect("write");
    h.flush(PATIENCE).expect("flush");
    let parent = format!("{top}/{q}");
    h.faults.add(
        Rule::fail(ErrorKind::Transient)
            .on(Op::MkdirAll)
            .at(parent.as_bytes())
            .answer_lost(),
    );
    h.faults.pause(Op::MkdirAll, parent.as_bytes());
    h.mkdir(&parent, 0o755).expect("mkdir");
    h.rename(&format!("{top}/{f}"), &format!("{parent}/{f}"))
        .expect("rename");
    assert!(
        h.faults.wait_blocked(1, PATIENCE),
        "the parent's make under way"
    );
}

#[test]
fn a_parent_made_for_a_move_as_the_connection_dropped_goes_when_its_local_twin_does() {
    let h = delayed();
    moving_into_a_parent_whose_answer_is_lost(&h, "b", "d", "a");
    // Gone locally before the engine hears whether the server made it.
    h.rename("b/a/d", "b/d").expect("rename back");
    h.rmdir("b/a").expect("rmdir");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with('b'));
    assert_eq!(tree, ["b", "b/d"], "made by us, gone locally");
}

#[test]
fn red5_a_tree_moved_onto_a_parent_made_as_the_connection_dropped_leaves_no_conflict_copy() {
    let h = delayed();
    h.mkdir("y", 0o755).expect("mkdir");
    h.write_file("y/f", b"tree").expect("write");
    moving_into_a_parent_whose_answer_is_lost(&h, "b", "d", "a");
    h.rename("b/a/d", "b/d").expect("rename back");
    h.rmdir("b/a").expect("rmdir");
    // A tree of ours takes the empty directory's name.
    h.rename("y", "b/a").expect("rename tree");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with('b') || k.starts_with('y'));
    assert_eq!(
        tree,
        ["b", "b/a", "b/a/f", "b/d"],
        "no conflict copy of our own dir"
    );
    assert_eq!(h.status().conflicts, 0);
}

#[test]
fn red5_a_file_made_where_a_parent_made_as_the_connection_dropped_stood_leaves_no_conflict_copy() {
    let h = delayed();
    moving_into_a_parent_whose_answer_is_lost(&h, "b", "d", "a");
    h.rename("b/a/d", "b/d").expect("rename back");
    h.rmdir("b/a").expect("rmdir");
    // A file takes the empty directory's name before its removal's turn comes.
    h.write_file("b/a", b"file now").expect("write");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with('b'));
    assert_eq!(tree, ["b", "b/a", "b/d"], "no conflict copy of our own dir");
    assert_eq!(h.server_file("b/a").as_deref(), Some(&b"file now"[..]));
    assert_eq!(h.status().conflicts, 0);
}

#[test]
fn red5_a_parent_made_as_the_connection_dropped_and_filled_by_the_server_is_kept_aside() {
    let h = Harness::with(Setup {
        writeback_delay: Duration::from_secs(5),
        ..Setup::default()
    });
    moving_into_a_parent_whose_answer_is_lost(&h, "b", "d", "a");
    h.rename("b/a/d", "b/d").expect("rename back");
    h.rmdir("b/a").expect("rmdir");
    h.write_file("b/a", b"file now").expect("write");
    h.faults.resume();
    // Both moves replayed: the server's b/a is the empty directory the lost answer made.
    let start = std::time::Instant::now();
    while h.server.get(b"b/d").is_none() || h.server.get(b"b/a").is_none() {
        assert!(start.elapsed() < PATIENCE, "the moves replayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another user puts a file in it before the local file's turn comes.
    h.server.insert(
        b"b/a/theirs",
        MockNode::File {
            data: b"theirs".to_vec(),
            mode: 0o644,
            atime: 0,
            mtime: 0,
        },
    );
    h.flush(PATIENCE).expect("flush");
    let tree = h.server_tree();
    let aside: Vec<&Vec<u8>> = tree
        .keys()
        .filter(|k| k.starts_with(b"b/a.ftpsync-conflict-") && k.ends_with(b"/theirs"))
        .collect();
    assert_eq!(aside.len(), 1, "the server's file kept aside: {tree:?}");
    assert_eq!(h.server_file("b/a").as_deref(), Some(&b"file now"[..]));
}

#[test]
fn red5_a_parent_made_as_the_connection_dropped_then_renamed_leaves_no_conflict_copy() {
    let h = delayed();
    moving_into_a_parent_whose_answer_is_lost(&h, "b", "d", "a");
    h.rename("b/a/d", "b/d").expect("rename back");
    // The empty directory moves before its own make's turn comes.
    h.rename("b/a", "c").expect("rename dir");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with('b') || k.starts_with('c'));
    assert_eq!(tree, ["b", "b/d", "c"], "no conflict copy of our own dir");
    assert_eq!(h.status().conflicts, 0);
}

#[test]
fn red5_an_intent_left_by_a_parent_made_again_as_the_connection_dropped_ends_by_the_next_start() {
    use crate::remote::Transport;
    let mut h = Harness::new();
    h.mkdir("a", 0o755).expect("mkdir");
    h.write_file("a/f0", b"first").expect("write");
    h.flush(PATIENCE).expect("flush");
    // The server's user removes the directory; the next upload into it makes it again.
    let mut server = h.server.clone();
    server.remove_file(b"a/f0").expect("server rm");
    server.remove_dir(b"a").expect("server rmdir");
    h.faults.add(
        Rule::fail(ErrorKind::Transient)
            .on(Op::MkdirAll)
            .at(b"a")
            .answer_lost(),
    );
    h.write_file("a/g", b"second").expect("write");
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    assert!(h.server_file("a/g").is_some());
    let lingering = h.intents();
    assert_eq!(
        lingering,
        [b"a".to_vec()],
        "the parent's intent lingers until a job there"
    );
    h.restart();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(
        h.intents(),
        Vec::<Vec<u8>>::new(),
        "after a restart (lingering before it: {lingering:?})"
    );
    // And a local removal still takes the directory away.
    h.unlink("a/f0").expect("unlink");
    h.unlink("a/g").expect("unlink");
    h.rmdir("a").expect("rmdir");
    h.flush(PATIENCE).expect("flush");
    let tree = server_names(&h, |k| k.starts_with('a'));
    assert_eq!(tree, Vec::<String>::new());
}

#[test]
fn red5_a_symlink_made_where_a_directory_made_as_the_connection_dropped_stood_leaves_no_conflict_copy(
) {
    let h = Harness::new();
    h.mkdir("a", 0o755).expect("mkdir");
    h.flush(PATIENCE).expect("flush");
    h.faults.add(
        Rule::fail(ErrorKind::Transient)
            .on(Op::Mkdir)
            .at(b"a/e")
            .answer_lost(),
    );
    h.faults.pause(Op::Mkdir, b"a/e");
    h.mkdir("a/e", 0o755).expect("mkdir");
    assert!(h.faults.wait_blocked(1, PATIENCE), "the make under way");
    h.rmdir("a/e").expect("rmdir");
    h.symlink("a/e", "dangling").expect("symlink");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with("a/"));
    assert_eq!(tree, ["a/e"], "no conflict copy of our own dir");
    assert!(matches!(
        h.server.get(b"a/e"),
        Some(MockNode::Symlink { .. })
    ));
    assert_eq!(h.status().conflicts, 0);
}

#[test]
fn red5_rm_rf_of_a_tree_holding_a_parent_made_as_the_connection_dropped_leaves_nothing() {
    let h = delayed();
    moving_into_a_parent_whose_answer_is_lost(&h, "p", "f", "q");
    // rm -rf p
    h.unlink("p/q/f").expect("unlink");
    h.rmdir("p/q").expect("rmdir");
    h.rmdir("p").expect("rmdir");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| k.starts_with('p'));
    assert_eq!(
        tree,
        Vec::<String>::new(),
        "all of it ours, all gone locally"
    );
    assert_eq!(h.intents(), Vec::<Vec<u8>>::new());
}

#[test]
fn red5_a_tree_moved_over_a_directory_holding_a_parent_made_as_the_connection_dropped_leaves_no_conflict_copy(
) {
    let h = delayed();
    h.mkdir("y", 0o755).expect("mkdir");
    h.write_file("y/g", b"tree").expect("write");
    moving_into_a_parent_whose_answer_is_lost(&h, "t", "f", "q");
    // t emptied, then a tree moved over it.
    h.rename("t/q/f", "f").expect("rename out");
    h.rmdir("t/q").expect("rmdir");
    h.rename("y", "t").expect("rename tree over t");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| !k.starts_with(".ftpsync-root"));
    assert_eq!(tree, ["f", "t", "t/g"], "no conflict copy of our own tree");
    assert_eq!(h.status().conflicts, 0);
}

#[test]
fn red5_a_file_made_where_a_tree_holding_a_parent_made_as_the_connection_dropped_stood_leaves_no_conflict_copy(
) {
    let h = delayed();
    moving_into_a_parent_whose_answer_is_lost(&h, "t", "f", "q");
    // rm -rf t, and a file in its place.
    h.unlink("t/q/f").expect("unlink");
    h.rmdir("t/q").expect("rmdir");
    h.rmdir("t").expect("rmdir");
    h.write_file("t", b"file now").expect("write");
    h.faults.resume();
    h.flush(PATIENCE).expect("flush");
    assert_eq!(h.faults.injected(), 1, "the answer was lost");
    let tree = server_names(&h, |k| !k.starts_with(".ftpsync-root"));
    assert_eq!(tree, ["t"], "no conflict copy of our own tree");
    assert_eq!(h.server_file("t").as_deref(), Some(&b"file now"[..]));
    assert_eq!(h.status().conflicts, 0);
}
