//! Comparing the local tree with the remote tree on disk, for the mirror tests.

use super::Mount;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
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
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = fs::symlink_metadata(&p).expect("lstat");
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .as_os_str()
                .as_bytes()
                .to_vec();
            if skip(&rel) {
                continue;
            }
            let desc = if md.file_type().is_symlink() {
                format!("link {:?}", fs::read_link(&p).expect("readlink"))
            } else if md.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", md.mode() & 0o7777)
            } else {
                format!(
                    "file {} {} {:o} {}",
                    md.len(),
                    sha256_of_file(&p),
                    md.mode() & 0o7777,
                    md.mtime()
                )
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// SHA-256 of a file, streamed (the trees here hold 64 MiB files).
pub fn sha256_of_file(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    hex::encode(h.finalize())
}

pub fn remote_root(m: &Mount) -> PathBuf {
    m.sshd.as_ref().expect("sshd").remote_root_on_disk()
}

/// Every difference between the local tree and the remote tree (paths `skip` selects are
/// ignored on both sides).
pub fn differences(m: &Mount, skip: &dyn Fn(&[u8]) -> bool) -> Vec<String> {
    let local = tree_filtered(&m.local, skip);
    let remote = tree_filtered(&remote_root(m), skip);
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
