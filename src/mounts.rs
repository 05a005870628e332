//! What is mounted on the mountpoint before ftpsync mounts there. A daemon killed with
//! SIGKILL leaves its mount behind, dead (every access fails with ENOTCONN), and nothing can
//! be mounted there until it is detached. ftpsync detaches such a mount when it is certainly
//! its own stale one: fuse.ftpsync, with this mirror's source name, and no daemon holding the
//! state dir's lock. Anything else on the mountpoint is left alone, and a live ftpsync mount
//! is refused rather than mounted over.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The fstype ftpsync's mounts show in /proc/self/mountinfo.
pub const FSTYPE: &str = "fuse.ftpsync";

/// One line of /proc/self/mountinfo: what is mounted where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// The mounts on `path`, innermost (the one that answers) last.
pub fn mounted_on(path: &Path) -> std::io::Result<Vec<Entry>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(parse(&text)
        .into_iter()
        .filter(|e| e.mountpoint == path)
        .collect())
}

fn parse(text: &[u8]) -> Vec<Entry> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            let (mountpoint, fstype, source) =
                (fields.get(4)?, fields.get(sep + 1)?, fields.get(sep + 2)?);
            Some(Entry {
                mountpoint: PathBuf::from(OsStr::from_bytes(&unescape(mountpoint))),
                fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = s
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (s[i], oct) {
            (b'\\', Some(o)) => {
                let v = o.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// What to do about the mount found on the mountpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing of ours in the way: mount.
    Go,
    /// Our own stale mount: detach it, then mount.
    Detach,
    /// Leave it alone and refuse, saying why.
    Refuse(String),
}

/// Decides from the innermost mount on `mountpoint`, whether the mountpoint answers (`dead`:
/// ENOTCONN), this mirror's source name and whether a daemon holds the state dir's lock.
pub fn verdict(
    mountpoint: &Path,
    top: Option<&Entry>,
    dead: bool,
    source: &str,
    locked: bool,
) -> Verdict {
    let at = mountpoint.display();
    let Some(top) = top else {
        return Verdict::Go;
    };
    let ours = top.fstype == FSTYPE;
    match (dead, ours) {
        (false, false) => Verdict::Go,
        (false, true) => Verdict::Refuse(format!(
            "{at} already has a live {FSTYPE} mount (source {}); unmount it first \
             (fusermount3 -u {at})",
            top.source
        )),
        (true, false) => Verdict::Refuse(format!(
            "{at} is a dead {} mount (source {}), not one of ftpsync's: left alone; detach it \
             yourself (fusermount3 -uz {at}) if it is stale",
            top.fstype, top.source
        )),
        (true, true) if top.source != source => Verdict::Refuse(format!(
            "{at} is a dead {FSTYPE} mount of another mirror (source {}, this one is {source}): \
             left alone; detach it yourself (fusermount3 -uz {at}) if it is stale",
            top.source
        )),
        (true, true) if locked => Verdict::Refuse(format!(
            "{at} is a dead {FSTYPE} mount whose daemon still holds this state dir's lock: \
             left alone; stop that daemon first"
        )),
        (true, true) => Verdict::Detach,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_with_escapes() {
        let text =
            b"36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.ftpsync ftpsync:/x\\040y rw\n\
                     37 35 0:5 / /proc rw - proc proc rw\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mountpoint, Path::new("/mnt/a b"));
        assert_eq!(
            (e[0].fstype.as_str(), e[0].source.as_str()),
            (FSTYPE, "ftpsync:/x y")
        );
        assert_eq!(e[1].fstype, "proc");
    }

    #[test]
    fn only_our_own_dead_unlocked_mount_is_detached() {
        let m = Path::new("/m");
        let entry = |fstype: &str, source: &str| Entry {
            mountpoint: m.into(),
            fstype: fstype.into(),
            source: source.into(),
        };
        let ours = entry(FSTYPE, "ftpsync:/l");
        assert_eq!(verdict(m, None, false, "ftpsync:/l", false), Verdict::Go);
        assert_eq!(
            verdict(m, Some(&ours), true, "ftpsync:/l", false),
            Verdict::Detach
        );
        let refused = |top: &Entry, dead, locked| {
            matches!(
                verdict(m, Some(top), dead, "ftpsync:/l", locked),
                Verdict::Refuse(_)
            )
        };
        assert!(refused(&ours, false, false), "live");
        assert!(refused(&ours, true, true), "its daemon alive");
        assert!(
            refused(&entry(FSTYPE, "ftpsync:/other"), true, false),
            "another mirror"
        );
        assert!(
            refused(&entry("fuse.sshfs", "ftpsync:/l"), true, false),
            "not ours"
        );
        assert_eq!(
            verdict(
                m,
                Some(&entry("ext4", "/dev/sda1")),
                false,
                "ftpsync:/l",
                false
            ),
            Verdict::Go
        );
    }
}
