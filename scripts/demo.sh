#!/usr/bin/env bash
# One-command demo on a fresh Debian machine (as root): installs FUSE, builds
# ftpsync, mounts a demo folder, writes a couple of files through it and
# shows what ftpsync recorded.
#
# The remote side (an SFTP server receiving the mirror) arrives with the
# mirror engine; until then ftpsync journals every change and hashes every
# closed file locally, and `ftpsync status` shows exactly that.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

demo=/tmp/ftpsync-demo
remote="sftp://demo@127.0.0.1/ftpsync-demo-remote"

# true when something is mounted on $1 (works for a dead FUSE mount too)
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "installing FUSE (if missing)"
if ! command -v fusermount3 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
fi
modprobe fuse 2>/dev/null || true

say "building ftpsync (release)"
cargo build --release --quiet
bin="$PWD/target/release/ftpsync"

say "preparing $demo/{local,mnt,state}"
if is_mounted "$demo/mnt"; then
    fusermount3 -u "$demo/mnt" 2>/dev/null || fusermount3 -uz "$demo/mnt"
    for _ in $(seq 50); do [ -e "$demo/state/ftpsync.pid" ] || break; sleep 0.1; done
fi
mkdir -p "$demo/local" "$demo/mnt" "$demo/state"
echo "this file was in the folder before mounting" > "$demo/local/already-there.txt"

say "mounting: ftpsync mount --state-dir $demo/state $demo/local $remote $demo/mnt"
"$bin" mount --state-dir "$demo/state" "$demo/local" "$remote" "$demo/mnt"
grep " $demo/mnt " /proc/self/mountinfo | sed 's/^/    /'

say "writing files through the mount"
echo "hello from ftpsync" > "$demo/mnt/hello.txt"
mkdir -p "$demo/mnt/notes"
date > "$demo/mnt/notes/today.txt"
head -c 1048576 /dev/urandom > "$demo/mnt/notes/random.bin"
ls -la "$demo/mnt" "$demo/mnt/notes"

say "waiting until every closed file is hashed: ftpsync flush $demo/state"
"$bin" flush "$demo/state" --timeout 30

say "ftpsync status $demo/state"
"$bin" status "$demo/state"

say "the same hashes, checked with sha256sum on the backing folder"
(cd "$demo/local" && sha256sum hello.txt notes/today.txt notes/random.bin)

cat <<EOF

The mount is live (daemon pid $(cat "$demo/state/ftpsync.pid" 2>/dev/null || echo '?')).
Everything you write in $demo/mnt lands in $demo/local and is journaled and hashed;
the upload to $remote arrives with the mirror engine.

  machine-readable status:  $bin status $demo/state --json
  unmount:                  fusermount3 -u $demo/mnt
  start over:               fusermount3 -u $demo/mnt; rm -rf $demo; $0
EOF
