/* cpu.c — run-time CPU feature detection (see cpu.h). */
#include "cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define CPU_X86 1
#endif

static bool g_avx_vnni, g_avx512_vbmi;

#ifdef CPU_X86
/* XCR0: which register states the OS saves on a context switch. */
static unsigned long long cpu_xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

cpu_isa cpu_isa_detect(void) {
#ifdef CPU_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CPU_ISA_SCALAR;
    const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    if (!osxsave || !avx) return CPU_ISA_SCALAR;
    const unsigned long long xcr0 = cpu_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return CPU_ISA_SCALAR; /* XMM + YMM state */
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        unsigned b71, c71, d71;
        __cpuid_count(7, 1, a71, b71, c71, d71);
    }
    const bool avx2 = b7 & (1u << 5);
    if (!(avx2 && fma && f16c)) return CPU_ISA_SCALAR;
    g_avx_vnni = a71 & (1u << 4);
    const bool zmm_os = (xcr0 & 0xE0) == 0xE0; /* opmask + ZMM state */
    const bool f = b7 & (1u << 16), dq = b7 & (1u << 17), bw = b7 & (1u << 30), vl = b7 & (1u << 31);
    const bool vnni512 = c7 & (1u << 11);
    g_avx512_vbmi = zmm_os && f && bw && (c7 & (1u << 1));
    if (zmm_os && f && dq && bw && vl && vnni512) return CPU_ISA_AVX512;
    if (g_avx_vnni) return CPU_ISA_AVXVNNI;
    return CPU_ISA_AVX2;
#else
    return CPU_ISA_SCALAR;
#endif
}

/* Both are fixed for the life of the process: computed once. */
static cpu_isa g_detected, g_active;
static char g_env_error[160];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

int cpu_isa_parse(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "scalar") || !strcmp(name, "none")) return CPU_ISA_SCALAR;
    if (!strcmp(name, "avx2")) return CPU_ISA_AVX2;
    if (!strcmp(name, "avxvnni")) return CPU_ISA_AVXVNNI;
    if (!strcmp(name, "avx512")) return CPU_ISA_AVX512;
    return -1;
}

static void cpu_isa_init(void) {
    g_detected = g_active = cpu_isa_detect();
    const char *env = getenv("ROTKV_ISA");
    if (env && *env) {
        const int cap = cpu_isa_parse(env);
        if (cap < 0)
            snprintf(g_env_error, sizeof g_env_error,
                     "ROTKV_ISA=%.40s is not one of scalar, avx2, avxvnni, avx512", env);
        else if ((cpu_isa)cap < g_active)
            g_active = (cpu_isa)cap;
    }
}

bool cpu_isa_supported(cpu_isa isa) {
    pthread_once(&g_once, cpu_isa_init);
    if (isa == CPU_ISA_AVXVNNI) return g_detected >= CPU_ISA_AVXVNNI; /* VEX or EVEX-256 form */
    return isa <= g_detected;
}

cpu_isa cpu_isa_active(void) {
    pthread_once(&g_once, cpu_isa_init);
    return g_active;
}

const char *cpu_isa_env_error(void) {
    pthread_once(&g_once, cpu_isa_init);
    return g_env_error[0] ? g_env_error : NULL;
}

bool cpu_has_avx_vnni(void) {
    pthread_once(&g_once, cpu_isa_init);
    return g_avx_vnni;
}

bool cpu_has_avx512_vbmi(void) {
    pthread_once(&g_once, cpu_isa_init);
    return g_avx512_vbmi;
}

const char *cpu_isa_name(cpu_isa isa) {
    switch (isa) {
    case CPU_ISA_SCALAR: return "scalar";
    case CPU_ISA_AVX2: return "avx2";
    case CPU_ISA_AVXVNNI: return "avxvnni";
    case CPU_ISA_AVX512: return "avx512";
    case CPU_ISA_COUNT: break;
    }
    return "unknown";
}
