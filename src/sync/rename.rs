//! Replays a local rename on the server: one remote rename when the server still holds what
//! ftpsync put at the source, so a moved file or tree is not sent again. Anything else the
//! server holds at either end, or beneath a moved directory (changed behind our back, or never
//! ours), is first kept aside as a conflict copy; what the server no longer holds as ours is
//! sent anew by the caller, and so is everything when the source is gone or was kept aside.
//!
//! `RENAME_EXCHANGE` is always sent anew: SFTP cannot swap two names, and a swap through a
//! third name leaves a window in which a crash makes ftpsync take its own entries for the
//! server's.

use super::plan::RemoteRename;
use super::reconcile::{is_ours, landed_from, lstat, make_parents, move_aside, remove_subtree};
use crate::mirror::{Confirmed, Mirror};
use crate::relpath::{is_within, reroot};
use crate::remote::path::{ancestors, split_parent};
use crate::remote::{DirNews, ErrorKind, FileKind, RemoteError, RemoteStat, Transport};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

type Result<T> = std::result::Result<T, RemoteError>;

/// The manifest's entries at and beneath both ends of a rename, taken before it is replayed.
pub struct Ends {
    pub from: Vec<(Vec<u8>, Confirmed)>,
    pub to: Vec<(Vec<u8>, Confirmed)>,
    /// What the making of an entry at the target started (a lost answer or a kill took its
    /// record): such an entry there is ours, as one the manifest holds is.
    pub to_intents: Vec<Confirmed>,
    /// The same for paths strictly beneath the target: they go with a tree of ours there.
    pub to_intents_beneath: Vec<(Vec<u8>, Vec<Confirmed>)>,
}

impl Ends {
    pub fn of(r: &RemoteRename, mirror: &Mirror) -> Ends {
        let entries = |p: &[u8]| -> Vec<(Vec<u8>, Confirmed)> {
            mirror
                .manifest
                .subtree(p)
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect()
        };
        Ends {
            from: entries(&r.from),
            to: entries(&r.to),
            to_intents: mirror.manifest.intents_of(&r.to).to_vec(),
            to_intents_beneath: mirror.manifest.intents_beneath(&r.to),
        }
    }
}

/// A parent directory that was in the way of a move (kept aside now), and what the manifest
/// held beneath it, forgotten.
pub struct Replaced {
    pub dir: Vec<u8>,
    pub forgotten: Vec<(Vec<u8>, Confirmed)>,
}

pub enum Replayed {
    /// Moved on the server, and in the manifest; the entries beneath it at these new paths
    /// were not the server's as we put them (now kept aside, or gone): send them anew. A
    /// directory of ours above the target that the server had replaced was kept aside too.
    Moved {
        again: Vec<Vec<u8>>,
        replaced: Option<Replaced>,
    },
    /// Not moved: what stands locally at both names must be sent anew.
    Resend,
}

/// Replays `r`; conflict copies made on the way are added to `conflicts`.
pub fn replay(
    t: &mut dyn Transport,
    r: &RemoteRename,
    ends: &Ends,
    mirror: &Mutex<Mirror>,
    news: &dyn Fn(&[u8], DirNews),
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Replayed> {
    if r.exchange {
        return Ok(Replayed::Resend);
    }
    if lstat(t, &r.from)?.is_none() {
        return moved_before(t, r, ends, mirror, conflicts);
    }
    let doubted = doubted_beneath(mirror, &ends.from, |p| p.to_vec());
    if !still_ours(t, &r.from, &ends.from, &doubted, conflicts)? {
        return Ok(Replayed::Resend);
    }
    let changed = changed_beneath(t, &r.from, &ends.from, &doubted, conflicts)?;
    let doubted_to = doubted_beneath(mirror, &ends.to, |p| p.to_vec());
    clear_target(t, &r.to, ends, &doubted_to, conflicts)?;
    let replaced = make_parents_recorded(t, &r.to, mirror, news, conflicts)?;
    t.rename(&r.from, &r.to)?;
    let again = record_move(r, &changed, mirror)?;
    Ok(Replayed::Moved { again, replaced })
}

/// The source is gone from the server. If what we put there stands at the target, a crash
/// came between the remote rename and the manifest's (this is its replay): the move is
/// recorded, what beneath it is not ours any more is sent anew. Else it is all sent anew.
fn moved_before(
    t: &mut dyn Transport,
    r: &RemoteRename,
    ends: &Ends,
    mirror: &Mutex<Mirror>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Replayed> {
    let moved: Vec<(Vec<u8>, Confirmed)> = ends
        .from
        .iter()
        .map(|(p, c)| (reroot(p, &r.from, &r.to), c.clone()))
        .collect();
    let at_target = lstat(t, &r.to)?;
    if moved.is_empty()
        || !at_target.is_some_and(|st| is_ours(vouched(&r.to, &moved).as_ref(), &st))
    {
        return Ok(Replayed::Resend);
    }
    let doubted = doubted_beneath(mirror, &ends.from, |p| reroot(p, &r.from, &r.to));
    let changed: Vec<Vec<u8>> = changed_beneath(t, &r.to, &moved, &doubted, conflicts)?
        .iter()
        .map(|p| reroot(p, &r.to, &r.from))
        .collect();
    let again = record_move(r, &changed, mirror)?;
    Ok(Replayed::Moved {
        again,
        replaced: None,
    })
}

/// The manifest follows a remote rename; the entries beneath that were not ours (`changed`,
/// by their old names) are forgotten, and returned by their new names to be sent anew.
fn record_move(
    r: &RemoteRename,
    changed: &[Vec<u8>],
    mirror: &Mutex<Mirror>,
) -> Result<Vec<Vec<u8>>> {
    let again: Vec<Vec<u8>> = changed.iter().map(|p| reroot(p, &r.from, &r.to)).collect();
    let mut m = mirror.lock();
    // A repair asked for stays asked for at the new name: forgetting the entry forgets its
    // doubt, and the server's wrong copy would be kept aside as a version of its own.
    let doubted: Vec<&Vec<u8>> = changed
        .iter()
        .zip(&again)
        .filter(|(old, _)| m.manifest.doubted(old))
        .map(|(_, new)| new)
        .collect();
    m.manifest
        .rename(&r.from, &r.to)
        .and_then(|()| again.iter().try_for_each(|p| m.manifest.remove(p)))
        .and_then(|()| doubted.iter().try_for_each(|p| m.manifest.doubt(p)))
        .map_err(manifest_err)?;
    Ok(again)
}

fn manifest_err(e: std::io::Error) -> RemoteError {
    RemoteError::new(ErrorKind::Other, format!("manifest: {e}"))
}

/// Makes the new parents of `to` (a directory made locally a moment ago may not be on the
/// server yet) and tells `news` of the ones it makes, so that they go with the local ones
/// later. Where
/// one was in the way (kept aside now), what the manifest held beneath it is forgotten at
/// once, before the move puts entries of ours there, and returned with it.
fn make_parents_recorded(
    t: &mut dyn Transport,
    to: &[u8],
    mirror: &Mutex<Mirror>,
    news: &dyn Fn(&[u8], DirNews),
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Option<Replaced>> {
    let known: Vec<(Vec<u8>, Confirmed)> = {
        let m = mirror.lock();
        ancestors(to)
            .filter_map(|a| m.manifest.get(a).map(|c| (a.to_vec(), c.clone())))
            .collect()
    };
    let replaced = make_parents(t, to, &known, conflicts, news)?;
    Ok(replaced.map(|dir| Replaced {
        forgotten: super::replay::forget_beneath(mirror, &dir),
        dir,
    }))
}

/// What the manifest says we put at `path` (`entries`: its entries at and beneath `path`): its
/// own entry, or a directory where we only put entries beneath it (made by an upload's
/// mkdir_all).
fn vouched(path: &[u8], entries: &[(Vec<u8>, Confirmed)]) -> Option<Confirmed> {
    match entries.first() {
        Some((p, c)) if p == path => Some(c.clone()),
        Some(_) => Some(Confirmed::Dir { mode: 0 }),
        None => None,
    }
}

/// Whether the server still holds what we put at `path`; anything else there is kept aside,
/// unless a repair doubts it (left for the resend, which replaces it).
fn still_ours(
    t: &mut dyn Transport,
    path: &[u8],
    entries: &[(Vec<u8>, Confirmed)],
    doubted: &HashSet<Vec<u8>>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<bool> {
    let Some(remote) = lstat(t, path)? else {
        return Ok(false);
    };
    if is_ours(vouched(path, entries).as_ref(), &remote) {
        return Ok(true);
    }
    if !doubted.contains(path) {
        conflicts.push(move_aside(t, path)?);
    }
    Ok(false)
}

/// The paths among `entries` a `verify --repair` doubts (the server's copy is wrong: replaced
/// without a conflict copy), named by `name`. Taken before any I/O, the lock let go.
fn doubted_beneath(
    mirror: &Mutex<Mirror>,
    entries: &[(Vec<u8>, Confirmed)],
    name: impl Fn(&[u8]) -> Vec<u8>,
) -> HashSet<Vec<u8>> {
    let m = mirror.lock();
    entries
        .iter()
        .filter(|(p, _)| m.manifest.doubted(p))
        .map(|(p, _)| name(p))
        .collect()
}

/// The entries beneath a directory about to move that the server no longer holds as we put
/// them: changed ones are kept aside now (in place, before the move), unless a repair doubts
/// them (the user asked for them to be replaced), gone ones just listed. One listing per
/// directory.
fn changed_beneath(
    t: &mut dyn Transport,
    from: &[u8],
    entries: &[(Vec<u8>, Confirmed)],
    doubted: &HashSet<Vec<u8>>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>> {
    let mut listings: HashMap<Vec<u8>, HashMap<Vec<u8>, RemoteStat>> = HashMap::new();
    let mut changed: Vec<Vec<u8>> = Vec::new();
    for (p, c) in entries.iter().filter(|(p, _)| p != from) {
        if changed.iter().any(|d| is_within(p, d)) {
            continue;
        }
        let (dir, name) = split_parent(p);
        if !listings.contains_key(dir) {
            let listed = match t.list_stat(dir) {
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                other => other?,
            };
            listings.insert(dir.to_vec(), listed.into_iter().collect());
        }
        match listings.get(dir).and_then(|l| l.get(name)) {
            Some(r) if is_ours(Some(c), r) => {}
            Some(_) if doubted.contains(p) => changed.push(p.clone()),
            Some(_) => {
                conflicts.push(move_aside(t, p)?);
                changed.push(p.clone());
            }
            None => changed.push(p.clone()),
        }
    }
    Ok(changed)
}

/// Makes room at `to`: a file or symlink of ours is replaced by the rename itself, a tree of
/// ours is removed (a directory the server added to keeps what it holds, aside), anything else
/// is kept aside.
fn clear_target(
    t: &mut dyn Transport,
    to: &[u8],
    ends: &Ends,
    doubted: &HashSet<Vec<u8>>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let entries = &ends.to;
    let Some(remote) = lstat(t, to)? else {
        return Ok(());
    };
    // A file or symlink a repair doubts is replaced by the rename, as one of ours is.
    let doubted_file = doubted.contains(to) && remote.kind != FileKind::Dir;
    let ours =
        is_ours(vouched(to, entries).as_ref(), &remote) || landed_from(&ends.to_intents, &remote);
    if !doubted_file && !ours {
        conflicts.push(move_aside(t, to)?);
        return Ok(());
    }
    if remote.kind != FileKind::Dir {
        return Ok(());
    }
    remove_subtree(t, entries, &ends.to_intents_beneath, conflicts)?;
    match super::reconcile::remove_our_dir(t, to) {
        Err(e) if e.kind() != ErrorKind::NotFound => conflicts.push(move_aside(t, to)?),
        _ => {}
    }
    Ok(())
}
