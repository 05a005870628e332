//! Comparing the local tree with the remote tree on disk, for the mirror tests.

use super::{sha256_file, walk, Mount};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a name is one of ftpsync's conflict copies (`NAME.ftpsync-conflict-<stamp>`).
pub fn is_conflict_name(rel: &[u8]) -> bool {
    rel.windows(b".ftpsync-conflict-".len())
        .any(|w| w == b".ftpsync-conflict-")
}

/// What must be equal on both sides: type, size, SHA-256, permission bits, mtime (whole
/// seconds: SFTP v3 carries no more) and symlink target. Paths for which `skip` says true are
/// left out (with everything beneath them).
pub fn tree_filtered(root: &Path, skip: &dyn Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut skipped: Vec<Vec<u8>> = Vec::new();
    for (rel, p, md) in walk(root) {
        let beneath_skipped = skipped
            .iter()
            .any(|s| rel.starts_with(s) && rel.get(s.len()) == Some(&b'/'));
        if beneath_skipped || skip(&rel) {
            skipped.push(rel);
            continue;
        }
        let desc = if md.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&p).expect("readlink"))
        } else if md.is_dir() {
            format!("dir {:o}", mirrored_mode(md.mode()))
        } else {
            format!(
                "file {} {} {:o} {}",
                md.len(),
                sha256_file(&p),
                mirrored_mode(md.mode()),
                md.mtime()
            )
        };
        out.insert(rel, desc);
    }
    out
}

/// Permission bits as mirrored: set-user-ID and set-group-ID never reach the server (tests of
/// that look at the remote's modes themselves).
pub fn mirrored_mode(mode: u32) -> u32 {
    mode & 0o1777
}

pub fn remote_root(m: &Mount) -> PathBuf {
    m.sshd.as_ref().expect("sshd").remote_root_on_disk()
}

/// Every difference between the local tree and the remote tree (paths `skip` selects are
/// ignored on both sides).
pub fn differences(m: &Mount, skip: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    differences_in(&m.local, &remote_root(m), skip)
}

/// The name of the marker ftpsync keeps in the remote root (not a mirrored path).
pub const ROOT_MARKER: &[u8] = b".ftpsync-root";

/// Every difference between a local tree and a remote root (ftpsync's root marker aside).
pub fn differences_in(local: &Path, remote: &Path, skip: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    let local = tree_filtered(local, skip);
    let remote = tree_filtered(remote, &|p| p == ROOT_MARKER || skip(p));
    local
        .iter()
        .filter(|(k, v)| remote.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{:?}: local {v}, remote {:?}",
                String::from_utf8_lossy(k),
                remote.get(k)
            )
        })
        .chain(
            remote
                .iter()
                .filter(|(k, _)| !local.contains_key(*k))
                .map(|(k, v)| {
                    format!("{:?}: only on the remote ({v})", String::from_utf8_lossy(k))
                }),
        )
        .collect()
}

/// The remote tree equals the local one: paths, types, sizes, SHA-256, modes, mtimes, symlink
/// targets, and nothing more on the remote (no temp file, no conflict copy).
pub fn assert_mirrored(m: &Mount) {
    assert_mirrored_except(m, &|_| false);
}

pub fn assert_mirrored_except(m: &Mount, skip: &dyn Fn(&[u8]) -> bool) {
    let diff = differences(m, skip);
    assert!(
        diff.is_empty(),
        "remote differs from local in {} paths:\n{}\ndaemon log:\n{}",
        diff.len(),
        diff.iter().take(50).cloned().collect::<Vec<_>>().join("\n"),
        m.log_tail()
    );
}
