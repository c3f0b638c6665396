#!/usr/bin/env bash
# Starts the demo: a sync-server (dev auth, SQLite in target/demo-data) and the notes app
# (www/) on another port, so the browser talks to the server across origins, as a real app
# does. Open the app's address in two windows (one of them private) and sign in as the same
# user in both. Ctrl-C stops both.
#
#   scripts/demo.sh            # app on http://127.0.0.1:5173, server on http://127.0.0.1:8080
#
# TIDEMARK_DEMO_APP_PORT, TIDEMARK_DEMO_SERVER_PORT and TIDEMARK_DEMO_DATA change the ports
# and the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. www/tools.sh

app_port="${TIDEMARK_DEMO_APP_PORT:-5173}"
server_port="${TIDEMARK_DEMO_SERVER_PORT:-8080}"
data="${TIDEMARK_DEMO_DATA:-target/demo-data}"

say "cargo build -p sync-server"
cargo build -p sync-server --bin sync-server
ensure_sdk_package
ensure_www_deps

# Both spellings of the app's origin: browsers tell localhost and 127.0.0.1 apart.
"$(server_bin)" --listen "127.0.0.1:$server_port" --data "$data" \
    --cors-origin "http://127.0.0.1:$app_port" --cors-origin "http://localhost:$app_port" &
server=$!
node www/serve.mjs --listen "127.0.0.1:$app_port" --server "http://127.0.0.1:$server_port" &
app=$!
trap 'kill "$server" "$app" 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM

say "Tidemark notes: open http://127.0.0.1:$app_port in two windows (Ctrl-C stops)"
wait -n "$server" "$app"
