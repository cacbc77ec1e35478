/* quant_vnni256.c — the 256-bit VNNI level (CPU_ISA_AVXVNNI): quant_vnni.h's
 * kernels at 8 rows per group, instantiated twice from the same source:
 *   quant_kernels_avxvnni_vex   VEX vpdpbusd (AVX-VNNI: Alder Lake and later)
 *   quant_kernels_avxvnni_evex  EVEX vpdpbusd (AVX512-VNNI + VL: Ice Lake, Zen 4)
 * quant.c takes the VEX table where the CPU has AVX-VNNI, else the EVEX one, so
 * an AVX-512 machine runs (and tests) this level's code too. Types without a
 * VNNI kernel fall back to the AVX2 row (quant.c). */
#include "arch/quant_arch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define VNNI_W 256

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif
#define VNNI_NAME(x) x##_vex
#define DPBUSD256(acc, u, a) _mm256_dpbusd_avx_epi32(acc, u, a)
#include "quant_vnni.h"
const quant_kernels quant_kernels_avxvnni_vex[GGML_TYPE_COUNT] = {VNNI_TABLE_ROWS};
#undef VNNI_NAME
#undef DPBUSD256
#undef VNNI_ROW
#undef VNNI_KROW
#undef VNNI_TABLE_ROWS
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512vnni")
#endif
#define VNNI_NAME(x) x##_evex
#define DPBUSD256(acc, u, a) _mm256_dpbusd_epi32(acc, u, a)
#include "quant_vnni.h"
const quant_kernels quant_kernels_avxvnni_evex[GGML_TYPE_COUNT] = {VNNI_TABLE_ROWS};
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not x86-64 */

const quant_kernels quant_kernels_avxvnni_vex[GGML_TYPE_COUNT];
const quant_kernels quant_kernels_avxvnni_evex[GGML_TYPE_COUNT];

#endif
