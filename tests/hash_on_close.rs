//! Hash on close through the mount: the SHA-256 the daemon takes when the last writer closes
//! must be that of the bytes on disk, whatever wrote them (write(2), a shared mapping, several
//! writers at once) and also for files changed while nothing was mounted.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::sys::{ftruncate, open, pwrite, rename, truncate, ts, utimensat};
use common::{sha256_file, sha256_hex, Mount};

#[test]
fn hash_on_close() {
    hash_on_close_in("passthrough");
}

#[test]
fn hash_on_close_nopassthrough() {
    hash_on_close_in("nopassthrough");
}

fn hash_on_close_in(mode: &str) {
    let m = Mount::builder().opt(mode).mount();
    let data1 = common::pattern(21, 300_000);
    fs::write(m.mnt.join("h.bin"), &data1).expect("write h.bin");
    fs::create_dir(m.mnt.join("sub")).expect("mkdir");
    fs::write(m.mnt.join("sub/e.txt"), b"").expect("write empty");
    m.flush();
    let st = m.status_json();
    common::assert_hash(&st, b"h.bin", &data1);
    common::assert_hash(&st, b"sub/e.txt", b"");
    // overwrite in place (O_TRUNC), close, flush: the new hash
    let data2 = common::pattern(22, 123_457);
    fs::write(m.mnt.join("h.bin"), &data2).expect("overwrite");
    m.flush();
    common::assert_hash(&m.status_json(), b"h.bin", &data2);
    // partial overwrite without truncation
    {
        let fd = open(&m.mnt.join("h.bin"), libc::O_WRONLY, 0).expect("open");
        pwrite(&fd, 100, b"PATCHED").expect("pwrite");
    }
    let mut data3 = data2.clone();
    data3[100..107].copy_from_slice(b"PATCHED");
    m.flush();
    common::assert_hash(&m.status_json(), b"h.bin", &data3);
    // truncate by path (no open/close of a writer)
    truncate(&m.mnt.join("h.bin"), 50).expect("truncate");
    m.flush();
    common::assert_hash(&m.status_json(), b"h.bin", &data3[..50]);
    // a rename carries the hash to the new path
    rename(&m.mnt.join("h.bin"), &m.mnt.join("moved.bin")).expect("rename");
    m.flush();
    common::assert_hash(&m.status_json(), b"moved.bin", &data3[..50]);
    // status agrees with what is on disk in the backing dir
    assert_eq!(
        sha256_file(&m.local.join("moved.bin")),
        sha256_hex(&data3[..50])
    );
}

/// Writes through a shared mapping reach the file without write(2) calls (and,
/// with passthrough, without the daemon seeing any write): the hash taken at
/// close must still be that of the mapped data.
fn mmap_write_is_hashed_in(mode: &str) {
    let m = Mount::builder().opt(mode).mount();
    let p = m.mnt.join("mapped.bin");
    let len = 1 << 20;
    let data = common::pattern(31, len);
    {
        let fd = open(&p, libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o644).expect("open");
        ftruncate(&fd, len as i64).expect("ftruncate");
        // SAFETY: a fresh shared mapping of `len` bytes of our own file.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.0,
                0,
            );
            assert_ne!(
                addr,
                libc::MAP_FAILED,
                "mmap: {}",
                std::io::Error::last_os_error()
            );
            std::ptr::copy_nonoverlapping(data.as_ptr(), addr.cast::<u8>(), len);
            // no msync: munmap + close must be enough
            assert_eq!(libc::munmap(addr, len), 0, "munmap");
        }
    }
    m.flush();
    assert_eq!(
        sha256_file(&m.local.join("mapped.bin")),
        sha256_hex(&data),
        "backing content"
    );
    common::assert_hash(&m.status_json(), b"mapped.bin", &data);

    // a mapping that outlives close(): the pages are written after release
    let data2 = common::pattern(32, len);
    // SAFETY: as above; the mapping is unmapped below.
    unsafe {
        let addr = {
            let fd = open(&p, libc::O_RDWR, 0).expect("open");
            let a = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.0,
                0,
            );
            assert_ne!(a, libc::MAP_FAILED, "mmap");
            a
        }; // fd closed here, mapping still live
           // slowly, so that a hash taken at close(2) (FUSE flush) instead of at
           // the last release (munmap) cannot see the final content by luck
        for (k, chunk) in data2.chunks(len / 8).enumerate() {
            std::ptr::copy_nonoverlapping(
                chunk.as_ptr(),
                addr.cast::<u8>().add(k * (len / 8)),
                chunk.len(),
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(libc::msync(addr, len, libc::MS_SYNC), 0, "msync");
        assert_eq!(libc::munmap(addr, len), 0, "munmap");
    }
    m.flush();
    assert_eq!(
        sha256_file(&m.local.join("mapped.bin")),
        sha256_hex(&data2),
        "backing content"
    );
    common::assert_hash(&m.status_json(), b"mapped.bin", &data2);
}

#[test]
fn mmap_write_is_hashed() {
    mmap_write_is_hashed_in("passthrough");
}

#[test]
fn mmap_write_is_hashed_nopassthrough() {
    mmap_write_is_hashed_in("nopassthrough");
}

#[test]
fn two_writers_last_close_wins() {
    let m = Mount::new();
    let p = m.mnt.join("shared.txt");
    let a = open(&p, libc::O_RDWR | libc::O_CREAT, 0o644).expect("open a");
    let b = open(&p, libc::O_RDWR, 0).expect("open b");
    pwrite(&a, 0, b"written by A").expect("write a");
    drop(a);
    pwrite(&b, 0, b"B").expect("write b");
    pwrite(&b, 100, b"tail by B").expect("write b");
    drop(b);
    m.flush();
    let want = fs::read(m.local.join("shared.txt")).expect("backing");
    assert_eq!(want.len(), 109);
    common::assert_hash(&m.status_json(), b"shared.txt", &want);
}

#[test]
fn concurrent_writers_all_hashed() {
    let m = Mount::new();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let dir = m.mnt.join(format!("t{t}"));
            s.spawn(move || {
                fs::create_dir(&dir).expect("mkdir");
                for i in 0..40u64 {
                    let data =
                        common::pattern(t * 1000 + i, ((t * 40 + i) * 3331 % 150_000) as usize);
                    fs::write(dir.join(format!("f{i}")), &data).expect("write");
                }
            });
        }
    });
    m.flush();
    let st = m.status_json();
    for t in 0..6u64 {
        for i in 0..40u64 {
            let data = common::pattern(t * 1000 + i, ((t * 40 + i) * 3331 % 150_000) as usize);
            common::assert_hash(&st, format!("t{t}/f{i}").as_bytes(), &data);
        }
    }
}

#[test]
fn preexisting_files_are_hashed_on_first_mount() {
    // DESIGN: start-up reconciles the local tree against what is known, so a
    // folder that already holds files gets them hashed (and later mirrored)
    // without anyone touching them.
    let mut m = Mount::builder().prepare();
    fs::create_dir_all(m.local.join("old/deeper")).expect("mkdir");
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("old/deeper/f{i}"),
                common::pattern(900 + i, (i * 5000) as usize),
            )
        })
        .collect();
    for (rel, data) in &files {
        fs::write(m.local.join(rel), data).expect("write");
    }
    m.mount();
    m.flush();
    let st = m.status_json();
    for (rel, data) in &files {
        common::assert_hash(&st, rel.as_bytes(), data);
    }
}

#[test]
fn offline_changes_are_rehashed_on_remount() {
    let mut m = Mount::new();
    fs::write(m.mnt.join("a.txt"), b"first").expect("write");
    fs::write(m.mnt.join("b.txt"), b"bee").expect("write");
    m.flush();
    m.unmount();
    // edits made while nothing was mounted
    fs::write(m.local.join("a.txt"), b"changed while unmounted, longer").expect("offline edit");
    fs::write(m.local.join("c.txt"), b"new while unmounted").expect("offline create");
    // same size, different content, mtime put back: only a rehash notices
    let st_b = fs::metadata(m.local.join("b.txt")).expect("stat b");
    fs::write(m.local.join("b.txt"), b"BEE").expect("offline same-size edit");
    let mt = ts(st_b.mtime(), st_b.mtime_nsec());
    utimensat(&m.local.join("b.txt"), [mt, mt], 0).expect("restore mtime");
    m.mount();
    m.flush();
    let st = m.status_json();
    common::assert_hash(&st, b"a.txt", b"changed while unmounted, longer");
    common::assert_hash(&st, b"c.txt", b"new while unmounted");
    // b.txt: same size and mtime, but a new inode change time; a careful
    // reconciliation (size/mtime/inode/ctime) rehashes it
    common::assert_hash(&st, b"b.txt", b"BEE");
}
