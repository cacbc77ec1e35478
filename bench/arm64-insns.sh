#!/bin/sh
# bench/arm64-insns.sh — the instructions each aarch64 weight kernel executes per
# block, beside the scalar reference's (bench/arm64_insns.c), counted under qemu:
# one instruction per translation block, every executed block logged. Prints a
# markdown table (docs/performance.md, ARM64). Needs build-aarch64 (make check-arm64).
set -eu
cd "$(dirname "$0")/.."
QEMU=${QEMU:-qemu-aarch64-static}
B=${BUILD:-build-aarch64}
[ -e /lib/ld-linux-aarch64.so.1 ] && export QEMU_LD_PREFIX=${QEMU_LD_PREFIX:-/}
aarch64-linux-gnu-gcc -O2 -std=c11 -D_DEFAULT_SOURCE -Isrc -Iinclude bench/arm64_insns.c $B/librotkv.a \
    -lm -lpthread -o $B/arm64_insns
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count() { # TYPE LEVEL 1|2 -> executed instructions of the whole run
    $QEMU -cpu max -one-insn-per-tb -d exec,nochain -D "$log" $B/arm64_insns "$@" >/dev/null 2>&1 ||
        $QEMU -cpu max -singlestep -d exec,nochain -D "$log" $B/arm64_insns "$@" >/dev/null
    grep -c '^Trace' "$log"
}
echo "| type | block (values) | scalar | neon | dotprod |"
echo "|---|---|---|---|---|"
for t in q4_0 q4_1 q5_0 q5_1 q8_0 iq4_nl q2_K q3_K q4_K q5_K q6_K f32 f16 bf16; do
    case $t in q2_K|q3_K|q4_K|q5_K|q6_K) bs=256 ;; *) bs=32 ;; esac
    row="| $t | $bs"
    for lvl in scalar neon dotprod; do
        if ! $QEMU -cpu max $B/arm64_insns $t $lvl 1 >/dev/null 2>&1; then row="$row | (NEON row)"; continue; fi
        c1=$(count $t $lvl 1); c2=$(count $t $lvl 2)
        per=$(awk -v a="$c1" -v b="$c2" 'BEGIN { printf "%.1f", (b - a) / 64 }')
        row="$row | $per"
    done
    echo "$row |"
done
