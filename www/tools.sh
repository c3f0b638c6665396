# What running the demo or its tests needs, each installed only if it is missing. Sourced by
# scripts/demo.sh and scripts/test-www.sh; expects to run from the workspace root.
. sync-wasm/tools.sh

# The `tidemark` package the app imports (www/package.json links it from sync-wasm/pkg/).
# Built once; scripts/test.sh rebuilds it (scripts/test-sdk.sh) before the app's tests.
ensure_sdk_package() {
    if [ ! -f sync-wasm/pkg/web.js ]; then
        say "sync-wasm/build.sh (the npm package tidemark)"
        sync-wasm/build.sh
    fi
}

# www's npm dependencies, as locked: again whenever the lockfile changed since the last install.
ensure_www_deps() {
    if [ ! -f www/node_modules/.package-lock.json ] \
        || [ www/package-lock.json -nt www/node_modules/.package-lock.json ]; then
        say "npm ci (www: sirv, playwright-core, tidemark)"
        (cd www && npm ci --no-audit --no-fund)
    fi
}

# The server binary the demo and the tests run (an absolute path).
server_bin() {
    local dir="${CARGO_TARGET_DIR:-target}"
    case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
    printf '%s/debug/sync-server' "$dir"
}
