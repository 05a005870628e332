//! What the journal says about paths once replayed: a map from path to some state, carried
//! along by renames (of files and of whole directories), links, unlinks and rmdirs.

use crate::journal::Record;
use crate::relpath::{is_within, reroot, take_subtree};
use std::collections::BTreeMap;

pub struct PathMap<V> {
    map: BTreeMap<Vec<u8>, V>,
}

impl<V: Clone> Default for PathMap<V> {
    fn default() -> Self {
        PathMap {
            map: BTreeMap::new(),
        }
    }
}

impl<V: Clone> PathMap<V> {
    pub fn insert(&mut self, path: Vec<u8>, v: V) {
        self.map.insert(path, v);
    }

    pub fn remove(&mut self, path: &[u8]) -> Option<V> {
        self.map.remove(path)
    }

    pub fn get(&self, path: &[u8]) -> Option<&V> {
        self.map.get(path)
    }

    /// Moves the entries of the namespace records (rename, link, unlink, rmdir); content
    /// records are the caller's to interpret.
    pub fn follow(&mut self, rec: &Record) {
        match rec {
            Record::Unlink { path } => drop(self.map.remove(path)),
            Record::Rmdir { path } => drop(self.take_subtree(path)),
            Record::Link { existing, path } => {
                if let Some(v) = self.map.get(existing).cloned() {
                    self.map.insert(path.clone(), v);
                }
            }
            Record::Rename { from, to, flags } => self.rename(from, to, *flags),
            _ => {}
        }
    }

    /// Moves `from` and everything beneath it to `to`, replacing what was there (or swapping
    /// the two with RENAME_EXCHANGE).
    pub fn rename(&mut self, from: &[u8], to: &[u8], flags: u32) {
        let moved = self.take_subtree(from);
        let replaced = self.take_subtree(to);
        self.put_under(moved, from, to);
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.put_under(replaced, to, from);
        }
    }

    /// `root` and everything beneath it.
    pub fn subtree<'a>(
        &'a self,
        root: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
        self.map
            .range(root.to_vec()..)
            .take_while(move |(p, _)| p.starts_with(root))
            .filter(move |(p, _)| is_within(p, root) || root.is_empty())
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes and returns `root` and everything beneath it.
    pub fn take_subtree(&mut self, root: &[u8]) -> Vec<(Vec<u8>, V)> {
        take_subtree(&mut self.map, root)
    }

    fn put_under(&mut self, entries: Vec<(Vec<u8>, V)>, from: &[u8], to: &[u8]) {
        for (p, v) in entries {
            self.map.insert(reroot(&p, from, to), v);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &V)> {
        self.map.iter()
    }
}

impl<V> IntoIterator for PathMap<V> {
    type Item = (Vec<u8>, V);
    type IntoIter = std::collections::btree_map::IntoIter<Vec<u8>, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn keys(m: &PathMap<u32>) -> Vec<String> {
        m.iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    #[test]
    fn directory_rename_moves_its_subtree_only() {
        let mut m = PathMap::default();
        for (i, k) in ["d/a", "d/sub/b", "dd", "d"].iter().enumerate() {
            m.insert(p(k), i as u32);
        }
        m.follow(&Record::Rename {
            from: p("d"),
            to: p("e"),
            flags: 0,
        });
        assert_eq!(keys(&m), ["dd", "e", "e/a", "e/sub/b"]);
    }

    #[test]
    fn rename_over_replaces_and_exchange_swaps() {
        let mut m = PathMap::default();
        m.insert(p("a"), 1);
        m.insert(p("b"), 2);
        m.follow(&Record::Rename {
            from: p("a"),
            to: p("b"),
            flags: libc::RENAME_EXCHANGE,
        });
        assert_eq!((m.get(b"a"), m.get(b"b")), (Some(&2), Some(&1)));
        m.follow(&Record::Rename {
            from: p("a"),
            to: p("b"),
            flags: 0,
        });
        assert_eq!((m.get(b"a"), m.get(b"b")), (None, Some(&2)));
    }

    #[test]
    fn link_copies_and_unlink_rmdir_remove() {
        let mut m = PathMap::default();
        m.insert(p("x"), 7);
        m.insert(p("d/y"), 8);
        m.follow(&Record::Link {
            existing: p("x"),
            path: p("d/z"),
        });
        assert_eq!(m.get(b"d/z"), Some(&7));
        m.follow(&Record::Unlink { path: p("x") });
        m.follow(&Record::Rmdir { path: p("d") });
        assert!(keys(&m).is_empty());
    }
}
