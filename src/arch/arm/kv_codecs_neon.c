/* kv_codecs_neon.c — NEON twins of kv_codecs.c's kernels (decode, dot,
 * axpy) for the f32, f16, bf16, q8_0 and q4_0 caches, one const row per type
 * (arch/kv_arch.h); the other types' rows are empty, so those types keep the
 * scalar kernels (kv_codecs.c falls back per type), as do the levels above
 * NEON. Decode gives the scalar decoder's floats bit for bit (one multiply
 * per value, as quant.c's dequantizers); dot and axpy use FMA, equal to the
 * scalar ones up to rounding. Off aarch64 the table is empty. */
#include <string.h>

#include "arch/kv_arch.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

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

/* ggml blocks of 32: q8_0 = f16 d, int8 qs[32]; q4_0 = f16 d, qs[16] (low
 * nibble element j, high nibble element j + 16, code - 8). */
enum { QK = 32 };

static inline float blk_d(const uint8_t *b) {
    uint16_t h;
    memcpy(&h, b, 2);
    return fp16_to_fp32(h);
}

/* the 32 codes of a block as 8 x 4 floats */
static inline void q8_0_codes(const uint8_t *b, float32x4_t c[8]) {
    for (int k = 0; k < 2; k++) {
        const int8x16_t q = vld1q_s8((const int8_t *)b + 2 + 16 * k);
        const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
        c[4 * k + 0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        c[4 * k + 1] = vcvtq_f32_s32(vmovl_high_s16(lo));
        c[4 * k + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        c[4 * k + 3] = vcvtq_f32_s32(vmovl_high_s16(hi));
    }
}
static inline void q4_0_codes(const uint8_t *b, float32x4_t c[8]) {
    const uint8x16_t q = vld1q_u8(b + 2);
    const int8x16_t s8 = vdupq_n_s8(8);
    const int8x16_t half[2] = {vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), s8),
                               vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), s8)};
    for (int k = 0; k < 2; k++) {
        const int16x8_t lo = vmovl_s8(vget_low_s8(half[k])), hi = vmovl_high_s8(half[k]);
        c[4 * k + 0] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        c[4 * k + 1] = vcvtq_f32_s32(vmovl_high_s16(lo));
        c[4 * k + 2] = vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        c[4 * k + 3] = vcvtq_f32_s32(vmovl_high_s16(hi));
    }
}

#define BLOCK_CODEC(T, BYTES)                                                                            \
    static void T##_decode_neon(const void *src, float *x, int n) {                                      \
        const uint8_t *b = src;                                                                          \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            float32x4_t c[8];                                                                            \
            T##_codes(b, c);                                                                             \
            const float d = blk_d(b);                                                                    \
            for (int k = 0; k < 8; k++) vst1q_f32(x + i + 4 * k, vmulq_n_f32(c[k], d));                  \
        }                                                                                                \
    }                                                                                                    \
    static float T##_dot_neon(const void *src, const float *q, int n) {                                  \
        const uint8_t *b = src;                                                                          \
        float sum = 0.0f;                                                                                \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            float32x4_t c[8];                                                                            \
            T##_codes(b, c);                                                                             \
            float32x4_t s0 = vmulq_f32(c[0], vld1q_f32(q + i)), s1 = vmulq_f32(c[1], vld1q_f32(q + i + 4)); \
            for (int k = 2; k < 8; k += 2) {                                                             \
                s0 = vfmaq_f32(s0, c[k], vld1q_f32(q + i + 4 * k));                                      \
                s1 = vfmaq_f32(s1, c[k + 1], vld1q_f32(q + i + 4 * k + 4));                              \
            }                                                                                            \
            sum += blk_d(b) * vaddvq_f32(vaddq_f32(s0, s1));                                             \
        }                                                                                                \
        return sum;                                                                                      \
    }                                                                                                    \
    static void T##_axpy_neon(const void *src, float w, float *out, int n) {                             \
        const uint8_t *b = src;                                                                          \
        for (int i = 0; i < n; i += QK, b += BYTES) {                                                    \
            float32x4_t c[8];                                                                            \
            T##_codes(b, c);                                                                             \
            const float wd = w * blk_d(b);                                                               \
            for (int k = 0; k < 8; k++)                                                                  \
                vst1q_f32(out + i + 4 * k, vfmaq_n_f32(vld1q_f32(out + i + 4 * k), c[k], wd));           \
        }                                                                                                \
    }
BLOCK_CODEC(q8_0, 34)
BLOCK_CODEC(q4_0, 18)
#undef BLOCK_CODEC

const kv_codec_kernels kv_codec_kernels_neon[ROTKV_KV_TYPE_COUNT] = {
#define K(t, nm) [t] = {nm##_decode_neon, nm##_dot_neon, nm##_axpy_neon}
    K(ROTKV_KV_F32, f32), K(ROTKV_KV_F16, f16), K(ROTKV_KV_BF16, bf16), K(ROTKV_KV_Q8_0, q8_0),
    K(ROTKV_KV_Q4_0, q4_0),
#undef K
};

#else

const kv_codec_kernels kv_codec_kernels_neon[ROTKV_KV_TYPE_COUNT];

#endif
