#!/usr/bin/env bash
# A/B of two sync-server binaries on the same workloads, one after the other, each on a fresh
# SQLite data directory: push throughput (8 and 64 clients) and the open-loop latency mix.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY      # results in target/bench/ab-{a,b}.{json,log}
#
# Build the binaries with `cargo build --release -p sync-server` at each commit and copy them
# aside; sync-bench must be built (`cargo build --release -p sync-bench`).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
run() {
    local bin=$1 label=$2 dir url="" pid
    dir=$(mktemp -d)
    "$bin" --listen 127.0.0.1:0 --data "$dir/data" >"$dir/out" 2>"$dir/err" &
    pid=$!
    for _ in $(seq 100); do
        url=$(sed -n 's/^tidemark listening on \(http[^ ]*\).*/\1/p' "$dir/out" | head -n 1)
        [ -n "$url" ] && break
        sleep 0.1
    done
    target/release/sync-bench run --url "$url" --label "$label" \
        --out "target/bench/ab-$label.json" --workloads push,latency --reps 3 \
        --push-clients 8,64 --latency-secs 10 | tee "target/bench/ab-$label.log"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
run "$1" a
run "$2" b
