//! A live SFTP connection confined to the remote root, implementing [`Transport`].

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh2::{ErrorCode, FileStat, OpenFlags, OpenType, Session, Sftp};

use super::capabilities::{self, Symlinks};
use super::connect::{establish, ConnectOptions, Negotiated};
use super::error::{classify, describe, display_path, op_error, ErrorKind, HostKeyInfo};
use super::error::{RemoteError, Result};
use super::path::{self, ancestors, join, validate};
use super::posix::PosixRename;
use super::verify::{self, HashTool, VerifyMethod, VerifyMode};
use super::{
    read_chunk, Attrs, DirNews, DownloadReport, FileKind, RemoteStat, SessionInfo, Sha256Hash,
    Transport, UploadReport,
};

/// Bytes per SFTP write and read: libssh2 pipelines within one call, and 1 MiB measured as fast
/// as anything larger.
const CHUNK: usize = 1 << 20;
/// Files at least this big are hashed by the remote command when it works (see `exec_plan`).
const EXEC_MIN_BYTES: u64 = 1 << 20;
/// A hash request for at least this many files uses batched remote commands for all of them.
const EXEC_MIN_FILES: usize = 16;
/// Below this much free space a failed write is taken for a full disk.
const LOW_SPACE: u64 = 4 << 20;
/// Assumed worst remote hashing speed when sizing an exec's timeout (coreutils on a slow disk).
const SLOW_HASH_BYTES_PER_SEC: u64 = 20 << 20;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// One SSH session with its SFTP channel, confined to `root`. Not shared between threads: an
/// ssh2 Session serialises every call, so each worker has its own.
pub struct Connection {
    session: Session,
    sftp: Sftp,
    posix: PosixRename,
    /// Relative directories this connection made or found: spares `mkdir_all` round trips.
    /// Only a hint: the server can change under us, so safety never relies on it.
    known_dirs: HashSet<Vec<u8>>,
    verify_mode: VerifyMode,
    info: SessionInfo,
    io_timeout: Duration,
}

fn p(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn kind_of(perm: u32) -> FileKind {
    match perm & S_IFMT {
        S_IFREG => FileKind::File,
        S_IFDIR => FileKind::Dir,
        S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// What lstat said, as the transport reports it.
fn remote_stat(st: &FileStat, symlink_target: Option<Vec<u8>>) -> RemoteStat {
    let perm = st.perm.unwrap_or(0);
    RemoteStat {
        kind: kind_of(perm),
        size: st.size.unwrap_or(0),
        mode: perm & 0o7777,
        mtime: st.mtime.unwrap_or(0) as i64,
        atime: st.atime.unwrap_or(0) as i64,
        symlink_target,
    }
}

fn is_not_found(e: &ssh2::Error) -> bool {
    classify(e) == ErrorKind::NotFound
}

/// SFTP v3 carries times as unsigned 32-bit seconds.
fn sftp_time(t: i64, what: &str, rel: &[u8]) -> Result<u64> {
    u32::try_from(t).map(u64::from).map_err(|_| {
        RemoteError::new(
            ErrorKind::Other,
            format!(
                "{what} {t} of {} is outside what SFTP can carry (0 to 2^32-1 seconds)",
                display_path(rel)
            ),
        )
    })
}

fn attrs_stat(attrs: &Attrs, rel: &[u8]) -> Result<FileStat> {
    // Both times always: ssh2 sends a missing atime as 0.
    Ok(FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(attrs.mode & 0o7777),
        atime: Some(sftp_time(attrs.atime, "atime", rel)?),
        mtime: Some(sftp_time(attrs.mtime, "mtime", rel)?),
    })
}

impl Connection {
    /// Connects, checks the host key, authenticates, opens SFTP and resolves the remote root,
    /// which must be an existing directory.
    pub fn connect(opts: &ConnectOptions) -> Result<Connection> {
        let est = establish(opts)?;
        let sftp = est
            .session
            .sftp()
            .map_err(|e| op_error("cannot start the SFTP subsystem on", "the server", &e))?;
        let posix = PosixRename::open(&est.session)
            .map_err(|e| op_error("cannot open a second SFTP channel on", "the server", &e))?;
        let root = resolve_root(&sftp, &opts.remote.path)?;
        log::info!("remote root {}", display_path(&root));
        let found = capabilities::probe(&sftp, &root);
        let mut c = Connection {
            session: est.session,
            sftp,
            posix,
            known_dirs: HashSet::new(),
            verify_mode: opts.verify,
            info: SessionInfo {
                server: opts.remote.to_string(),
                host_key: est.host_key,
                negotiated: est.negotiated,
                auth: est.auth,
                symlinks: found.symlinks,
                modes: found.modes,
                fsync: found.fsync,
                verify: VerifyMethod::Readback,
                root,
            },
            io_timeout: opts.io_timeout,
        };
        c.info.verify = c.probe_verify()?;
        log::info!("verifying uploads by {}", c.info.verify);
        Ok(c)
    }

    /// The server's host key (type and SHA256 fingerprint), for status and audit.
    pub fn host_key(&self) -> &HostKeyInfo {
        &self.info.host_key
    }

    /// The negotiated algorithms, for status and audit.
    pub fn negotiated(&self) -> &Negotiated {
        &self.info.negotiated
    }

    /// Whether and how the server makes symlinks.
    pub fn symlinks(&self) -> Symlinks {
        self.info.symlinks
    }

    /// The absolute remote root.
    pub fn root(&self) -> &[u8] {
        &self.info.root
    }

    /// How this connection verifies uploads (probed at connect).
    pub fn verify_method(&self) -> VerifyMethod {
        self.info.verify
    }

    /// What `verify_mode` allows and the server offers (Auto, Exec: its hash command).
    fn probe_verify(&mut self) -> Result<VerifyMethod> {
        match self.verify_mode {
            VerifyMode::Readback => Ok(VerifyMethod::Readback),
            VerifyMode::Exec | VerifyMode::Auto => self.probe_exec(),
        }
    }

    /// Sends an SSH disconnect; dropping also closes, this just says goodbye politely.
    pub fn close(self) {
        let _ = self.session.disconnect(None, "ftpsync done", None);
    }

    fn abs(&self, rel: &[u8]) -> Vec<u8> {
        join(&self.info.root, rel)
    }

    fn raw_lstat(&self, abs: &[u8]) -> std::result::Result<Option<FileStat>, ssh2::Error> {
        match self.sftp.lstat(p(abs)) {
            Ok(st) => Ok(Some(st)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks, right before each operation, that no ancestor of `rel` is a symlink (one planted
    /// on the server could lead outside the root). The fast way is one round trip whatever the
    /// depth: the server's realpath of the parent is the parent's own path (the root was
    /// resolved with realpath at connect). When it is not (or the server answers "no such
    /// file", as OpenSSH sometimes does for a directory being created beside), each ancestor
    /// is lstat'ed. Never cached: the server may change between operations.
    fn check_parents(&mut self, rel: &[u8]) -> Result<()> {
        let (parent, _) = path::split_parent(rel);
        if parent.is_empty() {
            return Ok(());
        }
        let abs = self.abs(parent);
        if let Ok(real) = self.sftp.realpath(p(&abs)) {
            if real.as_os_str().as_bytes() == abs.as_slice() {
                return Ok(());
            }
        }
        let walked = self.walk_ancestors(parent);
        if walked.is_err() {
            self.known_dirs.clear();
        }
        walked
    }

    /// Each of `dir` and its ancestors must be a real directory, not a symlink.
    fn walk_ancestors(&self, dir: &[u8]) -> Result<()> {
        for d in ancestors(dir).chain(std::iter::once(dir)) {
            let st = self
                .raw_lstat(&self.abs(d))
                .map_err(|e| op_error("cannot lstat", &display_path(d), &e))?;
            self.require_dir(d, st.as_ref())?;
        }
        Ok(())
    }

    fn require_dir(&self, dir: &[u8], st: Option<&FileStat>) -> Result<()> {
        let shown = display_path(dir);
        match st.map(|s| kind_of(s.perm.unwrap_or(0))) {
            Some(FileKind::Dir) => Ok(()),
            Some(FileKind::Symlink) => Err(RemoteError::new(
                ErrorKind::Refused,
                format!(
                    "refusing to go through remote {shown}: it is a symlink, not a directory \
                     (planted on the server?); nothing is written through it"
                ),
            )),
            Some(_) => Err(RemoteError::new(
                ErrorKind::Other,
                format!("remote {shown} exists and is not a directory"),
            )),
            None => Err(RemoteError::new(
                ErrorKind::NotFound,
                format!("remote directory {shown} does not exist"),
            )),
        }
    }

    /// Forgets known directories at or below `rel` (after it was renamed or removed).
    fn forget_dirs(&mut self, rel: &[u8]) {
        self.known_dirs
            .retain(|d| !(d == rel || (d.starts_with(rel) && d.get(rel.len()) == Some(&b'/'))));
    }

    /// Validates `rel` and checks its parents: the preamble of every operation.
    fn prepare(&mut self, rel: &[u8], allow_root: bool) -> Result<Vec<u8>> {
        validate(rel, allow_root)?;
        self.check_parents(rel)?;
        Ok(self.abs(rel))
    }

    fn stat_of(&self, rel: &[u8], abs: &[u8], st: &FileStat) -> Result<RemoteStat> {
        let perm = st.perm.unwrap_or(0);
        let kind = kind_of(perm);
        let symlink_target = if kind == FileKind::Symlink {
            Some(self.raw_readlink(rel, abs)?)
        } else {
            None
        };
        Ok(remote_stat(st, symlink_target))
    }

    fn raw_readlink(&self, rel: &[u8], abs: &[u8]) -> Result<Vec<u8>> {
        self.sftp
            .readlink(p(abs))
            .map(|t| t.into_os_string().into_encoded_bytes())
            .map_err(|e| op_error("cannot readlink", &display_path(rel), &e))
    }

    /// Renames with posix-rename@openssh.com (atomic replace). A server without it gets the
    /// plain SFTP rename, which never replaces: fine when the target does not exist, an error
    /// otherwise (never unlink-then-rename, which would leave a moment with no file).
    fn atomic_rename(&self, from: &[u8], to: &[u8], shown: &str) -> Result<()> {
        log::debug!("remote rename {shown}");
        let e = match self.posix.rename(from, to) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if e.code() != ErrorCode::SFTP(libssh2_sys::LIBSSH2_FX_OP_UNSUPPORTED) {
            return Err(op_error("cannot rename", shown, &e));
        }
        let exists = self
            .raw_lstat(to)
            .map_err(|e| op_error("cannot lstat", shown, &e))?;
        if exists.is_some() {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!(
                    "cannot replace {shown} atomically: the server lacks posix-rename@openssh.com"
                ),
            ));
        }
        self.sftp
            .rename(p(from), p(to), None)
            .map_err(|e| op_error("cannot rename", shown, &e))
    }

    /// Removes a temp file after a failure, unless the connection itself is gone (then a
    /// cleanup pass removes leftovers, recognised by `path::is_temp_name`).
    /// mkdir that tolerates losing a race: another connection of ours may create the same
    /// directory between our lstat and our mkdir (OpenSSH then answers a bare "failure").
    /// Says whether this call made it (false: someone else did, a moment before).
    fn create_dir(&mut self, rel: &[u8], abs: &[u8], mode: u32) -> Result<bool> {
        let shown = display_path(rel);
        log::debug!("remote mkdir {shown}");
        let made = match self.sftp.mkdir(p(abs), (mode & 0o7777) as i32) {
            Ok(()) => true,
            Err(e) => match self.raw_lstat(abs) {
                Ok(Some(st)) => self.require_dir(rel, Some(&st)).map(|()| false)?,
                _ => return Err(op_error("cannot mkdir", &shown, &e)),
            },
        };
        self.known_dirs.insert(rel.to_vec());
        Ok(made)
    }

    /// A NotFound may come from a directory the cache vouches for that is gone (removed by
    /// another connection of ours, or on the server): the next mkdir_all looks again.
    fn recheck_dirs_if_missing<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound) {
            self.known_dirs.clear();
        }
        r
    }

    fn symlink_inner(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        let abs = self.prepare(rel, false)?;

        let shown = display_path(rel);
        if target.is_empty() || target.contains(&0) {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!("refusing symlink {shown}: empty target or NUL byte in it"),
            ));
        }
        // Made under a temp name and renamed over, so an existing entry is replaced atomically.
        let tmp = self.abs(&path::temp_beside(rel));
        let Some((first, second)) = self.info.symlinks.order(&tmp, target) else {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!("cannot create symlink {shown}: the server makes no symlinks"),
            ));
        };
        self.sftp
            .symlink(p(first), p(second))
            .map_err(|e| op_error("cannot create symlink", &shown, &e))?;
        // It counts only where it was meant to be, pointing where it was meant to point.
        let made = self
            .raw_lstat(&tmp)
            .map_err(|e| op_error("cannot lstat", &shown, &e))?
            .is_some_and(|st| kind_of(st.perm.unwrap_or(0)) == FileKind::Symlink)
            && self.raw_readlink(rel, &tmp)? == target;
        if !made {
            return Err(RemoteError::new(
                ErrorKind::Refused,
                format!("the server did not make symlink {shown} as asked"),
            ));
        }
        self.atomic_rename(&tmp, &abs, &shown).inspect_err(|e| {
            self.discard_temp(&tmp, e);
        })
    }

    fn discard_temp(&self, tmp_abs: &[u8], why: &RemoteError) {
        if why.kind() == ErrorKind::Transient {
            return;
        }
        if let Err(e) = self.sftp.unlink(p(tmp_abs)) {
            log::warn!(
                "cannot remove temporary {}: {}",
                display_path(tmp_abs),
                describe(&e)
            );
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the SFTP channels blocks until the server answers: on a dead link that would
        // be the full I/O timeout, twice. A short bound is enough for a healthy server.
        self.session.set_timeout(2000);
    }
}

/// Resolves the configured root (absolute, or relative to the login directory) once, and
/// checks that it is a directory.
fn resolve_root(sftp: &Sftp, configured: &str) -> Result<Vec<u8>> {
    let shown = display_path(configured.as_bytes());
    // A root that is not there is no passing trouble: it needs the user (or the server's
    // administrator), so it halts the mirror like a refused login, with what to do.
    let unusable = |e: RemoteError| match e.kind() {
        ErrorKind::NotFound | ErrorKind::Other => RemoteError::new(
            ErrorKind::RootUnusable,
            format!(
                "{}; create it on the server first (e.g. `mkdir -p {shown}` there), or name \
                 the right directory in the remote URL",
                e.message()
            ),
        ),
        _ => e,
    };
    let resolved = sftp
        .realpath(Path::new(configured))
        .map_err(|e| unusable(op_error("cannot resolve the remote root", &shown, &e)))?;
    let root = resolved.into_os_string().into_encoded_bytes();
    if !root.starts_with(b"/") {
        return Err(RemoteError::new(
            ErrorKind::Other,
            format!("the server resolved the remote root {shown} to a relative path"),
        ));
    }
    let st = sftp
        .lstat(p(&root))
        .map_err(|e| unusable(op_error("remote root", &display_path(&root), &e)))?;
    if kind_of(st.perm.unwrap_or(0)) != FileKind::Dir {
        return Err(unusable(RemoteError::new(
            ErrorKind::Other,
            format!("remote root {} is not a directory", display_path(&root)),
        )));
    }
    Ok(root)
}

// Uploads.
impl Connection {
    fn upload_inner(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        let start = Instant::now();
        let abs = self.prepare(rel, false)?;
        let stat = attrs_stat(attrs, rel)?;
        let method = self.verify_method();
        let tmp_rel = path::temp_beside(rel);
        let tmp_abs = self.abs(&tmp_rel);
        let shown = display_path(rel);
        // EXCLUSIVE: never write through something already at the temp name (a planted link).
        // 0600 until verified, so nobody on the server reads a partial file.
        let mut file = self
            .sftp
            .open_mode(
                p(&tmp_abs),
                OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
                0o600,
                OpenType::File,
            )
            .map_err(|e| op_error("cannot create a temporary file for", &shown, &e))?;
        let used = if exec_plan(method, std::slice::from_ref(&tmp_abs), &[size])[0] {
            method
        } else {
            VerifyMethod::Readback
        };
        let result = self
            .send(&mut file, src, size, sha256, &shown)
            .and_then(|()| self.fsync_close(file, &shown))
            .and_then(|()| self.verify_temp(&tmp_abs, size, sha256, used, &shown))
            .and_then(|()| self.set_temp_attrs(&tmp_abs, &stat, &shown))
            .and_then(|()| self.atomic_rename(&tmp_abs, &abs, &shown));
        if let Err(e) = result {
            self.discard_temp(&tmp_abs, &e);
            return Err(e);
        }
        Ok(UploadReport {
            bytes: size,
            sha256: *sha256,
            verified_by: used,
            elapsed: start.elapsed(),
        })
    }

    /// Streams `src` into the open temp file, hashing what is sent. The bytes must be exactly
    /// `size` and hash to `sha256`; otherwise the local file changed while being read.
    fn send(
        &self,
        file: &mut ssh2::File,
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        shown: &str,
    ) -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        let mut hasher = Sha256::new();
        let mut sent = 0u64;
        loop {
            let n = read_chunk(src, &mut buf).map_err(|e| {
                RemoteError::new(
                    ErrorKind::Other,
                    format!("cannot read the local file for {shown}: {e}"),
                )
            })?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if sent > size {
                return Err(source_changed(shown, "grew"));
            }
            hasher.update(&buf[..n]);
            if let Err(e) = file.write_all(&buf[..n]) {
                return Err(self.write_failure(file, shown, size - sent, &e));
            }
        }
        if sent != size {
            return Err(source_changed(shown, "shrank"));
        }
        if <[u8; 32]>::from(hasher.finalize()) != *sha256 {
            return Err(source_changed(shown, "changed"));
        }
        Ok(())
    }

    /// Classifies a failed write: OpenSSH reports a full disk as a generic failure, so ask the
    /// server how much space is left. A write failure is always worth retrying.
    fn write_failure(
        &self,
        file: &mut ssh2::File,
        shown: &str,
        remaining: u64,
        e: &std::io::Error,
    ) -> RemoteError {
        match file.statvfs() {
            Ok(vfs) => {
                let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
                if free < LOW_SPACE || free < remaining {
                    RemoteError::new(
                        ErrorKind::NoSpace,
                        format!("remote disk full writing {shown} ({free} bytes free; the server said: {e})"),
                    )
                } else {
                    RemoteError::new(
                        ErrorKind::Transient,
                        format!("write to the remote copy of {shown} failed: {e}"),
                    )
                }
            }
            Err(se) => RemoteError::new(
                retryable(classify(&se)),
                format!("write to the remote copy of {shown} failed: {e}"),
            ),
        }
    }

    /// Forces the temp file to the server's disk, then closes it.
    /// A server without fsync@openssh.com (found at connect, said once then) is not asked.
    fn fsync_close(&self, mut file: ssh2::File, shown: &str) -> Result<()> {
        if !self.info.fsync {
            return Ok(());
        }
        if let Err(e) = file.fsync() {
            let msg = format!(
                "fsync of the remote copy of {shown} failed: {}",
                describe(&e)
            );
            return Err(RemoteError::new(retryable(classify(&e)), msg));
        }
        Ok(())
    }

    /// Hashes the temp file on the server's side and compares. Runs before mode and times are
    /// set, since hashing reads the file and may touch its atime.
    fn verify_temp(
        &self,
        tmp_abs: &[u8],
        size: u64,
        sha256: &Sha256Hash,
        method: VerifyMethod,
        shown: &str,
    ) -> Result<()> {
        let got = self.hash_files(&[tmp_abs.to_vec()], &[size], method)?;
        if got[0] == *sha256 {
            return Ok(());
        }
        Err(RemoteError::new(
            ErrorKind::VerifyMismatch,
            format!(
                "verification of {shown} failed: the remote copy hashes to {}, {} was sent",
                hex::encode(got[0]),
                hex::encode(sha256)
            ),
        ))
    }

    fn set_temp_attrs(&self, tmp_abs: &[u8], stat: &FileStat, shown: &str) -> Result<()> {
        self.sftp
            .setstat(p(tmp_abs), stat.clone())
            .map_err(|e| op_error("cannot set mode and times of", shown, &e))
    }
}

fn source_changed(shown: &str, how: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::SourceChanged,
        format!("the local file {shown} {how} while it was uploaded; a newer version follows"),
    )
}

/// For failures of writes and fsyncs: whatever the code, retrying may succeed.
fn retryable(kind: ErrorKind) -> ErrorKind {
    match kind {
        ErrorKind::NoSpace | ErrorKind::Permission | ErrorKind::NotFound => kind,
        _ => ErrorKind::Transient,
    }
}

// Downloads and listings with attributes.
impl Connection {
    /// The regular file at `rel` (lstat: a symlink is refused, never followed), opened for
    /// reading and checked to be what lstat saw: SFTP's open follows symlinks, so a file
    /// swapped for one between the two calls shows up as a different type, size or mtime.
    fn open_regular(&mut self, rel: &[u8]) -> Result<(ssh2::File, FileStat)> {
        let abs = self.prepare(rel, false)?;
        let shown = display_path(rel);
        let st = self
            .raw_lstat(&abs)
            .map_err(|e| op_error("cannot lstat", &shown, &e))?;
        let st = match st {
            Some(st) => st,
            None => {
                return Err(RemoteError::new(
                    ErrorKind::NotFound,
                    format!("remote {shown} does not exist"),
                ))
            }
        };
        match kind_of(st.perm.unwrap_or(0)) {
            FileKind::File => {}
            FileKind::Symlink => {
                return Err(RemoteError::new(
                    ErrorKind::Refused,
                    format!("refusing to read remote {shown}: it is a symlink, never followed"),
                ))
            }
            _ => {
                return Err(RemoteError::new(
                    ErrorKind::Other,
                    format!("remote {shown} is not a regular file"),
                ))
            }
        }
        let mut file = self
            .sftp
            .open(p(&abs))
            .map_err(|e| op_error("cannot open", &shown, &e))?;
        let opened = file
            .stat()
            .map_err(|e| op_error("cannot fstat", &shown, &e))?;
        let same = kind_of(opened.perm.unwrap_or(0)) == FileKind::File
            && opened.size == st.size
            && opened.mtime == st.mtime;
        if !same {
            return Err(RemoteError::new(
                ErrorKind::SourceChanged,
                format!("remote {shown} changed while it was being opened"),
            ));
        }
        Ok((file, opened))
    }
}

// Remote hashing.
impl Connection {
    /// Runs the probes: openssl first (faster), then sha256sum. A tool counts only if it exits
    /// 0 and prints the right hash of /dev/null: a ForceCommand internal-sftp server accepts
    /// the exec request, prints a refusal and exits 1.
    fn probe_exec(&mut self) -> Result<VerifyMethod> {
        for tool in [HashTool::Openssl, HashTool::Sha256sum] {
            let cmd = verify::command_line(tool, &["/dev/null"]);
            match self.run_exec(&cmd, self.io_timeout) {
                Ok((0, out, _)) => {
                    let parsed = verify::parse_hash_output(&out, &[verify::PROBE_PATH]);
                    if parsed.is_ok_and(|h| h[0] == verify::EMPTY_SHA256) {
                        return Ok(VerifyMethod::Exec(tool));
                    }
                    log::debug!("probe {cmd}: unexpected output {}", display_path(&out));
                }
                Ok((status, out, err)) => log::debug!(
                    "probe {cmd}: exit {status}, {} {}",
                    display_path(&out),
                    display_path(&err)
                ),
                Err(e) if e.kind() == ErrorKind::Transient => return Err(e),
                Err(e) => log::debug!("probe {cmd}: {e}"),
            }
        }
        if self.verify_mode == VerifyMode::Exec {
            return Err(RemoteError::new(
                ErrorKind::Other,
                "verify=exec, but the server runs neither `openssl dgst` nor `sha256sum` over \
                 exec (an sftp-only server?); use verify=auto or readback",
            ));
        }
        Ok(VerifyMethod::Readback)
    }

    /// Runs a command over an exec channel: (exit status, stdout, stderr, capped).
    fn run_exec(&self, cmd: &str, timeout: Duration) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let fail = |e: ssh2::Error| op_error("remote command failed:", "hash", &e);
        self.session.set_timeout(ms(timeout));
        let result = (|| {
            let mut ch = self.session.channel_session().map_err(fail)?;
            ch.exec(cmd).map_err(fail)?;
            let mut out = Vec::new();
            ch.read_to_end(&mut out).map_err(io_fail)?;
            let mut err = Vec::new();
            ch.stderr()
                .take(64 * 1024)
                .read_to_end(&mut err)
                .map_err(io_fail)?;
            ch.wait_close().map_err(fail)?;
            Ok((ch.exit_status().map_err(fail)?, out, err))
        })();
        self.session.set_timeout(ms(self.io_timeout));
        result
    }

    /// Hashes regular files given by absolute path (`sizes` only size the timeouts).
    fn hash_files(
        &self,
        abs: &[Vec<u8>],
        sizes: &[u64],
        method: VerifyMethod,
    ) -> Result<Vec<Sha256Hash>> {
        let by_exec = exec_plan(method, abs, sizes);
        let mut out = vec![[0u8; 32]; abs.len()];
        let mut exec_idx = Vec::new();
        for (i, a) in abs.iter().enumerate() {
            if by_exec[i] {
                exec_idx.push(i);
            } else {
                out[i] = self.readback(a)?;
            }
        }
        if let VerifyMethod::Exec(tool) = method {
            self.exec_hash(tool, abs, sizes, &exec_idx, &mut out)?;
        }
        Ok(out)
    }

    fn exec_hash(
        &self,
        tool: HashTool,
        abs: &[Vec<u8>],
        sizes: &[u64],
        idx: &[usize],
        out: &mut [Sha256Hash],
    ) -> Result<()> {
        let lens: Vec<usize> = idx.iter().map(|&i| abs[i].len()).collect();
        for range in verify::batches(&lens, verify::BATCH_FILES, verify::BATCH_BYTES) {
            let batch = &idx[range];
            let names: Vec<&[u8]> = batch.iter().map(|&i| abs[i].as_slice()).collect();
            // exec_safe guaranteed UTF-8.
            let strs: Vec<&str> = names
                .iter()
                .filter_map(|n| std::str::from_utf8(n).ok())
                .collect();
            let bytes: u64 = batch
                .iter()
                .map(|&i| sizes.get(i).copied().unwrap_or(0))
                .sum();
            let timeout = self.io_timeout + Duration::from_secs(bytes / SLOW_HASH_BYTES_PER_SEC);
            let cmd = verify::command_line(tool, &strs);
            let (status, stdout, stderr) = self.run_exec(&cmd, timeout)?;
            let hashes = match status {
                0 => verify::parse_hash_output(&stdout, &names),
                _ => Err(format!("exit status {status}: {}", display_path(&stderr))),
            }
            .map_err(|why| {
                RemoteError::new(
                    ErrorKind::Other,
                    format!("remote hash command failed: {why}"),
                )
            })?;
            for (&i, h) in batch.iter().zip(hashes) {
                out[i] = h;
            }
        }
        Ok(())
    }

    /// Reads a file back over SFTP and hashes it here.
    fn readback(&self, abs: &[u8]) -> Result<Sha256Hash> {
        let shown = display_path(abs);
        let mut file = self
            .sftp
            .open(p(abs))
            .map_err(|e| op_error("cannot open for read-back", &shown, &e))?;
        let mut buf = vec![0u8; CHUNK];
        let mut hasher = Sha256::new();
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_fail(e).context(format!("read-back of {shown}"))),
            }
        }
        Ok(hasher.finalize().into())
    }
}

/// Which files to hash with the remote command (true) rather than by read-back. Starting a
/// remote command costs a shell start-up (measured 5 ms with a bare shell, 100 ms with a
/// login shell whose rc files run pyenv), so small files are read back unless there are
/// enough of them to share one batched command. Paths the command cannot carry are always
/// read back.
fn exec_plan(method: VerifyMethod, abs: &[Vec<u8>], sizes: &[u64]) -> Vec<bool> {
    let batched = abs.len() >= EXEC_MIN_FILES;
    abs.iter()
        .zip(sizes)
        .map(|(a, &size)| {
            matches!(method, VerifyMethod::Exec(_))
                && verify::exec_safe(a)
                && (batched || size >= EXEC_MIN_BYTES)
        })
        .collect()
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// An I/O error from an ssh2 stream: the code is lost by then; a timeout or a broken stream
/// means the connection is gone.
fn io_fail(e: std::io::Error) -> RemoteError {
    use std::io::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied => ErrorKind::Permission,
        _ => ErrorKind::Transient,
    };
    RemoteError::new(kind, e.to_string())
}

impl Transport for Connection {
    fn session(&self) -> Option<SessionInfo> {
        Some(self.info.clone())
    }

    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        let abs = self.prepare(rel, true)?;
        let st = self
            .raw_lstat(&abs)
            .map_err(|e| op_error("cannot lstat", &display_path(rel), &e))?;
        st.map(|st| self.stat_of(rel, &abs, &st)).transpose()
    }

    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()> {
        let abs = self.prepare(rel, false)?;
        let shown = display_path(rel);
        let existing = self
            .raw_lstat(&abs)
            .map_err(|e| op_error("cannot lstat", &shown, &e))?;
        if let Some(st) = existing {
            // mkdir of an existing directory fails with a generic error on OpenSSH: an
            // existing directory is success, with its mode brought in line.
            self.require_dir(rel, Some(&st))?;
            self.known_dirs.insert(rel.to_vec());
            if st.perm.unwrap_or(0) & 0o7777 == mode & 0o7777 {
                return Ok(());
            }
        } else {
            self.create_dir(rel, &abs, mode)?;
        }
        // The server's umask applied to mkdir: set the mode exactly.
        let st = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode & 0o7777),
            atime: None,
            mtime: None,
        };
        self.sftp
            .setstat(p(&abs), st)
            .map_err(|e| op_error("cannot chmod", &shown, &e))
    }

    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()> {
        validate(rel, true)?;
        if rel.is_empty() {
            return Ok(());
        }
        let dirs: Vec<Vec<u8>> = ancestors(rel)
            .chain(std::iter::once(rel))
            .map(<[u8]>::to_vec)
            .collect();
        for dir in dirs {
            if self.known_dirs.contains(&dir) {
                continue;
            }
            // The cache above is a hint: what it skips, the next operation's own check covers.
            // Anything made here is made under a parent checked just now.
            let made = self.check_parents(&dir).and_then(|()| {
                let abs = self.abs(&dir);
                match self.raw_lstat(&abs) {
                    Ok(None) => {
                        news(&dir, DirNews::Asking);
                        self.create_dir(&dir, &abs, 0o755).map(|ours| {
                            if ours {
                                // The server's umask may have narrowed the mode asked for.
                                let st = self.raw_lstat(&abs).ok().flatten();
                                let mode = st.and_then(|s| s.perm).map_or(0o755, |m| m & 0o7777);
                                news(&dir, DirNews::Made(mode));
                            }
                        })
                    }
                    Ok(st) => self.require_dir(&dir, st.as_ref()),
                    Err(e) => Err(op_error("cannot lstat", &display_path(&dir), &e)),
                }
            });
            if let Err(e) = made {
                self.known_dirs.clear();
                return Err(e);
            }
            self.known_dirs.insert(dir);
        }
        Ok(())
    }

    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        let sent = self.upload_inner(rel, src, size, sha256, attrs);
        self.recheck_dirs_if_missing(sent)
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let from_abs = self.prepare(from, false)?;
        let to_abs = self.prepare(to, false)?;
        let shown = format!("{} to {}", display_path(from), display_path(to));
        let moved = self.atomic_rename(&from_abs, &to_abs, &shown);
        self.recheck_dirs_if_missing(moved)?;
        self.forget_dirs(from);
        self.forget_dirs(to);
        Ok(())
    }

    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        let from_abs = self.prepare(from, false)?;
        let to_abs = self.prepare(to, false)?;
        let shown = format!("{} to {}", display_path(from), display_path(to));
        if self
            .raw_lstat(&to_abs)
            .map_err(|e| op_error("cannot lstat", &shown, &e))?
            .is_some()
        {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!("cannot rename {shown}: the target exists"),
            ));
        }
        // The SFTP v3 rename (posix-rename's flags are not sent): it never replaces.
        let moved = self
            .sftp
            .rename(p(&from_abs), p(&to_abs), None)
            .map_err(|e| op_error("cannot rename", &shown, &e));
        self.recheck_dirs_if_missing(moved)?;
        self.forget_dirs(from);
        self.forget_dirs(to);
        Ok(())
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<()> {
        let abs = self.prepare(rel, false)?;
        log::debug!("remote unlink {}", display_path(rel));
        self.sftp
            .unlink(p(&abs))
            .map_err(|e| op_error("cannot remove", &display_path(rel), &e))
    }

    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>> {
        let abs = self.prepare(dir, true)?;
        let shown = display_path(dir);
        if !dir.is_empty() {
            // opendir follows a symlink: the directory itself must not be one.
            let st = self
                .raw_lstat(&abs)
                .map_err(|e| op_error("cannot lstat", &shown, &e))?;
            self.require_dir(dir, st.as_ref())?;
        }
        let mut handle = self
            .sftp
            .opendir(p(&abs))
            .map_err(|e| op_error("cannot list", &shown, &e))?;
        let mut out = Vec::new();
        loop {
            // The raw names as the server sent them (ssh2's readdir() would join and re-split
            // them as paths, turning a hostile "a/b" into "b").
            let (name, st) = match handle.readdir() {
                Ok(entry) => entry,
                Err(e) if e.code() == ErrorCode::Session(libssh2_sys::LIBSSH2_ERROR_FILE) => break,
                Err(e) => return Err(op_error("cannot list", &shown, &e)),
            };
            let name = name.into_os_string().into_encoded_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let perm = st.perm.unwrap_or(0);
            let kind = kind_of(perm);
            let single = !name.is_empty() && !name.contains(&b'/');
            let symlink_target = if kind == FileKind::Symlink && single {
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    [dir, b"/", &name].concat()
                };
                self.raw_readlink(&rel, &self.abs(&rel)).ok()
            } else {
                None
            };
            out.push((name, remote_stat(&st, symlink_target)));
        }
        Ok(out)
    }

    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport> {
        let (mut file, opened) = self.open_regular(rel)?;
        let shown = display_path(rel);
        let size = opened.size.unwrap_or(0);
        let mut buf = vec![0u8; CHUNK];
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        loop {
            let n = read_chunk(&mut file, &mut buf)
                .map_err(|e| io_fail(e).context(format!("reading remote {shown}")))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if bytes > size {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(|e| {
                RemoteError::new(
                    ErrorKind::Other,
                    format!("cannot write the local copy of {shown}: {e}"),
                )
            })?;
        }
        if bytes != size {
            return Err(RemoteError::new(
                ErrorKind::SourceChanged,
                format!("remote {shown} changed while it was read ({size} bytes when opened)"),
            ));
        }
        let abs = self.abs(rel);
        Ok(DownloadReport {
            bytes,
            sha256: hasher.finalize().into(),
            stat: self.stat_of(rel, &abs, &opened)?,
        })
    }

    fn remove_dir(&mut self, rel: &[u8]) -> Result<()> {
        let abs = self.prepare(rel, false)?;
        self.forget_dirs(rel);
        log::debug!("remote rmdir {}", display_path(rel));
        self.sftp
            .rmdir(p(&abs))
            .map_err(|e| op_error("cannot remove directory", &display_path(rel), &e))
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        let made = self.symlink_inner(rel, target);
        self.recheck_dirs_if_missing(made)
    }

    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        let abs = self.prepare(rel, false)?;
        self.raw_readlink(rel, &abs)
    }

    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()> {
        let abs = self.prepare(rel, true)?;
        let shown = display_path(rel);
        let stat = attrs_stat(attrs, rel)?;
        // SFTP v3 setstat follows symlinks: refuse one, or a chmod could land outside the root.
        let st = self
            .raw_lstat(&abs)
            .map_err(|e| op_error("cannot lstat", &shown, &e))?;
        match st.map(|s| kind_of(s.perm.unwrap_or(0))) {
            None => {
                return Err(RemoteError::new(
                    ErrorKind::NotFound,
                    format!("cannot set attributes of {shown}: it does not exist"),
                ))
            }
            Some(FileKind::Symlink) => {
                return Err(RemoteError::new(
                    ErrorKind::Refused,
                    format!("refusing to set attributes of {shown}: it is a symlink"),
                ))
            }
            Some(_) => {}
        }
        self.sftp
            .setstat(p(&abs), stat)
            .map_err(|e| op_error("cannot set mode and times of", &shown, &e))
    }

    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>> {
        let method = self.verify_method();
        let mut regular = Vec::new();
        for (i, rel) in rels.iter().enumerate() {
            let abs = self.prepare(rel, false)?;
            let st = self
                .raw_lstat(&abs)
                .map_err(|e| op_error("cannot lstat", &display_path(rel), &e))?;
            // Only regular files: hashing a FIFO would hang, a symlink could lead outside.
            if let Some(st) = st.filter(|s| kind_of(s.perm.unwrap_or(0)) == FileKind::File) {
                regular.push((i, abs, st.size.unwrap_or(0)));
            }
        }
        let abs: Vec<Vec<u8>> = regular.iter().map(|r| r.1.clone()).collect();
        let sizes: Vec<u64> = regular.iter().map(|r| r.2).collect();
        let hashes = self.hash_files(&abs, &sizes, method)?;
        let mut out = vec![None; rels.len()];
        for ((i, _, _), h) in regular.into_iter().zip(hashes) {
            out[i] = Some(h);
        }
        Ok(out)
    }
}
