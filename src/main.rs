//! The `ftpsync` command line.

use anyhow::{Context, Result};
use clap::{ArgAction, Parser, Subcommand};
use ftpsync::config::{default_state_dir, FileConfig, MountConfig, MountOptions, Remote};
use ftpsync::{run, status};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ftpsync",
    version,
    about = "Mirror a local folder to an SFTP server through a FUSE mount",
    long_about = "ftpsync mounts a local directory through FUSE: applications use it at local speed, \
every change is journaled, and every file is hashed (SHA-256) when it is closed. \
Unmount with `fusermount3 -u MOUNTPOINT`."
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
    /// Mount LOCAL_DIR at MOUNTPOINT (or over itself), mirrored to REMOTE.
    Mount(MountArgs),
    /// Show the journal's pending records and the latest file hashes.
    Status {
        /// A mountpoint of a running mirror, or its state dir.
        target: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Wait until every file closed before this call is hashed and journaled durably.
    Flush {
        /// A mountpoint of a running mirror, or its state dir.
        target: PathBuf,
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(clap::Args)]
struct MountArgs {
    /// The directory to mirror (the backing directory).
    local_dir: Option<PathBuf>,
    /// sftp://user@host[:port]/path or user@host:path. Plain FTP is refused.
    remote: Option<String>,
    /// Where to mount; defaults to LOCAL_DIR itself (a shadow mount).
    mountpoint: Option<PathBuf>,
    /// Stay in the foreground (default: daemonize, returning once the mount is live).
    #[arg(short = 'f', long)]
    foreground: bool,
    /// Mount options, comma separated: allow_other, allow_root, default_permissions, ro,
    /// passthrough, nopassthrough, threads=N, fsname=NAME, nodev, nosuid, noexec, noatime.
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,
    /// Journal and runtime files [default: $XDG_STATE_HOME/ftpsync/NAME, or /var/lib/ftpsync/NAME for root].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// TOML config file (keys: local_dir, remote, mountpoint, state_dir, options); the command line wins.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&p).with_context(|| format!("bad path {}", p.display()))
}

fn mount_config(a: MountArgs) -> Result<MountConfig> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let local_dir = a
        .local_dir
        .or(file.local_dir)
        .context("LOCAL_DIR is required (argument or local_dir in --config)")?;
    let remote: Remote = a
        .remote
        .or(file.remote)
        .context("REMOTE is required (argument or remote in --config)")?
        .parse()?;
    let local_dir = absolute(local_dir)?;
    let mountpoint = absolute(
        a.mountpoint
            .or(file.mountpoint)
            .unwrap_or(local_dir.clone()),
    )?;
    let mut options = MountOptions::default();
    for o in file.options.iter().chain(&a.options) {
        options.apply(o)?;
    }
    let state_dir = a
        .state_dir
        .or(file.state_dir)
        .map(absolute)
        .transpose()?
        .unwrap_or_else(|| default_state_dir(&local_dir));
    Ok(MountConfig {
        local_dir,
        remote,
        mountpoint,
        state_dir,
        options,
        foreground: a.foreground,
    })
}

fn main() {
    let cli = Cli::parse();
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
        Command::Mount(a) => mount_config(a).and_then(|cfg| run::mount(cfg, level)),
        Command::Status { target, json } => {
            status::resolve_state_dir(&target).and_then(|d| status::print(&d, json))
        }
        Command::Flush { target, timeout } => status::resolve_state_dir(&target)
            .and_then(|d| status::flush(&d, Duration::from_secs(timeout))),
    };
    if let Err(e) = result {
        eprintln!("ftpsync: {e:#}");
        std::process::exit(1);
    }
}
