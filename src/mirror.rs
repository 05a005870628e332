//! What the remote is confirmed to hold (the manifest, persisted) and what is happening to
//! each path now (pending, uploading, failed). The sync engine writes it; the filesystem
//! reads it (the `user.ftpsync.*` attributes, the start-up scan's baseline).
//!
//! The manifest is a log of JSON lines in the state dir, replayed at start and rewritten as a
//! snapshot when it has grown well past its live size. A torn last line (a crash mid-append)
//! is ignored: the entry it described is found again by the start-up reconciliation.
//!
//! The manifest also records which remote it describes (its [`Binding`]): its word is only
//! good for that server, under that URL, with that root.

use crate::hash::{to_hex, Sha256Hash};
use crate::journal::Timestamp;
use crate::relpath::{is_within, reroot};
use crate::replay::PathMap;
use crate::statedir::MANIFEST;
use crate::statedir::{self, Access};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A file's contents and identity as hashed: what a Store record says, and what the manifest
/// keeps of a confirmed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub size: u64,
    #[serde(with = "hex::serde")]
    pub sha256: Sha256Hash,
    pub mode: u32,
    /// The local file's mtime when it was hashed (the remote keeps whole seconds of it).
    pub mtime: Timestamp,
    /// The local inode and ctime when hashed: the start-up scan's "unchanged" test.
    pub ino: u64,
    pub ctime: Timestamp,
}

/// What the remote holds at a path, as confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Confirmed {
    File(FileMeta),
    Dir {
        mode: u32,
    },
    Symlink {
        #[serde(with = "hex::serde")]
        target: Vec<u8>,
    },
}

/// The remote a manifest describes: the entries vouch for what this server holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// `sftp://user@host:port/root`, as configured.
    pub remote: String,
    /// The `SHA256:` fingerprint of the server's host key, once a connection showed it.
    #[serde(default)]
    pub host_key: Option<String>,
    /// The id in the remote root's marker file; None while no marker could be written.
    #[serde(default)]
    pub root_id: Option<String>,
    /// The remote root as the server resolved it when first seen, in hex: a root that later
    /// resolves elsewhere went through a symlink put there since.
    #[serde(default)]
    pub resolved_root: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Line {
    Put {
        #[serde(with = "hex::serde")]
        path: Vec<u8>,
        entry: Confirmed,
    },
    Del {
        #[serde(with = "hex::serde")]
        path: Vec<u8>,
    },
    Mv {
        #[serde(with = "hex::serde")]
        from: Vec<u8>,
        #[serde(with = "hex::serde")]
        to: Vec<u8>,
    },
    Applied {
        seq: u64,
    },
    /// This entry is about to be made on the remote (an upload, a mkdir, a symlink): if a
    /// crash or a lost answer comes before its Put, a remote entry carrying it is ours (and an
    /// upload's temp file is to be removed).
    Intent {
        #[serde(with = "hex::serde")]
        path: Vec<u8>,
        #[serde(deserialize_with = "intended")]
        entry: Confirmed,
    },
    /// The interrupted upload's path was dealt with otherwise (deleted, say).
    Settled {
        #[serde(with = "hex::serde")]
        path: Vec<u8>,
    },
    /// `verify --repair` found the remote wrong at this path: the entry above is not to be
    /// trusted until the path is sent again (its next Put or Del).
    Doubt {
        #[serde(with = "hex::serde")]
        path: Vec<u8>,
    },
    /// The entries describe this remote (the latest Bind line counts).
    Bind {
        binding: Binding,
    },
}

/// An intent's entry; lines written before directories and symlinks had intents hold a file's
/// bare [`FileMeta`].
fn intended<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Confirmed, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Entry(Confirmed),
        File(FileMeta),
    }
    Ok(match Form::deserialize(d)? {
        Form::Entry(c) => c,
        Form::File(f) => Confirmed::File(f),
    })
}

/// Versions of one path whose unconfirmed uploads are remembered.
const MAX_INTENTS: usize = 4;

pub struct Manifest {
    entries: PathMap<Confirmed>,
    /// Per path, the entries whose making started and was never confirmed, newest last: after
    /// a crash or a lost answer, any of them may be what the remote holds.
    intents: BTreeMap<Vec<u8>, Vec<Confirmed>>,
    /// Paths whose entries a verify found untrue on the remote.
    doubts: std::collections::HashSet<Vec<u8>>,
    /// None for a manifest written before bindings existed (or never bound).
    binding: Option<Binding>,
    applied_seq: u64,
    path: PathBuf,
    log: File,
    lines: usize,
}

impl Confirmed {
    pub fn file(&self) -> Option<&FileMeta> {
        match self {
            Confirmed::File(m) => Some(m),
            _ => None,
        }
    }
}

impl Manifest {
    pub fn open(state_dir: &Path) -> io::Result<Manifest> {
        let path = state_dir.join(MANIFEST);
        let mut m = Manifest {
            entries: PathMap::default(),
            intents: BTreeMap::new(),
            doubts: Default::default(),
            binding: None,
            applied_seq: 0,
            log: statedir::open(&path, Access::Append)?,
            path,
            lines: 0,
        };
        m.replay()?;
        Ok(m)
    }

    fn replay(&mut self) -> io::Result<()> {
        let reader = BufReader::new(statedir::open(&self.path, Access::Read)?);
        for line in reader.split(b'\n') {
            let line = line?;
            // A line that does not parse can only be a torn last append.
            if let Ok(l) = serde_json::from_slice::<Line>(&line) {
                self.apply(l);
                self.lines += 1;
            }
        }
        Ok(())
    }

    fn apply(&mut self, l: Line) {
        match l {
            Line::Put { path, entry } => {
                self.intents.remove(&path);
                self.doubts.remove(&path);
                // What stood beneath a directory that a file or symlink replaced is gone from
                // the server (removed, or kept aside with it).
                if !matches!(entry, Confirmed::Dir { .. }) {
                    drop(self.entries.take_subtree(&path));
                }
                self.entries.insert(path, entry);
            }
            Line::Del { path } => {
                self.intents.remove(&path);
                self.doubts.remove(&path);
                drop(self.entries.take_subtree(&path));
            }
            Line::Mv { from, to } => {
                self.entries.rename(&from, &to, 0);
                // An upload that landed unrecorded moved with its directory on the server: its
                // intent follows it, or the server's copy is nobody's at its new path (a local
                // delete there leaves it for ever). What was at `to` is gone from the server.
                self.intents.retain(|p, _| !is_within(p, &to));
                let intents: Vec<_> = self
                    .intents
                    .extract_if(.., |p, _| is_within(p, &from))
                    .collect();
                self.intents.extend(
                    intents
                        .into_iter()
                        .map(|(p, v)| (reroot(&p, &from, &to), v)),
                );
                self.doubts.retain(|p| !is_within(p, &to));
                let doubts: Vec<_> = self.doubts.extract_if(|p| is_within(p, &from)).collect();
                self.doubts
                    .extend(doubts.iter().map(|p| reroot(p, &from, &to)));
            }
            Line::Applied { seq } => self.applied_seq = seq,
            Line::Intent { path, entry } => {
                let versions = self.intents.entry(path).or_default();
                versions.retain(|v| *v != entry);
                versions.push(entry);
                if versions.len() > MAX_INTENTS {
                    versions.remove(0);
                }
            }
            Line::Settled { path } => {
                self.intents.remove(&path);
                self.doubts.remove(&path);
            }
            Line::Doubt { path } => drop(self.doubts.insert(path)),
            Line::Bind { binding } => self.binding = Some(binding),
        }
    }

    fn append(&mut self, l: Line) -> io::Result<()> {
        let mut text = serde_json::to_vec(&l).map_err(io::Error::other)?;
        text.push(b'\n');
        self.log.write_all(&text)?;
        self.apply(l);
        self.lines += 1;
        Ok(())
    }

    pub fn get(&self, path: &[u8]) -> Option<&Confirmed> {
        self.entries.get(path)
    }

    /// Entries at `path` and beneath it.
    pub fn subtree<'a>(
        &'a self,
        path: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Confirmed)> + 'a {
        self.entries.subtree(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Confirmed)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn put(&mut self, path: &[u8], entry: Confirmed) -> io::Result<()> {
        self.append(Line::Put {
            path: path.to_vec(),
            entry,
        })
    }

    /// Forgets `path` and everything beneath it.
    pub fn remove(&mut self, path: &[u8]) -> io::Result<()> {
        self.append(Line::Del {
            path: path.to_vec(),
        })
    }

    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> io::Result<()> {
        self.append(Line::Mv {
            from: from.to_vec(),
            to: to.to_vec(),
        })
    }

    /// Records that the making of `entry` at `path` is starting (see [`Line::Intent`]).
    pub fn intend(&mut self, path: &[u8], entry: Confirmed) -> io::Result<()> {
        self.append(Line::Intent {
            path: path.to_vec(),
            entry,
        })
    }

    /// Records, durably once synced, that the remote is not what the entry at `path` says.
    pub fn doubt(&mut self, path: &[u8]) -> io::Result<()> {
        self.append(Line::Doubt {
            path: path.to_vec(),
        })
    }

    pub fn doubted(&self, path: &[u8]) -> bool {
        self.doubts.contains(path)
    }

    /// Paths to send again whatever their entries say.
    pub fn doubts(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.doubts.iter()
    }

    /// Forgets an interrupted upload to `path`, and a doubt (Put and remove do so too).
    pub fn settle(&mut self, path: &[u8]) -> io::Result<()> {
        if !self.intents.contains_key(path) && !self.doubts.contains(path) {
            return Ok(());
        }
        self.append(Line::Settled {
            path: path.to_vec(),
        })
    }

    /// The entries whose making at `path` started but was never confirmed, newest last.
    pub fn intents_of(&self, path: &[u8]) -> &[Confirmed] {
        self.intents.get(path).map_or(&[], Vec::as_slice)
    }

    /// The same for every path strictly beneath `path`: one range of the sorted map, as a job
    /// asks for each path it works on (every intent is one after a crash).
    pub fn intents_beneath(&self, path: &[u8]) -> Vec<(Vec<u8>, Vec<Confirmed>)> {
        let prefix = if path.is_empty() {
            Vec::new()
        } else {
            [path, b"/"].concat()
        };
        self.intents
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect()
    }

    /// Paths with an entry's making started but never confirmed (a crash or a lost answer).
    pub fn intents(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.intents.keys()
    }

    /// Journal records up to `seq` are reflected here and on the remote.
    pub fn set_applied(&mut self, seq: u64) -> io::Result<()> {
        if seq > self.applied_seq {
            self.append(Line::Applied { seq })?;
        }
        Ok(())
    }

    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// The remote these entries describe.
    pub fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }

    /// Records that the entries describe `binding`'s remote (durable once synced).
    pub fn bind(&mut self, binding: Binding) -> io::Result<()> {
        if self.binding.as_ref() == Some(&binding) {
            return Ok(());
        }
        self.append(Line::Bind { binding })
    }

    /// Forgets every entry, interrupted upload and doubt, durably: nothing is vouched for any
    /// more. The binding and the applied seq stay.
    pub fn forget_all(&mut self) -> io::Result<()> {
        self.entries = PathMap::default();
        self.intents.clear();
        self.doubts.clear();
        self.rewrite()
    }

    /// Durable, and rewritten as a snapshot once the log is much longer than its contents.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.lines > 2 * self.entries.len() + 1024 {
            return self.rewrite();
        }
        self.log.sync_data()
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = io::BufWriter::new(statedir::create_temp(&tmp)?);
        let mut lines = 0;
        if let Some(binding) = &self.binding {
            let l = Line::Bind {
                binding: binding.clone(),
            };
            serde_json::to_writer(&mut out, &l).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        for (path, entry) in self.entries.iter() {
            let l = Line::Put {
                path: path.clone(),
                entry: entry.clone(),
            };
            serde_json::to_writer(&mut out, &l).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        for (path, versions) in &self.intents {
            for entry in versions {
                let l = Line::Intent {
                    path: path.clone(),
                    entry: entry.clone(),
                };
                serde_json::to_writer(&mut out, &l).map_err(io::Error::other)?;
                out.write_all(b"\n")?;
                lines += 1;
            }
        }
        for path in &self.doubts {
            let l = Line::Doubt { path: path.clone() };
            serde_json::to_writer(&mut out, &l).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            lines += 1;
        }
        serde_json::to_writer(
            &mut out,
            &Line::Applied {
                seq: self.applied_seq,
            },
        )
        .map_err(io::Error::other)?;
        out.write_all(b"\n")?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.log = statedir::open(&self.path, Access::Append)?;
        self.lines = lines + 1;
        Ok(())
    }
}

/// What is happening to a path now, for `user.ftpsync.state` and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    Pending,
    Uploading,
    Failed(String),
}

/// The files open for writing now, by inode number in the backing directory: the filesystem
/// writes it, the engine reads it. Such a file's next hash comes when its last writer closes
/// it; any other file whose hash the engine lacks is waiting for a hash already under way.
#[derive(Default)]
pub struct OpenWriters(parking_lot::Mutex<HashMap<u64, u32>>);

impl OpenWriters {
    pub fn opened(&self, ino: u64) {
        *self.0.lock().entry(ino).or_insert(0) += 1;
    }

    pub fn closed(&self, ino: u64) {
        let mut m = self.0.lock();
        if let Some(n) = m.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ino);
            }
        }
    }

    pub fn contains(&self, ino: u64) -> bool {
        self.0.lock().contains_key(&ino)
    }
}

/// The manifest and the live states, shared by the engine (writer) and the filesystem.
pub struct Mirror {
    pub manifest: Manifest,
    pub live: HashMap<Vec<u8>, Live>,
    /// Shared on its own, outside the mirror's lock: opening a file must not wait for a
    /// manifest append.
    pub writers: std::sync::Arc<OpenWriters>,
}

impl Mirror {
    pub fn open(state_dir: &Path) -> io::Result<Mirror> {
        Ok(Mirror {
            manifest: Manifest::open(state_dir)?,
            live: HashMap::new(),
            writers: std::sync::Arc::default(),
        })
    }

    /// `pending`, `uploading`, `confirmed`, `failed: reason`; None for a path never mirrored.
    pub fn state_of(&self, path: &[u8]) -> Option<String> {
        match self.live.get(path) {
            Some(Live::Pending) => Some("pending".into()),
            Some(Live::Uploading) => Some("uploading".into()),
            Some(Live::Failed(why)) => Some(format!("failed: {why}")),
            // verify --repair found the server's copy wrong: to be sent again.
            None if self.manifest.doubted(path) => Some("pending".into()),
            None => self.manifest.get(path).map(|_| "confirmed".into()),
        }
    }

    /// The confirmed SHA-256 of a file, in hex; none for one verify --repair found wrong on
    /// the server, until it is sent again.
    pub fn sha256_of(&self, path: &[u8]) -> Option<String> {
        if self.manifest.doubted(path) {
            return None;
        }
        let m = self.manifest.get(path)?.file()?;
        Some(to_hex(&m.sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u8) -> Confirmed {
        Confirmed::File(FileMeta {
            size: u64::from(n),
            sha256: [n; 32],
            mode: 0o644,
            mtime: Timestamp { sec: 5, nsec: 6 },
            ino: 9,
            ctime: Timestamp { sec: 7, nsec: 8 },
        })
    }

    #[test]
    fn a_doubted_file_is_neither_confirmed_nor_vouched_for_until_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mirror::open(dir.path()).unwrap();
        m.manifest.put(b"f", file(1)).unwrap();
        m.manifest.doubt(b"f").unwrap();
        assert_eq!(m.state_of(b"f").as_deref(), Some("pending"));
        assert_eq!(m.sha256_of(b"f"), None);
        m.manifest.put(b"f", file(2)).unwrap();
        assert_eq!(m.state_of(b"f").as_deref(), Some("confirmed"));
        assert_eq!(m.sha256_of(b"f"), Some(to_hex(&[2; 32])));
    }

    #[test]
    fn survives_reopen_with_renames_deletes_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.put(b"d", Confirmed::Dir { mode: 0o755 }).unwrap();
            m.put(b"d/a\nb", file(1)).unwrap();
            m.put(b"x\xff", file(2)).unwrap();
            m.put(
                b"l",
                Confirmed::Symlink {
                    target: b"/etc/passwd".to_vec(),
                },
            )
            .unwrap();
            m.rename(b"d", b"e").unwrap();
            m.remove(b"x\xff").unwrap();
            m.set_applied(42).unwrap();
            m.sync().unwrap();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(MANIFEST))
            .unwrap();
        f.write_all(b"{\"op\":\"put\",\"pa").unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.get(b"e/a\nb"), Some(&file(1)));
        assert_eq!(m.get(b"d/a\nb"), None);
        assert_eq!(m.get(b"x\xff"), None);
        assert_eq!(m.applied_seq(), 42);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn a_file_or_symlink_put_where_a_directory_was_forgets_what_was_beneath() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.put(b"d", Confirmed::Dir { mode: 0o755 }).unwrap();
            m.put(b"d/x", file(1)).unwrap();
            m.put(b"d", Confirmed::Dir { mode: 0o700 }).unwrap();
            assert!(
                m.get(b"d/x").is_some(),
                "a directory's new mode keeps its entries"
            );
            let link = Confirmed::Symlink {
                target: b"elsewhere".to_vec(),
            };
            m.put(b"d", link).unwrap();
            assert!(m.get(b"d/x").is_none());
        }
        let m = Manifest::open(dir.path()).unwrap();
        assert!(m.get(b"d/x").is_none(), "and so after a reopen");
        assert!(m.get(b"d").is_some());
    }

    #[test]
    fn rewrite_keeps_exactly_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manifest::open(dir.path()).unwrap();
        for i in 0..3000u32 {
            m.put(format!("f{}", i % 10).as_bytes(), file((i % 200) as u8))
                .unwrap();
        }
        m.set_applied(7).unwrap();
        m.sync().unwrap();
        let lines = std::fs::read_to_string(dir.path().join(MANIFEST))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 11, "10 entries and the applied seq");
        let again = Manifest::open(dir.path()).unwrap();
        assert_eq!(again.len(), 10);
        assert_eq!(again.applied_seq(), 7);
        assert_eq!(again.get(b"f3"), m.get(b"f3"));
    }

    #[test]
    fn intents_and_doubts_move_with_a_rename_and_go_with_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let meta = file;
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.intend(b"b/e", meta(1)).unwrap();
            m.intend(b"bb", meta(2)).unwrap();
            m.intend(b"e/x", meta(3)).unwrap();
            m.doubt(b"b/d").unwrap();
            m.rename(b"b", b"e").unwrap();
            m.sync().unwrap();
        }
        {
            let m = Manifest::open(dir.path()).unwrap();
            assert_eq!(m.intents_of(b"e/e"), &[meta(1)]);
            assert_eq!(m.intents_of(b"bb"), &[meta(2)], "a name beside is no child");
            assert!(m.intents_of(b"b/e").is_empty() && m.intents_of(b"e/x").is_empty());
            assert!(m.doubted(b"e/d") && !m.doubted(b"b/d"));
            assert_eq!(m.intents_beneath(b"e"), [(b"e/e".to_vec(), vec![meta(1)])]);
            assert!(
                m.intents_beneath(b"e/e").is_empty(),
                "its own is not beneath it"
            );
            assert!(m.intents_beneath(b"b").is_empty(), "bb is no child of b");
            let all: Vec<Vec<u8>> = m.intents_beneath(b"").into_iter().map(|(p, _)| p).collect();
            assert_eq!(all, [b"bb".to_vec(), b"e/e".to_vec()], "beneath the root");
        }
    }

    #[test]
    fn intents_survive_reopen_and_rewrite_until_put_or_settled() {
        let dir = tempfile::tempdir().unwrap();
        let meta = file;
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.intend(b"a", meta(1)).unwrap();
            m.intend(b"b", meta(2)).unwrap();
            for n in 10..20 {
                m.intend(b"many", meta(n)).unwrap();
            }
            m.intend(b"c", meta(3)).unwrap();
            m.put(b"b", file(2)).unwrap();
            m.settle(b"c").unwrap();
            m.rewrite().unwrap();
        }
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.intents_of(b"a"), &[meta(1)]);
        assert_eq!(m.intents().count(), 2, "put and settle clear their intents");
        let kept = m.intents_of(b"many");
        assert_eq!(
            kept.len(),
            MAX_INTENTS,
            "a bounded number of versions is kept"
        );
        assert_eq!(kept.last(), Some(&meta(19)), "newest last");
    }

    #[test]
    fn intents_of_every_kind_survive_rewrite_and_old_bare_file_intents_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let link = Confirmed::Symlink {
            target: b"t".to_vec(),
        };
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.intend(b"d", Confirmed::Dir { mode: 0o750 }).unwrap();
            m.intend(b"l", link.clone()).unwrap();
            m.rewrite().unwrap();
        }
        // As builds before directory and symlink intents wrote a file's.
        let old = serde_json::json!({"op": "intent", "path": hex::encode("f"),
            "entry": serde_json::to_value(*file(1).file().unwrap()).unwrap()});
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(MANIFEST))
            .unwrap();
        writeln!(log, "{old}").unwrap();
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.intents_of(b"d"), &[Confirmed::Dir { mode: 0o750 }]);
        assert_eq!(m.intents_of(b"l"), &[link]);
        assert_eq!(m.intents_of(b"f"), &[file(1)]);
    }

    #[test]
    fn doubts_survive_reopen_and_rewrite_until_the_path_is_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            m.put(b"a", file(1)).unwrap();
            m.put(b"b", file(2)).unwrap();
            m.doubt(b"a").unwrap();
            m.doubt(b"b").unwrap();
            m.put(b"b", file(3)).unwrap();
            m.rewrite().unwrap();
        }
        let m = Manifest::open(dir.path()).unwrap();
        assert!(m.doubted(b"a"), "a doubt lost over a reopen and rewrite");
        assert!(!m.doubted(b"b"), "a Put clears the doubt");
        assert_eq!(m.get(b"a"), Some(&file(1)), "the entry itself stays");
    }

    #[test]
    fn the_binding_survives_reopen_and_rewrite_and_forgetting_keeps_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let bound = Binding {
            remote: "sftp://u@h:22/srv/a".into(),
            host_key: Some("SHA256:abc".into()),
            root_id: Some("0123".into()),
            resolved_root: Some(hex::encode("/srv/a")),
        };
        {
            let mut m = Manifest::open(dir.path()).unwrap();
            assert_eq!(m.binding(), None);
            m.bind(bound.clone()).unwrap();
            m.put(b"a", file(1)).unwrap();
            m.intend(b"b", file(2)).unwrap();
            m.doubt(b"a").unwrap();
            m.set_applied(9).unwrap();
            m.rewrite().unwrap();
        }
        let mut m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.binding(), Some(&bound));
        assert_eq!(m.len(), 1);
        m.forget_all().unwrap();
        for m in [m, Manifest::open(dir.path()).unwrap()] {
            assert!(m.is_empty());
            assert_eq!(m.intents().count() + m.doubts().count(), 0);
            assert_eq!(m.binding(), Some(&bound));
            assert_eq!(m.applied_seq(), 9);
        }
    }

    #[test]
    fn live_state_wins_over_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let mut mirror = Mirror::open(dir.path()).unwrap();
        mirror.manifest.put(b"a", file(1)).unwrap();
        assert_eq!(mirror.state_of(b"a").as_deref(), Some("confirmed"));
        assert_eq!(mirror.sha256_of(b"a"), Some(to_hex(&[1; 32])));
        mirror
            .live
            .insert(b"a".to_vec(), Live::Failed("disk full".into()));
        assert_eq!(mirror.state_of(b"a").as_deref(), Some("failed: disk full"));
        assert_eq!(mirror.state_of(b"b"), None);
    }
}
