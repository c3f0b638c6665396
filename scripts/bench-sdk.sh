#!/usr/bin/env bash
# The browser SDK's download size against the sync SDKs a user would pick instead, measured in
# the same run: builds the `tidemark` package (sync-wasm/build.sh), installs kinto.js,
# Replicache and PouchDB from npm into target/bench/sdk-peers, and puts the table in
# BENCHMARKS.md (replacing the section of an earlier run; --print only prints it).
#
#   scripts/bench-sdk.sh            # writes "## Browser SDK size" in BENCHMARKS.md
#   scripts/bench-sdk.sh --print    # only prints the table
#
# "Downloaded" is what a page loads, `gzip -9`, each file named in the table:
# - tidemark/web: the wasm plus its JavaScript (the wasm-bindgen glue, the client, the stores,
#   the entry);
# - kinto.js: dist/kinto.min.js, which bundles its HTTP client and IndexedDB adapter;
# - Replicache: its minified browser ESM build as published (out/replicache.js and the chunk
#   it imports), which leaves four small dependencies to the page's bundler; so it is also
#   measured bundled with them (esbuild --bundle --minify, what a page would ship);
# - PouchDB: dist/pouchdb.min.js, the browser build with its IndexedDB adapter and replication.
set -euo pipefail
cd "$(dirname "$0")/.."
. sync-wasm/tools.sh

KINTO_VERSION=17.1.1
REPLICACHE_VERSION=15.3.0
POUCHDB_VERSION=9.0.0
print_only=false
[ "${1:-}" = "--print" ] && print_only=true

sync-wasm/build.sh >/dev/null
dir=target/bench/sdk-peers
stamp="kinto@$KINTO_VERSION replicache@$REPLICACHE_VERSION pouchdb@$POUCHDB_VERSION"
if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$stamp" ]; then
    say "npm install kinto@$KINTO_VERSION replicache@$REPLICACHE_VERSION, npm pack pouchdb@$POUCHDB_VERSION (into $dir)"
    rm -rf "$dir"
    mkdir -p "$dir"
    # PouchDB's package depends on leveldown and friends for Node; only its dist/ is wanted,
    # so it is unpacked from the tarball rather than installed.
    (cd "$dir" && echo '{"private": true}' > package.json \
        && npm install --no-audit --no-fund --save-exact "kinto@$KINTO_VERSION" \
            "replicache@$REPLICACHE_VERSION" >/dev/null \
        && npm pack --silent "pouchdb@$POUCHDB_VERSION" >/dev/null \
        && mkdir pouchdb && tar -xzf "pouchdb-$POUCHDB_VERSION.tgz" -C pouchdb --strip-components 1)
    echo "$stamp" > "$dir/.installed"
fi

gz() { cat "$@" | gzip -9 | wc -c; }
pkg=sync-wasm/pkg
wasm=$(gz "$pkg/web/tidemark_bg.wasm")
# Each file gzipped on its own, as a server sends them.
js=0
for file in web/tidemark.js web.js client.js stores.js; do
    js=$((js + $(gz "$pkg/$file")))
done
tidemark=$((wasm + js))

kinto=$(gz "$dir/node_modules/kinto/dist/kinto.min.js")
rc=$dir/node_modules/replicache/out
chunks=$(cd "$rc" && grep -o 'from"\./[^"]*"' replicache.js | sed 's/^from"\.\///; s/"$//' | sort -u)
replicache=$(gz "$rc/replicache.js")
for chunk in $chunks; do replicache=$((replicache + $(gz "$rc/$chunk"))); done
bundle=$dir/replicache.bundle.min.js
sync-wasm/node_modules/.bin/esbuild --bundle --minify --format=esm --log-level=warning \
    "$rc/replicache.js" --outfile="$bundle"
replicache_bundled=$(gz "$bundle")
pouchdb=$(gz "$dir/pouchdb/dist/pouchdb.min.js")

ratio() { python3 -c "print(f'{$1 / $tidemark:.2f}')"; }
chunk_list=$(for chunk in $chunks; do printf ' + `out/%s`' "$chunk"; done)

table="## Browser SDK size

Measured $(date -u +%Y-%m-%dT%H:%MZ) by \`scripts/bench-sdk.sh\`: \`gzip -9\` of each file a page
downloads, summed; the packages from npm at the versions shown.

| package | files measured | wasm | JavaScript | total | ÷ Tidemark |
|---|---|---|---|---|---|
| tidemark (\`tidemark/web\`, commit $(git rev-parse --short HEAD)) | \`web/tidemark_bg.wasm\` + \`web/tidemark.js\`, \`web.js\`, \`client.js\`, \`stores.js\` | $wasm B | $js B | **$tidemark B** | 1.00× |
| kinto.js $KINTO_VERSION | \`dist/kinto.min.js\` | — | $kinto B | **$kinto B** | $(ratio "$kinto")× |
| Replicache $REPLICACHE_VERSION, as published | \`out/replicache.js\`$chunk_list (without its 4 dependencies) | — | $replicache B | **$replicache B** | $(ratio "$replicache")× |
| Replicache $REPLICACHE_VERSION, bundled | \`out/replicache.js\` with its dependencies, \`esbuild --bundle --minify --format=esm\` | — | $replicache_bundled B | **$replicache_bundled B** | $(ratio "$replicache_bundled")× |
| PouchDB $POUCHDB_VERSION | \`dist/pouchdb.min.js\` (npm \`pouchdb\`) | — | $pouchdb B | **$pouchdb B** | $(ratio "$pouchdb")× |

The budget in issue #3 is 40 KB (40,960 B). Tidemark's wasm carries the same replica code the
property tests check; the others are plain JavaScript. Replicache's published build leaves
\`@badrap/valita\`, \`@rocicorp/lock\`, \`@rocicorp/logger\` and \`@rocicorp/resolver\` to the page's
bundler, hence the second row."

if $print_only; then
    echo "$table"
else
    printf '%s\n' "$table" | python3 scripts/md_section.py BENCHMARKS.md
    echo "$table"
fi
