//! The `ftpsync` command line.

use anyhow::{Context, Result};
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use ftpsync::cmd::audit as audit_cmd;
use ftpsync::cmd::mount_helper::{self, Invocation};
use ftpsync::cmd::{mount, restore, status, trust, unmount, verify};
use ftpsync::config::{
    connect_options, default_state_dir, is_profile_name, parse_rate, profile_exists, profile_path,
    seconds, FileConfig, MirrorConfig, MountConfig, MountOptions, Secrets,
};
use ftpsync::remote::Remote;
use ftpsync::{audit, client, utc};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Parser)]
#[command(
    name = "ftpsync",
    version,
    about = "Mirror a local folder to an SFTP server through a FUSE mount",
    long_about = "ftpsync mounts a local directory through FUSE: applications use it at local speed, \
every change is journaled, every file is hashed (SHA-256) when it is closed, and the changes are \
mirrored to an SFTP server, each confirmed by the server's copy carrying the same hash. \
Unmount with `ftpsync unmount MOUNTPOINT` (waits until the server has everything, then says \
what is left) or `fusermount3 -u MOUNTPOINT` (returns at once; the daemon drains in the \
background)."
)]
struct Cli {
    /// More logging (-v info... -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount LOCAL_DIR at MOUNTPOINT (or over itself), mirrored to REMOTE; or mount a profile:
    /// `ftpsync mount PROFILE [MOUNTPOINT]`.
    ///
    /// A profile is a config file (the keys of --config) found by name, looked for in this
    /// order: $XDG_CONFIG_HOME/ftpsync/NAME.toml (default ~/.config/ftpsync/NAME.toml), then,
    /// for root only, /etc/ftpsync/NAME.toml; only $FTPSYNC_CONFIG_DIR/NAME.toml when that
    /// variable is set. The first argument is a profile when it matches [A-Za-z0-9._-]+ (no
    /// '/', not starting with '.' or '-') and such a profile exists, even if a directory of
    /// that name exists here: write a directory with a slash (./docs) to mirror it instead.
    /// A name that is neither a profile nor anything here is taken for a profile, and the
    /// error lists the profiles there are. `--profile NAME` says it explicitly. After a
    /// profile, the only argument is MOUNTPOINT (default: the profile's `mountpoint`, else its
    /// `local_dir`). The command line wins over the profile.
    ///
    /// One daemon per folder: a LOCAL_DIR another running daemon mirrors (through any state
    /// dir or mountpoint), or that is itself a live ftpsync mount, is refused, naming that
    /// daemon (pid, mountpoint, state dir). When that daemon is only draining its uploads after
    /// an unmount, mount says so and waits for it to exit (its --drain-timeout and 10 s more).
    ///
    /// mount(8) runs this too: `mount -t fuse.ftpsync PROFILE MOUNTPOINT [-o OPTS]` and fstab
    /// lines of type fuse.ftpsync, through /sbin/mount.fuse.ftpsync (a symlink to ftpsync) or
    /// fuse3's mount.fuse, which runs `ftpsync PROFILE MOUNTPOINT -o OPTS`.
    #[command(
        override_usage = "ftpsync mount [OPTIONS] LOCAL_DIR REMOTE [MOUNTPOINT]\n       \
                                ftpsync mount [OPTIONS] [--profile] PROFILE [MOUNTPOINT]"
    )]
    Mount(Box<MountArgs>),
    /// Show the mirror's state: connection and server, pending paths and bytes, upload rate and
    /// time left, what was confirmed in the last hour, the oldest pending change, failures,
    /// the journal and file hashes.
    Status {
        /// A mountpoint of a running mirror, its state dir, or its profile name (a bare name is
        /// the profile when one exists; write ./NAME for a directory of that name).
        target: PathBuf,
        /// Machine-readable output (the document described in doc/CONTRACTS.md).
        #[arg(long, conflicts_with_all = ["watch", "prometheus", "prometheus_file"])]
        json: bool,
        /// Redraw the view every SECS seconds (default 2) until Ctrl-C (in place on a terminal, one block
        /// after another otherwise); it shows what the daemon reports, not the journal and
        /// hashes.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
              conflicts_with_all = ["prometheus", "prometheus_file"])]
        watch: Option<f64>,
        /// Print the Prometheus text exposition format (metrics named ftpsync_*, labelled
        /// with the mountpoint).
        #[arg(long, conflicts_with = "prometheus_file")]
        prometheus: bool,
        /// Write the Prometheus text format to PATH every --interval seconds, atomically
        /// (for node_exporter's textfile collector: name it *.prom), until killed.
        #[arg(long, value_name = "PATH")]
        prometheus_file: Option<PathBuf>,
        /// Seconds between writes of --prometheus-file [default: 5].
        #[arg(long, value_name = "SECS", requires = "prometheus_file")]
        interval: Option<f64>,
    },
    /// Show the server's host key and pin it in the state dir's known_hosts (after a yes typed
    /// on a terminal, or when --fingerprint matches; a yes piped on stdin is not read).
    Trust(TrustArgs),
    /// Wait until every change made before this call is confirmed on the remote, except files
    /// still open for writing (named on stderr).
    ///
    /// Covered: every file closed before the call (its last descriptor open for writing
    /// closed), and every mkdir, rmdir, rename, delete, symlink, chmod and change of times
    /// made before it. Not covered: a file still open for writing when the flush ends.
    /// Its current bytes have no hash yet, so the server keeps an earlier version of it, or
    /// none, until it is closed; the flush names it on stderr ("still open for writing, not
    /// covered by this flush: PATH", then a count line) and still exits 0 unless
    /// --require-closed. An fsync of a file that stays open, or a close of one of several
    /// descriptors of it (a fork and exec closes the copies it inherited), makes ftpsync hash
    /// it within a second (at once during a flush) and send the bytes it holds then, which may
    /// include writes made after the fsync, and only if it does not change again before the
    /// upload: ftpsync takes no snapshot, so a flush covers a file only once it is closed.
    /// Changes made while a flush runs may or may not be covered.
    ///
    /// On a terminal, a flush that waits shows what for (paths and bytes left, the upload
    /// rate, the oldest pending path, the connection), refreshed twice a second on stderr.
    ///
    /// Exit 0 when everything covered is confirmed; 1 on a timeout, naming what is pending or
    /// failing; 1 at once when the server's host key or the login is refused, or the remote
    /// root now resolves elsewhere (with the command that fixes it); 1 once everything else is
    /// confirmed when what is left failed for a reason only a person can clear (a refusal, a
    /// permission, a reserved name), naming each path; with --require-closed, 1 when a file is
    /// still open for writing.
    Flush {
        /// A mountpoint of a running mirror, its state dir, or its profile name (a bare name is
        /// the profile when one exists; write ./NAME for a directory of that name).
        target: PathBuf,
        /// Give up (exit 1, saying what is still failing) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Only wait until every closed file is hashed and journaled durably (works offline).
        #[arg(long)]
        local: bool,
        /// Exit 1 when a file is still open for writing at the end of the flush (it is not
        /// covered), for scripts that need the server to equal the local tree.
        #[arg(long)]
        require_closed: bool,
    },
    /// Flush, unmount, wait for the daemon to exit, and say what is left: the unmount that
    /// waits and tells.
    ///
    /// First a flush (as `ftpsync flush`, up to --timeout): every change made before the call
    /// confirmed on the server. Then `fusermount3 -u` (refused while a process uses the mount:
    /// nothing is unmounted then, and the mirror keeps running). Then it waits for the daemon
    /// to exit; after a flush that did not finish, the daemon keeps sending for up to its
    /// --drain-timeout first. Exit 0 when every change is confirmed on the server; 1 otherwise,
    /// listing the paths whose changes are not on the server yet: they stay journaled in the
    /// state dir and the next mount of this mirror sends them. Nothing is lost either way.
    ///
    /// `fusermount3 -u MOUNTPOINT` unmounts too, but returns at once: the daemon drains in the
    /// background and reports what is left only in its log.
    Unmount {
        /// A mountpoint of a running mirror, its state dir, or its profile name (a bare name is
        /// the profile when one exists; write ./NAME for a directory of that name).
        target: PathBuf,
        /// Seconds the flush before the unmount may take; the unmount happens either way.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Compare the remote with the local tree, every file by SHA-256; exit 0 only when equal.
    Verify {
        /// A mountpoint of a mirror, its state dir, or its profile name (a bare name is the
        /// profile when one exists; write ./NAME for a directory of that name).
        target: PathBuf,
        /// Machine-readable result on stdout.
        #[arg(long)]
        json: bool,
        /// Remove what is extra or wrong on the remote and have the running daemon send the
        /// local version of what differs or is missing (then `ftpsync flush` waits for it).
        #[arg(long)]
        repair: bool,
        /// Parallel SFTP connections for hashing.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// Pull the remote tree into a local directory, every file hashed and (with --state-dir)
    /// checked against the SHA-256 the mirror confirmed; re-run to resume.
    #[command(
        override_usage = "ftpsync restore [OPTIONS] REMOTE DIR\n       \
                                ftpsync restore [OPTIONS] PROFILE DIR",
        long_about = "Pull the remote tree into DIR, which must be empty or left by an \
unfinished restore of the same remote: a restore first writes the marker \
.ftpsync-restore.ftpsync-tmp-0000000000000000 (0600, naming the remote) in DIR and removes it \
when a run completes with no problems; any other DIR that is not empty is refused. Every file is \
hashed (SHA-256) as it downloads; with --state-dir, against the mirror's manifest: a file whose \
hash differs is reported and not kept. Each file is written to .NAME.ftpsync-part beside its \
target, fsync'd, verified, given its mode and mtime, then renamed into place; directories get \
their modes and mtimes last; symlinks are recreated as they are, never followed, with their \
mtimes. Modes and mtimes are the \
manifest's (mtime to the nanosecond, setuid/setgid included) where it has the path, else the \
server's (whole seconds, setuid/setgid dropped); directory and symlink mtimes are always the \
server's (whole seconds). On a re-run, a file in place with the expected \
size, mtime and mode is skipped; any other file or symlink where the remote has a file or \
symlink is replaced; .NAME.ftpsync-part[-N] files whose names the remote does not hold are \
removed; nothing else is deleted. Nothing is written outside DIR, nor through a symlink in it. \
Exit 0 only when everything was restored."
    )]
    Restore(RestoreArgs),
    /// Show the audit log (the trail of what the mirror sent and decided), oldest first, or
    /// check its hash chain.
    Audit {
        /// A mountpoint of a running mirror, its state dir, or its profile name (a bare name is
        /// the profile when one exists; write ./NAME for a directory of that name).
        target: PathBuf,
        /// Only events at or after this UTC time: 2026-11-25, 2026-11-25T10:00:00Z,
        /// "2026-11-25 10:00:00", or an age: 90s, 30m, 2h, 7d.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Verify the hash chain instead of printing: exit 0 if no line was found edited,
        /// inserted or removed (the last one included), 1 naming the first break. It cannot
        /// catch a log rewritten wholesale by someone able to write the state dir.
        #[arg(long, conflicts_with_all = ["since", "json"])]
        check: bool,
        /// Print the lines as stored, one JSON object each (a line that is not a record as
        /// {"unreadable": ...}).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct TrustArgs {
    /// sftp://user@host[:port]/path or user@host:path, or a profile name (a remote always holds
    /// a ':', a profile name never does) [default: the remote in --config or --profile].
    remote: Option<String>,
    /// Pin only if the server's key has this fingerprint (as `ssh-keygen -lf` prints it); no
    /// question asked. The way to pin from a script or without a terminal.
    #[arg(long, value_name = "SHA256:...")]
    fingerprint: Option<String>,
    /// Replace a different key already pinned for this server (needs --fingerprint).
    #[arg(long)]
    replace: bool,
    /// The mirror's state dir, whose known_hosts gets the key [default: from --config].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The mount's TOML config: its remote, state dir, known_hosts files and algorithm policy.
    #[arg(long)]
    config: Option<PathBuf>,
    /// known_hosts files the mount also reads (repeatable), checked for a conflicting or revoked key; only STATE_DIR/known_hosts is written [default: ~/.ssh/known_hosts].
    #[arg(long = "known-hosts", value_name = "FILE")]
    known_hosts: Vec<PathBuf>,
    /// The mount's profile (as for `mount`): its remote, state dir and algorithm policy.
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    profile: Option<String>,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// sftp://user@host[:port]/path or user@host:path: the mirror's remote; or a profile name
    /// (as for `mount`; a remote always holds a ':', a profile name never does): its remote,
    /// login settings and state dir.
    remote: String,
    /// The local directory to restore into: existing, and empty or left by an unfinished
    /// restore of the same remote.
    dir: PathBuf,
    /// The mirror's state dir: its manifest verifies every file and gives its mode (setuid and
    /// setgid only from there, never from the server) and mtime, its known_hosts pins the
    /// server's key [default: the profile's or --config's state_dir, else the default state dir
    /// of its local_dir when that exists].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The mount's TOML config: login settings, state dir (else its local_dir's default one)
    /// and algorithm policy (its remote is not used).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    login: LoginArgs,
    /// Parallel SFTP connections, each downloading different files [default: 4].
    #[arg(long)]
    connections: Option<usize>,
}

#[derive(clap::Args)]
struct MountArgs {
    /// The directory to mirror (the backing directory), or a profile name (see above).
    local_dir: Option<PathBuf>,
    /// sftp://user@host[:port]/path or user@host:path. Plain FTP is refused.
    remote: Option<String>,
    /// Where to mount; defaults to LOCAL_DIR itself (a shadow mount). Never inside LOCAL_DIR,
    /// nor holding it. A dead mount a killed daemon of this mirror left there is detached.
    mountpoint: Option<PathBuf>,
    /// Stay in the foreground (default: daemonize, returning once the mount is live).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma separated: allow_other, allow_root, default_permissions, ro,
    /// passthrough, nopassthrough, threads=N, fsname=NAME, nodev, nosuid, noexec, noatime.
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// Journal and runtime files [default: $XDG_STATE_HOME/ftpsync/NAME, or /var/lib/ftpsync/NAME for root].
    /// It must be yours, writable by nobody else, hold no symbolic link, and lie outside
    /// LOCAL_DIR and MOUNTPOINT.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// TOML config file, mode 0600 (keys: local_dir, remote, mountpoint, state_dir, options,
    /// identity, known_hosts, connections, writeback_delay, verify, drain_timeout, bwlimit,
    /// passphrase_file, passphrase_command, password_file, otp_command, [algorithms]); the
    /// command line wins.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mount profile NAME: ~/.config/ftpsync/NAME.toml (or under $XDG_CONFIG_HOME), then
    /// /etc/ftpsync/NAME.toml for root (see above); then the only argument is MOUNTPOINT.
    #[arg(long, value_name = "NAME", conflicts_with = "config")]
    profile: Option<String>,
    #[command(flatten)]
    login: LoginArgs,
    /// Parallel SFTP connections [default: 4].
    #[arg(long)]
    connections: Option<usize>,
    /// Seconds between a file's last change and its upload, so a burst of saves uploads once [default: 1].
    #[arg(long, value_name = "SECS")]
    writeback_delay: Option<f64>,
    /// How the remote copy's SHA-256 is checked: a hash command over exec, reading it back, or auto-detect [default: auto].
    #[arg(long, value_name = "auto|exec|readback")]
    verify: Option<String>,
    /// Seconds to keep uploading at unmount; the rest stays journaled for the next mount [default: 30].
    #[arg(long, value_name = "SECS")]
    drain_timeout: Option<f64>,
    /// Upload bandwidth limit shared by all connections, bytes per second with K, M or G (powers of 1024), e.g. 10M [default: unlimited].
    #[arg(long, value_name = "RATE")]
    bwlimit: Option<String>,
    /// Fail instead of mounting when the first connection (awaited a few seconds) finds a
    /// problem only you can fix: an unknown or changed host key, a refused login, a remote
    /// root that is missing, not a directory or moved. Without it the mount goes on (writes
    /// stay local) and says why on stderr.
    #[arg(long)]
    require_remote: bool,
}

/// How to log in: keys, pinned host keys, and where secrets come from (never from the command
/// line or the config itself).
#[derive(clap::Args)]
struct LoginArgs {
    /// Private key for the SFTP login, tried after ssh-agent (repeatable) [default: ~/.ssh/id_ed25519, ~/.ssh/id_rsa].
    #[arg(long = "identity", short = 'i', value_name = "KEY")]
    identity: Vec<PathBuf>,
    /// OpenSSH known_hosts file pinning the server's host key (repeatable) [default: ~/.ssh/known_hosts; STATE_DIR/known_hosts is always read].
    #[arg(long = "known-hosts", value_name = "FILE")]
    known_hosts: Vec<PathBuf>,
    /// File (mode 0600) whose first line is the key's passphrase [default: $CREDENTIALS_DIRECTORY/passphrase under systemd; in the foreground on a terminal, asked].
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Program that prints the key's passphrase, run without a shell for each login and never stored, e.g. "pass show ssh/backup".
    #[arg(long, value_name = "COMMAND")]
    passphrase_command: Option<String>,
    /// File (mode 0600) holding a login password; password authentication is off without it [default: $CREDENTIALS_DIRECTORY/password].
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Program that prints a one-time code, for servers that ask for a second factor (keyboard-interactive) after the key [default: in the foreground on a terminal, asked].
    #[arg(long, value_name = "COMMAND")]
    otp_command: Option<String>,
}

/// Login settings: the command line's, else the config file's.
struct Login {
    identities: Vec<PathBuf>,
    known_hosts: Vec<PathBuf>,
    secrets: Secrets,
}

impl LoginArgs {
    fn resolve(self, file: &FileConfig) -> Result<Login> {
        let pick = |cli: Vec<PathBuf>, file: Vec<PathBuf>| -> Result<Vec<PathBuf>> {
            let chosen = if cli.is_empty() { file } else { cli };
            chosen.into_iter().map(absolute).collect()
        };
        Ok(Login {
            identities: pick(self.identity, file.identity.clone())?,
            known_hosts: pick(self.known_hosts, file.known_hosts.clone())?,
            secrets: Secrets::from_sources(
                self.passphrase_file
                    .or_else(|| file.passphrase_file.clone()),
                self.passphrase_command
                    .or_else(|| file.passphrase_command.clone()),
                self.password_file.or_else(|| file.password_file.clone()),
                self.otp_command.or_else(|| file.otp_command.clone()),
            )?,
        })
    }
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&p).with_context(|| format!("bad path {}", p.display()))
}

/// The config file a command reads (`--profile NAME`, `--config FILE` or none), and how
/// messages name it.
fn config_file(config: Option<&Path>, profile: Option<&str>) -> Result<(FileConfig, String)> {
    Ok(match (profile, config) {
        (Some(name), _) => {
            let path = profile_path(name)?;
            let file = FileConfig::load(&path)?;
            (file, format!("profile {name} ({})", path.display()))
        }
        (None, Some(path)) => (FileConfig::load(path)?, path.display().to_string()),
        (None, None) => (FileConfig::default(), "--config or a profile".into()),
    })
}

/// Whether a command's first argument names a profile: a profile name (no '/') of which a
/// profile exists, even beside a directory of that name (`./docs` names the directory); or of
/// which nothing exists here either, so that the error lists the profiles there are.
fn names_profile(arg: &Path) -> bool {
    arg.to_str().is_some_and(|name| {
        is_profile_name(name) && (profile_exists(name) || std::fs::symlink_metadata(arg).is_err())
    })
}

/// The state dir a command is about: a profile's (a name that is no path here), or the one
/// of a mountpoint or state dir.
fn state_dir_of(target: &Path) -> Result<PathBuf> {
    if !names_profile(target) {
        return ftpsync::daemons::resolve_state_dir(target);
    }
    let name = target.to_string_lossy();
    let (file, source) = config_file(None, Some(&name))?;
    match (file.state_dir, file.local_dir) {
        (Some(d), _) => absolute(d),
        (None, Some(local)) => Ok(default_state_dir(&absolute(local)?)),
        (None, None) => anyhow::bail!("{source} names neither state_dir nor local_dir"),
    }
}

fn mount_config(mut a: MountArgs) -> Result<MountConfig> {
    let mut args: Vec<OsString> = [
        a.local_dir.take().map(PathBuf::into_os_string),
        a.remote.take().map(OsString::from),
        a.mountpoint.take().map(PathBuf::into_os_string),
    ]
    .into_iter()
    .flatten()
    .collect();
    let implicit = a.profile.is_none()
        && a.config.is_none()
        && args.first().is_some_and(|f| names_profile(Path::new(f)));
    if implicit {
        a.profile = Some(args.remove(0).to_string_lossy().into_owned());
    }
    let (file, source) = match config_file(a.config.as_deref(), a.profile.as_deref()) {
        Err(e) if implicit => {
            let name = a.profile.unwrap_or_default();
            return Err(e.context(format!("'{name}' is neither a file here nor a profile")));
        }
        loaded => loaded?,
    };
    let mut args = args.into_iter();
    let (local_arg, remote_arg, mountpoint_arg) = if a.profile.is_some() {
        let mountpoint = args.next().map(PathBuf::from);
        // A REMOTE after a bare name: the user meant a directory that shares a profile's name.
        let remote_next = mountpoint
            .as_deref()
            .and_then(Path::to_str)
            .is_some_and(|m| m.contains(':') && m.parse::<Remote>().is_ok());
        if args.next().is_some() || (implicit && remote_next) {
            let name = a.profile.as_deref().unwrap_or_default();
            let dir_hint = if implicit {
                format!(
                    "; '{name}' names {source}; to mirror the directory {name} \
                     instead, write it as a path: ./{name}"
                )
            } else {
                String::new()
            };
            anyhow::bail!(
                "after a profile the only argument is MOUNTPOINT: ftpsync mount [--profile] NAME \
                 [MOUNTPOINT]{dir_hint}"
            );
        }
        (None, None, mountpoint)
    } else {
        (
            args.next().map(PathBuf::from),
            args.next().map(|r| r.to_string_lossy().into_owned()),
            args.next().map(PathBuf::from),
        )
    };
    let login = a.login.resolve(&file)?;
    let local_dir = local_arg.or(file.local_dir).with_context(|| {
        format!("LOCAL_DIR is required (an argument, or local_dir in {source})")
    })?;
    let remote: Remote = remote_arg
        .or(file.remote)
        .with_context(|| format!("REMOTE is required (an argument, or remote in {source})"))?
        .parse()?;
    let local_dir = absolute(local_dir)?;
    let mountpoint = absolute(
        mountpoint_arg
            .or(file.mountpoint)
            .unwrap_or(local_dir.clone()),
    )?;
    let mut options = MountOptions::default();
    for o in file.options.iter().chain(&a.options) {
        options.apply(o)?;
    }
    if options.fsname.is_none() {
        // The mount's source, as mount(8) and fstab name it: `mount -a` and findmnt match on it.
        options.fsname = a.profile.clone();
    }
    let state_dir = a
        .state_dir
        .or(file.state_dir)
        .map(absolute)
        .transpose()?
        .unwrap_or_else(|| default_state_dir(&local_dir));
    let verify = a.verify.or(file.verify).unwrap_or_else(|| "auto".into());
    let connections = a.connections.or(file.connections).unwrap_or(4);
    if !(1..=64).contains(&connections) {
        anyhow::bail!("--connections {connections}: expected 1 to 64");
    }
    let bwlimit = a
        .bwlimit
        .or(file.bwlimit)
        .as_deref()
        .map(parse_rate)
        .transpose()?;
    let mirror = MirrorConfig {
        identities: login.identities,
        known_hosts: login.known_hosts,
        connections,
        writeback_delay: seconds(
            "--writeback-delay",
            a.writeback_delay.or(file.writeback_delay).unwrap_or(1.0),
        )?,
        verify: verify.parse().map_err(anyhow::Error::msg)?,
        drain_timeout: seconds(
            "--drain-timeout",
            a.drain_timeout.or(file.drain_timeout).unwrap_or(30.0),
        )?,
        secrets: login.secrets,
        algorithms: file.algorithms.policy()?,
        bwlimit,
        require_remote: a.require_remote,
    };
    Ok(MountConfig {
        local_dir,
        remote,
        mountpoint,
        state_dir,
        options,
        foreground: a.foreground,
        mirror,
    })
}

fn trust_request(mut a: TrustArgs) -> Result<trust::Request> {
    if a.profile.is_none() && a.config.is_none() && a.remote.as_deref().is_some_and(is_profile_name)
    {
        a.profile = a.remote.take();
    }
    let (file, source) = config_file(a.config.as_deref(), a.profile.as_deref())?;
    let remote: Remote = a
        .remote
        .or(file.remote)
        .with_context(|| format!("REMOTE is required (an argument, or remote in {source})"))?
        .parse()?;
    let state_dir = match (a.state_dir.or(file.state_dir), file.local_dir) {
        (Some(d), _) => absolute(d)?,
        (None, Some(local)) => default_state_dir(&absolute(local)?),
        (None, None) => anyhow::bail!(
            "say whose state dir gets the key: --state-dir DIR (as given to mount), --config FILE \
             or a profile"
        ),
    };
    if a.replace && a.fingerprint.is_none() {
        anyhow::bail!("--replace needs --fingerprint SHA256:... (the new key's, checked with the server's administrator)");
    }
    let known_hosts = if a.known_hosts.is_empty() {
        file.known_hosts
    } else {
        a.known_hosts
    };
    Ok(trust::Request {
        remote,
        state_dir,
        known_hosts: known_hosts
            .into_iter()
            .map(absolute)
            .collect::<Result<_>>()?,
        fingerprint: a.fingerprint,
        replace: a.replace,
        algorithms: file.algorithms.policy()?,
    })
}

/// Log lines of a one-shot command to stderr, at the level -v/-q ask for (RUST_LOG wins).
fn init_cli_logging(level: log::LevelFilter) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let _ = b.try_init();
}

fn restore_request(a: RestoreArgs) -> Result<restore::Request> {
    let profile = is_profile_name(&a.remote).then_some(a.remote.as_str());
    let (file, source) = config_file(a.config.as_deref(), profile)?;
    let login = a.login.resolve(&file)?;
    let remote: Remote = match profile {
        Some(_) => file
            .remote
            .clone()
            .with_context(|| format!("{source} names no remote"))?
            .parse()?,
        None => a.remote.parse()?,
    };
    let state_dir = match (a.state_dir.or(file.state_dir), &file.local_dir) {
        (Some(d), _) => Some(absolute(d)?),
        // The mirror's own state dir, when this machine has one (a restore onto a new
        // machine has none: it then checks against the server's hashes only).
        (None, Some(local)) => Some(default_state_dir(&absolute(local.clone())?))
            .filter(|d| d.join(ftpsync::statedir::JOURNAL).is_dir()),
        (None, None) => None,
    };
    let connections = a.connections.or(file.connections).unwrap_or(4);
    if !(1..=64).contains(&connections) {
        anyhow::bail!("--connections {connections}: expected 1 to 64");
    }
    let mut connect = connect_options(
        &remote,
        &login.identities,
        &login.known_hosts,
        state_dir.as_deref(),
        &login.secrets,
        &file.algorithms.policy()?,
    );
    connect.check_secret_files().map_err(anyhow::Error::msg)?;
    connect
        .ask_for_missing_secrets()
        .context("cannot ask for the passphrase")?;
    Ok(restore::Request {
        remote,
        dir: absolute(a.dir)?,
        state_dir,
        connect,
        connections,
    })
}

fn audit_command(target: &Path, since: Option<&str>, check: bool, json: bool) -> Result<()> {
    let since = since
        .map(|s| utc::parse_since(s, SystemTime::now()).context("--since"))
        .transpose()?;
    let dir = state_dir_of(target)?;
    if !check {
        let mut out = std::io::stdout().lock();
        audit_cmd::print(&dir, since, json, &mut out)?;
        return Ok(out.flush()?);
    }
    let report = audit::check(&dir)?;
    if !report.intact() {
        anyhow::bail!("{}", report.summary());
    }
    println!("{}", report.summary());
    Ok(())
}

fn status_command(
    target: &Path,
    json: bool,
    watch: Option<f64>,
    prometheus: bool,
    prometheus_file: Option<&Path>,
    interval: Option<f64>,
) -> Result<()> {
    let every = |what: &str, secs: f64| {
        let d = seconds(what, secs)?;
        if d < Duration::from_millis(100) {
            anyhow::bail!("{what}: at least 0.1 seconds");
        }
        Ok(d)
    };
    let dir = state_dir_of(target)?;
    if let Some(path) = prometheus_file {
        let every = every("--interval", interval.unwrap_or(5.0))?;
        return status::prometheus_file(&dir, path, every);
    }
    if prometheus {
        print!("{}", status::prometheus_text(&dir));
        return Ok(std::io::stdout().flush()?);
    }
    match watch {
        Some(secs) => status::watch(&dir, every("--watch", secs)?),
        None => status::print(&dir, json),
    }
}

/// The command line, also when ftpsync runs as a mount(8) helper (see `mount_helper`).
fn parse_cli() -> Cli {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    let commands: Vec<&str> = cmd
        .get_subcommands()
        .map(|c| c.get_name())
        .chain(["help"])
        .collect();
    match mount_helper::translate(&argv, &commands) {
        Ok(Invocation::Command) => Cli::parse_from(argv),
        Ok(Invocation::Mount(args)) => Cli::parse_from(args),
        Ok(Invocation::Fake) => std::process::exit(0),
        Err(e) => {
            eprintln!("{}: {e}", mount_helper::HELPER);
            std::process::exit(1);
        }
    }
}

fn main() {
    let cli = parse_cli();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, 2) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if !matches!(cli.command, Command::Mount(_)) {
        // `ftpsync status | head` should end quietly, as other tools do.
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Mount(a) => mount_config(*a).and_then(|cfg| mount::mount(cfg, level)),
        Command::Status {
            target,
            json,
            watch,
            prometheus,
            prometheus_file,
            interval,
        } => status_command(
            &target,
            json,
            watch,
            prometheus,
            prometheus_file.as_deref(),
            interval,
        ),
        Command::Verify {
            target,
            json,
            repair,
            connections,
        } => state_dir_of(&target).and_then(|state_dir| {
            let equal = verify::run(&verify::Request {
                state_dir,
                json,
                repair,
                connections,
            })?;
            if !equal {
                std::process::exit(1);
            }
            Ok(())
        }),
        Command::Trust(a) => trust_request(a).and_then(|r| trust::run(&r)),
        Command::Restore(a) => restore_request(a).and_then(|r| {
            init_cli_logging(level);
            restore::run(&r)
        }),
        Command::Flush {
            target,
            timeout,
            local,
            require_closed,
        } => state_dir_of(&target).and_then(|d| {
            let req = client::FlushRequest {
                timeout: Duration::from_secs(timeout),
                local,
                require_closed,
            };
            client::flush(&d, &req)
        }),
        Command::Unmount { target, timeout } => state_dir_of(&target).and_then(|state_dir| {
            unmount::run(&unmount::Request {
                state_dir,
                timeout: Duration::from_secs(timeout),
            })
        }),
        Command::Audit {
            target,
            since,
            check,
            json,
        } => audit_command(&target, since.as_deref(), check, json),
    };
    if let Err(e) = result {
        eprintln!("ftpsync: {e:#}");
        std::process::exit(1);
    }
}
