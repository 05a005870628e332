//! Which records a later one makes redundant: what `compact` may drop, so that a journal a long
//! outage let grow shrinks to what replay still needs, judged from the log alone.

use super::{Entry, Record};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Drops records made redundant, Coda-style, using only what the log itself proves:
/// - a Dirty or Store of a path whose next mention is a Store of the same path (Dirty records of
///   that very path in between do not count: they only say "being written again");
/// - any other record naming the path, one of its ancestors or one of its descendants in
///   between keeps the earlier record, since the later Store may then describe another file.
///
/// Order of the remaining entries is preserved.
pub fn coalesce(entries: &[Entry]) -> Vec<Entry> {
    let mut keep = vec![true; entries.len()];
    // Per path, the Dirty/Store records a later Store of the same path would supersede.
    let mut pending: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        match &entry.record {
            Record::Store { path, .. } => {
                forget_related(&mut pending, path, false);
                for superseded in pending.insert(path, vec![i]).unwrap_or_default() {
                    keep[superseded] = false;
                }
            }
            Record::Dirty { path } => {
                forget_related(&mut pending, path, false);
                pending.entry(path).or_default().push(i);
            }
            record => {
                for path in record.paths() {
                    forget_related(&mut pending, path, true);
                }
            }
        }
    }
    entries
        .iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(entry, _)| entry.clone())
        .collect()
}

fn forget_related(pending: &mut BTreeMap<&[u8], Vec<usize>>, path: &[u8], including_self: bool) {
    if including_self {
        pending.remove(path);
    }
    for ancestor in ancestors(path) {
        pending.remove(ancestor);
    }
    let descendants: Vec<&[u8]> = if path.is_empty() {
        pending.keys().filter(|k| !k.is_empty()).copied().collect()
    } else {
        // Keys under "path/" sort between "path/" and "path0" ('0' follows '/').
        let lo = [path, b"/"].concat();
        let hi = [path, b"0"].concat();
        pending
            .range::<[u8], _>((Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))
            .map(|(k, _)| *k)
            .collect()
    };
    for descendant in descendants {
        pending.remove(descendant);
    }
}

/// Proper ancestors, the root (empty path) included.
pub(super) fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let root = (!path.is_empty()).then_some(&path[..0]);
    let inner = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i]);
    root.into_iter().chain(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::{entry, seqs, store};
    use std::collections::BTreeSet;

    fn coalesced(records: Vec<Record>) -> Vec<u64> {
        let entries: Vec<Entry> = records
            .into_iter()
            .zip(1..)
            .map(|(r, seq)| entry(seq, r))
            .collect();
        seqs(&coalesce(&entries))
    }

    fn rename(from: &[u8], to: &[u8]) -> Record {
        Record::Rename {
            from: from.to_vec(),
            to: to.to_vec(),
            flags: 0,
        }
    }

    #[test]
    fn coalesce_drops_a_superseded_store() {
        let records = vec![
            store(b"d/f", 1),
            store(b"other", 1),
            Record::Mkdir {
                path: b"d/fx".to_vec(),
                mode: 0o755,
            },
            store(b"d/f", 2),
        ];
        assert_eq!(coalesced(records), [2, 3, 4]);
    }

    #[test]
    fn coalesce_keeps_store_when_path_or_parent_is_renamed_between() {
        let of_path = vec![store(b"d/f", 1), rename(b"d/f", b"g"), store(b"d/f", 2)];
        assert_eq!(coalesced(of_path), [1, 2, 3]);
        let onto_path = vec![store(b"d/f", 1), rename(b"x", b"d/f"), store(b"d/f", 2)];
        assert_eq!(coalesced(onto_path), [1, 2, 3]);
        let of_parent = vec![store(b"d/f", 1), rename(b"d", b"e"), store(b"d/f", 2)];
        assert_eq!(coalesced(of_parent), [1, 2, 3]);
        let setattr_root = Record::SetAttr {
            path: Vec::new(),
            mode: Some(0o700),
            uid: None,
            gid: None,
            size: None,
            atime: None,
            mtime: None,
        };
        assert_eq!(
            coalesced(vec![store(b"d/f", 1), setattr_root, store(b"d/f", 2)]),
            [1, 2, 3]
        );
    }

    #[test]
    fn coalesce_keeps_store_when_a_descendant_is_touched_between() {
        let records = vec![
            store(b"d", 1),
            Record::Unlink {
                path: b"d/x".to_vec(),
            },
            store(b"d", 2),
        ];
        assert_eq!(coalesced(records), [1, 2, 3]);
    }

    #[test]
    fn coalesce_turns_dirty_then_store_into_store() {
        let dirty = |p: &[u8]| Record::Dirty { path: p.to_vec() };
        assert_eq!(coalesced(vec![dirty(b"f"), store(b"f", 1)]), [2]);
        // The usual rewrite: open, close, open, close.
        let rewrite = vec![dirty(b"f"), store(b"f", 1), dirty(b"f"), store(b"f", 2)];
        assert_eq!(coalesced(rewrite), [4]);
        // Still being written: nothing to drop.
        assert_eq!(coalesced(vec![store(b"f", 1), dirty(b"f")]), [1, 2]);
        let truncated = Record::SetAttr {
            path: b"f".to_vec(),
            mode: None,
            uid: None,
            gid: None,
            size: Some(0),
            atime: None,
            mtime: None,
        };
        assert_eq!(
            coalesced(vec![dirty(b"f"), truncated, store(b"f", 1)]),
            [1, 2, 3]
        );
    }

    #[test]
    fn coalesce_preserves_order_of_survivors() {
        let records: Vec<Record> = (0..20u8)
            .map(|i| store(format!("f{}", i % 3).as_bytes(), i))
            .collect();
        let kept = coalesced(records);
        assert_eq!(kept, [18, 19, 20]);
        let unique: BTreeSet<u64> = kept.iter().copied().collect();
        assert_eq!(unique.len(), kept.len());
    }
}
