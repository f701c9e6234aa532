#!/usr/bin/env bash
# Kills `tessera agents send` at random points 100 times (or $1 times) —
# while it delivers, while turns run, commit or deliver their outboxes —
# and checks from the agents' states that no message was lost and none was
# handled twice: the test crates/tessera-cli/tests/agents.rs with more
# rounds (the suite runs 20). TESSERA_CRASH_SEED=<n> replays the kill
# points of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
TESSERA_CRASH_ROUNDS="$rounds" cargo test -p tessera-cli --test agents agents_killed_at_random_points -- --nocapture
