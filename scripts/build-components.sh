#!/usr/bin/env bash
# Builds the guest WebAssembly components under components/ and copies each
# artifact to components/<name>.wasm.
#
# Component crates are compiled for wasm32-wasip2 (rustc links a component
# directly); p1-command is a plain preview 1 core module for wasm32-wasip1.
# Guests written in the WebAssembly text format (components/<name>/<name>.wat)
# are assembled by the native assemble-wat tool. The native embed-wit-docs
# tool then stores each component's WIT doc comments in it (see
# components/embed-wit-docs/src/main.rs), read from its wit/ folder, which
# may be a symlink to a shared package under wit/.
# The composition example's guests (wit/text: text-provider, text-consumer,
# their Python twins text-provider-py and text-consumer-py, and
# text-provider-wrong, a provider with mismatched types for the runtime's
# link-check tests) are built here and by scripts/build-polyglot.sh.
# The perception guests (wit/perception: tokenizer, a Hugging Face
# tokenizer.json read from /model, and embedder, which imports a tokenizer
# and runs a model through wasi:nn) and the retrieval guests (wit/retrieval:
# chunker, keyword-index, vector-index) are Rust component crates too.
# Guests written in JavaScript and Python are built by
# scripts/build-polyglot.sh (called last), which installs their toolchains
# (componentize-js from npm, componentize-py from PyPI) at pinned versions.
# Third-party command-line tools (ripgrep) are built from their crates.io
# sources for wasm32-wasip1 by scripts/build-third-party.sh.
# Extra arguments are passed to every cargo invocation (e.g. -j1).
# `--list` prints the names of the components it builds, one per line, and
# builds nothing (the test harness checks those for staleness).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
components="$root/components"
manifest="$components/Cargo.toml"
target_dir="$components/target"

# Crates built as components, named as in their Cargo.toml.
component_crates=(
    hello
    http-fetch
    fs-tool
    spin
    memory-hog
    deep-recursion
    fs-escape
    net-escape
    config-tool
    kv-tool
    kv-draft
    llm-probe
    react-agent
    coordinator
    worker
    probe-agent
    city-facts
    cli-tool
    http-handler
    example-rust
    text-provider
    text-consumer
    text-provider-wrong
    tokenizer
    embedder
    chunker
    keyword-index
    vector-index
    qa-agent
)

# Guests written in the WebAssembly text format, as components/<name>/<name>.wat.
wat_guests=(
    two-memories
    missing-import
    wasi-future
    toolchain-exports
)

# Crates built with DWARF debug info (the `release-debug` profile).
debug_crates=(
    trap-debug
)

if [[ "${1:-}" == --list ]]; then
    printf '%s\n' "${component_crates[@]}" "${debug_crates[@]}" p1-command "${wat_guests[@]}"
    bash "$root/scripts/build-polyglot.sh" --list
    bash "$root/scripts/build-third-party.sh" --list
    bash "$root/scripts/build-toolchains.sh" --list
    exit 0
fi

rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null 2>&1 ||
    rustup target add wasm32-wasip2 wasm32-wasip1

package_args=()
for crate in "${component_crates[@]}"; do
    package_args+=(-p "$crate")
done

cargo build --release --manifest-path "$manifest" --target-dir "$target_dir" \
    --target wasm32-wasip2 "${package_args[@]}" "$@"
cargo build --release --manifest-path "$manifest" --target-dir "$target_dir" \
    --target wasm32-wasip1 -p p1-command "$@"
debug_args=()
for crate in "${debug_crates[@]}"; do
    debug_args+=(-p "$crate")
done
cargo build --profile release-debug --manifest-path "$manifest" --target-dir "$target_dir" \
    --target wasm32-wasip2 "${debug_args[@]}" "$@"
# Host-side tools, so no --target; a dev build compiles fastest.
cargo build --manifest-path "$manifest" --target-dir "$target_dir" \
    -p embed-wit-docs -p assemble-wat "$@"

# Copies an artifact into components/, embeds its WIT docs if it has a wit/
# folder (a symlink to a shared package counts), and prints its name and
# size.
install_artifact() {
    local src="$1" name="$2"
    local dest="$components/$name.wasm" wit="$components/$name/wit"
    cp "$src" "$dest"
    if [[ -d "$wit" ]]; then
        "$target_dir/debug/embed-wit-docs" "$dest" "$wit"
    fi
    printf '%-20s %8d bytes  %s\n' "$name" "$(wc -c <"$dest")" "${dest#"$root"/}"
}

for crate in "${component_crates[@]}"; do
    # cdylib artifacts use underscores in their file names, binaries
    # (commands) their crate's name.
    artifact="$target_dir/wasm32-wasip2/release/${crate//-/_}.wasm"
    [[ -f "$artifact" ]] || artifact="$target_dir/wasm32-wasip2/release/$crate.wasm"
    install_artifact "$artifact" "$crate"
done
for crate in "${debug_crates[@]}"; do
    install_artifact "$target_dir/wasm32-wasip2/release-debug/${crate//-/_}.wasm" "$crate"
done
install_artifact "$target_dir/wasm32-wasip1/release/p1-command.wasm" p1-command
mkdir -p "$target_dir/wat"
for name in "${wat_guests[@]}"; do
    "$target_dir/debug/assemble-wat" "$components/$name/$name.wat" "$target_dir/wat/$name.wasm"
    install_artifact "$target_dir/wat/$name.wasm" "$name"
done

bash "$root/scripts/build-polyglot.sh"
bash "$root/scripts/build-third-party.sh"
bash "$root/scripts/build-toolchains.sh"
