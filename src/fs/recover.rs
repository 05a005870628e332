//! Which files the journal leaves dirty: created or opened for writing, with no Store after.
//! A daemon killed between a close and its hash leaves such files; they are hashed again at
//! the next start, before the mount goes live.

use crate::journal::{Entry, Record};
use std::collections::BTreeSet;

/// Paths (as they are after the whole log) whose last content record is not a Store.
pub fn dirty_paths(entries: &[Entry]) -> BTreeSet<Vec<u8>> {
    let mut dirty = BTreeSet::new();
    for e in entries {
        match &e.record {
            Record::Create { path, .. } | Record::Dirty { path } => {
                dirty.insert(path.clone());
            }
            Record::Store { path, .. } | Record::Unlink { path } => {
                dirty.remove(path);
            }
            Record::Rmdir { path } => drop(take_subtree(&mut dirty, path)),
            Record::Link { existing, path } if dirty.contains(existing) => {
                dirty.insert(path.clone());
            }
            Record::Rename { from, to, flags } => rename(&mut dirty, from, to, *flags),
            _ => {}
        }
    }
    dirty
}

fn rename(dirty: &mut BTreeSet<Vec<u8>>, from: &[u8], to: &[u8], flags: u32) {
    let moved = take_subtree(dirty, from);
    let replaced = take_subtree(dirty, to);
    dirty.extend(moved.into_iter().map(|p| reroot(&p, from, to)));
    if flags & libc::RENAME_EXCHANGE != 0 {
        dirty.extend(replaced.into_iter().map(|p| reroot(&p, to, from)));
    }
}

/// Removes and returns `root` and every path beneath it.
fn take_subtree(set: &mut BTreeSet<Vec<u8>>, root: &[u8]) -> Vec<Vec<u8>> {
    let under: Vec<Vec<u8>> = set
        .range(root.to_vec()..)
        .take_while(|p| p.starts_with(root))
        .filter(|p| is_within(p, root))
        .cloned()
        .collect();
    for p in &under {
        set.remove(p);
    }
    under
}

fn is_within(path: &[u8], root: &[u8]) -> bool {
    path.len() == root.len() || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
}

fn reroot(path: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut p = to.to_vec();
    p.extend_from_slice(&path[from.len()..]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(records: Vec<Record>) -> Vec<String> {
        let entries: Vec<Entry> = records
            .into_iter()
            .enumerate()
            .map(|(i, record)| Entry {
                seq: i as u64 + 1,
                record,
            })
            .collect();
        dirty_paths(&entries)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect()
    }

    fn p(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn store(path: &str) -> Record {
        Record::Store {
            path: p(path),
            size: 0,
            sha256: [0; 32],
            mtime: crate::journal::Timestamp { sec: 0, nsec: 0 },
            mode: 0o644,
        }
    }

    #[test]
    fn store_cleans_and_later_dirty_dirties_again() {
        let r = run(vec![
            Record::Create {
                path: p("a"),
                mode: 0o644,
            },
            store("a"),
            Record::Dirty { path: p("a") },
            Record::Create {
                path: p("b"),
                mode: 0o644,
            },
            store("b"),
        ]);
        assert_eq!(r, ["a"]);
    }

    #[test]
    fn renames_of_files_and_parent_dirs_carry_dirtiness() {
        let r = run(vec![
            Record::Create {
                path: p("d/x"),
                mode: 0o644,
            },
            Record::Create {
                path: p("dd"),
                mode: 0o644,
            },
            Record::Rename {
                from: p("d"),
                to: p("e"),
                flags: 0,
            },
            Record::Create {
                path: p("f"),
                mode: 0o644,
            },
            Record::Rename {
                from: p("f"),
                to: p("g"),
                flags: 0,
            },
        ]);
        assert_eq!(r, ["dd", "e/x", "g"], "'dd' is not beneath 'd'");
    }

    #[test]
    fn rename_over_and_exchange() {
        let r = run(vec![
            Record::Create {
                path: p("a"),
                mode: 0o644,
            },
            Record::Create {
                path: p("b"),
                mode: 0o644,
            },
            store("b"),
            Record::Rename {
                from: p("a"),
                to: p("b"),
                flags: 0,
            },
        ]);
        assert_eq!(r, ["b"]);
        let r = run(vec![
            Record::Create {
                path: p("a"),
                mode: 0o644,
            },
            Record::Rename {
                from: p("a"),
                to: p("b"),
                flags: libc::RENAME_EXCHANGE,
            },
        ]);
        assert_eq!(r, ["b"]);
    }

    #[test]
    fn unlink_and_rmdir_forget() {
        let r = run(vec![
            Record::Create {
                path: p("a"),
                mode: 0o644,
            },
            Record::Unlink { path: p("a") },
            Record::Create {
                path: p("d/y"),
                mode: 0o644,
            },
            Record::Unlink { path: p("d/y") },
            Record::Rmdir { path: p("d") },
        ]);
        assert!(r.is_empty());
    }
}
