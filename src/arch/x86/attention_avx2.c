/* attention_avx2.c — AVX2 + FMA twins of attention.c's tile kernels (the
 * scores of a decoded tile against several queries, the weighted sum of its
 * rows, the block's exp and max), one const row, attn_kernels_avx2
 * (arch/kv_arch.h); attention.c picks it once when cpu.c reports
 * AVX2+FMA+F16C and ROTKV_ISA does not cap the level below it. scores and
 * accum need head_dim % 8 == 0 (tile_cols); attention.c runs the scalar ones
 * otherwise. */
#include "arch/kv_arch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "arch/x86/simd_avx2.h"

#define ATT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define UNROLL _Pragma("GCC unroll 8") /* register arrays stay in registers only when unrolled */
#define ATT_AI static inline __attribute__((always_inline)) ATT_AVX2

/* 8 accumulators -> one vector of their 8 horizontal sums */
ATT_AI __m256 hsum8(const __m256 a[8]) {
    const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* hd % 8 == 0. Rows are taken 8 at a time: the tile has 8 spare rows and S
 * rows 8 spare slots, so up to 7 rows past nr are computed and their scores
 * land in slots that are rewritten later (or never read). */
static ATT_AVX2 void scores_avx2(const float *tile, int nr, int hd, const float *q, int ng, const float *rs,
                                 const float *bias, float scale, float *S) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int g = 0; g < ng; g++) {
        const float *qg = q + (size_t)g * hd;
        const __m256 vb = _mm256_set1_ps(bias ? bias[g] : 0.0f);
        for (int r0 = 0; r0 < nr; r0 += 8) {
            const float *k = tile + (size_t)r0 * hd;
            __m256 a[8];
            UNROLL for (int j = 0; j < 8; j++) a[j] = _mm256_setzero_ps();
            for (int i = 0; i < hd; i += 8) {
                const __m256 qv = _mm256_loadu_ps(qg + i);
                UNROLL for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(_mm256_loadu_ps(k + (size_t)j * hd + i), qv, a[j]);
            }
            __m256 sc = hsum8(a);
            if (rs) sc = _mm256_mul_ps(sc, _mm256_loadu_ps(rs + r0));
            if (bias) sc = _mm256_add_ps(sc, vb);
            _mm256_storeu_ps(S + g * SROW + r0, _mm256_mul_ps(sc, vs));
        }
    }
}

/* NG query heads at once: their accumulators for 16 (or 8) columns stay in
 * registers over the block's rows. */
#define ACCUM_NG(NG)                                                                                           \
    ATT_AI void accum_avx2_##NG(const float *tile, int nr, int hd, const float *W, float *acc) {               \
        int i = 0;                                                                                             \
        for (; i + 16 <= hd; i += 16) {                                                                        \
            __m256 a0[NG], a1[NG];                                                                             \
            UNROLL for (int g = 0; g < NG; g++) {                                                                     \
                a0[g] = _mm256_loadu_ps(acc + (size_t)g * hd + i);                                             \
                a1[g] = _mm256_loadu_ps(acc + (size_t)g * hd + i + 8);                                         \
            }                                                                                                  \
            for (int r = 0; r < nr; r++) {                                                                     \
                const __m256 v0 = _mm256_loadu_ps(tile + (size_t)r * hd + i);                                  \
                const __m256 v1 = _mm256_loadu_ps(tile + (size_t)r * hd + i + 8);                              \
                UNROLL for (int g = 0; g < NG; g++) {                                                                 \
                    const __m256 w = _mm256_broadcast_ss(W + g * SROW + r);                                    \
                    a0[g] = _mm256_fmadd_ps(w, v0, a0[g]);                                                     \
                    a1[g] = _mm256_fmadd_ps(w, v1, a1[g]);                                                     \
                }                                                                                              \
            }                                                                                                  \
            UNROLL for (int g = 0; g < NG; g++) {                                                                     \
                _mm256_storeu_ps(acc + (size_t)g * hd + i, a0[g]);                                             \
                _mm256_storeu_ps(acc + (size_t)g * hd + i + 8, a1[g]);                                         \
            }                                                                                                  \
        }                                                                                                      \
        if (i < hd) {                                                                                          \
            __m256 a0[NG];                                                                                     \
            UNROLL for (int g = 0; g < NG; g++) a0[g] = _mm256_loadu_ps(acc + (size_t)g * hd + i);                    \
            for (int r = 0; r < nr; r++) {                                                                     \
                const __m256 v0 = _mm256_loadu_ps(tile + (size_t)r * hd + i);                                  \
                UNROLL for (int g = 0; g < NG; g++)                                                                   \
                    a0[g] = _mm256_fmadd_ps(_mm256_broadcast_ss(W + g * SROW + r), v0, a0[g]);                 \
            }                                                                                                  \
            UNROLL for (int g = 0; g < NG; g++) _mm256_storeu_ps(acc + (size_t)g * hd + i, a0[g]);                    \
        }                                                                                                      \
    }
ACCUM_NG(4)
ACCUM_NG(2)
ACCUM_NG(1)

static ATT_AVX2 void accum_avx2(const float *tile, int nr, int hd, const float *W, int ng, float *acc) {
    int g = 0;
    for (; g + 4 <= ng; g += 4) accum_avx2_4(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g + 2 <= ng; g += 2) accum_avx2_2(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g < ng; g++) accum_avx2_1(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
}

/* x has room for n rounded up to a multiple of 8 */
static ATT_AVX2 float exp_avx2_block(float *x, int n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (int r = 0; r < n; r += 8) {
        const __m256 e = simd_exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + r), vm));
        _mm256_storeu_ps(x + r, e);
        const __m256 valid = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n - r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
        sum = _mm256_add_ps(sum, _mm256_and_ps(valid, e));
    }
    return simd_hsum_ps(sum);
}
/* x has room for n rounded up to a multiple of 8 */
static ATT_AVX2 float max_avx2(const float *x, int n, float m) {
    __m256 mx = _mm256_set1_ps(m);
    for (int r = 0; r < n; r += 8) {
        const __m256 valid = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n - r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
        /* maxps returns its second operand when either is NaN: NaN scores (and lanes past n) are ignored */
        mx = _mm256_max_ps(_mm256_blendv_ps(mx, _mm256_loadu_ps(x + r), valid), mx);
    }
    return simd_hmax_ps(mx);
}

const attn_kernels attn_kernels_avx2 = {scores_avx2, accum_avx2, exp_avx2_block, max_avx2, 8};

#else /* not x86-64: no AVX2 row */

const attn_kernels attn_kernels_avx2;

#endif
