#!/usr/bin/env bash
# Local-speed benchmark (not a test): the bare backing directory vs an ftpsync
# mount with FUSE passthrough vs one without, on the same disk.
#
#   scripts/bench-local.sh                 # as root
#   RUNS=5 BENCH_DIR=/var/tmp scripts/bench-local.sh
#
# Workloads, each the median of RUNS (default 3) runs:
#   create   10,000 x 4 KiB files (open/write/close each)
#   untar    tar -x of a real tree (/usr/share/doc, else a cargo registry crate)
#   write    1 GiB sequential write + fsync (dd bs=1M count=1024 conv=fsync)
#   read     1 GiB cold read (page cache dropped first)
# The table shows seconds and native/mount ratios (1.00 = native speed,
# 0.50 = half the speed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

RUNS="${RUNS:-3}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
remote="sftp://bench@127.0.0.1:1/bench-remote"

if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (drop_caches and passthrough need it)" >&2
    exit 1
fi
command -v fusermount3 >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fuse3 >/dev/null
}
command -v python3 >/dev/null || {
    echo "python3 is needed for the file-create workload" >&2
    exit 1
}
modprobe fuse 2>/dev/null || true

bench_build

bench_need_space 3
base="$(mktemp -d "$BENCH_DIR/ftpsync-bench.XXXXXX")"
mnt=""
cleanup() {
    if [ -n "$mnt" ] && is_mounted "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
        sleep 1
    fi
    rm -rf "$base"
}
trap cleanup EXIT

# The tree to untar: something real that is on this machine.
tree_tar="$base/tree.tar"
if [ -d /usr/share/doc ] && [ "$(find /usr/share/doc -type f | head -2000 | wc -l)" -ge 2000 ]; then
    tree_src=/usr/share/doc
else
    tree_src="$(ls -d "$HOME"/.cargo/registry/src/*/* 2>/dev/null | head -50 | tail -1)"
fi
tar -cf "$tree_tar" -C "$(dirname "$tree_src")" "$(basename "$tree_src")" 2>/dev/null || true
tree_files=$(tar -tf "$tree_tar" | wc -l)
tree_mib=$(( $(stat -c %s "$tree_tar") / 1048576 ))
echo "untar workload: $tree_src ($tree_files entries, $tree_mib MiB)"

can_drop=1
drop_caches() {
    sync
    if [ "$can_drop" = 1 ] && ! echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
        can_drop=0
        echo "warning: cannot drop caches; 'read' is a warm read" >&2
    fi
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# flush between runs (untimed) so background hashing of one run does not
# slow the next; a no-op for the native directory
settle() {
    if [ -n "$mnt" ]; then
        "$bin" flush --local "$state" --timeout 900 >/dev/null
    fi
    sync
}

w_create() { # $1 = dir
    python3 - "$1" <<'PY'
import os, sys
d = sys.argv[1]
os.makedirs(d)
buf = b"x" * 4096
for i in range(10000):
    fd = os.open(os.path.join(d, "f%05d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, buf)
    os.close(fd)
PY
}
w_untar() { mkdir "$1" && tar -xf "$tree_tar" -C "$1"; }
w_write() { dd if=/dev/zero of="$1" bs=1M count=1024 conv=fsync status=none; }
w_read() { dd if="$1" of=/dev/null bs=1M status=none; }

declare -A result
modes=(native passthrough nopassthrough)
workloads=(create untar write read)

for mode in "${modes[@]}"; do
    local_dir="$base/$mode/local"
    state="$base/$mode/state"
    mkdir -p "$local_dir" "$state"
    if [ "$mode" = native ]; then
        target="$local_dir"
        mnt=""
    else
        mnt="$base/$mode/mnt"
        mkdir -p "$mnt"
        # The remote is unreachable on purpose: this measures the local half only
        # (scripts/bench.sh measures the mirror), so nothing waits for it at unmount.
        "$bin" mount --state-dir "$state" --drain-timeout 0 -o "$mode" "$local_dir" "$remote" "$mnt"
        target="$mnt"
    fi
    echo "== $mode (target $target)"
    for w in "${workloads[@]}"; do
        times=()
        for run in $(seq "$RUNS"); do
            case "$w" in
                create) t0=$(now); w_create "$target/c$run"; t1=$(now); settle; rm -rf "$target/c$run" ;;
                untar)  t0=$(now); w_untar "$target/u$run"; t1=$(now); settle; rm -rf "$target/u$run" ;;
                write)  rm -f "$target/big"; settle; t0=$(now); w_write "$target/big"; t1=$(now); settle ;;
                read)   [ -f "$target/big" ] || { w_write "$target/big"; settle; }
                        drop_caches; t0=$(now); w_read "$target/big"; t1=$(now) ;;
            esac
            times+=("$(elapsed "$t0" "$t1")")
        done
        result[$mode,$w]=$(median "${times[@]}")
        printf '   %-7s runs: %s  median %ss\n' "$w" "${times[*]}" "${result[$mode,$w]}"
    done
    rm -f "$target/big"
    if [ -n "$mnt" ]; then
        fusermount3 -u "$mnt"
        for _ in $(seq 100); do [ -e "$state/ftpsync.pid" ] || break; sleep 0.1; done
        mnt=""
    fi
done

ratio() { awk -v n="$1" -v m="$2" 'BEGIN { if (m > 0) printf "%.2f", n / m; else print "-" }'; }
echo
echo "ftpsync local benchmark: median of $RUNS, seconds (lower is better);"
echo "ratio = native time / mount time (1.00 = native speed)"
echo "kernel $(uname -r), $(nproc) cores, disk under $BENCH_DIR: $(df -PT "$BENCH_DIR" | awk 'NR==2 {print $2}')"
printf '%-8s %10s %12s %14s %10s %10s\n' workload native passthrough nopassthrough "ratio pt" "ratio nopt"
for w in "${workloads[@]}"; do
    n=${result[native,$w]}; p=${result[passthrough,$w]}; q=${result[nopassthrough,$w]}
    printf '%-8s %10s %12s %14s %10s %10s\n' "$w" "$n" "$p" "$q" "$(ratio "$n" "$p")" "$(ratio "$n" "$q")"
done
echo
echo "workloads: create = 10,000 x 4 KiB files; untar = $tree_src ($tree_files entries, $tree_mib MiB);"
echo "write = 1 GiB dd conv=fsync; read = 1 GiB cold read$([ "$can_drop" = 1 ] || echo ' (WARM: caches could not be dropped)')"
echo "rerun: RUNS=$RUNS BENCH_DIR=$BENCH_DIR $0"
