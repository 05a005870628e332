#!/usr/bin/env bash
# Peer benchmark (not a test): ftpsync against sshfs, rclone mount (VFS cache) and lsyncd, in one
# run, against ONE throwaway loopback sshd (scripts/sshd.sh --detach) and the release build, with
# the bare local disk for reference.
#
#   scripts/bench-peers.sh                            # as root
#   RUNS=3 BENCH_DIR=/var/tmp scripts/bench-peers.sh
#   RCLONE_CACHE_MODE=full RCLONE_WRITE_BACK=5s LSYNCD=0 scripts/bench-peers.sh
#
# Workloads, each the median of RUNS (default 3) runs, the tools interleaved within a run:
#   files  2,000 x 4 KiB files (open/write/close each, one python process)
#   seq    one 256 MiB sequential write of zeros with fsync (dd bs=1M count=256 conv=fsync)
#   read   cold read of that file (sync; echo 3 > /proc/sys/vm/drop_caches; dd to /dev/null)
# For files and seq two times, both from the start of the write:
#   app        until the writing process has exited (what the user waits for)
#   on server  until the data is on the server, found as each tool allows:
#     ftpsync  `ftpsync flush` started right after the app, until it returns (every file
#              uploaded, fsync'd and SHA-256 checked on the server, renamed into place);
#     sshfs    = app: close() returns only once the server acknowledged every write;
#     rclone   polling `vfs/stats` over its rc API (127.0.0.1) until no upload is queued or in
#              progress AND the remote directory holds every file at its full size (both are
#              needed: the kernel sends RELEASE, which queues the upload, after close() has
#              returned; and rclone writes in place under the final name, so a full size alone
#              could be an upload still being verified);
#     lsyncd   polling the remote directory until every file has its final name and size
#              (rsync writes to a hidden temp name and renames it after its checksum matched).
#   Polls run every 50 ms. The server copy is then checked byte for byte (untimed) and the files
#   are deleted and the deletion waited for (untimed) before the next tool runs.
# Settings: ftpsync defaults (passthrough as root, --connections 4, --writeback-delay 1 s, which
# `flush` does not wait out); sshfs defaults; rclone --vfs-cache-mode $RCLONE_CACHE_MODE (writes)
# --vfs-write-back $RCLONE_WRITE_BACK (1s, like ftpsync's delay; rclone's default is 5s and it
# has no way to skip it), --transfers 4 (default); lsyncd default.rsync with delay = 1 s
# (its default is 15 s). LSYNCD=0 leaves lsyncd out. The order of the tools rotates from run to
# run, so that none is always first after the previous workload's deletions. rclone checks each
# upload by running md5sum on the server in a new ssh exec session per file, which dominates its
# small-file time; RCLONE_FLAGS=--sftp-disable-hashcheck shows it without (size check only).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

RUNS="${RUNS:-3}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
RCLONE_CACHE_MODE="${RCLONE_CACHE_MODE:-writes}"
RCLONE_WRITE_BACK="${RCLONE_WRITE_BACK:-1s}"
RCLONE_FLAGS="${RCLONE_FLAGS:-}" # extra rclone mount flags, e.g. --sftp-disable-hashcheck
LSYNCD="${LSYNCD:-1}"
NFILES=2000
SEQ_MIB=256

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sshd logs root in by key; passthrough and drop_caches need root)" >&2
    exit 1
fi
case $RCLONE_CACHE_MODE in writes | full) ;; *)
    echo "RCLONE_CACHE_MODE must be writes or full" >&2
    exit 1
    ;;
esac
for tool in fusermount3 python3 /usr/sbin/sshd ssh-keygen ssh; do
    command -v "$tool" >/dev/null || {
        echo "needs $tool (apt-get install fuse3 python3 openssh-server openssh-client)" >&2
        exit 1
    }
done
missing=()
command -v sshfs >/dev/null || missing+=(sshfs)
command -v rclone >/dev/null || missing+=(rclone)
if [ "$LSYNCD" = 1 ]; then
    command -v lsyncd >/dev/null || missing+=(lsyncd)
    command -v rsync >/dev/null || missing+=(rsync)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
modprobe fuse 2>/dev/null || true
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || {
    echo "cannot write /proc/sys/vm/drop_caches: cold reads impossible here" >&2
    exit 1
}

bench_build

bench_need_space 4

tools=(bare ftpsync sshfs rclone)
[ "$LSYNCD" = 1 ] && tools+=(lsyncd)

mounted_under() { awk -v b="$1/" 'index($5, b) == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; }
base="$(mktemp -d "$BENCH_DIR/ftpsync-peers.XXXXXX")"
chmod 755 "$base"
declare -A mnt=(
    [bare]="$base/bare" [ftpsync]="$base/ftpsync/mnt" [sshfs]="$base/sshfs/mnt"
    [rclone]="$base/rclone/mnt" [lsyncd]="$base/lsyncd/src"
)
state="$base/ftpsync/state"
SSHD_PID="" SSHFS_PID="" RCLONE_PID="" LSYNCD_PID=""
stop_pid() { # $1 = pid we started: TERM, wait up to 10 s, then KILL
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
unmount() { # $1 = mountpoint
    is_mounted "$1" || return 0
    fusermount3 -u "$1" 2>/dev/null || fusermount -u "$1" 2>/dev/null ||
        fusermount3 -uz "$1" 2>/dev/null || true
}
cleanup() {
    set +e
    stop_pid "$LSYNCD_PID"
    unmount "${mnt[rclone]}"
    stop_pid "$RCLONE_PID"
    unmount "${mnt[sshfs]}"
    stop_pid "$SSHFS_PID"
    if is_mounted "${mnt[ftpsync]}"; then
        unmount "${mnt[ftpsync]}"
        for _ in $(seq 100); do [ -e "$state/ftpsync.pid" ] || break; sleep 0.1; done
    fi
    stop_pid "$SSHD_PID"
    if mounted_under "$base"; then
        echo "something is still mounted under $base; left in place" >&2
    else
        rm -rf "$base"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The one throwaway sshd on a free loopback port; its remote root is on the same disk.
scripts/sshd.sh --detach "$base/sshd" >/dev/null
# shellcheck disable=SC1091
. "$base/sshd/env"
port="${REMOTE_URL#sftp://root@127.0.0.1:}"
port="${port%%/*}"
for t in ftpsync sshfs rclone lsyncd; do mkdir -p "$REMOTE_ROOT/$t"; done
mkdir -p "${mnt[bare]}" "$base/ftpsync/local" "${mnt[ftpsync]}" "$state" "${mnt[sshfs]}" \
    "${mnt[rclone]}" "$base/rclone/cache" "${mnt[lsyncd]}"
ssh_opts=(-F /dev/null -o "IdentityFile=$IDENTITY" -o IdentitiesOnly=yes -o BatchMode=yes
    -o "UserKnownHostsFile=$KNOWN_HOSTS" -o StrictHostKeyChecking=yes)

# Helper (python3): the writer and the completion and content checks.
cat >"$base/peer.py" <<'PY'
import json, os, re, sys, time, urllib.request

NAME = re.compile(r"f\d{5}$")

def files_ready(d, n, size):
    try:
        return sum(1 for e in os.scandir(d) if NAME.match(e.name)
                   and e.stat(follow_symlinks=False).st_size == size) == n
    except FileNotFoundError:
        return False

def file_ready(p, size):
    try:
        return os.lstat(p).st_size == size
    except FileNotFoundError:
        return False

def rclone_idle(url):
    req = urllib.request.Request(url + "/vfs/stats", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        dc = json.load(r)["diskCache"]
    return dc["uploadsInProgress"] == 0 and dc["uploadsQueued"] == 0

def wait(ready, what, timeout=1800):
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            sys.exit("timed out waiting for " + what)
        time.sleep(0.05)

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "write-files":  # DIR N BLOB
    d, n, buf = args[0], int(args[1]), open(args[2], "rb").read()
    os.makedirs(d)
    for i in range(n):
        fd = os.open(os.path.join(d, "f%05d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, buf)
        os.close(fd)
elif cmd == "wait-files":  # DIR N SIZE [RC_URL]
    d, n, size = args[0], int(args[1]), int(args[2])
    rc = args[3] if len(args) > 3 else None
    wait(lambda: files_ready(d, n, size) and (rc is None or rclone_idle(rc)), d)
elif cmd == "wait-file":  # PATH SIZE [RC_URL]
    p, size = args[0], int(args[1])
    rc = args[2] if len(args) > 2 else None
    wait(lambda: file_ready(p, size) and (rc is None or rclone_idle(rc)), p)
elif cmd == "wait-empty":  # DIR: gone or empty (deletions mirrored)
    d = args[0]
    wait(lambda: not os.path.isdir(d) or not os.listdir(d), "deletions in " + d, 600)
elif cmd == "verify-files":  # DIR N BLOB
    d, n, buf = args[0], int(args[1]), open(args[2], "rb").read()
    names = sorted(os.listdir(d))
    if names != ["f%05d" % i for i in range(n)]:
        sys.exit("%s: %d entries, expected f00000..f%05d" % (d, len(names), n - 1))
    for name in names:
        with open(os.path.join(d, name), "rb") as f:
            if f.read() != buf:
                sys.exit("%s/%s differs from what was written" % (d, name))
elif cmd == "verify-zeros":  # PATH MIB
    p, mib = args[0], int(args[1])
    if os.path.getsize(p) != mib << 20:
        sys.exit("%s: size %d, expected %d" % (p, os.path.getsize(p), mib << 20))
    zero = bytes(1 << 20)
    with open(p, "rb") as f:
        for _ in range(mib):
            if f.read(1 << 20) != zero:
                sys.exit(p + " differs from what was written")
else:
    sys.exit("unknown command " + cmd)
PY
head -c 4096 /dev/urandom >"$base/blob4k"
peer() { python3 "$base/peer.py" "$@"; }
wait_mount() { # $1 = mountpoint, $2 = pid, $3 = log
    for _ in $(seq 300); do
        is_mounted "$1" && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "mount of $1 failed:" >&2
    cat "$3" >&2
    exit 1
}

# ftpsync, as bench.sh mounts it.
ftpsync_cmd=("$bin" mount -v --state-dir "$state" --identity "$IDENTITY" --known-hosts "$KNOWN_HOSTS"
    "$base/ftpsync/local" "$REMOTE_URL/ftpsync" "${mnt[ftpsync]}")
"${ftpsync_cmd[@]}"

# sshfs, defaults (in the foreground of a background job, so its pid is ours).
sshfs_cmd=(sshfs -f "${ssh_opts[@]}" -o "port=$port" "root@127.0.0.1:$REMOTE_ROOT/sshfs" "${mnt[sshfs]}")
"${sshfs_cmd[@]}" >"$base/sshfs/log" 2>&1 &
SSHFS_PID=$!
wait_mount "${mnt[sshfs]}" "$SSHFS_PID" "$base/sshfs/log"

# rclone mount of an on-the-fly sftp remote; its rc API on a free loopback port.
rc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rc_url="http://127.0.0.1:$rc_port"
export RCLONE_CONFIG="$base/rclone/rclone.conf" # nothing read or written in ~/.config
: >"$RCLONE_CONFIG"
rclone_sftp=(--sftp-host 127.0.0.1 --sftp-port "$port" --sftp-user root --sftp-key-file "$IDENTITY"
    --sftp-known-hosts-file "$KNOWN_HOSTS")
rclone_cmd=(rclone mount ":sftp:$REMOTE_ROOT/rclone" "${mnt[rclone]}" "${rclone_sftp[@]}"
    --vfs-cache-mode "$RCLONE_CACHE_MODE" --vfs-write-back "$RCLONE_WRITE_BACK"
    --cache-dir "$base/rclone/cache" --rc --rc-addr "127.0.0.1:$rc_port" --rc-no-auth
    --log-file "$base/rclone/log")
# shellcheck disable=SC2206
[ -n "$RCLONE_FLAGS" ] && rclone_cmd+=($RCLONE_FLAGS)
"${rclone_cmd[@]}" >/dev/null 2>&1 &
RCLONE_PID=$!
wait_mount "${mnt[rclone]}" "$RCLONE_PID" "$base/rclone/log"
sftp_extra=()
for f in $RCLONE_FLAGS; do case $f in --sftp-*) sftp_extra+=("$f") ;; esac; done
rclone_hashes=$(rclone backend features ":sftp:$REMOTE_ROOT/rclone" "${rclone_sftp[@]}" "${sftp_extra[@]}" 2>/dev/null |
    python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)["Hashes"]) or "none")' || echo unknown)

# lsyncd: default.rsync over ssh to the same sshd (root may exec there, so rsync --server runs).
if [ "$LSYNCD" = 1 ]; then
    rsh="/usr/bin/ssh ${ssh_opts[*]} -p $port"
    cat >"$base/lsyncd/conf.lua" <<EOF
settings { logfile = "$base/lsyncd/log", insist = false }
sync {
    default.rsync,
    source = "${mnt[lsyncd]}/",
    target = "root@127.0.0.1:$REMOTE_ROOT/lsyncd/",
    delay = 1,
    rsync = { archive = true, rsh = "$rsh" },
}
EOF
    lsyncd -nodaemon "$base/lsyncd/conf.lua" >"$base/lsyncd/out" 2>&1 &
    LSYNCD_PID=$!
    for _ in $(seq 300); do
        grep -q 'Startup of .* finished' "$base/lsyncd/log" 2>/dev/null && break
        kill -0 "$LSYNCD_PID" 2>/dev/null || break
        sleep 0.1
    done
    grep -q 'Startup of .* finished' "$base/lsyncd/log" 2>/dev/null || {
        echo "lsyncd did not start:" >&2
        cat "$base/lsyncd/log" "$base/lsyncd/out" >&2 2>/dev/null
        exit 1
    }
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
flush() { "$bin" flush "$state" --timeout 1800 >/dev/null; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
remote() { echo "$REMOTE_ROOT/$1"; } # the server-side directory of a tool

# Waits until what $1 wrote ($2 = files DIR NAME | seq) is on the server.
wait_server() {
    local t=$1 kind=$2 name=${3:-} r
    r="$(remote "$t")"
    case $t in
        bare | sshfs) ;;
        ftpsync) flush ;;
        rclone | lsyncd)
            local rc=()
            [ "$t" = rclone ] && rc=("$rc_url")
            if [ "$kind" = files ]; then
                peer wait-files "$r/$name" "$NFILES" 4096 "${rc[@]}"
            else
                peer wait-file "$r/big" $((SEQ_MIB << 20)) "${rc[@]}"
            fi
            ;;
    esac
}
# Deletes what a run left and waits until the deletion reached the server (untimed).
clean() { # $1 = tool, $2 = path relative to its mount
    local t=$1 p=$2
    rm -rf "${mnt[$t]:?}/$p"
    [ "$t" = ftpsync ] && flush
    [ "$t" = bare ] || peer wait-empty "$(remote "$t")"
    sync
}

declare -A res
declare -a col
for w in files seq; do
    for t in "${tools[@]}"; do eval "app_${t}=() srv_${t}=() rd_${t}=()"; done
    for run in $(seq "$RUNS"); do
        line="  $w run $run:"
        k=$(((run - 1) % ${#tools[@]}))
        for t in "${tools[@]:k}" "${tools[@]:0:k}"; do
            m="${mnt[$t]}"
            sync
            if [ "$w" = files ]; then
                t0=$(now)
                peer write-files "$m/c$run" "$NFILES" "$base/blob4k"
                t1=$(now)
                wait_server "$t" files "c$run"
                t2=$(now)
                [ "$t" = bare ] || peer verify-files "$(remote "$t")/c$run" "$NFILES" "$base/blob4k"
                clean "$t" "c$run"
            else
                t0=$(now)
                dd if=/dev/zero of="$m/big" bs=1M count="$SEQ_MIB" conv=fsync status=none
                t1=$(now)
                wait_server "$t" seq
                t2=$(now)
                [ "$t" = bare ] || peer verify-zeros "$(remote "$t")/big" "$SEQ_MIB"
                drop_caches
                t3=$(now)
                dd if="$m/big" of=/dev/null bs=1M status=none
                t4=$(now)
                eval "rd_${t}+=(\"$(elapsed "$t3" "$t4")\")"
                clean "$t" big
            fi
            eval "app_${t}+=(\"$(elapsed "$t0" "$t1")\") srv_${t}+=(\"$(elapsed "$t0" "$t2")\")"
            line+=" $t $(elapsed "$t0" "$t1")/$(elapsed "$t0" "$t2")"
            [ "$w" = seq ] && line+="/r$(elapsed "$t3" "$t4")"
        done
        echo "$line"
    done
    for t in "${tools[@]}"; do
        eval "col=(\"\${app_${t}[@]}\")"
        res[$w/app/$t]=$(median "${col[@]}")
        eval "col=(\"\${srv_${t}[@]}\")"
        res[$w/srv/$t]=$(median "${col[@]}")
        if [ "$w" = seq ]; then
            eval "col=(\"\${rd_${t}[@]}\")"
            res[read/app/$t]=$(median "${col[@]}")
        fi
    done
done
if grep -q ' ERROR ' "$base/rclone/log" 2>/dev/null; then
    echo "rclone logged errors:" >&2
    grep ' ERROR ' "$base/rclone/log" | head -5 >&2
fi

verify=$(grep -o 'verifying uploads by .*' "$state/ftpsync.log" 2>/dev/null | head -1 || true)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }
rows=("files app" "files srv" "seq app" "seq srv" "read app")
label() {
    case $1 in
        "files app") echo "files: app done" ;;
        "files srv") echo "files: on server" ;;
        "seq app") echo "seq: app done" ;;
        "seq srv") echo "seq: on server" ;;
        "read app") echo "read: cold" ;;
    esac
}
cell() { # $1 = row, $2 = tool: the median, "-" for bare's server time
    local w=${1% *} k=${1#* }
    if [ "$2" = bare ] && [ "$k" = srv ]; then echo -; else echo "${res[$w/$k/$2]}"; fi
}
table() { # $1 = title, $2 = reference tool or "" for absolute times
    echo "$1"
    printf '%-18s' ""
    for t in "${tools[@]}"; do printf ' %10s' "$t"; done
    echo
    for row in "${rows[@]}"; do
        printf '%-18s' "$(label "$row")"
        for t in "${tools[@]}"; do
            v=$(cell "$row" "$t")
            if [ -n "$2" ]; then
                ref=$(cell "$row" "$2")
                [ "$ref" = - ] && ref=$(cell "${row% *} app" "$2") # bare: the data is there at app done
                v=$(ratio "$v" "$ref")
            fi
            printf ' %10s' "$v"
        done
        echo
    done
}

echo
echo "ftpsync vs peers: median of $RUNS runs, seconds from the start of the write (lower is better)"
echo "files = $NFILES x 4 KiB files, one process; seq = ${SEQ_MIB} MiB dd bs=1M conv=fsync (zeros);"
echo "read = dd of that file to /dev/null after sync + drop_caches; 'on server' as in the header"
echo "of $0; bare = the local disk under $BENCH_DIR"
echo "kernel $(uname -r), $(nproc) cores, $(df -PT "$BENCH_DIR" | awk 'NR==2 {print $2}') under $BENCH_DIR;" \
    "$(/usr/sbin/sshd -V 2>&1 | head -1 | awk '{print $1}' | tr -d ,) on 127.0.0.1 (one sshd for all)"
echo "$(sshfs --version 2>&1 | grep -o 'SSHFS version [^ ]*'); $(rclone version 2>/dev/null | head -1)" \
    "--vfs-cache-mode $RCLONE_CACHE_MODE --vfs-write-back $RCLONE_WRITE_BACK${RCLONE_FLAGS:+ $RCLONE_FLAGS}$(
        [ "$LSYNCD" = 1 ] && echo "; lsyncd $(lsyncd -version 2>&1 | awk '{print $2}') + $(rsync --version | head -1 | awk '{print $1, $3}'), delay 1 s")"
echo
table "absolute, s" ""
echo
table "x bare (time / bare disk time; 'on server' against bare's app time)" bare
echo
table "x ftpsync (time / ftpsync's time)" ftpsync
echo
echo "what 'on server' guarantees:"
echo "  ftpsync  SHA-256 taken at close, file uploaded to a temp name, fsync'd on the server, its"
echo "           SHA-256 computed on the server, then renamed into place atomically" \
    "(${verify:-verification method not logged})"
echo "  sshfs    none beyond SFTP: close() returns once the server acknowledged the writes (in its"
echo "           page cache; fsync@openssh.com only when the app fsyncs); no checksum"
echo "  rclone   size, plus a hash the server computes (md5sum/sha1sum run over ssh exec, found at"
echo "           startup; none on a server without shell) after the upload; writes in place under"
echo "           the final name (partial files visible), no fsync; sftp hashes here: $rclone_hashes"
if [ "$LSYNCD" = 1 ]; then
    echo "  lsyncd   rsync: whole-file checksum computed by the receiver while writing, temp name"
    echo "           then rename, no fsync; no way to wait for it but to watch the server"
fi
echo "mounts:"
printf '  %s\n' "${ftpsync_cmd[*]}" "${sshfs_cmd[*]}" "${rclone_cmd[*]}" | sed "s#$base#\$BASE#g"
echo "rerun: (cd $PWD && RUNS=$RUNS BENCH_DIR=$BENCH_DIR RCLONE_CACHE_MODE=$RCLONE_CACHE_MODE" \
    "RCLONE_WRITE_BACK=$RCLONE_WRITE_BACK${RCLONE_FLAGS:+ RCLONE_FLAGS='$RCLONE_FLAGS'} LSYNCD=$LSYNCD" \
    "scripts/bench-peers.sh)"
