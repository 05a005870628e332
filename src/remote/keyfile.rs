//! Private key files: refused when others can read them (as OpenSSH does), and recognised as
//! encrypted so libssh2's misleading "Unsupported private key format" can be explained.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::b64;
use super::error::{ErrorKind, RemoteError};

/// What a key file looks like before it is handed to libssh2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    Missing,
    Plain,
    Encrypted,
}

/// Inspects a private key file. Group- or world-accessible keys are an error, not a skip: a
/// key others can read must be replaced, and the user must hear about it.
pub fn inspect(path: &Path) -> Result<KeyFile, RemoteError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyFile::Missing),
        Err(e) => return Err(unreadable(path, &e)),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        let why = super::credentials::check_private(path, "private key").err();
        return Err(RemoteError::new(ErrorKind::Auth, why.unwrap_or_default()));
    }
    let text = fs::read(path).map_err(|e| unreadable(path, &e))?;
    Ok(if is_encrypted(&text) {
        KeyFile::Encrypted
    } else {
        KeyFile::Plain
    })
}

fn unreadable(path: &Path, e: &io::Error) -> RemoteError {
    RemoteError::new(
        ErrorKind::Auth,
        format!("cannot read private key {}: {e}", path.display()),
    )
}

/// Whether a private key file needs a passphrase: the OpenSSH format names its cipher ("none"
/// when not encrypted); PEM files say ENCRYPTED in a header.
pub fn is_encrypted(text: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &[u8] = b"-----END OPENSSH PRIVATE KEY-----";
    if let Some(start) = find(text, BEGIN) {
        let body = &text[start + BEGIN.len()..];
        let body = &body[..find(body, END).unwrap_or(body.len())];
        return match b64::decode(body) {
            Some(blob) => openssh_cipher(&blob).is_some_and(|c| c != b"none"),
            None => false,
        };
    }
    find(text, b"ENCRYPTED").is_some()
}

/// The cipher name of an `openssh-key-v1` blob.
fn openssh_cipher(blob: &[u8]) -> Option<&[u8]> {
    let rest = blob.strip_prefix(b"openssh-key-v1\0")?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn keygen(dir: &Path, name: &str, pass: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        p
    }

    #[test]
    fn detects_encryption_and_open_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let plain = keygen(dir.path(), "plain", "");
        let enc = keygen(dir.path(), "enc", "correct horse");
        assert_eq!(inspect(&plain).unwrap(), KeyFile::Plain);
        assert_eq!(inspect(&enc).unwrap(), KeyFile::Encrypted);
        assert_eq!(inspect(&dir.path().join("none")).unwrap(), KeyFile::Missing);
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        let e = inspect(&plain).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("0644 are too open"), "{e}");
        assert!(is_encrypted(
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        ));
    }
}
