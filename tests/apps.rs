//! Real applications working inside the mount: git, tar, sqlite3 and an
//! editor-style atomic save. A missing tool is a failure (scripts/test.sh
//! installs them), never a silent skip.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_hash, pattern, require_tool, run_with_timeout, sha256_file, CmdOut, Mount};

const APP_WAIT: Duration = Duration::from_secs(600);

/// Runs `prog args...` in `dir` with a clean, test-local environment.
fn run_in(dir: &Path, home: &Path, prog: &str, args: &[&str]) -> CmdOut {
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "ftpsync test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "ftpsync test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("LC_ALL", "C");
    let out = run_with_timeout(cmd, APP_WAIT);
    assert!(
        out.ok(),
        "`{prog} {}` in {} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// What a tree holds, per relative path: type, mode, size, content hash or
/// link target, whole-second mtime for files, and hard-link groups (named by
/// the smallest path of the group, so traversal order does not matter).
fn describe_tree(root: &Path, with_mtime: bool) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut files: Vec<(Vec<u8>, fs::Metadata, String)> = Vec::new();
    let mut groups: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (rel, p, md) in common::walk(root) {
        let ft = md.file_type();
        if ft.is_symlink() {
            out.insert(
                rel,
                format!("link -> {:?}", fs::read_link(&p).expect("readlink")),
            );
        } else if ft.is_dir() {
            out.insert(rel, format!("dir {:04o}", md.mode() & 0o7777));
        } else if ft.is_file() {
            let g = groups
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            if rel < *g {
                *g = rel.clone();
            }
            let sha = sha256_file(&p);
            files.push((rel, md, sha));
        } else {
            out.insert(rel, format!("special {:o}", md.mode()));
        }
    }
    for (rel, md, sha) in files {
        let mtime = if with_mtime {
            format!(" mtime={}", md.mtime())
        } else {
            String::new()
        };
        let group = if md.nlink() > 1 {
            format!(
                " nlink={} group={:?}",
                md.nlink(),
                String::from_utf8_lossy(&groups[&(md.dev(), md.ino())])
            )
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "file {:04o} size={} sha={}{}{}",
                md.mode() & 0o7777,
                md.len(),
                sha,
                mtime,
                group
            ),
        );
    }
    out
}

fn assert_trees_equal(what: &str, a: &Path, b: &Path, with_mtime: bool) {
    let ta = describe_tree(a, with_mtime);
    let tb = describe_tree(b, with_mtime);
    if ta == tb {
        return;
    }
    let mut msg = format!("{what}: {} and {} differ:\n", a.display(), b.display());
    let mut n = 0;
    for k in ta.keys().chain(tb.keys()) {
        let (x, y) = (ta.get(k), tb.get(k));
        if x != y {
            msg.push_str(&format!(
                "  {:?}:\n    {}: {:?}\n    {}: {:?}\n",
                String::from_utf8_lossy(k),
                a.display(),
                x,
                b.display(),
                y
            ));
            n += 1;
            if n > 30 {
                msg.push_str("  ...\n");
                break;
            }
        }
    }
    panic!("{msg}");
}

/// Every regular file under `dir` (relative to the mount root `root`) has a
/// `hashes` entry with its on-disk content's SHA-256.
fn assert_all_hashed(m: &Mount, dir_rel: &str) {
    let st = m.status_json();
    let hashes = common::hashes_of(&st);
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    let mut count = 0;
    let mut stack = vec![m.local.join(dir_rel)];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let md = fs::symlink_metadata(&p).expect("lstat");
            if md.is_dir() {
                stack.push(p);
            } else if md.is_file() {
                count += 1;
                let rel = p
                    .strip_prefix(&m.local)
                    .expect("prefix")
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                let want = (md.len(), sha256_file(&p));
                match hashes.get(&rel) {
                    None => missing.push(String::from_utf8_lossy(&rel).into_owned()),
                    Some(got) if *got != want => wrong.push(format!(
                        "{}: status {:?}, disk {:?}",
                        String::from_utf8_lossy(&rel),
                        got,
                        want
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "of {count} files under {dir_rel}: {} without a hash entry (first: {:?}), {} with a wrong one (first: {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
}

/// A generated tree: nested dirs, sizes 0..~200 KiB, executables, symlinks,
/// hard links, empty dirs, a few odd names.
fn generate_tree(root: &Path, files: usize) {
    fs::create_dir_all(root).expect("mkdir tree root");
    for i in 0..files {
        let dir = root.join(format!("d{}/sub{}", i % 7, i % 3));
        fs::create_dir_all(&dir).expect("mkdir");
        let size = match i % 10 {
            0 => 0,
            1 => 1,
            2 => 4096,
            3 => 4097,
            4 => 65_536 + i,
            5 => 200_000 + i,
            _ => (i * 131) % 20_000,
        };
        let p = dir.join(format!("file-{i:04}.dat"));
        fs::write(&p, pattern(i as u64 + 1000, size)).expect("write");
        let mode = if i % 9 == 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::create_dir_all(root.join("empty/nested/deeper")).expect("empty dirs");
    std::os::unix::fs::symlink("d0/sub0/file-0000.dat", root.join("link-rel")).expect("symlink");
    std::os::unix::fs::symlink("../d1", root.join("d0/up-link")).expect("symlink");
    std::os::unix::fs::symlink("dangling-target", root.join("dangling")).expect("symlink");
    fs::hard_link(
        root.join("d1/sub1/file-0001.dat"),
        root.join("hardlink.dat"),
    )
    .expect("link");
    fs::write(root.join("name with spaces & $(odd)"), b"odd").expect("odd name");
    fs::write(root.join("d2/-leading-dash"), b"dash").expect("dash name");
}

#[test]
fn git_commit_and_fsck() {
    require_tool("git");
    let m = Mount::new();
    let home = m.root.join("home");
    fs::create_dir(&home).expect("home");
    let repo = m.mnt.join("repo");
    fs::create_dir(&repo).expect("repo");
    run_in(&repo, &home, "git", &["init", "-q", "-b", "main"]);
    for i in 0..300 {
        let dir = repo.join(format!("src/mod{}", i % 12));
        fs::create_dir_all(&dir).expect("mkdir");
        let mut body = format!("// file {i}\n");
        for line in 0..(i % 40) {
            body.push_str(&format!("fn f{line}() -> u32 {{ {} }}\n", line * i));
        }
        fs::write(dir.join(format!("f{i:03}.rs")), body).expect("write");
    }
    fs::write(repo.join("blob.bin"), pattern(5, 300_000)).expect("blob");
    run_in(&repo, &home, "git", &["add", "-A"]);
    run_in(&repo, &home, "git", &["commit", "-q", "-m", "300 files"]);
    run_in(&repo, &home, "git", &["fsck", "--full", "--strict"]);
    let st = run_in(&repo, &home, "git", &["status", "--porcelain"]);
    assert_eq!(st.stdout, "", "work tree not clean after commit");
    let ls = run_in(&repo, &home, "git", &["ls-files"]);
    assert_eq!(ls.stdout.lines().count(), 301, "tracked files");
    // a second round: modify, delete, rename, commit, then gc (repack, prune)
    for i in (0..300).step_by(7) {
        let p = repo.join(format!("src/mod{}/f{i:03}.rs", i % 12));
        fs::write(&p, format!("// changed {i}\n")).expect("modify");
    }
    for i in (3..300).step_by(50) {
        fs::remove_file(repo.join(format!("src/mod{}/f{i:03}.rs", i % 12))).expect("rm");
    }
    run_in(&repo, &home, "git", &["mv", "src/mod0", "src/renamed0"]);
    run_in(&repo, &home, "git", &["add", "-A"]);
    run_in(&repo, &home, "git", &["commit", "-q", "-m", "second"]);
    run_in(&repo, &home, "git", &["gc", "-q", "--prune=now"]);
    run_in(&repo, &home, "git", &["fsck", "--full", "--strict"]);
    let log = run_in(&repo, &home, "git", &["log", "--oneline"]);
    assert_eq!(log.stdout.lines().count(), 2, "commits: {}", log.stdout);
    // clone out of the mount into a plain dir: the same tree comes back
    let clone = m.root.join("clone");
    run_in(
        &m.root,
        &home,
        "git",
        &[
            "clone",
            "-q",
            repo.to_str().expect("utf8 path"),
            clone.to_str().expect("utf8 path"),
        ],
    );
    run_in(&clone, &home, "git", &["fsck", "--full"]);
    let mut a = describe_tree(&repo, false);
    let mut b = describe_tree(&clone, false);
    a.retain(|k, _| !k.starts_with(b".git"));
    b.retain(|k, _| !k.starts_with(b".git"));
    assert_eq!(a, b, "clone out of the mount differs from the work tree");
    // what the journal says matches what is in the backing dir
    m.flush();
    assert_all_hashed(&m, "repo");
}

#[test]
fn tar_extract_matches() {
    require_tool("tar");
    let m = Mount::new();
    let src = m.plain.join("src");
    generate_tree(&src, 400);
    let tarball = m.root.join("tree.tar");
    let home = m.root.clone();
    run_in(
        &m.root,
        &home,
        "tar",
        &[
            "-cf",
            tarball.to_str().expect("utf8"),
            "-C",
            src.to_str().expect("utf8"),
            ".",
        ],
    );
    let dst = m.mnt.join("x");
    fs::create_dir(&dst).expect("mkdir x");
    run_in(
        &m.root,
        &home,
        "tar",
        &[
            "-xf",
            tarball.to_str().expect("utf8"),
            "-C",
            dst.to_str().expect("utf8"),
        ],
    );
    assert_trees_equal("tar -x into the mount", &src, &dst, true);
    // tar itself compares the archive with what the mount shows: content,
    // mode, owner, mtime, size, link targets
    run_in(
        &m.root,
        &home,
        "tar",
        &[
            "--compare",
            "-f",
            tarball.to_str().expect("utf8"),
            "-C",
            dst.to_str().expect("utf8"),
        ],
    );
    // and archives the mounted tree back without complaint
    let tar2 = m.root.join("tree2.tar");
    run_in(
        &m.root,
        &home,
        "tar",
        &[
            "-cf",
            tar2.to_str().expect("utf8"),
            "-C",
            dst.to_str().expect("utf8"),
            ".",
        ],
    );
    m.flush();
    assert_all_hashed(&m, "x");
    // and the backing dir holds the same tree
    drop_and_compare(m, &src, "x");
}

/// Unmounts `m` and compares its backing `local/<rel>` with `expected`.
fn drop_and_compare(mut m: Mount, expected: &Path, rel: &str) {
    m.unmount();
    assert_trees_equal(
        "backing dir after unmount",
        expected,
        &m.local.join(rel),
        true,
    );
}

fn sqlite_script(wal: bool) -> String {
    let mut sql = String::new();
    if wal {
        sql.push_str("PRAGMA journal_mode=WAL;\n");
    } else {
        sql.push_str("PRAGMA journal_mode=DELETE;\n");
    }
    sql.push_str("PRAGMA synchronous=FULL;\n");
    sql.push_str(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, v INTEGER, pad BLOB);\n",
    );
    sql.push_str("CREATE INDEX t_name ON t(name);\n");
    for tx in 0..100 {
        sql.push_str("BEGIN;\n");
        for r in 0..100 {
            let n = tx * 100 + r;
            sql.push_str(&format!(
                "INSERT INTO t(name, v, pad) VALUES('row-{n}', {n}, randomblob({}));\n",
                (n * 37) % 700
            ));
        }
        sql.push_str("COMMIT;\n");
    }
    // some churn: updates and deletes that free and reuse pages
    sql.push_str("BEGIN; UPDATE t SET pad = randomblob(900) WHERE v % 5 = 0; COMMIT;\n");
    sql.push_str("BEGIN; DELETE FROM t WHERE v % 10 = 1; COMMIT;\n");
    sql.push_str(
        "BEGIN; INSERT INTO t(name, v, pad) SELECT 'again-' || v, v, NULL FROM t WHERE v % 10 = 2 AND v < 10000; \
         DELETE FROM t WHERE name LIKE 'again-%'; COMMIT;\n",
    );
    sql.push_str(
        "BEGIN; INSERT INTO t(name, v) SELECT 'back-' || (v + 1), v + 1 FROM t WHERE v % 10 = 0; COMMIT;\n",
    );
    sql
}

fn sqlite_run(wal: bool) {
    require_tool("sqlite3");
    let m = Mount::new();
    let home = m.root.clone();
    let script = m.root.join("script.sql");
    fs::write(&script, sqlite_script(wal)).expect("script");
    let db = m.mnt.join("db.sqlite");
    let dbs = db.to_str().expect("utf8");
    run_in(
        &m.root,
        &home,
        "sqlite3",
        &[dbs, &format!(".read {}", script.display())],
    );
    let q = |sql: &str| {
        run_in(&m.root, &home, "sqlite3", &[dbs, sql])
            .stdout
            .trim()
            .to_string()
    };
    assert_eq!(q("PRAGMA integrity_check;"), "ok", "integrity_check");
    assert_eq!(q("SELECT count(*) FROM t;"), "10000", "row count");
    assert_eq!(
        q("SELECT sum(v) FROM t;"),
        "49995000",
        "sum of v (every v in 0..10000 present once)"
    );
    assert_eq!(q("SELECT count(*) FROM t WHERE name LIKE 'again-%';"), "0");
    if wal {
        assert_eq!(q("PRAGMA journal_mode;"), "wal");
        // checkpoint and switch back so the db file alone holds everything
        q("PRAGMA wal_checkpoint(TRUNCATE);");
        q("PRAGMA journal_mode=DELETE;");
    }
    // the plain copy of the file (read back through the mount) is a valid db too
    let copy = m.root.join("copy.sqlite");
    fs::copy(&db, &copy).expect("copy db out");
    let out = run_in(
        &m.root,
        &home,
        "sqlite3",
        &[copy.to_str().expect("utf8"), "PRAGMA integrity_check;"],
    );
    assert_eq!(out.stdout.trim(), "ok", "copied db integrity");
    m.flush();
    let st = m.status_json();
    let data = fs::read(m.local.join("db.sqlite")).expect("read backing db");
    assert_hash(&st, b"db.sqlite", &data);
    let leftovers: Vec<String> = fs::read_dir(&m.mnt)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "db.sqlite")
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftover files next to the db: {leftovers:?}"
    );
}

#[test]
fn sqlite_rollback_journal() {
    sqlite_run(false);
}

#[test]
fn sqlite_wal() {
    sqlite_run(true);
}

fn fsync_file(p: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

#[test]
fn editor_style_save() {
    let m = Mount::new();
    let target = m.mnt.join("doc.txt");
    let v1 = b"version one\n".to_vec();
    fsync_file(&target, &v1);
    m.flush();
    assert_hash(&m.status_json(), b"doc.txt", &v1);

    // gedit/VS Code style: write a temp file, fsync, rename over the target
    let v2: Vec<u8> = b"version two, longer than the first one\n".repeat(100);
    let tmp = m.mnt.join(".doc.txt.tmp-1234");
    fsync_file(&tmp, &v2);
    fs::rename(&tmp, &target).expect("rename over target");
    // fsync the directory like careful editors do
    fs::File::open(&m.mnt)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
    m.flush();
    assert_hash(&m.status_json(), b"doc.txt", &v2);
    assert_eq!(fs::read(m.local.join("doc.txt")).expect("backing"), v2);
    assert!(
        !m.local.join(".doc.txt.tmp-1234").exists(),
        "temp file left behind"
    );

    // vim style (backupcopy=no): rename the original to a backup, write a
    // new file under the name, delete the backup
    let v3 = b"version three\n".to_vec();
    let backup = m.mnt.join("doc.txt~");
    fs::rename(&target, &backup).expect("rename to backup");
    fsync_file(&target, &v3);
    fs::remove_file(&backup).expect("rm backup");
    m.flush();
    assert_hash(&m.status_json(), b"doc.txt", &v3);

    // emacs style: hard-link backup, then write in place with truncation
    let v4 = b"version four\n".repeat(3);
    fs::hard_link(&target, &backup).expect("link backup");
    fsync_file(&target, &v4);
    m.flush();
    let st = m.status_json();
    assert_hash(&st, b"doc.txt", &v4);
    // the backup is the same inode: it holds v4 too
    assert_eq!(fs::read(&backup).expect("backup"), v4);

    // the same save repeated quickly, many times: the last content wins
    let mut last = Vec::new();
    for i in 0..50 {
        last = format!("rapid save {i}\n").repeat(i + 1).into_bytes();
        let tmp = m.mnt.join(format!(".doc.txt.{i}.swp"));
        fsync_file(&tmp, &last);
        fs::rename(&tmp, &target).expect("rename");
    }
    m.flush();
    assert_hash(&m.status_json(), b"doc.txt", &last);
    let on_disk: PathBuf = m.local.join("doc.txt");
    assert_eq!(fs::read(on_disk).expect("backing"), last);
}
