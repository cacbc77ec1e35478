/* quant_blocks.h — internal to quant.c and quant_avx2.c: ggml's block
 * layouts, the small helpers both read them with, and the hook through which
 * quant.c finds the AVX2 kernels. */
#ifndef ROTKV_QUANT_BLOCKS_H
#define ROTKV_QUANT_BLOCKS_H

#include <stdint.h>
#include <string.h>

#include "quant.h"

/* ------------------------------------------------------------------------ */
/* Block layouts (identical to ggml's ggml-common.h)                         */
/* ------------------------------------------------------------------------ */

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_K 256 /* super-block size of the K-quants */

typedef uint16_t f16_t; /* IEEE half, stored little-endian like all fields */

/* q4_0: x = (q - 8) * d. qs[j] holds element j in its low nibble and element
 * j + 16 in its high nibble. */
typedef struct {
    f16_t d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");

/* q4_1: x = q * d + m, nibbles as in q4_0. */
typedef struct {
    f16_t d;
    f16_t m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");

/* q5_0: x = (q - 16) * d with 5-bit q. Low 4 bits as in q4_0; bit 4 of
 * element j is bit j of the little-endian 32-bit word qh. */
typedef struct {
    f16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");

/* q5_1: x = q * d + m, bits as in q5_0. */
typedef struct {
    f16_t d;
    f16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");

/* q8_0: x = q * d. */
typedef struct {
    f16_t d;
    int8_t qs[QK8_0];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");

/* q8_1: like q8_0 plus s = d * sum(qs). An activation format only: the
 * activations of q4_1 / q5_1 dot products (s carries the offset term m). */
typedef struct {
    f16_t d;
    f16_t s;
    int8_t qs[QK8_1];
} block_q8_1;
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");

/* q2_K: 16 sub-blocks of 16, x = d * sc * q - dmin * m with 2-bit q and 4-bit
 * sc (low nibble of scales[i]) and m (high nibble). For the half h (0, 1)
 * of the super-block, byte qs[32h + b] holds element 128h + 32k + b in bits
 * 2k..2k+1 (k = 0..3). Sub-block i covers elements 16i..16i+15. */
typedef struct {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    f16_t d;
    f16_t dmin;
} block_q2_K;
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");

/* q3_K: 16 sub-blocks of 16, x = d * (sc - 32) * (q - 4) with 3-bit q.
 * The low 2 bits of q are packed exactly like q2_K's qs; the high bit of
 * element e is bit e/32 of hmask[e % 32]. The 16 6-bit scales are packed in
 * 12 bytes: low 4 bits of scale i in the low nibble of scales[i] (i < 8) or
 * the high nibble of scales[i - 8] (i >= 8); high 2 bits in scales[8 + i%4]
 * at bit 2*(i/4). */
typedef struct {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    f16_t d;
} block_q3_K;
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");

/* q4_K: 8 sub-blocks of 32, x = d * sc * q - dmin * m with 4-bit q and 6-bit
 * sc, m (packing in kquant_scale_min). Elements come in 4 chunks of 64:
 * chunk c uses bytes qs[32c .. 32c+31]; the low nibbles are sub-block 2c,
 * the high nibbles sub-block 2c + 1. */
typedef struct {
    f16_t d;
    f16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} block_q4_K;
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");

/* q5_K: q4_K plus a 5th bit: bit 4 of element e is bit e/32 of qh[e % 32]. */
typedef struct {
    f16_t d;
    f16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");

/* q6_K: 16 sub-blocks of 16, x = d * sc * (q - 32) with 6-bit q and int8 sc.
 * Per half h (128 elements), element 128h + 32k + l (k = 0..3, l = 0..31):
 * low 4 bits in ql[64h + l + 32*(k & 1)], low nibble for k < 2, high nibble
 * for k >= 2; high 2 bits in qh[32h + l] at bit 2k. */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    f16_t d;
} block_q6_K;
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

/* q8_K: activation format of the K-quant dot products. bsums[i] = sum of the
 * codes qs[16i .. 16i+15], for the sub-block minimums / code offsets. */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

/* iq4_nl: x = d * kvalues_iq4nl[q], nibbles as in q4_0. */
typedef struct {
    f16_t d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;
_Static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl size");

/* The 16 non-linear levels of iq4_nl (ggml's kvalues_iq4nl). */
static const int8_t kvalues_iq4nl[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

/* mxfp4 (OCP microscaling FP4, gpt-oss's expert weights): 32 e2m1 values
 * sharing one power-of-two scale e (E8M0); nibbles as in q4_0. ggml stores the
 * levels doubled (kvalues_mxfp4) and halves the scale: x = kvalues_mxfp4[q] *
 * 2^(e - 128). */
#define QK_MXFP4 32
typedef struct {
    uint8_t e;
    uint8_t qs[QK_MXFP4 / 2];
} block_mxfp4;
_Static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 size");

static const int8_t kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 2^(e - 128) as ggml's GGML_E8M0_TO_FP32_HALF computes it (subnormal for e < 2). */
static inline float e8m0_to_fp32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Shared helpers                                                            */
/* ------------------------------------------------------------------------ */

/* 6-bit scale and min of sub-block j (0..7) of q4_K / q5_K. Layout of the 12
 * bytes:
 *   bytes 0..3 : bits 0-5 scale[0..3], bits 6-7 = bits 4-5 of scale[4..7]
 *   bytes 4..7 : bits 0-5 min[0..3],   bits 6-7 = bits 4-5 of min[4..7]
 *   bytes 8..11: low nibble = bits 0-3 of scale[4..7],
 *                high nibble = bits 0-3 of min[4..7]                        */
static inline void kquant_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        *mn = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Signed scale (-32..31) of sub-block i (0..15) of q3_K, see block_q3_K. */
static inline int q3k_scale(const uint8_t *s, int i) {
    const int lo = i < 8 ? (s[i] & 0x0F) : (s[i - 8] >> 4);
    const int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
    return (lo | (hi << 4)) - 32;
}

static inline uint32_t load_qh32(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

/* The AVX2 kernels of a type (quant_avx2.c), or NULL. Only call after
 * cpu_isa_supported(CPU_ISA_AVX2). */
const quant_kernels *quant_avx2_kernels(uint32_t type);

#endif
