/* kv_transform_plan.h — the decode plan of a kvt_head and the tables its
 * kernels read: shared by kv_transform.c (which builds them, and holds the
 * scalar kernels) and arch/x86/kv_transform_avx2.c (the AVX2 kernels). Not a
 * public header: kv_transform.h is the interface.
 *
 * kvt_dot and kvt_axpy are the hot paths of kt* attention. Their reference
 * (kvt_dot_ref, kvt_axpy_ref) reads every coordinate's index bit by bit. The
 * fast kernels instead work on groups of 8 consecutive coordinates, using a
 * plan built once per head by kvt_fit:
 *  - kvt_fit orders the coordinates by bit width (most bits first, each
 *    width's whole groups of 8 before the remainders, which come together
 *    at the end; T's rows, Tinv's columns, sigma and bits permuted together,
 *    so encode, decode and kvt_prep_query agree), so all groups but the last
 *    one or two hold a single width;
 *  - per group: the byte where its bits start, and per lane the shift and
 *    mask that extract its index from that 64-bit window (lanes 0..3 from the
 *    window's low 32 bits, lanes 4..7 from the 32 bits starting at s4), and
 *    the offset of the lane's codebook in one concatenated table (kvt_cat_levels;
 *    entry 0 is 0.0 for lanes without bits).
 * Unpacking is then branch-free: one load, variable shifts, a mask, and a
 * table lookup (vpermps for a single-width group of <= 3 bits, a tree of
 * vpermps and blends for 4..6 bits). The one or two mixed groups gather from
 * the concatenated codebooks (20 ns per kt3.5 row at head_dim 64, against
 * 27 ns for one lookup per width blended by lane). Coordinates without bits
 * (ordered last) are skipped.
 *
 * The plan is stored in the allocation of bit_ofs, after its hd entries
 * (kvt_head's layout in kv_transform.h is left as it is), so kvt_free frees
 * it; every kvt_head comes from kvt_fit, which builds it. */


#ifndef ROTKV_KV_TRANSFORM_PLAN_H
#define ROTKV_KV_TRANSFORM_PLAN_H

#include <stdint.h>

#include "kv_transform.h"

#define KVT_BITS_CAP 6 /* bits per coordinate at most (lloyd_max_gaussian computes up to 6) */

typedef struct {
    uint64_t sh_even[4]; /* lanes 0, 2, 4, 6: bit offset of the index in the group's 64-bit window */
    uint64_t sh_odd[4];  /* lanes 1, 3, 5, 7 */
    uint32_t mask[8];    /* (1 << bits) - 1; 0 for lanes without bits (or past hd). Also the offset
                          * of the lane's codebook in kvt_cat_levels */
    uint32_t load_at;    /* the window: the 8 bytes of the index field at load_at */
    uint8_t bits;        /* every lane has this many bits (1..6), or 0: mixed */
    uint8_t pad[27];
} kvt_group;

/* A run of whole groups of one width: they start on byte boundaries (every
 * earlier group is whole too, b bytes each), so the kernels read each with
 * one load and constant shifts. */
typedef struct {
    uint8_t bits;
    uint8_t n;        /* groups in the run */
    uint16_t first;   /* index of its first group */
} kvt_run;

/* The AVX-512 kernels' groups of 16 consecutive coordinates (any mix of
 * widths): per lane, the index of the 16-bit word (of the 16 bytes loaded at
 * load_at) where its bits start, and the shift and mask that take its index
 * from the 32 bits starting at that word (the word and the next one, picked
 * by one vpermw); the mask is also the offset of the lane's codebook in
 * kvt_cat_levels. bits: every lane has that many bits (1..6), else 0. */
typedef struct {
    uint16_t words[32];  /* lane j's 32-bit window: words[2j], words[2j + 1] (= words[2j] + 1) */
    uint32_t shift[16];
    uint32_t mask[16];   /* 0 for lanes without bits or past hd */
    uint32_t load_at;    /* byte of the index field where the group's 16-byte window starts */
    uint32_t load_mask;  /* bytes of that window inside the field (bit k: byte k) */
    uint8_t bits;
    uint8_t max_bits;    /* the widest lane's width: mixed groups up to 5 bits look up the first
                          * 64 entries of kvt_cat_levels only */
    uint8_t pad[54];
} kvt_group16;

/* The AVX-512 VBMI kernels' blocks of 64 consecutive coordinates (any mix of
 * widths), decoded with byte permutes: from the 64 bytes of the index field at
 * load_at, vpermb gathers for output byte p the bytes gather[p]; vpmultishiftqb
 * takes the 8 bits at shift[p] of p's 64-bit lane, masked by mask[p]
 * (2^b - 1, 0 without bits) and offset by it into kvt_cat_levels; two
 * vpermi2b read the bfloat16 level's high and low bytes (the levels are
 * bfloat16-exact), and byte/word unpacks widen them to floats. The unpacks
 * put byte p = 16l + 4m + k (l, m < 4, k < 4) in float lane 16m + 4l + k, so
 * byte p decodes coordinate 16m + 4l + k: each 64-bit lane holds two runs of
 * 4 consecutive coordinates, each run's bits inside 4 gathered bytes. */
typedef struct {
    uint8_t gather[64];
    uint8_t shift[64];
    uint8_t mask[64];
    uint64_t load_mask;   /* bytes of the 64-byte window inside the field (bit k: byte k) */
    uint32_t load_at;     /* byte of the index field where the window starts */
    uint8_t pad[52];
} kvt_group64;

typedef struct {
    uint32_t n_groups;    /* ceil(coordinates with bits / 8) */
    uint32_t n_full;      /* groups whose 8 lanes are all inside hd */
    uint32_t field_bytes; /* bytes of the index field */
    uint32_t small;       /* field_bytes < 8: every window is the whole field, read byte by byte */
    uint32_t n_fast;      /* groups [0, n_fast) are the runs; the rest go through their kvt_group */
    uint32_t n_runs;
    kvt_run runs[KVT_BITS_CAP];
    uint32_t n_groups16;  /* ceil(coordinates with bits / 16): the kvt_group16s, at g16_at bytes from the plan */
    uint32_t g16_at;
    uint32_t n_groups64;  /* head_dim / 64: the kvt_group64s, at g64_at bytes from the plan */
    uint32_t g64_at;
    kvt_group g[];
} kvt_plan;

_Static_assert(sizeof(kvt_group) % 32 == 0 && sizeof(kvt_plan) % 32 == 0, "32-byte aligned groups");
_Static_assert(sizeof(kvt_group16) % 64 == 0, "64-byte aligned groups of 16");
_Static_assert(sizeof(kvt_group64) % 64 == 0, "64-byte aligned blocks of 64");

static inline const kvt_plan *kvt_plan_of(const kvt_head *h) {
    return (const kvt_plan *)(((uintptr_t)(h->bit_ofs + h->hd) + 31) & ~(uintptr_t)31);
}

static inline const kvt_group16 *kvt_groups16_of(const kvt_plan *p) {
    return (const kvt_group16 *)(const void *)((const uint8_t *)p + p->g16_at);
}

static inline const kvt_group64 *kvt_groups64_of(const kvt_plan *p) {
    return (const kvt_group64 *)(const void *)((const uint8_t *)p + p->g64_at);
}

/* Filled once by kv_transform.c before the first head exists (kvt_fit), then
 * read only:
 * kvt_cb_levels[b]: the b-bit Lloyd-Max codebook (b = 1..6), zero-padded to 64;
 * kvt_cat_levels[2^b - 1 + k] = level k of the b-bit codebook, kvt_cat_levels[0] = 0;
 * kvt_scale_table[c]: the scale of code c (0 for 0, else 2^((c - 128) / 16)). */
extern float kvt_cb_levels[KVT_BITS_CAP + 1][1 << KVT_BITS_CAP];
extern float kvt_cat_levels[1 << (KVT_BITS_CAP + 1)];
/* The high and low bytes of each kvt_cat_levels entry as a bfloat16 (every
 * level is bfloat16-exact: the float's low 16 bits are zero). */
extern uint8_t kvt_cat_bf16_hi[1 << (KVT_BITS_CAP + 1)], kvt_cat_bf16_lo[1 << (KVT_BITS_CAP + 1)];
extern float kvt_scale_table[256];

/* The scale of the row at src (its first byte). */
static inline float kvt_scale_of(const uint8_t *src) { return kvt_scale_table[src[0]]; }

#endif
