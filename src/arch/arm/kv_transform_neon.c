/* kv_transform_neon.c — NEON twins of the kt* kernels in kv_transform.c (dot,
 * axpy and raw levels over a head's decode plan, the query preparation and
 * the final Tinv product), one const row, kvt_kernels_neon (arch/kv_arch.h);
 * kv_transform.c picks it once where cpu.c reports NEON (the dotprod and i8mm
 * levels use it too) and ROTKV_ISA does not cap the level below it. The plan
 * and the tables read here are kv_transform_plan.h's, read as the AVX2 twins
 * (arch/x86/kv_transform_avx2.c) read them: a group of 8 coordinates is two
 * vectors of 4 lanes; the runs (whole byte-aligned groups of one width) take
 * their indices from one 4- or 8-byte load with constant shifts, the other
 * single-width groups with the plan's per-lane 64-bit shifts, and both look
 * the levels up with TBL/TBX over the codebook's bytes (simd_neon_lut); the
 * one or two groups that mix widths read kvt_cat_levels lane by lane.
 *
 * dot and axpy differ from the scalar plan kernels only in summation order and
 * fused multiply-adds; levels and levels_rows are bit-identical to the scalar
 * kvt_levels (tests/test_kv_simd.c). prep_query and finish take the scalar
 * row's path for head_dim % 4 != 0. Off aarch64 the row is empty. */
#include <string.h>

#include "arch/kv_arch.h"
#include "kv_transform_plan.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include "arch/arm/simd_neon.h"

SIMD_NEON uint64_t ld64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}
SIMD_NEON uint32_t ld32(const uint8_t *p) {
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* the b-bit codebook (zero-padded to 64 floats) as 4 x 4 byte registers */
typedef struct {
    uint8x16x4_t t[4];
} cb_regs;

SIMD_NEON cb_regs cb_load(const int b) {
    cb_regs r;
    const uint8_t *p = (const uint8_t *)kvt_cb_levels[b];
    const int n = b <= 4 ? 1 : b == 5 ? 2 : 4; /* the registers simd_neon_lut reads */
    for (int k = 0; k < n; k++) r.t[k] = vld1q_u8_x4(p + 64 * k);
    for (int k = n; k < 4; k++) r.t[k] = r.t[0];
    return r;
}

/* The 8 levels of a whole group of B bits starting at byte p (B a constant):
 * lanes 0..3 from the low 32 bits of the window, lanes 4..7 from the 32 bits
 * at 4 B (B <= 4: a 4-byte load, else 8: the plan keeps either inside the field). */
SIMD_NEON void run_levels(const uint8_t *p, const int B, const cb_regs *cb, float32x4_t lv[2]) {
    const uint64_t w = B <= 4 ? ld32(p) : ld64(p);
    const int32x4_t sh = {0, -B, -2 * B, -3 * B};
    const uint32x4_t mask = vdupq_n_u32((1u << B) - 1);
    lv[0] = simd_neon_lut(cb->t, B, vandq_u32(vshlq_u32(vdupq_n_u32((uint32_t)w), sh), mask));
    lv[1] = simd_neon_lut(cb->t, B, vandq_u32(vshlq_u32(vdupq_n_u32((uint32_t)(w >> (4 * B))), sh), mask));
}

/* The 8 levels of group G (0 in lanes without bits) from its 64-bit window w. */
SIMD_NEON void group_levels(const kvt_group *G, uint64_t w, float32x4_t lv[2]) {
    const uint64x2_t v = vdupq_n_u64(w);
    uint32x4_t idx[2];
    for (int h = 0; h < 2; h++) {
        const int64x2_t se = vnegq_s64(vreinterpretq_s64_u64(vld1q_u64(G->sh_even + 2 * h)));
        const int64x2_t so = vnegq_s64(vreinterpretq_s64_u64(vld1q_u64(G->sh_odd + 2 * h)));
        /* lanes 4h, 4h + 2 from the even shifts, 4h + 1, 4h + 3 from the odd ones */
        const uint32x4_t e = vreinterpretq_u32_u64(vshlq_u64(v, se)), o = vreinterpretq_u32_u64(vshlq_u64(v, so));
        idx[h] = vandq_u32(vtrn1q_u32(e, o), vld1q_u32(G->mask + 4 * h));
    }
    switch (G->bits) {
#define LUT(B)                                                                                           \
    case B: {                                                                                            \
        const cb_regs cb = cb_load(B);                                                                   \
        lv[0] = simd_neon_lut(cb.t, B, idx[0]);                                                          \
        lv[1] = simd_neon_lut(cb.t, B, idx[1]);                                                          \
        return;                                                                                          \
    }
        LUT(1) LUT(2) LUT(3) LUT(4) LUT(5) LUT(6)
#undef LUT
    default: break;
    }
    /* mixed widths (a run boundary, or lanes without bits): from the
     * concatenated codebooks (the b-bit one at 2^b - 1 = the mask) */
    uint32_t ix[8];
    float f[8];
    vst1q_u32(ix, vaddq_u32(idx[0], vld1q_u32(G->mask)));
    vst1q_u32(ix + 4, vaddq_u32(idx[1], vld1q_u32(G->mask + 4)));
    for (int j = 0; j < 8; j++) f[j] = kvt_cat_levels[ix[j]];
    lv[0] = vld1q_f32(f);
    lv[1] = vld1q_f32(f + 4);
}

static float kvt_dot_neon(const kvt_head *h, const uint8_t *src, const float *qy) {
    const kvt_plan *p = kvt_plan_of(h);
    if (p->small) return kvt_kernels_scalar.dot(h, src, qy);
    const uint8_t *f = src + 1;
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
    for (uint32_t r = 0; r < p->n_runs; r++) {
        const kvt_run *R = &p->runs[r];
        const float *q = qy + 8 * R->first;
        const uint8_t *b = f + h->bit_ofs[8 * R->first] / 8;
#define DOT_RUN(B)                                                                                       \
    case B: {                                                                                            \
        const cb_regs cb = cb_load(B);                                                                   \
        for (int k = 0; k < R->n; k++, b += B, q += 8) {                                                 \
            float32x4_t lv[2];                                                                           \
            run_levels(b, B, &cb, lv);                                                                   \
            a0 = vfmaq_f32(a0, lv[0], vld1q_f32(q));                                                     \
            a1 = vfmaq_f32(a1, lv[1], vld1q_f32(q + 4));                                                 \
        }                                                                                                \
        break;                                                                                           \
    }
        switch (R->bits) { DOT_RUN(1) DOT_RUN(2) DOT_RUN(3) DOT_RUN(4) DOT_RUN(5) DOT_RUN(6) }
#undef DOT_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        float32x4_t lv[2];
        group_levels(G, ld64(f + G->load_at), lv);
        a0 = vfmaq_f32(a0, lv[0], vld1q_f32(qy + 8 * g));
        a1 = vfmaq_f32(a1, lv[1], vld1q_f32(qy + 8 * g + 4));
    }
    if (g < p->n_groups) { /* lanes past hd: qy read only up to hd */
        const kvt_group *G = &p->g[g];
        float q[8] = {0};
        memcpy(q, qy + 8 * g, sizeof(float) * (size_t)(h->hd - 8 * (int)g));
        float32x4_t lv[2];
        group_levels(G, ld64(f + G->load_at), lv);
        a0 = vfmaq_f32(a0, lv[0], vld1q_f32(q));
        a1 = vfmaq_f32(a1, lv[1], vld1q_f32(q + 4));
    }
    return kvt_scale_of(src) * vaddvq_f32(vaddq_f32(a0, a1));
}

static void kvt_axpy_neon(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = kvt_plan_of(h);
    if (p->small) {
        kvt_kernels_scalar.axpy(h, src, w, acc_y);
        return;
    }
    const uint8_t *f = src + 1;
    const float ws = w * kvt_scale_of(src);
    for (uint32_t r = 0; r < p->n_runs; r++) {
        const kvt_run *R = &p->runs[r];
        float *a = acc_y + 8 * R->first;
        const float *sg = h->sigma + 8 * R->first;
        const uint8_t *b = f + h->bit_ofs[8 * R->first] / 8;
#define AXPY_RUN(B)                                                                                      \
    case B: {                                                                                            \
        const cb_regs cb = cb_load(B);                                                                   \
        for (int k = 0; k < R->n; k++, b += B, a += 8, sg += 8) {                                        \
            float32x4_t lv[2];                                                                           \
            run_levels(b, B, &cb, lv);                                                                   \
            vst1q_f32(a, vfmaq_f32(vld1q_f32(a), vmulq_n_f32(vld1q_f32(sg), ws), lv[0]));                \
            vst1q_f32(a + 4, vfmaq_f32(vld1q_f32(a + 4), vmulq_n_f32(vld1q_f32(sg + 4), ws), lv[1]));    \
        }                                                                                                \
        break;                                                                                           \
    }
        switch (R->bits) { AXPY_RUN(1) AXPY_RUN(2) AXPY_RUN(3) AXPY_RUN(4) AXPY_RUN(5) AXPY_RUN(6) }
#undef AXPY_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        float32x4_t lv[2];
        group_levels(G, ld64(f + G->load_at), lv);
        float *a = acc_y + 8 * g;
        const float *sg = h->sigma + 8 * g;
        vst1q_f32(a, vfmaq_f32(vld1q_f32(a), vmulq_n_f32(vld1q_f32(sg), ws), lv[0]));
        vst1q_f32(a + 4, vfmaq_f32(vld1q_f32(a + 4), vmulq_n_f32(vld1q_f32(sg + 4), ws), lv[1]));
    }
    if (g < p->n_groups) { /* lanes past hd: neither read nor written */
        const kvt_group *G = &p->g[g];
        const int m = h->hd - 8 * (int)g;
        float a[8] = {0}, sg[8] = {0};
        memcpy(a, acc_y + 8 * g, sizeof(float) * (size_t)m);
        memcpy(sg, h->sigma + 8 * g, sizeof(float) * (size_t)m);
        float32x4_t lv[2];
        group_levels(G, ld64(f + G->load_at), lv);
        vst1q_f32(a, vfmaq_f32(vld1q_f32(a), vmulq_n_f32(vld1q_f32(sg), ws), lv[0]));
        vst1q_f32(a + 4, vfmaq_f32(vld1q_f32(a + 4), vmulq_n_f32(vld1q_f32(sg + 4), ws), lv[1]));
        memcpy(acc_y + 8 * g, a, sizeof(float) * (size_t)m);
    }
}

/* n rows at once, loops swapped: per run (one width) all rows, so the plan is
 * read, the width dispatched and its codebook loaded once per block instead of
 * once per row. */
static void kvt_levels_rows_neon(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y,
                                 float *s) {
    const kvt_plan *p = kvt_plan_of(h);
    const int hd = h->hd;
    if (p->small) {
        for (int r = 0; r < n; r++) s[r] = kvt_kernels_scalar.levels(h, rows[r] + ofs, y + (size_t)r * hd);
        return;
    }
    for (int r = 0; r < n; r++) s[r] = kvt_scale_of(rows[r] + ofs);
    for (uint32_t ri = 0; ri < p->n_runs; ri++) {
        const kvt_run *R = &p->runs[ri];
        const size_t b0 = ofs + 1 + h->bit_ofs[8 * R->first] / 8, o0 = 8 * (size_t)R->first;
        const int ng = R->n;
#define LEVELS_RUN(B)                                                                                    \
    case B: {                                                                                            \
        const cb_regs cb = cb_load(B);                                                                   \
        for (int r = 0; r < n; r++) {                                                                    \
            const uint8_t *b = rows[r] + b0;                                                             \
            float *o = y + (size_t)r * hd + o0;                                                          \
            for (int k = 0; k < ng; k++, b += B, o += 8) {                                               \
                float32x4_t lv[2];                                                                       \
                run_levels(b, B, &cb, lv);                                                               \
                vst1q_f32(o, lv[0]);                                                                     \
                vst1q_f32(o + 4, lv[1]);                                                                 \
            }                                                                                            \
        }                                                                                                \
        break;                                                                                           \
    }
        switch (R->bits) { LEVELS_RUN(1) LEVELS_RUN(2) LEVELS_RUN(3) LEVELS_RUN(4) LEVELS_RUN(5) LEVELS_RUN(6) }
#undef LEVELS_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        for (int r = 0; r < n; r++) {
            float32x4_t lv[2];
            group_levels(G, ld64(rows[r] + ofs + 1 + G->load_at), lv);
            vst1q_f32(y + (size_t)r * hd + 8 * g, lv[0]);
            vst1q_f32(y + (size_t)r * hd + 8 * g + 4, lv[1]);
        }
    }
    if (g < p->n_groups) { /* lanes past hd not written */
        const kvt_group *G = &p->g[g];
        const int m = hd - 8 * (int)g;
        for (int r = 0; r < n; r++) {
            float32x4_t lv[2];
            float o[8];
            group_levels(G, ld64(rows[r] + ofs + 1 + G->load_at), lv);
            vst1q_f32(o, lv[0]);
            vst1q_f32(o + 4, lv[1]);
            memcpy(y + (size_t)r * hd + 8 * g, o, sizeof(float) * (size_t)m);
        }
    }
    for (int r = 0; r < n; r++)
        for (int i = 8 * (int)p->n_groups; i < hd; i++) y[(size_t)r * hd + i] = 0.0f;
}

static float kvt_levels_neon(const kvt_head *h, const uint8_t *src, float *y) {
    const uint8_t *rows[1] = {src};
    float s;
    kvt_levels_rows_neon(h, rows, 0, 1, y, &s);
    return s;
}

/* Once per query and KV head, the NEON twins of kv_transform.c's two hd x hd
 * products, in float: Tinv's rows are read contiguously. head_dim % 4 != 0
 * takes the scalar row's path. */
static float kvt_prep_query_neon(const kvt_head *h, const float *q, float *qy) {
    const int hd = h->hd;
    if (hd % 4) return kvt_kernels_scalar.prep_query(h, q, qy);
    float32x4_t qm = vdupq_n_f32(0.0f);
    for (int j = 0; j < hd; j += 4) qm = vfmaq_f32(qm, vld1q_f32(q + j), vld1q_f32(h->mu + j));
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
        for (int j = 0; j < hd; j++) {
            const float *t = h->Tinv + (size_t)j * hd + i;
            a0 = vfmaq_n_f32(a0, vld1q_f32(t), q[j]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(t + 4), q[j]);
        }
        vst1q_f32(qy + i, vmulq_f32(a0, vld1q_f32(h->sigma + i)));
        vst1q_f32(qy + i + 4, vmulq_f32(a1, vld1q_f32(h->sigma + i + 4)));
    }
    if (i < hd) {
        float32x4_t a0 = vdupq_n_f32(0.0f);
        for (int j = 0; j < hd; j++) a0 = vfmaq_n_f32(a0, vld1q_f32(h->Tinv + (size_t)j * hd + i), q[j]);
        vst1q_f32(qy + i, vmulq_f32(a0, vld1q_f32(h->sigma + i)));
    }
    return vaddvq_f32(qm);
}

static void kvt_finish_neon(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    if (hd % 4) {
        kvt_kernels_scalar.finish(h, acc_y, wsum, out);
        return;
    }
    for (int i = 0; i < hd; i++) {
        const float *t = h->Tinv + (size_t)i * hd;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
        int j = 0;
        for (; j + 8 <= hd; j += 8) {
            a0 = vfmaq_f32(a0, vld1q_f32(t + j), vld1q_f32(acc_y + j));
            a1 = vfmaq_f32(a1, vld1q_f32(t + j + 4), vld1q_f32(acc_y + j + 4));
        }
        if (j < hd) a0 = vfmaq_f32(a0, vld1q_f32(t + j), vld1q_f32(acc_y + j));
        out[i] += vaddvq_f32(vaddq_f32(a0, a1)) + wsum * h->mu[i];
    }
}

const kvt_kernels kvt_kernels_neon = {
    .dot = kvt_dot_neon,
    .axpy = kvt_axpy_neon,
    .levels = kvt_levels_neon,
    .levels_rows = kvt_levels_rows_neon,
    .prep_query = kvt_prep_query_neon,
    .finish = kvt_finish_neon,
};

#else /* not aarch64: no NEON row */

const kvt_kernels kvt_kernels_neon;

#endif
