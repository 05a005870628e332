//! The server side: snapshots of a tree on disk (the remote root, or the mount), and the
//! edits made directly in the sshd's remote root, behind ftpsync's back.

use super::ops::ServerEditKind;
use super::tree::{parent, Content, Tree, Version};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// An entry as found on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { target: String },
    Other { mode: u32 },
}

impl Found {
    pub fn describe(&self) -> String {
        match self {
            Found::File { data, mode } => {
                format!("file {mode:o} {}", super::tree::describe_bytes(data))
            }
            Found::Dir { mode } => format!("dir {mode:o}"),
            Found::Link { target } => format!("symlink -> {target:?}"),
            Found::Other { mode } => format!("special file {mode:o}"),
        }
    }

    pub fn is_content(&self, c: &Content) -> bool {
        match (self, c) {
            (Found::File { data, .. }, Content::File(d)) => data == d,
            (Found::Link { target }, Content::Link(t)) => target == t,
            _ => false,
        }
    }
}

/// Reads a file without following a symlink at its last component.
fn read_nofollow(p: &Path) -> io::Result<Vec<u8>> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// Every entry beneath `root` by relative path (symlinks never followed). Paths that are
/// not UTF-8 are kept lossily: the model makes none, so one showing up is a divergence.
pub fn snapshot(root: &Path) -> io::Result<BTreeMap<String, Found>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = super::tree::join(&rel, &name);
            let md = fs::symlink_metadata(e.path())?;
            let mode = md.mode() & 0o7777;
            let found = if md.file_type().is_symlink() {
                Found::Link {
                    target: fs::read_link(e.path())?.to_string_lossy().into_owned(),
                }
            } else if md.is_dir() {
                stack.push(p.clone());
                Found::Dir { mode }
            } else if md.is_file() {
                Found::File {
                    data: read_nofollow(&e.path())?,
                    mode,
                }
            } else {
                Found::Other { mode }
            };
            out.insert(p, found);
        }
    }
    Ok(out)
}

/// `lstat` of one entry under the remote root, without reading it.
fn kind_at(root: &Path, p: &str) -> Option<fs::FileType> {
    fs::symlink_metadata(root.join(p))
        .ok()
        .map(|m| m.file_type())
}

/// Writes a new file at `p` (which must not exist), never through a symlink.
fn create_file(full: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(full)?;
    f.write_all(data)
}

/// What a server edit writes: the token, padded to `len` bytes, and never `avoid` bytes
/// long (the size it replaces: see `ServerEditKind::Modify`).
fn version_bytes(token: &str, len: usize, avoid: Option<u64>) -> Vec<u8> {
    let len = if avoid == Some(len as u64) {
        len + 1
    } else {
        len
    };
    let mut v = format!("server version {token}\n").into_bytes();
    while v.len() < len {
        v.push(b'.');
    }
    v
}

/// Makes the edit in the remote root, and records it in the model: the old version at the
/// path (if the server's own) is gone by the server's hand, the new one is owed. `Ok(false)`:
/// the server does not hold what the edit needs (only after an earlier divergence or in a
/// shrunk trace), nothing was done.
pub fn edit(
    root: &Path,
    t: &mut Tree,
    path: &str,
    kind: &ServerEditKind,
    token: &str,
    len: usize,
    step: usize,
) -> io::Result<bool> {
    let full = root.join(path);
    let now = kind_at(root, path);
    let is_file = now.is_some_and(|k| k.is_file());
    let is_link = now.is_some_and(|k| k.is_symlink());
    let parent_is_dir = kind_at(root, parent(path)).is_some_and(|k| k.is_dir());
    let fits = match kind {
        ServerEditKind::Modify | ServerEditKind::FileToLink => is_file,
        ServerEditKind::Delete => is_file || is_link,
        ServerEditKind::LinkToFile | ServerEditKind::Retarget => is_link,
        ServerEditKind::Create => now.is_none() && parent_is_dir,
    };
    if !fits {
        return Ok(false);
    }
    kill_version_at(root, t, path)?;
    let old_size = fs::symlink_metadata(&full).ok().map(|m| m.len());
    let link_target = format!("srvlink-{token}");
    let content = match kind {
        ServerEditKind::Modify => {
            let data = version_bytes(token, len, old_size);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&full)?;
            f.write_all(&data)?;
            Some(Content::File(data))
        }
        ServerEditKind::Delete => {
            fs::remove_file(&full)?;
            None
        }
        ServerEditKind::FileToLink | ServerEditKind::Retarget => {
            fs::remove_file(&full)?;
            std::os::unix::fs::symlink(&link_target, &full)?;
            Some(Content::Link(link_target))
        }
        ServerEditKind::LinkToFile | ServerEditKind::Create => {
            if is_link {
                fs::remove_file(&full)?;
            }
            let data = version_bytes(token, len, None);
            create_file(&full, &data)?;
            Some(Content::File(data))
        }
    };
    let index = content.map(|content| {
        t.versions.push(Version {
            content,
            alive: true,
            paths: [path.to_string()].into_iter().collect(),
            made_at: step,
        });
        t.versions.len() - 1
    });
    t.taints.insert(path.to_string(), index);
    Ok(true)
}

/// The server is about to overwrite or remove what is at `path`: if that is a version it made
/// before, the server itself destroyed it and nobody owes it any more.
fn kill_version_at(root: &Path, t: &mut Tree, path: &str) -> io::Result<()> {
    let full = root.join(path);
    let Ok(md) = fs::symlink_metadata(&full) else {
        return Ok(());
    };
    let here = if md.file_type().is_symlink() {
        Content::Link(fs::read_link(&full)?.to_string_lossy().into_owned())
    } else {
        Content::File(read_nofollow(&full)?)
    };
    for v in t.versions.iter_mut().filter(|v| v.alive) {
        if v.content == here {
            v.alive = false;
        }
    }
    Ok(())
}
