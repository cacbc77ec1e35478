/* quant.c — ggml weight types: block layouts (quant_blocks.h),
 * dequantization, f32 dot products, reference quantizers, and the matmul
 * kernels of quant.h: activation quantizers (q8_0, q8_1, q8_K) and dot
 * products of every weight type with its activation type.
 *
 * Everything here is plain scalar C and is the reference for the twins of
 * each ISA level in src/arch/x86/ and src/arch/arm/ (quant_arch.h); quant_kernels_of() picks a
 * level's row once per process (quant_select_kernels).
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
#include <pthread.h>
#include <string.h>

#include "fp16.h"
#include "quant_blocks.h"
#include "arch/quant_arch.h"

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
/* MXFP4 (scalar reference only: every ISA level falls back to these rows)   */
/* ------------------------------------------------------------------------ */

static void dequantize_row_mxfp4(const void *src, float *dst, int64_t n) {
    const block_mxfp4 *b = (const block_mxfp4 *)src;
    for (int64_t i = 0; i < n / QK_MXFP4; i++, b++, dst += QK_MXFP4) {
        const float d = e8m0_to_fp32_half(b->e);
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            dst[j] = d * kvalues_mxfp4[b->qs[j] & 0x0F];
            dst[j + QK_MXFP4 / 2] = d * kvalues_mxfp4[b->qs[j] >> 4];
        }
    }
}

static float vec_dot_f32_mxfp4(const void *row, const float *x, int64_t n) {
    const block_mxfp4 *b = (const block_mxfp4 *)row;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_MXFP4; i++, b++, x += QK_MXFP4) {
        float part = 0.0f;
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            part += (float)kvalues_mxfp4[b->qs[j] & 0x0F] * x[j];
            part += (float)kvalues_mxfp4[b->qs[j] >> 4] * x[j + QK_MXFP4 / 2];
        }
        sum += e8m0_to_fp32_half(b->e) * part;
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
/* Matmul activations: q8_0 / q8_1 / q8_K quantizers (scalar reference)      */
/* ------------------------------------------------------------------------ */

/* rintf rounds half to even under the default rounding mode, as the AVX2
 * twins' vcvtps2dq does, so both produce the same codes. */

/* x -> q8_0 activation blocks: d = amax / 127 stored as f16, codes
 * rint(x * 127 / amax) (the unrounded scale, as ggml's CPU kernels do). */
static void from_float_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = (block_q8_0 *)dst;
    for (int64_t i = 0; i < n / QK8_0; i++, b++, src += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        b->d = fp32_to_fp16(amax / 127.0f);
        for (int j = 0; j < QK8_0; j++) b->qs[j] = (int8_t)rintf(src[j] * id);
    }
}

/* As q8_0, plus s = d * sum(codes) (f32 product, stored as f16). */
static void from_float_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *b = (block_q8_1 *)dst;
    for (int64_t i = 0; i < n / QK8_1; i++, b++, src += QK8_1) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_1; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            b->qs[j] = (int8_t)rintf(src[j] * id);
            sum += b->qs[j];
        }
        b->d = fp32_to_fp16(d);
        b->s = fp32_to_fp16(d * (float)sum);
    }
}

/* ggml quantize_row_q8_K_ref: the element of largest magnitude (the first on
 * ties) with its sign gives iscale = -127 / max, codes rint(iscale * x)
 * capped at 127, d = 1 / iscale; an all-zero block is all zeros. */
static void from_float_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *b = (block_q8_K *)dst;
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            if (fabsf(src[j]) > amax) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        if (amax == 0.0f) {
            memset(b, 0, sizeof *b);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = (int)rintf(iscale * src[j]);
            b->qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < QK_K / 16; g++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += b->qs[16 * g + l];
            b->bsums[g] = (int16_t)sum;
        }
        b->d = 1.0f / iscale;
    }
}

/* ------------------------------------------------------------------------ */
/* Dot products with quantized activations (scalar reference)                */
/* ------------------------------------------------------------------------ */

/* Each block's codes are multiplied and summed exactly in integers; the float
 * part is one multiply-add per block (per super-block for the K-quants). */

static float vec_dot_q4_0_q8_0(const void *row, const void *act, int64_t n) {
    const block_q4_0 *x = (const block_q4_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++, x++, y++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((x->qs[j] & 0x0F) - 8) * y->qs[j];
            isum += ((x->qs[j] >> 4) - 8) * y->qs[j + QK4_0 / 2];
        }
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum;
    }
    return sum;
}

static float vec_dot_q4_1_q8_1(const void *row, const void *act, int64_t n) {
    const block_q4_1 *x = (const block_q4_1 *)row;
    const block_q8_1 *y = (const block_q8_1 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++, x++, y++) {
        int isum = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            isum += (x->qs[j] & 0x0F) * y->qs[j];
            isum += (x->qs[j] >> 4) * y->qs[j + QK4_1 / 2];
        }
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum + fp16_to_fp32(x->m) * fp16_to_fp32(y->s);
    }
    return sum;
}

static float vec_dot_q5_0_q8_0(const void *row, const void *act, int64_t n) {
    const block_q5_0 *x = (const block_q5_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_0; i++, x++, y++) {
        const uint32_t qh = load_qh32(x->qh);
        int isum = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int lo = ((x->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4)) - 16;
            const int hi = ((x->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
            isum += lo * y->qs[j] + hi * y->qs[j + QK5_0 / 2];
        }
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum;
    }
    return sum;
}

static float vec_dot_q5_1_q8_1(const void *row, const void *act, int64_t n) {
    const block_q5_1 *x = (const block_q5_1 *)row;
    const block_q8_1 *y = (const block_q8_1 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++, x++, y++) {
        const uint32_t qh = load_qh32(x->qh);
        int isum = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int lo = (x->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
            const int hi = (x->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            isum += lo * y->qs[j] + hi * y->qs[j + QK5_1 / 2];
        }
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum + fp16_to_fp32(x->m) * fp16_to_fp32(y->s);
    }
    return sum;
}

static float vec_dot_q8_0_q8_0(const void *row, const void *act, int64_t n) {
    const block_q8_0 *x = (const block_q8_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++, x++, y++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x->qs[j] * y->qs[j];
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum;
    }
    return sum;
}

static float vec_dot_iq4_nl_q8_0(const void *row, const void *act, int64_t n) {
    const block_iq4_nl *x = (const block_iq4_nl *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_NL; i++, x++, y++) {
        int isum = 0;
        for (int j = 0; j < QK4_NL / 2; j++) {
            isum += kvalues_iq4nl[x->qs[j] & 0x0F] * y->qs[j];
            isum += kvalues_iq4nl[x->qs[j] >> 4] * y->qs[j + QK4_NL / 2];
        }
        sum += fp16_to_fp32(x->d) * fp16_to_fp32(y->d) * (float)isum;
    }
    return sum;
}

/* as ggml_vec_dot_mxfp4_q8_0: (d_act * d_w) * the exact integer sum */
static float vec_dot_mxfp4_q8_0(const void *row, const void *act, int64_t n) {
    const block_mxfp4 *x = (const block_mxfp4 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_MXFP4; i++, x++, y++) {
        int isum = 0;
        for (int j = 0; j < QK_MXFP4 / 2; j++) {
            isum += kvalues_mxfp4[x->qs[j] & 0x0F] * y->qs[j];
            isum += kvalues_mxfp4[x->qs[j] >> 4] * y->qs[j + QK_MXFP4 / 2];
        }
        sum += fp16_to_fp32(y->d) * e8m0_to_fp32_half(x->e) * (float)isum;
    }
    return sum;
}

/* K-quants: sum over sub-blocks of scale * (codes . activation codes) in
 * integers, the minimums through the activation block sums (bsums). */

static float vec_dot_q2_K_q8_K(const void *row, const void *act, int64_t n) {
    const block_q2_K *x = (const block_q2_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const uint8_t *q = x->qs + 32 * (sb / 8) + 16 * (sb % 2);
            const int shift = 2 * ((sb % 8) / 2);
            const int8_t *a = y->qs + 16 * sb;
            int s = 0;
            for (int l = 0; l < 16; l++) s += ((q[l] >> shift) & 3) * a[l];
            isum += (x->scales[sb] & 0x0F) * s;
            msum += (x->scales[sb] >> 4) * y->bsums[sb];
        }
        sum += y->d * fp16_to_fp32(x->d) * (float)isum - y->d * fp16_to_fp32(x->dmin) * (float)msum;
    }
    return sum;
}

static float vec_dot_q3_K_q8_K(const void *row, const void *act, int64_t n) {
    const block_q3_K *x = (const block_q3_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const uint8_t *q = x->qs + 32 * (sb / 8) + 16 * (sb % 2);
            const uint8_t *hm = x->hmask + 16 * (sb % 2);
            const int k = (sb % 8) / 2, hbit = sb / 2;
            const int8_t *a = y->qs + 16 * sb;
            int s = 0;
            for (int l = 0; l < 16; l++) s += ((((q[l] >> (2 * k)) & 3) | (((hm[l] >> hbit) & 1) << 2)) - 4) * a[l];
            isum += q3k_scale(x->scales, sb) * s;
        }
        sum += y->d * fp16_to_fp32(x->d) * (float)isum;
    }
    return sum;
}

static float vec_dot_q4_K_q8_K(const void *row, const void *act, int64_t n) {
    const block_q4_K *x = (const block_q4_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 8; sb++) {
            const uint8_t *q = x->qs + 32 * (sb / 2);
            const int shift = 4 * (sb % 2);
            const int8_t *a = y->qs + 32 * sb;
            uint8_t sc, mn;
            kquant_scale_min(x->scales, sb, &sc, &mn);
            int s = 0;
            for (int l = 0; l < 32; l++) s += ((q[l] >> shift) & 0x0F) * a[l];
            isum += sc * s;
            msum += mn * (y->bsums[2 * sb] + y->bsums[2 * sb + 1]);
        }
        sum += y->d * fp16_to_fp32(x->d) * (float)isum - y->d * fp16_to_fp32(x->dmin) * (float)msum;
    }
    return sum;
}

static float vec_dot_q5_K_q8_K(const void *row, const void *act, int64_t n) {
    const block_q5_K *x = (const block_q5_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 8; sb++) {
            const uint8_t *ql = x->qs + 32 * (sb / 2);
            const int shift = 4 * (sb % 2);
            const int8_t *a = y->qs + 32 * sb;
            uint8_t sc, mn;
            kquant_scale_min(x->scales, sb, &sc, &mn);
            int s = 0;
            for (int l = 0; l < 32; l++) s += (((ql[l] >> shift) & 0x0F) | (((x->qh[l] >> sb) & 1) << 4)) * a[l];
            isum += sc * s;
            msum += mn * (y->bsums[2 * sb] + y->bsums[2 * sb + 1]);
        }
        sum += y->d * fp16_to_fp32(x->d) * (float)isum - y->d * fp16_to_fp32(x->dmin) * (float)msum;
    }
    return sum;
}

static float vec_dot_q6_K_q8_K(const void *row, const void *act, int64_t n) {
    const block_q6_K *x = (const block_q6_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const int half = sb / 8, k = (sb % 8) / 2, l0 = 16 * (sb % 2);
            const uint8_t *ql = x->ql + 64 * half + 32 * (k & 1) + l0;
            const uint8_t *qh = x->qh + 32 * half + l0;
            const int nshift = 4 * (k >> 1);
            const int8_t *a = y->qs + 16 * sb;
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += ((((ql[l] >> nshift) & 0x0F) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32) * a[l];
            isum += x->scales[sb] * s;
        }
        sum += y->d * fp16_to_fp32(x->d) * (float)isum;
    }
    return sum;
}

/* f32 / f16 / bf16 weights keep f32 activations. */
static float vec_dot_f32_act(const void *row, const void *act, int64_t n) {
    return vec_dot_f32_f32(row, (const float *)act, n);
}
static float vec_dot_f16_act(const void *row, const void *act, int64_t n) {
    return vec_dot_f32_f16(row, (const float *)act, n);
}
static float vec_dot_bf16_act(const void *row, const void *act, int64_t n) {
    return vec_dot_f32_bf16(row, (const float *)act, n);
}

/* The scalar tiles are plain loops over vec_dot. */
#define SCALAR_TILE(dot)                                                                                   \
    static void dot##_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, \
                           float *y, size_t ys) {                                                          \
        for (int t = 0; t < nt; t++)                                                                       \
            for (int r = 0; r < nr; r++)                                                                   \
                y[(size_t)t * ys + r] = dot((const uint8_t *)w + r * ws, (const uint8_t *)a + t * as, n);  \
    }
SCALAR_TILE(vec_dot_f32_act)
SCALAR_TILE(vec_dot_f16_act)
SCALAR_TILE(vec_dot_bf16_act)
SCALAR_TILE(vec_dot_q4_0_q8_0)
SCALAR_TILE(vec_dot_q4_1_q8_1)
SCALAR_TILE(vec_dot_q5_0_q8_0)
SCALAR_TILE(vec_dot_q5_1_q8_1)
SCALAR_TILE(vec_dot_q8_0_q8_0)
SCALAR_TILE(vec_dot_iq4_nl_q8_0)
SCALAR_TILE(vec_dot_mxfp4_q8_0)
SCALAR_TILE(vec_dot_q2_K_q8_K)
SCALAR_TILE(vec_dot_q3_K_q8_K)
SCALAR_TILE(vec_dot_q4_K_q8_K)
SCALAR_TILE(vec_dot_q5_K_q8_K)
SCALAR_TILE(vec_dot_q6_K_q8_K)
#undef SCALAR_TILE

/* ------------------------------------------------------------------------ */
/* Traits table                                                              */
/* ------------------------------------------------------------------------ */

#define TRAITS(nm, bs, sz, deq, dot, qnt, vdt) \
    { .name = (nm), .blck_size = (bs), .type_size = (sz), .supported = true, \
      .dequantize_row = (deq), .vec_dot_f32 = (dot), .quantize_row = (qnt), .vec_dot_type = (vdt) }

static const quant_traits k_traits[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = TRAITS("f32", 1, sizeof(float), dequantize_row_f32, vec_dot_f32_f32, quantize_row_f32,
                             GGML_TYPE_F32),
    [GGML_TYPE_F16] = TRAITS("f16", 1, sizeof(uint16_t), dequantize_row_f16, vec_dot_f32_f16, quantize_row_f16,
                             GGML_TYPE_F32),
    [GGML_TYPE_BF16] = TRAITS("bf16", 1, sizeof(uint16_t), dequantize_row_bf16, vec_dot_f32_bf16, quantize_row_bf16,
                              GGML_TYPE_F32),
    [GGML_TYPE_Q4_0] = TRAITS("q4_0", QK4_0, sizeof(block_q4_0), dequantize_row_q4_0, vec_dot_f32_q4_0,
                              quantize_row_q4_0, GGML_TYPE_Q8_0),
    [GGML_TYPE_Q4_1] = TRAITS("q4_1", QK4_1, sizeof(block_q4_1), dequantize_row_q4_1, vec_dot_f32_q4_1,
                              quantize_row_q4_1, GGML_TYPE_Q8_1),
    [GGML_TYPE_Q5_0] = TRAITS("q5_0", QK5_0, sizeof(block_q5_0), dequantize_row_q5_0, vec_dot_f32_q5_0,
                              quantize_row_q5_0, GGML_TYPE_Q8_0),
    [GGML_TYPE_Q5_1] = TRAITS("q5_1", QK5_1, sizeof(block_q5_1), dequantize_row_q5_1, vec_dot_f32_q5_1,
                              quantize_row_q5_1, GGML_TYPE_Q8_1),
    [GGML_TYPE_Q8_0] = TRAITS("q8_0", QK8_0, sizeof(block_q8_0), dequantize_row_q8_0, vec_dot_f32_q8_0,
                              quantize_row_q8_0, GGML_TYPE_Q8_0),
    [GGML_TYPE_Q2_K] = TRAITS("q2_K", QK_K, sizeof(block_q2_K), dequantize_row_q2_K, vec_dot_f32_q2_K, NULL,
                              GGML_TYPE_Q8_K),
    [GGML_TYPE_Q3_K] = TRAITS("q3_K", QK_K, sizeof(block_q3_K), dequantize_row_q3_K, vec_dot_f32_q3_K, NULL,
                              GGML_TYPE_Q8_K),
    [GGML_TYPE_Q4_K] = TRAITS("q4_K", QK_K, sizeof(block_q4_K), dequantize_row_q4_K, vec_dot_f32_q4_K, NULL,
                              GGML_TYPE_Q8_K),
    [GGML_TYPE_Q5_K] = TRAITS("q5_K", QK_K, sizeof(block_q5_K), dequantize_row_q5_K, vec_dot_f32_q5_K, NULL,
                              GGML_TYPE_Q8_K),
    [GGML_TYPE_Q6_K] = TRAITS("q6_K", QK_K, sizeof(block_q6_K), dequantize_row_q6_K, vec_dot_f32_q6_K, NULL,
                              GGML_TYPE_Q8_K),
    [GGML_TYPE_IQ4_NL] = TRAITS("iq4_nl", QK4_NL, sizeof(block_iq4_nl), dequantize_row_iq4_nl, vec_dot_f32_iq4_nl,
                                quantize_row_iq4_nl, GGML_TYPE_Q8_0),
    [GGML_TYPE_MXFP4] = TRAITS("mxfp4", QK_MXFP4, sizeof(block_mxfp4), dequantize_row_mxfp4, vec_dot_f32_mxfp4, NULL,
                               GGML_TYPE_Q8_0),
    /* Activation-only formats of the dot products: not readable as weights. */
    [GGML_TYPE_Q8_1] = { .name = "q8_1", .blck_size = QK8_1, .type_size = sizeof(block_q8_1), .supported = false },
    [GGML_TYPE_Q8_K] = { .name = "q8_K", .blck_size = QK_K, .type_size = sizeof(block_q8_K), .supported = false },
};

/* Scalar reference kernels. The tile shape only matters to the AVX2 twins
 * (a scalar tile is a loop over vec_dot); 1 x 1 keeps matmul simple. */
#define WKERN(dot) { .vec_dot = dot, .vec_dot_tile = dot##_tile, .tile_rows = 1, .tile_tokens = 1, .decode_rows = 1 }
const quant_kernels quant_kernels_scalar[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = { .from_float = quantize_row_f32, .vec_dot = vec_dot_f32_act,
                        .vec_dot_tile = vec_dot_f32_act_tile, .tile_rows = 1, .tile_tokens = 1, .decode_rows = 1 },
    [GGML_TYPE_F16] = WKERN(vec_dot_f16_act),
    [GGML_TYPE_BF16] = WKERN(vec_dot_bf16_act),
    [GGML_TYPE_Q4_0] = WKERN(vec_dot_q4_0_q8_0),
    [GGML_TYPE_Q4_1] = WKERN(vec_dot_q4_1_q8_1),
    [GGML_TYPE_Q5_0] = WKERN(vec_dot_q5_0_q8_0),
    [GGML_TYPE_Q5_1] = WKERN(vec_dot_q5_1_q8_1),
    [GGML_TYPE_Q8_0] = { .from_float = from_float_q8_0, .vec_dot = vec_dot_q8_0_q8_0,
                         .vec_dot_tile = vec_dot_q8_0_q8_0_tile, .tile_rows = 1, .tile_tokens = 1, .decode_rows = 1 },
    [GGML_TYPE_Q8_1] = { .from_float = from_float_q8_1 },
    [GGML_TYPE_Q8_K] = { .from_float = from_float_q8_K },
    [GGML_TYPE_Q2_K] = WKERN(vec_dot_q2_K_q8_K),
    [GGML_TYPE_Q3_K] = WKERN(vec_dot_q3_K_q8_K),
    [GGML_TYPE_Q4_K] = WKERN(vec_dot_q4_K_q8_K),
    [GGML_TYPE_Q5_K] = WKERN(vec_dot_q5_K_q8_K),
    [GGML_TYPE_Q6_K] = WKERN(vec_dot_q6_K_q8_K),
    [GGML_TYPE_IQ4_NL] = WKERN(vec_dot_iq4_nl_q8_0),
    [GGML_TYPE_MXFP4] = WKERN(vec_dot_mxfp4_q8_0),
};
#undef WKERN

/* ------------------------------------------------------------------------ */
/* Kernel choice: one const table per ISA level, picked once                */
/* ------------------------------------------------------------------------ */

/* The table of a level, or NULL if this CPU cannot run it. The 256-bit VNNI
 * level has two encodings of the same source: VEX (AVX-VNNI) where the CPU
 * has it, else EVEX (AVX512-VNNI + VL). */
static const quant_kernels *level_table(cpu_isa isa) {
    if (!cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return quant_kernels_scalar;
    case CPU_ISA_AVX2: return quant_kernels_avx2;
    case CPU_ISA_AVXVNNI: return cpu_has_avx_vnni() ? quant_kernels_avxvnni_vex : quant_kernels_avxvnni_evex;
    case CPU_ISA_AVX512: return quant_kernels_avx512;
    case CPU_ISA_NEON: return quant_kernels_neon;
    case CPU_ISA_DOTPROD: return quant_kernels_dotprod;
    case CPU_ISA_I8MM: return NULL; /* no rows of its own: the dotprod rows */
    case CPU_ISA_COUNT: break;
    }
    return NULL;
}

static bool kernels_present(const quant_kernels *k) { return k->from_float || k->vec_dot; }

const quant_kernels *quant_get_kernels(uint32_t type, cpu_isa isa) {
    if (type >= GGML_TYPE_COUNT || (unsigned)isa >= CPU_ISA_COUNT) return NULL;
    const quant_kernels *t = level_table(isa);
    return t && kernels_present(&t[type]) ? &t[type] : NULL;
}

/* Per type: the active level's row, else the highest level below it that has one. */
static const quant_kernels *g_active[GGML_TYPE_COUNT];
static pthread_once_t g_select_once = PTHREAD_ONCE_INIT;

static void quant_select_kernels(void) {
    const cpu_isa top = cpu_isa_active();
    for (uint32_t t = 0; t < GGML_TYPE_COUNT; t++)
        for (int isa = (int)top; isa >= CPU_ISA_SCALAR && !g_active[t]; isa--)
            g_active[t] = quant_get_kernels(t, (cpu_isa)isa);
}

const quant_kernels *quant_kernels_of(uint32_t type) {
    if (type >= GGML_TYPE_COUNT) return NULL;
    pthread_once(&g_select_once, quant_select_kernels);
    return g_active[type];
}

cpu_isa quant_active_isa(void) { return cpu_isa_active(); }

const quant_traits *quant_get_traits(uint32_t type) {
    if (type >= GGML_TYPE_COUNT || k_traits[type].name == NULL) return NULL;
    return &k_traits[type];
}

/* ------------------------------------------------------------------------ */
/* Repacked layout of the 32-value types (quant.h), reference form          */
/* ------------------------------------------------------------------------ */

/* Steps of R x 4 bytes per record; 0 if the type has no repacked layout. */
static int repack_steps(uint32_t type) {
    switch (type) {
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_IQ4_NL: return 4;
    case GGML_TYPE_Q8_0: return 8;
    default: return 0;
    }
}

int quant_repack_b32(uint32_t type, int R, int64_t n, const void *w, size_t w_stride, void *dst) {
    const int S = repack_steps(type);
    if (!S || R <= 0 || n % 32) return -1;
    const size_t bs = k_traits[type].type_size;
    uint8_t *o = dst;
    for (int64_t i = 0; i < n / 32; i++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *b = (const uint8_t *)w + (size_t)r * w_stride + (size_t)i * bs;
            memcpy(o + 2 * r, b, 2); /* d */
            for (int k = 0; k < S; k++)
                for (int j = 0; j < 4; j++) {
                    const uint8_t c = b[2 + 4 * k + j];
                    o[2 * R + (size_t)k * 4 * R + 4 * r + j] = S == 8 ? (uint8_t)(c ^ 0x80) : c;
                }
        }
        o += (size_t)R * bs;
    }
    return 0;
}

int quant_unpack_b32_row(uint32_t type, int R, int64_t n, const void *group, int r, void *row) {
    const int S = repack_steps(type);
    if (!S || R <= 0 || r < 0 || r >= R || n % 32) return -1;
    const size_t bs = k_traits[type].type_size;
    const uint8_t *g = group;
    uint8_t *b = row;
    for (int64_t i = 0; i < n / 32; i++, g += (size_t)R * bs, b += bs) {
        memcpy(b, g + 2 * r, 2);
        for (int k = 0; k < S; k++) {
            const uint8_t *c = g + 2 * R + (size_t)k * 4 * R + 4 * r;
            for (int j = 0; j < 4; j++) b[2 + 4 * k + j] = S == 8 ? (uint8_t)(c[j] ^ 0x80) : c[j];
        }
    }
    return 0;
}

/* q4_K's 12 scale bytes from the 8 unpacked scales and minimums (the inverse
 * of kquant_scale_min: every one of the 96 bits is a bit of some sc or m). */
static void kquant_pack_scale_min(const uint8_t sc[8], const uint8_t mn[8], uint8_t s[12]) {
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
}

void quant_q8_0_block_sums(const void *act, int64_t nblocks, int32_t *out) {
    const block_q8_0 *b = act;
    for (int64_t i = 0; i < nblocks; i++) {
        int32_t s = 0;
        for (int j = 0; j < QK8_0; j++) s += b[i].qs[j];
        out[i] = s;
    }
}

size_t quant_repack_group_bytes(uint32_t type, int R, int64_t n) {
    if (R <= 0 || n <= 0) return 0;
    switch (type) {
    case GGML_TYPE_Q4_K: return n % QK_K ? 0 : (size_t)(n / QK_K) * 148u * (size_t)R;
    case GGML_TYPE_Q6_K: return n % QK_K ? 0 : (size_t)(n / QK_K) * 210u * (size_t)R;
    default: return repack_steps(type) && n % 32 == 0 ? quant_row_size(type, n) * (size_t)R : 0;
    }
}

/* One super-block of R rows <-> its record; to_record selects the direction. */
static void k_record(uint32_t type, int R, uint8_t *rec, uint8_t *const *blk, bool to_record) {
#define MOVE(rp, bp, nbytes) (to_record ? memcpy(rp, bp, nbytes) : memcpy(bp, rp, nbytes))
    if (type == GGML_TYPE_Q4_K) {
        for (int r = 0; r < R; r++) {
            block_q4_K *b = (block_q4_K *)blk[r];
            MOVE(rec + 2 * r, &b->d, 2);
            MOVE(rec + 2 * R + 2 * r, &b->dmin, 2);
            uint8_t sc[8], mn[8];
            if (to_record) {
                for (int j = 0; j < 8; j++) kquant_scale_min(b->scales, j, &sc[j], &mn[j]);
                for (int j = 0; j < 8; j++) {
                    rec[4 * R + j * R + r] = sc[j];
                    rec[12 * R + j * R + r] = mn[j];
                }
            } else {
                for (int j = 0; j < 8; j++) {
                    sc[j] = rec[4 * R + j * R + r];
                    mn[j] = rec[12 * R + j * R + r];
                }
                kquant_pack_scale_min(sc, mn, b->scales);
            }
            for (int p = 0; p < 4; p++)
                for (int k = 0; k < 8; k++) MOVE(rec + 20 * R + (size_t)(8 * p + k) * 4 * R + 4 * r, b->qs + 32 * p + 4 * k, 4);
        }
    } else { /* q6_K */
        for (int r = 0; r < R; r++) {
            block_q6_K *b = (block_q6_K *)blk[r];
            MOVE(rec + 2 * r, &b->d, 2);
            for (int j = 0; j < 16; j++) MOVE(rec + 2 * R + j * R + r, &b->scales[j], 1);
            for (int h = 0; h < 2; h++)
                for (int j = 0; j < 8; j++) {
                    uint8_t *v = rec + 18 * R + (size_t)((h * 8 + j) * 3) * 4 * R + 4 * r;
                    MOVE(v, b->ql + 64 * h + 4 * j, 4);
                    MOVE(v + 4 * R, b->ql + 64 * h + 32 + 4 * j, 4);
                    MOVE(v + 8 * R, b->qh + 32 * h + 4 * j, 4);
                }
        }
    }
#undef MOVE
}

/* Walks the super-blocks of R rows: blocks of row r at w + r * w_stride. */
static int k_walk(uint32_t type, int R, int64_t n, uint8_t *w, size_t w_stride, uint8_t *g, bool to_record) {
    if ((type != GGML_TYPE_Q4_K && type != GGML_TYPE_Q6_K) || R <= 0 || R > 64 || n % QK_K) return -1;
    const size_t bs = k_traits[type].type_size, rb = (type == GGML_TYPE_Q4_K ? 148u : 210u) * (size_t)R;
    uint8_t *blk[64];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int r = 0; r < R; r++) blk[r] = w + (size_t)r * w_stride + (size_t)i * bs;
        k_record(type, R, g + (size_t)i * rb, blk, to_record);
    }
    return 0;
}

int quant_repack_k(uint32_t type, int R, int64_t n, const void *w, size_t w_stride, void *dst) {
    return k_walk(type, R, n, (uint8_t *)(uintptr_t)w, w_stride, dst, true); /* w only read */
}

int quant_unpack_k(uint32_t type, int R, int64_t n, const void *group, void *w, size_t w_stride) {
    return k_walk(type, R, n, w, w_stride, (uint8_t *)(uintptr_t)group, false); /* group only read */
}

int quant_unpack_row(uint32_t type, int R, int64_t n, const void *group, int r, void *row) {
    if (type != GGML_TYPE_Q4_K && type != GGML_TYPE_Q6_K) return quant_unpack_b32_row(type, R, n, group, r, row);
    if (r < 0 || r >= R || R > 64 || n % QK_K) return -1;
    const size_t bs = k_traits[type].type_size, rb = (type == GGML_TYPE_Q4_K ? 148u : 210u) * (size_t)R;
    uint8_t scratch[256];
    uint8_t *blk[64];
    for (int64_t i = 0; i < n / QK_K; i++) {
        for (int q = 0; q < R; q++) blk[q] = q == r ? (uint8_t *)row + (size_t)i * bs : scratch; /* others: thrown away */
        k_record(type, R, (uint8_t *)(uintptr_t)group + (size_t)i * rb, blk, false);
    }
    return 0;
}

int quant_unpack_b32(uint32_t type, int R, int64_t n, const void *group, void *w, size_t w_stride) {
    const int S = repack_steps(type);
    if (!S || R <= 0 || n % 32) return -1;
    const size_t bs = k_traits[type].type_size;
    const uint8_t *g = group;
    for (int64_t i = 0; i < n / 32; i++) {
        for (int r = 0; r < R; r++) {
            uint8_t *b = (uint8_t *)w + (size_t)r * w_stride + (size_t)i * bs;
            memcpy(b, g + 2 * r, 2);
            for (int k = 0; k < S; k++)
                for (int j = 0; j < 4; j++) {
                    const uint8_t c = g[2 * R + (size_t)k * 4 * R + 4 * r + j];
                    b[2 + 4 * k + j] = S == 8 ? (uint8_t)(c ^ 0x80) : c;
                }
        }
        g += (size_t)R * bs;
    }
    return 0;
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
