//! What to restore: the remote tree listed breadth first, each entry checked against the
//! manifest (when there is one) before anything is written, and each file and symlink given a
//! part name that no remote name in its directory can clash with.

use super::{name_of, problem, server_mode, Connect, Expected, Summary, UNVOUCHED};
use crate::mirror::{Confirmed, FileMeta};
use crate::relpath::child_path;
use crate::remote::path::split_parent;
use crate::remote::{self, display_path, FileKind, RemoteStat, Transport};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};

/// Ends the name a file is downloaded to: `.NAME.ftpsync-part` beside NAME.
pub const PART_SUFFIX: &[u8] = b".ftpsync-part";
/// Longest file name (NAME_MAX).
const NAME_MAX: usize = 255;

/// The part name for `name`, distinct from every name in `taken` (the directory's remote
/// names and the part names already given out there): `.NAME.ftpsync-part`, `-1`, `-2`...
/// appended on a clash; a name too long for that keeps a prefix and a hash of the whole.
pub fn part_name(name: &[u8], taken: &HashSet<Vec<u8>>) -> Vec<u8> {
    for n in 0u32.. {
        let tag = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let tail = PART_SUFFIX.len() + tag.len();
        let mut out = vec![b'.'];
        if 1 + name.len() + tail <= NAME_MAX {
            out.extend_from_slice(name);
        } else {
            let digest = hex::encode(&Sha256::digest(name)[..8]);
            let keep = NAME_MAX - 1 - tail - 1 - digest.len();
            out.extend_from_slice(&name[..keep]);
            out.push(b'~');
            out.extend_from_slice(digest.as_bytes());
        }
        out.extend_from_slice(PART_SUFFIX);
        out.extend_from_slice(tag.as_bytes());
        if !taken.contains(&out) {
            return out;
        }
    }
    Vec::new()
}

/// Whether a local name is one of our part names (left by an interrupted restore).
pub fn is_part_name(name: &[u8]) -> bool {
    let stem = match name.iter().rposition(|&b| b == b'-') {
        Some(i) if i + 1 < name.len() && name[i + 1..].iter().all(u8::is_ascii_digit) => &name[..i],
        _ => name,
    };
    name.starts_with(b".") && stem.len() > PART_SUFFIX.len() + 1 && stem.ends_with(PART_SUFFIX)
}

pub(super) struct DirJob {
    pub(super) rel: Vec<u8>,
    pub(super) mode: u32,
    pub(super) atime: i64,
    pub(super) mtime: i64,
}

pub(super) struct FileJob {
    pub(super) rel: Vec<u8>,
    pub(super) part: Vec<u8>,
    /// As listed: what is expected without a manifest.
    pub(super) size: u64,
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) want: Option<FileMeta>,
}

pub(super) struct LinkJob {
    pub(super) rel: Vec<u8>,
    pub(super) part: Vec<u8>,
    pub(super) target: Vec<u8>,
    /// The server's times (whole seconds): the manifest keeps none for symlinks.
    pub(super) atime: i64,
    pub(super) mtime: i64,
}

/// Everything the remote holds that is to be restored, directories parents first.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) dirs: Vec<DirJob>,
    pub(super) files: Vec<FileJob>,
    pub(super) links: Vec<LinkJob>,
    /// Each listed directory's remote names: stale part files are the others.
    pub(super) names: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
}

fn kind_word(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "a file",
        FileKind::Dir => "a directory",
        FileKind::Symlink => "a symlink",
        FileKind::Other => "a device, FIFO or socket",
    }
}

fn confirmed_word(c: &Confirmed) -> &'static str {
    match c {
        Confirmed::File(_) => "a file",
        Confirmed::Dir { .. } => "a directory",
        Confirmed::Symlink { .. } => "a symlink",
    }
}

/// Lists the remote tree breadth first and decides what to restore.
pub(super) fn walk(
    t: &mut Box<dyn Transport>,
    connect: &Connect<'_>,
    expected: Option<&Expected>,
    s: &mut Summary,
) -> Plan {
    let mut plan = Plan::default();
    let mut queue = VecDeque::from([Vec::new()]);
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    while let Some(dir) = queue.pop_front() {
        let listed = match t.list_stat(&dir) {
            Err(e) if e.kind().needs_reconnect() => connect().and_then(|c| {
                *t = c;
                t.list_stat(&dir)
            }),
            r => r,
        };
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                s.problems
                    .push(problem(&dir, format!("not restored: cannot list it: {e}")));
                continue;
            }
        };
        let names: HashSet<Vec<u8>> = entries.iter().map(|(n, _)| n.clone()).collect();
        let mut taken = names.clone();
        let mut here = HashSet::new();
        for (name, st) in entries {
            let rel = child_path(&dir, &name);
            if !here.insert(name.clone()) {
                s.problems
                    .push(problem(&rel, "listed twice by the server; restored once"));
                continue;
            }
            if name_of(&name).is_err() {
                s.problems.push(problem(
                    &rel,
                    "refusing a remote name that is not a single file name (empty, '.', '..', \
                     a '/' or NUL in it, or longer than 255 bytes)",
                ));
                continue;
            }
            if remote::marker::is_marker(&rel) {
                continue;
            }
            seen.insert(rel.clone());
            if remote::path::is_temp_name(&name) {
                s.notes
                    .push(problem(&rel, "left out: an interrupted upload"));
                continue;
            }
            if let Some(job) = plan_entry(&mut plan, &mut taken, rel, &name, st, expected, s) {
                queue.push_back(job);
            }
        }
        plan.names.insert(dir, names);
    }
    if let Some(m) = expected {
        let mut missing: Vec<&Vec<u8>> = m
            .keys()
            .filter(|p| !seen.contains(*p) && plan.names.contains_key(split_parent(p).0))
            .collect();
        missing.sort();
        for p in missing {
            s.problems
                .push(problem(p, "in the manifest but missing on the remote"));
        }
    }
    plan
}

/// Plans one listed entry; returns its path when it is a directory to list next.
fn plan_entry(
    plan: &mut Plan,
    taken: &mut HashSet<Vec<u8>>,
    rel: Vec<u8>,
    name: &[u8],
    st: RemoteStat,
    expected: Option<&Expected>,
    s: &mut Summary,
) -> Option<Vec<u8>> {
    let want = expected.and_then(|m| m.get(&rel));
    let mut part = || {
        let p = part_name(name, taken);
        taken.insert(p.clone());
        p
    };
    let special = matches!(st.kind, FileKind::Dir | FileKind::File) && st.mode & UNVOUCHED != 0;
    if want.is_none() && special {
        s.notes.push(problem(
            &rel,
            format!(
                "restored without its setuid/setgid bits (mode {:o} on the server): no \
                 manifest vouches for them",
                st.mode & 0o7777
            ),
        ));
    }
    match (st.kind, want) {
        (FileKind::Dir, None | Some(Confirmed::Dir { .. })) => {
            let mode = match want {
                Some(Confirmed::Dir { mode }) => *mode & 0o7777,
                _ => server_mode(st.mode),
            };
            plan.dirs.push(DirJob {
                rel: rel.clone(),
                mode,
                atime: st.atime,
                mtime: st.mtime,
            });
            return Some(rel);
        }
        (FileKind::File, None | Some(Confirmed::File(_))) => plan.files.push(FileJob {
            part: part(),
            size: st.size,
            mode: server_mode(st.mode),
            mtime: st.mtime,
            want: want.and_then(Confirmed::file).copied(),
            rel,
        }),
        (FileKind::Symlink, None | Some(Confirmed::Symlink { .. })) => {
            let Some(target) = st.symlink_target.filter(|t| !t.is_empty()) else {
                s.problems.push(problem(
                    &rel,
                    "not restored: the server gave no target for this symlink",
                ));
                return None;
            };
            if let Some(Confirmed::Symlink { target: w }) = want {
                if *w != target {
                    s.problems.push(problem(
                        &rel,
                        format!(
                            "does not match the manifest: the remote symlink points to {}, \
                             the manifest says {}; not restored",
                            display_path(&target),
                            display_path(w)
                        ),
                    ));
                    return None;
                }
            }
            plan.links.push(LinkJob {
                part: part(),
                target,
                atime: st.atime,
                mtime: st.mtime,
                rel,
            });
        }
        (FileKind::Other, None) => s
            .notes
            .push(problem(&rel, "left out: a device, FIFO or socket")),
        (kind, Some(w)) => s.problems.push(problem(
            &rel,
            format!(
                "does not match the manifest: the remote holds {}, the manifest {}; not restored",
                kind_word(kind),
                confirmed_word(w)
            ),
        )),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_distinct_bounded_and_recognised() {
        let mut taken = HashSet::new();
        assert_eq!(part_name(b"a", &taken), b".a.ftpsync-part");
        taken.insert(b".a.ftpsync-part".to_vec());
        assert_eq!(part_name(b"a", &taken), b".a.ftpsync-part-1");
        let long = vec![b'x'; 255];
        let p = part_name(&long, &HashSet::new());
        assert_eq!(p.len(), 255);
        assert!(is_part_name(&p));
        let mut other = long.clone();
        other[254] = b'y';
        assert_ne!(p, part_name(&other, &HashSet::new()));
        for yes in [&b".a.ftpsync-part"[..], b".a.ftpsync-part-12"] {
            assert!(is_part_name(yes));
        }
        for no in [
            &b"a.ftpsync-part"[..],
            b".ftpsync-part",
            b".a.ftpsync-part-x",
            b".a",
        ] {
            assert!(!is_part_name(no), "{:?}", String::from_utf8_lossy(no));
        }
    }
}
