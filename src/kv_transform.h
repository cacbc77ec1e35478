/* kv_transform.h — calibrated transform coding of K and V ("kt" cache types).
 *
 * Attn-rot makes every coordinate alike so one codebook fits all; transform
 * coding does the opposite and exploits the structure that is left: per
 * (layer, KV head) it fits, from a calibration batch,
 *   - a center mu (the mean),
 *   - a metric W in which errors are measured: for K the second moment of the
 *     queries that will be dotted with it (an error along a direction no query
 *     looks at costs nothing), for V the Gram matrix of the output projection
 *     columns that read that head (errors are judged after W_o),
 *   - the eigenbasis U of the covariance in that metric, so the coordinates
 *     y = T (x - mu), T = Uᵀ W^{1/2}, are uncorrelated with variances lambda_i
 *     and a squared error in y is the error that matters,
 *   - an integer bit allocation b_i over coordinates by greedy reverse
 *     water-filling on lambda_i × D(b) (D: the Lloyd-Max Gaussian distortion),
 *     summing to a fixed budget per vector.
 * Each cached vector is then one 8-bit log-coded scale s plus, per coordinate, a b_i-bit
 * Lloyd-Max index of y_i / (s sqrt(lambda_i)). Scores are computed in y-space:
 * q·x = (T^{-T} q)·y + q·mu; values are summed in y-space and mapped back once
 * per query with T^{-1}. */
#ifndef ROTKV_KV_TRANSFORM_H
#define ROTKV_KV_TRANSFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVT_MAX_BITS 8

typedef struct {
    int hd;
    int total_bits;     /* sum of bits[] */
    size_t row_bytes;   /* 1 (log-coded scale) + ceil(total_bits / 8) */
    float *mu;          /* (hd,) */
    float *T;           /* (hd, hd) row-major: y = T (x - mu) */
    float *Tinv;        /* (hd, hd): x = Tinv y + mu */
    float *sigma;       /* (hd,) sqrt(lambda_i) */
    uint8_t *bits;      /* (hd,) */
    uint32_t *bit_ofs;  /* (hd,) offset of coordinate i's index in the bit field */
    struct ktt_plan *tt; /* trellis-coded (ktt*, kv_trellis.h), else NULL: the kvt_* calls
                          * below hand such a head to kv_trellis.c */
} kvt_head;

/* Fits a transform to n calibration vectors X (n, hd) with the metric M (hd, hd,
 * symmetric positive semi-definite; NULL = identity) and a budget of
 * budget_bits index bits per vector. Returns 0, or -1 on allocation failure. */
int kvt_fit(kvt_head *h, int hd, const float *X, int n, const double *M, int budget_bits);
/* The same fit from the moments of n vectors: their mean (hd,) and covariance
 * (hd, hd; divided by n) — what a stored calibration (kv_calib.h) keeps. */
int kvt_fit_moments(kvt_head *h, int hd, const double *mean, const double *cov, double n, const double *M,
                    int budget_bits);
void kvt_free(kvt_head *h);

void kvt_encode(const kvt_head *h, const float *x, uint8_t *dst);
void kvt_decode(const kvt_head *h, const uint8_t *src, float *x); /* back to the original space */

/* Query side: qy = T^{-T} q scaled by sigma (so a score is s · Σ qy_i c[idx_i]);
 * returns q·mu. */
float kvt_prep_query(const kvt_head *h, const float *q, float *qy);
/* s · Σ_i qy_i · c_{b_i}[idx_i]  (add q·mu for the score) */
float kvt_dot(const kvt_head *h, const uint8_t *src, const float *qy);
/* acc_y[i] += w · s · sigma_i · c_{b_i}[idx_i] */
void kvt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y);
/* y[i] = c_{b_i}[idx_i] (0 for coordinates without bits), i < hd; returns s.
 * So kvt_dot = s · Σ qy_i y_i and kvt_axpy adds w · s · sigma_i · y_i: the
 * attention tiles hold these raw levels, fold s into each row's score and
 * weight, and sigma into the sum once at the end. */
float kvt_levels(const kvt_head *h, const uint8_t *src, float *y);
/* kvt_levels of n rows (rows[r] + ofs) into y + r * hd, their scales into s[r]:
 * the same values, with the plan dispatched once for all n. */
void kvt_levels_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s);
/* acc_y[g * hd + i] += sum_r W[g * w_stride + r] * s_r * y_r[i] over n rows
 * (rows[r] + ofs; y_r, s_r as kvt_levels gives them) for g < ng: the weighted
 * sum of raw levels that attention's kt V rows need, without a decoded tile.
 * Only where kvt_has_accum_rows() (the active kernels have it for this
 * head_dim); kvt_accum_rows_ref is the slow reference it is tested against. */
bool kvt_has_accum_rows(int hd);
void kvt_accum_rows(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W, int w_stride,
                    int ng, float *acc_y);
void kvt_accum_rows_ref(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W,
                        int w_stride, int ng, float *acc_y);
/* out += Tinv acc_y + wsum · mu */
void kvt_finish(const kvt_head *h, const float *acc_y, float wsum, float *out);

/* Mean squared error of the Lloyd-Max quantizer with b bits on N(0,1) (b = 0: 1). */
double kvt_gauss_distortion(int b);

#endif
