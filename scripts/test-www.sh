#!/usr/bin/env bash
# Tests the demo app (www/): its conflict rule in Node, then the app end to end in headless
# Chromium (playwright-core, two browser contexts as two devices) against the real
# sync-server, on SQLite and then on PostgreSQL (TIDEMARK_TEST_BACKEND, as the Rust
# end-to-end tests). Screenshots of every test's windows land in target/www-screenshots/.
#
# Installs what is missing first, and only that: Chromium (apt), the npm package tidemark
# (sync-wasm/build.sh), www's npm dependencies. Without Chromium or PostgreSQL the tests
# fail: they are not optional.
set -euo pipefail
cd "$(dirname "$0")/.."
. www/tools.sh

if ! command -v chromium >/dev/null; then
    say "apt-get install chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
cargo build -p sync-server --bin sync-server
ensure_sdk_package
ensure_www_deps

TIDEMARK_SERVER_BIN="$(server_bin)"
export TIDEMARK_SERVER_BIN
say "the demo app in Chromium, against SQLite"
TIDEMARK_TEST_BACKEND=sqlite node --test www/tests/
say "the demo app in Chromium, against PostgreSQL"
TIDEMARK_TEST_BACKEND=postgres node --test www/tests/
