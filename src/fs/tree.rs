//! The inode table: FUSE inode numbers ↔ backing inodes, and the names each is known by.
//!
//! A node is identified by its backing (device, inode) pair, so its FUSE inode number is stable
//! across renames, hard links and unlinks while the kernel or an open handle references it.
//! The names let the journal say which path an operation touched; they are exactly the names
//! the kernel has been told about (lookup, create, link, readdirplus).
//!
//! `O_PATH` descriptors of recently used nodes are cached (LRU, sized from RLIMIT_NOFILE: the
//! kernel may keep far more inodes than a process may hold descriptors). Any other node is
//! reached again through its parent's descriptor and its name, and checked to be the same
//! inode. A node that has lost its last name while still referenced keeps its descriptor.

use crate::hash::Incremental;
use crate::local;
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

pub const ROOT: u64 = 1;

/// What the daemon knows of a regular file's contents since its last Store record.
#[derive(Default)]
pub struct Track {
    /// Open handles that may write.
    pub writers: u32,
    /// A Create/Dirty record stands in the journal with no Store after it.
    pub dirty: bool,
    pub inc: Incremental,
    /// Written through kernel passthrough since the last Store: a shared mapping may still
    /// write to it after the release we hashed at (the kernel maps the backing file itself).
    pub passthrough: bool,
}

pub struct Node {
    /// Held for the root and for referenced nodes without a name; others use the cache.
    pinned_fd: Option<Arc<OwnedFd>>,
    /// `st_mode & S_IFMT` of the backing inode.
    pub kind: u32,
    key: (u64, u64),
    /// (parent inode, name) pairs; the first is used to build the node's path.
    pub names: Vec<(u64, OsString)>,
    lookups: u64,
    opens: u32,
    pins: u32,
    pub track: Arc<Mutex<Track>>,
}

impl Node {}

pub struct Tree {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    children: BTreeMap<(u64, OsString), u64>,
    fds: LruCache<u64, Arc<OwnedFd>>,
    next: u64,
}

fn estale() -> io::Error {
    io::Error::from_raw_os_error(libc::ESTALE)
}

/// Descriptors the cache may hold: half the open-file limit, leaving room for open files.
fn fd_cache_size() -> NonZeroUsize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        1024
    };
    let n = usize::try_from(cur / 2)
        .unwrap_or(1 << 16)
        .clamp(256, 1 << 16);
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// Why a reference on a node is held: each kind is counted apart.
#[derive(Clone, Copy)]
pub enum Ref {
    /// The kernel's lookup count (dropped by FORGET).
    Lookup,
    /// An open file handle.
    Open,
    /// Queued work (a hash job) that will need the node's path.
    Pin,
}

impl Tree {
    pub fn new(root: OwnedFd, st: &libc::stat) -> Tree {
        Tree::with_cache(root, st, fd_cache_size())
    }

    fn with_cache(root: OwnedFd, st: &libc::stat, cache: NonZeroUsize) -> Tree {
        let mut t = Tree {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            children: BTreeMap::new(),
            fds: LruCache::new(cache),
            next: ROOT + 1,
        };
        let key = (st.st_dev, st.st_ino);
        t.by_key.insert(key, ROOT);
        let mut root_node = new_node(st, 1);
        root_node.pinned_fd = Some(Arc::new(root));
        t.nodes.insert(ROOT, root_node);
        t
    }

    /// A path-only descriptor of the node's backing inode: cached, or reopened through its
    /// parent and name (ESTALE if that name now leads to another inode).
    pub fn fd(&mut self, ino: u64) -> io::Result<Arc<OwnedFd>> {
        let n = self.nodes.get(&ino).ok_or_else(estale)?;
        if let Some(fd) = &n.pinned_fd {
            return Ok(fd.clone());
        }
        let (key, first) = (n.key, n.names.first().cloned());
        if let Some(fd) = self.fds.get(&ino) {
            return Ok(fd.clone());
        }
        let (parent, name) = first.ok_or_else(estale)?;
        let pfd = self.fd(parent)?;
        let (fd, st) = local::lookup(local::borrow(&pfd), &local::component(&name)?)?;
        if (st.st_dev, st.st_ino) != key {
            return Err(estale());
        }
        let fd = Arc::new(fd);
        self.fds.put(ino, fd.clone());
        Ok(fd)
    }

    /// Keeps the descriptor of a node about to lose its last name, so it stays reachable while
    /// still referenced (an open file, a process's cwd).
    pub fn hold_fd(&mut self, ino: u64) {
        if let Ok(fd) = self.fd(ino) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.pinned_fd.get_or_insert(fd);
            }
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.children.get(&(parent, name.to_owned())).copied()
    }

    /// Records that `parent/name` is the backing inode behind `fd`, returning its inode number
    /// and taking one reference of kind `r`. An inode already known (a hard link, or a name
    /// looked up again) keeps its number and its first handle.
    pub fn insert(
        &mut self,
        parent: u64,
        name: &OsStr,
        fd: OwnedFd,
        st: &libc::stat,
        r: Ref,
    ) -> u64 {
        let key = (st.st_dev, st.st_ino);
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.by_key.insert(key, ino);
                self.nodes.insert(ino, new_node(st, 0));
                ino
            }
        };
        if !self.fds.contains(&ino) {
            self.fds.put(ino, Arc::new(fd));
        }
        self.add_name(ino, parent, name);
        self.take(ino, r);
        ino
    }

    pub fn take(&mut self, ino: u64, r: Ref) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            match r {
                Ref::Lookup => n.lookups += 1,
                Ref::Open => n.opens += 1,
                Ref::Pin => n.pins += 1,
            }
        }
    }

    /// Drops `count` references of kind `r`; the node goes once nothing references it.
    pub fn drop_ref(&mut self, ino: u64, r: Ref, count: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            match r {
                Ref::Lookup => n.lookups = n.lookups.saturating_sub(count),
                Ref::Open => n.opens = n.opens.saturating_sub(count as u32),
                Ref::Pin => n.pins = n.pins.saturating_sub(count as u32),
            }
        }
        self.collect(ino);
    }

    fn collect(&mut self, ino: u64) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        if ino == ROOT || n.lookups > 0 || n.opens > 0 || n.pins > 0 || self.has_children(ino) {
            return;
        }
        let Some(n) = self.nodes.remove(&ino) else {
            return;
        };
        self.by_key.remove(&n.key);
        self.fds.pop(&ino);
        for (parent, name) in n.names {
            self.children.remove(&(parent, name));
            // A directory kept only because this child was still known may go now.
            self.collect(parent);
        }
    }

    fn has_children(&self, ino: u64) -> bool {
        self.children
            .range((ino, OsString::new())..)
            .next()
            .is_some_and(|((p, _), _)| *p == ino)
    }

    pub fn add_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if !n.names.iter().any(|(p, nm)| *p == parent && nm == name) {
            n.names.push((parent, name.to_owned()));
        }
        if let Some(old) = self.children.insert((parent, name.to_owned()), ino) {
            if old != ino {
                self.forget_name(old, parent, name);
            }
        }
    }

    /// `parent/name` no longer exists; returns the inode it named.
    pub fn remove_name(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.children.remove(&(parent, name.to_owned()))?;
        self.forget_name(ino, parent, name);
        self.collect(ino);
        Some(ino)
    }

    fn forget_name(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.names.retain(|(p, nm)| !(*p == parent && nm == name));
        }
    }

    /// Applies a completed rename (or exchange) to the names.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        exchange: bool,
    ) {
        let src = self.children.remove(&(parent, name.to_owned()));
        let dst = self.children.remove(&(newparent, newname.to_owned()));
        if let Some(s) = src {
            self.forget_name(s, parent, name);
        }
        if let Some(d) = dst {
            self.forget_name(d, newparent, newname);
            if exchange {
                self.add_name(d, parent, name);
            }
        }
        if let Some(s) = src {
            self.add_name(s, newparent, newname);
        }
        for ino in [src, dst].into_iter().flatten() {
            self.collect(ino);
        }
    }

    /// The node's path relative to the root, from its first name; None once it has no name.
    pub fn path(&self, ino: u64) -> Option<Vec<u8>> {
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let (parent, name) = self.nodes.get(&cur)?.names.first()?;
            parts.push(name);
            cur = *parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        let mut out = Vec::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(p.as_bytes());
        }
        Some(out)
    }

    /// The paths of every name the node is known by (hard links have several).
    pub fn paths(&self, ino: u64) -> Vec<Vec<u8>> {
        let Some(n) = self.nodes.get(&ino) else {
            return Vec::new();
        };
        n.names
            .iter()
            .filter_map(|(p, name)| self.child_path(*p, name))
            .collect()
    }

    pub fn child_path(&self, parent: u64, name: &OsStr) -> Option<Vec<u8>> {
        let dir = self.path(parent)?;
        Some(crate::relpath::child_path(&dir, name.as_bytes()))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

fn new_node(st: &libc::stat, lookups: u64) -> Node {
    Node {
        pinned_fd: None,
        kind: st.st_mode & libc::S_IFMT,
        key: (st.st_dev, st.st_ino),
        names: Vec::new(),
        lookups,
        opens: 0,
        pins: 0,
        track: Arc::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local;
    use std::ffi::OsStr;

    fn setup() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let root = local::open_root(dir.path()).unwrap();
        let st = local::fstat(local::borrow(&root)).unwrap();
        (dir, Tree::new(root, &st))
    }

    fn add(t: &mut Tree, dir: &tempfile::TempDir, parent: u64, rel: &str) -> u64 {
        let p = dir.path().join(rel);
        if rel.ends_with('/') {
            std::fs::create_dir(&p).unwrap();
        } else {
            std::fs::write(&p, b"x").unwrap();
        }
        let fd = local::open_root(&p).or_else(|_| {
            let f = std::fs::File::open(&p)?;
            local::path_handle(&f)
        });
        let fd = fd.unwrap();
        let st = local::fstat(local::borrow(&fd)).unwrap();
        let name = std::path::Path::new(rel.trim_end_matches('/'))
            .file_name()
            .unwrap()
            .to_owned();
        t.insert(parent, &name, fd, &st, Ref::Lookup)
    }

    #[test]
    fn paths_follow_renames_of_ancestors() {
        let (dir, mut t) = setup();
        let d = add(&mut t, &dir, ROOT, "d/");
        let f = add(&mut t, &dir, d, "d/f");
        assert_eq!(t.path(f).unwrap(), b"d/f");
        t.rename(ROOT, OsStr::new("d"), ROOT, OsStr::new("e"), false);
        assert_eq!(t.path(f).unwrap(), b"e/f");
    }

    #[test]
    fn hard_link_keeps_one_inode_and_survives_unlink_of_first_name() {
        let (dir, mut t) = setup();
        let a = add(&mut t, &dir, ROOT, "a");
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let b = add(&mut t, &dir, ROOT, "b");
        assert_eq!(a, b);
        t.remove_name(ROOT, OsStr::new("a"));
        assert_eq!(t.path(a).unwrap(), b"b");
    }

    #[test]
    fn forgotten_nodes_go_but_pinned_or_parent_ones_stay() {
        let (dir, mut t) = setup();
        let d = add(&mut t, &dir, ROOT, "d/");
        let f = add(&mut t, &dir, d, "d/f");
        t.take(f, Ref::Pin);
        t.drop_ref(d, Ref::Lookup, 1);
        assert!(t.get(d).is_some(), "parent of a known child stays");
        t.drop_ref(f, Ref::Lookup, 1);
        assert_eq!(t.path(f).unwrap(), b"d/f", "pinned node keeps its path");
        t.drop_ref(f, Ref::Pin, 1);
        assert!(t.get(f).is_none());
        assert!(t.get(d).is_none(), "parent collected after its last child");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn evicted_descriptors_are_reopened_through_the_parent_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = local::open_root(dir.path()).unwrap();
        let st = local::fstat(local::borrow(&root)).unwrap();
        let mut t = Tree::with_cache(root, &st, NonZeroUsize::new(1).unwrap());
        let d = add(&mut t, &dir, ROOT, "d/");
        let f = add(&mut t, &dir, d, "d/f");
        let g = add(&mut t, &dir, d, "d/g");
        // The cache holds one descriptor: f and d were evicted by g.
        let ff = t.fd(f).unwrap();
        let fst = local::fstat(local::borrow(&ff)).unwrap();
        assert_eq!(t.path(f).unwrap(), b"d/f");
        assert!(fst.st_mode & libc::S_IFMT == libc::S_IFREG);
        // Replace f behind the table's back: the name now leads to another inode.
        std::fs::remove_file(dir.path().join("d/f")).unwrap();
        std::fs::write(dir.path().join("d/f"), b"other").unwrap();
        t.fd(g).unwrap();
        assert_eq!(t.fd(f).unwrap_err().raw_os_error(), Some(libc::ESTALE));
        // A node held before losing its name stays reachable.
        t.hold_fd(g);
        std::fs::remove_file(dir.path().join("d/g")).unwrap();
        t.remove_name(d, OsStr::new("g"));
        t.fd(d).unwrap();
        assert!(t.fd(g).is_ok());
    }

    #[test]
    fn rename_over_target_unnames_it_and_exchange_swaps() {
        let (dir, mut t) = setup();
        let a = add(&mut t, &dir, ROOT, "a");
        let b = add(&mut t, &dir, ROOT, "b");
        t.rename(ROOT, OsStr::new("a"), ROOT, OsStr::new("b"), true);
        assert_eq!(t.path(a).unwrap(), b"b");
        assert_eq!(t.path(b).unwrap(), b"a");
        t.rename(ROOT, OsStr::new("a"), ROOT, OsStr::new("b"), false);
        assert_eq!(t.path(b).unwrap(), b"b");
        assert_eq!(t.path(a), None);
    }
}
