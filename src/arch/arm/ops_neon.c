/* ops_neon.c — NEON twins of the layer ops in ops.c (RMSNorm, SwiGLU), one
 * const row (arch/ops_arch.h); the dotprod and i8mm levels use it too. Off
 * aarch64 the row is empty. */
#include <math.h>

#include "arch/ops_arch.h"

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

const ops_kernels ops_kernels_neon = {.rmsnorm = rmsnorm_neon, .swiglu = swiglu_neon};

#else

const ops_kernels ops_kernels_neon;

#endif
