//! What a server can do, probed once per connection and never assumed from OpenSSH.
//!
//! `SSH_FXP_SYMLINK` carries two paths. The protocol draft sends (linkpath, targetpath);
//! OpenSSH's sftp-server reads them the other way round, and libssh2 sends what it is given in
//! the draft's order. Sent in the wrong order, a mirrored symlink is made at the path named by
//! its *target*, anywhere the account may write. So the order is found out with both paths
//! inside a fresh directory in the remote root, where either outcome is harmless.

use super::error::display_path;
use super::path;
use ssh2::Sftp;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// Probe directories this process made and could not remove (the connection died mid-probe):
/// the next probe removes them first. Only this process's own names are ever listed here; those
/// of a daemon killed mid-probe are swept at the next start.
static LEFT_BEHIND: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// How a server takes `SSH_FXP_SYMLINK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// (targetpath, linkpath): OpenSSH's sftp-server and the servers that copy it.
    TargetFirst,
    /// (linkpath, targetpath): the protocol draft's order (gesftpserver).
    LinkFirst,
    /// No symlinks at all (rclone serve sftp), or an answer that made sense in neither order.
    Unsupported,
    /// Symlinks are made, but read back other than made (proftpd answers a relative target
    /// resolved to an absolute path): neither `verify`, `restore` nor the check of what the
    /// server holds could tell a link's target, so none is made.
    Unfaithful,
}

impl Symlinks {
    /// The two paths of `SSH_FXP_SYMLINK` in the order this server reads them, for a link at
    /// `link` to `target`; None where the server makes no symlinks.
    pub fn order<'a>(self, link: &'a [u8], target: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        match self {
            Symlinks::TargetFirst => Some((target, link)),
            Symlinks::LinkFirst => Some((link, target)),
            Symlinks::Unsupported | Symlinks::Unfaithful => None,
        }
    }

    /// Whether ftpsync makes real symlinks on this server (else they are kept as link files).
    pub fn makes_links(self) -> bool {
        matches!(self, Symlinks::TargetFirst | Symlinks::LinkFirst)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Symlinks::TargetFirst => "yes (OpenSSH argument order)",
            Symlinks::LinkFirst => "yes (protocol draft argument order)",
            Symlinks::Unsupported => "no",
            Symlinks::Unfaithful => "no (the server reads symlinks back changed)",
        }
    }
}

fn p(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// What a server was found to do, by [`probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub symlinks: Symlinks,
    /// Whether it keeps the permission bits it is asked to set (rclone serve sftp accepts a
    /// chmod and ignores it: every file gets its defaults).
    pub modes: bool,
    /// fsync@openssh.com: an upload is forced to the server's disk before it counts.
    pub fsync: bool,
}

/// Probes the server in a fresh directory beneath `root` (absolute), removed afterwards.
pub fn probe(sftp: &Sftp, root: &[u8]) -> Capabilities {
    LEFT_BEHIND
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|dir| !remove_probe_dir(sftp, dir));
    let dir = [root, b"/", &path::temp_beside(b"probe")].concat();
    if let Err(e) = sftp.mkdir(p(&dir), 0o700) {
        log::warn!(
            "cannot probe the server's capabilities (mkdir {}: {e}); no symlinks will be made",
            display_path(&dir)
        );
        return Capabilities {
            symlinks: Symlinks::Unsupported,
            modes: false,
            fsync: false,
        };
    }
    let found = Capabilities {
        symlinks: probe_symlinks(sftp, &dir),
        modes: probe_modes(sftp, &dir),
        fsync: probe_fsync(sftp, &dir),
    };
    if !remove_probe_dir(sftp, &dir) {
        log::warn!(
            "cannot remove the probe directory {} now; the next connection will",
            display_path(&dir)
        );
        LEFT_BEHIND
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dir);
    }
    found
}

/// Removes a probe directory and whatever a probe cut short left in it; true once it is gone,
/// or once it is no directory of ours (readdir and the unlinks through it follow a symlink: one
/// the server put in its place could lead outside the root, so it is forgotten, never entered).
fn remove_probe_dir(sftp: &Sftp, dir: &[u8]) -> bool {
    match sftp.lstat(p(dir)) {
        Ok(st) if st.is_dir() => {}
        Ok(_) => {
            log::warn!(
                "the probe directory {} was replaced on the server; left alone",
                display_path(dir)
            );
            return true;
        }
        Err(e) => return is_no_such_file(&e),
    }
    if let Ok(entries) = sftp.readdir(p(dir)) {
        for (inside, _) in entries {
            let _ = sftp.unlink(&inside);
        }
    }
    sftp.rmdir(p(dir)).is_ok() || sftp.lstat(p(dir)).is_err_and(|e| is_no_such_file(&e))
}

fn is_no_such_file(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::SFTP(2)
}

/// Creates an empty file and asks the server to force it to disk.
fn probe_fsync(sftp: &Sftp, dir: &[u8]) -> bool {
    let file = [dir, b"/fsync"].concat();
    let done = sftp.create(p(&file)).is_ok_and(|mut f| f.fsync().is_ok());
    let _ = sftp.unlink(p(&file));
    done
}

/// Sets a mode the server would not pick by itself and reads it back.
fn probe_modes(sftp: &Sftp, dir: &[u8]) -> bool {
    let want = 0o751;
    let stat = ssh2::FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(want),
        atime: None,
        mtime: None,
    };
    sftp.setstat(p(dir), stat).is_ok()
        && sftp
            .lstat(p(dir))
            .is_ok_and(|st| st.perm.is_some_and(|m| m & 0o7777 == want))
}

/// Makes a symlink in `dir` and looks at which of its two names it appeared; then one with a
/// relative target, which must read back as made. Removes all it made.
fn probe_symlinks(sftp: &Sftp, dir: &[u8]) -> Symlinks {
    let (first, second) = ([dir, b"/first"].concat(), [dir, b"/second"].concat());
    let made = sftp.symlink(p(&first), p(&second));
    let is_link = |at: &[u8]| {
        sftp.lstat(p(at))
            .is_ok_and(|st| st.file_type().is_symlink())
    };
    let order = match &made {
        Err(_) => Symlinks::Unsupported,
        Ok(()) => match (is_link(&first), is_link(&second)) {
            (false, true) => Symlinks::TargetFirst,
            (true, false) => Symlinks::LinkFirst,
            _ => Symlinks::Unsupported,
        },
    };
    let third = [dir, b"/third"].concat();
    let faithful = |order: Symlinks| {
        let target: &[u8] = b"../a relative/target";
        let Some((a, b)) = order.order(&third, target) else {
            return false;
        };
        sftp.symlink(p(a), p(b)).is_ok()
            && sftp
                .readlink(p(&third))
                .is_ok_and(|t| t.as_os_str().as_bytes() == target)
    };
    let found = if order.makes_links() && !faithful(order) {
        Symlinks::Unfaithful
    } else {
        order
    };
    for name in [&first, &second, &third] {
        let _ = sftp.unlink(p(name));
    }
    found
}
