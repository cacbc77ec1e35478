/* kv_transform_avx512.c — AVX-512 (F/BW/VL/DQ) twins of the kt* kernels in
 * kv_transform.c, one const row, kvt_kernels_avx512 (arch/kv_arch.h);
 * kv_transform.c picks it once when cpu.c reports the AVX-512 level and
 * ROTKV_ISA does not cap it lower.
 *
 * They walk the plan's groups of 16 coordinates (kvt_group16,
 * kv_transform_plan.h): per group one masked 16-byte load of the index field,
 * one vpermw that gives every lane the 32 bits where its index starts, a
 * variable shift and a mask, then a lookup in registers — vpermps for a
 * single width of <= 4 bits, vpermt2ps for 5, two of them for 6 (or for mixed
 * widths up to 5 bits: the first 64 of the concatenated codebook entries),
 * and four for mixed widths with 6-bit lanes (all 128 entries).
 * No gather and no branch per lane; a block decode loads each group's
 * constants once for all its rows.
 *
 * levels and levels_rows are bit-identical to the scalar kvt_levels (they
 * look up the same table entries); dot and axpy differ from the scalar plan
 * kernels only in summation order and fused multiply-adds. */
#include <string.h>

#include "arch/kv_arch.h"
#include "kv_transform_plan.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define KVT512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")))
#define KVT512_AI static inline __attribute__((always_inline)) KVT512

/* The group's constants, loaded once per block. */
typedef struct {
    __m512i words, shift, mask;
    __m512 t0, t1, t2, t3, t4, t5, t6, t7; /* the lookup tables this group's width needs */
    __mmask16 load;
    int bits;
} g16_regs;

KVT512_AI g16_regs g16_load(const kvt_group16 *G) {
    g16_regs R;
    R.words = _mm512_load_si512((const void *)G->words);
    R.shift = _mm512_load_si512((const void *)G->shift);
    R.mask = _mm512_load_si512((const void *)G->mask);
    R.load = (__mmask16)G->load_mask;
    R.bits = G->bits ? G->bits : G->max_bits <= 5 ? -5 : 0;
    const float *t = R.bits > 0 ? kvt_cb_levels[R.bits] : kvt_cat_levels; /* 64 and 128 entries */
    R.t0 = _mm512_loadu_ps(t);
    R.t1 = _mm512_loadu_ps(t + 16);
    R.t2 = _mm512_loadu_ps(t + 32);
    R.t3 = _mm512_loadu_ps(t + 48);
    if (R.bits == 0) {
        R.t4 = _mm512_loadu_ps(t + 64);
        R.t5 = _mm512_loadu_ps(t + 80);
        R.t6 = _mm512_loadu_ps(t + 96);
        R.t7 = _mm512_loadu_ps(t + 112);
    } else {
        R.t4 = R.t5 = R.t6 = R.t7 = _mm512_setzero_ps();
    }
    return R;
}

/* The 16 levels of group R in the index field f (0 in lanes without bits),
 * for R->bits == bits (a constant where the caller dispatched on it). */
KVT512_AI __m512 g16_levels_b(const g16_regs *R, const uint8_t *f, uint32_t load_at, const int bits) {
    const __m128i raw = _mm_maskz_loadu_epi8(R->load, f + load_at);
    const __m512i win = _mm512_permutexvar_epi16(R->words, _mm512_castsi128_si512(raw));
    __m512i idx = _mm512_and_si512(_mm512_srlv_epi32(win, R->shift), R->mask);
    switch (bits) {
    case 1: case 2: case 3: case 4: return _mm512_permutexvar_ps(idx, R->t0);
    case 5: return _mm512_permutex2var_ps(R->t0, idx, R->t1);
    case 6: {
        const __m512 lo = _mm512_permutex2var_ps(R->t0, idx, R->t1), hi = _mm512_permutex2var_ps(R->t2, idx, R->t3);
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi);
    }
    case -5: { /* mixed, none wider than 5 bits: indices + masks < 63, the table's first 64 entries */
        idx = _mm512_add_epi32(idx, R->mask);
        const __m512 lo = _mm512_permutex2var_ps(R->t0, idx, R->t1), hi = _mm512_permutex2var_ps(R->t2, idx, R->t3);
        return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi);
    }
    default: { /* mixed: the b-bit codebook at 2^b - 1 = the mask in kvt_cat_levels */
        idx = _mm512_add_epi32(idx, R->mask);
        const __m512 x0 = _mm512_permutex2var_ps(R->t0, idx, R->t1), x1 = _mm512_permutex2var_ps(R->t2, idx, R->t3);
        const __m512 x2 = _mm512_permutex2var_ps(R->t4, idx, R->t5), x3 = _mm512_permutex2var_ps(R->t6, idx, R->t7);
        const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
        const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
        return _mm512_mask_blend_ps(b6, _mm512_mask_blend_ps(b5, x0, x1), _mm512_mask_blend_ps(b5, x2, x3));
    }
    }
}

KVT512_AI __m512 g16_levels(const g16_regs *R, const uint8_t *f, uint32_t load_at) {
    return g16_levels_b(R, f, load_at, R->bits);
}

KVT512_AI __mmask16 tail_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* Columns [16 g0, hd) of levels_rows through the groups of 16 (and the
 * zeros past the coordinates with bits). */
KVT512_AI void levels_rows_g16(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, int g0) {
    const kvt_plan *p = kvt_plan_of(h);
    const kvt_group16 *G = kvt_groups16_of(p);
    const int hd = h->hd, ng = (int)p->n_groups16;
    for (int g = g0; g < ng; g++) {
        const g16_regs R = g16_load(&G[g]);
        const uint32_t at = G[g].load_at;
        const __mmask16 st = tail_mask(hd - 16 * g);
        float *o = y + 16 * (size_t)g;
        const uint8_t *const *rp = rows;
        const size_t fo = ofs + 1 + at;
        /* the width dispatched once per group, the row loop specialized */
#define LEVELS_LOOP(B)                                                                                         \
    if (st == 0xFFFF)                                                                                          \
        for (int r = 0; r < n; r++, o += hd) _mm512_storeu_ps(o, g16_levels_b(&R, rp[r] + fo, 0, B));          \
    else                                                                                                       \
        for (int r = 0; r < n; r++, o += hd) _mm512_mask_storeu_ps(o, st, g16_levels_b(&R, rp[r] + fo, 0, B)); \
    break;
        switch (R.bits) {
        case 1: case 2: case 3: case 4: LEVELS_LOOP(4)
        case 5: LEVELS_LOOP(5)
        case 6: LEVELS_LOOP(6)
        case -5: LEVELS_LOOP(-5)
        default: LEVELS_LOOP(0)
        }
#undef LEVELS_LOOP
    }
    const int z = 16 * (ng > g0 ? ng : g0);
    if (z < hd)
        for (int r = 0; r < n; r++) memset(y + (size_t)r * hd + z, 0, sizeof(float) * (size_t)(hd - z));
}

static KVT512 void kvt_levels_rows_avx512(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n,
                                          float *y, float *s) {
    for (int r = 0; r < n; r++) s[r] = kvt_scale_of(rows[r] + ofs);
    levels_rows_g16(h, rows, ofs, n, y, 0);
}

#define KVTVBMI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))

/* The 64 levels of block G of the row at f (its index field) as 4 vectors. */
#define KVTVBMI_AI static inline __attribute__((always_inline)) KVTVBMI
typedef struct {
    __m512i gather, shift, mask, hi0, hi1, lo0, lo1;
    __mmask64 lm;
} g64_regs;

KVTVBMI_AI g64_regs g64_load(const kvt_group64 *G) {
    const g64_regs R = {_mm512_load_si512((const void *)G->gather), _mm512_load_si512((const void *)G->shift),
                        _mm512_load_si512((const void *)G->mask),
                        _mm512_loadu_si512((const void *)kvt_cat_bf16_hi),
                        _mm512_loadu_si512((const void *)(kvt_cat_bf16_hi + 64)),
                        _mm512_loadu_si512((const void *)kvt_cat_bf16_lo),
                        _mm512_loadu_si512((const void *)(kvt_cat_bf16_lo + 64)), (__mmask64)G->load_mask};
    return R;
}

KVTVBMI_AI void g64_levels(const g64_regs *R, const uint8_t *f, __m512 out[4]) {
    const __m512i raw = _mm512_maskz_loadu_epi8(R->lm, f);
    const __m512i win = _mm512_permutexvar_epi8(R->gather, raw);
    const __m512i idx = _mm512_add_epi8(_mm512_and_si512(_mm512_multishift_epi64_epi8(R->shift, win), R->mask), R->mask);
    const __m512i bh = _mm512_permutex2var_epi8(R->hi0, idx, R->hi1), bl = _mm512_permutex2var_epi8(R->lo0, idx, R->lo1);
    const __m512i w0 = _mm512_unpacklo_epi8(bl, bh), w1 = _mm512_unpackhi_epi8(bl, bh), z = _mm512_setzero_si512();
    out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w0));
    out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w0));
    out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w1));
    out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w1));
}

/* The VBMI row's levels_rows: whole blocks of 64 coordinates through the
 * byte-permute decode (kvt_group64, kv_transform_plan.h), the rest of the
 * head (head_dim % 64) through the groups of 16. The same floats: the
 * bfloat16 bytes of the same table entries. */
static KVTVBMI void kvt_levels_rows_vbmi(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y,
                                        float *s) {
    const kvt_plan *p = kvt_plan_of(h);
    const kvt_group64 *G = kvt_groups64_of(p);
    const int hd = h->hd, nb = (int)p->n_groups64;
    for (int r = 0; r < n; r++) s[r] = kvt_scale_of(rows[r] + ofs);
    for (int b = 0; b < nb; b++) {
        const g64_regs R = g64_load(&G[b]);
        const size_t fo = ofs + 1 + G[b].load_at;
        float *o = y + 64 * (size_t)b;
        for (int r = 0; r < n; r++, o += hd) {
            __m512 v[4];
            g64_levels(&R, rows[r] + fo, v);
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(o + 16 * c, v[c]);
        }
    }
    if (64 * nb < hd) levels_rows_g16(h, rows, ofs, n, y, 4 * nb);
}

/* NG heads' sums of one block of 64 columns in registers over the rows. */
#define KVT_UNROLL _Pragma("GCC unroll 4")
#define ACCUM_ROWS_NG(NG)                                                                                      \
    KVTVBMI_AI void accum_rows_##NG(const g64_regs *R, const uint8_t *const *rows, size_t fo, int n,            \
                                    const float *ws, int w_stride, int hd, float *acc) {                        \
        __m512 a[NG][4];                                                                                       \
        KVT_UNROLL for (int g = 0; g < NG; g++)                                                                \
            KVT_UNROLL for (int c = 0; c < 4; c++) a[g][c] = _mm512_loadu_ps(acc + (size_t)g * hd + 16 * c);   \
        for (int r = 0; r < n; r++) {                                                                          \
            __m512 v[4];                                                                                       \
            g64_levels(R, rows[r] + fo, v);                                                                    \
            KVT_UNROLL for (int g = 0; g < NG; g++) {                                                          \
                const __m512 w = _mm512_set1_ps(ws[(size_t)g * w_stride + r]);                                \
                KVT_UNROLL for (int c = 0; c < 4; c++) a[g][c] = _mm512_fmadd_ps(w, v[c], a[g][c]);            \
            }                                                                                                  \
        }                                                                                                      \
        KVT_UNROLL for (int g = 0; g < NG; g++)                                                                \
            KVT_UNROLL for (int c = 0; c < 4; c++) _mm512_storeu_ps(acc + (size_t)g * hd + 16 * c, a[g][c]);  \
    }
ACCUM_ROWS_NG(4)
ACCUM_ROWS_NG(2)
ACCUM_ROWS_NG(1)

/* kvt_accum_rows for head_dim % 64 == 0: each block of 64 columns decoded
 * once per row into registers and added to up to 4 heads' sums there; the
 * rows' scales go into the weights first (ws = W * s, 16 at a time). */
static KVTVBMI void kvt_accum_rows_vbmi(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n,
                                       const float *W, int w_stride, int ng, float *acc_y) {
    const kvt_plan *p = kvt_plan_of(h);
    const kvt_group64 *G = kvt_groups64_of(p);
    const int hd = h->hd;
    enum { CHUNK = 64 };
    float s[CHUNK], ws[4 * CHUNK];
    for (int r0 = 0; r0 < n; r0 += CHUNK) {
        const int m = n - r0 < CHUNK ? n - r0 : CHUNK;
        for (int r = 0; r < m; r++) s[r] = kvt_scale_of(rows[r0 + r] + ofs);
        for (int g0 = 0; g0 < ng; g0 += 4) {
            const int k = ng - g0 < 4 ? ng - g0 : 4;
            for (int g = 0; g < k; g++)
                for (int r = 0; r < m; r += 16) {
                    const __mmask16 mk = tail_mask(m - r);
                    _mm512_mask_storeu_ps(ws + g * CHUNK + r, mk,
                                          _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, W + (size_t)(g0 + g) * w_stride + r0 + r),
                                                        _mm512_maskz_loadu_ps(mk, s + r)));
                }
            for (int b = 0; b < (int)p->n_groups64; b++) {
                const g64_regs R = g64_load(&G[b]);
                const size_t fo = ofs + 1 + G[b].load_at;
                float *acc = acc_y + (size_t)g0 * hd + 64 * b;
                if (k == 4) accum_rows_4(&R, rows + r0, fo, m, ws, CHUNK, hd, acc);
                else if (k >= 2) {
                    accum_rows_2(&R, rows + r0, fo, m, ws, CHUNK, hd, acc);
                    if (k == 3) accum_rows_1(&R, rows + r0, fo, m, ws + 2 * CHUNK, CHUNK, hd, acc + 2 * (size_t)hd);
                } else accum_rows_1(&R, rows + r0, fo, m, ws, CHUNK, hd, acc);
            }
        }
    }
}

static KVTVBMI float kvt_levels_vbmi(const kvt_head *h, const uint8_t *src, float *y) {
    const uint8_t *rows[1] = {src};
    float s;
    kvt_levels_rows_vbmi(h, rows, 0, 1, y, &s);
    return s;
}

static KVT512 float kvt_levels_avx512(const kvt_head *h, const uint8_t *src, float *y) {
    const uint8_t *rows[1] = {src};
    float s;
    kvt_levels_rows_avx512(h, rows, 0, 1, y, &s);
    return s;
}

static KVT512 float kvt_dot_avx512(const kvt_head *h, const uint8_t *src, const float *qy) {
    const kvt_plan *p = kvt_plan_of(h);
    const kvt_group16 *G = kvt_groups16_of(p);
    __m512 acc = _mm512_setzero_ps();
    for (int g = 0; g < (int)p->n_groups16; g++) {
        const g16_regs R = g16_load(&G[g]);
        const __m512 q = _mm512_maskz_loadu_ps(tail_mask(h->hd - 16 * g), qy + 16 * g);
        acc = _mm512_fmadd_ps(g16_levels(&R, src + 1, G[g].load_at), q, acc);
    }
    return kvt_scale_of(src) * _mm512_reduce_add_ps(acc);
}

static KVT512 void kvt_axpy_avx512(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = kvt_plan_of(h);
    const kvt_group16 *G = kvt_groups16_of(p);
    const __m512 ws = _mm512_set1_ps(w * kvt_scale_of(src));
    for (int g = 0; g < (int)p->n_groups16; g++) {
        const g16_regs R = g16_load(&G[g]);
        const __mmask16 m = tail_mask(h->hd - 16 * g);
        const __m512 sw = _mm512_mul_ps(ws, _mm512_maskz_loadu_ps(m, h->sigma + 16 * g));
        float *a = acc_y + 16 * g;
        _mm512_mask_storeu_ps(a, m, _mm512_fmadd_ps(sw, g16_levels(&R, src + 1, G[g].load_at), _mm512_maskz_loadu_ps(m, a)));
    }
}

/* Once per query and KV head: qy = sigma * Tinv^T q, and q.mu. */
static KVT512 float kvt_prep_query_avx512(const kvt_head *h, const float *q, float *qy) {
    const int hd = h->hd;
    __m512 qm = _mm512_setzero_ps();
    for (int j = 0; j < hd; j += 16) {
        const __mmask16 m = tail_mask(hd - j);
        qm = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), _mm512_maskz_loadu_ps(m, h->mu + j), qm);
    }
    for (int i = 0; i < hd; i += 16) {
        const __mmask16 m = tail_mask(hd - i);
        __m512 a = _mm512_setzero_ps();
        for (int j = 0; j < hd; j++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(q[j]), _mm512_maskz_loadu_ps(m, h->Tinv + (size_t)j * hd + i), a);
        _mm512_mask_storeu_ps(qy + i, m, _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, h->sigma + i)));
    }
    return _mm512_reduce_add_ps(qm);
}

/* out += Tinv acc_y + wsum mu */
static KVT512 void kvt_finish_avx512(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    for (int i = 0; i < hd; i++) {
        const float *t = h->Tinv + (size_t)i * hd;
        __m512 a = _mm512_setzero_ps();
        for (int j = 0; j < hd; j += 16) {
            const __mmask16 m = tail_mask(hd - j);
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, t + j), _mm512_maskz_loadu_ps(m, acc_y + j), a);
        }
        out[i] += _mm512_reduce_add_ps(a) + wsum * h->mu[i];
    }
}

const kvt_kernels kvt_kernels_avx512 = {
    .dot = kvt_dot_avx512,
    .axpy = kvt_axpy_avx512,
    .levels = kvt_levels_avx512,
    .levels_rows = kvt_levels_rows_avx512,
    .prep_query = kvt_prep_query_avx512,
    .finish = kvt_finish_avx512,
};

/* AVX-512 with VBMI: the same row with the byte-permute decode of the levels. */
const kvt_kernels kvt_kernels_avx512_vbmi = {
    .dot = kvt_dot_avx512,
    .axpy = kvt_axpy_avx512,
    .levels = kvt_levels_vbmi,
    .levels_rows = kvt_levels_rows_vbmi,
    .prep_query = kvt_prep_query_avx512,
    .finish = kvt_finish_avx512,
    .accum_rows = kvt_accum_rows_vbmi,
    .accum_rows_hd = 64,
};

#else /* not x86-64: no AVX-512 row */

const kvt_kernels kvt_kernels_avx512;
const kvt_kernels kvt_kernels_avx512_vbmi;

#endif
