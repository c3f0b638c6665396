#!/usr/bin/env bash
# Tests the browser SDK (sync-wasm, the npm package `tidemark`) against a real sync-server:
# its unit tests natively, then the same scenarios in Node and in headless Chromium.
#
# Installs what is missing first, and only that: Chromium and ChromeDriver (apt), the wasm32
# target, wasm-bindgen-cli at the lockfile's version, binaryen from npm. Without Chromium the
# script fails: the browser suite is not optional.
set -euo pipefail
cd "$(dirname "$0")/.."
. sync-wasm/tools.sh

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    say "apt-get install chromium chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "error: chromium and chromedriver are required for the browser tests" >&2
    exit 1
fi
ensure_wasm_target
ensure_wasm_bindgen
ensure_npm_tools

say "sync-wasm unit tests (native)"
cargo test -p sync-wasm

say "build the server and the package"
cargo build -p sync-server --bin sync-server
sync-wasm/build.sh

# The test page's origin must be known before the server starts, for --cors-origin.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
page_port="$(free_port)"
work="$(mktemp -d)"
secret="sdk-test-secret-$RANDOM$RANDOM$RANDOM"
./target/debug/sync-server --listen 127.0.0.1:0 --data "$work/data" --auth jwt \
    --jwt-secret "$secret" --cors-origin "http://127.0.0.1:$page_port" \
    >"$work/stdout" 2>"$work/stderr" &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
url=""
for _ in $(seq 200); do
    url="$(sed -n 's/^tidemark listening on \(http[^ ]*\).*/\1/p' "$work/stdout" | head -n 1)"
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "error: sync-server did not start" >&2
    cat "$work/stderr" >&2
    exit 1
fi
say "sync-server on $url (JWT auth, CORS for http://127.0.0.1:$page_port)"

# HS256 tokens for the tests: a valid one, and one that expired an hour ago (for the 401).
TIDEMARK_TEST_ENV="$(SECRET="$secret" URL="$url" node -e '
const crypto = require("node:crypto");
const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const jwt = (claims) => {
  const signed = part({ alg: "HS256", typ: "JWT" }) + "." + part(claims);
  return signed + "." + crypto.createHmac("sha256", process.env.SECRET).update(signed).digest("base64url");
};
const now = Math.floor(Date.now() / 1000);
console.log(JSON.stringify({
  url: process.env.URL,
  app: "sdk-tests",
  token: jwt({ sub: "alice", exp: now + 3600 }),
  expiredToken: jwt({ sub: "alice", exp: now - 3600 }),
}));')"
export TIDEMARK_TEST_ENV

say "the scenarios in Node (nodejs build, MemoryStore)"
node --test sync-wasm/tests/node/

say "the scenarios in headless Chromium (wasm-bindgen-test, IndexedDbStore)"
CHROMEDRIVER=/usr/bin/chromedriver \
    WASM_BINDGEN_TEST_ADDRESS="127.0.0.1:$page_port" \
    WASM_BINDGEN_TEST_TIMEOUT=300 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
    cargo test -p sync-wasm --target wasm32-unknown-unknown --test browser
