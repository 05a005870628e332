//! Secure by default, end to end: a real FUSE mount and a real OpenSSH sshd on 127.0.0.1.
//! Host keys are pinned only by `ftpsync trust`; secrets come from credential files or
//! commands and show up nowhere; uploads keep to `--bwlimit`.

mod common;

use common::mirror_tree::assert_mirrored;
use common::sshd::{fingerprint, keygen};
use common::{connection_of, ftpsync, run_with_timeout, CmdOut, Mount};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn trust(m: &Mount, extra: &[&str]) -> CmdOut {
    let sshd = m.sshd.as_ref().expect("sshd");
    let mut args: Vec<String> = vec!["trust".into(), "--state-dir".into()];
    args.push(m.state.display().to_string());
    // The same files as the mount: none but the state dir's own.
    args.push("--known-hosts".into());
    args.push(m.root.join("no-known-hosts").display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(sshd.remote_url());
    ftpsync(args)
}

fn pinned(m: &Mount) -> String {
    fs::read_to_string(m.state.join("known_hosts")).unwrap_or_default()
}

#[test]
fn only_trust_pins_a_key_and_a_swapped_key_needs_trust_replace() {
    let mut m = Mount::builder()
        .no_known_hosts()
        .arg("--drain-timeout")
        .arg("2")
        .mount();
    let fp = m.sshd.as_ref().expect("sshd").host_fingerprint();
    fs::write(m.path("a.txt"), b"written before the key was trusted").expect("write");

    // mount never pins: the unknown key is refused, with the command that pins it.
    assert!(
        !m.flush_for(3).ok(),
        "flush succeeded against an unpinned server"
    );
    let st = m.wait_mirror_status(Duration::from_secs(60), "the refusal", |s| {
        connection_of(s).contains(&fp)
    });
    let conn = connection_of(&st);
    assert!(
        conn.contains("unknown") && conn.contains("ftpsync trust --state-dir"),
        "{conn}"
    );
    assert!(conn.contains(&format!("--fingerprint {fp}")), "{conn}");
    assert!(pinned(&m).is_empty(), "mount pinned a key by itself");

    // A wrong fingerprint pins nothing and fails.
    let out = trust(
        &m,
        &[
            "--fingerprint",
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
        ],
    );
    assert!(
        !out.ok(),
        "trust accepted a wrong fingerprint: {}",
        out.stdout
    );
    assert!(out.stderr.contains("does not match"), "{}", out.stderr);
    assert!(
        pinned(&m).is_empty(),
        "a wrong fingerprint pinned: {}",
        pinned(&m)
    );
    // No terminal, no fingerprint: nothing is pinned either.
    let out = trust(&m, &[]);
    assert!(
        !out.ok() && out.stderr.contains("--fingerprint"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(&fp),
        "trust did not show the key: {}",
        out.stdout
    );
    assert!(pinned(&m).is_empty());

    trust(&m, &["--fingerprint", &fp]).assert_ok();
    let mode = fs::metadata(m.state.join("known_hosts"))
        .expect("known_hosts")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    m.flush();
    assert_mirrored(&m);

    // status shows the server and what was negotiated: modern algorithms only.
    let server = m.mirror_status()["server"].clone();
    assert_eq!(server["host_key"]["fingerprint"], fp.as_str(), "{server}");
    let kex = server["algorithms"]["kex"].as_str().unwrap_or("");
    assert!(
        ftpsync::remote::KEX_ALGORITHMS.split(',').any(|k| k == kex),
        "{server}"
    );
    let cipher = server["algorithms"]["cipher"][0].as_str().unwrap_or("");
    assert!(
        ftpsync::remote::CIPHERS.split(',').any(|c| c == cipher),
        "{server}"
    );
    let human = ftpsync(["status".into(), m.state.display().to_string()]);
    assert!(
        human.stdout.contains(&format!("kex {kex}")),
        "{}",
        human.stdout
    );

    // The server's key changes: uploads stop, writes go on, status names the new key.
    m.sshd.as_mut().expect("sshd").swap_host_key();
    let new_fp = m.sshd.as_ref().expect("sshd").host_fingerprint();
    fs::write(m.path("b.txt"), b"written while the new key was refused").expect("write");
    assert!(!m.flush_for(3).ok());
    let st = m.wait_mirror_status(Duration::from_secs(60), "the new key", |s| {
        connection_of(s).contains(&new_fp)
    });
    assert!(connection_of(&st).contains("trust --replace"), "{st}");
    assert!(!m
        .sshd
        .as_ref()
        .expect("sshd")
        .remote_root_on_disk()
        .join("b.txt")
        .exists());

    // Replacing needs --replace; then the mirror converges with nothing lost.
    let out = trust(&m, &["--fingerprint", &new_fp]);
    assert!(
        !out.ok() && out.stderr.contains("different key is pinned"),
        "{}",
        out.stderr
    );
    trust(&m, &["--replace", "--fingerprint", &new_fp]).assert_ok();
    let pins = pinned(&m);
    assert_eq!(pins.lines().count(), 1, "pins after --replace: {pins}");
    assert_eq!(fingerprint(&m.state.join("known_hosts")), new_fp);
    m.flush();
    assert_mirrored(&m);
    m.unmount();

    // The audit log tells the story: the refusals with each key, the pins, the connections.
    let events = audit_events(&m);
    let has = |event: &str, fp: &str| {
        events
            .iter()
            .any(|e| e["event"] == event && e["fingerprint"].as_str() == Some(fp))
    };
    assert!(
        has("host_key_refused", &fp),
        "no refusal of the unknown key audited"
    );
    assert!(
        has("host_key_refused", &new_fp),
        "no refusal of the swapped key audited"
    );
    assert!(
        has("trust", &fp) && has("trust", &new_fp),
        "pins not audited"
    );
    let connected = events.iter().any(|e| {
        e["event"] == "connect" && e["host_key"]["fingerprint"].as_str() == Some(new_fp.as_str())
    });
    assert!(connected, "the connection with the new key is not audited");
    audit_check(&m).assert_ok();
}

/// Every line of the audit log, parsed (`ftpsync audit --json`).
fn audit_events(m: &Mount) -> Vec<serde_json::Value> {
    let out = ftpsync([
        "audit".into(),
        m.state.display().to_string(),
        "--json".into(),
    ]);
    out.assert_ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn audit_check(m: &Mount) -> CmdOut {
    ftpsync([
        "audit".into(),
        m.state.display().to_string(),
        "--check".into(),
    ])
}

#[test]
fn audit_log_records_each_change_and_check_names_an_edited_or_removed_line() {
    let mut m = Mount::new();
    fs::create_dir(m.path("dir")).expect("mkdir");
    fs::write(m.path("dir/a.txt"), b"alpha").expect("write");
    fs::write(m.path("gone.txt"), b"to be deleted").expect("write");
    m.flush();
    fs::rename(m.path("dir"), m.path("moved")).expect("rename");
    fs::remove_file(m.path("gone.txt")).expect("unlink");
    m.flush();
    m.unmount();

    let events = audit_events(&m);
    let find = |event: &str, key: &str, value: &str| {
        events
            .iter()
            .find(|e| e["event"] == event && e[key].as_str() == Some(value))
            .cloned()
            .unwrap_or_else(|| panic!("no {event} with {key}={value} in {events:#?}"))
    };
    let confirmed = find("confirmed", "path", "dir/a.txt");
    assert_eq!(confirmed["sha256"], common::sha256_hex(b"alpha"));
    assert_eq!(confirmed["size"], 5);
    assert!(confirmed["verified_by"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    find("rename", "to", "moved");
    find("delete", "path", "gone.txt");
    let human = ftpsync(["audit".into(), m.state.display().to_string()]);
    assert!(
        human.stdout.contains("confirmed") && human.stdout.contains("dir/a.txt"),
        "{}",
        human.stdout
    );
    audit_check(&m).assert_ok();

    let log = m.state.join("audit.log");
    let original = fs::read_to_string(&log).expect("audit.log");
    let lines: Vec<&str> = original.lines().collect();
    let target = lines
        .iter()
        .position(|l| l.contains("\"confirmed\"") && l.contains("dir/a.txt"))
        .expect("the confirmed line");
    assert!(
        target + 1 < lines.len(),
        "the edited line must not be the last one"
    );

    // An edited line: the sha256 of the confirmed file, one digit changed.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let digest = common::sha256_hex(b"alpha");
    let forged = format!(
        "{}{}",
        if digest.starts_with('0') { "1" } else { "0" },
        &digest[1..]
    );
    edited[target] = edited[target].replace(&digest, &forged);
    fs::write(&log, edited.join("\n") + "\n").expect("edit");
    let out = audit_check(&m);
    assert!(!out.ok(), "an edited line passed the check");
    let line_no = format!("line {}", target + 1);
    assert!(
        out.stderr.contains(&line_no),
        "the check does not name {line_no}: {}",
        out.stderr
    );

    // A removed line.
    let mut removed: Vec<&str> = lines.clone();
    removed.remove(target);
    fs::write(&log, removed.join("\n") + "\n").expect("remove");
    let out = audit_check(&m);
    assert!(!out.ok(), "a removed line passed the check");
    assert!(out.stderr.contains("audit.log line"), "{}", out.stderr);

    // The last line removed: only the head file can tell.
    fs::write(&log, lines[..lines.len() - 1].join("\n") + "\n").expect("truncate");
    assert!(
        !audit_check(&m).ok(),
        "a removed last line passed the check"
    );
    fs::write(&log, &original).expect("restore");
    audit_check(&m).assert_ok();
    let mode = fs::metadata(&log).expect("audit.log").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A directory the engine makes on its own, as the parent an upload or a move needs, is sent
/// as much as one the user made: the audit log names it too.
#[test]
fn a_parent_the_engine_makes_again_is_audited() {
    let m = Mount::new();
    fs::create_dir(m.path("dir")).expect("mkdir");
    fs::write(m.path("dir/a"), b"a").expect("write");
    m.flush();
    let mkdirs = || {
        audit_events(&m)
            .into_iter()
            .filter(|e| e["event"] == "mkdir" && e["path"] == "dir")
            .count()
    };
    let before = mkdirs();
    let sshd = m.sshd.as_ref().expect("sshd");
    // Removed on the server behind ftpsync's back: the next upload beneath makes it again.
    fs::remove_dir_all(sshd.remote_root_on_disk().join("dir")).expect("remove on the server");
    fs::write(m.path("dir/b"), b"b").expect("write");
    m.flush();
    assert!(sshd.remote_root_on_disk().join("dir/b").is_file());
    assert_eq!(
        mkdirs(),
        before + 1,
        "made again for the upload: {before} before"
    );
}

#[test]
fn a_symlink_planted_on_the_server_is_never_written_through_and_is_audited() {
    // What is refused cannot drain at unmount: do not wait the default 30 s for it.
    let mut m = Mount::builder().arg("--drain-timeout").arg("2").mount();
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/first.txt"), b"before the plant").expect("write");
    m.flush();
    let outside = tempfile::tempdir().expect("tempdir");
    let remote_d = m
        .sshd
        .as_ref()
        .expect("sshd")
        .remote_root_on_disk()
        .join("d");
    fs::remove_dir_all(&remote_d).expect("rm remote d");
    std::os::unix::fs::symlink(outside.path(), &remote_d).expect("plant");

    fs::write(m.path("d/second.txt"), b"must not leave the root").expect("write");
    // A new directory beneath: it must not be created through the link either.
    fs::create_dir(m.path("d/sub")).expect("mkdir");
    fs::write(m.path("d/sub/third.txt"), b"nor this").expect("write");
    fs::write(m.path("d/first.txt"), b"changed after the plant").expect("write");
    // Five seconds: several retries of each refused upload, on every connection.
    let flushed = m.flush_for(5).ok();
    let entries: Vec<_> = fs::read_dir(outside.path())
        .expect("outside")
        .flatten()
        .collect();
    assert!(
        entries.is_empty(),
        "written through the planted link: {entries:?}"
    );
    assert!(!flushed, "flush succeeded through a planted symlink");
    let st = m.mirror_status();
    let failures = st["failures"].to_string();
    assert!(
        failures.contains("symlink"),
        "status shows no refusal: {st}"
    );
    m.unmount();
    let refused: Vec<_> = audit_events(&m)
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .collect();
    assert!(
        refused.iter().any(|e| e["path"] == "d/second.txt"
            && e["reason"].as_str().is_some_and(|r| r.contains("symlink"))),
        "the refusal is not audited: {refused:?}"
    );
}

/// A key with a passphrase, authorised on the mount's sshd; returns (key, passphrase).
fn encrypted_key(m: &Mount, dir: &Path) -> (PathBuf, &'static str) {
    let pass = "pp-7f3e1a-correct-horse";
    let key = dir.join("enc_key");
    keygen(&key, pass);
    m.sshd
        .as_ref()
        .expect("sshd")
        .authorize(&key.with_extension("pub"));
    (key, pass)
}

fn private_file(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_path_buf()
}

fn assert_nowhere(m: &Mount, secret: &str) {
    let json = serde_json::to_string(&m.status_json()).expect("json");
    let human = ftpsync(["status".into(), m.state.display().to_string()]).stdout;
    let audit = ftpsync(["audit".into(), m.state.display().to_string()]).stdout;
    assert!(
        audit.contains("confirmed"),
        "the audit log is empty: {audit}"
    );
    for (what, text) in [
        ("log", m.daemon_log()),
        ("status --json", json),
        ("status", human),
        ("audit", audit),
    ] {
        assert!(!text.contains(secret), "the passphrase is in the {what}");
    }
    for entry in fs::read_dir(&m.state).expect("state dir").flatten() {
        let bytes = fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the passphrase is in {}",
            entry.path().display()
        );
    }
}

fn mirror_with_passphrase(how: &str) {
    let keys = tempfile::tempdir().expect("tempdir");
    let pass_file = keys.path().join("pass");
    let mut m = Mount::builder().identity(&keys.path().join("enc_key"));
    m = match how {
        "file" => m
            .arg("--passphrase-file")
            .arg(&pass_file.display().to_string()),
        _ => m
            .arg("--passphrase-command")
            .arg(&format!("cat '{}'", pass_file.display())),
    };
    let mut m = m.prepare();
    let (_key, pass) = encrypted_key(&m, keys.path());
    private_file(&pass_file, &format!("{pass}\n"));
    m.mount();
    fs::write(m.path("secret-free.txt"), b"sent with an encrypted key").expect("write");
    m.flush();
    assert_mirrored(&m);
    let auth = m.mirror_status()["server"]["auth"].clone();
    assert!(
        auth.as_str().is_some_and(|a| a.contains("enc_key")),
        "{auth}"
    );
    assert_nowhere(&m, pass);
    m.unmount();
}

#[test]
fn encrypted_key_opens_with_a_passphrase_file() {
    mirror_with_passphrase("file");
}

#[test]
fn encrypted_key_opens_with_a_passphrase_command() {
    mirror_with_passphrase("command");
}

#[test]
fn open_key_and_passphrase_files_and_a_config_with_a_password_are_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let pass_file = keys.path().join("pass");
    let m = Mount::builder()
        .identity(&keys.path().join("enc_key"))
        .arg("--passphrase-file")
        .arg(&pass_file.display().to_string())
        .prepare();
    let (key, pass) = encrypted_key(&m, keys.path());
    private_file(&pass_file, pass);
    let refused = |why: &str| {
        let out = run_with_timeout(m.mount_command(), Duration::from_secs(30));
        assert!(!out.ok(), "mount accepted {why}");
        assert!(!common::is_ftpsync_mounted(&m.mnt));
        out.stderr
    };
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = refused("a 0644 key");
    assert!(
        e.contains("0644 are too open") && e.contains("enc_key"),
        "{e}"
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(&pass_file, fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = refused("a 0644 passphrase file");
    assert!(e.contains("0644 are too open") && e.contains("pass"), "{e}");
    assert!(!e.contains(pass), "the passphrase is in the error: {e}");

    let config = private_file(
        &keys.path().join("c.toml"),
        &format!("password = \"{pass}\"\n"),
    );
    let out = ftpsync([
        "mount".into(),
        "--config".into(),
        config.display().to_string(),
        m.local.display().to_string(),
        m.sshd.as_ref().expect("sshd").remote_url(),
    ]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("`password`") && out.stderr.contains("password_file"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(pass), "the password is in the error");
}

#[test]
fn bwlimit_5m_keeps_a_50mib_upload_near_10_s() {
    let mut m = Mount::builder().arg("--bwlimit").arg("5M").mount();
    // Incompressible and not all zeros: nothing on the way can shortcut it.
    let data: Vec<u8> = common::pattern(7, 50 << 20);
    fs::write(m.path("big.bin"), &data).expect("write");
    // The clock starts with the upload's first bytes, so it measures the upload alone.
    m.wait_mirror_status(Duration::from_secs(30), "the upload starting", |s| {
        s["bytes_sent"].as_u64().unwrap_or(0) > 0
    });
    let start = Instant::now();
    m.flush();
    let took = start.elapsed().as_secs_f64();
    eprintln!("50 MiB at --bwlimit 5M: {took:.2} s");
    assert!(
        (9.0..=11.0).contains(&took),
        "50 MiB at 5 MiB/s took {took:.2} s"
    );
    assert_mirrored(&m);
    m.unmount();
}

#[test]
fn a_password_asked_after_the_key_comes_from_the_credential_file_only() {
    use common::sshd::{Flavor, TWO_FACTOR_PASSWORD};
    // Without a password source the login stops after the key: uploads halt, writes go on.
    let mut m = Mount::builder()
        .flavor(Flavor::KeyAndPassword)
        .arg("--drain-timeout")
        .arg("2")
        .mount();
    fs::write(m.path("a.txt"), b"waits for the second factor").expect("write");
    assert!(!m.flush_for(3).ok(), "flush succeeded without the password");
    let st = m.wait_mirror_status(Duration::from_secs(60), "the refusal", |s| {
        connection_of(s).contains("further method")
    });
    assert!(connection_of(&st).contains("halted"), "{st}");
    m.unmount();

    let dir = tempfile::tempdir().expect("tempdir");
    let pw = private_file(&dir.path().join("pw"), &format!("{TWO_FACTOR_PASSWORD}\n"));
    let mut m = Mount::builder()
        .flavor(Flavor::KeyAndPassword)
        .arg("--password-file")
        .arg(&pw.display().to_string())
        .mount();
    fs::write(m.path("b.txt"), b"sent after key and password").expect("write");
    m.flush();
    assert_mirrored(&m);
    let auth = m.mirror_status()["server"]["auth"].clone();
    let auth = auth.as_str().unwrap_or("");
    assert!(
        auth.contains("key") && auth.ends_with("+ password"),
        "{auth}"
    );
    assert_nowhere(&m, TWO_FACTOR_PASSWORD);
    m.unmount();
}
