//! One typed, validated configuration: the remote, the directories, the mount options.

use crate::remote::url::UrlError;
use crate::remote::Remote;
use crate::statedir::{KNOWN_HOSTS, MOUNT_RECORD};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid(msg.into()))
}

impl From<UrlError> for ConfigError {
    fn from(e: UrlError) -> ConfigError {
        ConfigError::Invalid(e.to_string())
    }
}

/// Mount options, parsed from `-o a,b=c` lists (mount(8) style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountOptions {
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    /// None = automatic (on when the daemon may use it).
    pub passthrough: Option<bool>,
    pub threads: usize,
    pub fsname: Option<String>,
    /// Kernel flags passed through as they are (nodev, nosuid, noexec, noatime, ...).
    pub flags: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            allow_root: false,
            default_permissions: true,
            read_only: false,
            passthrough: None,
            threads: 2,
            fsname: None,
            flags: Vec::new(),
        }
    }
}

/// fstab and mount(8) options that mean something to the mount tools, not to us.
const IGNORED: &[&str] = &[
    "defaults", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "rw",
];

impl MountOptions {
    pub fn apply(&mut self, list: &str) -> Result<(), ConfigError> {
        for opt in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            self.apply_one(opt)?;
        }
        Ok(())
    }

    fn apply_one(&mut self, opt: &str) -> Result<(), ConfigError> {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        match (key, value) {
            ("allow_other", None) => self.allow_other = true,
            ("allow_root", None) => self.allow_root = true,
            ("default_permissions", None) => self.default_permissions = true,
            ("ro", None) => self.read_only = true,
            ("passthrough", None) => self.passthrough = Some(true),
            ("nopassthrough", None) => self.passthrough = Some(false),
            ("threads", Some(v)) => {
                self.threads = match v.parse() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return invalid(format!("threads={v}: expected 1 to 64")),
                }
            }
            ("fsname", Some(v)) => self.fsname = Some(v.to_string()),
            ("dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
            | "dirsync" | "sync" | "async", None) => self.flags.push(key.to_string()),
            (k, _) if IGNORED.contains(&k) || k.starts_with("x-") || k.starts_with("comment=") => {}
            _ => {
                return invalid(format!(
                    "unknown mount option '{opt}' (known: allow_other, allow_root, default_permissions, ro, rw, passthrough, nopassthrough, threads=N, fsname=NAME, nodev, nosuid, noexec, noatime, ...)"
                ))
            }
        }
        Ok(())
    }
}

/// The `--config` file. Every field may also be given on the command line, which wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub local_dir: Option<PathBuf>,
    pub remote: Option<String>,
    pub mountpoint: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Mount options, as for `-o`.
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub identity: Vec<PathBuf>,
    #[serde(default)]
    pub known_hosts: Vec<PathBuf>,
    pub connections: Option<usize>,
    /// Seconds, fractions allowed.
    pub writeback_delay: Option<f64>,
    pub verify: Option<String>,
    pub drain_timeout: Option<f64>,
    /// Credential file holding the key's passphrase (mode 0600).
    pub passphrase_file: Option<PathBuf>,
    /// Program printing the key's passphrase, run without a shell (`pass show ssh/key`).
    pub passphrase_command: Option<String>,
    /// Credential file holding the login password; password authentication is off without it.
    pub password_file: Option<PathBuf>,
    /// Program printing a one-time code for servers that ask for a second factor.
    pub otp_command: Option<String>,
    /// Upload bandwidth limit, e.g. "10M" (bytes per second; K, M, G are powers of 1024).
    pub bwlimit: Option<String>,
    #[serde(default)]
    pub algorithms: AlgorithmsConfig,
}

/// `[algorithms]`: lists that narrow ftpsync's default policy (each name must be in it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmsConfig {
    #[serde(default)]
    pub kex: Vec<String>,
    #[serde(default)]
    pub host_keys: Vec<String>,
    #[serde(default)]
    pub ciphers: Vec<String>,
    #[serde(default)]
    pub macs: Vec<String>,
    /// Lets the lists name algorithms outside the default policy (SHA-1, CBC, ...).
    #[serde(default)]
    pub insecure_allow_weak_algorithms: bool,
}

impl AlgorithmsConfig {
    pub fn policy(&self) -> Result<crate::remote::Algorithms, ConfigError> {
        crate::remote::Algorithms::narrowed(
            &self.kex,
            &self.host_keys,
            &self.ciphers,
            &self.macs,
            self.insecure_allow_weak_algorithms,
        )
        .map_err(|e| ConfigError::Invalid(format!("[algorithms]: {e}")))
    }
}

/// Words that mark a key as holding a secret, with where the secret belongs instead.
const SECRET_WORDS: &[(&str, &str)] = &[
    ("password", "password_file = \"/path\" (a 0600 credential file)"),
    (
        "passphrase",
        "passphrase_file = \"/path\" (a 0600 credential file) or passphrase_command = \"pass show ...\"",
    ),
    ("secret", "a 0600 credential file named by passphrase_file or password_file"),
    ("token", "a 0600 credential file named by passphrase_file or password_file"),
    ("otp", "otp_command = \"your-totp-generator ...\""),
];

/// Our keys that name where a secret comes from, not the secret.
const SOURCE_KEYS: &[&str] = &[
    "passphrase_file",
    "passphrase_command",
    "password_file",
    "otp_command",
];

/// The first key, at any depth, that looks like it holds a secret, and the advice for it.
fn secret_key(table: &toml::Table) -> Option<(String, &'static str)> {
    for (key, value) in table {
        let lower = key.to_ascii_lowercase();
        if !SOURCE_KEYS.contains(&lower.as_str()) {
            if let Some((_, instead)) = SECRET_WORDS.iter().find(|(w, _)| lower.contains(w)) {
                return Some((key.clone(), instead));
            }
        }
        if let Some(inner) = value.as_table().and_then(secret_key) {
            return Some(inner);
        }
    }
    None
}

/// A parse error without the offending line: toml quotes it, and it may hold a secret.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let at = e.span().map_or(String::new(), |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" (line {line}, column {column})")
    });
    ConfigError::Parse {
        path: path.to_owned(),
        message: format!("{}{at}", e.message().trim_end()),
    }
}

impl FileConfig {
    /// Reads a config, refusing one others can read and one that holds a secret.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        crate::remote::check_private(path, "config").map_err(ConfigError::Invalid)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_err = |e: toml::de::Error| parse_error(path, &text, &e);
        let table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        if let Some((key, instead)) = secret_key(&table) {
            return invalid(format!(
                "refusing config {}: it holds a `{key}`, and secrets never go in a config; \
                 use {instead}",
                path.display()
            ));
        }
        toml::from_str(&text).map_err(parse_err)
    }
}

/// Everything `mount` needs, validated. The daemon records it in the state dir
/// ([`MOUNT_RECORD`]) so that one-shot commands (verify) reach the same remote the same way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountConfig {
    #[serde(with = "any_path")]
    pub local_dir: PathBuf,
    pub remote: Remote,
    #[serde(with = "any_path")]
    pub mountpoint: PathBuf,
    #[serde(with = "any_path")]
    pub state_dir: PathBuf,
    pub options: MountOptions,
    pub foreground: bool,
    pub mirror: MirrorConfig,
}

/// A path in the mount record: its text when it is UTF-8, else the one JSON form of a path
/// that is not ([`PathName`]: lossy text and exact bytes in hex; serde's own form refuses
/// such a path, and the mount with it).
mod any_path {
    use crate::report::PathName;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    pub(super) enum Form {
        Text(String),
        Exact(PathName),
    }

    pub(super) fn form(p: &Path) -> Form {
        match p.to_str() {
            Some(s) => Form::Text(s.to_string()),
            None => Form::Exact(PathName::of(p.as_os_str().as_bytes())),
        }
    }

    pub(super) fn path(f: Form) -> PathBuf {
        match f {
            Form::Text(s) => PathBuf::from(s),
            Form::Exact(name) => PathBuf::from(OsString::from_vec(name.bytes())),
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        form(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(path(Form::deserialize(d)?))
    }
}

/// A list of paths in the mount record, each as [`any_path`] writes it.
mod any_paths {
    use super::any_path::{form, path, Form};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::PathBuf;

    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|p| form(p)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<Form>::deserialize(d)?.into_iter().map(path).collect())
    }
}

/// How the mirror reaches and feeds the remote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorConfig {
    /// Private keys to try after ssh-agent; empty means ~/.ssh/id_ed25519 then id_rsa.
    #[serde(with = "any_paths")]
    pub identities: Vec<PathBuf>,
    /// known_hosts files (the state dir's own is always added).
    #[serde(with = "any_paths")]
    pub known_hosts: Vec<PathBuf>,
    pub connections: usize,
    pub writeback_delay: std::time::Duration,
    pub verify: crate::remote::VerifyMode,
    pub drain_timeout: std::time::Duration,
    pub secrets: Secrets,
    pub algorithms: crate::remote::Algorithms,
    /// Upload bytes per second, shared by all connections; None = unlimited.
    pub bwlimit: Option<u64>,
    /// Fail the mount when the first connection finds a problem a person must fix (else the
    /// mount goes on offline and says why).
    #[serde(default)]
    pub require_remote: bool,
}

/// Where the login secrets come from; each None means that kind is not used.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Secrets {
    pub passphrase: Option<crate::remote::SecretSource>,
    pub password: Option<crate::remote::SecretSource>,
    pub otp: Option<crate::remote::SecretSource>,
}

impl Secrets {
    /// From the command line or config; under systemd, `$CREDENTIALS_DIRECTORY/passphrase` and
    /// `/password` fill what was not given.
    pub fn from_sources(
        passphrase_file: Option<PathBuf>,
        passphrase_command: Option<String>,
        password_file: Option<PathBuf>,
        otp_command: Option<String>,
    ) -> Result<Secrets, ConfigError> {
        use crate::remote::SecretSource;
        let command = |c: String, what: &str| {
            SecretSource::command(&c).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
        };
        let credential = |name: &str| {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
            let p = Path::new(&dir).join(name);
            p.exists().then_some(SecretSource::File(p))
        };
        let passphrase = match (passphrase_file, passphrase_command) {
            (Some(_), Some(_)) => {
                return invalid("give the passphrase by file or by command, not both")
            }
            (Some(f), None) => Some(SecretSource::File(f)),
            (None, Some(c)) => Some(command(c, "--passphrase-command")?),
            (None, None) => credential("passphrase"),
        };
        Ok(Secrets {
            passphrase,
            password: password_file
                .map(SecretSource::File)
                .or_else(|| credential("password")),
            otp: otp_command
                .map(|c| command(c, "--otp-command"))
                .transpose()?,
        })
    }
}

/// A rate like "10M": bytes per second, K, M and G meaning powers of 1024.
pub fn parse_rate(s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => 0,
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    match num.parse::<f64>() {
        Ok(n) if mult > 0 && n.is_finite() && n * mult as f64 >= 1024.0 => Ok((n * mult as f64) as u64),
        _ => invalid(format!(
            "bandwidth limit '{s}': expected bytes per second of at least 1K, like 500K, 10M or 1.5G"
        )),
    }
}

/// A duration in seconds from the command line or the config file.
pub fn seconds(what: &str, v: f64) -> Result<std::time::Duration, ConfigError> {
    std::time::Duration::try_from_secs_f64(v).map_err(|_| {
        ConfigError::Invalid(format!(
            "{what}: expected a number of seconds >= 0, got {v}"
        ))
    })
}

impl MountConfig {
    pub fn shadow(&self) -> bool {
        self.local_dir == self.mountpoint
    }

    /// Writes the mount record (0600, atomically).
    pub fn record(&self) -> std::io::Result<()> {
        use std::io::Write;
        let path = self.state_dir.join(MOUNT_RECORD);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut f = crate::statedir::create_temp(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Reads the record a mount left in `state_dir`.
    pub fn recorded(state_dir: &Path) -> Result<MountConfig, ConfigError> {
        let path = state_dir.join(MOUNT_RECORD);
        let text = crate::statedir::read(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| ConfigError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// How to connect: the mount's identities, pins (the state dir's own known_hosts last),
    /// secrets and algorithm policy.
    pub fn connect_options(&self) -> crate::remote::ConnectOptions {
        let m = &self.mirror;
        let mut opts = connect_options(
            &self.remote,
            &m.identities,
            &m.known_hosts,
            Some(&self.state_dir),
            &m.secrets,
            &m.algorithms,
        );
        opts.verify = m.verify;
        opts
    }
}

/// How to log in to `remote`, for the mount and the one-shot commands alike: these key files
/// (none given: ~/.ssh/id_ed25519, then id_rsa), these known_hosts files (none given:
/// ~/.ssh/known_hosts) with the state dir's own read last, the sources of secrets and the
/// algorithm policy.
pub fn connect_options(
    remote: &Remote,
    identities: &[PathBuf],
    known_hosts: &[PathBuf],
    state_dir: Option<&Path>,
    secrets: &Secrets,
    algorithms: &crate::remote::Algorithms,
) -> crate::remote::ConnectOptions {
    let mut opts = crate::remote::ConnectOptions::new(remote.clone());
    if !identities.is_empty() {
        opts.identities = identities.to_vec();
    }
    if !known_hosts.is_empty() {
        opts.known_hosts = known_hosts.to_vec();
    }
    if let Some(dir) = state_dir {
        opts.known_hosts.push(dir.join(KNOWN_HOSTS));
        opts.state_known_hosts = Some(dir.join(KNOWN_HOSTS));
    }
    opts.passphrase = secrets.passphrase.clone();
    opts.password = secrets.password.clone();
    opts.otp = secrets.otp.clone();
    opts.algorithms = algorithms.clone();
    opts
}

/// The default state directory for a mirror of `local_dir`: one per local directory.
pub fn default_state_dir(local_dir: &Path) -> PathBuf {
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("ftpsync"),
        _ if is_root() => PathBuf::from("/var/lib/ftpsync"),
        _ => home_dir()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(".local/state/ftpsync"),
    };
    base.join(state_dir_name(local_dir))
}

/// Longest readable part of a default state dir's name (its end: the most telling part).
const READABLE_NAME_MAX: usize = 64;

/// `READABLE-HASH`: the path with every byte but letters, digits, '.' and '-' made '_', for
/// people (so `/x/a_b` and `/x/a/b` read alike), and the first 12 hex digits of the SHA-256
/// of the canonical path's bytes, so two directories never share a state dir.
fn state_dir_name(local_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let canonical = std::fs::canonicalize(local_dir).unwrap_or_else(|_| local_dir.to_path_buf());
    let readable: String = canonical
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // All ASCII now: any byte offset is a character boundary.
    let readable = &readable[readable.len().saturating_sub(READABLE_NAME_MAX)..];
    let readable = if readable.is_empty() {
        "root"
    } else {
        readable
    };
    let hash = hex::encode(Sha256::digest(canonical.as_os_str().as_bytes()));
    format!("{readable}-{}", &hash[..12])
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Overrides the directory profiles are looked up in (tests, unusual layouts).
pub const CONFIG_DIR_ENV: &str = "FTPSYNC_CONFIG_DIR";

/// A profile name: `[A-Za-z0-9._-]+`, not starting with '.' (nor with '-', which would read
/// as an option). Anything else is a path (or an error), never a profile.
pub fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where profiles are looked for, in order: only `$FTPSYNC_CONFIG_DIR` when it is set;
/// otherwise the user's own `$XDG_CONFIG_HOME/ftpsync` (default `~/.config/ftpsync`), then,
/// for root, the system's `/etc/ftpsync` (what mount(8) and the systemd unit use). Root reads
/// its own directory first so that the Quick start works as written for root too.
pub fn profile_dirs() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env(CONFIG_DIR_ENV) {
        return vec![dir];
    }
    let own = match env("XDG_CONFIG_HOME") {
        Some(x) => x.join("ftpsync"),
        None => home_dir()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".config/ftpsync"),
    };
    let mut dirs = vec![own];
    if is_root() {
        dirs.push(PathBuf::from(SYSTEM_PROFILE_DIR));
    }
    dirs
}

/// The system's profiles, read by root after its own.
pub const SYSTEM_PROFILE_DIR: &str = "/etc/ftpsync";

/// Where profiles are looked for, as `--help` and errors say it.
pub const PROFILE_SEARCH: &str = "$FTPSYNC_CONFIG_DIR/NAME.toml alone when that is set; else \
$XDG_CONFIG_HOME/ftpsync/NAME.toml (default ~/.config/ftpsync/NAME.toml), then, for root, \
/etc/ftpsync/NAME.toml";

/// `$HOME`, else the user's home from the password database: mount(8) runs its helpers with
/// HOME (and PATH) removed from the environment.
pub fn home_dir() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: getpwuid_r fills `pw` with pointers into `buf`, which outlives their use here.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found = std::ptr::null_mut();
        let uid = libc::geteuid();
        let r = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if r != 0 || found.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(pw.pw_dir).to_bytes();
        (!dir.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(dir)))
    }
}

/// The file of profile `name`: the first `DIR/NAME.toml` of [`profile_dirs`], which must exist.
pub fn profile_path(name: &str) -> Result<PathBuf, ConfigError> {
    profile_in(&profile_dirs(), name)
}

/// Whether a profile of this name exists (a name only: no error when not).
pub fn profile_exists(name: &str) -> bool {
    is_profile_name(name) && profile_path(name).is_ok()
}

fn profile_in(dirs: &[PathBuf], name: &str) -> Result<PathBuf, ConfigError> {
    if !is_profile_name(name) {
        return invalid(format!(
            "'{name}' is not a profile name (letters, digits, '.', '_' and '-', not starting \
             with '.' or '-')"
        ));
    }
    let file = format!("{name}.toml");
    if let Some(path) = dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file()) {
        return Ok(path);
    }
    let looked: Vec<String> = dirs.iter().map(|d| looked_in(d, &file)).collect();
    invalid(format!(
        "no profile '{name}': looked for {}. Profiles are {PROFILE_SEARCH}",
        looked.join("; ")
    ))
}

/// `DIR/FILE (what DIR holds)`, for a failed lookup.
fn looked_in(dir: &Path, file: &str) -> String {
    let mut known: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let file = e.ok()?.file_name().into_string().ok()?;
            let stem = file.strip_suffix(".toml")?;
            is_profile_name(stem).then(|| stem.to_string())
        })
        .collect();
    known.sort();
    let known = if !dir.is_dir() {
        format!("{} does not exist", dir.display())
    } else if known.is_empty() {
        format!("{} holds no profile", dir.display())
    } else {
        format!("profiles there: {}", known.join(", "))
    };
    format!("{} ({known})", dir.join(file).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_path_is_text_when_utf8_else_the_one_json_form_of_a_path() {
        use std::os::unix::ffi::OsStringExt;
        #[derive(Serialize, Deserialize)]
        struct Rec {
            #[serde(with = "any_path")]
            p: PathBuf,
        }
        let latin1 = PathBuf::from(std::ffi::OsString::from_vec(b"/x/caf\xe9\nd".to_vec()));
        for (p, want) in [
            (PathBuf::from("/x/plain"), serde_json::json!("/x/plain")),
            (
                latin1,
                serde_json::json!({"path": "/x/caf\u{fffd}\nd", "path_hex": "2f782f636166e90a64"}),
            ),
        ] {
            let v = serde_json::to_value(Rec { p: p.clone() }).expect("writes");
            assert_eq!(v["p"], want);
            let back: Rec = serde_json::from_value(v).expect("reads");
            assert_eq!(back.p, p);
        }
    }

    #[test]
    fn default_state_dirs_of_different_directories_never_collide() {
        let names: Vec<String> = [
            "/x/a_b",
            "/x/a/b",
            "/x/a b",
            "/x/a\u{e9}b",
            "/x/a\u{e8}b",
            "/",
        ]
        .iter()
        .map(|p| state_dir_name(Path::new(p)))
        .collect();
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names[0].starts_with("x_a_b-") && names[0].len() == "x_a_b-".len() + 12);
        assert!(names[5].starts_with("root-"), "{}", names[5]);
        let long = format!("/{}", "d/".repeat(400));
        assert!(state_dir_name(Path::new(&long)).len() <= READABLE_NAME_MAX + 13);
        assert_eq!(state_dir_name(Path::new("/x/a_b")), names[0], "stable");
    }

    #[test]
    fn mount_options() {
        let mut o = MountOptions::default();
        o.apply("allow_other,nopassthrough,threads=4,_netdev,noauto,x-systemd.automount,nodev")
            .unwrap();
        assert!(o.allow_other);
        assert_eq!(o.passthrough, Some(false));
        assert_eq!(o.threads, 4);
        assert_eq!(o.flags, ["nodev"]);
        assert!(o.apply("bogus").is_err());
        assert!(o.apply("threads=0").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10M").unwrap(), 10 << 20);
        assert_eq!(parse_rate("1.5k").unwrap(), 1536);
        assert_eq!(parse_rate("4096").unwrap(), 4096);
        for bad in ["", "M", "10X", "-1M", "10", "nanM"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    fn private_file(dir: &Path, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn config_with_a_secret_or_open_mode_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = private_file(dir.path(), "remote = \"u@h:p\"\npassword = \"hunter2\"\n");
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("`password`") && e.contains("password_file"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let p = private_file(dir.path(), "passphrase = \"x\"\n");
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("passphrase_command"), "{e}");
        for hidden in [
            "Password = \"hunter2\"\n",
            "key_passphrase = \"hunter2\"\n",
            "[algorithms]\npassword = \"hunter2\"\n",
            "api_token = \"hunter2\"\n",
        ] {
            let p = private_file(dir.path(), hidden);
            let e = FileConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains("secrets never go in a config"), "{hidden}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        // A syntax error near a secret does not quote the line.
        let p = private_file(dir.path(), "remote = \"u@h:p\"\nbogus = \"hunter2\" x\n");
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        let p = private_file(
            dir.path(),
            "passphrase_file = \"/x\"\notp_command = \"totp\"\n",
        );
        assert!(FileConfig::load(&p).is_ok());
        let p = private_file(dir.path(), "remote = \"u@h:p\"\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("0644 are too open"), "{e}");
    }

    #[test]
    fn profile_names() {
        for good in ["backup", "a", "photos-2024", "x.y_z", "B4"] {
            assert!(is_profile_name(good), "{good}");
        }
        for bad in [
            "", ".hidden", "..", "a/b", "/etc/x", "a b", "ü", "a:b", "~x", "-o",
        ] {
            assert!(!is_profile_name(bad), "{bad:?} taken for a profile name");
        }
    }

    #[test]
    fn profile_lookup_names_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let one = |p: &Path| vec![p.to_path_buf()];
        std::fs::write(dir.path().join("home.toml"), "").unwrap();
        assert_eq!(
            profile_in(&one(dir.path()), "home").unwrap(),
            dir.path().join("home.toml")
        );
        let e = profile_in(&one(dir.path()), "work")
            .unwrap_err()
            .to_string();
        let want = dir.path().join("work.toml");
        assert!(e.contains(&*want.to_string_lossy()), "{e}");
        assert!(e.contains("profiles there: home"), "{e}");
        assert!(
            e.contains("/etc/ftpsync") && e.contains("~/.config/ftpsync"),
            "{e}"
        );
        let e = profile_in(&one(dir.path()), "../home")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a profile name"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = profile_in(&one(empty.path()), "home")
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no profile"), "{e}");
        let e = profile_in(&one(&empty.path().join("nowhere")), "home")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nowhere does not exist"), "{e}");
    }

    #[test]
    fn the_first_directory_holding_a_profile_wins() {
        let (own, system) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dirs = vec![own.path().to_path_buf(), system.path().to_path_buf()];
        std::fs::write(system.path().join("docs.toml"), "").unwrap();
        assert_eq!(
            profile_in(&dirs, "docs").unwrap(),
            system.path().join("docs.toml")
        );
        std::fs::write(own.path().join("docs.toml"), "").unwrap();
        assert_eq!(
            profile_in(&dirs, "docs").unwrap(),
            own.path().join("docs.toml")
        );
        let e = profile_in(&dirs, "work").unwrap_err().to_string();
        assert!(
            e.contains(&*own.path().to_string_lossy())
                && e.contains(&*system.path().to_string_lossy()),
            "{e}"
        );
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = private_file(dir.path(), "remote = \"u@h:p\"\nbogus = 1\n");
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("malformed config") && e.contains("bogus"), "{e}");
        std::fs::write(&p, "remote = \"u@h:p\"\noptions = [\"ro\"]\n").unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.options, ["ro"]);
    }
}
