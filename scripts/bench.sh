#!/usr/bin/env bash
# Mirror benchmark (not a test): in one run, against a throwaway loopback sshd and the release
# build, how fast applications write through an ftpsync mount compared with the bare backing
# disk, and how long after the last close the remote holds a confirmed (SHA-256 verified) copy.
#
#   scripts/bench.sh                       # as root
#   RUNS=5 BENCH_DIR=/var/tmp scripts/bench.sh
#
# Workloads, each the median of RUNS (default 3) runs:
#   seq      1 GiB sequential write + fsync (dd bs=1M count=1024 conv=fsync)
#   files    10,000 x 4 KiB files (open/write/close each, one process)
# For each: the time to write them into a bare directory and through the mount (same disk),
# the ratio bare/mount (1.00 = local speed), and "close->confirmed": `ftpsync flush` started
# right after the last close, timed until it returns 0 (every file uploaded, fsync'd on the
# server, its SHA-256 checked there, renamed into place). The mount uses the defaults
# (passthrough as root, --connections 4, --writeback-delay 1 s, which a flush does not wait out).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

RUNS="${RUNS:-3}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (sshd logs root in by key; passthrough needs CAP_SYS_ADMIN)" >&2
    exit 1
fi
for tool in fusermount3 python3 /usr/sbin/sshd ssh-keygen sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "needs $tool (apt-get install fuse3 python3 openssh-server openssh-client)" >&2
        exit 1
    }
done
modprobe fuse 2>/dev/null || true

bench_build

bench_need_space 4

base="$(mktemp -d "$BENCH_DIR/ftpsync-bench.XXXXXX")"
chmod 755 "$base"
mnt="$base/mnt"
state="$base/state"
SSHD_PID=""
cleanup() {
    if is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
        for _ in $(seq 100); do [ -e "$state/ftpsync.pid" ] || break; sleep 0.1; done
    fi
    if [ -n "$SSHD_PID" ]; then
        kill "$SSHD_PID" 2>/dev/null || true
    fi
    rm -rf "$base"
}
trap cleanup EXIT

# A throwaway sshd on a free loopback port; its remote root is on the same disk.
scripts/sshd.sh --detach "$base/sshd" >/dev/null
# shellcheck disable=SC1091
. "$base/sshd/env"
mkdir -p "$base/bare" "$base/local" "$mnt" "$state"
mount_cmd=("$bin" mount -v --state-dir "$state" --identity "$IDENTITY" --known-hosts "$KNOWN_HOSTS"
    "$base/local" "$REMOTE_URL" "$mnt")
"${mount_cmd[@]}"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
flush() { "$bin" flush "$state" --timeout 1800 >/dev/null; }

w_seq() { dd if=/dev/zero of="$1" bs=1M count=1024 conv=fsync status=none; }
w_files() { # $1 = dir to create
    python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d)
buf = os.urandom(4096)
for i in range(10000):
    fd = os.open(os.path.join(d, "f%05d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, buf)
    os.close(fd)
PY
}

declare -A res
for w in seq files; do
    bare_t=() mount_t=() conf_t=()
    for run in $(seq "$RUNS"); do
        # bare directory (its files stay until the workload ends: no deletion runs meanwhile)
        sync
        case $w in
            seq) rm -f "$base/bare/big"; sync; t0=$(now); w_seq "$base/bare/big"; t1=$(now) ;;
            files) t0=$(now); w_files "$base/bare/c$run"; t1=$(now) ;;
        esac
        bare_t+=("$(elapsed "$t0" "$t1")")
        # through the mount, then close -> confirmed
        sync
        case $w in
            seq) t0=$(now); w_seq "$mnt/big"; t1=$(now) ;;
            files) t0=$(now); w_files "$mnt/c$run"; t1=$(now) ;;
        esac
        flush
        t2=$(now)
        mount_t+=("$(elapsed "$t0" "$t1")")
        conf_t+=("$(elapsed "$t1" "$t2")")
        # the remote really holds it (untimed), then clean up (deletes mirrored, untimed)
        case $w in
            seq)
                [ "$(sha256sum <"$REMOTE_ROOT/big")" = "$(sha256sum <"$base/local/big")" ] ||
                    { echo "remote big differs from local after flush" >&2; exit 1; }
                rm -f "$mnt/big" ;;
            files)
                n=$(find "$REMOTE_ROOT/c$run" -type f | wc -l)
                [ "$n" = 10000 ] || { echo "remote holds $n of 10000 files after flush" >&2; exit 1; }
                rm -rf "$mnt/c$run" ;;
        esac
        flush
        printf '  %-5s run %d: bare %7ss  mount %7ss  close->confirmed %7ss\n' \
            "$w" "$run" "${bare_t[-1]}" "${mount_t[-1]}" "${conf_t[-1]}"
    done
    rm -rf "${base:?}/bare/"*
    sync
    res[$w,bare]=$(median "${bare_t[@]}")
    res[$w,mount]=$(median "${mount_t[@]}")
    res[$w,conf]=$(median "${conf_t[@]}")
done

verify=$(grep -o 'verifying uploads by .*' "$state/ftpsync.log" 2>/dev/null | head -1 || true)
cipher=$(grep -o 'connected to .*' "$state/ftpsync.log" 2>/dev/null | head -1 | sed 's/.*SHA256:[^ ,]*,* *//' || true)
ratio() { awk -v b="$1" -v m="$2" 'BEGIN { if (m > 0) printf "%.2f", b / m; else print "-" }'; }
rate() { awk -v n="$1" -v t="$2" -v u="$3" 'BEGIN { if (t > 0) printf "%.0f %s", n / t, u; else print "-" }'; }

echo
echo "ftpsync mirror benchmark: median of $RUNS runs, seconds (lower is better)"
echo "ratio = bare time / mount time (1.00 = local speed); close->confirmed = ftpsync flush"
echo "started right after the last close, until every file is verified on the remote"
echo "kernel $(uname -r), $(nproc) cores, $(df -PT "$BENCH_DIR" | awk 'NR==2 {print $2}') under $BENCH_DIR;" \
    "sshd $(/usr/sbin/sshd -V 2>&1 | head -1 | awk '{print $1}') on 127.0.0.1"
echo "${verify:-verification method not logged}${cipher:+; $cipher}"
printf '%-22s %9s %9s %7s %18s %16s\n' workload bare mount ratio "close->confirmed" "remote rate"
printf '%-22s %9s %9s %7s %18s %16s\n' "1 GiB dd conv=fsync" "${res[seq,bare]}" "${res[seq,mount]}" \
    "$(ratio "${res[seq,bare]}" "${res[seq,mount]}")" "${res[seq,conf]}" \
    "$(rate 1024 "${res[seq,conf]}" MiB/s)"
printf '%-22s %9s %9s %7s %18s %16s\n' "10,000 x 4 KiB files" "${res[files,bare]}" "${res[files,mount]}" \
    "$(ratio "${res[files,bare]}" "${res[files,mount]}")" "${res[files,conf]}" \
    "$(rate 10000 "${res[files,conf]}" files/s)"
echo
echo "write speed bare / mount: 1 GiB $(rate 1024 "${res[seq,bare]}" MiB/s) / $(rate 1024 "${res[seq,mount]}" MiB/s);" \
    "files $(rate 10000 "${res[files,bare]}" files/s) / $(rate 10000 "${res[files,mount]}" files/s)"
echo "mount: ${mount_cmd[*]}" | sed "s#$base#\$BASE#g"
echo "rerun: RUNS=$RUNS BENCH_DIR=$BENCH_DIR $0"
