//! A failure-injecting [`Transport`] wrapper, in the way of mountpoint-s3's `failure_client`:
//! it passes every call to the transport it wraps, except the calls a [`Rule`] picks (by
//! operation, by path, the Nth matching call, the next N, or from now on), which fail with the
//! rule's [`ErrorKind`] instead: a lost connection, a full server, a changed host key, a
//! permission refused on one path. The rules live in a shared [`Faults`] plan, so a test
//! changes them while the engine's connections run, and connections made later obey them too.
//!
//! An upload cut by a lost connection leaves what a real one leaves: a partial file under a
//! temporary name beside its target (which the engine must sweep).

use std::io::{Read, Write};
use std::sync::Arc;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::remote::path::temp_beside;
use crate::remote::{
    display_path, Attrs, DirNews, DownloadReport, ErrorKind, RemoteError, RemoteStat, Result,
    SessionInfo, Sha256Hash, Transport, UploadReport,
};

/// The operations a rule can pick. `Connect` is the making of a new connection (see
/// [`Faults::connect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    Lstat,
    Mkdir,
    MkdirAll,
    Upload,
    Rename,
    RemoveFile,
    RemoveDir,
    Symlink,
    Readlink,
    SetAttrs,
    Hash,
    List,
    Download,
}

/// Which calls fail: those of `op` (any if None) naming `path` (any if None), after `skip`
/// matching calls went through, `times` of them (for ever if None).
#[derive(Debug, Clone)]
pub struct Rule {
    op: Option<Op>,
    path: Option<Vec<u8>>,
    skip: usize,
    times: Option<usize>,
    kind: ErrorKind,
    /// The call is carried out and its answer lost (the connection dropped before it came).
    answer_lost: bool,
}

impl Rule {
    /// The next call, whatever it is, fails with `kind`.
    pub fn fail(kind: ErrorKind) -> Rule {
        Rule {
            op: None,
            path: None,
            skip: 0,
            times: Some(1),
            kind,
            answer_lost: false,
        }
    }

    /// The call is carried out on the server, then fails as if its answer were lost with the
    /// connection (mkdir, mkdir_all and symlink): the caller cannot tell whether it happened.
    pub fn answer_lost(mut self) -> Rule {
        self.answer_lost = true;
        self
    }

    /// Only calls of this operation.
    pub fn on(mut self, op: Op) -> Rule {
        self.op = Some(op);
        self
    }

    /// Only calls naming this path (either end of a rename, any path of a hash).
    pub fn at(mut self, path: &[u8]) -> Rule {
        self.path = Some(path.to_vec());
        self
    }

    /// The `n`th matching call (1-based) fails, not the first.
    pub fn nth(mut self, n: usize) -> Rule {
        self.skip = n.saturating_sub(1);
        self
    }

    /// `n` matching calls in a row fail.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    /// Every matching call fails from now on, until [`Faults::clear`].
    pub fn always(mut self) -> Rule {
        self.times = None;
        self
    }

    fn matches(&self, op: Op, paths: &[&[u8]], answered: bool) -> bool {
        self.answer_lost == answered
            && self.op.is_none_or(|o| o == op)
            && self
                .path
                .as_deref()
                .is_none_or(|want| paths.contains(&want))
    }

    fn spent(&self) -> bool {
        self.times == Some(0)
    }
}

#[derive(Default)]
struct Plan {
    rules: Vec<Rule>,
    injected: usize,
    /// Calls that wait (operation and path) until `resume`, and how many wait now.
    paused: Vec<(Op, Vec<u8>)>,
    blocked: usize,
}

/// The shared fault plan of every connection a test makes.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Plan>>, Arc<parking_lot::Condvar>);

impl Faults {
    pub fn add(&self, rule: Rule) {
        self.0.lock().rules.push(rule);
    }

    /// No call fails any more.
    pub fn clear(&self) {
        self.0.lock().rules.clear();
    }

    /// Calls of `op` naming `path` wait from now on until `resume`: work held in flight at a
    /// chosen point, while a test makes something else happen.
    pub fn pause(&self, op: Op, path: &[u8]) {
        self.0.lock().paused.push((op, path.to_vec()));
    }

    /// Every paused call goes on.
    pub fn resume(&self) {
        self.0.lock().paused.clear();
        self.1.notify_all();
    }

    /// Waits (at most `timeout`) until `n` calls wait at a pause; says whether they do.
    pub fn wait_blocked(&self, n: usize, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut plan = self.0.lock();
        while plan.blocked < n {
            if self.1.wait_until(&mut plan, deadline).timed_out() {
                return plan.blocked >= n;
            }
        }
        true
    }

    /// How many calls failed by a rule so far.
    pub fn injected(&self) -> usize {
        self.0.lock().injected
    }

    /// Wraps a connection in this plan.
    pub fn wrap<T: Transport>(&self, inner: T) -> Faulty<T> {
        Faulty {
            inner,
            faults: self.clone(),
        }
    }

    /// The making of a connection: fails if a rule picks `Op::Connect`.
    pub fn connect(&self) -> Result<()> {
        self.check(Op::Connect, &[])
    }

    /// The error the first matching rule injects into this call, if any.
    fn check(&self, op: Op, paths: &[&[u8]]) -> Result<()> {
        let mut plan = self.0.lock();
        let held = |plan: &Plan| {
            plan.paused
                .iter()
                .any(|(o, p)| *o == op && paths.contains(&p.as_slice()))
        };
        if held(&plan) {
            plan.blocked += 1;
            self.1.notify_all();
            while held(&plan) {
                self.1.wait(&mut plan);
            }
            plan.blocked -= 1;
        }
        drop(plan);
        self.inject(op, paths, false)
    }

    /// After a call was carried out: the error a rule that loses its answer injects, if any.
    fn answer(&self, op: Op, paths: &[&[u8]]) -> Result<()> {
        self.inject(op, paths, true)
    }

    /// The error the first matching rule injects, before the call or after it (`answered`).
    fn inject(&self, op: Op, paths: &[&[u8]], answered: bool) -> Result<()> {
        let mut plan = self.0.lock();
        let Some(rule) = plan
            .rules
            .iter_mut()
            .find(|r| !r.spent() && r.matches(op, paths, answered))
        else {
            return Ok(());
        };
        if rule.skip > 0 {
            rule.skip -= 1;
            return Ok(());
        }
        if let Some(n) = &mut rule.times {
            *n -= 1;
        }
        let kind = rule.kind;
        plan.injected += 1;
        let what = paths.first().map_or_else(String::new, |p| display_path(p));
        Err(RemoteError::new(
            kind,
            format!("{op:?} {what}: {} (injected)", describe(kind)),
        ))
    }
}

fn describe(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Transient => "connection lost",
        ErrorKind::NoSpace => "no space left on the server",
        ErrorKind::HostKey => "the server's host key changed",
        ErrorKind::Permission => "permission denied",
        _ => "failed",
    }
}

/// A connection whose calls fail as its [`Faults`] plan says.
pub struct Faulty<T> {
    inner: T,
    faults: Faults,
}

impl<T: Transport> Transport for Faulty<T> {
    fn session(&self) -> Option<SessionInfo> {
        self.inner.session()
    }

    fn lstat(&mut self, rel: &[u8]) -> Result<Option<RemoteStat>> {
        self.faults.check(Op::Lstat, &[rel])?;
        self.inner.lstat(rel)
    }

    fn mkdir(&mut self, rel: &[u8], mode: u32) -> Result<()> {
        self.faults.check(Op::Mkdir, &[rel])?;
        self.inner.mkdir(rel, mode)?;
        self.faults.answer(Op::Mkdir, &[rel])
    }

    /// A lost answer loses the news of what was made with it (what was asked for was heard).
    fn mkdir_all(&mut self, rel: &[u8], news: &mut dyn FnMut(&[u8], DirNews)) -> Result<()> {
        self.faults.check(Op::MkdirAll, &[rel])?;
        let mut made = Vec::new();
        self.inner.mkdir_all(rel, &mut |d, n| match n {
            DirNews::Asking => news(d, n),
            DirNews::Made(_) => made.push((d.to_vec(), n)),
        })?;
        self.faults.answer(Op::MkdirAll, &[rel])?;
        made.iter().for_each(|(d, n)| news(d, *n));
        Ok(())
    }

    /// A lost connection cuts the upload after half its bytes, leaving them under a temp name.
    fn upload(
        &mut self,
        rel: &[u8],
        src: &mut dyn Read,
        size: u64,
        sha256: &Sha256Hash,
        attrs: &Attrs,
    ) -> Result<UploadReport> {
        match self.faults.check(Op::Upload, &[rel]) {
            Err(e) if e.kind() == ErrorKind::Transient => {
                let mut part = Vec::new();
                // What a real upload would have sent before the cut: the error stands anyway.
                let _ = src.take(size / 2).read_to_end(&mut part);
                let sha: Sha256Hash = Sha256::digest(&part).into();
                let len = part.len() as u64;
                let _ = self
                    .inner
                    .upload(&temp_beside(rel), &mut &part[..], len, &sha, attrs);
                Err(e)
            }
            Err(e) => Err(e),
            Ok(()) => self.inner.upload(rel, src, size, sha256, attrs),
        }
    }

    fn rename(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.faults.check(Op::Rename, &[from, to])?;
        self.inner.rename(from, to)
    }

    fn rename_noreplace(&mut self, from: &[u8], to: &[u8]) -> Result<()> {
        self.faults.check(Op::Rename, &[from, to])?;
        self.inner.rename_noreplace(from, to)
    }

    fn remove_file(&mut self, rel: &[u8]) -> Result<()> {
        self.faults.check(Op::RemoveFile, &[rel])?;
        self.inner.remove_file(rel)
    }

    fn remove_dir(&mut self, rel: &[u8]) -> Result<()> {
        self.faults.check(Op::RemoveDir, &[rel])?;
        self.inner.remove_dir(rel)
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<()> {
        self.faults.check(Op::Symlink, &[rel])?;
        self.inner.symlink(rel, target)?;
        self.faults.answer(Op::Symlink, &[rel])
    }

    fn readlink(&mut self, rel: &[u8]) -> Result<Vec<u8>> {
        self.faults.check(Op::Readlink, &[rel])?;
        self.inner.readlink(rel)
    }

    fn set_attrs(&mut self, rel: &[u8], attrs: &Attrs) -> Result<()> {
        self.faults.check(Op::SetAttrs, &[rel])?;
        self.inner.set_attrs(rel, attrs)
    }

    fn hash(&mut self, rels: &[&[u8]]) -> Result<Vec<Option<Sha256Hash>>> {
        self.faults.check(Op::Hash, rels)?;
        self.inner.hash(rels)
    }

    fn list_stat(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, RemoteStat)>> {
        self.faults.check(Op::List, &[dir])?;
        self.inner.list_stat(dir)
    }

    fn download(&mut self, rel: &[u8], dst: &mut dyn Write) -> Result<DownloadReport> {
        self.faults.check(Op::Download, &[rel])?;
        self.inner.download(rel, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::MockTransport;

    #[test]
    fn rules_pick_calls_by_op_path_and_count() {
        let faults = Faults::default();
        let mut t = faults.wrap(MockTransport::new());
        faults.add(Rule::fail(ErrorKind::Transient).on(Op::Mkdir).nth(2));
        faults.add(
            Rule::fail(ErrorKind::Permission)
                .on(Op::Lstat)
                .at(b"p")
                .always(),
        );
        t.mkdir(b"a", 0o755).expect("first mkdir goes through");
        let e = t.mkdir(b"b", 0o755).expect_err("second mkdir fails");
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.to_string().contains("injected"), "{e}");
        t.mkdir(b"b", 0o755).expect("the rule is spent");
        for _ in 0..3 {
            let e = t.lstat(b"p").expect_err("p is refused for ever");
            assert_eq!(e.kind(), ErrorKind::Permission);
        }
        t.lstat(b"a").expect("other paths go through");
        assert_eq!(faults.injected(), 4);
        faults.clear();
        t.lstat(b"p").expect("cleared");
    }

    #[test]
    fn a_cut_upload_leaves_a_partial_temp_file() {
        let server = MockTransport::new();
        let faults = Faults::default();
        let mut t = faults.wrap(server.clone());
        faults.add(Rule::fail(ErrorKind::Transient).on(Op::Upload));
        let data = b"0123456789";
        let sha: Sha256Hash = Sha256::digest(data).into();
        let attrs = Attrs {
            mode: 0o644,
            atime: 0,
            mtime: 0,
        };
        let e = t
            .upload(b"f", &mut &data[..], 10, &sha, &attrs)
            .expect_err("cut");
        assert_eq!(e.kind(), ErrorKind::Transient);
        let nodes = server.nodes();
        assert!(
            !nodes.contains_key(&b"f"[..]),
            "nothing under the real name"
        );
        assert!(
            nodes
                .keys()
                .any(|k| crate::remote::path::is_temp_name(k) && k.starts_with(b".f.")),
            "a temp file is left: {:?}",
            nodes
                .keys()
                .map(|k| crate::relpath::show(k))
                .collect::<Vec<_>>()
        );
    }
}
