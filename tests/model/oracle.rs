//! What must hold after a flush returned 0: the mount equals the model, the server equals
//! the model except where the server's own version is left alone, every server version
//! survives, no temp upload is left, nothing appeared outside the remote root.

use super::server::{snapshot, Found};
use super::tree::{is_within, Node, Tree};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CONFLICT: &str = ".ftpsync-conflict-";

/// `.NAME.ftpsync-tmp-<16 hex>`, as `is_temp_name` in src/remote/path.rs.
pub fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let marker = ".ftpsync-tmp-";
    rest.len() >= marker.len() + 16 && {
        let (head, hex) = rest.split_at(rest.len() - 16);
        head.ends_with(marker) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

fn last(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// A conflict copy, or something beneath one: only the survival check looks at those.
fn in_conflict_copy(p: &str) -> bool {
    p.split('/').any(|c| c.contains(CONFLICT))
}

/// ftpsync's own bookkeeping in the remote root (a root marker, say): the model never makes
/// a name starting with a dot.
fn is_own_metadata(p: &str) -> bool {
    !p.contains('/') && p.starts_with(".ftpsync") && !is_temp_name(p)
}

fn matches_model(n: &Node, f: Option<&Found>, strip_setid: bool) -> bool {
    let m = |mode: u32| if strip_setid { mode & !0o6000 } else { mode };
    match (n, f) {
        (Node::File { data, mode }, Some(Found::File { data: d, mode: fm })) => {
            data == d && m(*mode) == *fm
        }
        (Node::Dir { mode }, Some(Found::Dir { mode: fm })) => m(*mode) == *fm,
        (Node::Link { target }, Some(Found::Link { target: t })) => target == t,
        _ => false,
    }
}

/// What the server must hold for a model entry: its mode without set-id bits.
fn without_setid(n: &Node) -> Node {
    match n {
        Node::File { data, mode } => Node::File {
            data: data.clone(),
            mode: mode & !0o6000,
        },
        Node::Dir { mode } => Node::Dir {
            mode: mode & !0o6000,
        },
        other => other.clone(),
    }
}

fn show(f: Option<&Found>) -> String {
    f.map_or_else(|| "nothing".to_string(), Found::describe)
}

/// The mount against the model: kind, bytes, permission bits, symlink targets, root mode.
pub fn check_mount(mnt: &Path, t: &Tree) -> Vec<String> {
    let found = match snapshot(mnt) {
        Ok(s) => s,
        Err(e) => return vec![format!("mount: cannot list {}: {e}", mnt.display())],
    };
    let mut out = Vec::new();
    for (p, n) in &t.nodes {
        if !matches_model(n, found.get(p), false) {
            out.push(format!(
                "mount {p:?}: model {}, mount {}",
                n.describe(),
                show(found.get(p))
            ));
        }
    }
    for (p, f) in &found {
        if !t.nodes.contains_key(p) {
            out.push(format!("mount {p:?}: only in the mount ({})", f.describe()));
        }
    }
    match std::fs::metadata(mnt) {
        Ok(md) if md.mode() & 0o7777 == t.root_mode => {}
        Ok(md) => out.push(format!(
            "mount root: model mode {:o}, mount {:o}",
            t.root_mode,
            md.mode() & 0o7777
        )),
        Err(e) => out.push(format!("mount root: stat: {e}")),
    }
    out
}

/// The server against the model, and every owed server version against the server.
pub fn check_server(root: &Path, t: &Tree) -> Vec<String> {
    let found = match snapshot(root) {
        Ok(s) => s,
        Err(e) => return vec![format!("server: cannot list {}: {e}", root.display())],
    };
    let mut out = Vec::new();
    for p in found.keys().filter(|p| is_temp_name(last(p))) {
        out.push(format!("server {p:?}: temporary upload left behind"));
    }
    let mut accepted: BTreeSet<&str> = found
        .keys()
        .filter(|p| in_conflict_copy(p) || is_own_metadata(p))
        .map(String::as_str)
        .collect();
    for (p, n) in &t.nodes {
        let f = found.get(p);
        let left_alone = match t.taints.get(p) {
            Some(Some(i)) => f.is_some_and(|f| f.is_content(&t.versions[*i].content)),
            Some(None) => f.is_none(),
            None => false,
        };
        if !matches_model(n, f, true) && !left_alone {
            out.push(format!(
                "server {p:?}: model {}, server {}{}",
                without_setid(n).describe(),
                show(f),
                taint_note(t, p)
            ));
        }
    }
    let mut extra_dirs = Vec::new();
    for (p, f) in &found {
        if t.nodes.contains_key(p) || accepted.contains(p.as_str()) || is_temp_name(last(p)) {
            continue;
        }
        let theirs = t
            .versions
            .iter()
            .any(|v| v.paths.contains(p) && f.is_content(&v.content));
        if theirs {
            accepted.insert(p);
        } else if matches!(f, Found::Dir { .. }) {
            extra_dirs.push(p.as_str());
        } else {
            out.push(format!(
                "server {p:?}: only on the server ({}){}",
                f.describe(),
                taint_note(t, p)
            ));
        }
    }
    // A directory the model lacks may stay on the server only to hold what must stay there.
    for d in extra_dirs {
        if !accepted.iter().any(|a| is_within(a, d) && *a != d) {
            out.push(format!(
                "server {d:?}: directory only on the server, holding nothing owed"
            ));
        }
    }
    out.extend(lost_versions(t, &found));
    out
}

fn taint_note(t: &Tree, p: &str) -> String {
    match t.taints.get(p) {
        Some(Some(i)) => format!(
            " (the server's own {} made at op {} may stay here)",
            t.versions[*i].content.describe(),
            t.versions[*i].made_at
        ),
        Some(None) => " (the server's delete may stay)".into(),
        None => String::new(),
    }
}

/// Every server version nobody but the server itself destroyed is still somewhere on it.
fn lost_versions(t: &Tree, found: &BTreeMap<String, Found>) -> Vec<String> {
    t.versions
        .iter()
        .filter(|v| v.alive && !found.values().any(|f| f.is_content(&v.content)))
        .map(|v| {
            format!(
                "server version lost: {} made at op {} at {:?} (carried to {:?}), neither there \
                 nor in any conflict copy",
                v.content.describe(),
                v.made_at,
                v.paths.iter().next().cloned().unwrap_or_default(),
                v.paths
            )
        })
        .collect()
}

/// Names in the directories around the remote root when the episode began, to find
/// anything the mirror created outside it.
pub struct Outside {
    /// The directory holding the remote root (sshd's keys, config and log live there too).
    around: PathBuf,
    before: BTreeSet<String>,
    /// The sshd account's home: only names the model or ftpsync would make are looked for.
    home: PathBuf,
    home_before: BTreeSet<String>,
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Outside {
    pub fn new(remote_root: &Path, home: &Path) -> Outside {
        let around = remote_root
            .parent()
            .expect("remote root has a parent")
            .to_path_buf();
        Outside {
            before: names(&around),
            around,
            home_before: names(home),
            home: home.to_path_buf(),
        }
    }

    pub fn check(&self) -> Vec<String> {
        let ours = |n: &str| n.len() == 1 || n.contains("ftpsync-") || n.contains("srvlink-");
        // The test's own sshd writes its pid file there a moment after it starts (or restarts).
        let new_around = names(&self.around)
            .into_iter()
            .filter(|n| !self.before.contains(n) && n != "sshd.pid");
        let new_home = names(&self.home)
            .into_iter()
            .filter(|n| !self.home_before.contains(n) && ours(n));
        new_around
            .map(|n| {
                format!(
                    "outside the remote root: {:?} appeared",
                    self.around.join(n)
                )
            })
            .chain(
                new_home
                    .map(|n| format!("outside the remote root: {:?} appeared", self.home.join(n))),
            )
            .collect()
    }
}
