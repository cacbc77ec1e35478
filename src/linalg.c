/* linalg.c — symmetric eigendecomposition (linalg.h). */
#include "linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void sym_eig_jacobi(double *A, int n, double *V, double *ev) {
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

/* Householder reduction of the symmetric a (n, n) to tridiagonal form:
 * d the diagonal, e the subdiagonal (e[i] couples i-1 and i, e[0] = 0), and a
 * replaced by the orthogonal matrix Q with A = Q T Qᵀ. */
static void tridiagonalize(double *a, int n, double *d, double *e) {
#define A(i, j) a[(size_t)(i) * n + (j)]
    for (int i = n - 1; i > 0; i--) {
        const int l = i - 1;
        double h = 0;
        if (l > 0) {
            double scale = 0;
            for (int k = 0; k <= l; k++) scale += fabs(A(i, k));
            if (scale == 0) {
                e[i] = A(i, l);
            } else {
                for (int k = 0; k <= l; k++) {
                    A(i, k) /= scale;
                    h += A(i, k) * A(i, k);
                }
                double f = A(i, l);
                double g = f >= 0 ? -sqrt(h) : sqrt(h);
                e[i] = scale * g;
                h -= f * g;
                A(i, l) = f - g;
                f = 0;
                for (int j = 0; j <= l; j++) {
                    A(j, i) = A(i, j) / h;
                    g = 0;
                    for (int k = 0; k <= j; k++) g += A(j, k) * A(i, k);
                    for (int k = j + 1; k <= l; k++) g += A(k, j) * A(i, k);
                    e[j] = g / h;
                    f += e[j] * A(i, j);
                }
                const double hh = f / (h + h);
                for (int j = 0; j <= l; j++) {
                    f = A(i, j);
                    e[j] = g = e[j] - hh * f;
                    for (int k = 0; k <= j; k++) A(j, k) -= f * e[k] + g * A(i, k);
                }
            }
        } else {
            e[i] = A(i, l);
        }
        d[i] = h;
    }
    d[0] = 0;
    e[0] = 0;
    /* accumulate the transformations */
    for (int i = 0; i < n; i++) {
        const int l = i - 1;
        if (d[i] != 0)
            for (int j = 0; j <= l; j++) {
                double g = 0;
                for (int k = 0; k <= l; k++) g += A(i, k) * A(k, j);
                for (int k = 0; k <= l; k++) A(k, j) -= g * A(k, i);
            }
        d[i] = A(i, i);
        A(i, i) = 1;
        for (int j = 0; j <= l; j++) A(j, i) = A(i, j) = 0;
    }
#undef A
}

/* Implicit QL with shifts on the tridiagonal (d, e); zt (n, n) holds the
 * eigenvectors as rows (the transpose of tridiagonalize's Q), rotated along.
 * Returns -1 if an eigenvalue takes more than 60 iterations. */
static int tridiagonal_ql(double *d, double *e, int n, double *zt) {
    for (int i = 1; i < n; i++) e[i - 1] = e[i];
    e[n - 1] = 0;
    for (int l = 0; l < n; l++) {
        int iter = 0, m;
        do {
            for (m = l; m < n - 1; m++) {
                const double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= 1e-15 * dd) break;
            }
            if (m != l) {
                if (iter++ == 60) return -1;
                double g = (d[l + 1] - d[l]) / (2 * e[l]);
                double r = hypot(g, 1.0);
                g = d[m] - d[l] + e[l] / (g + (g >= 0 ? fabs(r) : -fabs(r)));
                double s = 1, c = 1, p = 0;
                int i;
                for (i = m - 1; i >= l; i--) {
                    double f = s * e[i];
                    const double b = c * e[i];
                    e[i + 1] = r = hypot(f, g);
                    if (r == 0) {
                        d[i + 1] -= p;
                        e[m] = 0;
                        break;
                    }
                    s = f / r;
                    c = g / r;
                    g = d[i + 1] - p;
                    r = (d[i] - g) * s + 2 * c * b;
                    d[i + 1] = g + (p = s * r);
                    g = c * r - b;
                    double *zi = zt + (size_t)i * n, *zi1 = zt + (size_t)(i + 1) * n;
                    for (int k = 0; k < n; k++) {
                        f = zi1[k];
                        zi1[k] = s * zi[k] + c * f;
                        zi[k] = c * zi[k] - s * f;
                    }
                }
                if (r == 0 && i >= l) continue;
                d[l] -= p;
                e[l] = g;
                e[m] = 0;
            }
        } while (m != l);
    }
    return 0;
}

int sym_eig(double *A, int n, double *V, double *ev) {
    if (n <= 0) return 0;
    if (n == 1) {
        ev[0] = A[0];
        V[0] = 1;
        return 0;
    }
    double *e = malloc(sizeof(double) * (size_t)n), *zt = malloc(sizeof(double) * (size_t)n * n);
    double *copy = malloc(sizeof(double) * (size_t)n * n);
    if (!e || !zt || !copy) {
        free(e);
        free(zt);
        free(copy);
        return -1;
    }
    memcpy(copy, A, sizeof(double) * (size_t)n * n);
    tridiagonalize(A, n, ev, e);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < n; k++) zt[(size_t)i * n + k] = A[(size_t)k * n + i];
    if (tridiagonal_ql(ev, e, n, zt) == 0) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k < n; k++) V[(size_t)k * n + i] = zt[(size_t)i * n + k];
    } else {
        sym_eig_jacobi(copy, n, V, ev); /* no convergence (not seen in practice): the slow way */
    }
    free(e);
    free(zt);
    free(copy);
    return 0;
}
