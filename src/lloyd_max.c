/* lloyd_max.c — Lloyd-Max codebooks for N(0,1); see lloyd_max.h. */
#include "lloyd_max.h"

#include <math.h>
#include <pthread.h>

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

static double phi(double x) { return isinf(x) ? 0.0 : INV_SQRT_2PI * exp(-0.5 * x * x); }
static double Phi(double x) { return 0.5 * erfc(-x * SQRT1_2); }
/* x * phi(x), 0 at +-inf */
static double xphi(double x) { return isinf(x) ? 0.0 : x * phi(x); }

/* Probability, first and second moment of N(0,1) over [a, b]. */
static void cell_moments(double a, double b, double *p, double *m1, double *m2) {
    *p = Phi(b) - Phi(a);
    *m1 = phi(a) - phi(b);
    *m2 = *p + xphi(a) - xphi(b);
}

/* Inverse of Phi by bisection (only used for the starting point). */
static double Phi_inv(double p) {
    double lo = -40.0, hi = 40.0;
    for (int i = 0; i < 200; i++) {
        const double mid = 0.5 * (lo + hi);
        if (Phi(mid) < p) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
}

int lloyd_max_gaussian(int bits, double *c) {
    if (bits < 1 || bits > LLOYD_MAX_BITS_MAX) return -1;
    const int k = 1 << bits;
    /* Start from the high-resolution optimum: cell density ~ phi^(1/3), i.e.
     * thresholds at the quantiles of N(0, 3). */
    double t[(1 << LLOYD_MAX_BITS_MAX) + 1];
    t[0] = -INFINITY;
    t[k] = INFINITY;
    for (int i = 1; i < k; i++) t[i] = sqrt(3.0) * Phi_inv((double)i / k);
    int it = 0;
    for (;;) {
        double moved = 0.0;
        for (int i = 0; i < k; i++) { /* centroid condition */
            double p, m1, m2;
            cell_moments(t[i], t[i + 1], &p, &m1, &m2);
            const double ci = m1 / p;
            if (it > 0) moved = fmax(moved, fabs(ci - c[i]));
            c[i] = ci;
        }
        /* symmetry: average mirrored centroids so rounding does not drift */
        for (int i = 0; i < k / 2; i++) {
            const double s = 0.5 * (c[k - 1 - i] - c[i]);
            c[i] = -s;
            c[k - 1 - i] = s;
        }
        for (int i = 1; i < k; i++) t[i] = 0.5 * (c[i - 1] + c[i]); /* nearest-neighbour condition */
        it++;
        if ((it > 1 && moved < 1e-13) || it >= 100000) break;
    }
    return it;
}

double lloyd_max_mse(const double *c, int k) {
    double mse = 0.0;
    for (int i = 0; i < k; i++) {
        const double a = i == 0 ? -INFINITY : 0.5 * (c[i - 1] + c[i]);
        const double b = i == k - 1 ? INFINITY : 0.5 * (c[i] + c[i + 1]);
        double p, m1, m2;
        cell_moments(a, b, &p, &m1, &m2);
        mse += m2 - 2.0 * c[i] * m1 + c[i] * c[i] * p; /* integral of (x - c)^2 phi over the cell */
    }
    return mse;
}

/* ------------------------------------------------------------ cached tables */

static float levels_store[LLOYD_MAX_TABLE_BITS + 1][1 << LLOYD_MAX_TABLE_BITS];
static float thresholds_store[LLOYD_MAX_TABLE_BITS + 1][1 << LLOYD_MAX_TABLE_BITS];
static lloyd_max_codebook books[LLOYD_MAX_TABLE_BITS + 1];
static pthread_once_t books_once = PTHREAD_ONCE_INIT;

static void books_init(void) {
    for (int bits = 1; bits <= LLOYD_MAX_TABLE_BITS; bits++) {
        double c[1 << LLOYD_MAX_TABLE_BITS];
        const int k = 1 << bits;
        lloyd_max_gaussian(bits, c);
        for (int i = 0; i < k; i++) levels_store[bits][i] = (float)c[i];
        for (int i = 1; i < k; i++) thresholds_store[bits][i - 1] = (float)(0.5 * (c[i - 1] + c[i]));
        books[bits] = (lloyd_max_codebook){bits, k, levels_store[bits], thresholds_store[bits]};
    }
}

const lloyd_max_codebook *lloyd_max_table(int bits) {
    if (bits < 1 || bits > LLOYD_MAX_TABLE_BITS) return NULL;
    pthread_once(&books_once, books_init);
    return &books[bits];
}
