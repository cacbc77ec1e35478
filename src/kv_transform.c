/* kv_transform.c — see kv_transform.h. The fit, encode/decode, the
 * bit-by-bit references and the scalar row of the kernels (kvt_kernels_scalar,
 * arch/kv_arch.h); the AVX2 row is arch/x86/kv_transform_avx2.c's (AVX-512:
 * kv_transform_avx512.c), the NEON row arch/arm/kv_transform_neon.c's, and all
 * read the decode plan and tables of kv_transform_plan.h. kvt_fit picks the
 * row once per process, from cpu_isa_active() (ROTKV_ISA caps it). */
#include "kv_transform.h"

#include "linalg.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "arch/kv_arch.h"
#include "cpu.h"
#include "kv_transform_plan.h"
#include "kv_trellis.h"
#include "lloyd_max.h"

#ifndef KVT_SHRINK
#define KVT_SHRINK 1.0
#endif

/* Lloyd-Max codebooks for 1..6 bits, computed once. */
float kvt_cb_levels[KVT_BITS_CAP + 1][1 << KVT_BITS_CAP];
static float cb_thresh[KVT_BITS_CAP + 1][1 << KVT_BITS_CAP];
static double cb_mse[KVT_BITS_CAP + 1];
static pthread_once_t cb_once = PTHREAD_ONCE_INIT;

/* x rounded to the nearest bfloat16 (ties to even), as a float. */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, 4);
    return x;
}

/* The levels are rounded to bfloat16 (8 significant bits: a relative change
 * of at most 2^-9, which moves the quantizer's MSE by well under 0.1%) so that
 * the VBMI kernels can look them up as two bytes each. The thresholds and MSE
 * are those of the rounded levels. */
static void cb_init(void) {
    double c[1 << KVT_BITS_CAP];
    cb_mse[0] = 1.0;
    for (int b = 1; b <= KVT_BITS_CAP; b++) {
        const int k = 1 << b;
        lloyd_max_gaussian(b, c);
        for (int i = 0; i < k; i++) c[i] = kvt_cb_levels[b][i] = round_bf16((float)c[i]);
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

float kvt_scale_table[256];
static pthread_once_t scale_once = PTHREAD_ONCE_INIT;
static void scale_init(void) {
    kvt_scale_table[0] = 0.0f;
    for (int c = 1; c < 256; c++) kvt_scale_table[c] = (float)exp2((c - 128) / 16.0);
}


void kvt_free(kvt_head *h) {
    free(h->mu);
    free(h->T);
    free(h->Tinv);
    free(h->sigma);
    free(h->bits);
    free(h->bit_ofs);
    free(h->tt);
    memset(h, 0, sizeof *h);
}

/* ------------------------------------------------------------ decode plan
 *
 * kv_transform_plan.h describes the plan and the tables the kernels read. */

float kvt_cat_levels[1 << (KVT_BITS_CAP + 1)];
uint8_t kvt_cat_bf16_hi[1 << (KVT_BITS_CAP + 1)], kvt_cat_bf16_lo[1 << (KVT_BITS_CAP + 1)];

static int kvt_sort_coordinates(kvt_head *h, double *scratch) {
    const int hd = h->hd;
    int *perm = malloc(sizeof(int) * hd);
    float *f = malloc(sizeof(float) * hd * hd);
    if (!perm || !f) {
        free(perm);
        free(f);
        return -1;
    }
    /* widest first: of each width, whole groups of 16 (the AVX-512 groups);
     * then, widest first again, whole groups of 8 of what is left (the AVX2
     * groups); then the remainders (count % 8) after all of those, then the
     * coordinates without bits: at most a few groups of either size mix widths */
    int k = 0, cnt[KVT_BITS_CAP + 1] = {0};
    for (int i = 0; i < hd; i++) cnt[h->bits[i]]++;
    for (int pass = 0; pass < 3; pass++)
        for (int b = KVT_BITS_CAP; b >= 1; b--) {
            const int w16 = cnt[b] - cnt[b] % 16, w8 = cnt[b] - cnt[b] % 8;
            const int lo = pass == 0 ? 0 : pass == 1 ? w16 : w8, hi = pass == 0 ? w16 : pass == 1 ? w8 : cnt[b];
            for (int i = 0, seen = 0; i < hd; i++)
                if (h->bits[i] == b) {
                    if (seen >= lo && seen < hi) perm[k++] = i;
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
    const int n_groups = (nz + 7) / 8, n_groups16 = (nz + 15) / 16, n_groups64 = hd / 64;
    const size_t g16_bytes = 64 + sizeof(kvt_group16) * (size_t)n_groups16 + sizeof(kvt_group64) * (size_t)n_groups64;
    const size_t bytes = sizeof(uint32_t) * hd + 32 + sizeof(kvt_plan) + sizeof(kvt_group) * n_groups + g16_bytes;
    uint32_t *bo = realloc(h->bit_ofs, bytes);
    if (!bo) return -1;
    h->bit_ofs = bo;
    kvt_plan *p = (kvt_plan *)kvt_plan_of(h);
    memset(p, 0, sizeof(kvt_plan) + sizeof(kvt_group) * n_groups + g16_bytes);
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
    /* the groups of 16 (kv_transform_plan.h), 64-byte aligned after the groups of 8 */
    const uintptr_t g16 = ((uintptr_t)(p->g + n_groups) + 63) & ~(uintptr_t)63;
    p->n_groups16 = (uint32_t)n_groups16;
    p->g16_at = (uint32_t)(g16 - (uintptr_t)p);
    for (int g = 0; g < n_groups16; g++) {
        kvt_group16 *G = (kvt_group16 *)(void *)((uint8_t *)p + p->g16_at) + g;
        G->load_at = h->bit_ofs[16 * g] / 8;
        for (uint32_t k = 0; k < 16; k++)
            if (G->load_at + k < p->field_bytes) G->load_mask |= 1u << k;
        int b0 = -1;
        bool mixed = false;
        for (int j = 0; j < 16; j++) {
            const int i = 16 * g + j;
            const int b = i < nz ? h->bits[i] : 0;
            if (b0 < 0) b0 = b;
            mixed |= b != b0;
            if (b > G->max_bits) G->max_bits = (uint8_t)b;
            G->words[2 * j] = 0;
            G->words[2 * j + 1] = 1;
            if (!b) continue;
            const uint32_t rel = h->bit_ofs[i] - 8 * G->load_at; /* < 8 + 15 * 6: inside the 16 bytes */
            G->words[2 * j] = (uint16_t)(rel / 16);
            G->words[2 * j + 1] = (uint16_t)(rel / 16 + 1);
            G->shift[j] = rel % 16;
            G->mask[j] = (1u << b) - 1;
        }
        G->bits = mixed ? 0 : (uint8_t)b0;
    }
    /* the blocks of 64 (kv_transform_plan.h), after the groups of 16 */
    p->n_groups64 = (uint32_t)n_groups64;
    p->g64_at = p->g16_at + (uint32_t)(sizeof(kvt_group16) * (size_t)n_groups16);
    for (int g = 0; g < n_groups64; g++) {
        kvt_group64 *G = (kvt_group64 *)(void *)((uint8_t *)p + p->g64_at) + g;
        const uint32_t base = h->bit_ofs[64 * g] / 8;
        G->load_at = base;
        for (uint32_t k = 0; k < 64; k++)
            if (base + k < p->field_bytes) G->load_mask |= 1ull << k;
        for (int p8 = 0; p8 < 64; p8++) {
            const int l = p8 / 16, m = p8 / 4 % 4, k = p8 % 4, half = p8 / 4 % 2;
            const int c = 64 * g + 16 * m + 4 * l + k, c0 = c - k; /* c0: first of the run of 4 */
            const int b = c < nz ? h->bits[c] : 0;
            const uint32_t start = h->bit_ofs[c0] / 8; /* the run's 4 bytes: its bits, from its first byte */
            G->gather[p8] = (uint8_t)(start - base + (uint32_t)(p8 % 4)); /* < 48 + 4 */
            G->shift[p8] = (uint8_t)(32 * half + (b ? h->bit_ofs[c] - 8 * start : 0)); /* + b <= 32 * half + 32 */
            G->mask[p8] = (uint8_t)((1u << b) - 1);
        }
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
    return kvt_cat_levels[G->mask[j] + ((uint32_t)(w >> sh) & G->mask[j])];
}

static float kvt_dot_scalar(const kvt_head *h, const uint8_t *src, const float *qy) {
    const kvt_plan *p = kvt_plan_of(h);
    float acc = 0.0f;
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t w = group_window(p, G, src + 1);
        for (int j = 0; j < 8; j++)
            if (G->mask[j]) acc += qy[8 * g + j] * lane_level(G, w, j);
    }
    return kvt_scale_of(src) * acc;
}

static void kvt_axpy_scalar(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const kvt_plan *p = kvt_plan_of(h);
    const float ws = w * kvt_scale_of(src);
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t win = group_window(p, G, src + 1);
        for (int j = 0; j < 8; j++)
            if (G->mask[j]) acc_y[8 * g + j] += ws * h->sigma[8 * g + j] * lane_level(G, win, j);
    }
}

static float kvt_levels_scalar(const kvt_head *h, const uint8_t *src, float *y) {
    const kvt_plan *p = kvt_plan_of(h);
    for (uint32_t g = 0; g < p->n_groups; g++) {
        const kvt_group *G = &p->g[g];
        const uint64_t w = group_window(p, G, src + 1);
        for (int j = 0; j < 8 && 8 * (int)g + j < h->hd; j++) y[8 * g + j] = lane_level(G, w, j);
    }
    for (int i = 8 * (int)p->n_groups; i < h->hd; i++) y[i] = 0.0f;
    return kvt_scale_of(src);
}


static void kvt_levels_rows_scalar(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y,
                                   float *s) {
    for (int r = 0; r < n; r++) s[r] = kvt_levels_scalar(h, rows[r] + ofs, y + (size_t)r * h->hd);
}

/* The kernels row in use: chosen once (first kvt_fit, before any head can be
 * used) from cpu_isa_active(), the active level's row or the highest level's
 * below it that has one; the scalar row until then. */
static const kvt_kernels *g_kvt = &kvt_kernels_scalar;
static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

/* The row of exactly one level, or NULL if this CPU cannot run it (or the
 * level has no row of its own: AVX-VNNI, dotprod, i8mm). */
static const kvt_kernels *level_row(cpu_isa isa) {
    if ((int)isa < 0 || isa >= CPU_ISA_COUNT || !cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &kvt_kernels_scalar;
    case CPU_ISA_AVX2: return kvt_kernels_avx2.dot ? &kvt_kernels_avx2 : NULL;
    case CPU_ISA_AVX512:
        if (!kvt_kernels_avx512.dot) return NULL;
        return cpu_has_avx512_vbmi() && kvt_kernels_avx512_vbmi.dot ? &kvt_kernels_avx512_vbmi : &kvt_kernels_avx512;
    case CPU_ISA_NEON: return kvt_kernels_neon.dot ? &kvt_kernels_neon : NULL;
    default: return NULL;
    }
}

static void impl_select(void) {
    pthread_once(&cb_once, cb_init); /* the tables below are made from the codebooks */
    kvt_cat_levels[0] = 0.0f;
    for (int b = 1; b <= KVT_BITS_CAP; b++)
        for (int k = 0; k < 1 << b; k++) kvt_cat_levels[(1 << b) - 1 + k] = kvt_cb_levels[b][k];
    for (int i = 0; i < 1 << (KVT_BITS_CAP + 1); i++) {
        uint32_t u;
        memcpy(&u, &kvt_cat_levels[i], 4);
        kvt_cat_bf16_hi[i] = (uint8_t)(u >> 24);
        kvt_cat_bf16_lo[i] = (uint8_t)(u >> 16);
    }
    const kvt_kernels *k = NULL;
    for (int isa = (int)cpu_isa_active(); isa > CPU_ISA_SCALAR && !k; isa--) k = level_row((cpu_isa)isa);
    if (k) g_kvt = k;
}

int kvt_fit(kvt_head *h, int hd, const float *X, int n, const double *M, int budget_bits) {
    memset(h, 0, sizeof *h);
    if (n < 1 || hd < 1) return -1;
    double *mean = calloc((size_t)hd, sizeof(double)), *C = calloc((size_t)hd * hd, sizeof(double));
    int rc = -1;
    if (mean && C) {
        for (int t = 0; t < n; t++)
            for (int i = 0; i < hd; i++) mean[i] += X[(size_t)t * hd + i];
        for (int i = 0; i < hd; i++) mean[i] /= n;
        for (int t = 0; t < n; t++)
            for (int i = 0; i < hd; i++) {
                const double di = X[(size_t)t * hd + i] - mean[i];
                for (int j = i; j < hd; j++) C[i * hd + j] += di * (X[(size_t)t * hd + j] - mean[j]);
            }
        for (int i = 0; i < hd; i++)
            for (int j = i; j < hd; j++) C[j * hd + i] = C[i * hd + j] /= n;
        rc = kvt_fit_moments(h, hd, mean, C, (double)n, M, budget_bits);
    }
    free(mean);
    free(C);
    return rc;
}

int kvt_fit_moments(kvt_head *h, int hd, const double *mean, const double *cov, double n, const double *M,
                    int budget_bits) {
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
    double *C = malloc(sizeof(double) * hd * hd), *W = malloc(sizeof(double) * hd * hd);
    double *V = malloc(sizeof(double) * hd * hd), *ev = malloc(sizeof(double) * hd);
    double *Ws = malloc(sizeof(double) * hd * hd), *Wis = malloc(sizeof(double) * hd * hd);
    double *tmp = malloc(sizeof(double) * hd * hd), *U = malloc(sizeof(double) * hd * hd);
    double *lam = malloc(sizeof(double) * hd), *mud = calloc((size_t)hd, sizeof(double));
    int rc = -1;
    if (!h->mu || !h->T || !h->Tinv || !h->sigma || !h->bits || !h->bit_ofs || !C || !W || !V || !ev || !Ws ||
        !Wis || !tmp || !U || !lam || !mud || !(n >= 1))
        goto out;
    memcpy(mud, mean, sizeof(double) * hd);
    memcpy(C, cov, sizeof(double) * hd * hd);
    double trc = 0;
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
    if (sym_eig(W, hd, V, ev) != 0) goto out;
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
    if (sym_eig(C, hd, U, lam) != 0) goto out;
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
    if (h->tt) {
        ktt_encode(h, x, dst);
        return;
    }
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
        const double r = (double)h->sigma[i] * kvt_cb_levels[h->bits[i]][idx[i]];
        num += y[i] * r;
        den += r * r;
    }
    /* the scale is quantized first and the indices re-chosen for it, so its
     * rounding is absorbed per coordinate instead of scaling every score */
    dst[0] = scale_encode(den > 0 ? num / den : 0.0);
    const float sq = kvt_scale_table[dst[0]];
    for (int i = 0; i < hd; i++) {
        if (!h->bits[i]) continue;
        const int k = sq > 0 ? nearest(h->bits[i], y[i] / (sq * h->sigma[i])) : 0;
        put_bits(dst + 1, h->bit_ofs[i], h->bits[i], (uint32_t)k);
    }
}


void kvt_decode(const kvt_head *h, const uint8_t *src, float *x) {
    if (h->tt) {
        ktt_decode(h, src, x);
        return;
    }
    const int hd = h->hd;
    float y[1024];
    const float s = kvt_scale_of(src);
    for (int i = 0; i < hd; i++)
        y[i] = h->bits[i] ? s * h->sigma[i] * kvt_cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])] : 0.0f;
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
    const float s = kvt_scale_of(src);
    float acc = 0.0f;
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc += qy[i] * kvt_cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
    return s * acc;
}

void kvt_axpy_ref(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const float ws = w * kvt_scale_of(src);
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc_y[i] += ws * h->sigma[i] * kvt_cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
}

static void kvt_finish_scalar(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    for (int i = 0; i < hd; i++) {
        double a = (double)wsum * h->mu[i];
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[i * hd + j] * acc_y[j];
        out[i] += (float)a;
    }
}

const kvt_kernels kvt_kernels_scalar = {
    .dot = kvt_dot_scalar,
    .axpy = kvt_axpy_scalar,
    .levels = kvt_levels_scalar,
    .levels_rows = kvt_levels_rows_scalar,
    .prep_query = kvt_prep_query_scalar,
    .finish = kvt_finish_scalar,
};

const kvt_kernels *kvt_kernels_at(cpu_isa isa) {
    pthread_once(&cb_once, cb_init);
    pthread_once(&scale_once, scale_init);
    pthread_once(&impl_once, impl_select);
    return level_row(isa);
}

const kvt_kernels *kvt_kernels_avx512_plain(void) {
    return kvt_kernels_at(CPU_ISA_AVX512) ? &kvt_kernels_avx512 : NULL;
}

float kvt_prep_query(const kvt_head *h, const float *q, float *qy) { return g_kvt->prep_query(h, q, qy); }

float kvt_dot(const kvt_head *h, const uint8_t *src, const float *qy) {
    return h->tt ? ktt_dot(h, src, qy) : g_kvt->dot(h, src, qy);
}

void kvt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    if (h->tt) ktt_axpy(h, src, w, acc_y);
    else g_kvt->axpy(h, src, w, acc_y);
}

float kvt_levels(const kvt_head *h, const uint8_t *src, float *y) {
    return h->tt ? ktt_levels(h, src, y) : g_kvt->levels(h, src, y);
}

bool kvt_has_accum_rows(int hd) {
    pthread_once(&impl_once, impl_select);
    return g_kvt->accum_rows && hd % g_kvt->accum_rows_hd == 0;
}

void kvt_accum_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W, int w_stride,
                    int ng, float *acc_y) {
    if (h->tt) ktt_accum_rows(h, rows, ofs, n, W, w_stride, ng, acc_y);
    else g_kvt->accum_rows(h, rows, ofs, n, W, w_stride, ng, acc_y);
}

void kvt_accum_rows_ref(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W,
                        int w_stride, int ng, float *acc_y) {
    const int hd = h->hd;
    float *y = malloc(sizeof(float) * (size_t)hd);
    if (!y) return;
    for (int r = 0; r < n; r++) {
        const float s = kvt_levels_scalar(h, rows[r] + ofs, y);
        for (int g = 0; g < ng; g++)
            for (int i = 0; i < hd; i++) acc_y[(size_t)g * hd + i] += W[(size_t)g * w_stride + r] * s * y[i];
    }
    free(y);
}

void kvt_levels_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s) {
    if (h->tt) ktt_levels_rows(h, rows, ofs, n, y, s);
    else g_kvt->levels_rows(h, rows, ofs, n, y, s);
}

void kvt_finish(const kvt_head *h, const float *acc_y, float wsum, float *out) { g_kvt->finish(h, acc_y, wsum, out); }
