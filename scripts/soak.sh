#!/usr/bin/env bash
# Soak: runs the model-based test (tests/model.rs) for a long time, in chunks of fresh seeds,
# and sums what they did. Exits non-zero on any divergence (or a chunk that ended without
# reporting its counts).
#
#   SOAK_MINUTES=60      total wall time (default 60)
#   SOAK_CHUNK_MINUTES=10  one test-binary run (each prints its counts; a crash loses one chunk)
#   SOAK_DIR=DIR         where the chunk logs go (default: a new temp dir, kept)
#   MODEL_*              passed through (MODEL_OPS, MODEL_SERVER_EDITS=0, MODEL_KILLS=0, ...)
#
# The first chunk replays tests/model-regressions.txt too; every chunk goes on after a
# failing seed (MODEL_KEEP_GOING=1), so one run finds every seed that fails.
# Run as root (FUSE, sshd), as scripts/test.sh does.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."

minutes="${SOAK_MINUTES:-60}"
chunk="${SOAK_CHUNK_MINUTES:-10}"
dir="${SOAK_DIR:-$(mktemp -d /tmp/ftpsync-soak.XXXXXX)}"
mkdir -p "$dir"

echo "building the model test..."
exe="$(cargo test --test model --no-run 2>&1 | sed -n 's/.*Executable tests\/model.rs (\(.*\))$/\1/p' | tail -1)"
if [ -z "$exe" ] || [ ! -x "$exe" ]; then
    echo "cannot find the model test binary (cargo test --test model --no-run)" >&2
    exit 1
fi
echo "binary: $exe; logs: $dir; $minutes min in chunks of $chunk min"

declare -A sum=([episodes]=0 [ops]=0 [flushes]=0 [kills]=0 [sshd_restarts]=0 [server_edits]=0 [divergences]=0)
seeds=""
failing=()
broken_chunks=0
deadline=$(($(date +%s) + minutes * 60))
n=0
while :; do
    left=$((deadline - $(date +%s)))
    [ "$left" -gt 0 ] || break
    n=$((n + 1))
    secs=$((chunk * 60 < left ? chunk * 60 : left))
    regressions=$([ "$n" -eq 1 ] && echo 1 || echo 0)
    log="$dir/chunk-$n.log"
    echo "chunk $n: ${secs}s (regressions: $regressions) -> $log"
    # A chunk's own bound: its time, the last seed's steps and the harness's waits.
    set +e
    MODEL_SECONDS="$secs" MODEL_KEEP_GOING=1 MODEL_REGRESSIONS="$regressions" \
        timeout --kill-after=30 $((secs + 900)) \
        "$exe" --nocapture --test-threads=1 >"$log" 2>&1
    rc=$?
    set -e
    line="$(grep '^MODEL-COUNTS ' "$log" | tail -1 || true)"
    if [ -z "$line" ]; then
        echo "chunk $n ended (exit $rc) without its counts line: see $log" >&2
        broken_chunks=$((broken_chunks + 1))
        continue
    fi
    for kv in ${line#MODEL-COUNTS }; do
        k="${kv%%=*}" v="${kv#*=}"
        case "$k" in
        seeds) seeds="${seeds:+$seeds,}$v" ;;
        seconds) ;;
        *) sum[$k]=$((${sum[$k]:-0} + v)) ;;
        esac
    done
    while IFS= read -r f; do
        failing+=("$f")
    done < <(sed -n 's/^regression line: //p' "$log")
    echo "  $line"
done

echo
echo "==== soak: $minutes min, $n chunks ===="
echo "episodes:        ${sum[episodes]}"
echo "operations:      ${sum[ops]}"
echo "flushes:         ${sum[flushes]}"
echo "daemon kills:    ${sum[kills]}"
echo "sshd restarts:   ${sum[sshd_restarts]}"
echo "server edits:    ${sum[server_edits]}"
echo "divergences:     ${sum[divergences]}"
echo "broken chunks:   $broken_chunks"
echo "seeds:           $seeds"
if [ "${#failing[@]}" -gt 0 ]; then
    echo "failing seeds (lines for tests/model-regressions.txt; details in $dir):"
    printf '  %s\n' "${failing[@]}"
fi
if [ "${sum[divergences]}" -ne 0 ] || [ "$broken_chunks" -ne 0 ]; then
    exit 1
fi
