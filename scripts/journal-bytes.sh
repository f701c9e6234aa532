#!/usr/bin/env bash
# Bytes per recorded run for MCP calls served by `tessera serve --stdio`:
# starts a server on a fresh data directory, makes N calls through a
# minimal JSON-RPC client (no SDK), stops it, and prints `tessera runs
# stats` (the journal file on disk, what its records and blobs weigh, per
# run).
#
#   scripts/journal-bytes.sh [N] [TESSERA_BINARY]
#
# N defaults to 2000; the binary to target/release/tessera, else
# target/debug/tessera (the bytes written do not depend on the build).
# The call is `hello.greet` unless these say otherwise:
#   COMPONENT  a file under components/ without `.wasm` (default hello)
#   TOOL       the MCP tool name, `<component>__...` (default hello__greet)
#   ARGS       its JSON arguments; `{i}` is replaced by the call's number
#              (default {"name": "caller {i}"})
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
target="${CARGO_TARGET_DIR:-target}"
bin="${2:-}"
if [ -z "$bin" ]; then
    for b in "$target/release/tessera" "$target/debug/tessera"; do
        if [ -x "$b" ]; then bin="$b"; break; fi
    done
fi
[ -x "$bin" ] || { echo "no tessera binary: cargo build -p tessera-cli first" >&2; exit 2; }
component="${COMPONENT:-hello}"
tool="${TOOL:-hello__greet}"
default_args='{"name": "caller {i}"}'
args="${ARGS:-$default_args}"
[ -f "components/$component.wasm" ] || bash scripts/build-components.sh
data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
"$bin" --data "$data" components add "components/$component.wasm" --name "$component" >/dev/null
python3 - "$bin" "$data" "$n" "$tool" "$args" <<'EOF'
import json, subprocess, sys
binary, data, n, tool, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
p = subprocess.Popen([binary, "--data", data, "serve", "--stdio"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
def send(msg):
    p.stdin.write(json.dumps(msg) + "\n")
    p.stdin.flush()
def answer(id):
    while True:
        line = p.stdout.readline()
        if not line:
            sys.exit("the server closed stdout")
        m = json.loads(line)
        if m.get("id") == id:
            return m
send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "journal-bytes", "version": "0"}}})
answer(0)
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
for i in range(1, n + 1):
    send({"jsonrpc": "2.0", "id": i, "method": "tools/call",
          "params": {"name": tool, "arguments": json.loads(args.replace("{i}", str(i)))}})
    r = answer(i)
    if "error" in r or r["result"].get("isError"):
        sys.exit(f"call {i} failed: {r}")
p.stdin.close()
p.wait(timeout=60)
EOF
size=$(stat -c %s "$data/journal.redb")
runs=$("$bin" --data "$data" runs list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "$n MCP calls of $tool over stdio: $runs runs, journal.redb $size bytes, $((size / runs)) bytes per run"
# `runs stats` (where the bytes go) exists from the build that added retention on.
if "$bin" --data "$data" runs stats >/dev/null 2>&1; then
    "$bin" --data "$data" runs stats
    "$bin" --data "$data" runs prune --max-runs 0 >/dev/null
    echo "after \`runs prune --max-runs 0\`: journal.redb $(stat -c %s "$data/journal.redb") bytes"
fi
