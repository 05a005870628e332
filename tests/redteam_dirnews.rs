//! Red team (red5): `mkdir_all`'s news (`DirNews::Asking` before each directory it asks the
//! server for, `DirNews::Made` once made) against every SFTP server flavour the tests start,
//! including a directory another client makes between the Asking and the mkdir.

mod common;

use common::sshd::{connect, Flavor, Sshd};
use ftpsync::remote::{Attrs, Connection, DirNews, Transport};
use sha2::{Digest, Sha256};

fn news_of(c: &mut Connection, rel: &[u8]) -> (Vec<String>, Result<(), String>) {
    let mut heard = Vec::new();
    let r = c.mkdir_all(rel, &mut |d, n| {
        let d = String::from_utf8_lossy(d).into_owned();
        heard.push(match n {
            DirNews::Asking => format!("asking {d}"),
            DirNews::Made(m) => format!("made {d} {m:o}"),
        })
    });
    (heard, r.map_err(|e| e.to_string()))
}

fn check(flavor: Flavor) {
    let sshd = Sshd::start(flavor);
    let mut c = connect(&sshd);
    let (heard, r) = news_of(&mut c, b"a/b");
    r.unwrap();
    assert_eq!(
        heard,
        ["asking a", "made a 755", "asking a/b", "made a/b 755"],
        "{flavor:?}"
    );
    // A fresh connection (no cache) over what exists: no news at all.
    let mut c2 = connect(&sshd);
    let (heard, r) = news_of(&mut c2, b"a/b");
    r.unwrap();
    assert!(heard.is_empty(), "{flavor:?}: {heard:?}");
    // Partly there.
    let (heard, r) = news_of(&mut c2, b"a/b/x/y");
    r.unwrap();
    assert_eq!(
        heard,
        [
            "asking a/b/x",
            "made a/b/x 755",
            "asking a/b/x/y",
            "made a/b/x/y 755"
        ],
        "{flavor:?}"
    );
    // Another client makes the directory between the Asking and the mkdir: no Made (not
    // ours), no error.
    let mut heard = Vec::new();
    let r = c2.mkdir_all(b"race/in", &mut |d, n| {
        if n == DirNews::Asking && d == b"race" {
            c.mkdir(b"race", 0o755).unwrap();
        }
        heard.push((String::from_utf8_lossy(d).into_owned(), n));
    });
    r.unwrap_or_else(|e| panic!("{flavor:?}: {e}"));
    let mut want = vec![("race".to_string(), DirNews::Asking)];
    if flavor == Flavor::Rclone {
        // rclone answers a mkdir of an existing directory with success: the directory is told
        // made, and taken for ours (as any directory at a path of ours is: only an empty one
        // is ever removed, what the other client puts in it keeps it).
        want.push(("race".to_string(), DirNews::Made(0o755)));
    }
    want.push(("race/in".to_string(), DirNews::Asking));
    want.push(("race/in".to_string(), DirNews::Made(0o755)));
    assert_eq!(heard, want, "{flavor:?}");
    // A file in the way: refused, nothing asked for.
    let data = b"x";
    let sha: [u8; 32] = Sha256::digest(data).into();
    let attrs = Attrs {
        mode: 0o644,
        atime: 1_600_000_000,
        mtime: 1_600_000_000,
    };
    c.upload(b"f", &mut &data[..], 1, &sha, &attrs).unwrap();
    let (heard, r) = news_of(&mut c2, b"f/g");
    assert!(r.is_err(), "{flavor:?}");
    assert!(heard.is_empty(), "{flavor:?}: {heard:?}");
}

#[test]
fn mkdir_all_news_on_openssh() {
    check(Flavor::Plain);
}

#[test]
fn mkdir_all_news_on_gesftpserver() {
    check(Flavor::Gesftp);
}

#[test]
fn mkdir_all_news_on_rclone() {
    check(Flavor::Rclone);
}

#[test]
fn mkdir_all_news_on_proftpd() {
    check(Flavor::Proftpd);
}
