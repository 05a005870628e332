//! Extended attributes: the application's own go to the backing file (a symlink's through its
//! parent, never followed); ftpsync's (`user.ftpsync.*`) are answered from the mirror's state
//! and never stored.

use super::*;

/// Extended attributes under this prefix belong to ftpsync and are not stored on files.
const OWN_XATTR_PREFIX: &[u8] = b"user.ftpsync.";
/// The mount root's answer: the state dir's path (`ftpsync status MNT` finds it so).
pub const STATE_DIR_XATTR: &str = "user.ftpsync.state_dir";
const STATE_XATTR: &[u8] = b"user.ftpsync.state";
const SHA256_XATTR: &[u8] = b"user.ftpsync.sha256";

impl Fs {
    fn xattr_target(&self, ino: u64) -> R<local::XattrTarget> {
        let mut t = self.tree.lock();
        let n = t.get(ino).ok_or(Errno::ESTALE)?;
        if n.kind != libc::S_IFLNK {
            let fd = t.fd(ino).map_err(io_err)?;
            return Ok(local::XattrTarget::inode(borrow(&fd)));
        }
        let (parent, name) = n.names.first().cloned().ok_or(Errno::ESTALE)?;
        let pfd = t.fd(parent).map_err(io_err)?;
        Ok(local::XattrTarget::symlink(borrow(&pfd), &cname(&name)?))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> R<XattrReply> {
        let value = if ino == ROOT && name == STATE_DIR_XATTR {
            self.opts.state_dir.as_os_str().as_bytes().to_vec()
        } else if name.as_bytes().starts_with(OWN_XATTR_PREFIX) {
            self.mirror_xattr(ino, name)?
        } else {
            let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
            let target = self.xattr_target(ino)?;
            sized(|buf| target.get(&c, buf))?
        };
        reply_sized(value, size)
    }

    /// `user.ftpsync.state` (pending, uploading, confirmed, failed: why) and
    /// `user.ftpsync.sha256` (the confirmed hash) of a path, from the mirror's table.
    fn mirror_xattr(&self, ino: u64, name: &OsStr) -> R<Vec<u8>> {
        let path = self.tree.lock().path(ino).ok_or(Errno::ENODATA)?;
        let mirror = self.mirror.lock();
        let value = match name.as_bytes() {
            STATE_XATTR => mirror.state_of(&path).or_else(|| {
                // Not mirrored yet and not queued: its hash (or its upload) is still to come.
                Some("pending".into())
            }),
            SHA256_XATTR => mirror.sha256_of(&path),
            _ => None,
        };
        value.map(String::into_bytes).ok_or(Errno::ENODATA)
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> R<XattrReply> {
        let target = self.xattr_target(ino)?;
        reply_sized(sized(|buf| target.list(buf))?, size)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> R<()> {
        if name.as_bytes().starts_with(OWN_XATTR_PREFIX) {
            return Err(Errno::EPERM);
        }
        let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        let target = self.xattr_target(ino)?;
        let t = self.tree.lock();
        target.set(&c, value, flags).map_err(io_err)?;
        if let Some(path) = t.path(ino) {
            let rec = Record::SetXattr {
                path,
                name: name.as_bytes().to_vec(),
                value: value.to_vec(),
            };
            self.log(&t, rec);
        }
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> R<()> {
        let c = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        let target = self.xattr_target(ino)?;
        let t = self.tree.lock();
        target.remove(&c).map_err(io_err)?;
        if let Some(path) = t.path(ino) {
            let name = name.as_bytes().to_vec();
            self.log(&t, Record::RemoveXattr { path, name });
        }
        Ok(())
    }
}

/// Calls an xattr-style function with a growing buffer until the value fits.
fn sized(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> R<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                buf.resize(buf.len() * 4, 0);
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

fn reply_sized(value: Vec<u8>, size: u32) -> R<XattrReply> {
    let len = u32::try_from(value.len()).map_err(|_| Errno::E2BIG)?;
    if size == 0 {
        Ok(XattrReply::Size(len))
    } else if len > size {
        Err(Errno::ERANGE)
    } else {
        Ok(XattrReply::Data(value))
    }
}
