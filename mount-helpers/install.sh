#!/bin/sh
# Installs ftpsync, its mount(8) helper and its systemd unit. Idempotent: run it again after
# an upgrade. See mount-helpers/README.md.
#
#   mount-helpers/install.sh [--prefix-only] [--force] [PREFIX]   (PREFIX defaults to /usr/local)
#
#   PREFIX/bin/ftpsync                           the binary: $FTPSYNC_BIN if set, else the
#                                                release build (cargo build --release is run
#                                                first when cargo is on PATH)
#   PREFIX/sbin/mount.fuse.ftpsync               symlink to the binary: the mount(8) helper
#   PREFIX/lib/systemd/system/ftpsync@.service   the unit template, ExecStart= pointing at
#                                                PREFIX/bin/ftpsync
# and, as root (unless --prefix-only, which touches nothing outside PREFIX):
#   /sbin/mount.fuse.ftpsync                     symlink to PREFIX/bin/ftpsync. mount(8) looks
#                                                for helpers only in /sbin, /sbin/fs.d and
#                                                /sbin/fs (compiled into libmount; it ignores
#                                                PATH, and removes it from the helper's
#                                                environment)
#   /etc/systemd/system/ftpsync@.service         symlink to the unit, when systemd does not
#                                                read PREFIX/lib/systemd/system itself
#   /etc/ftpsync/                                the profiles' directory, mode 0700
#
# A symlink is made only where nothing is, or where what is there is already this install's:
# a symlink to the same file, or a file identical to the one the symlink will lead to. Anything
# else (an admin's own unit, a helper or a link of another install) stops the script before it
# changes anything, naming it; --force replaces such files and symlinks (never a directory).
set -eu

usage() {
    echo "usage: $0 [--prefix-only] [--force] [PREFIX]   (PREFIX defaults to /usr/local)" >&2
    exit 2
}

prefix_only=no
force=no
prefix=
for arg in "$@"; do
    case $arg in
        --prefix-only) prefix_only=yes ;;
        --force) force=yes ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) [ -z "$prefix" ] || usage; prefix=$arg ;;
    esac
done
prefix=${prefix:-/usr/local}
case $prefix in
    /*) ;;
    *) prefix=$(pwd)/$prefix ;;
esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
uid=$(id -u)

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

# --- the binary -----------------------------------------------------------------------------
bin=${FTPSYNC_BIN:-}
if [ -z "$bin" ]; then
    bin=${CARGO_TARGET_DIR:-$repo/target}/release/ftpsync
    if command -v cargo >/dev/null 2>&1; then
        say "building: cargo build --release (in $repo)"
        (cd "$repo" && cargo build --release --locked --quiet) || die "cargo build failed"
    fi
fi
[ -x "$bin" ] || die "no ftpsync binary at $bin: run 'cargo build --release' first, or set FTPSYNC_BIN=/path/to/ftpsync"
version=$("$bin" --version) || die "$bin does not run"

# Copies $1 to $2 (mode $3) unless identical; a new file is renamed into place, so a running
# daemon keeps its old binary and nothing ever sees a half-written one.
put() {
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        chmod "$3" "$2"
        say "unchanged  $2"
        return
    fi
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.install-tmp"
    chmod "$3" "$2.install-tmp"
    mv -f "$2.install-tmp" "$2"
    say "installed  $2"
}

# Whether symlink $2 -> $1 would replace nothing but this install's own: nothing is at $2, or
# a symlink to $1 (as written, or resolving to the same file), or a regular file identical to
# $3 (what $1 holds once installed).
ours() {
    [ -e "$2" ] || [ -L "$2" ] || return 0
    if [ -L "$2" ]; then
        [ "$(readlink "$2")" != "$1" ] || return 0
        want=$(readlink -f "$1" 2>/dev/null) || return 1
        got=$(readlink -f "$2" 2>/dev/null) || return 1
        [ -n "$want" ] && [ "$want" = "$got" ]
        return
    fi
    [ -f "$2" ] && cmp -s "$2" "$3"
}

# Notes in $conflicts what symlink $2 -> $1 would replace that is not ours (see `ours`).
conflicts=
check() {
    if [ -d "$2" ] && [ ! -L "$2" ]; then
        conflicts="$conflicts
  $2 is a directory (never replaced, not even with --force)"
        dir_conflict=yes
    elif ! ours "$1" "$2" "$3"; then
        if [ -L "$2" ]; then
            conflicts="$conflicts
  $2 is a symlink to $(readlink "$2"), not to $1"
        else
            conflicts="$conflicts
  $2 is a file this install did not put there (it differs from $1)"
        fi
    fi
}

# Points symlink $2 at $1 (`check` said it may).
link() {
    if [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ]; then
        say "unchanged  $2 -> $1"
        return
    fi
    was=
    if ! ours "$1" "$2" "$3"; then
        if [ -L "$2" ]; then
            was=" (--force: replaced a symlink to $(readlink "$2"))"
        else
            was=" (--force: replaced a file of its own)"
        fi
    elif [ -L "$2" ]; then
        was=" (was -> $(readlink "$2"))"
    elif [ -e "$2" ]; then
        was=" (replaced an identical file)"
    fi
    mkdir -p "$(dirname "$2")"
    ln -sfn "$1" "$2"
    say "linked     $2 -> $1$was"
}

unit_dir=$prefix/lib/systemd/system
tmp_unit=$(mktemp)
trap 'rm -f "$tmp_unit"' EXIT
sed "s|/usr/local/bin/ftpsync|$prefix/bin/ftpsync|g" "$here/ftpsync@.service" >"$tmp_unit"

# What goes outside PREFIX: only as root, only without --prefix-only.
sys_helper=no
sys_unit=no
if [ "$prefix_only" = no ] && [ "$uid" -eq 0 ]; then
    [ "$(readlink -f /sbin)" = "$(readlink -f "$prefix/sbin")" ] || sys_helper=yes
    case $unit_dir in
        /usr/lib/systemd/system | /usr/local/lib/systemd/system | /lib/systemd/system) ;;
        *) sys_unit=yes ;;
    esac
fi

# Nothing is changed before every symlink to be made is known to replace only our own.
dir_conflict=no
check "$prefix/bin/ftpsync" "$prefix/sbin/mount.fuse.ftpsync" "$bin"
[ "$sys_helper" = no ] || check "$prefix/bin/ftpsync" /sbin/mount.fuse.ftpsync "$bin"
[ "$sys_unit" = no ] || check "$unit_dir/ftpsync@.service" /etc/systemd/system/ftpsync@.service "$tmp_unit"
if [ -n "$conflicts" ]; then
    if [ "$force" = no ] || [ "$dir_conflict" = yes ]; then
        die "not installed, nothing changed: these are not this install's to replace:$conflicts
Move them away, or run again with --force to replace the files and symlinks among them."
    fi
    say "--force: replacing what is not this install's:$conflicts"
fi

[ -d "$prefix" ] || mkdir -p "$prefix" 2>/dev/null || die "cannot create $prefix (run as root, or give a PREFIX you can write, e.g. ~/.local)"
[ -w "$prefix" ] || die "cannot write $prefix (run as root, or give a PREFIX you can write, e.g. ~/.local)"

say "installing $version into $prefix"
put "$bin" "$prefix/bin/ftpsync" 0755
link "$prefix/bin/ftpsync" "$prefix/sbin/mount.fuse.ftpsync" "$bin"
put "$tmp_unit" "$unit_dir/ftpsync@.service" 0644

# --- system-wide: only root, only without --prefix-only ------------------------------------
if [ "$prefix_only" = yes ]; then
    say "--prefix-only: nothing installed outside $prefix; mount(8) will not find the helper"
elif [ "$uid" -ne 0 ]; then
    say "not root: /sbin/mount.fuse.ftpsync not installed (mount -t fuse.ftpsync and fstab need it);"
    say "          'ftpsync mount PROFILE' works without it"
else
    if [ "$sys_helper" = no ]; then
        say "(/sbin is $prefix/sbin: mount(8) finds the helper there)"
    else
        link "$prefix/bin/ftpsync" /sbin/mount.fuse.ftpsync "$bin"
    fi
    [ "$sys_unit" = no ] || link "$unit_dir/ftpsync@.service" /etc/systemd/system/ftpsync@.service "$tmp_unit"
    if [ ! -d /etc/ftpsync ]; then
        mkdir -m 0700 /etc/ftpsync
        say "created    /etc/ftpsync (mode 0700): put profiles there as NAME.toml, mode 0600"
    fi
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload && say "reloaded   systemd units"
    fi
fi

cat <<EOF

Next:
  1. A profile, /etc/ftpsync/NAME.toml for root (~/.config/ftpsync/NAME.toml otherwise),
     mode 0600, the keys of --config:
         local_dir = "/srv/data"
         remote = "sftp://backup@host.example/data"
         identity = ["/etc/ftpsync/id_ed25519"]
  2. Pin the server's key:  ftpsync trust NAME --fingerprint SHA256:...
  3. Mount it, one of:
         ftpsync mount NAME [MOUNTPOINT]
         mount -t fuse.ftpsync NAME MOUNTPOINT
         /etc/fstab:  NAME  MOUNTPOINT  fuse.ftpsync  nodev,nosuid,_netdev,nofail  0  0
                 or, mounted on first access:
                      NAME  MOUNTPOINT  fuse.ftpsync  nodev,nosuid,_netdev,nofail,noauto,x-systemd.automount  0  0
         systemctl enable --now ftpsync@NAME
  Unmount: umount MOUNTPOINT, fusermount3 -u MOUNTPOINT, or systemctl stop ftpsync@NAME.
EOF
