//! Confinement: every remote path is the remote root joined with a validated relative path.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{display_path, ErrorKind, RemoteError, Result};

/// Marks our temporary upload names: `.NAME.ftpsync-tmp-<16 hex>`.
pub const TEMP_MARKER: &[u8] = b".ftpsync-tmp-";

/// Longest file name most servers accept (NAME_MAX).
const NAME_MAX: usize = 255;

/// Checks a relative path: components separated by single '/', none empty, "." or "..", no
/// leading or trailing '/', no NUL. Newlines and any other byte are legal in names. The empty
/// path means the root itself and is accepted only where `allow_root` says so.
pub fn validate(rel: &[u8], allow_root: bool) -> Result<()> {
    if rel.is_empty() {
        return if allow_root {
            Ok(())
        } else {
            Err(bad(rel, "the remote root itself cannot be the target"))
        };
    }
    if rel.contains(&0) {
        return Err(bad(rel, "contains a NUL byte"));
    }
    if rel[0] == b'/' {
        return Err(bad(rel, "absolute paths are not allowed"));
    }
    for comp in rel.split(|&b| b == b'/') {
        match comp {
            b"" => return Err(bad(rel, "empty path component")),
            b"." | b".." => return Err(bad(rel, "'.' and '..' components are not allowed")),
            _ => {}
        }
    }
    Ok(())
}

fn bad(rel: &[u8], why: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::Other,
        format!("refusing remote path {}: {why}", display_path(rel)),
    )
}

/// `root` joined with a validated `rel` ("" = the root).
pub fn join(root: &[u8], rel: &[u8]) -> Vec<u8> {
    if rel.is_empty() {
        return root.to_vec();
    }
    let mut out = root.to_vec();
    if !out.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// Splits a validated non-empty relative path into (parent, name); the parent of a top-level
/// name is "".
pub fn split_parent(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// The proper ancestors of a relative path, outermost first: "a/b/c" gives "a", "a/b".
pub fn ancestors(rel: &[u8]) -> impl Iterator<Item = &[u8]> {
    rel.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &rel[..i])
}

/// A temporary name beside `rel`: `.NAME.ftpsync-tmp-<16 hex>`, with NAME shortened so the
/// whole stays within NAME_MAX.
pub fn temp_beside(rel: &[u8]) -> Vec<u8> {
    let (parent, name) = split_parent(rel);
    let suffix = format!("{:016x}", random_u64());
    let room = NAME_MAX - 1 - TEMP_MARKER.len() - suffix.len();
    let mut tmp = Vec::with_capacity(rel.len() + 32);
    if !parent.is_empty() {
        tmp.extend_from_slice(parent);
        tmp.push(b'/');
    }
    tmp.push(b'.');
    tmp.extend_from_slice(&name[..name.len().min(room)]);
    tmp.extend_from_slice(TEMP_MARKER);
    tmp.extend_from_slice(suffix.as_bytes());
    tmp
}

/// Whether a file name (one component) is one of our temporary upload names, e.g. left over by
/// a crash, so a cleanup pass can remove it.
pub fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    if rest.len() < TEMP_MARKER.len() + 16 {
        return false;
    }
    let (head, hex) = rest.split_at(rest.len() - 16);
    head.ends_with(TEMP_MARKER) && hex.iter().all(|b| b.is_ascii_hexdigit())
}

/// Unpredictable enough for temp names: std's RandomState is seeded from the OS per thread; a
/// counter and the clock keep successive values distinct.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostile_but_legal_names() {
        for ok in [
            &b"a"[..],
            b"a/b/c",
            b"-rf",
            b"x\ny",
            b"it's $(touch /tmp/p)",
            b"\xff\xfe",
            b"...",
            b".hidden/..x",
        ] {
            validate(ok, false).unwrap();
        }
    }

    #[test]
    fn rejects_escapes() {
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"..",
            b"a/../../b",
            b"a/./b",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            assert!(validate(bad, false).is_err(), "{bad:?} accepted");
        }
        validate(b"", true).unwrap();
    }

    #[test]
    fn join_and_split() {
        assert_eq!(join(b"/srv/r", b"a/b"), b"/srv/r/a/b");
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/srv", b""), b"/srv");
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        let anc: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(anc, [&b"a"[..], b"a/b"]);
        assert_eq!(ancestors(b"top").count(), 0);
    }

    #[test]
    fn temp_names_are_bounded_and_recognised() {
        let t = temp_beside(b"d/file.txt");
        assert!(t.starts_with(b"d/.file.txt.ftpsync-tmp-"), "{t:?}");
        let (_, name) = split_parent(&t);
        assert!(is_temp_name(name));
        let long = vec![b'x'; 255];
        let t = temp_beside(&long);
        assert_eq!(t.len(), 255);
        assert!(is_temp_name(&t));
        assert!(!is_temp_name(b"file.txt"));
        assert!(!is_temp_name(b".x.ftpsync-tmp-zz"));
        assert_ne!(temp_beside(b"a"), temp_beside(b"a"));
    }
}
