//! What the engine tells: the status document's mirror part, why a flush stops waiting, and
//! the audit records of what was sent and refused.

use super::*;

impl Engine {
    /// The mirror's state for `ftpsync status` (see doc/CONTRACTS.md). Cheap: a pass over the
    /// pending paths; the rate and the last hour come from small bounded records.
    pub fn status(&self) -> report::Mirror {
        let mut core = self.inner.core.lock();
        let now = Instant::now();
        let sent = self.inner.meter.sent();
        core.stats.sample(now, sent);
        let core = &*core;
        let mirror = self.inner.mirror.lock();
        let size = |p: &[u8]| core.plan.hashes.get(p).map_or(0, |s| s.size);
        // Waiting files count in full, files being uploaded less what was already read (a path
        // changed again while in flight is sent again in full).
        let waiting: u64 = core.plan.pending_paths().map(|p| size(p)).sum();
        let sending: u64 = core
            .running
            .iter()
            .filter(|(p, _)| !core.plan.is_waiting(p))
            .map(|(p, r)| size(p).saturating_sub(r.sent.load(Ordering::Relaxed)))
            .sum();
        let pending_bytes = waiting + sending;
        let rate = core.stats.rate(now, sent);
        let last_hour = core.stats.last_hour(now);
        let last_confirmed = core.stats.last_confirmed();
        report::Mirror {
            connection: core
                .halted
                .clone()
                .map_or(core.connection.clone(), |h| format!("halted: {h}")),
            connected: core.halted.is_none() && core.connection == "connected",
            halted: core.halted.is_some(),
            pending: core.plan.waiting_only() as u64,
            pending_bytes,
            in_flight: core.plan.in_flight() as u64,
            upload_rate: rate.round() as u64,
            rate_window_seconds: stats::RATE_WINDOW.as_secs(),
            eta_seconds: (pending_bytes > 0 && rate >= 1.0)
                .then(|| (pending_bytes as f64 / rate).ceil() as u64),
            oldest_pending: core.plan.oldest().map(|(p, since)| report::Oldest {
                name: PathName::of(p),
                age_seconds: (now.saturating_duration_since(since).as_secs_f64() * 10.0).round()
                    / 10.0,
            }),
            confirmed: core.confirmed,
            bytes_sent: sent,
            bytes_confirmed: core.bytes_sent,
            confirmed_last_hour: report::LastHour {
                files: last_hour.files,
                bytes: last_hour.bytes,
            },
            last_confirmed: last_confirmed.map(crate::utc::rfc3339),
            last_confirmed_unix: last_confirmed
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as f64 / 1000.0),
            conflicts: core.conflicts,
            mirrored_paths: mirror.manifest.len() as u64,
            applied_seq: mirror.manifest.applied_seq(),
            failures: core
                .failures
                .iter()
                .map(|(p, f)| report::Failure {
                    name: PathName::of(p),
                    reason: f.reason.clone(),
                })
                .collect(),
            remote_only: core
                .remote_only
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
            server: core.session.as_ref().map(server_report),
            bwlimit: self.inner.opts.bwlimit,
        }
    }
}

impl Inner {
    pub(super) fn audit(&self, event: &str, fields: Value) {
        if let Some(a) = &self.opts.audit {
            a.record(event, fields);
        }
    }

    /// A directory ftpsync makes on the server (a parent, or a job's own) is intended before it
    /// is asked for, recorded and audited as soon as it is made: should the answer be lost, the
    /// work that made it fail, or its local twin go before its own turn comes, it is still
    /// ours to remove.
    pub(super) fn dir_news(&self, dir: &[u8], news: DirNews) {
        let written = {
            let manifest = &mut self.mirror.lock().manifest;
            match news {
                DirNews::Asking => manifest.intend(dir, Confirmed::Dir { mode: 0o755 }),
                DirNews::Made(mode) => manifest.put(dir, Confirmed::Dir { mode }),
            }
        };
        if let Err(e) = written {
            error!("manifest: {e}");
        }
        if let DirNews::Made(mode) = news {
            let fields = json!({"mode": format!("{mode:o}")});
            self.audit("mkdir", with_paths(&[("path", dir)], fields));
        }
    }

    /// A refused host key, algorithm set or login: each attempt is audited.
    pub(super) fn audit_refusal(&self, e: &RemoteError) {
        let server = &self.opts.server;
        match (e.kind(), e.host_key_refusal()) {
            (ErrorKind::HostKey, Some((key, problem))) => self.audit(
                "host_key_refused",
                json!({"server": server, "problem": format!("{problem:?}").to_lowercase(),
                       "key_type": key.key_type, "fingerprint": key.fingerprint,
                       "reason": e.message()}),
            ),
            (ErrorKind::HostKey, None) => self.audit(
                "algorithms_refused",
                json!({"server": server, "reason": e.message()}),
            ),
            (ErrorKind::RootUnusable, _) => self.audit(
                "root_refused",
                json!({"server": server, "reason": e.message()}),
            ),
            (ErrorKind::Auth, _) => self.audit(
                "auth_failed",
                json!({"server": server, "reason": e.message()}),
            ),
            _ => {}
        }
    }

    /// What a finished reconcile changed on the remote.
    pub(super) fn audit_outcome(&self, path: &[u8], report: &reconcile::Report) {
        for copy in &report.conflicts {
            self.audit("conflict_kept", with_paths(&[("copy", copy)], json!({})));
        }
        let p = |fields| with_paths(&[("path", path)], fields);
        match (&report.apply, &report.uploaded) {
            (Apply::Put(_), Some(u)) => self.audit(
                "confirmed",
                p(json!({"size": u.bytes, "sha256": hex::encode(u.sha256),
                         "verified_by": u.verified_by.to_string()})),
            ),
            (Apply::Put(Confirmed::File(f)), None) => self.audit(
                "confirmed",
                p(json!({"size": f.size, "sha256": hex::encode(f.sha256),
                         "verified_by": "the remote copy already there"})),
            ),
            (Apply::Put(Confirmed::Symlink { target }), None) => self.audit(
                "symlink",
                with_paths(&[("path", path), ("target", target)], json!({})),
            ),
            (Apply::Remove, _) => self.audit("delete", p(json!({}))),
            // A directory is audited as it is made (`dir_news`).
            (Apply::Put(Confirmed::Dir { .. }), None) | (Apply::Nothing, _) => {}
        }
    }
}

pub(super) fn server_report(s: &SessionInfo) -> report::Server {
    let n = &s.negotiated;
    report::Server {
        remote: s.server.clone(),
        host_key: report::HostKey {
            key_type: s.host_key.key_type.clone(),
            fingerprint: s.host_key.fingerprint.clone(),
        },
        auth: s.auth.clone(),
        capabilities: report::Capabilities {
            symlinks: s.symlinks.describe().to_string(),
            permissions: if s.modes { "kept" } else { "ignored" }.to_string(),
            fsync: s.fsync,
            verify: s.verify.to_string(),
        },
        algorithms: report::Algorithms {
            kex: n.kex.clone(),
            host_key: n.host_key.clone(),
            cipher: [n.cipher_cs.clone(), n.cipher_sc.clone()],
            mac: [n.mac_cs.clone(), n.mac_sc.clone()],
        },
    }
}

/// Why waiting on is pointless, if it is: the remote refused us (host key, login) again since
/// the flush began, or all that is left are paths that failed for a reason only a person can
/// clear, each retried once since then.
pub(super) fn needs_person(core: &Core, began: Instant) -> Option<String> {
    if let (Some(why), Some(at)) = (&core.halted, core.halted_at) {
        if at >= began {
            return Some(format!("uploads are stopped: {why}"));
        }
    }
    let is_stuck = |p: &Vec<u8>| {
        core.failures
            .get(p)
            .is_some_and(|f| f.needs_person && f.count >= 2 && f.last >= began)
    };
    if !core.plan.outstanding().all(is_stuck) {
        return None;
    }
    let stuck: Vec<String> = core
        .failures
        .iter()
        .filter(|(p, _)| is_stuck(p))
        .map(|(p, f)| format!("\n  {}: {}", crate::relpath::show(p), f.reason))
        .collect();
    if stuck.is_empty() {
        return None;
    }
    Some(format!(
        "{} paths fail for a reason only you can clear (retried since the flush began):{}",
        stuck.len(),
        stuck.iter().take(20).cloned().collect::<String>()
    ))
}

pub(super) fn describe_backlog(core: &Core) -> String {
    let mut s = format!(
        "{} paths pending, {} in flight, {} directories to clear of temp files; connection: {}",
        core.plan.pending(),
        core.plan.in_flight(),
        core.litter.len(),
        core.halted
            .clone()
            .map_or(core.connection.clone(), |h| format!("halted: {h}"))
    );
    for (p, f) in core.failures.iter().take(20) {
        let why = &f.reason;
        s.push_str(&format!("\n  {}: {why}", crate::relpath::show(p)));
    }
    s
}
