#!/bin/sh
# scripts/check-arm64.sh — `make check-arm64`: cross-builds rotkv for Linux aarch64
# (aarch64-linux-gnu-gcc, into build-aarch64) and runs, under qemu user-mode
# emulation, the kernel-twin tests and the golden-logit tests once per aarch64
# kernel level, each on an emulated CPU model that has exactly that level's features:
#   scalar   -cpu cortex-a53 with ROTKV_ISA=scalar (the reference, built for aarch64)
#   neon     -cpu cortex-a53   (ARMv8.0-A: Advanced SIMD, no dotprod)
#   dotprod  -cpu neoverse-n1  (ARMv8.2-A + dotprod, no i8mm)
#   i8mm     -cpu max          (every feature qemu emulates, i8mm included)
# Before a level's tests run, `rotkv info` under that CPU model must report the
# level (cpu.c's detection); a CPU model this qemu lacks skips its level, with the
# reason. The kernel tests compare every level the emulated CPU has against the
# scalar reference: test_simd and test_quant run at every level, the KV tests
# (test_kv_simd, test_kv_codecs: 75 s each under qemu, nearly all of it in their
# scalar references) once, on the last CPU model (which has every level). The
# golden tests run the engine at each level itself, on the small models whose
# weight types have aarch64 twins (ARM64_GOLDEN_FILTER; "*" for all 29 models:
# about 150 s per level under qemu instead of 80).
# Known failure (issue 16, found 2026-12-07): test_kv_simd's t_attention_long fails with
#   "f16 heads 8/8 hd 32, 2100 tokens: 3 splits differ from one by 1.06e-06 relative
#   (query head 5)" (tolerance 1e-6), identically under -cpu cortex-a53, neoverse-n1 and
# max. It is not an i8mm problem: the KV tests run only on the last CPU model, which is
# -cpu max. The NEON attention path is the same at every level, so the result is
# deterministic. Still open: is 1e-6 too tight for 3 x 700 vs 2048 + 52 positions at
# hd 32, or is there a real error in the NEON path or the split merge?
# Environment: ARM64_LEVELS (e.g. "neon:cortex-a53"), ARM64_TESTS, ARM64_TESTS_ONCE,
# ARM64_GOLDEN ("" to leave the golden tests out), ARM64_GOLDEN_FILTER, QEMU,
# QEMU_LD_PREFIX, CROSS_CC, BUILD.
set -u
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
CROSS_CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
BUILD=${BUILD:-build-aarch64}
LEVELS=${ARM64_LEVELS:-"scalar:cortex-a53 neon:cortex-a53 dotprod:neoverse-n1 i8mm:max"}
TESTS=${ARM64_TESTS:-"test_simd test_quant"}
TESTS_ONCE=${ARM64_TESTS_ONCE-"test_kv_simd test_kv_codecs"}
GOLDEN=${ARM64_GOLDEN-test_golden}
ROTKV_GOLDEN_FILTER=${ARM64_GOLDEN_FILTER-"t_all_golden_files_covered,t_tinystories,t_student_q4_0,t_student_q8_0,t_llama_f16,t_llama_bf16,t_llama_q8_0,t_llama_q6_k,t_llama_q5_k_m,t_llama_q4_k_m,t_llama_q3_k_m,t_llama_q2_k,t_llama_q4_0,t_llama_q4_1,t_llama_q5_0,t_llama_q5_1,t_qwen2_q4_0"}
export ROTKV_GOLDEN_FILTER
if [ -z "${QEMU:-}" ]; then
    QEMU=qemu-aarch64-static
    command -v $QEMU >/dev/null 2>&1 || QEMU=qemu-aarch64
fi
# The aarch64 C library the binaries run with: the multiarch one (libc6:arm64,
# installed with the arm64 -dev packages) where it is there. Its loader must
# match its libc: the cross toolchain's /usr/aarch64-linux-gnu loader with the
# multiarch libc.so.6 (found through /etc/ld.so.cache) hangs in pthread_create.
if [ -z "${QEMU_LD_PREFIX:-}" ]; then
    if [ -e /lib/ld-linux-aarch64.so.1 ]; then QEMU_LD_PREFIX=/; else QEMU_LD_PREFIX=/usr/aarch64-linux-gnu; fi
fi
export QEMU_LD_PREFIX

for tool in "$CROSS_CC" "$QEMU"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "check-arm64: $tool not found (make deps-arm64)" >&2; exit 1; }
done

start=$(date +%s)
bins=""
for t in $TESTS $GOLDEN; do bins="$bins $BUILD/tests/$t"; done
once=""
for t in $TESTS_ONCE; do once="$once $BUILD/tests/$t"; done
echo "== cross-build ($CROSS_CC, $BUILD)"
nice -n 19 $MAKE -j2 CC="$CROSS_CC" BUILD="$BUILD" "$BUILD/rotkv" $bins $once "$BUILD/tests/test_threadpool" || exit 1
model=models/$(cd models && ls *.gguf | head -n 1)

cpus=$($QEMU -cpu help 2>/dev/null)
ran=""; skipped=""; failed=""
last=""
for entry in $LEVELS; do last=$entry; done
for entry in $LEVELS; do
    lvl=${entry%%:*}; cpu=${entry#*:}
    if ! printf '%s\n' "$cpus" | grep -qx " *$cpu"; then
        echo "== $lvl: SKIPPED (this qemu has no CPU model $cpu)"
        skipped="$skipped $lvl"
        continue
    fi
    run="$QEMU -cpu $cpu"
    if [ "$lvl" = scalar ]; then isa=scalar; else isa=""; fi
    # the level the engine picks on this CPU model (and under the cap, for scalar)
    got=$(ROTKV_ISA=$isa nice -n 19 $run "$BUILD/rotkv" info -m "$model" 2>&1 | sed -n 's/^kernels: *\([a-z0-9]*\).*/\1/p')
    echo "== $lvl on qemu -cpu $cpu${isa:+ with ROTKV_ISA=$isa}: rotkv info says kernels: ${got:-?}"
    if [ "$got" != "$lvl" ]; then
        echo "!! expected kernels: $lvl"
        failed="$failed $lvl"
        continue
    fi
    # the kernel tests at scalar only once (they compare every level against it anyway)
    tl=$bins
    [ "$lvl" = scalar ] && tl="$BUILD/tests/test_threadpool${GOLDEN:+ $BUILD/tests/$GOLDEN}"
    [ "$entry" = "$last" ] && tl="$tl $once"
    if ROTKV_ISA=$isa TEST_RUNNER="nice -n 19 $run" ISA_LEVELS="" sh tests/run.sh $tl; then
        ran="$ran $lvl"
    else
        failed="$failed $lvl"
    fi
done
# ROTKV_ISA caps a level the CPU has
got=$(ROTKV_ISA=neon nice -n 19 $QEMU -cpu max "$BUILD/rotkv" info -m "$model" 2>&1 | sed -n 's/^kernels: *//p')
echo "== ROTKV_ISA=neon on qemu -cpu max: kernels: $got"
case "$got" in "neon (CPU: i8mm, capped by ROTKV_ISA)") ;; *) echo "!! expected neon (CPU: i8mm, capped by ROTKV_ISA)"; failed="$failed cap" ;; esac

echo "check-arm64: levels run:${ran:- none}; skipped:${skipped:- none}; failed:${failed:- none} ($(($(date +%s) - start)) s)"
[ -z "$failed" ] && [ -n "$ran" ]
