#!/usr/bin/env bash
# Kills `tessera plan run` at random points 100 times (or $1 times) and
# checks, with an HTTP server counting every side effect, that `plan
# resume` never runs a finished step again and loses none: the test
# crates/tessera-cli/tests/plans.rs with more rounds (the suite runs
# 20). TESSERA_CRASH_SEED=<n> replays the kill points of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
TESSERA_CRASH_ROUNDS="$rounds" cargo test -p tessera-cli --test plans plans_killed_at_random_points -- --nocapture
