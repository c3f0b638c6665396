#!/usr/bin/env bash
# Issue #10: the presence-channels benchmark. 100 channels of 20 participants (one user each),
# every participant POSTing its state at 10 Hz on a fixed open-loop schedule (20,000
# requests/s scheduled); round-trip p50/p99/p99.9, achieved rate, errors and 429s, peers
# checked, the age of peers' states, server CPU (cores used) and memory.
#
# Builds sync-server and sync-bench in release, then runs `sync-bench presence`, which starts
# the server itself on 127.0.0.1:0 with a new data directory, measures, and stops it. Writes
# target/bench/presence.md (the table, the exact command, the machine, the date) and
# target/bench/presence.json.
#
# Usage: scripts/bench-presence.sh [options] [-- extra flags for `sync-bench presence`]
#   --max-load L   first wait while the 1-minute load average is above L (default 1.5;
#                  two benchmarks at once on 2 cores measure nothing) ...
#   --max-wait S   ... but at most S seconds (default 300)
#   --append FILE  append the results to FILE as "## Presence channels (issue #10)" if FILE
#                  exists and has no such section yet (e.g. BENCHMARKS.md)
# e.g. `scripts/bench-presence.sh -- --reps 1 --secs 5` for a quick try.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MAX_LOAD=1.5
MAX_WAIT=300
APPEND=
EXTRA=()
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --max-load) MAX_LOAD=$2; shift ;;
        --max-wait) MAX_WAIT=$2; shift ;;
        --append) APPEND=$2; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\n==> %s\n' "$*" >&2; }

OUT_DIR=$ROOT/target/bench
mkdir -p "$OUT_DIR"
MD=$OUT_DIR/presence.md
JSON=$OUT_DIR/presence.json
TABLE=$OUT_DIR/presence-table.md

say "building sync-server and sync-bench (release)"
cargo build --release -p sync-server --bin sync-server -p sync-bench --bin sync-bench

waited=0
while awk -v max="$MAX_LOAD" '{ exit !($1 > max) }' /proc/loadavg && [ "$waited" -lt "$MAX_WAIT" ]; do
    [ "$waited" = 0 ] && say "waiting while the load average ($(cut -d' ' -f1 /proc/loadavg)) is above $MAX_LOAD"
    sleep 5
    waited=$((waited + 5))
done
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

CMD=(target/release/sync-bench presence --reps 3 --secs 20 --warmup-secs 3
    --channels 100 --participants 20 --hz 10 --connections 128 --max-in-flight 1
    --out "$JSON" --markdown "$TABLE" "${EXTRA[@]}")
printf -v CMD_LINE '%q ' "${CMD[@]}"
CMD_LINE=${CMD_LINE% }
CMD_LINE=${CMD_LINE//$ROOT\//}
say "$CMD_LINE"
"${CMD[@]}" > /dev/null

DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CPUS=$(nproc)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    printf 'Measured %s on %s CPUs (%s), %s GiB of memory; 1/5/15-minute load average at the start: %s.\n' \
        "$DATE" "$CPUS" "${CPU_MODEL:-unknown}" "$MEM_GIB" "$LOAD_AT_START"
    printf 'The load generator runs on the same machine as the server (its own CPU use is the last column).\n\n'
    cat "$TABLE"
    printf '\nCommand (`scripts/bench-presence.sh%s`, after `cargo build --release -p sync-server -p sync-bench`):\n\n' \
        "${ARGS[*]:+ ${ARGS[*]}}"
    printf '```sh\n%s\n```\n' "$CMD_LINE"
} > "$MD"
rm -f "$TABLE"
say "wrote $MD and $JSON"

if [ -n "$APPEND" ]; then
    if [ ! -f "$APPEND" ]; then
        say "$APPEND does not exist; the results are in $MD only"
    elif grep -q '^## Presence channels' "$APPEND"; then
        say "$APPEND already has a presence section; left as it is"
    else
        { printf '\n## Presence channels (issue #10)\n\n'; cat "$MD"; } >> "$APPEND"
        say "appended the results to $APPEND"
    fi
fi
