//! `ftpsync verify`: a full audit of the remote against the local tree. Every entry is compared
//! by kind, size, mode, mtime (whole seconds: what SFTP carries) and symlink target, and every
//! file of equal size by SHA-256 on both sides (the remote one by a hash command over exec when
//! the server allows it, by reading it back otherwise), over parallel connections.
//! `--repair` removes what is wrong on the remote and has the daemon send the local version.

use crate::audit::Audit;
use crate::config::MountConfig;
use crate::control::{self, Request as Ctl};
use crate::hash::hash_file;
use crate::local::{self, borrow};
use crate::progress::{human_bytes, Progress};
use crate::relpath::is_within;
use crate::relpath::{child_path, show};
use crate::remote::marker;
use crate::remote::path::is_conflict_name;
use crate::remote::{ConnectOptions, FileKind, SecretSource, Transport};
use crate::report::{with_paths, PathName};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Request {
    pub state_dir: PathBuf,
    pub json: bool,
    pub repair: bool,
    pub connections: usize,
}

/// One side's view of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: FileKind,
    size: u64,
    mode: u32,
    mtime: i64,
    target: Option<Vec<u8>>,
}

/// A tree by relative path.
type Tree = BTreeMap<Vec<u8>, Entry>;

/// What is wrong at a path.
#[derive(Debug)]
enum Problem {
    /// Local only.
    Missing,
    /// Remote only.
    Extra,
    /// On both, differing in what the list says.
    Differs(Vec<String>),
}

#[derive(Default)]
struct Findings {
    problems: BTreeMap<Vec<u8>, Problem>,
    /// Copies ftpsync kept aside when a remote file changed behind its back: reported, not
    /// counted as a difference.
    kept: Vec<Vec<u8>>,
    files: u64,
    bytes: u64,
}

/// Runs the audit; Ok(true) when the remote equals the local tree.
pub fn run(req: &Request) -> Result<bool> {
    let cfg = MountConfig::recorded(&req.state_dir).with_context(|| {
        format!(
            "no mount record in {} (verify needs a mirror mounted at least once)",
            req.state_dir.display()
        )
    })?;
    // The daemon sends what a repair finds missing: without one, a repair would stop half
    // way, after its removals. Refused before anything is touched.
    if req.repair && control::call_within(&req.state_dir, &Ctl::Status, Some(DAEMON_WAIT)).is_err()
    {
        bail!(
            "--repair needs the mount running (the daemon sends the local versions): no ftpsync \
             daemon answers for {}; mount the mirror, then run it again (nothing was changed)",
            req.state_dir.display()
        );
    }
    settle_daemon(&req.state_dir);
    let opts = ask_once(cfg.connect_options())?;
    let root = local::open_root(&cfg.local_dir)
        .with_context(|| format!("cannot open {}", cfg.local_dir.display()))?;
    let mut conn = connect(&opts, &req.state_dir)?;
    let local_tree = walk_local(&root)?;
    let (remote_tree, kept) = walk_remote(conn.as_mut(), &local_tree)?;
    let mut findings = compare(&local_tree, &remote_tree);
    findings.kept = kept;
    forgive_holders_of_kept_copies(&mut findings, &remote_tree);
    let same_size: Vec<(Vec<u8>, u64)> = local_tree
        .iter()
        .filter(|(p, l)| {
            l.kind == FileKind::File
                && remote_tree
                    .get(*p)
                    .is_some_and(|r| r.kind == FileKind::File && r.size == l.size)
        })
        .map(|(p, l)| (p.clone(), l.size))
        .collect();
    let mismatched = hash_both(
        &opts,
        &req.state_dir,
        &root,
        conn,
        same_size,
        req.connections,
    )?;
    for p in mismatched {
        match findings.problems.get_mut(&p) {
            Some(Problem::Differs(what)) => what.push("sha256".into()),
            _ => {
                findings
                    .problems
                    .insert(p, Problem::Differs(vec!["sha256".into()]));
            }
        }
    }
    findings.files = local_tree.len() as u64;
    findings.bytes = local_tree.values().map(|e| e.size).sum();
    report(&findings, req.json);
    if req.repair && !findings.problems.is_empty() {
        repair(
            &opts,
            &req.state_dir,
            &root,
            &findings,
            &local_tree,
            &remote_tree,
        )?;
    }
    Ok(findings.problems.is_empty())
}

/// How long a daemon may take to answer a request that does not wait for uploads.
const DAEMON_WAIT: Duration = Duration::from_secs(10);

/// With a daemon running, waits for what it has pending: a change not yet uploaded is not a
/// difference worth reporting.
fn settle_daemon(state_dir: &Path) {
    if control::call_within(state_dir, &Ctl::Status, Some(DAEMON_WAIT)).is_err() {
        return;
    }
    let req = crate::client::FlushRequest {
        timeout: Duration::from_secs(120),
        local: false,
        require_closed: false,
    };
    if let Err(e) = crate::client::flush(state_dir, &req) {
        eprintln!(
            "ftpsync: warning: the mount still has changes to upload ({e:#}); they show as \
             differences below"
        );
    }
}

/// A prompt for the passphrase once, not once per connection.
fn ask_once(mut opts: ConnectOptions) -> Result<ConnectOptions> {
    if let Some(SecretSource::Prompt(label)) = &opts.passphrase {
        let secret = crate::remote::credentials::prompt(label)
            .context("cannot ask for the key's passphrase")?;
        opts.passphrase = Some(SecretSource::Given(secret));
    }
    Ok(opts)
}

fn connect(opts: &ConnectOptions, state_dir: &Path) -> Result<Box<dyn Transport>> {
    crate::remote::open(opts)
        .map_err(|e| crate::remote::explain_refusal(e, &opts.remote, state_dir))
        .map_err(anyhow::Error::msg)
}

fn kind_of(mode: u32) -> Option<FileKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Some(FileKind::File),
        libc::S_IFDIR => Some(FileKind::Dir),
        libc::S_IFLNK => Some(FileKind::Symlink),
        // FIFOs, sockets and devices are not mirrored.
        _ => None,
    }
}

/// The local tree beneath the backing directory, never following a symlink.
fn walk_local(root: &OwnedFd) -> Result<Tree> {
    let mut out = BTreeMap::new();
    for found in local::walk(root.try_clone()?, Vec::new()) {
        let e = found.map_err(|e| {
            anyhow::Error::from(e.error).context(format!("local {}", show(&e.path)))
        })?;
        let Some(kind) = kind_of(e.st.st_mode) else {
            continue;
        };
        let target = match kind {
            FileKind::Symlink => Some(local::readlink(borrow(&e.fd))?.into_vec()),
            _ => None,
        };
        let entry = Entry {
            kind,
            size: if kind == FileKind::File {
                e.st.st_size as u64
            } else {
                0
            },
            // What the mirror sends: set-id bits never reach the server.
            mode: crate::sync::server_mode(e.st.st_mode & 0o7777),
            mtime: e.st.st_mtime,
            target,
        };
        out.insert(e.path, entry);
    }
    Ok(out)
}

/// The remote tree beneath the root; conflict copies are returned apart (a name of that form
/// the local tree holds too is the user's own, compared as any other). One listing per
/// directory, with what lstat says of each entry.
fn walk_remote(t: &mut dyn Transport, local: &Tree) -> Result<(Tree, Vec<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut kept = Vec::new();
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for (name, st) in t.list_stat(&dir)? {
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                eprintln!(
                    "ftpsync: skipping a name no server should send in {}: {}",
                    show(&dir),
                    show(&name)
                );
                continue;
            }
            let path = child_path(&dir, &name);
            if marker::is_marker(&path) {
                continue;
            }
            // A temporary file is listed like any extra entry: the daemon removes its own
            // leftovers, so one still there (verify waits for uploads) is worth a look.
            if is_conflict_name(&name) && !local.contains_key(&path) {
                kept.push(path);
                continue;
            }
            if st.kind == FileKind::Dir {
                stack.push(path.clone());
            }
            let file = st.kind == FileKind::File;
            out.insert(
                path,
                Entry {
                    kind: st.kind,
                    size: if file { st.size } else { 0 },
                    mode: if st.kind == FileKind::Other {
                        0
                    } else {
                        st.mode & 0o7777
                    },
                    mtime: st.mtime,
                    target: st.symlink_target,
                },
            );
        }
    }
    Ok((out, kept))
}

/// Everything but the contents: what is on one side only, and what differs in its attributes.
fn compare(local: &BTreeMap<Vec<u8>, Entry>, remote: &BTreeMap<Vec<u8>, Entry>) -> Findings {
    let mut f = Findings::default();
    for (p, l) in local {
        let Some(r) = remote.get(p) else {
            f.problems.insert(p.clone(), Problem::Missing);
            continue;
        };
        let what = differences(l, r);
        if !what.is_empty() {
            f.problems.insert(p.clone(), Problem::Differs(what));
        }
    }
    for p in remote.keys().filter(|p| !local.contains_key(*p)) {
        f.problems.insert(p.clone(), Problem::Extra);
    }
    f
}

/// Whether a conflict copy ftpsync kept lies beneath `dir`.
fn holds_kept(kept: &[Vec<u8>], dir: &[u8]) -> bool {
    kept.iter().any(|k| is_beneath(k, dir))
}

/// A remote directory with no local counterpart that holds nothing but conflict copies (and
/// directories holding them) is where the engine kept a server version when the local
/// directory went (it removes what it put there and leaves the directory the copy needs): no
/// difference, as the copies themselves are none.
fn forgive_holders_of_kept_copies(f: &mut Findings, remote: &Tree) {
    let holders: Vec<Vec<u8>> = f
        .problems
        .iter()
        .filter(|(p, problem)| {
            matches!(problem, Problem::Extra)
                && remote.get(*p).is_some_and(|e| e.kind == FileKind::Dir)
                && holds_kept(&f.kept, p)
                && remote
                    .iter()
                    .filter(|(q, _)| is_beneath(q, p))
                    .all(|(q, e)| e.kind == FileKind::Dir && holds_kept(&f.kept, q))
        })
        .map(|(p, _)| p.clone())
        .collect();
    for p in holders {
        f.problems.remove(&p);
    }
}

fn differences(l: &Entry, r: &Entry) -> Vec<String> {
    if l.kind != r.kind {
        return vec![format!("kind {:?} != {:?}", l.kind, r.kind).to_lowercase()];
    }
    let mut what = Vec::new();
    if l.size != r.size {
        what.push(format!("size {} != {}", l.size, r.size));
    }
    if l.mode != r.mode {
        what.push(format!("mode {:o} != {:o}", l.mode, r.mode));
    }
    // Directory times change with every entry made in them on either side: not compared.
    if l.kind == FileKind::File && l.mtime != r.mtime {
        what.push(format!("mtime {} != {}", l.mtime, r.mtime));
    }
    if l.target != r.target {
        what.push("symlink target".into());
    }
    what
}

/// Files per remote hash request: batched exec commands hash many at once.
const HASH_BATCH: usize = 64;

/// Hashes each file on both sides, `connections` at a time; returns the paths that differ.
fn hash_both(
    opts: &ConnectOptions,
    state_dir: &Path,
    root: &OwnedFd,
    first: Box<dyn Transport>,
    files: Vec<(Vec<u8>, u64)>,
    connections: usize,
) -> Result<Vec<Vec<u8>>> {
    let total_bytes = files.iter().map(|(_, s)| *s).sum();
    let total = files.len() as u64;
    let progress = Progress::new("verifying", total, total_bytes);
    let workers = connections.clamp(1, 64).min(files.len().max(1));
    let mut shares: Vec<Vec<(Vec<u8>, u64)>> = vec![Vec::new(); workers];
    for (i, f) in files.into_iter().enumerate() {
        shares[i % workers].push(f);
    }
    let mut first = Some(first);
    let result = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let conn = first.take();
                let progress = &progress;
                s.spawn(move || -> Result<Vec<Vec<u8>>> {
                    let mut conn = match conn {
                        Some(c) => c,
                        None => connect(opts, state_dir)?,
                    };
                    let mut differ = Vec::new();
                    for batch in share.chunks(HASH_BATCH) {
                        differ.extend(hash_batch(&mut conn, root, batch, total, progress)?);
                    }
                    Ok(differ)
                })
            })
            .collect();
        let mut differ = Vec::new();
        for h in handles {
            differ.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a verify thread panicked"))??,
            );
        }
        Ok(differ)
    });
    progress.finish();
    result
}

fn hash_batch(
    conn: &mut Box<dyn Transport>,
    root: &OwnedFd,
    batch: &[(Vec<u8>, u64)],
    total: u64,
    progress: &Progress,
) -> Result<Vec<Vec<u8>>> {
    let rels: Vec<&[u8]> = batch.iter().map(|(p, _)| p.as_slice()).collect();
    let remote = conn.hash(&rels)?;
    let mut differ = Vec::new();
    for ((path, size), remote) in batch.iter().zip(remote) {
        let local = local::lookup_path(borrow(root), path)
            .and_then(|(fd, _)| local::reopen_quietly(borrow(&fd)))
            .and_then(|f| hash_file(&f))
            .with_context(|| format!("hashing local {}", show(path)))?;
        if remote != Some(local.0) {
            differ.push(path.clone());
        }
        progress.file_done(*size, total);
    }
    Ok(differ)
}

fn report(f: &Findings, as_json: bool) {
    if as_json {
        let list = |want: fn(&Problem) -> bool| -> Vec<Value> {
            f.problems
                .iter()
                .filter(|(_, p)| want(p))
                .map(|(path, _)| json!(PathName::of(path)))
                .collect()
        };
        let different: Vec<Value> = f
            .problems
            .iter()
            .filter_map(|(path, p)| match p {
                Problem::Differs(what) => {
                    Some(with_paths(&[("path", path)], json!({"what": what})))
                }
                _ => None,
            })
            .collect();
        let doc = json!({
            "equal": f.problems.is_empty(),
            "files": f.files,
            "bytes": f.bytes,
            "missing": list(|p| matches!(p, Problem::Missing)),
            "extra": list(|p| matches!(p, Problem::Extra)),
            "different": different,
            "kept_conflict_copies": f.kept.iter().map(|p| PathName::of(p)).collect::<Vec<_>>(),
        });
        println!("{doc}");
        return;
    }
    for (path, p) in &f.problems {
        match p {
            Problem::Missing => println!("missing   {}", show(path)),
            Problem::Extra => println!("extra     {}", show(path)),
            Problem::Differs(what) => {
                println!("differs   {}: {}", show(path), what.join(", "))
            }
        }
    }
    for path in &f.kept {
        println!(
            "kept      {} (a conflict copy ftpsync kept aside)",
            show(path)
        );
    }
    println!(
        "{} entries ({}) checked: {}",
        f.files,
        human_bytes(f.bytes),
        if f.problems.is_empty() {
            "the remote equals the local tree".to_string()
        } else {
            format!("{} differences", f.problems.len())
        }
    );
}

/// Mends what verify found. First what the daemon cannot replace goes: remote entries with no
/// local counterpart (checked again now: a rename may have made one), and remote directories
/// where a file or symlink belongs. They go before the daemon is asked, or its upload could
/// meet such a directory first and keep it aside as a conflict copy. Then the daemon durably
/// doubts every path that is missing or differs, and sends its local version past what its
/// manifest says, replacing what the remote has (no conflict copy: the user asked).
fn repair(
    opts: &ConnectOptions,
    state_dir: &Path,
    root: &OwnedFd,
    f: &Findings,
    local: &Tree,
    remote: &Tree,
) -> Result<()> {
    let removed = remove_in_the_way(opts, state_dir, root, f, local, remote)?;
    let resend: Vec<String> = f
        .problems
        .iter()
        .filter(|(_, p)| !matches!(p, Problem::Extra))
        .map(|(path, _)| hex::encode(path))
        .collect();
    let reply = control::call_within(
        state_dir,
        &Ctl::Repair {
            paths_hex: resend.clone(),
        },
        Some(DAEMON_WAIT),
    )
    .context("--repair needs the mount running: the daemon sends the local versions")?;
    if !reply.ok {
        bail!(
            "the daemon refused the repair: {}",
            reply.error.unwrap_or_default()
        );
    }
    eprintln!(
        "repair: {} paths queued for upload, {removed} removed from the remote; `ftpsync flush` \
         waits for the uploads",
        resend.len(),
    );
    Ok(())
}

/// Removes from the remote what has no local counterpart and the directories standing where a
/// file or symlink belongs; returns how many entries it removed (with what was beneath them).
fn remove_in_the_way(
    opts: &ConnectOptions,
    state_dir: &Path,
    root: &OwnedFd,
    f: &Findings,
    local: &Tree,
    remote: &Tree,
) -> Result<usize> {
    let in_the_way = |path: &Vec<u8>| match f.problems.get(path) {
        Some(Problem::Extra) => local::lookup_path(borrow(root), path).is_err(),
        Some(Problem::Differs(_)) => {
            remote.get(path).is_some_and(|r| r.kind == FileKind::Dir)
                && local.get(path).is_some_and(|l| l.kind != FileKind::Dir)
        }
        _ => false,
    };
    let audit = Audit::open(state_dir).context("audit log")?;
    let mut conn = connect(opts, state_dir)?;
    let mut removed: Vec<&Vec<u8>> = Vec::new();
    // Sorted: a directory comes before what is beneath it, which goes with it.
    for path in f.problems.keys().filter(|p| in_the_way(p)) {
        if removed.iter().any(|r| is_beneath(path, r)) {
            continue;
        }
        remove_remote(conn.as_mut(), remote, &f.kept, path)?;
        audit.record("repair_remove", with_paths(&[("path", path)], json!({})));
        removed.push(path);
    }
    Ok(removed.len())
}

fn is_beneath(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && is_within(path, dir)
}

/// Removes a remote entry, a directory with everything beneath it (deepest first), except the
/// conflict copies ftpsync kept and the directories holding them: no server version is lost.
/// What is already gone is no error.
fn remove_remote(
    t: &mut dyn Transport,
    remote: &Tree,
    kept: &[Vec<u8>],
    path: &[u8],
) -> Result<()> {
    let mut doomed: Vec<&Vec<u8>> = remote
        .keys()
        .filter(|p| p.as_slice() == path || is_beneath(p, path))
        .filter(|p| !holds_kept(kept, p))
        .collect();
    doomed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in doomed {
        let gone = match remote.get(p).map(|e| e.kind) {
            Some(FileKind::Dir) => t.remove_dir(p),
            _ => t.remove_file(p),
        };
        match gone {
            Err(e) if e.kind() == crate::remote::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}
