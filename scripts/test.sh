#!/usr/bin/env bash
# The whole check, as CI runs it: install what the tests need (idempotent),
# then format, lint, build and run every test against a real FUSE mount.
# Works from any directory; run as root on a Debian machine (CI does).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

section() { printf '\n==== %s ====\n' "$*"; }

section "environment"
# command -> Debian package that provides it
declare -A need=(
    [fusermount3]=fuse3
    [sqlite3]=sqlite3
    [python3]=python3
    [git]=git
    [tar]=tar
    [ssh-keygen]=openssh-client
    [sshd]=openssh-server
)
# file -> Debian package, for what the tests run by path (servers no one here wrote, issue 10;
# tests/common/sshd.rs names the same paths)
declare -A need_files=(
    [/usr/libexec/gesftpserver]=gesftpserver
    [/usr/bin/rclone]=rclone
    [/usr/sbin/proftpd]=proftpd-core
    [/usr/lib/proftpd/mod_sftp.so]=proftpd-mod-crypto
)
missing=()
for cmd in "${!need[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
        missing+=("${need[$cmd]}")
    fi
done
for file in "${!need_files[@]}"; do
    if ! [ -e "$file" ]; then
        missing+=("${need_files[$file]}")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: not root; install these first: ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    # policy-rc.d exit 101: proftpd-core's postinst must not start a system-wide daemon; the
    # tests start their own, and none of them may lean on one.
    ours_policy=""
    if ! [ -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        ours_policy=/usr/sbin/policy-rc.d
        trap 'rm -f "$ours_policy"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -z "$ours_policy" ] || rm -f "$ours_policy"
    trap - EXIT
else
    echo "test tools present"
fi
modprobe fuse 2>/dev/null || true
if [ ! -e /dev/fuse ]; then
    mknod -m 0666 /dev/fuse c 10 229 2>/dev/null || true
fi
if [ ! -c /dev/fuse ]; then
    echo "error: /dev/fuse is missing; the integration tests need FUSE" >&2
    exit 1
fi
# Open to all, as udev's rule for it makes it on a Debian system: the Quick start test also runs
# as an ordinary user (tests/quickstart.rs), and containers often create the node 0600.
chmod 0666 /dev/fuse
for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$comp"
    fi
done
echo "kernel $(uname -r); $(fusermount3 --version 2>&1 | head -1); $(cargo --version)"

export RUST_BACKTRACE=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

section "cargo fmt --check"
cargo fmt --check

section "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

section "cargo build"
cargo build

section "cargo test --no-fail-fast"
cargo test --no-fail-fast

section "done"
echo "all checks passed"
