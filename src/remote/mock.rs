//! An in-memory [`Transport`] for the sync engine's unit tests: a map of remote paths with the
//! same rules as a real connection (validated paths, parents must be real directories, atomic
//! replace), a log of the operations it served, and fault injection.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::error::{display_path, ErrorKind, RemoteError, Result};
use super::path::{ancestors, validate};
use super::verify::VerifyMethod;
use super::{
    Attrs, DirNews, DownloadReport, FileKind, RemoteStat, Sha256Hash, Transport, UploadReport,
};

/// One remote entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockNode {
    Dir {
        mode: u32,
        atime: i64,
        mtime: i64,
    },
    File {
        data: Vec<u8>,
        mode: u32,
        atime: i64,
        mtime: i64,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// An operation the mock served (or refused), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockOp {
    Lstat(Vec<u8>),
    Mkdir(Vec<u8>),
    MkdirAll(Vec<u8>),
    Upload(Vec<u8>),
    Rename(Vec<u8>, Vec<u8>),
    RemoveFile(Vec<u8>),
    RemoveDir(Vec<u8>),
    Symlink(Vec<u8>, Vec<u8>),
    Readlink(Vec<u8>),
    SetAttrs(Vec<u8>),
    Hash(Vec<Vec<u8>>),
    List(Vec<u8>),
    Download(Vec<u8>),
}

#[derive(Default)]
struct State {
    /// Relative path → entry; the root ("") is always a directory and not stored.
    nodes: BTreeMap<Vec<u8>, MockNode>,
    ops: Vec<MockOp>,
    fail_next: Option<(usize, ErrorKind)>,
    fail_paths: HashMap<Vec<u8>, (usize, ErrorKind)>,
}

/// A shared in-memory remote: clones see the same tree, like several connections to one
/// server.
#[derive(Clone, Default)]
pub struct MockTransport {
    state: Arc<Mutex<State>>,
}

fn err(kind: ErrorKind, what: &str, rel: &[u8]) -> RemoteError {
    RemoteError::new(kind, format!("{what} {}", display_path(rel)))
}

impl MockTransport {
    pub fn new() -> MockTransport {
        MockTransport::default()
    }

    /// The next `n` calls (any operation) fail with `kind`.
    pub fn fail_next(&self, n: usize, kind: ErrorKind) {
        self.state.lock().fail_next = Some((n, kind));
    }

    /// The next `n` calls that name `rel` fail with `kind` (e.g. a permission error on one
    /// path while the others go on).
    pub fn fail_path(&self, rel: &[u8], n: usize, kind: ErrorKind) {
        self.state.lock().fail_paths.insert(rel.to_vec(), (n, kind));
    }

    /// The operations served so far.
    pub fn ops(&self) -> Vec<MockOp> {
        self.state.lock().ops.clone()
    }

    pub fn clear_ops(&self) {
        self.state.lock().ops.clear();
    }

    /// A snapshot of the whole tree.
    pub fn nodes(&self) -> BTreeMap<Vec<u8>, MockNode> {
        self.state.lock().nodes.clone()
    }

    pub fn get(&self, rel: &[u8]) -> Option<MockNode> {
        self.state.lock().nodes.get(rel).cloned()
    }

    /// Puts an entry in place behind the engine's back (a conflict, a planted symlink).
    pub fn insert(&self, rel: &[u8], node: MockNode) {
        self.state.lock().nodes.insert(rel.to_vec(), node);
    }

    /// Logs `op` and applies fault injection for the paths it names.
    fn begin(&self, op: MockOp, paths: &[&[u8]]) -> Result<parking_lot::MutexGuard<'_, State>> {
        let mut st = self.state.lock();
        st.ops.push(op);
        if let Some((n, kind)) = st.fail_next {
            st.fail_next = (n > 1).then_some((n - 1, kind));
            if n > 0 {
                return Err(RemoteError::new(kind, "injected fault"));
            }
        }
        for rel in paths {
            if let Some((n, kind)) = st.fail_paths.get_mut(*rel) {
                if *n > 0 {
                    *n -= 1;
                    return Err(err(*kind, "injected fault on", rel));
                }
            }
        }
        Ok(st)
    }
}

impl State {
    fn check(&self, rel: &[u8], allow_root: bool) -> Result<()> {
        validate(rel, allow_root)?;
        for dir in ancestors(rel) {
            match self.nodes.get(dir) {
                Some(MockNode::Dir { .. }) => {}
                Some(MockNode::Symlink { .. }) => {
                    return Err(err(
                        ErrorKind::Refused,
                        "refusing to go through symlink",
                        dir,
                    ))
                }
                Some(_) => return Err(err(ErrorKind::Other, "not a directory:", dir)),
                None => return Err(err(ErrorKind::NotFound, "no directory", dir)),
            }
        }
        Ok(())
    }

    fn is_dir(&self, rel: &[u8]) -> bool {
        rel.is_empty() || matches!(self.nodes.get(rel), Some(MockNode::Dir { .. }))
    }

    fn children<'a>(&'a self, rel: &'a [u8]) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        self.nodes
            .keys()
            .filter(move |k| k.len() > rel.len() && k.starts_with(rel) && k[rel.len()] == b'/')
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let node = self
            .nodes
            .get(from)
            .cloned()
            .ok_or_else(|| err(ErrorKind::NotFound, "cannot rename missing", from))?;
        if to.starts_with(from) && to.get(from.len()) == Some(&b'/') {
            return Err(err(
                ErrorKind::Other,
                "cannot move a directory into itself:",
                to,
            ));
        }
        match (self.nodes.get(to), &node) {
            (Some(MockNode::Dir { .. }), MockNode::Dir { .. }) if self.children(to).count() > 0 => {
                return Err(err(ErrorKind::Other, "directory not empty:", to))
            }
            (Some(MockNode::Dir { .. }), MockNode::Dir { .. }) | (None, _) => {}
            (Some(MockNode::Dir { .. }), _) | (Some(_), MockNode::Dir { .. }) => {
                return Err(err(ErrorKind::Other, "cannot replace across types:", to))
            }
            (Some(_), _) => {}
        }
        let moved: Vec<Vec<u8>> = self.children(from).cloned().collect();
        for old in moved {
            if let Some(n) = self.nodes.remove(&old) {
                let mut new = to.to_vec();
                new.extend_from_slice(&old[from.len()..]);
                self.nodes.insert(new, n);
            }
        }
        self.nodes.remove(from);
        self.nodes.insert(to.to_vec(), node);
        Ok(())
    }
}

fn stat_of(node: &MockNode) -> RemoteStat {
    match node {
        MockNode::Dir { mode, atime, mtime } => RemoteStat {
            kind: FileKind::Dir,
            size: 4096,
            mode: *mode,
            mtime: *mtime,
            atime: *atime,
            symlink_target: None,
        },
        MockNode::File {
            data,
            mode,
            atime,
            mtime,
        } => RemoteStat {
            kind: FileKind::File,
            size: data.len() as u64,
            mode: *mode,
            mtime: *mtime,
            atime: *atime,
            symlink_target: None,
        },
        MockNode::Symlink { target } => RemoteStat {
            kind: FileKind::Symlink,
            size: target.len() as u64,
            mode: 0o777,
            mtime: 0,
            atime: 0,
            symlink_target: Some(target.clone()),
        },
    }
}

impl Transport for MockTransport {
    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        let st = self.begin(MockOp::Lstat(rel.to_vec()), &[rel])?;
        st.check(rel, true)?;
        if rel.is_empty() {
            return Ok(Some(stat_of(&MockNode::Dir {
                mode: 0o755,
                atime: 0,
                mtime: 0,
            })));
        }
        Ok(st.nodes.get(rel).map(stat_of))
    }

    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()> {
        let mut st = self.begin(MockOp::Mkdir(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        match st.nodes.get_mut(rel) {
            Some(MockNode::Dir { mode: m, .. }) => *m = mode & 0o7777,
            Some(_) => return Err(err(ErrorKind::Other, "exists and is not a directory:", rel)),
            None => {
                let node = MockNode::Dir {
                    mode: mode & 0o7777,
                    atime: 0,
                    mtime: 0,
                };
                st.nodes.insert(rel.to_vec(), node);
            }
        }
        Ok(())
    }

    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()> {
        let mut st = self.begin(MockOp::MkdirAll(rel.to_vec()), &[rel])?;
        validate(rel, true)?;
        if rel.is_empty() {
            return Ok(());
        }
        for dir in ancestors(rel).chain(std::iter::once(rel)) {
            match st.nodes.get(dir) {
                Some(MockNode::Dir { .. }) => {}
                Some(_) => return Err(err(ErrorKind::Other, "not a directory:", dir)),
                None => {
                    let node = MockNode::Dir {
                        mode: 0o755,
                        atime: 0,
                        mtime: 0,
                    };
                    news(dir, DirNews::Asking);
                    st.nodes.insert(dir.to_vec(), node);
                    news(dir, DirNews::Made(0o755));
                }
            }
        }
        Ok(())
    }

    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        let mut data = Vec::new();
        let read = src.take(size.saturating_add(1)).read_to_end(&mut data);
        let mut st = self.begin(MockOp::Upload(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        let hash: Sha256Hash = Sha256::digest(&data).into();
        if read.is_err() || data.len() as u64 != size || hash != *sha256 {
            return Err(err(ErrorKind::SourceChanged, "local file changed:", rel));
        }
        if matches!(st.nodes.get(rel), Some(MockNode::Dir { .. })) {
            return Err(err(ErrorKind::Other, "cannot replace a directory:", rel));
        }
        let node = MockNode::File {
            data,
            mode: attrs.mode & 0o7777,
            atime: attrs.atime,
            mtime: attrs.mtime,
        };
        st.nodes.insert(rel.to_vec(), node);
        Ok(UploadReport {
            bytes: size,
            sha256: hash,
            verified_by: VerifyMethod::Readback,
            elapsed: Duration::ZERO,
        })
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let mut st = self.begin(MockOp::Rename(from.to_vec(), to.to_vec()), &[from, to])?;
        st.check(from, false)?;
        st.check(to, false)?;
        st.rename(from, to)
    }

    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let mut st = self.begin(MockOp::Rename(from.to_vec(), to.to_vec()), &[from, to])?;
        st.check(from, false)?;
        st.check(to, false)?;
        if st.nodes.contains_key(to) {
            return Err(err(ErrorKind::Other, "the target exists:", to));
        }
        st.rename(from, to)
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<()> {
        let mut st = self.begin(MockOp::RemoveFile(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        match st.nodes.get(rel) {
            None => Err(err(ErrorKind::NotFound, "cannot remove missing", rel)),
            Some(MockNode::Dir { .. }) => Err(err(ErrorKind::Other, "is a directory:", rel)),
            Some(_) => {
                st.nodes.remove(rel);
                Ok(())
            }
        }
    }

    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>> {
        let st = self.begin(MockOp::List(dir.to_vec()), &[dir])?;
        st.check(dir, true)?;
        if !dir.is_empty() && !st.nodes.contains_key(dir) {
            // As a server answers an opendir of nothing: no such file.
            return Err(err(ErrorKind::NotFound, "no such directory", dir));
        }
        if !st.is_dir(dir) {
            return Err(err(ErrorKind::Refused, "not a directory:", dir));
        }
        let skip = if dir.is_empty() { 0 } else { dir.len() + 1 };
        Ok(st
            .nodes
            .iter()
            .filter(|(k, _)| {
                dir.is_empty() || (k.len() > skip && k.starts_with(dir) && k[dir.len()] == b'/')
            })
            .map(|(k, node)| (k[skip..].to_vec(), node))
            .filter(|(name, _)| !name.contains(&b'/'))
            .map(|(name, node)| (name, stat_of(node)))
            .collect())
    }

    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport> {
        let st = self.begin(MockOp::Download(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        let node = st.nodes.get(rel).cloned();
        drop(st);
        match &node {
            Some(file @ MockNode::File { data, .. }) => {
                dst.write_all(data).map_err(|e| {
                    err(ErrorKind::Other, &format!("local write failed ({e}):"), rel)
                })?;
                Ok(DownloadReport {
                    bytes: data.len() as u64,
                    sha256: Sha256::digest(data).into(),
                    stat: stat_of(file),
                })
            }
            Some(MockNode::Symlink { .. }) => Err(err(ErrorKind::Refused, "is a symlink:", rel)),
            Some(MockNode::Dir { .. }) => Err(err(ErrorKind::Other, "not a regular file:", rel)),
            None => Err(err(ErrorKind::NotFound, "no such file", rel)),
        }
    }

    fn remove_dir(&mut self, rel: &[u8]) -> Result<()> {
        let mut st = self.begin(MockOp::RemoveDir(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        if !st.nodes.contains_key(rel) {
            return Err(err(ErrorKind::NotFound, "cannot remove missing", rel));
        }
        if !st.is_dir(rel) {
            return Err(err(ErrorKind::Other, "not a directory:", rel));
        }
        if st.children(rel).count() > 0 {
            return Err(err(ErrorKind::Other, "directory not empty:", rel));
        }
        st.nodes.remove(rel);
        Ok(())
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        let mut st = self.begin(MockOp::Symlink(rel.to_vec(), target.to_vec()), &[rel])?;
        st.check(rel, false)?;
        if target.is_empty() || target.contains(&0) {
            return Err(err(ErrorKind::Other, "bad symlink target for", rel));
        }
        if st.is_dir(rel) {
            return Err(err(ErrorKind::Other, "cannot replace a directory:", rel));
        }
        let node = MockNode::Symlink {
            target: target.to_vec(),
        };
        st.nodes.insert(rel.to_vec(), node);
        Ok(())
    }

    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        let st = self.begin(MockOp::Readlink(rel.to_vec()), &[rel])?;
        st.check(rel, false)?;
        match st.nodes.get(rel) {
            Some(MockNode::Symlink { target }) => Ok(target.clone()),
            Some(_) => Err(err(ErrorKind::Other, "not a symlink:", rel)),
            None => Err(err(ErrorKind::NotFound, "no such symlink", rel)),
        }
    }

    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()> {
        let mut st = self.begin(MockOp::SetAttrs(rel.to_vec()), &[rel])?;
        st.check(rel, true)?;
        match st.nodes.get_mut(rel) {
            Some(MockNode::Dir { mode, atime, mtime })
            | Some(MockNode::File {
                mode, atime, mtime, ..
            }) => {
                (*mode, *atime, *mtime) = (attrs.mode & 0o7777, attrs.atime, attrs.mtime);
                Ok(())
            }
            Some(MockNode::Symlink { .. }) => Err(err(ErrorKind::Other, "is a symlink:", rel)),
            None if rel.is_empty() => Ok(()),
            None => Err(err(ErrorKind::NotFound, "no such file", rel)),
        }
    }

    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>> {
        let op = MockOp::Hash(rels.iter().map(|r| r.to_vec()).collect());
        let st = self.begin(op, rels)?;
        rels.iter()
            .map(|rel| {
                st.check(rel, false)?;
                Ok(match st.nodes.get(*rel) {
                    Some(MockNode::File { data, .. }) => Some(Sha256::digest(data).into()),
                    _ => None,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(d: &[u8]) -> Sha256Hash {
        Sha256::digest(d).into()
    }

    const A: Attrs = Attrs {
        mode: 0o644,
        atime: 1,
        mtime: 2,
    };

    #[test]
    fn behaves_like_a_server() {
        let mut m = MockTransport::new();
        let shared = m.clone();
        m.mkdir_all(b"a/b", &mut |_, _| {}).unwrap();
        m.upload(b"a/b/f", &mut &b"hi"[..], 2, &sha(b"hi"), &A)
            .unwrap();
        assert_eq!(
            m.hash(&[b"a/b/f", b"a/x"]).unwrap(),
            vec![Some(sha(b"hi")), None]
        );
        let e = m
            .upload(b"a/b/g", &mut &b"hi!"[..], 2, &sha(b"hi"), &A)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SourceChanged);
        m.rename(b"a", b"z").unwrap();
        assert!(shared.get(b"z/b/f").is_some() && shared.get(b"a/b/f").is_none());
        m.symlink(b"z/l", b"../elsewhere").unwrap();
        assert_eq!(m.readlink(b"z/l").unwrap(), b"../elsewhere");
        assert_eq!(m.remove_dir(b"z").unwrap_err().kind(), ErrorKind::Other);
        assert!(m.lstat(b"../x").is_err());
        assert_eq!(m.ops().len(), 9);
        let e = m.list(b"gone").expect_err("nothing to list");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn refuses_planted_symlink_parents() {
        let mut m = MockTransport::new();
        m.insert(
            b"evil",
            MockNode::Symlink {
                target: b"/etc".to_vec(),
            },
        );
        let e = m
            .upload(b"evil/passwd", &mut &b""[..], 0, &sha(b""), &A)
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn injects_faults() {
        let mut m = MockTransport::new();
        m.fail_next(2, ErrorKind::Transient);
        assert_eq!(
            m.mkdir(b"d", 0o755).unwrap_err().kind(),
            ErrorKind::Transient
        );
        assert_eq!(
            m.mkdir(b"d", 0o755).unwrap_err().kind(),
            ErrorKind::Transient
        );
        m.mkdir(b"d", 0o755).unwrap();
        m.fail_path(b"d/p", 1, ErrorKind::Permission);
        let e = m
            .upload(b"d/p", &mut &b""[..], 0, &sha(b""), &A)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Permission);
        m.upload(b"d/q", &mut &b""[..], 0, &sha(b""), &A).unwrap();
        m.upload(b"d/p", &mut &b""[..], 0, &sha(b""), &A).unwrap();
    }
}
