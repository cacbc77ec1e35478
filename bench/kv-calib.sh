#!/bin/sh
# Calibrated KV allocation against the fixed types, as a new user gets it:
# each model is calibrated once on the calibration text shipped with rotkv
# (data/calibration.txt, never the evaluated text), then every configuration
# is scored on ../shared/golden/heldout.txt by KLD against the f16 cache.
#
#   sh bench/kv-calib.sh > /tmp/kvcal.md      (MODELS="name:ctx ..." to select; a name with a / is a path)
#
# The calibration files go to a temporary directory (the shared models are
# read-only); CALTEXT=FILE calibrates on another text.
set -eu
cd "$(dirname "$0")/.."
SHARED=${ROTKV_SHARED:-../shared}
BIN=${ROTKV_BIN:-build/rotkv}
TEXT=$SHARED/golden/heldout.txt
MODELS=${MODELS:-"student-h64-F32:256 syn-qwen2-kout-F32:256 syn-llama-gqa-F32:256 syn-qwen3-h128-F16:256 tinystories-656k-f32:128"}
BUDGETS=${BUDGETS:-"2.5 3 3.5 4"}
FIXED=${FIXED:-"q4_0 iq4_nl kt3.5"}
[ -x "$BIN" ] || make -s "$BIN"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

row() {
    label=$1; shift
    out=$("$BIN" perplexity -m "$model" -f "$TEXT" -c "$ctx" -t 2 "$@" --kl-divergence-base "$tmp/base.kld" --kl-divergence 2>"$tmp/err") || {
        echo "| $label | — | failed: $(tail -1 "$tmp/err") | |"; return; }
    bits=$(printf '%s\n' "$out" | sed -n 's/^KV bits\/value *: *\([0-9.]*\).*/\1/p')
    kld=$(printf '%s\n' "$out" | sed -n 's/^Mean    KLD: *\([0-9.]*\) ± *\([0-9.]*\).*/\1 ± \2/p')
    top=$(printf '%s\n' "$out" | sed -n 's/^Same top p: *\([0-9.]*\) ± *\([0-9.]*\).*/\1 ± \2/p')
    echo "| $label | $bits | $kld | $top % |"
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(date -u +%Y-%m-%d)"
for spec in $MODELS; do
    name=${spec%:*}; ctx=${spec##*:}
    case $name in
        */*) model=$name; name=$(basename "$name" .gguf) ;;   # a path (e.g. a model made with rotkv synth)
        *) model=$SHARED/models/$name.gguf ;;
    esac
    cal=$tmp/$name.kvcal
    t0=$(date +%s)
    "$BIN" calibrate -m "$model" ${CALTEXT:+-f "$CALTEXT"} -o "$cal" -t 2 > "$tmp/cal.txt" 2>"$tmp/err" || {
        echo "calibration of $name failed: $(tail -1 "$tmp/err")"; continue; }
    t1=$(date +%s)
    "$BIN" perplexity -m "$model" -f "$TEXT" -c "$ctx" -t 2 --no-kv-calib --kl-divergence-base "$tmp/base.kld" >/dev/null 2>&1
    echo
    echo "### $name, -c $ctx (calibration: $((t1 - t0)) s)"
    echo
    echo "| cache | bits/value | mean KLD | same top-1 |"
    echo "|---|---|---|---|"
    for t in $FIXED; do
        case $t in
            kt*) row "$t, transforms from the calibration" -ctk "$t" -ctv "$t" --kv-calib "$cal" ;;
            *) row "$t (rot on)" -ctk "$t" -ctv "$t" --no-kv-calib ;;
        esac
    done
    for b in $BUDGETS; do row "**auto$b**" -ctk "auto$b" --kv-calib "$cal"; done
    echo
    echo "Allocations (K/V per layer) chosen by \`-ctk autoB\`, and the additive model's check on the calibration text:"
    echo
    sed -n 's/^\(auto[0-9.]* .*\)$/    \1/p' "$tmp/cal.txt"
done
