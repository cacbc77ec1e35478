/* quant_arch.h — the kernel tables of every ISA level (quant.h's
 * quant_kernels), one const table per level, indexed by ggml type id. A level
 * whose architecture this build is not for has an all-empty table, so the
 * choice in quant.c falls through to the levels below it.
 *
 * scalar   quant.c                    the reference
 * avx2     arch/x86/quant_avx2.c      AVX2 + FMA + F16C
 * avxvnni  arch/x86/quant_vnni256.c   the same 256-bit source twice: VEX (AVX-VNNI)
 *                                     and EVEX (AVX512-VNNI + VL) encodings
 * avx512   arch/x86/quant_avx512.c    512-bit, AVX-512 F/BW/VL/DQ/VNNI
 * neon     arch/arm/quant_neon.c      aarch64 Advanced SIMD
 * dotprod  arch/arm/quant_neon.c      the same source with SDOT (ARMv8.2-A dotprod)
 * i8mm     (none: the dotprod rows) */
#ifndef ROTKV_QUANT_ARCH_H
#define ROTKV_QUANT_ARCH_H

#include "quant.h"

extern const quant_kernels quant_kernels_scalar[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_avx2[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_avxvnni_vex[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_avxvnni_evex[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_avx512[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_neon[GGML_TYPE_COUNT];
extern const quant_kernels quant_kernels_dotprod[GGML_TYPE_COUNT];

/* The AVX2 activation quantizer to q8_0, shared by the VNNI levels' rows. */
void quant_from_float_q8_0_avx2(const float *src, void *dst, int64_t n);
/* The AVX2 dot and tiles of q4_K / q6_K: the VNNI levels' rows of those types
 * use them for rows that are not repacked. */
float quant_avx2_q4_K_dot(const void *row, const void *act, int64_t n);
float quant_avx2_q6_K_dot(const void *row, const void *act, int64_t n);
void quant_avx2_q4_K_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, float *y,
                          size_t ys);
void quant_avx2_q6_K_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, float *y,
                          size_t ys);

#endif
