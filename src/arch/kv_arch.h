/* kv_arch.h — the KV-side kernels of each ISA level, one const table per
 * level, like quant_arch.h for the weight kernels and ops_arch.h for the layer
 * ops. The generic file holds the scalar reference, arch/x86/ the AVX2 twins
 * (an all-empty table on other architectures); the levels above AVX2 use the
 * AVX2 tables. Each module picks its tables once per process, from
 * cpu_isa_active(), and afterwards reads only const data.
 *
 * codecs   kv_codecs.c (scalar)    arch/x86/kv_codecs_avx2.c   kv_codec_kernels per type */
#ifndef ROTKV_KV_ARCH_H
#define ROTKV_KV_ARCH_H

#include "cpu.h"
#include "kv_cache.h"

/* ------------------------------------------------------------ codecs (kv_cache.h's kv_codec_kernels) */

/* Indexed by rotkv_kv_type; a row with dot == NULL: no kernels at that level
 * (the kt* types at every level). */
extern const kv_codec_kernels kv_codec_kernels_scalar[ROTKV_KV_TYPE_COUNT];
extern const kv_codec_kernels kv_codec_kernels_avx2[ROTKV_KV_TYPE_COUNT];
/* Fills the AVX2 kernels' lookup tables (the tq codebooks); kv_codecs.c calls
 * it once, before any of them can run, where the CPU has AVX2. */
void kv_codec_kernels_avx2_init(void);

/* The codec of a type with the kernels a process capped at level isa runs:
 * that level's row, or the highest level's below it that has one. NULL if the
 * type is unknown or this CPU cannot run isa. kv_codec_get(t) is
 * kv_codec_get_isa(t, cpu_isa_active()). For tests (tests/test_kv_simd.c). */
const kv_codec *kv_codec_get_isa(rotkv_kv_type t, cpu_isa isa);

#endif
