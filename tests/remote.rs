//! The SFTP transport against a real OpenSSH sshd on 127.0.0.1: verified atomic uploads on
//! both server flavours, confinement, hostile names, host key and algorithm refusals, auth.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::pattern;
use common::sshd::{connect, connect_options as options, Flavor, Sshd};
use ftpsync::remote::{
    Attrs, ConnectOptions, Connection, DirNews, ErrorKind, FileKind, HashTool, HostKeyProblem,
    Reach, RemoteError, Secret, SecretSource, Transport, VerifyMethod, VerifyMode,
};
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn connect_err(o: &ConnectOptions) -> RemoteError {
    match Connection::connect(o) {
        Ok(_) => panic!("connection unexpectedly succeeded"),
        Err(e) => e,
    }
}

const ATTRS: Attrs = Attrs {
    mode: 0o640,
    atime: 1_600_000_000,
    mtime: 1_500_000_000,
};

fn upload(c: &mut Connection, rel: &[u8], data: &[u8]) -> ftpsync::remote::UploadReport {
    c.upload(rel, &mut &data[..], data.len() as u64, &sha(data), &ATTRS)
        .unwrap_or_else(|e| panic!("upload {}: {e}", String::from_utf8_lossy(rel)))
}

fn on_disk(sshd: &Sshd, rel: &[u8]) -> PathBuf {
    sshd.remote_root_on_disk()
        .join(std::ffi::OsStr::from_bytes(rel))
}

/// Every name under `dir` (recursively, relative), to check that no temp file survives.
fn tree(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn no_temp_left(sshd: &Sshd) {
    for name in tree(&sshd.remote_root_on_disk()) {
        assert!(
            !String::from_utf8_lossy(&name).contains(".ftpsync-tmp-"),
            "temp file survived: {:?}",
            String::from_utf8_lossy(&name)
        );
    }
}

fn check_uploaded(sshd: &Sshd, rel: &[u8], data: &[u8]) {
    let p = on_disk(sshd, rel);
    // Metadata first: reading the file may update its atime.
    let m = fs::symlink_metadata(&p).unwrap();
    assert_eq!(m.mode() & 0o7777, ATTRS.mode);
    assert_eq!(m.mtime(), ATTRS.mtime);
    assert_eq!(m.atime(), ATTRS.atime, "both times are set");
    assert_eq!(fs::read(&p).unwrap(), data, "content of {p:?}");
}

fn verified_upload(flavor: Flavor, want: VerifyMethod) {
    let sshd = Sshd::start(flavor);
    let mut c = connect(&sshd);
    assert_eq!(c.verify_method(), want);
    c.mkdir_all(b"d/e", &mut |_, _| {}).unwrap();
    let data = pattern(7, 3 << 20 | 123);
    let report = upload(&mut c, b"d/e/big.bin", &data);
    assert_eq!(report.verified_by, want);
    assert_eq!(report.sha256, sha(&data));
    upload(&mut c, b"empty", b"");
    check_uploaded(&sshd, b"d/e/big.bin", &data);
    check_uploaded(&sshd, b"empty", b"");
    let hashes = c
        .hash(&[b"d/e/big.bin", b"empty", b"missing", b"d"])
        .unwrap();
    assert_eq!(hashes, vec![Some(sha(&data)), Some(sha(b"")), None, None]);
    no_temp_left(&sshd);
    let st = c.lstat(b"d/e/big.bin").unwrap().unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode, st.mtime),
        (FileKind::File, data.len() as u64, 0o640, ATTRS.mtime)
    );
    assert!(!c.negotiated().kex.is_empty());
    assert!(c.host_key().fingerprint.starts_with("SHA256:"));
}

/// What auto detection must pick on the plain server: openssl where it is installed (faster),
/// coreutils otherwise.
fn expected_exec() -> VerifyMethod {
    let openssl = std::process::Command::new("sh")
        .args(["-c", "command -v openssl"])
        .output()
        .is_ok_and(|o| o.status.success());
    VerifyMethod::Exec(if openssl {
        HashTool::Openssl
    } else {
        HashTool::Sha256sum
    })
}

#[test]
fn upload_and_exec_verify_on_plain_server() {
    verified_upload(Flavor::Plain, expected_exec());
}

#[test]
fn upload_and_readback_verify_on_chroot_server() {
    verified_upload(Flavor::Chroot, VerifyMethod::Readback);
}

#[test]
fn exec_mode_is_refused_where_exec_is_not_allowed() {
    let sshd = Sshd::start(Flavor::Chroot);
    let mut o = options(&sshd);
    o.verify = VerifyMode::Exec;
    let e = Connection::connect(&o)
        .err()
        .expect("exec mode refused at connect");
    assert!(e.to_string().contains("verify=exec"), "{e}");
    let mut o = options(&sshd);
    o.verify = VerifyMode::Readback;
    let c = Connection::connect(&o).unwrap();
    assert_eq!(c.verify_method(), VerifyMethod::Readback);
}

#[test]
fn replace_is_atomic() {
    let sshd = Sshd::start(Flavor::Plain);
    let mut c = connect(&sshd);
    let old = pattern(1, 1 << 20);
    let new = pattern(2, 1 << 20);
    upload(&mut c, b"f", &old);
    let (h_old, h_new) = (sha(&old), sha(&new));
    let stop = Arc::new(AtomicBool::new(false));
    let target = on_disk(&sshd, b"f");
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let data = fs::read(&target).expect("the target always exists");
                let h = sha(&data);
                assert!(h == h_old || h == h_new, "a reader saw a partial file");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..10 {
        upload(&mut c, b"f", if i % 2 == 0 { &new } else { &old });
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 10, "the reader ran ({reads} reads)");
    assert_eq!(fs::read(on_disk(&sshd, b"f")).unwrap(), old);
    no_temp_left(&sshd);
}

/// Names that would break a careless shell command, a line-based parser or a terminal. A name
/// cannot hold '/', so the commands they try to inject create `marker` in the shell's working
/// directory, or spell /tmp with printf.
fn hostile_names(marker: &str) -> Vec<Vec<u8>> {
    let m = marker;
    vec![
        b"it's".to_vec(),
        format!("'; touch {m}; '").into_bytes(),
        format!("$(touch {m})").into_bytes(),
        format!("`touch {m}`").into_bytes(),
        format!("a;touch {m}").into_bytes(),
        format!("x' && touch {m} && echo '").into_bytes(),
        format!("$(touch \"$(printf '\\057tmp\\057{m}')\")").into_bytes(),
        format!("\n$(touch {m})\n").into_bytes(),
        b"new\nline".to_vec(),
        b"back\\slash\\n".to_vec(),
        b"cr\rhere".to_vec(),
        b"-rf".to_vec(),
        b"--help".to_vec(),
        b" leading and trailing space ".to_vec(),
        b"*".to_vec(),
        b"\xff\xfe invalid utf8 \xc3".to_vec(),
        "ünïcödé ✓".as_bytes().to_vec(),
        vec![b'L'; 255],
        [b"\x01\x1b[31mansi".as_slice(), b"\t"].concat(),
    ]
}

/// Where an injected `touch MARKER` would have landed.
fn marker_paths(marker: &str) -> Vec<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/root"),
        PathBuf::from("/"),
        PathBuf::from("/tmp"),
    ];
    dirs.push(std::env::current_dir().unwrap());
    dirs.into_iter().map(|d| d.join(marker)).collect()
}

fn hostile_round_trip(flavor: Flavor) {
    let sshd = Sshd::start(flavor);
    let marker = format!("ftpsync-pwned-{}-{:?}", std::process::id(), flavor);
    let mut c = connect(&sshd);
    let want = match flavor {
        Flavor::Plain | Flavor::Gesftp => expected_exec(),
        // Servers that refuse exec.
        Flavor::Chroot | Flavor::KeyAndPassword | Flavor::Rclone | Flavor::Proftpd => {
            VerifyMethod::Readback
        }
    };
    assert_eq!(c.verify_method(), want);
    c.mkdir(b"h", 0o755).unwrap();
    let names = hostile_names(&marker);
    let mut rels = Vec::new();
    for name in &names {
        let rel = [b"h/".as_slice(), name].concat();
        upload(&mut c, &rel, name);
        rels.push(rel);
    }
    // A symlink with a hostile name and target, and a directory with a hostile name.
    c.symlink(b"h/$(id)\nlink", b"../it's\n$(x)").unwrap();
    c.mkdir(b"h/dir '$(x)'\n", 0o700).unwrap();
    let refs: Vec<&[u8]> = rels.iter().map(Vec::as_slice).collect();
    let hashes = c.hash(&refs).unwrap();
    for (name, h) in names.iter().zip(&hashes) {
        assert_eq!(
            *h,
            Some(sha(name)),
            "hash of {:?}",
            String::from_utf8_lossy(name)
        );
    }
    let listed: Vec<Vec<u8>> = fs::read_dir(on_disk(&sshd, b"h"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    for name in &names {
        assert!(
            listed.contains(name),
            "{:?} missing",
            String::from_utf8_lossy(name)
        );
        assert_eq!(
            fs::read(on_disk(&sshd, &[b"h/".as_slice(), name].concat())).unwrap(),
            *name
        );
    }
    assert_eq!(listed.len(), names.len() + 2, "nothing else was created");
    assert_eq!(c.readlink(b"h/$(id)\nlink").unwrap(), b"../it's\n$(x)");
    let st = c.lstat(b"h/$(id)\nlink").unwrap().unwrap();
    assert_eq!(st.symlink_target.as_deref(), Some(&b"../it's\n$(x)"[..]));
    for m in marker_paths(&marker) {
        assert!(
            !m.exists(),
            "a name steered the remote command: {m:?} exists"
        );
    }
    no_temp_left(&sshd);
}

#[test]
fn hostile_names_with_exec_verify() {
    hostile_round_trip(Flavor::Plain);
}

#[test]
fn hostile_names_with_readback_verify() {
    hostile_round_trip(Flavor::Chroot);
}

#[test]
fn escaping_paths_are_rejected() {
    let sshd = Sshd::start(Flavor::Plain);
    let mut c = connect(&sshd);
    let outside = sshd.remote_root_on_disk().parent().unwrap().join("escaped");
    for bad in [
        &b".."[..],
        b"../escaped",
        b"a/../../escaped",
        b"/tmp/escaped",
        b"./x",
        b"a//b",
        b"",
        b"nul\0byte",
    ] {
        let e = c
            .upload(bad, &mut &b"x"[..], 1, &sha(b"x"), &ATTRS)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other, "{e}");
        assert!(c.mkdir_all(bad, &mut |_, _| {}).is_err() || bad.is_empty());
        assert!(c.rename(b"x", bad).is_err());
        assert!(c.symlink(bad, b"t").is_err());
        assert!(c.remove_file(bad).is_err());
    }
    assert!(c.lstat(b"../").is_err());
    assert!(!outside.exists());
    assert!(!Path::new("/tmp/escaped").exists());
    assert!(tree(&sshd.remote_root_on_disk()).is_empty());
}

#[test]
fn planted_symlink_directory_is_refused() {
    let sshd = Sshd::start(Flavor::Plain);
    let outside = tempfile::tempdir().unwrap();
    fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let root = sshd.remote_root_on_disk();
    fs::create_dir(root.join("real")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("real/evil")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("evil2")).unwrap();
    let mut c = connect(&sshd);
    for rel in [&b"real/evil/x"[..], b"evil2/x", b"evil2/sub/x"] {
        let e = c
            .upload(rel, &mut &b"x"[..], 1, &sha(b"x"), &ATTRS)
            .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(c.mkdir_all(rel, &mut |_, _| {}).is_err());
        assert!(c.symlink(rel, b"t").is_err());
        assert!(c.hash(&[rel]).is_err());
    }
    let e = c.set_attrs(b"evil2", &ATTRS).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(c.mkdir(b"evil2", 0o755).is_err());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(
        fs::metadata(outside.path()).unwrap().mode() & 0o7777,
        0o700,
        "not chmod'ed through the link"
    );
}

#[test]
fn round_trips_of_every_operation() {
    let sshd = Sshd::start(Flavor::Plain);
    let mut c = connect(&sshd);
    let mut made = Vec::new();
    c.mkdir_all(b"a/b/c", &mut |d, news| made.push((d.to_vec(), news)))
        .unwrap();
    // Each one is told before it is asked for (a lost answer may still have made it), then made.
    let told = |names: &[&str]| -> Vec<(Vec<u8>, DirNews)> {
        names
            .iter()
            .flat_map(|n| {
                let d = n.as_bytes().to_vec();
                [(d.clone(), DirNews::Asking), (d, DirNews::Made(0o755))]
            })
            .collect()
    };
    assert_eq!(made, told(&["a", "a/b", "a/b/c"]), "each one made is told");
    made.clear();
    c.mkdir_all(b"a/b/c", &mut |d, news| made.push((d.to_vec(), news)))
        .unwrap();
    assert!(made.is_empty(), "none made the second time: {made:?}");
    c.mkdir(b"a/m", 0o700).unwrap();
    c.mkdir(b"a/m", 0o750).unwrap();
    assert_eq!(c.lstat(b"a/m").unwrap().unwrap().mode, 0o750);
    assert_eq!(c.lstat(b"a/m").unwrap().unwrap().kind, FileKind::Dir);
    assert_eq!(c.lstat(b"").unwrap().unwrap().kind, FileKind::Dir);
    assert!(c.lstat(b"nothing").unwrap().is_none());
    assert_eq!(
        c.mkdir(b"no/parent", 0o755).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    upload(&mut c, b"a/b/c/f", b"one");
    upload(&mut c, b"a/g", b"two");
    // File rename, replacing the target.
    c.rename(b"a/b/c/f", b"a/g").unwrap();
    assert_eq!(fs::read(on_disk(&sshd, b"a/g")).unwrap(), b"one");
    assert!(c.lstat(b"a/b/c/f").unwrap().is_none());
    // A whole tree moves as one rename: same inode on the server.
    let ino = fs::metadata(on_disk(&sshd, b"a/b")).unwrap().ino();
    c.rename(b"a/b", b"moved").unwrap();
    assert_eq!(fs::metadata(on_disk(&sshd, b"moved")).unwrap().ino(), ino);
    upload(&mut c, b"moved/c/after", b"x");
    // Symlinks: create, replace atomically, read.
    c.symlink(b"moved/l", b"../a/g").unwrap();
    assert_eq!(
        fs::read_link(on_disk(&sshd, b"moved/l")).unwrap(),
        Path::new("../a/g")
    );
    c.symlink(b"moved/l", b"/elsewhere").unwrap();
    assert_eq!(c.readlink(b"moved/l").unwrap(), b"/elsewhere");
    let st = c.lstat(b"moved/l").unwrap().unwrap();
    assert_eq!(st.kind, FileKind::Symlink);
    assert_eq!(st.symlink_target.unwrap(), b"/elsewhere");
    assert!(c.set_attrs(b"moved/l", &ATTRS).is_err());
    // Attributes.
    let attrs = Attrs {
        mode: 0o600,
        atime: 1_234_567_890,
        mtime: 1_000_000_000,
    };
    c.set_attrs(b"a/g", &attrs).unwrap();
    c.set_attrs(b"moved", &attrs).unwrap();
    let m = fs::metadata(on_disk(&sshd, b"a/g")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.atime(), m.mtime()),
        (0o600, attrs.atime, attrs.mtime)
    );
    // Removal.
    assert!(c.remove_dir(b"moved").is_err(), "not empty");
    c.remove_file(b"moved/l").unwrap();
    c.remove_file(b"moved/c/after").unwrap();
    assert_eq!(
        c.remove_file(b"moved/c/after").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    c.remove_dir(b"moved/c").unwrap();
    c.remove_dir(b"moved").unwrap();
    assert!(c.lstat(b"moved").unwrap().is_none());
    // Once removed, a verified directory is checked again: a symlink put in its place is
    // refused.
    std::os::unix::fs::symlink("/tmp", on_disk(&sshd, b"moved")).unwrap();
    assert!(c
        .upload(b"moved/x", &mut &b"x"[..], 1, &sha(b"x"), &ATTRS)
        .is_err());
    no_temp_left(&sshd);
}

#[test]
fn changed_source_is_detected() {
    let sshd = Sshd::start(Flavor::Plain);
    let mut c = connect(&sshd);
    upload(&mut c, b"f", b"old");
    for (data, size) in [(&b"new!"[..], 4u64), (b"longer than said", 4), (b"ab", 4)] {
        let e = c
            .upload(b"f", &mut &data[..], size, &sha(b"something else"), &ATTRS)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SourceChanged, "{e}");
    }
    assert_eq!(fs::read(on_disk(&sshd, b"f")).unwrap(), b"old");
    let e = c
        .upload(b"g", &mut &b"abc"[..], 3, &sha(b"abd"), &ATTRS)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SourceChanged);
    assert!(c.lstat(b"g").unwrap().is_none());
    no_temp_left(&sshd);
}

#[test]
fn unknown_host_key_is_refused_with_its_fingerprint() {
    let sshd = Sshd::start(Flavor::Plain);
    let empty = tempfile::NamedTempFile::new().unwrap();
    let mut o = options(&sshd);
    o.known_hosts = vec![empty.path().to_path_buf(), PathBuf::from("/nonexistent")];
    let e = connect_err(&o);
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::HostKey);
    let fp = sshd.host_fingerprint();
    assert!(e.to_string().contains(&fp), "{e} lacks {fp}");
    assert!(e.to_string().contains("ssh-ed25519"), "{e}");
    assert!(e.to_string().contains("unknown"), "{e}");
    let (info, problem) = e.host_key_refusal().unwrap();
    assert_eq!(
        (info.fingerprint.as_str(), problem),
        (fp.as_str(), HostKeyProblem::Unknown)
    );
    // A pin for the same host on another port does not count.
    fs::write(
        empty.path(),
        fs::read_to_string(sshd.known_hosts())
            .unwrap()
            .replace(&format!("]:{}", sshd.port()), "]:1"),
    )
    .unwrap();
    assert_eq!(connect_err(&o).kind(), ErrorKind::HostKey);
    // Hashed entries work (ssh-keygen -H).
    fs::copy(sshd.known_hosts(), empty.path()).unwrap();
    let st = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    assert!(fs::read_to_string(empty.path()).unwrap().starts_with("|1|"));
    Connection::connect(&o).unwrap();
    // A key under @revoked is refused even though it is also pinned.
    let pub_key = fs::read_to_string(sshd.host_key().with_extension("pub")).unwrap();
    let mut text = fs::read_to_string(empty.path()).unwrap();
    text.push_str(&format!("@revoked * {pub_key}"));
    fs::write(empty.path(), text).unwrap();
    let e = connect_err(&o);
    assert_eq!(
        e.host_key_refusal().unwrap().1,
        HostKeyProblem::Revoked,
        "{e}"
    );
}

#[test]
fn changed_host_key_is_refused() {
    let mut sshd = Sshd::start(Flavor::Plain);
    let old_fp = sshd.host_fingerprint();
    let mut c = connect(&sshd);
    upload(&mut c, b"before", b"1");
    sshd.swap_host_key();
    let new_fp = sshd.host_fingerprint();
    assert_ne!(old_fp, new_fp);
    // The old connection is gone: a transient error, to be retried by reconnecting.
    let e = c.lstat(b"before").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    let e = connect_err(&options(&sshd));
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::HostKey);
    assert_eq!(e.kind().reach(), Reach::Halt);
    let msg = e.to_string();
    assert!(msg.contains("CHANGED") && msg.contains(&new_fp), "{msg}");
    assert_eq!(e.host_key_refusal().unwrap().1, HostKeyProblem::Changed);
}

#[test]
fn restarted_server_is_reachable_again() {
    let mut sshd = Sshd::start(Flavor::Plain);
    let mut c = connect(&sshd);
    upload(&mut c, b"a", b"1");
    sshd.stop();
    let e = c
        .upload(b"b", &mut &b"2"[..], 1, &sha(b"2"), &ATTRS)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert_eq!(connect_err(&options(&sshd)).kind(), ErrorKind::Transient);
    sshd.restart();
    let mut c = connect(&sshd);
    upload(&mut c, b"b", b"2");
}

#[test]
fn private_key_readable_by_others_is_refused() {
    let sshd = Sshd::start(Flavor::Plain);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    fs::copy(sshd.identity(), &key).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let mut o = options(&sshd);
    o.identities = vec![key.clone()];
    let e = connect_err(&o);
    assert_eq!(e.kind(), ErrorKind::Auth);
    assert!(e.to_string().contains("too open"), "{e}");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    Connection::connect(&o).unwrap();
}

#[test]
fn encrypted_key_needs_its_passphrase() {
    let sshd = Sshd::start(Flavor::Plain);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    common::sshd::keygen(&key, "s3cret passphrase");
    sshd.authorize(&key.with_extension("pub"));
    let mut o = options(&sshd);
    o.identities = vec![key.clone(), PathBuf::from("/nonexistent/id_rsa")];
    let e = connect_err(&o);
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::Auth);
    let msg = e.to_string();
    assert!(msg.contains("is encrypted: give its passphrase"), "{msg}");
    assert!(msg.contains("/nonexistent/id_rsa (not found)"), "{msg}");
    o.passphrase = Some(SecretSource::Given(Secret::new("wrong".into())));
    let msg = connect_err(&o).to_string();
    assert!(msg.contains("passphrase given does not open it"), "{msg}");
    assert!(!msg.contains("wrong"), "the passphrase leaked: {msg}");
    o.passphrase = Some(SecretSource::Given(Secret::new("s3cret passphrase".into())));
    Connection::connect(&o).unwrap();
}

#[test]
fn weak_only_server_is_refused_naming_its_offer() {
    let sshd = Sshd::start_with(
        Flavor::Plain,
        "Ciphers aes128-cbc\nKexAlgorithms diffie-hellman-group14-sha1\nMACs hmac-sha1\n",
    );
    let e = connect_err(&options(&sshd));
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::HostKey, "{e}");
    let msg = e.to_string();
    for want in [
        "diffie-hellman-group14-sha1",
        "aes128-cbc",
        "hmac-sha1",
        "policy",
    ] {
        assert!(msg.contains(want), "{msg} lacks {want}");
    }
}

#[test]
fn full_remote_disk_is_reported_as_no_space() {
    let sshd = Sshd::start(Flavor::Plain);
    let small = on_disk(&sshd, b"small");
    fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let mut c = connect(&sshd);
    let data = pattern(3, 3 << 20);
    let e = c
        .upload(
            b"small/big",
            &mut &data[..],
            data.len() as u64,
            &sha(&data),
            &ATTRS,
        )
        .unwrap_err();
    eprintln!("{e}");
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    assert_eq!(e.kind().reach(), Reach::Offline);
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "temp removed");
    upload(&mut c, b"small/fits", &data[..1 << 20]);
}

/// Figures for the report: `cargo test --release --test remote -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_upload_and_verify() {
    let size = 64 << 20;
    let data = pattern(9, size);
    for flavor in [Flavor::Plain, Flavor::Chroot] {
        let sshd = Sshd::start(flavor);
        let mut c = connect(&sshd);
        let method = c.verify_method();
        let t = Instant::now();
        let r = upload(&mut c, b"big", &data);
        let total = t.elapsed();
        let t = Instant::now();
        c.hash(&[b"big"]).unwrap();
        let verify = t.elapsed();
        let mb = size as f64 / (1 << 20) as f64;
        println!(
            "{flavor:?}: {} upload of 64 MiB: {:.2}s total ({:.0} MB/s incl. verify); \
             verify alone by {method}: {:.2}s; negotiated {}",
            r.verified_by,
            total.as_secs_f64(),
            mb / total.as_secs_f64(),
            verify.as_secs_f64(),
            c.negotiated()
        );
        let t = Instant::now();
        for i in 0..200 {
            upload(&mut c, format!("small{i}").as_bytes(), &data[..4096]);
        }
        println!(
            "{flavor:?}: 200 x 4 KiB uploads: {:.0} files/s",
            200.0 / t.elapsed().as_secs_f64()
        );
    }
}
