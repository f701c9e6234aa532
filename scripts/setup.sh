#!/usr/bin/env bash
# Prepares a fresh machine: checks the Rust toolchain, adds the wasm targets,
# builds the example components (installing, inside the repository, the
# pinned componentize-js and componentize-py that build the JavaScript and
# Python ones; they need Node.js 20+ with npm and python3 with venv) and the
# `tessera` binary.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "error: Rust is not installed. Install it with rustup (https://rustup.rs), then re-run." >&2
        exit 1
    fi
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null
fi

bash scripts/build-components.sh
cargo build --release -p tessera-cli
