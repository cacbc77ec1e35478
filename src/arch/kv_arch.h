/* kv_arch.h — the KV-side kernels of each ISA level, one const table per
 * level, like quant_arch.h for the weight kernels and ops_arch.h for the layer
 * ops. The generic file holds the scalar reference, arch/x86/ the AVX2 twins
 * (an all-empty table on other architectures); the levels above AVX2 use the
 * AVX2 tables. Each module picks its tables once per process, from
 * cpu_isa_active(), and afterwards reads only const data.
 *
 * codecs      kv_codecs.c      arch/x86/kv_codecs_avx2.c      kv_codec_kernels, one row per type
 * kt* plans   kv_transform.c   arch/x86/kv_transform_avx2.c   kvt_kernels
 * attention   attention.c      arch/x86/attention_avx2.c      attn_kernels (the tile kernels)
 * On aarch64 the NEON twins are arch/arm/kv_codecs_neon.c, kv_transform_neon.c
 * and attention_neon.c (the levels above NEON use the NEON tables). */
#ifndef ROTKV_KV_ARCH_H
#define ROTKV_KV_ARCH_H

#include "cpu.h"
#include "kv_cache.h"
#include "kv_transform.h"

/* ------------------------------------------------------------ codecs (kv_cache.h's kv_codec_kernels) */

/* Indexed by rotkv_kv_type; a row with dot == NULL: no kernels at that level
 * (the kt* types at every level). */
extern const kv_codec_kernels kv_codec_kernels_scalar[ROTKV_KV_TYPE_COUNT];
extern const kv_codec_kernels kv_codec_kernels_avx2[ROTKV_KV_TYPE_COUNT];
/* arch/arm/kv_codecs_neon.c: every type with an AVX2 row (the kt* rows empty) */
extern const kv_codec_kernels kv_codec_kernels_neon[ROTKV_KV_TYPE_COUNT];
/* Fills the AVX2 kernels' lookup tables (the tq codebooks); kv_codecs.c calls
 * it once, before any of them can run, where the CPU has AVX2. */
void kv_codec_kernels_avx2_init(void);
/* The same for the NEON kernels, where the CPU has NEON. */
void kv_codec_kernels_neon_init(void);

/* The codec of a type with the kernels a process capped at level isa runs:
 * that level's row, or the highest level's below it that has one. NULL if the
 * type is unknown or this CPU cannot run isa. kv_codec_get(t) is
 * kv_codec_get_isa(t, cpu_isa_active()). For tests (tests/test_kv_simd.c). */
const kv_codec *kv_codec_get_isa(rotkv_kv_type t, cpu_isa isa);

/* ------------------------------------------------------------ kt* (kv_transform.h) */

/* What kvt_dot, kvt_axpy, kvt_levels, kvt_levels_rows, kvt_prep_query and
 * kvt_finish run (kv_transform.h gives each one's contract). The AVX2 row's
 * prep_query and finish take the scalar row's path for head_dim % 8 != 0. */
typedef struct {
    float (*dot)(const kvt_head *h, const uint8_t *src, const float *qy);
    void (*axpy)(const kvt_head *h, const uint8_t *src, float w, float *acc_y);
    float (*levels)(const kvt_head *h, const uint8_t *src, float *y);
    void (*levels_rows)(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, float *y, float *s);
    float (*prep_query)(const kvt_head *h, const float *q, float *qy);
    void (*finish)(const kvt_head *h, const float *acc_y, float wsum, float *out);
    /* optional (NULL: attention decodes V into its tile): kvt_accum_rows, for
     * head_dim a multiple of accum_rows_hd */
    void (*accum_rows)(const kvt_head *h, const uint8_t *const *rows, size_t ofs, int n, const float *W, int w_stride,
                       int ng, float *acc_y);
    int accum_rows_hd;
} kvt_kernels;

extern const kvt_kernels kvt_kernels_scalar;
extern const kvt_kernels kvt_kernels_avx2; /* all NULL off x86 */
extern const kvt_kernels kvt_kernels_avx512; /* all NULL off x86 */
extern const kvt_kernels kvt_kernels_avx512_vbmi; /* AVX-512 + VBMI (cpu_has_avx512_vbmi); all NULL off x86 */
/* arch/arm/kv_transform_neon.c (the dotprod and i8mm levels use it); all NULL
 * off aarch64. prep_query and finish take the scalar path for head_dim % 4 != 0. */
extern const kvt_kernels kvt_kernels_neon;

/* The row of exactly one level (NULL if this CPU cannot run it or the level
 * has none of its own, as those above AVX2), its tables ready: at the AVX-512
 * level, the VBMI row where the CPU has VBMI. For tests. */
const kvt_kernels *kvt_kernels_at(cpu_isa isa);
/* The AVX-512 row without VBMI (for tests on CPUs that have both), tables ready. */
const kvt_kernels *kvt_kernels_avx512_plain(void);

/* ------------------------------------------------------------ attention's tile kernels (attention.c) */

/* Rows per block: large enough that the per-block softmax work is amortized,
 * small enough that the decoded tile (ATT_BLOCK x head_dim floats) stays in L1. */
#ifndef ATT_BLOCK
#define ATT_BLOCK 32
#endif
#define SROW (ATT_BLOCK + 8) /* row stride of the scores: 8 spare slots for the 8-row kernel */
#define ATT_TILE_ROWS (ATT_BLOCK + 16) /* rows of the decoded tile: 16 spare for the 16-row kernel */

/* S[g * SROW + r] = (<tile row r, q_g> * rs[r] + bias[g]) * scale for r < nr,
 * g < ng (q_g = q + g * hd; rs NULL: 1, else it has nr rounded up to 8
 * entries; bias NULL: none) */
typedef void (*scores_fn)(const float *tile, int nr, int hd, const float *q, int ng, const float *rs,
                          const float *bias, float scale, float *S);
/* acc_g += sum_r W[g * SROW + r] * tile row r */
typedef void (*accum_fn)(const float *tile, int nr, int hd, const float *W, int ng, float *acc);
/* x[r] = exp(x[r] - m) for r < n; returns their sum */
typedef float (*exp_fn)(float *x, int n, float m);
/* max(m, x[0..n)), NaNs in x ignored */
typedef float (*max_fn)(const float *x, int n, float m);

typedef struct {
    scores_fn scores;
    accum_fn accum;
    exp_fn exp; /* x has room for n rounded up to a multiple of 8 */
    max_fn max; /* the same */
    int tile_cols; /* scores and accum need head_dim % tile_cols == 0 (else the scalar row's run) */
} attn_kernels;

extern const attn_kernels attn_kernels_scalar;
extern const attn_kernels attn_kernels_avx2; /* all NULL off x86 */
extern const attn_kernels attn_kernels_avx512; /* all NULL off x86 */
extern const attn_kernels attn_kernels_neon; /* arch/arm/attention_neon.c; all NULL off aarch64 */

/* The row of exactly one level (NULL if this CPU cannot run it or the level
 * has none of its own, as those above AVX2). For tests. */
const attn_kernels *attn_kernels_at(cpu_isa isa);

#endif
