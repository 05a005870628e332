//! `ftpsync verify` on a real mount mirrored to a real OpenSSH sshd on 127.0.0.1: it finds
//! what changed on the remote behind ftpsync's back, and `--repair` then `flush` mends it.

mod common;

use common::mirror_tree::assert_mirrored;
use common::{ftpsync, CmdOut, Mount};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn verify(m: &Mount, extra: &[&str]) -> CmdOut {
    let mut args = vec!["verify".to_string(), m.mnt.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    ftpsync(args)
}

fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/deep")).expect("mkdir");
    for i in 0..40 {
        let data = format!("file {i} ").repeat(i * 11 + 1);
        fs::write(root.join(format!("docs/f{i}.txt")), data).expect("write");
    }
    fs::write(root.join("docs/deep/changed.txt"), b"the local truth").expect("write");
    fs::write(root.join("deleted.txt"), b"will vanish remotely").expect("write");
    fs::write(root.join("name with\nnewline"), b"hostile but fine").expect("write");
    std::os::unix::fs::symlink("docs/f1.txt", root.join("link")).expect("symlink");
}

#[test]
fn verify_finds_remote_changes_and_repair_then_flush_mends_them() {
    let mut m = Mount::new();
    write_tree(&m.mnt);
    m.flush();
    let out = verify(&m, &[]);
    assert!(
        out.ok(),
        "verify of a mirrored tree failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.contains("the remote equals the local tree"),
        "{}",
        out.stdout
    );

    // Behind ftpsync's back: one file changed (same size), one deleted, one added.
    let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
    fs::write(remote.join("docs/deep/changed.txt"), b"the remote lie!").expect("alter");
    // A rewrite within the upload's second would keep the mtime whole seconds can see.
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(remote.join("docs/deep/changed.txt"))
        .and_then(|f| f.set_modified(long_ago))
        .expect("set the remote mtime");
    fs::remove_file(remote.join("deleted.txt")).expect("delete");
    fs::write(remote.join("docs/extra.txt"), b"nobody asked").expect("add");

    let out = verify(&m, &["--json"]);
    assert!(!out.ok(), "verify passed a changed remote:\n{}", out.stdout);
    let doc: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(doc["equal"], false);
    let path = |p: &str| serde_json::json!({"path": p, "path_hex": hex::encode(p)});
    assert_eq!(
        doc["missing"],
        serde_json::json!([path("deleted.txt")]),
        "{doc}"
    );
    assert_eq!(
        doc["extra"],
        serde_json::json!([path("docs/extra.txt")]),
        "{doc}"
    );
    let different = doc["different"].as_array().expect("different");
    assert_eq!(different.len(), 1, "{doc}");
    assert_eq!(different[0]["path"], "docs/deep/changed.txt");
    assert_eq!(
        different[0]["path_hex"],
        hex::encode("docs/deep/changed.txt")
    );
    // The server set its own mtime when the file was rewritten: both are reported.
    let what = different[0]["what"].to_string();
    assert!(what.contains("sha256") && what.contains("mtime"), "{what}");

    let human = verify(&m, &[]);
    assert!(!human.ok());
    for line in [
        "missing   deleted.txt",
        "extra     docs/extra.txt",
        "differs   docs/deep/changed.txt: mtime",
    ] {
        assert!(
            human.stdout.contains(line),
            "no {line:?} in:\n{}",
            human.stdout
        );
    }

    // More for the repair: an extra tree, a directory where a file belongs, a mode changed.
    fs::create_dir_all(remote.join("junk/inner")).expect("mkdir");
    fs::write(remote.join("junk/inner/x.txt"), b"x").expect("add");
    fs::remove_file(remote.join("docs/f3.txt")).expect("rm");
    fs::create_dir(remote.join("docs/f3.txt")).expect("dir in the way");
    fs::write(remote.join("docs/f3.txt/under"), b"y").expect("add");
    fs::set_permissions(
        remote.join("docs/f4.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    let out = verify(&m, &["--repair"]);
    assert!(!out.ok(), "verify --repair must still report what it found");
    for line in [
        "extra     junk",
        "differs   docs/f3.txt: kind",
        "differs   docs/f4.txt: mode",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    }
    m.flush();
    let out = verify(&m, &[]);
    assert!(
        out.ok(),
        "verify after --repair and flush:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("kept"),
        "repair left a conflict copy:\n{}",
        out.stdout
    );
    assert_mirrored(&m);
    assert_eq!(
        fs::read(remote.join("docs/deep/changed.txt")).expect("repaired"),
        b"the local truth"
    );
    assert!(!remote.join("docs/extra.txt").exists());
    assert!(!remote.join("junk").exists());
    assert!(remote.join("docs/f3.txt").is_file());
    m.unmount();
}
