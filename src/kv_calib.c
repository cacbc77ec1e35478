/* kv_calib.c — KV calibrations: collecting moments, the sensitivity table, the
 * bit allocation, and the file format (kv_calib.h says what they are).
 *
 * File format, version 3, little-endian:
 *   "RKVCALIB"                      8 bytes
 *   u32 version                     KV_CALIB_VERSION
 *   u64 model_id                    kv_calib_model_id of the model
 *   u32 n_layer, n_head, n_head_kv, head_dim, n_ctx, n_tokens
 *   u64 text_hash
 *   u32 n_types
 *   u32 row                         n_head_kv * head_dim when whole-row covariances follow, else 0
 *                                   (version 3 on; kv_calib_row_moments)
 *   n_types x char[16]              type names (NUL padded)
 *   u64 ktt_id                      ktt_code_id() when a type is ktt* (its sensitivities hold for
 *                                   those trellis tables only), else 0 (version 2 on)
 *   f64 sens[n_types][n_layer][2]
 *   f64 n_k[n_layer], n_q[n_layer], n_v[n_layer]
 *   per (layer, KV head): f32 k_mean[hd], k_cov[hd(hd+1)/2], q_m2[hd(hd+1)/2],
 *                         v_mean[hd], v_cov[hd(hd+1)/2]   (upper triangles, row-major)
 *   when row > 0, per layer: f32 kr_cov[row(row+1)/2], vr_cov[row(row+1)/2]   (whole-row
 *                         covariances, cross-head blocks included; version 3 on)
 *   u64 FNV-1a of every byte before it
 * The size follows from the header, so a cut file is recognised before it is read. */
#include "kv_calib.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "hash.h"
#include "kv_cache.h"
#include "kv_trellis.h"
#include "model.h"

static const char MAGIC[8] = {'R', 'K', 'V', 'C', 'A', 'L', 'I', 'B'};

uint64_t kv_calib_model_id(const struct rotkv_model *m) {
    const model_hparams *hp = &m->hp;
    uint32_t dims[] = {hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_ff, hp->n_head, hp->n_head_kv, hp->head_dim_k,
                       hp->head_dim_v, hp->n_rot, (uint32_t)hp->rope};
    uint64_t h = fnv1a(FNV1A_SEED, hp->arch_name, strlen(hp->arch_name));
    h = fnv1a(h, dims, sizeof dims);
    h = fnv1a(h, &hp->rope_freq_base, sizeof hp->rope_freq_base);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const layer_weights *L = &m->layers[l];
        const weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo};
        for (int i = 0; i < 4; i++) {
            const weight *w = ws[i];
            int64_t shape[3] = {w->type, w->ne0, w->ne1};
            h = fnv1a(h, shape, sizeof shape);
            const size_t bytes = w->row_bytes * (size_t)w->ne1;
            h = fnv1a(h, w->data, bytes < 4096 ? bytes : 4096);
        }
        h = fnv1a(h, L->attn_norm, sizeof(float) * hp->n_embd);
        if (L->bk) h = fnv1a(h, L->bk, sizeof(float) * hp->n_head_kv * hp->head_dim_k);
        if (L->k_norm) h = fnv1a(h, L->k_norm, sizeof(float) * hp->head_dim_k);
    }
    return h;
}

bool kv_calib_row_moments(uint32_t n_head_kv, uint32_t head_dim) {
    return n_head_kv > 1 && (uint64_t)n_head_kv * head_dim <= KV_KT_ROW_MAX;
}

void rotkv_kv_calib_free(rotkv_kv_calib *c) {
    if (!c) return;
    free(c->kr_cov); free(c->vr_cov);
    free(c->n_k); free(c->n_q); free(c->n_v);
    free(c->k_mean); free(c->k_cov); free(c->q_m2); free(c->v_mean); free(c->v_cov);
    free(c->sens);
    free(c);
}

/* Allocates the arrays of a calibration of these dimensions (zeroed). */
static rotkv_kv_calib *calib_alloc(uint32_t n_layer, uint32_t n_head_kv, uint32_t hd, uint32_t row) {
    rotkv_kv_calib *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->n_layer = n_layer;
    c->n_head_kv = n_head_kv;
    c->head_dim = hd;
    c->row = row;
    if (row) {
        c->kr_cov = calloc((size_t)n_layer * row * row, sizeof(double));
        c->vr_cov = calloc((size_t)n_layer * row * row, sizeof(double));
        if (!c->kr_cov || !c->vr_cov) {
            rotkv_kv_calib_free(c);
            return NULL;
        }
    }
    const size_t nv = (size_t)n_layer * n_head_kv * hd, nm = nv * hd;
    c->n_k = calloc(n_layer, sizeof(double));
    c->n_q = calloc(n_layer, sizeof(double));
    c->n_v = calloc(n_layer, sizeof(double));
    c->k_mean = calloc(nv, sizeof(double));
    c->v_mean = calloc(nv, sizeof(double));
    c->k_cov = calloc(nm, sizeof(double));
    c->q_m2 = calloc(nm, sizeof(double));
    c->v_cov = calloc(nm, sizeof(double));
    if (!c->n_k || !c->n_q || !c->n_v || !c->k_mean || !c->v_mean || !c->k_cov || !c->q_m2 || !c->v_cov) {
        rotkv_kv_calib_free(c);
        return NULL;
    }
    return c;
}

rotkv_kv_calib *kv_calib_new(const struct rotkv_model *m, uint32_t n_ctx) {
    const model_hparams *hp = &m->hp;
    rotkv_kv_calib *c = calib_alloc(hp->n_layer, hp->n_head_kv, hp->head_dim_k,
                                    kv_calib_row_moments(hp->n_head_kv, hp->head_dim_k) ? hp->n_head_kv * hp->head_dim_k : 0);
    if (!c) return NULL;
    c->model_id = kv_calib_model_id(m);
    c->n_head = hp->n_head;
    c->n_ctx = n_ctx ? n_ctx : hp->n_ctx_train;
    return c;
}

rotkv_status rotkv_kv_calib_create(const rotkv_model *m, uint32_t n_ctx, rotkv_kv_calib **out, rotkv_error *err) {
    *out = NULL;
    if (m->vocab_only)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "model was loaded vocab-only: it has no weights to calibrate");
    if (m->hp.head_dim_k != m->hp.head_dim_v)
        return rotkv_set_error(err, ROTKV_ERR_UNSUPPORTED, "KV calibration needs equal K and V head sizes (%u, %u)",
                               m->hp.head_dim_k, m->hp.head_dim_v);
    *out = kv_calib_new(m, n_ctx);
    return *out ? ROTKV_OK : rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory for the KV calibration");
}

/* sum += x and S += x xᵀ (upper triangle) over n vectors of hd values at stride */
static void add_moments(double *sum, double *S, const float *X, int n, size_t stride, int hd) {
    for (int t = 0; t < n; t++) {
        const float *x = X + (size_t)t * stride;
        for (int i = 0; i < hd; i++) {
            const double xi = x[i];
            sum[i] += xi;
            double *Si = S + (size_t)i * hd;
            for (int j = i; j < hd; j++) Si[j] += xi * x[j];
        }
    }
}

void kv_calib_accumulate(rotkv_kv_calib *c, uint32_t layer, const float *K, int n_k, const float *Q, int n_q,
                         const float *V, int n_v) {
    const int hd = (int)c->head_dim, nkv = (int)c->n_head_kv, nh = (int)c->n_head, group = nh / nkv;
    double *qsum = calloc((size_t)(c->row > (uint32_t)hd ? c->row : (uint32_t)hd), sizeof(double));
    if (!qsum) return; /* caller checked memory before; a failed scratch only loses this batch's queries */
    if (c->row) { /* whole rows (their sums are the heads' sums: the scratch is discarded) */
        const size_t rr = (size_t)c->row * c->row;
        add_moments(qsum, c->kr_cov + layer * rr, K, n_k, c->row, (int)c->row);
        add_moments(qsum, c->vr_cov + layer * rr, V, n_v, c->row, (int)c->row);
        memset(qsum, 0, sizeof(double) * c->row);
    }
    for (int h = 0; h < nkv; h++) {
        add_moments(c->k_mean + kv_calib_vec(c, layer, h), c->k_cov + kv_calib_mat(c, layer, h), K + (size_t)h * hd,
                    n_k, (size_t)nkv * hd, hd);
        add_moments(c->v_mean + kv_calib_vec(c, layer, h), c->v_cov + kv_calib_mat(c, layer, h), V + (size_t)h * hd,
                    n_v, (size_t)nkv * hd, hd);
        for (int g = 0; g < group; g++)
            add_moments(qsum, c->q_m2 + kv_calib_mat(c, layer, h), Q + (size_t)(h * group + g) * hd, n_q,
                        (size_t)nh * hd, hd);
    }
    free(qsum);
    c->n_k[layer] += n_k;
    c->n_q[layer] += (double)n_q * group;
    c->n_v[layer] += n_v;
    if (layer == 0) c->n_tokens += (uint32_t)n_v;
}

rotkv_status rotkv_kv_calib_finish(rotkv_kv_calib *c, uint64_t text_hash, rotkv_error *err) {
    if (c->finished) return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration already finished");
    const int hd = (int)c->head_dim;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        if (c->n_k[l] < 1 || c->n_v[l] < 1 || c->n_q[l] < 1)
            return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration: layer %u saw no tokens", l);
        for (uint32_t h = 0; h < c->n_head_kv; h++) {
            double *km = c->k_mean + kv_calib_vec(c, l, h), *vm = c->v_mean + kv_calib_vec(c, l, h);
            double *kc = c->k_cov + kv_calib_mat(c, l, h), *vc = c->v_cov + kv_calib_mat(c, l, h);
            double *qm = c->q_m2 + kv_calib_mat(c, l, h);
            for (int i = 0; i < hd; i++) {
                km[i] /= c->n_k[l];
                vm[i] /= c->n_v[l];
            }
            for (int i = 0; i < hd; i++)
                for (int j = i; j < hd; j++) {
                    kc[i * hd + j] = kc[j * hd + i] = kc[i * hd + j] / c->n_k[l] - km[i] * km[j];
                    vc[i * hd + j] = vc[j * hd + i] = vc[i * hd + j] / c->n_v[l] - vm[i] * vm[j];
                    qm[i * hd + j] = qm[j * hd + i] = qm[i * hd + j] / c->n_q[l];
                }
        }
        if (c->row) { /* the row mean is the heads' means side by side */
            const int R = (int)c->row;
            double *kr = c->kr_cov + (size_t)l * R * R, *vr = c->vr_cov + (size_t)l * R * R;
            const double *km = c->k_mean + kv_calib_vec(c, l, 0), *vm = c->v_mean + kv_calib_vec(c, l, 0);
            for (int i = 0; i < R; i++)
                for (int j = i; j < R; j++) {
                    kr[i * R + j] = kr[j * R + i] = kr[i * R + j] / c->n_k[l] - km[i] * km[j];
                    vr[i * R + j] = vr[j * R + i] = vr[i * R + j] / c->n_v[l] - vm[i] * vm[j];
                }
        }
    }
    c->text_hash = text_hash;
    c->finished = true;
    return ROTKV_OK;
}

rotkv_status rotkv_kv_calib_set_sensitivity(rotkv_kv_calib *c, rotkv_kv_type t, uint32_t layer, int side, double kld,
                                            rotkv_error *err) {
    if (layer >= c->n_layer || side < 0 || side > 1 || !(kld == kld) || (int)t < 0 || t >= ROTKV_KV_TYPE_COUNT)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration: bad sensitivity entry (type %d, layer %u, side %d)",
                               (int)t, layer, side);
    int i = 0;
    while (i < c->n_types && c->types[i] != t) i++;
    if (i == c->n_types) {
        if (c->n_types == KV_CALIB_MAX_TYPES)
            return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration: more than %d types", KV_CALIB_MAX_TYPES);
        double *ns = realloc(c->sens, sizeof(double) * (size_t)(c->n_types + 1) * c->n_layer * 2);
        if (!ns) return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory");
        c->sens = ns;
        for (size_t j = 0; j < (size_t)c->n_layer * 2; j++) c->sens[(size_t)c->n_types * c->n_layer * 2 + j] = NAN;
        c->types[c->n_types++] = t;
    }
    c->sens[((size_t)i * c->n_layer + layer) * 2 + (size_t)side] = kld;
    return ROTKV_OK;
}

uint32_t rotkv_kv_calib_n_tokens(const rotkv_kv_calib *c) { return c->n_tokens; }
bool rotkv_kv_calib_has_sensitivity(const rotkv_kv_calib *c) { return c->n_types > 0; }

double rotkv_kv_type_bits(const rotkv_model *m, rotkv_kv_type t) {
    const kv_codec *c = kv_codec_get(t);
    if (!c) return -1;
    const int hd = (int)m->hp.head_dim_k, row = hd * (int)m->hp.n_head_kv;
    if (c->kt_bits > 0) {
        const int seg = kv_codec_kt_seg(c, hd, (int)m->hp.n_head_kv);
        return kv_codec_kt_budget_bits(c, seg) >= 1 && !(c->trellis && seg > KTT_MAX_HD) ? kv_codec_bits(c, seg) : -1;
    }
    const int seg = hd % c->blck == 0 ? hd : row;
    return seg % c->blck ? -1 : kv_codec_bits(c, seg);
}

/* ---------------------------------------------------------------- allocation */

#define BIT_UNITS 64 /* the knapsack counts bits in 1/64 bit per value */

rotkv_status rotkv_kv_calib_allocate(const rotkv_kv_calib *c, const rotkv_model *m, double bits,
                                     rotkv_kv_type *types_k, rotkv_kv_type *types_v, double *predicted_kld,
                                     rotkv_error *err) {
    if (c->n_types == 0)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                               "the KV calibration has no sensitivity table (made by rotkv calibrate without --types?)");
    if (!(bits > 0) || bits > 32)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV bit budget %g is not in (0, 32]", bits);
    /* options: f16 (no added KLD) and every measured type this model can hold */
    int n_opt = 0;
    rotkv_kv_type opt[KV_CALIB_MAX_TYPES + 1];
    int cost[KV_CALIB_MAX_TYPES + 1], sens_idx[KV_CALIB_MAX_TYPES + 1];
    double min_bits = 16;
    opt[n_opt] = ROTKV_KV_F16;
    cost[n_opt] = 16 * BIT_UNITS;
    sens_idx[n_opt++] = -1;
    for (int i = 0; i < c->n_types; i++) {
        const double b = rotkv_kv_type_bits(m, c->types[i]);
        if (b <= 0 || c->types[i] == ROTKV_KV_F16) continue;
        opt[n_opt] = c->types[i];
        cost[n_opt] = (int)ceil(b * BIT_UNITS - 1e-9);
        sens_idx[n_opt++] = i;
        if (b < min_bits) min_bits = b;
    }
    const int items = (int)c->n_layer * 2;
    const long cap = (long)floor(bits * BIT_UNITS * items + 1e-9);
    if (cap < (long)ceil(min_bits * BIT_UNITS - 1e-9) * items)
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG,
                               "KV bit budget %.3g is below the cheapest calibrated type (%.3g bits/value)", bits, min_bits);
    const long W = cap < (long)16 * BIT_UNITS * items ? cap : (long)16 * BIT_UNITS * items;
    /* best[i][w]: least summed KLD of items < i using exactly w units (INFINITY: impossible) */
    double *best = malloc(sizeof(double) * (size_t)(items + 1) * (size_t)(W + 1));
    unsigned char *choice = malloc((size_t)items * (size_t)(W + 1));
    if (!best || !choice) {
        free(best);
        free(choice);
        return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory for the KV bit allocation");
    }
    for (long w = 0; w <= W; w++) best[w] = w == 0 ? 0 : INFINITY;
    for (int it = 0; it < items; it++) {
        const uint32_t layer = (uint32_t)it / 2;
        const int side = it % 2;
        const double *prev = best + (size_t)it * (W + 1);
        double *cur = best + (size_t)(it + 1) * (W + 1);
        for (long w = 0; w <= W; w++) {
            cur[w] = INFINITY;
            for (int o = 0; o < n_opt; o++) {
                if (cost[o] > w || !(prev[w - cost[o]] < INFINITY)) continue;
                double d = 0;
                if (sens_idx[o] >= 0) {
                    d = c->sens[((size_t)sens_idx[o] * c->n_layer + layer) * 2 + (size_t)side];
                    if (!(d == d)) continue; /* not measured for this layer */
                    if (d < 0) d = 0;        /* measurement noise below f16's own */
                }
                const double v = prev[w - cost[o]] + d;
                if (v < cur[w]) {
                    cur[w] = v;
                    choice[(size_t)it * (W + 1) + (size_t)w] = (unsigned char)o;
                }
            }
        }
    }
    long wbest = -1;
    const double *last = best + (size_t)items * (W + 1);
    for (long w = 0; w <= W; w++)
        if (last[w] < INFINITY && (wbest < 0 || last[w] < last[wbest] - 1e-15)) wbest = w;
    if (wbest < 0) {
        free(best);
        free(choice);
        return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "no allocation fits %.3g bits/value", bits);
    }
    if (predicted_kld) *predicted_kld = last[wbest];
    for (int it = items - 1, w = (int)wbest; it >= 0; it--) {
        const int o = choice[(size_t)it * (W + 1) + (size_t)w];
        if (it % 2) types_v[it / 2] = opt[o];
        else types_k[it / 2] = opt[o];
        w -= cost[o];
    }
    free(best);
    free(choice);
    return ROTKV_OK;
}

/* ---------------------------------------------------------------- file */

typedef struct {
    FILE *f;
    uint64_t hash;
    bool ok;
} writer;

static void put(writer *w, const void *p, size_t n) {
    if (!w->ok) return;
    w->hash = fnv1a(w->hash, p, n);
    w->ok = fwrite(p, 1, n, w->f) == n;
}
static void put_u32(writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(writer *w, uint64_t v) { put(w, &v, 8); }
static void put_tri(writer *w, const double *M, int hd) {
    for (int i = 0; i < hd; i++)
        for (int j = i; j < hd; j++) {
            const float v = (float)M[i * hd + j];
            put(w, &v, 4);
        }
}
static void put_vec(writer *w, const double *x, int hd) {
    for (int i = 0; i < hd; i++) {
        const float v = (float)x[i];
        put(w, &v, 4);
    }
}

rotkv_status rotkv_kv_calib_save(const rotkv_kv_calib *c, const char *path, rotkv_error *err) {
    if (!c->finished) return rotkv_set_error(err, ROTKV_ERR_INVALID_ARG, "KV calibration not finished");
    atomic_file af;
    if (!atomic_file_open(&af, path))
        return rotkv_set_error(err, errno == ENOMEM ? ROTKV_ERR_OOM : ROTKV_ERR_IO, "cannot write %s.tmp.%ld: %s",
                               path, (long)getpid(), strerror(errno));
    writer w = {af.fp, FNV1A_SEED, true};
    put(&w, MAGIC, 8);
    put_u32(&w, KV_CALIB_VERSION);
    put_u64(&w, c->model_id);
    const uint32_t dims[6] = {c->n_layer, c->n_head, c->n_head_kv, c->head_dim, c->n_ctx, c->n_tokens};
    for (int i = 0; i < 6; i++) put_u32(&w, dims[i]);
    put_u64(&w, c->text_hash);
    put_u32(&w, (uint32_t)c->n_types);
    put_u32(&w, c->row);
    for (int i = 0; i < c->n_types; i++) {
        char name[16] = {0};
        snprintf(name, sizeof name, "%s", rotkv_kv_type_name(c->types[i]));
        put(&w, name, 16);
    }
    bool any_ktt = false;
    for (int i = 0; i < c->n_types; i++) any_ktt |= kv_codec_get(c->types[i])->trellis;
    put_u64(&w, any_ktt ? ktt_code_id() : 0);
    if (c->n_types) put(&w, c->sens, sizeof(double) * (size_t)c->n_types * c->n_layer * 2);
    put(&w, c->n_k, sizeof(double) * c->n_layer);
    put(&w, c->n_q, sizeof(double) * c->n_layer);
    put(&w, c->n_v, sizeof(double) * c->n_layer);
    const int hd = (int)c->head_dim;
    for (uint32_t l = 0; l < c->n_layer; l++)
        for (uint32_t h = 0; h < c->n_head_kv; h++) {
            put_vec(&w, c->k_mean + kv_calib_vec(c, l, h), hd);
            put_tri(&w, c->k_cov + kv_calib_mat(c, l, h), hd);
            put_tri(&w, c->q_m2 + kv_calib_mat(c, l, h), hd);
            put_vec(&w, c->v_mean + kv_calib_vec(c, l, h), hd);
            put_tri(&w, c->v_cov + kv_calib_mat(c, l, h), hd);
        }
    for (uint32_t l = 0; c->row && l < c->n_layer; l++) {
        put_tri(&w, c->kr_cov + (size_t)l * c->row * c->row, (int)c->row);
        put_tri(&w, c->vr_cov + (size_t)l * c->row * c->row, (int)c->row);
    }
    const uint64_t sum = w.hash;
    put_u64(&w, sum);
    if (!atomic_file_commit(&af, w.ok))
        return rotkv_set_error(err, ROTKV_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return ROTKV_OK;
}

typedef struct {
    const uint8_t *p, *end;
} reader;

static bool get(reader *r, void *dst, size_t n) {
    if ((size_t)(r->end - r->p) < n) return false;
    memcpy(dst, r->p, n);
    r->p += n;
    return true;
}

static void get_tri(reader *r, double *M, int hd) {
    for (int i = 0; i < hd; i++)
        for (int j = i; j < hd; j++) {
            float v;
            get(r, &v, 4);
            M[i * hd + j] = M[j * hd + i] = v;
        }
}
static void get_vec(reader *r, double *x, int hd) {
    for (int i = 0; i < hd; i++) {
        float v;
        get(r, &v, 4);
        x[i] = v;
    }
}

rotkv_status rotkv_kv_calib_load(const rotkv_model *m, const char *path, rotkv_kv_calib **out, rotkv_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return rotkv_set_error(err, ROTKV_ERR_IO, "cannot open KV calibration %s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            if (cap > ((size_t)1 << 34)) break; /* 16 GiB: no real calibration is that large */
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory reading %s", path);
            }
            buf = nb;
        }
        const size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    const bool read_err = ferror(f);
    fclose(f);
    rotkv_status st = read_err ? rotkv_set_error(err, ROTKV_ERR_IO, "cannot read KV calibration %s", path)
                               : kv_calib_load_buffer(m, buf, len, path, out, err);
    free(buf);
    return st;
}

rotkv_status kv_calib_load_buffer(const struct rotkv_model *m, const void *data, size_t len, const char *path,
                                  rotkv_kv_calib **out, rotkv_error *err) {
    *out = NULL;
    const uint8_t *buf = data;
    rotkv_status st = ROTKV_OK;
    rotkv_kv_calib *c = NULL;
    reader r = {buf, buf + len};
    char magic[8];
    uint32_t version = 0, dims[6], n_types = 0, row = 0;
    uint64_t model_id = 0, text_hash = 0;
    if (!get(&r, magic, 8) || memcmp(magic, MAGIC, 8)) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s is not a rotkv KV calibration (make one with rotkv calibrate)", path);
        goto out;
    }
    if (!get(&r, &version, 4) || version != KV_CALIB_VERSION) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: KV calibration version %u, this rotkv reads version %d", path,
                             version, KV_CALIB_VERSION);
        goto out;
    }
    bool hdr = get(&r, &model_id, 8);
    for (int i = 0; i < 6; i++) hdr = hdr && get(&r, &dims[i], 4);
    hdr = hdr && get(&r, &text_hash, 8) && get(&r, &n_types, 4) && get(&r, &row, 4);
    if (!hdr) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: KV calibration is truncated (%zu bytes)", path, len);
        goto out;
    }
    const uint32_t n_layer = dims[0], n_head = dims[1], nkv = dims[2], hd = dims[3];
    if (n_layer == 0 || n_layer > 4096 || nkv == 0 || nkv > 1024 || hd == 0 || hd > 1024 || n_head < nkv ||
        n_head % nkv || n_types > KV_CALIB_MAX_TYPES || (row && (row != nkv * hd || row > KV_KT_ROW_MAX))) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT,
                             "%s: KV calibration header out of range (%u layers, %u/%u heads, head_dim %u, %u types, row %u)",
                             path, n_layer, n_head, nkv, hd, n_types, row);
        goto out;
    }
    const size_t tri = (size_t)hd * (hd + 1) / 2, tri_row = (size_t)row * (row + 1) / 2;
    const size_t need = 8 + 4 + 8 + 24 + 8 + 4 + 4 + (size_t)n_types * 16 + 8 + (size_t)n_types * n_layer * 2 * 8 +
                        (size_t)n_layer * 3 * 8 + (size_t)n_layer * nkv * (2 * hd + 3 * tri) * 4 +
                        (size_t)n_layer * 2 * tri_row * 4 + 8;
    if (len != need) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: KV calibration is %s (%zu bytes, its header needs %zu)", path,
                             len < need ? "truncated" : "followed by extra bytes", len, need);
        goto out;
    }
    uint64_t sum;
    memcpy(&sum, buf + len - 8, 8);
    if (fnv1a(FNV1A_SEED, buf, len - 8) != sum) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: KV calibration checksum mismatch (the file is corrupt)", path);
        goto out;
    }
    const model_hparams *hp = &m->hp;
    if (model_id != kv_calib_model_id(m) || n_layer != hp->n_layer || nkv != hp->n_head_kv || hd != hp->head_dim_k ||
        n_head != hp->n_head) {
        st = rotkv_set_error(err, ROTKV_ERR_MISMATCH,
                             "%s was made for another model (%u layers, %u/%u heads, head_dim %u; this one: %u, %u/%u, %u%s)",
                             path, n_layer, n_head, nkv, hd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->head_dim_k,
                             n_layer == hp->n_layer && nkv == hp->n_head_kv && hd == hp->head_dim_k ? ", other weights" : "");
        goto out;
    }
    c = calib_alloc(n_layer, nkv, hd, row);
    if (!c || (n_types && !(c->sens = malloc(sizeof(double) * n_types * n_layer * 2)))) {
        st = rotkv_set_error(err, ROTKV_ERR_OOM, "out of memory reading %s", path);
        goto out;
    }
    c->model_id = model_id;
    c->n_head = n_head;
    c->n_ctx = dims[4];
    c->n_tokens = dims[5];
    c->text_hash = text_hash;
    c->finished = true;
    for (uint32_t i = 0; i < n_types; i++) {
        char name[17] = {0};
        get(&r, name, 16);
        const int t = rotkv_kv_type_from_name(name);
        if (t < 0) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: unknown KV type '%s' in the sensitivity table", path, name);
            goto out;
        }
        c->types[i] = (rotkv_kv_type)t;
    }
    c->n_types = (int)n_types;
    uint64_t ktt_id = 0;
    get(&r, &ktt_id, 8);
    bool any_ktt = false;
    for (uint32_t i = 0; i < n_types; i++) any_ktt |= kv_codec_get(c->types[i])->trellis;
    if (any_ktt && ktt_id != ktt_code_id()) {
        st = rotkv_set_error(err, ROTKV_ERR_FORMAT,
                             "%s: its ktt* sensitivities were measured with other trellis tables (code %016llx, this rotkv "
                             "builds %016llx); re-run rotkv calibrate",
                             path, (unsigned long long)ktt_id, (unsigned long long)ktt_code_id());
        goto out;
    }
    if (n_types) get(&r, c->sens, sizeof(double) * n_types * n_layer * 2);
    get(&r, c->n_k, sizeof(double) * n_layer);
    get(&r, c->n_q, sizeof(double) * n_layer);
    get(&r, c->n_v, sizeof(double) * n_layer);
    for (uint32_t l = 0; l < n_layer; l++) {
        if (!(c->n_k[l] >= 1 && c->n_q[l] >= 1 && c->n_v[l] >= 1)) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: layer %u has no calibration vectors", path, l);
            goto out;
        }
        for (uint32_t h = 0; h < nkv; h++) {
            get_vec(&r, c->k_mean + kv_calib_vec(c, l, h), (int)hd);
            get_tri(&r, c->k_cov + kv_calib_mat(c, l, h), (int)hd);
            get_tri(&r, c->q_m2 + kv_calib_mat(c, l, h), (int)hd);
            get_vec(&r, c->v_mean + kv_calib_vec(c, l, h), (int)hd);
            get_tri(&r, c->v_cov + kv_calib_mat(c, l, h), (int)hd);
        }
    }
    for (uint32_t l = 0; row && l < n_layer; l++) {
        get_tri(&r, c->kr_cov + (size_t)l * row * row, (int)row);
        get_tri(&r, c->vr_cov + (size_t)l * row * row, (int)row);
    }
    for (size_t i = 0; i < (size_t)n_layer * row * row; i++)
        if (!isfinite(c->kr_cov[i]) || !isfinite(c->vr_cov[i])) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: non-finite row moments", path);
            goto out;
        }
    for (size_t i = 0; i < (size_t)n_layer * nkv * hd * hd; i++)
        if (!isfinite(c->k_cov[i]) || !isfinite(c->q_m2[i]) || !isfinite(c->v_cov[i])) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: non-finite moments", path);
            goto out;
        }
    for (size_t i = 0; i < (size_t)n_layer * nkv * hd; i++)
        if (!isfinite(c->k_mean[i]) || !isfinite(c->v_mean[i])) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: non-finite means", path);
            goto out;
        }
    for (size_t i = 0; i < (size_t)n_types * n_layer * 2; i++) /* NaN: never measured; a KLD is >= 0 */
        if (isinf(c->sens[i]) || c->sens[i] < -1e-6) {
            st = rotkv_set_error(err, ROTKV_ERR_FORMAT, "%s: bad entry %g in the sensitivity table", path, c->sens[i]);
            goto out;
        }
out:
    if (st != ROTKV_OK) rotkv_kv_calib_free(c);
    else *out = c;
    return st;
}
