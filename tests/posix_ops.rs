//! POSIX semantics through the mount, compared with a plain directory.
//!
//! Each scenario is one function run twice, on a plain directory and on the
//! mount, with the same code; it records every result (values and errno
//! names) in a trace, and the two traces must be equal. Scenarios run on a
//! mount with `-o passthrough` and on one with `-o nopassthrough`. After the
//! mount is unmounted, the backing directory must hold the same tree as the
//! plain directory.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::sys::*;
use common::{sha256_file, sha256_hex, Mount};

// ---------------------------------------------------------------------------
// Traces and the comparison runner.

#[derive(Default)]
struct Trace(Vec<String>);

impl Trace {
    fn rec(&mut self, what: &str, v: impl fmt::Debug) {
        self.0.push(format!("{what}: {v:?}"));
    }
}

/// A comparable snapshot of a tree: path → kind, perms, owner, size, content
/// hash or link target, sorted by path bytes. Times and inode numbers are left
/// out.
fn tree_snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    for (rel, p, md) in common::walk(root) {
        let ft = md.file_type();
        let desc = if ft.is_symlink() {
            format!(
                "symlink -> {:?}",
                fs::read_link(&p).expect("readlink in snapshot")
            )
        } else if ft.is_dir() {
            format!("dir {:04o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
        } else if ft.is_file() {
            format!(
                "file {:04o} {}:{} nlink={} size={} sha={}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                md.nlink(),
                md.len(),
                sha256_file(&p)
            )
        } else {
            format!("{} {:04o}", kind(md.mode()), md.mode() & 0o7777)
        };
        out.insert(rel, desc);
    }
    out
}

fn diff_maps(a: &BTreeMap<Vec<u8>, String>, b: &BTreeMap<Vec<u8>, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!(
                "  {:?}: plain has `{v}`, backing dir lacks it",
                String::from_utf8_lossy(k)
            )),
            Some(w) if w != v => d.push(format!(
                "  {:?}: plain `{v}`, backing dir `{w}`",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            d.push(format!(
                "  {:?}: backing dir has `{w}`, plain lacks it",
                String::from_utf8_lossy(k)
            ));
        }
    }
    d
}

fn assert_traces_eq(what: &str, plain: &Trace, mnt: &Trace) {
    if plain.0 == mnt.0 {
        return;
    }
    let mut msg = format!("{what}: mount differs from a plain directory\n");
    let n = plain.0.len().max(mnt.0.len());
    let mut shown = 0;
    for i in 0..n {
        let a = plain.0.get(i).map(String::as_str).unwrap_or("<none>");
        let b = mnt.0.get(i).map(String::as_str).unwrap_or("<none>");
        if a != b {
            msg.push_str(&format!("  step {i}:\n    plain: {a}\n    mount: {b}\n"));
            shown += 1;
            if shown >= 40 {
                msg.push_str("  ...\n");
                break;
            }
        }
    }
    msg.push_str("full mount trace:\n");
    for l in &mnt.0 {
        msg.push_str(&format!("    {l}\n"));
    }
    panic!("{msg}");
}

/// Runs `scenario` on a plain dir and on the mount root, with passthrough on
/// and off, and compares traces and the resulting trees.
fn compare(name: &str, scenario: fn(&Path, &mut Trace)) {
    for mode in ["passthrough", "nopassthrough"] {
        let mut m = Mount::builder().opt(mode).mount();
        let mut tp = Trace::default();
        scenario(&m.plain, &mut tp);
        let mut tm = Trace::default();
        scenario(&m.mnt, &mut tm);
        let what = format!("{name} (-o {mode})");
        if std::env::var_os("FTPSYNC_TEST_TRACE").is_some() {
            eprintln!("{what}: plain trace:\n  {}", tp.0.join("\n  "));
        }
        assert_traces_eq(&what, &tp, &tm);
        // What the application sees through the mount must be what it left
        // in the backing directory.
        let through = tree_snapshot(&m.mnt);
        m.unmount();
        let plain = tree_snapshot(&m.plain);
        let d = diff_maps(&plain, &through);
        assert!(
            d.is_empty(),
            "{what}: tree seen through the mount differs from the plain tree:\n{}",
            d.join("\n")
        );
        let backing = tree_snapshot(&m.local);
        let d = diff_maps(&plain, &backing);
        assert!(
            d.is_empty(),
            "{what}: backing dir after unmount differs from the plain tree:\n{}",
            d.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// Scenarios.

fn sc_create_open(root: &Path, t: &mut Trace) {
    let f = root.join("f");
    let rw = libc::O_RDWR;
    t.rec(
        "O_CREAT|O_EXCL new",
        open_close(&f, libc::O_CREAT | libc::O_EXCL | rw, 0o644),
    );
    t.rec(
        "O_CREAT|O_EXCL existing",
        open_close(&f, libc::O_CREAT | libc::O_EXCL | rw, 0o644),
    );
    t.rec(
        "O_CREAT existing",
        open_close(&f, libc::O_CREAT | rw, 0o644),
    );
    t.rec(
        "open missing",
        open_close(&root.join("missing"), libc::O_RDONLY, 0),
    );
    t.rec(
        "O_DIRECTORY on file",
        open_close(&f, libc::O_RDONLY | libc::O_DIRECTORY, 0),
    );
    fs::create_dir(root.join("dir")).expect("mkdir");
    t.rec(
        "O_WRONLY on dir",
        open_close(&root.join("dir"), libc::O_WRONLY, 0),
    );
    t.rec(
        "O_CREAT under missing dir",
        open_close(&root.join("nodir/x"), libc::O_CREAT | rw, 0o644),
    );
    t.rec(
        "O_CREAT under a file",
        open_close(&root.join("f/x"), libc::O_CREAT | rw, 0o644),
    );

    // umask applies to the create mode
    let g = root.join("g");
    t.rec(
        "create 0666 (umask 022)",
        open_close(&g, libc::O_CREAT | libc::O_WRONLY, 0o666),
    );
    t.rec("stat g", st_of(stat(&g)));
    let h = root.join("h");
    t.rec(
        "create 0600",
        open_close(&h, libc::O_CREAT | libc::O_WRONLY, 0o600),
    );
    t.rec("stat h", st_of(stat(&h)));
    // a file created read-only is still writable through the fd it was created with
    let ro = root.join("ro");
    match open(&ro, libc::O_CREAT | libc::O_RDWR, 0o444) {
        Ok(fd) => {
            t.rec("write to fresh 0444 file", write(&fd, b"x"));
        }
        Err(e) => t.rec("create 0444", Err::<(), _>(e)),
    }
    t.rec("stat ro", st_of(stat(&ro)));

    // read/write at offsets, with a hole
    let fd = open(&f, rw, 0).expect("open f");
    t.rec("write", write(&fd, b"hello world"));
    t.rec("pwrite @20", pwrite(&fd, 20, b"tail"));
    t.rec("fstat", st_of(fstat(&fd)));
    t.rec("pread 0..30", pread(&fd, 0, 30));
    t.rec("pread 6..11", pread(&fd, 6, 5));
    t.rec("pread past EOF", pread(&fd, 100, 10));
    t.rec("lseek END", lseek(&fd, 0, libc::SEEK_END));
    t.rec("lseek negative", lseek(&fd, -1, libc::SEEK_SET));
    t.rec("overwrite middle", pwrite(&fd, 2, b"LL"));
    t.rec("pread all", pread(&fd, 0, 64));
    drop(fd);

    // read-only fd refuses writes
    let fd = open(&f, libc::O_RDONLY, 0).expect("open ro");
    t.rec("write on O_RDONLY", write(&fd, b"x"));
    drop(fd);
    let fd = open(&f, libc::O_WRONLY, 0).expect("open wo");
    t.rec("pread on O_WRONLY", pread(&fd, 0, 1));
    drop(fd);

    // O_TRUNC
    let fd = open(&f, rw | libc::O_TRUNC, 0).expect("open trunc");
    t.rec("after O_TRUNC", st_of(fstat(&fd)));
    drop(fd);
    t.rec("content after O_TRUNC", read_all(&f));

    // O_APPEND: every write goes to the end, whatever the offset
    let fd = open(&f, libc::O_WRONLY | libc::O_APPEND, 0).expect("open append");
    t.rec("append abc", write(&fd, b"abc"));
    t.rec("append def", write(&fd, b"def"));
    t.rec("lseek 0", lseek(&fd, 0, libc::SEEK_SET));
    t.rec("append ghi", write(&fd, b"ghi"));
    drop(fd);
    // two appenders interleave without overwriting each other
    let a1 = open(&f, libc::O_WRONLY | libc::O_APPEND, 0).expect("append 1");
    let a2 = open(&f, libc::O_WRONLY | libc::O_APPEND, 0).expect("append 2");
    t.rec("append1 X", write(&a1, b"X"));
    t.rec("append2 Y", write(&a2, b"Y"));
    t.rec("append1 Z", write(&a1, b"Z"));
    drop((a1, a2));
    t.rec("content after appends", read_all(&f));

    // a write and a read on two different fds see each other
    let w = open(&f, libc::O_WRONLY, 0).expect("w");
    let r = open(&f, libc::O_RDONLY, 0).expect("r");
    t.rec("pwrite via w", pwrite(&w, 0, b"SEEN"));
    t.rec("pread via r", pread(&r, 0, 4));
    drop((w, r));

    // a larger write, crossing many pages, read back exactly
    let big = common::pattern(7, 3 * 1024 * 1024 + 123);
    t.rec("write_file big", write_file(&root.join("big"), &big));
    t.rec(
        "big read back equal",
        read_all(&root.join("big")).map(|d| d == big),
    );
    let fd = open(&root.join("big"), libc::O_RDONLY, 0).expect("open big");
    t.rec(
        "big pread unaligned",
        pread(&fd, 1_000_003, 70_001).map(|d| d == big[1_000_003..1_070_004]),
    );
}

fn sc_truncate(root: &Path, t: &mut Trace) {
    let f = root.join("t");
    let data = common::pattern(1, 10_000);
    write_file(&f, &data).expect("write t");
    t.rec("truncate 5000", truncate(&f, 5000));
    t.rec("stat", st_of(stat(&f)));
    t.rec("content", read_all(&f).map(|d| d == data[..5000]));
    t.rec("truncate 20000", truncate(&f, 20000));
    t.rec("stat", st_of(stat(&f)));
    t.rec(
        "grown tail is zeros",
        read_all(&f).map(|d| d[..5000] == data[..5000] && d[5000..].iter().all(|b| *b == 0)),
    );
    let fd = open(&f, libc::O_RDWR, 0).expect("open");
    t.rec("ftruncate 100", ftruncate(&fd, 100));
    t.rec("fstat", st_of(fstat(&fd)));
    t.rec("pread", pread(&fd, 0, 200).map(|d| d == data[..100]));
    t.rec("ftruncate 0", ftruncate(&fd, 0));
    t.rec("write after ftruncate 0", pwrite(&fd, 3, b"abc"));
    t.rec("pread", pread(&fd, 0, 10));
    t.rec("ftruncate negative", ftruncate(&fd, -1));
    drop(fd);
    let fd = open(&f, libc::O_RDONLY, 0).expect("open ro");
    t.rec("ftruncate on O_RDONLY", ftruncate(&fd, 1));
    drop(fd);
    t.rec("truncate missing", truncate(&root.join("missing"), 0));
    fs::create_dir(root.join("d")).expect("mkdir");
    t.rec("truncate dir", truncate(&root.join("d"), 0));
    t.rec("truncate negative", truncate(&f, -5));
    t.rec("stat end", st_of(stat(&f)));
    // truncate while another fd holds the file: it sees the new size
    let fd = open(&f, libc::O_RDONLY, 0).expect("open");
    t.rec("truncate 1 with open reader", truncate(&f, 1));
    t.rec("reader fstat", st_of(fstat(&fd)));
    t.rec("reader pread", pread(&fd, 0, 10));
}

fn sc_chmod_chown(root: &Path, t: &mut Trace) {
    let f = root.join("f");
    write_file(&f, b"x").expect("write");
    t.rec("chmod 0640", chmod(&f, 0o640));
    t.rec("stat", st_of(stat(&f)));
    t.rec("chmod 04755", chmod(&f, 0o4755));
    t.rec("stat", st_of(stat(&f)));
    t.rec("chown 1234:5678", chown(&f, 1234, 5678));
    t.rec("stat (setuid cleared by chown)", st_of(stat(&f)));
    t.rec("chown -1:42", chown(&f, u32::MAX, 42));
    t.rec("stat", st_of(stat(&f)));
    t.rec("chmod 0", chmod(&f, 0));
    t.rec("stat", st_of(stat(&f)));
    t.rec("root can still read a 0000 file", read_all(&f));
    let d = root.join("d");
    fs::create_dir(&d).expect("mkdir");
    t.rec("chmod dir 02775", chmod(&d, 0o2775));
    t.rec("chown dir 1000:1000", chown(&d, 1000, 1000));
    t.rec("stat dir", st_of(stat(&d)));
    // setgid dir: new entries inherit its group
    write_file(&d.join("in"), b"").expect("write in");
    t.rec("file in setgid dir", st_of(stat(&d.join("in"))));
    fs::create_dir(d.join("sub")).expect("mkdir sub");
    t.rec("dir in setgid dir", st_of(stat(&d.join("sub"))));
    let fd = open(&f, libc::O_RDONLY, 0).expect("open");
    t.rec("fchmod 0600", fchmod(&fd, 0o600));
    t.rec("fchown 7:8", fchown(&fd, 7, 8));
    t.rec("fstat", st_of(fstat(&fd)));
    drop(fd);
    t.rec("chmod missing", chmod(&root.join("missing"), 0o644));
    t.rec("chown missing", chown(&root.join("missing"), 1, 1));
    // lchown changes the link, not its target
    symlink(b"f", &root.join("l")).expect("symlink");
    t.rec("lchown link 99:98", lchown(&root.join("l"), 99, 98));
    t.rec(
        "lstat link owner",
        lstat(&root.join("l")).map(|s| (s.st_uid, s.st_gid)),
    );
    t.rec("target untouched", st_of(stat(&f)));
}

fn sc_utimens(root: &Path, t: &mut Trace) {
    let f = root.join("f");
    write_file(&f, b"x").expect("write");
    let at = ts(1_000_000_000, 123_456_789);
    let mt = ts(1_200_000_000, 987_654_321);
    t.rec("utimensat explicit", utimensat(&f, [at, mt], 0));
    let times =
        |p: &Path| lstat(p).map(|s| (s.st_atime, s.st_atime_nsec, s.st_mtime, s.st_mtime_nsec));
    t.rec("times", times(&f));
    t.rec(
        "utimensat OMIT,NOW",
        utimensat(&f, [ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW)], 0),
    );
    let now = now_secs();
    t.rec(
        "atime kept, mtime ~now",
        lstat(&f).map(|s| ((s.st_atime, s.st_atime_nsec), (s.st_mtime - now).abs() <= 5)),
    );
    t.rec(
        "utimensat explicit mtime again",
        utimensat(&f, [ts(0, libc::UTIME_OMIT), mt], 0),
    );
    t.rec(
        "utimensat NOW,OMIT",
        utimensat(&f, [ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)], 0),
    );
    t.rec(
        "atime ~now, mtime kept",
        lstat(&f).map(|s| ((s.st_atime - now).abs() <= 5, (s.st_mtime, s.st_mtime_nsec))),
    );
    t.rec(
        "utimensat OMIT,OMIT",
        utimensat(&f, [ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_OMIT)], 0),
    );
    t.rec(
        "mtime still kept",
        lstat(&f).map(|s| (s.st_mtime, s.st_mtime_nsec)),
    );
    let fd = open(&f, libc::O_RDWR, 0).expect("open");
    t.rec("futimens", futimens(&fd, [at, at]));
    t.rec("times", times(&f));
    // a write moves mtime to now
    t.rec("write", write(&fd, b"y"));
    drop(fd);
    t.rec(
        "mtime ~now after write",
        lstat(&f).map(|s| (s.st_mtime - now).abs() <= 5),
    );
    // pre-1970 and far-future times
    t.rec(
        "utimensat negative",
        utimensat(&f, [ts(-1000, 5), ts(4_102_444_800, 0)], 0),
    );
    t.rec("times", times(&f));
    t.rec(
        "utimensat missing",
        utimensat(&root.join("missing"), [at, mt], 0),
    );
    t.rec(
        "utimensat bad nsec",
        utimensat(&f, [ts(0, 1_000_000_000), mt], 0),
    );
    // AT_SYMLINK_NOFOLLOW sets the link's own times
    symlink(b"f", &root.join("l")).expect("symlink");
    t.rec(
        "utimensat link NOFOLLOW",
        utimensat(&root.join("l"), [at, at], libc::AT_SYMLINK_NOFOLLOW),
    );
    t.rec("link times", times(&root.join("l")));
    t.rec("target times unchanged", times(&f));
    let d = root.join("d");
    fs::create_dir(&d).expect("mkdir");
    t.rec("utimensat dir", utimensat(&d, [at, mt], 0));
    t.rec("dir times", times(&d));
}

fn sc_dirs(root: &Path, t: &mut Trace) {
    let d = root.join("d");
    t.rec("mkdir 0750", mkdir(&d, 0o750));
    t.rec("stat", st_of(stat(&d)));
    t.rec("mkdir again", mkdir(&d, 0o755));
    t.rec("mkdir missing parent", mkdir(&root.join("nope/x"), 0o755));
    write_file(&d.join("f"), b"x").expect("write");
    t.rec("mkdir under a file", mkdir(&d.join("f/x"), 0o755));
    t.rec("mkdir over a file", mkdir(&d.join("f"), 0o755));
    t.rec("rmdir non-empty", rmdir(&d));
    t.rec("rmdir a file", rmdir(&d.join("f")));
    t.rec("unlink a dir", unlink(&d));
    t.rec("rmdir d/.", rmdir(&d.join(".")));
    t.rec("mkdir sub1", mkdir(&d.join("s1"), 0o777));
    t.rec("mkdir sub2", mkdir(&d.join("s2"), 0o700));
    t.rec("nlink with two subdirs", stat(&d).map(|s| s.st_nlink));
    t.rec("stat s1 (umask applied)", st_of(stat(&d.join("s1"))));
    t.rec("rmdir s1", rmdir(&d.join("s1")));
    t.rec("nlink with one subdir", stat(&d).map(|s| s.st_nlink));
    t.rec("rmdir s2", rmdir(&d.join("s2")));
    t.rec("unlink f", unlink(&d.join("f")));
    t.rec("unlink f again", unlink(&d.join("f")));
    t.rec("rmdir now empty", rmdir(&d));
    t.rec("rmdir again", rmdir(&d));
    t.rec("stat gone", st_of(stat(&d)));
    // deep tree
    let mut p = root.join("deep");
    for i in 0..20 {
        p = p.join(format!("level{i}"));
    }
    t.rec("create_dir_all deep", fs::create_dir_all(&p).is_ok());
    t.rec("write deep", write_file(&p.join("leaf"), b"leaf"));
    t.rec("read deep", read_all(&p.join("leaf")));
    t.rec(
        "remove_dir_all deep",
        fs::remove_dir_all(root.join("deep")).is_ok(),
    );
    t.rec("deep gone", st_of(stat(&root.join("deep"))));
}

fn sc_rename(root: &Path, t: &mut Trace) {
    let p = |n: &str| root.join(n);
    write_file(&p("a"), b"A").expect("a");
    write_file(&p("b"), b"B").expect("b");
    t.rec("rename a over b", rename(&p("a"), &p("b")));
    t.rec("b", read_all(&p("b")));
    t.rec("a gone", st_of(stat(&p("a"))));
    t.rec("rename missing", rename(&p("a"), &p("c")));
    t.rec("rename b to itself", rename(&p("b"), &p("b")));
    t.rec("b still", read_all(&p("b")));

    fs::create_dir(p("d1")).expect("d1");
    fs::create_dir(p("d2")).expect("d2");
    write_file(&p("d1/x"), b"X").expect("d1/x");
    t.rec("rename dir over empty dir", rename(&p("d1"), &p("d2")));
    t.rec("d2/x", read_all(&p("d2/x")));
    t.rec("d1 gone", st_of(stat(&p("d1"))));
    fs::create_dir(p("d3")).expect("d3");
    write_file(&p("d3/y"), b"Y").expect("d3/y");
    t.rec("rename dir over non-empty dir", rename(&p("d3"), &p("d2")));
    t.rec("rename file over dir", rename(&p("b"), &p("d2")));
    t.rec("rename dir over file", rename(&p("d2"), &p("b")));
    t.rec("rename dir into own child", rename(&p("d2"), &p("d2/sub")));
    fs::create_dir(p("d2/child")).expect("child");
    t.rec(
        "rename dir into own grandchild",
        rename(&p("d2"), &p("d2/child/x")),
    );
    t.rec("rename parent onto child", rename(&p("d2"), &p("d2/child")));
    t.rec("rename into missing dir", rename(&p("b"), &p("nodir/b")));
    t.rec("rename file into a dir", rename(&p("b"), &p("d3/b2")));
    t.rec("d3/b2", read_all(&p("d3/b2")));
    t.rec("rename non-empty dir", rename(&p("d3"), &p("e")));
    t.rec("e/y", read_all(&p("e/y")));
    t.rec("e/b2", read_all(&p("e/b2")));
    t.rec("d3 gone", st_of(stat(&p("d3"))));
    t.rec("rename dir across dirs", rename(&p("e"), &p("d2/child/e")));
    t.rec("d2/child/e/y", read_all(&p("d2/child/e/y")));
    // rename of one hard link onto another: a no-op, both names stay
    write_file(&p("h1"), b"H").expect("h1");
    link(&p("h1"), &p("h2")).expect("link");
    t.rec("rename link onto its twin", rename(&p("h1"), &p("h2")));
    t.rec("h1 after", st_of(stat(&p("h1"))));
    t.rec("h2 after", st_of(stat(&p("h2"))));
    // a symlink is renamed, not its target
    symlink(b"h2", &p("sl")).expect("symlink");
    t.rec("rename symlink", rename(&p("sl"), &p("sl2")));
    t.rec("readlink sl2", readlink(&p("sl2")));
    t.rec("h2 untouched", read_all(&p("h2")));
    // stat of moved dir's contents from a new path, then rename back
    t.rec("rename back", rename(&p("d2/child/e"), &p("e2")));
    t.rec("e2/y", read_all(&p("e2/y")));
    // renaming the same file repeatedly
    for i in 0..10 {
        let from = if i == 0 {
            p("h2")
        } else {
            p(&format!("r{}", i - 1))
        };
        t.rec("rename chain", rename(&from, &p(&format!("r{i}"))));
    }
    t.rec("r9", read_all(&p("r9")));
}

fn sc_renameat2(root: &Path, t: &mut Trace) {
    let p = |n: &str| root.join(n);
    write_file(&p("a"), b"A").expect("a");
    write_file(&p("b"), b"B").expect("b");
    t.rec(
        "NOREPLACE onto existing",
        renameat2(&p("a"), &p("b"), RENAME_NOREPLACE),
    );
    t.rec("a", read_all(&p("a")));
    t.rec("b", read_all(&p("b")));
    t.rec(
        "NOREPLACE onto new",
        renameat2(&p("a"), &p("c"), RENAME_NOREPLACE),
    );
    t.rec("c", read_all(&p("c")));
    t.rec("a gone", st_of(stat(&p("a"))));
    t.rec(
        "EXCHANGE c<->b",
        renameat2(&p("c"), &p("b"), RENAME_EXCHANGE),
    );
    t.rec("c", read_all(&p("c")));
    t.rec("b", read_all(&p("b")));
    fs::create_dir(p("d")).expect("d");
    write_file(&p("d/in"), b"IN").expect("d/in");
    t.rec(
        "EXCHANGE file<->dir",
        renameat2(&p("b"), &p("d"), RENAME_EXCHANGE),
    );
    t.rec("b is dir", st_of(lstat(&p("b"))));
    t.rec("b/in", read_all(&p("b/in")));
    t.rec("d is file", read_all(&p("d")));
    t.rec(
        "EXCHANGE with missing",
        renameat2(&p("c"), &p("zz"), RENAME_EXCHANGE),
    );
    t.rec(
        "NOREPLACE|EXCHANGE",
        renameat2(&p("c"), &p("d"), RENAME_NOREPLACE | RENAME_EXCHANGE),
    );
    t.rec(
        "NOREPLACE dir onto existing dir",
        renameat2(&p("b"), &p("b"), RENAME_NOREPLACE),
    );
    fs::create_dir(p("x")).expect("x");
    write_file(&p("x/deep"), b"D").expect("x/deep");
    t.rec(
        "EXCHANGE across dirs",
        renameat2(&p("c"), &p("x/deep"), RENAME_EXCHANGE),
    );
    t.rec("c", read_all(&p("c")));
    t.rec("x/deep", read_all(&p("x/deep")));
    t.rec(
        "EXCHANGE dir with its child",
        renameat2(&p("b"), &p("b/in"), RENAME_EXCHANGE),
    );
}

fn sc_symlink(root: &Path, t: &mut Trace) {
    let p = |n: &str| root.join(n);
    t.rec("symlink dangling", symlink(b"target", &p("s")));
    t.rec("readlink", readlink(&p("s")));
    t.rec("lstat", st_of(lstat(&p("s"))));
    t.rec("stat dangling", st_of(stat(&p("s"))));
    write_file(&p("target"), b"T").expect("target");
    t.rec("stat follows", st_of(stat(&p("s"))));
    t.rec("read through link", read_all(&p("s")));
    t.rec("symlink over existing", symlink(b"other", &p("s")));
    t.rec("readlink on a file", readlink(&p("target")));
    t.rec("readlink missing", readlink(&p("missing")));
    t.rec(
        "O_NOFOLLOW on link",
        open_close(&p("s"), libc::O_RDONLY | libc::O_NOFOLLOW, 0),
    );
    t.rec(
        "O_PATH|O_NOFOLLOW on link",
        open_close(&p("s"), libc::O_PATH | libc::O_NOFOLLOW, 0),
    );
    fs::create_dir(p("dir")).expect("dir");
    write_file(&p("dir/x"), b"X").expect("dir/x");
    t.rec("symlink to dir", symlink(b"dir", &p("sd")));
    t.rec("read via dir link", read_all(&p("sd/x")));
    let long: Vec<u8> = std::iter::repeat_n(b"abcdefgh/".as_slice(), 400)
        .flatten()
        .copied()
        .collect();
    t.rec("symlink long target", symlink(&long[..3500], &p("long")));
    t.rec(
        "readlink long",
        readlink(&p("long")).map(|v| v == long[..3500]),
    );
    t.rec("symlink odd bytes", symlink(b"../x/\xff\n$(id)", &p("odd")));
    t.rec("readlink odd", readlink(&p("odd")));
    t.rec("symlink empty target", symlink(b"", &p("empty")));
    t.rec("symlink abs", symlink(b"/nonexistent/abs", &p("abs")));
    t.rec("readlink abs", readlink(&p("abs")));
    // writing through a link writes the target
    t.rec("write through link", write_file(&p("s"), b"via link"));
    t.rec("target content", read_all(&p("target")));
    t.rec("lstat link after", st_of(lstat(&p("s"))));
    t.rec("unlink link", unlink(&p("s")));
    t.rec("target survives", read_all(&p("target")));
    // loops
    symlink(b"loop2", &p("loop1")).expect("loop1");
    symlink(b"loop1", &p("loop2")).expect("loop2");
    t.rec("stat loop", st_of(stat(&p("loop1"))));
    t.rec("lstat loop", st_of(lstat(&p("loop1"))));
}

fn sc_hardlink(root: &Path, t: &mut Trace) {
    let p = |n: &str| root.join(n);
    write_file(&p("a"), b"data").expect("a");
    t.rec("link a b", link(&p("a"), &p("b")));
    t.rec("stat a", st_of(stat(&p("a"))));
    t.rec("stat b", st_of(stat(&p("b"))));
    t.rec(
        "same st_ino",
        stat(&p("a")).and_then(|x| stat(&p("b")).map(|y| x.st_ino == y.st_ino)),
    );
    let fd = open(&p("a"), libc::O_WRONLY | libc::O_APPEND, 0).expect("open a");
    t.rec("append via a", write(&fd, b"more"));
    t.rec("fstat a fd", st_of(fstat(&fd)));
    drop(fd);
    t.rec("read via b", read_all(&p("b")));
    t.rec("b size after write via a", st_of(stat(&p("b"))));
    t.rec("link again", link(&p("a"), &p("b")));
    fs::create_dir(p("d")).expect("d");
    t.rec("link a dir", link(&p("d"), &p("d2")));
    t.rec("link missing", link(&p("zz"), &p("zz2")));
    t.rec("link into subdir", link(&p("a"), &p("d/c")));
    t.rec("nlink 3", stat(&p("a")).map(|s| s.st_nlink));
    t.rec(
        "same st_ino in subdir",
        stat(&p("a")).and_then(|x| stat(&p("d/c")).map(|y| x.st_ino == y.st_ino)),
    );
    t.rec("chmod via b", chmod(&p("b"), 0o600));
    t.rec("mode seen via a", st_of(stat(&p("a"))));
    t.rec("unlink a", unlink(&p("a")));
    t.rec("stat b", st_of(stat(&p("b"))));
    t.rec("read b", read_all(&p("b")));
    t.rec("truncate via d/c", truncate(&p("d/c"), 2));
    t.rec("read b after truncate via twin", read_all(&p("b")));
    t.rec("rename b", rename(&p("b"), &p("b2")));
    t.rec(
        "twins still one inode",
        stat(&p("b2")).and_then(|x| stat(&p("d/c")).map(|y| (x.st_ino == y.st_ino, y.st_nlink))),
    );
    // link to a symlink links the symlink itself
    symlink(b"b2", &p("sl")).expect("symlink");
    t.rec("link a symlink", link(&p("sl"), &p("sl2")));
    t.rec("lstat sl2", st_of(lstat(&p("sl2"))));
}

fn sc_mkfifo(root: &Path, t: &mut Trace) {
    let f = root.join("fifo");
    t.rec("mkfifo", mkfifo(&f, 0o640));
    t.rec("lstat", st_of(lstat(&f)));
    t.rec("mkfifo again", mkfifo(&f, 0o640));
    t.rec(
        "open WRONLY|NONBLOCK without reader",
        open_close(&f, libc::O_WRONLY | libc::O_NONBLOCK, 0),
    );
    let r = open(&f, libc::O_RDONLY | libc::O_NONBLOCK, 0);
    t.rec("open RDONLY|NONBLOCK", r.as_ref().map(drop));
    if let Ok(r) = r {
        let w = open(&f, libc::O_WRONLY | libc::O_NONBLOCK, 0);
        t.rec("open WRONLY with reader", w.as_ref().map(drop));
        if let Ok(w) = w {
            t.rec("write to fifo", write(&w, b"through the pipe"));
            let mut buf = [0u8; 64];
            // SAFETY: buffer valid for its length.
            let n = unsafe { libc::read(r.0, buf.as_mut_ptr().cast(), buf.len()) };
            t.rec("read from fifo", cvt_l(n).map(|n| buf[..n].to_vec()));
        }
    }
    t.rec("rename fifo", rename(&f, &root.join("fifo2")));
    t.rec("lstat renamed", st_of(lstat(&root.join("fifo2"))));
    t.rec("unlink fifo", unlink(&root.join("fifo2")));
}

fn sc_access(root: &Path, t: &mut Trace) {
    let f = root.join("f");
    write_file(&f, b"x").expect("write");
    chmod(&f, 0o644).expect("chmod");
    t.rec("F_OK", access(&f, libc::F_OK));
    t.rec("R_OK|W_OK", access(&f, libc::R_OK | libc::W_OK));
    t.rec(
        "X_OK on 0644 (root needs some x bit)",
        access(&f, libc::X_OK),
    );
    chmod(&f, 0o000).expect("chmod");
    t.rec("R_OK on 0000 as root", access(&f, libc::R_OK));
    t.rec("X_OK on 0000", access(&f, libc::X_OK));
    chmod(&f, 0o100).expect("chmod");
    t.rec("X_OK on 0100", access(&f, libc::X_OK));
    chmod(&f, 0o001).expect("chmod");
    t.rec("X_OK on 0001", access(&f, libc::X_OK));
    t.rec("F_OK missing", access(&root.join("missing"), libc::F_OK));
    t.rec("F_OK under a file", access(&root.join("f/x"), libc::F_OK));
    let d = root.join("d");
    mkdir(&d, 0o000).expect("mkdir");
    t.rec("X_OK on 0000 dir as root", access(&d, libc::X_OK));
    t.rec("W_OK on 0000 dir as root", access(&d, libc::W_OK));
    chmod(&d, 0o755).expect("chmod back");
}

fn sc_fallocate(root: &Path, t: &mut Trace) {
    let f = root.join("fa");
    let fd = open(&f, libc::O_RDWR | libc::O_CREAT, 0o644).expect("open");
    t.rec("fallocate 64K", fallocate(&fd, 0, 0, 65536));
    t.rec("fstat", st_of(fstat(&fd)));
    t.rec(
        "blocks allocated",
        fstat(&fd).map(|s| s.st_blocks * 512 >= 65536),
    );
    t.rec(
        "fallocate KEEP_SIZE beyond EOF",
        fallocate(&fd, libc::FALLOC_FL_KEEP_SIZE, 65536, 65536),
    );
    t.rec("size kept", fstat(&fd).map(|s| s.st_size));
    let data = common::pattern(3, 65536);
    t.rec("fill", pwrite(&fd, 0, &data));
    t.rec(
        "punch hole 4K..12K",
        fallocate(
            &fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            8192,
        ),
    );
    t.rec(
        "hole reads as zeros, rest intact",
        pread(&fd, 0, 65536).map(|d| {
            (
                d[4096..12288].iter().all(|b| *b == 0),
                d[..4096] == data[..4096] && d[12288..] == data[12288..],
            )
        }),
    );
    t.rec("size after punch", fstat(&fd).map(|s| s.st_size));
    t.rec(
        "punch without KEEP_SIZE",
        fallocate(&fd, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
    );
    t.rec("fallocate grows size", fallocate(&fd, 0, 65536, 4096));
    t.rec("size", fstat(&fd).map(|s| s.st_size));
    t.rec("fallocate zero len", fallocate(&fd, 0, 0, 0));
    drop(fd);
    let fd = open(&f, libc::O_RDONLY, 0).expect("open ro");
    t.rec("fallocate on O_RDONLY", fallocate(&fd, 0, 0, 4096));
    drop(fd);
    let fd = open(&f, libc::O_RDWR, 0).expect("open rw");
    // SAFETY: posix_fallocate on our fd.
    let r = unsafe { libc::posix_fallocate(fd.0, 0, 200_000) };
    t.rec("posix_fallocate", r);
    t.rec("size", fstat(&fd).map(|s| s.st_size));
}

fn sc_copy_file_range(root: &Path, t: &mut Trace) {
    let src_data = common::pattern(11, 10_000);
    write_file(&root.join("src"), &src_data).expect("src");
    write_file(&root.join("dst"), b"0123456789").expect("dst");
    let s = open(&root.join("src"), libc::O_RDONLY, 0).expect("src");
    let d = open(&root.join("dst"), libc::O_RDWR, 0).expect("dst");
    t.rec("cfr 1000 @100 -> @5", copy_file_range(&s, 100, &d, 5, 1000));
    t.rec("dst size", fstat(&d).map(|st| st.st_size));
    t.rec(
        "dst content",
        pread(&d, 0, 2000).map(|v| v[..5] == *b"01234" && v[5..] == src_data[100..1100]),
    );
    t.rec("cfr past src EOF", copy_file_range(&s, 9990, &d, 0, 100));
    t.rec("cfr at src EOF", copy_file_range(&s, 10_000, &d, 0, 100));
    t.rec("cfr len 0", copy_file_range(&s, 0, &d, 0, 0));
    t.rec(
        "cfr into a hole past dst EOF",
        copy_file_range(&s, 0, &d, 50_000, 4096),
    );
    t.rec("dst size", fstat(&d).map(|st| st.st_size));
    t.rec(
        "hole zero, copy right",
        pread(&d, 0, 60_000)
            .map(|v| v[1105..50_000].iter().all(|b| *b == 0) && v[50_000..] == src_data[..4096]),
    );
    t.rec("cfr to O_RDONLY dst", copy_file_range(&d, 0, &s, 0, 10));
    // whole-file copy in a loop, the way cp does
    let big = common::pattern(12, 2 * 1024 * 1024 + 77);
    write_file(&root.join("big"), &big).expect("big");
    let bs = open(&root.join("big"), libc::O_RDONLY, 0).expect("big");
    let bd = open(&root.join("big.copy"), libc::O_RDWR | libc::O_CREAT, 0o644).expect("copy");
    let mut off = 0i64;
    loop {
        match copy_file_range(&bs, off, &bd, off, 1 << 20) {
            Ok(0) => break,
            Ok(n) => off += n as i64,
            Err(e) => {
                t.rec("cfr loop", Err::<(), _>(e));
                break;
            }
        }
    }
    t.rec("copied", off);
    drop((bs, bd));
    t.rec(
        "copy equal",
        read_all(&root.join("big.copy")).map(|v| v == big),
    );
}

fn sc_seek_hole(root: &Path, t: &mut Trace) {
    let f = root.join("sparse");
    let fd = open(&f, libc::O_RDWR | libc::O_CREAT, 0o644).expect("open");
    let mib = 1 << 20;
    t.rec("write @0", pwrite(&fd, 0, &[b'a'; 4096]));
    t.rec("write @1MiB", pwrite(&fd, mib, &[b'b'; 4096]));
    t.rec("size", fstat(&fd).map(|s| s.st_size));
    t.rec("fsync", cvt(unsafe { libc::fsync(fd.0) }));
    t.rec("SEEK_DATA 0", lseek(&fd, 0, libc::SEEK_DATA));
    t.rec("SEEK_HOLE 0", lseek(&fd, 0, libc::SEEK_HOLE));
    t.rec("SEEK_DATA 4096", lseek(&fd, 4096, libc::SEEK_DATA));
    t.rec("SEEK_HOLE 1MiB", lseek(&fd, mib, libc::SEEK_HOLE));
    t.rec("SEEK_DATA at EOF", lseek(&fd, mib + 4096, libc::SEEK_DATA));
    t.rec("SEEK_HOLE at EOF", lseek(&fd, mib + 4096, libc::SEEK_HOLE));
    t.rec(
        "SEEK_DATA past EOF",
        lseek(&fd, mib + 10_000, libc::SEEK_DATA),
    );
    t.rec("SEEK_END", lseek(&fd, 0, libc::SEEK_END));
    t.rec("SEEK_CUR", lseek(&fd, 0, libc::SEEK_CUR));
    t.rec("bad whence", lseek(&fd, 0, 42));
    t.rec(
        "hole reads zeros",
        pread(&fd, 4096, 8192).map(|v| v.iter().all(|b| *b == 0)),
    );
    drop(fd);
    // the same, without fsync, from a fresh fd after close
    let g = root.join("sparse2");
    let fd = open(&g, libc::O_RDWR | libc::O_CREAT, 0o644).expect("open");
    pwrite(&fd, 2 * mib, &[b'c'; 10]).expect("write");
    drop(fd);
    let fd = open(&g, libc::O_RDONLY, 0).expect("reopen");
    t.rec("fresh SEEK_DATA 0", lseek(&fd, 0, libc::SEEK_DATA));
    t.rec("fresh SEEK_HOLE 0", lseek(&fd, 0, libc::SEEK_HOLE));
}

fn sc_xattr(root: &Path, t: &mut Trace) {
    let f = root.join("f");
    write_file(&f, b"x").expect("write");
    t.rec("list empty", listxattr_user(&f));
    t.rec("set user.a", setxattr(&f, "user.a", b"1", 0));
    t.rec("get user.a", getxattr(&f, "user.a"));
    t.rec("get missing", getxattr(&f, "user.missing"));
    t.rec(
        "XATTR_CREATE existing",
        setxattr(&f, "user.a", b"22", libc::XATTR_CREATE),
    );
    t.rec(
        "XATTR_REPLACE missing",
        setxattr(&f, "user.b", b"v", libc::XATTR_REPLACE),
    );
    t.rec(
        "XATTR_REPLACE existing",
        setxattr(&f, "user.a", b"333", libc::XATTR_REPLACE),
    );
    t.rec("get user.a", getxattr(&f, "user.a"));
    let bin: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    t.rec("set binary", setxattr(&f, "user.bin", &bin, 0));
    t.rec("get binary", getxattr(&f, "user.bin").map(|v| v == bin));
    t.rec(
        "size query",
        getxattr_sized(&f, "user.bin", 0).map(|v| v.len()),
    );
    t.rec(
        "too small buffer",
        getxattr_sized(&f, "user.bin", 10).map(|v| v.len()),
    );
    t.rec("set empty value", setxattr(&f, "user.empty", b"", 0));
    t.rec("get empty value", getxattr(&f, "user.empty"));
    t.rec("list", listxattr_user(&f));
    t.rec("remove user.a", removexattr(&f, "user.a"));
    t.rec("remove again", removexattr(&f, "user.a"));
    t.rec("get removed", getxattr(&f, "user.a"));
    t.rec("list", listxattr_user(&f));
    t.rec("bad namespace", setxattr(&f, "bogus.x", b"1", 0));
    t.rec("empty name", setxattr(&f, "", b"1", 0));
    let long_name = format!("user.{}", "n".repeat(300));
    t.rec("name too long", setxattr(&f, &long_name, b"1", 0));
    let d = root.join("d");
    fs::create_dir(&d).expect("mkdir");
    t.rec("set on dir", setxattr(&d, "user.d", b"dir", 0));
    t.rec("get on dir", getxattr(&d, "user.d"));
    symlink(b"f", &root.join("l")).expect("symlink");
    t.rec(
        "lsetxattr user.* on symlink",
        lsetxattr(&root.join("l"), "user.l", b"1", 0),
    );
    t.rec(
        "get through symlink follows",
        getxattr(&root.join("l"), "user.bin").map(|v| v.len()),
    );
    // xattrs survive a rename
    t.rec("rename", rename(&f, &root.join("g")));
    t.rec("list after rename", listxattr_user(&root.join("g")));
    t.rec("get missing file", getxattr(&root.join("nope"), "user.a"));
}

fn sc_readdir(root: &Path, t: &mut Trace) {
    fn listing(dir: &Path) -> Res<Vec<(Vec<u8>, &'static str, bool)>> {
        let rd = fs::read_dir(dir).map_err(|e| Errno(e.raw_os_error().unwrap_or(0)))?;
        let mut v = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Errno(e.raw_os_error().unwrap_or(0)))?;
            let ft = e.file_type().expect("file_type");
            let k = if ft.is_symlink() {
                "symlink"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            // d_ino must match the inode stat reports
            let same_ino = fs::symlink_metadata(e.path())
                .map(|m| m.ino() == e.ino())
                .unwrap_or(false);
            v.push((e.file_name().as_bytes().to_vec(), k, same_ino));
        }
        v.sort();
        Ok(v)
    }
    let p = |n: &str| root.join(n);
    fs::create_dir(p("d")).expect("mkdir");
    t.rec("empty dir", listing(&p("d")));
    for i in 0..20 {
        write_file(&p(&format!("d/f{i:02}")), b"x").expect("write");
    }
    for i in 0..3 {
        fs::create_dir(p(&format!("d/sub{i}"))).expect("mkdir");
    }
    symlink(b"f00", &p("d/link")).expect("symlink");
    mkfifo(&p("d/fifo"), 0o644).expect("mkfifo");
    write_file(&p("d/.hidden"), b"h").expect("hidden");
    write_file(&p("d/with space"), b"s").expect("space");
    t.rec("listing", listing(&p("d")));
    for i in 0..10 {
        unlink(&p(&format!("d/f{i:02}"))).expect("unlink");
    }
    t.rec("after unlinks", listing(&p("d")));
    // a big directory needs several readdir round trips
    fs::create_dir(p("big")).expect("mkdir");
    for i in 0..1500 {
        write_file(&p(&format!("big/entry-with-a-longish-name-{i:05}")), b"").expect("write");
    }
    let big = listing(&p("big"));
    t.rec("big count", big.as_ref().map(|v| v.len()));
    t.rec(
        "big names",
        big.map(|v| sha256_hex(&v.iter().flat_map(|e| e.0.clone()).collect::<Vec<u8>>())),
    );
    // readdir while deleting: every entry seen once, none left
    let mut seen = 0;
    for e in fs::read_dir(p("big")).expect("read_dir") {
        let e = e.expect("entry");
        fs::remove_file(e.path()).expect("remove");
        seen += 1;
    }
    t.rec("deleted while listing", seen);
    t.rec("big now", listing(&p("big")).map(|v| v.len()));
    t.rec("readdir a file", listing(&p("d/.hidden")).map(|v| v.len()));
    t.rec("readdir missing", listing(&p("nope")).map(|v| v.len()));
    // . and .. through getdents
    let c = cs(&p("d"));
    // SAFETY: opendir/readdir/closedir on a valid path.
    let dots = unsafe {
        let dir = libc::opendir(c.as_ptr());
        assert!(!dir.is_null(), "opendir");
        let mut names = Vec::new();
        loop {
            let ent = libc::readdir(dir);
            if ent.is_null() {
                break;
            }
            let n = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr())
                .to_bytes()
                .to_vec();
            if n == b"." || n == b".." {
                names.push(n);
            }
        }
        libc::closedir(dir);
        names.sort();
        names
    };
    t.rec("dot entries", dots);
}

fn sc_open_file_rename_unlink(root: &Path, t: &mut Trace) {
    let p = |n: &str| root.join(n);
    write_file(&p("f"), b"0123456789").expect("write");
    let fd = open(&p("f"), libc::O_RDWR, 0).expect("open");
    let ino0 = fstat(&fd).expect("fstat").st_ino;
    t.rec(
        "stat ino == fstat ino",
        stat(&p("f")).map(|s| s.st_ino == ino0),
    );
    t.rec("rename open file", rename(&p("f"), &p("g")));
    t.rec("fstat ino stable", fstat(&fd).map(|s| s.st_ino == ino0));
    t.rec("stat new name ino", stat(&p("g")).map(|s| s.st_ino == ino0));
    t.rec("write via fd", pwrite(&fd, 10, b"ABC"));
    t.rec("read via new name", read_all(&p("g")));
    fs::create_dir(p("d")).expect("mkdir");
    t.rec("move into dir", rename(&p("g"), &p("d/h")));
    t.rec("write via fd", pwrite(&fd, 13, b"DE"));
    t.rec("read d/h", read_all(&p("d/h")));
    t.rec("ino after move", stat(&p("d/h")).map(|s| s.st_ino == ino0));
    // rename the parent dir while the file is open
    t.rec("rename parent", rename(&p("d"), &p("e")));
    t.rec("write via fd", pwrite(&fd, 15, b"F"));
    t.rec("read e/h", read_all(&p("e/h")));
    t.rec(
        "ino after parent rename",
        stat(&p("e/h")).map(|s| s.st_ino == ino0),
    );
    // unlink while open
    t.rec("unlink open file", unlink(&p("e/h")));
    t.rec("stat gone", st_of(stat(&p("e/h"))));
    t.rec("fstat nlink", fstat(&fd).map(|s| (s.st_nlink, s.st_size)));
    t.rec("fstat ino", fstat(&fd).map(|s| s.st_ino == ino0));
    t.rec("write after unlink", pwrite(&fd, 0, b"zz"));
    t.rec("read after unlink", pread(&fd, 0, 100));
    t.rec("ftruncate after unlink", ftruncate(&fd, 4));
    t.rec("read after ftruncate", pread(&fd, 0, 100));
    t.rec(
        "dir is empty (no hidden leftovers)",
        fs::read_dir(p("e")).map(|r| r.count()).ok(),
    );
    // a new file under the old name is a different file
    write_file(&p("e/h"), b"new").expect("write new");
    t.rec("new file content", read_all(&p("e/h")));
    t.rec("old fd still old", pread(&fd, 0, 100));
    t.rec("new ino differs", stat(&p("e/h")).map(|s| s.st_ino != ino0));
    drop(fd);
    // rename over an open file: the replaced file stays readable via its fd
    write_file(&p("x"), b"old x").expect("x");
    write_file(&p("y"), b"new y").expect("y");
    let fx = open(&p("x"), libc::O_RDONLY, 0).expect("open x");
    t.rec("rename y over open x", rename(&p("y"), &p("x")));
    t.rec("old fd reads old data", pread(&fx, 0, 100));
    t.rec("path reads new data", read_all(&p("x")));
    t.rec("old fd nlink", fstat(&fx).map(|s| s.st_nlink));
    drop(fx);
    t.rec("dir listing at end", {
        let mut v: Vec<String> = fs::read_dir(root)
            .expect("read_dir root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    });
}

fn hostile_names() -> Vec<Vec<u8>> {
    vec![
        b"new\nline".to_vec(),
        b"quo\"te's".to_vec(),
        b"$(touch pwned)".to_vec(),
        b"`touch pwned2`".to_vec(),
        b"-rf".to_vec(),
        b"--help".to_vec(),
        b" lead and trail ".to_vec(),
        b"back\\slash".to_vec(),
        b"*?[x]{a,b}".to_vec(),
        b"tab\there".to_vec(),
        b"\xff\xfe invalid \x80utf8".to_vec(),
        "ünïcödé ☃ 名前".as_bytes().to_vec(),
        b"...".to_vec(),
        b".hidden".to_vec(),
        b"%s%n%x".to_vec(),
        b"semi;colon&amp|pipe>redir<".to_vec(),
        b"\x01\x1b[31mctrl".to_vec(),
        vec![b'n'; 255],
    ]
}

fn renamed(name: &[u8]) -> Vec<u8> {
    let mut r = name.to_vec();
    if r.len() >= 255 {
        *r.last_mut().expect("non-empty") = b'm';
    } else {
        r.extend_from_slice(b".r");
    }
    r
}

fn sc_hostile_names(root: &Path, t: &mut Trace) {
    let names = hostile_names();
    let list = |dir: &Path| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    let dir = root.join("h");
    fs::create_dir(&dir).expect("mkdir");
    for n in &names {
        let p = pj(&dir, n);
        t.rec(
            "create",
            open_close(&p, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644),
        );
        t.rec("write", write_file(&p, n));
    }
    let mut want = names.clone();
    want.sort();
    t.rec("listing is exactly the names", list(&dir) == want);
    t.rec("listing", list(&dir));
    for n in &names {
        t.rec("read back", read_all(&pj(&dir, n)).map(|d| d == *n));
        t.rec("lstat", st_of(lstat(&pj(&dir, n))));
    }
    for n in &names {
        t.rec("rename", rename(&pj(&dir, n), &pj(&dir, &renamed(n))));
    }
    let mut want_r: Vec<Vec<u8>> = names.iter().map(|n| renamed(n)).collect();
    want_r.sort();
    t.rec("listing after rename", list(&dir) == want_r);
    for n in &names {
        t.rec(
            "read renamed",
            read_all(&pj(&dir, &renamed(n))).map(|d| d == *n),
        );
    }
    // directories with hostile names, with a file inside, renamed, removed
    for n in &names {
        let d = pj(root, n);
        t.rec("mkdir", mkdir(&d, 0o755));
        t.rec("write inside", write_file(&pj(&d, n), b"inside"));
        t.rec("symlink inside", symlink(n, &d.join("link")));
        t.rec("readlink", readlink(&d.join("link")).map(|v| v == *n));
    }
    for n in &names {
        let from = pj(root, n);
        let to = pj(root, &renamed(n));
        t.rec("rename dir", rename(&from, &to));
        t.rec("read inside renamed dir", read_all(&pj(&to, n)));
        t.rec("remove dir", fs::remove_dir_all(&to).is_ok());
    }
    for n in &names {
        t.rec("unlink", unlink(&pj(&dir, &renamed(n))));
    }
    t.rec("empty at end", list(&dir));
    // 256 bytes is one too many
    let long = vec![b'L'; 256];
    let lp = pj(&dir, &long);
    t.rec(
        "create 256",
        open_close(&lp, libc::O_CREAT | libc::O_WRONLY, 0o644),
    );
    t.rec("mkdir 256", mkdir(&lp, 0o755));
    t.rec("symlink 256", symlink(b"x", &lp));
    t.rec("lstat 256", st_of(lstat(&lp)));
    write_file(&dir.join("short"), b"s").expect("short");
    t.rec("rename to 256", rename(&dir.join("short"), &lp));
    t.rec("link to 256", link(&dir.join("short"), &lp));
    t.rec("255 exactly ok", write_file(&pj(&dir, &[b'k'; 255]), b"k"));
    // a path of 4096 bytes is too long as a whole
    let mut deep = dir.clone();
    while deep.as_os_str().len() < 4200 {
        deep = deep.join("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    }
    t.rec("stat path > PATH_MAX", st_of(stat(&deep)));
    // nothing got executed
    let mut pwned = false;
    for base in [root, Path::new("."), Path::new("/tmp")] {
        for n in ["pwned", "pwned2"] {
            if base.join(n).exists() {
                pwned = true;
            }
        }
    }
    t.rec("no command was run", !pwned);
}

// ---------------------------------------------------------------------------
// The tests: one per scenario.

#[test]
fn create_open_read_write() {
    compare("create/open/read/write", sc_create_open);
}

#[test]
fn truncate_ftruncate() {
    compare("truncate", sc_truncate);
}

#[test]
fn chmod_chown() {
    compare("chmod/chown", sc_chmod_chown);
}

#[test]
fn utimensat_now_omit() {
    compare("utimensat", sc_utimens);
}

#[test]
fn mkdir_rmdir_unlink() {
    compare("mkdir/rmdir", sc_dirs);
}

#[test]
fn rename_semantics() {
    compare("rename", sc_rename);
}

#[test]
fn renameat2_noreplace_exchange() {
    compare("renameat2", sc_renameat2);
}

#[test]
fn symlink_readlink() {
    compare("symlink", sc_symlink);
}

#[test]
fn hard_links() {
    compare("hard link", sc_hardlink);
}

#[test]
fn fifo() {
    compare("mkfifo", sc_mkfifo);
}

#[test]
fn access_checks() {
    compare("access", sc_access);
}

#[test]
fn fallocate_modes() {
    compare("fallocate", sc_fallocate);
}

#[test]
fn copy_file_range_ops() {
    compare("copy_file_range", sc_copy_file_range);
}

#[test]
fn seek_data_hole() {
    compare("SEEK_DATA/SEEK_HOLE", sc_seek_hole);
}

#[test]
fn xattrs() {
    compare("xattr", sc_xattr);
}

#[test]
fn readdir_listing() {
    compare("readdir", sc_readdir);
}

#[test]
fn open_file_survives_rename_and_unlink() {
    compare("open file rename/unlink", sc_open_file_rename_unlink);
}

#[test]
fn hostile_names_roundtrip() {
    compare("hostile names", sc_hostile_names);
}

#[test]
fn statfs_reports_backing_fs() {
    let m = Mount::new();
    let a = statvfs(&m.local).expect("statvfs local");
    let b = statvfs(&m.mnt).expect("statvfs mount");
    assert_eq!(b.f_namemax, 255, "f_namemax through the mount");
    assert!(
        b.f_bsize > 0 && b.f_frsize > 0,
        "block sizes zero: {}/{}",
        b.f_bsize,
        b.f_frsize
    );
    let total = |s: &libc::statvfs| s.f_blocks as u128 * s.f_frsize as u128;
    let free = |s: &libc::statvfs| s.f_bavail as u128 * s.f_frsize as u128;
    assert_eq!(
        total(&a),
        total(&b),
        "total bytes: backing fs {} vs mount {}",
        total(&a),
        total(&b)
    );
    let (fa, fb) = (free(&a), free(&b));
    let slack = 256u128 << 20;
    assert!(
        fa.abs_diff(fb) <= slack,
        "available bytes: backing fs {fa} vs mount {fb}"
    );
    assert_eq!(a.f_files, b.f_files, "f_files");
}

#[test]
fn multi_user_permissions() {
    // A non-root user through `-o allow_other,default_permissions` sees the
    // same permission answers as on a plain directory.
    let m = Mount::builder()
        .opt("allow_other")
        .opt("default_permissions")
        .mount();
    let script = r#"
        cd "$1" || exit 99
        r() { if "$@" >/dev/null 2>&1; then echo ok; else echo fail; fi; }
        echo "read 0644:       $(r cat root644)"
        echo "write 0644:      $(r sh -c 'echo x >> root644')"
        echo "read 0600:       $(r cat root600)"
        echo "create in 0755:  $(r touch newfile)"
        echo "create in 0777:  $(r touch open/newfile)"
        echo "unlink in 1777:  $(r rm -f sticky/rootfile)"
        echo "own file in 1777: $(r sh -c 'echo y > sticky/mine && rm sticky/mine')"
        echo "chmod others':   $(r chmod 777 root644)"
        echo "ls 0700 dir:     $(r ls private)"
        echo "owned file:      $(r sh -c 'echo z > open/own && chmod 600 open/own && cat open/own')"
    "#;
    let setup = |root: &Path| {
        write_file(&root.join("root644"), b"r").expect("root644");
        chmod(&root.join("root644"), 0o644).expect("chmod");
        write_file(&root.join("root600"), b"r").expect("root600");
        chmod(&root.join("root600"), 0o600).expect("chmod");
        fs::create_dir(root.join("open")).expect("open");
        chmod(&root.join("open"), 0o777).expect("chmod");
        fs::create_dir(root.join("sticky")).expect("sticky");
        chmod(&root.join("sticky"), 0o1777).expect("chmod");
        write_file(&root.join("sticky/rootfile"), b"r").expect("rootfile");
        fs::create_dir(root.join("private")).expect("private");
        chmod(&root.join("private"), 0o700).expect("chmod");
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod root");
    };
    let run = |root: &Path| {
        setup(root);
        let mut cmd = Command::new("sh");
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
        std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
        cmd.arg("-c").arg(script).arg("sh").arg(root);
        let out = common::run_with_timeout(cmd, std::time::Duration::from_secs(60));
        assert!(out.ok(), "script failed: {out:?}");
        out.stdout
    };
    let plain = run(&m.plain);
    // the script really ran as an unprivileged user
    for want in [
        "read 0644:       ok",
        "write 0644:      fail",
        "read 0600:       fail",
        "create in 0777:  ok",
    ] {
        assert!(
            plain.contains(want),
            "plain-side sanity: {want:?} not in\n{plain}"
        );
    }
    let mnt = run(&m.mnt);
    assert_eq!(
        plain, mnt,
        "uid 65534 gets different permission answers\nplain:\n{plain}\nmount:\n{mnt}"
    );
}

#[test]
fn hostile_names_in_status() {
    // The journal keeps exact path bytes: status `path_hex` round-trips them.
    let m = Mount::new();
    let names = hostile_names();
    for n in &names {
        write_file(&pj(&m.mnt, n), n).expect("write");
    }
    fs::create_dir(m.mnt.join("sub\ndir")).expect("mkdir");
    write_file(&m.mnt.join("sub\ndir/$(x)"), b"nested").expect("nested");
    m.flush();
    let st = m.status_json();
    for n in &names {
        common::assert_hash(&st, n, n);
    }
    common::assert_hash(&st, b"sub\ndir/$(x)", b"nested");
    // the journal part of the document is consistent
    let next_seq = st["journal"]["next_seq"]
        .as_u64()
        .expect("journal.next_seq");
    let records = st["journal"]["records"].as_u64().expect("journal.records");
    assert_eq!(st["journal"]["torn_bytes"].as_u64(), Some(0), "torn_bytes");
    let pending = st["pending"].as_array().expect("pending");
    assert!(
        records >= pending.len() as u64,
        "records < pending entries: {st}"
    );
    for e in pending
        .iter()
        .chain(st["hashes"].as_array().expect("hashes"))
    {
        let seq = e["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("entry without seq: {e}"));
        assert!(seq < next_seq, "seq {seq} >= next_seq {next_seq}: {e}");
    }
    for e in pending {
        assert!(
            e["op"].as_str().is_some_and(|o| !o.is_empty()),
            "pending entry without op: {e}"
        );
    }
    // path is the lossy UTF-8 form of path_hex
    for e in pending
        .iter()
        .chain(st["hashes"].as_array().expect("hashes"))
    {
        let bytes = common::entry_path(e);
        assert_eq!(
            e["path"].as_str().expect("path"),
            String::from_utf8_lossy(&bytes),
            "`path` is not the lossy form of `path_hex` in {e}"
        );
    }
}

/// /etc/passwd must never be touched, whatever the mount does with links to it.
#[test]
fn symlink_to_etc_passwd_is_not_followed() {
    let before = sha256_file(Path::new("/etc/passwd"));
    let before_st = lstat(Path::new("/etc/passwd")).expect("lstat passwd");
    {
        let m = Mount::new();
        let l = m.mnt.join("pw");
        symlink(b"/etc/passwd", &l).expect("symlink");
        assert_eq!(readlink(&l), Ok(b"/etc/passwd".to_vec()), "readlink");
        let st = lstat(&l).expect("lstat");
        assert_eq!(kind(st.st_mode), "symlink", "lstat type");
        assert_eq!(st.st_size, 11, "symlink size = target length");
        // Only ever with O_NOFOLLOW: opening for write without it would write /etc/passwd.
        assert_eq!(
            open_close(&l, libc::O_RDONLY | libc::O_NOFOLLOW, 0),
            Err(Errno(libc::ELOOP)),
            "O_RDONLY|O_NOFOLLOW"
        );
        assert_eq!(
            open_close(&l, libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW, 0),
            Err(Errno(libc::ELOOP)),
            "O_WRONLY|O_TRUNC|O_NOFOLLOW"
        );
        assert_eq!(
            open_close(&l, libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW, 0o644),
            Err(Errno(libc::ELOOP)),
            "O_CREAT|O_NOFOLLOW"
        );
        // the backing dir holds a symlink too, not a copy
        let bst = lstat(&m.local.join("pw")).expect("lstat backing");
        assert_eq!(kind(bst.st_mode), "symlink", "backing entry type");
        assert_eq!(
            fs::read_link(m.local.join("pw")).expect("readlink backing"),
            PathBuf::from("/etc/passwd")
        );
        // relative escape attempts are stored verbatim, never resolved
        let rel = b"../../../../../../../../etc/passwd";
        symlink(rel, &m.mnt.join("rel")).expect("symlink rel");
        assert_eq!(readlink(&m.mnt.join("rel")), Ok(rel.to_vec()));
        // (lchown/lutimes on a link are checked against a target of our own
        // in link_operations_stay_on_the_link, never against /etc/passwd)
        assert_eq!(
            lsetxattr(&l, "user.x", b"1", 0),
            Err(Errno(libc::EPERM)),
            "user xattr on a symlink"
        );
        rename(&l, &m.mnt.join("pw2")).expect("rename link");
        unlink(&m.mnt.join("pw2")).expect("unlink link");
    }
    let after_st = lstat(Path::new("/etc/passwd")).expect("lstat passwd");
    assert_eq!(
        sha256_file(Path::new("/etc/passwd")),
        before,
        "/etc/passwd changed!"
    );
    assert_eq!(
        (
            after_st.st_mode,
            after_st.st_uid,
            after_st.st_gid,
            after_st.st_size,
            after_st.st_mtime
        ),
        (
            before_st.st_mode,
            before_st.st_uid,
            before_st.st_gid,
            before_st.st_size,
            before_st.st_mtime
        ),
        "/etc/passwd metadata changed!"
    );
}

/// Operations on a symlink whose target lies outside the mount change the
/// link, never the target (which here is our own file, so it can be checked).
#[test]
fn link_operations_stay_on_the_link() {
    let m = Mount::new();
    let outside = m.root.join("outside");
    write_file(&outside, b"outside content").expect("outside");
    chmod(&outside, 0o640).expect("chmod");
    let set = [ts(1_111_111_111, 0), ts(1_111_111_111, 0)];
    utimensat(&outside, set, 0).expect("utimensat outside");
    let snap = |p: &Path| {
        let s = lstat(p).expect("lstat");
        (
            s.st_mode,
            s.st_uid,
            s.st_gid,
            s.st_size,
            s.st_mtime,
            sha256_file(p),
        )
    };
    let before = snap(&outside);
    let l = m.mnt.join("out");
    symlink(outside.as_os_str().as_bytes(), &l).expect("symlink");
    lchown(&l, 4321, 4321).expect("lchown");
    utimensat(&l, [ts(5, 0), ts(6, 0)], libc::AT_SYMLINK_NOFOLLOW).expect("lutimes");
    let ls = lstat(&l).expect("lstat link");
    assert_eq!(
        (ls.st_uid, ls.st_gid),
        (4321, 4321),
        "link owner after lchown"
    );
    assert_eq!(ls.st_mtime, 6, "link mtime after lutimes");
    let bl = lstat(&m.local.join("out")).expect("lstat backing link");
    assert_eq!(
        (bl.st_uid, bl.st_gid, bl.st_mtime),
        (4321, 4321, 6),
        "backing link"
    );
    assert_eq!(
        snap(&outside),
        before,
        "target outside the mount was modified"
    );
    // removing and renaming the link leaves the target alone
    rename(&l, &m.mnt.join("out2")).expect("rename");
    unlink(&m.mnt.join("out2")).expect("unlink");
    assert_eq!(
        snap(&outside),
        before,
        "target outside the mount was modified"
    );
}

#[test]
fn shadow_mount_over_local_dir() {
    let mut m = Mount::builder().shadow().prepare();
    fs::write(m.local.join("before.txt"), b"was here first").expect("pre-existing file");
    fs::create_dir(m.local.join("olddir")).expect("pre-existing dir");
    fs::write(m.local.join("olddir/nested"), b"nested").expect("nested");
    symlink(b"before.txt", &m.local.join("oldlink")).expect("symlink");
    m.mount();
    assert_eq!(m.mnt, m.local, "shadow mount point is the local dir");
    assert!(
        common::is_ftpsync_mounted(&m.local),
        "local dir is the mountpoint"
    );
    assert_eq!(
        fs::read(m.mnt.join("before.txt")).expect("read pre-existing"),
        b"was here first"
    );
    assert_eq!(
        fs::read(m.mnt.join("olddir/nested")).expect("read nested"),
        b"nested"
    );
    assert_eq!(readlink(&m.mnt.join("oldlink")), Ok(b"before.txt".to_vec()));
    fs::write(m.mnt.join("new.txt"), b"written through the shadow mount").expect("write new");
    fs::create_dir(m.mnt.join("newdir")).expect("mkdir new");
    fs::write(m.mnt.join("newdir/f"), b"f").expect("write newdir/f");
    fs::write(m.mnt.join("before.txt"), b"changed").expect("overwrite");
    fs::remove_file(m.mnt.join("olddir/nested")).expect("rm nested");
    m.flush();
    common::assert_hash(
        &m.status_json(),
        b"new.txt",
        b"written through the shadow mount",
    );
    common::assert_hash(&m.status_json(), b"before.txt", b"changed");
    m.unmount();
    assert!(!common::is_ftpsync_mounted(&m.local), "still mounted");
    assert_eq!(
        fs::read(m.local.join("new.txt")).expect("new file after unmount"),
        b"written through the shadow mount"
    );
    assert_eq!(fs::read(m.local.join("newdir/f")).expect("newdir/f"), b"f");
    assert_eq!(
        fs::read(m.local.join("before.txt")).expect("before"),
        b"changed"
    );
    assert!(
        !m.local.join("olddir/nested").exists(),
        "deleted file came back"
    );
    // and it mounts again over the same folder, seeing the same content
    m.mount();
    assert_eq!(
        fs::read(m.mnt.join("new.txt")).expect("read after remount"),
        b"written through the shadow mount"
    );
    m.unmount();
}

#[test]
fn read_only_mount() {
    let mut m = Mount::builder().opt("ro").prepare();
    fs::write(m.local.join("f"), b"data").expect("write");
    m.mount();
    assert_eq!(read_all(&m.mnt.join("f")), Ok(b"data".to_vec()));
    assert_eq!(
        open_close(&m.mnt.join("f"), libc::O_WRONLY, 0),
        Err(Errno(libc::EROFS))
    );
    assert_eq!(
        open_close(&m.mnt.join("g"), libc::O_WRONLY | libc::O_CREAT, 0o644),
        Err(Errno(libc::EROFS))
    );
    assert_eq!(mkdir(&m.mnt.join("d"), 0o755), Err(Errno(libc::EROFS)));
    assert_eq!(unlink(&m.mnt.join("f")), Err(Errno(libc::EROFS)));
    assert_eq!(fs::read(m.local.join("f")).expect("backing"), b"data");
    m.unmount();
}

/// More inodes than the daemon may hold descriptors (RLIMIT_NOFILE is 20,000 here and cannot
/// be raised without CAP_SYS_RESOURCE): every file must still be created, found and read.
#[test]
fn more_files_than_descriptors() {
    let m = Mount::new();
    let n = 25_000;
    for d in 0..25 {
        fs::create_dir(m.mnt.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..n {
        let p = m.mnt.join(format!("d{}/f{i}", i % 25));
        fs::write(&p, i.to_string()).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    }
    for i in (0..n).step_by(7) {
        let p = m.mnt.join(format!("d{}/f{i}", i % 25));
        assert_eq!(fs::read(&p).expect("read back"), i.to_string().as_bytes());
    }
    let listed: usize = (0..25)
        .map(|d| {
            fs::read_dir(m.mnt.join(format!("d{d}")))
                .expect("readdir")
                .count()
        })
        .sum();
    assert_eq!(listed, n);
    fs::rename(m.mnt.join("d3"), m.mnt.join("moved")).expect("rename dir");
    assert_eq!(fs::read(m.mnt.join("moved/f3")).expect("read moved"), b"3");
}
