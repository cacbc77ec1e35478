/* attention_avx512.c — AVX-512 (F/DQ) twins of attention.c's tile kernels,
 * one const row, attn_kernels_avx512 (arch/kv_arch.h); attention.c picks it
 * once when cpu.c reports the AVX-512 level and ROTKV_ISA does not cap it
 * lower. scores and accum need head_dim % 16 == 0 (tile_cols); attention.c
 * runs the next lower level's (or the scalar) ones otherwise.
 *
 * scores takes 16 tile rows per query at a time and reduces their 16
 * accumulators into one vector of 16 sums with a shuffle tree (3 steps of
 * lane-block shuffles and adds, one permute); accum keeps 4 query heads' sums
 * of 32 columns in registers over the block's rows, the weights broadcast
 * from memory. Float paths: they differ from the scalar kernels in summation
 * order and fused multiply-adds only. */
#include "arch/kv_arch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <math.h>

#define ATT512 __attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl")))
#define ATT512_AI static inline __attribute__((always_inline)) ATT512
#define UNROLL _Pragma("GCC unroll 16")

/* a[0..16) -> one vector whose lane j is the sum of a[j]'s lanes */
ATT512_AI __m512 hsum16(const __m512 a[16]) {
    __m512 x[8], y[4];
    UNROLL for (int k = 0; k < 8; k++) /* lanes 0..7: a[2k] folded, 8..15: a[2k + 1] folded */
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xEE));
    UNROLL for (int k = 0; k < 4; k++) /* block b: a[4k + b] folded to 4 lanes */
        y[k] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0xDD));
    const __m512 z = _mm512_add_ps(_mm512_unpacklo_ps(y[0], y[1]), _mm512_unpackhi_ps(y[0], y[1]));
    const __m512 w = _mm512_add_ps(_mm512_unpacklo_ps(y[2], y[3]), _mm512_unpackhi_ps(y[2], y[3]));
    /* lane 4b + k: the sum of a[4k + b] */
    const __m512 t = _mm512_add_ps(_mm512_shuffle_ps(z, w, 0x44), _mm512_shuffle_ps(z, w, 0xEE));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), t);
}

/* hd % 16 == 0. Rows are taken 16 at a time: up to 15 rows past nr (inside
 * the tile's ATT_TILE_ROWS) are computed, and their scores are not stored. */
static ATT512 void scores_avx512(const float *tile, int nr, int hd, const float *q, int ng, const float *rs,
                                 const float *bias, float scale, float *S) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int g = 0; g < ng; g++) {
        const float *qg = q + (size_t)g * hd;
        const __m512 vb = _mm512_set1_ps(bias ? bias[g] : 0.0f);
        for (int r0 = 0; r0 < nr; r0 += 16) {
            const float *k = tile + (size_t)r0 * hd;
            __m512 a[16];
            UNROLL for (int j = 0; j < 16; j++) a[j] = _mm512_setzero_ps();
            for (int i = 0; i < hd; i += 16) {
                const __m512 qv = _mm512_loadu_ps(qg + i);
                UNROLL for (int j = 0; j < 16; j++)
                    a[j] = _mm512_fmadd_ps(_mm512_loadu_ps(k + (size_t)j * hd + i), qv, a[j]);
            }
            const int left = nr - r0;
            const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __m512 sc = hsum16(a);
            if (rs) sc = _mm512_mul_ps(sc, _mm512_maskz_loadu_ps(m, rs + r0));
            if (bias) sc = _mm512_add_ps(sc, vb);
            _mm512_mask_storeu_ps(S + g * SROW + r0, m, _mm512_mul_ps(sc, vs));
        }
    }
}

/* NG query heads at once: their sums of 32 (or 16) columns stay in registers
 * over the block's rows. */
#define ACCUM512_NG(NG)                                                                                        \
    ATT512_AI void accum_avx512_##NG(const float *tile, int nr, int hd, const float *W, float *acc) {          \
        int i = 0;                                                                                             \
        for (; i + 32 <= hd; i += 32) {                                                                        \
            __m512 a0[NG], a1[NG];                                                                             \
            UNROLL for (int g = 0; g < NG; g++) {                                                              \
                a0[g] = _mm512_loadu_ps(acc + (size_t)g * hd + i);                                             \
                a1[g] = _mm512_loadu_ps(acc + (size_t)g * hd + i + 16);                                        \
            }                                                                                                  \
            for (int r = 0; r < nr; r++) {                                                                     \
                const __m512 v0 = _mm512_loadu_ps(tile + (size_t)r * hd + i);                                  \
                const __m512 v1 = _mm512_loadu_ps(tile + (size_t)r * hd + i + 16);                             \
                UNROLL for (int g = 0; g < NG; g++) {                                                          \
                    const __m512 w = _mm512_set1_ps(W[g * SROW + r]);                                          \
                    a0[g] = _mm512_fmadd_ps(w, v0, a0[g]);                                                     \
                    a1[g] = _mm512_fmadd_ps(w, v1, a1[g]);                                                     \
                }                                                                                              \
            }                                                                                                  \
            UNROLL for (int g = 0; g < NG; g++) {                                                              \
                _mm512_storeu_ps(acc + (size_t)g * hd + i, a0[g]);                                             \
                _mm512_storeu_ps(acc + (size_t)g * hd + i + 16, a1[g]);                                        \
            }                                                                                                  \
        }                                                                                                      \
        if (i < hd) {                                                                                          \
            __m512 a0[NG];                                                                                     \
            UNROLL for (int g = 0; g < NG; g++) a0[g] = _mm512_loadu_ps(acc + (size_t)g * hd + i);             \
            for (int r = 0; r < nr; r++) {                                                                     \
                const __m512 v0 = _mm512_loadu_ps(tile + (size_t)r * hd + i);                                  \
                UNROLL for (int g = 0; g < NG; g++)                                                            \
                    a0[g] = _mm512_fmadd_ps(_mm512_set1_ps(W[g * SROW + r]), v0, a0[g]);                       \
            }                                                                                                  \
            UNROLL for (int g = 0; g < NG; g++) _mm512_storeu_ps(acc + (size_t)g * hd + i, a0[g]);             \
        }                                                                                                      \
    }
ACCUM512_NG(4)
ACCUM512_NG(2)
ACCUM512_NG(1)

static ATT512 void accum_avx512(const float *tile, int nr, int hd, const float *W, int ng, float *acc) {
    int g = 0;
    for (; g + 4 <= ng; g += 4) accum_avx512_4(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g + 2 <= ng; g += 2) accum_avx512_2(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
    for (; g < ng; g++) accum_avx512_1(tile, nr, hd, W + g * SROW, acc + (size_t)g * hd);
}

/* exp(x) for 16 lanes: Cephes-style range reduction and polynomial (as
 * simd_avx2.h's simd_exp_ps), the power of two applied with vscalefps; 0
 * below -87.34 (and for -inf), +inf above 88.72, NaN stays NaN. */
ATT512_AI __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f), hi = _mm512_set1_ps(88.72283935546875f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512 y = _mm512_maskz_mov_ps((__mmask16)~under, _mm512_scalef_ps(p, n));
    return _mm512_mask_mov_ps(y, over, _mm512_set1_ps(INFINITY));
}

static ATT512 float exp_avx512(float *x, int n, float m) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (int r = 0; r < n; r += 16) {
        const __mmask16 valid = n - r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - r)) - 1);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(valid, x + r), vm));
        _mm512_mask_storeu_ps(x + r, valid, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(valid, e));
    }
    return _mm512_reduce_add_ps(sum);
}

static ATT512 float max_avx512(const float *x, int n, float m) {
    __m512 mx = _mm512_set1_ps(m);
    for (int r = 0; r < n; r += 16) {
        const __mmask16 valid = n - r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - r)) - 1);
        /* maxps returns its second operand when either is NaN: NaN scores are ignored */
        mx = _mm512_mask_max_ps(mx, valid, _mm512_maskz_loadu_ps(valid, x + r), mx);
    }
    return _mm512_reduce_max_ps(mx);
}

const attn_kernels attn_kernels_avx512 = {scores_avx512, accum_avx512, exp_avx512, max_avx512, 16};

#else /* not x86-64: no AVX-512 row */

const attn_kernels attn_kernels_avx512;

#endif
