//! Red team: kill -9 of the daemon mid-upload and mid-rename on a real mount against a real
//! loopback sshd; after a restart and a flush everything is confirmed and true, and `status`
//! tells the truth before, during and after.

mod common;

use common::mirror_tree::{assert_mirrored, remote_root};
use common::{put_nofollow, sha256_hex, Mount};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn remote_temps(m: &Mount) -> Vec<PathBuf> {
    common::walk(&remote_root(m))
        .into_iter()
        .filter(|(rel, _, _)| rel.windows(13).any(|w| w == b".ftpsync-tmp-"))
        .map(|(_, p, _)| p)
        .collect()
}

fn slow() -> Mount {
    Mount::builder()
        .chroot()
        .arg("--writeback-delay")
        .arg("0")
        .arg("--bwlimit")
        .arg("8M")
        .mount()
}

fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What `status --json` says of `rel`'s hash: (sha256, confirmed).
fn hash_of(st: &serde_json::Value, rel: &[u8]) -> Option<(String, bool)> {
    st["hashes"].as_array()?.iter().find_map(|h| {
        (common::entry_path(h) == rel).then(|| {
            (
                h["sha256"].as_str().unwrap_or_default().to_string(),
                h["confirmed"].as_bool().unwrap_or(false),
            )
        })
    })
}

/// kill -9 while d/big uploads and after `mv d e` is journaled; the dead daemon's status shows
/// the work left (none of it confirmed); after a restart and a flush, e/big is on the server,
/// confirmed with the local hash, nothing left at d, no temp file, and verify agrees.
#[test]
fn kill9_mid_upload_and_mid_rename_converges_and_status_tells_the_truth() {
    let mut m = slow();
    fs::create_dir(m.path("d")).expect("mkdir");
    put_nofollow(&m.path("d/small"), b"small, confirmed before the kill");
    m.flush();
    let big = common::pattern(21, 24 << 20);
    put_nofollow(&m.path("d/big"), &big);
    wait_until(
        "an upload of d/big under way",
        Duration::from_secs(30),
        || !remote_temps(&m).is_empty(),
    );
    let live = m.status_json();
    assert_eq!(
        hash_of(&live, b"d/big"),
        Some((sha256_hex(&big), false)),
        "status during the upload: {live}"
    );
    fs::rename(m.path("d"), m.path("e")).expect("mv d e");
    m.kill9();
    // No daemon: the journal says what is left, and nothing of it is called confirmed.
    let dead = m.status_json();
    assert!(dead["mirror"].is_null(), "{dead}");
    assert_ne!(dead["daemon"]["running"], true, "{dead}");
    assert_eq!(
        hash_of(&dead, b"e/big").map(|h| h.1),
        Some(false),
        "status of the dead daemon: {dead}"
    );
    m.remount();
    m.flush();
    let after = m.status_json();
    assert_eq!(
        hash_of(&after, b"e/big"),
        Some((sha256_hex(&big), true)),
        "status after the restart: {after}"
    );
    assert_eq!(fs::read(remote_root(&m).join("e/big")).expect("e/big"), big);
    assert!(!remote_root(&m).join("d").exists());
    assert!(remote_temps(&m).is_empty(), "{:?}", remote_temps(&m));
    assert_mirrored(&m);
    common::ftpsync(["verify".as_ref(), m.state.as_os_str()]).assert_ok();
    let journal = m.status_json()["journal"]["records"].clone();
    assert_eq!(journal, 0, "records left after the flush");
}
