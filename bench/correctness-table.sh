#!/bin/sh
# Regenerates the per-model table of docs/correctness.md from the golden test:
#   sh bench/correctness-table.sh > /tmp/table.md
set -e
cd "$(dirname "$0")/.."
make -s build/tests/test_golden >/dev/null
./build/tests/test_golden 2>&1 | awk '
/\[ GOLDEN   \]/ {
    # [ GOLDEN   ] name max|Δ| X mean|Δ| Y max|Δlse| Z greedy A/B matched (compared up to step S: why) threads 1/4 vs 2: T
    name=$4; max=$6; mean=$8; lse=$10; g=$12
    why=$0; sub(/.*step [0-9]+: /, "", why); sub(/\).*/, "", why)
    thr=$NF
    printf "| %s | %s | %s | %s | %s | %s | %s |\n", name, max, mean, lse, g, why, thr
}'
