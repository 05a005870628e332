//! Errors of the transport, classified for the sync engine: what to retry, what is fatal.

use std::fmt;

/// What the engine should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Connection lost, timed out or reset: reconnect and retry.
    Transient,
    /// The remote disk (or quota) is full: retry later, report once.
    NoSpace,
    /// The server refused an operation on one path; other paths may go on.
    Permission,
    /// The path (or one of its parents) does not exist remotely.
    NotFound,
    /// Unknown or changed host key, or a server outside the algorithm policy: fatal, never
    /// retried silently.
    HostKey,
    /// Authentication failed or a key file is unusable: fatal until the user acts.
    Auth,
    /// The remote root is missing or not a directory, or resolves elsewhere than when the
    /// mirror was bound to it (a symlink was put in its place or above it): fatal until the
    /// user acts.
    RootUnusable,
    /// The local bytes read for an upload did not hash to the expected SHA-256: the file
    /// changed under us and a newer Store follows. For a download: the remote file changed
    /// while it was read (another try may get a consistent copy).
    SourceChanged,
    /// The remote copy does not hash to what was sent.
    VerifyMismatch,
    /// Refused for safety: the server holds something (a planted symlink) that could lead a
    /// write outside the remote root. Per path, like `Other`, and audited.
    Refused,
    /// Anything else (bad path, unexpected file type, protocol surprise).
    Other,
}

/// How far a failure reaches, and who must act on it: the one classification every retry
/// site of the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The connection or the server as a whole is unusable for now (lost, full): wait with
    /// backoff and connect again.
    Offline,
    /// The server refuses us (host key, login, a root that moved): nothing is sent until a
    /// person acts.
    Halt,
    /// This path only, and only a person can clear it (a refusal, a permission, a surprise).
    PathNeedsPerson,
    /// This path only, and another try may succeed (a missing parent, a source that changed,
    /// a copy that did not verify).
    PathRetry,
}

impl ErrorKind {
    pub fn reach(self) -> Reach {
        match self {
            ErrorKind::Transient | ErrorKind::NoSpace => Reach::Offline,
            ErrorKind::HostKey | ErrorKind::Auth | ErrorKind::RootUnusable => Reach::Halt,
            ErrorKind::Refused | ErrorKind::Permission | ErrorKind::Other => Reach::PathNeedsPerson,
            ErrorKind::NotFound | ErrorKind::SourceChanged | ErrorKind::VerifyMismatch => {
                Reach::PathRetry
            }
        }
    }

    /// A failure of the connection or of the server as a whole, not of one path: no answer
    /// about the path it was met on.
    pub fn is_connection_wide(self) -> bool {
        matches!(self.reach(), Reach::Offline | Reach::Halt)
    }

    /// Whether the connection should be dropped and made again before retrying.
    pub fn needs_reconnect(self) -> bool {
        self == ErrorKind::Transient
    }
}

/// Why a host key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// No known_hosts entry for this host (and port).
    Unknown,
    /// The known_hosts files hold a different key for this host: possible attack.
    Changed,
    /// The key is listed under `@revoked`.
    Revoked,
}

/// The server's host key as shown to a user: what `ssh-keygen -lf` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, ...
    pub key_type: String,
    /// `SHA256:` + unpadded base64 of the SHA-256 of the key blob.
    pub fingerprint: String,
    /// The key blob, base64 (padded), as a known_hosts line carries it.
    pub key_base64: String,
}

/// A transport error: a kind for the engine and a message for people. Messages name paths
/// (escaped) and never carry secrets.
#[derive(Debug, Clone)]
pub struct RemoteError {
    kind: ErrorKind,
    message: String,
    host_key: Option<Box<(HostKeyInfo, HostKeyProblem)>>,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RemoteError {
        RemoteError {
            kind,
            message: message.into(),
            host_key: None,
        }
    }

    pub(crate) fn host_key(
        info: HostKeyInfo,
        problem: HostKeyProblem,
        message: String,
    ) -> RemoteError {
        RemoteError {
            kind: ErrorKind::HostKey,
            message,
            host_key: Some(Box::new((info, problem))),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// For a refused host key: the server's key and why it was refused.
    pub fn host_key_refusal(&self) -> Option<(&HostKeyInfo, HostKeyProblem)> {
        self.host_key.as_deref().map(|(i, p)| (i, *p))
    }

    /// Appends advice (what to run to fix it), keeping the kind.
    pub fn hint(mut self, advice: impl fmt::Display) -> RemoteError {
        self.message = format!("{}; {advice}", self.message);
        self
    }

    /// Prefixes the message with context, keeping the kind.
    pub fn context(mut self, what: impl fmt::Display) -> RemoteError {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// Classifies a libssh2 error. SFTP status codes say what the server refused; session codes
/// say the transport broke.
pub(crate) fn classify(e: &ssh2::Error) -> ErrorKind {
    use libssh2_sys as raw;
    match e.code() {
        ssh2::ErrorCode::SFTP(code) => match code {
            raw::LIBSSH2_FX_NO_SUCH_FILE | raw::LIBSSH2_FX_NO_SUCH_PATH => ErrorKind::NotFound,
            raw::LIBSSH2_FX_PERMISSION_DENIED | raw::LIBSSH2_FX_WRITE_PROTECT => {
                ErrorKind::Permission
            }
            raw::LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM | raw::LIBSSH2_FX_QUOTA_EXCEEDED => {
                ErrorKind::NoSpace
            }
            raw::LIBSSH2_FX_NO_CONNECTION | raw::LIBSSH2_FX_CONNECTION_LOST => ErrorKind::Transient,
            _ => ErrorKind::Other,
        },
        ssh2::ErrorCode::Session(code) => match code {
            raw::LIBSSH2_ERROR_AUTHENTICATION_FAILED
            | raw::LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED
            | raw::LIBSSH2_ERROR_KEYFILE_AUTH_FAILED => ErrorKind::Auth,
            raw::LIBSSH2_ERROR_FILE
            | raw::LIBSSH2_ERROR_INVAL
            | raw::LIBSSH2_ERROR_BAD_USE
            | raw::LIBSSH2_ERROR_METHOD_NOT_SUPPORTED
            | raw::LIBSSH2_ERROR_ALGO_UNSUPPORTED
            | raw::LIBSSH2_ERROR_AGENT_PROTOCOL
            | raw::LIBSSH2_ERROR_PUBLICKEY_PROTOCOL
            // A refused channel or request: the server said no, the connection is fine.
            | raw::LIBSSH2_ERROR_CHANNEL_FAILURE
            | raw::LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED
            | raw::LIBSSH2_ERROR_REQUEST_DENIED => ErrorKind::Other,
            // Everything else on the session level (socket, timeout, kex, MAC, channel) means
            // the connection is no longer trustworthy: make a new one.
            _ => ErrorKind::Transient,
        },
    }
}

/// The short name of an SFTP status code, for messages.
pub(crate) fn sftp_status_name(code: i32) -> &'static str {
    match code {
        1 => "end of file",
        2 => "no such file",
        3 => "permission denied",
        4 => "failure",
        5 => "bad message",
        6 => "no connection",
        7 => "connection lost",
        8 => "operation unsupported",
        11 => "file already exists",
        12 => "write protected",
        14 => "no space on filesystem",
        15 => "quota exceeded",
        18 => "directory not empty",
        19 => "not a directory",
        _ => "error",
    }
}

/// Describes a libssh2 error without its internal code noise.
pub(crate) fn describe(e: &ssh2::Error) -> String {
    match e.code() {
        ssh2::ErrorCode::SFTP(code) => {
            format!(
                "server said: {} (SFTP status {code})",
                sftp_status_name(code)
            )
        }
        ssh2::ErrorCode::Session(code) => format!("{} (libssh2 error {code})", e.message()),
    }
}

/// An ssh2 error about an operation on `what` (already escaped for display).
pub(crate) fn op_error(op: &str, what: &str, e: &ssh2::Error) -> RemoteError {
    RemoteError::new(classify(e), format!("{op} {what}: {}", describe(e)))
}

/// A path for a message, quoted: `relpath::show` between double quotes, so a hostile name can
/// neither forge log lines nor break a terminal.
pub fn display_path(bytes: &[u8]) -> String {
    format!("\"{}\"", crate::relpath::show(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_path_escapes_controls_and_invalid_utf8() {
        assert_eq!(display_path(b"a/b c"), "\"a/b c\"");
        assert_eq!(display_path(b"x\ny"), "\"x\\ny\"");
        assert_eq!(display_path(b"\xff\xfeok"), "\"\\xff\\xfeok\"");
        assert_eq!(display_path("é\"".as_bytes()), "\"é\\\"\"");
    }

    #[test]
    fn sftp_codes_classify() {
        let e = ssh2::Error::from_errno(ssh2::ErrorCode::SFTP(2));
        assert_eq!(classify(&e), ErrorKind::NotFound);
        let e = ssh2::Error::from_errno(ssh2::ErrorCode::SFTP(3));
        assert_eq!(classify(&e), ErrorKind::Permission);
        let e = ssh2::Error::from_errno(ssh2::ErrorCode::Session(-43));
        assert_eq!(classify(&e), ErrorKind::Transient);
        assert_eq!(ErrorKind::NoSpace.reach(), Reach::Offline);
        assert_eq!(ErrorKind::HostKey.reach(), Reach::Halt);
        assert!(ErrorKind::HostKey.is_connection_wide());
        assert!(!ErrorKind::Permission.is_connection_wide());
        assert!(!ErrorKind::Other.is_connection_wide());
    }
}
