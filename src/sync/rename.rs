//! Replays a local rename on the server: one remote rename when the server still holds what
//! ftpsync put at the source, so a moved file or tree is not sent again. Anything else the
//! server holds at either end (changed behind our back, or never ours) is first kept aside as
//! a conflict copy; a source that is gone or was kept aside makes the caller send what now
//! stands locally at both names anew.

use super::plan::RemoteRename;
use super::reconcile::{is_ours, lstat, move_aside, parent, remove_subtree};
use crate::mirror::{Confirmed, Mirror};
use crate::remote::{ErrorKind, FileKind, RemoteError, Transport};
use parking_lot::Mutex;

type Result<T> = std::result::Result<T, RemoteError>;

/// The manifest's entries at and beneath both ends of a rename, taken before it is replayed.
pub struct Ends {
    pub from: Vec<(Vec<u8>, Confirmed)>,
    pub to: Vec<(Vec<u8>, Confirmed)>,
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
        }
    }
}

pub enum Replayed {
    /// Moved on the server, and in the manifest.
    Moved,
    /// Not (entirely) moved: what stands locally at both names must be sent anew.
    Resend,
}

/// Replays `r`; conflict copies made on the way are added to `conflicts`.
pub fn replay(
    t: &mut dyn Transport,
    r: &RemoteRename,
    ends: &Ends,
    mirror: &Mutex<Mirror>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Replayed> {
    if r.exchange {
        return exchange(t, r, ends, mirror, conflicts);
    }
    if !still_ours(t, &r.from, &ends.from, conflicts)? {
        return Ok(Replayed::Resend);
    }
    clear_target(t, &r.to, &ends.to, conflicts)?;
    move_entry(t, &r.from, &r.to, mirror)?;
    Ok(Replayed::Moved)
}

/// SFTP has no exchange: the two ends swap through a temporary name of their own (which a
/// crash leaves for the temp-file cleanup, the ends being sent anew), or, where the server
/// holds only one end, that end moves.
fn exchange(
    t: &mut dyn Transport,
    r: &RemoteRename,
    ends: &Ends,
    mirror: &Mutex<Mirror>,
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<Replayed> {
    let from_ours = still_ours(t, &r.from, &ends.from, conflicts)?;
    let to_ours = still_ours(t, &r.to, &ends.to, conflicts)?;
    match (from_ours, to_ours) {
        (true, true) => {
            let tmp = crate::remote::path::temp_beside(&r.from);
            move_entry(t, &r.from, &tmp, mirror)?;
            move_entry(t, &r.to, &r.from, mirror)?;
            move_entry(t, &tmp, &r.to, mirror)?;
            return Ok(Replayed::Moved);
        }
        (true, false) => move_entry(t, &r.from, &r.to, mirror)?,
        (false, true) => move_entry(t, &r.to, &r.from, mirror)?,
        (false, false) => {}
    }
    Ok(Replayed::Resend)
}

/// One remote rename into a parent that exists, and the manifest after it.
fn move_entry(t: &mut dyn Transport, from: &[u8], to: &[u8], mirror: &Mutex<Mirror>) -> Result<()> {
    // The new parent may be a directory made locally a moment ago, not yet on the server.
    t.mkdir_all(parent(to))?;
    t.rename(from, to)?;
    mirror
        .lock()
        .manifest
        .rename(from, to)
        .map_err(|e| RemoteError::new(ErrorKind::Other, format!("manifest: {e}")))
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

/// Whether the server still holds what we put at `path`; anything else there is kept aside.
fn still_ours(
    t: &mut dyn Transport,
    path: &[u8],
    entries: &[(Vec<u8>, Confirmed)],
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<bool> {
    let Some(remote) = lstat(t, path)? else {
        return Ok(false);
    };
    if is_ours(vouched(path, entries).as_ref(), &remote) {
        return Ok(true);
    }
    conflicts.push(move_aside(t, path)?);
    Ok(false)
}

/// Makes room at `to`: a file or symlink of ours is replaced by the rename itself, a tree of
/// ours is removed (a directory the server added to keeps what it holds, aside), anything else
/// is kept aside.
fn clear_target(
    t: &mut dyn Transport,
    to: &[u8],
    entries: &[(Vec<u8>, Confirmed)],
    conflicts: &mut Vec<Vec<u8>>,
) -> Result<()> {
    let Some(remote) = lstat(t, to)? else {
        return Ok(());
    };
    if !is_ours(vouched(to, entries).as_ref(), &remote) {
        conflicts.push(move_aside(t, to)?);
        return Ok(());
    }
    if remote.kind != FileKind::Dir {
        return Ok(());
    }
    remove_subtree(t, entries, conflicts)?;
    match t.remove_dir(to) {
        Err(e) if e.kind() != ErrorKind::NotFound => conflicts.push(move_aside(t, to)?),
        _ => {}
    }
    Ok(())
}
