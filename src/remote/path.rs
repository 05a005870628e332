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
    let suffix = format!("{:016x}", random_u64());
    sibling(rel, &[&temp_prefix(rel), suffix.as_bytes()].concat())
}

/// The name of `rel`'s temporary files up to their random suffix: `.NAME.ftpsync-tmp-`. Two
/// names alike in their first 200-odd bytes share it.
pub fn temp_prefix(rel: &[u8]) -> Vec<u8> {
    let (_, name) = split_parent(rel);
    let room = NAME_MAX - 1 - TEMP_MARKER.len() - 16;
    [b".", shortened(name, room), TEMP_MARKER].concat()
}

/// A name for the copy kept aside of the server's version at `rel`:
/// `NAME.ftpsync-conflict-<stamp>-<8 hex>`. The random part keeps several conflicts within one
/// second apart; NAME is shortened so the whole stays within NAME_MAX.
pub fn conflict_beside(rel: &[u8], stamp: &str) -> Vec<u8> {
    let (_, name) = split_parent(rel);
    let suffix = format!("{stamp}-{:08x}", random_u64() as u32);
    let room = NAME_MAX - CONFLICT_MARKER.len() - suffix.len();
    let name = [shortened(name, room), CONFLICT_MARKER, suffix.as_bytes()].concat();
    sibling(rel, &name)
}

/// `name` in the same directory as `rel`.
fn sibling(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let (parent, _) = split_parent(rel);
    if parent.is_empty() {
        return name.to_vec();
    }
    [parent, b"/", name].concat()
}

/// At most `room` bytes of `name`, never cutting a UTF-8 character in two: a server that
/// insists on UTF-8 names would refuse a derived name of a file whose own name it accepts.
fn shortened(name: &[u8], room: usize) -> &[u8] {
    let mut keep = name.len().min(room);
    if let Ok(name) = std::str::from_utf8(name) {
        while !name.is_char_boundary(keep) {
            keep -= 1;
        }
    }
    &name[..keep]
}

/// Marks the copies kept aside when a remote entry changed behind our back:
/// `NAME.ftpsync-conflict-<UTC>-<8 hex>`.
pub const CONFLICT_MARKER: &[u8] = b".ftpsync-conflict-";

/// Whether a file name (one component) is a conflict copy ftpsync kept aside.
pub fn is_conflict_name(name: &[u8]) -> bool {
    name.windows(CONFLICT_MARKER.len())
        .any(|w| w == CONFLICT_MARKER)
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

    #[test]
    fn conflict_names_are_distinct_bounded_and_recognised() {
        let c = conflict_beside(b"d/report.txt", "20261202T063000Z");
        let shown = c.escape_ascii().to_string();
        assert!(
            c.starts_with(b"d/report.txt.ftpsync-conflict-20261202T063000Z-"),
            "{shown}"
        );
        assert_eq!(
            c.len(),
            b"d/report.txt.ftpsync-conflict-20261202T063000Z-".len() + 8
        );
        assert!(is_conflict_name(split_parent(&c).1));
        assert_ne!(c, conflict_beside(b"d/report.txt", "20261202T063000Z"));
        let long = "é".repeat(127);
        let c = conflict_beside(long.as_bytes(), "20261202T063000Z");
        assert!(c.len() <= NAME_MAX && is_conflict_name(&c));
        assert!(std::str::from_utf8(&c).is_ok());
    }

    /// Found by `fuzz::temp_names_are_bounded_recognised_and_distinct` (its shrunk input):
    /// shortening a long name cut a UTF-8 character in two, so a server that insists on UTF-8
    /// names (APFS, ZFS utf8only, Windows) would refuse the temp name of a file whose own name
    /// it accepts.
    #[test]
    fn shortened_temp_name_of_a_utf8_name_is_utf8() {
        let long = "é".repeat(113);
        let t = temp_beside(format!("d/{long}").as_bytes());
        let shown = t.escape_ascii().to_string();
        let (_, name) = split_parent(&t);
        assert!(name.len() <= NAME_MAX && is_temp_name(name), "{shown}");
        assert!(std::str::from_utf8(&t).is_ok(), "{shown}");
        assert!(
            t.starts_with(format!("d/.{}", "é".repeat(112)).as_bytes()),
            "{shown}"
        );
    }
}

/// Property tests over hostile byte strings, bounded in cases so that they run in every
/// `cargo test`. A failure prints the shrunk input (byte strings as `b"..."` literals) and
/// proptest saves its seed under `proptest-regressions/`, which is committed: every later run,
/// CI's too, tries those seeds first. Pin a real bug with a plain unit test as well, since a
/// saved seed means nothing once a strategy changes.
#[cfg(test)]
pub(crate) mod fuzz {
    use std::ffi::OsStr;
    use std::fmt;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Component, Path};

    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    use super::*;
    use crate::remote::display_path;

    /// Cases per property: the whole module runs in about a second in the debug build.
    const CASES: u32 = 2048;

    pub(crate) fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            // A failing case shrinks for at most this long (ms), so a failure is bounded too.
            max_shrink_time: 20_000,
            ..ProptestConfig::default()
        }
    }

    /// A byte string that shows as a `b"..."` literal, ready to paste into a unit test.
    #[derive(Clone, PartialEq, Eq)]
    pub(crate) struct Bytes(pub Vec<u8>);

    impl fmt::Debug for Bytes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let escaped: String = self.0.escape_ascii().to_string();
            write!(f, "b\"{escaped}\" ({} bytes)", self.0.len())
        }
    }

    /// Bytes that make paths dangerous: separators, dots, NUL, newline, a leading '-', a
    /// backslash, and pieces of UTF-8 (a lone continuation byte, a lead byte, invalid 0xff).
    const DANGEROUS: &[u8] = b"/.\0\n-\\ \x80\xc3\xff";

    fn hostile_byte() -> impl Strategy<Value = u8> {
        prop_oneof![3 => select(DANGEROUS), 1 => any::<u8>()]
    }

    /// A name-like piece of a path, biased towards the dangerous ones.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            select(vec![
                &b""[..],
                b".",
                b"..",
                b"...",
                b"-",
                b"-rf",
                b"x\ny",
                b"\\.."
            ])
            .prop_map(<[u8]>::to_vec),
            vec(hostile_byte(), 1..8),
            vec(any::<u8>(), 1..8),
            // Around NAME_MAX, in one-byte characters and in two- and three-byte ones.
            (200usize..300).prop_map(|n| vec![b'x'; n]),
            (100usize..140, select(vec!["é", "€"])).prop_map(|(n, c)| c.repeat(n).into_bytes()),
        ]
    }

    /// Arbitrary bytes, mostly shaped like paths.
    pub(crate) fn hostile_path() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            3 => vec(piece(), 0..6).prop_map(|pieces| pieces.join(&b'/')),
            1 => vec(hostile_byte(), 0..40),
            1 => vec(any::<u8>(), 0..40),
        ]
        .prop_map(Bytes)
    }

    /// One component `validate` accepts: hostile, but no '/', no NUL, not "", "." or "..".
    pub(crate) fn valid_name() -> impl Strategy<Value = Vec<u8>> {
        piece()
            .prop_map(|mut name| {
                for b in name.iter_mut().filter(|b| matches!(**b, b'/' | 0)) {
                    *b = b'_';
                }
                name
            })
            .prop_filter("not a name", |name| {
                !matches!(&name[..], b"" | b"." | b"..")
            })
    }

    /// A non-empty relative path `validate` accepts.
    pub(crate) fn valid_rel() -> impl Strategy<Value = Bytes> {
        vec(valid_name(), 1..6).prop_map(|names| Bytes(names.join(&b'/')))
    }

    /// An absolute remote root as realpath gives it, sometimes with a trailing '/'.
    fn root() -> impl Strategy<Value = Bytes> {
        (vec(valid_name(), 0..3), any::<bool>()).prop_map(|(names, slash)| {
            let mut root = b"/".to_vec();
            root.extend(names.join(&b'/'));
            if slash && !root.ends_with(b"/") {
                root.push(b'/');
            }
            Bytes(root)
        })
    }

    /// How a POSIX path parser (std's) reads `path`.
    fn components(path: &[u8]) -> Vec<Component<'_>> {
        Path::new(OsStr::from_bytes(path)).components().collect()
    }

    fn is_single_line_without_controls(s: &str) -> bool {
        !s.chars().any(char::is_control)
    }

    proptest! {
        #![proptest_config(config(CASES))]

        /// `validate` agrees with an independent reading: std's parser sees exactly the
        /// '/'-separated pieces, each a normal name (no root, ".", "..", nor empty pieces it
        /// would silently drop), and no NUL. A refusal is an error with a one-line message.
        #[test]
        fn validate_agrees_with_a_posix_parser(rel in hostile_path(), allow_root in any::<bool>()) {
            let rel = &rel.0;
            let result = validate(rel, allow_root);
            let expected = if rel.is_empty() {
                allow_root
            } else {
                let comps = components(rel);
                !rel.contains(&0)
                    && comps.len() == rel.split(|&b| b == b'/').count()
                    && comps.iter().all(|c| matches!(c, Component::Normal(_)))
            };
            prop_assert_eq!(result.is_ok(), expected);
            if let Err(e) = result {
                prop_assert_eq!(e.kind(), ErrorKind::Other);
                prop_assert!(is_single_line_without_controls(e.message()), "{:?}", e.message());
                prop_assert!(e.message().contains(&display_path(rel)), "{:?}", e.message());
            }
        }

        /// Each way a path can try to escape or be reinterpreted, spliced into a valid path at
        /// any place, is refused with an error.
        #[test]
        fn every_escape_is_refused(
            rel in valid_rel(),
            evil in select(vec![&b""[..], b".", b"..", b"\0", b"a\0", b"\0b"])
                .prop_map(|evil| Bytes(evil.to_vec())),
            at in any::<prop::sample::Index>(),
            edge in 0..3u8,
        ) {
            let mut names: Vec<&[u8]> = rel.0.split(|&b| b == b'/').collect();
            let at = at.index(names.len() + 1);
            names.insert(at, &evil.0);
            let mut bad = names.join(&b'/');
            match edge {
                0 => bad.insert(0, b'/'),
                1 => bad.push(b'/'),
                _ => {}
            }
            let bad = Bytes(bad);
            prop_assert!(validate(&bad.0, false).is_err(), "{:?} accepted", bad);
            prop_assert!(validate(&bad.0, true).is_err(), "{:?} accepted", bad);
        }

        /// A validated path joined to the root is the root, one '/', then the path: the root is
        /// a path prefix (not just a string prefix), and a server's parser sees the root's
        /// components followed by the path's, all plain names, so nothing can climb out.
        #[test]
        fn join_stays_strictly_beneath_the_root(root in root(), rel in valid_rel()) {
            let (root, rel) = (&root.0, &rel.0);
            validate(rel, false).unwrap();
            prop_assert_eq!(join(root, b""), root.clone());
            let joined = join(root, rel);
            let mut base = root.clone();
            if !base.ends_with(b"/") {
                base.push(b'/');
            }
            prop_assert!(joined.starts_with(&base), "{:?}", Bytes(joined.clone()));
            prop_assert_eq!(&joined[base.len()..], &rel[..]);
            let mut expected = components(root);
            let names = rel.split(|&b| b == b'/');
            expected.extend(names.map(|n| Component::Normal(OsStr::from_bytes(n))));
            prop_assert_eq!(components(&joined), expected);
        }

        /// `split_parent` and `ancestors` never panic and cut at the same '/'s; for a valid
        /// path, every piece they give is valid and they agree with each other and with `join`.
        #[test]
        fn split_parent_and_ancestors_agree(rel in hostile_path()) {
            let rel = &rel.0;
            let (parent, name) = split_parent(rel);
            let ancestors: Vec<&[u8]> = ancestors(rel).collect();
            let slashes = rel.iter().filter(|&&b| b == b'/').count();
            prop_assert_eq!(ancestors.len(), slashes);
            prop_assert!(!name.contains(&b'/'));
            if slashes == 0 {
                prop_assert!(parent.is_empty());
                prop_assert_eq!(name, &rel[..]);
            } else {
                prop_assert_eq!([parent, b"/", name].concat(), rel.clone());
                prop_assert_eq!(ancestors.last().copied(), Some(parent));
            }
            for (i, a) in ancestors.iter().enumerate() {
                prop_assert_eq!(rel.get(a.len()), Some(&b'/'));
                prop_assert!(rel.starts_with(a));
                prop_assert!(i == 0 || a.len() > ancestors[i - 1].len());
            }
            if validate(rel, false).is_ok() {
                prop_assert!(validate(parent, true).is_ok());
                prop_assert!(validate(name, false).is_ok());
                for a in &ancestors {
                    prop_assert!(validate(a, false).is_ok());
                }
                let of_parent: Vec<&[u8]> = super::ancestors(parent).collect();
                let expected: &[&[u8]] = &ancestors[..slashes.saturating_sub(1)];
                prop_assert_eq!(&of_parent[..], expected);
                let rejoined = join(b"/r", rel);
                prop_assert_eq!(split_parent(&rejoined[1..]), (&join(b"r", parent)[..], name));
            }
        }

        /// A temp name sits beside the file, is a valid path, stays within NAME_MAX, is
        /// recognised by `is_temp_name`, differs from the file's name, keeps as much of that
        /// name as fits, and stays UTF-8 when the name is.
        #[test]
        fn temp_names_are_bounded_recognised_and_distinct(rel in valid_rel()) {
            let rel = &rel.0;
            let tmp = temp_beside(rel);
            let shown = Bytes(tmp.clone());
            let (parent, name) = split_parent(rel);
            let (tmp_parent, tmp_name) = split_parent(&tmp);
            prop_assert_eq!(tmp_parent, parent);
            prop_assert!(validate(&tmp, false).is_ok(), "{:?}", shown);
            prop_assert!(tmp_name.len() <= NAME_MAX, "{:?}", shown);
            prop_assert!(is_temp_name(tmp_name), "{:?}", shown);
            prop_assert!(tmp_name != name, "{:?}", shown);
            let kept = tmp_name.len() - 1 - TEMP_MARKER.len() - 16;
            prop_assert_eq!(&tmp_name[1..1 + kept], &name[..kept]);
            prop_assert_eq!(&tmp_name[1 + kept..tmp_name.len() - 16], TEMP_MARKER);
            // Shortened only when needed, and then by at most a split character.
            prop_assert!(kept == name.len() || tmp_name.len() > NAME_MAX - 4, "{:?}", shown);
            if std::str::from_utf8(name).is_ok() {
                prop_assert!(std::str::from_utf8(tmp_name).is_ok(), "{:?}", shown);
            }
        }

        /// `is_temp_name` takes any bytes; what it accepts has the shape `temp_beside` makes.
        #[test]
        fn is_temp_name_accepts_only_the_temp_shape(name in hostile_path(), hex in any::<u64>()) {
            let name = &name.0;
            if is_temp_name(name) {
                prop_assert!(name.starts_with(b"."));
                let (head, tail) = name.split_at(name.len() - 16);
                prop_assert!(head.ends_with(TEMP_MARKER) && head.len() > TEMP_MARKER.len());
                prop_assert!(tail.iter().all(u8::is_ascii_hexdigit));
            }
            let made = [b".", &name[..], TEMP_MARKER, format!("{hex:016x}").as_bytes()].concat();
            prop_assert!(is_temp_name(&made));
        }
    }
}
