//! The state dir and every file in it are the mounting user's own. Root mounting with a state
//! dir another user owns, or holding a symbolic link someone planted, would write and chmod
//! wherever they point; so nothing here is opened through a symbolic link (O_NOFOLLOW), a file
//! or directory someone else owns or may write is refused with its path and owner, and a temp
//! file that is renamed into place is always a new one (O_EXCL).

use std::ffi::CStr;
use std::fs::{DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

// The files of a state dir (doc/CONTRACTS.md, "State dir layout").
/// The journal's directory of segments.
pub const JOURNAL: &str = "journal";
/// The running daemon's pid (removed on a clean exit).
pub const PID_FILE: &str = "ftpsync.pid";
/// Held (flock) by the daemon for its whole life: one daemon per state dir.
pub const DAEMON_LOCK: &str = "lock";
/// The daemon's control socket (0600).
pub const SOCKET: &str = "control.sock";
/// The running mount's configuration, no secret in it.
pub const MOUNT_RECORD: &str = "mount.json";
/// The host keys `ftpsync trust` pinned for this mirror; every connection reads it.
pub const KNOWN_HOSTS: &str = "known_hosts";
/// The daemon's log when it runs detached.
pub const LOG_FILE: &str = "ftpsync.log";
/// What the remote is confirmed to hold.
pub const MANIFEST: &str = "manifest.log";
/// The audit trail.
pub const AUDIT_LOG: &str = "audit.log";
/// Anchors the audit trail's last line.
pub const AUDIT_HEAD: &str = "audit.head";
/// Held (flock) by whoever appends to the audit trail.
pub const AUDIT_LOCK: &str = "audit.lock";

/// How a state-dir file is opened. Files created are 0600.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read an existing file.
    Read,
    /// Read and write an existing file.
    ReadWrite,
    /// Append, creating the file if missing.
    Append,
    /// Read and write, creating the file if missing, keeping what it holds (lock files).
    Keep,
    /// Write from empty, creating the file if missing (the pid file).
    Replace,
    /// Read and write a file that must not exist yet (a temp file renamed into place later).
    CreateNew,
}

/// Opens `path`, a file in a state dir, never through a symbolic link, and refuses it unless
/// it is a regular file and, to be written, one the effective user owns and only they may
/// write.
pub fn open(path: &Path, access: Access) -> io::Result<File> {
    let mut o = OpenOptions::new();
    match access {
        Access::Read => o.read(true),
        Access::ReadWrite => o.read(true).write(true),
        Access::Append => o.read(true).append(true).create(true),
        Access::Keep => o.read(true).write(true).create(true),
        Access::Replace => o.write(true).create(true).truncate(true),
        Access::CreateNew => o.read(true).write(true).create_new(true),
    };
    // std adds O_CLOEXEC itself. O_NONBLOCK: a FIFO must not hang the open; it is refused
    // below as not a regular file.
    o.mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    let file = o.open(path).map_err(|e| explain_open(path, e))?;
    let md = file.metadata()?;
    if !md.file_type().is_file() {
        return Err(refusal(path, "it is not a regular file"));
    }
    // Reading someone else's file hurts nobody (root running `status` on a user's mirror);
    // writing it would.
    if access != Access::Read {
        vouch(path, &md)?;
    }
    clear_nonblock(&file)?;
    Ok(file)
}

/// Opens a temp file to be renamed into place: a leftover of that name (a crash's, or
/// anything planted there) is removed first, unlinking never follows a link, and the new one
/// is created O_EXCL, so the rename publishes exactly what was written.
pub fn create_temp(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot remove the leftover {}: {e}", path.display()),
            ))
        }
        _ => {}
    }
    open(path, Access::CreateNew)
}

/// Reads a whole state-dir file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open(path, Access::Read)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Creates the state dir (0700) if missing, then refuses it unless the effective user owns it
/// and only they may write it, and refuses any entry in it that is a symbolic link or is
/// someone else's. The path may lead through symbolic links to the directory; nothing in it may
/// be one.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
    let md = std::fs::metadata(dir)?;
    if !md.is_dir() {
        return Err(refusal(dir, "it is not a directory"));
    }
    vouch(dir, &md)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let md = std::fs::symlink_metadata(&path)?;
        if md.file_type().is_symlink() {
            return Err(refusal(&path, SYMLINK));
        }
        vouch(&path, &md)?;
    }
    Ok(())
}

/// Opens (creating it 0700 if missing) a directory in the state dir, never through a symbolic
/// link, refusing it unless it is the effective user's own and only they may write it. The
/// handle serves for flock and fsync.
pub fn open_subdir(path: &Path) -> io::Result<File> {
    match DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create {}: {e}", path.display()),
            ))
        }
        _ => {}
    }
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| explain_open(path, e))?;
    vouch(path, &dir.metadata()?)?;
    Ok(dir)
}

const SYMLINK: &str = "it is a symbolic link, and nothing in a state dir is opened through one";

/// The owner must be the effective user, and nobody else may write.
fn vouch(path: &Path, md: &Metadata) -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return Err(refusal(
            path,
            &format!(
                "it is owned by {}, not by {} who runs ftpsync; a state dir and everything in \
                 it must be the mounting user's own",
                describe_user(md.uid()),
                describe_user(me)
            ),
        ));
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refusal(
            path,
            &format!(
                "it is writable by group or others (mode {mode:04o}); run: chmod go-w {}",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn refusal(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing {}: {why}", path.display()),
    )
}

/// ELOOP from O_NOFOLLOW (ENOTDIR with O_DIRECTORY) means a symbolic link: say so, with the
/// path.
fn explain_open(path: &Path, e: io::Error) -> io::Error {
    let symlink = match e.raw_os_error() {
        Some(libc::ELOOP) => true,
        Some(libc::ENOTDIR) => std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink()),
        _ => false,
    };
    if symlink {
        return refusal(path, SYMLINK);
    }
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn clear_nonblock(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `uid 65534 (nobody)`, or just the number when the name is unknown.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("uid {uid} ({name})"),
        None => format!("uid {uid}"),
    }
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, which outlives their use here.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found = std::ptr::null_mut();
        let r = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if r != 0 || found.is_null() || pw.pw_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn symlinks_fifos_and_open_modes_are_refused_and_temps_are_new() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for access in [Access::Read, Access::Append, Access::Keep, Access::Replace] {
            let e = open(&link, access).unwrap_err().to_string();
            assert!(e.contains("symbolic link") && e.contains("link"), "{e}");
        }
        let mut t = create_temp(&link).unwrap();
        t.write_all(b"new").unwrap();
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path in our temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open(&fifo, Access::Read).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");

        let shared = d.path().join("shared");
        std::fs::write(&shared, b"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = open(&shared, Access::Append).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
    }

    #[test]
    fn a_subdir_that_is_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let sub = d.path().join("journal");
        std::os::unix::fs::symlink(outside.path(), &sub).unwrap();
        let e = open_subdir(&sub).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = prepare(d.path()).unwrap_err().to_string();
        assert!(e.contains("symbolic link") && e.contains("journal"), "{e}");
    }
}
