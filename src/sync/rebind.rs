//! The manifest bound to the remote it describes (DESIGN invariant 9): its word counts only
//! for the server it was confirmed against, named by the configured URL, the server's host key
//! and the id in the remote root's marker file. When any of them changed (the profile points
//! elsewhere, the server was re-keyed, the root was moved away and recreated), the manifest is
//! emptied and every local path is compared with what the server really holds; files already
//! there with the right SHA-256 are adopted, not sent again.
//!
//! The URL is checked when the engine starts; the host key and the root marker at its first
//! connection, made then, and at every new connection after, one at a time.

use super::{reconcile, Inner};
use crate::mirror::{Binding, FileMeta};
use crate::remote::marker::{self, Found, Reserved};
use crate::remote::{RemoteError, Transport};
use log::{info, warn};
use parking_lot::Mutex;
use serde_json::json;

/// Serialises the checks of new connections, so that a changed root is dealt with once.
#[derive(Default)]
pub(super) struct Binder {
    lock: Mutex<Warned>,
}

/// Said once per daemon, not at every connection.
#[derive(Default)]
struct Warned {
    unmarkable: bool,
    unreadable: bool,
}

/// The URL without what does not change the directory it names (trailing slashes).
fn canonical(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Why a manifest bound to `bound` does not describe the remote at `url`.
fn url_changed(bound: &Binding, url: &str) -> Option<String> {
    (canonical(&bound.remote) != canonical(url))
        .then(|| format!("the remote changed from {} to {url}", bound.remote))
}

/// Why a manifest bound to `bound` does not describe a server whose host key is `key`.
fn host_key_changed(bound: &Binding, key: &str) -> Option<String> {
    let old = bound.host_key.as_deref()?;
    (old != key).then(|| format!("the server's host key changed from {old} to {key}"))
}

/// Why a manifest bound to `bound` (and vouching for entries, if `vouches`) does not
/// describe a root whose marker is `found`. A root never marked, or a marker that cannot be
/// read, tells nothing.
fn root_changed(bound: &Binding, found: &Found, vouches: bool) -> Option<String> {
    let ours = bound.root_id.as_deref().filter(|_| vouches)?;
    match found {
        Found::Id(id) if id == ours => None,
        Found::Id(id) => Some(format!(
            "the remote root's marker holds id {id}, not {ours}: the root was replaced"
        )),
        Found::Missing => Some(format!(
            "the remote root's marker (id {ours}) is gone: the root was replaced or emptied"
        )),
        Found::Foreign(what) => Some(format!(
            "the remote root's marker (id {ours}) was replaced by {what}"
        )),
        Found::Unreadable(_) => None,
    }
}

impl Inner {
    /// At start, before anything is replayed or compared: a manifest that describes another
    /// remote URL, or (connecting now) another server or root, is emptied, so the start-up
    /// scan compares every local path with what the server holds. Until that scan is done a
    /// flush waits, so it cannot report success against a root not yet checked.
    pub(super) fn bind_at_start(&self, conn: &mut Option<Box<dyn Transport>>) {
        self.bind_to_configured_url();
        if let Err(e) = self.connection(conn) {
            info!("the remote's host key and root are checked at the next connection: {e}");
        }
    }

    fn bind_to_configured_url(&self) {
        let url = &self.opts.server;
        let bound = self.mirror.lock().manifest.binding().cloned();
        let fresh = Binding {
            remote: url.clone(),
            ..Binding::default()
        };
        match bound {
            Some(b) => {
                if let Some(why) = url_changed(&b, url) {
                    self.distrust(&why, &b, fresh);
                }
            }
            // A new state dir, or one from before bindings: bound to what it is used with now.
            None => self.record_binding(fresh),
        }
    }

    /// Checks a new connection against the manifest's binding (host key, root marker) and
    /// hands it on with the marker out of the mirrored paths' reach. A connection-wide
    /// failure is an error: the connection is given up and made again later.
    pub(super) fn bind_connection(
        &self,
        mut t: Box<dyn Transport>,
    ) -> Result<Box<dyn Transport>, RemoteError> {
        let mut warned = self.binder.lock.lock();
        let key = t.session().map(|s| s.host_key.fingerprint);
        if let Some(key) = key {
            let bound = self.binding();
            if let Some(why) = host_key_changed(&bound, &key) {
                let rebound = Binding {
                    root_id: None,
                    host_key: Some(key),
                    ..bound.clone()
                };
                self.distrust(&why, &bound, rebound);
            } else if bound.host_key.is_none() {
                self.record_binding(Binding {
                    host_key: Some(key),
                    ..bound
                });
            }
        }
        if let Some(root) = t.session().map(|s| s.root) {
            self.check_resolved_root(&root)?;
        }
        self.check_root(t.as_mut(), &mut warned)?;
        Ok(Box::new(Reserved(t)))
    }

    /// A root that resolves elsewhere than when first seen went through a symlink put in its
    /// place (or above it) since: refused, never followed (DESIGN invariant 5).
    fn check_resolved_root(&self, root: &[u8]) -> Result<(), RemoteError> {
        let bound = self.binding();
        let now = hex::encode(root);
        match &bound.resolved_root {
            Some(was) if *was == now => Ok(()),
            Some(was) => Err(RemoteError::new(
                crate::remote::ErrorKind::RootUnusable,
                format!(
                    "the remote root now resolves to {}, not {} as when this mirror was set                      up: a symlink was put in its place or above it, and is not followed; if                      the new place is meant, name it in the remote URL (the mirror then checks                      everything against it)",
                    crate::relpath::show(root),
                    hex::decode(was).map_or_else(|_| was.clone(), |b| crate::relpath::show(&b))
                ),
            )),
            None => {
                self.record_binding(Binding {
                    resolved_root: Some(now),
                    ..bound
                });
                Ok(())
            }
        }
    }

    fn check_root(&self, t: &mut dyn Transport, warned: &mut Warned) -> Result<(), RemoteError> {
        let found = marker::read(t)?;
        let bound = self.binding();
        let vouches = !self.mirror.lock().manifest.is_empty();
        if let Some(why) = root_changed(&bound, &found, vouches) {
            let rebound = Binding {
                root_id: None,
                ..bound.clone()
            };
            self.distrust(&why, &bound, rebound);
        }
        let root_id = match found {
            Found::Id(id) => Some(id),
            Found::Unreadable(why) => {
                if !std::mem::replace(&mut warned.unreadable, true) {
                    warn!(
                        "the remote root's marker cannot be read ({why}); trusting the manifest \
                         on the remote's URL and host key only"
                    );
                }
                return Ok(());
            }
            Found::Foreign(_) | Found::Missing => self.mark_root(t, &found, warned)?,
        };
        let bound = self.binding();
        if bound.root_id != root_id {
            self.record_binding(Binding { root_id, ..bound });
        }
        Ok(())
    }

    /// Writes a fresh marker (keeping whatever else stood under its name as a conflict copy);
    /// returns its id, or None when the server does not let us write it.
    fn mark_root(
        &self,
        t: &mut dyn Transport,
        found: &Found,
        warned: &mut Warned,
    ) -> Result<Option<String>, RemoteError> {
        let written = marker::new_id()
            .map_err(|e| RemoteError::new(crate::remote::ErrorKind::Other, e.to_string()))
            .and_then(|id| {
                if matches!(found, Found::Foreign(_)) {
                    reconcile::move_aside(t, marker::MARKER)?;
                    self.forget_path(marker::MARKER);
                }
                marker::write(t, &id).map(|()| id)
            });
        match written {
            Ok(id) => {
                info!("marked the remote root as id {id}");
                Ok(Some(id))
            }
            Err(e) if marker::is_offline(&e) => Err(e),
            Err(e) => {
                if !std::mem::replace(&mut warned.unmarkable, true) {
                    warn!(
                        "cannot write the remote root's marker ({e}); a root replaced under the \
                         same URL will not be noticed: the manifest is trusted on the remote's \
                         URL and host key only"
                    );
                }
                Ok(None)
            }
        }
    }

    /// A mirrored file an earlier release sent under the marker's name is no longer vouched
    /// for: it was kept aside, and the local one is refused from now on.
    fn forget_path(&self, path: &[u8]) {
        let mut mirror = self.mirror.lock();
        if mirror.manifest.get(path).is_some() {
            if let Err(e) = mirror.manifest.remove(path) {
                log::error!("manifest: {e}");
            }
        }
    }

    fn binding(&self) -> Binding {
        self.mirror
            .lock()
            .manifest
            .binding()
            .cloned()
            .unwrap_or_default()
    }

    fn record_binding(&self, binding: Binding) {
        let mut mirror = self.mirror.lock();
        let done = mirror
            .manifest
            .bind(binding)
            .and_then(|()| mirror.manifest.sync());
        if let Err(e) = done {
            log::error!("manifest: {e}");
        }
    }

    /// The manifest does not describe the remote any more: it is emptied and rebound, and
    /// every local path is compared with what the server holds (by the start-up scan when it
    /// is still to come).
    fn distrust(&self, why: &str, old: &Binding, new: Binding) {
        warn!(
            "{why}: the manifest no longer describes the remote; every local path is compared \
             with what the server holds (files already there with the right SHA-256 are kept)"
        );
        self.audit(
            "rebind",
            json!({"reason": why, "old": binding_json(old), "new": binding_json(&new)}),
        );
        let mut mirror = self.mirror.lock();
        // What the local files hashed to stays true of them: kept as their latest hashes, so
        // an unchanged file is sent (or adopted) without waiting for a Store never to come.
        let hashed: Vec<(Vec<u8>, FileMeta)> = mirror
            .manifest
            .iter()
            .filter_map(|(p, c)| c.file().map(|f| (p.clone(), *f)))
            .collect();
        let done = mirror
            .manifest
            .forget_all()
            .and_then(|()| mirror.manifest.bind(new))
            .and_then(|()| mirror.manifest.sync());
        if let Err(e) = done {
            log::error!("manifest: {e}");
        }
        drop(mirror);
        let mut core = self.core.lock();
        for (path, meta) in hashed {
            if core.plan.hashes.get(&path).is_none() {
                core.plan.hashes.insert(path, meta);
            }
        }
        let scanned = !core.scanning;
        drop(core);
        if scanned {
            self.scan_local();
        }
    }
}

fn binding_json(b: &Binding) -> serde_json::Value {
    json!({"remote": b.remote, "host_key": b.host_key, "root_id": b.root_id})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound() -> Binding {
        Binding {
            remote: "sftp://u@h:22/srv/a".into(),
            host_key: Some("SHA256:old".into()),
            root_id: Some("11".into()),
            resolved_root: None,
        }
    }

    #[test]
    fn another_url_is_another_remote_but_a_trailing_slash_is_not() {
        assert!(url_changed(&bound(), "sftp://u@h:22/srv/a/").is_none());
        for other in [
            "sftp://u@h:22/srv/b",
            "sftp://u@h:2222/srv/a",
            "sftp://v@h:22/srv/a",
            "sftp://u@g:22/srv/a",
            "sftp://u@h:22/srv/a/b",
        ] {
            let why = url_changed(&bound(), other).expect(other);
            assert!(why.contains(other) && why.contains("/srv/a"), "{why}");
        }
    }

    #[test]
    fn another_host_key_is_another_server_once_one_was_seen() {
        assert!(host_key_changed(&bound(), "SHA256:old").is_none());
        assert!(host_key_changed(&bound(), "SHA256:new").is_some());
        let unseen = Binding {
            host_key: None,
            ..bound()
        };
        assert!(host_key_changed(&unseen, "SHA256:new").is_none());
    }

    #[test]
    fn a_missing_foreign_or_other_marker_is_another_root_when_the_manifest_vouches() {
        let b = bound();
        assert!(root_changed(&b, &Found::Id("11".into()), true).is_none());
        for found in [
            Found::Id("22".into()),
            Found::Missing,
            Found::Foreign("a symlink".into()),
        ] {
            assert!(root_changed(&b, &found, true).is_some(), "{found:?}");
            assert!(root_changed(&b, &found, false).is_none(), "{found:?}");
        }
        // Nothing can be told from a marker that cannot be read, or from a root never marked
        // (a server that refused the marker, a manifest from before bindings).
        assert!(root_changed(&b, &Found::Unreadable("denied".into()), true).is_none());
        let unmarked = Binding {
            root_id: None,
            ..bound()
        };
        assert!(root_changed(&unmarked, &Found::Missing, true).is_none());
    }
}
