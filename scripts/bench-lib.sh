# Shared by the benchmark scripts (sourced, not run): the release build, the free-space check
# and the mount test they all need.

# Builds the release binary and sets $bin to it.
bench_build() {
    echo "building ftpsync (release)..."
    cargo build --release --quiet
    bin="${CARGO_TARGET_DIR:-$PWD/target}/release/ftpsync"
    [ -x "$bin" ] || {
        echo "no release binary at $bin" >&2
        exit 1
    }
}

# Exits unless $BENCH_DIR has $1 GiB free.
bench_need_space() {
    local free_kb
    free_kb=$(df -Pk "$BENCH_DIR" | awk 'NR==2 {print $4}')
    if [ "$free_kb" -lt $(($1 * 1024 * 1024)) ]; then
        echo "need $1 GiB free in $BENCH_DIR (have $((free_kb / 1024)) MiB); set BENCH_DIR" >&2
        exit 1
    fi
}

# True when something is mounted on $1 (a dead FUSE mount too).
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
