#!/usr/bin/env bash
# Prepares the Python environment of the AI reference checks: a virtualenv in
# target/ai-venv with NumPy, safetensors and tokenizers, for the independent
# all-MiniLM-L6-v2 reference (scripts/ai-reference/minilm.py). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/python-env.sh target/ai-venv scripts/ai-reference/requirements.txt
