//! The daemon's log file: appended to, rotated by size (`ftpsync.log` becomes `ftpsync.log.1`,
//! `.1` becomes `.2`, ..., the oldest is dropped), every file 0600. A descriptor can follow
//! the log (the daemon's standard error, where panics and child processes write): after each
//! rotation it is pointed at the new file.

use crate::statedir::{self, Access};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Rotate once the log would grow past this.
pub const MAX_BYTES: u64 = 10 << 20;
/// Rotated files kept beside the live one.
pub const KEEP: u32 = 3;

pub struct RotatingLog {
    path: PathBuf,
    file: File,
    limit: u64,
    keep: u32,
    /// A descriptor that must stay the log (2 in the daemon).
    follower: Option<RawFd>,
    /// The size at which rotation is tried next (pushed on after a failed one, so a failing
    /// rename is not retried on every line).
    next_at: u64,
}

fn open_log(path: &Path) -> io::Result<File> {
    let f = statedir::open(path, Access::Append)?;
    // A log from before (or made under another umask) gets the same mode.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

fn dup_onto(file: &File, fd: RawFd) -> io::Result<()> {
    // SAFETY: dup2 of a descriptor we own onto a number the caller hands over to the log.
    if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `path.N`: the Nth older file of a rotated log.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// One rotation of a log kept as numbered files (the daemon's log, the audit log): `path.N`
/// becomes `path.N+1` from the oldest kept down (what was `path.keep` is replaced), and `path`
/// becomes `path.1`; with `keep` 0 it is removed. Missing files are skipped.
pub fn shift_numbered(path: &Path, keep: usize) -> io::Result<()> {
    let moved = |from: &Path, to: Option<&Path>| {
        let r = match to {
            Some(to) => std::fs::rename(from, to),
            None => std::fs::remove_file(from),
        };
        match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    for n in (1..keep).rev() {
        moved(&numbered(path, n), Some(&numbered(path, n + 1)))?;
    }
    let first = (keep > 0).then(|| numbered(path, 1));
    moved(path, first.as_deref())
}

impl RotatingLog {
    /// Opens (or creates) the log at `path`, to be rotated past `limit` bytes, keeping `keep`
    /// old files.
    pub fn open(path: &Path, limit: u64, keep: u32) -> io::Result<RotatingLog> {
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file: open_log(path)?,
            limit: limit.max(1),
            keep,
            follower: None,
            next_at: limit.max(1),
        })
    }

    /// Points descriptor `fd` at the log, now and after every rotation.
    pub fn redirect(mut self, fd: RawFd) -> io::Result<RotatingLog> {
        dup_onto(&self.file, fd)?;
        self.follower = Some(fd);
        Ok(self)
    }

    fn rotate(&mut self) -> io::Result<()> {
        shift_numbered(&self.path, self.keep as usize)?;
        let file = open_log(&self.path)?;
        if let Some(fd) = self.follower {
            dup_onto(&file, fd)?;
        }
        self.file = file;
        Ok(())
    }
}

impl Write for RotatingLog {
    /// Writes all of `buf` (one log record) to one file: a record is never split by a rotation.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The file's own size counts what others wrote to the descriptor following it.
        let len = self.file.metadata().map_or(0, |m| m.len());
        if len > 0 && len + buf.len() as u64 > self.next_at {
            match self.rotate() {
                Ok(()) => self.next_at = self.limit,
                Err(e) => {
                    let note = format!("ftpsync: cannot rotate {}: {e}\n", self.path.display());
                    self.file.write_all(note.as_bytes())?;
                    self.next_at = len + (note.len() + buf.len()) as u64 + self.limit;
                }
            }
        }
        self.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn rotates_by_size_keeps_three_0600_files_and_moves_the_follower() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("ftpsync.log");
        // A log left by an older daemon, too open and already over the limit.
        std::fs::write(&path, "old line\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // Stands for the daemon's fd 2.
        let follower = File::open("/dev/null").unwrap();
        let mut log = RotatingLog::open(&path, 100, 3)
            .unwrap()
            .redirect(follower.as_raw_fd())
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        let line = |i: usize| format!("record {i:03} {}\n", "x".repeat(30));
        for i in 0..12 {
            log.write_all(line(i).as_bytes()).unwrap();
        }
        // What others write to the follower lands in the live file and counts for its size.
        let mut other = follower.try_clone().unwrap();
        other.write_all(b"panic text\n").unwrap();
        log.write_all(line(12).as_bytes()).unwrap();
        log.flush().unwrap();

        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let numbered = |n: u32| d.path().join(format!("ftpsync.log.{n}"));
        // 42-byte records, at most 100 bytes a file: two per file.
        assert_eq!(read(&path), line(12));
        assert_eq!(
            read(&numbered(1)),
            format!("{}{}panic text\n", line(10), line(11))
        );
        assert_eq!(read(&numbered(2)), format!("{}{}", line(8), line(9)));
        assert_eq!(read(&numbered(3)), format!("{}{}", line(6), line(7)));
        assert!(!numbered(4).exists(), "only three are kept");
        for p in [path.clone(), numbered(1), numbered(2), numbered(3)] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        let (a, b) = (
            follower.metadata().unwrap(),
            std::fs::metadata(&path).unwrap(),
        );
        assert_eq!(
            (a.dev(), a.ino()),
            (b.dev(), b.ino()),
            "the follower is the new file"
        );
        // Every record is whole, in one file.
        let all: String = [numbered(3), numbered(2), numbered(1), path.clone()]
            .iter()
            .map(|p| read(p))
            .collect();
        assert!(
            all.lines().all(|l| l == "panic text" || l.len() == 41),
            "{all}"
        );
    }

    #[test]
    fn a_record_larger_than_the_limit_gets_a_file_of_its_own_and_failures_do_not_lose_lines() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("log");
        let mut log = RotatingLog::open(&path, 10, 1).unwrap();
        log.write_all(b"a long record of its own\n").unwrap();
        log.write_all(b"next\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next\n");
        let one = d.path().join("log.1");
        assert_eq!(
            std::fs::read_to_string(&one).unwrap(),
            "a long record of its own\n"
        );
        // A rotation that cannot happen (a directory where log.1 would go): the line is
        // written anyway, with a note, and rotation is not retried on every line.
        std::fs::remove_file(&one).unwrap();
        std::fs::create_dir(&one).unwrap();
        std::fs::write(one.join("x"), "").unwrap();
        log.write_all(b"still here\n").unwrap();
        log.write_all(b"and here\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("next\nftpsync: cannot rotate"), "{text}");
        assert!(text.ends_with("still here\nand here\n"), "{text}");
        assert_eq!(text.matches("cannot rotate").count(), 1, "{text}");
    }
}
