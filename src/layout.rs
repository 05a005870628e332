//! Where the local directory, the mountpoint and the state dir may lie relative to each other.
//! A mountpoint inside LOCAL_DIR makes the daemon walk into its own mount and hang there; a
//! state dir inside LOCAL_DIR is mirrored to the server; one inside the mountpoint is hidden by
//! the mount and reached through it. Paths are compared as the kernel resolves them: canonical
//! (`..` and symbolic links resolved) and, since a bind mount aliases a directory under another
//! path, by the device and inode of every ancestor too.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A directory as given, where it resolves to, and the (device, inode) of it and each of its
/// ancestors that exist.
#[derive(Debug)]
struct Place {
    given: PathBuf,
    canonical: PathBuf,
    chain: Vec<(u64, u64)>,
    exists: bool,
}

impl Place {
    fn of(given: &Path) -> io::Result<Place> {
        let (canonical, exists) = resolve(given)?;
        let mut chain = Vec::new();
        for dir in canonical.ancestors() {
            if let Ok(md) = std::fs::metadata(dir) {
                chain.push((md.dev(), md.ino()));
            }
        }
        Ok(Place {
            given: given.to_path_buf(),
            canonical,
            chain,
            exists,
        })
    }

    fn id(&self) -> Option<(u64, u64)> {
        self.exists.then(|| self.chain.first().copied()).flatten()
    }

    /// Whether this lies inside `other` or is `other`.
    fn within(&self, other: &Place) -> bool {
        self.canonical.starts_with(&other.canonical)
            || other.id().is_some_and(|id| self.chain.contains(&id))
    }

    fn same(&self, other: &Place) -> bool {
        self.canonical == other.canonical || (self.id().is_some() && self.id() == other.id())
    }

    fn shown(&self) -> String {
        if self.given == self.canonical {
            self.given.display().to_string()
        } else {
            format!("{} (= {})", self.given.display(), self.canonical.display())
        }
    }
}

/// The canonical path of `given`, which need not exist yet: its nearest existing ancestor is
/// resolved and the rest appended, which then may hold no `..` (it could not be resolved).
fn resolve(given: &Path) -> io::Result<(PathBuf, bool)> {
    let mut missing = Vec::new();
    let mut base = given;
    loop {
        match std::fs::canonicalize(base) {
            Ok(c) => {
                let mut path = c;
                for part in missing.iter().rev() {
                    path.push(part);
                }
                return Ok((path, base == given));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", base.display()))),
        }
        let (Some(parent), Some(last)) = (base.parent(), base.components().next_back()) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no part of it exists", given.display()),
            ));
        };
        match last {
            Component::Normal(name) => missing.push(name.to_os_string()),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: '..' below a directory that does not exist cannot be resolved",
                        given.display()
                    ),
                ))
            }
        }
        base = parent;
    }
}

/// Refuses a layout where the mountpoint lies strictly inside LOCAL_DIR or LOCAL_DIR strictly
/// inside the mountpoint (they may be the same: the shadow mount), or where the state dir and
/// either of them lies inside the other (or is the other). The state dir need not exist yet.
pub fn check(local: &Path, mountpoint: &Path, state_dir: &Path) -> anyhow::Result<()> {
    let local = Place::of(local)?;
    let mnt = Place::of(mountpoint)?;
    let state = Place::of(state_dir)?;
    if !mnt.same(&local) {
        if mnt.within(&local) {
            anyhow::bail!(
                "the mountpoint {} lies inside the local directory {}: the daemon would walk \
                 into its own mount; mount on LOCAL_DIR itself (a shadow mount) or outside it",
                mnt.shown(),
                local.shown()
            );
        }
        if local.within(&mnt) {
            anyhow::bail!(
                "the local directory {} lies inside the mountpoint {}: the mount would hide it",
                local.shown(),
                mnt.shown()
            );
        }
    }
    for (other, what, why) in [
        (&local, "the local directory", "its files would be mirrored"),
        (&mnt, "the mountpoint", "the mount would hide it"),
    ] {
        if state.within(other) {
            anyhow::bail!(
                "the state dir {} lies inside {what} {} ({why}); choose a state dir outside both",
                state.shown(),
                other.shown()
            );
        }
        if other.within(&state) {
            anyhow::bail!(
                "{what} {} lies inside the state dir {}; choose a state dir outside both",
                other.shown(),
                state.shown()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_found_through_dotdot_symlinks_and_missing_parts() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().canonicalize().unwrap();
        let (local, mnt) = (root.join("local"), root.join("mnt"));
        std::fs::create_dir_all(local.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("x")).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        std::os::unix::fs::symlink(&local, root.join("L")).unwrap();
        let state = root.join("state/new");
        check(&local, &mnt, &state).unwrap();
        check(&local, &local, &state).unwrap();
        check(&local, &root.join("x/../mnt"), &state).unwrap();
        for (m, s) in [
            (local.join("sub"), state.clone()),
            (root.clone(), state.clone()),
            (mnt.clone(), root.join("x/../local/st")),
            (mnt.clone(), root.join("L/st/deeper")),
            (mnt.clone(), mnt.join("st")),
            (mnt.clone(), local.clone()),
            (local.join("sub"), root.join("local/./sub")),
            (mnt.clone(), root.clone()),
        ] {
            assert!(check(&local, &m, &s).is_err(), "{m:?} {s:?}");
        }
        let e = check(&local, &mnt, &root.join("nope/../st")).unwrap_err();
        assert!(e.to_string().contains("'..'"), "{e}");
    }
}
