#!/usr/bin/env bash
# Issue #7: benchmarks Tidemark against Kinto in one run, on this machine, and writes
# BENCHMARKS.md.
#
# Builds sync-server and sync-bench in release, installs Kinto into target/bench/venv if it
# is missing, then starts each system in turn with fresh state -- Tidemark (SQLite, new
# temporary data directory), Tidemark (PostgreSQL), Kinto (memory), Kinto (PostgreSQL); each
# PostgreSQL database is dropped and recreated --, checks it with `sync-bench smoke`, runs the
# same workloads against it with `sync-bench run`, and stops it. Finally `sync-bench report`
# writes the table. Sections of the old report that the table does not hold (the ones other
# bench scripts append: presence, fan-out, SDK size, ...) are kept at its end.
#
# Usage: scripts/bench.sh [options] [-- extra flags for `sync-bench run`]
#   --quick              small sizes, 2 repetitions, for trying the script (about 10 minutes)
#   --reps N             repetitions of each measurement (default 5)
#   --systems LIST       comma-separated subset of
#                        tidemark,tidemark-postgresql,kinto-memory,kinto-postgresql
#   --pull-records N     records in the pull test's collection (default 100000)
#   --growth-budget S    seconds each system may spend growing its collection (default 240)
#   --kinto-workers N    gunicorn processes for Kinto with PostgreSQL (default 4; the memory
#                        backend keeps its data in one process, so it always gets 1)
#   --kinto-threads N    threads per gunicorn process (default 4)
#   --out FILE           where to write the report (default BENCHMARKS.md)
#   --max-load L         before each system, wait while the 1-minute load average is above L
#                        (other builds share the machine; default 1.5) ...
#   --max-wait S         ... but at most S seconds (default 300)
# Anything after `--` goes to every `sync-bench run` (e.g. `-- --push-clients 8 --rate 500`).
#
# PostgreSQL is expected at 127.0.0.1:5432 with trust auth for user postgres (started with
# pg_ctlcluster if it is down). Runs alone: two benchmarks at once on 2 cores measure nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
REPS=5
SYSTEMS=tidemark,tidemark-postgresql,kinto-memory,kinto-postgresql
GROWTH_BUDGET=240
PULL_RECORDS=100000
KINTO_WORKERS=4
KINTO_THREADS=4
OUT=BENCHMARKS.md
MAX_LOAD=1.5
MAX_WAIT=300
EXTRA=()
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS=$2; shift ;;
        --systems) SYSTEMS=$2; shift ;;
        --growth-budget) GROWTH_BUDGET=$2; shift ;;
        --pull-records) PULL_RECORDS=$2; shift ;;
        --kinto-workers) KINTO_WORKERS=$2; shift ;;
        --kinto-threads) KINTO_THREADS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --max-load) MAX_LOAD=$2; shift ;;
        --max-wait) MAX_WAIT=$2; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option $1 (see the top of $0)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '\n==> %s\n' "$*" >&2; }

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB=kinto_bench
PG_URL="postgresql://postgres@$PG_HOST:$PG_PORT/$PG_DB"
TIDEMARK_PG_DB=tidemark_bench
TIDEMARK_PG_URL="postgres://postgres@$PG_HOST:$PG_PORT/$TIDEMARK_PG_DB"
VENV=$ROOT/target/bench/venv
BENCH=$ROOT/target/release/sync-bench
SERVER=$ROOT/target/release/sync-server
WORK=$ROOT/target/bench/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$WORK"
COMMANDS=$WORK/commands.sh
printf '%s\n' "scripts/bench.sh${ARGS[*]:+ ${ARGS[*]}}" > "$COMMANDS"

# Runs a command after writing it, exactly, to the list the report quotes.
logged() {
    local line
    printf -v line '%q ' "$@"
    line=${line% }
    printf '%s\n' "${line//$ROOT\//}" >> "$COMMANDS"
    "$@"
}

# Starts a server in the background like `logged`, stdout and stderr to files; sets SERVER_PID.
spawn() {
    local out=$1 err=$2 line
    shift 2
    printf -v line '%q ' "$@"
    line=${line% }
    printf '%s &\n' "${line//$ROOT\//}" >> "$COMMANDS"
    "$@" > "$out" 2> "$err" &
    SERVER_PID=$!
}

if [ "$QUICK" = 1 ]; then
    [ "$REPS" = 5 ] && REPS=2
    [ "$GROWTH_BUDGET" = 240 ] && GROWTH_BUDGET=60
    [ "$PULL_RECORDS" = 100000 ] && PULL_RECORDS=20000
    SIZES=(--push-records 20000 --push-max-secs 3 --latency-secs 3 --latency-warmup-secs 1
        --growth-step 25000 --growth-max 100000)
else
    SIZES=()
fi
# Every system gets the same workloads. Collections are named `run-...`: each system starts empty.
PARAMS=(--tag run --reps "$REPS" --pull-records "$PULL_RECORDS" --growth-budget-secs "$GROWTH_BUDGET" "${SIZES[@]}")
# How each system is loaded before (or, in the growth test, between) measurements: the fastest
# way it takes. Tidemark: 4 concurrent pushes of 1,000. Kinto: one push of 100 at a time
# (bigger batches and concurrent writers to one collection are slower, or refused with 409 on
# PostgreSQL), and the pull test's collection preloaded through its storage layer
# (scripts/bench_kinto.py says why).
TIDEMARK_LOAD=(--load-clients 4 --load-batch 1000)
KINTO_LOAD=(--load-clients 1 --load-batch 100 --pull-preloaded)
KINTO_COLLECTION=/buckets/bench/collections/run-pull

say "building sync-server and sync-bench (release)"
logged cargo build --release -p sync-server --bin sync-server -p sync-bench --bin sync-bench

needs_kinto=0
case ",$SYSTEMS," in *,kinto-*) needs_kinto=1 ;; esac
if [ "$needs_kinto" = 1 ]; then
    if ! "$VENV/bin/python" -c 'import kinto, psycopg2, sqlalchemy, zope.sqlalchemy, gunicorn' 2>/dev/null; then
        say "installing Kinto into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet 'kinto[postgresql]' gunicorn
    fi
    KINTO_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kinto"))')
    RECORDS=$WORK/records.tsv
    logged "$BENCH" records --count "$PULL_RECORDS" --out "$RECORDS"
fi

SERVER_PID=
DATA_DIR=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
    if [ -n "$DATA_DIR" ]; then
        rm -rf "$DATA_DIR"
        DATA_DIR=
    fi
}
trap stop_server EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts Tidemark on a fresh SQLite data directory, or with `postgresql` on a freshly
# recreated database; sets URL.
start_tidemark() {
    local backend=${1:-sqlite} name=tidemark storage
    DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-bench.XXXXXX")
    storage=(--data "$DATA_DIR")
    if [ "$backend" = postgresql ]; then
        name=tidemark-postgresql
        ensure_postgres
        logged psql -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -c "DROP DATABASE IF EXISTS $TIDEMARK_PG_DB WITH (FORCE)" -c "CREATE DATABASE $TIDEMARK_PG_DB"
        storage=(--database "$TIDEMARK_PG_URL")
    fi
    spawn "$WORK/$name.out" "$WORK/$name.log" "$SERVER" --listen 127.0.0.1:0 "${storage[@]}"
    URL=
    for _ in $(seq 1 300); do
        URL=$(sed -n 's/^tidemark listening on //p' "$WORK/$name.out" | head -n 1)
        [ -n "$URL" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$URL" ] || { echo "sync-server did not print its address" >&2; exit 1; }
}

ensure_postgres() {
    if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
        say "starting PostgreSQL"
        logged pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
        for _ in $(seq 1 100); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 0.2; done
    fi
}

# Starts Kinto with the memory or postgresql backend under gunicorn; sets URL.
start_kinto() {
    local backend=$1 workers=$2 port ini
    port=$(free_port)
    ini=$WORK/kinto-$backend.ini
    local storage=kinto.core.storage.$backend cache=kinto.core.cache.$backend
    local permission=kinto.core.permission.$backend url=
    [ "$backend" = postgresql ] && url=$PG_URL
    cat > "$ini" <<EOF
[app:main]
use = egg:kinto
kinto.storage_backend = $storage
kinto.storage_url = $url
kinto.cache_backend = $cache
kinto.cache_url = $url
kinto.permission_backend = $permission
kinto.permission_url = $url
kinto.storage_pool_size = 8
kinto.cache_pool_size = 4
kinto.permission_pool_size = 4
multiauth.policies = basicauth
multiauth.policy.basicauth.use = kinto.core.authentication.BasicAuthAuthenticationPolicy
kinto.userid_hmac_secret = tidemark-bench
kinto.bucket_create_principals = system.Authenticated
# Batches of up to 1,000 records (the default is 25) and pages of up to 10,000 (Tidemark's limits).
kinto.batch_max_requests = 1000
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
EOF
    if [ "$backend" = postgresql ]; then
        ensure_postgres
        logged psql -q -h "$PG_HOST" -p "$PG_PORT" -U postgres -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB"
        logged "$VENV/bin/kinto" migrate --ini "$ini" > "$WORK/kinto-migrate.log" 2>&1
        say "preloading $PULL_RECORDS records into PostgreSQL through Kinto's storage layer"
        logged "$VENV/bin/python" scripts/bench_kinto.py "$ini" "$KINTO_COLLECTION" "$RECORDS" 2> "$WORK/kinto-preload.log"
        unset KINTO_PRELOAD
    else
        # The memory backend lives in the server process: it preloads itself on start.
        printf 'export KINTO_PRELOAD=%q\n' "$KINTO_COLLECTION=${RECORDS#$ROOT/}" >> "$COMMANDS"
        export KINTO_PRELOAD=$KINTO_COLLECTION=$RECORDS
    fi
    printf 'export KINTO_INI=%q\n' "${ini#$ROOT/}" >> "$COMMANDS"
    export KINTO_INI=$ini
    spawn "$WORK/kinto-$backend.out" "$WORK/kinto-$backend.log" "$VENV/bin/gunicorn" --chdir "$ROOT/scripts" \
        bench_kinto:application --bind "127.0.0.1:$port" --workers "$workers" --worker-class gthread \
        --threads "$KINTO_THREADS" --timeout 600 --graceful-timeout 5 --keep-alive 120 --backlog 2048
    URL=http://127.0.0.1:$port
}

# Waits (up to MAX_WAIT seconds) until the machine is quiet enough to measure.
wait_quiet() {
    local waited=0
    while awk -v max="$MAX_LOAD" '{ exit !($1 > max) }' /proc/loadavg && [ "$waited" -lt "$MAX_WAIT" ]; do
        [ "$waited" = 0 ] && say "waiting for the load average ($(cut -d' ' -f1 /proc/loadavg)) to fall below $MAX_LOAD"
        sleep 10
        waited=$((waited + 10))
    done
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

RESULTS=()
NOTES=()
LOADS=()
IFS=, read -r -a WANTED <<< "$SYSTEMS"
for system in "${WANTED[@]}"; do
    wait_quiet
    case "$system" in
        tidemark)
            label="Tidemark (SQLite)"; dialect=tidemark; load=("${TIDEMARK_LOAD[@]}")
            start_tidemark sqlite ;;
        tidemark-postgresql)
            label="Tidemark (PostgreSQL)"; dialect=tidemark; load=("${TIDEMARK_LOAD[@]}")
            start_tidemark postgresql ;;
        kinto-memory)
            label="Kinto (memory)"; dialect=kinto; load=("${KINTO_LOAD[@]}")
            start_kinto memory 1 ;;
        kinto-postgresql)
            label="Kinto (PostgreSQL)"; dialect=kinto; load=("${KINTO_LOAD[@]}")
            start_kinto postgresql "$KINTO_WORKERS" ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
    esac
    say "$label at $URL"
    load_before=$(loadavg)
    logged "$BENCH" wait --dialect "$dialect" --url "$URL" --wait-secs 120
    logged "$BENCH" smoke --dialect "$dialect" --url "$URL" >&2
    out=$WORK/$system.json
    logged "$BENCH" run --dialect "$dialect" --url "$URL" --label "$label" --out "$out" \
        "${PARAMS[@]}" "${load[@]}" "${EXTRA[@]}" \
        2> >(tee "$WORK/$system.log" >&2)
    RESULTS+=("$out")
    LOADS+=("$label $load_before → $(loadavg)")
    stop_server
done

say "writing $OUT"
NOTES+=("**Tidemark:** commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- sync-core sync-server || echo ' plus uncommitted changes in sync-core/sync-server'), \`sync-server\` release build, default limits (\`--max-batch 1000\`, \`--max-pull-limit 10000\`); SQLite: WAL with \`synchronous = FULL\`; PostgreSQL: one node, its default pool of 16 connections, database \`$TIDEMARK_PG_DB\` recreated for the run")
if [ "$needs_kinto" = 1 ]; then
    NOTES+=("**Kinto:** $KINTO_VERSION under gunicorn (gthread, $KINTO_THREADS threads per process; 1 process for the memory backend, whose data lives in the process; $KINTO_WORKERS for PostgreSQL), logging at WARNING, basicauth, \`batch_max_requests = 1000\`, \`storage_max_fetch_size = 10000\`; storage, permission and cache all on the same backend")
fi
case ",$SYSTEMS," in
    *,kinto-postgresql,* | *,tidemark-postgresql,*)
        pg=$(psql -Atq -h "$PG_HOST" -p "$PG_PORT" -U postgres -c 'SHOW server_version' | head -n 1)
        settings=$(psql -Atq -h "$PG_HOST" -p "$PG_PORT" -U postgres -F ' = ' \
            -c "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum', 'fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers') ORDER BY name" \
            | paste -sd ';' | sed 's/;/, /g')
        NOTES+=("**PostgreSQL:** $pg on the same machine (127.0.0.1:5432), one database per system recreated for its run; $settings")
        ;;
esac
NOTES+=("**Load average** (1, 5, 15 min) as each system started → finished (2 cores; other builds share the machine): $(IFS=';'; echo "${LOADS[*]}" | sed 's/;/; /g')")
NOTE_FLAGS=()
for note in "${NOTES[@]}"; do NOTE_FLAGS+=(--note "$note"); done
"$BENCH" report --results "${RESULTS[@]}" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --commands "$COMMANDS" "${NOTE_FLAGS[@]}" --out "$WORK/report.md"
# Keep the sections the other bench scripts appended to the old report.
if [ -f "$OUT" ]; then
    python3 scripts/keep_sections.py "$OUT" "$WORK/report.md" > "$WORK/report-kept.md"
    mv "$WORK/report-kept.md" "$OUT"
else
    cp "$WORK/report.md" "$OUT"
fi
say "done: $OUT (raw results and logs in ${WORK#$ROOT/})"
