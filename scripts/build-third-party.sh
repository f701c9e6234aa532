#!/usr/bin/env bash
# Builds the third-party command-line tools pinned in
# components/third-party/pins.txt from their crates.io sources, as WASI
# preview 1 command modules for wasm32-wasip1, and copies each to
# components/<artifact>.wasm. They show `tessera run` on real programs that
# were not written for Tessera (today: ripgrep, as
# components/third-party-ripgrep.wasm).
#
# Each tool is built with `cargo install --locked` at the exact version
# pinned, so the dependency versions are those of the Cargo.lock published
# with the crate. The build goes to its own target directory,
# components/target/third-party/build, and the installed binary to
# components/target/third-party/<crate>/bin, never to the workspace's
# target/. Release builds are made without debug info (smaller modules,
# faster builds). Extra arguments are passed to `cargo install` (e.g. -j1);
# CARGO_BUILD_JOBS is honoured too.
#
# A tool is rebuilt only when pins.txt or this script is newer than its
# artifact; a fresh artifact is touched so it stays newer than every source
# under components/ (the test harness compares those).
# `--list` prints the names of the artifacts it builds, one per line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
components="$root/components"
script="$root/scripts/build-third-party.sh"
pins="$components/third-party/pins.txt"
out_dir="$components/target/third-party"

# The pinned tools: one "crate version binary artifact" line each, less
# comments and blank lines.
mapfile -t lines < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$pins")

if [[ "${1:-}" == --list ]]; then
    for line in "${lines[@]}"; do
        read -r _ _ _ artifact <<<"$line"
        printf '%s\n' "$artifact"
    done
    exit 0
fi

# True when components/<artifact>.wasm exists and neither the pins nor this
# script is newer. (Any edit of pins.txt rebuilds every tool in it; they
# are few.)
fresh() {
    local out="$components/$1.wasm"
    [[ -f "$out" ]] || return 1
    [[ "$script" -nt "$out" ]] && return 1
    [[ "$pins" -nt "$out" ]] && return 1
    return 0
}

report() {
    local name="$1" how="$2" dest="$components/$1.wasm"
    printf '%-20s %8d bytes  %s  (%s)\n' "$name" "$(wc -c <"$dest")" "${dest#"$root"/}" "$how"
}

need_target() {
    command -v rustup >/dev/null 2>&1 || return 0
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
        rustup target add wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip1
    fi
}

mkdir -p "$out_dir"
for line in "${lines[@]}"; do
    read -r crate version binary artifact <<<"$line"
    if [[ -z "$artifact" ]]; then
        echo "error: ${pins#"$root"/}: expected \"crate version binary artifact\", got: $line" >&2
        exit 1
    fi
    if fresh "$artifact"; then
        touch "$components/$artifact.wasm"
        report "$artifact" "up to date"
        continue
    fi
    need_target
    start=$SECONDS
    echo "building $crate $version for wasm32-wasip1 (cargo install --locked)" >&2
    # --force: reinstall even when cargo's own records say this version is
    # installed, so the artifact always comes from the current settings;
    # an unchanged build is found fresh in the target directory and only
    # copied again.
    CARGO_PROFILE_RELEASE_DEBUG=0 \
        cargo install --locked --force \
        --target wasm32-wasip1 \
        --target-dir "$out_dir/build" \
        --root "$out_dir/$crate" \
        --bin "$binary" \
        "$crate@$version" "$@"
    # Copied into the target directory first and then renamed into place,
    # so a failed build or copy leaves no artifact that looks fresh.
    cp "$out_dir/$crate/bin/$binary.wasm" "$out_dir/$artifact.wasm"
    mv "$out_dir/$artifact.wasm" "$components/$artifact.wasm"
    report "$artifact" "$crate $version built in $((SECONDS - start)) s"
done
