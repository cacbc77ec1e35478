/* kv_transform.c — see kv_transform.h. */
#include "kv_transform.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lloyd_max.h"

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

int kvt_fit(kvt_head *h, int hd, const float *X, int n, const double *M, int budget_bits) {
    pthread_once(&cb_once, cb_init);
    pthread_once(&scale_once, scale_init);
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
    uint32_t ofs = 0;
    for (int i = 0; i < hd; i++) {
        h->bit_ofs[i] = ofs;
        ofs += h->bits[i];
    }
    h->total_bits = (int)ofs;
    h->row_bytes = 1 + (ofs + 7) / 8;
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
    float y[1024];
    uint8_t idx[1024];
    double ey = 0, el = 0;
    for (int i = 0; i < hd; i++) {
        double a = 0;
        for (int j = 0; j < hd; j++) {
            const float xj = isfinite(x[j]) ? x[j] : 0.0f;
            a += h->T[i * hd + j] * (xj - h->mu[j]);
        }
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

float kvt_prep_query(const kvt_head *h, const float *q, float *qy) {
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

float kvt_dot(const kvt_head *h, const uint8_t *src, const float *qy) {
    const float s = scale_of(src);
    float acc = 0.0f;
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc += qy[i] * cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
    return s * acc;
}

void kvt_axpy(const kvt_head *h, const uint8_t *src, float w, float *acc_y) {
    const float ws = w * scale_of(src);
    for (int i = 0; i < h->hd; i++)
        if (h->bits[i]) acc_y[i] += ws * h->sigma[i] * cb_levels[h->bits[i]][get_bits(src + 1, h->bit_ofs[i], h->bits[i])];
}

void kvt_finish(const kvt_head *h, const float *acc_y, float wsum, float *out) {
    const int hd = h->hd;
    for (int i = 0; i < hd; i++) {
        double a = (double)wsum * h->mu[i];
        for (int j = 0; j < hd; j++) a += (double)h->Tinv[i * hd + j] * acc_y[j];
        out[i] += (float)a;
    }
}
