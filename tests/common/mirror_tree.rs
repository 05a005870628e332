//! Comparing the local tree with the remote tree on disk, for the mirror tests.

use super::{sha256_file, walk, Mount};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a name is one of ftpsync's conflict copies (`NAME.ftpsync-conflict-<stamp>`).
pub fn is_conflict_name(rel: &[u8]) -> bool {
    rel.windows(b".ftpsync-conflict-".len())
        .any(|w| w == b".ftpsync-conflict-")
}

/// Every conflict copy under `dir` (recursively) holding exactly `bytes`.
pub fn copies_holding(dir: &Path, bytes: &[u8]) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|(rel, p, md)| {
            is_conflict_name(rel) && md.is_file() && fs::read(p).is_ok_and(|b| b == bytes)
        })
        .map(|(_, p, _)| p)
        .collect()
}

/// What must be equal on both sides: type, size, SHA-256, permission bits, mtime (whole
/// seconds: SFTP v3 carries no more) and symlink target. Paths for which `skip` says true are
/// left out (with everything beneath them).
pub fn tree_filtered(root: &Path, skip: &dyn Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, String> {
    tree_described(root, skip, false)
}

/// rclone's `--links` convention, which ftpsync uses where a server has no symlinks: the link
/// `NAME -> TARGET` is stored as a regular file `NAME.rclonelink` holding TARGET's bytes.
pub const LINK_FILE_SUFFIX: &[u8] = b".rclonelink";

/// `tree_filtered` of a tree holding symlinks as link files: each `NAME.rclonelink` is read
/// back as the symlink `NAME` it stands for (its own mode and mtime are the store's, not the
/// link's, so they are not compared), so the result compares with the local tree directly.
pub fn tree_with_link_files(
    root: &Path,
    skip: &dyn Fn(&[u8]) -> bool,
) -> BTreeMap<Vec<u8>, String> {
    tree_described(root, skip, true)
}

/// The link a regular file at `rel` stands for under the link-file convention, if it is one.
fn as_link_file(rel: &[u8], p: &Path, md: &fs::Metadata) -> Option<(Vec<u8>, String)> {
    let name = rel.strip_suffix(LINK_FILE_SUFFIX)?;
    if !md.is_file() || name.is_empty() || name.ends_with(b"/") {
        return None;
    }
    let target = fs::read(p).expect("read link file");
    Some((
        name.to_vec(),
        link_desc(Path::new(OsStr::from_bytes(&target))),
    ))
}

fn link_desc(target: &Path) -> String {
    format!("link {target:?}")
}

fn tree_described(
    root: &Path,
    skip: &dyn Fn(&[u8]) -> bool,
    links_as_files: bool,
) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut skipped: Vec<Vec<u8>> = Vec::new();
    for (rel, p, md) in walk(root) {
        let link_file = links_as_files
            .then(|| as_link_file(&rel, &p, &md))
            .flatten();
        let rel = link_file.as_ref().map_or(rel, |(name, _)| name.clone());
        let beneath_skipped = skipped
            .iter()
            .any(|s| rel.starts_with(s) && rel.get(s.len()) == Some(&b'/'));
        if beneath_skipped || skip(&rel) {
            skipped.push(rel);
            continue;
        }
        let desc = if let Some((_, desc)) = link_file {
            desc
        } else if md.file_type().is_symlink() {
            link_desc(&fs::read_link(&p).expect("readlink"))
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

/// The remote tree described like the local one, whatever form the server keeps symlinks in.
pub fn remote_tree(m: &Mount, skip: &dyn Fn(&[u8]) -> bool) -> BTreeMap<Vec<u8>, String> {
    let root = remote_root(m);
    if m.sshd.as_ref().expect("sshd").flavor().has_symlinks() {
        tree_filtered(&root, skip)
    } else {
        tree_with_link_files(&root, skip)
    }
}

/// Every difference between the local tree and the remote tree (paths `skip` selects are
/// ignored on both sides).
pub fn differences(m: &Mount, skip: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    let local = tree_filtered(&m.local, skip);
    let remote = remote_tree(m, &|p| p == ROOT_MARKER || skip(p));
    describe_differences(&local, &remote)
}

/// The name of the marker ftpsync keeps in the remote root (not a mirrored path).
pub const ROOT_MARKER: &[u8] = b".ftpsync-root";

/// Every difference between a local tree and a remote root (ftpsync's root marker aside).
pub fn differences_in(local: &Path, remote: &Path, skip: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    let local = tree_filtered(local, skip);
    let remote = tree_filtered(remote, &|p| p == ROOT_MARKER || skip(p));
    describe_differences(&local, &remote)
}

fn describe_differences(
    local: &BTreeMap<Vec<u8>, String>,
    remote: &BTreeMap<Vec<u8>, String>,
) -> Vec<String> {
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
