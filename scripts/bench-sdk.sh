#!/usr/bin/env bash
# The browser SDK's download size against kinto.js, measured in the same run: builds the
# `tidemark` package (sync-wasm/build.sh), installs kinto.js from npm into target/bench/kinto-js,
# and appends a table to BENCHMARKS.md (or prints it with --print).
#
#   scripts/bench-sdk.sh            # appends "## Browser SDK size" to BENCHMARKS.md
#   scripts/bench-sdk.sh --print    # only prints the table
#
# "Downloaded" is what a page loads: for tidemark/web, the wasm plus its JavaScript (the
# wasm-bindgen glue, the client, the stores, the entry); for kinto.js, dist/kinto.min.js, which
# bundles its HTTP client and IndexedDB adapter. Sizes are `gzip -9`.
set -euo pipefail
cd "$(dirname "$0")/.."
. sync-wasm/tools.sh

KINTO_VERSION=17.1.1
print_only=false
[ "${1:-}" = "--print" ] && print_only=true

sync-wasm/build.sh >/dev/null
dir=target/bench/kinto-js
if [ ! -f "$dir/node_modules/kinto/dist/kinto.min.js" ]; then
    say "npm install kinto@$KINTO_VERSION (into $dir)"
    mkdir -p "$dir"
    (cd "$dir" && echo '{"private": true}' > package.json \
        && npm install --no-audit --no-fund --save-exact "kinto@$KINTO_VERSION" >/dev/null)
fi

gz() { gzip -9 -c "$1" | wc -c; }
pkg=sync-wasm/pkg
wasm=$(gz "$pkg/web/tidemark_bg.wasm")
js=0
for file in web/tidemark.js web.js client.js stores.js; do
    js=$((js + $(gz "$pkg/$file")))
done
tidemark=$((wasm + js))
kinto=$(gz "$dir/node_modules/kinto/dist/kinto.min.js")
ratio=$(python3 -c "print(f'{$tidemark / $kinto:.2f}')")

table="## Browser SDK size

Measured $(date -u +%Y-%m-%dT%H:%MZ) by \`scripts/bench-sdk.sh\` (gzip -9 of what a page downloads).

| package | wasm | JavaScript | total | vs kinto.js |
|---|---|---|---|---|
| tidemark (\`tidemark/web\`, this commit) | $wasm B | $js B | **$tidemark B** | $ratio× |
| kinto.js $KINTO_VERSION (\`dist/kinto.min.js\`) | — | $kinto B | **$kinto B** | 1.00× |

The budget in issue #3 is 40 KB (40,960 B); kinto.js is the smaller of the two. Tidemark's wasm
carries the same replica code the property tests check; kinto.js is plain JavaScript."

if $print_only; then
    echo "$table"
else
    printf '\n%s\n' "$table" >> BENCHMARKS.md
    echo "$table"
fi
