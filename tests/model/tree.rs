//! The in-memory model of the local tree, with POSIX semantics for the operations the test
//! makes, and the "taint" bookkeeping of server-side versions (see the header of model.rs).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { target: String },
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Node::File { data, mode } => format!("file {:o} {}", mode, describe_bytes(data)),
            Node::Dir { mode } => format!("dir {mode:o}"),
            Node::Link { target } => format!("symlink -> {target:?}"),
        }
    }
}

/// Short enough for a trace, exact enough to tell versions apart.
pub fn describe_bytes(data: &[u8]) -> String {
    let text: String = data
        .iter()
        .take_while(|b| b.is_ascii_graphic() || **b == b' ')
        .take(40)
        .map(|&b| b as char)
        .collect();
    let text = if text.len() >= 8 {
        format!(" {text:?}")
    } else {
        String::new()
    };
    format!(
        "{} bytes sha256 {}..{text}",
        data.len(),
        &super::common::sha256_hex(data)[..12]
    )
}

/// What a server edit left at a path: the bytes of a file or the target of a symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    File(Vec<u8>),
    Link(String),
}

impl Content {
    pub fn describe(&self) -> String {
        match self {
            Content::File(d) => format!("file {}", describe_bytes(d)),
            Content::Link(t) => format!("symlink -> {t:?}"),
        }
    }
}

/// One version the server made behind ftpsync's back.
#[derive(Clone, Debug)]
pub struct Version {
    pub content: Content,
    /// False once the server itself overwrote or removed it: then nobody owes its survival.
    pub alive: bool,
    /// Every path this version was legitimately at (its own, and where renames of it or of
    /// its ancestors carried it): a server-only entry there is this version left alone.
    pub paths: BTreeSet<String>,
    /// The operation (index in the episode) that made it.
    pub made_at: usize,
}

pub fn parent(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

pub fn depth(p: &str) -> usize {
    if p.is_empty() {
        0
    } else {
        p.split('/').count()
    }
}

/// `p` is `anc` or lies beneath it.
pub fn is_within(p: &str, anc: &str) -> bool {
    anc.is_empty() || p == anc || (p.starts_with(anc) && p.as_bytes().get(anc.len()) == Some(&b'/'))
}

fn reroot(p: &str, from: &str, to: &str) -> String {
    format!("{to}{}", &p[from.len()..])
}

/// Entries and taints lifted out of the tree by a rename, to be put back under a new name.
type Moved = (Vec<(String, Node)>, Vec<(String, Option<usize>)>);

/// The local tree as the model says it must be, and what the server may hold instead.
#[derive(Clone, Debug)]
pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub root_mode: u32,
    /// Paths where the server holds a version of its own (an index into `versions`) or
    /// nothing (`None`: the server deleted it), and the local side has not changed the path
    /// since: ftpsync must leave them alone.
    pub taints: BTreeMap<String, Option<usize>>,
    pub versions: Vec<Version>,
}

impl Tree {
    pub fn new(root_mode: u32) -> Tree {
        Tree {
            nodes: BTreeMap::new(),
            root_mode,
            taints: BTreeMap::new(),
            versions: Vec::new(),
        }
    }

    pub fn get(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }

    pub fn is_dir(&self, p: &str) -> bool {
        p.is_empty() || self.get(p).is_some_and(Node::is_dir)
    }

    pub fn is_file(&self, p: &str) -> bool {
        matches!(self.get(p), Some(Node::File { .. }))
    }

    /// Direct children of directory `dir`.
    pub fn children(&self, dir: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|k| parent(k) == dir && !k.is_empty())
            .cloned()
            .collect()
    }

    /// `p` and everything beneath it, parents first.
    pub fn subtree(&self, p: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|k| is_within(k, p))
            .cloned()
            .collect()
    }

    pub fn paths_where(&self, pred: impl Fn(&str, &Node) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(k, n)| pred(k, n))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The local side changed the entry at `p`: what the server made there is no longer left
    /// alone (it must survive as a conflict copy instead).
    fn touch(&mut self, p: &str) {
        self.taints.remove(p);
    }

    pub fn set(&mut self, p: &str, node: Node) {
        self.touch(p);
        self.nodes.insert(p.to_string(), node);
    }

    pub fn remove(&mut self, p: &str) {
        self.touch(p);
        self.nodes.remove(p);
    }

    pub fn file_mut(&mut self, p: &str) -> &mut Vec<u8> {
        self.touch(p);
        match self.nodes.get_mut(p) {
            Some(Node::File { data, .. }) => data,
            other => panic!("model: {p} is not a file: {other:?}"),
        }
    }

    pub fn set_mode(&mut self, p: &str, new: u32) {
        self.touch(p);
        match self.nodes.get_mut(p) {
            Some(Node::File { mode, .. }) | Some(Node::Dir { mode }) => *mode = new,
            other => panic!("model: chmod of {p}: {other:?}"),
        }
    }

    /// Whether `rename(from, to)` (flags 0) succeeds by POSIX; the generator only makes
    /// renames that do.
    pub fn can_rename(&self, from: &str, to: &str) -> bool {
        let Some(src) = self.get(from) else {
            return false;
        };
        if from == to || is_within(to, from) || !self.is_dir(parent(to)) {
            return false;
        }
        match (src.is_dir(), self.get(to)) {
            (_, None) => true,
            (true, Some(Node::Dir { .. })) => self.children(to).is_empty(),
            (true, Some(_)) | (false, Some(Node::Dir { .. })) => false,
            (false, Some(_)) => true,
        }
    }

    pub fn can_exchange(&self, a: &str, b: &str) -> bool {
        self.get(a).is_some() && self.get(b).is_some() && !is_within(a, b) && !is_within(b, a)
    }

    /// Moves the entries and the taints at and beneath `from` to `to`, replacing what was at
    /// `to` (whose taints go: the local side replaced it, so its server versions are owed as
    /// conflict copies).
    pub fn rename(&mut self, from: &str, to: &str) {
        for p in self.subtree(to) {
            self.nodes.remove(&p);
        }
        let gone: Vec<String> = self
            .taints
            .keys()
            .filter(|k| is_within(k, to))
            .cloned()
            .collect();
        for k in gone {
            self.taints.remove(&k);
        }
        let moved = self.take_within(from);
        self.put_rerooted(moved, from, to);
        // A version whose taint a local write ended may still stand where it was: the write
        // and a delete after it can reach ftpsync as nothing at all (coalesced within the
        // write-back delay), and the server's version then moves with its directory.
        for v in &mut self.versions {
            let carried: Vec<String> = v
                .paths
                .iter()
                .filter(|p| is_within(p, from))
                .map(|p| reroot(p, from, to))
                .collect();
            v.paths.extend(carried);
        }
    }

    /// RENAME_EXCHANGE: the two entries swap places, each with what the server left beneath.
    /// SFTP cannot swap two names: ftpsync sends both ends anew, so the server's own versions
    /// stay at their paths. Where the local side now has an entry at such a path, or a file or
    /// link above it, the server's version is kept aside when the new entry is sent (its taint
    /// ends; the version must still survive, as a conflict copy).
    pub fn exchange(&mut self, a: &str, b: &str) {
        let (nodes_a, taints_a) = self.take_within(a);
        let (nodes_b, taints_b) = self.take_within(b);
        self.put_rerooted((nodes_a, Vec::new()), a, b);
        self.put_rerooted((nodes_b, Vec::new()), b, a);
        for (k, v) in taints_a.into_iter().chain(taints_b) {
            let covered = self.nodes.contains_key(&k)
                || self
                    .nodes
                    .iter()
                    .any(|(p, n)| !n.is_dir() && is_within(&k, p));
            if !covered {
                self.taints.insert(k, v);
            }
        }
    }

    fn take_within(&mut self, p: &str) -> Moved {
        let nodes = self
            .subtree(p)
            .into_iter()
            .map(|k| {
                let n = self.nodes.remove(&k).expect("listed");
                (k, n)
            })
            .collect();
        let keys: Vec<String> = self
            .taints
            .keys()
            .filter(|k| is_within(k, p))
            .cloned()
            .collect();
        let taints = keys
            .into_iter()
            .map(|k| {
                let v = self.taints.remove(&k).expect("listed");
                (k, v)
            })
            .collect();
        (nodes, taints)
    }

    fn put_rerooted(&mut self, (nodes, taints): Moved, from: &str, to: &str) {
        for (k, n) in nodes {
            self.nodes.insert(reroot(&k, from, to), n);
        }
        for (k, v) in taints {
            let new = reroot(&k, from, to);
            if let Some(i) = v {
                self.versions[i].paths.insert(new.clone());
            }
            self.taints.insert(new, v);
        }
    }

    /// What the server holds at `p` when ftpsync is idle and correct: a tainted path's own
    /// state, else the model's entry.
    pub fn expected_on_server(&self, p: &str) -> Option<ServerExpect> {
        match self.taints.get(p) {
            Some(Some(i)) => Some(match &self.versions[*i].content {
                Content::File(_) => ServerExpect::File,
                Content::Link(_) => ServerExpect::Link,
            }),
            Some(None) => None,
            None => self.get(p).map(|n| match n {
                Node::File { .. } => ServerExpect::File,
                Node::Dir { .. } => ServerExpect::Dir,
                Node::Link { .. } => ServerExpect::Link,
            }),
        }
    }

    /// Every path the server is expected to hold, model and tainted ones.
    pub fn server_paths(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.nodes.keys().cloned().collect();
        all.extend(self.taints.keys().cloned());
        all.into_iter()
            .filter(|p| self.expected_on_server(p).is_some())
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerExpect {
    File,
    Dir,
    Link,
}
