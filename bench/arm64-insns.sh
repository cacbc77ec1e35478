#!/bin/sh
# bench/arm64-insns.sh — the instructions each aarch64 weight kernel executes per
# block, beside the scalar reference's (bench/arm64_insns.c), counted under qemu:
# one instruction per translation block, every executed block logged. Prints a
# markdown table (docs/performance.md, ARM64). Needs build-aarch64 (make check-arm64).
# PART=weights|kv|all (default all): the weight kernels' table, the KV side's
# (codecs per 32 values, kt4 per row of head_dim 128, attention's tile kernels
# per call), or both. The kt kernels are counted with -dfilter on their own
# code (the head's fit before them is millions of instructions).
set -eu
cd "$(dirname "$0")/.."
QEMU=${QEMU:-qemu-aarch64-static}
B=${BUILD:-build-aarch64}
[ -e /lib/ld-linux-aarch64.so.1 ] && export QEMU_LD_PREFIX=${QEMU_LD_PREFIX:-/}
PART=${PART:-all}
aarch64-linux-gnu-gcc -O2 -std=c11 -no-pie -D_DEFAULT_SOURCE -Isrc -Iinclude bench/arm64_insns.c $B/librotkv.a \
    -L/usr/lib/aarch64-linux-gnu -lpcre2-8 -lm -lpthread -o $B/arm64_insns
log=$(mktemp)
trap 'rm -f "$log"' EXIT
FILTER=""
count() { # ARGS... -> executed instructions of the whole run (of the code in FILTER if set)
    $QEMU -cpu max -one-insn-per-tb -d exec,nochain ${FILTER:+-dfilter $FILTER} -D "$log" $B/arm64_insns "$@" \
        >/dev/null 2>&1 ||
        $QEMU -cpu max -singlestep -d exec,nochain ${FILTER:+-dfilter $FILTER} -D "$log" $B/arm64_insns "$@" >/dev/null
    grep -c '^Trace' "$log"
}
per() { # ARGS-BEFORE-COUNT... -> (count of 2 NB - count of NB) / NB, or "-" if there is no such kernel
    $QEMU -cpu max $B/arm64_insns "$@" 1 >/dev/null 2>&1 || { echo "-"; return; }
    c1=$(count "$@" 1); c2=$(count "$@" 2)
    awk -v a="$c1" -v b="$c2" 'BEGIN { printf "%.1f", (b - a) / 64 }'
}
# the address ranges of functions, for -dfilter
ranges() { aarch64-linux-gnu-nm -S $B/arm64_insns | awk -v want=" $* " 'index(want, " " $4 " ") { printf "%s0x%s+0x%s", sep, $1, $2; sep = "," }'; }
# the functions of objects of the library
objfuncs() { for o in "$@"; do aarch64-linux-gnu-nm $B/src/$o.o | awk '$2 ~ /^[tT]$/ { print $3 }'; done | tr '\n' ' '; }
if [ "$PART" != kv ]; then
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
fi
[ "$PART" = weights ] && exit 0
echo
echo "| KV codec | per 32 values | dot scalar | dot neon | axpy scalar | axpy neon | decode scalar | decode neon |"
echo "|---|---|---|---|---|---|---|---|"
# only the codecs' and quant.c's code is logged (the codebooks' computation at
# the first kv_codec_get is millions of instructions; encoding runs the same in both runs)
FILTER=$(ranges $(objfuncs kv_codecs arch/arm/kv_codecs_neon quant))
for t in f32 f16 bf16 q8_0 q5_1 q5_0 q4_1 q4_0 iq4_nl tq4 tq3.5 tq3 tq2.5 tq2; do
    row="| $t | 32"
    for op in dot axpy decode; do
        for lvl in scalar neon; do row="$row | $(per kv $t $op $lvl)"; done
    done
    echo "$row |"
done
FILTER=""
echo
echo "| kt4, head_dim 128 | per | scalar | neon |"
echo "|---|---|---|---|"
for op in dot axpy levels; do
    FILTER=$(ranges kvt_${op}_scalar); s=$(per kt $op scalar)
    FILTER=$(ranges kvt_${op}_neon kvt_levels_rows_neon); n=$(per kt $op neon)
    FILTER=""
    echo "| $op | row | $s | $n |"
done
echo
echo "| attention tile | per call | scalar | neon |"
echo "|---|---|---|---|"
for op in scores accum exp max; do
    case $op in scores|accum) what="32 rows x 128 x 4 heads" ;; *) what="32 scores" ;; esac
    echo "| $op | $what | $(per attn $op scalar) | $(per attn $op neon) |"
done
echo
echo "| Walsh–Hadamard (attn-rot) | per | scalar | neon |"
echo "|---|---|---|---|"
echo "| fwht | 128 values | $(per fwht rot scalar) | $(per fwht rot neon) |"
