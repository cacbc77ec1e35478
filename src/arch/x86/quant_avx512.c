/* quant_avx512.c — the AVX-512 level (CPU_ISA_AVX512): quant_vnni.h's
 * kernels at 16 rows per group (one zmm lane per row). Types without an
 * AVX-512 kernel fall back to the 256-bit VNNI row, then AVX2 (quant.c). */
#include "arch/quant_arch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define VNNI_W 512

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif
#define VNNI_NAME(x) x##_avx512
#define DPBUSD256(acc, u, a) _mm256_dpbusd_epi32(acc, u, a)
#include "quant_vnni.h"
const quant_kernels quant_kernels_avx512[GGML_TYPE_COUNT] = {VNNI_TABLE_ROWS};
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else /* not x86-64 */

const quant_kernels quant_kernels_avx512[GGML_TYPE_COUNT];

#endif
