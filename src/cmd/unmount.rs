//! `ftpsync unmount`: the unmount that waits and tells. It flushes (every change made before
//! it confirmed on the server, or its timeout), unmounts (`fusermount3 -u`), waits for the
//! daemon to finish draining and exit, then says what is left and where it waits: in the
//! state dir's journal, sent at the next mount. `fusermount3 -u` alone returns at once and
//! leaves the draining and the report to the daemon's log.

use crate::client::{self, FlushRequest};
use crate::config::MountConfig;
use crate::daemons::{self, Daemon};
use crate::report::PendingRecord;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

/// How many of the paths left over are named; the rest are counted.
const LISTED: usize = 20;
/// Waited for the daemon beyond its own drain timeout (journal sync, closing connections).
const EXIT_SLACK: Duration = Duration::from_secs(10);

pub struct Request {
    /// The mirror's state dir (from a mountpoint, a state dir or a profile).
    pub state_dir: std::path::PathBuf,
    /// How long the flush before the unmount may take.
    pub timeout: Duration,
}

pub fn run(req: &Request) -> Result<()> {
    let state_dir = &req.state_dir;
    let daemon = Daemon::of_state_dir(state_dir).with_context(|| {
        format!(
            "no ftpsync daemon runs for the state dir {}: nothing to unmount",
            state_dir.display()
        )
    })?;
    let (Some(pid), Some(mountpoint)) = (daemon.pid, daemon.mountpoint.clone()) else {
        bail!("{daemon} is not mounted yet (still starting?); try again in a moment");
    };
    let flushed = client::flush(
        state_dir,
        &FlushRequest {
            timeout: req.timeout,
            local: false,
            require_closed: false,
        },
    );
    if let Err(e) = &flushed {
        eprintln!("ftpsync: {e:#}\nftpsync: unmounting all the same; nothing is lost");
    }
    if daemon.mounted() {
        fusermount_u(&mountpoint)?;
    }
    let drain = daemon.drain_timeout.unwrap_or_default();
    if flushed.is_err() {
        eprintln!(
            "ftpsync: unmounted {}; daemon pid {pid} goes on sending for up to {} s before it exits",
            mountpoint.display(),
            drain.as_secs()
        );
    }
    let wait = drain + EXIT_SLACK;
    if !daemons::wait_exit(pid, wait) {
        bail!(
            "unmounted {}, but daemon pid {pid} is still running {} s later (see `ftpsync status \
             {}`); what it has not sent stays journaled for the next mount",
            mountpoint.display(),
            wait.as_secs(),
            state_dir.display()
        );
    }
    report_left(state_dir, &mountpoint)
}

/// `fusermount3 -u MOUNTPOINT`, saying what to do when the mount is busy.
fn fusermount_u(mountpoint: &Path) -> Result<()> {
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output()
        .context("cannot run fusermount3")?;
    if !out.status.success() {
        bail!(
            "cannot unmount {}: {} (a process may have a file or its working directory there: \
             `fuser -vm {}` names it); the mirror keeps running",
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim(),
            mountpoint.display()
        );
    }
    Ok(())
}

/// After the daemon exited: 0 when the journal holds nothing unsent, else 1 naming what is
/// left and where it waits.
fn report_left(state_dir: &Path, mountpoint: &Path) -> Result<()> {
    let doc = client::collect(state_dir).context("reading what the daemon left")?;
    let left = left_paths(doc.pending.as_deref().unwrap_or_default());
    if left.is_empty() {
        println!(
            "unmounted {}: every change is confirmed on the server",
            mountpoint.display()
        );
        return Ok(());
    }
    eprintln!(
        "ftpsync: {} not on the server yet:",
        if left.len() == 1 {
            "1 path is".to_string()
        } else {
            format!("{} paths are", left.len())
        }
    );
    for p in left.iter().take(LISTED) {
        eprintln!("  {p}");
    }
    if left.len() > LISTED {
        eprintln!("  ... and {} more", left.len() - LISTED);
    }
    let record = MountConfig::recorded(state_dir).ok();
    let local = record.map_or_else(String::new, |r| format!(" of {}", r.local_dir.display()));
    bail!(
        "unmounted {}, but {} wait in {}: the next mount{local} sends them (`ftpsync status {}` \
         shows them meanwhile)",
        mountpoint.display(),
        if left.len() == 1 {
            "1 path's changes".to_string()
        } else {
            format!("{} paths' changes", left.len())
        },
        state_dir.join(crate::statedir::JOURNAL).display(),
        state_dir.display()
    )
}

/// The paths of the journal's pending records in journal order, in the one display form, each
/// once by its exact bytes (two names that differ only in bytes that are not UTF-8 share their
/// lossy text).
fn left_paths(pending: &[PendingRecord]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    pending
        .iter()
        .map(|r| r.name.bytes())
        .filter(|p| seen.insert(p.clone()))
        .map(|p| crate::relpath::show(&p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_is_left_names_each_path_once_in_journal_order() {
        let pending = json!([
            {"seq": 3, "op": "store", "path": "b"},
            {"seq": 4, "op": "store", "path": "a"},
            {"seq": 5, "op": "setattr", "path": "b"},
        ]);
        let pending: Vec<PendingRecord> = serde_json::from_value(pending).expect("records");
        assert_eq!(left_paths(&pending), ["b", "a"]);
        assert!(left_paths(&[]).is_empty());
        // Exact bytes: names alike in their lossy text stay apart, shown on one line each.
        let pending = json!([
            {"seq": 3, "op": "store", "path": "\u{fffd}", "path_hex": "ff"},
            {"seq": 4, "op": "store", "path": "\u{fffd}", "path_hex": "fe"},
            {"seq": 5, "op": "store", "path": "a\nb", "path_hex": "610a62"},
        ]);
        let pending: Vec<PendingRecord> = serde_json::from_value(pending).expect("records");
        assert_eq!(left_paths(&pending), ["\\xff", "\\xfe", "a\\nb"]);
    }
}
