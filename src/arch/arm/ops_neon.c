/* ops_neon.c — NEON twins of the layer ops in ops.c (RMSNorm, SwiGLU) and of
 * rotation.c's Walsh–Hadamard transform, one
 * const row (arch/ops_arch.h); the dotprod and i8mm levels use it too. Off
 * aarch64 the row is empty. */
#include <math.h>

#include "arch/ops_arch.h"
#include "rotation.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include "arch/arm/simd_neon.h"

/* Sum of squares in double (products of floats are exact in double), the
 * output with the same two float multiplies as the reference. */
static void rmsnorm_neon(float *out, const float *x, const float *w, int n, float eps) {
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = s0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        s0 = vfmaq_f64(s0, lo, lo);
        s1 = vfmaq_f64(s1, hi, hi);
    }
    double ss = vaddvq_f64(vaddq_f64(s0, s1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    const float scale = (float)(1.0 / sqrt(ss / n + eps));
    const float32x4_t vs = vdupq_n_f32(scale);
    i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vmulq_f32(vld1q_f32(x + i), vs), vld1q_f32(w + i)));
    for (; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* gate / (1 + e^-gate) * up, 4 at a time, with simd_neon_exp. */
static void swiglu_neon(float *gate, const float *up, int n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t g = vld1q_f32(gate + i);
        const float32x4_t e = simd_neon_exp(vnegq_f32(g));
        vst1q_f32(gate + i, vmulq_f32(vdivq_f32(g, vaddq_f32(one, e)), vld1q_f32(up + i)));
    }
    for (; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* rotation.c's fwht_ref with the same additions, subtractions and final
 * multiply in the same passes (bit-identical): the passes of length 1 and 2
 * inside each vector of 4 (a rotated copy, its sum and difference, lanes
 * picked), those of length >= 4 between whole vectors. */
static void fwht_neon(float *x, int n) {
    if (n < 4) {
        fwht_ref(x, n);
        return;
    }
    const uint32x4_t odd = {0, ~0u, 0, ~0u}, high = {0, 0, ~0u, ~0u};
    for (int i = 0; i < n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        float32x4_t t = vrev64q_f32(v); /* x1 x0 x3 x2: lanes 0, 2 get a + b, 1, 3 a - b */
        v = vbslq_f32(odd, vsubq_f32(t, v), vaddq_f32(v, t));
        t = vextq_f32(v, v, 2); /* x2 x3 x0 x1: lanes 0, 1 get a + b, 2, 3 a - b */
        v = vbslq_f32(high, vsubq_f32(t, v), vaddq_f32(v, t));
        vst1q_f32(x + i, v);
    }
    for (int len = 4; len < n; len <<= 1)
        for (int i = 0; i < n; i += len << 1)
            for (int j = i; j < i + len; j += 4) {
                const float32x4_t a = vld1q_f32(x + j), b = vld1q_f32(x + j + len);
                vst1q_f32(x + j, vaddq_f32(a, b));
                vst1q_f32(x + j + len, vsubq_f32(a, b));
            }
    const float norm = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), norm));
}

const ops_kernels ops_kernels_neon = {.rmsnorm = rmsnorm_neon, .swiglu = swiglu_neon, .fwht = fwht_neon};

#else

const ops_kernels ops_kernels_neon;

#endif
