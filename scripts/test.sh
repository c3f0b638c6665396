#!/usr/bin/env bash
# Runs every test of the workspace, installing and starting what is missing first.
# Safe to run again and again: each step checks before it acts.
#
#   1. toolchain and services (the wasm32 target; PostgreSQL on 127.0.0.1:5432)
#   2. sync-core for wasm32 (no_std, as the browser uses it)
#   3. unit, property and end-to-end tests, end-to-end against SQLite
#   4. the end-to-end suite again against PostgreSQL, then the PostgreSQL-restart test alone
#   5. schemathesis against the running server's OpenAPI document (scripts/test-schema.sh)
#   6. the browser SDK: natively, in Node and in headless Chromium (scripts/test-sdk.sh)
#   7. the demo app (www/) end to end in headless Chromium, on both backends (scripts/test-www.sh)
#   8. the IndexedDB benchmark's smoke run: 200 records pulled by each SDK, counts checked,
#      nothing timed (scripts/bench-idb.sh --smoke; installs Kinto into target/bench/venv)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

say "toolchain"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

say "PostgreSQL on 127.0.0.1:5432"
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    fi
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    for _ in $(seq 30); do pg_up && break; sleep 1; done
fi
# The tests need it: fail here, clearly, rather than skip them.
pg_up || { echo "error: PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
    createdb -h 127.0.0.1 -U postgres test
fi

say "sync-core builds for wasm32-unknown-unknown"
cargo build -p sync-core --target wasm32-unknown-unknown

say "tests (end-to-end against SQLite)"
# The end-to-end tests run the real server binary; build it first so they find it.
cargo build -p sync-server --bin sync-server
cargo build -p tidemark-cli --bin tidemark
# (tests/tests/pg_restart.rs is left out here: `test = false`; it runs alone below.)
cargo test --workspace --all-targets

say "end-to-end tests against PostgreSQL"
TIDEMARK_TEST_BACKEND=postgres cargo test -p tidemark-tests
# Restarts the machine's PostgreSQL, so it runs alone, after everything else that uses it.
cargo test -p tidemark-tests --test pg_restart -- --test-threads=1

say "schemathesis against the OpenAPI document (scripts/test-schema.sh)"
scripts/test-schema.sh

say "the browser SDK"
scripts/test-sdk.sh

say "the demo app"
scripts/test-www.sh

# Its own step, not part of test-www.sh: it needs a Kinto server (pip, into a venv, once) and
# kinto.js (npm, once), which the demo's tests do not; warm, it takes about 15 s.
say "the IndexedDB benchmark, smoke run (scripts/bench-idb.sh --smoke)"
scripts/bench-idb.sh --smoke
