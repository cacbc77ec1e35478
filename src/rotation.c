/* rotation.c — randomized Hadamard rotation for attn-rot. */
#include "rotation.h"

#include <math.h>
#include <stdlib.h>

#include "arch/ops_arch.h"

void fwht_ref(float *x, int n) {
    for (int len = 1; len < n; len <<= 1)
        for (int i = 0; i < n; i += len << 1)
            for (int j = i; j < i + len; j++) {
                const float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
    const float norm = 1.0f / sqrtf((float)n);
    for (int i = 0; i < n; i++) x[i] *= norm;
}

/* The active level's transform (ops_arch.h: NEON on aarch64), else fwht_ref. */
void fwht_inplace(float *x, int n) {
    const ops_kernels *k = ops_kernels_of();
    if (k->fwht) k->fwht(x, n);
    else fwht_ref(x, n);
}

/* Applies H to each power-of-two block of x, largest block first. */
static void hadamard_blocks(float *x, int dim) {
    int off = 0;
    while (off < dim) {
        int b = 1;
        while (b * 2 <= dim - off) b *= 2;
        fwht_inplace(x + off, b);
        off += b;
    }
}

int rotation_init(rotation *r, int dim, uint64_t seed) {
    r->dim = dim;
    r->sign = dim > 0 ? malloc(sizeof(float) * (size_t)dim) : NULL;
    if (!r->sign) return -1;
    uint64_t s = seed ^ 0x6a09e667f3bcc909ull;
    for (int i = 0; i < dim; i++) {
        /* splitmix64 */
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        r->sign[i] = (z >> 63) ? -1.0f : 1.0f;
    }
    return 0;
}

void rotation_free(rotation *r) {
    free(r->sign);
    r->sign = NULL;
}

void rotation_apply(const rotation *r, float *x) {
    for (int i = 0; i < r->dim; i++) x[i] *= r->sign[i];
    hadamard_blocks(x, r->dim);
}

void rotation_apply_inverse(const rotation *r, float *x) {
    /* H is symmetric and orthonormal: Rᵀ = D H */
    hadamard_blocks(x, r->dim);
    for (int i = 0; i < r->dim; i++) x[i] *= r->sign[i];
}
