#!/usr/bin/env bash
# Prepares a Python environment of the tests: by default the MCP interop
# tests' (a virtualenv in target/mcp-venv with the official MCP Python SDK);
# `python-env.sh VENV REQUIREMENTS` makes another (scripts/ai-env.sh).
# Idempotent; installs python3 and venv support with apt-get when they are
# missing and this runs as root on a Debian-like system.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-target/mcp-venv}
req=${2:-crates/tessera-cli/tests/interop/requirements.txt}
stamp="$venv/.requirements"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then
    exit 0
fi

have_venv() { command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; }
if ! have_venv; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "installing python3 and python3-venv with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    else
        echo "error: $req needs python3 (3.11 or later) with the venv module; install them and re-run" >&2
        exit 1
    fi
fi

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
cp "$req" "$stamp"
