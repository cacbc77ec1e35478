/* kv_transform.c — see kv_transform.h. */
#include "kv_transform.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "lloyd_max.h"
#include "arch/x86/simd_avx2.h"

#define KVT_BITS_CAP 6
#ifndef KVT_SHRINK
#define KVT_SHRINK 1.0
#endif /* lloyd_max_gaussian computes up to 6 bits */

/* Lloyd-Max codebooks for 1..6 bits, computed once. */
static float cb_levels[KVT_BITS_CAP + 1][1 << KVT_BITS_CAP];
static float cb_thresh[KVT_BITS_CAP + 1][1 << KVT_BITS_CAP];
static double cb_mse[KVT_BITS_CAP + 1];
static pthread_once_t cb_once = PTHREAD_ONCE_INIT;

static void cb_init(void) {
    double c[1 << KVT_BITS_CAP];
    cb_mse[0] = 1.0;
    for (int b = 1; b <= KVT_BITS_CAP; b++) {
        const int k = 1 << b;
        lloyd_max_gaussian(b, c);
        for (int i = 0; i < k; i++) cb_levels[b][i] = (float)c[i];
        for (int i = 0; i + 1 < k; i++) cb_thresh[b][i] = (float)(0.5 * (c[i] + c[i + 1]));
        cb_mse[b] = lloyd_max_mse(c, k);
    }
}

double kvt_gauss_distortion(int b) {
    pthread_once(&cb_once, cb_init);
    if (b <= 0) return 1.0;
    return cb_mse[b > KVT_BITS_CAP ? KVT_BITS_CAP : b];
}

/* The per-vector scale in 8 bits: 0 is zero, else 2^((code - 128) / 16), a
 * 2.2% step over 2^-8 .. 2^8 (the transform already normalizes the typical
 * magnitude to 1). */
static uint8_t scale_encode(double s) {
    if (!(s > 0)) return 0;
    const long c = lround(16.0 * log2(s)) + 128;
    return (uint8_t)(c < 1 ? 1 : c > 255 ? 255 : c);
}

static float scale_table[256];
static pthread_once_t scale_once = PTHREAD_ONCE_INIT;
static void scale_init(void) {
    scale_table[0] = 0.0f;
    for (int c = 1; c < 256; c++) scale_table[c] = (float)exp2((c - 128) / 16.0);
}

static float scale_of(const uint8_t *src) { return scale_table[src[0]]; }

/* Symmetric eigendecomposition by cyclic Jacobi: A (n, n) is destroyed; V
 * receives the eigenvectors as columns, ev the eigenvalues (unsorted). */
static void jacobi_eig(double *A, int n, double *V, double *ev) {
    for (int i = 0; i < n * n; i++) V[i] = 0;
    for (int i = 0; i < n; i++) V[i * n + i] = 1;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < n; i++) {
            diag += A[i * n + i] * A[i * n + i];
            for (int j = i + 1; j < n; j++) off += A[i * n + j] * A[i * n + j];
        }
        if (off <= 1e-24 * (diag + 1e-300)) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = A[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                const double th = (A[q * n + q] - A[p * n + p]) / (2 * apq);
                const double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) {
                    const double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - s * akq;
                    A[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    const double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - s * aqk;
                    A[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    const double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq;
                    V[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) ev[i] = A[i * n + i];
}

void kvt_free(kvt_head *h) {
    free(h->mu);
    free(h->T);
    free(h->Tinv);
    free(h->sigma);
    free(h->bits);
    free(h->bit_ofs);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------ decode plan
 *
 * kvt_dot and kvt_axpy are the hot paths of kt* attention. Their reference
 * (kvt_dot_ref, kvt_axpy_ref) reads every coordinate's index bit by bit. The
 * fast kernels instead work on groups of 8 consecutive coordinates, using a
 * plan built once per head by kvt_fit:
 *  - kvt_fit orders the coordinates by bit width (most bits first, each
 *    width's whole groups of 8 before the remainders, which come together
 *    at the end; T's rows, Tinv's columns, sigma and bits permuted together,
 *    so encode, decode and kvt_prep_query agree), so all groups but the last
 *    one or two hold a single width;
 *  - per group: the byte where its bits start, and per lane the shift and
 *    mask that extract its index from that 64-bit window (lanes 0..3 from the
 *    window's low 32 bits, lanes 4..7 from the 32 bits starting at s4), and
 *    the offset of the lane's codebook in one concatenated table (cat_levels;
 *    entry 0 is 0.0 for lanes without bits).
 * Unpacking is then branch-free: one load, variable shifts, a mask, and a
 * table lookup (vpermps for a single-width group of <= 3 bits, a tree of
 * vpermps and blends for 4..6 bits). The one or two mixed groups gather from
 * the concatenated codebooks (20 ns per kt3.5 row at head_dim 64, against
 * 27 ns for one lookup per width blended by lane). Coordinates without bits
 * (ordered last) are skipped.
 *
 * The plan is stored in the allocation of bit_ofs, after its hd entries
 * (kvt_head's layout in kv_transform.h is left as it is), so kvt_free frees
 * it; every kvt_head comes from kvt_fit, which builds it. */

typedef struct {
    uint64_t sh_even[4]; /* lanes 0, 2, 4, 6: bit offset of the index in the group's 64-bit window */
    uint64_t sh_odd[4];  /* lanes 1, 3, 5, 7 */
    uint32_t mask[8];    /* (1 << bits) - 1; 0 for lanes without bits (or past hd). Also the offset
                          * of the lane's codebook in cat_levels */
    uint32_t load_at;    /* the window: the 8 bytes of the index field at load_at */
    uint8_t bits;        /* every lane has this many bits (1..6), or 0: mixed */
    uint8_t pad[27];
} kvt_group;

/* A run of whole groups of one width: they start on byte boundaries (every
 * earlier group is whole too, b bytes each), so the kernels read each with
 * one load and constant shifts. */
typedef struct {
    uint8_t bits;
    uint8_t n;        /* groups in the run */
    uint16_t first;   /* index of its first group */
} kvt_run;

typedef struct {
    uint32_t n_groups;    /* ceil(coordinates with bits / 8) */
    uint32_t n_full;      /* groups whose 8 lanes are all inside hd */
    uint32_t field_bytes; /* bytes of the index field */
    uint32_t small;       /* field_bytes < 8: every window is the whole field, read byte by byte */
    uint32_t n_fast;      /* groups [0, n_fast) are the runs; the rest go through their kvt_group */
    uint32_t n_runs;
    kvt_run runs[KVT_BITS_CAP];
    uint32_t pad[4];
    kvt_group g[];
} kvt_plan;

_Static_assert(sizeof(kvt_group) % 32 == 0 && sizeof(kvt_plan) % 32 == 0, "32-byte aligned groups");

/* cat_levels[2^b - 1 + k] = level k of the b-bit codebook; cat_levels[0] = 0 */
static float cat_levels[1 << (KVT_BITS_CAP + 1)];

static inline const kvt_plan *plan_of(const kvt_head *h) {
    return (const kvt_plan *)(((uintptr_t)(h->bit_ofs + h->hd) + 31) & ~(uintptr_t)31);
}

static int kvt_sort_coordinates(kvt_head *h, double *scratch) {
    const int hd = h->hd;
    int *perm = malloc(sizeof(int) * hd);
    float *f = malloc(sizeof(float) * hd * hd);
    if (!perm || !f) {
        free(perm);
        free(f);
        return -1;
    }
    /* widest first; of each width, whole groups of 8 first, the remainders
     * (count % 8) after all of those, then the coordinates without bits:
     * at most a few groups mix widths */
    int k = 0, cnt[KVT_BITS_CAP + 1] = {0};
    for (int i = 0; i < hd; i++) cnt[h->bits[i]]++;
    for (int pass = 0; pass < 2; pass++)
        for (int b = KVT_BITS_CAP; b >= 1; b--) {
            const int whole = cnt[b] - cnt[b] % 8;
            for (int i = 0, seen = 0; i < hd; i++)
                if (h->bits[i] == b) {
                    if ((seen < whole) == (pass == 0)) perm[k++] = i;
                    seen++;
                }
        }
    for (int i = 0; i < hd; i++)
        if (h->bits[i] == 0) perm[k++] = i;
    memcpy(f, h->T, sizeof(float) * hd * hd);
    for (int i = 0; i < hd; i++) memcpy(h->T + (size_t)i * hd, f + (size_t)perm[i] * hd, sizeof(float) * hd);
    memcpy(f, h->Tinv, sizeof(float) * hd * hd);
    for (int r = 0; r < hd; r++)
        for (int i = 0; i < hd; i++) h->Tinv[(size_t)r * hd + i] = f[(size_t)r * hd + perm[i]];
    for (int i = 0; i < hd; i++) scratch[i] = h->sigma[i];
    for (int i = 0; i < hd; i++) h->sigma[i] = (float)scratch[perm[i]];
    for (int i = 0; i < hd; i++) scratch[i] = h->bits[i];
    for (int i = 0; i < hd; i++) h->bits[i] = (uint8_t)scratch[perm[i]];
    free(perm);
    free(f);
    return 0;
}

/* Builds the plan (coordinates ordered, bit_ofs and total_bits set). */
static int kvt_plan_build(kvt_head *h) {
    const int hd = h->hd;
    int nz = 0; /* coordinates with bits: the first nz after ordering */
    while (nz < hd && h->bits[nz]) nz++;
    const int n_groups = (nz + 7) / 8;
    const size_t bytes = sizeof(uint32_t) * hd + 32 + sizeof(kvt_plan) + sizeof(kvt_group) * n_groups;
    uint32_t *bo = realloc(h->bit_ofs, bytes);
    if (!bo) return -1;
    h->bit_ofs = bo;
    kvt_plan *p = (kvt_plan *)plan_of(h);
    memset(p, 0, sizeof(kvt_plan) + sizeof(kvt_group) * n_groups);
    p->n_groups = (uint32_t)n_groups;
    p->n_full = (uint32_t)(8 * n_groups <= hd ? n_groups : n_groups - 1);
    p->field_bytes = (uint32_t)(h->total_bits + 7) / 8;
    p->small = p->field_bytes < 8;
    for (int g = 0; g < n_groups; g++) {
        kvt_group *G = &p->g[g];
        /* the window holds all of the group's bits: from its first byte, or
         * near the end of the field the field's last 8 bytes (never past it) */
        const uint32_t byte = h->bit_ofs[8 * g] / 8;
        G->load_at = p->small ? 0 : byte + 8 <= p->field_bytes ? byte : p->field_bytes - 8;
        int b0 = -1;
        bool mixed = false;
        for (int j = 0; j < 8; j++) {
            const int i = 8 * g + j;
            const int b = i < nz ? h->bits[i] : 0;
            if (b0 < 0) b0 = b;
            mixed |= b != b0;
            if (!b) continue;
            const uint64_t sh = h->bit_ofs[i] - 8 * G->load_at; /* + b <= 64 */
            if (j % 2) G->sh_odd[j / 2] = sh;
            else G->sh_even[j / 2] = sh;
            G->mask[j] = (1u << b) - 1;
        }
        G->bits = mixed ? 0 : (uint8_t)b0;
    }
    /* the leading single-width groups, as runs; a group qualifies while its
     * load (4 bytes for <= 4 bits, else 8: run_levels) stays inside the field */
    for (int g = 0; g < (int)p->n_full && !p->small; g++) {
        const kvt_group *G = &p->g[g];
        if (!G->bits || h->bit_ofs[8 * g] % 8 || h->bit_ofs[8 * g] / 8 + (G->bits <= 4 ? 4u : 8u) > p->field_bytes)
            break;
        kvt_run *r = p->n_runs ? &p->runs[p->n_runs - 1] : NULL;
        if (r && r->bits == G->bits && r->n < 255) r->n++;
        else if (p->n_runs < KVT_BITS_CAP) p->runs[p->n_runs++] = (kvt_run){G->bits, 1, (uint16_t)g};
        else break;
        p->n_fast = (uint32_t)g + 1;
    }
    return 0;
}

/* The 64-bit window of a group. */
static inline uint64_t group_window(const kvt_plan *p, const kvt_group *G, const uint8_t *f) {
    uint64_t w = 0;
    if (!p->small) memcpy(&w, f + G->load_at, 8);
    else
        for (uint32_t i = 0; i < p->field_bytes; i++) w |= (uint64_t)f[i] << (8 * i);
    return w;
}

/* Scalar twins of the fast kernels: the same plan, one lane at a time. */
static inline float lane_level(const kvt_group *G, uint64_t w, int j) {
    const uint64_t sh = j % 2 ? G->sh_odd[j / 2] : G->sh_even[j / 2];
    return cat_levels[G->mask[j] + ((uint32_t)(w >> sh) & G->mask[j])];
}

static float kvt_dot_scalar(const kvt_head *h, const uint8_t *src, const float *qy) {
    const kvt_plan *p = plan_of(h);
    float acc = 0.0f;
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t w = group_window(p, G, src + 1);
        for (int j = 0; j < 8; j++)
            if (G->mask[j]) acc += qy[8 * g + j] * lane_level(G, w, j);
    }
    return scale_of(src) * acc;
}

static void kvt_axpy_scalar(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = plan_of(h);
    const float ws = w * scale_of(src);
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t win = group_window(p, G, src + 1);
        for (int j = 0; j < 8; j++)
            if (G->mask[j]) acc_y[8 * g + j] += ws * h->sigma[8 * g + j] * lane_level(G, win, j);
    }
}

static float kvt_levels_scalar(const kvt_head *h, const uint8_t *src, float *y) {
    const kvt_plan *p = plan_of(h);
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t w = group_window(p, G, src + 1);
        for (int j = 0; j < 8 && 8 * (int)g + j < h->hd; j++) y[8 * g + j] = lane_level(G, w, j);
    }
    for (int i = 8 * (int)p->n_groups; i < h->hd; i++) y[i] = 0.0f;
    return scale_of(src);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define KVT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KVT_AI static inline __attribute__((always_inline)) KVT_AVX2

KVT_AI uint64_t ld64(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* The levels of the b-bit codebook (b = 1..6) at the 8 indices idx. */
KVT_AI __m256 lookup(int b, __m256i idx) {
    const float *t = cb_levels[b]; /* zero-padded to 64 entries */
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
    return _mm256_i32gather_ps(cat_levels, _mm256_add_epi32(idx, mask), 4);
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
    const kvt_plan *p = plan_of(h);
    if (p->small) return kvt_dot_scalar(h, src, qy);
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
    return scale_of(src) * simd_hsum_ps(acc);
}

static KVT_AVX2 void kvt_axpy_avx2(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = plan_of(h);
    if (p->small) {
        kvt_axpy_scalar(h, src, w, acc_y);
        return;
    }
    const uint8_t *f = src + 1;
    const __m256 ws = _mm256_set1_ps(w * scale_of(src));
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
    const kvt_plan *p = plan_of(h);
    const int hd = h->hd;
    if (p->small) {
        for (int r = 0; r < n; r++) s[r] = kvt_levels_scalar(h, rows[r] + ofs, y + (size_t)r * hd);
        return;
    }
    for (int r = 0; r < n; r++) s[r] = scale_of(rows[r] + ofs);
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
#endif

/* The kernels kvt_dot / kvt_axpy run: the scalar plan kernels, replaced once
 * (first kvt_fit, before any head can be used) by the AVX2 ones when cpu.c
 * reports AVX2+FMA+F16C and ROTKV_ISA does not cap it. */
static float (*dot_impl)(const kvt_head *, const uint8_t *, const float *) = kvt_dot_scalar;
static void (*axpy_impl)(const kvt_head *, const uint8_t *, float, float *) = kvt_axpy_scalar;
static float (*levels_impl)(const kvt_head *, const uint8_t *, float *) = kvt_levels_scalar;
static void kvt_levels_rows_scalar(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y,
                                   float *s) {
    for (int r = 0; r < n; r++) s[r] = kvt_levels_scalar(h, rows[r] + ofs, y + (size_t)r * h->hd);
}
static void (*levels_rows_impl)(const kvt_head *, const uint8_t *const *, size_t, int, float *,
                                float *) = kvt_levels_rows_scalar;
static bool impl_avx2; /* the AVX2 kernels were chosen (kvt_prep_query, kvt_finish too) */
static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

static void impl_select(void) {
    cat_levels[0] = 0.0f;
    for (int b = 1; b <= KVT_BITS_CAP; b++)
        for (int k = 0; k < 1 << b; k++) cat_levels[(1 << b) - 1 + k] = cb_levels[b][k];
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (cpu_isa_active() >= CPU_ISA_AVX2) {
        dot_impl = kvt_dot_avx2;
        axpy_impl = kvt_axpy_avx2;
        levels_impl = kvt_levels_avx2;
        levels_rows_impl = kvt_levels_rows_avx2;
        impl_avx2 = true;
    }
#endif
}

int kvt_fit(kvt_head *h, int hd, const float *X, int n, const double *M, int budget_bits) {
    pthread_once(&cb_once, cb_init);
    pthread_once(&scale_once, scale_init);
    pthread_once(&impl_once, impl_select);
    memset(h, 0, sizeof *h);
    h->hd = hd;
    h->mu = calloc((size_t)hd, sizeof(float));
    h->T = malloc(sizeof(float) * hd * hd);
    h->Tinv = malloc(sizeof(float) * hd * hd);
    h->sigma = malloc(sizeof(float) * hd);
    h->bits = calloc((size_t)hd, 1);
    h->bit_ofs = malloc(sizeof(uint32_t) * hd);
    double *C = calloc((size_t)hd * hd, sizeof(double)), *W = malloc(sizeof(double) * hd * hd);
    double *V = malloc(sizeof(double) * hd * hd), *ev = malloc(sizeof(double) * hd);
    double *Ws = malloc(sizeof(double) * hd * hd), *Wis = malloc(sizeof(double) * hd * hd);
    double *tmp = malloc(sizeof(double) * hd * hd), *U = malloc(sizeof(double) * hd * hd);
    double *lam = malloc(sizeof(double) * hd), *mud = calloc((size_t)hd, sizeof(double));
    int rc = -1;
    if (!h->mu || !h->T || !h->Tinv || !h->sigma || !h->bits || !h->bit_ofs || !C || !W || !V || !ev || !Ws ||
        !Wis || !tmp || !U || !lam || !mud || n < 1)
        goto out;
    /* center and covariance */
    for (int t = 0; t < n; t++)
        for (int i = 0; i < hd; i++) mud[i] += X[(size_t)t * hd + i];
    for (int i = 0; i < hd; i++) mud[i] /= n;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < hd; i++) {
            const double di = X[(size_t)t * hd + i] - mud[i];
            for (int j = i; j < hd; j++) C[i * hd + j] += di * (X[(size_t)t * hd + j] - mud[j]);
        }
    double trc = 0;
    for (int i = 0; i < hd; i++)
        for (int j = i; j < hd; j++) C[j * hd + i] = C[i * hd + j] /= n;
    for (int i = 0; i < hd; i++) trc += C[i * hd + i];
    /* shrink toward isotropic in proportion to hd/n: a short calibration batch
     * must not leave directions it happened not to see without bits */
    const double alpha = fmin(0.9, KVT_SHRINK * hd / (n + hd)) + 1e-3;
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) C[i * hd + j] *= 1 - alpha;
    for (int i = 0; i < hd; i++) C[i * hd + i] += alpha * trc / hd + 1e-12;
    /* metric square root W^{1/2} and inverse square root (eigenvalues floored) */
    if (M) memcpy(W, M, sizeof(double) * hd * hd);
    else
        for (int i = 0; i < hd * hd; i++) W[i] = (i % (hd + 1)) == 0;
    jacobi_eig(W, hd, V, ev);
    double evmax = 0;
    for (int i = 0; i < hd; i++) evmax = ev[i] > evmax ? ev[i] : evmax;
    for (int i = 0; i < hd; i++) ev[i] = ev[i] > 1e-6 * evmax ? ev[i] : 1e-6 * evmax + 1e-30;
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < hd; k++) {
                a += V[i * hd + k] * sqrt(ev[k]) * V[j * hd + k];
                b += V[i * hd + k] / sqrt(ev[k]) * V[j * hd + k];
            }
            Ws[i * hd + j] = a;
            Wis[i * hd + j] = b;
        }
    /* C' = W^{1/2} C W^{1/2}; its eigenvectors U and eigenvalues lambda */
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) {
            double a = 0;
            for (int k = 0; k < hd; k++) a += C[i * hd + k] * Ws[k * hd + j];
            tmp[i * hd + j] = a;
        }
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) {
            double a = 0;
            for (int k = 0; k < hd; k++) a += Ws[i * hd + k] * tmp[k * hd + j];
            C[i * hd + j] = a;
        }
    jacobi_eig(C, hd, U, lam);
    for (int i = 0; i < hd; i++) lam[i] = lam[i] > 1e-30 ? lam[i] : 1e-30;
    /* T = Uᵀ W^{1/2};  Tinv = W^{-1/2} U */
    for (int i = 0; i < hd; i++)
        for (int j = 0; j < hd; j++) {
            double a = 0, b = 0;
            for (int k = 0; k < hd; k++) {
                a += U[k * hd + i] * Ws[k * hd + j];
                b += Wis[i * hd + k] * U[k * hd + j];
            }
            h->T[i * hd + j] = (float)a;
            h->Tinv[i * hd + j] = (float)b;
        }
    for (int i = 0; i < hd; i++) {
        h->mu[i] = (float)mud[i];
        h->sigma[i] = (float)sqrt(lam[i]);
    }
    /* greedy reverse water-filling: each bit goes where it removes the most distortion */
    if (budget_bits > hd * KVT_BITS_CAP) budget_bits = hd * KVT_BITS_CAP;
    for (int step = 0; step < budget_bits; step++) {
        int best = -1;
        double gain = -1;
        for (int i = 0; i < hd; i++) {
            if (h->bits[i] >= KVT_BITS_CAP) continue;
            const double g = lam[i] * (kvt_gauss_distortion(h->bits[i]) - kvt_gauss_distortion(h->bits[i] + 1));
            if (g > gain) {
                gain = g;
                best = i;
            }
        }
        h->bits[best]++;
    }
    /* coordinates ordered by bits (see the decode plan) so that the kernels
     * see uniform groups of 8 */
    if (kvt_sort_coordinates(h, tmp) != 0) goto out;
    uint32_t ofs = 0;
    for (int i = 0; i < hd; i++) {
        h->bit_ofs[i] = ofs;
        ofs += h->bits[i];
    }
    h->total_bits = (int)ofs;
    h->row_bytes = 1 + (ofs + 7) / 8;
    if (kvt_plan_build(h) != 0) goto out;
    rc = 0;
out:
    free(C); free(W); free(V); free(ev); free(Ws); free(Wis); free(tmp); free(U); free(lam); free(mud);
    if (rc) kvt_free(h);
    return rc;
}

static void put_bits(uint8_t *f, uint32_t ofs, int nb, uint32_t v) {
    for (int b = 0; b < nb; b++, ofs++)
        if (v >> b & 1) f[ofs >> 3] |= (uint8_t)(1u << (ofs & 7));
}

static uint32_t get_bits(const uint8_t *f, uint32_t ofs, int nb) {
    uint32_t v = 0;
    for (int b = 0; b < nb; b++, ofs++) v |= (uint32_t)(f[ofs >> 3] >> (ofs & 7) & 1) << b;
    return v;
}

static int nearest(int b, float u) {
    /* index = number of thresholds <= u (binary search) */
    int lo = 0, hi = (1 << b) - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (cb_thresh[b][mid] <= u) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

void kvt_encode(const kvt_head *h, const float *x, uint8_t *dst) {
    const int hd = h->hd;
    float y[1024], xc[1024];
    uint8_t idx[1024];
    double ey = 0, el = 0;
    for (int j = 0; j < hd; j++) xc[j] = (isfinite(x[j]) ? x[j] : 0.0f) - h->mu[j];
    for (int i = 0; i < hd; i++) {
        double a = 0;
        const float *t = h->T + (size_t)i * hd;
        for (int j = 0; j < hd; j++) a += t[j] * xc[j];
        y[i] = (float)a;
        ey += a * a;
        el += (double)h->sigma[i] * h->sigma[i];
    }
    memset(dst, 0, h->row_bytes);
    const double s0 = el > 0 ? sqrt(ey / el) : 0;
    double num = 0, den = 0;
    for (int i = 0; i < hd; i++) {
        idx[i] = 0;
        if (!h->bits[i] || s0 <= 0) continue;
        idx[i] = (uint8_t)nearest(h->bits[i], (float)(y[i] / (s0 * h->sigma[i])));
        const double r = (double)h->sigma[i] * cb_levels[h->bits[i]][idx[i]];
        num += y[i] * r;
        den += r * r;
    }
    /* the scale is quantized first and the indices re-chosen for it, so its
     * rounding is absorbed per coordinate instead of scaling every score */
    dst[0] = scale_encode(den > 0 ? num / den : 0.0);
    const float sq = scale_table[dst[0]];
    for (int i = 0; i < hd; i++) {
        if (!h->bits[i]) continue;
        const int k = sq > 0 ? nearest(h->bits[i], y[i] / (sq * h->sigma[i])) : 0;
        put_bits(dst + 1, h->bit_ofs[i], h->bits[i], (uint32_t)k);
    }
}


void kvt_decode(const kvt_head *h, const uint8_t *src, float *x) {
    const int hd = h->hd;
    float y[1024];
    const float s = scale_of(src);
    for (int i = 0; i < hd; i++)
        y[i] = h->bits[i] ? s * h->sigma[i] * cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])] : 0.0f;
    for (int i = 0; i < hd; i++) {
        double a = h->mu[i];
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[i * hd + j] * y[j];
        x[i] = (float)a;
    }
}

static float kvt_prep_query_scalar(const kvt_head *h, const float *q, float *qy) {
    const int hd = h->hd;
    double qm = 0;
    for (int j = 0; j < hd; j++) qm += (double)q[j] * h->mu[j];
    for (int i = 0; i < hd; i++) {
        double a = 0;
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[j * hd + i] * q[j];
        qy[i] = (float)(a * h->sigma[i]);
    }
    return (float)qm;
}

/* The obviously-correct references: every coordinate's index read bit by bit. */
float kvt_dot_ref(const kvt_head *h, const uint8_t *src, const float *qy);
void kvt_axpy_ref(const kvt_head *h, const uint8_t *src, float w, float *acc_y);

float kvt_dot_ref(const kvt_head *h, const uint8_t *src, const float *qy) {
    const float s = scale_of(src);
    float acc = 0.0f;
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc += qy[i] * cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
    return s * acc;
}

void kvt_axpy_ref(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const float ws = w * scale_of(src);
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc_y[i] += ws * h->sigma[i] * cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
}

float kvt_dot(const kvt_head *h, const uint8_t *src, const float *qy) { return dot_impl(h, src, qy); }

void kvt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y) { axpy_impl(h, src, w, acc_y); }

float kvt_levels(const kvt_head *h, const uint8_t *src, float *y) { return levels_impl(h, src, y); }

void kvt_levels_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s) {
    levels_rows_impl(h, rows, ofs, n, y, s);
}

/* kvt_levels by ISA level, for tests, like kvt_kernels_isa below. */
typedef float (*kvt_levels_fn)(const kvt_head *, const uint8_t *, float *);
int kvt_levels_isa(cpu_isa isa, kvt_levels_fn *levels);
int kvt_levels_isa(cpu_isa isa, kvt_levels_fn *levels) {
    pthread_once(&cb_once, cb_init);
    pthread_once(&impl_once, impl_select);
    *levels = NULL;
    if (isa == CPU_ISA_SCALAR) *levels = kvt_levels_scalar;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (isa == CPU_ISA_AVX2 && cpu_isa_supported(CPU_ISA_AVX2)) *levels = kvt_levels_avx2;
#endif
    return *levels ? 0 : -1;
}

/* Every implementation of kvt_dot / kvt_axpy by ISA level, for tests
 * (tests/test_kv_simd.c declares these; kv_transform.h is left as it is):
 * CPU_ISA_SCALAR the scalar plan kernels, CPU_ISA_AVX2 the AVX2 ones (NULL
 * when this CPU lacks AVX2). */
typedef float (*kvt_dot_fn)(const kvt_head *, const uint8_t *, const float *);
typedef void (*kvt_axpy_fn)(const kvt_head *, const uint8_t *, float, float *);
int kvt_kernels_isa(cpu_isa isa, kvt_dot_fn *dot, kvt_axpy_fn *axpy);
int kvt_kernels_isa(cpu_isa isa, kvt_dot_fn *dot, kvt_axpy_fn *axpy) {
    pthread_once(&cb_once, cb_init);
    pthread_once(&impl_once, impl_select);
    if (isa == CPU_ISA_SCALAR) {
        *dot = kvt_dot_scalar;
        *axpy = kvt_axpy_scalar;
        return 0;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (isa == CPU_ISA_AVX2 && cpu_isa_supported(CPU_ISA_AVX2)) {
        *dot = kvt_dot_avx2;
        *axpy = kvt_axpy_avx2;
        return 0;
    }
#endif
    *dot = NULL;
    *axpy = NULL;
    return -1;
}

static void kvt_finish_scalar(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    for (int i = 0; i < hd; i++) {
        double a = (double)wsum * h->mu[i];
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[i * hd + j] * acc_y[j];
        out[i] += (float)a;
    }
}

/* Once per query and KV head, the AVX2 twins (head_dim % 8 == 0) of the two
 * hd x hd products above, in float: Tinv's rows are read contiguously. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
static KVT_AVX2 float kvt_prep_query_avx2(const kvt_head *h, const float *q, float *qy) {
    const int hd = h->hd;
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
    for (int i = 0; i < hd; i++) {
        const float *t = h->Tinv + (size_t)i * hd;
        __m256 a = _mm256_setzero_ps();
        for (int j = 0; j < hd; j += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(t + j), _mm256_loadu_ps(acc_y + j), a);
        out[i] += simd_hsum_ps(a) + wsum * h->mu[i];
    }
}
#endif

float kvt_prep_query(const kvt_head *h, const float *q, float *qy) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (impl_avx2 && h->hd % 8 == 0) return kvt_prep_query_avx2(h, q, qy);
#endif
    return kvt_prep_query_scalar(h, q, qy);
}

void kvt_finish(const kvt_head *h, const float *acc_y, float wsum, float *out) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (impl_avx2 && h->hd % 8 == 0) {
        kvt_finish_avx2(h, acc_y, wsum, out);
        return;
    }
#endif
    kvt_finish_scalar(h, acc_y, wsum, out);
}
