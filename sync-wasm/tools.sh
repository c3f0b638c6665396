# Installs what building and testing the SDK need, each only if it is missing. Sourced by
# build.sh and scripts/test-sdk.sh; expects to run from the workspace root.

say() { printf '\n==> %s\n' "$*"; }

# The wasm-bindgen version the workspace is locked to; the CLI must be exactly this one.
wasm_bindgen_version() {
    awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

ensure_wasm_target() {
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        say "rustup target add wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown
    fi
}

ensure_wasm_bindgen() {
    local want have
    want="$(wasm_bindgen_version)"
    have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
    if [ "$have" != "$want" ]; then
        say "cargo install wasm-bindgen-cli $want (found: ${have:-none}; takes a few minutes)"
        # Not --locked: the CLI's own lockfile pins crates this toolchain cannot build.
        cargo install wasm-bindgen-cli --version "$want"
    fi
}

# binaryen's wasm-opt from npm (Debian's binaryen produces broken wasm), and esbuild, which
# minifies the package's JavaScript.
ensure_npm_tools() {
    if [ ! -x sync-wasm/node_modules/.bin/wasm-opt ] || [ ! -x sync-wasm/node_modules/.bin/esbuild ]; then
        say "npm install (sync-wasm: binaryen, esbuild)"
        (cd sync-wasm && npm install --no-audit --no-fund)
    fi
}
