/* linalg.h — the small dense linear algebra the KV transforms need.
 *
 * sym_eig: eigendecomposition of a real symmetric matrix by Householder
 * reduction to tridiagonal form and the implicit QL algorithm with Wilkinson
 * shifts (the EISPACK tred2/tql2 pair): about 4 n^3 flops with eigenvectors,
 * against cyclic Jacobi's ~30 n^3 with column-strided access — 0.3 s instead of
 * several seconds per 256 x 256 fit, which is what a kt* context of a model with
 * head_dim 128-256 does once per (layer, KV head, K/V). Cyclic Jacobi is kept as the
 * slow, obviously-correct reference (tests/test_linalg.c) and as the fallback if
 * QL fails to converge. */
#ifndef ROTKV_LINALG_H
#define ROTKV_LINALG_H

/* A (n, n) symmetric, row-major, is destroyed; V (n, n) receives the
 * eigenvectors as columns (V[k * n + i] = component k of eigenvector i), ev
 * the eigenvalues (unsorted). Returns 0, or -1 if memory ran out. */
int sym_eig(double *A, int n, double *V, double *ev);
/* The same by cyclic Jacobi rotations (slow reference). */
void sym_eig_jacobi(double *A, int n, double *V, double *ev);

#endif
