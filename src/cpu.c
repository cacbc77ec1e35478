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
#if defined(__aarch64__)
#define CPU_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
/* the bits of <asm/hwcap.h>, for C libraries that lack them */
#define CPU_HWCAP_ASIMD (1ul << 1)
#define CPU_HWCAP_ASIMDDP (1ul << 20)
#define CPU_HWCAP2_I8MM (1ul << 13)
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif
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

#ifdef CPU_ARM64
#if defined(__APPLE__)
/* 1 if the sysctl feature flag is present and set. */
static int cpu_sysctl_flag(const char *name) {
    int v = 0;
    size_t len = sizeof v;
    return sysctlbyname(name, &v, &len, NULL, 0) == 0 && v;
}
#endif

/* NEON (Advanced SIMD) is part of every aarch64 CPU rotkv targets; dotprod and
 * i8mm are announced by the kernel (Linux: the auxiliary vector; macOS:
 * hw.optional.arm.FEAT_*). Elsewhere only NEON is assumed. */
static cpu_isa cpu_arm64_detect(void) {
#if defined(__linux__)
    const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
    if (!(hw & CPU_HWCAP_ASIMD)) return CPU_ISA_SCALAR;
    const bool dotprod = hw & CPU_HWCAP_ASIMDDP, i8mm = hw2 & CPU_HWCAP2_I8MM;
#elif defined(__APPLE__)
    const bool dotprod = cpu_sysctl_flag("hw.optional.arm.FEAT_DotProd");
    const bool i8mm = cpu_sysctl_flag("hw.optional.arm.FEAT_I8MM");
#else
    const bool dotprod = false, i8mm = false;
#endif
    if (dotprod && i8mm) return CPU_ISA_I8MM;
    if (dotprod) return CPU_ISA_DOTPROD;
    return CPU_ISA_NEON;
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
#elif defined(CPU_ARM64)
    return cpu_arm64_detect();
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
    if (!strcmp(name, "neon")) return CPU_ISA_NEON;
    if (!strcmp(name, "dotprod")) return CPU_ISA_DOTPROD;
    if (!strcmp(name, "i8mm")) return CPU_ISA_I8MM;
    return -1;
}

#if defined(CPU_ARM64)
#define CPU_LEVEL_NAMES "scalar, neon, dotprod, i8mm"
#elif defined(CPU_X86)
#define CPU_LEVEL_NAMES "scalar, avx2, avxvnni, avx512"
#else
#define CPU_LEVEL_NAMES "scalar (no SIMD levels on this architecture)"
#endif

bool cpu_isa_of_this_arch(cpu_isa isa) {
    switch (isa) {
    case CPU_ISA_SCALAR: return true;
    case CPU_ISA_AVX2:
    case CPU_ISA_AVXVNNI:
    case CPU_ISA_AVX512:
#ifdef CPU_X86
        return true;
#else
        return false;
#endif
    case CPU_ISA_NEON:
    case CPU_ISA_DOTPROD:
    case CPU_ISA_I8MM:
#ifdef CPU_ARM64
        return true;
#else
        return false;
#endif
    case CPU_ISA_COUNT: break;
    }
    return false;
}

static void cpu_isa_init(void) {
    g_detected = g_active = cpu_isa_detect();
    const char *env = getenv("ROTKV_ISA");
    if (env && *env) {
        const int cap = cpu_isa_parse(env);
        if (cap < 0 || !cpu_isa_of_this_arch((cpu_isa)cap))
            snprintf(g_env_error, sizeof g_env_error, "ROTKV_ISA=%.40s is not one of %s", env, CPU_LEVEL_NAMES);
        else if ((cpu_isa)cap < g_active)
            g_active = (cpu_isa)cap;
    }
}

bool cpu_isa_supported(cpu_isa isa) {
    pthread_once(&g_once, cpu_isa_init);
    if ((unsigned)isa >= CPU_ISA_COUNT || !cpu_isa_of_this_arch(isa)) return false;
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
    case CPU_ISA_NEON: return "neon";
    case CPU_ISA_DOTPROD: return "dotprod";
    case CPU_ISA_I8MM: return "i8mm";
    case CPU_ISA_COUNT: break;
    }
    return "unknown";
}
