//! The root marker: a small file ftpsync keeps in the remote root, holding a random id, so
//! that a manifest can tell the root it describes from one put in its place (moved away and
//! recreated, restored from elsewhere) under the same URL.
//!
//! It is read and written with the transport's own confined operations: read only as a
//! regular file (a symlink there is never followed), written through a temp name and an
//! atomic rename like every upload. [`Reserved`] wraps the engine's connections so that no
//! mirrored path ever touches it: a local entry of the same name at the mount's root is
//! refused, never sent over the marker.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use super::error::{ErrorKind, RemoteError, Result};
use super::{
    Attrs, DirNews, DownloadReport, FileKind, RemoteStat, SessionInfo, Sha256Hash, Transport,
    UploadReport,
};

/// The marker's name, in the remote root.
pub const MARKER: &[u8] = b".ftpsync-root";

/// Whether a path relative to the remote root is the marker.
pub fn is_marker(rel: &[u8]) -> bool {
    rel == MARKER
}

/// The first line of a marker, for whoever finds the file on the server.
const HEADER: &str = "# ftpsync root marker: identifies this directory to the ftpsync mirrors \
                      writing into it. Keep it; removing it makes them send everything again.\n";

/// No marker ftpsync writes is longer; a bigger file there is not one of ours.
const MAX_LEN: u64 = 512;

/// What the remote root holds under the marker's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A marker of ours, with its id.
    Id(String),
    Missing,
    /// Something else (a symlink, a directory, a file ftpsync did not write).
    Foreign(String),
    /// It could not be read (permissions): nothing can be told from it.
    Unreadable(String),
}

/// A fresh random id: 128 bits from the kernel, in hex.
pub fn new_id() -> std::io::Result<String> {
    let mut id = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(hex::encode(id))
}

fn render(id: &str) -> String {
    format!("{HEADER}id={id}\n")
}

/// The id in a marker's bytes, if they are exactly a marker ftpsync writes.
fn parse(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let id = text
        .strip_prefix(HEADER)?
        .strip_prefix("id=")?
        .strip_suffix('\n')?;
    let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && render(id) == text).then(|| id.to_string())
}

/// Reads the marker. Connection-wide failures (`Transient`, `NoSpace`) are errors, for the
/// caller to retry; anything else is an answer.
pub fn read(t: &mut dyn Transport) -> Result<Found> {
    match inspect(t) {
        Err(e) if is_offline(&e) => Err(e),
        Err(e) => Ok(match e.kind() {
            ErrorKind::NotFound => Found::Missing,
            ErrorKind::Refused | ErrorKind::Other => Found::Foreign(e.to_string()),
            _ => Found::Unreadable(e.to_string()),
        }),
        found => found,
    }
}

fn inspect(t: &mut dyn Transport) -> Result<Found> {
    match t.lstat(MARKER)? {
        None => return Ok(Found::Missing),
        Some(st) if st.kind != FileKind::File => {
            return Ok(Found::Foreign(format!("a {:?}, not a file", st.kind)))
        }
        Some(st) if st.size > MAX_LEN => {
            return Ok(Found::Foreign(format!("a file of {} bytes", st.size)))
        }
        Some(_) => {}
    }
    let mut bytes = Vec::new();
    t.download(MARKER, &mut Bounded(&mut bytes))?;
    Ok(parse(&bytes).map_or_else(
        || Found::Foreign("a file ftpsync did not write".into()),
        Found::Id,
    ))
}

/// Writes a marker holding `id`, atomically replacing whatever file or symlink is there.
pub fn write(t: &mut dyn Transport, id: &str) -> Result<()> {
    let text = render(id);
    let sha256: Sha256Hash = Sha256::digest(text.as_bytes()).into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let attrs = Attrs {
        mode: 0o644,
        atime: now,
        mtime: now,
    };
    let mut src = text.as_bytes();
    let size = src.len() as u64;
    t.upload(MARKER, &mut src, size, &sha256, &attrs)
        .map(|_| ())
}

/// Whether an error is the connection's (lost, server full), not an answer about the marker.
pub fn is_offline(e: &RemoteError) -> bool {
    e.kind().reach() == super::Reach::Offline
}

/// A sink that refuses to grow past [`MAX_LEN`]: a file swapped in between the lstat and
/// the read cannot make us hold more.
struct Bounded<'a>(&'a mut Vec<u8>);

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.0.len() + buf.len()) as u64 > MAX_LEN {
            return Err(std::io::Error::other("longer than a root marker"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A connection on which the marker does not exist for mirrored paths: it is left out of
/// the root's listing and lstat, and every operation naming it is refused.
pub struct Reserved(pub Box<dyn Transport>);

fn refuse(rels: &[&[u8]]) -> Result<()> {
    if rels.iter().any(|r| is_marker(r)) {
        return Err(RemoteError::new(
            ErrorKind::Refused,
            format!(
                "{} at the mount's root is reserved for ftpsync's root marker and is not \
                 mirrored: rename it",
                String::from_utf8_lossy(MARKER)
            ),
        ));
    }
    Ok(())
}

impl Transport for Reserved {
    fn session(&self) -> Option<SessionInfo> {
        self.0.session()
    }

    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        if is_marker(rel) {
            return Ok(None);
        }
        self.0.lstat(rel)
    }

    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()> {
        refuse(&[rel])?;
        self.0.mkdir(rel, mode)
    }

    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()> {
        refuse(&[rel])?;
        self.0.mkdir_all(rel, news)
    }

    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        refuse(&[rel])?;
        self.0.upload(rel, src, size, sha256, attrs)
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        refuse(&[from, to])?;
        self.0.rename(from, to)
    }

    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        refuse(&[from, to])?;
        self.0.rename_noreplace(from, to)
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<()> {
        refuse(&[rel])?;
        self.0.remove_file(rel)
    }

    fn remove_dir(&mut self, rel: &[u8]) -> Result<()> {
        refuse(&[rel])?;
        self.0.remove_dir(rel)
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        refuse(&[rel])?;
        self.0.symlink(rel, target)
    }

    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        refuse(&[rel])?;
        self.0.readlink(rel)
    }

    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()> {
        refuse(&[rel])?;
        self.0.set_attrs(rel, attrs)
    }

    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>> {
        refuse(rels)?;
        self.0.hash(rels)
    }

    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>> {
        let mut entries = self.0.list_stat(dir)?;
        if dir.is_empty() {
            entries.retain(|(name, _)| !is_marker(name));
        }
        Ok(entries)
    }

    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport> {
        refuse(&[rel])?;
        self.0.download(rel, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{MockNode, MockTransport};

    fn id() -> String {
        new_id().unwrap()
    }

    #[test]
    fn a_written_marker_reads_back_with_its_id() {
        let mut t = MockTransport::new();
        assert_eq!(read(&mut t).unwrap(), Found::Missing);
        let first = id();
        write(&mut t, &first).unwrap();
        assert_eq!(read(&mut t).unwrap(), Found::Id(first));
        let second = id();
        write(&mut t, &second).unwrap();
        assert_eq!(read(&mut t).unwrap(), Found::Id(second));
    }

    #[test]
    fn anything_else_under_the_name_is_foreign_and_a_symlink_is_not_followed() {
        let mut t = MockTransport::new();
        let file = |data: &[u8]| MockNode::File {
            data: data.to_vec(),
            mode: 0o644,
            atime: 0,
            mtime: 0,
        };
        t.insert(b"secret", file(render(&id()).as_bytes()));
        for node in [
            MockNode::Symlink {
                target: b"secret".to_vec(),
            },
            file(b"id=00000000000000000000000000000000\n"),
            file(format!("{}x", render(&id())).as_bytes()),
            file(&[b'#'; 600]),
            MockNode::Dir {
                mode: 0o755,
                atime: 0,
                mtime: 0,
            },
        ] {
            t.insert(MARKER, node.clone());
            let found = read(&mut t).unwrap();
            assert!(matches!(found, Found::Foreign(_)), "{node:?}: {found:?}");
        }
        t.insert(MARKER, file(b"x"));
        let fresh = id();
        write(&mut t, &fresh).unwrap();
        assert_eq!(read(&mut t).unwrap(), Found::Id(fresh));
    }

    #[test]
    fn connection_failures_are_errors_and_a_refusal_is_unreadable() {
        let mut t = MockTransport::new();
        write(&mut t, &id()).unwrap();
        t.fail_next(1, ErrorKind::Transient);
        assert!(read(&mut t).is_err_and(|e| e.kind() == ErrorKind::Transient));
        t.fail_path(MARKER, 2, ErrorKind::Permission);
        let found = read(&mut t).unwrap();
        assert!(matches!(found, Found::Unreadable(_)), "{found:?}");
    }

    #[test]
    fn the_reserved_view_hides_the_marker_and_refuses_to_touch_it() {
        let mock = MockTransport::new();
        let mut raw = mock.clone();
        write(&mut raw, &id()).unwrap();
        raw.mkdir(b"d", 0o755).unwrap();
        let mut t = Reserved(Box::new(mock.clone()));
        let names: Vec<Vec<u8>> = t.list(b"").unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [b"d".to_vec()]);
        assert_eq!(t.lstat(MARKER).unwrap(), None);
        let attrs = Attrs {
            mode: 0o644,
            atime: 0,
            mtime: 0,
        };
        let refusals = [
            t.upload(
                MARKER,
                &mut &b"x"[..],
                1,
                &Sha256::digest(b"x").into(),
                &attrs,
            )
            .err(),
            t.rename(b"d", MARKER).err(),
            t.rename(MARKER, b"e").err(),
            t.remove_file(MARKER).err(),
            t.symlink(MARKER, b"d").err(),
            t.set_attrs(MARKER, &attrs).err(),
            t.download(MARKER, &mut Vec::new()).err(),
        ];
        for e in refusals {
            assert!(e.is_some_and(|e| e.kind() == ErrorKind::Refused));
        }
        assert!(
            matches!(read(&mut raw).unwrap(), Found::Id(_)),
            "marker intact"
        );
        // Deeper down, the name is an ordinary one.
        t.upload(
            b"d/.ftpsync-root",
            &mut &b"x"[..],
            1,
            &Sha256::digest(b"x").into(),
            &attrs,
        )
        .unwrap();
    }
}
