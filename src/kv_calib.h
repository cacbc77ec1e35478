/* kv_calib.h — a model's KV calibration (rotkv_kv_calib in rotkv.h): what
 * `rotkv calibrate` measures once on a calibration text and every later
 * context of that model reuses.
 *
 *  - Moments, per (layer, KV head): mean and covariance of the keys (post-RoPE,
 *    each also presented at extra RoPE positions, as in the first-batch fit),
 *    the second moment of the queries that read them (the K metric), and the
 *    mean and covariance of the values. The kt* transforms are fitted from
 *    these (kvt_fit_moments) instead of from a context's first batch; the V
 *    metric is recomputed from the output projection at fit time.
 *  - Sensitivity, per candidate cache type, layer and side (K or V): the mean
 *    KL divergence the model's next-token distribution gains on the
 *    calibration text when that layer's K (or V) alone is stored in the type
 *    and everything else is f16. An allocation for a bit budget minimises the
 *    sum of these (kv_calib_allocate): the additive model, which `rotkv
 *    calibrate` checks against measured KLD and reports.
 *
 * The file format (versioned, checksummed, tied to one model) is written out in
 * kv_calib.c. */
#ifndef ROTKV_KV_CALIB_H
#define ROTKV_KV_CALIB_H

#include <stdbool.h>
#include <stdint.h>

#include "rotkv.h"

#define KV_CALIB_VERSION 3 /* 2: the trellis code id (ktt* sensitivities); 3: whole-row covariances (kttr*) */
#define KV_CALIB_MAX_TYPES 32

struct rotkv_kv_calib {
    uint64_t model_id; /* kv_calib_model_id of the model it was made for */
    uint32_t n_layer, n_head, n_head_kv, head_dim;
    uint32_t n_ctx;    /* positions the RoPE augmentation spans */
    uint32_t n_tokens; /* calibration tokens the moments saw */
    uint64_t text_hash;
    bool finished; /* moments are means (true) or still running sums (collecting) */
    /* moments, per (layer, KV head), doubles; matrices (hd, hd) full */
    double *n_k, *n_q, *n_v;      /* (n_layer,) vectors seen (K, Q per group member, V) */
    double *k_mean, *k_cov;       /* (n_layer, n_head_kv, hd) and (.., hd, hd) */
    double *q_m2;                 /* (n_layer, n_head_kv, hd, hd) E[q qᵀ] over the head's query group */
    double *v_mean, *v_cov;
    /* whole-row covariances of K and V, (n_layer, row, row) with row = n_head_kv * hd,
     * cross-head blocks included: kept when the model's rows are small enough for
     * the kttr* types (kv_calib_row_moments), else NULL */
    uint32_t row;   /* n_head_kv * hd when kept, else 0 */
    double *kr_cov, *vr_cov;
    /* sensitivity */
    int n_types;
    rotkv_kv_type types[KV_CALIB_MAX_TYPES];
    double *sens; /* (n_types, n_layer, 2): added KLD, side 0 = K, 1 = V */
};

/* A fingerprint of the weights that shape K and V: hyperparameters, the types
 * and shapes of every layer's attention matrices and the first bytes of their
 * data, and the attention norms. */
uint64_t kv_calib_model_id(const struct rotkv_model *m);

/* An empty calibration (running sums) for the model. */
rotkv_kv_calib *kv_calib_new(const struct rotkv_model *m, uint32_t n_ctx);
/* Adds one layer's vectors: K (n_k, n_head_kv*hd), Q (n_q, n_head*hd), V (n_v, n_head_kv*hd). */
void kv_calib_accumulate(rotkv_kv_calib *c, uint32_t layer, const float *K, int n_k, const float *Q, int n_q,
                         const float *V, int n_v);

/* rotkv_kv_calib_load from the file's len bytes in memory; path names it in
 * messages. */
rotkv_status kv_calib_load_buffer(const struct rotkv_model *m, const void *buf, size_t len, const char *path,
                                  rotkv_kv_calib **out, rotkv_error *err);

/* Whether a calibration of a model with these heads keeps whole-row
 * covariances: several KV heads whose row a kttr* type codes as one vector. */
bool kv_calib_row_moments(uint32_t n_head_kv, uint32_t head_dim);

/* Offsets of one (layer, head) in the moment arrays. */
static inline size_t kv_calib_vec(const rotkv_kv_calib *c, uint32_t layer, uint32_t head) {
    return ((size_t)layer * c->n_head_kv + head) * c->head_dim;
}
static inline size_t kv_calib_mat(const rotkv_kv_calib *c, uint32_t layer, uint32_t head) {
    return ((size_t)layer * c->n_head_kv + head) * c->head_dim * c->head_dim;
}

#endif
