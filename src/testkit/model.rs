//! Model-based test of the engine over the mock server (issue 12): the twin of tests/model.rs
//! without a kernel, an sshd or a daemon process, so it runs thousands of operations a minute.
//!
//! Random operations go through the fs layer (create, overwrite, append, pwrite, truncate,
//! mkdir, rmdir, rm -r, unlink, chmod, symlink, rename of files and trees to new names, into a
//! directory made a moment before and over existing names, RENAME_EXCHANGE), interleaved with edits made on the
//! mock server behind the engine's back (modify, delete, file to symlink and back, retarget,
//! create where the local side may write later), transient failures injected into the
//! connections (a cut upload leaves a temp file), and engine restarts on the same journal and
//! manifest. After every flush, which must succeed:
//! - the backing directory equals the model (what the fs layer did is what the model says);
//! - the server equals the model, except where the server made its own version (or deleted
//!   the entry) and the local side has not touched that path since: the engine leaves those
//!   alone. The model of the local tree and of these "taints" is tests/model/tree.rs, shared
//!   with the mount test;
//! - every server version survives, at its path or in a `.ftpsync-conflict-` copy, unless the
//!   server itself destroyed it later;
//! - no temporary upload name is left.
//!
//! Server edits are made only right after a flush, while the engine is idle (SFTP has no
//! compare-and-swap: an edit racing the engine's check-then-rename is no fault of the engine),
//! and an edit of a file always changes its size, as in tests/model.rs.
//!
//! The manifest is checked too: it vouches only for what the server holds as it says (but
//! where the server made a version of its own: there it is stale until the local side acts).
//!
//! Seeds: src/testkit/model-regressions.txt is replayed first, then new random seeds until
//! MOCK_MODEL_SECONDS (default 20) have passed; MOCK_MODEL_SEED=N runs that seed alone. A
//! failure names its seed, the line to add to the regressions file, and the last operations;
//! the whole trace and the server's operations are kept in $TMPDIR/mock-model-SEED.trace.
//! MOCK_MODEL_EDITS=0, MOCK_MODEL_FAULTS=0, MOCK_MODEL_RESTARTS=0, MOCK_MODEL_EXCHANGE=0, MOCK_MODEL_LAG=0 switch parts of the mix off;
//! RUST_LOG=ftpsync=debug shows the engine's log.
//!
//! A restart stops the engine with nothing in flight but records it never took in (it is
//! deaf to the journal for a few operations first): the next one replays them from the
//! journal. MOCK_MODEL_CRASHES=1 stops it with work in
//! flight instead, as a kill does: what that work did on the server is never taken in. That
//! mix still finds losses (see the issue 12 report: an upload that landed unrecorded, then
//! moved with its directory), so it is not the default.

#[allow(dead_code)]
#[path = "../../tests/model/tree.rs"]
mod tree;

/// What tests/model/tree.rs expects of its neighbours.
mod common {
    pub fn sha256_hex(data: &[u8]) -> String {
        hex::encode(crate::testkit::sha256(data))
    }
}

use super::faults::{Op, Rule};
use super::{Harness, Setup};
use crate::remote::path::{is_conflict_name, is_temp_name};
use crate::remote::{ErrorKind, MockNode, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tree::{depth, is_within, join, parent, Content, Node, Tree, Version};

const REGRESSIONS: &str = include_str!("model-regressions.txt");
const OPS_PER_EPISODE: usize = 150;
const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const FLUSH_PATIENCE: Duration = Duration::from_secs(30);

/// xorshift64*, seeded: the same operations everywhere for one seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len())].clone())
    }

    fn bytes(&mut self, tag: usize) -> Vec<u8> {
        let len = match self.below(10) {
            0 => 0,
            1 => 40_000 + self.below(30_000),
            _ => 1 + self.below(3000),
        };
        let fill = format!("<{tag}>");
        fill.bytes().cycle().take(len).collect()
    }
}

/// One episode: a harness, the model of its local tree and server versions, and the trace.
struct Episode {
    h: Harness,
    t: Tree,
    rng: Rng,
    trace: Vec<String>,
    step: usize,
    /// The engine is idle (a flush just succeeded): the server may be edited.
    idle: bool,
    /// Steps left until the engine, deaf to the journal meanwhile, is restarted.
    restart_in: usize,
}

impl Episode {
    fn new(seed: u64) -> Episode {
        let mut rng = Rng::new(seed);
        let setup = Setup {
            connections: 1 + rng.below(3),
            writeback_delay: Duration::from_millis([0, 2, 20, 20][rng.below(4)]),
        };
        Episode {
            h: Harness::with(setup),
            t: Tree::new(0o755),
            rng,
            trace: vec![format!("{setup:?}")],
            step: 0,
            idle: false,
            restart_in: 0,
        }
    }

    fn dirs(&self) -> Vec<String> {
        let mut d = self.t.paths_where(|_, n| n.is_dir());
        d.push(String::new());
        d
    }

    /// A path nothing stands at, in an existing directory not too deep.
    fn new_path(&mut self) -> Option<String> {
        let dirs: Vec<String> = self.dirs().into_iter().filter(|d| depth(d) < 3).collect();
        for _ in 0..8 {
            let p = join(&self.rng.pick(&dirs)?, self.rng.pick(&NAMES)?);
            if self.t.get(&p).is_none() {
                return Some(p);
            }
        }
        None
    }

    fn any_where(&mut self, pred: impl Fn(&str, &Node) -> bool) -> Option<String> {
        let paths = self.t.paths_where(pred);
        self.rng.pick(&paths)
    }

    /// One random step; returns what it did (None: nothing fitted).
    fn step(&mut self) -> Result<Option<String>, String> {
        self.step += 1;
        let was_idle = std::mem::replace(&mut self.idle, false);
        if self.restart_in > 0 {
            self.restart_in -= 1;
            if self.restart_in == 0 {
                self.h.restart();
                return Ok(Some("restart".into()));
            }
        }
        let fs = |what: String, r: crate::fs::R<()>| {
            r.map(|()| Some(what.clone()))
                .map_err(|e| format!("{what}: {e:?}"))
        };
        let tag = self.step;
        // Server edits come in bursts, while the engine is idle after a flush.
        if was_idle && self.rng.chance(35) && knob("MOCK_MODEL_EDITS") {
            return self.server_edit(tag);
        }
        // The engine lags behind the filesystem for a while: records are held back, then let
        // through a few at a time.
        if knob("MOCK_MODEL_LAG") && self.rng.chance(6) {
            if !self.h.feed_held() {
                self.h.hold_feed();
                return Ok(Some("hold the feed".into()));
            }
            let n = 1 + self.rng.below(4);
            self.h.release_feed(Some(n));
            return Ok(Some(format!("release {n} records")));
        }
        match self.rng.below(100) {
            0..=13 => {
                let Some(p) = self.new_path() else {
                    return Ok(None);
                };
                let data = self.rng.bytes(tag);
                let r = self.h.write_file(&p, &data);
                self.t.set(&p, file(data.clone(), 0o644));
                fs(format!("create {p} ({} bytes)", data.len()), r)
            }
            14..=21 => {
                let Some(p) = self.any_where(|_, n| matches!(n, Node::File { .. })) else {
                    return Ok(None);
                };
                let data = self.rng.bytes(tag);
                let r = self.h.write_file(&p, &data);
                *self.t.file_mut(&p) = data.clone();
                fs(format!("overwrite {p} ({} bytes)", data.len()), r)
            }
            22..=29 => {
                let Some(p) = self.any_where(|_, n| matches!(n, Node::File { .. })) else {
                    return Ok(None);
                };
                let data = self.rng.bytes(tag);
                let r = if self.rng.chance(50) {
                    self.t.file_mut(&p).extend_from_slice(&data);
                    self.h.append(&p, &data)
                } else {
                    let f = self.t.file_mut(&p);
                    let at = f.len() / 2;
                    let end = (at + data.len()).max(f.len());
                    f.resize(end, 0);
                    f[at..at + data.len()].copy_from_slice(&data);
                    self.h.pwrite(&p, at as u64, &data)
                };
                fs(format!("write into {p} ({} bytes)", data.len()), r)
            }
            30..=34 => {
                let Some(p) = self.any_where(|_, n| matches!(n, Node::File { .. })) else {
                    return Ok(None);
                };
                let f = self.t.file_mut(&p);
                let size = [0, f.len() / 3, f.len() + 100][self.rng.below(3)];
                f.resize(size, 0);
                fs(
                    format!("truncate {p} to {size}"),
                    self.h.truncate(&p, size as u64),
                )
            }
            35..=44 => {
                let Some(p) = self.new_path() else {
                    return Ok(None);
                };
                let mode = [0o755, 0o700, 0o750][self.rng.below(3)];
                self.t.set(&p, Node::Dir { mode });
                fs(format!("mkdir {p} {mode:o}"), self.h.mkdir(&p, mode))
            }
            45..=48 => {
                let empty: Vec<String> = self
                    .t
                    .paths_where(|_, n| n.is_dir())
                    .into_iter()
                    .filter(|d| self.t.children(d).is_empty())
                    .collect();
                let Some(p) = self.rng.pick(&empty) else {
                    return Ok(None);
                };
                self.t.remove(&p);
                fs(format!("rmdir {p}"), self.h.rmdir(&p))
            }
            49..=51 => {
                let Some(p) = self.any_where(|_, n| n.is_dir()) else {
                    return Ok(None);
                };
                fs(format!("rm -r {p}"), self.remove_tree(&p))
            }
            52..=58 => {
                let Some(p) = self.any_where(|_, n| !n.is_dir()) else {
                    return Ok(None);
                };
                self.t.remove(&p);
                fs(format!("unlink {p}"), self.h.unlink(&p))
            }
            59..=64 => {
                let Some(p) = self.any_where(|_, n| !matches!(n, Node::Link { .. })) else {
                    return Ok(None);
                };
                let mode = if self.t.is_dir(&p) {
                    [0o755, 0o700, 0o711][self.rng.below(3)]
                } else {
                    [0o644, 0o600, 0o755, 0o640][self.rng.below(4)]
                };
                self.t.set_mode(&p, mode);
                fs(format!("chmod {mode:o} {p}"), self.h.chmod(&p, mode))
            }
            65..=69 => {
                let Some(p) = self.new_path() else {
                    return Ok(None);
                };
                let target = match self.rng.pick(&NAMES) {
                    Some(n) if self.rng.chance(50) => n.to_string(),
                    _ => format!("dangling-{tag}"),
                };
                self.t.set(
                    &p,
                    Node::Link {
                        target: target.clone(),
                    },
                );
                fs(
                    format!("symlink {p} -> {target}"),
                    self.h.symlink(&p, &target),
                )
            }
            70..=72 if knob("MOCK_MODEL_EXCHANGE") => self.exchange(),
            70..=82 => self.rename(false),
            83..=86 => self.rename(true),
            87..=94 if self.restart_in == 0 => self.flush(),
            87..=94 => Ok(None),
            95..=97 if self.rng.chance(15) && knob("MOCK_MODEL_FAULTS") => {
                let rule = Rule::fail(ErrorKind::Transient);
                let rule = if self.rng.chance(50) {
                    rule.on(Op::Upload).nth(1 + self.rng.below(3))
                } else {
                    rule.nth(1 + self.rng.below(30))
                };
                self.h.faults.add(rule.clone());
                Ok(Some(format!("fault {rule:?}")))
            }
            95..=97 => Ok(None),
            _ if self.restart_in == 0 && self.rng.chance(50) && knob("MOCK_MODEL_RESTARTS") => {
                if env_u64("MOCK_MODEL_CRASHES").is_some_and(|v| v != 0) {
                    // Stopped with work in flight: what it did on the server is not taken in.
                    self.h.restart();
                    return Ok(Some("crash".into()));
                }
                // Stopped with nothing in flight, but records it never took in: a few more
                // operations are journaled while the engine hears of none, then a new engine
                // replays them from the journal.
                self.flush()?;
                self.h.hold_feed();
                self.restart_in = 1 + self.rng.below(5);
                Ok(Some("flush; engine deaf until the restart".into()))
            }
            _ => Ok(None),
        }
    }

    /// A rename the model allows, to a new name or over an existing one; `new_parent`: into a
    /// directory made just before.
    fn rename(&mut self, new_parent: bool) -> Result<Option<String>, String> {
        let Some(from) = self.any_where(|_, _| true) else {
            return Ok(None);
        };
        let mut made = String::new();
        if new_parent {
            let Some(d) = self.new_path().filter(|d| !is_within(d, &from)) else {
                return Ok(None);
            };
            self.h
                .mkdir(&d, 0o755)
                .map_err(|e| format!("mkdir {d}: {e:?}"))?;
            self.t.set(&d, Node::Dir { mode: 0o755 });
            made = format!("mkdir {d}; ");
        }
        let mut all: Vec<String> = self.t.nodes.keys().cloned().collect();
        all.push(String::new());
        let candidates: Vec<String> = self
            .dirs()
            .into_iter()
            .filter(|d| depth(d) < 3 && (!new_parent || made.contains(&format!(" {d};"))))
            .flat_map(|d| NAMES.iter().map(move |n| join(&d, n)))
            .filter(|to| self.t.can_rename(&from, to))
            .collect();
        let Some(to) = self.rng.pick(&candidates) else {
            return Ok((!made.is_empty()).then(|| made.trim_end_matches("; ").to_string()));
        };
        let over = self.t.get(&to).is_some();
        let what = format!(
            "{made}rename {from} -> {to}{}",
            if over { " (over)" } else { "" }
        );
        let r = self.h.rename(&from, &to);
        self.t.rename(&from, &to);
        r.map(|()| Some(what.clone()))
            .map_err(|e| format!("{what}: {e:?}"))
    }

    /// RENAME_EXCHANGE of two entries, neither within the other.
    fn exchange(&mut self) -> Result<Option<String>, String> {
        let Some(a) = self.any_where(|_, _| true) else {
            return Ok(None);
        };
        let Some(b) = self.any_where(|p, _| p != a) else {
            return Ok(None);
        };
        if !self.t.can_exchange(&a, &b) {
            return Ok(None);
        }
        let what = format!("exchange {a} <-> {b}");
        let r = self.h.exchange(&a, &b);
        self.t.exchange(&a, &b);
        r.map(|()| Some(what.clone()))
            .map_err(|e| format!("{what}: {e:?}"))
    }

    fn remove_tree(&mut self, p: &str) -> crate::fs::R<()> {
        let mut paths = self.t.subtree(p);
        paths.sort_by_key(|k| std::cmp::Reverse(depth(k)));
        for k in paths {
            if self.t.is_dir(&k) {
                self.h.rmdir(&k)?;
            } else {
                self.h.unlink(&k)?;
            }
            self.t.remove(&k);
        }
        Ok(())
    }

    /// A flush that must succeed, then the checks.
    fn flush(&mut self) -> Result<Option<String>, String> {
        self.h.release_feed(None);
        self.h
            .flush(FLUSH_PATIENCE)
            .map_err(|e| format!("flush failed: {e}"))?;
        let problems = self.check();
        if !problems.is_empty() {
            return Err(format!(
                "after a flush:\n  {}\nserver: {}",
                problems.join("\n  "),
                describe_server(&self.h)
            ));
        }
        self.idle = true;
        Ok(Some("flush".into()))
    }

    /// Edits the mock server behind the engine's back and records the new version as owed.
    fn server_edit(&mut self, tag: usize) -> Result<Option<String>, String> {
        let server = self.server_entries();
        let of_kind = |want: fn(&MockNode) -> bool| -> Vec<String> {
            server
                .iter()
                .filter(|(p, n)| {
                    want(n)
                        && !is_conflict_copy(p)
                        && !crate::remote::marker::is_marker(p.as_bytes())
                })
                .map(|(p, _)| p.clone())
                .collect()
        };
        let files = of_kind(|n| matches!(n, MockNode::File { .. }));
        let links = of_kind(|n| matches!(n, MockNode::Symlink { .. }));
        let kind = self.rng.below(6);
        let path = match kind {
            0 | 1 => self.rng.pick(&files),
            // Only what the model holds, as the real-mount model does: a server version ftpsync
            // kept in directories the local side removed would leave them empty, and no one
            // (ftpsync included) can tell those are owed to no one now.
            2 => {
                let ours: Vec<String> = [files.clone(), links.clone()]
                    .concat()
                    .into_iter()
                    .filter(|p| self.t.nodes.contains_key(p))
                    .collect();
                self.rng.pick(&ours)
            }
            3..=4 => self.rng.pick(&links),
            _ => self.new_path().filter(|p| {
                !server.contains_key(p)
                    && (parent(p).is_empty()
                        || matches!(server.get(parent(p)), Some(MockNode::Dir { .. })))
            }),
        };
        let Some(path) = path else {
            return Ok(None);
        };
        let old = server.get(&path);
        if let Some(here) = old.and_then(content_of) {
            for v in self.t.versions.iter_mut().filter(|v| v.content == here) {
                v.alive = false;
            }
        }
        let old_size = match old {
            Some(MockNode::File { data, .. }) => Some(data.len()),
            _ => None,
        };
        let mut bytes = format!("server version {tag}\n").into_bytes();
        if old_size == Some(bytes.len()) {
            bytes.push(b'+');
        }
        let (what, content) = match kind {
            0 => ("modify", Some(Content::File(bytes))),
            1 => (
                "file to link",
                Some(Content::Link(format!("srvlink-{tag}"))),
            ),
            2 => ("delete", None),
            3 => ("retarget", Some(Content::Link(format!("srvlink-{tag}")))),
            4 => ("link to file", Some(Content::File(bytes))),
            _ => ("create", Some(Content::File(bytes))),
        };
        let mut s = self.h.server.clone();
        match &content {
            None => s
                .remove_file(path.as_bytes())
                .map_err(|e| format!("server delete {path}: {e}"))?,
            Some(Content::File(data)) => self.h.server.insert(
                path.as_bytes(),
                MockNode::File {
                    data: data.clone(),
                    mode: 0o644,
                    atime: 0,
                    mtime: 1_000 + tag as i64,
                },
            ),
            Some(Content::Link(target)) => self.h.server.insert(
                path.as_bytes(),
                MockNode::Symlink {
                    target: target.as_bytes().to_vec(),
                },
            ),
        }
        let index = content.map(|content| {
            self.t.versions.push(Version {
                content,
                alive: true,
                paths: BTreeSet::from([path.clone()]),
                made_at: self.step,
            });
            self.t.versions.len() - 1
        });
        self.t.taints.insert(path.clone(), index);
        self.idle = true;
        Ok(Some(format!("server {what} {path}")))
    }

    fn server_entries(&self) -> BTreeMap<String, MockNode> {
        self.h
            .server_tree()
            .into_iter()
            .map(|(p, n)| (String::from_utf8_lossy(&p).into_owned(), n))
            .collect()
    }

    /// What must hold after a flush (see the header).
    fn check(&self) -> Vec<String> {
        let found = self.server_entries();
        let t = &self.t;
        let mut out: Vec<String> = found
            .keys()
            .filter(|p| p.split('/').any(|c| is_temp_name(c.as_bytes())))
            .map(|p| format!("server {p}: temporary upload left behind"))
            .collect();
        for (p, n) in &t.nodes {
            let f = found.get(p);
            let left_alone = match t.taints.get(p) {
                Some(Some(i)) => f.and_then(content_of).as_ref() == Some(&t.versions[*i].content),
                Some(None) => f.is_none(),
                None => false,
            };
            if !same(n, f) && !left_alone {
                out.push(format!(
                    "server {p}: model {}, server {}",
                    n.describe(),
                    f.map_or_else(|| "nothing".into(), describe)
                ));
            }
        }
        let mut accepted: BTreeSet<&str> = BTreeSet::new();
        let mut extra_dirs = Vec::new();
        for (p, f) in &found {
            let theirs = t
                .versions
                .iter()
                .any(|v| v.paths.contains(p) && content_of(f).as_ref() == Some(&v.content));
            if t.nodes.contains_key(p)
                || is_conflict_copy(p)
                || crate::remote::marker::is_marker(p.as_bytes())
                || theirs
                || is_temp_name(p.as_bytes())
            {
                accepted.insert(p);
            } else if matches!(f, MockNode::Dir { .. }) {
                extra_dirs.push(p.as_str());
            } else {
                out.push(format!("server {p}: only on the server ({})", describe(f)));
            }
        }
        for d in extra_dirs {
            if !accepted.iter().any(|a| *a != d && is_within(a, d)) {
                out.push(format!("server {d}: directory only on the server"));
            }
        }
        for v in t.versions.iter().filter(|v| v.alive) {
            if !found
                .values()
                .any(|f| content_of(f).as_ref() == Some(&v.content))
            {
                out.push(format!(
                    "server version lost: {} made at step {} at {:?}",
                    v.content.describe(),
                    v.made_at,
                    v.paths
                ));
            }
        }
        out.extend(self.check_local());
        out.extend(self.check_manifest(&found));
        out
    }

    /// The manifest vouches only for what the server holds as it says.
    fn check_manifest(&self, found: &BTreeMap<String, MockNode>) -> Vec<String> {
        use crate::mirror::Confirmed;
        let mut out = Vec::new();
        // Where the server made its own version, the manifest is stale until the local side
        // touches the path again (the engine leaves the server's version alone till then).
        let edited = |p: &str| {
            self.t.taints.keys().any(|k| is_within(p, k))
                || self
                    .t
                    .versions
                    .iter()
                    .any(|v| v.paths.iter().any(|k| is_within(p, k)))
        };
        for (p, c) in self.h.manifest() {
            let p = String::from_utf8_lossy(&p).into_owned();
            if edited(&p) {
                continue;
            }
            let holds = match (&c, found.get(&p)) {
                (Confirmed::Dir { mode }, Some(MockNode::Dir { mode: m, .. })) => mode == m,
                (Confirmed::File(f), Some(MockNode::File { data, .. })) => {
                    f.sha256 == crate::testkit::sha256(data)
                }
                (Confirmed::Symlink { target }, Some(MockNode::Symlink { target: t })) => {
                    target == t
                }
                _ => false,
            };
            if !holds {
                out.push(format!(
                    "manifest {p}: says {c:?}, server {}",
                    found.get(&p).map_or_else(|| "nothing".into(), describe)
                ));
            }
        }
        out
    }

    /// The backing directory against the model: what the fs layer did is what the model did.
    fn check_local(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(self.h.local_path(&dir)) else {
                out.push(format!("local {dir}: cannot list"));
                continue;
            };
            for e in rd.flatten() {
                let p = join(&dir, &e.file_name().to_string_lossy());
                let full = e.path();
                let Ok(md) = std::fs::symlink_metadata(&full) else {
                    continue;
                };
                use std::os::unix::fs::PermissionsExt;
                let mode = md.permissions().mode() & 0o7777;
                let node = if md.file_type().is_symlink() {
                    let target = std::fs::read_link(&full).unwrap_or_default();
                    Node::Link {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else if md.is_dir() {
                    stack.push(p.clone());
                    Node::Dir { mode }
                } else {
                    file(std::fs::read(&full).unwrap_or_default(), mode)
                };
                if self.t.get(&p) != Some(&node) {
                    out.push(format!(
                        "local {p}: model {:?}, backing dir {}",
                        self.t.get(&p).map(Node::describe),
                        node.describe()
                    ));
                }
                seen.insert(p);
            }
        }
        for p in self.t.nodes.keys().filter(|p| !seen.contains(*p)) {
            out.push(format!("local {p}: in the model, not in the backing dir"));
        }
        out
    }
}

fn file(data: Vec<u8>, mode: u32) -> Node {
    Node::File { data, mode }
}

fn is_conflict_copy(p: &str) -> bool {
    p.split('/').any(|c| is_conflict_name(c.as_bytes()))
}

/// The content a server edit could have left: a file's bytes or a symlink's target.
fn content_of(n: &MockNode) -> Option<Content> {
    match n {
        MockNode::File { data, .. } => Some(Content::File(data.clone())),
        MockNode::Symlink { target } => {
            Some(Content::Link(String::from_utf8_lossy(target).into_owned()))
        }
        MockNode::Dir { .. } => None,
    }
}

fn same(n: &Node, f: Option<&MockNode>) -> bool {
    match (n, f) {
        (
            Node::File { data, mode },
            Some(MockNode::File {
                data: d, mode: m, ..
            }),
        ) => data == d && mode == m,
        (Node::Dir { mode }, Some(MockNode::Dir { mode: m, .. })) => mode == m,
        (Node::Link { target }, Some(MockNode::Symlink { target: t })) => {
            target.as_bytes() == t.as_slice()
        }
        _ => false,
    }
}

fn describe(n: &MockNode) -> String {
    match n {
        MockNode::File { data, mode, .. } => {
            format!("file {mode:o} {}", tree::describe_bytes(data))
        }
        MockNode::Dir { mode, .. } => format!("dir {mode:o}"),
        MockNode::Symlink { target } => format!("-> {}", String::from_utf8_lossy(target)),
    }
}

fn describe_server(h: &Harness) -> String {
    let entries: Vec<String> = h
        .server_tree()
        .iter()
        .map(|(p, n)| format!("\n  {}: {}", crate::relpath::show(p), describe(n)))
        .collect();
    entries.concat()
}

/// Runs one seed; Err says what diverged, with the trace.
fn episode(seed: u64) -> Result<usize, String> {
    let mut e = Episode::new(seed);
    let mut done = 0;
    let mut result = Ok(());
    while done < OPS_PER_EPISODE {
        let r = e.step();
        match r {
            Ok(Some(what)) => {
                e.trace.push(what);
                done += 1;
            }
            Ok(None) => {}
            Err(why) => {
                result = Err(why);
                break;
            }
        }
    }
    // The last word is a flush, without faults left to fire (and an engine that hears).
    let result = result.and_then(|()| {
        e.h.faults.clear();
        if e.restart_in > 0 {
            e.h.restart();
        }
        e.flush().map(drop)
    });
    result.map(|()| done).map_err(|why| {
        let kept = std::env::temp_dir().join(format!("mock-model-{seed}.trace"));
        let ops: Vec<String> = e.h.server.ops().iter().map(|o| format!("{o:?}")).collect();
        let _ = std::fs::write(
            &kept,
            format!(
                "{why}\n\n{}\n\nserver operations:\n{}\n",
                e.trace.join("\n"),
                ops.join("\n")
            ),
        );
        let tail = e.trace.len().saturating_sub(40);
        format!(
            "{why}\nlast operations (all in {}):\n  {}",
            kept.display(),
            e.trace[tail..].join("\n  ")
        )
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// A part of the mix, on unless its variable says 0.
fn knob(name: &str) -> bool {
    env_u64(name) != Some(0)
}

fn regressions() -> Vec<u64> {
    REGRESSIONS
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().expect("a seed per line in model-regressions.txt"))
        .collect()
}

#[test]
fn the_mock_server_equals_the_model_after_every_flush() {
    let _ = env_logger::builder().is_test(true).try_init();
    let (seeds, budget): (Vec<u64>, Duration) = match env_u64("MOCK_MODEL_SEED") {
        Some(seed) => (vec![seed], Duration::ZERO),
        None => (
            regressions(),
            Duration::from_secs(env_u64("MOCK_MODEL_SECONDS").unwrap_or(20)),
        ),
    };
    let began = Instant::now();
    let mut fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_000);
    let mut queue = seeds.into_iter();
    let (mut episodes, mut ops) = (0, 0);
    loop {
        let seed = match queue.next() {
            Some(s) => s,
            None if began.elapsed() < budget => {
                fresh += 1;
                fresh
            }
            None => break,
        };
        match episode(seed) {
            Ok(n) => {
                episodes += 1;
                ops += n;
            }
            Err(why) => panic!(
                "mock model: seed {seed} failed: {why}\n\
                 rerun: MOCK_MODEL_SEED={seed} cargo test --lib the_mock_server_equals\n\
                 keep it: add the line `{seed}` to src/testkit/model-regressions.txt"
            ),
        }
    }
    let secs = began.elapsed().as_secs_f64().max(0.001);
    eprintln!(
        "MOCK-MODEL {episodes} episodes, {ops} operations in {secs:.1} s ({:.0} ops/min)",
        ops as f64 * 60.0 / secs
    );
    assert!(episodes > 0, "no episode ran");
}
