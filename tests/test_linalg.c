/* test_linalg.c — sym_eig (Householder + QL) against the definition and
 * against cyclic Jacobi: A v = lambda v, Vᵀ V = I, the same spectrum, on
 * random, low-rank, repeated-eigenvalue, diagonal and 1x1 matrices up to 256. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linalg.h"
#include "testutil.h"

static int cmp_d(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* kind 0: random Gram matrix (full rank), 1: rank 3, 2: eigenvalues 1,1,..,5,5, 3: diagonal */
static void make(double *A, int n, int kind, uint64_t *rs) {
    const int r = kind == 1 ? 3 : n + 2;
    double *X = malloc(sizeof(double) * (size_t)n * r);
    for (int i = 0; i < n * r; i++) X[i] = test_rand_normal(rs) * (1 + (i % n) * 0.1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += X[i * r + k] * X[j * r + k];
            A[i * n + j] = kind == 2 ? (i == j ? (i < n / 2 ? 1.0 : 5.0) : 0.0) : kind == 3 ? (i == j ? i - n / 3.0 : 0) : s;
        }
    if (kind == 2) { /* rotate the diagonal by a random orthogonal-ish similarity: Q = I - 2 u uᵀ */
        double *u = malloc(sizeof(double) * n), nrm = 0;
        for (int i = 0; i < n; i++) {
            u[i] = test_rand_normal(rs);
            nrm += u[i] * u[i];
        }
        for (int i = 0; i < n; i++) u[i] /= sqrt(nrm);
        double *B = malloc(sizeof(double) * (size_t)n * n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int k = 0; k < n; k++) s += ((i == k) - 2 * u[i] * u[k]) * A[k * n + k] * ((k == j) - 2 * u[k] * u[j]);
                B[i * n + j] = s;
            }
        memcpy(A, B, sizeof(double) * (size_t)n * n);
        free(B);
        free(u);
    }
    free(X);
}

static void check(int n, int kind, uint64_t seed) {
    uint64_t rs = seed;
    const size_t nn = (size_t)n * n;
    double *A = malloc(sizeof(double) * nn), *A0 = malloc(sizeof(double) * nn), *A1 = malloc(sizeof(double) * nn);
    double *V = malloc(sizeof(double) * nn), *Vj = malloc(sizeof(double) * nn);
    double *ev = malloc(sizeof(double) * n), *evj = malloc(sizeof(double) * n);
    make(A0, n, kind, &rs);
    memcpy(A, A0, sizeof(double) * nn);
    memcpy(A1, A0, sizeof(double) * nn);
    assert_int_equal(sym_eig(A, n, V, ev), 0);
    double scale = 0;
    for (size_t i = 0; i < nn; i++) scale = fmax(scale, fabs(A0[i]));
    scale = fmax(scale, 1e-300);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < n; k++) { /* (A v_i)_k = ev_i v_ik */
            double s = 0;
            for (int j = 0; j < n; j++) s += A0[k * n + j] * V[j * n + i];
            if (fabs(s - ev[i] * V[k * n + i]) > 1e-9 * scale * n)
                fail_msg("n %d kind %d: A v differs from lambda v (%g vs %g)", n, kind, s, ev[i] * V[k * n + i]);
        }
        for (int j = 0; j < n; j++) { /* orthonormal */
            double s = 0;
            for (int k = 0; k < n; k++) s += V[k * n + i] * V[k * n + j];
            if (fabs(s - (i == j)) > 1e-10) fail_msg("n %d kind %d: VᵀV[%d][%d] = %g", n, kind, i, j, s);
        }
    }
    sym_eig_jacobi(A1, n, Vj, evj);
    qsort(ev, n, sizeof(double), cmp_d);
    qsort(evj, n, sizeof(double), cmp_d);
    for (int i = 0; i < n; i++)
        if (fabs(ev[i] - evj[i]) > 1e-9 * scale * n) fail_msg("n %d kind %d: eigenvalue %d %g vs Jacobi %g", n, kind, i, ev[i], evj[i]);
    free(A), free(A0), free(A1), free(V), free(Vj), free(ev), free(evj);
}

static void t_sym_eig(void **state) {
    (void)state;
    const int sizes[] = {1, 2, 3, 16, 17, 64, 96, 128};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int kind = 0; kind < 4; kind++) check(sizes[s], kind, 100 + s * 7 + (uint64_t)kind);
    check(256, 0, 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(t_sym_eig)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
