#!/usr/bin/env bash
# Starts a throwaway OpenSSH sshd on 127.0.0.1 for trying ftpsync by hand: fresh host and user
# keys (ed25519), a free port (or --port N), root login by key only, `Subsystem sftp
# internal-sftp`, and a remote root in a temp dir. Prints the remote URL and the key and
# known_hosts paths, then runs until Ctrl-C, when it stops sshd and removes everything it made.
#
#   scripts/sshd.sh            # then, in another shell, e.g.:
#   ftpsync mount --identity KEY --known-hosts KNOWN_HOSTS sftp://root@127.0.0.1:PORT/... DIR
#
#   scripts/sshd.sh --detach DIR   # set up in DIR, leave sshd running in the background and
#                                  # write DIR/env (REMOTE_URL, IDENTITY, KNOWN_HOSTS, SSHD_PID)
#
# --detach never deletes data it did not make: DIR must be missing, empty, or an earlier
# set-up of this script (recognised by the marker file it writes first, DIR/.ftpsync-sshd)
# whose sshd is no longer running.
#
# Needs root (sshd binds and switches users) and openssh-server. The Rust test harness
# (tests/common/sshd.rs) does the same, plus a chroot flavour.
set -euo pipefail

marker_name=.ftpsync-sshd

usage() {
    cat <<EOF
usage: sshd.sh [--port N] [--detach DIR]
       sshd.sh --help

Starts a throwaway OpenSSH sshd on 127.0.0.1 (needs root) with fresh keys and a remote root.

  --port N      listen on port N (default: a free port picked by the kernel)
  --detach DIR  set up in DIR, leave sshd running in the background, write DIR/env and exit;
                DIR must be missing, empty, or an earlier --detach set-up (marker
                DIR/$marker_name) whose sshd has stopped
  --help        print this and exit; starts nothing

Without --detach it runs in the foreground until Ctrl-C, then removes everything it made.
EOF
}

die_usage() {
    echo "error: $*" >&2
    usage >&2
    exit 2
}

detach=""
want_port=""
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --detach)
        if [ $# -lt 2 ] || [ -z "$2" ]; then die_usage "--detach needs a directory"; fi
        detach="$2"
        shift 2
        ;;
    --port)
        if [ $# -lt 2 ]; then die_usage "--port needs a number"; fi
        want_port="$2"
        shift 2
        ;;
    *)
        die_usage "unknown argument: $1"
        ;;
    esac
done
if [ -n "$want_port" ]; then
    # a plain decimal 1..65535, so it cannot smuggle anything into sshd_config
    if ! [[ "$want_port" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$want_port" -gt 65535 ]; then
        die_usage "--port wants a number from 1 to 65535, not: $want_port"
    fi
fi

# Makes $1 ready for a detached set-up without ever deleting data this script did not make:
# a missing or empty dir is used as is; an earlier set-up (its marker file present) is removed
# once its sshd has stopped; anything else is refused.
prepare_detach_dir() {
    local d="$1"
    if [ -L "$d" ]; then
        echo "error: $d is a symlink; give --detach a real directory" >&2
        exit 1
    fi
    if [ -e "$d" ] && [ ! -d "$d" ]; then
        echo "error: $d exists and is not a directory; refusing to touch it" >&2
        exit 1
    fi
    if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then
        if [ ! -f "$d/$marker_name" ]; then
            echo "error: $d is not empty and is not an earlier sshd.sh set-up (no $marker_name);" >&2
            echo "       refusing to delete it. Choose a new or empty directory." >&2
            exit 1
        fi
        local old=""
        if [ -f "$d/sshd.pid" ]; then old="$(cat "$d/sshd.pid")"; fi
        if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
            echo "error: the sshd of the earlier set-up in $d still runs (pid $old);" >&2
            echo "       stop it first: kill $old" >&2
            exit 1
        fi
        rm -rf "$d"
    fi
    mkdir -p "$d"
}

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
    prepare_detach_dir "$detach"
    dir="$(cd "$detach" && pwd)"
    chmod 755 "$dir"
    echo "set up by scripts/sshd.sh --detach; it may replace this dir once its sshd stops" >"$dir/$marker_name"
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
# With --port, that port only, once.
free_port() {
    if [ -n "$want_port" ]; then
        echo "$want_port"
        return
    fi
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
    if [ -n "$want_port" ] || ! grep -q "Address already in use" "$dir/sshd.log"; then
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
