#!/usr/bin/env bash
# Issue #7, workload 5: fan-out. One write reaching 1,000 and then 10,000 live-event (SSE)
# subscribers of one collection: delivery latency p50/p99/max (from just before the push is
# sent to each subscriber reading its `change` event), and the server's RSS per idle
# subscriber ((VmRSS with every stream open and idle − VmRSS before) / subscribers).
#
# Builds sync-server and sync-bench in release, then runs `sync-bench fanout`, which starts
# the server itself on 127.0.0.1:0 with a new SQLite data directory for each subscriber count,
# measures, and stops it. Writes target/bench/fanout.md (the table, the exact command, the
# machine, the date) and target/bench/fanout.json.
#
# Usage: scripts/bench-fanout.sh [options] [-- extra flags for `sync-bench fanout`]
#   --max-load L   first wait while the 1-minute load average is above L (default 1.5;
#                  two benchmarks at once on 2 cores measure nothing) ...
#   --max-wait S   ... but at most S seconds (default 300)
#   --append FILE  write the results into FILE as "## Fan-out (SSE)", replacing that section
#                  if FILE has one already (e.g. BENCHMARKS.md)
# e.g. `scripts/bench-fanout.sh -- --subscribers 1000 --reps 1` for a quick try.
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

# Cargo's target directory (CARGO_TARGET_DIR if set); the command shown says `target/`.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT_DIR=$TARGET_DIR/bench
mkdir -p "$OUT_DIR"
MD=$OUT_DIR/fanout.md
JSON=$OUT_DIR/fanout.json
TABLE=$OUT_DIR/fanout-table.md

say "building sync-server and sync-bench (release)"
cargo build --release -p sync-server --bin sync-server -p sync-bench --bin sync-bench

# 10,000 subscribers are 10,000 sockets on each side; the server inherits this limit (and
# sync-bench raises its own soft limit to the hard one as well).
HARD_FILES=$(ulimit -Hn)
if [ "$HARD_FILES" != unlimited ] && [ "$HARD_FILES" -lt 10100 ]; then
    say "the hard limit on open files is $HARD_FILES; 10,000 subscribers need more than 10,100"
fi
ulimit -n "$HARD_FILES"

waited=0
while awk -v max="$MAX_LOAD" '{ exit !($1 > max) }' /proc/loadavg && [ "$waited" -lt "$MAX_WAIT" ]; do
    [ "$waited" = 0 ] && say "waiting while the load average ($(cut -d' ' -f1 /proc/loadavg)) is above $MAX_LOAD"
    sleep 5
    waited=$((waited + 5))
done
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

CMD=("$TARGET_DIR/release/sync-bench" fanout --subscribers 1000,10000 --writes 20 --reps 5
    --spacing-ms 100 --out "$JSON" --markdown "$TABLE" "${EXTRA[@]}")
printf -v CMD_LINE '%q ' "${CMD[@]}"
CMD_LINE=${CMD_LINE% }
CMD_LINE=${CMD_LINE//$TARGET_DIR\//target/}
CMD_LINE=${CMD_LINE//$ROOT\//}
say "$CMD_LINE"
"${CMD[@]}" > /dev/null
LOAD_AT_END=$(cut -d' ' -f1-3 /proc/loadavg)

DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CPUS=$(nproc)
MEM_GIB=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
{
    printf 'Measured %s on %s CPUs (%s), %s GiB of memory; 1/5/15-minute load average at the start: %s, at the end: %s.\n' \
        "$DATE" "$CPUS" "${CPU_MODEL:-unknown}" "$MEM_GIB" "$LOAD_AT_START" "$LOAD_AT_END"
    printf 'The subscribers run on the same machine as the server (one tokio task and socket each, on 2 threads).\n\n'
    cat "$TABLE"
    printf '\nTargets (issue #7): p99 under 250 ms at 10,000 subscribers, under 16 KB per idle subscriber.\n'
    printf '\nCommand (`scripts/bench-fanout.sh%s`, after `cargo build --release -p sync-server -p sync-bench`):\n\n' \
        "${ARGS[*]:+ ${ARGS[*]}}"
    printf '```sh\n%s\n```\n' "$CMD_LINE"
} > "$MD"
rm -f "$TABLE"
say "wrote $MD and $JSON"

if [ -n "$APPEND" ]; then
    if [ ! -f "$APPEND" ]; then
        say "$APPEND does not exist; the results are in $MD only"
    else
        # Replace the section (up to the next "## " heading) in place, or append it.
        python3 - "$APPEND" "$MD" <<'PY'
import sys
path, md = sys.argv[1], sys.argv[2]
heading = "## Fan-out (SSE)"
section = heading + "\n\n" + open(md).read().rstrip("\n") + "\n"
lines = open(path).read().split("\n")
start = next((i for i, l in enumerate(lines) if l.strip() == heading), None)
if start is None:
    text = "\n".join(lines).rstrip("\n") + "\n\n" + section
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = "\n".join(lines[end:])
    text = "\n".join(lines[:start]) + "\n" + section + ("\n" + rest if rest.strip() else "")
    text = text.rstrip("\n") + "\n"
open(path, "w").write(text)
PY
        say "wrote the results into $APPEND"
    fi
fi
