#!/usr/bin/env bash
# Builds the npm package `tidemark` into sync-wasm/pkg/ and prints its gzipped size.
#
#   sync-wasm/build.sh          # then: cd sync-wasm/pkg && npm pack (or npm publish)
#
# The package holds three wasm-bindgen builds of the same wasm: bundler/ (the default export),
# web/ (`tidemark/web`, no bundler) and node/ (Node's export), plus the hand-written JavaScript
# (stores, entry points) and TypeScript types from sync-wasm/npm/.
set -euo pipefail
cd "$(dirname "$0")/.."
. sync-wasm/tools.sh

ensure_wasm_target
ensure_wasm_bindgen
ensure_npm_tools

say "cargo build -p sync-wasm (profile wasm-release: opt-level z, LTO, panic=abort)"
cargo build -p sync-wasm --target wasm32-unknown-unknown --profile wasm-release
wasm=${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/wasm-release/sync_wasm.wasm

pkg=sync-wasm/pkg
rm -rf "$pkg"
mkdir -p "$pkg"
for target in bundler web nodejs; do
    dir="${target%js}"
    wasm-bindgen --target "$target" --no-typescript --out-dir "$pkg/$dir" --out-name tidemark "$wasm"
    # wasm-bindgen keeps the name section; -Oz does not drop it by itself.
    sync-wasm/node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
        --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
        --enable-mutable-globals --enable-reference-types --enable-multivalue \
        "$pkg/$dir/tidemark_bg.wasm" -o "$pkg/$dir/tidemark_bg.wasm"
done
echo '{ "type": "commonjs" }' > "$pkg/node/package.json"
cp sync-wasm/npm/*.js sync-wasm/npm/index.d.ts sync-wasm/README.md "$pkg/"
# The browser's JavaScript ships minified (esbuild, one file at a time: imports stay as they
# are). Node's build and the types stay readable; the sources are in sync-wasm/npm/.
for file in "$pkg"/*.js "$pkg"/web/*.js "$pkg"/bundler/*.js; do
    sync-wasm/node_modules/.bin/esbuild --minify --format=esm --log-level=warning \
        --allow-overwrite "$file" --outfile="$file"
done
version="$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)"
sed "s/\"version\": \"0.0.0\"/\"version\": \"$version\"/" sync-wasm/npm/package.json > "$pkg/package.json"

say "size, gzip -9 (what a browser downloads for \`tidemark/web\`)"
total=0
for file in web/tidemark_bg.wasm web/tidemark.js web.js client.js stores.js; do
    size=$(gzip -9 -c "$pkg/$file" | wc -c)
    total=$((total + size))
    printf '  %-22s %6d bytes raw, %6d gzipped\n' "$file" "$(wc -c < "$pkg/$file")" "$size"
done
printf '  %-22s %6d bytes gzipped (%d KB)\n' "total" "$total" $(((total + 1023) / 1024))
