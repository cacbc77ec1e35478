/* quant_neon.h — aarch64 twins of quant.c's matmul kernels, written once and
 * instantiated by quant_neon.c per level (like x86/quant_vnni.h):
 *   NEON_NAME(x)      the level's suffix on every function name
 *   DOT_S8(acc, a, b) acc (int32x4_t) += the products of the 16 signed bytes
 *                     of a and b, summed in groups of 4 (any grouping: only
 *                     the total of the four lanes is used)
 * The baseline (NEON) form of DOT_S8 is two widening multiplies into 16-bit
 * lanes and a pairwise add into 32-bit ones; the dotprod form is one SDOT.
 *
 * Numerics (quant.h): every block's (sub-block's) code products are summed
 * exactly in integers; the float steps that follow are the scalar
 * reference's, written the same way in C, so the results equal quant.c's bit
 * for bit (ISO C mode: the compiler fuses no multiply-adds). 16-bit lanes in
 * the NEON form hold two products each: |w| <= 128 and |a| <= 127 give
 * |w a| <= 16256, two of them <= 32512. f32/f16/bf16 weights: 4 accumulators
 * of 4 lanes with FMA, then the tail in scalar FMA-free C; the reference's
 * result up to rounding. The tiles are loops over the dot product, so every
 * tile shape gives exactly vec_dot. */

/* ------------------------------------------------------------------ helpers */

/* the int32 sum of a dot of 32 signed bytes at w and a */
static inline int32_t NEON_NAME(dot32)(int8x16_t w0, int8x16_t w1, const int8_t *a) {
    int32x4_t acc = vdupq_n_s32(0);
    acc = DOT_S8(acc, w0, vld1q_s8(a));
    acc = DOT_S8(acc, w1, vld1q_s8(a + 16));
    return vaddvq_s32(acc);
}

/* the int32 sum of a dot of 16 signed bytes */
static inline int32_t NEON_NAME(dot16)(int8x16_t w, const int8_t *a) {
    return vaddvq_s32(DOT_S8(vdupq_n_s32(0), w, vld1q_s8(a)));
}

/* ------------------------------------------------------- activation quantizers
 * (the same at every aarch64 level: no dot products in them) */

#ifndef NEON_QUANTIZERS_DONE
#define NEON_QUANTIZERS_DONE

/* f16 -> f32 by the hardware conversion (FCVT): exact, so the same value as
 * fp16.h's fp16_to_fp32 for every non-NaN input, in 2 instructions instead of ~15 */
static inline float neon_f16(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* max |x| over 32 floats (vmaxnm ignores NaNs, as fmaxf does) */
static inline float neon_amax32(const float32x4_t v[8]) {
    float32x4_t m = vabsq_f32(v[0]);
    for (int k = 1; k < 8; k++) m = vmaxnmq_f32(m, vabsq_f32(v[k]));
    return vmaxnmvq_f32(m);
}

/* 16 floats times id, rounded half to even (rintf's rounding), as bytes;
 * every value must be within [-128, 127] (saturating narrows). */
static inline int8x16_t neon_codes16(const float32x4_t v[4], float32x4_t id, int32x4_t cap) {
    int32x4_t q[4];
    for (int k = 0; k < 4; k++) q[k] = vminq_s32(vcvtnq_s32_f32(vmulq_f32(v[k], id)), cap);
    const int16x8_t lo = vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]));
    const int16x8_t hi = vcombine_s16(vqmovn_s32(q[2]), vqmovn_s32(q[3]));
    return vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi));
}

static void neon_from_float_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *b = (block_q8_0 *)dst;
    const int32x4_t cap = vdupq_n_s32(127);
    for (int64_t i = 0; i < n / QK8_0; i++, b++, src += QK8_0) {
        float32x4_t v[8];
        for (int k = 0; k < 8; k++) v[k] = vld1q_f32(src + 4 * k);
        const float amax = neon_amax32(v);
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        b->d = fp32_to_fp16(amax / 127.0f);
        const float32x4_t vid = vdupq_n_f32(id);
        vst1q_s8(b->qs, neon_codes16(v, vid, cap));
        vst1q_s8(b->qs + 16, neon_codes16(v + 4, vid, cap));
    }
}

static void neon_from_float_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *b = (block_q8_1 *)dst;
    const int32x4_t cap = vdupq_n_s32(127);
    for (int64_t i = 0; i < n / QK8_1; i++, b++, src += QK8_1) {
        float32x4_t v[8];
        for (int k = 0; k < 8; k++) v[k] = vld1q_f32(src + 4 * k);
        const float amax = neon_amax32(v);
        const float d = amax / 127.0f;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const float32x4_t vid = vdupq_n_f32(id);
        const int8x16_t q0 = neon_codes16(v, vid, cap), q1 = neon_codes16(v + 4, vid, cap);
        const int sum = vaddlvq_s8(q0) + vaddlvq_s8(q1);
        vst1q_s8(b->qs, q0);
        vst1q_s8(b->qs + 16, q1);
        b->d = fp32_to_fp16(d);
        b->s = fp32_to_fp16(d * (float)sum);
    }
}

static void neon_from_float_q8_K(const float *src, void *dst, int64_t n) {
    block_q8_K *b = (block_q8_K *)dst;
    const int32x4_t cap = vdupq_n_s32(127);
    for (int64_t i = 0; i < n / QK_K; i++, b++, src += QK_K) {
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int k = 0; k < QK_K; k += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(src + k)));
        const float amax = vmaxnmvq_f32(m);
        if (amax == 0.0f) {
            memset(b, 0, sizeof *b);
            continue;
        }
        /* the first element whose magnitude is amax, with its sign */
        float max = 0.0f;
        for (int j = 0; j < QK_K; j++)
            if (fabsf(src[j]) == amax) {
                max = src[j];
                break;
            }
        const float iscale = -127.0f / max;
        const float32x4_t vis = vdupq_n_f32(iscale);
        for (int g = 0; g < QK_K / 16; g++) {
            float32x4_t v[4];
            for (int k = 0; k < 4; k++) v[k] = vld1q_f32(src + 16 * g + 4 * k);
            const int8x16_t q = neon_codes16(v, vis, cap);
            vst1q_s8(b->qs + 16 * g, q);
            b->bsums[g] = (int16_t)vaddlvq_s8(q);
        }
        b->d = 1.0f / iscale;
    }
}

static void neon_f32_copy(const float *src, void *dst, int64_t n) { memcpy(dst, src, sizeof(float) * (size_t)n); }

/* ------------------------------------------------------- f32 / f16 / bf16 dots
 * (FMA only: the same at every aarch64 level) */

/* 4 f32 weights at w, as the weight type stores them */
static inline float32x4_t neon_w4_f32(const void *w, int64_t i) { return vld1q_f32((const float *)w + i); }
static inline float32x4_t neon_w4_f16(const void *w, int64_t i) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)w + i)));
}
static inline float32x4_t neon_w4_bf16(const void *w, int64_t i) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)w + i), 16));
}
static inline float neon_w1_f32(const void *w, int64_t i) { return ((const float *)w)[i]; }
static inline float neon_w1_f16(const void *w, int64_t i) {
    uint16_t h;
    memcpy(&h, (const uint16_t *)w + i, 2);
    return neon_f16(h);
}
static inline float neon_w1_bf16(const void *w, int64_t i) {
    uint16_t h;
    memcpy(&h, (const uint16_t *)w + i, 2);
    return bf16_to_fp32(h);
}

#define NEON_FDOT(T)                                                                                       \
    static float neon_##T##_dot(const void *row, const void *act, int64_t n) {                             \
        const float *x = (const float *)act;                                                               \
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;                                     \
        int64_t i = 0;                                                                                     \
        for (; i + 16 <= n; i += 16) {                                                                     \
            s0 = vfmaq_f32(s0, neon_w4_##T(row, i), vld1q_f32(x + i));                                     \
            s1 = vfmaq_f32(s1, neon_w4_##T(row, i + 4), vld1q_f32(x + i + 4));                             \
            s2 = vfmaq_f32(s2, neon_w4_##T(row, i + 8), vld1q_f32(x + i + 8));                             \
            s3 = vfmaq_f32(s3, neon_w4_##T(row, i + 12), vld1q_f32(x + i + 12));                           \
        }                                                                                                  \
        for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, neon_w4_##T(row, i), vld1q_f32(x + i));              \
        float sum = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));                           \
        for (; i < n; i++) sum += neon_w1_##T(row, i) * x[i];                                              \
        return sum;                                                                                        \
    }
NEON_FDOT(f32)
NEON_FDOT(f16)
NEON_FDOT(bf16)
#undef NEON_FDOT

#endif /* NEON_QUANTIZERS_DONE */

/* ------------------------------------------- 32-value blocks x q8_0 / q8_1 */

static float NEON_NAME(q4_0_dot)(const void *row, const void *act, int64_t n) {
    const block_q4_0 *x = (const block_q4_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t s8 = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; i++, x++, y++) {
        const uint8x16_t q = vld1q_u8(x->qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), s8);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), s8);
        const int isum = NEON_NAME(dot32)(lo, hi, y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum;
    }
    return sum;
}

static float NEON_NAME(q8_0_dot)(const void *row, const void *act, int64_t n) {
    const block_q8_0 *x = (const block_q8_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++, x++, y++) {
        const int isum = NEON_NAME(dot32)(vld1q_s8(x->qs), vld1q_s8(x->qs + 16), y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum;
    }
    return sum;
}

/* bit j of the 16-bit word b -> byte j = 0x10 if set, else 0 (q5_0 / q5_1 high bits) */
static inline uint8x16_t NEON_NAME(bit4_bytes)(uint32_t b) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)(b & 0xFF)), vdup_n_u8((uint8_t)((b >> 8) & 0xFF)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(bit)), vdupq_n_u8(0x10));
}

static float NEON_NAME(q4_1_dot)(const void *row, const void *act, int64_t n) {
    const block_q4_1 *x = (const block_q4_1 *)row;
    const block_q8_1 *y = (const block_q8_1 *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; i++, x++, y++) {
        const uint8x16_t q = vld1q_u8(x->qs);
        const int isum = NEON_NAME(dot32)(vreinterpretq_s8_u8(vandq_u8(q, m4)), vreinterpretq_s8_u8(vshrq_n_u8(q, 4)),
                                          y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum + neon_f16(x->m) * neon_f16(y->s);
    }
    return sum;
}

static float NEON_NAME(q5_0_dot)(const void *row, const void *act, int64_t n) {
    const block_q5_0 *x = (const block_q5_0 *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t s16 = vdupq_n_s8(16);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_0; i++, x++, y++) {
        const uint32_t qh = load_qh32(x->qh);
        const uint8x16_t q = vld1q_u8(x->qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, m4), NEON_NAME(bit4_bytes)(qh))), s16);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), NEON_NAME(bit4_bytes)(qh >> 16))), s16);
        const int isum = NEON_NAME(dot32)(lo, hi, y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum;
    }
    return sum;
}

static float NEON_NAME(q5_1_dot)(const void *row, const void *act, int64_t n) {
    const block_q5_1 *x = (const block_q5_1 *)row;
    const block_q8_1 *y = (const block_q8_1 *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; i++, x++, y++) {
        const uint32_t qh = load_qh32(x->qh);
        const uint8x16_t q = vld1q_u8(x->qs);
        const int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, m4), NEON_NAME(bit4_bytes)(qh)));
        const int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), NEON_NAME(bit4_bytes)(qh >> 16)));
        const int isum = NEON_NAME(dot32)(lo, hi, y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum + neon_f16(x->m) * neon_f16(y->s);
    }
    return sum;
}

/* the codes are indices into the 16 non-uniform levels: one table lookup (TBL) */
static float NEON_NAME(iq4_nl_dot)(const void *row, const void *act, int64_t n) {
    const block_iq4_nl *x = (const block_iq4_nl *)row;
    const block_q8_0 *y = (const block_q8_0 *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    const int8x16_t levels = vld1q_s8(kvalues_iq4nl);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_NL; i++, x++, y++) {
        const uint8x16_t q = vld1q_u8(x->qs);
        const int8x16_t lo = vqtbl1q_s8(levels, vandq_u8(q, m4)), hi = vqtbl1q_s8(levels, vshrq_n_u8(q, 4));
        const int isum = NEON_NAME(dot32)(lo, hi, y->qs);
        sum += neon_f16(x->d) * neon_f16(y->d) * (float)isum;
    }
    return sum;
}

/* Register tiles of the 32-value types (R rows x T tokens, R <= 4, T <= 2):
 * per block each row's codes are unpacked once for all T tokens and each
 * token's activations loaded once for all R rows. Every output is the same
 * integer sum and the same float steps in the same order as the row's dot
 * above, so equal to it bit for bit; shapes other than 4 x 2 and 4 x 1 (the
 * edges) run the dot itself. */
#define NEON_AI static inline __attribute__((always_inline))
NEON_AI void NEON_NAME(unpack_q4_0)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_q4_0 *x = (const block_q4_0 *)row + i;
    const uint8x16_t q = vld1q_u8(x->qs);
    w[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), vdupq_n_s8(8));
    w[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
    *d = neon_f16(x->d);
    *m = 0.0f;
}
NEON_AI void NEON_NAME(unpack_q4_1)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_q4_1 *x = (const block_q4_1 *)row + i;
    const uint8x16_t q = vld1q_u8(x->qs);
    w[0] = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
    w[1] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
    *d = neon_f16(x->d);
    *m = neon_f16(x->m);
}
NEON_AI void NEON_NAME(unpack_q5_0)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_q5_0 *x = (const block_q5_0 *)row + i;
    const uint32_t qh = load_qh32(x->qh);
    const uint8x16_t q = vld1q_u8(x->qs);
    w[0] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), NEON_NAME(bit4_bytes)(qh))),
                    vdupq_n_s8(16));
    w[1] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), NEON_NAME(bit4_bytes)(qh >> 16))), vdupq_n_s8(16));
    *d = neon_f16(x->d);
    *m = 0.0f;
}
NEON_AI void NEON_NAME(unpack_q5_1)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_q5_1 *x = (const block_q5_1 *)row + i;
    const uint32_t qh = load_qh32(x->qh);
    const uint8x16_t q = vld1q_u8(x->qs);
    w[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), NEON_NAME(bit4_bytes)(qh)));
    w[1] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), NEON_NAME(bit4_bytes)(qh >> 16)));
    *d = neon_f16(x->d);
    *m = neon_f16(x->m);
}
NEON_AI void NEON_NAME(unpack_iq4_nl)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_iq4_nl *x = (const block_iq4_nl *)row + i;
    const uint8x16_t q = vld1q_u8(x->qs);
    const int8x16_t levels = vld1q_s8(kvalues_iq4nl);
    w[0] = vqtbl1q_s8(levels, vandq_u8(q, vdupq_n_u8(0x0F)));
    w[1] = vqtbl1q_s8(levels, vshrq_n_u8(q, 4));
    *d = neon_f16(x->d);
    *m = 0.0f;
}
NEON_AI void NEON_NAME(unpack_q8_0)(const void *row, int64_t i, int8x16_t w[2], float *d, float *m) {
    const block_q8_0 *x = (const block_q8_0 *)row + i;
    w[0] = vld1q_s8(x->qs);
    w[1] = vld1q_s8(x->qs + 16);
    *d = neon_f16(x->d);
    *m = 0.0f;
}
/* ACT: the activation block (block_q8_0, or block_q8_1 with its sum s for
 * the types with a minimum: the dot's + m * s) */
#define NEON_RT_TILE(T_, ACT, HAS_MIN, R, T)                                                               \
    NEON_AI void NEON_NAME(T_##_tile_##R##x##T)(int64_t n, const void *w, size_t ws, const void *a, size_t as, \
                                                float *y, size_t ys) {                                     \
        float sum[T][R];                                                                                   \
        for (int t = 0; t < T; t++)                                                                        \
            for (int r = 0; r < R; r++) sum[t][r] = 0.0f;                                                  \
        for (int64_t i = 0; i < n / 32; i++) {                                                             \
            int8x16_t wq[R][2];                                                                            \
            float dx[R], mx[R];                                                                            \
            for (int r = 0; r < R; r++)                                                                    \
                NEON_NAME(unpack_##T_)((const uint8_t *)w + r * ws, i, wq[r], &dx[r], &mx[r]);             \
            for (int t = 0; t < T; t++) {                                                                  \
                const ACT *yb = (const ACT *)(const void *)((const uint8_t *)a + t * as) + i;              \
                const int8x16_t a0 = vld1q_s8(yb->qs), a1 = vld1q_s8(yb->qs + 16);                         \
                const float dy = neon_f16(yb->d);                                                          \
                for (int r = 0; r < R; r++) {                                                              \
                    int32x4_t acc = DOT_S8(vdupq_n_s32(0), wq[r][0], a0);                                  \
                    acc = DOT_S8(acc, wq[r][1], a1);                                                       \
                    NEON_RT_ADD(HAS_MIN)                                                                   \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        for (int t = 0; t < T; t++)                                                                        \
            for (int r = 0; r < R; r++) y[(size_t)t * ys + r] = sum[t][r];                                 \
    }
#define NEON_RT_ADD(HAS_MIN) NEON_RT_ADD_##HAS_MIN
#define NEON_RT_ADD_0 sum[t][r] += dx[r] * dy * (float)vaddvq_s32(acc);
#define NEON_RT_ADD_1 sum[t][r] += dx[r] * dy * (float)vaddvq_s32(acc) + mx[r] * neon_f16(yb->s);
#define NEON_RT_TILES(T_, ACT, HAS_MIN)                                                                    \
    NEON_RT_TILE(T_, ACT, HAS_MIN, 4, 2)                                                                   \
    NEON_RT_TILE(T_, ACT, HAS_MIN, 4, 1)                                                                   \
    static void NEON_NAME(T_##_tile4)(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as, \
                                      float *y, size_t ys) {                                               \
        for (int t0 = 0; t0 < nt; t0 += 2) {                                                               \
            const int tn = nt - t0 < 2 ? nt - t0 : 2;                                                      \
            const uint8_t *at = (const uint8_t *)a + (size_t)t0 * as;                                      \
            float *yt = y + (size_t)t0 * ys;                                                               \
            int r = 0;                                                                                     \
            for (; r + 4 <= nr; r += 4) {                                                                  \
                if (tn == 2) NEON_NAME(T_##_tile_4x2)(n, (const uint8_t *)w + r * ws, ws, at, as, yt + r, ys); \
                else NEON_NAME(T_##_tile_4x1)(n, (const uint8_t *)w + r * ws, ws, at, as, yt + r, ys);       \
            }                                                                                              \
            for (; r < nr; r++)                                                                            \
                for (int t = 0; t < tn; t++)                                                               \
                    yt[(size_t)t * ys + r] = NEON_NAME(T_##_dot)((const uint8_t *)w + r * ws, at + t * as, n); \
        }                                                                                                  \
    }
NEON_RT_TILES(q4_0, block_q8_0, 0)
NEON_RT_TILES(q4_1, block_q8_1, 1)
NEON_RT_TILES(q5_0, block_q8_0, 0)
NEON_RT_TILES(q5_1, block_q8_1, 1)
NEON_RT_TILES(iq4_nl, block_q8_0, 0)
NEON_RT_TILES(q8_0, block_q8_0, 0)
#undef NEON_RT_TILES
#undef NEON_RT_TILE
#undef NEON_RT_ADD
#undef NEON_RT_ADD_0
#undef NEON_RT_ADD_1
#undef NEON_AI

/* ------------------------------------------------------------ K-quants x q8_K */

static float NEON_NAME(q4_K_dot)(const void *row, const void *act, int64_t n) {
    const block_q4_K *x = (const block_q4_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0, msum = 0;
        for (int p = 0; p < 4; p++) { /* sub-blocks 2p (low nibbles), 2p + 1 (high) */
            const uint8x16_t q0 = vld1q_u8(x->qs + 32 * p), q1 = vld1q_u8(x->qs + 32 * p + 16);
            const int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(q0, m4)), l1 = vreinterpretq_s8_u8(vandq_u8(q1, m4));
            const int8x16_t h0 = vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), h1 = vreinterpretq_s8_u8(vshrq_n_u8(q1, 4));
            const int s_lo = NEON_NAME(dot32)(l0, l1, y->qs + 64 * p);
            const int s_hi = NEON_NAME(dot32)(h0, h1, y->qs + 64 * p + 32);
            uint8_t sc, mn;
            kquant_scale_min(x->scales, 2 * p, &sc, &mn);
            isum += sc * s_lo;
            msum += mn * (y->bsums[4 * p] + y->bsums[4 * p + 1]);
            kquant_scale_min(x->scales, 2 * p + 1, &sc, &mn);
            isum += sc * s_hi;
            msum += mn * (y->bsums[4 * p + 2] + y->bsums[4 * p + 3]);
        }
        sum += y->d * neon_f16(x->d) * (float)isum - y->d * neon_f16(x->dmin) * (float)msum;
    }
    return sum;
}

static float NEON_NAME(q6_K_dot)(const void *row, const void *act, int64_t n) {
    const block_q6_K *x = (const block_q6_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(0x03);
    const int8x16_t s32 = vdupq_n_s8(32);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = x->ql + 64 * h, *qh = x->qh + 32 * h;
            const int8_t *sc = x->scales + 8 * h, *a = y->qs + 128 * h;
            const uint8x16_t l[4] = {vld1q_u8(ql), vld1q_u8(ql + 16), vld1q_u8(ql + 32), vld1q_u8(ql + 48)};
            const uint8x16_t hb[2] = {vld1q_u8(qh), vld1q_u8(qh + 16)};
            for (int k = 0; k < 4; k++) { /* values 32k .. 32k + 31 of the half: sub-blocks 2k, 2k + 1 */
                for (int j = 0; j < 2; j++) {
                    const uint8x16_t lb = l[2 * (k & 1) + j];
                    const uint8x16_t lo4 = k < 2 ? vandq_u8(lb, m4) : vshrq_n_u8(lb, 4);
                    uint8x16_t hi2;
                    switch (k) {
                    case 0: hi2 = vandq_u8(hb[j], m3); break;
                    case 1: hi2 = vandq_u8(vshrq_n_u8(hb[j], 2), m3); break;
                    case 2: hi2 = vandq_u8(vshrq_n_u8(hb[j], 4), m3); break;
                    default: hi2 = vshrq_n_u8(hb[j], 6); break;
                    }
                    const int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo4, vshlq_n_u8(hi2, 4))), s32);
                    isum += sc[2 * k + j] * NEON_NAME(dot16)(q, a + 32 * k + 16 * j);
                }
            }
        }
        sum += y->d * neon_f16(x->d) * (float)isum;
    }
    return sum;
}

static float NEON_NAME(q2_K_dot)(const void *row, const void *act, int64_t n) {
    const block_q2_K *x = (const block_q2_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    const uint8x16_t m3 = vdupq_n_u8(0x03);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        int isum = 0, msum = 0;
        for (int h = 0; h < 2; h++) {
            const uint8x16_t q[2] = {vld1q_u8(x->qs + 32 * h), vld1q_u8(x->qs + 32 * h + 16)};
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 2; j++) { /* sub-block 8h + 2k + j: bits 2k..2k+1 of q[j] */
                    const int sb = 8 * h + 2 * k + j;
                    const uint8x16_t c = vandq_u8(vshlq_u8(q[j], vdupq_n_s8((int8_t)(-2 * k))), m3);
                    isum += (x->scales[sb] & 0x0F) * NEON_NAME(dot16)(vreinterpretq_s8_u8(c), y->qs + 16 * sb);
                    msum += (x->scales[sb] >> 4) * y->bsums[sb];
                }
        }
        sum += y->d * neon_f16(x->d) * (float)isum - y->d * neon_f16(x->dmin) * (float)msum;
    }
    return sum;
}

static float NEON_NAME(q3_K_dot)(const void *row, const void *act, int64_t n) {
    const block_q3_K *x = (const block_q3_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    const uint8x16_t m3 = vdupq_n_u8(0x03), b2 = vdupq_n_u8(0x04);
    const int8x16_t s4 = vdupq_n_s8(4);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        const uint8x16_t hm[2] = {vld1q_u8(x->hmask), vld1q_u8(x->hmask + 16)};
        int isum = 0;
        for (int h = 0; h < 2; h++) {
            const uint8x16_t q[2] = {vld1q_u8(x->qs + 32 * h), vld1q_u8(x->qs + 32 * h + 16)};
            for (int k = 0; k < 4; k++)
                for (int j = 0; j < 2; j++) { /* sub-block 8h + 2k + j; its high bit is bit 4h + k of hmask */
                    const int sb = 8 * h + 2 * k + j;
                    const uint8x16_t lo = vandq_u8(vshlq_u8(q[j], vdupq_n_s8((int8_t)(-2 * k))), m3);
                    const uint8x16_t hi = vandq_u8(vtstq_u8(hm[j], vdupq_n_u8((uint8_t)(1u << (4 * h + k)))), b2);
                    const int8x16_t c = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), s4);
                    isum += q3k_scale(x->scales, sb) * NEON_NAME(dot16)(c, y->qs + 16 * sb);
                }
        }
        sum += y->d * neon_f16(x->d) * (float)isum;
    }
    return sum;
}

static float NEON_NAME(q5_K_dot)(const void *row, const void *act, int64_t n) {
    const block_q5_K *x = (const block_q5_K *)row;
    const block_q8_K *y = (const block_q8_K *)act;
    const uint8x16_t m4 = vdupq_n_u8(0x0F), b4 = vdupq_n_u8(0x10);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++, x++, y++) {
        const uint8x16_t qh0 = vld1q_u8(x->qh), qh1 = vld1q_u8(x->qh + 16);
        int isum = 0, msum = 0;
        for (int p = 0; p < 4; p++) { /* sub-blocks 2p (low nibbles, qh bit 2p), 2p + 1 (high, bit 2p + 1) */
            const uint8x16_t q0 = vld1q_u8(x->qs + 32 * p), q1 = vld1q_u8(x->qs + 32 * p + 16);
            const uint8x16_t bl = vdupq_n_u8((uint8_t)(1u << (2 * p))), bh = vdupq_n_u8((uint8_t)(2u << (2 * p)));
            const int8x16_t l0 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q0, m4), vandq_u8(vtstq_u8(qh0, bl), b4)));
            const int8x16_t l1 = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q1, m4), vandq_u8(vtstq_u8(qh1, bl), b4)));
            const int8x16_t h0 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q0, 4), vandq_u8(vtstq_u8(qh0, bh), b4)));
            const int8x16_t h1 = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q1, 4), vandq_u8(vtstq_u8(qh1, bh), b4)));
            const int s_lo = NEON_NAME(dot32)(l0, l1, y->qs + 64 * p);
            const int s_hi = NEON_NAME(dot32)(h0, h1, y->qs + 64 * p + 32);
            uint8_t sc, mn;
            kquant_scale_min(x->scales, 2 * p, &sc, &mn);
            isum += sc * s_lo;
            msum += mn * (y->bsums[4 * p] + y->bsums[4 * p + 1]);
            kquant_scale_min(x->scales, 2 * p + 1, &sc, &mn);
            isum += sc * s_hi;
            msum += mn * (y->bsums[4 * p + 2] + y->bsums[4 * p + 3]);
        }
        sum += y->d * neon_f16(x->d) * (float)isum - y->d * neon_f16(x->dmin) * (float)msum;
    }
    return sum;
}

/* ------------------------------------------------------------------ tiles */

#define NEON_TILE(dot)                                                                                        \
    static void dot##_tile(int64_t n, int nr, int nt, const void *w, size_t ws, const void *a, size_t as,    \
                           float *y, size_t ys) {                                                             \
        for (int t = 0; t < nt; t++)                                                                          \
            for (int r = 0; r < nr; r++)                                                                      \
                y[(size_t)t * ys + r] = dot((const uint8_t *)w + r * ws, (const uint8_t *)a + t * as, n);     \
    }
