#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: toolchain targets, example
# components, the Python MCP SDK the interop tests drive Tessera with, the OCI
# registry the component-source tests run (scripts/oci-registry.sh), the
# NATS server the store tests start (scripts/nats-server.sh), the local
# models' wheels and the Python references of the AI tests
# (scripts/models.sh), then every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null
fi
bash scripts/build-components.sh
bash scripts/python-env.sh
bash scripts/oci-registry.sh
bash scripts/nats-server.sh
bash scripts/browser.sh
bash scripts/models.sh
cargo test --workspace
