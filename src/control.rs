//! The control socket: a unix socket (0600) in the state dir, one JSON request per
//! connection, one JSON reply. `ftpsync flush` and `ftpsync status` talk to the daemon here.

use crate::fs::{Fs, OpenForWriting, OPEN_LISTED};
use crate::report::{Mirror, OpenFiles};
use crate::statedir::SOCKET;
use crate::sync::Engine;
use log::warn;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Wait until every closed file is hashed, journaled durably and (unless `local`)
    /// confirmed on the remote.
    Flush {
        timeout_ms: u64,
        #[serde(default)]
        local: bool,
    },
    Status,
    /// Send these paths (hex-encoded bytes) again, whatever the manifest says.
    Repair {
        paths_hex: Vec<String>,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_hashes: Option<usize>,
    /// Errors answered to the kernel since the daemon started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_answered: Option<u64>,
    /// The sync engine's status (see `Engine::status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Files open for writing (for a flush: when it ended), which no flush covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_writing: Option<OpenFiles>,
}

impl From<OpenForWriting> for OpenFiles {
    fn from(o: OpenForWriting) -> OpenFiles {
        OpenFiles::of(o.count, &o.paths)
    }
}

fn open_files(fs: &Fs) -> Option<OpenFiles> {
    Some(fs.open_for_writing(OPEN_LISTED).into())
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Longest path a unix socket address holds (sun_path, less its NUL).
const SUN_PATH_MAX: usize = 107;

/// Runs `f` on a name of the socket short enough to bind or connect to. A default state dir
/// under a deep home can make the real path longer than a socket address holds; the same
/// file is then named through a descriptor of the state dir (/proc/self/fd/N/control.sock),
/// held open while `f` runs.
fn at_short_path<T>(
    state_dir: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = socket_path(state_dir);
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return f(&path);
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(state_dir)?;
    f(Path::new(&format!(
        "/proc/self/fd/{}/{SOCKET}",
        dir.as_raw_fd()
    )))
}

/// Binds the socket (replacing a stale one) and serves it on a thread of its own.
pub fn serve(state_dir: &Path, fs: Arc<Fs>, engine: Arc<Engine>) -> std::io::Result<()> {
    let path = socket_path(state_dir);
    // Unlinking never follows a link, and bind refuses any name that exists.
    let _ = std::fs::remove_file(&path);
    let listener = at_short_path(state_dir, |p| UnixListener::bind(p))?;
    // chmod follows links: make sure the name is still the socket just bound.
    use std::os::unix::fs::FileTypeExt;
    if !std::fs::symlink_metadata(&path)?.file_type().is_socket() {
        return Err(std::io::Error::other(format!(
            "{} changed under the daemon right after it was bound",
            path.display()
        )));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let (fs, engine) = (fs.clone(), engine.clone());
                // A flush may wait long; other clients must not queue behind it.
                let spawned = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || handle(conn, &fs, &engine));
                if let Err(e) = spawned {
                    warn!("control: cannot start a thread: {e}");
                }
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, fs: &Fs, engine: &Engine) {
    let mut line = String::new();
    let mut reader = BufReader::new(&conn);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Flush { timeout_ms, local }) => {
            flush(fs, engine, Duration::from_millis(timeout_ms), local)
        }
        Ok(Request::Status) => Reply {
            ok: true,
            pending_hashes: Some(fs.pending_hashes()),
            errors_answered: Some(crate::fuse::errors_answered()),
            mirror: Some(engine.status()),
            open_for_writing: open_files(fs),
            ..Reply::default()
        },
        Ok(Request::Repair { paths_hex }) => repair(engine, &paths_hex),
        Err(e) => Reply {
            error: Some(format!("bad request: {e}")),
            ..Reply::default()
        },
    };
    if let Ok(mut text) = serde_json::to_string(&reply) {
        text.push('\n');
        let _ = (&conn).write_all(text.as_bytes());
    }
}

fn repair(engine: &Engine, paths_hex: &[String]) -> Reply {
    let paths: Result<Vec<Vec<u8>>, _> = paths_hex.iter().map(hex::decode).collect();
    match paths {
        Ok(paths) => match engine.repair(paths) {
            Ok(()) => Reply {
                ok: true,
                ..Reply::default()
            },
            Err(e) => Reply {
                error: Some(format!("cannot record the repair: {e}")),
                ..Reply::default()
            },
        },
        Err(e) => Reply {
            error: Some(format!("bad path: {e}")),
            ..Reply::default()
        },
    }
}

/// Hashes every closed file, then waits for the remote to confirm everything journaled; then
/// names the files open for writing, which it could not cover (their bytes have no hash yet).
fn flush(fs: &Fs, engine: &Engine, timeout: Duration, local: bool) -> Reply {
    let deadline = Instant::now() + timeout;
    let result = if fs.settle(timeout) {
        if local {
            Ok(())
        } else {
            engine.flush(deadline.saturating_duration_since(Instant::now()))
        }
    } else {
        Err(format!("{} files still being hashed", fs.pending_hashes()))
    };
    Reply {
        ok: result.is_ok(),
        error: result.err(),
        pending_hashes: Some(fs.pending_hashes()),
        mirror: Some(engine.status()),
        open_for_writing: open_files(fs),
        ..Reply::default()
    }
}

/// Sends one request to the daemon of `state_dir` and waits for its reply.
pub fn call(state_dir: &Path, req: &Request) -> anyhow::Result<Reply> {
    call_within(state_dir, req, None)
}

/// `call`, giving up when the daemon says nothing for `timeout` (a status poller must not hang
/// on a stuck daemon).
pub fn call_within(
    state_dir: &Path,
    req: &Request,
    timeout: Option<Duration>,
) -> anyhow::Result<Reply> {
    let path = socket_path(state_dir);
    let conn = at_short_path(state_dir, |p| UnixStream::connect(p)).map_err(|e| {
        anyhow::anyhow!(
            "no ftpsync daemon answers at {} ({e}); is the mirror mounted?",
            path.display()
        )
    })?;
    conn.set_read_timeout(timeout)?;
    conn.set_write_timeout(timeout)?;
    let mut text = serde_json::to_string(req)?;
    text.push('\n');
    (&conn).write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}
