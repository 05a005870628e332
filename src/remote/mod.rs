//! The SFTP transport over ssh2: connect with a pinned host key and a modern-only algorithm
//! policy, authenticate by agent or key file, and operate on files confined to the remote root:
//! verified uploads (temp name, fsync, remote hash, atomic posix-rename), hashed downloads,
//! renames, deletes, directories, symlinks, attributes and hashes.
//!
//! Blocking; one [`Connection`] per worker thread (an ssh2 Session serialises all its users).
//! The [`Transport`] trait is what the sync engine uses, so it can run against
//! [`MockTransport`] in unit tests.

mod b64;
mod capabilities;
mod connect;
mod connection;
pub mod credentials;
mod error;
mod keyfile;
mod linkfile;
pub mod marker;
/// An in-memory server for the engine's unit tests: not in the shipped binary.
#[cfg(test)]
mod mock;
pub mod path;
mod posix;
mod probe;
mod refusal;
pub mod url;
pub mod verify;

use std::io::{Read, Write};
use std::time::Duration;

pub use capabilities::Symlinks;
pub use connect::{
    check_host_key, probe_host_key, Algorithms, ConnectOptions, Negotiated, CIPHERS,
    HOST_KEY_ALGORITHMS, KEX_ALGORITHMS, MACS,
};
pub use connection::Connection;
pub use credentials::{check_private, Secret, SecretSource};
pub use error::{display_path, ErrorKind, HostKeyInfo, HostKeyProblem, Reach, RemoteError, Result};
pub use keyfile::is_encrypted as key_is_encrypted;
#[cfg(test)]
pub use mock::{MockNode, MockOp, MockTransport};
pub use refusal::{command_hint, explain_refusal};
pub use url::Remote;
pub use verify::{HashTool, VerifyMethod, VerifyMode};

pub use crate::hash::Sha256Hash;

/// The type of a remote directory entry (as lstat sees it: symlinks are not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// Devices, FIFOs, sockets: never created or followed by ftpsync.
    Other,
}

/// What lstat says about a remote path. Times are whole seconds: SFTP v3 carries no more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (0o7777), without the file type.
    pub mode: u32,
    pub mtime: i64,
    pub atime: i64,
    /// The link's target, for a symlink.
    pub symlink_target: Option<Vec<u8>>,
}

/// Attributes set on a remote file: permission bits and both times (whole seconds, 0 to
/// 2^32-1, the range of SFTP v3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub atime: i64,
    pub mtime: i64,
}

/// What an upload did, for status and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub bytes: u64,
    /// The hash of the bytes sent, equal to the expected one and to the remote copy's.
    pub sha256: Sha256Hash,
    pub verified_by: VerifyMethod,
    pub elapsed: Duration,
}

/// What a download read: the bytes and their SHA-256, and the file as it was when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    pub bytes: u64,
    /// The hash of the bytes read (and written to the destination), computed while streaming.
    pub sha256: Sha256Hash,
    /// The regular file's attributes when it was opened (`bytes` equals its size).
    pub stat: RemoteStat,
}

/// What `mkdir_all` tells its caller of a directory it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirNews {
    /// About to be asked for: should the answer be lost with the connection (or the daemon
    /// killed before it comes), the server may hold it all the same.
    Asking,
    /// Made, with the mode the server gave it.
    Made(u32),
}

/// Who we are talking to and how, for status and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The remote as configured (sftp://user@host:port/path).
    pub server: String,
    pub host_key: HostKeyInfo,
    pub negotiated: Negotiated,
    /// How the login succeeded ("ssh-agent", "key /path", "key /path + keyboard-interactive").
    pub auth: String,
    /// Whether and how the server makes symlinks (probed at connect).
    pub symlinks: Symlinks,
    /// Whether the server keeps the permission bits set on it (probed at connect).
    pub modes: bool,
    /// Whether the server forces a file to disk when asked (fsync@openssh.com).
    pub fsync: bool,
    /// How uploads are verified there: its hash command over exec, or reading them back.
    pub verify: VerifyMethod,
    /// The remote root as the server resolved it (absolute, symlinks followed).
    pub root: Vec<u8>,
}

/// The operations the sync engine needs from a remote. Every path is relative to the remote
/// root (raw bytes, validated: no empty, "." or ".." components, no leading '/', no NUL);
/// nothing can address outside the root, and no parent directory that is a symlink is ever
/// followed. Object-safe: the engine holds a `Box<dyn Transport>` per worker.
pub trait Transport: Send {
    /// The server and session, when this is a real connection.
    fn session(&self) -> Option<SessionInfo> {
        None
    }

    /// The entry at `rel`, not following a final symlink; None if absent. "" is the root.
    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>>;

    /// Makes `rel` a directory with `mode`: creates it if absent, sets the mode if it exists.
    /// Its parent must exist.
    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()>;

    /// Makes `rel` and every missing ancestor a directory (new ones 0755). `news` hears of
    /// each directory it creates before it asks the server, and again as soon as it exists.
    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()>;

    /// Uploads `size` bytes from `src` to `rel` (whose parent must exist): written to a temp
    /// name beside it, hashed as sent (must equal `sha256`, else `SourceChanged`), fsync'd,
    /// verified remotely, given `attrs`, then atomically renamed over `rel`.
    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport>;

    /// Renames atomically, replacing a file (or empty directory) at `to`.
    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()>;

    /// Renames, never replacing anything: fails if `to` exists (or appears meanwhile, on a
    /// server whose plain SFTP rename refuses to replace, as the protocol says).
    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()>;

    /// Removes a file or symlink.
    fn remove_file(&mut self, rel: &[u8]) -> Result<()>;

    /// Removes an empty directory.
    fn remove_dir(&mut self, rel: &[u8]) -> Result<()>;

    /// Makes `rel` a symlink to `target`, atomically replacing a file or symlink there.
    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()>;

    /// The target of the symlink at `rel`.
    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>>;

    /// Sets mode and both times of a file or directory (never through a symlink).
    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()>;

    /// SHA-256 of each regular file in `rels`, in order; None where there is no regular file.
    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>>;

    /// The names in directory `dir` ("" is the root) and what they are, without "." and "..".
    fn list(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, FileKind)>> {
        let entries = self.list_stat(dir)?;
        Ok(entries.into_iter().map(|(n, st)| (n, st.kind)).collect())
    }

    /// The entries of directory `dir` ("" is the root; itself never a symlink) with what lstat
    /// says of each, a symlink's target included (None if it could not be read), without "."
    /// and "..". Names are the server's bytes as sent: the caller validates them.
    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>>;

    /// Streams the regular file at `rel` into `dst` (1 MiB reads), hashing what it reads.
    /// Never follows a symlink: `rel` must be a regular file as lstat sees it, and no parent
    /// may be a symlink. The bytes read must be as many as the file had when opened, else
    /// `SourceChanged` (it changed on the server meanwhile). A failure to write `dst` is
    /// `Other`, its message naming the local copy.
    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport>;
}

/// Connects (see [`Connection::connect`]). Where the server makes no symlinks, they are kept
/// as link files, in rclone's convention (see `linkfile`).
pub fn open(opts: &ConnectOptions) -> Result<Box<dyn Transport>> {
    let c = Connection::connect(opts)?;
    if !c.symlinks().makes_links() {
        return Ok(Box::new(linkfile::LinkFiles::new(Box::new(c))));
    }
    Ok(Box::new(c))
}

/// One read from `src`, retried when interrupted by a signal.
pub(crate) fn read_chunk(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match src.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
