#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) for N minutes each, one after the other, growing the
# corpus in fuzz/corpus/<target>/, then minimizes each corpus (cargo fuzz cmin) so that what
# is committed stays small. CI does not run this: it replays the committed corpus on stable
# Rust (`cargo test -p sync-fuzz`).
#
#   scripts/fuzz.sh [minutes] [target...]     (default: 10 minutes; request commit replica)
#
# A finding is written to fuzz/artifacts/<target>/; read it with
#   TIDEMARK_FUZZ_TRACE=1 cargo run -p sync-fuzz --example run_input -- <target> <file>
# Each target's libFuzzer output is kept in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request commit replica)
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p fuzz/logs
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "==> $target: $minutes minutes"
    nice cargo +nightly fuzz run "$target" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 \
        >"fuzz/logs/$target.log" 2>&1 || {
        echo "error: $target found a problem; see fuzz/logs/$target.log and fuzz/artifacts/$target/" >&2
        exit 1
    }
    grep -E '^#[0-9]+[[:space:]]+DONE' "fuzz/logs/$target.log" || true
    echo "==> $target: minimizing the corpus"
    # Keep one input per covered edge rather than per hit-count bucket: the same coverage in
    # about a tenth of the files, so the committed corpus stays small and CI replays it fast.
    nice cargo +nightly fuzz cmin "$target" -- -use_counters=0 >>"fuzz/logs/$target.log" 2>&1
    echo "    $(find "fuzz/corpus/$target" -type f | wc -l) files," \
        "$(du -sh --apparent-size "fuzz/corpus/$target" | cut -f1)"
done
