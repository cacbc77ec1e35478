/* kv_transform_avx2.c — AVX2 + FMA twins of the kt* kernels in
 * kv_transform.c (dot, axpy and raw levels over a head's decode plan, the
 * query preparation and the final Tinv product), one const row,
 * kvt_kernels_avx2 (arch/kv_arch.h); kv_transform.c picks it once when cpu.c
 * reports AVX2+FMA+F16C and ROTKV_ISA does not cap the level below it. The
 * plan and the tables read here are kv_transform_plan.h's.
 *
 * dot and axpy differ from the scalar plan kernels only in summation order and
 * fused multiply-adds; levels and levels_rows are bit-identical to the scalar
 * kvt_levels (tests/test_kv_simd.c). */
#include <string.h>

#include "arch/kv_arch.h"
#include "kv_transform_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "arch/x86/simd_avx2.h"

#define KVT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KVT_AI static inline __attribute__((always_inline)) KVT_AVX2

KVT_AI uint64_t ld64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The levels of the b-bit codebook (b = 1..6) at the 8 indices idx. */
KVT_AI __m256 lookup(int b, __m256i idx) {
    const float *t = kvt_cb_levels[b]; /* zero-padded to 64 entries */
#define PERM(k) _mm256_permutevar8x32_ps(_mm256_loadu_ps(t + 8 * (k)), idx)
    if (b <= 3) return PERM(0);
    const __m256 s3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)); /* bit 3 -> sign */
    if (b == 4) return _mm256_blendv_ps(PERM(0), PERM(1), s3);
    const __m256 s4 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 27));
    const __m256 x0 = _mm256_blendv_ps(PERM(0), PERM(1), s3), x1 = _mm256_blendv_ps(PERM(2), PERM(3), s3);
    if (b == 5) return _mm256_blendv_ps(x0, x1, s4);
    const __m256 x2 = _mm256_blendv_ps(PERM(4), PERM(5), s3), x3 = _mm256_blendv_ps(PERM(6), PERM(7), s3);
    const __m256 s5 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 26));
    return _mm256_blendv_ps(_mm256_blendv_ps(x0, x1, s4), _mm256_blendv_ps(x2, x3, s4), s5);
#undef PERM
}

/* The 8 levels of group G (0 in lanes without bits): the window broadcast to
 * 4 qwords, shifted per lane pair, the odd lanes moved up into the high dwords. */
KVT_AI __m256 group_levels(const kvt_group *G, uint64_t w) {
    const __m256i v = _mm256_set1_epi64x((long long)w);
    const __m256i e = _mm256_srlv_epi64(v, _mm256_load_si256((const __m256i *)G->sh_even));
    const __m256i o = _mm256_srlv_epi64(v, _mm256_load_si256((const __m256i *)G->sh_odd));
    const __m256i mask = _mm256_load_si256((const __m256i *)G->mask);
    const __m256i idx = _mm256_and_si256(_mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA), mask);
    if (G->bits) return lookup(G->bits, idx);
    /* mixed widths (a run boundary, or lanes without bits): gathered from
     * the concatenated codebooks (the b-bit one at 2^b - 1 = the mask) */
    return _mm256_i32gather_ps(kvt_cat_levels, _mm256_add_epi32(idx, mask), 4);
}

/* The 8 levels of a whole group of B bits starting at byte p (B a constant). */
KVT_AI __m256 run_levels(const uint8_t *p, const int B) {
    const __m256i mask = _mm256_set1_epi32((1 << B) - 1);
    __m256i idx;
    /* broadcast straight from memory (one load-port uop, no GPR-to-vector move) */
    if (B <= 4) { /* 8 B <= 32 bits */
        idx = _mm256_srlv_epi32(_mm256_castps_si256(_mm256_broadcast_ss((const float *)(const void *)p)),
                                _mm256_setr_epi32(0, B, 2 * B, 3 * B, 4 * B, 5 * B, 6 * B, 7 * B));
    } else {
        const __m256i v = _mm256_castpd_si256(_mm256_broadcast_sd((const double *)(const void *)p));
        const __m256i e = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 2 * B, 4 * B, 6 * B));
        const __m256i o = _mm256_srlv_epi64(v, _mm256_setr_epi64x(B, 3 * B, 5 * B, 7 * B));
        idx = _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);
    }
    return lookup(B, _mm256_and_si256(idx, mask));
}

KVT_AI __m256i lane_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static KVT_AVX2 float kvt_dot_avx2(const kvt_head *h, const uint8_t *src, const float *qy) {
    const kvt_plan *p = kvt_plan_of(h);
    if (p->small) return kvt_kernels_scalar.dot(h, src, qy);
    const uint8_t *f = src + 1;
    __m256 acc = _mm256_setzero_ps();
    for (uint32_t r = 0; r < p->n_runs; r++) {
        const kvt_run *R = &p->runs[r];
        const float *q = qy + 8 * R->first;
        const uint8_t *b = f + h->bit_ofs[8 * R->first] / 8;
#define DOT_RUN(B)                                                                                             \
    case B:                                                                                                    \
        for (int k = 0; k < R->n; k++, b += B, q += 8)                                                         \
            acc = _mm256_fmadd_ps(run_levels(b, B), _mm256_loadu_ps(q), acc);                                 \
        break;
        switch (R->bits) { DOT_RUN(1) DOT_RUN(2) DOT_RUN(3) DOT_RUN(4) DOT_RUN(5) DOT_RUN(6) }
#undef DOT_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        acc = _mm256_fmadd_ps(group_levels(G, ld64(f + G->load_at)), _mm256_loadu_ps(qy + 8 * g), acc);
    }
    if (g < p->n_groups) { /* lanes past hd */
        const kvt_group *G = &p->g[g];
        const __m256 q = _mm256_maskload_ps(qy + 8 * g, lane_mask(h->hd - 8 * (int)g));
        acc = _mm256_fmadd_ps(group_levels(G, ld64(f + G->load_at)), q, acc);
    }
    return kvt_scale_of(src) * simd_hsum_ps(acc);
}

static KVT_AVX2 void kvt_axpy_avx2(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = kvt_plan_of(h);
    if (p->small) {
        kvt_kernels_scalar.axpy(h, src, w, acc_y);
        return;
    }
    const uint8_t *f = src + 1;
    const __m256 ws = _mm256_set1_ps(w * kvt_scale_of(src));
    for (uint32_t r = 0; r < p->n_runs; r++) {
        const kvt_run *R = &p->runs[r];
        float *a = acc_y + 8 * R->first;
        const float *sg = h->sigma + 8 * R->first;
        const uint8_t *b = f + h->bit_ofs[8 * R->first] / 8;
#define AXPY_RUN(B)                                                                                            \
    case B:                                                                                                    \
        for (int k = 0; k < R->n; k++, b += B, a += 8, sg += 8)                                                \
            _mm256_storeu_ps(a, _mm256_fmadd_ps(_mm256_mul_ps(ws, _mm256_loadu_ps(sg)), run_levels(b, B),      \
                                                _mm256_loadu_ps(a)));                                          \
        break;
        switch (R->bits) { AXPY_RUN(1) AXPY_RUN(2) AXPY_RUN(3) AXPY_RUN(4) AXPY_RUN(5) AXPY_RUN(6) }
#undef AXPY_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        const __m256 lev = group_levels(G, ld64(f + G->load_at));
        float *a = acc_y + 8 * g;
        const __m256 sw = _mm256_mul_ps(ws, _mm256_loadu_ps(h->sigma + 8 * g));
        _mm256_storeu_ps(a, _mm256_fmadd_ps(sw, lev, _mm256_loadu_ps(a)));
    }
    if (g < p->n_groups) { /* lanes past hd */
        const kvt_group *G = &p->g[g];
        const __m256 lev = group_levels(G, ld64(f + G->load_at));
        float *a = acc_y + 8 * g;
        const __m256i m = lane_mask(h->hd - 8 * (int)g);
        const __m256 sw = _mm256_mul_ps(ws, _mm256_maskload_ps(h->sigma + 8 * g, m));
        _mm256_maskstore_ps(a, m, _mm256_fmadd_ps(sw, lev, _mm256_maskload_ps(a, m)));
    }
}

/* n rows at once, loops swapped: per run (one width) all rows, so the plan is
 * read and the width dispatched once per block instead of once per row. */
static KVT_AVX2 void kvt_levels_rows_avx2(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n,
                                          float *y, float *s) {
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
#define LEVELS_RUN(B)                                                                                          \
    case B:                                                                                                    \
        for (int r = 0; r < n; r++) {                                                                          \
            const uint8_t *b = rows[r] + b0;                                                                   \
            float *o = y + (size_t)r * hd + o0;                                                                \
            for (int k = 0; k < ng; k++, b += B, o += 8) _mm256_storeu_ps(o, run_levels(b, B));                \
        }                                                                                                      \
        break;
        switch (R->bits) { LEVELS_RUN(1) LEVELS_RUN(2) LEVELS_RUN(3) LEVELS_RUN(4) LEVELS_RUN(5) LEVELS_RUN(6) }
#undef LEVELS_RUN
    }
    uint32_t g = p->n_fast;
    for (; g < p->n_full; g++) {
        const kvt_group *G = &p->g[g];
        for (int r = 0; r < n; r++)
            _mm256_storeu_ps(y + (size_t)r * hd + 8 * g, group_levels(G, ld64(rows[r] + ofs + 1 + G->load_at)));
    }
    if (g < p->n_groups) { /* lanes past hd */
        const kvt_group *G = &p->g[g];
        const __m256i m = lane_mask(hd - 8 * (int)g);
        for (int r = 0; r < n; r++)
            _mm256_maskstore_ps(y + (size_t)r * hd + 8 * g, m, group_levels(G, ld64(rows[r] + ofs + 1 + G->load_at)));
    }
    for (int r = 0; r < n; r++)
        for (int i = 8 * (int)p->n_groups; i < hd; i++) y[(size_t)r * hd + i] = 0.0f;
}

static KVT_AVX2 float kvt_levels_avx2(const kvt_head *h, const uint8_t *src, float *y) {
    const uint8_t *rows[1] = {src};
    float s;
    kvt_levels_rows_avx2(h, rows, 0, 1, y, &s);
    return s;
}
/* Once per query and KV head, the AVX2 twins of kv_transform.c's two hd x hd
 * products, in float: Tinv's rows are read contiguously. head_dim % 8 != 0
 * takes the scalar row's path. */
static KVT_AVX2 float kvt_prep_query_avx2(const kvt_head *h, const float *q, float *qy) {
    const int hd = h->hd;
    if (hd % 8) return kvt_kernels_scalar.prep_query(h, q, qy);
    __m256 qm = _mm256_setzero_ps();
    for (int j = 0; j < hd; j += 8) qm = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(h->mu + j), qm);
    for (int i = 0; i < hd; i += 8) {
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < hd; j++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(q[j]), _mm256_loadu_ps(h->Tinv + (size_t)j * hd + i), a);
        _mm256_storeu_ps(qy + i, _mm256_mul_ps(a, _mm256_loadu_ps(h->sigma + i)));
    }
    return simd_hsum_ps(qm);
}

static KVT_AVX2 void kvt_finish_avx2(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    if (hd % 8) {
        kvt_kernels_scalar.finish(h, acc_y, wsum, out);
        return;
    }
    for (int i = 0; i < hd; i++) {
        const float *t = h->Tinv + (size_t)i * hd;
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < hd; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(t + j), _mm256_loadu_ps(acc_y + j), a);
        out[i] += simd_hsum_ps(a) + wsum * h->mu[i];
    }
}

const kvt_kernels kvt_kernels_avx2 = {
    .dot = kvt_dot_avx2,
    .axpy = kvt_axpy_avx2,
    .levels = kvt_levels_avx2,
    .levels_rows = kvt_levels_rows_avx2,
    .prep_query = kvt_prep_query_avx2,
    .finish = kvt_finish_avx2,
};

#else /* not x86-64: no AVX2 row */

const kvt_kernels kvt_kernels_avx2;

#endif
