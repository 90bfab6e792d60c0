#!/usr/bin/env bash
# The fuzz targets (Fuzz/README.md), driven by the Makefile:
#   Scripts/fuzz.sh build CONFIG          build the three libFuzzer binaries (debug or release)
#   Scripts/fuzz.sh run CONFIG SECONDS    run each for SECONDS on .build-fuzz/corpus/<name>, seeded
#                                         from Fuzz/corpus/<name>; crashes go to Fuzz/crashes/
#   Scripts/fuzz.sh replay BIN_DIR        run the committed corpus through the normal (non-fuzzer)
#                                         build of the targets: a regression test, about a second
set -uo pipefail
cd "$(dirname "$0")/.."

SWIFT=${SWIFT:-swift}
SCRATCH=.build-fuzz
TARGETS=(FuzzRequestParser:request FuzzResponseParser:response FuzzChunkedDecoder:chunked)
FLAGS=(--scratch-path "$SCRATCH" -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING)

build() {
    local config=$1 start=$SECONDS
    for entry in "${TARGETS[@]}"; do
        local target=${entry%%:*}
        # ld.gold warns about every ASan helper symbol it cannot export: noise, dropped.
        "$SWIFT" build -c "$config" --product "$target" "${FLAGS[@]}" 2>&1 \
            | grep -v -e "Cannot export local symbol" -e "^\[[0-9]*/[0-9]*\]"
        [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz: building $target failed" >&2; exit 1; }
    done
    echo "fuzz: built ${#TARGETS[@]} fuzzers ($config, -sanitize=fuzzer,address) in $((SECONDS - start)) s"
}

run() {
    local config=$1 seconds=$2 failed=0
    local bin="$SCRATCH/$config"
    mkdir -p Fuzz/crashes "$SCRATCH/logs"
    local summary=()
    for entry in "${TARGETS[@]}"; do
        local target=${entry%%:*} name=${entry##*:}
        local work="$SCRATCH/corpus/$name" log="$SCRATCH/logs/$name.log"
        mkdir -p "$work"
        local before
        before=$(ls Fuzz/crashes | wc -l)
        echo "fuzz: $target for $seconds s (log: $log)"
        # The first corpus directory receives new inputs; the committed one is only read.
        # SWIFT_BACKTRACE: Swift's own crash backtracer trips ASan; libFuzzer prints the stack instead.
        SWIFT_BACKTRACE=enable=no "$bin/$target" "$work" "Fuzz/corpus/$name" \
            -dict=Fuzz/http.dict -max_len=4096 -timeout=10 -max_total_time="$seconds" \
            -print_final_stats=1 -artifact_prefix="Fuzz/crashes/$name-" >"$log" 2>&1
        local status=$?
        local execs
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
        local rate cov corpus
        rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
        corpus=$(ls "$work" | wc -l)
        local crashes=$(( $(ls Fuzz/crashes | wc -l) - before ))
        summary+=("$(printf '%-20s %10s executions  %6s/s  cov %5s  %5s files in working corpus  %s' \
            "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$corpus" \
            "$([ $status -eq 0 ] && [ $crashes -eq 0 ] && echo ok || echo "FAILED (exit $status, $crashes crash files)")")")
        if [ $status -ne 0 ] || [ $crashes -ne 0 ]; then
            failed=1
            echo "fuzz: $target FAILED, exit status $status; the report:" >&2
            grep -E -A3 'FUZZ INVARIANT VIOLATED|ERROR: (libFuzzer|AddressSanitizer)|Fatal error|SUMMARY' "$log" | head -40 >&2
            grep -E 'Test unit written to' "$log" >&2
        fi
    done
    echo
    echo "fuzz summary ($config build, $seconds s per target):"
    printf '  %s\n' "${summary[@]}"
    if [ $failed -ne 0 ]; then
        echo "fuzz: crash inputs are in Fuzz/crashes/; reproduce one with" >&2
        echo "      $bin/<Target> Fuzz/crashes/<file>   (or a normal build: .build/debug/<Target> <file>)" >&2
        exit 1
    fi
}

replay() {
    local bin=$1
    for entry in "${TARGETS[@]}"; do
        local target=${entry%%:*} name=${entry##*:}
        "$bin/$target" "Fuzz/corpus/$name" || { echo "fuzz replay: $target failed on the corpus" >&2; exit 1; }
    done
}

case "${1:-}" in
    build) build "${2:-release}" ;;
    run) run "${2:-release}" "${3:-60}" ;;
    replay) replay "$2" ;;
    *) echo "usage: $0 build CONFIG | run CONFIG SECONDS | replay BIN_DIR" >&2; exit 2 ;;
esac
