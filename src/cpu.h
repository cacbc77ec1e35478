/* cpu.h — which instruction-set level the kernels run at.
 *
 * The library is compiled for baseline x86-64 (no -march); the kernels of
 * each level live in src/arch/<arch>/ and carry their own target attributes.
 * They are only called after this module has confirmed at run time that the
 * CPU (and the OS, for the wider registers) supports them. The level is chosen
 * once per process (first call) and can be capped with the environment
 * variable ROTKV_ISA=scalar|avx2|avxvnni|avx512 (x86-64) or
 * ROTKV_ISA=scalar|neon|dotprod|i8mm (aarch64), e.g. to measure a speed-up or
 * to cross-check results; a level the CPU lacks falls back to the next lower
 * one it has.
 *
 * The levels are ordered: a kernel table of a level is tried first, then the
 * tables of the lower levels (per type), then the scalar reference. The
 * aarch64 levels follow the x86 ones in the enum; a level of the other
 * architecture is never supported, so walking down from the active level
 * passes over the other architecture's levels as it passes over levels the
 * CPU lacks. */
#ifndef ROTKV_CPU_H
#define ROTKV_CPU_H

#include <stdbool.h>

typedef enum {
    CPU_ISA_SCALAR = 0,  /* portable C */
    CPU_ISA_AVX2 = 1,    /* x86-64 with AVX2 + FMA + F16C (Haswell, Zen 1 and later) */
    CPU_ISA_AVXVNNI = 2, /* AVX2 + 256-bit VNNI (vpdpbusd): AVX-VNNI (Alder Lake and later),
                            or AVX512-VNNI + AVX512VL used at 256 bits */
    CPU_ISA_AVX512 = 3,  /* AVX-512 F/BW/VL/DQ/VNNI (Ice Lake, Zen 4 and later) */
    CPU_ISA_NEON = 4,    /* aarch64 Advanced SIMD (every ARMv8-A CPU) */
    CPU_ISA_DOTPROD = 5, /* NEON + SDOT/UDOT (ARMv8.2-A dotprod: Cortex-A76, Neoverse N1, Apple M1 and later) */
    CPU_ISA_I8MM = 6,    /* dotprod + SMMLA/UMMLA (ARMv8.6-A i8mm: Neoverse V1/N2, Apple M2 and later) */
    CPU_ISA_COUNT
} cpu_isa;

/* Highest level this CPU supports. */
cpu_isa cpu_isa_detect(void);
/* Level the kernels use: cpu_isa_detect(), capped by ROTKV_ISA if set.
 * Computed on the first call and cached: cheap enough for any call site. */
cpu_isa cpu_isa_active(void);
/* True if kernels of level isa can run on this CPU. */
bool cpu_isa_supported(cpu_isa isa);
const char *cpu_isa_name(cpu_isa isa);
/* Parses a level name ("scalar", "avx2", "avxvnni", "avx512", "neon",
 * "dotprod", "i8mm"); -1 if unknown. */
int cpu_isa_parse(const char *name);
/* NULL, or a message saying why ROTKV_ISA was not understood (then the
 * detected level is used): programs print it and stop. */
const char *cpu_isa_env_error(void);
/* True if the CPU has the VEX-encoded AVX-VNNI instructions (as opposed to
 * reaching CPU_ISA_AVXVNNI through AVX512-VNNI + VL). */
bool cpu_has_avx_vnni(void);
/* True if the CPU has AVX512_VBMI (byte permutes and multishift: Ice Lake,
 * Zen 4 and later; not Skylake-X or Cascade Lake). */
bool cpu_has_avx512_vbmi(void);
/* True if isa is a level of this build's architecture (scalar is everyone's). */
bool cpu_isa_of_this_arch(cpu_isa isa);

#endif
