//! Progress of long one-shot work (verify, restore): a bar on a terminal, plain lines every
//! few seconds otherwise (logs, CI), both on stderr so stdout stays the result.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a non-terminal progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: String,
    bar: Option<ProgressBar>,
    total_bytes: u64,
    files: AtomicU64,
    bytes: AtomicU64,
    start: Instant,
    last_line: parking_lot::Mutex<Instant>,
}

impl Progress {
    /// `what` names the work ("verifying", "restoring"); the totals may be 0 when unknown.
    pub fn new(what: &str, total_files: u64, total_bytes: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_bytes),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(format!("{what} 0/{total_files} files"));
            bar
        });
        Progress {
            what: what.to_string(),
            bar,
            total_bytes,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            start: Instant::now(),
            last_line: parking_lot::Mutex::new(Instant::now()),
        }
    }

    /// One file done, of `bytes` bytes.
    pub fn file_done(&self, bytes: u64, total_files: u64) {
        let files = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(format!("{} {files}/{total_files} files", self.what));
            return;
        }
        let mut last = self.last_line.lock();
        if last.elapsed() >= LINE_EVERY {
            *last = Instant::now();
            eprintln!(
                "{}: {files}/{total_files} files, {} of {} ({:.0} s)",
                self.what,
                human_bytes(done),
                human_bytes(self.total_bytes),
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// 3 -> "3 files", 1 -> "1 file".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_say_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
