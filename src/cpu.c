/* cpu.c — run-time CPU feature detection (see cpu.h). */
#include "cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define CPU_X86 1
#endif

cpu_isa cpu_isa_detect(void) {
#ifdef CPU_X86
    /* avx2 / fma through the compiler's runtime (which also checks that the OS
     * saves the YMM registers); F16C from CPUID leaf 1 (ECX bit 29), since
     * not every compiler knows "f16c" as a __builtin_cpu_supports name. */
    __builtin_cpu_init();
    unsigned a, b, c, d;
    const bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) return CPU_ISA_AVX2;
#endif
    return CPU_ISA_SCALAR;
}

/* Both are fixed for the life of the process: computed once. */
static cpu_isa g_detected, g_active;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void cpu_isa_init(void) {
    g_detected = g_active = cpu_isa_detect();
    const char *env = getenv("ROTKV_ISA");
    if (env && (!strcmp(env, "scalar") || !strcmp(env, "none"))) g_active = CPU_ISA_SCALAR;
}

bool cpu_isa_supported(cpu_isa isa) {
    pthread_once(&g_once, cpu_isa_init);
    return isa <= g_detected;
}

cpu_isa cpu_isa_active(void) {
    pthread_once(&g_once, cpu_isa_init);
    return g_active;
}

const char *cpu_isa_name(cpu_isa isa) {
    switch (isa) {
    case CPU_ISA_SCALAR: return "scalar";
    case CPU_ISA_AVX2: return "avx2";
    }
    return "unknown";
}
