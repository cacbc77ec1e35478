#!/bin/sh
# fuzz/check.sh — `make fuzz-check` (part of `make check`): builds the libFuzzer
# targets and runs each for FUZZ_SECONDS (default 30) under ASan+UBSan+LSan,
# from a scratch copy of its seed corpus in fuzz/corpus/<target>/ (the
# committed seeds are never written). A crash, leak, sanitizer report, failed
# check, per-input timeout (10 s) or RSS over 2 GB fails the run; the input is
# kept as $BUILD/fuzz-artifacts/<run>-crash-*. Prints the executions of every
# run. Skipped, with the reason, when clang or its libFuzzer runtime is
# missing; a run whose ../shared vocabulary is absent is skipped alone.
# FUZZ_ONLY="gguf tokenizer-qwen3 ..." limits the runs.
BUILD=${BUILD:-build}
MAKE=${MAKE:-make}
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
SHARED=../shared/models

# run name, target, model file ("" = none), env var naming it
RUNS="gguf gguf - -
tokenizer-llama3 tokenizer $SHARED/vocab-llama3.gguf ROTKV_FUZZ_VOCAB
tokenizer-qwen3 tokenizer $SHARED/vocab-qwen3.gguf ROTKV_FUZZ_VOCAB
tokenizer-tinystories tokenizer $SHARED/tinystories-656k-f32.gguf ROTKV_FUZZ_VOCAB
chat_template chat_template - -
server_request server_request models/tinystories-656k-q8_0.gguf ROTKV_FUZZ_MODEL
slot_file slot_file - -
kv_calib kv_calib models/tinystories-656k-q8_0.gguf ROTKV_FUZZ_MODEL"

if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
    echo "fuzz-check: SKIPPED: $FUZZ_CC not found (install clang and libclang-rt-14-dev)"
    exit 0
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return d && n > 1 && d[0] == 1; }\n' > "$tmp/probe.c"
if ! "$FUZZ_CC" -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" > "$tmp/probe.log" 2>&1; then
    echo "fuzz-check: SKIPPED: $FUZZ_CC cannot link -fsanitize=fuzzer,address,undefined (the libFuzzer runtime: libclang-rt-14-dev):"
    sed 's/^/    /' "$tmp/probe.log" | head -5
    exit 0
fi
$MAKE BUILD="$BUILD" FUZZ_CC="$FUZZ_CC" fuzz || { echo "fuzz-check: FAILED: make fuzz"; exit 1; }

mkdir -p "$BUILD/fuzz-artifacts"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
failed=0; ran=0; skipped=0; summary=""
while read -r name target model var; do
    if [ -n "$FUZZ_ONLY" ] && ! printf ' %s ' "$FUZZ_ONLY" | grep -q " $name "; then continue; fi
    if [ "$model" != - ] && [ ! -f "$model" ]; then
        echo "== fuzz $name: SKIPPED ($model not found)"
        summary="$summary
  $name: skipped ($model not found)"
        skipped=$((skipped + 1)); continue
    fi
    echo "== fuzz $name: ${FUZZ_SECONDS}s"
    rm -rf "$tmp/corpus"; mkdir -p "$tmp/corpus"
    cp fuzz/corpus/"$target"/* "$tmp/corpus/" 2>/dev/null
    if [ "$var" != - ]; then env_set="$var=$model"; else env_set="FUZZ_NONE=1"; fi
    env "$env_set" "$BUILD/fuzz_$target" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -detect_leaks=1 -print_final_stats=1 -artifact_prefix="$BUILD/fuzz-artifacts/$name-" \
        "$tmp/corpus" > "$tmp/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$tmp/log" | tail -1)
    ran=$((ran + 1))
    if [ $rc -ne 0 ]; then
        failed=$((failed + 1))
        grep -E 'ERROR|SUMMARY|check failed|runtime error|Test unit written|==[0-9]+==' "$tmp/log" | head -30
        echo "!! fuzz $name failed (exit $rc); the input is in $BUILD/fuzz-artifacts/"
        summary="$summary
  $name: FAILED after ${execs:-?} executions"
    else
        summary="$summary
  $name: ${execs:-?} executions in ${FUZZ_SECONDS}s, $cov, no findings"
    fi
done <<RUNS_EOF
$RUNS
RUNS_EOF
echo "fuzz-check:$summary"
echo "fuzz-check: $ran run, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
