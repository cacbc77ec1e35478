/* simd_neon.h — small NEON helpers shared by the aarch64 kernels
 * (arch/arm/ops_neon.c, ...). Advanced SIMD is part of every aarch64 CPU:
 * nothing here needs a target attribute. */
#ifndef ROTKV_SIMD_NEON_H
#define ROTKV_SIMD_NEON_H

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>
#include <math.h>

#define SIMD_NEON static inline __attribute__((always_inline))

/* exp(x) lane by lane: the same Cephes expf polynomial and range handling as
 * x86/simd_avx2.h's simd_exp_ps (relative error < 2e-7 against expf; 0 below
 * -87.33654, +inf above 88.72284, a NaN stays NaN). */
SIMD_NEON float32x4_t simd_neon_exp(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(-87.33654f), hi = vdupq_n_f32(88.72283935546875f);
    const uint32x4_t under = vcltq_f32(x, lo), over = vcgtq_f32(x, hi);
    const uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
    float32x4_t c = vminq_f32(hi, vmaxq_f32(lo, x));
    c = vbslq_f32(nan, x, c);
    const float32x4_t n = vrndnq_f32(vmulq_f32(c, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(c, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    /* times 2^n1 2^n2 (n1 = n >> 1, n2 = n - n1: both normal for n in [-126, 128]) */
    const int32x4_t ni = vcvtnq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    const float32x4_t e1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    const float32x4_t e2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    float32x4_t y = vmulq_f32(vmulq_f32(p, e1), e2);
    y = vbslq_f32(nan, x, y);
    y = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), under));
    return vbslq_f32(over, vdupq_n_f32(INFINITY), y);
}

/* The floats t[idx[i]] of a table of 2^bits floats (bits = 1..6; the table
 * zero-padded to at least 4 floats, read as bytes in 16-byte registers t[0..3],
 * t[4..7] for 32 and 64 floats): TBL on the byte indices 4 idx + 0..3. Every
 * idx < 2^bits. bits is a constant where this is inlined, so one TBL (up to
 * 4 floats: 1 register; 8: 2; 16: 4) and for 5 or 6 bits one or three TBX
 * over the next 64 bytes remain. */
SIMD_NEON float32x4_t simd_neon_lut(const uint8x16x4_t *t, int bits, uint32x4_t idx) {
    const uint8x16_t b = vreinterpretq_u8_u32(vmlaq_n_u32(vdupq_n_u32(0x03020100u), idx, 0x04040404u));
    uint8x16_t r;
    if (bits <= 2) {
        r = vqtbl1q_u8(t[0].val[0], b);
    } else if (bits == 3) {
        const uint8x16x2_t t2 = {{t[0].val[0], t[0].val[1]}};
        r = vqtbl2q_u8(t2, b);
    } else {
        r = vqtbl4q_u8(t[0], b);
        /* TBX leaves the lanes whose index is past its 64 bytes as they are */
        if (bits >= 5) r = vqtbx4q_u8(r, t[1], vsubq_u8(b, vdupq_n_u8(64)));
        if (bits >= 6) {
            r = vqtbx4q_u8(r, t[2], vsubq_u8(b, vdupq_n_u8(128)));
            r = vqtbx4q_u8(r, t[3], vsubq_u8(b, vdupq_n_u8(192)));
        }
    }
    return vreinterpretq_f32_u8(r);
}

#endif
#endif
