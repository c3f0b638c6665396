#!/usr/bin/env bash
# Issue #7, item 6: pulling N records into IndexedDB in headless Chromium, Tidemark's SDK
# (tidemark/web with IndexedDbStore, against sync-server on SQLite) against kinto.js
# (collection.sync() into its IndexedDB adapter, against Kinto), in the same browser, one run.
#
#   scripts/bench-idb.sh                # 100,000 records, 5 repetitions each; writes the
#                                       # "## Pulling into IndexedDB (browser)" section of BENCHMARKS.md
#   scripts/bench-idb.sh --print        # the same, only printed
#   scripts/bench-idb.sh --smoke        # 200 records, one pull each, checks both counts, times nothing
#   options: --records N  --reps N  --max-load L  --max-wait S (as in scripts/bench.sh)
#
# What it does: builds sync-server and sync-bench (release; debug for --smoke) and the npm
# package tidemark (sync-wasm/build.sh; for --smoke only if missing), installs what is missing
# (Kinto and gunicorn into target/bench/venv, kinto.js into target/bench/kinto-js, www's npm
# dependencies, Chromium from apt), writes the records (`sync-bench records`: ids r-000000000
# on, 1 KB of JSON each), starts both servers, loads Tidemark through its push API and Kinto
# through its storage layer (scripts/bench_kinto.py), and runs www/bench/run.mjs: each
# repetition opens a fresh browser profile, loads www/bench/index.html and times, in the page,
# one sync from an empty IndexedDB until it resolves; then counts the records in IndexedDB.
# Any count other than N fails the script. The two SDKs alternate, Tidemark first.
#
# Both servers use pages of 10,000: Tidemark's client asks for pullLimit 10000 (its default is
# 1,000; the server's maximum is 10,000), Kinto's storage_max_fetch_size is 10000 (its default).
# Kinto runs on its memory backend: its fastest, and no server-side disk for the pull.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. www/tools.sh

SMOKE=0
PRINT=0
RECORDS=100000
REPS=5
MAX_LOAD=1.5
MAX_WAIT=300
KINTO_JS_VERSION=17.1.1
# Pinned for the venv this script creates; a venv scripts/bench.sh made is used as it is.
KINTO_PIP=(kinto==26.5.0 gunicorn==27.0.1)
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --print) PRINT=1 ;;
        --records) RECORDS=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --max-load) MAX_LOAD=$2; shift ;;
        --max-wait) MAX_WAIT=$2; shift ;;
        *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" = 1 ]; then
    RECORDS=200
    REPS=1
fi

TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
PROFILE=release
[ "$SMOKE" = 1 ] && PROFILE=debug
SERVER=$TARGET/$PROFILE/sync-server
BENCH=$TARGET/$PROFILE/sync-bench
VENV=$ROOT/target/bench/venv
KINTO_JS=$ROOT/target/bench/kinto-js
# A run's records, logs and results stay in target/bench/ (a smoke run's are removed).
WORK=$ROOT/target/bench/idb-$(date -u +%Y%m%dT%H%M%SZ)
[ "$SMOKE" = 1 ] && WORK=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-idb-smoke.XXXXXX")
mkdir -p "$WORK"
COMMANDS=$WORK/commands.sh
printf '%s\n' "scripts/bench-idb.sh${ARGS[*]:+ ${ARGS[*]}}" > "$COMMANDS"

# Runs a command after writing it, exactly, to the list the report quotes.
logged() {
    local line
    printf -v line '%q ' "$@"
    line=${line% }
    printf '%s\n' "${line//$ROOT\//}" >> "$COMMANDS"
    "$@"
}

# --- what the run needs, each installed only if missing ------------------------------------

if ! command -v chromium >/dev/null; then
    say "apt-get install chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if [ "$SMOKE" = 1 ]; then
    cargo build -p sync-server --bin sync-server -p sync-bench --bin sync-bench
    ensure_sdk_package
else
    say "building sync-server and sync-bench (release) and the npm package tidemark"
    logged cargo build --release -p sync-server --bin sync-server -p sync-bench --bin sync-bench
    logged sync-wasm/build.sh > "$WORK/sdk-build.log"
fi
ensure_www_deps
# The same venv as scripts/bench.sh, which adds Kinto's PostgreSQL extras to it.
if ! "$VENV/bin/python" -c 'import kinto, gunicorn' 2>/dev/null; then
    say "installing Kinto and gunicorn into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "${KINTO_PIP[@]}"
fi
if [ ! -f "$KINTO_JS/node_modules/kinto/package.json" ] \
    || [ "$(node -p "require('$KINTO_JS/node_modules/kinto/package.json').version")" != "$KINTO_JS_VERSION" ]; then
    say "npm install kinto@$KINTO_JS_VERSION (into ${KINTO_JS#$ROOT/})"
    mkdir -p "$KINTO_JS"
    (cd "$KINTO_JS" && echo '{"private": true}' > package.json \
        && npm install --no-audit --no-fund --save-exact "kinto@$KINTO_JS_VERSION" >/dev/null)
fi
KINTO_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kinto"))')

# --- the servers ---------------------------------------------------------------------------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PIDS=()
DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-idb.XXXXXX")
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA_DIR"
    if [ "$SMOKE" = 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Waits (up to MAX_WAIT seconds) until the machine is quiet enough to measure.
wait_quiet() {
    local waited=0
    while awk -v max="$MAX_LOAD" '{ exit !($1 > max) }' /proc/loadavg && [ "$waited" -lt "$MAX_WAIT" ]; do
        [ "$waited" = 0 ] && say "waiting for the load average ($(cut -d' ' -f1 /proc/loadavg)) to fall below $MAX_LOAD"
        sleep 10
        waited=$((waited + 10))
    done
}

RECORDS_TSV=$WORK/records.tsv
logged "$BENCH" records --count "$RECORDS" --out "$RECORDS_TSV"

PAGE=127.0.0.1:$(free_port)
ORIGIN=http://$PAGE

say "sync-server (SQLite) in ${DATA_DIR}"
printf '%q ' "$SERVER" --listen 127.0.0.1:0 --data "$DATA_DIR" --cors-origin "$ORIGIN" | sed "s|$ROOT/||g" >> "$COMMANDS"
echo '&' >> "$COMMANDS"
"$SERVER" --listen 127.0.0.1:0 --data "$DATA_DIR" --cors-origin "$ORIGIN" \
    > "$WORK/tidemark.out" 2> "$WORK/tidemark.log" &
PIDS+=($!)
TIDEMARK_URL=
for _ in $(seq 1 300); do
    TIDEMARK_URL=$(sed -n 's/^tidemark listening on //p' "$WORK/tidemark.out" | head -n 1)
    [ -n "$TIDEMARK_URL" ] && break
    sleep 0.1
done
[ -n "$TIDEMARK_URL" ] || { cat "$WORK/tidemark.log" >&2; echo "sync-server did not start" >&2; exit 1; }

# Kinto on its memory backend, which lives in the server process: bench_kinto.py stores the
# records through Kinto's storage layer as the process starts (its docstring says why not
# through the API), under the collection the page syncs.
KINTO_PORT=$(free_port)
KINTO_URL=http://127.0.0.1:$KINTO_PORT
INI=$WORK/kinto.ini
cat > "$INI" <<INI
[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.memory
kinto.cache_backend = kinto.core.cache.memory
kinto.permission_backend = kinto.core.permission.memory
multiauth.policies = basicauth
multiauth.policy.basicauth.use = kinto.core.authentication.BasicAuthAuthenticationPolicy
kinto.userid_hmac_secret = tidemark-bench
kinto.bucket_create_principals = system.Authenticated
kinto.cors_origins = $ORIGIN
# Pages of up to 10,000 records, as Tidemark's (Kinto's default).
kinto.storage_max_fetch_size = 10000

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s] %(message)s
INI
say "Kinto $KINTO_VERSION (memory) at $KINTO_URL, preloading $RECORDS records"
printf 'export KINTO_INI=%q KINTO_PRELOAD=%q\n' "${INI#$ROOT/}" "/buckets/bench/collections/idb=${RECORDS_TSV#$ROOT/}" >> "$COMMANDS"
printf '%q ' "$VENV/bin/gunicorn" --chdir scripts bench_kinto:application --bind "127.0.0.1:$KINTO_PORT" \
    --workers 1 --worker-class gthread --threads 4 --timeout 600 | sed "s|$ROOT/||g" >> "$COMMANDS"
echo '&' >> "$COMMANDS"
KINTO_INI=$INI KINTO_PRELOAD=/buckets/bench/collections/idb=$RECORDS_TSV \
    "$VENV/bin/gunicorn" --chdir "$ROOT/scripts" bench_kinto:application --bind "127.0.0.1:$KINTO_PORT" \
    --workers 1 --worker-class gthread --threads 4 --timeout 600 \
    > "$WORK/kinto.out" 2> "$WORK/kinto.log" &
PIDS+=($!)
logged "$BENCH" wait --dialect kinto --url "$KINTO_URL" --wait-secs 600 \
    || { cat "$WORK/kinto.log" >&2; exit 1; }

# --- the pulls -----------------------------------------------------------------------------

[ "$SMOKE" = 1 ] || wait_quiet
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "pulling $RECORDS records into IndexedDB, $REPS times each, in headless Chromium"
RESULTS=$WORK/results.json
logged node www/bench/run.mjs --listen "$PAGE" --records "$RECORDS_TSV" --count "$RECORDS" \
    --reps "$REPS" --tidemark "$TIDEMARK_URL" --kinto "$KINTO_URL" \
    --kinto-js "$KINTO_JS/node_modules/kinto/dist" --out "$RESULTS"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$SMOKE" = 1 ]; then
    say "smoke: both SDKs stored all $RECORDS records in IndexedDB"
    exit 0
fi

# --- the report ----------------------------------------------------------------------------

CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
section=$(python3 - "$RESULTS" "$COMMANDS" <<PY
import json, statistics, sys
results = json.load(open(sys.argv[1]))
commands = open(sys.argv[2]).read().strip()
n = $RECORDS
names = {"tidemark": "Tidemark (\`tidemark/web\`, IndexedDbStore; sync-server on SQLite)",
         "kinto": "kinto.js $KINTO_JS_VERSION (IndexedDB adapter; Kinto $KINTO_VERSION, memory)"}
medians = {}
rows = []
for system in ("tidemark", "kinto"):
    ms = [r["ms"] for r in results if r["system"] == system]
    medians[system] = statistics.median(ms)
    reps = ", ".join(f"{m / 1000:.2f}" for m in ms)
    rows.append(f"| {names[system]} | {reps} | **{medians[system] / 1000:.2f} s** | {n / medians[system] * 1000:,.0f} |")
ratio = medians["kinto"] / medians["tidemark"]
print(f"""## Pulling into IndexedDB (browser)

Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`scripts/bench-idb.sh\` on $(nproc) CPUs ($CPU), $MEM of memory;
1/5/15-minute load average $LOAD_BEFORE at the start, $LOAD_AFTER at the end. $(chromium --version 2>/dev/null | head -n 1), headless.

{n:,} records of about 1 KB of JSON (\`sync-bench records\`), pulled from an empty IndexedDB in a
fresh browser profile per repetition, the two SDKs alternating. Timed in the page from the
start of the sync call (the database opened, the client made) until it resolves with every
record stored; the records in IndexedDB were counted afterwards: {n:,} each time.

| SDK (server) | seconds per repetition | median | records/s |
|---|---|---|---|
{chr(10).join(rows)}

Ratio of the medians, kinto.js ÷ Tidemark: **{ratio:.2f}×** (above 1: Tidemark is faster).

Both pull in pages of 10,000: Tidemark's client with \`pullLimit: 10000\` (its default is 1,000),
Kinto with \`storage_max_fetch_size = 10000\`. Tidemark's server is the release build of commit
$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sync-core sync-server sync-wasm || echo ' (plus uncommitted changes)') with SQLite (WAL, \`synchronous = FULL\`); Kinto runs under
gunicorn (1 process, 4 threads) on its memory backend, its fastest, with the records stored
through its storage layer as it starts (\`scripts/bench_kinto.py\`). Both servers, the page
server and Chromium share the machine.

Commands (\`scripts/bench-idb.sh\` runs them; the page and its driver are in \`www/bench/\`):

\`\`\`sh
{commands}
\`\`\`""")
PY
)
if [ "$PRINT" = 1 ]; then
    echo "$section"
else
    printf '%s\n' "$section" | python3 scripts/md_section.py BENCHMARKS.md
    echo "$section"
    say "written to BENCHMARKS.md (raw results and logs in ${WORK#$ROOT/})"
fi
