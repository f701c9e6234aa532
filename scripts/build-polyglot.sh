#!/usr/bin/env bash
# Builds the guest components written in JavaScript and Python, each with
# its language's own componentize tool, and copies each artifact to
# components/<name>.wasm. scripts/build-components.sh calls this; run alone
# it builds only these.
#
# - components/text-js: JavaScript, built with componentize-js
#   (SpiderMonkey/StarlingMonkey). The tool comes from npm, pinned by
#   components/text-js/package-lock.json and installed with `npm ci` into
#   components/text-js/node_modules. Needs Node.js 20 or later.
# - components/js-sandbox: a JavaScript code sandbox, built the same way
#   (its own package-lock.json and node_modules) for the world `sandbox`
#   of wit/sandbox.
# - components/stats-py: Python, built with componentize-py (CPython).
#   The tool comes from PyPI, pinned by components/stats-py/requirements.txt
#   and installed into the virtualenv components/target/componentize-py.
# - components/py-sandbox: a CPython code sandbox, built with the same
#   componentize-py for the world `sandbox` of wit/sandbox.
# - components/example-js and components/example-python: the catalog
#   example tool, built the same ways for the world `tool` of the shared
#   wit/example (their wit/ is a symlink to it). Its WIT doc comments are
#   embedded into both by embed-wit-docs, as into the Rust guests, so every
#   language's tool has the same descriptions.
# - components/text-provider-py and components/text-consumer-py: the
#   composition example's provider and consumer (worlds `provider` and
#   `consumer` of the shared wit/text, where their wit/ symlinks point),
#   twins of the Rust text-provider and text-consumer, built with the same
#   componentize-py; their WIT doc comments are embedded the same way.
#
# Toolchains are installed again only when their pin file changed, and a
# component is rebuilt only when a file of its folder (or of its WIT
# directory, or this script) is newer than the artifact; a fresh artifact
# is touched so it stays newer than every source under components/ (the
# test harness compares those).
# `--list` prints the names of the components it builds, one per line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
components="$root/components"
script="$root/scripts/build-polyglot.sh"

js_guests=(text-js js-sandbox example-js)
py_guests=(stats-py py-sandbox example-python text-provider-py text-consumer-py)

if [[ "${1:-}" == --list ]]; then
    printf '%s\n' "${js_guests[@]}" "${py_guests[@]}"
    exit 0
fi

# True when components/<name>.wasm exists and nothing it is built from
# (its folder, less installed packages and bytecode caches, any further
# paths given, and this script) is newer.
fresh() {
    local name="$1" out="$components/$1.wasm"
    shift
    [[ -f "$out" ]] || return 1
    [[ "$script" -nt "$out" ]] && return 1
    local newer
    newer="$(find "$components/$name" "$@" \( -name node_modules -o -name __pycache__ \) -prune \
        -o -type f -newer "$out" -print -quit)"
    [[ -z "$newer" ]]
}

# The WIT folder and world of components/<name>, as `wit=… world=…`: a
# guest's world is named after it, in its wit/ folder, except the
# sandboxes' (wit/sandbox, outside their folders, which must count too when
# deciding to rebuild them), the examples' (world `tool`; their wit/ is a
# symlink to wit/example, resolved so that `find` looks inside) and the
# composition example's (worlds `provider` and `consumer`; their wit/ is a
# symlink to wit/text, resolved the same way).
guest_wit() {
    local name="$1"
    wit="$components/$name/wit" world="$name"
    case "$name" in
    js-sandbox | py-sandbox) wit="$root/wit/sandbox" world=sandbox ;;
    example-*) wit="$(cd "$wit" && pwd -P)" world=tool ;;
    text-provider-py) wit="$(cd "$wit" && pwd -P)" world=provider ;;
    text-consumer-py) wit="$(cd "$wit" && pwd -P)" world=consumer ;;
    esac
}

# Embeds the WIT doc comments of the examples and of the composition
# example's guests (at $3) into the freshly built component $2 with the
# native embed-wit-docs tool (built here if missing).
embed_docs() {
    local name="$1" wasm="$2" wit="$3"
    case "$name" in
    example-* | text-provider-py | text-consumer-py) ;;
    *) return 0 ;;
    esac
    local tool="$components/target/debug/embed-wit-docs"
    if [[ ! -x "$tool" ]]; then
        cargo build --manifest-path "$components/Cargo.toml" --target-dir "$components/target" \
            -p embed-wit-docs >&2
    fi
    "$tool" "$wasm" "$wit"
}

report() {
    local name="$1" how="$2" dest="$components/$1.wasm"
    printf '%-20s %8d bytes  %s  (%s)\n' "$name" "$(wc -c <"$dest")" "${dest#"$root"/}" "$how"
}

# --- JavaScript: componentize-js from npm --------------------------------

need_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "installing nodejs and npm with apt-get" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
        fi
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "error: building components/${js_guests[0]} needs Node.js 20 or later with npm; install them and re-run" >&2
        exit 1
    fi
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if ((major < 20)); then
        echo "error: componentize-js needs Node.js 20 or later; $(command -v node) is $(node --version)" >&2
        exit 1
    fi
}

# Installs the pinned npm packages of components/<name> unless the
# installed tree was made from the same package-lock.json.
npm_install() {
    local dir="$components/$1"
    local stamp="$dir/node_modules/.tessera-package-lock.json"
    if [[ -f "$stamp" ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
        return
    fi
    echo "installing the npm packages of components/$1 (npm ci)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$dir/package-lock.json" "$stamp"
}

mkdir -p "$components/target/polyglot"
for name in "${js_guests[@]}"; do
    dir="$components/$name"
    guest_wit "$name"
    if fresh "$name" "$wit"; then
        touch "$components/$name.wasm"
        report "$name" "up to date"
        continue
    fi
    need_node
    npm_install "$name"
    start=$SECONDS
    # Written to a temporary file first, so a failed build leaves no
    # artifact that looks fresh.
    (cd "$dir" && node_modules/.bin/componentize-js src/$name.js --wit "$wit" \
        --world-name "$world" --out "$components/target/polyglot/$name.wasm")
    embed_docs "$name" "$components/target/polyglot/$name.wasm" "$wit"
    mv "$components/target/polyglot/$name.wasm" "$components/$name.wasm"
    report "$name" "built in $((SECONDS - start)) s"
done

# --- Python: componentize-py from PyPI -----------------------------------

venv="$components/target/componentize-py"
# One componentize-py for every Python guest: the version stats-py pins.
py_requirements="$components/stats-py/requirements.txt"

# Makes the virtualenv with the pinned componentize-py, unless it already
# has it.
py_install() {
    local req="$py_requirements"
    local stamp="$venv/.requirements"
    if [[ -x "$venv/bin/componentize-py" ]] && [[ -f "$stamp" ]] && cmp -s "$req" "$stamp"; then
        return
    fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "installing python3 and python3-venv with apt-get" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        else
            echo "error: building components/$1 needs python3 with the venv module; install them and re-run" >&2
            exit 1
        fi
    fi
    echo "installing componentize-py into ${venv#"$root"/} (pip)" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
}

for name in "${py_guests[@]}"; do
    dir="$components/$name"
    guest_wit "$name"
    if fresh "$name" "$wit"; then
        touch "$components/$name.wasm"
        report "$name" "up to date"
        continue
    fi
    py_install "$name"
    start=$SECONDS
    # Written to a temporary file first, so a failed build leaves no
    # artifact that looks fresh. The app's modules come from src/, and any
    # pure-Python packages bundled with it from vendor/ (componentize-py
    # skips a path that does not exist).
    "$venv/bin/componentize-py" -d "$wit" -w "$world" componentize \
        -p "$dir/src" -p "$dir/vendor" app -o "$components/target/polyglot/$name.wasm" >/dev/null
    embed_docs "$name" "$components/target/polyglot/$name.wasm" "$wit"
    mv "$components/target/polyglot/$name.wasm" "$components/$name.wasm"
    report "$name" "built in $((SECONDS - start)) s"
done
