//! Symlinks on a server that makes none (rclone serve sftp; FTP has none at all), in rclone's
//! own `--links` convention: a symlink `NAME -> TARGET` is kept as a regular file
//! `NAME.rclonelink` holding TARGET's bytes. This wrapper shows everyone above it (the engine,
//! `verify`, `restore`) real symlinks at their real names, so none of them needs to know; and
//! rclone itself reads such a tree back as symlinks.
//!
//! A real entry at NAME wins over a link file beside it; putting anything at NAME removes the
//! link file, and a link put at NAME removes the file or link that stood there.

use super::{
    Attrs, DirNews, DownloadReport, FileKind, RemoteStat, Result, SessionInfo, Sha256Hash,
    Transport, UploadReport,
};
use super::{ErrorKind, RemoteError};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

pub const SUFFIX: &[u8] = b".rclonelink";

/// Longest target kept in a link file (PATH_MAX): a bigger file with the suffix is not ours.
const MAX_TARGET: u64 = 4096;

pub struct LinkFiles {
    inner: Box<dyn Transport>,
}

fn link_of(rel: &[u8]) -> Vec<u8> {
    [rel, SUFFIX].concat()
}

impl LinkFiles {
    pub fn new(inner: Box<dyn Transport>) -> LinkFiles {
        LinkFiles { inner }
    }

    /// The symlink a link file beside `rel` stands for, if there is one.
    fn link_at(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        let file = link_of(rel);
        match self.inner.lstat(&file)? {
            Some(st) if is_link_file(&st) => self.read_link(&file, &st).map(Some),
            _ => Ok(None),
        }
    }

    fn read_link(&mut self, file: &[u8], st: &RemoteStat) -> Result<RemoteStat> {
        let mut target = Vec::new();
        self.inner.download(file, &mut target)?;
        Ok(RemoteStat {
            kind: FileKind::Symlink,
            size: target.len() as u64,
            mode: 0o777,
            mtime: st.mtime,
            atime: st.atime,
            symlink_target: Some(target),
        })
    }

    /// Something real now stands at `rel`: a link file beside it would shadow nothing but
    /// confuse everyone, so it goes.
    fn drop_link(&mut self, rel: &[u8]) -> Result<()> {
        match self.inner.remove_file(&link_of(rel)) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Whether `rel` itself (not a link file beside it) exists.
    fn real(&mut self, rel: &[u8]) -> Result<bool> {
        Ok(self.inner.lstat(rel)?.is_some())
    }

    /// Renames `from` (a real entry or a link file) to `to`, with `rename` doing the moves.
    fn rename_with(
        &mut self,
        from: &[u8],
        to: &[u8],
        rename: fn(&mut dyn Transport, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        if let Some(st) = self.inner.lstat(from)? {
            if st.kind != FileKind::Dir {
                refuse_file_name(to)?;
            }
            rename(self.inner.as_mut(), from, to)?;
            return self.drop_link(to);
        }
        rename(self.inner.as_mut(), &link_of(from), &link_of(to))?;
        // A link now stands at `to`: a file or link that stood there is replaced.
        match self.inner.lstat(to)? {
            Some(st) if st.kind != FileKind::Dir => self.inner.remove_file(to),
            _ => Ok(()),
        }
    }
}

/// A file named `NAME.rclonelink` would read back as the symlink NAME (to everyone: the
/// engine, verify, restore, rclone itself), and a symlink NAME would overwrite it: the server
/// cannot keep such a file, which is refused (a person renames it).
fn refuse_file_name(rel: &[u8]) -> Result<()> {
    let name = rel.rsplit(|&b| b == b'/').next().unwrap_or(rel);
    match name.strip_suffix(SUFFIX) {
        Some(base) if !base.is_empty() => Err(RemoteError::new(
            ErrorKind::Refused,
            format!(
                "{} is not mirrored: this server has no symlinks and keeps a symlink NAME as the \
                 file NAME.rclonelink, so a file of that name would read back as a symlink; \
                 rename it",
                super::display_path(rel)
            ),
        )),
        _ => Ok(()),
    }
}

fn is_link_file(st: &RemoteStat) -> bool {
    st.kind == FileKind::File && st.size <= MAX_TARGET
}

impl Transport for LinkFiles {
    fn session(&self) -> Option<SessionInfo> {
        self.inner.session()
    }

    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        match self.inner.lstat(rel)? {
            // A link file is where a symlink is kept, not an entry of its own: what is put
            // under its name is refused, and nothing is kept aside from it first.
            Some(st) if refuse_file_name(rel).is_err() && is_link_file(&st) => Ok(None),
            Some(st) => Ok(Some(st)),
            None if rel.is_empty() => Ok(None),
            None => self.link_at(rel),
        }
    }

    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()> {
        self.inner.mkdir(rel, mode)?;
        self.drop_link(rel)
    }

    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()> {
        self.inner.mkdir_all(rel, news)
    }

    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        refuse_file_name(rel)?;
        let report = self.inner.upload(rel, src, size, sha256, attrs)?;
        self.drop_link(rel)?;
        Ok(report)
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.rename_with(from, to, |t, a, b| t.rename(a, b))
    }

    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        if self.lstat(to)?.is_some() {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!("cannot rename to {}: it exists", super::display_path(to)),
            ));
        }
        self.rename_with(from, to, |t, a, b| t.rename_noreplace(a, b))
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<()> {
        if self.real(rel)? {
            return self.inner.remove_file(rel);
        }
        self.inner.remove_file(&link_of(rel))
    }

    fn remove_dir(&mut self, rel: &[u8]) -> Result<()> {
        self.inner.remove_dir(rel)
    }

    /// Uploads the target as a link file (verified like any upload), then removes what stood at
    /// `rel` itself: the engine has already kept aside anything there that was not ours.
    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        if target.is_empty() || target.len() as u64 > MAX_TARGET {
            return Err(RemoteError::new(
                ErrorKind::Other,
                format!(
                    "cannot keep symlink {} as a link file: its target is empty or too long",
                    super::display_path(rel)
                ),
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let attrs = Attrs {
            mode: 0o644,
            atime: now,
            mtime: now,
        };
        let sha: Sha256Hash = Sha256::digest(target).into();
        let file = link_of(rel);
        self.inner
            .upload(&file, &mut &target[..], target.len() as u64, &sha, &attrs)?;
        match self.inner.lstat(rel)? {
            Some(st) if st.kind != FileKind::Dir => self.inner.remove_file(rel),
            _ => Ok(()),
        }
    }

    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        match self.lstat(rel)? {
            Some(RemoteStat {
                symlink_target: Some(t),
                ..
            }) => Ok(t),
            _ => self.inner.readlink(rel),
        }
    }

    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()> {
        self.inner.set_attrs(rel, attrs)
    }

    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>> {
        self.inner.hash(rels)
    }

    /// Link files are listed as the symlinks they stand for, unless a real entry of that name
    /// is there too.
    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>> {
        let entries = self.inner.list_stat(dir)?;
        let names: std::collections::HashSet<Vec<u8>> =
            entries.iter().map(|(n, _)| n.clone()).collect();
        let mut out = Vec::with_capacity(entries.len());
        for (name, st) in entries {
            match name.strip_suffix(SUFFIX) {
                Some(base) if !base.is_empty() && is_link_file(&st) && !names.contains(base) => {
                    let file = crate::relpath::child_path(dir, &name);
                    let link = self.read_link(&file, &st)?;
                    out.push((base.to_vec(), link));
                }
                _ => out.push((name, st)),
            }
        }
        Ok(out)
    }

    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport> {
        self.inner.download(rel, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::{MockNode, MockTransport};

    fn file(data: &[u8]) -> MockNode {
        MockNode::File {
            data: data.to_vec(),
            mode: 0o644,
            atime: 0,
            mtime: 0,
        }
    }

    #[test]
    fn symlinks_are_link_files_beneath_and_symlinks_above() {
        let server = MockTransport::new();
        let mut t = LinkFiles::new(Box::new(server.clone()));
        server.insert(b"a", file(b"a real file we replace by a link"));
        t.symlink(b"a", b"../elsewhere").expect("symlink");
        assert!(server.get(b"a").is_none());
        assert!(
            matches!(server.get(b"a.rclonelink"), Some(MockNode::File { data, .. }) if data == b"../elsewhere")
        );
        let st = t.lstat(b"a").expect("lstat").expect("a link");
        assert_eq!(st.kind, FileKind::Symlink);
        assert_eq!(st.symlink_target.as_deref(), Some(&b"../elsewhere"[..]));
        assert_eq!(t.readlink(b"a").expect("readlink"), b"../elsewhere");
        let listed = t.list_stat(b"").expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, b"a");

        t.rename(b"a", b"b").expect("rename");
        assert!(server.get(b"b.rclonelink").is_some() && server.get(b"a.rclonelink").is_none());
        t.upload(
            b"b",
            &mut &b"x"[..],
            1,
            &Sha256::digest(b"x").into(),
            &Attrs {
                mode: 0o644,
                atime: 0,
                mtime: 0,
            },
        )
        .expect("upload over the link");
        assert!(
            server.get(b"b.rclonelink").is_none(),
            "the link file shadows the file"
        );
        t.symlink(b"c", b"t").expect("symlink");
        t.remove_file(b"c").expect("remove");
        assert!(server.get(b"c.rclonelink").is_none());
    }
}
