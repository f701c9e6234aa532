#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for SECONDS (default
# 600), one after another, one fuzzing process at a time. See
# docs/TESTING.md.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Targets: json_to_wit manifest journal_import http_api (default: all).
# Corpus: fuzz/corpus/<target> (seed-* files are committed, the rest is
# what runs add). Crash artifacts and the run's log: fuzz/artifacts/<target>.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Environment: CARGO_TARGET_DIR (default target-fuzz/, kept apart from the
# main build, which uses other flags), FUZZ_SANITIZER (address, or none),
# FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds=600
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi
all=(json_to_wit manifest journal_import http_api)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${all[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
        echo "unknown target \`$t\`; targets: ${all[*]}" >&2
        exit 2
    fi
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-fuzz}"
sanitizer="${FUZZ_SANITIZER:-address}"
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin_dir="$CARGO_TARGET_DIR/$triple/release"

if [[ ! -f components/hello.wasm ]]; then
    bash scripts/build-components.sh
fi
for t in "${targets[@]}"; do
    cargo +nightly fuzz build --sanitizer "$sanitizer" "$t"
done

# Scratch directories (journal store, server data) on tmpfs when there is
# one: the journal syncs to disk on every import.
if [[ -z "${TESSERA_FUZZ_TMP:-}" && -d /dev/shm && -w /dev/shm ]]; then
    export TESSERA_FUZZ_TMP=/dev/shm
fi

summary=()
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    artifacts="$root/fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$artifacts/fuzz.log"
    dict=()
    if [[ -f "fuzz/dict/$t.dict" ]]; then
        dict=("-dict=$root/fuzz/dict/$t.dict")
    fi
    before="$(find "$artifacts" -maxdepth 1 -type f ! -name 'fuzz*.log' | wc -l)"
    echo "== $t: ${seconds}s, corpus ${corpus#"$root"/}, log ${log#"$root"/}"
    status=0
    started="$(date +%s)"
    # One job in one worker: libFuzzer runs the target in a child process
    # logging to fuzz-0.log in the working directory (hence the cd), and
    # copies that log to its own output when the job ends.
    (
        cd "$artifacts" &&
            "$bin_dir/$t" "$corpus" "${dict[@]}" \
                -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 \
                -jobs=1 -workers=1 -print_final_stats=1 \
                -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1
    ) || status=$?
    elapsed="$(($(date +%s) - started))"
    rm -f "$artifacts/fuzz-0.log"
    after="$(find "$artifacts" -maxdepth 1 -type f ! -name 'fuzz*.log' | wc -l)"
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    feat="$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    line="$(printf '%-15s %5ss  runs %-10s exec/s %-7s cov %-6s ft %-7s rss %sMB  crashes %s  (exit %s)' \
        "$t" "$elapsed" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${feat:-?}" "${rss:-?}" \
        "$((after - before))" "$status")"
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
