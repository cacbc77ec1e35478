/* quant.c — ggml weight types: block layouts, dequantization, f32 dot
 * products and reference quantizers.
 *
 * Everything here is plain scalar C and serves as the reference for any
 * vectorised variants added later.
 *
 * Numerics:
 *  - dequantize_row_* evaluate exactly the same float expressions, in the same
 *    order, as ggml's scalar dequantize_row_* so the outputs are bit-identical
 *    as long as the compiler does not contract a*b+c into an FMA (gcc in ISO C
 *    mode, as this project builds, does not).
 *  - vec_dot_f32_* work directly on the packed codes (sum of code*x per
 *    sub-block, then one multiply by the sub-block scale), accumulating in
 *    float with one partial sum per (sub-)block. They are therefore an
 *    independent second reading of each layout; tests compare them against
 *    dequantize-then-dot.
 *  - quantize_row_* reproduce ggml's quantize_row_*_ref rounding bit for bit
 *    (see the notes on iq4_nl below).
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "fp16.h"

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

/* q8_1: like q8_0 plus s = d * sum(qs). Only an activation format in ggml;
 * listed for its size, not read here. */
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

/* q8_K: activation format of the K-quant dot products; listed for its size. */
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

/* Dot product of n floats, summed in chunks of 32 (one float partial sum per
 * chunk) — the "block" structure of the unquantized types. */
static float dot_f32_chunked(const float *a, const float *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += 32) {
        const int64_t end = n - i < 32 ? n : i + 32;
        float part = 0.0f;
        for (int64_t j = i; j < end; j++) part += a[j] * x[j];
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* F32, F16, BF16                                                            */
/* ------------------------------------------------------------------------ */

static void dequantize_row_f32(const void *src, float *dst, int64_t n) {
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof(float));
}

static float vec_dot_f32_f32(const void *row, const float *x, int64_t n) {
    return dot_f32_chunked((const float *)row, x, n);
}

static void quantize_row_f32(const float *src, void *dst, int64_t n) {
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof(float));
}

static void dequantize_row_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = (const uint16_t *)src;
    for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_fp32(h[i]);
}

static float vec_dot_f32_f16(const void *row, const float *x, int64_t n) {
    const uint16_t *h = (const uint16_t *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += 32) {
        const int64_t end = n - i < 32 ? n : i + 32;
        float part = 0.0f;
        for (int64_t j = i; j < end; j++) part += fp16_to_fp32(h[j]) * x[j];
        sum += part;
    }
    return sum;
}

static void quantize_row_f16(const float *src, void *dst, int64_t n) {
    uint16_t *h = (uint16_t *)dst;
    for (int64_t i = 0; i < n; i++) h[i] = fp32_to_fp16(src[i]);
}

static void dequantize_row_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = (const uint16_t *)src;
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(h[i]);
}

static float vec_dot_f32_bf16(const void *row, const float *x, int64_t n) {
    const uint16_t *h = (const uint16_t *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i += 32) {
        const int64_t end = n - i < 32 ? n : i + 32;
        float part = 0.0f;
        for (int64_t j = i; j < end; j++) part += bf16_to_fp32(h[j]) * x[j];
        sum += part;
    }
    return sum;
}

/* ggml_fp32_to_bf16_row_ref: round to nearest even, NaN kept quiet. */
static void quantize_row_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *h = (uint16_t *)dst;
    for (int64_t i = 0; i < n; i++) h[i] = fp32_to_bf16(src[i]);
}

/* ------------------------------------------------------------------------ */
/* Q4_0                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *b = (const block_q4_0 *)src;
    for (int64_t i = 0; i < n / QK4_0; i++, b++, dst += QK4_0) {
        const float d = fp16_to_fp32(b->d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int lo = (b->qs[j] & 0x0F) - 8;
            const int hi = (b->qs[j] >> 4) - 8;
            dst[j] = lo * d;
            dst[j + QK4_0 / 2] = hi * d;
        }
    }
}

static float vec_dot_f32_q4_0(const void *row, const float *x, int64_t n) {
    const block_q4_0 *b = (const block_q4_0 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++, b++, x += QK4_0) {
        float part = 0.0f;
        for (int j = 0; j < QK4_0 / 2; j++) {
            part += (float)((b->qs[j] & 0x0F) - 8) * x[j];
            part += (float)((b->qs[j] >> 4) - 8) * x[j + QK4_0 / 2];
        }
        sum += fp16_to_fp32(b->d) * part;
    }
    return sum;
}

/* ggml quantize_row_q4_0_ref: the element of largest magnitude (with its sign)
 * maps to code 0, i.e. d = max / -8; codes are truncated after adding 8.5
 * (round half up) and clamped to 15. */
static void quantize_row_q4_0(const float *src, void *dst, int64_t n) {
    block_q4_0 *b = (block_q4_0 *)dst;
    for (int64_t i = 0; i < n / QK4_0; i++, b++, src += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; j++) {
            if (amax < fabsf(src[j])) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int8_t t0 = (int8_t)(src[j] * id + 8.5f);
            const int8_t t1 = (int8_t)(src[j + QK4_0 / 2] * id + 8.5f);
            const uint8_t q0 = (uint8_t)(t0 < 15 ? t0 : 15);
            const uint8_t q1 = (uint8_t)(t1 < 15 ? t1 : 15);
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Q4_1                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *b = (const block_q4_1 *)src;
    for (int64_t i = 0; i < n / QK4_1; i++, b++, dst += QK4_1) {
        const float d = fp16_to_fp32(b->d);
        const float m = fp16_to_fp32(b->m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int lo = b->qs[j] & 0x0F;
            const int hi = b->qs[j] >> 4;
            dst[j] = lo * d + m;
            dst[j + QK4_1 / 2] = hi * d + m;
        }
    }
}

static float vec_dot_f32_q4_1(const void *row, const float *x, int64_t n) {
    const block_q4_1 *b = (const block_q4_1 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++, b++, x += QK4_1) {
        float qx = 0.0f, sx = 0.0f;
        for (int j = 0; j < QK4_1 / 2; j++) {
            qx += (float)(b->qs[j] & 0x0F) * x[j];
            qx += (float)(b->qs[j] >> 4) * x[j + QK4_1 / 2];
            sx += x[j] + x[j + QK4_1 / 2];
        }
        sum += fp16_to_fp32(b->d) * qx + fp16_to_fp32(b->m) * sx;
    }
    return sum;
}

/* ggml quantize_row_q4_1_ref: d = (max - min) / 15, m = min, codes
 * truncate((x - min) / d + 0.5) clamped to 15. */
static void quantize_row_q4_1(const float *src, void *dst, int64_t n) {
    block_q4_1 *b = (block_q4_1 *)dst;
    for (int64_t i = 0; i < n / QK4_1; i++, b++, src += QK4_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK4_1; j++) {
            if (src[j] < min) min = src[j];
            if (src[j] > max) max = src[j];
        }
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = fp32_to_fp16(d);
        b->m = fp32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int8_t t0 = (int8_t)((src[j] - min) * id + 0.5f);
            const int8_t t1 = (int8_t)((src[j + QK4_1 / 2] - min) * id + 0.5f);
            const uint8_t q0 = (uint8_t)(t0 < 15 ? t0 : 15);
            const uint8_t q1 = (uint8_t)(t1 < 15 ? t1 : 15);
            b->qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Q5_0                                                                      */
/* ------------------------------------------------------------------------ */

static inline uint32_t load_qh32(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | ((uint32_t)qh[1] << 8) | ((uint32_t)qh[2] << 16) | ((uint32_t)qh[3] << 24);
}

static inline void store_qh32(uint8_t qh[4], uint32_t v) {
    qh[0] = (uint8_t)v;
    qh[1] = (uint8_t)(v >> 8);
    qh[2] = (uint8_t)(v >> 16);
    qh[3] = (uint8_t)(v >> 24);
}

static void dequantize_row_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *b = (const block_q5_0 *)src;
    for (int64_t i = 0; i < n / QK5_0; i++, b++, dst += QK5_0) {
        const float d = fp16_to_fp32(b->d);
        const uint32_t qh = load_qh32(b->qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int lo = ((b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - 16;
            const int hi = ((b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            dst[j] = lo * d;
            dst[j + QK5_0 / 2] = hi * d;
        }
    }
}

static float vec_dot_f32_q5_0(const void *row, const float *x, int64_t n) {
    const block_q5_0 *b = (const block_q5_0 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_0; i++, b++, x += QK5_0) {
        const uint32_t qh = load_qh32(b->qh);
        float part = 0.0f;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int lo = ((b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - 16;
            const int hi = ((b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            part += (float)lo * x[j];
            part += (float)hi * x[j + QK5_0 / 2];
        }
        sum += fp16_to_fp32(b->d) * part;
    }
    return sum;
}

/* ggml quantize_row_q5_0_ref: as q4_0 with d = max / -16, offset 16.5 and
 * clamp to 31; bit 4 of each code goes to qh. */
static void quantize_row_q5_0(const float *src, void *dst, int64_t n) {
    block_q5_0 *b = (block_q5_0 *)dst;
    for (int64_t i = 0; i < n / QK5_0; i++, b++, src += QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK5_0; j++) {
            if (amax < fabsf(src[j])) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        const float d = max / -16;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int8_t t0 = (int8_t)(src[j] * id + 16.5f);
            const int8_t t1 = (int8_t)(src[j + QK5_0 / 2] * id + 16.5f);
            const uint8_t q0 = (uint8_t)(t0 < 31 ? t0 : 31);
            const uint8_t q1 = (uint8_t)(t1 < 31 ? t1 : 31);
            b->qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
        }
        store_qh32(b->qh, qh);
    }
}

/* ------------------------------------------------------------------------ */
/* Q5_1                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *b = (const block_q5_1 *)src;
    for (int64_t i = 0; i < n / QK5_1; i++, b++, dst += QK5_1) {
        const float d = fp16_to_fp32(b->d);
        const float m = fp16_to_fp32(b->m);
        const uint32_t qh = load_qh32(b->qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int lo = (b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            const int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = lo * d + m;
            dst[j + QK5_1 / 2] = hi * d + m;
        }
    }
}

static float vec_dot_f32_q5_1(const void *row, const float *x, int64_t n) {
    const block_q5_1 *b = (const block_q5_1 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++, b++, x += QK5_1) {
        const uint32_t qh = load_qh32(b->qh);
        float qx = 0.0f, sx = 0.0f;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int lo = (b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            const int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            qx += (float)lo * x[j];
            qx += (float)hi * x[j + QK5_1 / 2];
            sx += x[j] + x[j + QK5_1 / 2];
        }
        sum += fp16_to_fp32(b->d) * qx + fp16_to_fp32(b->m) * sx;
    }
    return sum;
}

/* ggml quantize_row_q5_1_ref: d = (max - min) / 31, m = min, codes
 * truncate((x - min) / d + 0.5) with no clamp (as in ggml). */
static void quantize_row_q5_1(const float *src, void *dst, int64_t n) {
    block_q5_1 *b = (block_q5_1 *)dst;
    for (int64_t i = 0; i < n / QK5_1; i++, b++, src += QK5_1) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < QK5_1; j++) {
            if (src[j] < min) min = src[j];
            if (src[j] > max) max = src[j];
        }
        const float d = (max - min) / 31;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = fp32_to_fp16(d);
        b->m = fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const uint8_t q0 = (uint8_t)((src[j] - min) * id + 0.5f);
            const uint8_t q1 = (uint8_t)((src[j + QK5_1 / 2] - min) * id + 0.5f);
            b->qs[j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
        }
        store_qh32(b->qh, qh);
    }
}

/* ------------------------------------------------------------------------ */
/* Q8_0                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *b = (const block_q8_0 *)src;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, dst += QK8_0) {
        const float d = fp16_to_fp32(b->d);
        for (int j = 0; j < QK8_0; j++) dst[j] = b->qs[j] * d;
    }
}

static float vec_dot_f32_q8_0(const void *row, const float *x, int64_t n) {
    const block_q8_0 *b = (const block_q8_0 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, x += QK8_0) {
        float part = 0.0f;
        for (int j = 0; j < QK8_0; j++) part += (float)b->qs[j] * x[j];
        sum += fp16_to_fp32(b->d) * part;
    }
    return sum;
}

/* ggml quantize_row_q8_0_ref: d = amax / 127, codes roundf(x / d) (half away
 * from zero). */
static void quantize_row_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = (block_q8_0 *)dst;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, src += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b->d = fp32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) b->qs[j] = (int8_t)roundf(src[j] * id);
    }
}

/* ------------------------------------------------------------------------ */
/* Q2_K                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q2_K(const void *src, float *dst, int64_t n) {
    const block_q2_K *b = (const block_q2_K *)src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        int is = 0; /* sub-block index, advances every 16 outputs */
        for (int half = 0; half < 2; half++) {
            const uint8_t *q = b->qs + 32 * half;
            for (int shift = 0; shift < 8; shift += 2) {
                for (int g = 0; g < 2; g++, is++) { /* bytes 0..15, then 16..31 */
                    const float dl = d * (b->scales[is] & 0x0F);
                    const float ml = dmin * (b->scales[is] >> 4);
                    for (int l = 0; l < 16; l++) *dst++ = dl * ((q[16 * g + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

static float vec_dot_f32_q2_K(const void *row, const float *x, int64_t n) {
    const block_q2_K *b = (const block_q2_K *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        float part = 0.0f;
        for (int sb = 0; sb < 16; sb++, x += 16) {
            /* sub-block sb = 8*half + 2*k + g: bits 2k of bytes 32*half + 16*g + l */
            const uint8_t *q = b->qs + 32 * (sb / 8) + 16 * (sb % 2);
            const int shift = 2 * ((sb % 8) / 2);
            float qx = 0.0f, sx = 0.0f;
            for (int l = 0; l < 16; l++) {
                qx += (float)((q[l] >> shift) & 3) * x[l];
                sx += x[l];
            }
            part += d * (float)(b->scales[sb] & 0x0F) * qx - dmin * (float)(b->scales[sb] >> 4) * sx;
        }
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Q3_K                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q3_K(const void *src, float *dst, int64_t n) {
    const block_q3_K *b = (const block_q3_K *)src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        int is = 0;
        int hbit = 0; /* bit of hmask used by the current 32 elements */
        for (int half = 0; half < 2; half++) {
            const uint8_t *q = b->qs + 32 * half;
            for (int shift = 0; shift < 8; shift += 2, hbit++) {
                for (int g = 0; g < 2; g++, is++) {
                    const float dl = d * q3k_scale(b->scales, is);
                    for (int l = 0; l < 16; l++) {
                        const int lo = (q[16 * g + l] >> shift) & 3;
                        const int high_set = (b->hmask[16 * g + l] >> hbit) & 1;
                        *dst++ = dl * (lo - (high_set ? 0 : 4));
                    }
                }
            }
        }
    }
}

static float vec_dot_f32_q3_K(const void *row, const float *x, int64_t n) {
    const block_q3_K *b = (const block_q3_K *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        float part = 0.0f;
        for (int sb = 0; sb < 16; sb++, x += 16) {
            const uint8_t *q = b->qs + 32 * (sb / 8) + 16 * (sb % 2);
            const uint8_t *hm = b->hmask + 16 * (sb % 2);
            const int k = (sb % 8) / 2;  /* 2-bit field within the byte */
            const int hbit = sb / 2;     /* == element index / 32 */
            float qx = 0.0f;
            for (int l = 0; l < 16; l++) {
                const int v = (((q[l] >> (2 * k)) & 3) | (((hm[l] >> hbit) & 1) << 2)) - 4;
                qx += (float)v * x[l];
            }
            part += d * (float)q3k_scale(b->scales, sb) * qx;
        }
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Q4_K                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q4_K(const void *src, float *dst, int64_t n) {
    const block_q4_K *b = (const block_q4_K *)src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        for (int c = 0; c < 4; c++) { /* 64-element chunks */
            const uint8_t *q = b->qs + 32 * c;
            uint8_t sc, mn;
            kquant_scale_min(b->scales, 2 * c, &sc, &mn);
            const float d1 = d * sc, m1 = dmin * mn;
            kquant_scale_min(b->scales, 2 * c + 1, &sc, &mn);
            const float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (q[l] & 0x0F) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

static float vec_dot_f32_q4_K(const void *row, const float *x, int64_t n) {
    const block_q4_K *b = (const block_q4_K *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        float part = 0.0f;
        for (int sb = 0; sb < 8; sb++, x += 32) {
            const uint8_t *q = b->qs + 32 * (sb / 2);
            const int shift = 4 * (sb % 2); /* low nibbles: even sub-block */
            uint8_t sc, mn;
            kquant_scale_min(b->scales, sb, &sc, &mn);
            float qx = 0.0f, sx = 0.0f;
            for (int l = 0; l < 32; l++) {
                qx += (float)((q[l] >> shift) & 0x0F) * x[l];
                sx += x[l];
            }
            part += d * (float)sc * qx - dmin * (float)mn * sx;
        }
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Q5_K                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q5_K(const void *src, float *dst, int64_t n) {
    const block_q5_K *b = (const block_q5_K *)src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *ql = b->qs + 32 * c;
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            uint8_t sc, mn;
            kquant_scale_min(b->scales, 2 * c, &sc, &mn);
            const float d1 = d * sc, m1 = dmin * mn;
            kquant_scale_min(b->scales, 2 * c + 1, &sc, &mn);
            const float d2 = d * sc, m2 = dmin * mn;
            for (int l = 0; l < 32; l++) *dst++ = d1 * ((ql[l] & 0x0F) + (b->qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * ((ql[l] >> 4) + (b->qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

static float vec_dot_f32_q5_K(const void *row, const float *x, int64_t n) {
    const block_q5_K *b = (const block_q5_K *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        const float dmin = fp16_to_fp32(b->dmin);
        float part = 0.0f;
        for (int sb = 0; sb < 8; sb++, x += 32) {
            const uint8_t *ql = b->qs + 32 * (sb / 2);
            const int shift = 4 * (sb % 2);
            uint8_t sc, mn;
            kquant_scale_min(b->scales, sb, &sc, &mn);
            float qx = 0.0f, sx = 0.0f;
            for (int l = 0; l < 32; l++) {
                const int v = ((ql[l] >> shift) & 0x0F) | (((b->qh[l] >> sb) & 1) << 4);
                qx += (float)v * x[l];
                sx += x[l];
            }
            part += d * (float)sc * qx - dmin * (float)mn * sx;
        }
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* Q6_K                                                                      */
/* ------------------------------------------------------------------------ */

static void dequantize_row_q6_K(const void *src, float *dst, int64_t n) {
    const block_q6_K *b = (const block_q6_K *)src;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        for (int half = 0; half < 2; half++, dst += 128) {
            const uint8_t *ql = b->ql + 64 * half;
            const uint8_t *qh = b->qh + 32 * half;
            const int8_t *sc = b->scales + 8 * half;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l + 0] = d * sc[is + 0] * q0;
                dst[l + 32] = d * sc[is + 2] * q1;
                dst[l + 64] = d * sc[is + 4] * q2;
                dst[l + 96] = d * sc[is + 6] * q3;
            }
        }
    }
}

static float vec_dot_f32_q6_K(const void *row, const float *x, int64_t n) {
    const block_q6_K *b = (const block_q6_K *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, b++) {
        const float d = fp16_to_fp32(b->d);
        float part = 0.0f;
        for (int sb = 0; sb < 16; sb++, x += 16) {
            /* sub-block sb = 8*half + 2*k + (l >= 16) */
            const int half = sb / 8, k = (sb % 8) / 2, l0 = 16 * (sb % 2);
            const uint8_t *ql = b->ql + 64 * half + 32 * (k & 1) + l0;
            const uint8_t *qh = b->qh + 32 * half + l0;
            const int nshift = 4 * (k >> 1);
            float qx = 0.0f;
            for (int l = 0; l < 16; l++) {
                const int v = (((ql[l] >> nshift) & 0x0F) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
                qx += (float)v * x[l];
            }
            part += d * (float)b->scales[sb] * qx;
        }
        sum += part;
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* IQ4_NL                                                                    */
/* ------------------------------------------------------------------------ */

static void dequantize_row_iq4_nl(const void *src, float *dst, int64_t n) {
    const block_iq4_nl *b = (const block_iq4_nl *)src;
    for (int64_t i = 0; i < n / QK4_NL; i++, b++, dst += QK4_NL) {
        const float d = fp16_to_fp32(b->d);
        for (int j = 0; j < QK4_NL / 2; j++) {
            dst[j] = d * kvalues_iq4nl[b->qs[j] & 0x0F];
            dst[j + QK4_NL / 2] = d * kvalues_iq4nl[b->qs[j] >> 4];
        }
    }
}

static float vec_dot_f32_iq4_nl(const void *row, const float *x, int64_t n) {
    const block_iq4_nl *b = (const block_iq4_nl *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_NL; i++, b++, x += QK4_NL) {
        float part = 0.0f;
        for (int j = 0; j < QK4_NL / 2; j++) {
            part += (float)kvalues_iq4nl[b->qs[j] & 0x0F] * x[j];
            part += (float)kvalues_iq4nl[b->qs[j] >> 4] * x[j + QK4_NL / 2];
        }
        sum += fp16_to_fp32(b->d) * part;
    }
    return sum;
}

/* Index of the level in kvalues_iq4nl nearest to v; a value exactly halfway
 * between two levels takes the upper one. Counting the midpoints at or below
 * v, compared as 2v >= lo + hi, is exact (2v is exact, lo + hi an integer)
 * and gives the same answer as ggml's best_index_int8. */
static inline int iq4nl_nearest(float v) {
    const float v2 = v + v;
    int idx = 0;
    for (int k = 1; k < 16; k++) {
        if (v2 >= (float)(kvalues_iq4nl[k - 1] + kvalues_iq4nl[k])) idx = k;
    }
    return idx;
}

/* ggml quantize_row_iq4_nl_ref (quantize_row_iq4_nl_impl with one block of 32,
 * no importance weights, ntry = -1), which is also what ggml's CPU backend
 * uses to write an iq4_nl KV cache:
 *   - weights w = x^2; max = the element of largest magnitude (first one on
 *     ties); an all-(near-)zero block (amax < 1e-15) gets d = 0, codes 0;
 *   - initial scale d0 = max / kvalues[0] = max / -127 so that max lands on
 *     level -127; codes L = nearest level to x / d0;
 *   - final scale = weighted least squares sum(w q x) / sum(w q^2) for those
 *     codes, stored as f16. Codes are not re-chosen for the final scale.
 * The scale search over itry in [-ntry, ntry] and the re-quantization that
 * ggml's quantize_iq4_nl performs with ntry = 7 (llama-quantize's path for
 * model files) are *not* part of the _ref function and are therefore not
 * done here.
 * Bit-exactness: the codes are exact; the float sums are accumulated in ggml's
 * order and grouping, so d matches ggml unless one of the two builds fuses
 * w*q*x + sum into FMAs (e.g. ggml built with -march=native in GNU C mode),
 * which can move d by one f16 ulp in rare cases. */
static void quantize_row_iq4_nl(const float *src, void *dst, int64_t n) {
    block_iq4_nl *b = (block_iq4_nl *)dst;
    for (int64_t i = 0; i < n / QK4_NL; i++, b++, src += QK4_NL) {
        const float *xb = src;
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_NL; j++) {
            const float ax = fabsf(xb[j]);
            if (ax > amax) {
                amax = ax;
                max = xb[j];
            }
        }
        uint8_t L[QK4_NL];
        float d = 0.0f;
        if (amax < 1e-15f) {
            memset(L, 0, sizeof(L));
        } else {
            const float id = 1.0f / (max / (float)kvalues_iq4nl[0]);
            float sumqx = 0.0f, sumq2 = 0.0f;
            for (int j = 0; j < QK4_NL; j++) {
                const int l = iq4nl_nearest(id * xb[j]);
                L[j] = (uint8_t)l;
                const float q = (float)kvalues_iq4nl[l];
                const float w = xb[j] * xb[j];
                sumqx += w * q * xb[j];
                sumq2 += w * q * q;
            }
            d = sumq2 > 0.0f ? sumqx / sumq2 : 0.0f;
        }
        b->d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_NL / 2; j++) b->qs[j] = (uint8_t)(L[j] | (L[j + QK4_NL / 2] << 4));
    }
}

/* ------------------------------------------------------------------------ */
/* Traits table                                                              */
/* ------------------------------------------------------------------------ */

#define TRAITS(nm, bs, sz, deq, dot, qnt) \
    { .name = (nm), .blck_size = (bs), .type_size = (sz), .supported = true, \
      .dequantize_row = (deq), .vec_dot_f32 = (dot), .quantize_row = (qnt) }

static const quant_traits k_traits[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = TRAITS("f32", 1, sizeof(float), dequantize_row_f32, vec_dot_f32_f32, quantize_row_f32),
    [GGML_TYPE_F16] = TRAITS("f16", 1, sizeof(uint16_t), dequantize_row_f16, vec_dot_f32_f16, quantize_row_f16),
    [GGML_TYPE_BF16] = TRAITS("bf16", 1, sizeof(uint16_t), dequantize_row_bf16, vec_dot_f32_bf16, quantize_row_bf16),
    [GGML_TYPE_Q4_0] = TRAITS("q4_0", QK4_0, sizeof(block_q4_0), dequantize_row_q4_0, vec_dot_f32_q4_0, quantize_row_q4_0),
    [GGML_TYPE_Q4_1] = TRAITS("q4_1", QK4_1, sizeof(block_q4_1), dequantize_row_q4_1, vec_dot_f32_q4_1, quantize_row_q4_1),
    [GGML_TYPE_Q5_0] = TRAITS("q5_0", QK5_0, sizeof(block_q5_0), dequantize_row_q5_0, vec_dot_f32_q5_0, quantize_row_q5_0),
    [GGML_TYPE_Q5_1] = TRAITS("q5_1", QK5_1, sizeof(block_q5_1), dequantize_row_q5_1, vec_dot_f32_q5_1, quantize_row_q5_1),
    [GGML_TYPE_Q8_0] = TRAITS("q8_0", QK8_0, sizeof(block_q8_0), dequantize_row_q8_0, vec_dot_f32_q8_0, quantize_row_q8_0),
    [GGML_TYPE_Q2_K] = TRAITS("q2_K", QK_K, sizeof(block_q2_K), dequantize_row_q2_K, vec_dot_f32_q2_K, NULL),
    [GGML_TYPE_Q3_K] = TRAITS("q3_K", QK_K, sizeof(block_q3_K), dequantize_row_q3_K, vec_dot_f32_q3_K, NULL),
    [GGML_TYPE_Q4_K] = TRAITS("q4_K", QK_K, sizeof(block_q4_K), dequantize_row_q4_K, vec_dot_f32_q4_K, NULL),
    [GGML_TYPE_Q5_K] = TRAITS("q5_K", QK_K, sizeof(block_q5_K), dequantize_row_q5_K, vec_dot_f32_q5_K, NULL),
    [GGML_TYPE_Q6_K] = TRAITS("q6_K", QK_K, sizeof(block_q6_K), dequantize_row_q6_K, vec_dot_f32_q6_K, NULL),
    [GGML_TYPE_IQ4_NL] = TRAITS("iq4_nl", QK4_NL, sizeof(block_iq4_nl), dequantize_row_iq4_nl, vec_dot_f32_iq4_nl,
                                quantize_row_iq4_nl),
    /* Activation-only formats of ggml's dot products: known sizes, not read. */
    [GGML_TYPE_Q8_1] = { .name = "q8_1", .blck_size = QK8_1, .type_size = sizeof(block_q8_1), .supported = false },
    [GGML_TYPE_Q8_K] = { .name = "q8_K", .blck_size = QK_K, .type_size = sizeof(block_q8_K), .supported = false },
};

const quant_traits *quant_get_traits(uint32_t type) {
    if (type >= GGML_TYPE_COUNT || k_traits[type].name == NULL) return NULL;
    return &k_traits[type];
}

const char *quant_type_name(uint32_t type) {
    const quant_traits *t = quant_get_traits(type);
    return t ? t->name : "unknown";
}

size_t quant_row_size(uint32_t type, int64_t n) {
    const quant_traits *t = quant_get_traits(type);
    if (!t || n < 0 || n % t->blck_size != 0) return 0;
    const uint64_t blocks = (uint64_t)(n / t->blck_size);
    if (blocks > SIZE_MAX / t->type_size) return 0;
    return (size_t)blocks * t->type_size;
}
