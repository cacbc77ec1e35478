/* cpu.h — which instruction-set level the kernels run at.
 *
 * The library is compiled for baseline x86-64 (no -march); the AVX2 kernels
 * carry __attribute__((target(...))) and are only called after this module has
 * confirmed at run time that the CPU supports AVX2, FMA and F16C. Everything
 * else runs the scalar reference kernels. The level is chosen once per process
 * (first call) and can be capped with the environment variable
 * ROTKV_ISA=scalar, e.g. to measure the speed-up or to cross-check results. */
#ifndef ROTKV_CPU_H
#define ROTKV_CPU_H

#include <stdbool.h>

typedef enum {
    CPU_ISA_SCALAR = 0, /* portable C */
    CPU_ISA_AVX2 = 1,   /* x86-64 with AVX2 + FMA + F16C (Haswell, Zen 1 and later) */
} cpu_isa;

/* Highest level this CPU supports. */
cpu_isa cpu_isa_detect(void);
/* Level the kernels use: cpu_isa_detect(), capped by ROTKV_ISA if set.
 * Computed on the first call and cached: cheap enough for any call site. */
cpu_isa cpu_isa_active(void);
/* True if kernels of level isa can run on this CPU. */
bool cpu_isa_supported(cpu_isa isa);
const char *cpu_isa_name(cpu_isa isa);

#endif
