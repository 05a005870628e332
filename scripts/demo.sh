#!/usr/bin/env bash
# One-command demo on a fresh Debian machine (as root): installs FUSE and OpenSSH, builds
# ftpsync, starts a throwaway SFTP server on 127.0.0.1, mounts a demo folder mirrored to it,
# writes a few files, waits until the server confirms them by SHA-256, and compares the two
# sides. Each run works in a fresh directory of its own (mktemp -d): it never reuses or wipes
# an earlier run's, and says at the end where everything is and how to remove it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "installing FUSE and OpenSSH (if missing)"
if ! command -v fusermount3 >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ] || ! command -v getfattr >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        fuse3 openssh-server openssh-client attr >/dev/null
fi
modprobe fuse 2>/dev/null || true

say "building ftpsync (release)"
cargo build --release --quiet
bin="$PWD/target/release/ftpsync"

# A new directory per run, so an earlier demo (maybe still mounted, maybe holding files the
# user wrote) is never touched. sshd.sh wants its remote root readable by the login: 0755.
demo="$(mktemp -d /tmp/ftpsync-demo.XXXXXX)"
chmod 755 "$demo"
say "this run's directory: $demo"
mkdir -p "$demo/local" "$demo/mnt"
echo "this file was in the folder before mounting" >"$demo/local/already-there.txt"

say "starting a throwaway SFTP server on 127.0.0.1 (scripts/sshd.sh --detach)"
bash scripts/sshd.sh --detach "$demo/sshd"
# shellcheck disable=SC1091
. "$demo/sshd/env"

say "mounting $demo/local on $demo/mnt, mirrored to $REMOTE_URL"
"$bin" mount --state-dir "$demo/state" --identity "$IDENTITY" --known-hosts "$KNOWN_HOSTS" \
    "$demo/local" "$REMOTE_URL" "$demo/mnt"
grep " $demo/mnt " /proc/self/mountinfo | sed 's/^/    /'

say "writing files through the mount"
echo "hello from ftpsync" >"$demo/mnt/hello.txt"
mkdir -p "$demo/mnt/notes"
date >"$demo/mnt/notes/today.txt"
head -c 4194304 /dev/urandom >"$demo/mnt/notes/random.bin"
ln -s notes/today.txt "$demo/mnt/today-link"
ls -la "$demo/mnt" "$demo/mnt/notes"

say "waiting until the server confirms every change: ftpsync flush $demo/mnt"
time "$bin" flush "$demo/mnt" --timeout 60

say "ftpsync status $demo/mnt"
"$bin" status "$demo/mnt"

say "each file's mirror state, as an extended attribute"
for f in hello.txt notes/random.bin; do
    printf '    %-18s %s  %s\n' "$f" "$(getfattr --only-values -n user.ftpsync.state "$demo/mnt/$f" 2>/dev/null || echo '?')" \
        "$(getfattr --only-values -n user.ftpsync.sha256 "$demo/mnt/$f" 2>/dev/null || echo '')"
done

say "the remote side, compared with the local side"
(cd "$demo/local" && find . -type f -exec sha256sum {} + | sort -k2) >"$demo/local.sums"
# .ftpsync-root is ftpsync's own marker of the remote root, not a mirrored file.
(cd "$REMOTE_ROOT" && find . -type f ! -path ./.ftpsync-root -exec sha256sum {} + | sort -k2) \
    >"$demo/remote.sums"
if diff -u "$demo/local.sums" "$demo/remote.sums"; then
    echo "    identical: $(wc -l <"$demo/local.sums") files, same SHA-256 on both sides"
else
    echo "    the sides differ (see above)"
    exit 1
fi

say "a full audit of the server against the local tree: ftpsync verify $demo/mnt"
"$bin" verify "$demo/mnt"

say "the audit log's hash chain: ftpsync audit $demo/mnt --check"
"$bin" audit "$demo/mnt" --check

cat <<EOF

The mount is live. Everything written in $demo/mnt is journaled, hashed on close and
mirrored to $REMOTE_URL (on disk: $REMOTE_ROOT).

  status (scripts):   $bin status $demo/mnt --json
  audit trail:        $bin audit $demo/mnt
  wait for the remote: $bin flush $demo/mnt
  unmount:            $bin unmount $demo/mnt   (flush, unmount, wait; says what is left)
  stop the server:    kill $SSHD_PID

Everything of this run is in $demo: the local folder (local/), the mountpoint (mnt/), the
state dir (state/) and the server with its keys and remote root (sshd/). To clean up:

  $bin unmount $demo/mnt --timeout 60   # every change confirmed, unmounted, daemon gone
  kill $SSHD_PID
  rm -rf $demo

Running $0 again starts a new demo in a new directory; it leaves this one alone.
EOF
