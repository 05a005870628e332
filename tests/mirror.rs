//! The mirror, end to end: a real FUSE mount, a real OpenSSH sshd on 127.0.0.1, and the
//! remote tree on disk compared with the local one after `ftpsync flush`.

mod common;

use common::mirror_tree::assert_mirrored;
use common::Mount;
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn write_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{}/sub{}", i % 7, i % 3));
        fs::create_dir_all(&dir).expect("mkdir");
        let data: Vec<u8> = (0..(i * 37) % 5000).map(|j| (i + j) as u8).collect();
        fs::write(dir.join(format!("f{i}.dat")), data).expect("write");
    }
}

fn mirror_a_tree(m: Mount) {
    let mut m = m;
    write_tree(&m.mnt, 120);
    fs::write(m.mnt.join("big.bin"), vec![7u8; 3 << 20]).expect("big");
    fs::set_permissions(m.mnt.join("big.bin"), fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink("/etc/passwd", m.mnt.join("passwd-link")).expect("symlink");
    std::os::unix::fs::symlink("d0", m.mnt.join("rel-link")).expect("symlink");
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}

#[test]
fn tree_reaches_the_remote_equal_exec_verify() {
    mirror_a_tree(Mount::new());
}

#[test]
fn tree_reaches_the_remote_equal_readback_verify_in_chroot() {
    mirror_a_tree(Mount::builder().chroot().mount());
}

#[test]
fn renames_deletes_and_overwrites_converge_and_a_directory_moves_as_one_rename() {
    let mut m = Mount::new();
    let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
    write_tree(&m.mnt.join("tree"), 500);
    fs::write(m.mnt.join("doc.txt"), b"version one").expect("write");
    fs::write(m.mnt.join("gone.txt"), b"to be deleted").expect("write");
    m.flush();
    assert_mirrored(&m);
    let inode_before = fs::metadata(remote.join("tree/d3/sub0/f3.dat"))
        .expect("remote file")
        .ino();

    fs::rename(m.mnt.join("tree"), m.mnt.join("moved")).expect("rename dir");
    fs::remove_file(m.mnt.join("gone.txt")).expect("unlink");
    // Editor-style save: temp, fsync, rename over the target.
    let tmp = m.mnt.join(".doc.txt.swp");
    fs::write(&tmp, b"version two, longer").expect("write temp");
    fs::File::open(&tmp)
        .expect("open")
        .sync_all()
        .expect("fsync");
    fs::rename(&tmp, m.mnt.join("doc.txt")).expect("rename over");
    // Create then delete: never reaches the remote (and must not break anything).
    fs::write(m.mnt.join("ephemeral"), b"x").expect("write");
    fs::remove_file(m.mnt.join("ephemeral")).expect("unlink");
    m.flush();
    assert_mirrored(&m);
    let inode_after = fs::metadata(remote.join("moved/d3/sub0/f3.dat"))
        .expect("moved remote file")
        .ino();
    assert_eq!(
        inode_before, inode_after,
        "the directory was renamed remotely, not uploaded again"
    );
    let leftovers: Vec<_> = fs::read_dir(&remote)
        .expect("remote root")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes().windows(7).any(|w| w == b"ftpsync"))
        .filter(|n| n.as_bytes() != common::mirror_tree::ROOT_MARKER)
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp or conflict files left on the remote: {leftovers:?}"
    );
    m.unmount();
}

#[test]
fn hostile_names_reach_the_remote_intact() {
    let mut m = Mount::new();
    let long = vec![b'L'; 255];
    let names = common::HOSTILE_NAMES
        .iter()
        .copied()
        .chain([long.as_slice()]);
    for (i, n) in names.enumerate() {
        fs::write(m.mnt.join(OsStr::from_bytes(n)), format!("content {i}"))
            .expect("write hostile name");
    }
    m.flush();
    assert_mirrored(&m);
    let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
    assert!(
        !remote.join("pwned-by-name").exists(),
        "a name was run as a command on the remote"
    );
    m.unmount();
}

#[test]
fn state_and_hash_are_readable_as_extended_attributes() {
    let mut m = Mount::new();
    let p = m.mnt.join("f.txt");
    fs::write(&p, b"attribute me").expect("write");
    m.flush();
    let get = |name: &str| {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: valid C strings and buffer.
        let r =
            unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(
            r >= 0,
            "getxattr {name}: {}",
            std::io::Error::last_os_error()
        );
        buf.truncate(r as usize);
        String::from_utf8(buf).unwrap()
    };
    assert_eq!(get("user.ftpsync.state"), "confirmed");
    assert_eq!(
        get("user.ftpsync.sha256"),
        hex::encode(Sha256::digest(b"attribute me"))
    );
    m.unmount();
}

#[test]
fn sshd_down_then_back_writes_go_on_locally_and_the_remote_converges() {
    let mut m = Mount::new();
    fs::write(m.mnt.join("before.txt"), b"before the outage").expect("write");
    m.flush();
    m.sshd.as_mut().expect("sshd").stop();
    let started = std::time::Instant::now();
    for i in 0..50 {
        fs::write(
            m.mnt.join(format!("during-{i}.txt")),
            format!("written while down {i}"),
        )
        .expect("local write");
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "writes blocked on the remote"
    );
    let out = common::ftpsync([
        "flush".as_ref(),
        m.state.as_os_str(),
        "--timeout".as_ref(),
        "2".as_ref(),
    ]);
    assert!(!out.ok(), "flush claimed success while sshd was down");
    m.sshd.as_mut().expect("sshd").restart();
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}

#[test]
fn hard_links_of_mirrored_files_arrive_as_copies() {
    let mut m = Mount::new();
    fs::write(m.mnt.join("a.txt"), b"linked contents").expect("write");
    m.flush();
    fs::hard_link(m.mnt.join("a.txt"), m.mnt.join("b.txt")).expect("link");
    m.flush();
    assert_mirrored(&m);
    m.unmount();
}

#[test]
fn a_rename_onto_a_remote_file_we_did_not_put_there_keeps_it_aside() {
    let mut m = Mount::new();
    let remote = m.sshd.as_ref().expect("sshd").remote_root_on_disk();
    fs::write(m.mnt.join("mine.txt"), b"ours").expect("write");
    m.flush();
    fs::write(remote.join("theirs.txt"), b"someone else's file").expect("plant");
    fs::rename(m.mnt.join("mine.txt"), m.mnt.join("theirs.txt")).expect("rename");
    m.flush();
    assert_eq!(
        fs::read(remote.join("theirs.txt")).expect("target"),
        b"ours"
    );
    let kept: Vec<_> = fs::read_dir(&remote)
        .expect("remote root")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .as_bytes()
                .starts_with(b"theirs.txt.ftpsync-conflict-")
        })
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the remote's own file is kept aside exactly once"
    );
    assert_eq!(
        fs::read(kept[0].path()).expect("kept"),
        b"someone else's file"
    );
    m.unmount();
}

#[test]
fn a_newer_change_cancels_the_upload_in_flight() {
    let mut m = Mount::new();
    let big = m.mnt.join("big.bin");
    // 512 MiB take seconds to send over loopback SFTP; the rewrite comes long before.
    let chunk = vec![0x5au8; 1 << 20];
    {
        use std::io::Write;
        let mut f = fs::File::create(&big).expect("create");
        for _ in 0..512 {
            f.write_all(&chunk).expect("write");
        }
    }
    let started = std::time::Instant::now();
    loop {
        let st = m.status_json();
        // The upload is under way: bytes are being read for it.
        if st["mirror"]["bytes_sent"].as_u64().unwrap_or(0) > 16 << 20 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "upload never started: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Same size, one byte changed where the upload has already been: only the hash at the
    // end of the transfer would notice, unless the newer version cancels it.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&big).expect("open");
        f.write_all_at(b"X", 0).expect("pwrite");
    }
    m.flush();
    assert_mirrored(&m);
    let sent = m.status_json()["mirror"]["bytes_sent"]
        .as_u64()
        .expect("bytes_sent");
    assert!(
        sent < (512 << 20) * 3 / 2,
        "{sent} bytes read for uploads: the first 512 MiB upload ran to its end"
    );
    m.unmount();
}

#[test]
fn everyday_writes_leave_no_warning_in_the_log() {
    // Python's open() asks every file whether it is a terminal (an ioctl): answered quietly.
    let mut m = Mount::new();
    let p = m.mnt.join("script-output.txt");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sys; open(sys.argv[1], 'w').write('hello')")
        .arg(&p)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.flush();
    assert_mirrored(&m);
    let log = fs::read_to_string(m.state.join("ftpsync.log")).unwrap_or_default();
    let noise: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        noise.is_empty(),
        "warnings in a fault-free run:\n{}",
        noise.join("\n")
    );
    m.unmount();
}
