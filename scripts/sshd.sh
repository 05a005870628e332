#!/usr/bin/env bash
# Starts a throwaway OpenSSH sshd on 127.0.0.1 for trying ftpsync by hand: fresh host and user
# keys (ed25519), a free port, root login by key only, `Subsystem sftp internal-sftp`, and a
# remote root in a temp dir. Prints the remote URL and the key and known_hosts paths, then runs
# until Ctrl-C, when it stops sshd and removes everything it made.
#
#   scripts/sshd.sh            # then, in another shell, e.g.:
#   ftpsync mount --identity KEY --known-hosts KNOWN_HOSTS sftp://root@127.0.0.1:PORT/... DIR
#
#   scripts/sshd.sh --detach DIR   # set up in DIR, leave sshd running in the background and
#                                  # write DIR/env (REMOTE_URL, IDENTITY, KNOWN_HOSTS, SSHD_PID)
#
# Needs root (sshd binds and switches users) and openssh-server. The Rust test harness
# (tests/common/sshd.rs) does the same, plus a chroot flavour.
set -euo pipefail

detach=""
if [ "${1:-}" = "--detach" ]; then
    detach="${2:?usage: sshd.sh --detach DIR}"
fi

sshd=/usr/sbin/sshd
if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (sshd must be able to log root in by key)" >&2
    exit 1
fi
if [ ! -x "$sshd" ] || ! command -v ssh-keygen >/dev/null; then
    echo "error: needs $sshd and ssh-keygen (apt-get install openssh-server openssh-client)" >&2
    exit 1
fi
mkdir -p /run/sshd

pid=""
if [ -n "$detach" ]; then
    rm -rf "$detach"
    mkdir -p "$detach"
    dir="$(cd "$detach" && pwd)"
    chmod 755 "$dir"
else
    dir="$(mktemp -d /tmp/ftpsync-sshd.XXXXXX)"
    chmod 755 "$dir"
    cleanup() {
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
        rm -rf "$dir"
    }
    trap cleanup EXIT
    trap 'echo; echo "stopping"; exit 0' INT TERM
fi

ssh-keygen -q -t ed25519 -N '' -C ftpsync-demo-host -f "$dir/host_key"
ssh-keygen -q -t ed25519 -N '' -C ftpsync-demo-user -f "$dir/id_ed25519"
cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
chmod 644 "$dir/authorized_keys"
mkdir "$dir/root"

# A free port: let the kernel pick one, then let sshd take it (retry if someone else did).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 40000))
}

for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port="$(free_port)"
    cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
Subsystem sftp internal-sftp
EOF
    : >"$dir/sshd.log"
    if [ -n "$detach" ]; then
        setsid "$sshd" -D -f "$dir/sshd_config" -E "$dir/sshd.log" </dev/null >/dev/null 2>&1 &
    else
        "$sshd" -D -f "$dir/sshd_config" -E "$dir/sshd.log" &
    fi
    pid=$!
    for _ in $(seq 1 150); do
        if grep -q "Server listening on 127.0.0.1 port $port" "$dir/sshd.log"; then
            break 2
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    pid=""
    if ! grep -q "Address already in use" "$dir/sshd.log"; then
        echo "error: sshd did not start:" >&2
        cat "$dir/sshd.log" >&2
        exit 1
    fi
done
if [ -z "$pid" ]; then
    echo "error: no free port found" >&2
    exit 1
fi

read -r ktype kblob _ <"$dir/host_key.pub"
echo "[127.0.0.1]:$port $ktype $kblob" >"$dir/known_hosts"

if [ -n "$detach" ]; then
    cat >"$dir/env" <<EOF
REMOTE_URL=sftp://root@127.0.0.1:$port$dir/root
IDENTITY=$dir/id_ed25519
KNOWN_HOSTS=$dir/known_hosts
REMOTE_ROOT=$dir/root
SSHD_PID=$pid
EOF
    echo "sshd running in the background (pid $pid) on 127.0.0.1:$port; settings in $dir/env"
    exit 0
fi

cat <<EOF
sshd running (pid $pid) on 127.0.0.1:$port
  remote URL:   sftp://root@127.0.0.1:$port$dir/root
  identity:     $dir/id_ed25519
  known_hosts:  $dir/known_hosts
  host key:     $(ssh-keygen -lf "$dir/host_key.pub")
  remote root:  $dir/root
  server log:   $dir/sshd.log
  by hand:      sftp -i $dir/id_ed25519 -o UserKnownHostsFile=$dir/known_hosts -P $port root@127.0.0.1
Ctrl-C stops it and removes $dir.
EOF
wait "$pid"
