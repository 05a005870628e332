//! Relative paths: what every layer names an entry by. The bytes of a path beneath the mount's
//! root (the same bytes name it beneath the remote root), components joined by `/`, the root
//! itself empty. Bytes, not text: a name may be any bytes but `/` and NUL, invalid UTF-8
//! included. They are shown to people one way ([`show`]) and carried in JSON one way
//! (`report::PathName` and `report::with_paths`: lossy text and exact hex).

use std::collections::BTreeMap;

/// A path relative to the root; empty for the root itself.
pub type RelPath = Vec<u8>;

/// `dir/name`, where the empty `dir` is the root.
pub fn child_path(dir: &[u8], name: &[u8]) -> RelPath {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

/// Whether `path` is `root` or beneath it (everything is beneath the root `""`).
pub fn is_within(path: &[u8], root: &[u8]) -> bool {
    root.is_empty()
        || (path.starts_with(root)
            && (path.len() == root.len() || path.get(root.len()) == Some(&b'/')))
}

/// `path`, at or beneath `from`, as it is named once `from` is renamed to `to`.
pub fn reroot(path: &[u8], from: &[u8], to: &[u8]) -> RelPath {
    [to, &path[from.len()..]].concat()
}

/// Removes and returns the entries of a path-keyed map at and beneath `root`.
pub fn take_subtree<V>(map: &mut BTreeMap<Vec<u8>, V>, root: &[u8]) -> Vec<(Vec<u8>, V)> {
    let keys: Vec<Vec<u8>> = map
        .range(root.to_vec()..)
        .take_while(|(p, _)| p.starts_with(root))
        .filter(|(p, _)| is_within(p, root))
        .map(|(p, _)| p.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| map.remove_entry(&k))
        .collect()
}

/// A path for people, on one line and exact: UTF-8 as it is, except `\`, `"` and control
/// characters escaped as Rust writes them (`\n`, `\u{1b}`), and each byte that is not UTF-8
/// as `\xNN`. Two different paths never show the same.
pub fn show(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for chunk in path.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_show_on_one_line_and_exactly() {
        assert_eq!(show(b"a/b c"), "a/b c");
        assert_eq!(show(b"new\nline\t\x1b"), "new\\nline\\t\\u{1b}");
        assert_eq!(show(b"it's \"q\" \\"), "it's \\\"q\\\" \\\\");
        assert_eq!(show("é".as_bytes()), "é");
        assert_eq!(show(b"bad\xff\xfe"), "bad\\xff\\xfe");
        // Invalid bytes and their escaped spelling stay apart.
        assert_ne!(show(b"\xff"), show(b"\\xff"));
    }

    #[test]
    fn within_means_at_or_beneath_by_whole_components() {
        assert!(is_within(b"a/b", b"a") && is_within(b"a", b"a") && is_within(b"x", b""));
        assert!(!is_within(b"ab", b"a") && !is_within(b"a", b"a/b"));
        assert_eq!(child_path(b"", b"x"), b"x");
        assert_eq!(child_path(b"d", b"x"), b"d/x");
    }

    #[test]
    fn a_subtree_is_taken_whole_and_nothing_beside_it() {
        let mut m: BTreeMap<Vec<u8>, u8> = [&b"a"[..], b"a/b", b"a/b/c", b"a-b", b"ab", b"b"]
            .iter()
            .map(|p| (p.to_vec(), 0))
            .collect();
        let taken: Vec<Vec<u8>> = take_subtree(&mut m, b"a")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(taken, [b"a".to_vec(), b"a/b".to_vec(), b"a/b/c".to_vec()]);
        assert_eq!(m.len(), 3);
    }
}
