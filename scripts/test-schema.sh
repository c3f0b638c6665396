#!/usr/bin/env bash
# Runs schemathesis (property-based API testing, from PyPI) against a running server, driven
# by the server's own /v1/openapi.json: random valid and invalid requests to every operation.
# It passes when no answer is a 5xx and every answer fits the document (status code, content
# type, headers and body schema).
#
# Installs schemathesis into target/schemathesis-venv on first use. Bounded: a fixed number
# of examples per operation and a time budget, so that it stays well under two minutes.
#
#   scripts/test-schema.sh                # SQLite in a temporary directory
#   TIDEMARK_DATABASE=postgres://... TIDEMARK_DATABASE_SCHEMA=x scripts/test-schema.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
venv="$target/schemathesis-venv"
version="4.32.5"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

cargo build -p sync-server --bin sync-server
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Dev auth on loopback: the bearer token is the user id. Port 0: the server prints its address.
"$target/debug/sync-server" --listen 127.0.0.1:0 --data "$work/data" --request-timeout 10s \
    >"$work/stdout" 2>"$work/server.log" &
server_pid=$!
url=""
for _ in $(seq 100); do
    url="$(sed -n 's/^tidemark listening on //p' "$work/stdout")"
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "error: the server did not start" >&2; cat "$work/server.log" >&2; exit 1; }

# One worker: with several, schemathesis's generator (hypothesis) can trip over CPython 3.11's
# thread-unsafe ast.parse ("AST constructor recursion depth mismatch"), an error of the tool.
# Event streams never end by design, so they are left out (tests/tests/e2e/live.rs and
# presence.rs cover them); /metrics is plain text of Prometheus's format.
# Run from the temporary directory: schemathesis keeps a cache (`.schemathesis/`) in its
# working directory, which does not belong in the repository.
status=0
(cd "$work" && "$venv/bin/schemathesis" run "$url/v1/openapi.json" \
    --header "Authorization: Bearer schemathesis" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --exclude-path-regex '/events$' \
    --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
    --max-time 60 \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --request-timeout 15 \
    --workers 1 \
    --no-color \
    --report junit --report-dir "$target/schemathesis-report") || status=$?
if grep -E 'panicked|ERROR' "$work/server.log" >&2; then
    echo "error: the server logged errors during the run (above)" >&2
    exit 1
fi
exit "$status"
