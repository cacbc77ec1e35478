/* attention_neon.c — NEON twins of attention.c's tile kernels (the scores of
 * a decoded tile against several queries, the weighted sum of its rows, the
 * block's exp and max), one const row, attn_kernels_neon (arch/kv_arch.h);
 * the levels above NEON use it too. scores and accum need head_dim % 4 == 0
 * (tile_cols); attention.c runs the scalar ones otherwise. Float paths: FMA
 * and another summation order than the scalar kernels (within 1e-5 of
 * sum |a_i b_i|, tests/test_kv_simd.c); max is exact. Off aarch64 the row is
 * empty. */
#include "arch/kv_arch.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include "arch/arm/simd_neon.h"

#define UNROLL _Pragma("GCC unroll 8") /* register arrays stay in registers only when unrolled */

/* 4 accumulators -> one vector of their 4 horizontal sums */
SIMD_NEON float32x4_t hsum4(const float32x4_t a[4]) {
    return vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]));
}

/* hd % 4 == 0. Rows are taken 8 at a time (two vectors of 4 scores): the tile
 * has 8 spare rows and S rows 8 spare slots, so up to 7 rows past nr are
 * computed and their scores land in slots that are rewritten later (or never
 * read); rs, when given, has nr rounded up to 8 entries. */
static void scores_neon(const float *tile, int nr, int hd, const float *q, int ng, const float *rs,
                        const float *bias, float scale, float *S) {
    for (int g = 0; g < ng; g++) {
        const float *qg = q + (size_t)g * hd;
        const float32x4_t vb = vdupq_n_f32(bias ? bias[g] : 0.0f);
        for (int r0 = 0; r0 < nr; r0 += 8) {
            const float *k = tile + (size_t)r0 * hd;
            float32x4_t a[8];
            UNROLL for (int j = 0; j < 8; j++) a[j] = vdupq_n_f32(0.0f);
            for (int i = 0; i < hd; i += 4) {
                const float32x4_t qv = vld1q_f32(qg + i);
                UNROLL for (int j = 0; j < 8; j++) a[j] = vfmaq_f32(a[j], vld1q_f32(k + (size_t)j * hd + i), qv);
            }
            float32x4_t sc[2] = {hsum4(a), hsum4(a + 4)};
            UNROLL for (int h = 0; h < 2; h++) {
                if (rs) sc[h] = vmulq_f32(sc[h], vld1q_f32(rs + r0 + 4 * h));
                if (bias) sc[h] = vaddq_f32(sc[h], vb);
                vst1q_f32(S + g * SROW + r0 + 4 * h, vmulq_n_f32(sc[h], scale));
            }
        }
    }
}

/* NG query heads at once: their accumulators for 8 (or 4) columns stay in
 * registers over the block's rows. */
#define ACCUM_NG(NG)                                                                                     \
    SIMD_NEON void accum_neon_##NG(const float *tile, int nr, int hd, const float *W, float *acc) {      \
        int i = 0;                                                                                       \
        for (; i + 8 <= hd; i += 8) {                                                                    \
            float32x4_t a0[NG], a1[NG];                                                                  \
            UNROLL for (int g = 0; g < NG; g++) {                                                        \
                a0[g] = vld1q_f32(acc + (size_t)g * hd + i);                                             \
                a1[g] = vld1q_f32(acc + (size_t)g * hd + i + 4);                                         \
            }                                                                                            \
            for (int r = 0; r < nr; r++) {                                                               \
                const float32x4_t v0 = vld1q_f32(tile + (size_t)r * hd + i);                             \
                const float32x4_t v1 = vld1q_f32(tile + (size_t)r * hd + i + 4);                         \
                UNROLL for (int g = 0; g < NG; g++) {                                                    \
                    const float w = W[g * SROW + r];                                                     \
                    a0[g] = vfmaq_n_f32(a0[g], v0, w);                                                   \
                    a1[g] = vfmaq_n_f32(a1[g], v1, w);                                                   \
                }                                                                                        \
            }                                                                                            \
            UNROLL for (int g = 0; g < NG; g++) {                                                        \
                vst1q_f32(acc + (size_t)g * hd + i, a0[g]);                                              \
                vst1q_f32(acc + (size_t)g * hd + i + 4, a1[g]);                                          \
            }                                                                                            \
        }                                                                                                \
        if (i < hd) {                                                                                    \
            float32x4_t a0[NG];                                                                          \
            UNROLL for (int g = 0; g < NG; g++) a0[g] = vld1q_f32(acc + (size_t)g * hd + i);             \
            for (int r = 0; r < nr; r++) {                                                               \
                const float32x4_t v0 = vld1q_f32(tile + (size_t)r * hd + i);                             \
                UNROLL for (int g = 0; g < NG; g++) a0[g] = vfmaq_n_f32(a0[g], v0, W[g * SROW + r]);     \
            }                                                                                            \
            UNROLL for (int g = 0; g < NG; g++) vst1q_f32(acc + (size_t)g * hd + i, a0[g]);              \
        }                                                                                                \
    }
ACCUM_NG(4)
ACCUM_NG(2)
ACCUM_NG(1)
#undef ACCUM_NG

static void accum_neon(const float *tile, int nr, int hd, const float *W, int ng, float *acc) {
    int g = 0;
    for (; g + 4 <= ng; g += 4) accum_neon_4(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g + 2 <= ng; g += 2) accum_neon_2(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g < ng; g++) accum_neon_1(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
}

/* lanes r .. r + 3 that are below n */
SIMD_NEON uint32x4_t lanes_below(int n, int r) {
    const int32x4_t idx = {0, 1, 2, 3};
    return vcgtq_s32(vdupq_n_s32(n - r), idx);
}

/* x has room for n rounded up to a multiple of 8 (4 would do here) */
static float exp_neon_block(float *x, int n, float m) {
    const float32x4_t vm = vdupq_n_f32(m);
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (int r = 0; r < n; r += 4) {
        const float32x4_t e = simd_neon_exp(vsubq_f32(vld1q_f32(x + r), vm));
        vst1q_f32(x + r, e);
        sum = vaddq_f32(sum, vreinterpretq_f32_u32(vandq_u32(lanes_below(n, r), vreinterpretq_u32_f32(e))));
    }
    return vaddvq_f32(sum);
}

/* x has room for n rounded up to a multiple of 8. FMAXNM returns the number
 * when one operand is a NaN: NaN scores are ignored, as the scalar max's
 * comparison ignores them; lanes past n keep mx. */
static float max_neon(const float *x, int n, float m) {
    float32x4_t mx = vdupq_n_f32(m);
    for (int r = 0; r < n; r += 4) mx = vbslq_f32(lanes_below(n, r), vmaxnmq_f32(mx, vld1q_f32(x + r)), mx);
    return vmaxnmvq_f32(mx);
}

const attn_kernels attn_kernels_neon = {scores_neon, accum_neon, exp_neon_block, max_neon, 4};

#else /* not aarch64: no NEON row */

const attn_kernels attn_kernels_neon;

#endif
