//! What a record says: the mutations the journal logs and the relative paths they name. A
//! path is checked here, on the way in and on the way back from disk, because every later stage
//! (the sync engine, the remote) trusts a journaled path not to escape the mirrored root.

use super::JournalError;
use crate::relpath::RelPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// New regular file (content dirty).
    Create {
        path: RelPath,
        mode: u32,
    },
    /// Regular file opened for writing.
    Dirty {
        path: RelPath,
    },
    /// Content hashed on close. `ctime` and `ino` let a start-up scan tell an unchanged file
    /// from one rewritten behind the mount with its size and mtime put back.
    Store {
        path: RelPath,
        size: u64,
        sha256: [u8; 32],
        mtime: Timestamp,
        mode: u32,
        ctime: Timestamp,
        ino: u64,
    },
    Mkdir {
        path: RelPath,
        mode: u32,
    },
    Mknod {
        path: RelPath,
        mode: u32,
        rdev: u64,
    },
    Symlink {
        path: RelPath,
        target: Vec<u8>,
    },
    Link {
        existing: RelPath,
        path: RelPath,
    },
    Unlink {
        path: RelPath,
    },
    Rmdir {
        path: RelPath,
    },
    /// `flags` are renameat2 flags (RENAME_NOREPLACE = 1, RENAME_EXCHANGE = 2).
    Rename {
        from: RelPath,
        to: RelPath,
        flags: u32,
    },
    SetAttr {
        path: RelPath,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
    SetXattr {
        path: RelPath,
        name: Vec<u8>,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: RelPath,
        name: Vec<u8>,
    },
}

impl Record {
    pub fn op(&self) -> &'static str {
        match self {
            Record::Create { .. } => "create",
            Record::Dirty { .. } => "dirty",
            Record::Store { .. } => "store",
            Record::Mkdir { .. } => "mkdir",
            Record::Mknod { .. } => "mknod",
            Record::Symlink { .. } => "symlink",
            Record::Link { .. } => "link",
            Record::Unlink { .. } => "unlink",
            Record::Rmdir { .. } => "rmdir",
            Record::Rename { .. } => "rename",
            Record::SetAttr { .. } => "setattr",
            Record::SetXattr { .. } => "setxattr",
            Record::RemoveXattr { .. } => "removexattr",
        }
    }

    /// The primary path: `to` for Rename, the new name for Link.
    pub fn path(&self) -> &[u8] {
        match self {
            Record::Create { path, .. }
            | Record::Dirty { path }
            | Record::Store { path, .. }
            | Record::Mkdir { path, .. }
            | Record::Mknod { path, .. }
            | Record::Symlink { path, .. }
            | Record::Link { path, .. }
            | Record::Unlink { path }
            | Record::Rmdir { path }
            | Record::SetAttr { path, .. }
            | Record::SetXattr { path, .. }
            | Record::RemoveXattr { path, .. } => path,
            Record::Rename { to, .. } => to,
        }
    }

    fn secondary_path(&self) -> Option<&[u8]> {
        match self {
            Record::Rename { from, .. } => Some(from),
            Record::Link { existing, .. } => Some(existing),
            _ => None,
        }
    }

    /// Every tree path the record names (a symlink target is data, not a path in the tree).
    pub(super) fn paths(&self) -> impl Iterator<Item = &[u8]> + '_ {
        std::iter::once(self.path()).chain(self.secondary_path())
    }

    pub(super) fn validate(&self) -> Result<(), JournalError> {
        match self.paths().find(|p| !is_valid_rel_path(p)) {
            Some(bad) => Err(JournalError::InvalidRecord(format!(
                "{} names an invalid relative path {:?}",
                self.op(),
                String::from_utf8_lossy(bad)
            ))),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub record: Record,
}

pub(super) fn is_valid_rel_path(path: &[u8]) -> bool {
    path.is_empty()
        || (!path.contains(&0)
            && path
                .split(|&b| b == b'/')
                .all(|c| !c.is_empty() && c != b"." && c != b".."))
}
