/* kv_trellis.c — the ktt cache types; see kv_trellis.h. The head conversion,
 * encode, the reference and scalar decoders, and the per-level kernel choice
 * (the AVX2 and AVX-512 rows are arch/x86/kv_trellis_avx2.c and
 * kv_trellis_avx512.c). */
#include "kv_trellis.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "kv_transform_plan.h"

/* ------------------------------------------------------------ the code, once per process */

const float *ktt_tables;
static float *tables_buf;
static uint64_t code_id;
static pthread_once_t code_once = PTHREAD_ONCE_INIT;
static const ktt_kernels *g_ktt = &ktt_kernels_scalar;

/* The row of exactly one level, or NULL (no tables needed to name it). */
static const ktt_kernels *level_row(cpu_isa isa) {
    if ((int)isa < 0 || isa >= CPU_ISA_COUNT || !cpu_isa_supported(isa)) return NULL;
    switch (isa) {
    case CPU_ISA_SCALAR: return &ktt_kernels_scalar;
    case CPU_ISA_AVX2: return ktt_kernels_avx2.levels ? &ktt_kernels_avx2 : NULL;
    case CPU_ISA_AVX512: return ktt_kernels_avx512.levels ? &ktt_kernels_avx512 : NULL;
    default: return NULL;
    }
}

static void code_init(void) {
    const trellis_code *tc = trellis_default();
    /* kv_transform.c's tables (Lloyd-Max levels, scales): a throwaway fit builds them */
    (void)kvt_gauss_distortion(1);
    {
        kvt_head tmp;
        const double mean[1] = {0}, cov[1] = {1};
        if (kvt_fit_moments(&tmp, 1, mean, cov, 16, NULL, 1) == 0) kvt_free(&tmp);
    }
    if (!tc || tc->L != KTT_L) return;
    const size_t S = (size_t)1 << KTT_L;
    tables_buf = malloc(sizeof(float) * 4 * S);
    if (!tables_buf) return;
    for (int k = 1; k <= 4; k++) memcpy(tables_buf + (size_t)(k - 1) * S, tc->table[k], sizeof(float) * S);
    const uint32_t hdr[2] = {KTT_VERSION, KTT_L};
    uint64_t h = fnv1a(FNV1A_SEED, hdr, sizeof hdr);
    h = fnv1a(h, tables_buf, sizeof(float) * 4 * S);
    code_id = h ? h : 1;
    ktt_tables = tables_buf;
    const ktt_kernels *k = NULL;
    for (int isa = (int)cpu_isa_active(); isa > CPU_ISA_SCALAR && !k; isa--) k = level_row((cpu_isa)isa);
    if (k) g_ktt = k;
}

uint64_t ktt_code_id(void) {
    pthread_once(&code_once, code_init);
    return code_id;
}

const ktt_kernels *ktt_kernels_at(cpu_isa isa) {
    pthread_once(&code_once, code_init);
    return level_row(isa);
}

/* ------------------------------------------------------------ bits (MSB first, as trellis.h) */

static void put_bits_msb(uint8_t *buf, uint32_t pos, uint32_t v, int cnt) {
    for (int i = cnt - 1; i >= 0; i--, pos++)
        if ((v >> i) & 1u) buf[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
}

static uint32_t get_bits_msb(const uint8_t *buf, uint32_t pos, int cnt) {
    uint32_t v = 0;
    for (int i = 0; i < cnt; i++, pos++) v = (v << 1) | ((buf[pos >> 3] >> (7 - (pos & 7))) & 1u);
    return v;
}

/* The 32-bit big-endian window holding bits [start, start + len) of a field
 * of fb >= 4 bytes: its byte and the right shift that brings them down. */
static void window_of(uint32_t start, int len, uint32_t fb, int32_t *byte, int32_t *shift) {
    uint32_t b = start >> 3;
    if (b + 4 > fb) b = fb - 4;
    *byte = (int32_t)b;
    *shift = (int32_t)(32 - len - (int)(start - 8 * b));
}

/* ------------------------------------------------------------ the head */

int ktt_make(kvt_head *h) {
    const int hd = h->hd;
    if (hd > KTT_MAX_HD || h->tt) return -1;
    pthread_once(&code_once, code_init);
    if (!ktt_tables) return -1;
    struct ktt_plan *p = calloc(1, sizeof *p);
    int *perm = malloc(sizeof(int) * (size_t)hd);
    float *f = malloc(sizeof(float) * (size_t)hd * hd);
    if (!p || !perm || !f) {
        free(p);
        free(perm);
        free(f);
        return -1;
    }
    p->tc = trellis_default();
    p->mask = (1u << KTT_L) - 1u;
    /* the classes: trellis widths 1..4, Lloyd-Max 5..6, none */
    int cnt[5] = {0}, B = 0;
    for (int i = 0; i < hd; i++)
        if (h->bits[i] >= 1 && h->bits[i] <= 4) {
            cnt[h->bits[i]]++;
            B += h->bits[i];
        }
    if (B < KTT_MIN_BITS) { /* too short for the trellis: the head stays a kt head */
        free(p);
        free(perm);
        free(f);
        return 0;
    }
    int k = 0;
    {
        /* interleave the widths: at each step the width furthest behind its
         * even share ((taken + 0.5) / count least; ties to the wider) */
        int taken[5] = {0}, next[5] = {0};
        const int n_tt = cnt[1] + cnt[2] + cnt[3] + cnt[4];
        for (int t = 0; t < n_tt; t++) {
            int best = 0;
            double bv = 2.0;
            for (int b = 4; b >= 1; b--) {
                if (taken[b] == cnt[b]) continue;
                const double v = (taken[b] + 0.5) / cnt[b];
                if (v < bv - 1e-12) {
                    bv = v;
                    best = b;
                }
            }
            /* the next coordinate of width best, in kt's order */
            int i = next[best];
            while (h->bits[i] != best) i++;
            perm[k++] = i;
            next[best] = i + 1;
            taken[best]++;
        }
        p->n_tt = k;
        p->B = B;
    }
    for (int i = 0; i < hd; i++)
        if (h->bits[i] >= 5) perm[k++] = i;
    p->n_lm = k - p->n_tt;
    for (int i = 0; i < hd; i++)
        if (!h->bits[i]) perm[k++] = i;
    /* permute T's rows, Tinv's columns, sigma, bits */
    memcpy(f, h->T, sizeof(float) * (size_t)hd * hd);
    for (int i = 0; i < hd; i++) memcpy(h->T + (size_t)i * hd, f + (size_t)perm[i] * hd, sizeof(float) * (size_t)hd);
    memcpy(f, h->Tinv, sizeof(float) * (size_t)hd * hd);
    for (int r = 0; r < hd; r++)
        for (int i = 0; i < hd; i++) h->Tinv[(size_t)r * hd + i] = f[(size_t)r * hd + perm[i]];
    for (int i = 0; i < hd; i++) f[i] = h->sigma[i];
    for (int i = 0; i < hd; i++) h->sigma[i] = f[perm[i]];
    for (int i = 0; i < hd; i++) f[i] = h->bits[i];
    for (int i = 0; i < hd; i++) h->bits[i] = (uint8_t)f[perm[i]];
    /* the plan */
    const uint32_t fb = (uint32_t)(h->total_bits + 7) / 8, fbe = fb < 4 ? 4 : fb;
    p->field_bytes = fb;
    p->small = fb < 4;
    float smax = 0.0f;
    for (int t = 0; t < p->n_tt; t++) smax = h->sigma[t] > smax ? h->sigma[t] : smax;
    uint32_t end = 0;
    p->n_wrap = 0;
    for (int t = 0; t < p->n_tt; t++) {
        p->k[t] = h->bits[t];
        end += p->k[t];
        if (end < (uint32_t)KTT_L) p->n_wrap = t + 1;
        else window_of(end - KTT_L, KTT_L, fbe, &p->byte[t], &p->shift[t]);
        p->tab[t] = (int32_t)((uint32_t)(p->k[t] - 1) << KTT_L);
        p->packed[t] = (uint32_t)p->byte[t] | (uint32_t)p->shift[t] << 8 | (uint32_t)p->tab[t] << 13;
        p->w[t] = smax > 0 ? (h->sigma[t] / smax) * (h->sigma[t] / smax) : 1.0f;
    }
    uint32_t ofs = (uint32_t)p->B;
    for (int j = 0; j < p->n_lm; j++) {
        const int i = p->n_tt + j, b = h->bits[i];
        p->lm_ofs[j] = ofs;
        window_of(ofs, b, fbe, &p->byte[i], &p->shift[i]);
        ofs += (uint32_t)b;
    }
    free(perm);
    free(f);
    if (ofs != (uint32_t)h->total_bits) { /* cannot happen: the same bits, another order */
        free(p);
        return -1;
    }
    h->tt = p;
    return 0;
}

/* ------------------------------------------------------------ encode */

static uint8_t scale_code(double s) { /* kv_transform.c's scale_encode */
    if (!(s > 0)) return 0;
    const long c = lround(16.0 * log2(s)) + 128;
    return (uint8_t)(c < 1 ? 1 : c > 255 ? 255 : c);
}

static int lm_nearest(int b, double u) {
    const float *c = kvt_cb_levels[b];
    const int n = 1 << b;
    int i = 0;
    while (i + 1 < n && u >= 0.5 * ((double)c[i] + c[i + 1])) i++;
    return i;
}

/* Codes y (the transform coordinates) at the scale of code c into dst; returns
 * the squared error in the transform space (the error that matters), or -1
 * when the scale is zero (dst then the zero row). */
static double encode_at(const kvt_head *h, const double *y, uint8_t c, uint8_t *dst) {
    const struct ktt_plan *p = h->tt;
    const int hd = h->hd, nc = p->n_tt + p->n_lm;
    float u[KTT_MAX_HD];
    memset(dst, 0, h->row_bytes);
    dst[0] = c;
    const float sq = kvt_scale_table[dst[0]];
    if (!(sq > 0) || nc == 0) {
        if (!(sq > 0)) dst[0] = 0;
        return -1;
    }
    uint8_t *fld = dst + 1;
    if (p->n_tt) {
        for (int t = 0; t < p->n_tt; t++) {
            double v = y[t] / ((double)sq * h->sigma[t]);
            u[t] = (float)(v > 1e4 ? 1e4 : v < -1e4 ? -1e4 : v);
        }
        void *work = malloc(trellis_work_size(KTT_L, p->n_tt));
        if (!work || trellis_encode_weighted(p->tc, u, p->w, p->n_tt, p->k, fld, NULL, work) != 0) {
            /* out of memory: the all-zero string (a valid, poor code) */
            memset(fld, 0, p->field_bytes);
        }
        free(work);
    }
    for (int j = 0; j < p->n_lm; j++) {
        const int i = p->n_tt + j;
        const int idx = lm_nearest(h->bits[i], y[i] / ((double)sq * h->sigma[i]));
        put_bits_msb(fld, p->lm_ofs[j], (uint32_t)idx, h->bits[i]);
    }
    float yq[KTT_MAX_HD];
    ktt_levels_ref(h, dst, yq);
    double e = 0;
    for (int i = 0; i < hd; i++) {
        const double d = y[i] - (double)sq * h->sigma[i] * yq[i];
        e += d * d;
    }
    return e;
}

/* y = T (x - mu), NaN as 0 */
static void to_y(const kvt_head *h, const float *x, double *y) {
    const int hd = h->hd;
    float xc[KTT_MAX_HD];
    for (int j = 0; j < hd; j++) xc[j] = (isfinite(x[j]) ? x[j] : 0.0f) - h->mu[j];
    for (int i = 0; i < hd; i++) {
        double a = 0;
        const float *t = h->T + (size_t)i * hd;
        for (int j = 0; j < hd; j++) a += t[j] * xc[j];
        y[i] = a;
    }
}

double ktt_encode_at(const kvt_head *h, const float *x, int code, uint8_t *dst) {
    double y[KTT_MAX_HD];
    to_y(h, x, y);
    return encode_at(h, y, (uint8_t)(code < 0 ? 0 : code > 255 ? 255 : code), dst);
}

void ktt_encode(const kvt_head *h, const float *x, uint8_t *dst) {
    const struct ktt_plan *p = h->tt;
    const int hd = h->hd, nc = p->n_tt + p->n_lm;
    double y[KTT_MAX_HD];
    double ey = 0, el = 0, eya = 0, ela = 0;
    to_y(h, x, y);
    for (int i = 0; i < hd; i++) {
        const double a = y[i], l = (double)h->sigma[i] * h->sigma[i];
        eya += a * a;
        ela += l;
        if (i < nc) {
            ey += a * a;
            el += l;
        }
    }
    /* the scale: the RMS of the coded coordinates in units of sigma (the code
     * is made for unit variance; its levels are centroids, so the least-squares
     * rescale a Lloyd-Max row needs is ~1 here), quantized before coding */
    const double s0 = el > 0 ? sqrt(ey / el) : ela > 0 ? sqrt(eya / ela) : 0;
    const uint8_t c0 = scale_code(s0);
    const double e0 = encode_at(h, y, c0, dst);
    if (e0 < 0) return;
    /* A row whose energy sits in a few coordinates (an outlier token, the BOS row
     * an attention sink reads at every query) puts them far outside the code's
     * levels at the RMS scale, and clipping them costs more than bits can buy:
     * such rows try KTT_SCALE_TRIES larger scales, every other row
     * KTT_SCALE_TRIES_ALL (steps of KTT_SCALE_STEP scale codes, 2^(1/16) each),
     * and the one with the least error in the transform space is kept. */
    double umax = 0;
    const float sq0 = kvt_scale_table[c0];
    for (int i = 0; i < nc; i++) {
        const double v = fabs(y[i] / ((double)sq0 * h->sigma[i]));
        umax = v > umax ? v : umax;
    }
    const int tries = umax > KTT_SCALE_SEARCH_U ? KTT_SCALE_TRIES : KTT_SCALE_TRIES_ALL;
    if (tries == 0) return;
    uint8_t best[KTT_MAX_HD + 8], cand[KTT_MAX_HD + 8]; /* row_bytes <= 1 + 6 * hd / 8 */
    double ebest = e0;
    memcpy(best, dst, h->row_bytes);
    for (int k = 1; k <= tries && c0 + KTT_SCALE_STEP * k <= 255; k++) {
        const double e = encode_at(h, y, (uint8_t)(c0 + KTT_SCALE_STEP * k), cand);
        if (e >= 0 && e < ebest) {
            ebest = e;
            memcpy(best, cand, h->row_bytes);
        }
    }
    memcpy(dst, best, h->row_bytes);
}

/* ------------------------------------------------------------ decoders */

float ktt_levels_ref(const kvt_head *h, const uint8_t *src, float *y) {
    const struct ktt_plan *p = h->tt;
    const uint8_t *f = src + 1;
    if (p->n_tt) trellis_decode(p->tc, f, p->n_tt, p->k, y);
    for (int j = 0; j < p->n_lm; j++) {
        const int i = p->n_tt + j, b = h->bits[i];
        y[i] = kvt_cb_levels[b][get_bits_msb(f, p->lm_ofs[j], b)];
    }
    for (int i = p->n_tt + p->n_lm; i < h->hd; i++) y[i] = 0.0f;
    return kvt_scale_table[src[0]];
}

void ktt_decode(const kvt_head *h, const uint8_t *src, float *x) {
    const int hd = h->hd;
    float y[KTT_MAX_HD];
    const float s = ktt_levels_ref(h, src, y);
    for (int i = 0; i < hd; i++) y[i] *= s * h->sigma[i];
    for (int i = 0; i < hd; i++) {
        double a = h->mu[i];
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[i * hd + j] * y[j];
        x[i] = (float)a;
    }
}

const uint8_t *ktt_row_prologue(const struct ktt_plan *p, const uint8_t *f, uint8_t pad[8], float *y) {
    if (p->small) {
        memset(pad, 0, 8);
        memcpy(pad, f, p->field_bytes);
        f = pad;
    }
    if (p->n_wrap) {
        /* the state before step 0 is the one after the last step (tail-biting):
         * the last L bits; then the first steps shift in the string's first bits */
        const int tl = p->n_tt - 1;
        uint32_t s = (ktt_be32(f + p->byte[tl]) >> p->shift[tl]) & p->mask;
        const uint32_t w0 = ktt_be32(f);
        int pos = 0;
        for (int t = 0; t < p->n_wrap; t++) {
            const int k = p->k[t];
            s = ((s << k) | ((w0 >> (32 - pos - k)) & ((1u << k) - 1u))) & p->mask;
            pos += k;
            y[t] = ktt_tables[p->tab[t] + (int32_t)s];
        }
    }
    return f;
}

void ktt_row_epilogue(const kvt_head *h, const uint8_t *f, float *y) {
    const struct ktt_plan *p = h->tt;
    for (int j = 0; j < p->n_lm; j++) {
        const int i = p->n_tt + j, b = h->bits[i];
        y[i] = kvt_cb_levels[b][(ktt_be32(f + p->byte[i]) >> p->shift[i]) & ((1u << b) - 1u)];
    }
    for (int i = p->n_tt + p->n_lm; i < h->hd; i++) y[i] = 0.0f;
}

static float levels_scalar(const kvt_head *h, const uint8_t *src, float *y) {
    const struct ktt_plan *p = h->tt;
    uint8_t pad[8];
    const uint8_t *f = ktt_row_prologue(p, src + 1, pad, y);
    const uint32_t mask = p->mask;
    for (int t = p->n_wrap; t < p->n_tt; t++) {
        const uint32_t q = p->packed[t];
        y[t] = ktt_tables[(q >> 13) + ((ktt_be32(f + (q & 0xFF)) >> ((q >> 8) & 31)) & mask)];
    }
    ktt_row_epilogue(h, f, y);
    return kvt_scale_table[src[0]];
}

const ktt_kernels ktt_kernels_scalar = {levels_scalar};

/* ------------------------------------------------------------ the kvt_* entry points of a ktt head */

float ktt_levels(const kvt_head *h, const uint8_t *src, float *y) { return g_ktt->levels(h, src, y); }

void ktt_levels_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s) {
    const ktt_kernels *k = g_ktt;
    for (int r = 0; r < n; r++) s[r] = k->levels(h, rows[r] + ofs, y + (size_t)r * h->hd);
}

float ktt_dot(const kvt_head *h, const uint8_t *src, const float *qy) {
    float y[KTT_MAX_HD];
    const float s = g_ktt->levels(h, src, y);
    const int n = h->tt->n_tt + h->tt->n_lm;
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += qy[i] * y[i];
    return s * acc;
}

void ktt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    float y[KTT_MAX_HD];
    const float ws = w * g_ktt->levels(h, src, y);
    const int n = h->tt->n_tt + h->tt->n_lm;
    for (int i = 0; i < n; i++) acc_y[i] += ws * h->sigma[i] * y[i];
}

void ktt_accum_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W, int w_stride,
                    int ng, float *acc_y) {
    const int hd = h->hd;
    float y[KTT_MAX_HD];
    for (int r = 0; r < n; r++) {
        const float s = g_ktt->levels(h, rows[r] + ofs, y);
        for (int g = 0; g < ng; g++) {
            const float ws = W[(size_t)g * w_stride + r] * s;
            for (int i = 0; i < hd; i++) acc_y[(size_t)g * hd + i] += ws * y[i];
        }
    }
}
