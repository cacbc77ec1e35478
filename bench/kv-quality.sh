#!/bin/sh
# KV-cache quality sweep: bits/value, PPL and KLD against the f16 cache for
# every cache type, attn-rot on and off, on the quality models of the
# KV-cache issue. Writes Markdown tables to stdout:
#
#   sh bench/kv-quality.sh > /tmp/kvq.md         (about 15 minutes on 2 cores)
#
# MODELS / TYPES / EXTRA may be overridden from the environment.
set -eu
# the sweep measures the lab codecs (tq*) too
export ROTKV_LAB_TYPES=1
cd "$(dirname "$0")/.."
SHARED=${ROTKV_SHARED:-../shared}
BIN=${ROTKV_BIN:-build/rotkv}
TEXT=$SHARED/golden/heldout.txt
MODELS=${MODELS:-"tinystories-656k-f32:128 student-h64-F32:256 syn-qwen2-kout-F32:256"}
TYPES=${TYPES:-"f32 bf16 q8_0 q5_1 q5_0 q4_1 q4_0 iq4_nl tq4 tq3.5 tq3 tq2.5 tq2 kt4 kt3.5 kt3 kt2.5 kt2"}
# mixed configurations: "label|flags"
EXTRA=${EXTRA:-"K kt4 / V kt3|-ctk kt4 -ctv kt3
K kt3 / V kt4|-ctk kt3 -ctv kt4
kt3.5, calibrated on prompt.txt|-ctk kt3.5 -ctv kt3.5 --kv-calib-text $SHARED/golden/prompt.txt
kt3, calibrated on prompt.txt|-ctk kt3 -ctv kt3 --kv-calib-text $SHARED/golden/prompt.txt
q4_0 + kv-sink 1|-ctk q4_0 -ctv q4_0 --kv-sink 1
tq3, centering off|-ctk tq3 -ctv tq3 --kv-center off"}
[ -x "$BIN" ] || make -s "$BIN"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# one row: label, flags...
row() {
    label=$1; shift
    out=$("$BIN" perplexity -m "$model" -f "$TEXT" -c "$ctx" -t 2 "$@" --kl-divergence-base "$tmp/base.kld" --kl-divergence 2>/dev/null) || {
        echo "| $label | — | refused or failed | | | | |"; return; }
    bits=$(printf '%s\n' "$out" | sed -n 's/^KV bits\/value *: *\([0-9.]*\).*/\1/p')
    ppl=$(printf '%s\n' "$out" | sed -n 's/^Mean PPL(Q) *: *\([0-9.]*\) ± *\([0-9.]*\).*/\1/p')
    kld=$(printf '%s\n' "$out" | sed -n 's/^Mean    KLD: *\([0-9.]*\) ± *\([0-9.]*\).*/\1 ± \2/p')
    k99=$(printf '%s\n' "$out" | sed -n 's/^99.0%   KLD: *\([0-9.]*\).*/\1/p')
    top=$(printf '%s\n' "$out" | sed -n 's/^Same top p: *\([0-9.]*\) ± *\([0-9.]*\).*/\1 ± \2/p')
    echo "| $label | $bits | $ppl | $kld | $k99 | $top % |"
}

for mc in $MODELS; do
    name=${mc%%:*}; ctx=${mc##*:}
    model=$SHARED/models/$name.gguf
    "$BIN" perplexity -m "$model" -f "$TEXT" -c "$ctx" -t 2 --kl-divergence-base "$tmp/base.kld" >"$tmp/base.out" 2>/dev/null
    base_ppl=$(sed -n 's/^Final estimate: PPL = \([0-9.]*\).*/\1/p' "$tmp/base.out")
    echo
    echo "### $name, -c $ctx (f16 cache PPL $base_ppl)"
    echo
    echo "| cache (K = V) | bits/value | PPL | mean KLD | 99% KLD | same top-1 |"
    echo "|---|---|---|---|---|---|"
    for t in $TYPES; do
        case $t in
        kt*) row "$t" -ctk "$t" -ctv "$t" ;;
        f32|bf16) row "$t" -ctk "$t" -ctv "$t" ;;
        *) row "$t, rot on" -ctk "$t" -ctv "$t" --attn-rot on --kv-center on
           row "$t, rot off" -ctk "$t" -ctv "$t" --attn-rot off --kv-center off ;;
        esac
    done
    printf '%s\n' "$EXTRA" | while IFS='|' read -r label flags; do
        [ -n "$label" ] || continue
        # shellcheck disable=SC2086
        row "$label" $flags
    done
done
