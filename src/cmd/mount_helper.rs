//! ftpsync as a mount(8) helper, for `mount -t fuse.ftpsync SOURCE DIR -o OPTS` and fstab.
//!
//! mount(8) runs `mount.fuse.ftpsync SOURCE DIR [-sfnv] [-N NS] [-o OPTS] [-t TYPE]` when that
//! file is in /sbin, /sbin/fs.d or /sbin/fs (libmount's compiled-in search path; PATH is not
//! used). Otherwise, for any `fuse.TYPE`, it runs fuse3's `/sbin/mount.fuse`, which runs
//! `TYPE SOURCE DIR -o OPTS` through `sh -c`, so `ftpsync SOURCE DIR -o OPTS`, found on PATH.
//! Both forms become `ftpsync mount --profile SOURCE -o OPTS -- DIR` (`--config SOURCE` when
//! SOURCE holds a '/'). The first is recognised by the program's name (a symlink named
//! `mount.fuse.ftpsync` to the binary), the second by its shape: a first argument that is not a
//! command or an option, and an `-o` (mount.fuse always passes one).
//!
//! Mount options are passed on whole: `MountOptions::apply` already ignores those meant for the
//! mount tools (`defaults`, `_netdev`, `nofail`, `user`, `x-*`, ...).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The helper's name: mount(8) looks for `/sbin/mount.` followed by the filesystem type.
pub const HELPER: &str = "mount.fuse.ftpsync";

const USAGE: &str =
    "usage: mount.fuse.ftpsync PROFILE|CONFIG_FILE MOUNTPOINT [-sfnv] [-o OPTIONS] \
                     (as run by mount -t fuse.ftpsync PROFILE MOUNTPOINT)";

#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// An ordinary `ftpsync` command line.
    Command,
    /// A helper call: these are the `ftpsync mount` arguments to run instead.
    Mount(Vec<OsString>),
    /// `mount -f` (fake): everything but the mount itself, i.e. nothing.
    Fake,
}

/// Recognises a helper call among `argv` (the program name first); `commands` are the
/// subcommand names, which a helper call's SOURCE never is.
pub fn translate(argv: &[OsString], commands: &[&str]) -> Result<Invocation, String> {
    let called = argv.first().map(Path::new).and_then(Path::file_name);
    if called != Some(OsStr::new(HELPER)) {
        let Some(first) = argv.get(1) else {
            return Ok(Invocation::Command);
        };
        let first = first.to_string_lossy();
        let fuse_form = !first.starts_with('-')
            && !commands.contains(&first.as_ref())
            && argv
                .iter()
                .skip(3)
                .any(|a| a.as_encoded_bytes().starts_with(b"-o"));
        if !fuse_form {
            return Ok(Invocation::Command);
        }
    }
    parse(argv)
}

fn parse(argv: &[OsString]) -> Result<Invocation, String> {
    let (Some(source), Some(dir)) = (argv.get(1), argv.get(2)) else {
        return Err(USAGE.into());
    };
    if source.is_empty() || source.as_encoded_bytes().starts_with(b"-") {
        return Err(format!(
            "a profile name is required as the mount source; {USAGE}"
        ));
    }
    if dir.as_encoded_bytes().starts_with(b"-") {
        return Err(USAGE.into());
    }
    let mut options: Vec<OsString> = Vec::new();
    let (mut verbose, mut fake) = (false, false);
    let mut rest = argv[3..].iter();
    while let Some(arg) = rest.next() {
        let bytes = arg.as_encoded_bytes();
        let mut value = |what: &str| {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{what} needs a value; {USAGE}"))
        };
        match bytes {
            b"-o" => options.push(value("-o")?),
            b"-t" => drop(value("-t")?),
            b"-N" | b"--namespace" => {
                return Err("mounting in another mount namespace (-N) is not supported".into())
            }
            [b'-', b'o', value @ ..] => options.push(OsStr::from_bytes(value).to_owned()),
            [b'-', flags @ ..]
                if !flags.is_empty() && flags.iter().all(|f| b"sfnv".contains(f)) =>
            {
                // -s sloppy and -n no mtab mean nothing here.
                fake |= flags.contains(&b'f');
                verbose |= flags.contains(&b'v');
            }
            _ => {
                return Err(format!(
                    "unexpected argument '{}'; {USAGE}",
                    arg.to_string_lossy()
                ))
            }
        }
    }
    if fake {
        return Ok(Invocation::Fake);
    }
    let mut args: Vec<OsString> = vec![argv[0].clone(), "mount".into()];
    if verbose {
        args.push("-v".into());
    }
    let is_path = source.as_encoded_bytes().contains(&b'/');
    args.push(if is_path { "--config" } else { "--profile" }.into());
    args.push(source.clone());
    for o in options.into_iter().filter(|o| !o.is_empty()) {
        args.push("-o".into());
        args.push(o);
    }
    args.push("--".into());
    args.push(dir.clone());
    Ok(Invocation::Mount(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMANDS: &[&str] = &["mount", "status", "trust", "flush", "audit", "help"];

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn run(v: &[&str]) -> Result<Invocation, String> {
        translate(&os(v), COMMANDS)
    }

    fn mount(v: &[&str]) -> Invocation {
        Invocation::Mount(os(v))
    }

    #[test]
    fn as_mount_8_calls_the_helper() {
        // libmount: SOURCE DIR [-sfnv] [-o OPTS] [-t TYPE.SUBTYPE]
        assert_eq!(
            run(&[
                "/sbin/mount.fuse.ftpsync",
                "backup",
                "/mnt/x",
                "-n",
                "-o",
                "rw,_netdev,allow_other",
            ]),
            Ok(mount(&[
                "/sbin/mount.fuse.ftpsync",
                "mount",
                "--profile",
                "backup",
                "-o",
                "rw,_netdev,allow_other",
                "--",
                "/mnt/x",
            ]))
        );
        assert_eq!(
            run(&[
                HELPER,
                "/etc/ftpsync/a.toml",
                "/m",
                "-sv",
                "-oro",
                "-t",
                "fuse.ftpsync"
            ]),
            Ok(mount(&[
                HELPER,
                "mount",
                "-v",
                "--config",
                "/etc/ftpsync/a.toml",
                "-o",
                "ro",
                "--",
                "/m"
            ]))
        );
        assert_eq!(
            run(&[HELPER, "b", "/m"]),
            Ok(mount(&[HELPER, "mount", "--profile", "b", "--", "/m"]))
        );
        assert_eq!(
            run(&[HELPER, "b", "/m", "-f", "-o", "ro"]),
            Ok(Invocation::Fake)
        );
    }

    #[test]
    fn as_mount_fuse_runs_the_program() {
        // fuse3's mount.fuse: sh -c "ftpsync 'SOURCE' 'DIR' -o 'OPTS,dev,suid'"
        assert_eq!(
            run(&["ftpsync", "backup", "/mnt/x", "-o", "nodev,dev,suid"]),
            Ok(mount(&[
                "ftpsync",
                "mount",
                "--profile",
                "backup",
                "-o",
                "nodev,dev,suid",
                "--",
                "/mnt/x"
            ]))
        );
    }

    #[test]
    fn ordinary_command_lines_are_left_alone() {
        for v in [
            &["ftpsync"][..],
            &["ftpsync", "--help"],
            &["ftpsync", "mount", "backup", "/mnt/x", "-o", "ro"],
            &["ftpsync", "status", "/mnt/x"],
            &["ftpsync", "help", "mount", "-o"],
            &["ftpsync", "-v", "mount", "a", "b", "-o", "ro"],
            // A mistyped command without -o stays clap's to report.
            &["ftpsync", "stauts", "/mnt/x"],
        ] {
            assert_eq!(run(v), Ok(Invocation::Command), "{v:?}");
        }
    }

    #[test]
    fn bad_helper_calls_say_how_it_is_called() {
        for v in [
            &[HELPER][..],
            &[HELPER, "b"],
            &[HELPER, "-o", "/m"],
            &[HELPER, "", "/m"],
            &[HELPER, "b", "/m", "-o"],
            &[HELPER, "b", "/m", "-x"],
            &[HELPER, "b", "/m", "extra"],
        ] {
            let e = run(v).unwrap_err();
            assert!(e.contains("usage: mount.fuse.ftpsync"), "{v:?}: {e}");
        }
        let e = run(&[HELPER, "b", "/m", "-N", "/proc/1/ns/mnt"]).unwrap_err();
        assert!(e.contains("namespace"), "{e}");
    }
}
