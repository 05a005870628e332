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
# servers no one here wrote, for the interop tests: file -> Debian package
declare -A need_files=(
    [/usr/libexec/gesftpserver]=gesftpserver
)
missing=()
for cmd in "${!need[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
        missing+=("${need[$cmd]}")
    fi
done
for f in "${!need_files[@]}"; do
    [ -e "$f" ] || missing+=("${need_files[$f]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: not root; install these first: ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
