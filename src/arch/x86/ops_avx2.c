/* ops_avx2.c — AVX2 + FMA twins of the layer ops in ops.c (RMSNorm, SwiGLU),
 * one const row (arch/ops_arch.h). */
#include <math.h>

#include "arch/ops_arch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "arch/x86/simd_avx2.h"

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))

/* Sum of squares in double (products of floats are exact in double), the
 * output with the same two float multiplies as the reference. */
AVX2_FN static void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    s0 = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
    h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
    double ss = _mm_cvtsd_f64(h);
    for (; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / n + eps));
    const __m256 vs = _mm256_set1_ps(scale);
    i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* gate / (1 + e^-gate) * up, 8 at a time, with simd_exp_ps (simd_avx2.h:
 * +inf above 88.7 and 0 below -87.3, where 1 + e^x does not see the
 * difference from expf). */
AVX2_FN static void swiglu_avx2(float *gate, const float *up, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = simd_exp_ps(_mm256_xor_ps(g, neg));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

const ops_kernels ops_kernels_avx2 = {.rmsnorm = rmsnorm_avx2, .swiglu = swiglu_avx2};

#else

const ops_kernels ops_kernels_avx2;

#endif
