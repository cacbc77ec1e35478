/* ops_arch.h — the layer ops (RMSNorm, SwiGLU, attn-rot's Walsh–Hadamard transform) of each ISA level, one const
 * row per level, like quant_arch.h for the matmul kernels: ops.c holds the
 * scalar reference row, arch/x86/ops_avx2.c the AVX2 one and arch/arm/ops_neon.c
 * the NEON one (each an empty row on other architectures); the levels above
 * AVX2 use the AVX2 row, those above NEON the NEON row. */
#ifndef ROTKV_OPS_ARCH_H
#define ROTKV_OPS_ARCH_H

#include "cpu.h"

typedef struct {
    void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
    void (*swiglu)(float *gate, const float *up, int n);
    /* rotation.h's fwht_inplace (n a power of two), bit-identical to the scalar
     * fwht_ref; NULL: the scalar one (the x86 rows: no AVX2 twin) */
    void (*fwht)(float *x, int n);
} ops_kernels;

extern const ops_kernels ops_kernels_scalar;
extern const ops_kernels ops_kernels_avx2;
extern const ops_kernels ops_kernels_neon; /* arch/arm/ops_neon.c; the levels above NEON use it */

/* The row in use (chosen once); the row of exactly one level, or NULL (tests). */
const ops_kernels *ops_kernels_of(void);
const ops_kernels *ops_kernels_at(cpu_isa isa);

#endif
