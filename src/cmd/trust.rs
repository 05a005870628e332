//! `ftpsync trust`: show a server's host key and pin it in the state dir's known_hosts, only
//! after a yes on the terminal or a matching `--fingerprint`. Nothing else ever pins a key.

use crate::audit::Audit;
use crate::remote::Remote;
use crate::remote::{
    check_host_key, command_hint, credentials, probe_host_key, Algorithms, ConnectOptions,
    HostKeyInfo, HostKeyProblem,
};
use crate::statedir::KNOWN_HOSTS;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

pub struct Request {
    pub remote: Remote,
    pub state_dir: PathBuf,
    /// The other known_hosts files the mount reads (empty: the default ones); read, never
    /// written, so a conflicting or revoked key anywhere is seen.
    pub known_hosts: Vec<PathBuf>,
    /// Pin only a key with this fingerprint, without asking.
    pub fingerprint: Option<String>,
    /// Replace a different key pinned for this server.
    pub replace: bool,
    pub algorithms: Algorithms,
}

pub fn run(req: &Request) -> Result<()> {
    crate::statedir::prepare(&req.state_dir)?;
    let file = req.state_dir.join(KNOWN_HOSTS);
    let mut opts = ConnectOptions::new(req.remote.clone());
    opts.algorithms = req.algorithms.clone();
    if !req.known_hosts.is_empty() {
        opts.known_hosts = req.known_hosts.clone();
    }
    opts.known_hosts.push(file.clone());
    opts.state_known_hosts = Some(file.clone());
    let key = probe_host_key(&opts).map_err(anyhow::Error::msg)?;
    let who = req.remote.known_hosts_name();
    println!("{who} presents a {} key {}", key.key_type, key.fingerprint);
    if let Some(want) = &req.fingerprint {
        if !same_fingerprint(want, &key.fingerprint) {
            bail!(
                "the server's key {} does not match --fingerprint {want}: nothing was pinned. \
                 Someone may be intercepting the connection, or the fingerprint is wrong",
                key.fingerprint
            );
        }
    }
    let problem = match check_host_key(&opts, &key) {
        Ok(()) => {
            println!("already trusted: a known_hosts file the mount reads pins this key");
            return Ok(());
        }
        Err(e) => e.host_key_refusal().map(|(_, p)| p).ok_or(e)?,
    };
    match problem {
        HostKeyProblem::Revoked => bail!(
            "this key is listed under @revoked in {}; it cannot be trusted",
            file.display()
        ),
        HostKeyProblem::Changed if !req.replace => bail!(
            "a different key is pinned for {who} in {}; if the server's key was replaced on \
             purpose, {}",
            file.display(),
            command_hint(&req.remote, &req.state_dir, &key, true)
        ),
        _ => {}
    }
    if req.fingerprint.is_none() && !confirm(req, &key, &who, &file)? {
        bail!("not pinned");
    }
    let replaced = problem == HostKeyProblem::Changed;
    pin(&file, &who, &key, replaced)?;
    Audit::open(&req.state_dir).context("audit log")?.record(
        "trust",
        json!({"server": req.remote.to_string(), "key_type": key.key_type,
                   "fingerprint": key.fingerprint, "replaced": replaced}),
    );
    check_host_key(&opts, &key).map_err(|e| {
        anyhow::anyhow!(
            "pinned in {}, but the key is still refused (a line this command does not manage, \
             such as a hashed or wildcard entry or one in another known_hosts file, names another \
             key): {e}",
            file.display()
        )
    })?;
    println!(
        "pinned {} {} for {who} in {}",
        key.key_type,
        key.fingerprint,
        file.display()
    );
    Ok(())
}

/// Fingerprints compare without the `SHA256:` prefix and base64 padding a user may paste.
fn same_fingerprint(given: &str, actual: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        s.strip_prefix("SHA256:")
            .unwrap_or(s)
            .trim_end_matches('=')
            .to_string()
    };
    !norm(given).is_empty() && norm(given) == norm(actual)
}

/// Asks for a yes on the terminal. A yes from a pipe is not taken (a script would pin any key
/// unseen): without a terminal the answer is the command with `--fingerprint`.
fn confirm(req: &Request, key: &HostKeyInfo, who: &str, file: &Path) -> Result<bool> {
    if !credentials::interactive() {
        bail!(
            "not pinned: standard input is not a terminal, and ftpsync takes the yes only from \
             a terminal (a piped yes is not read). Check the fingerprint above with the \
             server's administrator; if it matches, {}",
            command_hint(&req.remote, &req.state_dir, key, false)
        );
    }
    print!(
        "Pin this key for {who} in {}? Only if its fingerprint matches what the server's \
         administrator says. Type yes: ",
        file.display()
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Writes the key's line, dropping (when replacing) the lines this command wrote for the host.
/// Atomic: a new file renamed over the old one, 0600.
fn pin(file: &Path, who: &str, key: &HostKeyInfo, replace: bool) -> Result<()> {
    let old = match crate::statedir::read(file) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let mut text: String = old
        .lines()
        .filter(|l| !(replace && l.split_ascii_whitespace().next() == Some(who)))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!("{who} {} {}\n", key.key_type, key.key_base64));
    let tmp = file.with_extension("tmp");
    let mut f = crate::statedir::create_temp(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_compare_leniently_but_exactly() {
        let fp = "SHA256:abcDEF123";
        assert!(same_fingerprint("SHA256:abcDEF123", fp));
        assert!(same_fingerprint(" abcDEF123= ", fp));
        assert!(!same_fingerprint("SHA256:abcdef123", fp));
        assert!(!same_fingerprint("SHA256:", "SHA256:"));
    }

    #[test]
    fn pin_replaces_only_its_own_host_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(KNOWN_HOSTS);
        std::fs::write(&f, "[h]:2222 ssh-ed25519 OLD\nother ssh-ed25519 KEEP\n").unwrap();
        let key = HostKeyInfo {
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:x".into(),
            key_base64: "NEW".into(),
        };
        pin(&f, "[h]:2222", &key, true).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text, "other ssh-ed25519 KEEP\n[h]:2222 ssh-ed25519 NEW\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
