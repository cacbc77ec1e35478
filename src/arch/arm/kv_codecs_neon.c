/* kv_codecs_neon.c — NEON twins of kv_codecs.c's kernels (decode, dot,
 * axpy) for every codec that has an AVX2 row: f32, f16, bf16, the ggml block
 * types (q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl) and the tq* codebook codecs,
 * one const row per type (arch/kv_arch.h); the kt* rows are empty (their
 * kernels are kv_transform.c's), and the levels above NEON use this table.
 * Decode gives the scalar decoder's floats bit for bit (one multiply, plus one
 * add for q4_1 / q5_1, per value, as quant.c's dequantizers); dot and axpy use
 * FMA, equal to the scalar ones up to rounding. Reads never leave the encoded
 * vector (the tq groups as kv_codecs_avx2.c reads them). Off aarch64 the table
 * is empty. */
#include <string.h>

#include "arch/kv_arch.h"
#include "lloyd_max.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include "arch/arm/simd_neon.h"
#include "fp16.h"

/* 4 values of a row of each layout, as floats */
static inline float32x4_t ld4_f32(const void *p, int i) { return vld1q_f32((const float *)p + i); }
static inline float32x4_t ld4_f16(const void *p, int i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i)));
}
static inline float32x4_t ld4_bf16(const void *p, int i) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)p + i), 16));
}
static inline float ld1_f32(const void *p, int i) { return ((const float *)p)[i]; }
static inline float ld1_f16(const void *p, int i) {
    uint16_t h;
    memcpy(&h, (const uint16_t *)p + i, 2);
    return fp16_to_fp32(h);
}
static inline float ld1_bf16(const void *p, int i) {
    uint16_t h;
    memcpy(&h, (const uint16_t *)p + i, 2);
    return bf16_to_fp32(h);
}

#define FLOAT_CODEC(T)                                                                                   \
    static void T##_decode_neon(const void *src, float *x, int n) {                                      \
        int i = 0;                                                                                       \
        for (; i + 4 <= n; i += 4) vst1q_f32(x + i, ld4_##T(src, i));                                    \
        for (; i < n; i++) x[i] = ld1_##T(src, i);                                                       \
    }                                                                                                    \
    static float T##_dot_neon(const void *src, const float *q, int n) {                                  \
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0;                                                     \
        int i = 0;                                                                                       \
        for (; i + 8 <= n; i += 8) {                                                                     \
            s0 = vfmaq_f32(s0, ld4_##T(src, i), vld1q_f32(q + i));                                       \
            s1 = vfmaq_f32(s1, ld4_##T(src, i + 4), vld1q_f32(q + i + 4));                               \
        }                                                                                                \
        for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, ld4_##T(src, i), vld1q_f32(q + i));                \
        float s = vaddvq_f32(vaddq_f32(s0, s1));                                                         \
        for (; i < n; i++) s += ld1_##T(src, i) * q[i];                                                  \
        return s;                                                                                        \
    }                                                                                                    \
    static void T##_axpy_neon(const void *src, float w, float *out, int n) {                             \
        int i = 0;                                                                                       \
        for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vfmaq_n_f32(vld1q_f32(out + i), ld4_##T(src, i), w)); \
        for (; i < n; i++) out[i] += w * ld1_##T(src, i);                                                \
    }
FLOAT_CODEC(f32)
FLOAT_CODEC(f16)
FLOAT_CODEC(bf16)
#undef FLOAT_CODEC

/* ggml blocks of 32 (kv_codecs.c's readers): value j of a block is d * code[j]
 * + m (m = 0 for the symmetric types). Each reader gives the block's 32 codes
 * as two vectors of 16 bytes (elements 0..15 and 16..31), and d and m. */
enum { QK = 32 };

static inline float blk_f16(const uint8_t *b) {
    uint16_t h;
    memcpy(&h, b, 2);
    return fp16_to_fp32(h);
}
static inline uint32_t blk_u32(const uint8_t *b) {
    uint32_t w;
    memcpy(&w, b, 4);
    return w;
}

/* low nibbles (elements 0..15) and high nibbles (16..31) of 16 packed bytes */
static inline void nibbles(const uint8_t *qs, int8x16_t c[2]) {
    const uint8x16_t q = vld1q_u8(qs);
    c[0] = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
    c[1] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
}
/* bit j of the little-endian u32 at p -> 0x10 in byte j (0..15 in c[0], 16..31 in c[1]) */
static inline void high_bits(const uint8_t *p, int8x16_t c[2]) {
    static const uint8_t sel[2][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},
                                       {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3}};
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t w = vreinterpretq_u8_u32(vdupq_n_u32(blk_u32(p))), b = vld1q_u8(bit), k = vdupq_n_u8(0x10);
    for (int h = 0; h < 2; h++) c[h] = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(vqtbl1q_u8(w, vld1q_u8(sel[h])), b), k));
}

static inline void rd_q8_0(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    *d = blk_f16(b);
    *m = 0.0f;
    c[0] = vld1q_s8((const int8_t *)b + 2);
    c[1] = vld1q_s8((const int8_t *)b + 18);
}
static inline void rd_q4_0(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    *d = blk_f16(b);
    *m = 0.0f;
    nibbles(b + 2, c);
    for (int h = 0; h < 2; h++) c[h] = vsubq_s8(c[h], vdupq_n_s8(8));
}
static inline void rd_q4_1(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    *d = blk_f16(b);
    *m = blk_f16(b + 2);
    nibbles(b + 4, c);
}
static inline void rd_q5_0(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    int8x16_t hb[2];
    *d = blk_f16(b);
    *m = 0.0f;
    nibbles(b + 6, c);
    high_bits(b + 2, hb);
    for (int h = 0; h < 2; h++) c[h] = vsubq_s8(vorrq_s8(c[h], hb[h]), vdupq_n_s8(16));
}
static inline void rd_q5_1(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    int8x16_t hb[2];
    *d = blk_f16(b);
    *m = blk_f16(b + 2);
    nibbles(b + 8, c);
    high_bits(b + 4, hb);
    for (int h = 0; h < 2; h++) c[h] = vorrq_s8(c[h], hb[h]);
}
static inline void rd_iq4_nl(const uint8_t *b, int8x16_t c[2], float *d, float *m) {
    static const int8_t tab[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    *d = blk_f16(b);
    *m = 0.0f;
    nibbles(b + 2, c);
    for (int h = 0; h < 2; h++) c[h] = vqtbl1q_s8(vld1q_s8(tab), vreinterpretq_u8_s8(c[h]));
}

/* the 32 codes (signed bytes; q4_1 / q5_1's unsigned codes are < 32) as 8 x 4 floats */
static inline void codes_f32(const int8x16_t c[2], float32x4_t f[8]) {
    for (int k = 0; k < 2; k++) {
        const int16x8_t lo = vmovl_s8(vget_low_s8(c[k])), hi = vmovl_high_s8(c[k]);
        f[4 * k + 0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        f[4 * k + 1] = vcvtq_f32_s32(vmovl_high_s16(lo));
        f[4 * k + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        f[4 * k + 3] = vcvtq_f32_s32(vmovl_high_s16(hi));
    }
}

/* decode: d code (+ m), the scalar dequantizer's multiply and add exactly (no
 * FMA); dot: per block sum code q (4 lanes x 2), times d, plus m sum q; axpy:
 * out += (w d) code + w m */
#define BLOCK_CODEC(T, BYTES, HAS_MIN)                                                                   \
    static void T##_decode_neon(const void *src, float *x, int n) {                                      \
        const uint8_t *b = src;                                                                          \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            int8x16_t c[2];                                                                              \
            float32x4_t f[8];                                                                            \
            float d, m;                                                                                  \
            rd_##T(b, c, &d, &m);                                                                        \
            codes_f32(c, f);                                                                             \
            for (int k = 0; k < 8; k++) {                                                                \
                float32x4_t v = vmulq_n_f32(f[k], d);                                                    \
                if (HAS_MIN) v = vaddq_f32(v, vdupq_n_f32(m));                                           \
                vst1q_f32(x + i + 4 * k, v);                                                             \
            }                                                                                            \
        }                                                                                                \
    }                                                                                                    \
    static float T##_dot_neon(const void *src, const float *q, int n) {                                  \
        const uint8_t *b = src;                                                                          \
        float32x4_t acc = vdupq_n_f32(0.0f);                                                             \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            int8x16_t c[2];                                                                              \
            float32x4_t f[8], qv[8];                                                                     \
            float d, m;                                                                                  \
            rd_##T(b, c, &d, &m);                                                                        \
            codes_f32(c, f);                                                                             \
            for (int k = 0; k < 8; k++) qv[k] = vld1q_f32(q + i + 4 * k);                                \
            float32x4_t s0 = vmulq_f32(f[0], qv[0]), s1 = vmulq_f32(f[1], qv[1]);                        \
            for (int k = 2; k < 8; k += 2) {                                                             \
                s0 = vfmaq_f32(s0, f[k], qv[k]);                                                         \
                s1 = vfmaq_f32(s1, f[k + 1], qv[k + 1]);                                                 \
            }                                                                                            \
            acc = vfmaq_n_f32(acc, vaddq_f32(s0, s1), d);                                                \
            if (HAS_MIN) {                                                                               \
                const float32x4_t sq = vaddq_f32(vaddq_f32(vaddq_f32(qv[0], qv[1]), vaddq_f32(qv[2], qv[3])), \
                                                 vaddq_f32(vaddq_f32(qv[4], qv[5]), vaddq_f32(qv[6], qv[7]))); \
                acc = vfmaq_n_f32(acc, sq, m);                                                           \
            }                                                                                            \
        }                                                                                                \
        return vaddvq_f32(acc);                                                                          \
    }                                                                                                    \
    static void T##_axpy_neon(const void *src, float w, float *out, int n) {                             \
        const uint8_t *b = src;                                                                          \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            int8x16_t c[2];                                                                              \
            float32x4_t f[8];                                                                            \
            float d, m;                                                                                  \
            rd_##T(b, c, &d, &m);                                                                        \
            codes_f32(c, f);                                                                             \
            const float wd = w * d;                                                                      \
            const float32x4_t wm = vdupq_n_f32(w * m);                                                   \
            for (int k = 0; k < 8; k++) {                                                                \
                float *o = out + i + 4 * k;                                                              \
                const float32x4_t v = HAS_MIN ? vfmaq_n_f32(wm, f[k], wd) : vmulq_n_f32(f[k], wd);       \
                vst1q_f32(o, vaddq_f32(vld1q_f32(o), v));                                                \
            }                                                                                            \
        }                                                                                                \
    }
BLOCK_CODEC(q8_0, 34, 0)
BLOCK_CODEC(q5_1, 24, 1)
BLOCK_CODEC(q5_0, 22, 0)
BLOCK_CODEC(q4_1, 20, 1)
BLOCK_CODEC(q4_0, 18, 0)
BLOCK_CODEC(iq4_nl, 18, 0)
#undef BLOCK_CODEC

/* ------------------------------------------------------------ tq* codebook codecs
 *
 * Layout (kv_codecs.c): f16 scale, then groups of 8 codes, each group a
 * little-endian word of `bits` bytes holding code j at bits [bits*j, bits*j+bits).
 * A group expands to 2 x 4 lanes with a broadcast, one variable shift and a
 * mask; the levels are then looked up with TBL over the codebook's bytes
 * (simd_neon_lut: 4 levels in one register, 8 in two, 16 in four). */

static float tq_levels[5][16]; /* the 1..4-bit codebooks, zero-padded to 16 */

static void tq_tables_init(void) {
    for (int b = 1; b <= 4; b++) {
        const lloyd_max_codebook *cb = lloyd_max_table(b);
        for (int i = 0; i < cb->k; i++) tq_levels[b][i] = cb->levels[i];
    }
}

/* the group's word: a 4-byte load while 4 bytes of the vector remain (a page
 * can end right after the vector) */
static inline uint32_t tq_group_word(const uint8_t *p, const uint8_t *end, int bits) {
    if (end - p >= 4) return blk_u32(p);
    uint32_t w = 0;
    for (int i = 0; i < bits; i++) w |= (uint32_t)p[i] << (8 * i);
    return w;
}

/* the 8 levels of the group at p */
SIMD_NEON void tq_group(const uint8_t *p, const uint8_t *end, const int bits, const uint8x16x4_t *t,
                            float32x4_t lv[2]) {
    const uint32x4_t w = vdupq_n_u32(tq_group_word(p, end, bits)), mask = vdupq_n_u32((1u << bits) - 1);
    const int32x4_t sh0 = {0, -bits, -2 * bits, -3 * bits}, sh1 = vsubq_s32(sh0, vdupq_n_s32(4 * bits));
    lv[0] = simd_neon_lut(t, bits, vandq_u32(vshlq_u32(w, sh0), mask));
    lv[1] = simd_neon_lut(t, bits, vandq_u32(vshlq_u32(w, sh1), mask));
}

SIMD_NEON uint8x16x4_t tq_table(int bits) {
    uint8x16x4_t t;
    t.val[0] = vld1q_u8((const uint8_t *)tq_levels[bits]);
    t.val[1] = vld1q_u8((const uint8_t *)tq_levels[bits] + 16);
    t.val[2] = vld1q_u8((const uint8_t *)tq_levels[bits] + 32);
    t.val[3] = vld1q_u8((const uint8_t *)tq_levels[bits] + 48);
    return t;
}

/* one part (m codes at `bits` bits from p) of a dot / axpy / decode */
SIMD_NEON float32x4_t tq_dot_part(const uint8_t *p, const uint8_t *end, const int bits, const float *q, int m,
                                      float32x4_t acc) {
    const uint8x16x4_t t = tq_table(bits);
    for (int g = 0; g < m; g += 8, p += bits) {
        float32x4_t lv[2];
        tq_group(p, end, bits, &t, lv);
        acc = vfmaq_f32(acc, lv[0], vld1q_f32(q + g));
        acc = vfmaq_f32(acc, lv[1], vld1q_f32(q + g + 4));
    }
    return acc;
}
SIMD_NEON void tq_axpy_part(const uint8_t *p, const uint8_t *end, const int bits, float ws, float *out, int m) {
    const uint8x16x4_t t = tq_table(bits);
    for (int g = 0; g < m; g += 8, p += bits) {
        float32x4_t lv[2];
        tq_group(p, end, bits, &t, lv);
        vst1q_f32(out + g, vfmaq_n_f32(vld1q_f32(out + g), lv[0], ws));
        vst1q_f32(out + g + 4, vfmaq_n_f32(vld1q_f32(out + g + 4), lv[1], ws));
    }
}
SIMD_NEON void tq_decode_part(const uint8_t *p, const uint8_t *end, const int bits, float s, float *x, int m) {
    const uint8x16x4_t t = tq_table(bits);
    for (int g = 0; g < m; g += 8, p += bits) {
        float32x4_t lv[2];
        tq_group(p, end, bits, &t, lv);
        vst1q_f32(x + g, vmulq_n_f32(lv[0], s));
        vst1q_f32(x + g + 4, vmulq_n_f32(lv[1], s));
    }
}

/* n_hi codes at BHI bits, then the rest at BLO bits (BHI == BLO: all at BHI) */
#define TQ_KERNELS(nm, BHI, BLO)                                                                         \
    static float nm##_dot_neon(const void *src, const float *q, int n) {                                 \
        const uint8_t *p = src;                                                                          \
        const int n_hi = BHI == BLO ? n : n / 2;                                                         \
        const uint8_t *end = p + 2 + ((size_t)n_hi * BHI + (size_t)(n - n_hi) * BLO) / 8;                \
        float32x4_t acc = tq_dot_part(p + 2, end, BHI, q, n_hi, vdupq_n_f32(0.0f));                      \
        if (n_hi < n) acc = tq_dot_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, q + n_hi, n - n_hi, acc); \
        return blk_f16(p) * vaddvq_f32(acc);                                                             \
    }                                                                                                    \
    static void nm##_axpy_neon(const void *src, float w, float *out, int n) {                            \
        const uint8_t *p = src;                                                                          \
        const int n_hi = BHI == BLO ? n : n / 2;                                                         \
        const uint8_t *end = p + 2 + ((size_t)n_hi * BHI + (size_t)(n - n_hi) * BLO) / 8;                \
        const float ws = w * blk_f16(p);                                                                 \
        tq_axpy_part(p + 2, end, BHI, ws, out, n_hi);                                                    \
        if (n_hi < n) tq_axpy_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, ws, out + n_hi, n - n_hi);  \
    }                                                                                                    \
    static void nm##_decode_neon(const void *src, float *x, int n) {                                     \
        const uint8_t *p = src;                                                                          \
        const int n_hi = BHI == BLO ? n : n / 2;                                                         \
        const uint8_t *end = p + 2 + ((size_t)n_hi * BHI + (size_t)(n - n_hi) * BLO) / 8;                \
        const float s = blk_f16(p);                                                                      \
        tq_decode_part(p + 2, end, BHI, s, x, n_hi);                                                     \
        if (n_hi < n) tq_decode_part(p + 2 + (size_t)n_hi * BHI / 8, end, BLO, s, x + n_hi, n - n_hi);   \
    }
TQ_KERNELS(tq4, 4, 4)
TQ_KERNELS(tq3_5, 4, 3)
TQ_KERNELS(tq3, 3, 3)
TQ_KERNELS(tq2_5, 3, 2)
TQ_KERNELS(tq2, 2, 2)
#undef TQ_KERNELS

/* Fills the tq codebooks; kv_codecs.c calls it once, before any tq kernel
 * here can run. */
void kv_codec_kernels_neon_init(void) { tq_tables_init(); }

const kv_codec_kernels kv_codec_kernels_neon[ROTKV_KV_TYPE_COUNT] = {
#define K(t, nm) [t] = {nm##_decode_neon, nm##_dot_neon, nm##_axpy_neon}
    K(ROTKV_KV_F32, f32),     K(ROTKV_KV_F16, f16),   K(ROTKV_KV_BF16, bf16), K(ROTKV_KV_Q8_0, q8_0),
    K(ROTKV_KV_Q5_1, q5_1),   K(ROTKV_KV_Q5_0, q5_0), K(ROTKV_KV_Q4_1, q4_1), K(ROTKV_KV_Q4_0, q4_0),
    K(ROTKV_KV_IQ4_NL, iq4_nl), K(ROTKV_KV_TQ4, tq4), K(ROTKV_KV_TQ3_5, tq3_5), K(ROTKV_KV_TQ3, tq3),
    K(ROTKV_KV_TQ2_5, tq2_5), K(ROTKV_KV_TQ2, tq2),
#undef K
};

#else

const kv_codec_kernels kv_codec_kernels_neon[ROTKV_KV_TYPE_COUNT];
void kv_codec_kernels_neon_init(void) {}

#endif
