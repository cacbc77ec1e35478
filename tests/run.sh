#!/bin/sh
# Runs every cmocka test binary given as an argument and prints one closing line
# "N passed, N failed, N skipped" summed over all of them. Exit status is non-zero
# if any test failed or any binary crashed.
#
# The kernel tests, the MoE tests, the sliding-window tests and the golden-logit tests run once more at every lower
# kernel level (ROTKV_ISA caps the level; one the CPU lacks falls back to the
# next lower one, so such a run repeats a level and says so in its output).
# ISA_LEVELS overrides the list ("" to skip). TEST_RUNNER, if set, is put in
# front of every binary (scripts/check-arm64.sh: "qemu-aarch64 -cpu ...").
ISA_LEVELS=${ISA_LEVELS-"avxvnni avx2 scalar"}
TEST_RUNNER=${TEST_RUNNER-}
passed=0; failed=0; skipped=0; crashed=0
runs=""
for t in "$@"; do
    runs="$runs $t"
    case "$t" in
    */test_golden|*/test_simd|*/test_moe|*/test_swa)
        for lvl in $ISA_LEVELS; do runs="$runs ROTKV_ISA=$lvl:$t"; done ;;
    esac
done
for run in $runs; do
    case "$run" in
    ROTKV_ISA=*) lvl=${run%%:*}; lvl=${lvl#ROTKV_ISA=}; t=${run#*:}
        echo "== $t with ROTKV_ISA=$lvl"
        out=$(ROTKV_ISA=$lvl $TEST_RUNNER "$t" 2>&1); rc=$? ;;
    *) t=$run; out=$($TEST_RUNNER "$t" 2>&1); rc=$? ;;
    esac
    printf '%s\n' "$out"
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    s=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $t exited with status $rc"; crashed=$((crashed + 1)); failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && [ $crashed -eq 0 ]
