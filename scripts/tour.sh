#!/usr/bin/env bash
# Sets up (see setup.sh) and runs a short tour of the runtime: inspect a
# component, call it from JSON, watch grants and limits at work, replay a
# run, serve over MCP, and run supervised agents. (scripts/demo.sh runs
# Tessera's main job: an offline agent answering questions over documents.)
# Needs no services: everything runs in-process on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

T=./target/release/tessera
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
export TESSERA_DATA="$DATA"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$@"; set +e; "$@"; echo "(exit $?)"; set -e; }

run $T inspect components/hello.wasm
run $T call components/hello.wasm greet --args '{"name":"Ada"}'
run $T call components/hello.wasm types#echo-items --args '{"items":[{"id":1,"name":"tool","tags":["fast"],"color":"green"}]}'
run $T call components/hello.wasm types#echo-items --args '{"items":[{"id":300,"name":"x","tags":[]}]}'
run $T call components/hello.wasm chatter --args '{"msg":"captured, never mixed into stdout"}'

mkdir -p "$DATA/files"
echo "notes from the host" > "$DATA/files/notes.txt"
cat > "$DATA/fs.toml" <<TOML
[[files]]
host = "$DATA/files"
guest = "/work"
mode = "ro"
TOML
run $T call components/fs-tool.wasm read --manifest "$DATA/fs.toml" --args '{"path":"/work/notes.txt"}'
run $T call components/fs-tool.wasm write --manifest "$DATA/fs.toml" --args '{"path":"/work/new.txt","contents":"x"}'
run $T call components/fs-escape.wasm attempt-read --manifest "$DATA/fs.toml" --args '{"path":"/work/../../etc/passwd"}'

run $T call components/http-fetch.wasm fetch --args '{"url":"http://127.0.0.1:9/never-sent"}'

cat > "$DATA/spin.toml" <<TOML
[limits]
timeout_ms = 250
fuel = 1000000000000
TOML
run $T call components/spin.wasm spin --manifest "$DATA/spin.toml"
run $T call components/memory-hog.wasm hog --args '{"mib":512}'
run $T call components/p1-command.wasm run

# Record a run, then replay it offline and look inside it.
step $T call components/net-escape.wasm entropy --record
RUN=$($T call components/net-escape.wasm entropy --record 2>&1 >/dev/null | sed -n 's/^recorded run //p')
echo "recorded run $RUN"
if [ -n "$RUN" ]; then
    run $T runs show "$RUN"
    run $T replay "$RUN"
    run $T inspect-run "$RUN" --at 2 --strings 5
fi
run $T call components/net-escape.wasm entropy --deterministic --seed 7

# wasi:config: a value from the manifest, a secret from the host. The guest
# reads both; the journal holds only a keyed digest of the secret.
cat > "$DATA/config.toml" <<TOML
[config]
values = { model = "small" }
secrets = ["api_key"]
TOML
run $T call components/config-tool.wasm get-all --manifest "$DATA/config.toml"
step $T --secret api_key=sk-demo-123 call components/config-tool.wasm get --manifest "$DATA/config.toml" --args '{"key":"api_key"}' --record
RUN=$($T --secret api_key=sk-demo-123 call components/config-tool.wasm get --manifest "$DATA/config.toml" --args '{"key":"api_key"}' --record 2>&1 >/dev/null | sed -n 's/^recorded run //p')
echo "recorded run $RUN"
if [ -n "$RUN" ]; then
    run $T runs show "$RUN"
    run $T --secret api_key=sk-demo-123 replay "$RUN"
    run $T --secret api_key=another-value replay "$RUN"
fi

# Serve the registry over MCP on stdio, as an MCP host would spawn it: the
# exchange below is what the host sends. Every call is journaled.
run $T components add components/hello.wasm --name hello
run $T components add components/net-escape.wasm --name netx
step "MCP over stdio: initialize, list tools, call a tool, get a tool error (denied grant)"
{
    printf '%s\n' \
        '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"demo","version":"0"}}}' \
        '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
        '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' \
        '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"hello__greet","arguments":{"name":"Ada"}}}' \
        '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"netx__fetch-status","arguments":{"url":"http://example.com/"}}}'
    sleep 2
} | $T serve --stdio | while IFS= read -r line; do
    case "$line" in
        *'"id":2'*) echo "tools: $(echo "$line" | grep -o '"name":"[a-z0-9-]*__[a-z0-9_-]*"' | sed 's/"name"://; s/"//g' | tr '\n' ' ')" ;;
        *) echo "$line" | cut -c1-400 ;;
    esac
done
run $T runs list

# Agents: a coordinator spawns supervised workers and asks each for a word
# count; a worker's failing turn becomes a dead letter and its supervisor
# restarts it; every turn is a journal run that replays offline.
run $T agents spawn coord --component components/coordinator.wasm --manifest examples/agents/coordinator.toml
run $T agents send coord '{"texts": ["the quick brown fox", "jumps over", "the lazy dog"]}' --wait
run $T agents send coord/w0 '{"trap": true}' --wait
run $T agents list
run $T agents dead-letters coord/w0
run $T agents log coord
TURN=$($T agents log coord --json | sed -n 's/.*"run": "\([^"]*\)".*/\1/p' | head -1)
if [ -n "$TURN" ]; then
    run $T replay "$TURN"
fi
run $T agents fork coord --at 1 --as coord-b
run $T agents show coord-b

step "audit log ($DATA/audit.jsonl)"
cat "$DATA/audit.jsonl"
