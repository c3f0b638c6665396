#!/usr/bin/env bash
# Runs every test of the workspace, installing what is missing first.
# Safe to run again and again: each install step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

say "toolchain"
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi

say "sync-core builds for wasm32-unknown-unknown (no_std, as the browser uses it)"
cargo build -p sync-core --target wasm32-unknown-unknown

say "tests"
# The end-to-end tests run the real server binary; build it first so they find it.
cargo build -p sync-server --bin sync-server
cargo test --workspace --all-targets
