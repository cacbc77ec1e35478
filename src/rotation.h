/* rotation.h — attn-rot: the orthonormal rotation R = H·D applied per head.
 *
 * H is the normalized Walsh–Hadamard matrix, applied with the in-place fast
 * transform (O(d log d)); D is a fixed pseudo-random ±1 diagonal recomputed
 * from a seed (stored nowhere). A head_dim that is not a power of two is
 * split into power-of-two blocks, largest first (96 = 64 + 32, 80 = 64 + 16),
 * each transformed on its own: R stays orthonormal, so q·k = (Rq)·(Rk) and
 * Σ pᵢ vᵢ = Rᵀ Σ pᵢ (R vᵢ). */
#ifndef ROTKV_ROTATION_H
#define ROTKV_ROTATION_H

#include <stdint.h>

typedef struct {
    int dim;
    float *sign; /* (dim,) the ±1 diagonal D */
} rotation;

/* Returns 0 on success, -1 on allocation failure or dim < 1. */
int rotation_init(rotation *r, int dim, uint64_t seed);
void rotation_free(rotation *r);

/* In-place normalized fast Walsh–Hadamard transform of n values (n a power of
 * two), with the active ISA level's kernel (arch/ops_arch.h), bit-identical to
 * fwht_ref, the scalar reference. */
void fwht_inplace(float *x, int n);
void fwht_ref(float *x, int n);

/* x <- R x  and  x <- Rᵀ x, for one head vector of r->dim values. */
void rotation_apply(const rotation *r, float *x);
void rotation_apply_inverse(const rotation *r, float *x);

#endif
