#!/usr/bin/env bash
# Sets up what running Tessera's components in a browser needs
# (browser/run.mjs, crates/tessera-cli/tests/browser.rs):
#
# - Chromium: Debian's `chromium` package, installed with apt-get when
#   /usr/bin/chromium (or $CHROMIUM) is missing and this runs as root;
#   otherwise an error says what to install. Playwright never downloads a
#   browser of its own: playwright-core drives this one.
# - Node.js 20 or later with npm (installed with apt-get the same way).
# - The npm packages pinned by browser/package-lock.json (jco, which
#   transpiles a component to JavaScript and core wasm; preview2-shim, WASI
#   for the browser; playwright-core), installed with `npm ci` into
#   browser/node_modules, again only when that lock file changed.
#
# Quick and silent when everything is already there. scripts/test.sh runs
# it before the tests.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/browser"
chromium="${CHROMIUM:-/usr/bin/chromium}"

can_apt() {
    command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]
}

apt_updated=
apt_install() {
    if [[ -z "$apt_updated" ]]; then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Chromium: Debian's package -----------------------------------------

if [[ ! -x "$chromium" ]]; then
    if [[ -n "${CHROMIUM:-}" ]]; then
        echo "error: \$CHROMIUM is $CHROMIUM, which is not an executable file" >&2
        exit 1
    fi
    if can_apt; then
        echo "installing chromium with apt-get (Debian's package)" >&2
        apt_install chromium
    fi
    if [[ ! -x "$chromium" ]]; then
        echo "error: the browser tests need Chromium at $chromium: install Debian's \`chromium\` package (apt-get install chromium, as root) and re-run scripts/browser.sh, or set CHROMIUM to a Chromium binary" >&2
        exit 1
    fi
fi

# --- Node.js and npm ---------------------------------------------------------

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if can_apt; then
        echo "installing nodejs and npm with apt-get" >&2
        apt_install nodejs npm
    fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: the browser tests need Node.js 20 or later with npm; install them and re-run scripts/browser.sh" >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if ((major < 20)); then
    echo "error: the browser tests need Node.js 20 or later; $(command -v node) is $(node --version)" >&2
    exit 1
fi

# --- The pinned npm packages -------------------------------------------------

# Installed again only when the installed tree was not made from the same
# package-lock.json.
stamp="$dir/node_modules/.tessera-package-lock.json"
if [[ ! -f "$stamp" ]] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
    echo "installing the npm packages of browser/ (npm ci)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    cp "$dir/package-lock.json" "$stamp"
fi
