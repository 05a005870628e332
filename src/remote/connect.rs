//! Establishing a session: TCP with a timeout, the algorithm policy, the handshake, the host
//! key check against known_hosts files, and authentication (agent, then key files).

use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

use super::b64;
use super::credentials::{self, Responder, SecretSource};
use super::error::{classify, describe, ErrorKind, HostKeyInfo, HostKeyProblem, RemoteError};
use super::keyfile::{self, KeyFile};
use super::probe;
use super::url::Remote;
use super::verify::VerifyMode;

/// Key exchange: curve25519 and the NIST ECDH family only (no SHA-1, no finite-field DH).
pub const KEX_ALGORITHMS: &str = "curve25519-sha256,curve25519-sha256@libssh.org,\
ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521";
/// Host key signatures: never ssh-rsa (SHA-1) nor ssh-dss.
pub const HOST_KEY_ALGORITHMS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,\
ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256";
/// AEAD ciphers first; CTR only together with the encrypt-then-MAC MACs below. No CBC.
pub const CIPHERS: &str = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,\
aes128-gcm@openssh.com,aes256-ctr,aes128-ctr";
/// Encrypt-then-MAC SHA-2 only.
pub const MACS: &str = "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com";

/// The algorithms a session may use: the defaults above, or a narrower choice from the config
/// (wider only with `insecure`). Comma-separated, in preference order, as libssh2 takes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Algorithms {
    pub kex: String,
    pub host_key: String,
    pub ciphers: String,
    pub macs: String,
}

impl Default for Algorithms {
    fn default() -> Algorithms {
        Algorithms {
            kex: KEX_ALGORITHMS.into(),
            host_key: HOST_KEY_ALGORITHMS.into(),
            ciphers: CIPHERS.into(),
            macs: MACS.into(),
        }
    }
}

impl Algorithms {
    /// The defaults with each given list replacing its category. Names outside the default
    /// policy are refused unless `insecure` (the config's `insecure_allow_weak_algorithms`).
    pub fn narrowed(
        kex: &[String],
        host_key: &[String],
        ciphers: &[String],
        macs: &[String],
        insecure: bool,
    ) -> Result<Algorithms, String> {
        let pick = |what: &str, given: &[String], default: &str| -> Result<String, String> {
            if given.is_empty() {
                return Ok(default.to_string());
            }
            for name in given {
                if name.is_empty() || name.contains([',', ' ']) {
                    return Err(format!("invalid {what} algorithm name '{name}'"));
                }
                if !insecure && !default.split(',').any(|d| d == name) {
                    return Err(format!(
                        "{what} algorithm '{name}' is outside ftpsync's default policy ({default}); \
                         the config may only narrow it, unless insecure_allow_weak_algorithms = true"
                    ));
                }
            }
            Ok(given.join(","))
        };
        Ok(Algorithms {
            kex: pick("key exchange", kex, KEX_ALGORITHMS)?,
            host_key: pick("host key", host_key, HOST_KEY_ALGORITHMS)?,
            ciphers: pick("cipher", ciphers, CIPHERS)?,
            macs: pick("MAC", macs, MACS)?,
        })
    }

    /// The policy by category, for messages.
    fn categories(&self) -> [(&str, &str); 4] {
        [
            ("key exchange", &self.kex),
            ("host key type", &self.host_key),
            ("cipher", &self.ciphers),
            ("MAC", &self.macs),
        ]
    }
}

/// Everything a connection needs. `ConnectOptions::new` fills the defaults.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub remote: Remote,
    /// OpenSSH known_hosts files; the host key must match an entry in one of them. Missing
    /// files are skipped.
    pub known_hosts: Vec<PathBuf>,
    /// Which of `known_hosts` is the state dir's own: read never through a symbolic link
    /// (see `statedir`), where the others may be the user's symlinked dotfiles.
    pub state_known_hosts: Option<PathBuf>,
    /// Private key files, tried in order after the agent. Missing files are skipped.
    pub identities: Vec<PathBuf>,
    /// For encrypted key files.
    pub passphrase: Option<SecretSource>,
    /// Password authentication: off unless a source is given.
    pub password: Option<SecretSource>,
    /// Answers keyboard-interactive challenges after the key (a second factor).
    pub otp: Option<SecretSource>,
    pub algorithms: Algorithms,
    /// Try ssh-agent (when SSH_AUTH_SOCK is set) before the key files.
    pub use_agent: bool,
    pub verify: VerifyMode,
    /// For the TCP connect, the handshake and authentication.
    pub connect_timeout: Duration,
    /// For each blocking operation afterwards (a hash command gets more for big files).
    pub io_timeout: Duration,
}

impl ConnectOptions {
    pub fn new(remote: Remote) -> ConnectOptions {
        ConnectOptions {
            remote,
            known_hosts: home_files(&[".ssh/known_hosts"]),
            state_known_hosts: None,
            identities: home_files(&[".ssh/id_ed25519", ".ssh/id_rsa"]),
            passphrase: None,
            password: None,
            otp: None,
            algorithms: Algorithms::default(),
            use_agent: true,
            verify: VerifyMode::Auto,
            connect_timeout: Duration::from_secs(20),
            io_timeout: Duration::from_secs(60),
        }
    }

    /// Refuses key and credential files that others can read, before any login: they would
    /// only fail later, in the background.
    pub fn check_secret_files(&self) -> Result<(), String> {
        let files = [&self.passphrase, &self.password]
            .into_iter()
            .filter_map(|s| match s {
                Some(SecretSource::File(p)) => Some((p, "credential file")),
                _ => None,
            })
            .chain(
                self.identities
                    .iter()
                    .filter(|k| k.exists())
                    .map(|k| (k, "private key")),
            );
        for (path, what) in files {
            credentials::check_private(path, what)?;
        }
        Ok(())
    }

    /// In the foreground on a terminal, secrets not given otherwise are asked for: the
    /// passphrase of an encrypted key once now, a one-time code whenever the server asks.
    pub fn ask_for_missing_secrets(&mut self) -> std::io::Result<()> {
        if !credentials::interactive() {
            return Ok(());
        }
        let encrypted = self
            .identities
            .iter()
            .find(|k| fs::read(k).is_ok_and(|t| keyfile::is_encrypted(&t)));
        if let (None, Some(key)) = (&self.passphrase, encrypted) {
            let label = format!("Passphrase for {}", key.display());
            self.passphrase = Some(SecretSource::Given(credentials::prompt(&label)?));
        }
        if self.otp.is_none() {
            self.otp = Some(SecretSource::Prompt(format!(
                "One-time code for {}@{}",
                self.remote.user, self.remote.host
            )));
        }
        Ok(())
    }
}

fn home_files(rel: &[&str]) -> Vec<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => rel.iter().map(|r| Path::new(&h).join(r)).collect(),
        _ => Vec::new(),
    }
}

/// The algorithms negotiated for a session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Negotiated {
    pub kex: String,
    pub host_key: String,
    pub cipher_cs: String,
    pub cipher_sc: String,
    pub mac_cs: String,
    pub mac_sc: String,
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kex={} hostkey={} cipher={}/{} mac={}/{}",
            self.kex, self.host_key, self.cipher_cs, self.cipher_sc, self.mac_cs, self.mac_sc
        )
    }
}

/// A session that passed the host key check and authentication.
pub(crate) struct Established {
    pub session: Session,
    pub host_key: HostKeyInfo,
    pub negotiated: Negotiated,
    /// How the login succeeded ("ssh-agent", "key /path", "key /path + keyboard-interactive").
    pub auth: String,
}

/// Connects, checks the host key and authenticates.
pub(crate) fn establish(opts: &ConnectOptions) -> Result<Established, RemoteError> {
    let (session, host_key, negotiated) = handshake(opts)?;
    check_host_key(opts, &host_key)?;
    let auth = authenticate(&session, opts)?;
    session.set_timeout(millis(opts.io_timeout));
    Ok(Established {
        session,
        host_key,
        negotiated,
        auth,
    })
}

/// Handshakes only and returns the server's host key, unchecked: for showing it to a user who
/// is deciding whether to trust it (`ftpsync trust`).
pub fn probe_host_key(opts: &ConnectOptions) -> Result<HostKeyInfo, RemoteError> {
    handshake(opts).map(|(_, key, _)| key)
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn handshake(opts: &ConnectOptions) -> Result<(Session, HostKeyInfo, Negotiated), RemoteError> {
    let (tcp, addr) = tcp_connect(&opts.remote, opts.connect_timeout)?;
    let mut session = Session::new().map_err(|e| fail("cannot create an SSH session", &e))?;
    session.set_timeout(millis(opts.connect_timeout));
    set_policy(&session, &opts.algorithms)?;
    session.set_tcp_stream(tcp);
    if let Err(e) = session.handshake() {
        return Err(handshake_error(opts, addr, &e));
    }
    let negotiated = negotiated(&session);
    check_negotiated(&negotiated, &opts.algorithms)?;
    let host_key = host_key_info(&session)?;
    Ok((session, host_key, negotiated))
}

fn tcp_connect(remote: &Remote, timeout: Duration) -> Result<(TcpStream, SocketAddr), RemoteError> {
    let target = format!("{}:{}", remote.host, remote.port);
    let addrs = (remote.host.as_str(), remote.port)
        .to_socket_addrs()
        .map_err(|e| transient(format!("cannot resolve {target}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                // Many small SFTP requests: do not let Nagle delay them.
                let _ = tcp.set_nodelay(true);
                return Ok((tcp, addr));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(transient(match last {
        Some(e) => format!("cannot connect to {target}: {e}"),
        None => format!("cannot resolve {target}: no address"),
    }))
}

fn transient(msg: String) -> RemoteError {
    RemoteError::new(ErrorKind::Transient, msg)
}

fn fail(what: &str, e: &ssh2::Error) -> RemoteError {
    RemoteError::new(classify(e), format!("{what}: {}", describe(e)))
}

/// Sets the allowlists. Must come before the handshake; libssh2 silently drops names it does
/// not know, so what was negotiated is checked again afterwards.
fn set_policy(session: &Session, a: &Algorithms) -> Result<(), RemoteError> {
    let prefs = [
        (MethodType::Kex, a.kex.as_str()),
        (MethodType::HostKey, &a.host_key),
        (MethodType::CryptCs, &a.ciphers),
        (MethodType::CryptSc, &a.ciphers),
        (MethodType::MacCs, &a.macs),
        (MethodType::MacSc, &a.macs),
        (MethodType::CompCs, "none"),
        (MethodType::CompSc, "none"),
    ];
    for (kind, list) in prefs {
        session
            .method_pref(kind, list)
            .map_err(|e| fail(&format!("cannot set algorithm preferences {list}"), &e))?;
    }
    Ok(())
}

/// A failed handshake: when the server has nothing in common with the policy, say what it
/// offered (read from its KEXINIT over a second connection); otherwise a transient failure.
fn handshake_error(opts: &ConnectOptions, addr: SocketAddr, e: &ssh2::Error) -> RemoteError {
    let target = format!("{}:{}", opts.remote.host, opts.remote.port);
    if let Ok(offered) = probe::offered(addr, opts.connect_timeout) {
        let why = probe::explain(&offered, &opts.algorithms.categories());
        if !why.is_empty() {
            // Fatal like a host key problem: retrying cannot help, an administrator must act.
            return RemoteError::new(
                ErrorKind::HostKey,
                format!(
                    "refusing {target}: the server offers only algorithms outside ftpsync's \
                     policy ({why})"
                ),
            );
        }
    }
    RemoteError::new(
        ErrorKind::Transient,
        format!("SSH handshake with {target} failed: {}", describe(e)),
    )
}

fn negotiated(session: &Session) -> Negotiated {
    let m = |t| session.methods(t).unwrap_or("").to_string();
    Negotiated {
        kex: m(MethodType::Kex),
        host_key: m(MethodType::HostKey),
        cipher_cs: m(MethodType::CryptCs),
        cipher_sc: m(MethodType::CryptSc),
        mac_cs: m(MethodType::MacCs),
        mac_sc: m(MethodType::MacSc),
    }
}

/// Defence in depth: everything negotiated must be on the allowlists (a MAC only matters when
/// the cipher is not AEAD).
fn check_negotiated(n: &Negotiated, a: &Algorithms) -> Result<(), RemoteError> {
    let allowed = |list: &str, v: &str| list.split(',').any(|a| a == v);
    let aead = |c: &str| c.contains("-gcm@") || c.starts_with("chacha20-poly1305");
    let mut bad = Vec::new();
    for (what, list, v) in [
        ("kex", a.kex.as_str(), &n.kex),
        ("host key", &a.host_key, &n.host_key),
        ("cipher", &a.ciphers, &n.cipher_cs),
        ("cipher", &a.ciphers, &n.cipher_sc),
    ] {
        if !allowed(list, v) {
            bad.push(format!("{what} {v}"));
        }
    }
    for (cipher, mac) in [(&n.cipher_cs, &n.mac_cs), (&n.cipher_sc, &n.mac_sc)] {
        if !aead(cipher) && !allowed(&a.macs, mac) {
            bad.push(format!("MAC {mac}"));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(RemoteError::new(
        ErrorKind::HostKey,
        format!(
            "refusing the connection: negotiated algorithms outside the policy: {}",
            bad.join(", ")
        ),
    ))
}

fn host_key_info(session: &Session) -> Result<HostKeyInfo, RemoteError> {
    let no_key = || RemoteError::new(ErrorKind::Transient, "the server sent no host key");
    let (blob, kind) = session.host_key().ok_or_else(no_key)?;
    let hash = session.host_key_hash(HashType::Sha256).ok_or_else(no_key)?;
    Ok(HostKeyInfo {
        key_type: key_type_name(kind, blob),
        fingerprint: format!("SHA256:{}", b64::encode(hash, false)),
        key_base64: b64::encode(blob, true),
    })
}

/// The key's type as a known_hosts line names it: taken from the blob itself (its first
/// string), falling back to libssh2's classification.
fn key_type_name(kind: HostKeyType, blob: &[u8]) -> String {
    let from_blob = blob
        .get(..4)
        .and_then(|l| l.try_into().ok())
        .map(|l: [u8; 4]| u32::from_be_bytes(l) as usize)
        .and_then(|len| blob.get(4..4 + len))
        .and_then(|t| std::str::from_utf8(t).ok());
    if let Some(t) = from_blob {
        return t.to_string();
    }
    match kind {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        _ => "unknown",
    }
    .to_string()
}

/// Checks the server's key against every known_hosts file. Only a Match passes; a key listed
/// under `@revoked` anywhere is refused even if also listed as valid (libssh2 ignores those
/// lines, so they are read here).
pub fn check_host_key(opts: &ConnectOptions, key: &HostKeyInfo) -> Result<(), RemoteError> {
    let session = Session::new().map_err(|e| fail("cannot create an SSH session", &e))?;
    let mut known = session
        .known_hosts()
        .map_err(|e| fail("cannot initialise known hosts", &e))?;
    let mut revoked = false;
    let mut read = Vec::new();
    for file in &opts.known_hosts {
        let text = if opts.state_known_hosts.as_ref() == Some(file) {
            crate::statedir::read(file)
        } else {
            fs::read(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("known_hosts {} skipped: {e}", file.display());
                continue;
            }
        };
        read.push(file.display().to_string());
        for line in text.split(|&b| b == b'\n') {
            revoked |= is_revocation_of(line, key);
            add_known_line(&mut known, line, file);
        }
    }
    let (host, port) = (&opts.remote.host, opts.remote.port);
    let blob = b64::decode(key.key_base64.as_bytes()).unwrap_or_default();
    let problem = if revoked {
        HostKeyProblem::Revoked
    } else {
        match known.check_port(host, port, &blob) {
            CheckResult::Match => return Ok(()),
            CheckResult::Mismatch => HostKeyProblem::Changed,
            CheckResult::NotFound | CheckResult::Failure => HostKeyProblem::Unknown,
        }
    };
    Err(host_key_refusal(opts, key, problem, &read))
}

/// Feeds one known_hosts line to libssh2. Lines it cannot parse (markers, comments, key types
/// it does not know) are skipped one by one rather than failing the whole file.
fn add_known_line(known: &mut ssh2::KnownHosts, line: &[u8], file: &Path) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let trimmed = line.trim_ascii_start();
    if trimmed.is_empty() || trimmed.starts_with(b"#") || trimmed.starts_with(b"@") {
        return;
    }
    let ok = std::str::from_utf8(line)
        .ok()
        .is_some_and(|s| known.read_str(s, KnownHostFileKind::OpenSSH).is_ok());
    if !ok {
        log::debug!(
            "skipping a known_hosts line libssh2 cannot parse in {}",
            file.display()
        );
    }
}

/// Whether a line is `@revoked <hosts> <type> <base64>` for this key (any host: a revoked key
/// is not to be trusted anywhere).
fn is_revocation_of(line: &[u8], key: &HostKeyInfo) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut f = line.split_ascii_whitespace();
    f.next() == Some("@revoked")
        && f.nth(1).is_some()
        && f.next()
            .and_then(|k| b64::decode(k.as_bytes()))
            .is_some_and(|k| Some(k) == b64::decode(key.key_base64.as_bytes()))
}

fn host_key_refusal(
    opts: &ConnectOptions,
    key: &HostKeyInfo,
    problem: HostKeyProblem,
    read: &[String],
) -> RemoteError {
    let who = opts.remote.known_hosts_name();
    let files = if read.is_empty() {
        "no known_hosts file could be read".to_string()
    } else {
        format!("checked {}", read.join(", "))
    };
    let msg = match problem {
        HostKeyProblem::Unknown => format!(
            "host key of {who} is unknown: the server presents {} {}, which is in no known_hosts \
             file ({files}); verify this fingerprint with the server's administrator, then pin it",
            key.key_type, key.fingerprint
        ),
        HostKeyProblem::Changed => format!(
            "HOST KEY OF {who} HAS CHANGED: the server now presents {} {}, which does not match \
             the key pinned for it ({files}). Someone may be intercepting the connection; nothing \
             was sent. If the server's key was replaced on purpose, pin the new one",
            key.key_type, key.fingerprint
        ),
        HostKeyProblem::Revoked => format!(
            "host key of {who} is REVOKED: the server presents {} {}, listed under @revoked \
             ({files}); refusing",
            key.key_type, key.fingerprint
        ),
    };
    RemoteError::host_key(key.clone(), problem, msg)
}

/// Authenticates: ssh-agent first, then each key file until one is accepted, then (when the
/// server asks for more, or no key was accepted, and the user gave a source for them)
/// keyboard-interactive and password. Returns how it succeeded ("key X + keyboard-interactive"). Fatal problems (a key
/// others can read) stop at once; otherwise every attempt is noted for the final error.
fn authenticate(session: &Session, opts: &ConnectOptions) -> Result<String, RemoteError> {
    let user = &opts.remote.user;
    let mut notes = Vec::new();
    let mut used = Vec::new();
    // Keys only where the server takes them: a refused key is then told from one accepted as
    // a first factor by the methods left afterwards (see `further_method`).
    let keys = match session.auth_methods(user) {
        Ok(m) => m.split(',').any(|x| x == "publickey"),
        Err(e) if fatal_during_auth(&e) => return Err(fail("authentication failed", &e)),
        Err(_) => true,
    };
    if !keys {
        notes.push("the server takes no keys".into());
    }
    if keys && opts.use_agent && try_agent(session, user, &mut notes)? {
        used.push("ssh-agent".to_string());
    }
    for key in opts.identities.iter().filter(|_| keys) {
        if !used.is_empty() {
            break;
        }
        if try_key(session, opts, key, &mut notes)? {
            used.push(format!("key {}", key.display()));
        }
    }
    if !session.authenticated() {
        if let Some(how) = try_secrets(session, opts, &mut notes)? {
            used.push(how.to_string());
        }
    }
    if session.authenticated() {
        let how = used.join(" + ");
        log::info!("authenticated as {user} with {how}");
        return Ok(how);
    }
    if notes.is_empty() {
        notes.push("no ssh-agent and no identity file configured".into());
    }
    Err(RemoteError::new(
        ErrorKind::Auth,
        format!(
            "authentication as {user} on {}:{} failed; tried: {}. Add your public key (the \
             key file's .pub) to {user}'s ~/.ssh/authorized_keys on the server, or name the \
             right key with --identity",
            opts.remote.host,
            opts.remote.port,
            notes.join("; ")
        ),
    ))
}

/// Keyboard-interactive (a second factor the server asks for after the key, or on its own)
/// and password authentication, each only when the user named where its secret comes from.
fn try_secrets(
    session: &Session,
    opts: &ConnectOptions,
    notes: &mut Vec<String>,
) -> Result<Option<&'static str>, RemoteError> {
    if opts.otp.is_none() && opts.password.is_none() {
        return Ok(None);
    }
    let user = &opts.remote.user;
    let methods = match session.auth_methods(user) {
        Ok(m) => m.to_string(),
        Err(e) if fatal_during_auth(&e) => return Err(fail("authentication failed", &e)),
        Err(_) => return Ok(None),
    };
    let offered = |m: &str| methods.split(',').any(|x| x == m);
    let mut sent_password = false;
    if offered("keyboard-interactive") {
        let mut r = Responder::new(opts.password.as_ref(), opts.otp.as_ref());
        let result = session.userauth_keyboard_interactive(user, &mut r);
        if let Some(e) = r.error {
            return Err(e);
        }
        sent_password = r.sent_password;
        match result {
            Ok(()) if session.authenticated() => return Ok(Some("keyboard-interactive")),
            Err(e) if fatal_during_auth(&e) => return Err(fail("authentication failed", &e)),
            _ => notes.push(format!(
                "keyboard-interactive ({} answer(s) given, not accepted)",
                r.answered
            )),
        }
    }
    if let (Some(source), true, false) = (&opts.password, offered("password"), sent_password) {
        let password = source.get("the password")?;
        match session.userauth_password(user, password.expose()) {
            Ok(()) if session.authenticated() => return Ok(Some("password")),
            Err(e) if fatal_during_auth(&e) => return Err(fail("authentication failed", &e)),
            _ => notes.push("password (not accepted)".into()),
        }
    }
    if !offered("keyboard-interactive") && !offered("password") {
        notes.push(format!(
            "the server offers no further method we may use ({methods})"
        ));
    }
    Ok(None)
}

/// After a key was refused: whether it was in fact accepted as a first factor. libssh2 reports
/// a partial success as a failure; the server's list of methods then lacks "publickey".
fn further_method(session: &Session, user: &str) -> Option<String> {
    let methods = session.auth_methods(user).ok()?;
    let more = !methods.is_empty() && !methods.split(',').any(|m| m == "publickey");
    more.then(|| methods.to_string())
}

/// An error that ends authentication at once: the connection itself broke.
fn fatal_during_auth(e: &ssh2::Error) -> bool {
    classify(e) == ErrorKind::Transient
}

fn try_agent(session: &Session, user: &str, notes: &mut Vec<String>) -> Result<bool, RemoteError> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) {
        notes.push("ssh-agent (SSH_AUTH_SOCK not set)".into());
        return Ok(false);
    }
    let mut agent = match session.agent() {
        Ok(a) => a,
        Err(e) => {
            notes.push(format!("ssh-agent ({})", e.message()));
            return Ok(false);
        }
    };
    if let Err(e) = agent.connect().and_then(|_| agent.list_identities()) {
        notes.push(format!("ssh-agent ({})", e.message()));
        return Ok(false);
    }
    let ids = agent.identities().unwrap_or_default();
    for id in &ids {
        match agent.userauth(user, id) {
            // Accepted, possibly with a further method still to pass (a second factor).
            Ok(()) => return Ok(true),
            Err(e) if fatal_during_auth(&e) => return Err(fail("authentication failed", &e)),
            Err(_) if further_method(session, user).is_some() => return Ok(true),
            Err(_) => {}
        }
    }
    let _ = agent.disconnect();
    notes.push(format!(
        "ssh-agent ({} key(s), none accepted by the server)",
        ids.len()
    ));
    Ok(false)
}

fn try_key(
    session: &Session,
    opts: &ConnectOptions,
    key: &Path,
    notes: &mut Vec<String>,
) -> Result<bool, RemoteError> {
    let shown = key.display();
    let state = keyfile::inspect(key)?;
    let passphrase = match (state, &opts.passphrase) {
        (KeyFile::Missing, _) => {
            notes.push(format!("{shown} (not found)"));
            return Ok(false);
        }
        (KeyFile::Encrypted, None) => {
            notes.push(format!(
                "key {shown} is encrypted: give its passphrase with --passphrase-file or \
                 --passphrase-command (or run in the foreground to be asked)"
            ));
            return Ok(false);
        }
        (KeyFile::Encrypted, Some(source)) => {
            Some(source.get(&format!("the passphrase of key {shown}"))?)
        }
        (KeyFile::Plain, _) => None,
    };
    let passphrase = passphrase.as_ref().map(|s| s.expose());
    match session.userauth_pubkey_file(&opts.remote.user, None, key, passphrase) {
        Ok(()) if session.authenticated() => Ok(true),
        Ok(()) => {
            notes.push(format!(
                "{shown} (accepted, but the server requires a further method)"
            ));
            Ok(true)
        }
        Err(e) if fatal_during_auth(&e) => Err(fail("authentication failed", &e)),
        Err(e) => match further_method(session, &opts.remote.user) {
            Some(methods) => {
                notes.push(format!(
                    "{shown} (accepted, but the server requires a further method: {methods})"
                ));
                Ok(true)
            }
            None => {
                notes.push(key_failure(&shown.to_string(), state, &e));
                Ok(false)
            }
        },
    }
}

/// Explains a failed key: libssh2 reports a wrong passphrase and a format it cannot read
/// alike, as "Unsupported private key format".
fn key_failure(shown: &str, state: KeyFile, e: &ssh2::Error) -> String {
    let code = match e.code() {
        ssh2::ErrorCode::Session(c) => c,
        ssh2::ErrorCode::SFTP(_) => 0,
    };
    let unreadable = code == libssh2_sys::LIBSSH2_ERROR_FILE
        || e.message().contains("Unsupported private key format");
    match (unreadable, state) {
        (true, KeyFile::Encrypted) => {
            format!("key {shown} is encrypted and the passphrase given does not open it")
        }
        (true, _) => format!("key {shown} is in a format libssh2 cannot read"),
        (false, _) => format!("key {shown} (not accepted by the server)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lists_are_modern_only() {
        for list in [KEX_ALGORITHMS, HOST_KEY_ALGORITHMS, CIPHERS, MACS] {
            for weak in ["sha1", "cbc", "ssh-rsa,", "ssh-dss", "group14", "hmac-md5"] {
                assert!(!format!("{list},").contains(weak), "{weak} in {list}");
            }
        }
        let policy = Algorithms::default();
        assert!(check_negotiated(
            &Negotiated {
                kex: "curve25519-sha256".into(),
                host_key: "ssh-ed25519".into(),
                cipher_cs: "aes128-gcm@openssh.com".into(),
                cipher_sc: "aes128-gcm@openssh.com".into(),
                mac_cs: "hmac-sha1".into(),
                mac_sc: "hmac-sha1".into(),
            },
            &policy
        )
        .is_ok());
        let e = check_negotiated(
            &Negotiated {
                kex: "diffie-hellman-group14-sha1".into(),
                host_key: "ssh-ed25519".into(),
                cipher_cs: "aes128-ctr".into(),
                cipher_sc: "aes128-ctr".into(),
                mac_cs: "hmac-sha1".into(),
                mac_sc: "hmac-sha2-256-etm@openssh.com".into(),
            },
            &policy,
        )
        .unwrap_err();
        assert!(e.to_string().contains("kex diffie-hellman-group14-sha1"));
        assert!(e.to_string().contains("MAC hmac-sha1"));
    }

    #[test]
    fn secret_is_not_printed() {
        let s = super::super::credentials::Secret::new("hunter2".into());
        let o = ConnectOptions {
            passphrase: Some(SecretSource::Given(s)),
            ..ConnectOptions::new("u@h:p".parse().unwrap())
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn config_may_narrow_the_policy_but_not_widen_it() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a =
            Algorithms::narrowed(&[], &[], &v(&["aes256-gcm@openssh.com"]), &[], false).unwrap();
        assert_eq!(a.ciphers, "aes256-gcm@openssh.com");
        assert_eq!(a.kex, KEX_ALGORITHMS);
        let e = Algorithms::narrowed(&[], &[], &v(&["aes128-cbc"]), &[], false).unwrap_err();
        assert!(
            e.contains("aes128-cbc") && e.contains("insecure_allow_weak_algorithms"),
            "{e}"
        );
        let a = Algorithms::narrowed(&v(&["diffie-hellman-group14-sha1"]), &[], &[], &[], true);
        assert_eq!(a.unwrap().kex, "diffie-hellman-group14-sha1");
        assert!(Algorithms::narrowed(&v(&["a,b"]), &[], &[], &[], true).is_err());
    }

    #[test]
    fn revoked_lines() {
        let key = HostKeyInfo {
            key_type: "ssh-ed25519".into(),
            fingerprint: String::new(),
            key_base64: b64::encode(b"blob", true),
        };
        let line = format!("@revoked * ssh-ed25519 {}", key.key_base64);
        assert!(is_revocation_of(line.as_bytes(), &key));
        assert!(!is_revocation_of(
            format!("host ssh-ed25519 {}", key.key_base64).as_bytes(),
            &key
        ));
        assert!(!is_revocation_of(b"@revoked * ssh-ed25519 AAAA", &key));
    }
}
