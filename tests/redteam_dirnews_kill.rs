//! Red team (red5): kill -9 at random points during bursts of `mkdir -p`, moves into brand-new
//! parents (whose replay makes them on the server with mkdir_all) and `rm -rf`; after a
//! remount and a flush the server equals the local tree: no stray directory, no conflict copy.
//!
//! Knobs: RED5_ROUNDS (default 4), RED5_SEED (default 1).

mod common;

use common::mirror_tree::assert_mirrored;
use common::{put_nofollow, Mount, Rng};
use std::fs;
use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn kill9_amid_mkdir_p_and_moves_into_new_parents_leaves_no_stray_directory() {
    let seed = env("RED5_SEED", 1);
    let rounds = env("RED5_ROUNDS", 4);
    let mut rng = Rng::new(seed);
    let delay = ["0", "1"][rng.below(2)];
    let mut m = Mount::builder()
        .chroot()
        .arg("--writeback-delay")
        .arg(delay)
        .mount();
    for round in 0..rounds {
        let r = format!("r{round}");
        fs::create_dir_all(m.path(format!("{r}/a/b/c/d"))).expect("mkdir -p");
        put_nofollow(&m.path(format!("{r}/a/b/c/d/f")), b"deep file");
        put_nofollow(&m.path(format!("{r}/a/top")), b"top file");
        if rng.below(2) == 0 {
            m.flush();
        }
        // Moves into parents made a moment before, whose replay makes them on the server.
        fs::create_dir_all(m.path(format!("{r}/n1/n2/n3"))).expect("mkdir -p");
        fs::rename(
            m.path(format!("{r}/a/b")),
            m.path(format!("{r}/n1/n2/n3/b")),
        )
        .expect("mv");
        fs::create_dir_all(m.path(format!("{r}/p/q"))).expect("mkdir -p");
        fs::rename(m.path(format!("{r}/a/top")), m.path(format!("{r}/p/q/top"))).expect("mv");
        match rng.below(4) {
            // The new parents go again.
            0 => {
                fs::rename(m.path(format!("{r}/p/q/top")), m.path(format!("{r}/a/top")))
                    .expect("mv back");
                fs::remove_dir_all(m.path(format!("{r}/p"))).expect("rm -rf");
            }
            1 => fs::remove_dir_all(m.path(format!("{r}/n1"))).expect("rm -rf"),
            // A tree moves onto an emptied new parent's name.
            2 => {
                fs::rename(m.path(format!("{r}/p/q/top")), m.path(format!("{r}/top"))).expect("mv");
                fs::remove_dir(m.path(format!("{r}/p/q"))).expect("rmdir");
                fs::rename(
                    m.path(format!("{r}/n1/n2/n3/b")),
                    m.path(format!("{r}/p/q")),
                )
                .expect("mv tree");
            }
            // A file takes an emptied new parent's name.
            _ => {
                fs::rename(m.path(format!("{r}/p/q/top")), m.path(format!("{r}/top"))).expect("mv");
                fs::remove_dir(m.path(format!("{r}/p/q"))).expect("rmdir");
                put_nofollow(&m.path(format!("{r}/p/q")), b"a file now");
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(400) as u64));
        m.kill9();
        m.remount();
        // Gone while the daemon was down, too.
        if rng.below(2) == 0 {
            let _ = fs::remove_dir_all(m.path(format!("{r}/n1")));
        }
        m.flush();
        assert_mirrored(&m);
    }
}
